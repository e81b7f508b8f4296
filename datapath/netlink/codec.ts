/**
 * Netlink wire format: message headers, attributes (TLVs), error messages and
 * errno names. Pure byte-level code with no I/O, so it is unit-tested without
 * root. Integers are in host byte order (little-endian on the machines weft
 * runs on) except where the kernel says network order (ports, addresses).
 *
 * @module
 */

import { parseMac } from "../../core/ip.ts";

/** Length of `struct nlmsghdr`. */
export const NLMSG_HDRLEN = 16;

/** Netlink control message types. */
export const NLMSG_NOOP = 1;
/** An error or an acknowledgement (error 0). */
export const NLMSG_ERROR = 2;
/** The end of a multipart (dump) reply. */
export const NLMSG_DONE = 3;
/** Data lost. */
export const NLMSG_OVERRUN = 4;

/** Request flags. */
export const NLM_F_REQUEST = 0x1;
/** Part of a multipart reply. */
export const NLM_F_MULTI = 0x2;
/** Ask for an acknowledgement. */
export const NLM_F_ACK = 0x4;
/** Echo the request back. */
export const NLM_F_ECHO = 0x8;
/** The dump was inconsistent because the data changed during it. */
export const NLM_F_DUMP_INTR = 0x10;
/** Dump everything (`NLM_F_ROOT | NLM_F_MATCH`). */
export const NLM_F_DUMP = 0x300;
/** Replace an existing object. */
export const NLM_F_REPLACE = 0x100;
/** Fail when the object exists. */
export const NLM_F_EXCL = 0x200;
/** Create the object when it does not exist. */
export const NLM_F_CREATE = 0x400;
/** Add to the end of a list. */
export const NLM_F_APPEND = 0x800;
/** In an error message: the original payload was left out. */
export const NLM_F_CAPPED = 0x100;
/** In an error message: extended-ack TLVs follow. */
export const NLM_F_ACK_TLVS = 0x200;

/** Extended-ack attribute: a human readable message from the kernel. */
export const NLMSGERR_ATTR_MSG = 1;

/** The type bits of an attribute header (the top two are flags). */
export const NLA_TYPE_MASK = 0x3fff;

/** Round up to the 4-byte netlink alignment. */
export function align4(n: number): number {
  return (n + 3) & ~3;
}

/** A decoded netlink message. */
export interface NlMessage {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  readonly pid: number;
  /** The payload after the 16-byte header (family header and attributes). */
  readonly body: Uint8Array;
}

/**
 * Encode one netlink message (header + body), padded to 4 bytes.
 *
 * @param type Message type, e.g. `RTM_NEWROUTE`.
 * @param flags `NLM_F_*` flags.
 * @param seq Sequence number.
 * @param body The payload.
 * @param pid Sender port id (0 = the kernel assigns).
 * @returns The message bytes.
 */
export function encodeMessage(
  type: number,
  flags: number,
  seq: number,
  body: Uint8Array,
  pid = 0,
): Uint8Array {
  const len = NLMSG_HDRLEN + body.length;
  const out = new Uint8Array(align4(len));
  const v = new DataView(out.buffer);
  v.setUint32(0, len, true);
  v.setUint16(4, type, true);
  v.setUint16(6, flags, true);
  v.setUint32(8, seq >>> 0, true);
  v.setUint32(12, pid >>> 0, true);
  out.set(body, NLMSG_HDRLEN);
  return out;
}

// ---- streaming writer ------------------------------------------------------

/** Byte → two lowercase hex digits. */
const HEX_BYTE: string[] = [];
for (let i = 0; i < 256; i++) HEX_BYTE.push(i.toString(16).padStart(2, "0"));
const COLON = 58;

/** A hex digit's value by character code (either case); -1 for any other code below 128. */
const HEX_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 16; i++) {
  HEX_VALUE[i.toString(16).charCodeAt(0)] = i;
  HEX_VALUE[i.toString(16).toUpperCase().charCodeAt(0)] = i;
}

