/**
 * Segmentation and coalescing offloads for the udp engine, pure functions
 * over the caller's buffers.
 *
 * With `IFF_VNET_HDR` and TSO enabled on the TUN device, the kernel hands the
 * engine TCP "super-packets" of up to 64 KiB preceded by a 10-byte
 * `virtio_net_hdr`, and accepts them back the same way. On the wire every
 * datagram still carries one ordinary IPv4 packet (flannel's format):
 * {@link writeTcpSegments} cuts a super-packet into MSS-sized packets with
 * their own IP and TCP checksums, and {@link TcpCoalescer} merges consecutive
 * segments of one TCP flow received from a peer back into one super-packet
 * for the TUN device (as the kernel's GRO would), so that the kernel stack
 * handles one packet per 64 KiB instead of ~45.
 *
 * @module
 */

import { internetChecksum } from "./packet.ts";
import type { OnesSumFn } from "./wasm.ts";

/** Bytes of `struct virtio_net_hdr` before each packet on a vnet-header TUN. */
export const VNET_HDR_LEN = 10;
/** `VIRTIO_NET_HDR_F_NEEDS_CSUM`: checksum from `csum_start`, store at `+csum_offset`. */
export const VNET_F_NEEDS_CSUM = 1;
/** `VIRTIO_NET_HDR_GSO_NONE`. */
export const GSO_NONE = 0;
/** `VIRTIO_NET_HDR_GSO_TCPV4`. */
export const GSO_TCPV4 = 1;
/** `VIRTIO_NET_HDR_GSO_ECN` flag bit of `gso_type`. */
export const GSO_ECN = 0x80;
/** Largest UDP payload one GSO send may carry. */
export const MAX_UDP_PAYLOAD = 65507;

const IPPROTO_TCP = 6;
const TCP_FIN = 0x01;
const TCP_SYN = 0x02;
const TCP_RST = 0x04;
const TCP_PSH = 0x08;
const TCP_ACK = 0x10;
const TCP_URG = 0x20;
const TCP_CWR = 0x80;

/**
 * Fold a 32-bit-or-wider one's-complement accumulator to 16 bits.
 *
 * @param sum A non-negative sum of 16-bit words (below 2^53).
 * @returns The folded sum, 0..0xffff.
 */
export function foldSum(sum: number): number {
  while (sum > 0xffff) sum = (sum % 65536) + Math.floor(sum / 65536);
  return sum;
}

/**
 * The one's-complement sum (folded, not complemented) of `len` bytes from
 * `off`, as big-endian 16-bit words starting at `off` (an odd tail is padded
 * with zero). With `words` (an Int32Array over the same ArrayBuffer as `buf`)
 * the aligned middle is summed four bytes at a time.
 *
 * @param buf Bytes.
 * @param off First byte.
 * @param len Byte count.
 * @param words Optional `new Int32Array(buf.buffer)` for speed.
 * @returns 0..0xffff.
 */
export function onesSum(buf: Uint8Array, off: number, len: number, words?: Int32Array): number {
  if (words === undefined || len < 64) return slowSum(buf, off, len);
  const abs = buf.byteOffset + off;
  if (abs & 1) {
    // Starting at an odd address: the rest, summed from the next (even) byte,
    // is the byte-swapped sum of its words (RFC 1071 §2(B)).
    return foldSum((buf[off] << 8) + swap16(onesSum(buf, off + 1, len - 1, words)));
  }
  let sum = 0;
  let i = off;
  const end = off + len;
  if (abs & 2) {
    sum = (buf[i] << 8) | buf[i + 1];
    i += 2;
  }
  // Aligned middle: little-endian 32-bit loads hold two little-endian 16-bit
  // words each; their sum is the byte-swapped sum of the big-endian words.
  const w0 = (buf.byteOffset + i) >> 2;
  const n = (end - i) >> 2;
  const kEnd = w0 + n;
  let lo = 0;
  let hi = 0;
  let k = w0;
  for (; k + 4 <= kEnd; k += 4) {
    const a = words[k], b = words[k + 1], c = words[k + 2], d = words[k + 3];
    lo = (lo + (a & 0xffff) + (b & 0xffff) + (c & 0xffff) + (d & 0xffff)) | 0;
    hi = (hi + (a >>> 16) + (b >>> 16) + (c >>> 16) + (d >>> 16)) | 0;
    if (lo > 0x3fffffff || hi > 0x3fffffff) {
      sum += swap16(foldSum(lo + hi));
      lo = 0;
      hi = 0;
    }
  }
  for (; k < kEnd; k++) {
    const a = words[k];
    lo = (lo + (a & 0xffff)) | 0;
    hi = (hi + (a >>> 16)) | 0;
  }
  sum += swap16(foldSum(lo + hi));
  i += n << 2;
  for (; i + 1 < end; i += 2) sum += (buf[i] << 8) | buf[i + 1];
  if (i < end) sum += buf[i] << 8;
  return foldSum(sum);
}

