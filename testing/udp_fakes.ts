/**
 * In-memory stand-ins for the udp engine's two sides, so tests run engines
 * against each other without root: a packet device whose "kernel side" is
 * two arrays, and a datagram network of binds keyed by `address:port`.
 *
 * @module
 */

import type { FakeDatapath } from "./datapath_fake.ts";
import { formatIPv4 } from "../core/ip.ts";
import type { UdpBackendIo, UdpSock, UdpTun } from "../backends/udp/backend.ts";
import {
  type PacketBatch,
  type PacketBind,
  type PacketDevice,
  readCounters,
  type UdpCounters,
  UdpEngine,
} from "../backends/udp/loop.ts";
import type { PeerRoute } from "../backends/udp/packet.ts";
import type { UdpWorker, UdpWorkerOptions } from "../backends/udp/thread.ts";

/**
 * A fake TUN device. `inject` plays the kernel routing a packet into
 * `flannel0`; what the engine writes lands in `delivered`.
 */
export class MemoryPacketDevice implements PacketDevice {
  /**
   * @param vnetHdr Packets carry a 10-byte virtio header, as on a TUN with
   *   `IFF_VNET_HDR` (inject and read them with it).
   */
  constructor(readonly vnetHdr = false) {}

  /** Packets waiting for the engine to read (the kernel's transmit queue). */
  readonly pending: Uint8Array[] = [];
  /** Packets the engine wrote (handed to the kernel's stack). */
  readonly delivered: Uint8Array[] = [];
  /** When set, `read` throws it (a deleted device). */
  failure: Error | null = null;
  /** When true, `write` refuses packets (a device that is down). */
  down = false;

  /**
   * Queue a packet for the engine to read.
   *
   * @param packet The packet (copied).
   */
  inject(packet: Uint8Array): void {
    this.pending.push(packet.slice());
  }

  /** Take and clear what was delivered. */
  take(): Uint8Array[] {
    return this.delivered.splice(0);
  }

  read(buf: Uint8Array): number {
    if (this.failure) throw this.failure;
    const p = this.pending.shift();
    if (!p) return 0;
    const n = Math.min(p.length, buf.length);
    buf.set(p.subarray(0, n));
    return n;
  }

  write(buf: Uint8Array, len: number): boolean {
    if (this.down) return false;
    this.delivered.push(buf.slice(0, len));
    return true;
  }
}

/** One datagram in flight. */
export interface MemoryDatagram {
  readonly from: number;
  readonly fromPort: number;
  readonly payload: Uint8Array;
  /** Datagram size when `payload` holds several back to back (UDP GRO), else 0. */
  readonly gso: number;
}

/**
 * A lossless datagram network between {@link MemoryBind}s. A datagram to an
 * address:port nobody bound is lost, like UDP; each bind's queue holds at
 * most `queueLimit` datagrams, the rest are lost (a full socket buffer).
 * A GSO send reaches a GRO-capable bind whole (as between two Linux sockets
 * over veth), any other bind as separate datagrams. Every datagram that
 * crossed is kept in `wire`, one packet each, as a capture would show it.
 */
export class MemoryNetwork {
  readonly #binds = new Map<string, MemoryBind>();
  /** Datagrams sent to an address:port nobody bound. */
  lost = 0;
  /** When set, every datagram on the wire is recorded here. */
  wire: Uint8Array[] | null = null;

  constructor(readonly queueLimit = 4096) {}

