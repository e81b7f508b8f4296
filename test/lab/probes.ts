/**
 * Probes the reliability scenarios (test/lab/store_outages.ts,
 * test/lab/partitions.ts, test/lab/churn.ts) watch a lab with:
 *
 * - {@link startPingRing}: each pod pings the next host's pod every 100 ms
 *   for the whole scenario; at the end every missing echo reply is named.
 * - {@link trafficCounter}: iptables rules inside a namespace that count,
 *   per client address, new TCP connections to a port (what clients cost a
 *   server that is down: each attempt is one SYN) and HTTP requests.
 * - {@link waitRouted}: a subnet routed in every given host (kernel read).
 * - {@link cutFrom}: drop rules inside a host namespace that cut it from
 *   some addresses (a partition), removed again by `heal()`;
 *   {@link refuseFrom}: connections to a server refused and reset instead.
 * - {@link kernelSnapshot}: a host's vxlan device and peer entries, to show
 *   an outage left the datapath untouched.
 *
 * Every rule lives in a namespace the lab created; nothing touches the
 * machine's own namespace.
 *
 * @module
 */

import type { Lab } from "./lab.ts";
import type { LabProcess } from "./lab.ts";
import { type OverlayBackend, type PeerState, type PodAddress, readPeerState } from "./cluster.ts";
import { replySeqs } from "./scenarios.ts";
import { waitFor } from "../../testing/wait.ts";

/** What one pinging pair saw. */
export interface PingPairResult {
  readonly from: string;
  readonly to: string;
  /** Highest sequence number answered. */
  readonly answered: number;
  /** Sequence numbers below `answered` that got no reply. */
  readonly missing: number[];
}

/** Pings running across a lab. */
export interface PingRing {
  /** Stop all pings (after each has answered a few more) and report per pair. */
  stop(): Promise<PingPairResult[]>;
  /** The pings as processes (stopped by the lab's teardown too). */
  readonly processes: readonly LabProcess[];
}

/**
 * Start pings from each pod to the first pod of the next host (a ring over
 * hosts), every `intervalS` seconds, and wait until each has been answered
 * three times.
 *
 * @param lab The lab.
 * @param pods Wired pods (at least one on each of two hosts).
 * @param intervalS Seconds between echo requests (default 0.1).
 * @returns The running ring.
 * @throws {Error} When a pair does not answer within 10 s.
 */
export async function startPingRing(
  lab: Lab,
  pods: readonly PodAddress[],
  intervalS = 0.1,
): Promise<PingRing> {
  const hosts = [...new Set(pods.map((p) => p.hostIndex))].sort((a, b) => a - b);
  const firstOf = (h: number) => pods.find((p) => p.hostIndex === h)!;
  const pairs = hosts.map((h, i) => [firstOf(h), firstOf(hosts[(i + 1) % hosts.length])] as const);
  const processes = pairs.map(([a, b]) =>
    lab.spawn(a.ns, "ping", ["-n", "-i", String(intervalS), "-W", "1", b.ip])
  );
  const answered = (p: LabProcess) => Math.max(0, ...replySeqs(p.stdout()));
  const waitAnswers = (extra: number) => {
    const base = processes.map(answered);
    return waitFor(
      `${extra} more echo replies on every ping of the ring`,
      () => {
        const behind = processes.filter((p, i) => answered(p) < base[i] + extra);
        return behind.length
          ? behind.map((p) => `${p.ns}: ${p.stdout().slice(-200)}`).join("\n")
          : null;
      },
      10_000,
      50,
    );
  };
  await waitAnswers(3);
  return {
    processes,
    async stop() {
      await waitAnswers(5);
      for (const p of processes) p.kill("SIGINT");
      await Promise.all(processes.map((p) => p.exited));
      return processes.map((p, i) => {
        const seqs = replySeqs(p.stdout());
        const last = Math.max(0, ...seqs);
        return {
          from: pairs[i][0].ns,
          to: `${pairs[i][1].ns} (${pairs[i][1].ip})`,
          answered: last,
          missing: Array.from({ length: last }, (_, s) => s + 1).filter((s) => !seqs.has(s)),
        };
      });
    },
  };
}

