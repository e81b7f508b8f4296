/**
 * `deno task bench`: every benchmark in one run, so ratios compare figures
 * taken on the same machine at the same time (these machines are noisy:
 * compare within a run, not across runs). Prints a report and writes the raw
 * numbers to `.bench/latest.json`.
 *
 * `deno task bench [section …]` runs only the named sections:
 * store, etcd-client, reconcile, netlink, kube, kube-config, checksum, udp, lab, ipv6, repair,
 * udp-lab, wireguard, aws, gce, dist, outage-load, scale, store-load;
 * `churn` (10 minutes: the reliability churn for 5 minutes per backend) and
 * `event-cost` (one lease event's CPU per layer) run only when named.
 *
 * `deno task bench --soak` runs the soak instead (30 minutes: one vxlan agent,
 * 500 peers, steady churn; see soak_bench.ts); `--soak=3` a 3-minute check.
 * The soak never runs by default.
 *
 * Needs root (network-namespace labs) like the tests; touches nothing
 * outside the namespaces it creates.
 *
 * @module
 */

import * as fs from "node:fs";
import * as os from "node:os";
import process from "node:process";
import { runtimeVersion } from "../../core/runtime.ts";
import { benchGceCalls, benchGceLoad, reportGce } from "./gce_bench.ts";
import { scaleSections } from "./scale_sections.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

type Section = {
  name: string;
  /** Runs only when named (or `--soak`: it takes many minutes), never in the default run. */
  optIn?: boolean;
  run: () => Promise<Record<string, unknown>>;
  report: (r: Any) => string[] | Promise<string[]>;
};

const fmt = (x: number, digits = 1) => Number.isFinite(x) ? x.toFixed(digits) : String(x);
const goal = (ok: boolean) => (ok ? "meets goal" : "MISSES goal");

