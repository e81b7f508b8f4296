/**
 * Agent benchmark: watch event → reconcile callback latency. One agent
 * (in-process, alloc backend whose `onPeers` hook is the reconcile callback)
 * watches a real local etcd; a second store client writes N peer leases one
 * at a time. For each, two latencies:
 *
 * - event → callback: from the moment the agent's store watch yields the
 *   batch to the moment the backend's sync is called with the new peer set
 *   (the agent's own cost: peer map, coalescing, hand-off);
 * - put → callback: from before the writer's create to the callback (etcd's
 *   commit and watch delivery included).
 *
 * Run on its own: `deno run -A test/bench/agent_bench.ts [events]`.
 *
 * @module
 */

import process from "node:process";
import { nullLogger } from "../../core/log.ts";
import { Registry } from "../../core/metrics.ts";
import { createAgent } from "../../agent/agent.ts";
import { allocBackend } from "../../backends/alloc.ts";
import { createEtcdLeaseStore } from "../../lease/etcd/store.ts";
import type { LeaseStore } from "../../lease/types.ts";
import { startEtcd } from "../../testing/etcd_server.ts";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { waitFor } from "../../testing/wait.ts";
import { percentile } from "./stats.ts";

/** Result of {@link benchReconcileLatency}, ms. */
export interface ReconcileLatencyResult {
  readonly events: number;
  readonly eventToCallbackP50Ms: number;
  readonly eventToCallbackP99Ms: number;
  readonly putToCallbackP50Ms: number;
  readonly putToCallbackP99Ms: number;
}

/**
 * Measure watch event → reconcile callback latency.
 *
 * @param options `events`: peer leases to write (default 300).
 * @returns p50/p99 of both latencies.
 */
export async function benchReconcileLatency(
  options: { events?: number } = {},
): Promise<ReconcileLatencyResult> {
  const n = options.events ?? 300;
  const etcd = await startEtcd();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-bench-"));
  const ac = new AbortController();
  try {
    await etcd.etcdctl([
      "put",
      "/coreos.com/network/config",
      '{"Network":"10.0.0.0/8","Backend":{"Type":"alloc"}}',
    ]);
    const base = createEtcdLeaseStore({ endpoints: [etcd.endpoint] });
    let lastYield = 0;
    // the agent's store, with the moment each watch batch is yielded recorded
    const store: LeaseStore = {
      ...base,
      async *watch(revision, signal) {
        for await (const batch of base.watch(revision, signal)) {
          lastYield = performance.now();
          yield batch;
        }
      },
    };
    let waiting: ((t: number) => void) | null = null;
    let want = 0;
    const agent = createAgent({
      store,
      backends: {
        alloc: () =>
          allocBackend({
            onPeers: (peers) => {
              if (waiting && peers.length >= want) waiting(performance.now());
            },
          }),
      },
      extIface: { name: "eth0", index: 2, mtu: 1500, ifaceAddr: "192.0.2.1", extAddr: "192.0.2.1" },
      subnetFile: path.join(dir, "subnet.env"),
      ipMasq: false,
      logger: nullLogger,
      metrics: new Registry(),
    });
    const running = agent.run(ac.signal);
    await waitFor(
      "the agent is ready",
      () => agent.status().ready ? null : JSON.stringify(agent.status()),
      30_000,
      10,
    );

    const writer = createEtcdLeaseStore({ endpoints: [etcd.endpoint] });
    const config = await writer.getNetworkConfig();
    const evToCb: number[] = [];
    const putToCb: number[] = [];
    // lease 0 is not measured: its callback proves the agent's watch is open
    for (let i = 0; i <= n; i++) {
      want = i + 1;
      const called = new Promise<number>((r) => (waiting = r));
      const t0 = performance.now();
      await writer.acquire(config, { attrs: { publicIP: `198.18.${i >> 8}.${i & 255}` } });
      const t1 = await called;
      waiting = null;
      if (i === 0) continue;
      evToCb.push(t1 - lastYield);
      putToCb.push(t1 - t0);
    }
    await writer.close();
    ac.abort();
    await running;
    await base.close();
    return {
      events: n,
      eventToCallbackP50Ms: percentile(evToCb, 0.5),
      eventToCallbackP99Ms: percentile(evToCb, 0.99),
      putToCallbackP50Ms: percentile(putToCb, 0.5),
      putToCallbackP99Ms: percentile(putToCb, 0.99),
    };
  } finally {
    ac.abort();
    await etcd.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const r = await benchReconcileLatency({ events: Number(process.argv[2] ?? 300) });
  console.log(JSON.stringify(r, null, 2));
  process.exit(0);
}
