/**
 * A weft cluster in a lab: a real etcd in the underlay namespace, one real
 * agent per host (Deno, host 2 under Bun by default), pods wired from each
 * agent's subnet.env, and readers of the kernel state the backends promise.
 * The e2e tests, the scenarios shared by the vxlan and host-gw tests and
 * the lab benchmarks build on it.
 *
 * ```ts
 * const c = await startCluster({ backend: "vxlan", hosts: 3, podsPerHost: 1 });
 * try {
 *   await c.waitConverged();
 *   assert.deepEqual(await pingFailures(c.lab, c.pods), []);
 * } finally {
 *   await c.close();
 * }
 * ```
 *
 * @module
 */

import type { AgentProcess, AgentRuntime } from "./agents.ts";
import { startAgent as startLabAgent } from "./agents.ts";
import { createLab, type Lab, type LabHost } from "./lab.ts";
import { type EtcdServer, startEtcd } from "../../testing/etcd_server.ts";
import { type EtcdCluster, startEtcdCluster } from "../../testing/etcd_cluster.ts";
import { containsIPv4, formatIPv4, parseIPv4, parseIPv4Net } from "../../core/ip.ts";
import { waitFor } from "../../testing/wait.ts";

/**
 * Backends a cluster can run; udp keeps no per-peer kernel state (its Worker
 * routes), nor does wireguard (its peers live in the WireGuard device: see
 * test/e2e_wireguard_test.ts).
 */
export type OverlayBackend = "vxlan" | "host-gw" | "udp" | "wireguard";

/** The overlay network of every cluster. */
export const NETWORK = "10.5.0.0/16";

/** etcd key prefix (flannel's default). */
export const ETCD_PREFIX = "/coreos.com/network";

/** Options of {@link startCluster}. */
export interface ClusterOptions {
  readonly backend: OverlayBackend;
  /** Lab hosts (agents may start later: see `start`). */
  readonly hosts: number;
  /** Pod namespaces per host (default 1). */
  readonly podsPerHost?: number;
  /** How many hosts (1…n) get an agent and wired pods at once (default all). */
  readonly start?: number;
  /** Runtime of host i's agent (default: Bun for host 2, Deno for the rest). */
  readonly runtimeOf?: (hostIndex: number) => AgentRuntime;
  /**
   * Program and arguments that run host i's weft instead of `mod.ts` (a
   * built form: see `StartAgentOptions.command`); undefined: from source.
   */
  readonly commandOf?: (hostIndex: number) => readonly string[] | undefined;
  /** Extra agent flags (`--etcd-endpoints` and `--iface eth0` are always given). */
  readonly agentArgs?: readonly string[];
  /** Add the lab's internet namespace. */
  readonly internet?: boolean;
  /** Wire pods with weft attach when an agent is ready (default true). */
  readonly attach?: boolean;
  /** A command each host's agent command line is appended to (see `StartAgentOptions.wrap`). */
  readonly agentWrap?: (host: LabHost, lab: Lab) => readonly string[];
  /** Extra environment of each host's agent. */
  readonly agentEnv?: (host: LabHost, lab: Lab) => Record<string, string>;
  /** Lab name prefix (default `wex`). */
  readonly prefix?: string;
  /** Extra keys of `Backend` in the network config. */
  readonly backendOptions?: Readonly<Record<string, unknown>>;
  /**
   * etcd members: 1 (default, {@link Cluster.etcd}) or more, as separate
   * processes in the underlay ({@link Cluster.etcdCluster}; agents get every
   * endpoint).
   */
  readonly etcdMembers?: number;
}

/** A wired pod and its address. */
export interface PodAddress {
  readonly ns: string;
  readonly ip: string;
  readonly hostIndex: number;
}

/** A lease as read back from etcd. */
export interface LeaseRow {
  /** CIDR, e.g. `10.5.3.0/24`. */
  readonly subnet: string;
  readonly publicIP: string;
  readonly backendType?: string;
  /** VtepMAC for vxlan leases. */
  readonly vtepMAC?: string;
}

/**
 * What the backends install per peer, as comparable strings:
 * - vxlan: route `S via S.ip dev flannel.1 onlink`, neighbour
 *   `S.ip lladdr MAC`, fdb `MAC dst PublicIP`;
 * - host-gw: route `S via PublicIP dev eth0`.
 */
export interface PeerState {
  readonly routes: string[];
  readonly neighbours: string[];
  readonly fdb: string[];
}

