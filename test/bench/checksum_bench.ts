/**
 * The evidence for the udp engine's one hand-written part: the
 * one's-complement sum in WebAssembly (`backends/udp/wasm.ts`) against the
 * same sum in plain TypeScript (`onesSum` of `backends/udp/offload.ts` with
 * 32-bit word loads — the engine's fallback, and what would replace the
 * WebAssembly), on Deno and on Bun, for 64 B, 1400 B and 64 KiB packets.
 *
 * Both sums read the same bytes in the same memory (the wasm memory, at a
 * 4-aligned offset as the engine's buffers are) and must agree. Rounds are
 * timed in process CPU time (a round descheduled by other work on the
 * machine is not charged for the wait) and alternate A B B A between the
 * two, so drift hits both alike; the ratio of each adjacent pair of rounds
 * gives the spread. The
 * plain byte loop (`onesSum` without word loads) is measured too, as a
 * reference. Each runtime runs in its own child process; the processes
 * alternate as well (deno, bun, bun, deno).
 *
 * Run on its own: `deno run -A test/bench/checksum_bench.ts` (both
 * runtimes), or `deno|bun test/bench/checksum_bench.ts --this-runtime`
 * (JSON for the running one).
 *
 * @module
 */

import { spawn } from "node:child_process";
import process from "node:process";
import { execPath, runtimeName } from "../../core/runtime.ts";
import { onesSum } from "../../backends/udp/offload.ts";
import { createWasmChecksum } from "../../backends/udp/wasm.ts";
import { RUNTIME_BIN } from "../lab/agents.ts";
import { median, percentile, roundTo } from "./stats.ts";

/** Packet sizes measured, bytes. */
export const CHECKSUM_SIZES = [64, 1400, 65536] as const;

/** Options of {@link benchChecksumHere} and {@link benchChecksum}. */
export interface ChecksumBenchOptions {
  /** Measured rounds per sum and size (default 40), after 10 unmeasured warm-up rounds. */
  readonly rounds?: number;
  /**
   * How long one round of the WebAssembly sum takes (default 5 ms): the packet
   * count per round is calibrated to it, so rounds are long against the
   * scheduler's time slice and equal for both sums.
   */
  readonly roundMs?: number;
  /** Child processes per runtime for {@link benchChecksum} (default 2). */
  readonly processes?: number;
}

/** One packet size in one runtime. */
export interface ChecksumSizeResult {
  readonly bytes: number;
  /** Median ns per packet, WebAssembly. */
  readonly wasmNs: number;
  /** Median ns per packet, TypeScript with 32-bit word loads. */
  readonly tsNs: number;
  /** Median ns per packet, TypeScript byte loop (reference). */
  readonly byteLoopNs: number;
  /** Median of the paired-round ratios tsNs / wasmNs (> 1: WebAssembly is faster). */
  readonly ratio: number;
  /** 10th and 90th percentile of the paired-round ratios. */
  readonly ratioP10: number;
  readonly ratioP90: number;
}

/** All sizes in one runtime. */
export interface ChecksumRuntimeResult {
  readonly runtime: string;
  readonly rounds: number;
  readonly sizes: ChecksumSizeResult[];
}

type SumKind = "wasm" | "ts" | "bytes";

/**
 * CPU time this process has used, ns. Rounds are timed in CPU time, not wall
 * time: on a machine shared with other work a round may be descheduled, and
 * wall time would count that against whichever sum was running.
 */
function cpuNs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
}

interface RawSamples {
  readonly runtime: string;
  /** Per size: ns/packet per round, by kind, in round order (pairs line up). */
  readonly samples: Record<number, Record<SumKind, number[]>>;
}

/**
 * Measure in this process (Deno or Bun).
 *
 * @param options Rounds and round length.
 * @returns ns/packet samples per size and sum.
 * @throws {Error} When WebAssembly is unavailable or the sums disagree.
 */
