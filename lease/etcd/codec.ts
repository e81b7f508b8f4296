/**
 * The wire format of etcd's JSON gRPC-gateway (`/v3/...`), in one place:
 * the valibot schemas of its replies, base64 keys and values, int64 fields,
 * and the error it raises.
 *
 * Gateway conventions handled here: keys and values travel base64-encoded;
 * int64 fields are JSON strings (lease IDs exceed 2^53, so they stay strings;
 * revisions and TTLs become numbers); fields with default values are omitted
 * (a PUT event has no `type`, `succeeded` is absent when false, an empty
 * range has no `kvs`, an empty value no `value`); a prefix is the range
 * `[key, range_end)`.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import * as v from "valibot";
import { StoreUnavailableError, type StoreUnavailableOptions } from "../../core/errors.ts";
import { clip, quote } from "../../core/quote.ts";

/** gRPC status codes etcd answers with that callers may act on. */
export const GrpcCode = {
  InvalidArgument: 3,
  NotFound: 5,
  PermissionDenied: 7,
  FailedPrecondition: 9,
  OutOfRange: 11,
  Unavailable: 14,
  Unauthenticated: 16,
} as const;

/**
 * etcd could not be reached, or answered with an error. `code` is the gRPC
 * status code when etcd sent one (e.g. 5 = lease not found, 11 = revision
 * compacted); `endpoint` is the endpoint that failed (the last one tried);
 * `unreachable` when no endpoint answered at all.
 */
