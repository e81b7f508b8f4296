/**
 * The udp backend through real agents in the lab: iperf3 pod → pod across two
 * hosts over weft's udp backend (both agents under Deno, then both under
 * Bun) and over weft's vxlan backend, in one lab with the same two pods and
 * the same etcd. Per side: TCP throughput, small-packet (64-byte UDP payload)
 * packets per second received, and the CPU both agent processes used during
 * each run (from `/proc/<pid>/stat`, % of one core; vxlan's datapath is the
 * kernel's, so its agents idle).
 *
 * The cluster starts on udp with `Backend.MTU` 1450, so the pods get
 * vxlan's MTU and keep it for every side. Each round then measures the
 * sides in turn, switching by stopping both agents, rewriting the network
 * config in etcd when the backend changes and starting the agents under the
 * side's runtime (udp's TUN device leaves with its agent; vxlan's
 * `flannel.1`, which its agent keeps, is deleted before udp comes back).
 * Figures are medians over the rounds on a noisy 2-core machine: compare
 * within one run.
 *
 * Run alone: `deno run -A test/bench/udp_lab_bench.ts [seconds]` prints JSON.
 *
 * @module
 */

import * as fs from "node:fs";
import * as os from "node:os";
import process from "node:process";
import {
  type AgentRuntime,
  type Cluster,
  ETCD_PREFIX,
  networkConfigJson,
  pingFailures,
  podsOf,
  startCluster,
} from "../lab/cluster.ts";
import { waitFor } from "../../testing/wait.ts";
import type { Lab, LabProcess } from "../lab/lab.ts";
import { median, roundTo } from "./stats.ts";

/** Throughput of flannel's own udp backend as reported in flannel issue #784 (not measured here). */
export const FLANNEL_UDP_REPORTED_MBPS = 76;

/** Options of {@link benchUdpLab}. */
export interface UdpLabBenchOptions {
  /** Seconds per iperf3 TCP run, after a 1 s warm-up that is not counted (default 3). */
  readonly seconds?: number;
  /** Seconds per small-packet run (default 2). */
  readonly ppsSeconds?: number;
  /** Rounds; each round measures every side once, in turn (default 3). */
  readonly repetitions?: number;
  /** UDP payload bytes of the small-packet run (default 64). */
  readonly smallPacketBytes?: number;
}

/** The figures of one side (backend × agent runtime). */
export interface UdpLabSide {
  readonly backend: "udp" | "vxlan";
  readonly runtime: AgentRuntime;
  /** Median iperf3 TCP goodput pod → pod, Mbit/s. */
  readonly tcpMbps: number;
  /** Median TCP retransmissions per run. */
  readonly tcpRetransmits: number;
  /** Median CPU of the sending / receiving host's agent during the TCP runs, % of one core. */
  readonly tcpCpuSender: number;
  readonly tcpCpuReceiver: number;
  /** Median small UDP packets per second received by the far pod. */
  readonly pps: number;
  /** Median small packets per second the near pod sent. */
  readonly ppsOffered: number;
  /** Median CPU of the sending / receiving agent during the small-packet runs, %. */
  readonly ppsCpuSender: number;
  readonly ppsCpuReceiver: number;
  /** Every run. */
  readonly runs: { readonly tcpMbps: number[]; readonly pps: number[] };
}

/** Result of {@link benchUdpLab}. */
export interface UdpLabBenchResult {
  readonly udpDeno: UdpLabSide;
  readonly udpBun: UdpLabSide;
  readonly vxlan: UdpLabSide;
  /** udp TCP throughput / vxlan's, per runtime (goal ≥ 0.3). */
  readonly ratioDeno: number;
  readonly ratioBun: number;
  /** udp TCP throughput under Bun / under Deno (> 1: Bun is faster). */
  readonly bunOverDenoTcp: number;
  /** udp small-packet rate under Bun / under Deno. */
  readonly bunOverDenoPps: number;
  /** The faster runtime's udp TCP throughput / {@link FLANNEL_UDP_REPORTED_MBPS}. */
  readonly timesFlannelUdpReported: number;
  /** Pod MTU on every side. */
  readonly mtu: number;
  readonly seconds: number;
  /** The machine's 1-minute load average when the bench started. */
  readonly loadAverage: number;
}

/** Pod MTU on every side: vxlan's default (1500 − 50); udp gets it through `Backend.MTU`. */
const MTU = 1450;

const round = (x: number, digits = 0) => roundTo(x, digits);

/** Clock ticks per second in /proc/<pid>/stat (USER_HZ, 100 on Linux's ABIs). */
const USER_HZ = 100;

/**
 * CPU time a process has used so far (all its threads), ms.
 *
 * @param pid Process id.
 * @returns utime + stime in ms.
 * @throws {Error} When the process is gone.
 */
function cpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15
  return (Number(fields[11]) + Number(fields[12])) * (1000 / USER_HZ);
}

