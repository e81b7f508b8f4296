/**
 * A small etcd v3 client over etcd's JSON gRPC-gateway (`/v3/...`) and
 * plain `fetch`: no gRPC stack to load (the `etcd3` npm package costs ~86 MB
 * RSS and ~250 ms import under Deno; this costs ~50 MB, measured).
 *
 * Gateway conventions it hides: keys and values travel base64-encoded,
 * int64 fields are JSON strings (lease IDs exceed 2^53, so they stay strings
 * here; revisions and TTLs become numbers), fields with default values are
 * omitted (a PUT event has no `type`, `succeeded` is absent when false, an
 * empty range has no `kvs`), and a prefix is a `[key, range_end)` range.
 *
 * Several endpoints: each request goes to the endpoint that last answered
 * and fails over to the next on connection errors, timeouts and
 * "unavailable" answers. User/password: a token from `/v3/auth/authenticate`
 * rides in the `Authorization` header and is renewed when etcd says it is
 * invalid (simple tokens expire after `--auth-token-ttl`, 5 min by default).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import * as v from "valibot";
import type { Logger } from "../../core/log.ts";
import { nullLogger } from "../../core/log.ts";
import { createFetch, type TlsClientOptions } from "../../core/runtime.ts";
import { type Clock, systemClock } from "../../core/clock.ts";
import { StoreUnavailableError } from "../../core/errors.ts";
import { sleepQuietly } from "../../core/abort.ts";

/** gRPC status codes etcd answers with that callers may act on. */
export const GrpcCode = {
  InvalidArgument: 3,
  NotFound: 5,
  FailedPrecondition: 9,
  OutOfRange: 11,
  Unavailable: 14,
  Unauthenticated: 16,
} as const;

/**
 * etcd could not be reached, or answered with an error. `code` is the gRPC
 * status code when etcd sent one (e.g. 5 = lease not found, 11 = revision
 * compacted); `endpoint` is the endpoint that failed (the last one tried).
 */
