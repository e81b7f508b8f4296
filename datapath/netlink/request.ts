/**
 * What every rtnetlink message family shares: a request before the socket
 * adds its header ({@link NlRequest}), batch encoders that write many
 * requests straight into one send buffer ({@link BatchEncoder}), and the
 * address families.
 *
 * @module
 */

import { NlWriter } from "./codec.ts";

/** Address family `AF_UNSPEC`. */
export const AF_UNSPEC = 0;
/** Address family `AF_INET`. */
export const AF_INET = 2;
/** Address family `AF_BRIDGE`. */
export const AF_BRIDGE = 7;
/** Address family `AF_INET6`. */
export const AF_INET6 = 10;

/** The address family of an address: `AF_INET6` for a bigint, else `AF_INET`. */
export function familyOf(ip: number | bigint): number {
  return typeof ip === "bigint" ? AF_INET6 : AF_INET;
}

/**
 * One request, before the socket adds the header: message type, `NLM_F_*`
 * flags other than REQUEST/ACK, the body, and a description for errors
 * (built only when needed: batches hold thousands of requests).
 */
export interface NlRequest {
  readonly type: number;
  readonly flags: number;
  readonly body: Uint8Array;
  describe(): string;
}

/**
 * One kind of request over many items, for batches: appends the whole
 * message for an item straight into the send buffer, and describes an item
 * for error messages only when one fails.
 */
export interface BatchEncoder<T> {
  /** Append the message for `item` with sequence number `seq` (and NLM_F_REQUEST). */
  encode(w: NlWriter, item: T, seq: number): void;
  /** What the request for `item` asks, e.g. `RTM_NEWROUTE replace 10.5.2.0/24 …`. */
  describe(item: T): string;
}

/** One message kind: its type and flags, how to write its body, how to describe it. */
export interface Kind<T> {
  readonly type: number;
  readonly flags: number;
  body(w: NlWriter, item: T): void;
  describe(item: T): string;
}

const NLM_F_REQUEST = 0x1;

/** The batch encoder of a message kind. */
export function batchEncoder<T>(k: Kind<T>): BatchEncoder<T> {
  return {
    encode: (w, item, seq) => {
      const at = w.begin(k.type, k.flags | NLM_F_REQUEST, seq);
      k.body(w, item);
      w.end(at);
    },
    describe: k.describe,
  };
}

/** One scratch writer for single requests: they are encoded synchronously, so sharing it is safe. */
export const scratch: NlWriter = new NlWriter(1024);

/** One request of a message kind. */
export function request<T>(k: Kind<T>, item: T): NlRequest {
  k.body(scratch, item);
  return { type: k.type, flags: k.flags, body: scratch.finish(), describe: () => k.describe(item) };
}

/** Encoder for pre-built requests (of any type), for {@link NlRequest} batches. */
export const requestEncoder: BatchEncoder<NlRequest> = {
  encode: (w, r, seq) => w.message(r.type, r.flags | NLM_F_REQUEST, seq, () => w.raw(r.body)),
  describe: (r) => r.describe(),
};