/** A running cluster. */
export interface Cluster extends AsyncDisposable {
  readonly lab: Lab;
  /** The single etcd member (throws with `etcdMembers` > 1: use {@link etcdCluster}). */
  readonly etcd: EtcdServer;
  /** The etcd members, with `etcdMembers` > 1. */
  readonly etcdCluster?: EtcdCluster;
  readonly backend: OverlayBackend;
  /** `http://<serviceIP>:2379`, reachable from every host (the first member's). */
  readonly endpoint: string;
  /**
   * The `--etcd-endpoints` agents started from now on get (default: every
   * member, in order); a test may reorder them.
   */
  agentEndpoints: readonly string[];
  /**
   * Run etcdctl against every member (it picks one that answers).
   *
   * @throws {Error} When etcdctl exits non-zero, with its stderr.
   */
  etcdctl(args: string[], options?: { input?: string }): Promise<string>;
  /** Running agents by host index. */
  readonly agents: Map<number, AgentProcess>;
  /** Each agent's subnet (CIDR) by host index, as it last reported ready. */
  readonly subnets: Map<number, string>;
  /** Wired pods, in wiring order. */
  readonly pods: PodAddress[];
  /** The host with this 1-based index. */
  host(index: number): LabHost;
  /**
   * Start host i's agent and wait until it is ready.
   *
   * @returns The subnet it reported.
   */
  startAgent(index: number, runtime?: AgentRuntime): Promise<string>;
  /** Wire host i's pods from its agent's subnet.env (weft attach). */
  attach(index: number): Promise<PodAddress[]>;
  /** Every lease in etcd. */
  leases(): Promise<LeaseRow[]>;
  /** The etcd key of a subnet's lease. */
  leaseKey(subnet: string): string;
  /**
   * How host i's peer state differs from the leases in etcd (its own
   * excluded), or null when it matches.
   *
   * @param index Host index.
   * @param leases The leases to compare with (default: read from etcd).
   */
  peerStateDiff(index: number, leases?: readonly LeaseRow[]): Promise<string | null>;
  /**
   * Wait until every running agent's host holds exactly the peer state for
   * the leases in etcd (the own lease excluded).
   *
   * @returns Milliseconds waited.
   * @throws {Error} On timeout, with the difference.
   */
  waitConverged(timeoutMs?: number): Promise<number>;
  /** Stop agents and etcd, tear the lab down. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * The network config the cluster writes to etcd.
 *
 * @param backend Backend type.
 * @param extra Extra `Backend` keys.
 * @returns JSON text.
 */
export function networkConfigJson(
  backend: OverlayBackend,
  extra: Readonly<Record<string, unknown>> = {},
): string {
  return JSON.stringify({ Network: NETWORK, SubnetLen: 24, Backend: { Type: backend, ...extra } });
}

/**
 * Parse `etcdctl get --prefix` output (key and value lines) into leases.
 *
 * @param out etcdctl's stdout.
 * @returns The leases; keys that are not subnet leases are skipped.
 */
export function parseEtcdLeases(out: string): LeaseRow[] {
  const lines = out.split("\n").filter((l) => l !== "");
  const rows: LeaseRow[] = [];
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const m = lines[i].match(/\/subnets\/(\d+\.\d+\.\d+\.\d+)-(\d+)$/);
    if (!m) continue;
    const v = JSON.parse(lines[i + 1]);
    rows.push({
      subnet: `${m[1]}/${m[2]}`,
      publicIP: v.PublicIP,
      backendType: v.BackendType,
      vtepMAC: v.BackendData?.VtepMAC?.toLowerCase(),
    });
  }
  return rows;
}

/**
 * The peer state a host should hold for these peer leases.
 *
 * @param backend Backend type.
 * @param peers Leases of the other hosts.
 * @returns Sorted strings (see {@link PeerState}).
 */
export function expectedPeerState(backend: OverlayBackend, peers: readonly LeaseRow[]): PeerState {
  const s: PeerState = { routes: [], neighbours: [], fdb: [] };
  for (const p of peers) {
    const net = p.subnet.split("/")[0];
    if (backend === "vxlan") {
      s.routes.push(`${p.subnet} via ${net} dev flannel.1 onlink`);
      s.neighbours.push(`${net} lladdr ${p.vtepMAC}`);
      s.fdb.push(`${p.vtepMAC} dst ${p.publicIP}`);
    } else if (backend === "host-gw") {
      s.routes.push(`${p.subnet} via ${p.publicIP} dev eth0`);
    }
  }
  return sortState(s);
}

function sortState(s: PeerState): PeerState {
  return { routes: s.routes.sort(), neighbours: s.neighbours.sort(), fdb: s.fdb.sort() };
}

interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  flags?: string[];
}

/**
 * Read the peer state a host holds: routes into {@link NETWORK} through a
 * gateway, and for vxlan the neighbours and fdb entries of `flannel.1`.
 *
 * @param lab The lab.
 * @param ns The host namespace.
 * @param backend Which entries to read.
 * @returns Sorted strings, comparable with {@link expectedPeerState}.
 */