const sections: Section[] = [
  {
    name: "store",
    run: async () => {
      const m = await import("./etcd_bench.ts");
      return {
        acquire: await m.benchEtcdAcquire({ acquires: 200 }),
        loadWatch: await m.benchEtcdLoadWatch({ leases: 5000, runs: 3 }),
      };
    },
    report: (r: Any) => [
      `etcd acquire latency (${r.acquire.acquires} hosts, one after another): p50 ${
        fmt(r.acquire.p50Ms)
      } ms, p99 ${fmt(r.acquire.p99Ms)} ms`,
      `load + watch ${r.loadWatch.leases} leases from etcd: ${
        fmt(r.loadWatch.loadAndWatchMs, 0)
      } ms (goal ≤ 250: ${goal(r.loadWatch.loadAndWatchMs <= 250)}), RSS ${
        fmt(r.loadWatch.rssMB, 0)
      } MB (goal ≤ 100: ${goal(r.loadWatch.rssMB <= 100)})`,
    ],
  },
  {
    // the hand-written etcd client against the etcd3 package (gRPC)
    name: "etcd-client",
    run: async () => {
      const m = await import("./etcd_client_bench.ts");
      return { clients: await m.benchEtcdClients({ runs: 3, puts: 200, watches: 100 }) };
    },
    report: async (r: Any) => (await import("./etcd_client_bench.ts")).reportEtcdClients(r.clients),
  },
  {
    name: "reconcile",
    run: async () => {
      const m = await import("./agent_bench.ts");
      return { latency: await m.benchReconcileLatency({ events: 300 }) };
    },
    report: (r: Any) => [
      `watch event → reconcile callback (${r.latency.events} events): p50 ${
        fmt(r.latency.eventToCallbackP50Ms, 2)
      } ms, p99 ${fmt(r.latency.eventToCallbackP99Ms, 2)} ms (goal ≤ 10: ${
        goal(r.latency.eventToCallbackP99Ms <= 10)
      })`,
      `etcd put → reconcile callback: p50 ${fmt(r.latency.putToCallbackP50Ms)} ms, p99 ${
        fmt(r.latency.putToCallbackP99Ms)
      } ms`,
    ],
  },
  {
    name: "netlink",
    run: async () => {
      const m = await import("./netlink_bench.ts");
      return { routes: await m.benchNetlinkRoutes({ count: 5000, rounds: 5 }) };
    },
    report: (r: Any) => [
      `program ${r.routes.routes} routes into an empty namespace: netlink ${
        fmt(r.routes.netlinkMs, 0)
      } ms vs one \`ip -batch\` ${fmt(r.routes.ipBatchMs, 0)} ms → ${
        fmt(r.routes.speedup)
      }× (goals ≤ 250 ms: ${goal(r.routes.netlinkMs <= 250)}; ≥ 5×: ${
        goal(r.routes.speedup >= 5)
      })`,
    ],
  },
  {
    name: "kube",
    run: async () => {
      const m = await import("./kube_bench.ts");
      return {
        listWatch: await m.benchKubeListWatch({ nodes: 5000, runs: 3 }),
        startToReady: await m.benchKubeStartToReady({ runs: 3 }),
      };
    },
    report: (r: Any) => [
      `kube list + watch ${r.listWatch.nodes} nodes (${r.listWatch.runtime}): ${
        fmt(r.listWatch.listWatchMs, 0)
      } ms (goal ≤ 500: ${goal(r.listWatch.listWatchMs <= 500)}), RSS ${
        fmt(r.listWatch.rssMB, 0)
      } MB (goal ≤ 120: ${goal(r.listWatch.rssMB <= 120)})`,
      `kube mode start → ready: Deno ${fmt(r.startToReady.deno.coldMs, 0)} ms, Bun ${
        fmt(r.startToReady.bun.coldMs, 0)
      } ms (cold); restart Deno ${fmt(r.startToReady.deno.restartMs, 0)} ms, Bun ${
        fmt(r.startToReady.bun.restartMs, 0)
      } ms`,
    ],
  },
  {
    // the builtin kubeconfig loader against @kubernetes/client-node's
    name: "kube-config",
    run: async () => {
      const m = await import("./kube_config_bench.ts");
      return { loaders: await m.benchKubeConfigLoaders({ runs: 5 }) };
    },
    report: async (r: Any) =>
      (await import("./kube_config_bench.ts")).reportKubeConfigLoaders(r.loaders),
  },
  {
    name: "checksum",
    run: async () => {
      const m = await import("./checksum_bench.ts");
      return await m.benchChecksum({ rounds: 40, processes: 2 });
    },
    report: (r: Any) =>
      (["deno", "bun"] as const).map((rt) =>
        `udp engine checksum (${rt}), WebAssembly vs TypeScript, ns/packet: ${
          r[rt].sizes.map((s: Any) =>
            `${s.bytes} B ${fmt(s.wasmNs)} vs ${fmt(s.tsNs)} → ${fmt(s.ratio, 2)}× (pairs p10–p90 ${
              fmt(s.ratioP10, 2)
            }–${fmt(s.ratioP90, 2)})`
          ).join(", ")
        }`
      ),
  },
  {
    name: "udp",
    run: async () => {
      const m = await import("./udp_bench.ts");
      return { engine: await m.benchUdp({ variants: ["offload"], seconds: 4, vxlan: true }) };
    },
    report: (r: Any) =>
      [
        ...r.engine.runs.map((x: Any) =>
          `udp engine (${x.runtime}, ${x.variant}) between two namespaces: TCP ${
            fmt(x.tcpMbps, 0)
          } Mbit/s, ${fmt(x.ppsOut, 0)} small packets/s, sender CPU ${fmt(x.tcpCpuSender, 0)}%`
        ),
        r.engine.vxlanMbps
          ? `kernel vxlan on the same veth pair: ${fmt(r.engine.vxlanMbps, 0)} Mbit/s`
          : "",
      ].filter(Boolean),
  },
  {
    name: "lab",
    run: async () => {
      const m = await import("./lab_bench.ts");
      return {
        // like for like: the hand-built pair has no iptables rules, so neither does weft here
        vxlan: await m.benchVxlanThroughput({
          seconds: 3,
          repetitions: 8,
          agentArgs: ["--iptables-forward-rules=false"],
        }),
        // flannel's default FORWARD accept rules on: what they cost
        vxlanDefault: await m.benchVxlanThroughput({ seconds: 3, repetitions: 6 }),
        hostGw: await m.benchHostGwThroughput({ seconds: 3, repetitions: 6 }),
        leaseToRoute: await m.benchLeaseToRoute({ leases: 100, backend: "vxlan" }),
      };
    },
    report: (r: Any) => [
      `iperf3 pod-to-pod, weft vxlan vs a hand-built kernel vxlan pair (neither with iptables rules): ${
        fmt(r.vxlan.weftGbps, 2)
      } vs ${fmt(r.vxlan.kernelGbps, 2)} Gbit/s → ${fmt(r.vxlan.ratio, 3)} (goal ≥ 0.97: ${
        goal(r.vxlan.ratio >= 0.97)
      })`,
      `same with weft's default FORWARD accept rules (--iptables-forward-rules, as flannel): ${
        fmt(r.vxlanDefault.weftGbps, 2)
      } vs ${fmt(r.vxlanDefault.kernelGbps, 2)} Gbit/s → ${fmt(r.vxlanDefault.ratio, 3)}`,
      `iperf3 pod-to-pod, weft host-gw vs the same pods routed by hand: ${
        fmt(r.hostGw.weftGbps, 2)
      } vs ${fmt(r.hostGw.routedGbps, 2)} Gbit/s → ${fmt(r.hostGw.ratio, 3)} (goal ≥ 0.97: ${
        goal(r.hostGw.ratio >= 0.97)
      }); vs host-to-host underlay ${fmt(r.hostGw.hostGbps, 2)} Gbit/s → ${
        fmt(r.hostGw.ratioVsHost, 3)
      }`,
      `lease written → route present on all ${r.leaseToRoute.hosts} peers (${r.leaseToRoute.leases} leases, ${r.leaseToRoute.backend}): p50 ${
        fmt(r.leaseToRoute.allPeersP50Ms)
      } ms, p99 ${fmt(r.leaseToRoute.allPeersP99Ms)} ms (goal ≤ 100: ${
        goal(r.leaseToRoute.allPeersP99Ms <= 100)
      })`,
    ],
  },
  {
    name: "ipv6",
    run: async () => {
      const m = await import("./ipv6_bench.ts");
      return { vxlan6: await m.benchVxlan6Throughput({ seconds: 3, repetitions: 6 }) };
    },
    report: (r: Any) => [
      `iperf3 pod-to-pod over IPv6, weft vxlan (flannel-v6.1, IPv6-only network) vs a hand-built kernel IPv6 vxlan pair (neither with iptables rules, MTU ${r.vxlan6.mtu}): ${
        fmt(r.vxlan6.weftGbps, 2)
      } vs ${fmt(r.vxlan6.kernelGbps, 2)} Gbit/s → ${fmt(r.vxlan6.ratio, 3)} (goal ≥ 0.97: ${
        goal(r.vxlan6.ratio >= 0.97)
      })`,
    ],
  },
  {
    name: "repair",
    run: async () => {
      const m = await import("./repair_bench.ts");
      return { repair: await m.benchRepair({ rounds: 10 }) };
    },
    report: (r: Any) => [
      `datapath repaired after deletion by hand (${r.repair.rounds} rounds each): ${
        Object.entries(r.repair.kinds).map(([k, v]: [string, Any]) =>
          `${k} p50 ${fmt(v.p50Ms, 0)} / p99 ${fmt(v.p99Ms, 0)} ms`
        ).join("; ")
      } (goal p99 ≤ 1000: ${goal(r.repair.worstP99Ms <= 1000)})`,
    ],
  },
  {
    name: "udp-lab",
    run: async () => {
      const m = await import("./udp_lab_bench.ts");
      return { lab: await m.benchUdpLab({}) };
    },
    report: (r: Any) => [
      `iperf3 pod-to-pod over weft udp: Deno agents ${
        fmt(r.lab.udpDeno.tcpMbps, 0)
      } Mbit/s, Bun agents ${fmt(r.lab.udpBun.tcpMbps, 0)} Mbit/s; weft vxlan ${
        fmt(r.lab.vxlan.tcpMbps, 0)
      } Mbit/s → ${fmt(r.lab.ratioDeno, 2)}× / ${fmt(r.lab.ratioBun, 2)}× (goal ≥ 0.3: ${
        goal(Math.max(r.lab.ratioDeno, r.lab.ratioBun) >= 0.3)
      }); ${fmt(r.lab.timesFlannelUdpReported, 0)}× flannel udp's reported 76 Mbit/s`,
      `udp 64-byte packets/s: Deno ${fmt(r.lab.udpDeno.pps, 0)}, Bun ${
        fmt(r.lab.udpBun.pps, 0)
      } (vxlan ${fmt(r.lab.vxlan.pps, 0)}); agent CPU during TCP (sender): Deno ${
        fmt(r.lab.udpDeno.tcpCpuSender, 0)
      }%, Bun ${fmt(r.lab.udpBun.tcpCpuSender, 0)}%; Bun/Deno TCP ${fmt(r.lab.bunOverDenoTcp, 2)}×`,
    ],
  },
  {
    name: "wireguard",
    run: async () => {
      const m = await import("./wireguard_bench.ts");
      return { wg: await m.benchWireguardThroughput({}) };
    },
    report: (r: Any) => [
      `iperf3 pod-to-pod over weft wireguard (wireguard-go) ${
        fmt(r.wg.weftGbps)
      } Gbit/s vs wireguard-go wired by hand with wg ${fmt(r.wg.handGbps)} Gbit/s → ${
        fmt(r.wg.ratio, 3)
      }× (goal ≥ 0.95: ${goal(r.wg.ratio >= 0.95)}), MTU ${r.wg.mtu}`,
      `the same weft-configured wireguard-go devices with weft's agents and etcd stopped ${
        fmt(r.wg.withoutAgents.weftGbps)
      } Gbit/s vs by hand ${fmt(r.wg.withoutAgents.handGbps)} Gbit/s → ${
        fmt(r.wg.withoutAgents.ratio, 3)
      }× (tells weft's configuration from its agents' CPU)`,
    ],
  },
  {
    name: "gce",
    run: async () => {
      const m = await import("./gce_cluster_bench.ts");
      return {
        load: await benchGceLoad(3),
        calls: await benchGceCalls(),
        cluster: await m.benchGceCluster({ nodes: 200, idleMinutes: 10 }),
      };
    },
    report: (r: Any) => [
      ...reportGce(r.load, r.calls),
      `gce, ${r.cluster.nodes} nodes against the GCE fake: API calls per node join ${
        fmt(r.cluster.joinApiCallsMean, 1)
      } (max ${r.cluster.joinApiCallsMax}) + ${
        fmt(r.cluster.joinMetadataMean, 0)
      } metadata reads by the joining node, ${r.cluster.othersCallsTotal} by all others over all joins (goal O(1): ${
        goal(r.cluster.joinApiCallsMax <= 6 && r.cluster.othersCallsTotal === 0)
      })`,
      `gce idle: ${
        fmt(r.cluster.idleCallsPerNodeMinute, 2)
      } API calls per node per minute over ${r.cluster.idleMinutes} simulated minutes, ${r.cluster.idleWrites} writes (goal ≤ 1: ${
        goal(r.cluster.idleCallsPerNodeMinute <= 1 && r.cluster.idleWrites === 0)
      })`,
      `gce lease acquired → route in place, operation DONE (operations ${r.cluster.pendingMs} ms PENDING + ${r.cluster.runningMs} ms RUNNING): p50 ${
        fmt(r.cluster.leaseToRouteP50Ms)
      } ms, p99 ${fmt(r.cluster.leaseToRouteP99Ms)} ms; one gone lease: ${
        JSON.stringify(r.cluster.removalCalls)
      } cluster-wide, route gone after ${fmt(r.cluster.removalSeconds)} simulated s`,
    ],
  },
  {
    name: "dist",
    run: async () => {
      const m = await import("./dist_bench.ts");
      return { dist: await m.benchDist({}) };
    },
    report: (r: Any) => {
      const mib = (b: number) => fmt(b / 1048576, 1);
      const binary = r.dist.forms.find((f: Any) => f.form === "binary");
      const bunSource = r.dist.forms.find((f: Any) => f.form === "source, Bun");
      return [
        ...r.dist.forms.map((f: Any) =>
          `${f.form}: ${
            f.form === "binary"
              ? `${mib(f.sizeBytes)} MiB (${fmt(f.sizeBytes / 1e6, 1)} MB) with its runtime`
              : `${fmt(f.sizeBytes / 1e6, 2)} MB + the runtime`
          }, --version ${
            fmt(f.versionMs, 0)
          } ms (median of ${r.dist.versionRuns}), idle vxlan agent RSS ${
            fmt(f.idleRssMB, 0)
          } MB (median of ${r.dist.rssRuns})`
        ),
        `runtimes: deno ${mib(r.dist.runtimeBytes.deno)} MiB, bun ${
          mib(r.dist.runtimeBytes.bun)
        } MiB; a Bun binary printing one line: ${mib(r.dist.bunFloor.sizeBytes)} MiB, ${
          fmt(r.dist.bunFloor.runMs, 0)
        } ms; binary goals: ≤ 110 MiB ${
          goal(binary.sizeBytes <= 110 * 1048576)
        }, --version ≤ 100 ms ${goal(binary.versionMs <= 100)}, idle RSS ≤ source on Bun (${
          fmt(bunSource.idleRssMB, 0)
        } MB) + 10% ${goal(binary.idleRssMB <= bunSource.idleRssMB * 1.1)}`,
      ];
    },
  },
  {
    // what N agents cost an etcd that is down 20 s and comes back (README: Reliability)
    name: "outage-load",
    run: async () => {
      const m = await import("./outage_bench.ts");
      return { load: await m.benchOutageLoad({ watchers: 100, downMs: 20_000 }) };
    },
    report: (r: Any) => [
      `etcd down ${fmt(r.load.downMs / 1000, 0)} s under ${r.load.watchers} agents' watches: ${
        fmt(r.load.connectionsPerWatcherPerSecond, 2)
      } refused connections/s per agent while down; on its return ${
        fmt(r.load.requestsPerWatcherAtRecovery, 2)
      } request per agent (the watch resuming), peak ${r.load.peakRequestsPerSecond} requests/s (${
        r.load.requestsPer100ms.join(" ")
      } per 100 ms)`,
    ],
  },
  {
    // the issue's 5 minutes of churn per backend (CI runs 2: test/e2e_churn_test.ts)
    name: "churn",
    optIn: true,
    run: async () => {
      const { churn } = await import("../lab/churn.ts");
      const durationMs = 300_000;
      return {
        vxlan: await churn({ backend: "vxlan", durationMs, rate: 100 }),
        hostGw: await churn({ backend: "host-gw", durationMs, rate: 100 }),
      };
    },
    report: (r: Any) =>
      [r.vxlan, r.hostGw].map((f: Any) =>
        `churn ${f.backend}: ${f.writer.ops} lease changes in ${
          fmt(f.writer.elapsedMs / 1000, 0)
        } s (${fmt(f.writer.rate)}/s, ${
          f.writer.events.put + f.writer.events.delete
        } etcd events) against 3 agents: every agent handled all of them ${f.handledMs} ms after the last, kernel equal to etcd ${f.convergedMs} ms after it, ${f.peersAtEnd} peer leases left, 0 pings lost`
      ),
  },
];