/** Connection attempts and HTTP requests one client address sent a server. */
export interface ClientTraffic {
  /** New TCP connections (SYNs): what a client costs a server that is down. */
  readonly connections: number;
  /** HTTP/1.1 requests (request lines). */
  readonly requests: number;
}

/** Counts what clients send one server port. */
export interface TrafficCounter {
  /** Counts per client address since the rules went in. */
  read(): Promise<Record<string, ClientTraffic>>;
  /** Take the rules out. Safe to call twice. */
  remove(): Promise<void>;
}

/** ` HTTP/1.1\r\n`: the end of every HTTP/1.1 request line. */
const REQUEST_LINE_END = "|20485454502f312e310d0a|";

/**
 * Count new TCP connections and HTTP/1.1 requests from each client address
 * to `port` in namespace `ns`: iptables rules in its INPUT chain that only
 * count (no verdict). A request is a packet holding the end of a request
 * line, so each is counted once, whether the connection was new or reused.
 *
 * @param lab The lab.
 * @param ns Where the server listens (e.g. the underlay).
 * @param port The server's port.
 * @param clients Client addresses to count apart.
 * @returns The counter; `remove()` it (the namespace's deletion removes it too).
 */
export async function trafficCounter(
  lab: Lab,
  ns: string,
  port: number,
  clients: readonly string[],
): Promise<TrafficCounter> {
  const tag = (kind: string, client: string) => `weft-count-${port}-${kind}-${client}`;
  const rules = clients.flatMap((client) =>
    [
      ["-s", client, "-p", "tcp", "--dport", String(port), "--syn"],
      ["-s", client, "-p", "tcp", "--dport", String(port), "-m", "string", "--algo", "bm"]
        .concat(["--hex-string", REQUEST_LINE_END]),
    ].map((r, i) => [...r, "-m", "comment", "--comment", tag(i ? "req" : "syn", client)])
  );
  for (const r of rules) await lab.run(ns, ["iptables", "-w", "-I", "INPUT", ...r]);
  let removed = false;
  return {
    async read() {
      const out = await lab.run(ns, ["iptables", "-w", "-nvxL", "INPUT"]);
      const count = (t: string) => {
        const line = out.split("\n").find((l) => l.includes(`/* ${t} */`));
        if (!line) throw new Error(`the counting rule ${t} is gone from ${ns}:\n${out}`);
        return Number(line.trim().split(/\s+/)[0]);
      };
      return Object.fromEntries(clients.map((client) => [client, {
        connections: count(tag("syn", client)),
        requests: count(tag("req", client)),
      }]));
    },
    async remove() {
      if (removed) return;
      removed = true;
      for (const r of rules) await lab.exec(ns, ["iptables", "-w", "-D", "INPUT", ...r]);
    },
  };
}

/**
 * The difference of two counter readings, per client and summed.
 *
 * @param later The later reading.
 * @param earlier The earlier reading.
 * @returns Per client, and `all` for the sum.
 */
export function trafficBetween(
  later: Record<string, ClientTraffic>,
  earlier: Record<string, ClientTraffic>,
): Record<string, ClientTraffic> {
  const out: Record<string, ClientTraffic> = {};
  let connections = 0;
  let requests = 0;
  for (const [client, t] of Object.entries(later)) {
    const e = earlier[client] ?? { connections: 0, requests: 0 };
    out[client] = { connections: t.connections - e.connections, requests: t.requests - e.requests };
    connections += out[client].connections;
    requests += out[client].requests;
  }
  out.all = { connections, requests };
  return out;
}

/** A partition made of drop rules inside one namespace. */
export interface Cut {
  /** Take the rules out (the namespace's deletion removes them too). Safe to call twice. */
  heal(): Promise<void>;
}

/**
 * Cut namespace `ns` from `addresses`: every packet to or from them is
 * dropped (silently, as a partition does, not refused).
 *
 * @param lab The lab.
 * @param ns The host namespace.
 * @param addresses Peers to cut it from (etcd's address, other hosts).
 * @returns The cut; `heal()` it.
 */
