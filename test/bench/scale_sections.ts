/**
 * The `scale`, `store-load` and `event-cost` sections of `deno task bench`
 * (`main.ts`): what they run and how their figures are printed, each with
 * its goal.
 *
 * - `scale`: one real agent per store (`scale_bench.ts`): etcd and
 *   Kubernetes with 5000 peers, each compared with the kernel's floor for
 *   5000 vxlan peers (`scale_kernel.ts`) taken just before its agent
 *   starts, the file store with 1000; each in the two forms the
 *   README documents for large clusters: source under Deno with
 *   `DENO_AGENT_V8_FLAGS`, and the Bun binary (`--smol` built in) with
 *   `BINARY_AGENT_ENV`.
 * - `store-load`: 50 in-process agents against one etcd and the fake API
 *   server, counted at the server (`store_load_bench.ts`), extrapolated to
 *   5000 nodes.
 * - `event-cost` (only when named): one lease event's CPU per layer at 10
 *   and 5000 peers (`event_cost.ts`).
 *
 * @module
 */

import type { ScaleResult } from "./scale_bench.ts";
import type { KernelFloorResult } from "./scale_kernel.ts";
import type { StoreLoad, StoreLoadResult } from "./store_load_bench.ts";
import type { EventCostResult } from "./event_cost.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** A section as `main.ts` runs it. */
export interface BenchSection {
  readonly name: string;
  readonly optIn?: boolean;
  run: () => Promise<Record<string, unknown>>;
  report: (r: Any) => string[] | Promise<string[]>;
}

const fmt = (x: number, digits = 1) => Number.isFinite(x) ? x.toFixed(digits) : String(x);
const goal = (ok: boolean) => (ok ? "meets goal" : "MISSES goal");

/** Peers per store in the `scale` section. */
const SCALE_PEERS = { etcd: 5000, kube: 5000, file: 1000 } as const;