export class EtcdError extends StoreUnavailableError {
  override name = "EtcdError";
  constructor(
    message: string,
    readonly endpoint: string,
    readonly code?: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Options for {@link EtcdClient}. */
export interface EtcdClientOptions {
  /** Client URLs, e.g. `["https://10.0.0.1:2379", "https://10.0.0.2:2379"]`. */
  readonly endpoints: readonly string[];
  /** User for etcd auth (with `password`). */
  readonly username?: string;
  readonly password?: string;
  /** CA and client certificate as PEM text (for `https://` endpoints). */
  readonly tls?: TlsClientOptions;
  /** Per-request timeout in ms (default 5000). Watches time out only while connecting. */
  readonly requestTimeoutMs?: number;
  /** A fetch to use instead of one built from `tls` (tests). */
  readonly fetch?: typeof fetch;
  readonly logger?: Logger;
  /** Times requests out (default: the real clock). */
  readonly clock?: Clock;
}

/** One key as etcd stores it; key and value decoded as UTF-8 text. */
export interface EtcdKeyValue {
  readonly key: string;
  readonly value: string;
  readonly createRevision: number;
  readonly modRevision: number;
  readonly version: number;
  /** The etcd lease the key is bound to (decimal string), absent when none. */
  readonly lease?: string;
}

/** A change delivered by {@link EtcdClient.watch}. */
export interface EtcdWatchEvent {
  readonly type: "put" | "delete";
  /** For a delete only `key` and `modRevision` are meaningful. */
  readonly kv: EtcdKeyValue;
}

/** One message of a watch stream. */
export interface EtcdWatchResponse {
  /** The store revision when etcd sent this message. */
  readonly revision: number;
  readonly events: EtcdWatchEvent[];
  /** The watch was just set up (first message). */
  readonly created: boolean;
  /** Set when the start revision was compacted away: the watch is over, re-list. */
  readonly compactRevision?: number;
}

/** Options for {@link EtcdClient.range}. */
export interface RangeOptions {
  /** Every key starting with `key`. */
  readonly prefix?: boolean;
  /** Read at this past revision instead of the latest. */
  readonly revision?: number;
  readonly limit?: number;
  readonly keysOnly?: boolean;
}

/** A compare of a txn; `value` is compared against the key's field. */
export type EtcdCompare =
  | {
    readonly key: string;
    readonly target: "VERSION" | "CREATE" | "MOD";
    readonly result: "EQUAL" | "GREATER" | "LESS" | "NOT_EQUAL";
    readonly value: number;
  }
  | {
    readonly key: string;
    readonly target: "VALUE";
    readonly result: "EQUAL" | "GREATER" | "LESS" | "NOT_EQUAL";
    readonly value: string;
  };

/** An operation of a txn branch. */
export type EtcdOp =
  | { readonly put: { readonly key: string; readonly value: string; readonly lease?: string } }
  | { readonly delete: { readonly key: string; readonly prefix?: boolean } };

const Int64 = v.pipe(v.string(), v.regex(/^-?\d+$/));
const Header = v.object({ revision: v.optional(Int64) });
const KeyValue = v.object({
  key: v.string(),
  value: v.optional(v.string()),
  create_revision: v.optional(Int64),
  mod_revision: v.optional(Int64),
  version: v.optional(Int64),
  lease: v.optional(Int64),
});
/**
 * A range reply's key-values are checked by {@link isKeyValue} instead of a
 * valibot array schema: the same rules (the KeyValue schema's), a tenth of
 * the cost for 5000 keys.
 */
const RangeReply = v.object({
  header: Header,
  kvs: v.optional(
    v.pipe(
      v.array(v.unknown()),
      v.check((a) => a.every(isKeyValue), (issue) => describeBadKv(issue.input as unknown[])),
    ),
  ),
  count: v.optional(Int64),
  more: v.optional(v.boolean()),
});
const HeaderReply = v.object({ header: Header });
const TxnReply = v.object({ header: Header, succeeded: v.optional(v.boolean()) });
const DeleteReply = v.object({ header: Header, deleted: v.optional(Int64) });
const GrantReply = v.object({
  header: Header,
  ID: Int64,
  TTL: Int64,
  error: v.optional(v.string()),
});
const TtlReply = v.object({ header: Header, ID: v.optional(Int64), TTL: v.optional(Int64) });
const AuthReply = v.object({ token: v.optional(v.string()) });
const ErrorReply = v.object({
  error: v.optional(v.string()),
  message: v.optional(v.string()),
  code: v.optional(v.number()),
});
const WatchResult = v.object({
  header: v.optional(Header),
  created: v.optional(v.boolean()),
  canceled: v.optional(v.boolean()),
  compact_revision: v.optional(Int64),
  cancel_reason: v.optional(v.string()),
  events: v.optional(v.array(v.object({ type: v.optional(v.string()), kv: KeyValue }))),
});
const StreamMessage = v.object({ result: v.optional(WatchResult), error: v.optional(ErrorReply) });

/** base64 of a UTF-8 string. */
function b64(text: string): string {
  return Buffer.from(text, "utf8").toString("base64");
}

const utf8 = new TextDecoder();

/**
 * Text of a base64 string (lenient UTF-8: bad bytes become U+FFFD). Keys and
 * values are nearly always ASCII, which `atob` decodes directly; this runs
 * 10 000 times per list of 5000 leases, so it matters.
 */
function unb64(data: string | undefined): string {
  if (!data) return "";
  let bin: string;
  try {
    bin = atob(data);
  } catch {
    return Buffer.from(data, "base64").toString("utf8");
  }
  for (let i = 0; i < bin.length; i++) {
    if (bin.charCodeAt(i) > 0x7f) {
      const bytes = new Uint8Array(bin.length);
      for (let j = 0; j < bin.length; j++) bytes[j] = bin.charCodeAt(j);
      return utf8.decode(bytes);
    }
  }
  return bin;
}

/**
 * The exclusive end of the key range holding every key that starts with
 * `prefix`, base64-encoded: the prefix with its last byte below 0xff
 * incremented (trailing 0xff bytes dropped); all keys from `prefix` on when
 * every byte is 0xff.
 *
 * @param prefix Key prefix.
 * @returns `range_end` for the gateway.
 */
export function prefixRangeEnd(prefix: string): string {
  const bytes = Buffer.from(prefix, "utf8");
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i] < 0xff) {
      const end = Buffer.from(bytes.subarray(0, i + 1));
      end[i]++;
      return end.toString("base64");
    }
  }
  return Buffer.from([0]).toString("base64");
}

