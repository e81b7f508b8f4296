/**
 * N agents' lease watches in one process, for the etcd outage bench
 * (test/bench/outage_bench.ts): each is its own etcd LeaseStore doing what
 * an agent's peer follower does — list, then watch from that revision,
 * resuming whenever the stream breaks — so a killed etcd sees N agents'
 * reconnects. Runs inside a lab host namespace and stops on SIGTERM; the
 * bench counts the open watches on etcd's side.
 *
 * Run: `deno run -A test/bench/outage_watchers.ts --endpoint http://192.0.2.2:2379 --n 100`.
 *
 * @module
 */

import process from "node:process";
import { createEtcdLeaseStore } from "../../lease/etcd/store.ts";

function flag(argv: string[], name: string): string {
  const i = argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= argv.length) throw new TypeError(`outage_watchers: --${name} is required`);
  return argv[i + 1];
}

async function main(argv: string[]): Promise<void> {
  const endpoint = flag(argv, "endpoint");
  const n = Number(flag(argv, "n"));
  const stop = new AbortController();
  process.on("SIGTERM", () => stop.abort());
  await Promise.allSettled(Array.from({ length: n }, async () => {
    const store = createEtcdLeaseStore({ endpoints: [endpoint] });
    try {
      const { revision } = await store.list(stop.signal);
      for await (const _ of store.watch(revision, stop.signal));
    } finally {
      await store.close();
    }
  }));
}

if (import.meta.main) await main(process.argv.slice(2));
