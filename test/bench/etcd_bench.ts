/**
 * Benchmarks of the etcd lease store against a real local etcd (started
 * fresh by each function with the default etcd flags, fsync included):
 *
 * - {@link benchEtcdAcquire}: latency of `acquire` (list + grant + txn) for
 *   N hosts one after another, p50/p99.
 * - {@link benchEtcdLoadWatch}: a child process (so the bench process does
 *   not pollute its RSS) lists N leases, each bound to its own etcd lease as
 *   flannel writes them, opens the watch and waits for a lease written after
 *   the list to arrive; it reports the times and its RSS.
 *
 * Run on its own:
 * `deno run -A test/bench/etcd_bench.ts [acquires] [leases] [maxTtlLookups]`
 * (or with `bun`).
 *
 * @module
 */

import { spawn } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { execPath, rssBytes, runtimeName } from "../../core/runtime.ts";
import { EtcdClient } from "../../lease/etcd/client.ts";
import { createEtcdLeaseStore } from "../../lease/etcd/store.ts";
import { formatIPv4 } from "../../core/ip.ts";
import { encodeLeaseAttrs } from "../../lease/types.ts";
import { startEtcd } from "../../testing/etcd_server.ts";
import { median, percentile, roundTo } from "./stats.ts";

const PREFIX = "/coreos.com/network";
const BIG_CONFIG = '{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}';

/** Result of {@link benchEtcdAcquire}, in ms. */
export interface EtcdAcquireBenchResult {
  readonly acquires: number;
  readonly maxTtlLookups: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly meanMs: number;
}

/** Result of {@link benchEtcdLoadWatch}. */
export interface EtcdLoadWatchBenchResult {
  readonly leases: number;
  /** TTL lookups allowed per list (the store's `maxTtlLookups`). */
  readonly maxTtlLookups: number;
  /** Child processes run; each figure is the median over them. */
  readonly runs: number;
  /** `list()` wall time, ms (the child's first call: cold caches and connection). */
  readonly listMs: number;
  /** From before `list()` until a lease written after it arrived on the watch, ms. */
  readonly loadAndWatchMs: number;
  /** Child RSS after loading and watching, MB (10^6 bytes). */
  readonly rssMB: number;
  /** Child RSS growth from after its imports to after loading and watching, MB. */
  readonly rssDeltaMB: number;
}

const round = (x: number) => roundTo(x, 2);

/**
 * Acquire latency: `acquires` hosts (distinct public IPs, one store client
 * each, as separate agents would be) acquire one after another in a
 * 10.0.0.0/8 network, so later acquires list more leases.
 *
 * @param options `acquires` (default 200); `maxTtlLookups` of each store
 *   (default 64: a joining host looks up the TTLs of up to 64 peers' leases).
 * @returns p50/p99/max/mean in ms.
 * @throws {Error} When an acquire fails or two hosts get the same subnet.
 */
export async function benchEtcdAcquire(
  options: { acquires?: number; maxTtlLookups?: number } = {},
): Promise<EtcdAcquireBenchResult> {
  const n = options.acquires ?? 200;
  const maxTtlLookups = options.maxTtlLookups ?? 64;
  const etcd = await startEtcd();
  try {
    await etcd.etcdctl(["put", `${PREFIX}/config`, BIG_CONFIG]);
    const times: number[] = [];
    const subnets = new Set<number>();
    for (let i = 0; i < n; i++) {
      const store = createEtcdLeaseStore({ endpoints: [etcd.endpoint], maxTtlLookups });
      try {
        const config = await store.getNetworkConfig();
        const t0 = performance.now();
        const lease = await store.acquire(config, {
          attrs: {
            publicIP: formatIPv4((0xc6120000 + i) >>> 0), // 198.18.x.y
            backendType: "vxlan",
            backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" },
          },
        });
        times.push(performance.now() - t0);
        subnets.add(lease.subnet!.ip);
      } finally {
        await store.close();
      }
    }
    if (subnets.size !== n) throw new Error(`${n} acquires gave only ${subnets.size} subnets`);
    times.sort((a, b) => a - b);
    return {
      acquires: n,
      maxTtlLookups,
      p50Ms: round(percentile(times, 0.5)),
      p99Ms: round(percentile(times, 0.99)),
      maxMs: round(times[times.length - 1]),
      meanMs: round(times.reduce((a, b) => a + b, 0) / n),
    };
  } finally {
    await etcd.close();
  }
}

