/**
 * The soak benchmark (`deno task bench --soak`): one vxlan agent on the real
 * kernel of a lab host, 500 peer leases in a real etcd, and steady churn for
 * 30 minutes (a writer in the underlay namespace removes, adds and moves
 * peers at a fixed rate). The agent's RSS and open file descriptors
 * (`/proc/<pid>/status` VmRSS, `/proc/<pid>/fd`) are sampled every 10 s.
 * After a warm-up the growth must stay ≤ 5 %: the figure is the median of
 * the last minute's samples against the median of the first minute after
 * the warm-up. At the end the host's routes, neighbours and fdb entries must
 * equal the leases in etcd exactly.
 *
 * Prints the curve (a sparkline and a table) and saves every sample to
 * `.bench/soak-<time>.json`. `deno task bench --soak=3` runs a 3-minute
 * check (warm-up: a third of the run).
 *
 * Run alone: `deno run -A test/bench/soak_bench.ts [minutes]`.
 *
 * @module
 */

import * as fs from "node:fs";
import * as path from "node:path";
import process from "node:process";
import { ETCD_PREFIX, startCluster } from "../lab/cluster.ts";
import { REPO_ROOT } from "../lab/lab.ts";
import { RUNTIME_BIN } from "../lab/agents.ts";
import { formatIPv4Net, parseIPv4Net } from "../../core/ip.ts";
import { median, roundTo } from "./stats.ts";
import { hold, waitFor } from "../../testing/wait.ts";
import type { SoakWriterInput } from "./soak_writer.ts";

/** Options of {@link benchSoak}. */
export interface SoakOptions {
  /** Length of the churn, minutes (default 30). */
  readonly minutes?: number;
  /** Peer leases kept in etcd (default 500). */
  readonly peers?: number;
  /** Churn operations per second: removes, adds and moves (default 10). */
  readonly opsPerSecond?: number;
  /** Sampling period, seconds (default 10). */
  readonly sampleSeconds?: number;
  /** Warm-up, minutes (default 5, or a third of a run shorter than 15 minutes). */
  readonly warmupMinutes?: number;
  /** Allowed growth after the warm-up, percent (default 5). */
  readonly maxGrowthPercent?: number;
  /** Where the raw samples go (default `.bench/soak-<time>.json`). */
  readonly outFile?: string;
}

/** One sample of the agent process. */
export interface SoakSample {
  /** Seconds since the churn started. */
  readonly t: number;
  /** Resident set size, MiB. */
  readonly rssMiB: number;
  /** Open file descriptors. */
  readonly fds: number;
  /** Churn operations done so far. */
  readonly ops: number;
}

/** The growth of one series after the warm-up. */
export interface Growth {
  /** Median of the first minute after the warm-up. */
  readonly baseline: number;
  /** Median of the last minute. */
  readonly end: number;
  /** Largest sample after the warm-up. */
  readonly peak: number;
  /** end / baseline − 1, percent. */
  readonly percent: number;
  /** Least-squares slope after the warm-up, per hour. */
  readonly slopePerHour: number;
}

/** Result of {@link benchSoak}. */
export interface SoakResult {
  readonly minutes: number;
  readonly peers: number;
  readonly opsPerSecond: number;
  readonly warmupMinutes: number;
  readonly ops: number;
  readonly rss: Growth;
  readonly fds: Growth;
  readonly maxGrowthPercent: number;
  /** Both series within `maxGrowthPercent`. */
  readonly withinGoal: boolean;
  /** Host state vs etcd at the end: null when equal, else the difference. */
  readonly finalDiff: string | null;
  /** Time the host took to match etcd after the churn stopped, ms. */
  readonly convergeMs: number;
  /** Agent log records at warn or error level during the run. */
  readonly warnings: number;
  readonly samples: readonly SoakSample[];
  readonly samplesFile: string;
}

/**
 * Growth of a series after the warm-up.
 *
 * @param samples `[seconds, value]` in time order.
 * @param warmupSeconds Samples before this are ignored.
 * @param windowSeconds Length of the baseline and end windows (default 60).
 * @returns Baseline, end, peak, growth percent, slope per hour.
 * @throws {RangeError} When no sample lies after the warm-up.
 * @example
 * ```ts
 * growthAfterWarmup([[0, 50], [60, 80], [120, 80], [180, 82]], 60).percent; // 2.5
 * ```
 */
export function growthAfterWarmup(
  samples: readonly (readonly [number, number])[],
  warmupSeconds: number,
  windowSeconds = 60,
): Growth {
  const after = samples.filter(([t]) => t >= warmupSeconds);
  if (after.length === 0) {
    throw new RangeError(
      `Cannot measure growth: no sample after the ${warmupSeconds} s warm-up (${samples.length} samples); run longer or shorten the warm-up`,
    );
  }
  const t0 = after[0][0], tEnd = after[after.length - 1][0];
  const first = after.filter(([t]) => t < t0 + windowSeconds).map(([, x]) => x);
  const last = after.filter(([t]) => t > tEnd - windowSeconds).map(([, x]) => x);
  const baseline = median(first), end = median(last);
  const n = after.length;
  const mt = after.reduce((s, [t]) => s + t, 0) / n;
  const mx = after.reduce((s, [, x]) => s + x, 0) / n;
  const cov = after.reduce((s, [t, x]) => s + (t - mt) * (x - mx), 0);
  const vt = after.reduce((s, [t]) => s + (t - mt) ** 2, 0);
  return {
    baseline,
    end,
    peak: Math.max(...after.map(([, x]) => x)),
    percent: baseline > 0 ? (end / baseline - 1) * 100 : 0,
    slopePerHour: vt > 0 ? (cov / vt) * 3600 : 0,
  };
}

