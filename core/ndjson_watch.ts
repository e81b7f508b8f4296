/**
 * Watches that stream newline-delimited JSON over a long-lived HTTP reply
 * (etcd's `POST /v3/watch`, Kubernetes' `?watch=true`), read the one way:
 *
 * - {@link readNdjson} reads one body: lines may be split anywhere across
 *   chunks (a multi-byte character too), one line may span many chunks (up to
 *   `maxLineLength`), a body that ends inside a line is `truncated`, a body
 *   silent for `idleTimeoutMs` on the injected clock is `idle`, and an abort
 *   ends it quietly. Each chunk's complete lines come out as one batch.
 * - {@link resumableNdjson} keeps a watch going across many bodies: it
 *   remembers a cursor (etcd's next revision, Kubernetes' resourceVersion)
 *   that each line may move, and after a failure opens the next body from
 *   that cursor with exponential backoff (within a second while the server
 *   does not answer at all: `retryDelay`), so nothing delivered is lost or
 *   repeated. A caller-supplied `recover` turns failures that cannot be
 *   resumed (history compacted: re-list) into a fresh start.
 *
 * @module
 */

import { linkedController, sleepQuietly } from "./abort.ts";
import { type Clock, retryDelay, systemClock } from "./clock.ts";

/** Why a stream stopped before its reader wanted it to. */
export type NdjsonFailure = "ended" | "truncated" | "idle" | "too-long" | "broken";

/** A newline-delimited JSON stream failed; `reason` says how. */
export class NdjsonStreamError extends Error {
  override name = "NdjsonStreamError";
  constructor(message: string, readonly reason: NdjsonFailure, options?: ErrorOptions) {
    super(message, options);
  }
}

/** Options of {@link readNdjson}. */
export interface NdjsonReadOptions<L> {
  /** Ends the read quietly (the generator returns). */
  readonly signal?: AbortSignal;
  /** Fail with reason `idle` when no byte arrives for this long; 0 or unset = never. */
  readonly idleTimeoutMs?: number;
  /** The clock the idle watchdog runs on (default: the real one). */
  readonly clock?: Clock;
  /** Longest line accepted, in characters (default 64 Mi); longer fails with `too-long`. */
  readonly maxLineLength?: number;
  /**
   * Turn one line (never blank) into a value: return `undefined` to skip the
   * line, throw to fail the stream. Default `JSON.parse`.
   */
  readonly parse?: (line: string) => L | undefined;
  /** Names the stream in messages, e.g. `etcd watch stream from http://10.0.0.1:2379`. */
  readonly what?: string;
}

const DEFAULT_MAX_LINE = 64 * 1024 * 1024;

/**
 * Read a body as newline-delimited JSON. Yields the values of each chunk's
 * complete lines as one batch (blank lines are skipped); returns when the
 * body ends after a complete line, or when `signal` aborts. The body is
 * always cancelled when the reading stops, early or not.
 *
 * @param body The byte stream, e.g. `response.body`.
 * @param options Abort signal, idle timeout and its clock, line limit, parser.
 * @returns Batches of parsed values.
 * @throws {NdjsonStreamError} `truncated` when the body ends inside a line,
 *   `idle` when it is silent too long, `too-long` for an oversized line,
 *   `broken` when reading fails (the cause is attached).
 * @throws {RangeError} When `idleTimeoutMs` or `maxLineLength` is negative.
 * @example
 * ```ts
 * const res = await fetch(url, { signal });
 * for await (const batch of readNdjson(res.body!, { signal, idleTimeoutMs: 60_000, clock })) {
 *   for (const event of batch) handle(event);
 * }
 * ```
 */
