/**
 * Benchmark: the load N agents put on the store, counted at the server.
 * N in-process agents (`createAgent`, the `alloc` backend: no kernel
 * state, only the store traffic) run against one real etcd, then against
 * the fake Kubernetes API server, in three windows:
 *
 * - join: the agents start and acquire their leases, until each is ready
 *   and sees all the others;
 * - idle: nothing happens but renewals (etcd: a short lease TTL here, so
 *   renewals are seen; with flannel's 24 h TTL and 60 min margin they come
 *   every 23 h) and watch upkeep;
 * - churn: a writer in this process adds and removes leases (nodes) at a
 *   fixed rate; its own requests are taken out of the counts.
 *
 * etcd's requests come from its `/metrics` (`grpc_server_handled_total` by
 * method: the JSON gateway turns every HTTP call into one gRPC call), the
 * events it sent to watchers from `etcd_debugging_mvcc_events_total`, the
 * open watch streams from `etcd_debugging_mvcc_watch_stream_total`. The
 * fake API server counts the requests it answered and the events it wrote
 * to watch streams (bookmarks included) itself.
 *
 * Run alone: `deno run -A test/bench/store_load_bench.ts [agents]`.
 *
 * @module
 */

import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { createAgent } from "../../agent/agent.ts";
import { allocBackend } from "../../backends/alloc.ts";
import { formatIPv4 } from "../../core/ip.ts";
import { nullLogger } from "../../core/log.ts";
import { Registry } from "../../core/metrics.ts";
import { EtcdClient } from "../../lease/etcd/client.ts";
import { createEtcdLeaseStore } from "../../lease/etcd/store.ts";
import { createKubeLeaseStore } from "../../lease/kube/store.ts";
import type { LeaseStore } from "../../lease/types.ts";
import { encodeLeaseAttrs } from "../../lease/types.ts";
import { startEtcd } from "../../testing/etcd_server.ts";
import { createFakeKube, writeKubeconfig } from "../../testing/fake_kube.ts";
import { roundTo } from "./stats.ts";

/** Options of {@link benchStoreLoad}. */
export interface StoreLoadOptions {
  /** In-process agents (default 50). */
  readonly agents?: number;
  /** etcd lease TTL and renewal margin, s (default 30 and 15: a renewal every 15 s). */
  readonly ttlSeconds?: number;
  readonly marginSeconds?: number;
  /** Length of the idle and the churn window, s (default 30 and 20). */
  readonly idleSeconds?: number;
  readonly churnSeconds?: number;
  /** Writes per second in the churn window (default 10: 5 adds, 5 removals). */
  readonly churnRate?: number;
}

/** What one window cost the store. */
export interface WindowLoad {
  readonly seconds: number;
  /** Requests the agents made, by method, per second. */
  readonly requestsPerSecond: Record<string, number>;
  /** All of them, per second. */
  readonly totalPerSecond: number;
  /** Per agent, per second. */
  readonly perAgentPerSecond: number;
  /** Watch events the server sent, per second (etcd: to all watchers; kube: events written). */
  readonly watchEventsPerSecond: number;
}

/** One store's figures. */
export interface StoreLoad {
  readonly store: "etcd" | "kube";
  readonly agents: number;
  /** Requests per agent to join (acquire, list, watch, …). */
  readonly joinRequestsPerAgent: number;
  /** Open watch streams once all joined. */
  readonly watchStreams: number;
  readonly idle: WindowLoad;
  readonly churn: WindowLoad & {
    /** Store writes per second the writer made (not counted above). */
    readonly writesPerSecond: number;
    /** Agent requests per store write (0 when a change costs the server nothing but watch events). */
    readonly agentRequestsPerWrite: number;
    /** Watch events per store write (≈ agents: one per watcher). */
    readonly watchEventsPerWrite: number;
  };
}

/** Result of {@link benchStoreLoad}. */
export interface StoreLoadResult {
  readonly etcd: StoreLoad;
  readonly kube: StoreLoad;
  /** The lease TTL and margin the etcd agents ran with, s. */
  readonly ttlSeconds: number;
  readonly marginSeconds: number;
}

const round = (x: number, d = 3) => roundTo(x, d);