const INT64 = /^-?\d+$/;
const optInt64 = (x: unknown) => x === undefined || (typeof x === "string" && INT64.test(x));

/** Whether `x` matches the KeyValue schema (fast path for big range replies). */
function isKeyValue(x: unknown): x is v.InferOutput<typeof KeyValue> {
  if (typeof x !== "object" || x === null) return false;
  const o = x as Record<string, unknown>;
  return typeof o.key === "string" && (o.value === undefined || typeof o.value === "string") &&
    optInt64(o.create_revision) && optInt64(o.mod_revision) && optInt64(o.version) &&
    optInt64(o.lease);
}

/** What is wrong with the first malformed entry of a range reply. */
function describeBadKv(kvs: unknown[]): string {
  const i = kvs.findIndex((x) => !isKeyValue(x));
  const kv = kvs[i];
  if (typeof kv !== "object" || kv === null) return `entry ${i} is not an object`;
  const o = kv as Record<string, unknown>;
  if (typeof o.key !== "string") {
    return `entry ${i}: key must be a string, got ${JSON.stringify(o.key)}`;
  }
  if (o.value !== undefined && typeof o.value !== "string") {
    return `entry ${i}: value must be a string, got ${JSON.stringify(o.value)}`;
  }
  const f = ["create_revision", "mod_revision", "version", "lease"].find((k) => !optInt64(o[k]));
  return `entry ${i}: ${f} must be an int64 string, got ${JSON.stringify(o[f!])}`;
}

function decodeKv(kv: v.InferOutput<typeof KeyValue>): EtcdKeyValue {
  const lease = kv.lease && kv.lease !== "0" ? kv.lease : undefined;
  return {
    key: unb64(kv.key),
    value: unb64(kv.value),
    createRevision: Number(kv.create_revision ?? 0),
    modRevision: Number(kv.mod_revision ?? 0),
    version: Number(kv.version ?? 0),
    ...(lease ? { lease } : {}),
  };
}

function isAbort(e: unknown): boolean {
  return e instanceof DOMException && (e.name === "AbortError" || e.name === "TimeoutError");
}

/** A failure that another endpoint may not have: try the next one. */
class TransportError extends Error {
  constructor(message: string, readonly code?: number, options?: ErrorOptions) {
    super(message, options);
  }
}

/**
 * An etcd v3 client over the JSON gateway.
 *
 * @example
 * ```ts
 * const etcd = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
 * await etcd.put("/coreos.com/network/config", '{"Network":"10.5.0.0/16"}');
 * const { kvs, revision } = await etcd.range("/coreos.com/network/", { prefix: true });
 * ```
 */
export class EtcdClient {
  readonly endpoints: readonly string[];
  #fetch: typeof fetch;
  #timeoutMs: number;
  #log: Logger;
  #clock: Clock;
  #username?: string;
  #password?: string;
  #token?: Promise<string>;
  #current = 0;
  #closed = new AbortController();

  /**
   * @param options Endpoints, credentials, TLS, timeout.
   * @throws {TypeError} When no endpoint is given, or an endpoint is not an
   *   http(s) URL, or only one of username/password is given.
   */
  constructor(options: EtcdClientOptions) {
    if (options.endpoints.length === 0) {
      throw new TypeError("Cannot create an etcd client: no endpoints given (--etcd-endpoints)");
    }
    this.endpoints = options.endpoints.map((e) => {
      let url: URL;
      try {
        url = new URL(e);
      } catch {
        throw new TypeError(
          `Cannot use etcd endpoint ${
            JSON.stringify(e)
          }: not a URL; write it like http://127.0.0.1:2379`,
        );
      }
      if (url.protocol !== "http:" && url.protocol !== "https:") {
        throw new TypeError(
          `Cannot use etcd endpoint ${JSON.stringify(e)}: scheme must be http or https`,
        );
      }
      return e.replace(/\/+$/, "");
    });
    if (!!options.username !== !!options.password) {
      throw new TypeError(
        "Cannot authenticate to etcd: give both --etcd-username and --etcd-password, or neither",
      );
    }
    this.#username = options.username;
    this.#password = options.password;
    this.#fetch = options.fetch ?? createFetch(options.tls);
    this.#timeoutMs = options.requestTimeoutMs ?? 5000;
    this.#log = options.logger ?? nullLogger;
    this.#clock = options.clock ?? systemClock;
  }