/** The lines of one store's scale figures. */
export function reportScale(
  r: ScaleResult & { form?: string },
  floor?: KernelFloorResult,
): string[] {
  const L = r.large;
  const name = r.form ? `${r.store}/${r.form}` : r.store;
  const S = r.small;
  const s = r.sustained;
  const cpuRatio = L.cpuPerEventMs / S.cpuPerEventMs;
  const starts = r.starts ?? [];
  const mid = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
  const startMs = starts.map((x) => x.startToSyncedMs);
  const ratios = starts.filter((x) => x.floorMs).map((x) => x.syncWriteMs / x.floorMs!);
  const lines = [
    `scale/${name}: ${starts.length} starts with all peers, each on a fresh host: spawn → first full sync ${
      startMs.map((x) => fmt(x, 0)).join(", ")
    } ms, median ${fmt(mid(startMs), 0)} (goal ≤ 1000: ${goal(mid(startMs) <= 1000)})${
      ratios.length
        ? `; the kernel programming vs the kernel floor taken just before each start ${
          ratios.map((x) => fmt(x, 2)).join(", ")
        }×, median ${fmt(mid(ratios), 2)}× (goal ≤ 1.5×: ${goal(mid(ratios) <= 1.5)})`
        : ""
    }`,
    `scale/${name}: the last start, spawn → first full sync of ${L.peers} peers done ${
      fmt(r.startToSyncedMs, 0)
    } ms; of it: runtime + flags to first log ${
      fmt(r.firstLogMs, 0)
    } ms, lease + subnet.env ('ready') at ${fmt(r.readyMs, 0)} ms, peers listed at ${
      fmt(r.listedMs, 0)
    } ms, the sync itself ${fmt(r.syncMs, 0)} ms; agent CPU spawn → synced ${
      fmt(r.cpuToSyncedMs, 0)
    } ms; kernel ${r.kernel.routes} routes / ${r.kernel.neighbours} neighbours / ${r.kernel.fdb} fdb; RSS ${
      fmt(r.rssAfterSyncMB, 0)
    } MB, idle CPU ${fmt(r.idleCpuPercent)} %`,
  ];
  if (floor && floor.peers === L.peers) {
    const ratio = r.syncWriteMs / floor.ms;
    const cpuRatio = r.syncWriteCpuMs / floor.cpuMs;
    lines.push(
      `scale/${name}: the kernel programming (the datapath's dumps, diff, ${
        3 * L.peers
      } writes, fdb echoes) of the last start vs the kernel floor taken just before it (${floor.requests} requests raw in 3 batches; runs ${
        floor.runs.join(", ")
      } ms): wall ${fmt(r.syncWriteMs, 0)} vs ${fmt(floor.ms, 0)} ms = ${fmt(ratio, 2)}×; CPU ${
        fmt(r.syncWriteCpuMs, 0)
      } vs ${fmt(floor.cpuMs, 0)} ms = ${
        fmt(cpuRatio, 2)
      }×; the whole sync (entries from ${L.peers} leases first) ${fmt(r.syncMs, 0)} ms = ${
        fmt(r.syncMs / floor.ms, 2)
      }× wall, CPU ${fmt(r.syncCpuMs, 0)} ms = ${fmt(r.syncCpuMs / floor.cpuMs, 2)}×`,
    );
  }
  lines.push(
    `scale/${name}: one lease at ${L.peers} peers, store write → kernel entry (${L.events} events): add p50 ${
      fmt(L.addP50Ms, 2)
    } / p99 ${fmt(L.addP99Ms, 2)} ms, remove p50 ${fmt(L.removeP50Ms, 2)} / p99 ${
      fmt(L.removeP99Ms, 2)
    } ms (goal p99 ≤ 10: ${goal(Math.max(L.addP99Ms, L.removeP99Ms) <= 10)}; slowest add ${
      fmt(L.addMaxMs, 1)
    }, remove ${
      fmt(L.removeMaxMs, 1)
    } ms); the add split at the agent's log line: store → agent p50 ${
      fmt(L.addStoreP50Ms, 1)
    } / p99 ${fmt(L.addStoreP99Ms, 1)} ms, agent → kernel p50 ${fmt(L.addDatapathP50Ms, 1)} / p99 ${
      fmt(L.addDatapathP99Ms, 1)
    } ms; at ${S.peers} peers add p99 ${fmt(S.addP99Ms, 2)}, remove p99 ${
      fmt(S.removeP99Ms, 2)
    } ms`,
    `scale/${name}: agent CPU per event (all threads, median of write-to-write samples) ${
      fmt(L.cpuPerEventMs, 3)
    } ms at ${L.peers} peers vs ${fmt(S.cpuPerEventMs, 3)} ms at ${S.peers}: ${
      fmt(cpuRatio, 2)
    }× (goal ≤ 2×: ${goal(cpuRatio <= 2)}); mean from /proc/<pid>/stat less idle ${
      fmt(L.cpuPerEventMeanMs, 3)
    } vs ${fmt(S.cpuPerEventMeanMs, 3)} ms`,
    `scale/${name}: ${s.rate} writes/s asked (${s.achievedRate} done) for ${
      fmt(s.seconds, 0)
    } s at ${L.peers} peers: agent CPU ${fmt(s.cpuPercent)} % of a core, RSS max ${
      fmt(s.rssMaxMB, 0)
    } MB / end ${fmt(s.rssEndMB, 0)} MB (goal ≤ 100: ${goal(s.rssMaxMB <= 100)}); add → route p50 ${
      fmt(s.addP50Ms, 2)
    } / p99 ${fmt(s.addP99Ms, 2)} ms (${s.routesSeen}/${s.added} seen)`,
  );
  return lines;
}

/**
 * One store's measured load, and extrapolated to `nodes` agents with
 * flannel's lease TTL and renewal margin (24 h and 1 h).
 */
