/**
 * The gce backend at cluster scale, against the GCE fake through the real
 * Compute client: `nodes` in-process gce backends (each its own VM with its
 * own metadata server, its own throttle gate, all on one FakeClock) join in
 * waves of `concurrency`, learn of each other through `updatePeers` (as the
 * agent hands lease events), idle, and see one lease go. Counted at the fake:
 * API and metadata calls per join (the joining node's and the others'), per
 * idle minute per node, and the calls one gone lease costs the cluster;
 * timed: lease acquired → its route in place with its operation DONE, with
 * route operations taking `pendingMs` PENDING + `runningMs` RUNNING in real
 * time (GCE's route inserts take seconds; default 500 + 1500 ms).
 *
 * What is simulated: the listing schedule's time (FakeClock: ten idle
 * minutes take seconds) and the store. What is real: the client library, its
 * HTTP, the operations' delays, every call of discovery, listing, writing
 * and waiting.
 *
 * @module
 */

import { percentile, roundTo } from "./stats.ts";
import { gceBackend } from "../../backends/routed/gce.ts";
import { ThrottleGate } from "../../backends/cloud/throttle.ts";
import type { RoutedNetwork } from "../../backends/routed/engine.ts";
import type { Lease } from "../../lease/types.ts";
import { addVm, gceHostContext, setupGce, type SimVm } from "../../testing/gce_world.ts";
import { FakeClock } from "../../testing/fake_clock.ts";
import { waitFor } from "../../testing/wait.ts";

/** What {@link benchGceCluster} measured. */
export interface GceClusterBenchResult {
  readonly nodes: number;
  readonly pendingMs: number;
  readonly runningMs: number;
  /** Compute API calls the joining node made, per join: mean and max. */
  readonly joinApiCallsMean: number;
  readonly joinApiCallsMax: number;
  /** Metadata reads per join (mean). */
  readonly joinMetadataMean: number;
  /** Calls all other nodes made because of the joins, in total. */
  readonly othersCallsTotal: number;
  /** Lease acquired → route in place, operation DONE, ms. */
  readonly leaseToRouteP50Ms: number;
  readonly leaseToRouteP99Ms: number;
  readonly idleMinutes: number;
  /** API calls per node per idle minute (metadata excluded: none are made). */
  readonly idleCallsPerNodeMinute: number;
  readonly idleMetadataCalls: number;
  readonly idleWrites: number;
  /** Calls of the cluster for one gone lease, and when its route was gone (simulated s). */
  readonly removalCalls: Readonly<Record<string, number>>;
  readonly removalSeconds: number;
}

const apiTotal = (calls: Readonly<Record<string, number>>) =>
  Object.entries(calls).filter(([k]) => !k.startsWith("metadata.")).reduce((a, [, n]) => a + n, 0);
const metadataTotal = (calls: Readonly<Record<string, number>>) =>
  Object.entries(calls).filter(([k]) => k.startsWith("metadata.")).reduce((a, [, n]) => a + n, 0);

/**
 * Run the simulation.
 *
 * @param options Cluster size, join concurrency, idle time, operation delays.
 * @returns The figures.
 */
