/**
 * The udp backend's packet engine, independent of where packets come from:
 * it is given a packet device (the TUN side) and a datagram socket (the UDP
 * side) as two small interfaces, wireguard-go style, so unit tests run two
 * engines against each other over in-memory fakes (`testing/udp_fakes.ts`) and the
 * Worker (`worker.ts`) runs the same engine over the kernel's fds.
 *
 * The engine is synchronous: {@link UdpEngine.pump} moves at most one batch
 * each way with what is ready now and returns; the caller decides how to wait
 * (poll(2) in the Worker, nothing in tests).
 *
 * Offloads, used when the device and socket offer them: TCP super-packets
 * from a vnet-header TUN are cut into MSS-sized packets here (each a normal
 * IPv4 packet on the wire, as flannel expects); datagrams to one peer of one
 * size leave in one UDP GSO send; received TCP segments are merged again
 * before they are written to the TUN. Without them it is one read, one
 * datagram, one write per packet, batched with recvmmsg/sendmmsg.
 *
 * @module
 */

import type { IPv4Net } from "../../core/ip.ts";
import {
  acceptFromPeer,
  buildNetUnreachable,
  decrementTtl,
  Drop,
  DROP_REASONS,
  type DropReason,
  ICMP_UNREACHABLE_MAX,
  ipv4Destination,
  ipv4TotalLength,
  type PeerRoute,
  routeFromTun,
  RouteTable,
} from "./packet.ts";
import { createWasmChecksum, type OnesSumFn } from "./wasm.ts";
import {
  completeChecksum,
  GSO_ECN,
  GSO_NONE,
  GSO_TCPV4,
  MAX_UDP_PAYLOAD,
  onesSum,
  TcpCoalescer,
  tcpHeaderLength,
  VNET_F_NEEDS_CSUM,
  VNET_HDR_LEN,
  writeTcpSegments,
} from "./offload.ts";

/**
 * The TUN side: the kernel's end of `flannel0`.
 *
 * Guarantees expected by the engine: `read` never blocks; a packet longer
 * than `buf` is cut to `buf.length` (the engine then drops it as truncated).
 */
export interface PacketDevice {
  /**
   * Whether every packet read and written is preceded by a 10-byte
   * `virtio_net_hdr` (`IFF_VNET_HDR` with TSO on): reads may then be TCP
   * super-packets to segment, writes may be merged ones.
   */
  readonly vnetHdr?: boolean;
  /**
   * Read one packet into `buf` without blocking.
   *
   * @param buf Destination.
   * @returns The packet's length, or 0 when none is waiting.
   * @throws {Error} When the device is gone (e.g. `flannel0` was deleted).
   */
  read(buf: Uint8Array): number;
  /**
   * Write one packet: the first `len` bytes of `buf`.
   *
   * @returns Whether the packet was taken.
   */
  write(buf: Uint8Array, len: number): boolean;
}

/**
 * The UDP side: a socket bound to the backend port.
 *
 * Guarantees expected by the engine: `recv` never blocks; `send` tries every
 * entry and reports how many went out.
 */
export interface PacketBind {
  /**
   * Whether `send` honours `batch.gso` (UDP GSO: one send carries several
   * equal-size datagrams) and `recv` may return several datagrams in one
   * slot with `batch.gso` set (UDP GRO). Read before every batch: a bind
   * may turn it off when the kernel refuses GSO.
   */
  readonly gso?: boolean;
  /**
   * Receive up to `batch.capacity` datagrams without blocking; fills
   * `lens`, `addrs`, `ports` and `gso` of entries `0..n-1` (`gso[i]` > 0: the
   * slot holds datagrams of that size back to back, the last maybe shorter).
   *
   * @returns n, 0 when nothing is waiting.
   */
  recv(batch: PacketBatch): number;
  /**
   * Send entries `0..count-1` of the batch (`lens[i]` bytes of `slots[i]`
   * to `addrs[i]:ports[i]`, cut into `gso[i]`-byte datagrams when set).
   *
   * @returns How many were sent; the engine counts the rest as `send-failed`.
   */
  send(batch: PacketBatch, count: number): number;
}

