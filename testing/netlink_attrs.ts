/**
 * A second, allocation-per-attribute netlink encoder for tests: attributes
 * built as values (`u32Attr(IFLA_MTU, 1450)`) and encoded with
 * {@link encodeAttrs}/{@link encodeBody}, so byte-golden tests of the
 * product's streaming `NlWriter` compare against an independent encoding.
 *
 * @module
 */

import { parseMac } from "../core/ip.ts";
import { align4 } from "../datapath/netlink/codec.ts";

/** One attribute to encode: raw bytes or nested attributes. */
export interface Attr {
  readonly type: number;
  readonly value: Uint8Array | readonly Attr[];
}

// ---- attribute value builders ----------------------------------------------

/** An attribute holding one byte. */
export function u8Attr(type: number, value: number): Attr {
  return { type, value: Uint8Array.of(value & 0xff) };
}

/** An attribute holding a host-order 16-bit integer. */
export function u16Attr(type: number, value: number): Attr {
  const b = new Uint8Array(2);
  new DataView(b.buffer).setUint16(0, value, true);
  return { type, value: b };
}

/** An attribute holding a network-order (big-endian) 16-bit integer, e.g. a UDP port. */
export function be16Attr(type: number, value: number): Attr {
  const b = new Uint8Array(2);
  new DataView(b.buffer).setUint16(0, value, false);
  return { type, value: b };
}

/** An attribute holding a host-order 32-bit integer. */
export function u32Attr(type: number, value: number): Attr {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, value >>> 0, true);
  return { type, value: b };
}

/** An attribute holding an IPv4 address (uint32) in network order. */
export function ipv4Attr(type: number, ip: number): Attr {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, ip >>> 0, false);
  return { type, value: b };
}

/** An attribute holding an IPv6 address (128-bit bigint) in network order. */
export function ipv6Attr(type: number, ip: bigint): Attr {
  const b = new Uint8Array(16);
  for (let i = 0; i < 16; i++) b[i] = Number((ip >> BigInt(120 - i * 8)) & 0xffn);
  return { type, value: b };
}

/** An attribute holding a NUL-terminated string. */
export function stringAttr(type: number, value: string): Attr {
  const s = new TextEncoder().encode(value);
  const b = new Uint8Array(s.length + 1);
  b.set(s);
  return { type, value: b };
}

/** An attribute holding a MAC address (6 bytes). */
export function macAttr(type: number, mac: string): Attr {
  return { type, value: parseMac(mac) };
}

/** An attribute with no payload (a flag). */
export function flagAttr(type: number): Attr {
  return { type, value: new Uint8Array(0) };
}

/** An attribute holding nested attributes. */
export function nestedAttr(type: number, attrs: readonly Attr[]): Attr {
  return { type, value: attrs };
}

// ---- encoding ----------------------------------------------------------------

function attrsSize(attrs: readonly Attr[]): number {
  let n = 0;
  for (const a of attrs) n += align4(4 + valueSize(a.value));
  return n;
}

function valueSize(value: Uint8Array | readonly Attr[]): number {
  return value instanceof Uint8Array ? value.length : attrsSize(value);
}

function writeAttrs(
  out: Uint8Array,
  view: DataView,
  offset: number,
  attrs: readonly Attr[],
): number {
  for (const a of attrs) {
    const len = 4 + valueSize(a.value);
    if (len > 0xffff) {
      throw new RangeError(
        `Cannot encode netlink attribute ${a.type}: length ${len} exceeds 65535`,
      );
    }
    view.setUint16(offset, len, true);
    view.setUint16(offset + 2, a.type, true);
    if (a.value instanceof Uint8Array) out.set(a.value, offset + 4);
    else writeAttrs(out, view, offset + 4, a.value);
    offset += align4(len);
  }
  return offset;
}

/**
 * Encode attributes as a sequence of aligned TLVs.
 *
 * @param attrs The attributes, nested ones recursively.
 * @returns The bytes (padding zeroed).
 * @throws {RangeError} When an attribute is longer than 65535 bytes.
 */
export function encodeAttrs(attrs: readonly Attr[]): Uint8Array {
  const out = new Uint8Array(attrsSize(attrs));
  writeAttrs(out, new DataView(out.buffer), 0, attrs);
  return out;
}

/**
 * Encode a message body: a fixed family header (ifinfomsg, rtmsg, …) padded
 * to 4 bytes, followed by attributes.
 *
 * @param header The family header bytes.
 * @param attrs Attributes after it.
 * @returns The body bytes.
 */
export function encodeBody(header: Uint8Array, attrs: readonly Attr[] = []): Uint8Array {
  const hlen = align4(header.length);
  const out = new Uint8Array(hlen + attrsSize(attrs));
  out.set(header);
  writeAttrs(out, new DataView(out.buffer), hlen, attrs);
  return out;
}
