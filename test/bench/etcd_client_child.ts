/**
 * One measured etcd client in a fresh process, for
 * test/bench/etcd_client_bench.ts: `weft` (lease/etcd/client.ts, the JSON
 * gateway over fetch) or `etcd3` (the npm package, gRPC). It imports the
 * client (timed), notes RSS, does `puts` sequential puts (each timed), notes
 * RSS, then `watches` times: put a key under a watched prefix and time until
 * the watch delivers it. Prints one JSON line ({@link ClientFigures}).
 *
 * Only node: modules are imported statically, so the import time and RSS
 * are the client's own.
 *
 * Run: `deno run -A test/bench/etcd_client_child.ts weft|etcd3 <endpoint> [puts] [watches]`.
 * etcd3 is found in the repository's node_modules; until it is a
 * devDependency, `WEFT_BENCH_NODE_MODULES=/path/to/node_modules` names
 * another folder holding it.
 *
 * @module
 */

import { createRequire } from "node:module";
import process from "node:process";

/** What one child measured (ms, MB = 10^6 bytes). */
export interface ClientFigures {
  readonly client: "weft" | "etcd3";
  readonly importMs: number;
  /** RSS before the import. */
  readonly rssBaseMB: number;
  readonly rssAfterImportMB: number;
  readonly rssAfterPutsMB: number;
  readonly puts: number;
  readonly putP50Ms: number;
  readonly putP99Ms: number;
  readonly watches: number;
  /** From sending a put until the watch delivers its event. */
  readonly watchP50Ms: number;
  readonly watchP99Ms: number;
}

/** The few calls the bench makes, over either client. */
interface Client {
  put(key: string, value: string): Promise<void>;
  /** Watch a prefix; resolves once the watch is set up; returns how to stop it. */
  watch(prefix: string, onPut: (key: string) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

/** The part of the etcd3 package's API used here. */
interface Etcd3Module {
  Etcd3: new (options: { hosts: string }) => {
    put(key: string): { value(v: string): Promise<unknown> };
    watch(): {
      prefix(p: string): {
        create(): Promise<{
          on(event: "put", fn: (kv: { key: Uint8Array }) => void): void;
          cancel(): Promise<void>;
        }>;
      };
    };
    close(): void;
  };
}

async function importEtcd3(): Promise<Etcd3Module> {
  // a variable: type checking must not need the package
  const name = "etcd3";
  try {
    return await import(name) as Etcd3Module;
  } catch (e) {
    const dir = process.env.WEFT_BENCH_NODE_MODULES;
    if (!dir) {
      throw new Error(
        `Cannot load the etcd3 package (${(e as Error).message}): add it as a devDependency ` +
          `(npm install --save-dev etcd3@1.1.2) or set WEFT_BENCH_NODE_MODULES to a node_modules folder holding it`,
      );
    }
    return createRequire(dir.replace(/\/?$/, "/"))(name) as Etcd3Module;
  }
}

async function load(
  which: string,
  endpoint: string,
): Promise<{ client: Client; importMs: number }> {
  const t0 = performance.now();
  if (which === "weft") {
    const { EtcdClient } = await import("../../lease/etcd/client.ts");
    const importMs = performance.now() - t0;
    const c = new EtcdClient({ endpoints: [endpoint] });
    const client: Client = {
      put: async (key, value) => void (await c.put(key, value)),
      async watch(prefix, onPut) {
        const ac = new AbortController();
        const stream = c.watch(prefix, { prefix: true }, ac.signal);
        await stream.next(); // `created`
        const done = (async () => {
          for await (const r of stream) {
            for (const e of r.events) if (e.type === "put") onPut(e.kv.key);
          }
        })();
        return async () => {
          ac.abort();
          await done;
        };
      },
      close: () => c.close(),
    };
    return { client, importMs };
  }
  if (which === "etcd3") {
    const { Etcd3 } = await importEtcd3();
    const importMs = performance.now() - t0;
    const c = new Etcd3({ hosts: endpoint });
    const decoder = new TextDecoder();
    const client: Client = {
      put: async (key, value) => void (await c.put(key).value(value)),
      async watch(prefix, onPut) {
        const w = await c.watch().prefix(prefix).create();
        w.on("put", (kv) => onPut(decoder.decode(kv.key)));
        return () => w.cancel();
      },
      close: () => Promise.resolve(c.close()),
    };
    return { client, importMs };
  }
  throw new TypeError(`Cannot bench client ${JSON.stringify(which)}: use weft or etcd3`);
}

const percentile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.max(0, Math.min(s.length - 1, Math.ceil(q * s.length) - 1))];
};
const mb = (bytes: number) => Math.round(bytes / 1e4) / 100;
const ms = (x: number) => Math.round(x * 100) / 100;

async function main(): Promise<void> {
  const [which, endpoint, putsArg, watchesArg] = process.argv.slice(2);
  const puts = Number(putsArg ?? 200);
  const watches = Number(watchesArg ?? 100);
  const rssBase = process.memoryUsage().rss;
  const { client, importMs } = await load(which, endpoint);
  const rssAfterImport = process.memoryUsage().rss;
  // a value the size of a flannel lease
  const value =
    '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}';
  const base = `/bench/${which}/${process.pid}/`;
  try {
    const putTimes: number[] = [];
    for (let i = 0; i < puts; i++) {
      const t = performance.now();
      await client.put(`${base}k/${i}`, value);
      putTimes.push(performance.now() - t);
    }
    const rssAfterPuts = process.memoryUsage().rss;
    const waiting = new Map<string, () => void>();
    const stop = await client.watch(`${base}w/`, (key) => waiting.get(key)?.());
    const watchTimes: number[] = [];
    try {
      for (let i = 0; i < watches; i++) {
        const key = `${base}w/${i}`;
        const seen = new Promise<void>((resolve) => waiting.set(key, resolve));
        const t = performance.now();
        await client.put(key, value);
        await seen;
        watchTimes.push(performance.now() - t);
        waiting.delete(key);
      }
    } finally {
      await stop();
    }
    const figures = {
      client: which as "weft" | "etcd3",
      importMs: ms(importMs),
      rssBaseMB: mb(rssBase),
      rssAfterImportMB: mb(rssAfterImport),
      rssAfterPutsMB: mb(rssAfterPuts),
      puts,
      putP50Ms: ms(percentile(putTimes, 0.5)),
      putP99Ms: ms(percentile(putTimes, 0.99)),
      watches,
      watchP50Ms: ms(percentile(watchTimes, 0.5)),
      watchP99Ms: ms(percentile(watchTimes, 0.99)),
    } satisfies ClientFigures;
    console.log(JSON.stringify(figures));
  } finally {
    await client.close();
  }
}

if (import.meta.main) {
  await main();
  process.exit(0);
}
