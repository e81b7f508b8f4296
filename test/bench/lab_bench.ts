/**
 * Benchmarks on the lab: real agents over a real etcd, measured against the
 * same kernel datapath built by hand. Each function builds its own labs and
 * tears them down.
 *
 * - {@link benchVxlanThroughput}: iperf3 TCP pod → pod across two hosts over
 *   weft's vxlan vs a hand-built kernel vxlan pair (same MTU 1450, same
 *   topology: pods on cni0, `flannel.1` with the same VNI/port/nolearning,
 *   the same route/neighbour/fdb per peer, written with `ip`/`bridge`).
 * - {@link benchHostGwThroughput}: the same over weft's host-gw vs the same
 *   pods routed by hand (`ip route add <peer subnet> via <peer>`); host →
 *   host over the bare underlay is reported too.
 * - {@link benchLeaseToRoute}: a lease written to etcd → its route in the
 *   kernel of every peer. A writer process in the underlay namespace puts N
 *   leases through etcd's JSON gateway (stamping the wall clock just before
 *   each put); `ip -ts monitor route` in every host stamps the kernel's
 *   route notifications.
 *
 * Throughput runs alternate (weft, baseline, weft, …) so drift on a busy
 * machine hits both sides alike; figures are medians.
 *
 * Run alone: `deno run -A test/bench/lab_bench.ts [vxlan|host-gw|lease] …`.
 *
 * @module
 */

import * as fs from "node:fs";
import * as path from "node:path";
import process from "node:process";
import { createLab, evalCommand, type Lab, type LabProcess, REPO_ROOT } from "../lab/lab.ts";
import { type OverlayBackend, podsOf, startCluster } from "../lab/cluster.ts";
import { renderSubnetEnv } from "../../lease/subnet_env.ts";
import { parseIPv4Net } from "../../core/ip.ts";
import { median, percentile, roundTo } from "./stats.ts";
import { waitFor } from "../../testing/wait.ts";

/** Options of the throughput benchmarks. */
export interface ThroughputOptions {
  /** Seconds per iperf3 run after a 1 s warm-up that is not counted (default 3). */
  readonly seconds?: number;
  /** Runs per side (default 4). */
  readonly repetitions?: number;
  /** Extra agent flags (e.g. `--iptables-forward-rules=false` to measure the rules' cost). */
  readonly agentArgs?: readonly string[];
}

/** Result of {@link benchVxlanThroughput}. */
export interface VxlanThroughputResult {
  /** Median Gbit/s pod → pod over weft's vxlan. */
  readonly weftGbps: number;
  /** Median Gbit/s pod → pod over the hand-built kernel vxlan pair. */
  readonly kernelGbps: number;
  /** weft / kernel (goal ≥ 0.97). */
  readonly ratio: number;
  /** Pod MTU on both sides. */
  readonly mtu: number;
  /** Every run, Gbit/s. */
  readonly runs: { readonly weft: number[]; readonly kernel: number[] };
}

/** Result of {@link benchHostGwThroughput}. */
export interface HostGwThroughputResult {
  /** Median Gbit/s pod → pod over weft's host-gw. */
  readonly weftGbps: number;
  /** Median Gbit/s pod → pod with the same routes added by hand. */
  readonly routedGbps: number;
  /** Median Gbit/s host → host over the underlay alone (no pods, no forwarding). */
  readonly hostGbps: number;
  /** weft / hand-routed (same topology; goal ≥ 0.97). */
  readonly ratio: number;
  /** weft / host → host (includes the pods' veth + bridge hops). */
  readonly ratioVsHost: number;
  readonly runs: {
    readonly weft: number[];
    readonly routed: number[];
    readonly host: number[];
  };
}

/** Options of {@link benchLeaseToRoute}. */
export interface LeaseToRouteOptions {
  /** Leases written, one at a time (default 100). */
  readonly leases?: number;
  /** Backend of the agents (default vxlan). */
  readonly backend?: OverlayBackend;
  /** Hosts running agents (default 3: Deno, Bun, Deno). */
  readonly hosts?: number;
  /** Pause between writes, ms; a random 0–gap is added (default 20). */
  readonly gapMs?: number;
}

