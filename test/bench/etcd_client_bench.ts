/**
 * weft's etcd client (lease/etcd/client.ts: etcd's JSON gateway over plain
 * fetch) against the `etcd3` npm package (gRPC via @grpc/grpc-js), on the
 * same etcd in the same run: each run spawns one fresh child process per
 * client (test/bench/etcd_client_child.ts), alternating which goes first, and
 * the figures are medians over the runs: import time, RSS after the import
 * and after the puts, put latency p50/p99, and put → watch event latency
 * p50/p99.
 *
 * Run on its own: `deno run -A test/bench/etcd_client_bench.ts [runs] [puts] [watches]`
 * (or with `bun`). Needs the etcd3 package (see the child's notes).
 *
 * @module
 */

import { spawn } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { execPath, runtimeName } from "../../core/runtime.ts";
import { startEtcd } from "../../testing/etcd_server.ts";
import type { ClientFigures } from "./etcd_client_child.ts";
import { median } from "./stats.ts";

/** Medians over the runs for one client. */
export type ClientMedians = Omit<ClientFigures, "client"> & { readonly runs: number };

/** Result of {@link benchEtcdClients}. */
export interface EtcdClientsBenchResult {
  readonly runtime: string;
  readonly weft: ClientMedians;
  readonly etcd3: ClientMedians;
}

const CLIENTS = ["weft", "etcd3"] as const;

function runChild(args: string[]): Promise<ClientFigures> {
  const child = fileURLToPath(new URL("./etcd_client_child.ts", import.meta.url));
  const argv = runtimeName === "deno" ? ["run", "-A", child, ...args] : [child, ...args];
  return new Promise((resolve, reject) => {
    const p = spawn(execPath(), argv, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    p.once("error", reject);
    p.once("exit", (code) => {
      if (code !== 0) {
        reject(new Error(`etcd client child (${args[0]}) exited with ${code}: ${stderr.trim()}`));
        return;
      }
      try {
        resolve(JSON.parse(stdout.trim().split("\n").at(-1)!));
      } catch (e) {
        reject(
          new Error(`etcd client child (${args[0]}) printed no figures: ${stdout}${stderr}`, {
            cause: e,
          }),
        );
      }
    });
  });
}

/**
 * Both clients against one fresh etcd.
 *
 * @param options `runs` per client (default 3), `puts` (200), `watches` (100).
 * @returns Medians per client.
 * @throws {Error} When a child fails (e.g. the etcd3 package is missing: the
 *   message says how to add it).
 */
export async function benchEtcdClients(
  options: { runs?: number; puts?: number; watches?: number } = {},
): Promise<EtcdClientsBenchResult> {
  const runs = options.runs ?? 3;
  const puts = options.puts ?? 200;
  const watches = options.watches ?? 100;
  const etcd = await startEtcd();
  try {
    const figures: Record<(typeof CLIENTS)[number], ClientFigures[]> = { weft: [], etcd3: [] };
    for (let r = 0; r < runs; r++) {
      const order = r % 2 === 0 ? CLIENTS : [...CLIENTS].reverse();
      for (const c of order) {
        figures[c].push(await runChild([c, etcd.endpoint, String(puts), String(watches)]));
      }
    }
    const medians = (xs: ClientFigures[]): ClientMedians => {
      const m = (f: (x: ClientFigures) => number) => median(xs.map(f));
      return {
        runs: xs.length,
        importMs: m((x) => x.importMs),
        rssBaseMB: m((x) => x.rssBaseMB),
        rssAfterImportMB: m((x) => x.rssAfterImportMB),
        rssAfterPutsMB: m((x) => x.rssAfterPutsMB),
        puts,
        putP50Ms: m((x) => x.putP50Ms),
        putP99Ms: m((x) => x.putP99Ms),
        watches,
        watchP50Ms: m((x) => x.watchP50Ms),
        watchP99Ms: m((x) => x.watchP99Ms),
      };
    };
    return { runtime: runtimeName, weft: medians(figures.weft), etcd3: medians(figures.etcd3) };
  } finally {
    await etcd.close();
  }
}

/**
 * Report lines for {@link benchEtcdClients}, saying which client wins each figure.
 *
 * @param r The result.
 * @returns Lines for the bench report.
 */
export function reportEtcdClients(r: EtcdClientsBenchResult): string[] {
  const f = (x: number, d = 1) => x.toFixed(d);
  const vs = (what: string, w: number, e: number, unit: string, d = 1) =>
    `${what}: weft ${f(w, d)} ${unit} vs etcd3 ${f(e, d)} ${unit} (${
      w <= e ? "weft" : "etcd3"
    } wins, ${f(Math.max(w, e) / Math.max(Math.min(w, e), 1e-9), 2)}×)`;
  return [
    `etcd client, weft (JSON gateway) vs etcd3 (gRPC), ${r.runtime}, median of ${r.weft.runs} runs each:`,
    "  " + vs("import", r.weft.importMs, r.etcd3.importMs, "ms", 0),
    "  " + vs("RSS after import", r.weft.rssAfterImportMB, r.etcd3.rssAfterImportMB, "MB"),
    "  " + vs(`RSS after ${r.weft.puts} puts`, r.weft.rssAfterPutsMB, r.etcd3.rssAfterPutsMB, "MB"),
    "  " + vs("put p50", r.weft.putP50Ms, r.etcd3.putP50Ms, "ms", 2),
    "  " + vs("put p99", r.weft.putP99Ms, r.etcd3.putP99Ms, "ms", 2),
    "  " + vs("put → watch event p50", r.weft.watchP50Ms, r.etcd3.watchP50Ms, "ms", 2),
    "  " + vs("put → watch event p99", r.weft.watchP99Ms, r.etcd3.watchP99Ms, "ms", 2),
  ];
}

if (import.meta.main) {
  const [runs, puts, watches] = process.argv.slice(2).map(Number);
  const r = await benchEtcdClients({ runs: runs || 3, puts: puts || 200, watches: watches || 100 });
  for (const line of reportEtcdClients(r)) console.log(line);
  console.log(JSON.stringify(r));
}