function sampleHere(options: ChecksumBenchOptions = {}): RawSamples {
  const rounds = options.rounds ?? 40;
  const warmup = 10;
  const roundMs = options.roundMs ?? 5;
  const maxBytes = Math.max(...CHECKSUM_SIZES);
  const OFFSET = 12; // where the engine's TUN reads land: a 4-aligned IP header
  const wasm = createWasmChecksum(OFFSET + maxBytes);
  if (wasm === null) {
    throw new Error(`WebAssembly is not available in ${runtimeName}: cannot compare the sums`);
  }
  const mem = new Uint8Array(wasm.buffer);
  const words = new Int32Array(wasm.buffer);
  let seed = 7;
  for (let i = 0; i < mem.length; i++) mem[i] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
  const sums: Record<SumKind, (len: number) => number> = {
    wasm: (len) => wasm.sum(mem, OFFSET, len),
    ts: (len) => onesSum(mem, OFFSET, len, words),
    bytes: (len) => onesSum(mem, OFFSET, len),
  };
  const samples: RawSamples["samples"] = {};
  for (const size of CHECKSUM_SIZES) {
    const want = sums.wasm(size);
    for (const k of ["ts", "bytes"] as const) {
      const got = sums[k](size);
      if (got !== want) {
        throw new Error(`the ${k} sum of ${size} bytes is ${got}, the wasm sum ${want}`);
      }
    }
    let n = 1;
    const one = (kind: SumKind): number => {
      const f = sums[kind];
      let sink = 0;
      const t0 = cpuNs();
      for (let i = 0; i < n; i++) sink ^= f(size);
      const ns = (cpuNs() - t0) / n;
      if (sink !== (n & 1 ? want : 0)) throw new Error(`${kind} sum changed between calls`);
      return ns;
    };
    // calibrate: double the count until a wasm round takes roundMs
    while (one("wasm") * n < roundMs * 1e6 && n < 1 << 30) n *= 2;
    const s: Record<SumKind, number[]> = { wasm: [], ts: [], bytes: [] };
    for (let r = 0; r < warmup + rounds; r++) {
      const order: SumKind[] = r % 2 ? ["ts", "wasm", "bytes"] : ["wasm", "ts", "bytes"];
      for (const kind of order) {
        const ns = one(kind);
        if (r >= warmup) s[kind].push(ns);
      }
    }
    samples[size] = s;
  }
  return { runtime: runtimeName, samples };
}

function summarize(runtime: string, parts: RawSamples[]): ChecksumRuntimeResult {
  const sizes = CHECKSUM_SIZES.map((bytes) => {
    const all = (k: SumKind) => parts.flatMap((p) => p.samples[bytes][k]);
    const wasm = all("wasm");
    const ts = all("ts");
    const ratios = ts.map((t, i) => t / wasm[i]);
    return {
      bytes,
      wasmNs: roundTo(median(wasm), 1),
      tsNs: roundTo(median(ts), 1),
      byteLoopNs: roundTo(median(all("bytes")), 1),
      ratio: roundTo(median(ratios), 2),
      ratioP10: roundTo(percentile(ratios, 0.1), 2),
      ratioP90: roundTo(percentile(ratios, 0.9), 2),
    };
  });
  return { runtime, rounds: parts.reduce((n, p) => n + p.samples[64].wasm.length, 0), sizes };
}

/**
 * Measure in the running runtime only (no child process).
 *
 * @param options Rounds and round length.
 * @returns Medians and ratios per size.
 * @throws {Error} When WebAssembly is unavailable or the sums disagree.
 */
export function benchChecksumHere(options: ChecksumBenchOptions = {}): ChecksumRuntimeResult {
  return summarize(runtimeName, [sampleHere(options)]);
}

function child(runtime: "deno" | "bun", options: ChecksumBenchOptions): Promise<RawSamples> {
  const self = new URL(import.meta.url).pathname;
  const bin = runtime === "deno" && runtimeName === "deno" ? execPath() : RUNTIME_BIN[runtime];
  const args = runtime === "deno" ? ["run", "-A", self] : [self];
  return new Promise((resolve, reject) => {
    const p = spawn(bin, [...args, "--raw", JSON.stringify(options)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    p.on("error", (e) => reject(new Error(`Cannot run ${bin}: ${e.message}`)));
    p.on("close", (code) => {
      if (code !== 0) {
        reject(new Error(`checksum bench under ${runtime} (${bin}) exited with ${code}: ${err}`));
      } else resolve(JSON.parse(out) as RawSamples);
    });
  });
}

/**
 * WebAssembly vs TypeScript sum, on Deno and on Bun, in alternating child
 * processes (deno, bun, bun, deno, …).
 *
 * @param options Rounds, round length, processes per runtime.
 * @returns One result per runtime.
 * @throws {Error} When a runtime is missing, lacks WebAssembly, or the sums disagree.
 * @example
 * ```ts
 * const { deno, bun } = await benchChecksum({ rounds: 20 });
 * console.log(deno.sizes[1].ratio, bun.sizes[1].ratio);
 * ```
 */
export async function benchChecksum(
  options: ChecksumBenchOptions = {},
): Promise<{ deno: ChecksumRuntimeResult; bun: ChecksumRuntimeResult }> {
  const parts: Record<"deno" | "bun", RawSamples[]> = { deno: [], bun: [] };
  const processes = options.processes ?? 2;
  for (let i = 0; i < processes; i++) {
    for (const runtime of i % 2 ? ["bun", "deno"] as const : ["deno", "bun"] as const) {
      parts[runtime].push(await child(runtime, options));
    }
  }
  return { deno: summarize("deno", parts.deno), bun: summarize("bun", parts.bun) };
}

if (import.meta.main) {
  const [flag, json] = process.argv.slice(2);
  if (flag === "--raw") {
    process.stdout.write(JSON.stringify(sampleHere(JSON.parse(json ?? "{}"))));
  } else if (flag === "--this-runtime") {
    console.log(JSON.stringify(benchChecksumHere(), null, 2));
  } else {
    console.log(JSON.stringify(await benchChecksum(), null, 2));
  }
}