  /**
   * Bind an address and port.
   *
   * @param address IPv4 as uint32.
   * @param port UDP port.
   * @returns The bind.
   * @throws {Error} When the address:port is taken.
   */
  bind(address: number, port: number, gso = false): MemoryBind {
    const key = `${formatIPv4(address)}:${port}`;
    if (this.#binds.has(key)) throw new Error(`Cannot bind ${key}: address already in use`);
    const b = new MemoryBind(this, address, port, gso);
    this.#binds.set(key, b);
    return b;
  }

  /**
   * Deliver a datagram, e.g. a spoofed one from a host that has no bind.
   *
   * @param gso When > 0, `payload` holds datagrams of this size back to back (a GSO send).
   * @returns Whether a bind took it.
   */
  deliver(
    from: number,
    fromPort: number,
    to: number,
    toPort: number,
    payload: Uint8Array,
    gso = 0,
  ): boolean {
    const size = gso > 0 && gso < payload.length ? gso : payload.length;
    const pieces: Uint8Array[] = [];
    if (size === 0) pieces.push(payload.slice());
    for (let o = 0; o < payload.length; o += size) pieces.push(payload.slice(o, o + size));
    this.wire?.push(...pieces);
    const b = this.#binds.get(`${formatIPv4(to)}:${toPort}`);
    if (!b || b.queue.length >= this.queueLimit) {
      this.lost += pieces.length;
      return false;
    }
    if (pieces.length === 1 || b.gso) {
      b.queue.push({ from, fromPort, payload: payload.slice(), gso: pieces.length > 1 ? size : 0 });
    } else {
      for (const p of pieces) b.queue.push({ from, fromPort, payload: p, gso: 0 });
    }
    return true;
  }
}

/** A fake UDP socket on a {@link MemoryNetwork}. */
export class MemoryBind implements PacketBind {
  /** Datagrams waiting to be received. */
  readonly queue: MemoryDatagram[] = [];
  /** When set, `send` refuses every datagram (e.g. network unreachable). */
  refuseSends = false;

  /**
   * @param network The network it is bound on.
   * @param address Its address.
   * @param port Its port.
   * @param gso Whether it sends with GSO and receives GRO'd datagrams.
   */
  constructor(
    readonly network: MemoryNetwork,
    readonly address: number,
    readonly port: number,
    readonly gso = false,
  ) {}

  recv(batch: PacketBatch): number {
    let n = 0;
    while (n < batch.capacity && this.queue.length > 0) {
      const d = this.queue.shift()!;
      const len = Math.min(d.payload.length, batch.slotSize);
      batch.slots[n].set(d.payload.subarray(0, len));
      batch.lens[n] = len;
      batch.addrs[n] = d.from;
      batch.ports[n] = d.fromPort;
      batch.gso[n] = d.gso;
      n++;
    }
    return n;
  }

  send(batch: PacketBatch, count: number): number {
    if (this.refuseSends) return 0;
    for (let i = 0; i < count; i++) {
      this.network.deliver(
        this.address,
        this.port,
        batch.addrs[i],
        batch.ports[i],
        batch.slots[i].subarray(0, batch.lens[i]),
        this.gso ? batch.gso[i] : 0,
      );
    }
    return count;
  }
}

/**
 * Pump engines round-robin until none has anything left to do.
 *
 * @param engines The engines.
 * @param maxRounds Safety bound.
 * @returns Total packets handled.
 * @throws {Error} When still busy after `maxRounds` rounds (a forwarding loop).
 */
export function pumpUntilIdle(engines: readonly UdpEngine[], maxRounds = 10_000): number {
  let total = 0;
  for (let round = 0; round < maxRounds; round++) {
    let handled = 0;
    for (const e of engines) handled += e.pump();
    if (handled === 0) return total;
    total += handled;
  }
  throw new Error(`Engines still busy after ${maxRounds} rounds: is there a forwarding loop?`);
}

/** A {@link UdpWorker} stand-in running a {@link UdpEngine} on the calling thread. */
export class MemoryUdpWorker implements UdpWorker {
  readonly done: Promise<void>;
  #finish!: () => void;
  #fail!: (e: Error) => void;
  #ended = false;

