/**
 * Raw performance of the udp backend's packet engine between two network
 * namespaces: packets per second with small UDP packets, TCP throughput
 * (iperf3), and the CPU the engine processes use, per runtime and engine
 * variant; plus a kernel VXLAN tunnel over the same underlay as the yardstick.
 * Needs root, iperf3 and /dev/net/tun.
 *
 * Run alone: `deno run -A test/bench/udp_bench.ts [seconds]` prints JSON.
 *
 * @module
 */

import { spawn, spawnSync } from "node:child_process";
import process from "node:process";
import { createLab, nsRun, sweepNetns } from "../../testing/netns.ts";
import type { SocketIoMode } from "../../backends/udp/io.ts";
import { waitFor } from "../../testing/wait.ts";
import { spawnUdpHost, type UdpHostProcess } from "./udp_host.ts";

/** What to measure. */
export interface UdpBenchOptions {
  /** Runtimes to run both engines under (default both). */
  readonly runtimes?: readonly ("deno" | "bun")[];
  /**
   * Engine variants (default `offload`): `offload` = TUN TSO + UDP GSO/GRO
   * + recvmmsg/sendmmsg; `mmsg` = recvmmsg/sendmmsg only; `single` =
   * recvfrom/sendto per datagram.
   */
  readonly variants?: readonly UdpBenchVariant[];
  /** Seconds per measurement (default 5). */
  readonly seconds?: number;
  /** Also measure a kernel VXLAN tunnel (default true). */
  readonly vxlan?: boolean;
  /** iperf3 UDP payload bytes for the pps run (default 64). */
  readonly smallPacketBytes?: number;
}

/** How the engine moves packets. */
export type UdpBenchVariant = "offload" | "mmsg" | "single";

const VARIANTS: Record<UdpBenchVariant, { mode: SocketIoMode; offload: boolean }> = {
  offload: { mode: "mmsg", offload: true },
  mmsg: { mode: "mmsg", offload: false },
  single: { mode: "single", offload: false },
};

/** One runtime × variant. */
export interface UdpBenchRun {
  readonly runtime: "deno" | "bun";
  readonly variant: UdpBenchVariant;
  /** Small packets per second the sending engine encapsulated. */
  readonly ppsOut: number;
  /** Small packets per second the receiving engine delivered into its TUN. */
  readonly ppsIn: number;
  /** CPU of the sending / receiving agent process during the pps run, % of one core. */
  readonly ppsCpuSender: number;
  readonly ppsCpuReceiver: number;
  /** iperf3 TCP goodput, Mbit/s. */
  readonly tcpMbps: number;
  /** TCP retransmissions during that run. */
  readonly tcpRetransmits: number;
  /** CPU of the sending / receiving agent process during the TCP run, % of one core. */
  readonly tcpCpuSender: number;
  readonly tcpCpuReceiver: number;
}

/** All results. */
export interface UdpBenchResult {
  readonly runs: UdpBenchRun[];
  /** Kernel VXLAN TCP goodput over the same underlay, Mbit/s (when measured). */
  readonly vxlanMbps?: number;
  /** The machine's load average (1 min) when the bench started: the figures are noisy above ~1. */
  readonly loadAverage: number;
}

const NETWORK = "10.66.0.0/16";