/**
 * Run `work` and measure the CPU the given processes used meanwhile.
 *
 * @returns The work's result and each process's CPU, % of one core.
 */
async function withCpu<T>(
  pids: readonly number[],
  work: () => Promise<T>,
): Promise<{ result: T; cpu: number[] }> {
  const before = pids.map(cpuMs);
  const t0 = performance.now();
  const result = await work();
  const ms = performance.now() - t0;
  return { result, cpu: pids.map((p, i) => ((cpuMs(p) - before[i]) / ms) * 100) };
}

// deno-lint-ignore no-explicit-any
type IperfJson = Record<string, any>;

/** The iperf3 server in the receiving pod; it serves one client at a time. */
interface IperfServer {
  readonly ip: string;
  readonly process: LabProcess;
  /** Client runs started so far. */
  runs: number;
}

/**
 * Wait until the server listens for the next run: it prints "Server
 * listening" at start and again after each run it has finished.
 */
async function nextRun(server: IperfServer): Promise<void> {
  await waitFor(`the iperf3 server on ${server.ip} listens for run ${server.runs + 1}`, () => {
    const listening = server.process.stdout().match(/Server listening/g)?.length ?? 0;
    if (listening > server.runs) return null;
    const code = server.process.exitCode();
    if (code !== null) {
      throw new Error(
        `the iperf3 server exited with ${code}: ${server.process.stdout().slice(-500)}`,
      );
    }
    return `it said "Server listening" ${listening} times for ${server.runs} runs so far`;
  }, 10_000);
  server.runs++;
}

/** One iperf3 client run (after {@link nextRun}). */
async function iperfJson(lab: Lab, ns: string, args: readonly string[]): Promise<IperfJson> {
  const r = await lab.exec(ns, ["iperf3", "-J", ...args]);
  let json: IperfJson = {};
  try {
    json = JSON.parse(r.stdout);
  } catch {
    // no JSON: reported below
  }
  if (r.code === 0 && !json.error) return json;
  const why = json.error ?? (r.stderr.trim() || `exit ${r.code}`);
  throw new Error(`iperf3 ${args.join(" ")} in ${ns} failed: ${why}`);
}

/** Every pod pair pings, and the agents have listed their peers. */
async function waitCarrying(c: Cluster): Promise<void> {
  for (const a of c.agents.values()) await a.waitLog((r) => r.msg === "peers listed");
  await waitFor(
    "pods reach each other",
    async () => {
      const failed = await pingFailures(c.lab, c.pods);
      return failed.length ? failed.join(", ") : null;
    },
    15_000,
    200,
  );
}

/** One side of the comparison. */
interface Side {
  readonly backend: "udp" | "vxlan";
  readonly runtime: AgentRuntime;
}

/**
 * Stop both agents and start them again as `side`: the network config in
 * etcd switched to its backend. Going from vxlan to udp, `flannel.1` is
 * deleted first (the vxlan agent leaves it in place by design, and its
 * per-peer routes would take the traffic past flannel0).
 */
async function switchTo(c: Cluster, from: Side, side: Side): Promise<void> {
  for (const a of c.agents.values()) await a.stop();
  if (from.backend !== side.backend) {
    if (from.backend === "vxlan") {
      for (const i of [1, 2]) await c.lab.run(c.host(i).ns, "ip link del flannel.1");
    }
    const extra = side.backend === "udp" ? { MTU } : {};
    await c.etcd.etcdctl([
      "put",
      `${ETCD_PREFIX}/config`,
      networkConfigJson(side.backend, extra),
    ]);
  }
  for (const i of [1, 2]) await c.startAgent(i, side.runtime);
  await waitCarrying(c);
}

/** The samples of one side, one per round. */
interface Samples {
  tcp: { mbps: number; retr: number; cpu: number[] }[];
  small: { pps: number; offered: number; cpu: number[] }[];
}

/** One TCP run and one small-packet run, with both agents' CPU. */
async function measureRound(
  c: Cluster,
  server: IperfServer,
  clientNs: string,
  o: Required<UdpLabBenchOptions>,
  into: Samples,
): Promise<void> {
  const pids = [c.agents.get(1)!.process.pid, c.agents.get(2)!.process.pid];
  await nextRun(server);
  const t = await withCpu(
    pids,
    () => iperfJson(c.lab, clientNs, ["-c", server.ip, "-t", String(o.seconds), "-O", "1"]),
  );
  into.tcp.push({
    mbps: t.result.end.sum_received.bits_per_second / 1e6,
    retr: t.result.end.sum_sent.retransmits ?? 0,
    cpu: t.cpu,
  });
  await nextRun(server);
  const u = await withCpu(pids, () =>
    iperfJson(c.lab, clientNs, [
      "-c",
      server.ip,
      "-u",
      "-b",
      "0",
      "-l",
      String(o.smallPacketBytes),
      "-t",
      String(o.ppsSeconds),
    ]));
  const rx = u.result.end.sum_received;
  into.small.push({
    pps: (rx.packets - rx.lost_packets) / rx.seconds,
    offered: u.result.end.sum_sent.packets / u.result.end.sum_sent.seconds,
    cpu: u.cpu,
  });
}

