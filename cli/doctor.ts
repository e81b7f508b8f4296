/**
 * `weft doctor [weft's flags]`: checks this host and prints what is wrong
 * and how to fix it. It reads the network config and the leases from the
 * store the flags name (as the agent would), then the kernel's state with
 * `ip`, `ss`, `ethtool`, `ping` and /proc/sys, and runs the checks of
 * ./doctor_checks.ts. Exit code 1 when a check found an error, else 0.
 *
 * @module
 */

import process from "node:process";
import { type Exec, systemExec } from "../core/exec.ts";
import { formatIPv4, formatIPv4Net, type IPv4Net } from "../core/ip.ts";
import type { Logger } from "../core/log.ts";
import { Registry } from "../core/metrics.ts";
import type { NetworkConfig } from "../lease/config.ts";
import type { Lease } from "../lease/types.ts";
import {
  backendFacts,
  checkBridgeNetfilter,
  checkClock,
  checkForwarding,
  checkMtu,
  checkPeers,
  checkPort,
  checkRoutes,
  checkRpFilter,
  checkVxlanChecksum,
  type Finding,
  type LinkFact,
  type PeerProbe,
  type RouteFact,
  type UdpHolder,
} from "./doctor_checks.ts";
import type { Flags } from "./flags.ts";
import type { CliIo } from "./io.ts";
import { chooseStore, openStore } from "./stores.ts";

/** How long the store may take to answer, ms. */
export const STORE_TIMEOUT_MS = 5000;

/** What the doctor reads the host through (the defaults: this process's host). */
export interface DoctorHost {
  readonly exec: Exec;
  readonly now: () => number;
  readonly fetch: typeof fetch;
}

const defaultHost: DoctorHost = { exec: systemExec, now: Date.now, fetch: globalThis.fetch };

/** A sysctl reader over `cat` (so a netns exec reads that namespace's values). */
async function readSysctls(
  exec: Exec,
  paths: readonly string[],
): Promise<Map<string, string | null>> {
  const out = new Map<string, string | null>();
  await Promise.all(paths.map(async (p) => {
    const r = await exec("cat", [p]);
    out.set(p, r.code === 0 ? r.stdout.trim() : null);
  }));
  return out;
}

/** Links from `ip -j -d link show`. */
export function parseLinks(json: string): LinkFact[] {
  const list = JSON.parse(json || "[]") as {
    ifname: string;
    mtu: number;
    linkinfo?: { info_kind?: string; info_data?: { port?: number } };
  }[];
  return list.map((l) => ({
    name: l.ifname,
    mtu: l.mtu,
    kind: l.linkinfo?.info_kind,
    port: l.linkinfo?.info_data?.port,
  }));
}

/** Routes from `ip -j -4 route show table main`. */
export function parseRoutes(json: string): RouteFact[] {
  const list = JSON.parse(json || "[]") as {
    dst: string;
    dev?: string;
    gateway?: string;
    type?: string;
  }[];
  return list.map((r) => ({ dst: r.dst, dev: r.dev, gateway: r.gateway, type: r.type }));
}

/**
 * UDP sockets bound to `port` from `ss -H -uanp`: a line's local address
 * ends in `:port`; `users:(("nc",pid=12,fd=3))` names the holder (none for
 * a kernel socket, e.g. vxlan's).
 */
export function parseUdpHolders(ss: string, port: number): UdpHolder[] {
  const out: UdpHolder[] = [];
  for (const line of ss.split("\n")) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 4 || !cols[3].endsWith(`:${port}`)) continue;
    const users = /users:\(\("([^"]*)",pid=(\d+)/.exec(line);
    out.push(users ? { port, comm: users[1], pid: Number(users[2]) } : { port });
  }
  return out;
}

/** The external interface: `--iface` (a name), else the default route's device. */
function extIfaceOf(flags: Flags, routes: readonly RouteFact[]): string | null {
  const named = flags.iface.find((i) => !/[/:]|^\d/.test(i));
  if (named) return named;
  return routes.find((r) => r.dst === "default")?.dev ?? null;
}

/** One ping, with one retry (the first may wait for ARP). */
async function pings(exec: Exec, ip: string, from?: string): Promise<boolean> {
  const args = ["-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", ...(from ? ["-I", from] : []), ip];
  return (await exec("ping", args)).code === 0;
}

/**
 * The store's clock: the `Date` header of the etcd endpoint (its
 * `/version`) or the Kubernetes API server, read over plain HTTP; null
 * when it cannot be had that way.
 */
