/**
 * Lease churn for the reliability scenarios: a process that adds, updates
 * and removes peer leases in etcd at a steady rate, optionally compacts the
 * history as it goes, and counts every change etcd delivers on its own watch
 * of the lease prefix (the ground truth the agents' event counters are
 * compared with). It runs inside the lab's underlay namespace, where etcd
 * listens (the test process cannot reach it).
 *
 * Leases are flannel's JSON of `--backend` (vxlan, with a random VtepMAC,
 * or host-gw), for a pool of `--pool` (≤ 120) subnets among
 * `10.5.128.0/24`–`10.5.255.0/24` that held no lease when it started (the
 * hosts' own are left alone), with a PublicIP `192.0.2.(100+k)`.
 * Each operation picks a subnet at random: a free one is added (a share of
 * them, `--ttl-share`, bound to an etcd lease of 2–5 s that expires by
 * itself), a taken one removed (70%) or updated with a new MAC and address
 * (30%). Operations are paced against the clock, up to 8 at a time on
 * different subnets, so slow ones are caught up and the rate holds.
 *
 * Run: `deno run -A test/lab/lease_writer.ts --endpoint http://192.0.2.2:2379
 * --rate 100 --duration-ms 120000 [--backend vxlan|host-gw] [--pool 100] [--ttl-share 0.2]
 * [--compact-every-ms 1000] [--seed 1]`. It prints JSON lines: `writing`,
 * `progress` every 5 s, and `done` with the counts (also on SIGTERM, which
 * ends it early). Before `done` it revokes the etcd leases it granted and
 * waits until its watch has seen every change up to the last revision.
 *
 * @module
 */

import process from "node:process";
import { EtcdClient } from "../../lease/etcd/client.ts";
import { waitFor } from "../../testing/wait.ts";

/** Operations in flight at most (one etcd write takes a few ms: a rate of 100/s needs a few). */
const MAX_IN_FLIGHT = 8;

/** The lease prefix the agents watch. */
const SUBNETS = "/coreos.com/network/subnets/";

/** The `done` line. */
export interface WriterReport {
  readonly msg: "done";
  /** Operations done, by kind. */
  readonly adds: number;
  readonly expiringAdds: number;
  readonly updates: number;
  readonly removes: number;
  readonly ops: number;
  readonly elapsedMs: number;
  /** Operations per second achieved. */
  readonly rate: number;
  /** Longest an operation started behind its schedule, ms. */
  readonly maxLagMs: number;
  readonly compactions: number;
  /** Changes of the lease prefix etcd delivered to the writer's watch. */
  readonly events: { readonly put: number; readonly delete: number };
  /** False when the writer's own watch fell behind a compaction (then `events` is short). */
  readonly eventsComplete: boolean;
  /** The store's revision at the end. */
  readonly revision: number;
  /** Leases present at the end (the agents' own included). */
  readonly present: number;
}

function flag(argv: string[], name: string, def?: string): string {
  const i = argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < argv.length) return argv[i + 1];
  if (def === undefined) throw new TypeError(`lease_writer: --${name} is required`);
  return def;
}