const BARS = "▁▂▃▄▅▆▇█";

/**
 * A text sparkline of a series, at most `width` characters (averaged buckets).
 *
 * @param values The series.
 * @param width Most characters (default 60).
 * @returns e.g. `▁▂▄▆██▇`; all `▄` when the series is flat.
 * @example
 * ```ts
 * sparkline([1, 2, 3, 4]); // "▁▃▆█"
 * ```
 */
export function sparkline(values: readonly number[], width = 60): string {
  if (values.length === 0) return "";
  const buckets: number[] = [];
  const per = Math.ceil(values.length / width);
  for (let i = 0; i < values.length; i += per) {
    const part = values.slice(i, i + per);
    buckets.push(part.reduce((s, x) => s + x, 0) / part.length);
  }
  const lo = Math.min(...buckets), hi = Math.max(...buckets);
  if (hi === lo) return BARS[3].repeat(buckets.length);
  return buckets.map((x) => BARS[Math.round(((x - lo) / (hi - lo)) * (BARS.length - 1))]).join("");
}

function readSample(pid: number): { rssMiB: number; fds: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1]);
  if (!Number.isFinite(kb)) throw new Error(`Cannot read VmRSS of process ${pid}: ${status}`);
  return { rssMiB: kb / 1024, fds: fs.readdirSync(`/proc/${pid}/fd`).length };
}

/** Free subnets of the soak network, the agent's own left out. */
function subnetPool(network: string, subnetLen: number, own: string): string[] {
  const net = parseIPv4Net(network);
  const size = 2 ** (32 - subnetLen);
  const out: string[] = [];
  // flannel's SubnetMin: the network's first subnet is never leased
  for (let ip = net.ip + size; ip < net.ip + 2 ** (32 - net.prefixLen); ip += size) {
    const s = formatIPv4Net({ ip: ip >>> 0, prefixLen: subnetLen });
    if (s !== own) out.push(s);
  }
  return out;
}

/**
 * Run the soak.
 *
 * @param options Length, peers, churn rate, sampling, warm-up, goal.
 * @returns The samples and their summary.
 * @throws {Error} When the lab, etcd, the agent or the writer fails.
 */
