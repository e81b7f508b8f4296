#!/bin/sh
# Install what weft's demo, tests and benchmarks need on a fresh Debian
# machine (as root), then run a deno task: `sh test/setup.sh demo|test|bench`.
set -eu
cd "$(dirname "$0")/.."

need=""
command -v etcd >/dev/null 2>&1 || need="$need etcd-server"
command -v etcdctl >/dev/null 2>&1 || need="$need etcd-client"
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v iptables >/dev/null 2>&1 || need="$need iptables"
command -v nft >/dev/null 2>&1 || need="$need nftables"
command -v ping >/dev/null 2>&1 || need="$need iputils-ping"
command -v iperf3 >/dev/null 2>&1 || need="$need iperf3"
command -v tcpdump >/dev/null 2>&1 || need="$need tcpdump"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
command -v curl >/dev/null 2>&1 || need="$need curl"
[ -x /usr/lib/cni/bridge ] || need="$need containernetworking-plugins"
# the bootstrap checks: cloud-init schema (with python3-yaml), systemd-analyze verify, setpriv/unshare
command -v cloud-init >/dev/null 2>&1 || need="$need cloud-init"
command -v systemd-analyze >/dev/null 2>&1 || need="$need systemd"
command -v setpriv >/dev/null 2>&1 || need="$need util-linux"
command -v python3 >/dev/null 2>&1 || need="$need python3"
if [ -n "$need" ]; then
  echo "setup: installing$need" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq $need >&2
fi

if [ ! -x node_modules/.bin/deno ] || [ ! -x node_modules/.bin/bun ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages (deno, bun, hono, valibot, @kubernetes/client-node)" >&2
  npm ci --no-audit --no-fund >&2
fi

task="${1:-test}"
shift || true
exec node_modules/.bin/deno task "$task" "$@"