/** Result of {@link benchLeaseToRoute}, ms. */
export interface LeaseToRouteResult {
  readonly leases: number;
  readonly hosts: number;
  readonly backend: OverlayBackend;
  /** Put → route present on all peers (the slowest peer per lease). */
  readonly allPeersP50Ms: number;
  readonly allPeersP99Ms: number;
  readonly allPeersMaxMs: number;
  /** Put → route present on one peer (every peer × lease). */
  readonly perPeerP50Ms: number;
  readonly perPeerP99Ms: number;
}

/** A route outside every lab network, added to check that `ip monitor` listens. */
const MONITOR_PROBE = "198.18.255.254";

const round = (x: number, digits = 2) => roundTo(x, digits);

/**
 * Run each measurement `reps` times, reversing the order every round
 * (A B, B A, …) so a trend in the machine's load hits all sides alike.
 */
export async function interleaved(reps: number, runs: (() => Promise<unknown>)[]): Promise<void> {
  for (let r = 0; r < reps; r++) {
    for (const run of r % 2 ? [...runs].reverse() : runs) await run();
  }
}

/** An iperf3 server in `ns`, ready for clients. */
export async function iperfServer(lab: Lab, ns: string): Promise<LabProcess> {
  // server on CPU 1, client on CPU 0: both sides of every comparison get the same placement,
  // which takes most of the run-to-run noise of a 2-core machine out
  const p = lab.spawn(ns, "taskset", ["-c", "1", "iperf3", "-s", "--forceflush"]);
  await p.waitForOutput(/Server listening/, 10_000);
  return p;
}

/**
 * One iperf3 TCP run.
 *
 * @returns Gbit/s received.
 * @throws {Error} When iperf3 fails.
 */
export async function iperf(
  lab: Lab,
  fromNs: string,
  ip: string,
  seconds: number,
): Promise<number> {
  const r = await lab.exec(fromNs, [
    "taskset",
    "-c",
    "0",
    "iperf3",
    "-c",
    ip,
    "-t",
    String(seconds),
    "-O",
    "1",
    "-J",
  ]);
  if (r.code !== 0) {
    throw new Error(`iperf3 ${fromNs} → ${ip} failed (${r.code}): ${r.stdout.slice(-500)}`);
  }
  const out = JSON.parse(r.stdout);
  return out.end.sum_received.bits_per_second / 1e9;
}

/**
 * A two-host lab whose pods (one per host) are wired by weft attach logic
 * from hand-written subnet.env files (10.6.1.0/24, 10.6.2.0/24), and whose
 * hosts route to each other with `peer(lab, i, j)`'s commands.
 */
export async function handBuiltPair(
  mtu: number,
  setup: (lab: Lab, host: number) => string[][],
  peer: (lab: Lab, host: number, other: number, macs: string[]) => string[][],
): Promise<{ lab: Lab; podIPs: string[] }> {
  const lab = await createLab({ prefix: "wex", hosts: 2, podsPerHost: 1 });
  try {
    const macs: string[] = [];
    for (const h of lab.hosts) {
      for (const cmd of setup(lab, h.index)) await lab.run(h.ns, cmd);
      const link = await lab.exec(h.ns, "ip -j link show flannel.1");
      macs.push(link.code === 0 ? JSON.parse(link.stdout)[0].address : "");
    }
    const podIPs: string[] = [];
    for (const h of lab.hosts) {
      const file = path.join(lab.dir, `${h.ns}.subnet.env`);
      fs.writeFileSync(
        file,
        renderSubnetEnv({
          network: parseIPv4Net("10.6.0.0/16"),
          subnet: parseIPv4Net(`10.6.${h.index}.0/24`),
          mtu,
          ipMasq: false,
        }),
      );
      const [pod] = await lab.attachPods(h, file);
      podIPs.push(pod.ip);
      for (const cmd of peer(lab, h.index, 3 - h.index, macs)) await lab.run(h.ns, cmd);
    }
    return { lab, podIPs };
  } catch (e) {
    await lab.teardown();
    throw e;
  }
}

/**
 * iperf3 pod → pod over weft's vxlan vs a hand-built kernel vxlan pair.
 *
 * @param options Run length and repetitions.
 * @returns Medians, ratio and every run.
 * @throws {Error} When a lab, an agent or iperf3 fails.
 */