function slowSum(buf: Uint8Array, off: number, len: number): number {
  let sum = 0;
  const end = off + len;
  let i = off;
  for (; i + 1 < end; i += 2) sum += (buf[i] << 8) | buf[i + 1];
  if (i < end) sum += buf[i] << 8;
  return foldSum(sum);
}

function swap16(v: number): number {
  return ((v & 0xff) << 8) | (v >>> 8);
}

/** Sum of the IPv4 pseudo-header for TCP/UDP: addresses, protocol, L4 length. */
function pseudoSum(pkt: Uint8Array, off: number, proto: number, l4len: number): number {
  return ((pkt[off + 12] << 8) | pkt[off + 13]) + ((pkt[off + 14] << 8) | pkt[off + 15]) +
    ((pkt[off + 16] << 8) | pkt[off + 17]) + ((pkt[off + 18] << 8) | pkt[off + 19]) + proto + l4len;
}

/**
 * Finish a checksum the kernel left partial (`VIRTIO_NET_HDR_F_NEEDS_CSUM`):
 * sum from `csumStart` to the end (the field holds the pseudo-header sum)
 * and store the complement at `csumStart + csumOffset`.
 *
 * @param pkt The packet (starting at its IP header).
 * @param len Packet length.
 * @param csumStart Offset of the checksummed region in `pkt`.
 * @param csumOffset Offset of the checksum field within that region.
 * @param sum The sum to use (default {@link onesSum}; the engine passes a faster one).
 * @returns `false` when the offsets lie outside the packet (left unchanged).
 */
export function completeChecksum(
  pkt: Uint8Array,
  len: number,
  csumStart: number,
  csumOffset: number,
  sum: OnesSumFn = onesSum,
): boolean {
  const at = csumStart + csumOffset;
  if (csumStart >= len || at + 2 > len) return false;
  const c = ~sum(pkt, csumStart, len - csumStart) & 0xffff;
  pkt[at] = c >>> 8;
  pkt[at + 1] = c & 0xff;
  return true;
}

/**
 * Whether a packet is a TCP super-packet {@link writeTcpSegments} can cut:
 * IPv4 TCP, header lengths within `len`, and payload present.
 *
 * @returns The IP + TCP header length, or 0 when it cannot be segmented.
 */
export function tcpHeaderLength(pkt: Uint8Array, len: number): number {
  if (len < 40 || pkt[0] >> 4 !== 4 || pkt[9] !== IPPROTO_TCP) return 0;
  const ihl = (pkt[0] & 0x0f) << 2;
  if (ihl < 20 || ihl + 20 > len) return 0;
  const thl = (pkt[ihl + 12] >> 4) << 2;
  if (thl < 20 || ihl + thl >= len) return 0;
  return ihl + thl;
}

/**
 * Cut a TCP super-packet into segments of at most `mss` payload bytes,
 * written back to back into `out` from `outOff`: each with its own IPv4
 * header (total length, ID + i, TTL − 1, checksum) and TCP header (sequence
 * number, FIN/PSH on the last only, CWR on the first only, checksum), as
 * the kernel's TCP segmentation offload would.
 *
 * @param pkt The super-packet (IP header first); its checksums need not be valid.
 * @param len Its length (the total length field is not trusted).
 * @param hdrLen IP + TCP header length ({@link tcpHeaderLength}).
 * @param mss Payload bytes per segment (`gso_size`).
 * @param out Destination buffer, large enough for every segment.
 * @param outOff Where the first segment goes.
 * @param sum The sum to use (default {@link onesSum}; the engine passes a faster one).
 * @param first Index of the first segment to write (default 0).
 * @param limit Most segments to write (default all).
 * @returns The number of segments written; each is `hdrLen + mss` bytes except
 *   the super-packet's last.
 * @throws {RangeError} When `mss` is not positive.
 */