/** Counters from a Prometheus text page: grpc methods handled, events, watch streams. */
async function etcdCounters(endpoint: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${endpoint}/metrics`)).text();
  const out = new Map<string, number>();
  const add = (k: string, v: number) => out.set(k, (out.get(k) ?? 0) + v);
  for (const line of text.split("\n")) {
    const handled = line.match(/^grpc_server_handled_total\{.*grpc_method="(\w+)".*\} (\S+)$/);
    if (handled) add(handled[1], Number(handled[2]));
    const started = line.match(/^grpc_server_started_total\{.*grpc_method="Watch".*\} (\S+)$/);
    if (started) add("Watch (opened)", Number(started[1]));
    const m = line.match(
      /^(etcd_debugging_mvcc_events_total|etcd_debugging_mvcc_watch_stream_total) (\S+)$/,
    );
    if (m) add(m[1], Number(m[2]));
  }
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, done: () => boolean, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`store load: ${what} within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** Start `n` alloc agents on stores from `open`; resolves when each is ready and sees the rest. */
async function startAgents(
  n: number,
  open: (i: number) => { store: LeaseStore; extra?: Record<string, unknown> },
  dir: string,
  renewMarginMs: number,
) {
  const stop = new AbortController();
  const agents = Array.from({ length: n }, (_, i) => {
    const { store, extra } = open(i);
    const ip = formatIPv4((0xc6120100 + i + 1) >>> 0); // 198.18.1.x
    return {
      store,
      agent: createAgent({
        store,
        backends: { alloc: () => allocBackend() },
        extIface: { name: "eth0", index: 0, mtu: 1500, ifaceAddr: ip, extAddr: ip },
        subnetFile: path.join(dir, `subnet-${i}.env`),
        ipMasq: false,
        logger: nullLogger,
        metrics: new Registry(),
        renewMarginMs,
        ...extra,
      }),
    };
  });
  const runs = agents.map((a) => a.agent.run(stop.signal));
  await until(
    `all ${n} agents ready and seeing each other`,
    () => agents.every((a) => a.agent.status().ready && a.agent.status().peers.length >= n - 1),
  );
  return {
    agents,
    /** Peers each agent sees. */
    peers: () => agents.map((a) => a.agent.status().peers.length),
    async stop() {
      stop.abort();
      await Promise.all(runs);
      await Promise.all(agents.map((a) => a.store.close()));
    },
  };
}

function window(
  before: Map<string, number>,
  after: Map<string, number>,
  seconds: number,
  agents: number,
  own: Map<string, number>,
  eventsKey: string,
): WindowLoad {
  const requestsPerSecond: Record<string, number> = {};
  let total = 0;
  for (const [k, v] of after) {
    if (k === eventsKey || k.startsWith("etcd_")) continue;
    const d = v - (before.get(k) ?? 0) - (own.get(k) ?? 0);
    if (d > 0) {
      requestsPerSecond[k] = round(d / seconds);
      if (k !== "Watch (opened)") total += d;
    }
  }
  return {
    seconds: round(seconds, 1),
    requestsPerSecond,
    totalPerSecond: round(total / seconds),
    perAgentPerSecond: round(total / seconds / agents, 4),
    watchEventsPerSecond: round(
      ((after.get(eventsKey) ?? 0) - (before.get(eventsKey) ?? 0)) / seconds,
    ),
  };
}

async function etcdLoad(o: Required<StoreLoadOptions>, dir: string): Promise<StoreLoad> {
  const etcd = await startEtcd({ inMemory: true });
  const writer = new EtcdClient({ endpoints: [etcd.endpoint] });
  try {
    await etcd.etcdctl([
      "put",
      "/coreos.com/network/config",
      JSON.stringify({
        Network: "10.0.0.0/8",
        SubnetLen: 24,
        Backend: { Type: "alloc" },
      }),
    ]);
    const c0 = await etcdCounters(etcd.endpoint);
    const running = await startAgents(
      o.agents,
      () => ({
        store: createEtcdLeaseStore({ endpoints: [etcd.endpoint], ttlMs: o.ttlSeconds * 1000 }),
      }),
      dir,
      o.marginSeconds * 1000,
    );
    try {
      // every agent's watch is open before the idle window starts
      let c1 = await etcdCounters(etcd.endpoint);
      for (
        let k = 0;
        k < 200 && (c1.get("etcd_debugging_mvcc_watch_stream_total") ?? 0) < o.agents;
        k++
      ) {
        await sleep(50);
        c1 = await etcdCounters(etcd.endpoint);
      }
      let joined = 0;
      for (const [k, v] of c1) {
        if (!k.startsWith("etcd_") && k !== "Watch (opened)") joined += v - (c0.get(k) ?? 0);
      }
      const t1 = performance.now();
      await sleep(o.idleSeconds * 1000);
      const c2 = await etcdCounters(etcd.endpoint);
      const idle = window(
        c1,
        c2,
        (performance.now() - t1) / 1000,
        o.agents,
        new Map(),
        "etcd_debugging_mvcc_events_total",
      );
      // churn: lease j added, removed 10 writes later
      const { id } = await writer.leaseGrant(3600);
      const own = new Map<string, number>([["LeaseGrant", 1]]);
      const t2 = performance.now();
      const writes = Math.round(o.churnRate * o.churnSeconds);
      for (let w = 0; w < writes; w++) {
        const due = t2 + (w * 1000) / o.churnRate;
        if (due > performance.now()) await sleep(due - performance.now());
        const j = w >> 1;
        const key = `/coreos.com/network/subnets/10.200.${j & 255}.0-24`;
        if (w % 2 === 0) {
          await writer.put(
            key,
            encodeLeaseAttrs({ publicIP: `198.19.0.${(j & 127) + 1}`, backendType: "alloc" }),
            id,
          );
          own.set("Put", (own.get("Put") ?? 0) + 1);
        } else {
          await writer.delete(key);
          own.set("DeleteRange", (own.get("DeleteRange") ?? 0) + 1);
        }
      }
      await until(
        "every agent back to the joined peers",
        () => running.peers().every((p) => p === o.agents - 1),
        30_000,
      );
      const c3 = await etcdCounters(etcd.endpoint);
      const churnWindow = window(
        c2,
        c3,
        (performance.now() - t2) / 1000,
        o.agents,
        own,
        "etcd_debugging_mvcc_events_total",
      );
      const churnSeconds = (performance.now() - t2) / 1000;
      return {
        store: "etcd",
        agents: o.agents,
        joinRequestsPerAgent: round(joined / o.agents, 1),
        watchStreams: c1.get("etcd_debugging_mvcc_watch_stream_total") ?? NaN,
        idle,
        churn: {
          ...churnWindow,
          writesPerSecond: round(writes / churnSeconds, 1),
          agentRequestsPerWrite: round(
            Math.max(0, (churnWindow.totalPerSecond - idle.totalPerSecond) * churnSeconds / writes),
            3,
          ),
          watchEventsPerWrite: round(churnWindow.watchEventsPerSecond * churnSeconds / writes, 1),
        },
      };
    } finally {
      await running.stop();
    }
  } finally {
    await writer.close();
    await etcd.close();
  }
}

async function kubeLoad(o: Required<StoreLoadOptions>, dir: string): Promise<StoreLoad> {
  const kube = await createFakeKube({ token: "load" });
  try {
    const kubeconfig = writeKubeconfig(dir, kube, { token: "load" });
    const netConf = path.join(dir, "net-conf.json");
    fs.writeFileSync(
      netConf,
      JSON.stringify({ Network: "10.0.0.0/8", Backend: { Type: "alloc" } }),
    );
    for (let i = 0; i < o.agents; i++) {
      kube.addNode(`node-${i}`, {
        podCIDRs: [`10.1.${i}.0/24`],
        internalIP: formatIPv4((0xc6120100 + i + 1) >>> 0),
      });
    }
    // counts: requests by method and kind, and events written to watch streams
    const counts = () => {
      const m = new Map<string, number>();
      for (const r of kube.requests) {
        const kind = r.url.includes("watch=true")
          ? "watch"
          : r.url.includes("/status")
          ? "status"
          : "node";
        const k = `${r.method} ${kind}`;
        m.set(k, (m.get(k) ?? 0) + 1);
      }
      m.set("events", kube.watchEventsSent);
      return m;
    };
    const k0 = counts();
    const running = await startAgents(
      o.agents,
      (i) => {
        const store = createKubeLeaseStore({
          kubeconfigFile: kubeconfig,
          env: { NODE_NAME: `node-${i}` },
          netConfigPath: netConf,
        });
        let hints: ReturnType<typeof store.nodeHints> | undefined;
        return {
          store,
          extra: {
            previousLease: async (s: AbortSignal) =>
              (await (hints ??= store.nodeHints(s))).previousLease,
            onReady: (s: AbortSignal) => store.markNetworkAvailable(s),
          },
        };
      },
      dir,
      60 * 60_000,
    );
    try {
      await until("every agent's watch open", () => kube.watchCount >= o.agents, 30_000);
      const k1 = counts();
      let joined = 0;
      for (const [k, v] of k1) if (k !== "events") joined += v - (k0.get(k) ?? 0);
      const t1 = performance.now();
      await sleep(o.idleSeconds * 1000);
      const k2 = counts();
      const idle = window(k1, k2, (performance.now() - t1) / 1000, o.agents, new Map(), "events");
      const t2 = performance.now();
      const writes = Math.round(o.churnRate * o.churnSeconds);
      for (let w = 0; w < writes; w++) {
        const due = t2 + (w * 1000) / o.churnRate;
        if (due > performance.now()) await sleep(due - performance.now());
        const j = w >> 1;
        if (w % 2 === 0) {
          kube.addNode(`churn-${j}`, {
            podCIDRs: [`10.200.${j & 255}.0/24`],
            annotations: {
              "flannel.alpha.coreos.com/kube-subnet-manager": "true",
              "flannel.alpha.coreos.com/backend-type": "alloc",
              "flannel.alpha.coreos.com/public-ip": `198.19.0.${(j & 127) + 1}`,
            },
          });
        } else kube.deleteNode(`churn-${j}`);
      }
      await until(
        "every agent back to the joined peers",
        () => running.peers().every((p) => p === o.agents - 1),
        30_000,
      );
      const k3 = counts();
      const churnSeconds = (performance.now() - t2) / 1000;
      const churnWindow = window(k2, k3, churnSeconds, o.agents, new Map(), "events");
      return {
        store: "kube",
        agents: o.agents,
        joinRequestsPerAgent: round(joined / o.agents, 1),
        watchStreams: kube.watchCount,
        idle,
        churn: {
          ...churnWindow,
          writesPerSecond: round(writes / churnSeconds, 1),
          agentRequestsPerWrite: round(
            Math.max(0, (churnWindow.totalPerSecond - idle.totalPerSecond) * churnSeconds / writes),
            3,
          ),
          watchEventsPerWrite: round(churnWindow.watchEventsPerSecond * churnSeconds / writes, 1),
        },
      };
    } finally {
      await running.stop();
    }
  } finally {
    await kube.close();
  }
}

/**
 * Count the store load of N agents (see the module doc).
 *
 * @param options Agents, TTL and margin, window lengths, churn rate.
 * @returns Per store: join cost, idle and churn request rates, watch fan-out.
 * @throws {Error} When the agents do not all join or do not see the churn settle.
 */
export async function benchStoreLoad(options: StoreLoadOptions = {}): Promise<StoreLoadResult> {
  const o: Required<StoreLoadOptions> = {
    agents: options.agents ?? 50,
    ttlSeconds: options.ttlSeconds ?? 30,
    marginSeconds: options.marginSeconds ?? 15,
    idleSeconds: options.idleSeconds ?? 30,
    churnSeconds: options.churnSeconds ?? 20,
    churnRate: options.churnRate ?? 10,
  };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-store-load-"));
  try {
    const etcd = await etcdLoad(o, dir);
    const kube = await kubeLoad(o, dir);
    return { etcd, kube, ttlSeconds: o.ttlSeconds, marginSeconds: o.marginSeconds };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const agents = Number(process.argv[2] ?? 50);
  console.log(JSON.stringify(await benchStoreLoad({ agents }), null, 2));
  process.exit(0);
}
