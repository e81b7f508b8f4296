/**
 * Benchmark: program N IPv4 routes into an empty network namespace through
 * weft's rtnetlink client (one batched call) versus one `ip -batch -`
 * process, each into its own fresh namespace with the same underlay. Both
 * results are verified by counting the routes afterwards.
 *
 * Run on its own: `deno run -A test/bench/netlink_bench.ts [routes] [rounds]`
 * (or with `bun`).
 *
 * @module
 */

import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import process from "node:process";
import { formatIPv4 } from "../../core/ip.ts";
import { openNetlinkClient } from "../../datapath/netlink/client.ts";
import { createNetns, deleteNetns, run, sweepNetns } from "../../testing/netns.ts";
import type { Route } from "../../datapath/netlink/kernel.ts";
import { median } from "./stats.ts";

/** Result of {@link benchNetlinkRoutes}; times are medians over the rounds. */
export interface NetlinkBenchResult {
  readonly routes: number;
  readonly rounds: number;
  /** Median wall time of one batched `replaceRoutes` call, ms. */
  readonly netlinkMs: number;
  /** Median wall time of one `ip -batch -` process (spawn to exit), ms. */
  readonly ipBatchMs: number;
  /** `ipBatchMs / netlinkMs`. */
  readonly speedup: number;
  /** Median CPU time (user + system) of this process during the netlink call, ms. */
  readonly netlinkCpuMs: number;
  /** Median CPU time (user + system) of the `ip` process, ms (10 ms resolution). */
  readonly ipBatchCpuMs: number;
}

/** CPU time of reaped children (utime + stime from /proc/self/stat), ms. */
function childrenCpuMs(): number {
  const stat = readFileSync("/proc/self/stat", "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields after the command name start at field 3 (state): cutime is 16, cstime 17.
  return (Number(fields[16 - 3]) + Number(fields[17 - 3])) * 10;
}

const PREFIX = "wdp";
const GW = "192.0.2.2";

function underlay(ns: string): void {
  run("ip", ["-n", ns, "link", "add", "ext0", "type", "bridge"]);
  run("ip", ["-n", ns, "link", "set", "ext0", "up"]);
  run("ip", ["-n", ns, "addr", "add", "192.0.2.1/24", "dev", "ext0"]);
}

function countRoutes(ns: string): number {
  const out = run("ip", ["-n", ns, "-4", "route", "show", "proto", "boot"]);
  return out === "" ? 0 : out.split("\n").length;
}

/**
 * Program `count` routes (`10.64.0.0/24`, `10.64.1.0/24`, … via
 * 192.0.2.2 dev ext0) into empty namespaces both ways.
 *
 * @param options `count` routes (default 5000), `rounds` (default 3).
 * @returns Median times and the speed-up.
 * @throws {Error} When either way does not leave exactly `count` routes.
 */
export async function benchNetlinkRoutes(
  options: { count?: number; rounds?: number } = {},
): Promise<NetlinkBenchResult> {
  const count = options.count ?? 5000;
  const rounds = options.rounds ?? 3;
  sweepNetns(PREFIX);
  const base = 0x0a400000; // 10.64.0.0
  const netlinkTimes: number[] = [];
  const ipTimes: number[] = [];
  const netlinkCpu: number[] = [];
  const ipCpu: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const a = createNetns(PREFIX, "bn");
    const b = createNetns(PREFIX, "bi");
    try {
      underlay(a);
      underlay(b);
      const dp = await openNetlinkClient({ netns: a });
      try {
        const ext = (await dp.getLink("ext0"))!;
        const routes: Route[] = [];
        for (let i = 0; i < count; i++) {
          routes.push({
            dst: { ip: (base + i * 256) >>> 0, prefixLen: 24 },
            gateway: 0xc0000202,
            index: ext.index,
          });
        }
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        await dp.replaceRoutes(routes);
        netlinkTimes.push(performance.now() - t0);
        const c = process.cpuUsage(c0);
        netlinkCpu.push((c.user + c.system) / 1000);
      } finally {
        dp.close();
      }
      const lines: string[] = [];
      for (let i = 0; i < count; i++) {
        lines.push(`route replace ${formatIPv4((base + i * 256) >>> 0)}/24 via ${GW} dev ext0`);
      }
      const input = lines.join("\n") + "\n";
      const cc0 = childrenCpuMs();
      const t1 = performance.now();
      const r = spawnSync("ip", ["-n", b, "-batch", "-"], { input, encoding: "utf8" });
      ipTimes.push(performance.now() - t1);
      ipCpu.push(childrenCpuMs() - cc0);
      if (r.status !== 0) throw new Error(`ip -batch failed: ${r.stderr}`);
      const na = countRoutes(a), nb = countRoutes(b);
      if (na !== count || nb !== count) {
        throw new Error(`expected ${count} routes each way, found netlink ${na}, ip -batch ${nb}`);
      }
    } finally {
      deleteNetns(a, b);
    }
  }
  const netlinkMs = median(netlinkTimes);
  const ipBatchMs = median(ipTimes);
  return {
    routes: count,
    rounds,
    netlinkMs,
    ipBatchMs,
    speedup: ipBatchMs / netlinkMs,
    netlinkCpuMs: median(netlinkCpu),
    ipBatchCpuMs: median(ipCpu),
  };
}

if (import.meta.main) {
  const count = Number(process.argv[2] ?? 5000);
  const rounds = Number(process.argv[3] ?? 3);
  const r = await benchNetlinkRoutes({ count, rounds });
  const round1 = (x: number) => Math.round(x * 10) / 10;
  console.log(
    JSON.stringify(Object.fromEntries(Object.entries(r).map(([k, v]) => [k, round1(v)]))),
  );
}