export function writeTcpSegments(
  pkt: Uint8Array,
  len: number,
  hdrLen: number,
  mss: number,
  out: Uint8Array,
  outOff: number,
  sum: OnesSumFn = onesSum,
  first = 0,
  limit = Infinity,
): number {
  if (!(mss > 0)) throw new RangeError(`Cannot segment with an MSS of ${mss}`);
  const ihl = (pkt[0] & 0x0f) << 2;
  const payload = len - hdrLen;
  const count = Math.ceil(payload / mss);
  const id = (pkt[4] << 8) | pkt[5];
  const seq = ((pkt[ihl + 4] << 24) | (pkt[ihl + 5] << 16) | (pkt[ihl + 6] << 8) | pkt[ihl + 7]) >>>
    0;
  const flags = pkt[ihl + 13];
  const stop = Math.min(count, first + limit);
  let at = outOff;
  for (let i = first; i < stop; i++) {
    const size = Math.min(mss, payload - i * mss);
    const total = hdrLen + size;
    out.set(pkt.subarray(0, hdrLen), at);
    out.set(pkt.subarray(hdrLen + i * mss, hdrLen + i * mss + size), at + hdrLen);
    // IPv4
    out[at + 2] = total >>> 8;
    out[at + 3] = total & 0xff;
    const sid = (id + i) & 0xffff;
    out[at + 4] = sid >>> 8;
    out[at + 5] = sid & 0xff;
    out[at + 8] = out[at + 8] - 1; // TTL, checked > 1 by the caller
    out[at + 10] = 0;
    out[at + 11] = 0;
    const ipc = internetChecksum(out, at, ihl);
    out[at + 10] = ipc >>> 8;
    out[at + 11] = ipc & 0xff;
    // TCP
    const t = at + ihl;
    const s = (seq + i * mss) >>> 0;
    out[t + 4] = s >>> 24;
    out[t + 5] = (s >>> 16) & 0xff;
    out[t + 6] = (s >>> 8) & 0xff;
    out[t + 7] = s & 0xff;
    let f = flags;
    if (i < count - 1) f &= ~(TCP_FIN | TCP_PSH);
    if (i > 0) f &= ~TCP_CWR;
    out[t + 13] = f;
    out[t + 16] = 0;
    out[t + 17] = 0;
    const l4 = total - ihl;
    const c = ~foldSum(pseudoSum(out, at, IPPROTO_TCP, l4) + sum(out, t, l4)) &
      0xffff;
    out[t + 16] = c >>> 8;
    out[t + 17] = c & 0xff;
    at += total;
  }
  return stop - first;
}

/**
 * Merges consecutive in-order segments of one TCP flow into a super-packet
 * for a vnet-header TUN device (`GSO_TCPV4`, `NEEDS_CSUM`), like the
 * kernel's GRO: same addresses, ports, ACK number, window, IP TOS/TTL/DF and
 * TCP options; ACK (and PSH on the last) only; every segment but the last
 * carrying the first one's payload size; at most 64 KiB.
 *
 * Usage per received batch: {@link TcpCoalescer.add} each packet; when it
 * returns false, {@link TcpCoalescer.flush} and write the packet alone; flush
 * at the end of the batch.
 */
export class TcpCoalescer {
  /** The pending output: a virtio_net_hdr at 0, then the merged packet. */
  readonly buffer: Uint8Array;
  #len = 0; // bytes of the merged IP packet, 0 when nothing is pending
  #segments = 0;
  #hdrLen = 0;
  #mss = 0;
  #nextSeq = 0;
  #closed = false;

  /** @param capacity Largest merged IP packet (≤ 65535). */
  constructor(readonly capacity = 65535) {
    this.buffer = new Uint8Array(new ArrayBuffer(VNET_HDR_LEN + capacity + 6));
  }

  /** Number of segments pending. */
  get pending(): number {
    return this.#segments;
  }