export async function* readNdjson<L = unknown>(
  body: ReadableStream<Uint8Array>,
  options: NdjsonReadOptions<L> = {},
): AsyncGenerator<L[]> {
  const idleMs = options.idleTimeoutMs ?? 0;
  const maxLine = options.maxLineLength ?? DEFAULT_MAX_LINE;
  if (!(idleMs >= 0)) {
    throw new RangeError(
      `Cannot read with 'idleTimeoutMs' ${idleMs}: it must be 0 (never) or a positive number of ms`,
    );
  }
  if (!(maxLine > 0)) {
    throw new RangeError(
      `Cannot read with 'maxLineLength' ${maxLine}: it must be a positive number of characters`,
    );
  }
  const what = options.what ?? "stream";
  const parse = options.parse ?? ((line: string) => JSON.parse(line) as L);
  const clock = options.clock ?? systemClock;
  const reader = body.getReader();
  const stop = linkedController({ parents: [options.signal] });
  const cancel = () => void reader.cancel().catch(() => {});
  stop.signal.addEventListener("abort", cancel, { once: true });

  let lastByteAt = clock.now();
  let idled = false;
  if (idleMs > 0) {
    // one timer per quiet period, not one per chunk
    (async () => {
      for (;;) {
        const left = lastByteAt + idleMs - clock.now();
        if (left <= 0) {
          idled = true;
          cancel();
          return;
        }
        if (!(await sleepQuietly(clock, left, stop.signal))) return;
      }
    })().catch(() => {});
  }

  const decoder = new TextDecoder();
  /** Pieces of the line being received (a line may span many chunks). */
  let pending: string[] = [];
  let pendingLength = 0;
  const tooLong = (length: number) =>
    new NdjsonStreamError(
      `${what} sent a line longer than ${maxLine} characters (${length} so far): ` +
        `not a watch stream, or raise maxLineLength`,
      "too-long",
    );

  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        if (options.signal?.aborted) return;
        if (idled) break;
        throw new NdjsonStreamError(`${what} broke: ${(e as Error)?.message ?? e}`, "broken", {
          cause: e,
        });
      }
      if (options.signal?.aborted) return;
      if (idled) break;
      const text = chunk.done ? decoder.decode() : decoder.decode(chunk.value, { stream: true });
      lastByteAt = clock.now();
      const batch: L[] = [];
      let start = 0;
      for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n", start)) {
        let line = text.slice(start, nl);
        start = nl + 1;
        if (pendingLength) {
          pending.push(line);
          line = pending.join("");
          pending = [];
          pendingLength = 0;
        }
        if (line.length > maxLine) {
          // as for a bad line: the lines before it are good, hand them over first
          if (batch.length) yield batch;
          throw tooLong(line.length);
        }
        if (line.trim() === "") continue;
        let value: L | undefined;
        try {
          value = parse(line);
        } catch (e) {
          // what came before the bad line is good: hand it over, then fail
          if (batch.length) yield batch;
          throw e;
        }
        if (value !== undefined) batch.push(value);
      }
      if (start < text.length) {
        pending.push(text.slice(start));
        pendingLength += text.length - start;
        if (pendingLength > maxLine) {
          if (batch.length) yield batch;
          throw tooLong(pendingLength);
        }
      }
      if (batch.length) yield batch;
      if (chunk.done) {
        const rest = pending.join("");
        if (rest.trim() !== "") {
          throw new NdjsonStreamError(
            `${what} ended in the middle of a line (${rest.length} characters unread)`,
            "truncated",
          );
        }
        return;
      }
    }
    throw new NdjsonStreamError(`${what} got nothing for ${idleMs} ms`, "idle");
  } finally {
    stop.abort();
    stop.dispose();
    cancel();
  }
}

/** One opened stream of a {@link resumableNdjson} watch. */
export interface NdjsonStream {
  /** The body to read. */
  readonly body: ReadableStream<Uint8Array>;
  /** Fail this stream when it is silent this long (e.g. the server's own timeout plus a margin). */
  readonly idleTimeoutMs?: number;
  /** Names this stream in messages (e.g. with the endpoint that answered). */
  readonly what?: string;
  /** Release what opening it took (timers, the request's controller); called once it is done. */
  close?(): void;
}

/** What one line does to a {@link resumableNdjson} watch. */
export interface NdjsonStep<C, T> {
  /** Values to hand to the watcher. */
  readonly items?: readonly T[];
  /** Where a later stream resumes, once this line is handled. */
  readonly cursor?: C;
  /** The watch is over (e.g. etcd says the history is compacted): return after yielding. */
  readonly done?: boolean;
}

