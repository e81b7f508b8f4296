/**
 * etcd's streaming watch (`POST /v3/watch` on the JSON gateway), resumed
 * across broken streams: each stream starts at the revision after the last
 * one delivered (an event's `mod_revision`, or a progress notification's
 * header revision), so a watcher sees every change once, in order, until
 * the history it needs is compacted.
 *
 * The gateway writes one JSON message per line: the first is `created`
 * (its header revision is the store's current one, not how far events were
 * delivered), then events; `canceled` with `compact_revision` when the
 * start revision is gone; `canceled` with a reason when etcd stops the
 * watch (an expired auth token: authenticate again once and resume).
 *
 * @module
 */

import { linkedController } from "../../core/abort.ts";
import { resumableNdjson } from "../../core/ndjson_watch.ts";
import { clip } from "../../core/quote.ts";
import {
  b64,
  decodeKv,
  ErrorReply,
  EtcdError,
  type EtcdKeyValue,
  GrpcCode,
  parseReply,
  prefixRangeEnd,
  WatchMessage,
} from "./codec.ts";
import type { EtcdTransport } from "./transport.ts";
import type * as v from "valibot";

/** A change delivered by a watch. */
export interface EtcdWatchEvent {
  readonly type: "put" | "delete";
  /** For a delete only `key` and `modRevision` are meaningful. */
  readonly kv: EtcdKeyValue;
}

/** One message of a watch. */
export interface EtcdWatchResponse {
  /** The store revision when etcd sent this message. */
  readonly revision: number;
  readonly events: EtcdWatchEvent[];
  /** A stream was just set up (the first message of each stream). */
  readonly created: boolean;
  /** Set when the start revision was compacted away: the watch is over, re-list. */
  readonly compactRevision?: number;
}

/** Options of a watch. */
export interface EtcdWatchOptions {
  /** Every key starting with the key. */
  readonly prefix?: boolean;
  /** First revision to deliver (default: changes from now on). */
  readonly startRevision?: number;
  /** Ask etcd for empty messages carrying the current revision when idle (every 10 min by default). */
  readonly progressNotify?: boolean;
  /** Resume a stream that delivered nothing for this long; 0 (default) = never. */
  readonly idleTimeoutMs?: number;
  /** Told before each resume, with the failure and the backoff (for logs and metrics). */
  readonly onResume?: (
    error: unknown,
    resume: { attempt: number; delayMs: number; fromRevision: number | undefined },
  ) => void;
  /** Jitter of the backoff (default Math.random). */
  readonly random?: () => number;
}

const PATH = "/v3/watch";

/** A failure etcd decided on (a refusal or a cancel with a reason): resuming cannot help. */
const isRefusal = (e: unknown) =>
  e instanceof EtcdError && e.code !== undefined && e.code !== GrpcCode.Unavailable;

/**
 * Watch a key, or every key with a prefix, resuming after broken, silent or
 * refused streams (with backoff on the transport's clock) from the revision
 * after the last one delivered.
 *
 * @param transport Endpoints, timeouts, auth.
 * @param key The key or prefix.
 * @param options Prefix, start revision, progress notifications, idle
 *   timeout, resume hook.
 * @param signal Ends the watch (the iterator returns); so does closing the client.
 * @returns etcd's messages in order. A compacted start revision yields one
 *   message with `compactRevision`, and the watch ends.
 * @throws {EtcdError} When etcd refuses the watch or cancels it for a reason
 *   other than compaction (e.g. permission denied, a wrong password), or
 *   sends an error message: resuming would not help.
 */