  constructor(readonly engine: UdpEngine) {
    this.done = new Promise<void>((res, rej) => ((this.#finish = res), (this.#fail = rej)));
    this.done.catch(() => {});
  }

  /** Whether it ended (stopped or failed). */
  get ended(): boolean {
    return this.#ended;
  }

  setRoutes(routes: readonly PeerRoute[]): void {
    this.engine.setRoutes(routes);
  }

  counters(): UdpCounters {
    return readCounters(this.engine.counters);
  }

  /** End it with a failure, as a Worker whose TUN device vanished. */
  crash(error: Error): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#fail(error);
  }

  stop(): Promise<void> {
    if (!this.#ended) {
      this.#ended = true;
      this.#finish();
    }
    return this.done.catch(() => {});
  }
}

/**
 * In-memory devices for the udp backend: TUN devices appear as links in a
 * {@link FakeDatapath}, sockets bind on a {@link MemoryNetwork}, engines run
 * when the test calls {@link MemoryUdpIo.pump}.
 */
export class MemoryUdpIo implements UdpBackendIo {
  /** TUN devices by fd (the fake link index). */
  readonly tuns = new Map<number, MemoryPacketDevice>();
  /** Engines started, oldest first. */
  readonly workers: MemoryUdpWorker[] = [];
  /** Names of TUN devices currently open. */
  readonly open = new Set<string>();
  readonly #binds = new Map<number, MemoryBind>();
  #nextSock = 1000;
  #lastTunFd = -1;

  /**
   * @param datapath Where TUN devices appear as links.
   * @param network Where sockets bind.
   * @param vnetHdr TUN devices carry virtio headers (offloads on).
   * @param gso Sockets use GSO/GRO.
   */
  constructor(
    readonly datapath: FakeDatapath,
    readonly network: MemoryNetwork,
    readonly vnetHdr = false,
    readonly gso = false,
  ) {}

  openTun(name: string): Promise<UdpTun> {
    const link = this.datapath.addLink({ name, kind: "tun", mtu: 1500, mac: null });
    const dev = new MemoryPacketDevice(this.vnetHdr);
    this.tuns.set(link.index, dev);
    this.open.add(name);
    let open = true;
    return Promise.resolve({
      name,
      fd: link.index,
      vnetHdr: this.vnetHdr,
      close: () => {
        if (!open) return;
        open = false;
        this.open.delete(name);
        this.tuns.delete(link.index);
        void this.datapath.deleteLink(name);
      },
    });
  }

  openSocket(address: number, port: number): Promise<UdpSock> {
    const fd = this.#nextSock++;
    this.#binds.set(fd, this.network.bind(address, port, this.gso));
    return Promise.resolve({ fd, close: () => void this.#binds.delete(fd) });
  }

  startEngine(options: UdpWorkerOptions): Promise<UdpWorker> {
    const tun = this.tuns.get(options.tunFd);
    const bind = this.#binds.get(options.sockFd);
    if (!tun || !bind) {
      return Promise.reject(new Error(`no device for fds ${options.tunFd}/${options.sockFd}`));
    }
    const w = new MemoryUdpWorker(
      new UdpEngine({
        tun,
        bind,
        ownSubnet: options.ownSubnet,
        mtu: options.mtu,
        routes: options.routes,
      }),
    );
    this.workers.push(w);
    this.#lastTunFd = options.tunFd;
    return Promise.resolve(w);
  }

  /**
   * The TUN device the newest engine runs on.
   *
   * @throws {Error} When no engine was started or its device is closed.
   */
  get tun(): MemoryPacketDevice {
    const dev = this.tuns.get(this.#lastTunFd);
    if (!dev) throw new Error("no engine runs on an open TUN device");
    return dev;
  }

  /**
   * Pump every live engine of these ios until all are idle.
   *
   * @returns Packets handled.
   */
  static pump(...ios: MemoryUdpIo[]): number {
    return pumpUntilIdle(
      ios.flatMap((io) => io.workers.filter((w) => !w.ended).map((w) => w.engine)),
    );
  }
}
