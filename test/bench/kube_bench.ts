/**
 * Benchmark of the Kubernetes lease store: list + watch of N nodes (default
 * 5000, each carrying flannel's annotations, labels and addresses like a
 * kubelet-registered node) served by the fake API server. The fake runs in
 * this process; the store runs in a child process of the same runtime so
 * its RSS is the store's own. The child imports the store and connects
 * (loads the kubeconfig, reads its own node: timed on its own), lists all
 * nodes page by page, opens the watch, then acquires its own node's lease,
 * which patches the node's annotations; the watch delivering that change
 * ends the run. The store's builtin kubeconfig loader is the default;
 * `loader: "client-node"` measures the `@kubernetes/client-node` fallback.
 * Goal: list + watch ≤ 500 ms, RSS ≤ 120 MB.
 *
 * {@link benchKubeStartToReady} times a real agent (`mod.ts
 * --kube-subnet-mgr`, vxlan) under Deno and Bun in a lab host, against the
 * fake API server running in the lab: process spawn → its "ready" log line.
 *
 * Run on its own: `deno run -A test/bench/kube_bench.ts [nodes] [runs] [pageSize] [loader]`
 * (or with `bun`); `deno run -A test/bench/kube_bench.ts --start-ready [runs]`
 * for the start → ready figures.
 *
 * @module
 */

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { execPath, rssBytes, runtimeName } from "../../core/runtime.ts";
import { formatIPv4 } from "../../core/ip.ts";
import { nullLogger } from "../../core/log.ts";
import { createFakeKube, writeKubeconfig } from "../../testing/fake_kube.ts";
import { startLabKube } from "../../testing/fake_kube_main.ts";
import { type AgentLogRecord, type AgentRuntime, startAgent } from "../lab/agents.ts";
import { createLab } from "../lab/lab.ts";
import { median, roundTo } from "./stats.ts";

const A = "flannel.alpha.coreos.com/";
const NET_CONF = '{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}';
const SELF = "bench-self";

/** Result of {@link benchKubeListWatch}; each figure is the median over the runs. */
export interface KubeListWatchBenchResult {
  readonly nodes: number;
  /** Nodes per list page. */
  readonly pageSize: number;
  readonly runtime: string;
  readonly runs: number;
  /** How the child loaded the kubeconfig: `builtin` or `client-node`. */
  readonly loader: string;
  /**
   * Importing the store and its first request in the child (kubeconfig
   * loaded; with the client-node loader, client-node imported), ms.
   */
  readonly connectMs: number;
  /** First `list()` (all pages, decode, validation), ms, after the import. */
  readonly listMs: number;
  /** From before `list()` until the watch delivered a change made after it, ms. */
  readonly listWatchMs: number;
  /** Child RSS after connecting, before the list, MB. */
  readonly rssAfterConnectMB: number;
  /** Child RSS after list + watch, MB (10^6 bytes). */
  readonly rssMB: number;
  /** Child peak RSS over its life, MB. */
  readonly maxRssMB: number;
}

const round = (x: number) => roundTo(x, 1);

/**
 * List + watch N nodes through the kube store in a child process.
 *
 * @param options `nodes` (default 5000); `runs`, fresh child processes
 *   against the same fake (default 3); `pageSize` (default 500); `loader`
 *   (default `auto`: the builtin loader for the bench's token kubeconfig).
 * @returns Medians of the child's timings and RSS.
 * @throws {Error} When a child fails or lists the wrong number of leases.
 */