export async function benchGceCluster(
  options: {
    nodes?: number;
    concurrency?: number;
    idleMinutes?: number;
    pendingMs?: number;
    runningMs?: number;
    /** Progress lines (default: none). */
    progress?: (line: string) => void;
  } = {},
): Promise<GceClusterBenchResult> {
  const nodes = options.nodes ?? 200;
  const concurrency = options.concurrency ?? 5;
  const idleMinutes = options.idleMinutes ?? 10;
  const pendingMs = options.pendingMs ?? 500;
  const runningMs = options.runningMs ?? 1500;
  const progress = options.progress ?? (() => {});
  const world = await setupGce({ pendingMs, runningMs, routesQuota: nodes + 10 });
  const fake = world.fake;
  const clock = new FakeClock();
  const stop = new AbortController();
  const running: Promise<void>[] = [];
  try {
    const vms: SimVm[] = [];
    for (let i = 0; i < nodes; i++) vms.push(await addVm(fake, i));

    const joined: { network: RoutedNetwork; lease: Lease }[] = [];
    const joinApi: number[] = [];
    const joinMeta: number[] = [];
    const latencies: number[] = [];
    let othersCalls = 0;
    for (let wave = 0; wave < nodes; wave += concurrency) {
      const ids = [...Array(Math.min(concurrency, nodes - wave)).keys()].map((k) => wave + k);
      fake.resetCalls();
      const networks = await Promise.all(ids.map(async (i) => {
        const ctx = gceHostContext({
          backend: { Type: "gce" },
          index: i,
          subnet: subnetOf(i),
          clock,
        });
        let leased = 0;
        const network = await gceBackend({
          gce: vms[i].gce,
          gate: new ThrottleGate({ clock }),
        }).register({
          ...ctx,
          acquire: async (attrs, signal) => {
            const lease = await ctx.acquire(attrs, signal);
            leased = performance.now();
            return lease;
          },
        }) as RoutedNetwork;
        latencies.push(performance.now() - leased);
        const route = fake.routes().find((r) => r.destRange === subnetOf(i));
        if (route?.nextHopInstance !== vms[i].instanceLink) {
          throw new Error(`node ${i}'s route is not in place after register`);
        }
        return network;
      }));
      // the wave's calls, per joining node (all nodes of a wave join alike)
      joinApi.push(apiTotal(fake.calls) / ids.length);
      joinMeta.push(metadataTotal(fake.calls) / ids.length);
      progress(`joined ${wave + ids.length}/${nodes}`);
      fake.resetCalls();
      for (const network of networks) {
        const lease = network.lease;
        for (const other of joined) await other.network.updatePeers!([{ type: "added", lease }]);
        await network.syncPeers(joined.map((j) => j.lease));
        joined.push({ network, lease });
      }
      othersCalls += apiTotal(fake.calls) + metadataTotal(fake.calls);
    }

    // idle: every node runs its periodic listing on the shared fake clock
    for (const j of joined) running.push(j.network.run(stop.signal));
    fake.resetCalls();
    for (let t = 0; t < idleMinutes * 60_000; t += 5_000) {
      await clock.advance(5_000);
      if (t % 60_000 === 0) progress(`idle ${t / 60_000} min: ${JSON.stringify(fake.calls)}`);
    }
    const idle = { ...fake.calls };
    const idleWrites = (idle["routes.insert"] ?? 0) + (idle["routes.delete"] ?? 0);

    // one lease goes: every node hears of it; whoever lists first removes its route
    const gone = joined.pop()!;
    for (const j of joined) await j.network.updatePeers!([{ type: "removed", lease: gone.lease }]);
    fake.resetCalls();
    const goneSubnet = subnetOf(nodes - 1);
    const quiet = async () => {
      let last = -1;
      await waitFor(
        "the GCE fake is quiet (no new call for 15 ms)",
        () => {
          const n = apiTotal(fake.calls);
          if (n === last) return null;
          last = n;
          return `${n} calls so far`;
        },
        60_000,
        15,
      );
    };
    let removalMs = -1;
    for (let t = 0; t < 5 * 60_000 && removalMs < 0; t += 100) {
      await clock.advance(100);
      await quiet();
      if (!fake.routes().some((r) => r.destRange === goneSubnet)) removalMs = t + 100;
    }
    // the route leaves when its operation is DONE: the deleting node's wait returns then
    await quiet();
    return {
      nodes,
      pendingMs,
      runningMs,
      joinApiCallsMean: roundTo(joinApi.reduce((a, b) => a + b, 0) / joinApi.length, 2),
      joinApiCallsMax: Math.max(...joinApi),
      joinMetadataMean: roundTo(joinMeta.reduce((a, b) => a + b, 0) / joinMeta.length, 2),
      othersCallsTotal: othersCalls,
      leaseToRouteP50Ms: roundTo(percentile(latencies, 0.5), 1),
      leaseToRouteP99Ms: roundTo(percentile(latencies, 0.99), 1),
      idleMinutes,
      idleCallsPerNodeMinute: roundTo(apiTotal(idle) / nodes / idleMinutes, 3),
      idleMetadataCalls: metadataTotal(idle),
      idleWrites,
      removalCalls: Object.fromEntries(
        Object.entries(fake.calls).filter(([k]) => !k.startsWith("metadata.")),
      ),
      removalSeconds: removalMs / 1000,
    };
  } finally {
    stop.abort();
    await Promise.all(running);
    await world.close();
  }
}

/** Node i's subnet: /24s of 10.5.0.0/16 from 10.5.1.0. */
function subnetOf(i: number): string {
  return `10.5.${i + 1}.0/24`;
}

if (import.meta.main) {
  const nodes = Number(Deno.args[0] ?? 20);
  console.log(await benchGceCluster({ nodes, idleMinutes: 4 }));
}