/** A one-off iperf3 server in `ns`, once it listens. */
async function iperfServer(ns: string, bind: string): Promise<{ stop(): void }> {
  const child = spawn(
    "ip",
    ["netns", "exec", ns, "iperf3", "-s", "-1", "--forceflush", "-B", bind],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  let code: number | null = null;
  child.on("close", (c) => (code = c ?? 1));
  await waitFor(`iperf3 server on ${bind} in ${ns} listens`, () => {
    if (/Server listening/.test(out)) return null;
    if (code !== null) throw new Error(`iperf3 server in ${ns} exited with ${code}: ${out}`);
    return out || "no output yet";
  }, 10_000);
  return { stop: () => void child.kill("SIGKILL") };
}

// deno-lint-ignore no-explicit-any
type IperfJson = Record<string, any>;

/** One iperf3 client run (its server already listens: see {@link iperfServer}). */
function iperfClient(ns: string, args: string[], seconds: number): IperfJson {
  const r = spawnSync("ip", ["netns", "exec", ns, "iperf3", "-J", ...args], {
    encoding: "utf8",
    timeout: (seconds + 20) * 1000,
  });
  const json = JSON.parse(r.stdout || "{}");
  if (json.error || r.status !== 0) {
    throw new Error(
      `iperf3 ${args.join(" ")} in ${ns} failed (exit ${r.status}): ${json.error ?? r.stderr}`,
    );
  }
  return json;
}

async function measure<T>(
  hosts: readonly UdpHostProcess[],
  work: () => T,
): Promise<{ result: T; seconds: number; cpu: number[]; counters: { out: number; in: number }[] }> {
  const before = await Promise.all(hosts.map((h) => h.stats()));
  const t0 = performance.now();
  const result = work();
  const seconds = (performance.now() - t0) / 1000;
  const after = await Promise.all(hosts.map((h) => h.stats()));
  return {
    result,
    seconds,
    cpu: hosts.map((_, i) => (after[i].cpuMs - before[i].cpuMs) / (seconds * 10)),
    counters: hosts.map((_, i) => ({
      out: after[i].counters.packetsOut - before[i].counters.packetsOut,
      in: after[i].counters.packetsIn - before[i].counters.packetsIn,
    })),
  };
}

/**
 * Run the benchmark in fresh namespaces (prefix `wud`), removed afterwards.
 *
 * @param options What to measure.
 * @returns Figures per runtime and variant.
 * @throws {Error} When not root, or iperf3 or a runtime is missing.
 */
export async function benchUdp(options: UdpBenchOptions = {}): Promise<UdpBenchResult> {
  const seconds = options.seconds ?? 5;
  const loadAverage = Number(
    spawnSync("cat", ["/proc/loadavg"], { encoding: "utf8" }).stdout.split(" ")[0],
  );
  sweepNetns("wud");
  const lab = createLab("wud", 2);
  const [a, b] = lab.hosts;
  const runs: UdpBenchRun[] = [];
  let vxlanMbps: number | undefined;
  try {
    for (const runtime of options.runtimes ?? ["deno", "bun"]) {
      for (const variant of options.variants ?? ["offload"]) {
        const { mode, offload } = VARIANTS[variant];
        const hosts: UdpHostProcess[] = [];
        try {
          hosts.push(
            await spawnUdpHost(a.ns, runtime, {
              network: NETWORK,
              subnet: "10.66.1.0/24",
              publicIP: a.ip,
              peers: [{ subnet: "10.66.2.0/24", publicIP: b.ip }],
              mode,
              offload,
            }),
          );
          hosts.push(
            await spawnUdpHost(b.ns, runtime, {
              network: NETWORK,
              subnet: "10.66.2.0/24",
              publicIP: b.ip,
              peers: [{ subnet: "10.66.1.0/24", publicIP: a.ip }],
              mode,
              offload,
            }),
          );
          let server = await iperfServer(b.ns, "10.66.2.0");
          const small = await measure(hosts, () =>
            iperfClient(a.ns, [
              "-c",
              "10.66.2.0",
              "-u",
              "-b",
              "0",
              "-l",
              String(options.smallPacketBytes ?? 64),
              "-t",
              String(seconds),
            ], seconds));
          server.stop();
          server = await iperfServer(b.ns, "10.66.2.0");
          const tcp = await measure(
            hosts,
            () => iperfClient(a.ns, ["-c", "10.66.2.0", "-t", String(seconds)], seconds),
          );
          server.stop();
          runs.push({
            runtime,
            variant,
            ppsOut: Math.round(small.counters[0].out / small.seconds),
            ppsIn: Math.round(small.counters[1].in / small.seconds),
            ppsCpuSender: Math.round(small.cpu[0]),
            ppsCpuReceiver: Math.round(small.cpu[1]),
            tcpMbps: Math.round(tcp.result.end.sum_received.bits_per_second / 1e6),
            tcpRetransmits: tcp.result.end.sum_sent.retransmits,
            tcpCpuSender: Math.round(tcp.cpu[0]),
            tcpCpuReceiver: Math.round(tcp.cpu[1]),
          });
        } finally {
          for (const h of hosts) await h.stop().catch(() => {});
        }
      }
    }
    if (options.vxlan ?? true) {
      for (const [h, peer, addr] of [[a, b, "10.77.0.1"], [b, a, "10.77.0.2"]] as const) {
        nsRun(
          h.ns,
          "ip",
          "link",
          "add",
          "vx0",
          "type",
          "vxlan",
          "id",
          "42",
          "dstport",
          "4789",
          "local",
          h.ip,
          "remote",
          peer.ip,
          "dev",
          "eth0",
        );
        nsRun(h.ns, "ip", "addr", "add", `${addr}/24`, "dev", "vx0");
        nsRun(h.ns, "ip", "link", "set", "vx0", "mtu", "1450", "up");
      }
      const server = await iperfServer(b.ns, "10.77.0.2");
      const r = iperfClient(a.ns, ["-c", "10.77.0.2", "-t", String(seconds)], seconds);
      server.stop();
      vxlanMbps = Math.round(r.end.sum_received.bits_per_second / 1e6);
    }
  } finally {
    lab.destroy();
  }
  return { runs, vxlanMbps, loadAverage };
}

if (import.meta.main) {
  const seconds = Number(process.argv[2] ?? 5);
  const result = await benchUdp({ seconds, variants: ["offload", "mmsg", "single"] });
  console.log(JSON.stringify(result, null, 2));
}