/** A small seeded generator (mulberry32), so a failing run can be repeated. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function main(argv: string[]): Promise<void> {
  const endpoint = flag(argv, "endpoint");
  const rate = Number(flag(argv, "rate", "100"));
  const durationMs = Number(flag(argv, "duration-ms"));
  const pool = Number(flag(argv, "pool", "100"));
  const ttlShare = Number(flag(argv, "ttl-share", "0.2"));
  const compactEveryMs = Number(flag(argv, "compact-every-ms", "0"));
  const backend = flag(argv, "backend", "vxlan");
  const random = seeded(Number(flag(argv, "seed", String(Date.now() % 100_000))));
  if (!(pool >= 1 && pool <= 120)) throw new RangeError(`--pool must be 1–120, got ${pool}`);

  const client = new EtcdClient({ endpoints: [endpoint] });
  const stop = new AbortController();
  process.on("SIGTERM", () => stop.abort());
  process.on("SIGINT", () => stop.abort());

  const existing = await client.range(SUBNETS, { prefix: true, keysOnly: true });
  const startRevision = existing.revision;
  // the hosts' own leases are not the writer's to touch
  const slots = Array.from({ length: 128 }, (_, i) => `${SUBNETS}10.5.${128 + i}.0-24`)
    .filter((k) => !existing.kvs.some((kv) => kv.key === k))
    .slice(0, pool);
  const events = { put: 0, delete: 0 };
  let watched = startRevision;
  let eventsComplete = true;
  const watchStop = new AbortController();
  const watching = (async () => {
    for await (
      const m of client.watch(SUBNETS, {
        prefix: true,
        startRevision: startRevision + 1,
        progressNotify: true,
      }, watchStop.signal)
    ) {
      if (m.compactRevision !== undefined) {
        eventsComplete = false;
        return;
      }
      for (const e of m.events) {
        events[e.type]++;
        watched = Math.max(watched, e.kv.modRevision);
      }
      if (!m.created && m.events.length === 0) watched = Math.max(watched, m.revision);
    }
  })();

  const key = (i: number) => slots[i];
  const value = () => {
    const publicIP = `192.0.2.${100 + Math.floor(random() * 100)}`;
    if (backend === "host-gw") {
      return JSON.stringify({ PublicIP: publicIP, PublicIPv6: null, BackendType: "host-gw" });
    }
    const mac = ["0e", ...Array.from({ length: 5 }, () => Math.floor(random() * 256))]
      .map((b) => typeof b === "string" ? b : b.toString(16).padStart(2, "0")).join(":");
    return JSON.stringify({
      PublicIP: publicIP,
      PublicIPv6: null,
      BackendType: "vxlan",
      BackendData: { VNI: 1, VtepMAC: mac },
    });
  };
  /** Per pool slot: absent, present, or present until an etcd lease expires (ms). */
  const present = new Map<number, number>();
  const granted = new Set<string>();
  const counts = { adds: 0, expiringAdds: 0, updates: 0, removes: 0 };
  let compactions = 0;
  let maxLagMs = 0;
  let lastRevision = startRevision;

  /** Slots with an operation in flight (one at a time per key, so the order is known). */
  const busy = new Set<number>();
  const op = async () => {
    let i = Math.floor(random() * pool);
    while (busy.has(i)) i = (i + 1) % pool;
    busy.add(i);
    try {
      await opOn(i);
    } finally {
      busy.delete(i);
    }
  };
  const opOn = async (i: number) => {
    const expires = present.get(i);
    const taken = expires !== undefined && expires > Date.now();
    if (!taken) {
      if (random() < ttlShare) {
        const { id, ttl } = await client.leaseGrant(2 + Math.floor(random() * 4));
        granted.add(id);
        lastRevision = await client.put(key(i), value(), id);
        present.set(i, Date.now() + ttl * 1000 - 500);
        counts.expiringAdds++;
      } else {
        lastRevision = await client.put(key(i), value());
        present.set(i, Infinity);
        counts.adds++;
      }
    } else if (random() < 0.7) {
      lastRevision = (await client.delete(key(i))).revision;
      present.delete(i);
      counts.removes++;
    } else {
      // an update keeps the key's etcd lease (if any) only when written with it: write it plain
      lastRevision = await client.put(key(i), value());
      present.set(i, Infinity);
      counts.updates++;
    }
  };

  console.log(JSON.stringify({ msg: "writing", rate, durationMs, pool, startRevision }));
  const started = performance.now();
  const total = Math.round((rate * durationMs) / 1000);
  let launched = 0;
  let done = 0;
  let failure: unknown;
  const inFlight = new Set<Promise<void>>();
  let lastProgress = started;
  // compactions run on their own clock, whether or not the writes keep up
  const compacting = (async () => {
    if (compactEveryMs <= 0) return;
    let compacted = startRevision;
    while (!stop.signal.aborted && launched < total && failure === undefined) {
      await new Promise((r) => setTimeout(r, compactEveryMs)); // scenario: compaction every N ms
      if (lastRevision <= compacted) continue;
      compacted = lastRevision;
      await client.compact(compacted);
      compactions++;
    }
  })().catch((e) => void (failure ??= e));
  while (!stop.signal.aborted && failure === undefined && launched < total) {
    const now = performance.now();
    const elapsed = now - started;
    const due = Math.min(total, Math.floor((elapsed * rate) / 1000));
    if (launched < due && inFlight.size < MAX_IN_FLIGHT) {
      maxLagMs = Math.max(maxLagMs, elapsed - (launched * 1000) / rate);
      launched++;
      const p: Promise<void> = op().then(() => void done++, (e) => void (failure ??= e))
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
      continue;
    }
    if (launched < due) {
      await Promise.race(inFlight);
      continue;
    }
    if (now - lastProgress >= 5000) {
      lastProgress = now;
      console.log(JSON.stringify({ msg: "progress", ops: done, elapsedMs: Math.round(elapsed) }));
    }
    const pause = Math.max(1, ((launched + 1) * 1000) / rate - elapsed);
    if (launched >= total) break;
    await new Promise((r) => setTimeout(r, pause)); // scenario: operations paced at `rate`/s
  }
  await Promise.all(inFlight);
  await compacting;
  if (failure !== undefined) throw failure;
  const elapsedMs = performance.now() - started;

  // expiring leases go now (their keys' deletions are counted like the rest)
  for (const id of granted) await client.leaseRevoke(id).catch(() => {});
  const { revision } = await client.range(SUBNETS, { prefix: true, keysOnly: true });
  await waitFor(
    `the writer's watch to reach revision ${revision}`,
    () => !eventsComplete || watched >= revision ? null : `at ${watched}`,
    30_000,
  ).catch(() => {
    eventsComplete = false;
  });
  watchStop.abort();
  await watching.catch(() => {});
  const { count } = await client.range(SUBNETS, { prefix: true, keysOnly: true });
  const report: WriterReport = {
    msg: "done",
    ...counts,
    ops: done,
    elapsedMs: Math.round(elapsedMs),
    rate: Math.round((done / elapsedMs) * 1000 * 10) / 10,
    maxLagMs: Math.round(maxLagMs),
    compactions,
    events,
    eventsComplete,
    revision,
    present: count,
  };
  console.log(JSON.stringify(report));
  await client.close();
}

if (import.meta.main) await main(process.argv.slice(2));