  /** The endpoint requests go to first. */
  get currentEndpoint(): string {
    return this.endpoints[this.#current];
  }

  /**
   * Read one key, or every key with a prefix.
   *
   * @param key The key (or prefix).
   * @param options `prefix`, `revision`, `limit`, `keysOnly`.
   * @param signal Cancels the request.
   * @returns The keys, how many matched, and the revision read at.
   * @throws {EtcdError} When no endpoint answers, or etcd refuses (e.g. code
   *   11 when `revision` was compacted).
   */
  async range(
    key: string,
    options: RangeOptions = {},
    signal?: AbortSignal,
  ): Promise<{ kvs: EtcdKeyValue[]; count: number; more: boolean; revision: number }> {
    const body: Record<string, unknown> = { key: b64(key) };
    if (options.prefix) body.range_end = prefixRangeEnd(key);
    if (options.revision) body.revision = String(options.revision);
    if (options.limit) body.limit = String(options.limit);
    if (options.keysOnly) body.keys_only = true;
    const r = await this.#call("/v3/kv/range", body, RangeReply, signal);
    return {
      kvs: ((r.kvs ?? []) as v.InferOutput<typeof KeyValue>[]).map(decodeKv),
      count: Number(r.count ?? 0),
      more: r.more ?? false,
      revision: Number(r.header.revision ?? 0),
    };
  }

  /**
   * Write a key.
   *
   * @param key The key.
   * @param value Its text.
   * @param lease Bind the key to this etcd lease (from {@link leaseGrant}).
   * @param signal Cancels the request.
   * @returns The revision of the write.
   * @throws {EtcdError} When no endpoint answers; code 5 when the lease does not exist.
   */
  async put(key: string, value: string, lease?: string, signal?: AbortSignal): Promise<number> {
    const body: Record<string, unknown> = { key: b64(key), value: b64(value) };
    if (lease) body.lease = lease;
    const r = await this.#call("/v3/kv/put", body, HeaderReply, signal);
    return Number(r.header.revision ?? 0);
  }

  /**
   * Delete a key, or every key with a prefix.
   *
   * @returns How many keys were deleted and the revision.
   * @throws {EtcdError} When no endpoint answers.
   */
  async delete(
    key: string,
    options: { prefix?: boolean } = {},
    signal?: AbortSignal,
  ): Promise<{ deleted: number; revision: number }> {
    const body: Record<string, unknown> = { key: b64(key) };
    if (options.prefix) body.range_end = prefixRangeEnd(key);
    const r = await this.#call("/v3/kv/deleterange", body, DeleteReply, signal);
    return { deleted: Number(r.deleted ?? 0), revision: Number(r.header.revision ?? 0) };
  }

  /**
   * A transaction: if every compare holds, run `success`, else `failure`.
   *
   * @returns Whether the compares held, and the revision after the txn.
   * @throws {EtcdError} When no endpoint answers or etcd rejects the txn.
   * @example
   * ```ts
   * // create only if absent
   * await etcd.txn({
   *   compare: [{ key: "/k", target: "VERSION", result: "EQUAL", value: 0 }],
   *   success: [{ put: { key: "/k", value: "v" } }],
   * });
   * ```
   */
  async txn(
    request: { compare: EtcdCompare[]; success?: EtcdOp[]; failure?: EtcdOp[] },
    signal?: AbortSignal,
  ): Promise<{ succeeded: boolean; revision: number }> {
    const op = (o: EtcdOp) => {
      if ("put" in o) {
        return {
          request_put: {
            key: b64(o.put.key),
            value: b64(o.put.value),
            ...(o.put.lease ? { lease: o.put.lease } : {}),
          },
        };
      }
      return {
        request_delete_range: {
          key: b64(o.delete.key),
          ...(o.delete.prefix ? { range_end: prefixRangeEnd(o.delete.key) } : {}),
        },
      };
    };
    const compare = request.compare.map((c) => {
      const field = c.target === "VALUE" ? { value: b64(c.value) } : {
        [({ VERSION: "version", CREATE: "create_revision", MOD: "mod_revision" })[c.target]]:
          String(c.value),
      };
      return { key: b64(c.key), target: c.target, result: c.result, ...field };
    });
    const r = await this.#call(
      "/v3/kv/txn",
      {
        compare,
        success: (request.success ?? []).map(op),
        failure: (request.failure ?? []).map(op),
      },
      TxnReply,
      signal,
    );
    return { succeeded: r.succeeded ?? false, revision: Number(r.header.revision ?? 0) };
  }