export async function benchSoak(options: SoakOptions = {}): Promise<SoakResult> {
  const minutes = options.minutes ?? 30;
  const peers = options.peers ?? 500;
  const opsPerSecond = options.opsPerSecond ?? 10;
  const sampleSeconds = options.sampleSeconds ?? 10;
  const warmupMinutes = options.warmupMinutes ?? (minutes < 15 ? minutes / 3 : 5);
  const maxGrowthPercent = options.maxGrowthPercent ?? 5;
  const network = "10.5.0.0/16", subnetLen = 26; // 1022 subnets: room for 500 peers and churn
  const c = await startCluster({
    backend: "vxlan",
    hosts: 1,
    podsPerHost: 0,
    start: 0,
    attach: false,
    prefix: "wsk",
  });
  try {
    await c.etcd.etcdctl([
      "put",
      `${ETCD_PREFIX}/config`,
      JSON.stringify({ Network: network, SubnetLen: subnetLen, Backend: { Type: "vxlan" } }),
    ]);
    const own = await c.startAgent(1, "deno");
    const agent = c.agents.get(1)!;
    const pid = agent.process.pid;
    const input: SoakWriterInput = {
      endpoint: c.endpoint,
      prefix: `${ETCD_PREFIX}/subnets/`,
      pool: subnetPool(network, subnetLen, own),
      peers,
      opsPerSecond,
      seconds: minutes * 60,
      tickMs: sampleSeconds * 1000,
    };
    const writer = c.lab.spawn(
      c.lab.underlay.ns,
      RUNTIME_BIN.deno,
      ["run", "-A", path.join(REPO_ROOT, "test/bench/soak_writer.ts")],
      { cwd: REPO_ROOT, env: { WEFT_SOAK_WRITER: JSON.stringify(input) } },
    );
    await writer.waitForOutput(/"initial":true/, 120_000);
    const ops = () => {
      const lines = writer.stdout().split("\n").filter((l) => l.startsWith("{"));
      return lines.length ? Number(JSON.parse(lines[lines.length - 1]).ops) : 0;
    };
    const started = Date.now();
    const samples: SoakSample[] = [];
    const sample = () => {
      const s = readSample(pid);
      samples.push({
        t: roundTo((Date.now() - started) / 1000, 1),
        rssMiB: roundTo(s.rssMiB, 2),
        fds: s.fds,
        ops: ops(),
      });
      const last = samples[samples.length - 1];
      console.error(
        `soak: ${last.t.toFixed(0)} s  RSS ${
          last.rssMiB.toFixed(1)
        } MiB  fds ${last.fds}  ops ${last.ops}`,
      );
    };
    sample();
    while (writer.exitCode() === null) {
      const next = started + samples.length * sampleSeconds * 1000;
      await Promise.race([
        hold("the sampling period", Math.max(0, next - Date.now())),
        writer.exited,
      ]);
      if (agent.process.exitCode() !== null) {
        throw new Error(
          `the agent exited with ${agent.process.exitCode()} during the soak: ${
            agent.process.stderr().slice(-3000)
          }`,
        );
      }
      if (writer.exitCode() === null) sample();
    }
    if (writer.exitCode() !== 0 || !/^done$/m.test(writer.stdout())) {
      throw new Error(
        `the soak writer failed (${writer.exitCode()}): ${writer.stderr().slice(-2000)}`,
      );
    }
    sample();
    const converged = Date.now();
    let finalDiff: string | null = null;
    try {
      await waitFor("the host's peer state matches etcd", () => c.peerStateDiff(1), 60_000, 250);
    } catch (e) {
      finalDiff = (e as Error).message.slice(0, 2000);
    }
    const convergeMs = Date.now() - converged;
    const warnings = agent.logs().filter((r) => r.level === "warn" || r.level === "error").length;
    const warmup = warmupMinutes * 60;
    const rss = growthAfterWarmup(samples.map((s) => [s.t, s.rssMiB]), warmup);
    const fds = growthAfterWarmup(samples.map((s) => [s.t, s.fds]), warmup);
    const samplesFile = options.outFile ??
      path.join(".bench", `soak-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
    const result: SoakResult = {
      minutes,
      peers,
      opsPerSecond,
      warmupMinutes,
      ops: samples[samples.length - 1].ops,
      rss,
      fds,
      maxGrowthPercent,
      withinGoal: rss.percent <= maxGrowthPercent && fds.percent <= maxGrowthPercent,
      finalDiff,
      convergeMs,
      warnings,
      samples,
      samplesFile,
    };
    fs.mkdirSync(path.dirname(samplesFile), { recursive: true });
    fs.writeFileSync(samplesFile, JSON.stringify(result, null, 2));
    return result;
  } finally {
    await c.close();
  }
}

/**
 * The report lines: summary, the curves as sparklines, a table every few minutes.
 *
 * @param r A result.
 * @returns Lines to print.
 */
export function reportSoak(r: SoakResult): string[] {
  const f = (x: number, d = 1) => x.toFixed(d);
  const pct = (x: number) => `${x >= 0 ? "+" : ""}${f(x)} %`;
  const lines = [
    `soak: 1 vxlan agent, ${r.peers} peers in etcd, ${r.opsPerSecond} churn ops/s for ${r.minutes} min (${r.ops} ops): after a ${
      f(r.warmupMinutes)
    } min warm-up RSS ${f(r.rss.baseline)} → ${f(r.rss.end)} MiB (${pct(r.rss.percent)}, peak ${
      f(r.rss.peak)
    }, slope ${f(r.rss.slopePerHour, 2)} MiB/h), fds ${r.fds.baseline} → ${r.fds.end} (${
      pct(r.fds.percent)
    }, peak ${r.fds.peak}) (goal ≤ ${r.maxGrowthPercent} %: ${
      r.withinGoal ? "meets goal" : "MISSES goal"
    }); kernel state = etcd at the end: ${
      r.finalDiff === null
        ? `yes (${r.convergeMs} ms after the churn stopped)`
        : `NO: ${r.finalDiff}`
    }; agent warnings ${r.warnings}`,
    `soak RSS  ${sparkline(r.samples.map((s) => s.rssMiB))}  (${
      f(Math.min(...r.samples.map((s) => s.rssMiB)))
    }–${f(Math.max(...r.samples.map((s) => s.rssMiB)))} MiB)`,
    `soak fds  ${sparkline(r.samples.map((s) => s.fds))}  (${
      Math.min(...r.samples.map((s) => s.fds))
    }–${Math.max(...r.samples.map((s) => s.fds))})`,
  ];
  const every = Math.max(1, Math.round(r.samples.length / 12));
  lines.push("soak   time   RSS MiB   fds    ops");
  r.samples.forEach((s, i) => {
    if (i % every !== 0 && i !== r.samples.length - 1) return;
    lines.push(
      `soak ${`${f(s.t / 60)} min`.padStart(9)} ${f(s.rssMiB).padStart(8)} ${
        String(s.fds).padStart(5)
      } ${String(s.ops).padStart(6)}`,
    );
  });
  lines.push(`soak samples: ${r.samplesFile}`);
  return lines;
}

if (import.meta.main) {
  const minutes = Number(process.argv[2] ?? 30);
  const r = await benchSoak({ minutes });
  for (const line of reportSoak(r)) console.log(line);
  process.exit(r.withinGoal && r.finalDiff === null ? 0 : 1);
}
