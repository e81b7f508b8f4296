/**
 * Pure packet functions for the udp backend: IPv4 header checks, the TTL
 * decrement with an incremental checksum update (RFC 1624), ICMP
 * destination-unreachable generation, the peer routing table and the drop
 * rules. Nothing here allocates on the per-packet path: functions read and
 * write the caller's buffers.
 *
 * Wire format (flannel's udp backend): the UDP payload is the raw inner IPv4
 * packet, no header of our own. Each side decrements the inner TTL once.
 *
 * @module
 */

import { formatIPv4Net, type IPv4Net, maskIPv4 } from "../../core/ip.ts";

/** Smallest IPv4 header (no options). */
export const IPV4_MIN_HEADER = 20;
/** Largest IPv4 header (15 words). */
export const IPV4_MAX_HEADER = 60;
/** Bytes of the offending packet's payload an ICMP error quotes after its header. */
const ICMP_QUOTE_PAYLOAD = 8;
/**
 * Size of the largest ICMP net-unreachable {@link buildNetUnreachable} writes
 * (20 IP + 8 ICMP + 60 quoted header + 8 quoted payload).
 */
export const ICMP_UNREACHABLE_MAX = IPV4_MIN_HEADER + 8 + IPV4_MAX_HEADER + ICMP_QUOTE_PAYLOAD;

/**
 * Why a packet was dropped, in counter order. The index of a reason is its
 * numeric code + 1 (code 0 means "forward").
 */
export const DROP_REASONS = [
  /** A datagram from an address that is no peer's PublicIP. */
  "unknown-peer",
  /** The inner source is outside every subnet the sending peer owns. */
  "spoofed-inner-source",
  /** The inner destination is outside this host's subnet. */
  "wrong-destination",
  /** Too short for what its header claims (or shorter than an IPv4 header). */
  "truncated",
  /** Header fields that cannot be right (header length < 20, total < header). */
  "malformed",
  /** Not IPv4 (e.g. an IPv6 packet from the kernel on flannel0). */
  "not-ipv4",
  /** The IPv4 header checksum does not verify. */
  "bad-checksum",
  /** TTL would reach zero. */
  "ttl-expired",
  /** No peer owns the destination (an ICMP net-unreachable goes back). */
  "no-route",
  /** The UDP socket refused the datagram (e.g. buffer full, unreachable). */
  "send-failed",
  /** Writing to the TUN device failed. */
  "tun-write-failed",
] as const;

/** A drop reason name. */
export type DropReason = typeof DROP_REASONS[number];

/** Numeric drop codes for the per-packet path; `OK` (0) means forward. */
export const Drop = {
  OK: 0,
  UNKNOWN_PEER: 1,
  SPOOFED_INNER_SOURCE: 2,
  WRONG_DESTINATION: 3,
  TRUNCATED: 4,
  MALFORMED: 5,
  NOT_IPV4: 6,
  BAD_CHECKSUM: 7,
  TTL_EXPIRED: 8,
  NO_ROUTE: 9,
  SEND_FAILED: 10,
  TUN_WRITE_FAILED: 11,
} as const;

/**
 * The reason name of a numeric drop code.
 *
 * @param code A code from {@link Drop}, not `OK`.
 * @returns The reason name.
 * @throws {RangeError} When the code is not a drop code.
 */
export function dropReasonName(code: number): DropReason {
  const name = DROP_REASONS[code - 1];
  if (name === undefined) {
    throw new RangeError(`Cannot name drop code: expected 1..${DROP_REASONS.length}, got ${code}`);
  }
  return name;
}

/**
 * The one's-complement Internet checksum (RFC 1071) of `len` bytes at `off`.
 *
 * @param buf Bytes.
 * @param off First byte.
 * @param len Number of bytes (an odd count is padded with a zero byte).
 * @returns The 16-bit checksum to store (the complement of the folded sum).
 * @example
 * ```ts
 * const header = new Uint8Array(20); // … an IPv4 header with its checksum field filled in
 * const valid = internetChecksum(header, 0, 20) === 0;
 * ```
 */