/** The value of the hex digit at `mac[i]`, or -1. */
function hexAt(mac: string, i: number): number {
  const c = mac.charCodeAt(i);
  return c < 128 ? HEX_VALUE[c] : -1;
}

/**
 * Encodes a message body (family header + attributes) straight into one
 * growing buffer, without an allocation per attribute: the fast path for
 * batches of thousands of requests.
 *
 * Every byte past the written ones is zero (what was written is cleared in
 * one go when the writer starts over), so headers and padding need no
 * clearing of their own: a call less per header and attribute, which is
 * what the engines' baseline compilers (all an agent started with the
 * large-cluster settings uses) spend their time on.
 *
 * @example
 * ```ts
 * const w = new NlWriter();
 * w.put8(w.header(12), 2);      // rtmsg with family AF_INET
 * w.ipv4(1, 0x0a050200);        // RTA_DST
 * const body = w.finish();
 * ```
 */
export class NlWriter {
  #buf: Uint8Array;
  #view: DataView;
  #off = 0;

  /** @param capacity Initial buffer size in bytes. */
  constructor(capacity = 256) {
    this.#buf = new Uint8Array(capacity);
    this.#view = new DataView(this.#buf.buffer);
  }

  #ensure(n: number): void {
    if (this.#off + n <= this.#buf.length) return;
    const next = new Uint8Array(Math.max(this.#buf.length * 2, this.#off + n));
    next.set(this.#buf.subarray(0, this.#off));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }

  /** Clear what was written (keeping the tail zero) and start over. */
  #clear(): void {
    this.#buf.fill(0, 0, this.#off);
    this.#off = 0;
  }

  /** Bytes written so far. */
  get length(): number {
    return this.#off;
  }

  /**
   * Append a zeroed fixed header of `len` bytes (padded to 4).
   * @returns Its offset, for {@link put8}/{@link put16}/{@link put32}.
   */
  header(len: number): number {
    const a = align4(len);
    this.#ensure(a);
    const at = this.#off;
    this.#off += a;
    return at;
  }

  /** Write a byte at an absolute offset (inside a header). */
  put8(at: number, value: number): void {
    this.#buf[at] = value;
  }

  /** Write a host-order 16-bit integer at an absolute offset. */
  put16(at: number, value: number): void {
    this.#view.setUint16(at, value, true);
  }

  /** Write a host-order 32-bit integer (signed or unsigned) at an absolute offset. */
  put32(at: number, value: number): void {
    this.#view.setUint32(at, value >>> 0, true);
  }

  /**
   * Append one whole netlink message: a 16-byte header, what `fill`
   * writes, then the length patched in and padding to 4 bytes.
   */
  message(type: number, flags: number, seq: number, fill: (w: this) => void): this {
    const at = this.begin(type, flags, seq);
    fill(this);
    return this.end(at);
  }

  /**
   * {@link message} in two calls, for a hot loop without a closure: append
   * the header (the body follows), and return its offset for {@link end}.
   */
  begin(type: number, flags: number, seq: number): number {
    const at = this.header(NLMSG_HDRLEN);
    this.#view.setUint16(at + 4, type, true);
    this.#view.setUint16(at + 6, flags, true);
    this.#view.setUint32(at + 8, seq >>> 0, true);
    return at;
  }

  /** Finish the message {@link begin} started at `at`: its length, and padding to 4 bytes. */
  end(at: number): this {
    this.#view.setUint32(at, this.#off - at, true);
    const pad = align4(this.#off) - this.#off;
    if (pad) {
      this.#ensure(pad);
      this.#off += pad; // zero already
    }
    return this;
  }

  /** Append raw bytes (already aligned), e.g. a pre-encoded body. */
  raw(bytes: Uint8Array): this {
    this.#ensure(bytes.length);
    this.#buf.set(bytes, this.#off);
    this.#off += bytes.length;
    return this;
  }

  /** The bytes written so far, without copying (valid until the next write). */
  view(): Uint8Array {
    return this.#buf.subarray(0, this.#off);
  }

  /** Start over (keeps the buffer). */
  reset(): void {
    this.#clear();
  }

  #attr(type: number, len: number): number {
    const a = align4(4 + len);
    this.#ensure(a);
    const at = this.#off;
    this.#view.setUint16(at, 4 + len, true);
    this.#view.setUint16(at + 2, type, true);
    this.#off += a;
    return at + 4;
  }

  /** Append a one-byte attribute. */
  u8(type: number, value: number): this {
    const at = this.#attr(type, 1); // may grow the buffer: take the offset first
    this.#buf[at] = value;
    return this;
  }

  /** Append a host-order 16-bit attribute. */
  u16(type: number, value: number): this {
    const at = this.#attr(type, 2);
    this.#view.setUint16(at, value, true);
    return this;
  }

  /** Append a network-order 16-bit attribute. */
  be16(type: number, value: number): this {
    const at = this.#attr(type, 2);
    this.#view.setUint16(at, value, false);
    return this;
  }

  /** Append a host-order 32-bit attribute. */
  u32(type: number, value: number): this {
    const at = this.#attr(type, 4);
    this.#view.setUint32(at, value >>> 0, true);
    return this;
  }

  /** Append an IPv4 address (uint32) attribute in network order. */
  ipv4(type: number, ip: number): this {
    const at = this.#attr(type, 4);
    this.#view.setUint32(at, ip >>> 0, false);
    return this;
  }

  /** Append an IPv6 address (128-bit bigint) attribute in network order. */
  ipv6(type: number, ip: bigint): this {
    const at = this.#attr(type, 16);
    for (let i = 0; i < 4; i++) {
      this.#view.setUint32(at + i * 4, Number((ip >> BigInt(96 - i * 32)) & 0xffffffffn), false);
    }
    return this;
  }

  /** Append an address of either family: 4 bytes for a number, 16 for a bigint. */
  ip(type: number, ip: number | bigint): this {
    return typeof ip === "bigint" ? this.ipv6(type, ip) : this.ipv4(type, ip);
  }

  /** Append a NUL-terminated string attribute. */
  string(type: number, value: string): this {
    const s = new TextEncoder().encode(value);
    const at = this.#attr(type, s.length + 1);
    this.#buf.set(s, at);
    this.#buf[at + s.length] = 0;
    return this;
  }

  /**
   * Append a MAC address attribute.
   * @throws {SyntaxError} When `mac` is not `aa:bb:cc:dd:ee:ff`.
   */
  mac(type: number, mac: string): this {
    const at = this.#attr(type, 6);
    if (mac.length !== 17) parseMac(mac); // throws the standard message
    const b = this.#buf;
    for (let i = 0; i < 6; i++) {
      const hi = hexAt(mac, i * 3);
      const lo = hexAt(mac, i * 3 + 1);
      if (hi < 0 || lo < 0 || (i < 5 && mac.charCodeAt(i * 3 + 2) !== COLON)) parseMac(mac);
      b[at + i] = (hi << 4) | lo;
    }
    return this;
  }

  /** Append a flag (empty) attribute. */
  flag(type: number): this {
    this.#attr(type, 0);
    return this;
  }

  /** Append raw bytes as an attribute. */
  bytes(type: number, value: Uint8Array): this {
    const at = this.#attr(type, value.length);
    this.#buf.set(value, at);
    return this;
  }

  /** Append a nested attribute whose children `fill` writes. */
  nest(type: number, fill: (w: this) => void): this {
    const at = this.#off;
    this.#attr(type, 0);
    fill(this);
    const len = this.#off - at;
    if (len > 0xffff) {
      throw new RangeError(`Cannot encode netlink attribute ${type}: length ${len} exceeds 65535`);
    }
    this.#view.setUint16(at, len, true);
    return this;
  }

  /** @returns A copy of the bytes written so far; the writer starts over. */
  finish(): Uint8Array {
    const out = this.#buf.slice(0, this.#off);
    this.#clear();
    return out;
  }
}

// ---- decoding ----------------------------------------------------------------

/**
 * Split a datagram into netlink messages.
 *
 * @param buf Bytes as received (one or more messages).
 * @returns The messages; bodies are views into `buf`.
 * @throws {SyntaxError} When a header is truncated or its length is impossible.
 */
export function parseMessages(buf: Uint8Array): NlMessage[] {
  const out: NlMessage[] = [];
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let off = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const len = v.getUint32(off, true);
    if (len < NLMSG_HDRLEN || off + len > buf.length) {
      throw new SyntaxError(
        `Cannot parse netlink message at offset ${off}: length ${len} does not fit the ${buf.length}-byte datagram`,
      );
    }
    out.push({
      type: v.getUint16(off + 4, true),
      flags: v.getUint16(off + 6, true),
      seq: v.getUint32(off + 8, true),
      pid: v.getUint32(off + 12, true),
      body: buf.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  if (off < buf.length && buf.length - off >= 4) {
    throw new SyntaxError(
      `Cannot parse netlink datagram: ${buf.length - off} trailing bytes are shorter than a header`,
    );
  }
  return out;
}

/**
 * Decode attributes into a map from type (flag bits masked off) to payload.
 * When a type repeats, the last one wins; use {@link listAttrs} to keep all.
 *
 * @param bytes The attribute area.
 * @returns Type → payload view.
 * @throws {SyntaxError} When an attribute length is impossible.
 */
export function parseAttrs(bytes: Uint8Array): Map<number, Uint8Array> {
  // one pass without the pairs of listAttrs: every notification goes through here
  const m = new Map<number, Uint8Array>();
  let off = 0;
  while (off + 4 <= bytes.length) {
    const len = bytes[off] | (bytes[off + 1] << 8);
    const type = (bytes[off + 2] | (bytes[off + 3] << 8)) & NLA_TYPE_MASK;
    if (len < 4 || off + len > bytes.length) {
      throw new SyntaxError(
        `Cannot parse netlink attribute ${type} at offset ${off}: length ${len} does not fit ${bytes.length} bytes`,
      );
    }
    m.set(type, bytes.subarray(off + 4, off + len));
    off += align4(len);
  }
  return m;
}

/**
 * Decode attributes in order, keeping repeats.
 *
 * @param bytes The attribute area.
 * @returns `[type, payload]` pairs.
 * @throws {SyntaxError} When an attribute length is impossible.
 */
export function listAttrs(bytes: Uint8Array): [number, Uint8Array][] {
  const out: [number, Uint8Array][] = [];
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let off = 0;
  while (off + 4 <= bytes.length) {
    const len = v.getUint16(off, true);
    const type = v.getUint16(off + 2, true) & NLA_TYPE_MASK;
    if (len < 4 || off + len > bytes.length) {
      throw new SyntaxError(
        `Cannot parse netlink attribute ${type} at offset ${off}: length ${len} does not fit ${bytes.length} bytes`,
      );
    }
    out.push([type, bytes.subarray(off + 4, off + len)]);
    off += align4(len);
  }
  return out;
}

function view(b: Uint8Array, need: number, what: string): DataView {
  if (b.length < need) {
    throw new SyntaxError(
      `Cannot read netlink attribute as ${what}: its payload is ${b.length} bytes, need ${need}`,
    );
  }
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * Read a byte attribute payload.
 *
 * @throws {SyntaxError} When the payload is empty (so for every reader: too short).
 */
export function readU8(b: Uint8Array): number {
  if (b.length < 1) view(b, 1, "a u8");
  return b[0];
}

/** Read a host-order 16-bit payload. */
export function readU16(b: Uint8Array): number {
  return view(b, 2, "a u16").getUint16(0, true);
}

/** Read a network-order 16-bit payload. */
export function readBe16(b: Uint8Array): number {
  return view(b, 2, "a big-endian u16").getUint16(0, false);
}

/** Read a host-order 32-bit payload. */
export function readU32(b: Uint8Array): number {
  return view(b, 4, "a u32").getUint32(0, true);
}

/** Read a host-order signed 32-bit payload. */
export function readI32(b: Uint8Array): number {
  return view(b, 4, "an s32").getInt32(0, true);
}

/** Read an IPv4 address (network order) as a uint32. */
export function readIPv4(b: Uint8Array): number {
  return view(b, 4, "an IPv4 address").getUint32(0, false);
}

/** Read an IPv6 address (16 bytes, network order) as a bigint. */
export function readIPv6(b: Uint8Array): bigint {
  const v = view(b, 16, "an IPv6 address");
  let n = 0n;
  for (let i = 0; i < 4; i++) n = (n << 32n) | BigInt(v.getUint32(i * 4, false));
  return n;
}

/**
 * Read an address attribute of either family by its length: 4 bytes →
 * IPv4 (number), 16 bytes → IPv6 (bigint), anything else → null.
 */
export function readIP(b: Uint8Array): number | bigint | null {
  return b.length === 4 ? readIPv4(b) : b.length === 16 ? readIPv6(b) : null;
}

/** Read a NUL-terminated string payload. */
export function readString(b: Uint8Array): string {
  const end = b.indexOf(0);
  return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
}

/** Read a MAC address payload (first 6 bytes) as `aa:bb:cc:dd:ee:ff`. */
export function readMac(b: Uint8Array): string {
  return readMacAt(b, 0);
}

/** Read the 6 bytes at `at` as a MAC address `aa:bb:cc:dd:ee:ff`. */
export function readMacAt(b: Uint8Array, at: number): string {
  return `${HEX_BYTE[b[at]]}:${HEX_BYTE[b[at + 1]]}:${HEX_BYTE[b[at + 2]]}:${HEX_BYTE[b[at + 3]]}:${
    HEX_BYTE[b[at + 4]]
  }:${HEX_BYTE[b[at + 5]]}`;
}

/** An `NLMSG_ERROR` message, decoded. */
export interface NlErrorMessage {
  /** 0 for an acknowledgement, else a positive errno. */
  readonly errno: number;
  /** Header of the request this answers. */
  readonly request: { type: number; flags: number; seq: number; pid: number };
  /** The kernel's extended-ack text, when it sent one. */
  readonly extMessage?: string;
}

/**
 * Decode the body of an `NLMSG_ERROR` message.
 *
 * @param msg The message (its flags tell whether the payload was capped and TLVs follow).
 * @returns The errno (positive; 0 = ack), the original header and any extended-ack text.
 * @throws {SyntaxError} When the body is shorter than an error header.
 */
export function decodeError(msg: NlMessage): NlErrorMessage {
  const b = msg.body;
  if (b.length < 4 + NLMSG_HDRLEN) {
    throw new SyntaxError(`Cannot parse NLMSG_ERROR: body is ${b.length} bytes, need 20`);
  }
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const err = v.getInt32(0, true);
  const origLen = v.getUint32(4, true);
  const request = {
    type: v.getUint16(8, true),
    flags: v.getUint16(10, true),
    seq: v.getUint32(12, true),
    pid: v.getUint32(16, true),
  };
  let extMessage: string | undefined;
  if (msg.flags & NLM_F_ACK_TLVS) {
    const tlvStart = 4 + (msg.flags & NLM_F_CAPPED ? NLMSG_HDRLEN : align4(origLen));
    if (tlvStart <= b.length) {
      const m = parseAttrs(b.subarray(tlvStart)).get(NLMSGERR_ATTR_MSG);
      if (m) extMessage = readString(m);
    }
  }
  // the kernel sends -errno; a positive value (never from Linux) is read as the same errno
  return { errno: Math.abs(err), request, extMessage };
}