/** Options of {@link resumableNdjson}. */
export interface ResumableNdjsonOptions<C, L, T> {
  /** Where the first stream starts. */
  readonly from: C;
  /**
   * Open one stream from `cursor`: resolve once the server accepted it,
   * throw when it did not (the failure is retried like a broken stream).
   */
  open(cursor: C, signal: AbortSignal): Promise<NdjsonStream>;
  /**
   * Handle one parsed line. Throw to fail the stream: values of the lines
   * before it are still yielded, and the stream is resumed from the cursor
   * the last handled line left (or ended, when `isFatal` says so).
   */
  step(line: L, cursor: C): NdjsonStep<C, T>;
  /** Parse one line (see {@link NdjsonReadOptions.parse}); default `JSON.parse`. */
  readonly parse?: (line: string) => L | undefined;
  /**
   * A stream failed with `error`. Return a fresh start to use at once (e.g.
   * after re-listing: the snapshot to yield and its cursor), or undefined to
   * back off and resume from `cursor`. What it throws is handled as the
   * failure instead.
   */
  recover?(
    error: unknown,
    cursor: C,
    signal: AbortSignal,
  ): Promise<{ items: readonly T[]; cursor: C } | undefined>;
  /** Failures that end the watch (thrown to the reader) instead of being retried. */
  readonly isFatal?: (error: unknown) => boolean;
  /** Told before each backoff (for logs and metrics). */
  readonly onRetry?: (
    error: unknown,
    retry: { attempt: number; delayMs: number; cursor: C },
  ) => void;
  /**
   * A stream that ends cleanly: `resume` (default) opens the next one at
   * once, as after a server-side timeout; `fail` backs off as after an error
   * (for servers that never end a watch on purpose).
   */
  readonly onEnd?: "resume" | "fail";
  /** Ends the watch quietly. */
  readonly signal: AbortSignal;
  readonly clock?: Clock;
  readonly random?: () => number;
  /**
   * Backoff between failures in ms (defaults 200 doubling up to 10 000, as
   * `backoff`); a server that did not answer at all is retried within 1 s
   * (`retryDelay`).
   */
  readonly backoff?: { readonly base?: number; readonly max?: number };
  readonly maxLineLength?: number;
}

/**
 * A watch over newline-delimited JSON streams that resumes where it left
 * off: each failure (refused, broken, truncated, idle, or a line `step`
 * rejects) is followed by a new stream opened from the cursor, after an
 * exponential backoff that restarts whenever a stream delivers a line.
 *
 * @param options How to open a stream from a cursor and what each line
 *   means; failure handling; clock and randomness for the backoff.
 * @returns Batches of items, one per chunk that produced any (or per recovery).
 * @throws What `isFatal` accepts, unchanged.
 * @example
 * ```ts
 * const events = resumableNdjson<string, WatchEvent, WatchEvent>({
 *   from: listRevision,
 *   open: async (rv, signal) => ({ body: (await fetch(`${url}&resourceVersion=${rv}`, { signal })).body! }),
 *   step: (ev) => ({ items: [ev], cursor: ev.object.metadata.resourceVersion }),
 *   signal,
 * });
 * for await (const batch of events) apply(batch);
 * ```
 */
export async function* resumableNdjson<C, L, T>(
  options: ResumableNdjsonOptions<C, L, T>,
): AsyncGenerator<T[]> {
  const { signal } = options;
  const clock = options.clock ?? systemClock;
  let cursor = options.from;
  let attempt = 0;
  while (!signal.aborted) {
    let failure: unknown;
    let stream: NdjsonStream | undefined;
    try {
      stream = await options.open(cursor, signal);
      const what = stream.what ?? "watch stream";
      const batches = readNdjson<L>(stream.body, {
        signal,
        idleTimeoutMs: stream.idleTimeoutMs,
        clock,
        maxLineLength: options.maxLineLength,
        parse: options.parse,
        what,
      });
      let done = false;
      for await (const lines of batches) {
        attempt = 0;
        const out: T[] = [];
        try {
          for (const line of lines) {
            const step = options.step(line, cursor);
            if (step.items) out.push(...step.items);
            if (step.cursor !== undefined) cursor = step.cursor;
            if (step.done) {
              done = true;
              break;
            }
          }
        } catch (e) {
          // the lines before the bad one moved the cursor: deliver them first
          if (out.length) yield out;
          throw e;
        }
        if (out.length) yield out;
        if (done) return;
      }
      if (signal.aborted) return;
      if ((options.onEnd ?? "resume") === "resume") continue;
      failure = new NdjsonStreamError(`${what} ended`, "ended");
    } catch (e) {
      if (signal.aborted) return;
      failure = e;
    } finally {
      stream?.close?.();
    }
    if (options.recover) {
      try {
        const fresh = await options.recover(failure, cursor, signal);
        if (fresh) {
          cursor = fresh.cursor;
          if (fresh.items.length) yield [...fresh.items];
          continue;
        }
      } catch (e) {
        if (signal.aborted) return;
        failure = e;
      }
    }
    if (options.isFatal?.(failure)) throw failure;
    const delayMs = retryDelay(attempt++, failure, { ...options.backoff, random: options.random });
    options.onRetry?.(failure, { attempt, delayMs, cursor });
    if (!(await sleepQuietly(clock, delayMs, signal))) return;
  }
}
