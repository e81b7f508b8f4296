/**
 * The store side of the scale benchmark (`scale_bench.ts`), run inside a
 * lab's underlay namespace, where etcd and the fake API server listen (the
 * bench process lives in the machine's own namespace and cannot reach
 * them). It reads one JSON command per line on stdin and answers each with
 * one JSON line on stdout carrying the same `id`; times are wall-clock ms
 * (`performance.timeOrigin + performance.now()`, sub-ms), so they compare
 * with `ip -ts monitor` in the hosts.
 *
 * Commands (`id` and `op` plus):
 * - `fill` `{ endpoint, records: [[key, value]…] }`: put every record,
 *   each bound to its own etcd lease as flannel writes them, 32 at a time;
 *   answers `{ ms }`.
 * - `step` `{ step }`: one {@link Step}; answers `{ t0, t1 }` (just before
 *   the request and after its reply).
 * - `churn` `{ steps, rate, seconds }`: the steps in a loop, paced at
 *   `rate` per second for `seconds`; answers `{ done, seconds, behindMs,
 *   times }` (how far behind the pace the slowest step started, and when
 *   each step started).
 *
 * Run: `deno run -A test/bench/scale_driver.ts` (or `bun`), inside the
 * namespace (`ip netns exec <ns> …`).
 *
 * @module
 */

import process from "node:process";
import { createInterface } from "node:readline";
import { EtcdClient } from "../../lease/etcd/client.ts";

/** One store write. */
export type Step =
  /** Put a key in etcd, bound to the driver's one shared etcd lease (24 h). */
  | {
    readonly kind: "etcd-put";
    readonly endpoint: string;
    readonly key: string;
    readonly value: string;
  }
  | { readonly kind: "etcd-delete"; readonly endpoint: string; readonly key: string }
  /** POST these commands to the fake API server's control endpoint. */
  | { readonly kind: "kube"; readonly control: string; readonly commands: readonly unknown[] };

/** A command, as the bench sends it (the driver's stdin adds an `id`). */
export type DriverRequest =
  | {
    readonly op: "fill";
    readonly endpoint: string;
    readonly records: readonly (readonly [string, string])[];
  }
  | { readonly op: "step"; readonly step: Step }
  | {
    readonly op: "churn";
    readonly steps: readonly Step[];
    readonly rate: number;
    readonly seconds: number;
  };

/** A command on stdin. */
export type DriverCommand = DriverRequest & { readonly id: number };

const now = () => performance.timeOrigin + performance.now();

const clients = new Map<string, EtcdClient>();
const sharedLease = new Map<string, Promise<string>>();

function client(endpoint: string): EtcdClient {
  let c = clients.get(endpoint);
  if (!c) {
    clients.set(endpoint, c = new EtcdClient({ endpoints: [endpoint], requestTimeoutMs: 30_000 }));
  }
  return c;
}

function leaseOf(endpoint: string): Promise<string> {
  let id = sharedLease.get(endpoint);
  if (!id) {
    id = client(endpoint).leaseGrant(24 * 3600).then((l) => l.id);
    sharedLease.set(endpoint, id);
  }
  return id;
}

async function run(step: Step): Promise<void> {
  switch (step.kind) {
    case "etcd-put":
      await client(step.endpoint).put(step.key, step.value, await leaseOf(step.endpoint));
      return;
    case "etcd-delete":
      await client(step.endpoint).delete(step.key);
      return;
    case "kube": {
      const r = await fetch(step.control, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(step.commands),
      });
      const body = await r.text();
      if (!r.ok) throw new Error(`fake kube control answered ${r.status}: ${body.slice(0, 300)}`);
      return;
    }
  }
}

async function fill(endpoint: string, records: readonly (readonly [string, string])[]) {
  const c = client(endpoint);
  let next = 0;
  const worker = async () => {
    while (next < records.length) {
      const [key, value] = records[next++];
      const { id } = await c.leaseGrant(24 * 3600);
      await c.put(key, value, id);
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
}

async function churn(steps: readonly Step[], rate: number, seconds: number) {
  const start = now();
  const total = Math.round(rate * seconds);
  let behindMs = 0;
  const times: number[] = [];
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / rate;
    const wait = due - now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    else behindMs = Math.max(behindMs, -wait);
    times.push(now());
    await run(steps[i % steps.length]);
  }
  return { done: total, seconds: (now() - start) / 1000, behindMs, times };
}

async function handle(c: DriverCommand): Promise<Record<string, unknown>> {
  switch (c.op) {
    case "fill": {
      const t0 = now();
      await fill(c.endpoint, c.records);
      return { ms: now() - t0 };
    }
    case "step": {
      const t0 = now();
      await run(c.step);
      return { t0, t1: now() };
    }
    case "churn":
      return await churn(c.steps, c.rate, c.seconds);
  }
}

if (import.meta.main) {
  const lines = createInterface({ input: process.stdin });
  // one command at a time, in order: the bench waits for each answer anyway
  let queue = Promise.resolve();
  lines.on("line", (line) => {
    if (!line.trim()) return;
    queue = queue.then(async () => {
      const c = JSON.parse(line) as DriverCommand;
      try {
        process.stdout.write(JSON.stringify({ id: c.id, ...(await handle(c)) }) + "\n");
      } catch (e) {
        process.stdout.write(
          JSON.stringify({ id: c.id, error: String((e as Error).message) }) + "\n",
        );
      }
    });
  });
  lines.on("close", () => {
    void queue.then(async () => {
      for (const c of clients.values()) await c.close();
      process.exit(0);
    });
  });
  process.stdout.write(JSON.stringify({ ready: true }) + "\n");
}