/**
 * A fixed set of packet buffers ("slots") carved from one ArrayBuffer, with
 * per-slot length, IPv4 address (uint32) and port. Allocated once per engine,
 * so real binds can precompute the kernel structures pointing at the slots.
 */
export class PacketBatch {
  /** All slots, back to back. */
  readonly buffer: Uint8Array;
  /** One view per slot, `slotSize` bytes each. */
  readonly slots: readonly Uint8Array[];
  /** Datagram length per slot. */
  readonly lens: Int32Array;
  /** Peer address per slot (source on receive, destination on send). */
  readonly addrs: Uint32Array;
  /** Peer port per slot. */
  readonly ports: Uint16Array;
  /** Datagram size when a slot holds several (UDP GSO/GRO), else 0. */
  readonly gso: Uint16Array;

  /**
   * @param capacity Number of slots (1..1024).
   * @param slotSize Bytes per slot (64..65536).
   * @param backing Memory for the slots (`capacity * slotSize` bytes), e.g.
   *   a view of wasm memory; default a new ArrayBuffer.
   * @throws {RangeError} When a size is out of range or `backing` is too small.
   */
  constructor(readonly capacity: number, readonly slotSize: number, backing?: Uint8Array) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1024) {
      throw new RangeError(`Cannot size a packet batch: capacity must be 1..1024, got ${capacity}`);
    }
    if (!Number.isInteger(slotSize) || slotSize < 64 || slotSize > 65536) {
      throw new RangeError(
        `Cannot size a packet batch: slotSize must be 64..65536, got ${slotSize}`,
      );
    }
    if (backing !== undefined && backing.length < capacity * slotSize) {
      throw new RangeError(
        `Cannot carve ${capacity} slots of ${slotSize} bytes from ${backing.length} bytes of backing memory`,
      );
    }
    this.buffer = backing?.subarray(0, capacity * slotSize) ??
      new Uint8Array(new ArrayBuffer(capacity * slotSize));
    const slots: Uint8Array[] = [];
    for (let i = 0; i < capacity; i++) {
      slots.push(this.buffer.subarray(i * slotSize, (i + 1) * slotSize));
    }
    this.slots = slots;
    this.lens = new Int32Array(capacity);
    this.addrs = new Uint32Array(capacity);
    this.ports = new Uint16Array(capacity);
    this.gso = new Uint16Array(capacity);
  }
}

/** Indices into the engine's counter array. */
export const CounterIndex = {
  /** Packets encapsulated and sent to peers. */
  PACKETS_OUT: 0,
  /** Inner bytes sent to peers. */
  BYTES_OUT: 1,
  /** Packets decapsulated and written to the TUN device. */
  PACKETS_IN: 2,
  /** Inner bytes written to the TUN device. */
  BYTES_IN: 3,
  /** ICMP net-unreachable messages written back into the TUN device. */
  ICMP_UNREACHABLE: 4,
  /** First drop counter: index `DROPS + code - 1` for each code of `Drop`. */
  DROPS: 5,
} as const;

/** Length of the counter array. */
export const COUNTER_COUNT = CounterIndex.DROPS + DROP_REASONS.length;

/** The engine's counters, by name. */
export interface UdpCounters {
  readonly packetsOut: number;
  readonly bytesOut: number;
  readonly packetsIn: number;
  readonly bytesIn: number;
  readonly icmpUnreachable: number;
  readonly dropped: Readonly<Record<DropReason, number>>;
}

/**
 * Name the values of a counter array.
 *
 * @param counters An array laid out by {@link CounterIndex}.
 * @returns A snapshot.
 */
export function readCounters(counters: Float64Array): UdpCounters {
  const dropped = {} as Record<DropReason, number>;
  DROP_REASONS.forEach((reason, i) => (dropped[reason] = counters[CounterIndex.DROPS + i]));
  return {
    packetsOut: counters[CounterIndex.PACKETS_OUT],
    bytesOut: counters[CounterIndex.BYTES_OUT],
    packetsIn: counters[CounterIndex.PACKETS_IN],
    bytesIn: counters[CounterIndex.BYTES_IN],
    icmpUnreachable: counters[CounterIndex.ICMP_UNREACHABLE],
    dropped,
  };
}