async function storeDate(
  flags: Flags,
  host: DoctorHost,
): Promise<{ date: string | null; at: number; why?: string }> {
  const kind = chooseStore(flags).kind;
  if (kind !== "etcd") {
    return { date: null, at: host.now(), why: `the ${kind} store has no clock to compare` };
  }
  const endpoint = flags.etcdEndpoints.split(",")[0];
  if (!endpoint.startsWith("http://")) {
    return { date: null, at: host.now(), why: `${endpoint} is not plain HTTP` };
  }
  try {
    const res = await host.fetch(`${endpoint.replace(/\/$/, "")}/version`, {
      signal: AbortSignal.timeout(STORE_TIMEOUT_MS),
    });
    await res.body?.cancel();
    return { date: res.headers.get("date"), at: host.now() };
  } catch (e) {
    return { date: null, at: host.now(), why: (e as Error).message };
  }
}

/** Why the store failed, with the fix. */
function storeFinding(kind: string, flags: Flags, error: Error): Finding {
  const text = [error.message, (error.cause as Error | undefined)?.message].filter(Boolean).join(
    ": ",
  );
  const auth =
    /\b(401|403)\b|unauthori[sz]ed|forbidden|permission denied|authenticat|invalid auth token|user name is empty|certificate/i
      .test(text);
  const where = kind === "etcd"
    ? `etcd at ${flags.etcdEndpoints}`
    : kind === "kube"
    ? "the Kubernetes API"
    : `the ${kind} store`;
  return auth
    ? {
      check: "store",
      level: "error",
      message: `${where} refused weft's credentials: ${text}`,
      fix: kind === "etcd"
        ? "check --etcd-username/--etcd-password (FLANNELD_ETCD_USERNAME/PASSWORD), --etcd-certfile/--etcd-keyfile/--etcd-cafile, and the role's read/write access to --etcd-prefix"
        : "check the service account's RBAC (get/list/watch nodes, patch nodes/status) or the kubeconfig",
    }
    : {
      check: "store",
      level: "error",
      message: `cannot read the network config from ${where}: ${text}`,
      fix: kind === "etcd"
        ? `check that etcd runs and that --etcd-endpoints (${flags.etcdEndpoints}) is reachable from here (firewall, address, http vs https), and that ${flags.etcdPrefix}/config exists`
        : kind === "kube"
        ? "check the API server address (--kube-api-url or the in-cluster environment) and the node's podCIDR"
        : "check --lease-file and --net-config-path",
    };
}

/**
 * Run every check against this host.
 *
 * @param flags weft's flags (store, interface, subnet file).
 * @param env The environment (Kubernetes settings).
 * @param logger Where the store logs (quietly).
 * @param host How the host is read.
 * @returns The findings, in check order.
 */
