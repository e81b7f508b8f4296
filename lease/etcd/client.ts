/**
 * A small etcd v3 client over etcd's JSON gRPC-gateway (`/v3/...`) and
 * plain `fetch`: no gRPC stack to load. Measured against the `etcd3` npm
 * package (gRPC) in `deno task bench etcd-client` (import time, RSS, put and
 * watch latency on the same etcd).
 *
 * The calls weft makes — range, put, delete, txn, lease grant / revoke /
 * time-to-live / keep-alive, compaction, watch — each in a few lines over:
 * - lease/etcd/codec.ts: the gateway's JSON (schemas, base64, int64),
 * - lease/etcd/transport.ts: endpoints, fail-over, timeouts, the auth token,
 * - lease/etcd/watch.ts: the streaming watch, resumed from the last revision.
 *
 * @module
 */

import * as v from "valibot";
import {
  b64,
  decodeKv,
  DeleteReply,
  EtcdError,
  type EtcdKeyValue,
  GrantReply,
  GrpcCode,
  HeaderReply,
  KeepAliveReply,
  prefixRangeEnd,
  RangeReply,
  type RawKeyValue,
  TtlReply,
  TxnReply,
} from "./codec.ts";
import { clip } from "../../core/quote.ts";
import { EtcdTransport, type EtcdTransportOptions } from "./transport.ts";
import { type EtcdWatchOptions, type EtcdWatchResponse, watchEtcd } from "./watch.ts";

export { EtcdError, type EtcdKeyValue, GrpcCode, prefixRangeEnd } from "./codec.ts";
export type { EtcdWatchEvent, EtcdWatchOptions, EtcdWatchResponse } from "./watch.ts";

/** Options for {@link EtcdClient}: see {@link EtcdTransportOptions}. */
export type EtcdClientOptions = EtcdTransportOptions;

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
  readonly #transport: EtcdTransport;

  /**
   * @param options Endpoints, credentials, TLS, timeout.
   * @throws {TypeError} When no endpoint is given, or an endpoint is not an
   *   http(s) URL, or only one of username/password is given.
   */
  constructor(options: EtcdClientOptions) {
    this.#transport = new EtcdTransport(options);
  }

  /** Client URLs, without trailing slashes. */
  get endpoints(): readonly string[] {
    return this.#transport.endpoints;
  }

  /** The endpoint requests go to first. */
  get currentEndpoint(): string {
    return this.#transport.currentEndpoint;
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
    const r = await this.#transport.call("/v3/kv/range", body, RangeReply, signal);
    return {
      kvs: ((r.kvs ?? []) as RawKeyValue[]).map(decodeKv),
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
    const r = await this.#transport.call("/v3/kv/put", body, HeaderReply, signal);
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
    const r = await this.#transport.call("/v3/kv/deleterange", body, DeleteReply, signal);
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
    const r = await this.#transport.call(
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
    const r = await this.#transport.call(
      "/v3/lease/grant",
      { TTL: String(ttlSeconds) },
      GrantReply,
      signal,
    );
    if (r.error) {
      throw new EtcdError(`lease grant failed: ${clip(r.error)}`, this.#transport.currentEndpoint);
    }
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
      await this.#transport.call("/v3/kv/lease/revoke", { ID: id }, v.unknown(), signal);
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
    const r = await this.#transport.call("/v3/kv/lease/timetolive", { ID: id }, TtlReply, signal);
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
    const r = await this.#transport.call(
      "/v3/lease/keepalive",
      { ID: id },
      KeepAliveReply,
      signal,
      { firstMessage: true },
    );
    const ttl = Number(r.result?.TTL ?? 0);
    if (r.error || ttl <= 0) {
      throw new EtcdError(
        `lease ${id} keep-alive failed: ${
          r.error?.message ?? "lease not found (expired or revoked)"
        }`,
        this.#transport.currentEndpoint,
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
    await this.#transport.call(
      "/v3/kv/compaction",
      { revision: String(revision), physical },
      HeaderReply,
      signal,
    );
  }

  /**
   * Watch a key, or every key with a prefix, from `startRevision` on. Yields
   * etcd's messages as they arrive (each stream's first is `created`). A
   * broken, ended or silent stream (`idleTimeoutMs`) is resumed from the
   * revision after the last one delivered, with backoff; `onResume` hears of
   * each. When the start revision has been compacted it yields one message
   * with `compactRevision` and ends.
   *
   * @param key Key or prefix.
   * @param options `prefix`; `startRevision` (default: now); `progressNotify`
   *   asks etcd for empty messages with the current revision when idle (every
   *   10 min by default); `idleTimeoutMs` resumes a stream that delivered
   *   nothing for that long (default 0 = never); `onResume`.
   * @param signal Ends the watch (the iterator then returns); so does {@link close}.
   * @throws {EtcdError} When etcd refuses the watch, cancels it for another
   *   reason than compaction, or sends an error: resuming would not help.
   */
  watch(
    key: string,
    options: EtcdWatchOptions = {},
    signal?: AbortSignal,
  ): AsyncGenerator<EtcdWatchResponse> {
    return watchEtcd(this.#transport, key, options, signal);
  }

  /** Stop in-flight requests and watches; later calls fail. */
  close(): Promise<void> {
    this.#transport.close();
    return Promise.resolve();
  }
}
