/**
 * How fast the datapath heals: three real agents (host 2's under Bun) over a
 * real etcd in the netns lab, vxlan then host-gw. The e2e repair scenario's
 * tampers (`test/lab/scenarios.ts`: a peer's route, a neighbour, an fdb
 * entry, `flannel.1` itself deleted by hand) are done `rounds` times each,
 * and the time until the host's peer state equals the leases again is taken.
 *
 * The tests only check that each repair happens (with generous time-outs);
 * the "within a second" goal is measured here.
 *
 * Run alone: `deno run -A test/bench/repair_bench.ts [rounds]`.
 *
 * @module
 */

import process from "node:process";
import type { OverlayBackend } from "../lab/cluster.ts";
import { startCluster } from "../lab/cluster.ts";
import { tamperAndWait, tampers } from "../lab/scenarios.ts";
import { percentile, roundTo } from "./stats.ts";

/** Repair times per backend and tamper. */
export interface RepairResult {
  readonly rounds: number;
  /** `<backend>: <what was deleted>` → percentiles, ms. */
  readonly kinds: Record<string, { p50Ms: number; p99Ms: number; maxMs: number }>;
  /** The worst p99 over all kinds (goal ≤ 1000 ms). */
  readonly worstP99Ms: number;
}

/**
 * Tamper with each backend's datapath `rounds` times per kind and time each repair.
 *
 * @param options `rounds` per kind (default 10).
 * @returns Percentiles per kind. A time is up to the first health check that
 *   saw the repair (checks run every 10 ms and read the kernel with `ip`).
 * @throws {Error} When a repair does not happen within 30 s (with the difference).
 */
export async function benchRepair(options: { rounds?: number } = {}): Promise<RepairResult> {
  const rounds = options.rounds ?? 10;
  const kinds: RepairResult["kinds"] = {};
  for (const backend of ["vxlan", "host-gw"] as OverlayBackend[]) {
    const c = await startCluster({ backend, hosts: 3, prefix: "wbr", attach: false });
    try {
      await c.waitConverged(30_000);
      const leases = await c.leases();
      const times = new Map<string, number[]>();
      for (let r = 0; r < rounds; r++) {
        for (const t of tampers(backend)) {
          const ms = await tamperAndWait(c, t, leases, 30_000);
          times.set(t.what, [...(times.get(t.what) ?? []), ms]);
        }
      }
      for (const [what, ms] of times) {
        kinds[`${backend}: ${what}`] = {
          p50Ms: roundTo(percentile(ms, 0.5), 1),
          p99Ms: roundTo(percentile(ms, 0.99), 1),
          maxMs: roundTo(Math.max(...ms), 1),
        };
      }
    } finally {
      await c.close();
    }
  }
  const worstP99Ms = Math.max(...Object.values(kinds).map((k) => k.p99Ms));
  return { rounds, kinds, worstP99Ms };
}

if (import.meta.main) {
  const rounds = Number(process.argv[2] ?? 10);
  console.log(JSON.stringify(await benchRepair({ rounds }), null, 2));
}