export async function benchKubeListWatch(
  options: {
    nodes?: number;
    runs?: number;
    pageSize?: number;
    loader?: "auto" | "builtin" | "client-node";
  } = {},
): Promise<KubeListWatchBenchResult> {
  const n = options.nodes ?? 5000;
  const runs = options.runs ?? 3;
  const pageSize = options.pageSize ?? 500;
  const loader = options.loader ?? "auto";
  const kube = await createFakeKube({ token: "bench" });
  const dir = mkdtempSync(join(tmpdir(), "weft-kube-bench-"));
  try {
    for (let i = 0; i < n; i++) {
      const ip = formatIPv4((0xc6120000 + i) >>> 0); // 198.18.x.y
      const name = `node-${String(i).padStart(5, "0")}`;
      kube.addNode(name, {
        podCIDRs: [`${formatIPv4((0x0a000000 + (i + 1) * 256) >>> 0)}/24`],
        internalIP: ip,
        labels: {
          "kubernetes.io/arch": "amd64",
          "kubernetes.io/os": "linux",
          "node.kubernetes.io/instance-type": "m5.large",
          "topology.kubernetes.io/zone": `zone-${i % 3}`,
        },
        annotations: {
          [A + "kube-subnet-manager"]: "true",
          [A + "backend-type"]: "vxlan",
          [A + "backend-data"]: `{"VNI":1,"VtepMAC":"c6:d2:32:${
            [(i >> 16) & 255, (i >> 8) & 255, i & 255].map((b) => b.toString(16).padStart(2, "0"))
              .join(":")
          }"}`,
          [A + "public-ip"]: ip,
          "node.alpha.kubernetes.io/ttl": "0",
          "volumes.kubernetes.io/controller-managed-attach-detach": "true",
        },
      });
    }
    kube.addNode(SELF, { podCIDRs: ["10.255.255.0/24"], internalIP: "198.51.100.1" });
    const netConfigPath = join(dir, "net-conf.json");
    writeFileSync(netConfigPath, NET_CONF);
    const kubeconfig = writeKubeconfig(dir, kube, { token: "bench" });
    const self = fileURLToPath(import.meta.url);
    const childArgs = ["--child", kubeconfig, netConfigPath, String(n), String(pageSize), loader];
    const args = runtimeName === "deno" ? ["run", "-A", self, ...childArgs] : [self, ...childArgs];
    const results: KubeListWatchBenchResult[] = [];
    for (let r = 0; r < runs; r++) {
      // the child's acquire writes the annotations; remove them for the next run
      kube.annotate(SELF, {
        [A + "kube-subnet-manager"]: null,
        [A + "backend-type"]: null,
        [A + "backend-data"]: null,
        [A + "public-ip"]: null,
      });
      const out = await new Promise<string>((resolve, reject) => {
        const child = spawn(execPath(), args, { stdio: ["ignore", "pipe", "pipe"] });
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (d) => (stdout += d));
        child.stderr.on("data", (d) => (stderr += d));
        child.once("error", reject);
        child.once(
          "exit",
          (code) =>
            code === 0
              ? resolve(stdout)
              : reject(new Error(`kube list/watch child exited with ${code}: ${stderr.trim()}`)),
        );
      });
      results.push(JSON.parse(out.trim().split("\n").at(-1)!));
    }
    const med = (f: (r: KubeListWatchBenchResult) => number) => median(results.map(f));
    return {
      nodes: n,
      pageSize,
      runtime: runtimeName,
      runs,
      loader: results[0].loader,
      connectMs: med((r) => r.connectMs),
      listMs: med((r) => r.listMs),
      listWatchMs: med((r) => r.listWatchMs),
      rssAfterConnectMB: med((r) => r.rssAfterConnectMB),
      rssMB: med((r) => r.rssMB),
      maxRssMB: med((r) => r.maxRssMB),
    };
  } finally {
    await kube.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The child side of {@link benchKubeListWatch}; prints one JSON line. */
async function child(
  kubeconfigFile: string,
  netConfigPath: string,
  n: number,
  pageSize: number,
  loader: "auto" | "builtin" | "client-node",
): Promise<void> {
  const t0 = performance.now();
  const { createKubeLeaseStore } = await import("../../lease/kube/store.ts");
  let usedLoader = "?";
  const store = createKubeLeaseStore({
    kubeconfigFile,
    netConfigPath,
    nodeName: SELF,
    env: {},
    setNodeCondition: false,
    pageSize,
    loader,
    logger: {
      ...nullLogger,
      info(msg: string, fields?: Record<string, unknown>) {
        if (msg === "using the Kubernetes API") usedLoader = String(fields?.loader);
      },
      with() {
        return this;
      },
    },
  });
  const ac = new AbortController();
  try {
    const config = await store.getNetworkConfig();
    await store.nodeHints(); // loads the kubeconfig, reads this node
    const connectMs = performance.now() - t0;
    const rssAfterConnect = rssBytes();
    const t1 = performance.now();
    const snap = await store.list();
    const listMs = performance.now() - t1;
    if (snap.leases.length !== n) throw new Error(`listed ${snap.leases.length} of ${n} leases`);
    const watched = (async () => {
      for await (const batch of store.watch(snap.revision, ac.signal)) {
        if (batch.some((e) => e.type === "added" && e.lease.attrs.publicIP === "198.51.100.1")) {
          return performance.now();
        }
      }
      throw new Error("watch ended before this node's lease arrived");
    })();
    await store.acquire(config, {
      attrs: {
        publicIP: "198.51.100.1",
        backendType: "vxlan",
        backendData: { VNI: 1, VtepMAC: "c6:d2:32:ff:ff:ff" },
      },
    });
    const t2 = await watched;
    const rss = rssBytes();
    console.log(JSON.stringify(
      {
        nodes: n,
        pageSize,
        runtime: runtimeName,
        runs: 1,
        loader: usedLoader,
        connectMs: round(connectMs),
        listMs: round(listMs),
        listWatchMs: round(t2 - t1),
        rssAfterConnectMB: round(rssAfterConnect / 1e6),
        rssMB: round(rss / 1e6),
        maxRssMB: round(process.resourceUsage().maxRSS * 1024 / 1e6), // maxRSS is in KiB
      } satisfies KubeListWatchBenchResult,
    ));
  } finally {
    ac.abort();
    await store.close();
  }
}

/** Start → ready figures of one runtime, ms, medians over the runs. */
export interface KubeStartTimes {
  /** Fresh host (no vxlan device, no subnet.env, no annotations): spawn → "ready". */
  readonly coldMs: number;
  /**
   * Spawn → the agent's first log line, "using the Kubernetes API" (runtime
   * start, module loading, the `@kubernetes/client-node` import, kubeconfig).
   */
  readonly firstLogMs: number;
  /** Fastest and slowest cold start. */
  readonly coldMinMs: number;
  readonly coldMaxMs: number;
  /** Restart after a clean stop (device, subnet.env and annotations in place): spawn → "ready". */
  readonly restartMs: number;
}

/** Result of {@link benchKubeStartToReady}. */
export interface KubeStartToReadyBenchResult {
  readonly runs: number;
  readonly deno: KubeStartTimes;
  readonly bun: KubeStartTimes;
}

/**
 * Time a kube-mode agent from process start to "ready" in a lab host, under
 * Deno and Bun: per run one cold start (the host's vxlan device, subnet.env
 * and the node's flannel annotations removed first) and one restart after a
 * clean stop. One unmeasured warm-up start per runtime comes first (module
 * caches). The fake API server runs in the lab's underlay namespace; times
 * are taken from the agent's log timestamps (same clock), so the parent's
 * polling adds nothing.
 *
 * @param options `runs` per runtime (default 5).
 * @returns Medians per runtime.
 * @throws {Error} When the lab cannot be built or an agent does not get ready in 60 s.
 */
export async function benchKubeStartToReady(
  options: { runs?: number } = {},
): Promise<KubeStartToReadyBenchResult> {
  const runs = options.runs ?? 5;
  if (!Number.isInteger(runs) || runs < 1) {
    throw new RangeError(`'runs' must be a positive integer: current value is ${runs}`);
  }
  const lab = await createLab({ prefix: "wku", hosts: 1 });
  try {
    const host = lab.hosts[0];
    const kube = await startLabKube(lab);
    const netConf = join(lab.dir, "net-conf.json");
    writeFileSync(
      netConf,
      JSON.stringify({ Network: "10.244.0.0/16", Backend: { Type: "vxlan" } }),
    );
    await kube.call("addNode", host.ns, { podCIDRs: ["10.244.1.0/24"], internalIP: host.ip });
    const subnetFile = join(lab.dir, "subnet.env");
    const reset = async () => {
      await lab.exec(host.ns, "ip link del flannel.1");
      rmSync(subnetFile, { force: true });
      await kube.call("annotate", host.ns, {
        [A + "kube-subnet-manager"]: null,
        [A + "backend-type"]: null,
        [A + "backend-data"]: null,
        [A + "public-ip"]: null,
      });
    };
    const once = async (runtime: AgentRuntime) => {
      const t0 = Date.now();
      const agent = startAgent(lab, host, {
        runtime,
        subnetFile,
        args: [
          "--kube-subnet-mgr",
          "--kubeconfig-file",
          kube.kubeconfig,
          "--net-config-path",
          netConf,
        ],
        env: { NODE_NAME: host.ns },
      });
      let ready: AgentLogRecord;
      try {
        ready = await agent.waitLog((r: AgentLogRecord) => r.msg === "ready", 60_000);
      } catch (e) {
        await agent.stop();
        throw e;
      }
      const first = agent.logs()[0];
      const code = await agent.stop();
      if (code !== 0) {
        throw new Error(
          `${runtime} agent exited with ${code} on stop:\n${agent.process.stderr().slice(-2000)}`,
        );
      }
      return { ready: Date.parse(ready.ts) - t0, first: Date.parse(first.ts) - t0 };
    };
    const times = async (runtime: AgentRuntime): Promise<KubeStartTimes> => {
      await reset();
      await once(runtime); // warm-up
      const cold: number[] = [];
      const first: number[] = [];
      const restart: number[] = [];
      for (let r = 0; r < runs; r++) {
        await reset();
        const c = await once(runtime);
        cold.push(c.ready);
        first.push(c.first);
        restart.push((await once(runtime)).ready);
      }
      return {
        coldMs: median(cold),
        firstLogMs: median(first),
        coldMinMs: Math.min(...cold),
        coldMaxMs: Math.max(...cold),
        restartMs: median(restart),
      };
    };
    const deno = await times("deno");
    const bun = await times("bun");
    return { runs, deno, bun };
  } finally {
    await lab.teardown();
  }
}

if (import.meta.main) {
  const argv = process.argv.slice(2);
  if (argv[0] === "--start-ready") {
    console.log(await benchKubeStartToReady({ runs: Number(argv[1] ?? 5) }));
  } else if (argv[0] === "--child") {
    await child(
      argv[1],
      argv[2],
      Number(argv[3]),
      Number(argv[4]),
      (argv[5] ?? "auto") as "auto" | "builtin" | "client-node",
    );
    process.exit(0);
  } else {
    const nodes = Number(argv[0] ?? 5000);
    const runs = Number(argv[1] ?? 3);
    const pageSize = Number(argv[2] ?? 500);
    const loader = (argv[3] ?? "auto") as "auto" | "builtin" | "client-node";
    console.log(await benchKubeListWatch({ nodes, runs, pageSize, loader }));
  }
}