  /**
   * Grant a lease. etcd may raise a very short TTL to its minimum (~2 s).
   *
   * @param ttlSeconds Requested TTL.
   * @returns The lease ID (decimal string) and the TTL etcd granted.
   * @throws {EtcdError} When no endpoint answers.
   */
  async leaseGrant(ttlSeconds: number, signal?: AbortSignal): Promise<{ id: string; ttl: number }> {
    const r = await this.#call("/v3/lease/grant", { TTL: String(ttlSeconds) }, GrantReply, signal);
    if (r.error) throw new EtcdError(`lease grant failed: ${r.error}`, this.currentEndpoint);
    return { id: r.ID, ttl: Number(r.TTL) };
  }

  /**
   * Revoke a lease, deleting every key bound to it. A lease that is already
   * gone is not an error.
   *
   * @throws {EtcdError} When no endpoint answers.
   */
  async leaseRevoke(id: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.#call("/v3/kv/lease/revoke", { ID: id }, v.unknown(), signal);
    } catch (e) {
      if (e instanceof EtcdError && e.code === GrpcCode.NotFound) return;
      throw e;
    }
  }

  /**
   * Remaining TTL of a lease.
   *
   * @returns Seconds left, or -1 when the lease has expired or never existed.
   * @throws {EtcdError} When no endpoint answers.
   */
  async leaseTimeToLive(id: string, signal?: AbortSignal): Promise<number> {
    const r = await this.#call("/v3/kv/lease/timetolive", { ID: id }, TtlReply, signal);
    return Number(r.TTL ?? -1);
  }

  /**
   * Refresh a lease once (a single keep-alive), resetting its TTL to the
   * granted one.
   *
   * @returns The new TTL in seconds.
   * @throws {EtcdError} Code 5 when the lease has expired or never existed.
   */
  async leaseKeepAlive(id: string, signal?: AbortSignal): Promise<number> {
    const r = await this.#call(
      "/v3/lease/keepalive",
      { ID: id },
      v.object({ result: v.optional(TtlReply), error: v.optional(ErrorReply) }),
      signal,
      true,
    );
    const ttl = Number(r.result?.TTL ?? 0);
    if (r.error || ttl <= 0) {
      throw new EtcdError(
        `lease ${id} keep-alive failed: ${
          r.error?.message ?? "lease not found (expired or revoked)"
        }`,
        this.currentEndpoint,
        r.error?.code ?? GrpcCode.NotFound,
      );
    }
    return ttl;
  }

  /**
   * Compact the history up to `revision`: watches and reads from older
   * revisions fail afterwards.
   *
   * @param physical Wait until the compaction is applied to the backend.
   * @throws {EtcdError} When no endpoint answers, or `revision` is already
   *   compacted or in the future.
   */
  async compact(revision: number, physical = true, signal?: AbortSignal): Promise<void> {
    await this.#call(
      "/v3/kv/compaction",
      { revision: String(revision), physical },
      HeaderReply,
      signal,
    );
  }

  /**
   * Watch a key, or every key with a prefix, from `startRevision` on. Yields
   * etcd's messages as they arrive (the first is `created`). When the start
   * revision has been compacted it yields one message with
   * `compactRevision` and ends. It does not reconnect: on a dropped stream it
   * throws, and the caller resumes from the last revision it saw.
   *
   * @param key Key or prefix.
   * @param options `prefix`; `startRevision` (default: now); `progressNotify`
   *   asks etcd for empty messages with the current revision when idle (every
   *   10 min by default); `idleTimeoutMs` ends the watch with an error when
   *   nothing arrives for that long (default 0 = never).
   * @param signal Ends the watch (the iterator then returns).
   * @throws {EtcdError} When no endpoint accepts the watch, the stream breaks,
   *   or etcd cancels the watch for another reason than compaction.
   */
  async *watch(
    key: string,
    options: {
      prefix?: boolean;
      startRevision?: number;
      progressNotify?: boolean;
      idleTimeoutMs?: number;
    } = {},
    signal?: AbortSignal,
  ): AsyncGenerator<EtcdWatchResponse> {
    const create: Record<string, unknown> = { key: b64(key) };
    if (options.prefix) create.range_end = prefixRangeEnd(key);
    if (options.startRevision) create.start_revision = String(options.startRevision);
    if (options.progressNotify) create.progress_notify = true;
    const body = JSON.stringify({ create_request: create });

    for (let authRetry = 0;; authRetry++) {
      const { response, endpoint, abort } = await this.#open("/v3/watch", body, signal);
      const reader = response.body!.getReader();
      const onAbort = () => reader.cancel().catch(() => {});
      signal?.addEventListener("abort", onAbort, { once: true });
      // One watchdog for the stream's life, not a timer per message: each
      // re-armed timer cost an AbortController and a DOMException per event.
      const watchdog = new AbortController();
      let lastData = this.#clock.now();
      let idled = false;
      const idleMs = options.idleTimeoutMs ?? 0;
      if (idleMs > 0) {
        (async () => {
          for (let wait = idleMs; await sleepQuietly(this.#clock, wait, watchdog.signal);) {
            const quiet = this.#clock.now() - lastData;
            if (quiet < idleMs) {
              wait = idleMs - quiet;
              continue;
            }
            idled = true;
            await reader.cancel().catch(() => {});
            return;
          }
        })().catch(() => {});
      }
      let retryAuth = false;
      try {
        const decoder = new TextDecoder();
        let buf = "";
        for (;;) {
          let chunk: ReadableStreamReadResult<Uint8Array>;
          try {
            chunk = await reader.read();
          } catch (e) {
            if (signal?.aborted) return;
            throw new EtcdError(
              `etcd watch stream from ${endpoint} broke: ${e}`,
              endpoint,
              undefined,
              {
                cause: e,
              },
            );
          }
          if (signal?.aborted) return;
          if (idled) {
            throw new EtcdError(
              `etcd watch on ${endpoint} got nothing for ${options.idleTimeoutMs} ms, reconnecting`,
              endpoint,
            );
          }
          if (chunk.done) {
            throw new EtcdError(`etcd watch stream from ${endpoint} ended`, endpoint);
          }
          lastData = this.#clock.now();
          buf += decoder.decode(chunk.value, { stream: true });
          let nl: number;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (!line) continue;
            const msg = this.#parse(line, StreamMessage, endpoint, "/v3/watch");
            if (msg.error) {
              throw new EtcdError(
                `etcd watch on ${endpoint} failed: ${msg.error.message ?? msg.error.error}`,
                endpoint,
                msg.error.code,
              );
            }
            const res = msg.result;
            if (!res) continue;
            const revision = Number(res.header?.revision ?? 0);
            if (res.canceled) {
              if (res.compact_revision && res.compact_revision !== "0") {
                yield {
                  revision,
                  events: [],
                  created: false,
                  compactRevision: Number(res.compact_revision),
                };
                return;
              }
              const reason = res.cancel_reason ?? "no reason given";
              if (/invalid auth token/.test(reason) && this.#username && authRetry === 0) {
                this.#token = undefined;
                retryAuth = true;
                break;
              }
              throw new EtcdError(
                `etcd canceled the watch on ${key} at ${endpoint}: ${reason}`,
                endpoint,
                /Unauthenticated|invalid auth token/.test(reason)
                  ? GrpcCode.Unauthenticated
                  : /PermissionDenied|permission denied/.test(reason)
                  ? 7
                  : undefined,
              );
            }
            yield {
              revision,
              created: res.created ?? false,
              events: (res.events ?? []).map((e) => ({
                type: e.type === "DELETE" ? "delete" : "put",
                kv: decodeKv(e.kv),
              })),
            };
          }
          if (retryAuth) break;
        }
      } finally {
        watchdog.abort();
        signal?.removeEventListener("abort", onAbort);
        await reader.cancel().catch(() => {});
        abort();
      }
      if (!retryAuth) return;
    }
  }

  /** Stop in-flight requests; later calls fail. */
  close(): Promise<void> {
    this.#closed.abort(new EtcdError("etcd client closed", this.currentEndpoint));
    return Promise.resolve();
  }

  #parse<T extends v.GenericSchema>(
    text: string,
    schema: T,
    endpoint: string,
    path: string,
  ): v.InferOutput<T> {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      if (text.includes("CommonName of client")) {
        throw new EtcdError(
          `etcd at ${endpoint} refused ${path}: with auth enabled its JSON gateway rejects ` +
            `client certificates that carry a Common Name; give weft a client certificate ` +
            `without CN (e.g. subject /O=weft) and authenticate with --etcd-username/--etcd-password`,
          endpoint,
          GrpcCode.InvalidArgument,
        );
      }
      throw new EtcdError(
        `etcd at ${endpoint} answered ${path} with something that is not JSON: ${
          JSON.stringify(text.slice(0, 120))
        }; is this an etcd v3 client URL?`,
        endpoint,
        undefined,
        { cause: e },
      );
    }
    const parsed = v.safeParse(schema, json);
    if (!parsed.success) {
      const issue = parsed.issues[0];
      throw new EtcdError(
        `etcd at ${endpoint} answered ${path} unexpectedly (${
          issue.path?.map((p) => p.key).join(".") ?? ""
        }: ${issue.message}): ${JSON.stringify(text.slice(0, 120))}`,
        endpoint,
      );
    }
    return parsed.output;
  }

  async #authToken(endpoint: string, signal: AbortSignal): Promise<string | undefined> {
    if (!this.#username) return undefined;
    if (!this.#token) {
      // shared by every request waiting for a token: one caller's abort must
      // not fail the others, so it has its own timeout
      const p = (async () => {
        const ctl = new AbortController();
        const timer = new AbortController();
        this.#clock.sleep(this.#timeoutMs, timer.signal).then(
          () => ctl.abort(new DOMException("timed out", "TimeoutError")),
          () => {},
        );
        const stop = () => ctl.abort(this.#closed.signal.reason);
        this.#closed.signal.addEventListener("abort", stop, { once: true });
        let res: Response;
        let text: string;
        try {
          res = await this.#fetch(`${endpoint}/v3/auth/authenticate`, {
            method: "POST",
            body: JSON.stringify({ name: this.#username, password: this.#password }),
            signal: ctl.signal,
          });
          text = await res.text();
        } finally {
          timer.abort();
          this.#closed.signal.removeEventListener("abort", stop);
        }
        if (!res.ok) {
          const err = this.#parse(text, ErrorReply, endpoint, "/v3/auth/authenticate");
          if (res.status >= 500 || err.code === GrpcCode.Unavailable) {
            throw new TransportError(err.message ?? text, err.code);
          }
          throw new EtcdError(
            `etcd at ${endpoint} refused user ${JSON.stringify(this.#username)}: ${
              err.message ?? text
            }; check --etcd-username and --etcd-password`,
            endpoint,
            err.code,
          );
        }
        const token = this.#parse(text, AuthReply, endpoint, "/v3/auth/authenticate").token;
        if (!token) {
          throw new EtcdError(
            `etcd at ${endpoint} gave no auth token: is auth enabled there (etcdctl auth enable)?`,
            endpoint,
          );
        }
        this.#log.debug("authenticated to etcd", { endpoint, user: this.#username });
        return token;
      })();
      this.#token = p;
      p.catch(() => {
        if (this.#token === p) this.#token = undefined;
      });
    }
    const token = this.#token;
    if (signal.aborted) throw signal.reason;
    let onAbort = () => {};
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
    });
    try {
      return await Promise.race([token, aborted]);
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Send a POST to each endpoint in turn (starting with the current one)
   * until one answers; return the response once its headers are in.
   */
  async #open(
    path: string,
    body: string,
    signal: AbortSignal | undefined,
    requestTimeout = false,
  ): Promise<{ response: Response; endpoint: string; abort: () => void; clear: () => void }> {
    const failures: string[] = [];
    const n = this.endpoints.length;
    for (let i = 0; i < n; i++) {
      const idx = (this.#current + i) % n;
      const endpoint = this.endpoints[idx];
      const ctl = new AbortController();
      const timer = new AbortController();
      this.#clock.sleep(this.#timeoutMs, timer.signal).then(
        () => ctl.abort(new DOMException("timed out", "TimeoutError")),
        () => {},
      );
      const clear = () => timer.abort();
      const stop = () => ctl.abort(signal?.reason ?? this.#closed.signal.reason);
      signal?.addEventListener("abort", stop, { once: true });
      this.#closed.signal.addEventListener("abort", stop, { once: true });
      const abort = () => {
        clear();
        signal?.removeEventListener("abort", stop);
        this.#closed.signal.removeEventListener("abort", stop);
        ctl.abort();
      };
      try {
        if (signal?.aborted) throw signal.reason;
        if (this.#closed.signal.aborted) throw this.#closed.signal.reason;
        const token = await this.#authToken(endpoint, ctl.signal);
        ctl.signal.throwIfAborted();
        const headers: Record<string, string> = { "content-type": "application/json" };
        if (token) headers.authorization = token;
        const response = await this.#fetch(`${endpoint}${path}`, {
          method: "POST",
          body,
          headers,
          signal: ctl.signal,
        });
        if (response.status >= 500 && response.status !== 501) {
          const text = await response.text().catch(() => "");
          throw new TransportError(`HTTP ${response.status} ${text.slice(0, 200)}`.trim());
        }
        if (!requestTimeout) clear();
        if (i > 0) {
          this.#log.warn("etcd endpoint failed over", {
            from: this.endpoints[this.#current],
            to: endpoint,
            errors: failures.join("; "),
          });
        }
        this.#current = idx;
        return { response, endpoint, abort, clear };
      } catch (e) {
        abort();
        if (signal?.aborted) throw signal.reason;
        if (this.#closed.signal.aborted) throw this.#closed.signal.reason;
        if (e instanceof EtcdError) throw e;
        const why = isAbort(e)
          ? `no answer within ${this.#timeoutMs} ms`
          : e instanceof TransportError
          ? e.message
          : (e as Error)?.message ?? String(e);
        failures.push(`${endpoint}: ${why}`);
      }
    }
    throw new EtcdError(
      `etcd unreachable: ${path} failed on every endpoint (${failures.join("; ")}); ` +
        `check that etcd runs and --etcd-endpoints (and TLS files) are right`,
      this.endpoints[(this.#current + n - 1) % n],
    );
  }

  /** One unary call with failover, re-authentication and validation. */
  async #call<T extends v.GenericSchema>(
    path: string,
    body: unknown,
    schema: T,
    signal?: AbortSignal,
    streamed = false,
  ): Promise<v.InferOutput<T>> {
    const payload = JSON.stringify(body);
    for (let attempt = 0;; attempt++) {
      const { response, endpoint, abort } = await this.#open(path, payload, signal, true);
      let text: string;
      try {
        if (streamed) {
          // a streaming RPC: the first message is the answer; the stream stays open
          const reader = response.body!.getReader();
          const decoder = new TextDecoder();
          text = "";
          while (!text.includes("\n")) {
            const c = await reader.read();
            if (c.done) break;
            text += decoder.decode(c.value, { stream: true });
          }
          await reader.cancel().catch(() => {});
          text = text.split("\n")[0];
        } else {
          text = await response.text();
        }
      } catch (e) {
        abort();
        if (signal?.aborted) throw signal.reason;
        if (attempt < this.endpoints.length) {
          this.#current = (this.#current + 1) % this.endpoints.length;
          continue;
        }
        throw new EtcdError(
          `etcd at ${endpoint}: reading the answer to ${path} failed: ${
            isAbort(e) ? "timed out" : e
          }`,
          endpoint,
          undefined,
          { cause: e },
        );
      }
      abort();
      if (!response.ok) {
        const err = this.#parse(text, ErrorReply, endpoint, path);
        const message = err.message ?? err.error ?? text;
        if (err.code === GrpcCode.Unauthenticated && this.#username && attempt === 0) {
          this.#log.info("etcd auth token expired, authenticating again", { endpoint });
          this.#token = undefined;
          continue;
        }
        throw new EtcdError(
          `etcd at ${endpoint} refused ${path}: ${message}${
            /user name is empty/.test(message)
              ? " (etcd has auth enabled: give --etcd-username and --etcd-password)"
              : ""
          }`,
          endpoint,
          err.code,
        );
      }
      return this.#parse(text, schema, endpoint, path);
    }
  }
}