sections.push(...scaleSections);

sections.push({
  name: "aws",
  run: async () => {
    const m = await import("./aws_bench.ts");
    return { vpc: await m.benchAwsVpc({ nodes: 200, idleMinutes: 10 }) };
  },
  report: (r: Any) => [
    `aws-vpc, ${r.vpc.nodes} nodes against the EC2 fake: EC2 calls per node join ${
      fmt(r.vpc.joinCallsMean, 1)
    } by the joining node (max ${r.vpc.joinCallsMax}) + ${r.vpc.othersCallsPerJoinTotal} by all others over all joins (goal O(1): ${
      goal(r.vpc.joinCallsMax <= 6 && r.vpc.othersCallsPerJoinTotal === 0)
    })`,
    `aws-vpc idle: ${
      fmt(r.vpc.idleCallsPerNodeMinute, 2)
    } EC2 calls per node per minute over ${r.vpc.idleMinutes} simulated minutes, ${r.vpc.idleWrites} writes (goal ≤ 1: ${
      goal(r.vpc.idleCallsPerNodeMinute <= 1 && r.vpc.idleWrites === 0)
    })`,
    `aws-vpc lease acquired → route in the table: p50 ${fmt(r.vpc.leaseToRouteP50Ms)} ms, p99 ${
      fmt(r.vpc.leaseToRouteP99Ms)
    } ms; one gone lease: ${r.vpc.removalDeletes} DeleteRoute call(s) cluster-wide, route gone after ${
      fmt(r.vpc.removalSeconds)
    } simulated s`,
  ],
});