export async function benchVxlanThroughput(
  options: ThroughputOptions = {},
): Promise<VxlanThroughputResult> {
  const seconds = options.seconds ?? 3;
  const reps = options.repetitions ?? 4;
  const mtu = 1450;
  const c = await startCluster({
    backend: "vxlan",
    hosts: 2,
    podsPerHost: 1,
    agentArgs: options.agentArgs,
  });
  let pair: Awaited<ReturnType<typeof handBuiltPair>> | undefined;
  try {
    await c.waitConverged();
    pair = await handBuiltPair(
      mtu,
      (lab, i) => {
        const ip = lab.hosts[i - 1].ip;
        return [
          // what flannel's vxlan backend creates: VNI 1, port 8472, nolearning, MTU 1500 − 50
          // deno-fmt-ignore
          ["ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", ip, "dev", "eth0",
            "dstport", "8472", "nolearning"],
          ["ip", "link", "set", "flannel.1", "mtu", String(mtu), "up"],
          ["ip", "addr", "add", `10.6.${i}.0/32`, "dev", "flannel.1"],
        ];
      },
      (lab, _i, j, macs) => [
        // deno-fmt-ignore
        ["ip", "neigh", "add", `10.6.${j}.0`, "lladdr", macs[j - 1], "dev", "flannel.1", "nud",
          "permanent"],
        // deno-fmt-ignore
        ["bridge", "fdb", "append", macs[j - 1], "dev", "flannel.1", "dst", lab.hosts[j - 1].ip,
          "self", "permanent"],
        [
          "ip",
          "route",
          "add",
          `10.6.${j}.0/24`,
          "via",
          `10.6.${j}.0`,
          "dev",
          "flannel.1",
          "onlink",
        ],
      ],
    );
    const [w1] = podsOf(c, 1);
    const [w2] = podsOf(c, 2);
    const weftPodMtu = (await c.lab.run(w1.ns, "ip -o link show eth0")).match(/mtu (\d+)/)?.[1];
    if (Number(weftPodMtu) !== mtu) {
      throw new Error(`weft's pod MTU is ${weftPodMtu}, the hand-built pair uses ${mtu}`);
    }
    await iperfServer(c.lab, w2.ns);
    await iperfServer(pair.lab, pair.lab.hosts[1].pods[0].ns);
    const weft: number[] = [];
    const kernel: number[] = [];
    const p = pair;
    await interleaved(reps, [
      async () => weft.push(await iperf(c.lab, w1.ns, w2.ip, seconds)),
      async () => kernel.push(await iperf(p.lab, p.lab.hosts[0].pods[0].ns, p.podIPs[1], seconds)),
    ]);
    const weftGbps = median(weft);
    const kernelGbps = median(kernel);
    return {
      weftGbps: round(weftGbps),
      kernelGbps: round(kernelGbps),
      ratio: round(weftGbps / kernelGbps, 3),
      mtu,
      runs: { weft: weft.map((x) => round(x)), kernel: kernel.map((x) => round(x)) },
    };
  } finally {
    await pair?.lab.teardown();
    await c.close();
  }
}

/**
 * iperf3 pod → pod over weft's host-gw vs the same pods routed by hand, and
 * host → host over the underlay.
 *
 * @param options Run length and repetitions.
 * @returns Medians, ratios and every run.
 * @throws {Error} When a lab, an agent or iperf3 fails.
 */