/** What an engine needs. */
export interface UdpEngineOptions {
  /** The TUN side. */
  readonly tun: PacketDevice;
  /** The UDP side. */
  readonly bind: PacketBind;
  /** This host's subnet: the only inner destination accepted from peers. */
  readonly ownSubnet: IPv4Net;
  /** The TUN MTU; datagram slots hold at least this (and 9216 bytes, for peers' jumbo MTUs). */
  readonly mtu: number;
  /** Datagram slots per batch without GSO (default 64); with GSO 16 slots of up to 64 KiB. */
  readonly batchSize?: number;
  /**
   * Where to count (length {@link COUNTER_COUNT}); e.g. a view of a
   * SharedArrayBuffer read by another thread. Default: a new array.
   */
  readonly counters?: Float64Array;
  /** Initial routes. */
  readonly routes?: readonly PeerRoute[];
}

const GSO_SLOT = 65536;
const MAX_GSO_SEGMENTS = 64;

const READ_BYTES = 12 + 65536 + 64;

/**
 * Memory for the buffers the engine checksums, with the fastest sum over
 * it: wasm when available, else the JavaScript loop with word loads.
 */
function checksumMemory(bytes: number): { memory: Uint8Array; sum: OnesSumFn } {
  const wasm = createWasmChecksum(bytes);
  if (wasm) return { memory: new Uint8Array(wasm.buffer, 0, bytes), sum: wasm.sum };
  const buffer = new ArrayBuffer(Math.ceil(bytes / 4) * 4);
  const words = new Int32Array(buffer);
  return {
    memory: new Uint8Array(buffer, 0, bytes),
    sum: (buf, off, len) => onesSum(buf, off, len, buf.buffer === buffer ? words : undefined),
  };
}

/**
 * The packet engine: TUN → route lookup → TTL → UDP to the owning peer, and
 * UDP → drop rules → TTL → TUN. Never throws on anything a remote sends.
 *
 * @example
 * ```ts
 * const engine = new UdpEngine({ tun, bind, ownSubnet, mtu: 1472 });
 * engine.setRoutes([{ subnet, publicIP, port: 8285 }]);
 * while (!stopped) if (engine.pump() === 0) waitForReadable();
 * ```
 */
export class UdpEngine {
  readonly #tun: PacketDevice;
  readonly #bind: PacketBind;
  readonly #own: IPv4Net;
  readonly #c: Float64Array;
  readonly #vnet: boolean;
  #table: RouteTable;

  // TUN reads land at byte 12 of #rbuf (4-aligned IP header); a virtio header just before it.
  readonly #rbuf: Uint8Array;
  readonly #sum: OnesSumFn;
  readonly #readInto: Uint8Array;
  readonly #rpkt: Uint8Array;

  // Send side: slots filled in order; slot #k is open for appending while #open.
  readonly #tx: PacketBatch;
  readonly #txSegs: Int32Array;
  #txGso = false;
  #k = 0;
  #open = false;

  // Receive side.
  readonly #rx: PacketBatch;
  readonly #rxGsoCapable: boolean;
  readonly #co: TcpCoalescer | undefined;
  #coSegs = 0;
  #coBytes = 0;
  readonly #single: Uint8Array; // virtio header + one packet, for vnet writes
  readonly #icmp = new Uint8Array(new ArrayBuffer(VNET_HDR_LEN + ICMP_UNREACHABLE_MAX + 64));