export async function readPeerState(
  lab: Lab,
  ns: string,
  backend: OverlayBackend,
): Promise<PeerState> {
  const network = parseIPv4Net(NETWORK);
  const routes = (JSON.parse(await lab.run(ns, "ip -j route show table main")) as IpRoute[])
    .filter((r) => r.gateway && r.dst !== "default")
    .filter((r) => containsIPv4(network, parseIPv4(r.dst.split("/")[0])))
    .map((r) =>
      `${r.dst.includes("/") ? r.dst : `${r.dst}/32`} via ${r.gateway} dev ${r.dev}${
        r.flags?.includes("onlink") ? " onlink" : ""
      }`
    );
  if (backend !== "vxlan") return sortState({ routes, neighbours: [], fdb: [] });
  const link = await lab.exec(ns, "ip link show flannel.1");
  if (link.code !== 0) return sortState({ routes, neighbours: [], fdb: [] });
  const neigh = JSON.parse(await lab.run(ns, "ip -j neigh show dev flannel.1")) as {
    dst: string;
    lladdr?: string;
    state?: string[];
  }[];
  const fdb = JSON.parse(await lab.run(ns, "bridge -j fdb show dev flannel.1")) as {
    mac: string;
    dst?: string;
  }[];
  return sortState({
    routes,
    neighbours: neigh.filter((n) => n.lladdr).map((n) => `${n.dst} lladdr ${n.lladdr}`),
    fdb: fdb.filter((f) => f.dst).map((f) => `${f.mac} dst ${f.dst}`),
  });
}

/** The difference between two peer states, or null when equal. */
export function stateDiff(want: PeerState, got: PeerState): string | null {
  const parts: string[] = [];
  for (const k of ["routes", "neighbours", "fdb"] as const) {
    const missing = want[k].filter((x) => !got[k].includes(x));
    const extra = got[k].filter((x) => !want[k].includes(x));
    if (missing.length) parts.push(`${k} missing [${missing.join("; ")}]`);
    if (extra.length) parts.push(`${k} unexpected [${extra.join("; ")}]`);
  }
  return parts.length ? parts.join(", ") : null;
}

/**
 * Ping every ordered pair of pods (concurrently, at most 8 at a time).
 *
 * @param lab The lab.
 * @param pods The pods.
 * @param only Which ordered pairs to ping (default all).
 * @returns The failed pairs as `from → ip`; empty when all answered.
 */
export async function pingFailures(
  lab: Lab,
  pods: readonly PodAddress[],
  only: (from: PodAddress, to: PodAddress) => boolean = () => true,
): Promise<string[]> {
  const pairs = pods.flatMap((a) =>
    pods.filter((b) => b !== a && only(a, b)).map((b) => [a, b] as const)
  );
  const results = await mapLimit(pairs, 8, ([a, b]) => podPing(lab, a.ns, b.ip));
  return pairs.filter((_, i) => !results[i]).map(([a, b]) => `${a.ns} → ${b.ns} (${b.ip})`);
}

/**
 * One ping with a short retry: the first packet to a neighbour that is not
 * resolved yet may wait for ARP, never for weft.
 *
 * @param lab The lab.
 * @param ns Namespace to ping from.
 * @param ip Destination.
 * @returns Whether a reply came back.
 */
export async function podPing(lab: Lab, ns: string, ip: string): Promise<boolean> {
  const r = await lab.exec(ns, ["ping", "-n", "-q", "-c", "2", "-i", "0.1", "-W", "2", ip]);
  return r.code === 0;
}

/**
 * Map with at most `limit` calls in flight.
 *
 * @param items Inputs.
 * @param limit Concurrency.
 * @param fn The mapping.
 * @returns Results in input order.
 */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/**
 * Build a lab, start etcd in its underlay with the network config, start
 * agents on the first `start` hosts and wire their pods.
 *
 * @param options Backend, hosts, pods, runtimes, flags.
 * @returns The running cluster; call `close()` in `finally`.
 * @throws {Error} When the lab, etcd or an agent fails to come up (all torn down).
 */