sections.push({
  name: "soak",
  optIn: true,
  run: async () => {
    const m = await import("./soak_bench.ts");
    return { soak: await m.benchSoak({ minutes: soakMinutes }) };
  },
  report: async (r: Any) => (await import("./soak_bench.ts")).reportSoak(r.soak),
});

const wanted: string[] = [];
let soakMinutes = 30;
for (const arg of process.argv.slice(2)) {
  const soak = /^--soak(?:=(\d+(?:\.\d+)?))?$/.exec(arg);
  if (soak) {
    wanted.push("soak");
    if (soak[1]) soakMinutes = Number(soak[1]);
  } else if (arg.startsWith("-")) {
    console.error(`bench: unknown option ${arg}; use --soak or --soak=<minutes>, or section names`);
    process.exit(2);
  } else {
    wanted.push(arg);
  }
}
const results: Record<string, unknown> = {
  when: new Date().toISOString(),
  runtime: runtimeVersion(),
  cpus: os.cpus().length,
  loadAverage: os.loadavg()[0],
};
const lines: string[] = [];
let failures = 0;
for (const s of sections) {
  if (wanted.length ? !wanted.includes(s.name) : s.optIn) continue;
  const t0 = performance.now();
  console.error(`bench: ${s.name} …`);
  try {
    const r = await s.run();
    results[s.name] = r;
    const out = await s.report(r);
    lines.push(...out);
    console.error(`bench: ${s.name} done in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    for (const l of out) console.error(`  ${l}`);
  } catch (e) {
    failures++;
    results[s.name] = { error: String((e as Error).stack ?? e) };
    lines.push(`${s.name}: FAILED: ${(e as Error).message}`);
    console.error(`bench: ${s.name} FAILED: ${(e as Error).stack ?? e}`);
  }
}
fs.mkdirSync(".bench", { recursive: true });
fs.writeFileSync(".bench/latest.json", JSON.stringify(results, null, 2));
console.log(
  `\nweft benchmarks — ${results.when}, ${results.runtime}, ${results.cpus} CPUs, load ${
    fmt(os.loadavg()[0], 2)
  }`,
);
for (const l of lines) console.log(`- ${l}`);
console.log(`\nraw numbers: .bench/latest.json`);
process.exit(failures ? 1 : 0);