function summarize(side: Side, x: Samples): UdpLabSide {
  const { tcp, small } = x;
  return {
    ...side,
    tcpMbps: round(median(tcp.map((x) => x.mbps))),
    tcpRetransmits: round(median(tcp.map((x) => x.retr))),
    tcpCpuSender: round(median(tcp.map((x) => x.cpu[0]))),
    tcpCpuReceiver: round(median(tcp.map((x) => x.cpu[1]))),
    pps: round(median(small.map((x) => x.pps))),
    ppsOffered: round(median(small.map((x) => x.offered))),
    ppsCpuSender: round(median(small.map((x) => x.cpu[0]))),
    ppsCpuReceiver: round(median(small.map((x) => x.cpu[1]))),
    runs: {
      tcpMbps: tcp.map((x) => round(x.mbps)),
      pps: small.map((x) => round(x.pps)),
    },
  };
}

/**
 * iperf3 pod → pod over weft udp (Deno agents, then Bun agents) and weft
 * vxlan, in one lab (prefix `wue`), torn down afterwards.
 *
 * @param options Run lengths, repetitions, small-packet size.
 * @returns Medians per side, the udp/vxlan ratios and the runtime comparison.
 * @throws {Error} When the lab, etcd, an agent or iperf3 fails.
 * @example
 * ```ts
 * const r = await benchUdpLab({ seconds: 3, repetitions: 2 });
 * console.log(r.udpDeno.tcpMbps, r.vxlan.tcpMbps, r.ratioDeno);
 * ```
 */
export async function benchUdpLab(options: UdpLabBenchOptions = {}): Promise<UdpLabBenchResult> {
  const o: Required<UdpLabBenchOptions> = {
    seconds: options.seconds ?? 3,
    ppsSeconds: options.ppsSeconds ?? 2,
    repetitions: options.repetitions ?? 3,
    smallPacketBytes: options.smallPacketBytes ?? 64,
  };
  const loadAverage = os.loadavg()[0];
  const c = await startCluster({
    // cluster.ts types only the kernel backends it reads peer state for; the
    // lab, etcd, agents and pod wiring it provides are backend-neutral
    backend: "udp",
    prefix: "wue",
    hosts: 2,
    podsPerHost: 1,
    runtimeOf: () => "deno",
    backendOptions: { MTU },
  });
  let server: IperfServer | undefined;
  try {
    const [p1] = podsOf(c, 1);
    const [p2] = podsOf(c, 2);
    for (const p of [p1, p2]) {
      const mtu = (await c.lab.run(p.ns, "ip -o link show eth0")).match(/mtu (\d+)/)?.[1];
      if (Number(mtu) !== MTU) throw new Error(`pod ${p.ns} has MTU ${mtu}, expected ${MTU}`);
    }
    server = { ip: p2.ip, process: c.lab.spawn(p2.ns, "iperf3", ["-s", "--forceflush"]), runs: 0 };

    await waitCarrying(c);
    // rounds alternate the sides, so drift on a busy machine hits all of them alike
    const sides: Side[] = [
      { backend: "udp", runtime: "deno" },
      { backend: "udp", runtime: "bun" },
      { backend: "vxlan", runtime: "deno" },
    ];
    const samples: Samples[] = sides.map(() => ({ tcp: [], small: [] }));
    let current = sides[0];
    for (let r = 0; r < o.repetitions; r++) {
      for (const [k, side] of sides.entries()) {
        if (side !== current) await switchTo(c, current, side);
        current = side;
        await measureRound(c, server, p1.ns, o, samples[k]);
      }
    }
    const [udpDeno, udpBun, vxlan] = sides.map((side, k) => summarize(side, samples[k]));

    const best = Math.max(udpDeno.tcpMbps, udpBun.tcpMbps);
    return {
      udpDeno,
      udpBun,
      vxlan,
      ratioDeno: round(udpDeno.tcpMbps / vxlan.tcpMbps, 3),
      ratioBun: round(udpBun.tcpMbps / vxlan.tcpMbps, 3),
      bunOverDenoTcp: round(udpBun.tcpMbps / udpDeno.tcpMbps, 3),
      bunOverDenoPps: round(udpBun.pps / udpDeno.pps, 3),
      timesFlannelUdpReported: round(best / FLANNEL_UDP_REPORTED_MBPS, 1),
      mtu: MTU,
      seconds: o.seconds,
      loadAverage: round(loadAverage, 2),
    };
  } finally {
    server?.process.kill("SIGKILL");
    await c.close();
  }
}

if (import.meta.main) {
  const seconds = Number(process.argv[2] ?? 3);
  console.log(JSON.stringify(await benchUdpLab({ seconds }), null, 2));
}
