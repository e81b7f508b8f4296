/**
 * An in-memory API server for the kube store's node list and watch, behind
 * the `KubeApi` seam (no HTTP): nodes are changed with
 * {@link FakeNodeServer.change}, each watch request gets the events after
 * its resourceVersion replayed and then the new ones, and raw lines (noise,
 * a 410 `ERROR`) can be put on the open stream. Fast enough for fuzzing the
 * peer view with thousands of sequences; `testing/fake_kube.ts` is the real
 * HTTP fake.
 *
 * @module
 */

import type { KubeApi, KubeClient } from "../lease/kube/api.ts";
import { type Clock, systemClock } from "../core/clock.ts";

/**
 * What an API server can hold under a node's name: any garbage in the
 * fields, but always an object whose `metadata.name` is that name (the
 * server's key).
 */
export function asStored(name: string, obj: unknown): Record<string, unknown> {
  const o: Record<string, unknown> = typeof obj === "object" && obj !== null && !Array.isArray(obj)
    ? { ...obj as Record<string, unknown> }
    : { spec: obj };
  const meta = o.metadata;
  o.metadata = typeof meta === "object" && meta !== null && !Array.isArray(meta)
    ? { ...meta, name }
    : { name };
  return o;
}

/** {@link asStored} with a resourceVersion, as the server sends it. */
export function stamped(name: string, obj: unknown, rv: number): Record<string, unknown> {
  const stored = asStored(name, obj);
  stored.metadata = { ...stored.metadata as object, resourceVersion: String(rv) };
  return stored;
}

/**
 * An API server with a node store, in memory: each watch request gets the
 * events after its resourceVersion (replayed from the event log), then the
 * new ones; noise lines and 410 errors go to the open stream only.
 */
export class FakeNodeServer {
  readonly nodes = new Map<string, unknown>();
  rv = 1;
  readonly #log: { rv: number; line: string }[] = [];
  #stream: ReadableStreamDefaultController<Uint8Array> | undefined;
  readonly #enc = new TextEncoder();

  /** Whether a watch stream is open (lines sent now reach it). */
  get watching(): boolean {
    return this.#stream !== undefined;
  }

  /** Send a line on the open watch (lost when none is open, as on a real server). */
  line(text: string): void {
    try {
      this.#stream?.enqueue(this.#enc.encode(text + "\n"));
    } catch {
      this.#stream = undefined; // the reader went away
    }
  }

  /**
   * Change a node as the server does: stamp a new resourceVersion, store
   * (or delete) it, log and send the event.
   *
   * @returns The node as stored and sent.
   */
  change(type: "ADDED" | "MODIFIED" | "DELETED", name: string, object: unknown): unknown {
    const stored = stamped(name, object, ++this.rv);
    if (type === "DELETED") this.nodes.delete(name);
    else this.nodes.set(name, stored);
    const line = JSON.stringify({ type, object: stored });
    this.#log.push({ rv: this.rv, line });
    this.line(line);
    return stored;
  }

  readonly api: KubeApi = {
    client: () => Promise.resolve({ server: "http://fake" } as KubeClient),
    send: (_c, url, init) => {
      const from = Number(new URL(String(url)).searchParams.get("resourceVersion"));
      const body = new ReadableStream<Uint8Array>({
        start: (controller) => {
          this.#stream = controller;
          for (const e of this.#log) if (e.rv > from) this.line(e.line);
        },
        cancel: () => (this.#stream = undefined),
      });
      init?.signal?.addEventListener("abort", () => (this.#stream = undefined), { once: true });
      return Promise.resolve(new Response(body));
    },
    request: () =>
      Promise.resolve({
        items: [...this.nodes.values()],
        metadata: { resourceVersion: String(this.rv) },
      }),
    error: (_c, what, failure) =>
      new Error(`${what}: ${String((failure as Error)?.message ?? failure)}`),
    retrying: (_what, fn) => fn({ server: "http://fake" } as KubeClient),
  };
}

/** The next batch, or a failure after `ms` (a hang is a failure, not a stuck test). */
export async function nextWithin<T>(it: AsyncIterator<T>, ms: number): Promise<IteratorResult<T>> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      it.next(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the watch gave nothing for ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A clock whose backoffs (≤ 10 s) end on the next turn of the event loop;
 * longer sleeps (the idle watchdog's) are real.
 */
export const quickClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) => systemClock.sleep(ms > 10_000 ? ms : 0, signal),
};