  /**
   * @param options Devices, addresses, sizes.
   * @throws {RangeError} When the counter array has the wrong length or the MTU is out of range.
   */
  constructor(options: UdpEngineOptions) {
    if (!Number.isInteger(options.mtu) || options.mtu < 68 || options.mtu > 65535) {
      throw new RangeError(
        `Cannot start the udp engine: mtu must be 68..65535, got ${options.mtu}`,
      );
    }
    this.#tun = options.tun;
    this.#bind = options.bind;
    this.#own = options.ownSubnet;
    this.#vnet = options.tun.vnetHdr === true;
    this.#c = options.counters ?? new Float64Array(COUNTER_COUNT);
    if (this.#c.length !== COUNTER_COUNT) {
      throw new RangeError(
        `Cannot use the counter array: expected length ${COUNTER_COUNT}, got ${this.#c.length}`,
      );
    }
    this.#table = new RouteTable(options.routes ?? []);
    const batch = options.batchSize ?? 64;
    const slot = Math.min(65536, Math.max(9216, Math.ceil(options.mtu / 64) * 64));

    // With a vnet TUN, sends may need GSO-sized slots; sized once, whatever the bind says later.
    const gsoCapable = options.bind.gso === true;
    const [txCap, txSlot] = gsoCapable
      ? [16, GSO_SLOT]
      : [this.#vnet ? Math.max(batch, MAX_GSO_SEGMENTS) : batch, slot];
    const mem = checksumMemory(txCap * txSlot + READ_BYTES);
    this.#sum = mem.sum;
    this.#tx = new PacketBatch(txCap, txSlot, mem.memory.subarray(0, txCap * txSlot));
    this.#rbuf = mem.memory.subarray(txCap * txSlot);
    this.#readInto = this.#vnet
      ? this.#rbuf.subarray(12 - VNET_HDR_LEN, 12 + 65536)
      : this.#rbuf.subarray(12, 12 + Math.max(slot, options.mtu));
    this.#rpkt = this.#rbuf.subarray(12);
    this.#txSegs = new Int32Array(this.#tx.capacity);
    this.#rxGsoCapable = gsoCapable;
    this.#rx = gsoCapable ? new PacketBatch(16, GSO_SLOT) : new PacketBatch(batch, slot);
    this.#co = this.#vnet ? new TcpCoalescer() : undefined;
    this.#single = new Uint8Array(new ArrayBuffer(VNET_HDR_LEN + 65536 + 6));
  }

  /** The counters (live). */
  get counters(): Float64Array {
    return this.#c;
  }

  /** The current routing table. */
  get routes(): RouteTable {
    return this.#table;
  }

  /**
   * Replace the routing table.
   *
   * @param routes Every peer subnet → its PublicIP and port.
   * @throws {RangeError} When a route is invalid (see {@link RouteTable}).
   */
  setRoutes(routes: readonly PeerRoute[]): void {
    this.#table = new RouteTable(routes);
  }

  /**
   * Move what is ready now: up to one batch from the TUN device to peers,
   * then up to one batch from peers to the TUN device.
   *
   * @returns The number of reads handled (forwarded or dropped); 0 when both sides were idle.
   * @throws {Error} Only when the TUN device fails (see {@link PacketDevice.read}).
   */
  pump(): number {
    return this.#tunToUdp() + this.#udpToTun();
  }

  #drop(code: number, n = 1): void {
    this.#c[CounterIndex.DROPS + code - 1] += n;
  }

  // ---- TUN → UDP ----------------------------------------------------------------

  #tunToUdp(): number {
    const tun = this.#tun;
    const into = this.#readInto;
    const cap = this.#tx.capacity;
    this.#txGso = this.#bind.gso === true;
    this.#k = 0;
    this.#open = false;
    let handled = 0;
    while (handled < cap) {
      const n = tun.read(into);
      if (n <= 0) break;
      handled++;
      this.#fromTun(n);
      if (this.#k >= cap - 1) this.#flushTx();
    }
    this.#flushTx();
    return handled;
  }

