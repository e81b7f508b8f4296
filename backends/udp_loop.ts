/**
 * The udp backend's packet engine, independent of where packets come from:
 * it is given a packet device (the TUN side) and a datagram socket (the UDP
 * side) as two small interfaces, wireguard-go style, so unit tests run two
 * engines against each other over in-memory fakes (`udp_fakes.ts`) and the
 * Worker (`udp_worker.ts`) runs the same engine over the kernel's fds.
 *
 * The engine is synchronous and allocation-free per packet: {@link UdpEngine.pump}
 * moves at most one batch each way with what is ready now and returns; the
 * caller decides how to wait (poll(2) in the Worker, nothing in tests).
 *
 * @module
 */

import type { IPv4Net } from "../lease/ip.ts";
import {
  acceptFromPeer,
  buildNetUnreachable,
  Drop,
  DROP_REASONS,
  type DropReason,
  ICMP_UNREACHABLE_MAX,
  ipv4Destination,
  ipv4TotalLength,
  type PeerRoute,
  routeFromTun,
  RouteTable,
} from "./udp_packet.ts";

/**
 * The TUN side: the kernel's end of `flannel0`.
 *
 * Guarantees expected by the engine: `read` never blocks; a packet longer
 * than `buf` is cut to `buf.length` (the engine then drops it as truncated).
 */
export interface PacketDevice {
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
   * Receive up to `batch.capacity` datagrams without blocking; fills
   * `lens`, `addrs` and `ports` of entries `0..n-1`.
   *
   * @returns n, 0 when nothing is waiting.
   */
  recv(batch: PacketBatch): number;
  /**
   * Send entries `0..count-1` of the batch (`lens[i]` bytes of `slots[i]`
   * to `addrs[i]:ports[i]`).
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

  /**
   * @param capacity Number of slots (1..1024).
   * @param slotSize Bytes per slot (64..65536).
   * @throws {RangeError} When a size is out of range.
   */
  constructor(readonly capacity: number, readonly slotSize: number) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1024) {
      throw new RangeError(`Cannot size a packet batch: capacity must be 1..1024, got ${capacity}`);
    }
    if (!Number.isInteger(slotSize) || slotSize < 64 || slotSize > 65536) {
      throw new RangeError(
        `Cannot size a packet batch: slotSize must be 64..65536, got ${slotSize}`,
      );
    }
    this.buffer = new Uint8Array(new ArrayBuffer(capacity * slotSize));
    const slots: Uint8Array[] = [];
    for (let i = 0; i < capacity; i++) {
      slots.push(this.buffer.subarray(i * slotSize, (i + 1) * slotSize));
    }
    this.slots = slots;
    this.lens = new Int32Array(capacity);
    this.addrs = new Uint32Array(capacity);
    this.ports = new Uint16Array(capacity);
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
  /** The TUN MTU; slots are sized to hold it (and at least 9216 bytes for peers' jumbo MTUs). */
  readonly mtu: number;
  /** Packets per batch (default 64). */
  readonly batchSize?: number;
  /**
   * Where to count (length {@link COUNTER_COUNT}); e.g. a view of a
   * SharedArrayBuffer read by another thread. Default: a new array.
   */
  readonly counters?: Float64Array;
  /** Initial routes. */
  readonly routes?: readonly PeerRoute[];
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
  readonly #tx: PacketBatch;
  readonly #rx: PacketBatch;
  readonly #icmp = new Uint8Array(new ArrayBuffer(ICMP_UNREACHABLE_MAX + 64));
  readonly #c: Float64Array;
  #table: RouteTable;

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
    const batch = options.batchSize ?? 64;
    const slot = Math.min(65536, Math.max(9216, Math.ceil(options.mtu / 64) * 64));
    this.#tx = new PacketBatch(batch, slot);
    this.#rx = new PacketBatch(batch, slot);
    this.#c = options.counters ?? new Float64Array(COUNTER_COUNT);
    if (this.#c.length !== COUNTER_COUNT) {
      throw new RangeError(
        `Cannot use the counter array: expected length ${COUNTER_COUNT}, got ${this.#c.length}`,
      );
    }
    this.#table = new RouteTable(options.routes ?? []);
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
   * @returns The number of packets handled (forwarded or dropped); 0 when both sides were idle.
   * @throws {Error} Only when the TUN device fails (see {@link PacketDevice.read}).
   */
  pump(): number {
    return this.#tunToUdp() + this.#udpToTun();
  }

  #tunToUdp(): number {
    const tx = this.#tx;
    const tun = this.#tun;
    const table = this.#table;
    const c = this.#c;
    const cap = tx.capacity;
    let k = 0;
    let handled = 0;
    while (k < cap && handled < 2 * cap) {
      const buf = tx.slots[k];
      const n = tun.read(buf);
      if (n <= 0) break;
      handled++;
      const r = routeFromTun(table, buf, n);
      if (typeof r === "number") {
        c[CounterIndex.DROPS + r - 1]++;
        if (r === Drop.NO_ROUTE) {
          // From the unreachable address itself: the kernel drops packets that arrive
          // with one of its own addresses as source (flannel's choice, flannel0's
          // address, never reaches the sender).
          const m = buildNetUnreachable(buf, ipv4Destination(buf), this.#icmp);
          if (m > 0 && tun.write(this.#icmp, m)) c[CounterIndex.ICMP_UNREACHABLE]++;
        }
        continue;
      }
      tx.lens[k] = ipv4TotalLength(buf);
      tx.addrs[k] = r.publicIP;
      tx.ports[k] = r.port;
      k++;
    }
    if (k > 0) {
      const sent = this.#bind.send(tx, k);
      let bytes = 0;
      for (let i = 0; i < sent; i++) bytes += tx.lens[i];
      c[CounterIndex.PACKETS_OUT] += sent;
      c[CounterIndex.BYTES_OUT] += bytes;
      if (sent < k) c[CounterIndex.DROPS + Drop.SEND_FAILED - 1] += k - sent;
    }
    return handled;
  }

  #udpToTun(): number {
    const rx = this.#rx;
    const n = this.#bind.recv(rx);
    if (n <= 0) return 0;
    const tun = this.#tun;
    const table = this.#table;
    const own = this.#own;
    const c = this.#c;
    for (let i = 0; i < n; i++) {
      const buf = rx.slots[i];
      const code = acceptFromPeer(table, own, rx.addrs[i], buf, rx.lens[i]);
      if (code !== Drop.OK) {
        c[CounterIndex.DROPS + code - 1]++;
        continue;
      }
      const len = ipv4TotalLength(buf);
      if (tun.write(buf, len)) {
        c[CounterIndex.PACKETS_IN]++;
        c[CounterIndex.BYTES_IN] += len;
      } else {
        c[CounterIndex.DROPS + Drop.TUN_WRITE_FAILED - 1]++;
      }
    }
    return n;
  }
}