export class EtcdError extends StoreUnavailableError {
  override name = "EtcdError";
  constructor(
    message: string,
    readonly endpoint: string,
    readonly code?: number,
    options?: StoreUnavailableOptions,
  ) {
    super(message, options);
  }
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

const INT64 = /^-?\d{1,19}$/;
const INT64_MAX = 2n ** 63n - 1n;
/** An int64 in decimal: at most 19 digits and inside int64's range (no Infinity from 1000 nines). */
const isInt64 = (s: string) =>
  INT64.test(s) && (s.length < 19 || (BigInt(s) <= INT64_MAX && BigInt(s) >= -INT64_MAX - 1n));
const Int64 = v.pipe(
  v.string("must be an int64 string"),
  v.check(isInt64, "must be an int64 string"),
);
const Header = v.object({ revision: v.optional(Int64) });

/**
 * etcd's `mvccpb.KeyValue` as the gateway writes it. The one definition:
 * {@link isKeyValue} (the fast check of big range replies) is derived from
 * its entries, and its messages word what is wrong.
 */
export const KeyValue = v.object({
  key: v.string("must be a string"),
  value: v.optional(v.string("must be a string")),
  create_revision: v.optional(Int64),
  mod_revision: v.optional(Int64),
  version: v.optional(Int64),
  lease: v.optional(Int64),
});

/** A key-value as the gateway sends it (before {@link decodeKv}). */
export type RawKeyValue = v.InferOutput<typeof KeyValue>;

/**
 * A predicate equal to a flat object schema of strings and int64 strings
 * (each optional or not), without valibot's per-field issue bookkeeping: a
 * tenth of the cost for the 5000 keys of a big range reply.
 */
function flatChecker(schema: v.ObjectSchema<v.ObjectEntries, undefined>): (x: unknown) => boolean {
  type Node = { type: string; wrapped?: Node };
  const fields = Object.entries(schema.entries).map(([name, s]) => {
    const node = s as unknown as Node;
    const optional = node.type === "optional";
    const inner = optional ? node.wrapped! : node;
    const int64 = (inner as unknown) === Int64;
    if (!int64 && inner.type !== "string") {
      throw new TypeError(
        `Cannot derive a fast check for field ${name}: it is a ${inner.type}; only strings and int64 strings are supported`,
      );
    }
    return { name, optional, int64 };
  });
  return (x) => {
    if (typeof x !== "object" || x === null) return false;
    const o = x as Record<string, unknown>;
    for (const f of fields) {
      const value = o[f.name];
      if (value === undefined) {
        if (f.optional) continue;
        return false;
      }
      if (typeof value !== "string" || (f.int64 && !isInt64(value))) return false;
    }
    return true;
  };
}

/** Whether `x` matches {@link KeyValue}. */
export const isKeyValue = flatChecker(KeyValue) as (x: unknown) => x is RawKeyValue;

/** What is wrong with the first malformed entry of a range reply, in {@link KeyValue}'s words. */
function describeBadKv(kvs: unknown[]): string {
  const i = kvs.findIndex((x) => !isKeyValue(x));
  const parsed = v.safeParse(KeyValue, kvs[i]);
  if (parsed.success) return `entry ${i} is malformed`;
  const issue = parsed.issues[0];
  const field = issue.path?.map((p) => p.key).join(".");
  if (!field) return `entry ${i} is not an object`;
  return `entry ${i}: ${clip(field, 100)} ${clip(issue.message)}, got ${quote(issue.input)}`;
}

/** The reply of `/v3/kv/range`; key-values are checked by {@link isKeyValue}. */
export const RangeReply = v.object({
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
/** Replies that carry only the header (put, compaction). */
export const HeaderReply = v.object({ header: Header });
/** `/v3/kv/txn`: `succeeded` is absent when false. */
export const TxnReply = v.object({ header: Header, succeeded: v.optional(v.boolean()) });
/** `/v3/kv/deleterange`. */
export const DeleteReply = v.object({ header: Header, deleted: v.optional(Int64) });
/** `/v3/lease/grant`. */
export const GrantReply = v.object({
  header: Header,
  ID: Int64,
  TTL: Int64,
  error: v.optional(v.string()),
});
/** `/v3/kv/lease/timetolive` and the keep-alive's result. */
export const TtlReply = v.object({ header: Header, ID: v.optional(Int64), TTL: v.optional(Int64) });
/** `/v3/auth/authenticate`. */
export const AuthReply = v.object({ token: v.optional(v.string()) });
/** The body of an HTTP error, and an error message inside a stream. */
export const ErrorReply = v.object({
  error: v.optional(v.string()),
  message: v.optional(v.string()),
  code: v.optional(v.number()),
});
/** `/v3/lease/keepalive` (a stream; its first message is the answer). */
export const KeepAliveReply = v.object({
  result: v.optional(TtlReply),
  error: v.optional(ErrorReply),
});
const WatchResult = v.object({
  header: v.optional(Header),
  created: v.optional(v.boolean()),
  canceled: v.optional(v.boolean()),
  compact_revision: v.optional(Int64),
  cancel_reason: v.optional(v.string()),
  events: v.optional(v.array(v.object({ type: v.optional(v.string()), kv: KeyValue }))),
});
/** One message of the `/v3/watch` stream. */
export const WatchMessage = v.object({
  result: v.optional(WatchResult),
  error: v.optional(ErrorReply),
});

/**
 * base64 of a UTF-8 string.
 *
 * @param text Key or value.
 * @returns Its UTF-8 bytes, base64-encoded.
 */
export function b64(text: string): string {
  return Buffer.from(text, "utf8").toString("base64");
}

const utf8 = new TextDecoder();

/**
 * Text of a base64 string (lenient UTF-8: bad bytes become U+FFFD). Keys and
 * values are nearly always ASCII, which `atob` decodes directly; this runs
 * 10 000 times per list of 5000 leases, so it matters.
 *
 * @param data base64, or undefined (an omitted empty field).
 * @returns The text; "" for undefined.
 */
export function unb64(data: string | undefined): string {
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
 * @example
 * ```ts
 * prefixRangeEnd("/coreos.com/network/subnets/"); // base64 of "/coreos.com/network/subnets0"
 * ```
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

/**
 * A gateway key-value as text and numbers.
 *
 * @param kv As the gateway sent it (validated).
 * @returns Key and value decoded; revisions as numbers; the lease ID kept as
 *   its decimal string, absent when the key has none.
 */
export function decodeKv(kv: RawKeyValue): EtcdKeyValue {
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

/**
 * Parse and validate one reply, or explain why it is not etcd's.
 *
 * @param text The reply body (or one line of a stream).
 * @param schema What it must match.
 * @param endpoint Who answered, for messages.
 * @param path The call, e.g. `/v3/kv/range`.
 * @returns The validated reply.
 * @throws {EtcdError} When it is not JSON (naming the Common Name pitfall of
 *   etcd's gateway when that is the reason) or does not match `schema`.
 */
export function parseReply<T extends v.GenericSchema>(
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
        clip(issue.path?.map((p) => p.key).join(".") ?? "", 100)
      }: ${clip(issue.message)}): ${JSON.stringify(text.slice(0, 120))}`,
      endpoint,
    );
  }
  return parsed.output;
}