/** Write `count` leases the way flannel does: one etcd lease per key. */
async function fill(endpoint: string, count: number): Promise<void> {
  const client = new EtcdClient({ endpoints: [endpoint], requestTimeoutMs: 30_000 });
  try {
    let next = 0;
    const worker = async () => {
      while (next < count) {
        const i = next++;
        const { id } = await client.leaseGrant(24 * 3600);
        const subnet = formatIPv4((0x0a000000 + (i + 1) * 256) >>> 0);
        await client.put(
          `${PREFIX}/subnets/${subnet}-24`,
          encodeLeaseAttrs({
            publicIP: formatIPv4((0xc6120000 + i) >>> 0),
            backendType: "vxlan",
            backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" },
          }),
          id,
        );
      }
    };
    await Promise.all(Array.from({ length: 32 }, worker));
  } finally {
    await client.close();
  }
}

/**
 * Load and watch: fill a fresh etcd with `leases` leases, then in a child
 * process of the same runtime time `list()` and a watch from its revision
 * until a lease written after the list arrives.
 *
 * @param options `leases` (default 5000); `maxTtlLookups` for the child's
 *   store (default: the store's default, 64); `runs`, fresh child processes
 *   against the same etcd (default 3).
 * @returns Medians over the runs of the times and the child's RSS.
 * @throws {Error} When the child fails or sees the wrong number of leases.
 */
export async function benchEtcdLoadWatch(
  options: { leases?: number; maxTtlLookups?: number; runs?: number } = {},
): Promise<EtcdLoadWatchBenchResult> {
  const n = options.leases ?? 5000;
  const runs = options.runs ?? 3;
  const maxTtlLookups = options.maxTtlLookups ?? 64;
  const etcd = await startEtcd();
  try {
    await etcd.etcdctl(["put", `${PREFIX}/config`, BIG_CONFIG]);
    await fill(etcd.endpoint, n);
    const self = fileURLToPath(import.meta.url);
    const args = runtimeName === "deno"
      ? ["run", "-A", self, "--child", etcd.endpoint, String(n), String(maxTtlLookups)]
      : [self, "--child", etcd.endpoint, String(n), String(maxTtlLookups)];
    const results: EtcdLoadWatchBenchResult[] = [];
    for (let r = 0; r < runs; r++) {
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
              : reject(new Error(`load/watch child exited with ${code}: ${stderr.trim()}`)),
        );
      });
      results.push(JSON.parse(out.trim().split("\n").at(-1)!));
    }
    const med = (f: (r: EtcdLoadWatchBenchResult) => number) => median(results.map(f));
    return {
      leases: n,
      maxTtlLookups,
      runs,
      listMs: med((r) => r.listMs),
      loadAndWatchMs: med((r) => r.loadAndWatchMs),
      rssMB: med((r) => r.rssMB),
      rssDeltaMB: med((r) => r.rssDeltaMB),
    };
  } finally {
    await etcd.close();
  }
}

/** The child side of {@link benchEtcdLoadWatch}; prints one JSON line. */
async function child(endpoint: string, n: number, maxTtlLookups: number): Promise<void> {
  const rss0 = rssBytes();
  const store = createEtcdLeaseStore({ endpoints: [endpoint], maxTtlLookups });
  const writer = new EtcdClient({ endpoints: [endpoint] });
  const ac = new AbortController();
  try {
    const t0 = performance.now();
    // as the agent lists its peers
    const snap = await store.list(undefined, { exactExpiry: false });
    const listMs = performance.now() - t0;
    if (snap.leases.length !== n) throw new Error(`listed ${snap.leases.length} of ${n} leases`);
    const marker = `${PREFIX}/subnets/10.255.255.0-24`;
    const watched = (async () => {
      for await (const batch of store.watch(snap.revision, ac.signal)) {
        if (batch.some((e) => e.type === "added" && e.lease.attrs.publicIP === "198.51.100.1")) {
          return performance.now();
        }
      }
      throw new Error("watch ended before the marker lease arrived");
    })();
    await writer.put(marker, encodeLeaseAttrs({ publicIP: "198.51.100.1" }));
    const t1 = await watched;
    const rss1 = rssBytes();
    await writer.delete(marker);
    console.log(JSON.stringify(
      {
        leases: n,
        maxTtlLookups,
        runs: 1,
        listMs: round(listMs),
        loadAndWatchMs: round(t1 - t0),
        rssMB: round(rss1 / 1e6),
        rssDeltaMB: round((rss1 - rss0) / 1e6),
      } satisfies EtcdLoadWatchBenchResult,
    ));
  } finally {
    ac.abort();
    await writer.close();
    await store.close();
  }
}

if (import.meta.main) {
  const argv = process.argv.slice(2);
  if (argv[0] === "--child") {
    await child(argv[1], Number(argv[2]), Number(argv[3]));
    process.exit(0);
  } else {
    const acquires = Number(argv[0] ?? 200);
    const leases = Number(argv[1] ?? 5000);
    const maxTtlLookups = Number(argv[2] ?? 64);
    console.log("acquire:", await benchEtcdAcquire({ acquires, maxTtlLookups }));
    console.log("load+watch:", await benchEtcdLoadWatch({ leases, maxTtlLookups }));
  }
}