function extrapolate(
  l: StoreLoad,
  nodes: number,
  bench: { ttl: number; margin: number },
  ttl = 24 * 3600,
  margin = 3600,
): string {
  const renewals = l.agents / (bench.ttl - bench.margin);
  const perRenewal = l.idle.totalPerSecond / renewals;
  const idleAtN = perRenewal * nodes / (ttl - margin);
  // renewals write too (etcd): only the events beyond the idle rate are the writer's
  const perWrite = (l.churn.watchEventsPerSecond - l.idle.watchEventsPerSecond) /
    l.churn.writesPerSecond;
  const eventsPerChange = perWrite * nodes / l.agents;
  return `${l.store}: ${l.agents} agents joined with ${
    fmt(l.joinRequestsPerAgent, 1)
  } requests each, ${l.watchStreams} watch streams; idle ${fmt(l.idle.totalPerSecond, 2)} req/s (${
    JSON.stringify(l.idle.requestsPerSecond)
  }${l.store === "etcd" ? `: ${fmt(perRenewal, 2)} requests per renewal` : ""}); churn ${
    fmt(l.churn.writesPerSecond, 1)
  } writes/s → agents ${fmt(l.churn.totalPerSecond, 2)} req/s (${
    fmt(l.churn.agentRequestsPerWrite, 2)
  } beyond idle per write), ${
    fmt(perWrite, 1)
  } watch events per write beyond idle. At ${nodes} nodes (TTL ${ttl} s, margin ${margin} s): idle ${
    fmt(idleAtN, 3)
  } req/s (${
    l.store === "etcd"
      ? `${fmt(nodes / (ttl - margin), 3)} renewals/s`
      : "weft renews nothing on the API server"
  }), ${nodes} watch streams, ~${
    fmt(eventsPerChange, 0)
  } watch events per lease change, a cold start of all nodes ${
    fmt(l.joinRequestsPerAgent * nodes, 0)
  } requests (each agent lists all ${nodes} leases once)`;
}

/** The sections. */
export const scaleSections: BenchSection[] = [
  {
    name: "scale",
    run: async () => {
      const kernel = await import("./scale_kernel.ts");
      const m = await import("./scale_bench.ts");
      const { built } = await import("../../testing/build_cache.ts");
      const { BINARY_AGENT_ENV, DENO_AGENT_V8_FLAGS } = await import("../lab/agents.ts");
      const out: Record<string, unknown> = {};
      // the two forms the README documents for a large cluster: source under Deno with its
      // V8 flags, and the binary (Bun, --smol built in) with its JavaScriptCore option, as the
      // unit and the DaemonSet run it
      const binary = (await built("binary")).main;
      const forms = [
        { form: "deno", options: { v8Flags: DENO_AGENT_V8_FLAGS } },
        { form: "binary", options: { command: [binary], env: BINARY_AGENT_ENV } },
      ];
      for (const { form, options } of forms) {
        for (const store of ["etcd", "kube", "file"] as const) {
          out[`${store}/${form}`] = {
            form,
            ...await m.benchScale({
              store,
              peers: SCALE_PEERS[store],
              ...options,
              // the sync is compared with a floor taken just before its agent starts
              ...(store === "file"
                ? {}
                : { kernelFloor: () => kernel.benchKernelFloor({ peers: 5000, rounds: 3 }) }),
            }),
          };
        }
      }
      return out;
    },
    report: (r: Any) => Object.values(r).flatMap((v: Any) => reportScale(v, v.floor)),
  },
  {
    name: "store-load",
    run: async () => {
      const m = await import("./store_load_bench.ts");
      return { load: await m.benchStoreLoad({ agents: 50 }) };
    },
    report: (r: { load: StoreLoadResult }) => [
      `store-load (etcd agents ran with TTL ${r.load.ttlSeconds} s, margin ${r.load.marginSeconds} s)`,
      extrapolate(r.load.etcd, 5000, { ttl: r.load.ttlSeconds, margin: r.load.marginSeconds }),
      extrapolate(r.load.kube, 5000, { ttl: r.load.ttlSeconds, margin: r.load.marginSeconds }),
    ],
  },
  {
    name: "event-cost",
    optIn: true,
    run: async () => {
      const m = await import("./event_cost.ts");
      return { cost: await m.benchEventCost({ events: 200 }) };
    },
    report: (r: { cost: EventCostResult }) =>
      r.cost.sizes.map((s) =>
        `event-cost at ${s.peers} peers (${r.cost.events} events, CPU ms per event): store watch ${
          fmt(s.store, 3)
        }, reducer ${fmt(s.reducer, 4)}, datapath ${fmt(s.datapath, 3)}, whole agent ${
          fmt(s.agent, 3)
        }`
      ),
  },
];