  /**
   * Append a validated, TTL-adjusted packet to the pending super-packet, or
   * start a new one with it.
   *
   * @param pkt The packet (IP header first).
   * @param len Its length.
   * @returns `true` when taken (pending now includes it); `false` when it
   *   cannot join: flush, then write it alone.
   */
  add(pkt: Uint8Array, len: number): boolean {
    const hdrLen = tcpHeaderLength(pkt, len);
    if (hdrLen === 0 || (pkt[0] & 0x0f) !== 5) return false;
    const flags = pkt[33];
    if ((flags & (TCP_SYN | TCP_FIN | TCP_RST | TCP_URG | TCP_CWR)) !== 0 || !(flags & TCP_ACK)) {
      return false;
    }
    if (((pkt[6] & 0x3f) | pkt[7]) !== 0) return false; // a fragment
    const size = len - hdrLen;
    if (this.#segments === 0) return this.#start(pkt, len, hdrLen, size);
    const m = this.buffer;
    const o = VNET_HDR_LEN;
    if (
      this.#closed || hdrLen !== this.#hdrLen || size > this.#mss ||
      this.#len + size > this.capacity
    ) return false;
    const seq = ((pkt[24] << 24) | (pkt[25] << 16) | (pkt[26] << 8) | pkt[27]) >>> 0;
    if (seq !== this.#nextSeq) return false;
    // Same TOS, DF, TTL, protocol, addresses (bytes 1, 6, 8-9, 12-19), ports, ACK, offset,
    // window (20-23, 28-31, 32, 34-35) and options (40..hdrLen); flags may differ only in PSH.
    if (pkt[1] !== m[o + 1] || pkt[6] !== m[o + 6] || pkt[8] !== m[o + 8]) return false;
    for (let i = 12; i < 20; i++) if (pkt[i] !== m[o + i]) return false;
    for (let i = 20; i < 24; i++) if (pkt[i] !== m[o + i]) return false;
    for (let i = 28; i < 33; i++) if (pkt[i] !== m[o + i]) return false;
    if (pkt[34] !== m[o + 34] || pkt[35] !== m[o + 35]) return false;
    for (let i = 40; i < hdrLen; i++) if (pkt[i] !== m[o + i]) return false;
    if (m[o + 33] & TCP_PSH) return false; // a PSH ends the run
    if ((flags & ~TCP_PSH) !== (m[o + 33] & ~TCP_PSH)) return false;
    m.set(pkt.subarray(hdrLen, len), o + this.#len);
    this.#len += size;
    this.#segments++;
    this.#nextSeq = (this.#nextSeq + size) >>> 0;
    m[o + 33] |= flags & TCP_PSH;
    if (size < this.#mss) this.#closed = true;
    return true;
  }

  #start(pkt: Uint8Array, len: number, hdrLen: number, size: number): boolean {
    if (size === 0 || len > this.capacity) return false;
    this.buffer.set(pkt.subarray(0, len), VNET_HDR_LEN);
    this.#len = len;
    this.#segments = 1;
    this.#hdrLen = hdrLen;
    this.#mss = size;
    this.#closed = false;
    this.#nextSeq =
      ((((pkt[24] << 24) | (pkt[25] << 16) | (pkt[26] << 8) | pkt[27]) >>> 0) + size) >>>
      0;
    return true;
  }

  /**
   * Finish the pending packet: one segment goes out as it came (virtio
   * header zero), several as a `GSO_TCPV4` super-packet with a partial
   * checksum for the kernel to complete.
   *
   * @returns The bytes of `buffer` to write (virtio header included), 0 when nothing was pending.
   */
  flush(): number {
    if (this.#segments === 0) return 0;
    const m = this.buffer;
    const o = VNET_HDR_LEN;
    const len = this.#len;
    m.fill(0, 0, VNET_HDR_LEN);
    if (this.#segments > 1) {
      m[o + 2] = len >>> 8;
      m[o + 3] = len & 0xff;
      m[o + 10] = 0;
      m[o + 11] = 0;
      const ipc = internetChecksum(m, o, 20);
      m[o + 10] = ipc >>> 8;
      m[o + 11] = ipc & 0xff;
      const partial = foldSum(pseudoSum(m, o, IPPROTO_TCP, len - 20));
      m[o + 36] = partial >>> 8;
      m[o + 37] = partial & 0xff;
      m[0] = VNET_F_NEEDS_CSUM;
      m[1] = GSO_TCPV4;
      m[2] = this.#hdrLen & 0xff; // hdr_len (little-endian u16)
      m[3] = this.#hdrLen >>> 8;
      m[4] = this.#mss & 0xff; // gso_size
      m[5] = this.#mss >>> 8;
      m[6] = 20; // csum_start
      m[8] = 16; // csum_offset
    }
    this.#segments = 0;
    this.#len = 0;
    return VNET_HDR_LEN + len;
  }
}