export function internetChecksum(buf: Uint8Array, off: number, len: number): number {
  let sum = 0;
  const end = off + (len & ~1);
  for (let i = off; i < end; i += 2) sum += (buf[i] << 8) | buf[i + 1];
  if (len & 1) sum += buf[off + len - 1] << 8;
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/**
 * Update a checksum after one 16-bit word of the summed data changed, per
 * RFC 1624 equation 3: `HC' = ~(~HC + ~m + m')`.
 *
 * @param check The checksum as stored before the change.
 * @param oldWord The word before the change.
 * @param newWord The word after the change.
 * @returns The checksum to store.
 * @example
 * ```ts
 * updateChecksum(0xb861, 0x4011, 0x3f11); // 0xb961: TTL 64 → 63 for a UDP packet
 * ```
 */
export function updateChecksum(check: number, oldWord: number, newWord: number): number {
  let sum = (~check & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff);
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Source address of the IPv4 packet at the start of `buf`, as uint32. */
export function ipv4Source(buf: Uint8Array): number {
  return ((buf[12] << 24) | (buf[13] << 16) | (buf[14] << 8) | buf[15]) >>> 0;
}

/** Destination address of the IPv4 packet at the start of `buf`, as uint32. */
export function ipv4Destination(buf: Uint8Array): number {
  return ((buf[16] << 24) | (buf[17] << 16) | (buf[18] << 8) | buf[19]) >>> 0;
}

/** Total length field of the IPv4 packet at the start of `buf`. */
export function ipv4TotalLength(buf: Uint8Array): number {
  return (buf[2] << 8) | buf[3];
}

/**
 * Check that the first `len` bytes of `buf` hold a whole, well-formed IPv4
 * packet: version 4, header length 20..60 within the data, total length at
 * least the header and at most `len` (trailing bytes beyond the total length
 * are allowed; forward only {@link ipv4TotalLength} bytes).
 *
 * @param buf Packet bytes, starting with the IPv4 header.
 * @param len Number of valid bytes in `buf`.
 * @param verifyChecksum Also verify the header checksum (for packets from the network).
 * @returns `Drop.OK`, or `TRUNCATED`, `NOT_IPV4`, `MALFORMED`, `BAD_CHECKSUM`.
 */
export function checkIPv4(buf: Uint8Array, len: number, verifyChecksum: boolean): number {
  if (len < IPV4_MIN_HEADER) return len > 0 && buf[0] >> 4 !== 4 ? Drop.NOT_IPV4 : Drop.TRUNCATED;
  if (buf[0] >> 4 !== 4) return Drop.NOT_IPV4;
  const ihl = (buf[0] & 0x0f) << 2;
  if (ihl < IPV4_MIN_HEADER) return Drop.MALFORMED;
  if (ihl > len) return Drop.TRUNCATED;
  const total = (buf[2] << 8) | buf[3];
  if (total < ihl) return Drop.MALFORMED;
  if (total > len) return Drop.TRUNCATED;
  if (verifyChecksum && internetChecksum(buf, 0, ihl) !== 0) return Drop.BAD_CHECKSUM;
  return Drop.OK;
}

/**
 * Decrement the TTL of the IPv4 packet at the start of `buf` and patch the
 * header checksum incrementally (RFC 1624), as a router does.
 *
 * @param buf Packet bytes (header already checked).
 * @returns `false` when the TTL is 0 or 1 (the packet must be dropped; the
 *   buffer is left unchanged), else `true`.
 */
export function decrementTtl(buf: Uint8Array): boolean {
  const ttl = buf[8];
  if (ttl <= 1) return false;
  const oldWord = (ttl << 8) | buf[9];
  const check = (buf[10] << 8) | buf[11];
  const next = updateChecksum(check, oldWord, oldWord - 0x100);
  buf[8] = ttl - 1;
  buf[10] = next >>> 8;
  buf[11] = next & 0xff;
  return true;
}

const IPPROTO_ICMP = 1;

/** ICMP types that are error messages: never answered with another error (RFC 1122 3.2.2). */
function isIcmpError(type: number): boolean {
  return type === 3 || type === 4 || type === 5 || type === 11 || type === 12;
}

/**
 * Write an ICMP destination-unreachable (code 0, net unreachable) for the
 * offending packet into `out`, addressed to the offender's source, quoting
 * its header and the first 8 bytes of its payload (fewer if it has fewer).
 * No error is generated (returns 0) for ICMP errors, non-first fragments,
 * or offenders from 0.0.0.0, multicast or broadcast sources, or to
 * multicast destinations (RFC 1122 3.2.2, RFC 1812 4.3.2.7).
 *
 * @param offender The packet that could not be routed (header checked).
 * @param from The source address of the error. Not an address of this host: the
 *   kernel drops packets arriving from its own addresses; the engine uses the
 *   unreachable destination.
 * @param out Where to write; at least {@link ICMP_UNREACHABLE_MAX} bytes.
 * @returns The length written, or 0 when no error must be sent.
 */
export function buildNetUnreachable(offender: Uint8Array, from: number, out: Uint8Array): number {
  const ihl = (offender[0] & 0x0f) << 2;
  const total = (offender[2] << 8) | offender[3];
  const fragOffset = ((offender[6] & 0x1f) << 8) | offender[7];
  if (fragOffset !== 0) return 0;
  const src = ipv4Source(offender);
  const dst = ipv4Destination(offender);
  if (src === 0 || src >>> 28 === 0xe || src === 0xffffffff || dst >>> 28 === 0xe) return 0;
  if (offender[9] === IPPROTO_ICMP && (total < ihl + 1 || isIcmpError(offender[ihl]))) return 0;
  const quoted = ihl + Math.min(ICMP_QUOTE_PAYLOAD, total - ihl);
  const len = IPV4_MIN_HEADER + 8 + quoted;
  out.fill(0, 0, len);
  // IPv4 header
  out[0] = 0x45;
  out[2] = len >>> 8;
  out[3] = len & 0xff;
  out[8] = 64; // TTL
  out[9] = IPPROTO_ICMP;
  out[12] = from >>> 24;
  out[13] = (from >>> 16) & 0xff;
  out[14] = (from >>> 8) & 0xff;
  out[15] = from & 0xff;
  out.set(offender.subarray(12, 16), 16);
  const ipCheck = internetChecksum(out, 0, IPV4_MIN_HEADER);
  out[10] = ipCheck >>> 8;
  out[11] = ipCheck & 0xff;
  // ICMP header: type 3 (destination unreachable), code 0 (net unreachable)
  out[20] = 3;
  out[21] = 0;
  out.set(offender.subarray(0, quoted), 28);
  const icmpCheck = internetChecksum(out, IPV4_MIN_HEADER, 8 + quoted);
  out[22] = icmpCheck >>> 8;
  out[23] = icmpCheck & 0xff;
  return len;
}

/** Where packets for one peer subnet go. */
export interface PeerRoute {
  /** The peer's subnet (its lease). */
  readonly subnet: IPv4Net;
  /** The peer's PublicIP as uint32: the outer destination, and the only accepted outer source. */
  readonly publicIP: number;
  /** The peer's UDP port. */
  readonly port: number;
}

interface PrefixBucket {
  readonly prefixLen: number;
  readonly mask: number;
  readonly routes: Map<number, PeerRoute>;
}

/**
 * The peer routing table: subnet → peer, with longest-prefix lookup, plus
 * the reverse index PublicIP → subnets for the receive-side checks.
 * Immutable: build a new table on every change.
 *
 * Lookup costs one `Map.get` per distinct prefix length (one in a flannel
 * network, where every lease has `SubnetLen`).
 */
export class RouteTable {
  readonly #buckets: PrefixBucket[];
  readonly #byPeer: Map<number, IPv4Net[]>;
  readonly #routes: readonly PeerRoute[];

  /**
   * @param routes The routes; for the same subnet the last one wins.
   * @throws {RangeError} When a subnet has host bits set or a port is out of range.
   */
  constructor(routes: readonly PeerRoute[] = []) {
    const byLen = new Map<number, Map<number, PeerRoute>>();
    for (const r of routes) {
      const mask = maskIPv4(r.subnet.prefixLen);
      if (((r.subnet.ip & mask) >>> 0) !== r.subnet.ip) {
        throw new RangeError(
          `Cannot route to ${formatIPv4Net(r.subnet)}: host bits are set; use the network address`,
        );
      }
      if (!Number.isInteger(r.port) || r.port < 1 || r.port > 65535) {
        throw new RangeError(
          `Cannot route to ${
            formatIPv4Net(r.subnet)
          }: port must be 1..65535, current value is ${r.port}`,
        );
      }
      let m = byLen.get(r.subnet.prefixLen);
      if (!m) byLen.set(r.subnet.prefixLen, m = new Map());
      m.set(r.subnet.ip, r);
    }
    this.#buckets = [...byLen].sort((a, b) => b[0] - a[0]).map(([prefixLen, m]) => ({
      prefixLen,
      mask: maskIPv4(prefixLen),
      routes: m,
    }));
    this.#byPeer = new Map();
    const all: PeerRoute[] = [];
    for (const b of this.#buckets) {
      for (const r of b.routes.values()) {
        all.push(r);
        const subnets = this.#byPeer.get(r.publicIP);
        if (subnets) subnets.push(r.subnet);
        else this.#byPeer.set(r.publicIP, [r.subnet]);
      }
    }
    this.#routes = all;
  }

  /** Number of routes. */
  get size(): number {
    return this.#routes.length;
  }

  /** The routes, longest prefixes first. */
  get routes(): readonly PeerRoute[] {
    return this.#routes;
  }

  /**
   * The route for a destination address (longest prefix wins).
   *
   * @param dst Destination as uint32.
   * @returns The route, or `undefined` when no peer owns the address.
   */
  lookup(dst: number): PeerRoute | undefined {
    const buckets = this.#buckets;
    for (let i = 0; i < buckets.length; i++) {
      const b = buckets[i];
      const r = b.routes.get((dst & b.mask) >>> 0);
      if (r !== undefined) return r;
    }
    return undefined;
  }

  /** Whether `addr` is some peer's PublicIP. */
  isPeer(addr: number): boolean {
    return this.#byPeer.has(addr);
  }

  /**
   * Whether the peer at `publicIP` owns `inner` (the address lies in one of
   * its subnets).
   *
   * @param publicIP Outer source as uint32.
   * @param inner Inner source as uint32.
   * @returns `false` also when `publicIP` is no peer.
   */
  peerOwns(publicIP: number, inner: number): boolean {
    const subnets = this.#byPeer.get(publicIP);
    if (subnets === undefined) return false;
    for (let i = 0; i < subnets.length; i++) {
      const s = subnets[i];
      if (((inner & maskIPv4(s.prefixLen)) >>> 0) === s.ip) return true;
    }
    return false;
  }
}