export async function cutFrom(lab: Lab, ns: string, addresses: readonly string[]): Promise<Cut> {
  const rules = addresses.flatMap((a) => [
    ["OUTPUT", "-d", a, "-j", "DROP", "-m", "comment", "--comment", "weft-cut"],
    ["INPUT", "-s", a, "-j", "DROP", "-m", "comment", "--comment", "weft-cut"],
  ]);
  for (const r of rules) await lab.run(ns, ["iptables", "-w", "-I", ...r]);
  let healed = false;
  return {
    async heal() {
      if (healed) return;
      healed = true;
      for (const r of rules) await lab.run(ns, ["iptables", "-w", "-D", ...r]);
    },
  };
}

/**
 * Refuse namespace `ns` every TCP connection to `address:port`, and reset
 * the ones it has (`ss -K`): as if that server had crashed, seen from this
 * host only. Other hosts keep their connections.
 *
 * @param lab The lab.
 * @param ns The host namespace.
 * @param address The server's address.
 * @param port The server's port.
 * @returns The cut; `heal()` it.
 */
export async function refuseFrom(
  lab: Lab,
  ns: string,
  address: string,
  port: number,
): Promise<Cut> {
  const rule = ["OUTPUT", "-d", address, "-p", "tcp", "--dport", String(port), "-j", "REJECT"]
    .concat(["--reject-with", "tcp-reset", "-m", "comment", "--comment", "weft-refuse"]);
  await lab.run(ns, ["iptables", "-w", "-I", ...rule]);
  await lab.run(ns, ["ss", "-K", "dst", address, "dport", "=", `:${port}`]);
  let healed = false;
  return {
    async heal() {
      if (healed) return;
      healed = true;
      await lab.run(ns, ["iptables", "-w", "-D", ...rule]);
    },
  };
}

/** A host's overlay device and peer entries at one moment. */
export interface KernelSnapshot {
  /** flannel.1's ifindex (vxlan), else undefined. */
  readonly ifindex?: number;
  readonly peers: PeerState;
}

/**
 * Read a host's overlay device and peer entries.
 *
 * @param lab The lab.
 * @param ns The host namespace.
 * @param backend Which entries to read.
 * @returns The snapshot (compare two with `assert.deepEqual`).
 */
export async function kernelSnapshot(
  lab: Lab,
  ns: string,
  backend: OverlayBackend,
): Promise<KernelSnapshot> {
  let ifindex: number | undefined;
  if (backend === "vxlan") {
    ifindex = JSON.parse(await lab.run(ns, "ip -j link show flannel.1"))[0].ifindex;
  }
  return { ifindex, peers: await readPeerState(lab, ns, backend) };
}

/**
 * Wait until `subnet` is routed in every namespace of `namespaces` (read from
 * the kernel every 10 ms).
 *
 * @param lab The lab.
 * @param namespaces Host namespaces.
 * @param subnet CIDR, e.g. `10.5.250.0/24`.
 * @param timeoutMs Give up after this long (default 15 s).
 * @returns The `performance.now()` when it was seen everywhere.
 * @throws {Error} On timeout, naming the hosts without the route.
 */
export async function waitRouted(
  lab: Lab,
  namespaces: readonly string[],
  subnet: string,
  timeoutMs = 15_000,
): Promise<number> {
  await waitFor(
    `${subnet} routed in ${namespaces.join(", ")}`,
    async () => {
      const missing: string[] = [];
      await Promise.all(namespaces.map(async (ns) => {
        const r = await lab.exec(ns, ["ip", "-j", "route", "show", subnet]);
        if (r.stdout.trim() === "[]" || r.stdout.trim() === "") missing.push(ns);
      }));
      return missing.length ? `not in ${missing.join(", ")}` : null;
    },
    timeoutMs,
    10,
  );
  return performance.now();
}

/** Milliseconds since `t0` (a `performance.now()`), rounded. */
export function since(t0: number): number {
  return Math.round(performance.now() - t0);
}