export async function benchHostGwThroughput(
  options: ThroughputOptions = {},
): Promise<HostGwThroughputResult> {
  const seconds = options.seconds ?? 3;
  const reps = options.repetitions ?? 4;
  const c = await startCluster({
    backend: "host-gw",
    hosts: 2,
    podsPerHost: 1,
    agentArgs: options.agentArgs,
  });
  let pair: Awaited<ReturnType<typeof handBuiltPair>> | undefined;
  try {
    await c.waitConverged();
    pair = await handBuiltPair(
      1500,
      () => [],
      (lab, _i, j) => [["ip", "route", "add", `10.6.${j}.0/24`, "via", lab.hosts[j - 1].ip]],
    );
    const [w1] = podsOf(c, 1);
    const [w2] = podsOf(c, 2);
    await iperfServer(c.lab, w2.ns);
    await iperfServer(c.lab, c.host(2).ns);
    await iperfServer(pair.lab, pair.lab.hosts[1].pods[0].ns);
    const weft: number[] = [];
    const routed: number[] = [];
    const host: number[] = [];
    const p = pair;
    await interleaved(reps, [
      async () => weft.push(await iperf(c.lab, w1.ns, w2.ip, seconds)),
      async () => routed.push(await iperf(p.lab, p.lab.hosts[0].pods[0].ns, p.podIPs[1], seconds)),
      async () => host.push(await iperf(c.lab, c.host(1).ns, c.host(2).ip, seconds)),
    ]);
    const [wg, rg, hg] = [median(weft), median(routed), median(host)];
    return {
      weftGbps: round(wg),
      routedGbps: round(rg),
      hostGbps: round(hg),
      ratio: round(wg / rg, 3),
      ratioVsHost: round(wg / hg, 3),
      runs: {
        weft: weft.map((x) => round(x)),
        routed: routed.map((x) => round(x)),
        host: host.map((x) => round(x)),
      },
    };
  } finally {
    await pair?.lab.teardown();
    await c.close();
  }
}

/** The writer run in the underlay namespace: grant one etcd lease, put each key, stamp each put. */
const WRITER = `import process from "node:process";
const { endpoint, ttl, gapMs, puts } = JSON.parse(process.env.WEX_WRITER);
const b64 = (s) => btoa(s);
const post = async (p, body) => {
  const r = await fetch(endpoint + p, { method: "POST", body: JSON.stringify(body) });
  if (!r.ok) throw new Error(p + " " + r.status + " " + await r.text());
  return await r.json();
};
const { ID } = await post("/v3/lease/grant", { TTL: ttl });
for (const [i, p] of puts.entries()) {
  await new Promise((r) => setTimeout(r, gapMs + Math.random() * gapMs)); // scenario: paced puts
  const t = performance.timeOrigin + performance.now();
  await post("/v3/kv/put", { key: b64(p.key), value: b64(p.value), lease: ID });
  console.log(JSON.stringify({ i, t }));
}
console.log("done");
`;

/** `[2026-11-28T06:30:43.032231] 10.5.3.0/24 via …` (TZ=UTC) → [epoch ms, destination]. */
function parseMonitorLine(line: string): [number, string] | undefined {
  const m = line.match(/^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?\] (\d+\.\d+\.\d+\.\d+\/\d+) /);
  if (!m) return undefined; // also skips "Deleted …"
  return [Date.parse(`${m[1]}Z`) + Number(m[2] ?? 0) * 1000, m[3]];
}

/**
 * Lease written → route present on every peer, p50/p99.
 *
 * @param options Leases, backend, hosts, pacing.
 * @returns Latencies in ms.
 * @throws {Error} When the cluster or the writer fails.
 */