/**
 * The drop rules for a datagram from the network, before decapsulation:
 * the outer source must be a peer's PublicIP, the inner packet well-formed
 * IPv4 with a valid header checksum, its source inside that peer's subnets,
 * its destination inside this host's subnet, and its TTL above 1.
 * On `Drop.OK` the TTL has been decremented (checksum patched); otherwise the
 * buffer is unchanged.
 *
 * @param table The peer routing table.
 * @param own This host's subnet.
 * @param outerSource The datagram's source address as uint32.
 * @param buf The datagram payload.
 * @param len Payload length.
 * @returns `Drop.OK` or the drop code.
 */
export function acceptFromPeer(
  table: RouteTable,
  own: IPv4Net,
  outerSource: number,
  buf: Uint8Array,
  len: number,
): number {
  if (!table.isPeer(outerSource)) return Drop.UNKNOWN_PEER;
  const check = checkIPv4(buf, len, true);
  if (check !== Drop.OK) return check;
  if (!table.peerOwns(outerSource, ipv4Source(buf))) return Drop.SPOOFED_INNER_SOURCE;
  if (((ipv4Destination(buf) & maskIPv4(own.prefixLen)) >>> 0) !== own.ip) {
    return Drop.WRONG_DESTINATION;
  }
  if (!decrementTtl(buf)) return Drop.TTL_EXPIRED;
  return Drop.OK;
}

/**
 * The rules for a packet read from the TUN device, before encapsulation:
 * well-formed IPv4 (the kernel's checksum is trusted), a peer owns the
 * destination, TTL above 1. The packet is not changed: the caller decrements
 * the TTL ({@link decrementTtl}) or cuts a super-packet, which does it too.
 *
 * @param table The peer routing table.
 * @param buf The packet.
 * @param len Packet length.
 * @returns The route to send the packet on, or a drop code: `NO_ROUTE`
 *   (answer with {@link buildNetUnreachable}), `TTL_EXPIRED`, or a header problem.
 */
export function routeFromTun(table: RouteTable, buf: Uint8Array, len: number): PeerRoute | number {
  const check = checkIPv4(buf, len, false);
  if (check !== Drop.OK) return check;
  const route = table.lookup(ipv4Destination(buf));
  if (route === undefined) return Drop.NO_ROUTE;
  if (buf[8] <= 1) return Drop.TTL_EXPIRED;
  return route;
}