export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  const lab = await createLab({
    prefix: options.prefix ?? "wex",
    hosts: options.hosts,
    podsPerHost: options.podsPerHost ?? 1,
    internet: options.internet,
  });
  let etcd: EtcdServer | undefined;
  let etcdCluster: EtcdCluster | undefined;
  const agents = new Map<number, AgentProcess>();
  const subnets = new Map<number, string>();
  const pods: PodAddress[] = [];
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    try {
      await Promise.all([...agents.values()].map((a) => a.stop()));
      await etcd?.close();
      await etcdCluster?.close();
    } finally {
      await lab.teardown();
    }
  };
  try {
    const where = { netns: lab.underlay.ns, host: lab.underlay.serviceIP };
    if ((options.etcdMembers ?? 1) > 1) {
      etcdCluster = await startEtcdCluster({ ...where, members: options.etcdMembers });
    } else {
      etcd = await startEtcd(where);
    }
    const single = etcd;
    const etcdctl = (args: string[], o?: { input?: string }) =>
      single ? single.etcdctl(args, o) : etcdCluster!.etcdctl(args, o);
    await etcdctl([
      "put",
      `${ETCD_PREFIX}/config`,
      networkConfigJson(options.backend, options.backendOptions),
    ]);
    const endpoint = `http://${lab.underlay.serviceIP}:2379`;
    const runtimeOf = options.runtimeOf ?? ((i: number) => (i === 2 ? "bun" : "deno"));
    const host = (index: number) => {
      const h = lab.hosts[index - 1];
      if (!h) {
        throw new RangeError(`Cannot find lab host ${index}: the lab has ${lab.hosts.length}`);
      }
      return h;
    };
    const cluster: Cluster = {
      lab,
      get etcd(): EtcdServer {
        if (!single) {
          throw new Error(
            `this cluster has ${options.etcdMembers} etcd members: use cluster.etcdCluster`,
          );
        }
        return single;
      },
      etcdCluster,
      backend: options.backend,
      endpoint,
      agentEndpoints: etcdCluster?.endpoints ?? [endpoint],
      etcdctl,
      agents,
      subnets,
      pods,
      host,
      async startAgent(index, runtime = runtimeOf(index)) {
        const a = startLabAgent(lab, host(index), {
          runtime,
          command: options.commandOf?.(index),
          args: [
            "--etcd-endpoints",
            cluster.agentEndpoints.join(","),
            "--iface",
            "eth0",
            ...(options.agentArgs ?? []),
          ],
          wrap: options.agentWrap?.(host(index), lab),
          env: options.agentEnv?.(host(index), lab),
        });
        agents.set(index, a);
        const subnet = await a.waitReady();
        subnets.set(index, subnet);
        return subnet;
      },
      async attach(index) {
        const a = agents.get(index);
        if (!a) throw new Error(`Cannot attach pods of host ${index}: its agent is not running`);
        const h = host(index);
        const wired = await lab.attachPods(h, a.subnetFile);
        const added = wired.map((w, i) => ({ ns: h.pods[i].ns, ip: w.ip, hostIndex: index }));
        pods.push(...added);
        return added;
      },
      async leases() {
        return parseEtcdLeases(await etcdctl(["get", "--prefix", `${ETCD_PREFIX}/subnets/`]));
      },
      leaseKey(subnet) {
        return `${ETCD_PREFIX}/subnets/${subnet.replace("/", "-")}`;
      },
      async peerStateDiff(index, all) {
        const own = subnets.get(index);
        const peers = (all ?? await cluster.leases()).filter((l) => l.subnet !== own);
        return stateDiff(
          expectedPeerState(options.backend, peers),
          await readPeerState(lab, host(index).ns, options.backend),
        );
      },
      async waitConverged(timeoutMs = 15_000) {
        return await waitFor("peer state on every host matches the leases", async () => {
          const all = await cluster.leases();
          const problems: string[] = [];
          for (const i of agents.keys()) {
            const diff = await cluster.peerStateDiff(i, all);
            if (diff) problems.push(`host ${i}: ${diff}`);
          }
          return problems.length ? problems.join("\n") : null;
        }, timeoutMs);
      },
      close,
      [Symbol.asyncDispose]: close,
    };
    const n = options.start ?? options.hosts;
    const indexes = Array.from({ length: n }, (_, i) => i + 1);
    await Promise.all(indexes.map((i) => cluster.startAgent(i)));
    if (options.attach ?? true) {
      for (const i of indexes) await cluster.attach(i);
    }
    return cluster;
  } catch (err) {
    await close();
    throw err;
  }
}

/**
 * The first address of a CIDR's network (`10.5.3.0/24` → `10.5.3.0`).
 *
 * @param cidr A CIDR.
 * @returns Dotted quad.
 */
export function networkAddress(cidr: string): string {
  return formatIPv4(parseIPv4Net(cidr).ip);
}

/**
 * The wired pods of one host.
 *
 * @param cluster The cluster.
 * @param hostIndex 1-based host index.
 * @returns Its pods, in wiring order.
 */
export function podsOf(cluster: Cluster, hostIndex: number): PodAddress[] {
  return cluster.pods.filter((p) => p.hostIndex === hostIndex);
}

/** Re-exported for callers that only import this module. */
export type { AgentProcess, AgentRuntime, Lab };