export async function diagnose(
  flags: Flags,
  env: Record<string, string | undefined>,
  logger: Logger,
  host: DoctorHost = defaultHost,
): Promise<Finding[]> {
  const { exec } = host;
  const findings: Finding[] = [];

  // the store: config and leases
  let config: NetworkConfig | undefined;
  let leases: Lease[] = [];
  const kind = chooseStore(flags).kind;
  const signal = AbortSignal.timeout(STORE_TIMEOUT_MS * 2);
  try {
    const opened = await openStore(flags, env, logger, new Registry(), signal);
    try {
      const timeout = AbortSignal.any([signal, AbortSignal.timeout(STORE_TIMEOUT_MS)]);
      config = await opened.store.getNetworkConfig(timeout);
      leases = (await opened.store.list(timeout, { exactExpiry: false })).leases;
      findings.push({
        check: "store",
        level: "ok",
        message: `the ${kind} store answers: ${leases.length} leases`,
      });
    } finally {
      await opened.store.close().catch(() => {});
    }
  } catch (e) {
    findings.push(storeFinding(kind, flags, e as Error));
  }
  const clock = await storeDate(flags, host);
  findings.push(
    ...(clock.why
      ? [{ check: "clock", level: "skip" as const, message: `not checked: ${clock.why}` }]
      : checkClock(clock.at, clock.date)),
  );

  const backend = backendFacts(config?.backendType ?? "vxlan", config?.backend ?? {});
  const sysctlPaths = [
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv6/conf/all/forwarding",
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/ipv4/conf/all/rp_filter",
    "/proc/sys/kernel/osrelease",
    ...(backend.device ? [`/proc/sys/net/ipv4/conf/${backend.device}/rp_filter`] : []),
  ];
  const sysctls = await readSysctls(exec, sysctlPaths);
  const sysctl = (p: string) => sysctls.get(p) ?? null;
  const [linksOut, routesOut, ssOut, ethtoolOut] = await Promise.all([
    exec("ip", ["-j", "-d", "link", "show"]),
    exec("ip", ["-j", "-4", "route", "show", "table", "main"]),
    exec("ss", ["-H", "-uanp"]),
    backend.device && backend.type === "vxlan"
      ? exec("ethtool", ["-k", backend.device])
      : Promise.resolve(null),
  ]);
  const links = linksOut.code === 0 ? parseLinks(linksOut.stdout) : [];
  const routes = routesOut.code === 0 ? parseRoutes(routesOut.stdout) : [];
  const ext = extIfaceOf(flags, routes);

  findings.push(...checkForwarding(sysctl, config?.enableIPv6 ?? false));
  findings.push(...checkBridgeNetfilter(sysctl));
  findings.push(...checkRpFilter(sysctl, backend.device));
  findings.push(
    ...(ext
      ? checkMtu(links, ext, backend, subnetEnvMtu(await exec("cat", [flags.subnetFile])))
      : [{
        check: "mtu",
        level: "skip" as const,
        message: "no external interface (no --iface and no default route)",
      }]),
  );
  const offload = ethtoolOut && ethtoolOut.code === 0
    ? /tx-checksum-ip-generic: on/.test(ethtoolOut.stdout)
    : null;
  findings.push(
    ...checkVxlanChecksum(
      sysctl("/proc/sys/kernel/osrelease") ?? "",
      backend.type === "vxlan" ? backend.device : null,
      offload,
    ),
  );
  if (backend.port !== null) {
    const holders = parseUdpHolders(ssOut.stdout, backend.port);
    const withCmd = await Promise.all(holders.map(async (h) => {
      if (h.pid === undefined) return h;
      const r = await exec("cat", [`/proc/${h.pid}/cmdline`]);
      return { ...h, cmdline: r.code === 0 ? r.stdout.replaceAll("\0", " ").trim() : undefined };
    }));
    findings.push(...checkPort(withCmd, backend));
  } else findings.push(...checkPort([], backend));

  if (config?.network) {
    const subnets = leases.map((l) => l.subnet).filter((s): s is IPv4Net => s !== undefined);
    const own = [backend.device, "cni0", "docker0"].filter((d): d is string => !!d);
    findings.push(...checkRoutes(routes, config.network, subnets, own));
  } else {
    findings.push({
      check: "routes",
      level: "skip",
      message: "no IPv4 Network known (store not read)",
    });
  }

  // peers: every lease but this host's (its public IP is on one of our links' addresses)
  const addrs = await exec("ip", ["-j", "-4", "addr", "show"]);
  const mine = new Set<string>();
  if (addrs.code === 0) {
    for (const l of JSON.parse(addrs.stdout || "[]") as { addr_info?: { local: string }[] }[]) {
      for (const a of l.addr_info ?? []) mine.add(a.local);
    }
  }
  const ownLease = leases.find((l) => mine.has(l.attrs.publicIP));
  const from = ownLease?.subnet ? formatIPv4(ownLease.subnet.ip) : undefined;
  const peers = leases.filter((l) => l !== ownLease && l.subnet && l.attrs.publicIP);
  const probes: PeerProbe[] = await Promise.all(peers.map(async (p) => {
    const underlay = await pings(exec, p.attrs.publicIP);
    // a peer's overlay address: the first of its subnet (on flannel.1 / flannel0 / cni0)
    const overlay = from && mine.has(from)
      ? await pings(exec, formatIPv4(p.subnet!.ip), from)
      : null;
    return { subnet: formatIPv4Net(p.subnet!), publicIP: p.attrs.publicIP, underlay, overlay };
  }));
  findings.push(...checkPeers(probes, backend));
  return findings;
}

function subnetEnvMtu(r: { code: number; stdout: string }): number | null {
  if (r.code !== 0) return null;
  const m = /^FLANNEL_MTU=(\d+)$/m.exec(r.stdout);
  return m ? Number(m[1]) : null;
}

const MARK: Record<Finding["level"], string> = { error: "✗", warn: "!", ok: "✓", skip: "-" };

/**
 * Findings as text: one line per finding, its fix indented below.
 *
 * @param findings The findings.
 * @returns The report.
 */
export function formatFindings(findings: readonly Finding[]): string {
  const width = Math.max(...findings.map((f) => f.check.length));
  const lines = findings.map((f) =>
    `${MARK[f.level]} ${f.check.padEnd(width)}  ${f.message}${
      f.fix ? `\n  ${" ".repeat(width)}  fix: ${f.fix}` : ""
    }`
  );
  const errors = findings.filter((f) => f.level === "error").length;
  const warns = findings.filter((f) => f.level === "warn").length;
  lines.push(
    errors + warns === 0
      ? "weft doctor: no problems found"
      : `weft doctor: ${errors} errors, ${warns} warnings`,
  );
  return lines.join("\n");
}

/**
 * The `doctor` command.
 *
 * @param flags weft's flags.
 * @param env The environment.
 * @param io Output.
 * @param logger For the store (quiet).
 * @returns 1 when an error was found, else 0.
 */
export async function doctorCommand(
  flags: Flags,
  env: Record<string, string | undefined> = process.env,
  io: CliIo,
  logger: Logger,
): Promise<number> {
  const findings = await diagnose(flags, env, logger);
  io.stdout(formatFindings(findings));
  return findings.some((f) => f.level === "error") ? 1 : 0;
}