  #fromTun(n: number): void {
    const pkt = this.#rpkt;
    let len = n;
    let gsoType = GSO_NONE;
    let gsoSize = 0;
    if (this.#vnet) {
      const h = this.#rbuf;
      const o = 12 - VNET_HDR_LEN;
      len = n - VNET_HDR_LEN;
      if (len <= 0) return this.#drop(Drop.TRUNCATED);
      gsoType = h[o + 1] & ~GSO_ECN;
      gsoSize = h[o + 4] | (h[o + 5] << 8);
      if ((h[o] & VNET_F_NEEDS_CSUM) !== 0 && gsoType === GSO_NONE) {
        const start = h[o + 6] | (h[o + 7] << 8);
        const offset = h[o + 8] | (h[o + 9] << 8);
        if (!completeChecksum(pkt, len, start, offset, this.#sum)) {
          return this.#drop(Drop.MALFORMED);
        }
      }
    }
    const route = routeFromTun(this.#table, pkt, len);
    if (typeof route === "number") {
      this.#drop(route);
      if (route === Drop.NO_ROUTE) this.#unreachable(pkt);
      return;
    }
    if (gsoType === GSO_NONE) {
      const total = ipv4TotalLength(pkt);
      decrementTtl(pkt);
      const at = this.#place(route, total);
      this.#tx.slots[this.#k].set(pkt.subarray(0, total), at);
      return;
    }
    const hdrLen = gsoType === GSO_TCPV4 ? tcpHeaderLength(pkt, len) : 0;
    if (hdrLen === 0 || gsoSize === 0) return this.#drop(Drop.MALFORMED);
    const full = hdrLen + gsoSize;
    if (full > this.#tx.slotSize || full > MAX_UDP_PAYLOAD) return this.#drop(Drop.MALFORMED);
    const segments = Math.ceil((len - hdrLen) / gsoSize);
    const perSlot = this.#txGso
      ? Math.min(MAX_GSO_SEGMENTS, Math.floor(MAX_UDP_PAYLOAD / full))
      : 1;
    for (let first = 0; first < segments; first += perSlot) {
      const count = Math.min(perSlot, segments - first);
      const last = first + count === segments;
      const bytes = last
        ? (count - 1) * full + hdrLen + (len - hdrLen - (segments - 1) * gsoSize)
        : count * full;
      this.#startSlot(route, full);
      const tx = this.#tx;
      writeTcpSegments(pkt, len, hdrLen, gsoSize, tx.slots[this.#k], 0, this.#sum, first, count);
      tx.lens[this.#k] = bytes;
      this.#txSegs[this.#k] = count;
      this.#open = false;
      if (this.#k >= tx.capacity - 1) this.#flushTx();
    }
  }

  /** Open slot #k (after the current one) for `size`-byte datagrams to `route`. */
  #startSlot(route: PeerRoute, size: number): void {
    const tx = this.#tx;
    if (this.#txSegs[this.#k] > 0) {
      this.#open = false;
      this.#k++;
      if (this.#k >= tx.capacity) this.#flushTx();
    }
    const k = this.#k;
    tx.addrs[k] = route.publicIP;
    tx.ports[k] = route.port;
    tx.gso[k] = size;
    tx.lens[k] = 0;
    this.#txSegs[k] = 0;
    this.#open = true;
  }

  /**
   * Where a `size`-byte datagram to `route` goes in slot #k: appended to the
   * open slot when GSO allows (same peer, same size; a shorter one ends it),
   * else at the start of a new slot.
   */
  #place(route: PeerRoute, size: number): number {
    const tx = this.#tx;
    const k = this.#k;
    if (
      this.#txGso && this.#open && tx.addrs[k] === route.publicIP && tx.ports[k] === route.port &&
      size <= tx.gso[k] && tx.lens[k] + size <= MAX_UDP_PAYLOAD &&
      this.#txSegs[k] < MAX_GSO_SEGMENTS
    ) {
      const at = tx.lens[k];
      tx.lens[k] += size;
      this.#txSegs[k]++;
      if (size < tx.gso[k]) this.#open = false;
      return at;
    }
    this.#startSlot(route, size);
    const j = this.#k;
    tx.lens[j] = size;
    this.#txSegs[j] = 1;
    if (!this.#txGso) this.#open = false;
    return 0;
  }

  #flushTx(): void {
    const tx = this.#tx;
    const count = this.#k < tx.capacity && this.#txSegs[this.#k] > 0 ? this.#k + 1 : this.#k;
    this.#k = 0;
    this.#open = false;
    if (count === 0) return;
    let packets = 0;
    let bytes = 0;
    for (let i = 0; i < count; i++) {
      const segs = this.#txSegs[i];
      if (segs <= 1) tx.gso[i] = 0;
      packets += segs;
      this.#txSegs[i] = 0;
      bytes += tx.lens[i];
    }
    const sent = this.#bind.send(tx, count);
    const c = this.#c;
    if (sent >= count) {
      c[CounterIndex.PACKETS_OUT] += packets;
      c[CounterIndex.BYTES_OUT] += bytes;
      return;
    }
    // Attribute failures proportionally (binds skip refused entries and go on).
    const ok = Math.round((packets * sent) / count);
    c[CounterIndex.PACKETS_OUT] += ok;
    c[CounterIndex.BYTES_OUT] += Math.round((bytes * sent) / count);
    this.#drop(Drop.SEND_FAILED, packets - ok);
  }

  #unreachable(pkt: Uint8Array): void {
    const o = this.#vnet ? VNET_HDR_LEN : 0;
    const out = this.#icmp;
    // From the unreachable address itself: the kernel drops packets that arrive
    // with one of its own addresses as source (flannel's choice, flannel0's
    // address, never reaches the sender).
    const m = buildNetUnreachable(pkt, ipv4Destination(pkt), o ? out.subarray(o) : out);
    if (m === 0) return;
    if (o) out.fill(0, 0, o);
    if (this.#tun.write(out, o + m)) this.#c[CounterIndex.ICMP_UNREACHABLE]++;
  }

  // ---- UDP → TUN ----------------------------------------------------------------

  #udpToTun(): number {
    const rx = this.#rx;
    const n = this.#bind.recv(rx);
    if (n <= 0) return 0;
    const table = this.#table;
    const own = this.#own;
    for (let i = 0; i < n; i++) {
      const buf = rx.slots[i];
      const total = rx.lens[i];
      const seg = this.#rxGsoCapable ? rx.gso[i] : 0;
      if (seg === 0 || seg >= total) {
        const code = acceptFromPeer(table, own, rx.addrs[i], buf, total);
        if (code !== Drop.OK) this.#drop(code);
        else this.#deliver(buf, ipv4TotalLength(buf));
        continue;
      }
      for (let off = 0; off < total; off += seg) {
        const len = Math.min(seg, total - off);
        const p = buf.subarray(off, off + len);
        const code = acceptFromPeer(table, own, rx.addrs[i], p, len);
        if (code !== Drop.OK) this.#drop(code);
        else this.#deliver(p, ipv4TotalLength(p));
      }
    }
    this.#flushCoalesced();
    return n;
  }

  #deliver(pkt: Uint8Array, len: number): void {
    const co = this.#co;
    if (co === undefined) return this.#write(pkt, len, len, 1);
    if (co.add(pkt, len)) {
      this.#coSegs++;
      this.#coBytes += len;
      return;
    }
    this.#flushCoalesced();
    if (co.add(pkt, len)) {
      this.#coSegs = 1;
      this.#coBytes = len;
      return;
    }
    const out = this.#single;
    out.fill(0, 0, VNET_HDR_LEN);
    out.set(pkt.subarray(0, len), VNET_HDR_LEN);
    this.#write(out, VNET_HDR_LEN + len, len, 1);
  }

  #flushCoalesced(): void {
    const co = this.#co;
    if (co === undefined || co.pending === 0) return;
    const n = co.flush();
    this.#write(co.buffer, n, this.#coBytes, this.#coSegs);
    this.#coSegs = 0;
    this.#coBytes = 0;
  }

  #write(buf: Uint8Array, len: number, innerBytes: number, packets: number): void {
    if (this.#tun.write(buf, len)) {
      this.#c[CounterIndex.PACKETS_IN] += packets;
      this.#c[CounterIndex.BYTES_IN] += innerBytes;
    } else {
      this.#drop(Drop.TUN_WRITE_FAILED, packets);
    }
  }
}