export async function* watchEtcd(
  transport: EtcdTransport,
  key: string,
  options: EtcdWatchOptions = {},
  signal?: AbortSignal,
): AsyncGenerator<EtcdWatchResponse> {
  const base: Record<string, unknown> = { key: b64(key) };
  if (options.prefix) base.range_end = prefixRangeEnd(key);
  if (options.progressNotify) base.progress_notify = true;
  let endpoint = transport.currentEndpoint;
  /** Whether the token was renewed since the last good message (once only). */
  let reauthenticated = false;
  const life = linkedController({ parents: [signal, transport.closedSignal] });
  try {
    const messages = resumableNdjson<
      number | undefined,
      v.InferOutput<typeof WatchMessage>,
      EtcdWatchResponse
    >(
      {
        from: options.startRevision || undefined,
        signal: life.signal,
        clock: transport.clock,
        random: options.random,
        onEnd: "fail", // etcd never ends a watch stream on purpose
        async open(from, streamSignal) {
          // One revision early: etcd drops a delete's tombstone when it compacts at exactly
          // that revision, yet lets a watch start there without a compaction error, so a
          // watch from `from` would silently miss a delete at `from`. From `from - 1` that
          // compaction is reported (and the caller re-lists); step() drops the events
          // before `from` (delivered already).
          const start = from !== undefined && from > 1 ? from - 1 : from;
          const create = start ? { ...base, start_revision: String(start) } : base;
          const opened = await transport.open(
            PATH,
            JSON.stringify({ create_request: create }),
            streamSignal,
          );
          endpoint = opened.endpoint;
          if (!opened.response.ok) {
            const text = await opened.response.text().catch(() => "");
            opened.release();
            const err = parseReply(text, ErrorReply, endpoint, PATH);
            throw new EtcdError(
              `etcd at ${endpoint} refused ${PATH}: ${clip(err.message ?? err.error ?? text)}`,
              endpoint,
              err.code,
            );
          }
          return {
            body: opened.response.body!,
            what: `etcd watch stream from ${endpoint}`,
            idleTimeoutMs: options.idleTimeoutMs,
            close: opened.release,
          };
        },
        parse: (line) => parseReply(line, WatchMessage, endpoint, PATH),
        step(message, cursor) {
          if (message.error) {
            throw new EtcdError(
              `etcd watch on ${endpoint} failed: ${
                clip(String(message.error.message ?? message.error.error))
              }`,
              endpoint,
              message.error.code,
            );
          }
          const res = message.result;
          if (!res) return {};
          const revision = Number(res.header?.revision ?? 0);
          if (res.canceled) {
            if (res.compact_revision && res.compact_revision !== "0") {
              const compactRevision = Number(res.compact_revision);
              return {
                items: [{ revision, events: [], created: false, compactRevision }],
                done: true,
              };
            }
            const reason = clip(res.cancel_reason ?? "no reason given");
            throw new EtcdError(
              `etcd canceled the watch on ${key} at ${endpoint}: ${reason}`,
              endpoint,
              /Unauthenticated|invalid auth token/.test(reason)
                ? GrpcCode.Unauthenticated
                : /PermissionDenied|permission denied/.test(reason)
                ? GrpcCode.PermissionDenied
                : undefined,
            );
          }
          reauthenticated = false;
          const raw = res.events ?? [];
          const events: EtcdWatchEvent[] = [];
          for (const e of raw) {
            const kv = decodeKv(e.kv);
            // the revision before the cursor, asked for again by open(): delivered already
            if (cursor !== undefined && kv.modRevision < cursor) continue;
            events.push({ type: e.type === "DELETE" ? "delete" : "put", kv });
          }
          // only events delivered before: nothing new, and no progress to take from the
          // header (events after it may still be on their way)
          if (raw.length > 0 && events.length === 0) return { items: [], cursor };
          let next = cursor;
          if (events.length) {
            // a loop, not Math.max(...events): one message may carry 100 000 events;
            // and never back: an event older than the cursor must not rewind it
            let newest = cursor === undefined ? 0 : cursor - 1;
            for (const e of events) if (e.kv.modRevision > newest) newest = e.kv.modRevision;
            next = newest + 1;
          } else if (res.created) next = cursor ?? revision + 1; // watching from "now"
          else if (revision > 0) next = Math.max(cursor ?? 0, revision + 1); // progress
          return { items: [{ revision, created: res.created ?? false, events }], cursor: next };
        },
        recover(error, cursor) {
          const tokenExpired = error instanceof EtcdError &&
            error.code === GrpcCode.Unauthenticated && /invalid auth token/.test(error.message);
          if (tokenExpired && transport.authenticates && !reauthenticated) {
            reauthenticated = true;
            transport.dropToken();
            transport.logger.info("etcd auth token expired, authenticating the watch again", {
              endpoint,
            });
            return Promise.resolve({ items: [], cursor });
          }
          return Promise.resolve(undefined);
        },
        isFatal: isRefusal,
        onRetry: (error, retry) =>
          options.onResume?.(error, {
            attempt: retry.attempt,
            delayMs: retry.delayMs,
            fromRevision: retry.cursor,
          }),
      },
    );
    for await (const batch of messages) yield* batch;
  } finally {
    life.dispose();
  }
}