export async function benchLeaseToRoute(
  options: LeaseToRouteOptions = {},
): Promise<LeaseToRouteResult> {
  const n = options.leases ?? 100;
  const backend = options.backend ?? "vxlan";
  const hosts = options.hosts ?? 3;
  const c = await startCluster({ backend, hosts, podsPerHost: 0, attach: false });
  try {
    await c.waitConverged();
    const taken = new Set(c.subnets.values());
    const subnets: string[] = [];
    for (let x = 1; x < 255 && subnets.length < n; x++) {
      const s = `10.5.${x}.0/24`;
      if (!taken.has(s)) subnets.push(s);
    }
    if (subnets.length < n) throw new RangeError(`Cannot write ${n} leases: only 251 /24s fit`);
    const puts = subnets.map((s, i) => {
      const hex = (i + 1).toString(16).padStart(4, "0");
      const value = backend === "vxlan"
        ? {
          PublicIP: `192.0.2.${100 + (i % 100)}`,
          PublicIPv6: null,
          BackendType: "vxlan",
          BackendData: { VNI: 1, VtepMAC: `02:00:00:00:${hex.slice(0, 2)}:${hex.slice(2)}` },
        }
        : { PublicIP: `192.0.2.${100 + (i % 100)}`, PublicIPv6: null, BackendType: "host-gw" };
      return { key: c.leaseKey(s), value: JSON.stringify(value) };
    });

    const monitors = c.lab.hosts.slice(0, hosts).map((h) =>
      c.lab.spawn(h.ns, "ip", ["-ts", "monitor", "route"], { env: { TZ: "UTC" } })
    );
    // a monitor has subscribed once it reports a route added after it started
    for (const [i, m] of monitors.entries()) {
      const ns = c.lab.hosts[i].ns;
      const probe = `blackhole ${MONITOR_PROBE}`;
      await waitFor(
        `ip monitor in ${ns} reports routes`,
        async () => {
          await c.lab.exec(ns, `ip route del ${probe}`); // so that each add is an event
          await c.lab.run(ns, `ip route add ${probe}`);
          return m.stdout().includes(MONITOR_PROBE) ? null : `no line for ${probe} yet`;
        },
        10_000,
        50,
      );
      await c.lab.run(ns, `ip route del ${probe}`);
    }
    const { cmd, args } = evalCommand(WRITER);
    const writer = c.lab.spawn(c.lab.underlay.ns, cmd, args, {
      cwd: REPO_ROOT,
      env: {
        WEX_WRITER: JSON.stringify({
          endpoint: c.endpoint,
          ttl: 86400,
          gapMs: options.gapMs ?? 20,
          puts,
        }),
      },
    });
    await writer.waitForOutput(/^done$/m, 60_000 + n * 200);
    const written = new Map<string, number>();
    for (const line of writer.stdout().split("\n")) {
      if (!line.startsWith("{")) continue;
      const { i, t } = JSON.parse(line);
      written.set(subnets[i], t);
    }
    // wait for every route on every peer
    const seen = () =>
      monitors.map((m) => {
        const at = new Map<string, number>();
        for (const line of m.stdout().split("\n")) {
          const p = parseMonitorLine(line);
          if (p && written.has(p[1]) && !at.has(p[1])) at.set(p[1], p[0]);
        }
        return at;
      });
    await waitFor(
      `routes of all ${n} leases on all ${hosts} peers`,
      () => {
        const short = seen().map((at, i) => [c.lab.hosts[i].ns, n - at.size] as const)
          .filter(([, missing]) => missing > 0);
        return short.length ? short.map(([ns, k]) => `${ns} lacks ${k}`).join(", ") : null;
      },
      20_000,
      100,
    );
    const views = seen();
    monitors.forEach((m) => m.kill("SIGTERM"));

    const perPeer: number[] = [];
    const allPeers: number[] = [];
    for (const [subnet, t] of written) {
      let worst = 0;
      for (const at of views) {
        const r = at.get(subnet)!;
        if (r - t < -1) {
          throw new Error(`route for ${subnet} seen ${t - r} ms before its put: clock mismatch`);
        }
        perPeer.push(r - t);
        worst = Math.max(worst, r - t);
      }
      allPeers.push(worst);
    }
    return {
      leases: n,
      hosts,
      backend,
      allPeersP50Ms: round(percentile(allPeers, 0.5), 1),
      allPeersP99Ms: round(percentile(allPeers, 0.99), 1),
      allPeersMaxMs: round(Math.max(...allPeers), 1),
      perPeerP50Ms: round(percentile(perPeer, 0.5), 1),
      perPeerP99Ms: round(percentile(perPeer, 0.99), 1),
    };
  } finally {
    await c.close();
  }
}

if (import.meta.main) {
  const which = process.argv.slice(2);
  const all = which.length === 0;
  if (all || which.includes("vxlan")) {
    console.log("vxlan throughput", JSON.stringify(await benchVxlanThroughput()));
  }
  if (all || which.includes("host-gw")) {
    console.log("host-gw throughput", JSON.stringify(await benchHostGwThroughput()));
  }
  if (all || which.includes("lease")) {
    for (const backend of ["vxlan", "host-gw"] as const) {
      console.log(
        `lease → route (${backend})`,
        JSON.stringify(await benchLeaseToRoute({ backend })),
      );
    }
  }
}
