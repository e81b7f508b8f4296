#!/bin/sh
# Install what weft's demo, tests and benchmarks need on a fresh Debian
# machine (as root), then run a deno task: `sh test/setup.sh demo|test|bench`.
# Idempotent: quiet when everything is present, installs only what is missing.
set -eu
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root: the demo, tests and benchmarks build network namespaces" >&2
  exit 1
fi

have() { command -v "$1" >/dev/null 2>&1; }

# Debian packages, by a command (or file) each provides
need=""
want() { have "$1" || case " $need " in *" $2 "*) ;; *) need="$need $2" ;; esac; }
want etcd etcd-server
want etcdctl etcd-client
want ip iproute2          # ip, ss, bridge
want iptables iptables    # iptables, ip6tables, iptables-restore/-save
want nft nftables
want ping iputils-ping
want iperf3 iperf3
want tcpdump tcpdump
want openssl openssl
want curl curl
want sysctl procps
want nsenter util-linux
want taskset util-linux
want bash bash
want cloud-init cloud-init  # `cloud-init schema` checks examples/aws/cloud-init.yaml
want npm npm              # pulls in nodejs
want node nodejs
want kubectl kubernetes-client   # a real client-go client for the fake API server
want python3 python3      # sd_notify receiver in the readiness tests
want wireguard-go wireguard-go   # userspace WireGuard: the wireguard backend's lab tests and bench
want wg wireguard-tools   # wg: the tests check and hand-wire WireGuard peers with it
for plugin in bridge host-local; do
  [ -x "/usr/lib/cni/$plugin" ] || case " $need " in
    *" containernetworking-plugins "*) ;;
    *) need="$need containernetworking-plugins" ;;
  esac
done
# the bootstrap checks: cloud-init schema (with python3-yaml), systemd-analyze verify, setpriv/unshare
want cloud-init cloud-init
want systemd-analyze systemd
want setpriv util-linux
want unshare util-linux
want python3 python3
want chromium chromium    # the status page test (DevTools protocol, headless)
want ethtool ethtool      # weft doctor reads the vxlan device's checksum offload
if [ -n "$need" ]; then
  echo "setup: installing$need" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # shellcheck disable=SC2086 # one word per package
  apt-get install -y -qq $need >&2
fi

# npm packages (deno, bun and the libraries), exactly as package-lock.json says
if [ ! -x node_modules/.bin/deno ] || [ ! -x node_modules/.bin/bun ] ||
  ! npm ls --depth=0 >/dev/null 2>&1; then
  echo "setup: installing npm packages (npm ci: deno, bun and the libraries in package-lock.json)" >&2
  npm ci --no-audit --no-fund >&2
fi

# Python with boto3 and moto (the EC2 emulator the aws tests run against):
# say what is missing, do not install
moto=""
if have python3; then
  moto=$(python3 -c '
import importlib
for name in ("boto3", "moto"):
    try:
        importlib.import_module(name)
    except Exception:
        print(" " + name, end="")
' 2>/dev/null) || moto=" boto3 moto"
else
  moto=" python3"
fi
have moto_server || moto="$moto moto_server"
if [ -n "$moto" ]; then
  echo "setup: missing for the EC2 emulator:$moto (Debian 12 has no moto package: pip install 'moto[server]' boto3, e.g. in a venv)" >&2
fi

task="${1:-test}"
shift || true
exec node_modules/.bin/deno task "$task" "$@"
