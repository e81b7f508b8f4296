/**
 * A NETLINK_ROUTE socket over libc FFI (through the runtime shim): batched
 * requests, dumps, single gets and multicast draining. The socket is
 * non-blocking; rtnetlink answers requests while `sendto` runs, so replies
 * are normally queued by the time we read, and when they are not we yield
 * to the event loop (1 ms timer) instead of blocking it, up to a timeout.
 *
 * Batches: each chunk of requests is sent with one `sendto` without per-
 * message acks, followed by an `NLMSG_NOOP` barrier that asks for an ack.
 * The kernel reports every failed request as an `NLMSG_ERROR` (it carries on
 * with the rest of the chunk), then acks the barrier: when the barrier's ack
 * arrives, every request before it has been applied or has failed.
 *
 * A socket can be created inside a named network namespace: the calling
 * thread enters it with setns(), creates the socket and returns; the socket
 * stays bound to that namespace.
 *
 * @module
 */

import { type BackgroundWriter, openBackgroundWriter } from "../../core/aio.ts";
import { type Libc, loadLibc } from "../../core/libc.ts";
import { systemClock } from "../../core/clock.ts";
import {
  decodeError,
  encodeMessage,
  NLM_F_ACK,
  NLM_F_DUMP_INTR,
  NLM_F_REQUEST,
  type NlMessage,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_NOOP,
  NLMSG_OVERRUN,
  NlWriter,
  parseMessages,
} from "./codec.ts";
import { NetlinkError } from "./error.ts";
import { inNetnsSync } from "../netns.ts";
import { type BatchEncoder, type NlRequest, requestEncoder } from "./messages.ts";

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_NONBLOCK = 0x800;
const SOCK_CLOEXEC = 0x80000;
const NETLINK_ROUTE = 0;
const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
const SO_SNDBUFFORCE = 32;
const SO_RCVBUFFORCE = 33;
const SOL_NETLINK = 270;
const NETLINK_CAP_ACK = 10;
const NETLINK_EXT_ACK = 11;
const MSG_TRUNC = 0x20;
const EAGAIN = 11;
const EINTR = 4;
const ENOBUFS = 105;
const ETIMEDOUT = 110;

/** Options for {@link NetlinkSocket.open}. */
export interface NetlinkSocketOptions {
  /**
   * Network namespace to create the socket in: a name under
   * `/var/run/netns` (as `ip netns add` makes) or an absolute path such as
   * `/proc/<pid>/ns/net`. Default: the calling thread's namespace.
   */
  readonly netns?: string;
  /** Netlink protocol: `NETLINK_ROUTE` (0, the default) or `NETLINK_GENERIC` (16). */
  readonly protocol?: number;
  /** Multicast groups (`RTMGRP_*` bit mask) to subscribe to. */
  readonly groups?: number;
  /** Receive buffer size (SO_RCVBUFFORCE). Default 4 MiB. */
  readonly receiveBufferBytes?: number;
  /** How long a request may wait for its answer. Default 5000 ms. */
  readonly timeoutMs?: number;
  /** Requests per send in a batch. Default 1024. */
  readonly chunkSize?: number;
  /**
   * Sends batches from a libc AIO thread, pipelined with their encoding
   * (see {@link NetlinkSocket.executeBatch}); without it they are sent in
   * place. {@link NetlinkSocket.open} loads it.
   */
  readonly writer?: BackgroundWriter | null;
}

/**
 * Told that the outcomes of items `start` to `end` (exclusive) of a batch
 * are in `results` (null: done).
 */
export type ChunkListener = (
  start: number,
  end: number,
  results: (NetlinkError | null)[],
) => void;

/** One batch of {@link NetlinkSocket.executeBatches}. */
export interface BatchPart<T> {
  /** How to encode and describe one item. */
  readonly encoder: BatchEncoder<T>;
  readonly items: readonly T[];
  /**
   * Called with consecutive item ranges (a chunk's, in slices) once their
   * outcomes are in `results`: in order, every item once, before the batch
   * returns; with a background writer mostly while the kernel works on
   * later chunks. It must not use the socket.
   */
  readonly onChunk?: ChunkListener;
}

/**
 * At most this many items' outcomes wait in {@link NetlinkSocket.executeBatches}
 * for the kernel to be busy. A listener may read notifications the writes
 * caused (an fdb echo takes under a kilobyte of receive buffer), which pile
 * up meanwhile.
 */
const MAX_WAITING_OUTCOMES = 16384;

/** Outcomes are handed to a listener this many items at a time. */
const REPORT_SLICE = 128;

/** One encoded chunk of a batch: its part, items, sequence numbers and bytes. */
interface Chunk {
  readonly part: number;
  readonly start: number;
  readonly end: number;
  readonly first: number;
  readonly barrier: number;
  readonly bytes: Uint8Array;
}

/** A NETLINK_ROUTE (or, by option, NETLINK_GENERIC) socket. Not safe for concurrent use without {@link NetlinkSocket.lock}. */
export class NetlinkSocket {
  readonly #libc: Libc;
  readonly #fd: number;
  readonly #timeoutMs: number;
  readonly #chunkSize: number;
  readonly #buf = new Uint8Array(256 * 1024);
  readonly #addr = new Uint8Array(12);
  /** Two send buffers: one being sent while the next chunk is encoded. */
  readonly #writers = [new NlWriter(64 * 1024), new NlWriter(64 * 1024)] as const;
  readonly #background: BackgroundWriter | null;
  #seq: number;
  #closed = false;
  #portId: number | undefined;
  /** recvmmsg buffers, made on the first {@link drain} (only event sockets drain). */
  #batch: DrainBatch | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(libc: Libc, fd: number, options: NetlinkSocketOptions) {
    this.#libc = libc;
    this.#fd = fd;
    this.#timeoutMs = options.timeoutMs ?? 5000;
    this.#chunkSize = options.chunkSize ?? 1024;
    this.#background = options.writer ?? null;
    this.#seq = (Date.now() % 0x3fffffff) + 1; // far from wrapping: chunks use seq + i
    new DataView(this.#addr.buffer).setUint16(0, AF_NETLINK, true);
  }

  /**
   * Open a socket with libc already loaded (synchronous, so a subscription
   * exists before the caller continues).
   *
   * @param libc From {@link loadLibc}.
   * @param options Namespace, groups, buffer size, timeout.
   * @returns The bound socket.
   * @throws {NetlinkError} When socket/bind fails (e.g. EPERM without CAP_NET_ADMIN).
   */
  static openWith(libc: Libc, options: NetlinkSocketOptions = {}): NetlinkSocket {
    const create = () => {
      const protocol = options.protocol ?? NETLINK_ROUTE;
      const fd = libc.fn.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, protocol);
      if (fd < 0) throw new NetlinkError(libc.errno(), `socket(AF_NETLINK, protocol ${protocol})`);
      return fd;
    };
    const fd = options.netns
      ? inNetnsSync({ setns: libc.fn.setns, errno: libc.errno }, options.netns, create)
      : create();
    try {
      const rcv = options.receiveBufferBytes ?? 4 * 1024 * 1024;
      const int = new Uint8Array(4);
      const iv = new DataView(int.buffer);
      iv.setInt32(0, rcv, true);
      if (libc.fn.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, int, 4) !== 0) {
        libc.fn.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, int, 4);
      }
      iv.setInt32(0, 1024 * 1024, true);
      if (libc.fn.setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, int, 4) !== 0) {
        libc.fn.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, int, 4);
      }
      iv.setInt32(0, 1, true);
      // Best effort: older kernels lack these; errors are still reported without them.
      libc.fn.setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, int, 4);
      libc.fn.setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, int, 4);
      const sa = new Uint8Array(12);
      const sv = new DataView(sa.buffer);
      sv.setUint16(0, AF_NETLINK, true);
      sv.setUint32(8, options.groups ?? 0, true);
      if (libc.fn.bind(fd, sa, 12) !== 0) {
        throw new NetlinkError(
          libc.errno(),
          `bind(AF_NETLINK, groups 0x${(options.groups ?? 0).toString(16)})`,
        );
      }
    } catch (e) {
      libc.fn.close(fd);
      throw e;
    }
    return new NetlinkSocket(libc, fd, options);
  }

  /**
   * Load libc and open a socket.
   *
   * @param options Namespace, groups, buffer size, timeout.
   * @returns The bound socket.
   * @throws {NetlinkError} When socket/bind fails.
   */
  static async open(options: NetlinkSocketOptions = {}): Promise<NetlinkSocket> {
    const [libc, writer] = await Promise.all([loadLibc(), openBackgroundWriter()]);
    return NetlinkSocket.openWith(libc, { writer, ...options });
  }

  /**
   * The port id the kernel gave this socket (`nl_pid` of its address): the
   * kernel names it as the sender of the route and neighbour notifications
   * its requests cause.
   */
  get portId(): number {
    if (this.#portId === undefined) {
      this.#check("read the socket's port id");
      const sa = new Uint8Array(12);
      const len = new Uint32Array([12]);
      if (this.#libc.fn.getsockname(this.#fd, sa, new Uint8Array(len.buffer)) !== 0) {
        throw new NetlinkError(this.#libc.errno(), "getsockname(AF_NETLINK)");
      }
      this.#portId = new DataView(sa.buffer).getUint32(4, true);
    }
    return this.#portId;
  }

  /**
   * Have the kernel drop, before queueing them to this socket, the
   * notifications of the given types that `port`'s requests caused (a
   * classic BPF filter on the message header: type at offset 4, sender port
   * at 12; one message per notification datagram).
   *
   * @param port The sender's port id ({@link portId} of the writing socket).
   * @param types Message types, e.g. `RTM_NEWROUTE`.
   * @returns False when the kernel refused the filter (then nothing is dropped).
   */
  dropNotificationsFrom(port: number, types: readonly number[]): boolean {
    this.#check("filter notifications");
    // loads are big-endian; netlink headers are the host's (little-endian) order
    const swap16 = (x: number) => ((x & 0xff) << 8) | (x >>> 8);
    const swap32 = (x: number) =>
      (((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24)) >>> 0;
    const code: [number, number, number, number][] = [[BPF_LD_H_ABS, 0, 0, 4]];
    types.forEach((t, i) => {
      const last = i === types.length - 1;
      // a match goes to the port check; no match on the last type accepts
      code.push([BPF_JEQ_K, types.length - 1 - i, last ? 2 : 0, swap16(t)]);
    });
    code.push([BPF_LD_W_ABS, 0, 0, 12], [BPF_JEQ_K, 1, 0, swap32(port)]);
    code.push([BPF_RET_K, 0, 0, 0xffffffff], [BPF_RET_K, 0, 0, 0]);
    const filter = new Uint8Array(code.length * 8);
    const fv = new DataView(filter.buffer);
    code.forEach(([op, jt, jf, k], i) => {
      fv.setUint16(i * 8, op, true);
      fv.setUint8(i * 8 + 2, jt);
      fv.setUint8(i * 8 + 3, jf);
      fv.setUint32(i * 8 + 4, k, true);
    });
    const prog = new Uint8Array(16); // struct sock_fprog: length, padding, pointer
    const pv = new DataView(prog.buffer);
    pv.setUint16(0, code.length, true);
    pv.setBigUint64(8, BigInt(this.#libc.addressOf(filter)), true);
    return this.#libc.fn.setsockopt(this.#fd, SOL_SOCKET, SO_ATTACH_FILTER, prog, 16) === 0;
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Close the socket; pending and later calls fail. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#libc.fn.close(this.#fd);
  }

  /**
   * Run `fn` after every earlier locked call has finished, so concurrent
   * callers do not read each other's replies.
   */
  lock<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  #check(what: string): void {
    if (this.#closed) throw new Error(`Cannot ${what}: the netlink socket is closed`);
  }

  #nextSeq(): number {
    this.#seq = this.#seq >= 0x7fffffff ? 1 : this.#seq + 1;
    return this.#seq;
  }

  #send(bytes: Uint8Array, what: string): void {
    for (;;) {
      const n = this.#libc.fn.sendto(this.#fd, bytes, bytes.length, 0, this.#addr, 12);
      if (n >= 0) return;
      const errno = this.#libc.errno();
      if (errno === EINTR) continue;
      throw new NetlinkError(errno, `sendto: ${what}`);
    }
  }

  /**
   * Receive one datagram without blocking.
   * @returns A copy of its bytes, or null when nothing is queued.
   * @throws {NetlinkError} ENOBUFS when messages were dropped, or another recv error.
   */
  #recvOnce(): Uint8Array | null {
    for (;;) {
      const n = this.#libc.fn.recv(this.#fd, this.#buf, this.#buf.length, MSG_TRUNC);
      if (n >= 0) {
        if (n > this.#buf.length) {
          throw new NetlinkError(90, `recv: a ${n}-byte datagram does not fit the receive buffer`);
        }
        return this.#buf.slice(0, n);
      }
      const errno = this.#libc.errno();
      if (errno === EINTR) continue;
      if (errno === EAGAIN) return null;
      throw new NetlinkError(errno, "recv");
    }
  }

  /** Receive until `handle` returns true, yielding to the event loop while nothing is queued. */
  async #receiveUntil(what: string, handle: (m: NlMessage) => boolean): Promise<void> {
    const deadline = Date.now() + this.#timeoutMs;
    for (;;) {
      this.#check(what);
      const d = this.#recvOnce();
      if (d === null) {
        if (Date.now() > deadline) {
          throw new NetlinkError(ETIMEDOUT, `${what}: no answer within ${this.#timeoutMs} ms`);
        }
        await systemClock.sleep(1); // yield to the event loop until the kernel answers
        continue;
      }
      for (const m of parseMessages(d)) if (handle(m)) return;
    }
  }

  /**
   * Send requests in batches and report each one's outcome. Every request
   * is attempted.
   *
   * @param requests The requests.
   * @returns One entry per request: null on success, else its error.
   * @throws {NetlinkError} When the socket fails (send error, lost replies, timeout).
   */
  execute(requests: readonly NlRequest[]): Promise<(NetlinkError | null)[]> {
    return this.executeBatch(requestEncoder, requests);
  }

  /**
   * Encode `items` straight into a send buffer, chunk by chunk, each chunk
   * one send followed by the ack barrier, and report each outcome. One
   * {@link executeBatches} part.
   *
   * @param encoder How to encode and describe one item.
   * @param items The items (e.g. 5000 routes).
   * @param onChunk As {@link BatchPart.onChunk}.
   * @returns One entry per item: null on success, else its error.
   * @throws {NetlinkError} When the socket fails (send error, lost replies, timeout).
   */
  async executeBatch<T>(
    encoder: BatchEncoder<T>,
    items: readonly T[],
    onChunk?: ChunkListener,
  ): Promise<(NetlinkError | null)[]> {
    return (await this.executeBatches([{ encoder, items, onChunk } as BatchPart<unknown>]))[0];
  }

  /**
   * Run batches one after the other, each encoded straight into a send
   * buffer chunk by chunk, each chunk one send followed by the ack barrier,
   * and report each item's outcome. Every request is attempted.
   *
   * With a background writer, and more than one chunk's worth of requests
   * in all, the chunks are pipelined: while the kernel works through chunk
   * k (inside the send, on the writer's thread), this thread encodes chunk
   * k + 1, then hands earlier outcomes to their part's `onChunk` for as
   * long as the kernel is still busy. Chunk k + 1 is sent only after the
   * kernel has finished chunk k, so the requests take effect in order, also
   * across parts. Outcomes the kernel gave no time for wait (up to
   * {@link MAX_WAITING_OUTCOMES} items) for a chunk it works on longer: a
   * neighbour or fdb chunk takes the kernel about a millisecond, a route
   * chunk tens of them once thousands of routes share a device. Every
   * outcome is handed over, in order, before this returns.
   *
   * @param parts The batches, in the order they must take effect.
   * @returns Per part, one entry per item: null on success, else its error.
   * @throws {NetlinkError} When the socket fails (send error, lost replies, timeout).
   */
  executeBatches(parts: readonly BatchPart<unknown>[]): Promise<(NetlinkError | null)[][]> {
    return this.lock(async () => {
      this.#check("send netlink requests");
      const results = parts.map((p) => new Array<NetlinkError | null>(p.items.length).fill(null));
      const size = this.#chunkSize;
      let flip = 0;
      const encode = (part: number, start: number): Chunk | null => {
        while (part < parts.length && start >= parts[part].items.length) {
          [part, start] = [part + 1, 0];
        }
        if (part >= parts.length) return null;
        const { encoder, items } = parts[part];
        const end = Math.min(items.length, start + size);
        const w = this.#writers[flip ^= 1];
        w.reset();
        if (this.#seq > 0x7fffffff - (end - start) - 2) this.#seq = 0; // keep a chunk's seqs contiguous
        const first = this.#seq + 1;
        for (let i = start; i < end; i++) encoder.encode(w, items[i], this.#nextSeq());
        const barrier = this.#nextSeq();
        w.message(NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, barrier, () => {});
        return { part, start, end, first, barrier, bytes: w.view() };
      };
      // outcomes not yet handed over, in slices short enough that the kernel never waits long
      const waiting: { part: number; start: number; end: number }[] = [];
      let waitingItems = 0;
      const queue = (c: Chunk) => {
        if (!parts[c.part].onChunk) return;
        for (let s = c.start; s < c.end; s += REPORT_SLICE) {
          waiting.push({ part: c.part, start: s, end: Math.min(c.end, s + REPORT_SLICE) });
        }
        waitingItems += c.end - c.start;
      };
      const reportOne = () => {
        const r = waiting.shift()!;
        waitingItems -= r.end - r.start;
        parts[r.part].onChunk!(r.start, r.end, results[r.part]);
      };
      // a batch of one chunk's size has nothing to overlap: handing it to another thread
      // and back would only add two wake-ups to a peer update's latency
      const total = parts.reduce((n, p) => n + p.items.length, 0);
      const background = total > size ? this.#background : null;
      let next = encode(0, 0);
      while (next) {
        const c: Chunk = next;
        const { encoder, items } = parts[c.part];
        const count = c.end - c.start;
        const sending = this.#startSend(
          background,
          c.bytes,
          count === 1 ? encoder.describe(items[c.start]) : `${count} requests`,
        );
        try {
          next = encode(c.part, c.end);
          while (waiting.length > 0 && (sending.busy() || waitingItems > MAX_WAITING_OUTCOMES)) {
            reportOne();
          }
        } finally {
          sending.finish(); // also when encoding or a listener threw: the buffer is ours again
        }
        const out = results[c.part];
        await this.#receiveUntil(`ack of ${count} requests`, (m) => {
          if (m.type !== NLMSG_ERROR) return false;
          const e = decodeError(m);
          if (e.request.seq === c.barrier) return true;
          const i = c.start + (e.request.seq - c.first);
          if (e.errno !== 0 && i >= c.start && i < c.end) {
            out[i] = new NetlinkError(e.errno, encoder.describe(items[i]), e.extMessage);
          }
          return false;
        });
        queue(c);
      }
      while (waiting.length > 0) reportOne();
      return results;
    });
  }

  /**
   * Start sending: on the background writer when one is given, else in place
   * (then `finish` has nothing left to do).
   */
  #startSend(
    bg: BackgroundWriter | null,
    bytes: Uint8Array,
    what: string,
  ): { busy(): boolean; finish(): void } {
    if (!bg || bg.start(this.#fd, bytes) !== 0) {
      this.#send(bytes, what); // no AIO, or it could not queue the write
      return { busy: () => false, finish: () => {} };
    }
    return {
      busy: () => bg.busy(),
      finish: () => {
        const n = bg.finish();
        if (n >= 0) return;
        if (-n === EINTR) this.#send(bytes, what); // nothing was sent: send it in place
        else throw new NetlinkError(-n, `write: ${what}`);
      },
    };
  }

  /**
   * Run a dump request and collect every reply message (restarting when the
   * kernel flags the dump as interrupted by concurrent changes).
   *
   * @param request A request with `NLM_F_DUMP`.
   * @returns The reply messages (copies, safe to keep).
   * @throws {NetlinkError} When the kernel refuses the dump or the socket fails.
   */
  dump(request: NlRequest): Promise<NlMessage[]> {
    return this.lock(async () => {
      for (let attempt = 0;; attempt++) {
        this.#check(request.describe());
        const seq = this.#nextSeq();
        this.#send(
          encodeMessage(request.type, request.flags | NLM_F_REQUEST, seq, request.body),
          request.describe(),
        );
        const out: NlMessage[] = [];
        let interrupted = false;
        await this.#receiveUntil(request.describe(), (m) => {
          if (m.seq !== seq) return false;
          if (m.flags & NLM_F_DUMP_INTR) interrupted = true;
          if (m.type === NLMSG_DONE) return true;
          if (m.type === NLMSG_ERROR) {
            const e = decodeError(m);
            if (e.errno !== 0) throw new NetlinkError(e.errno, request.describe(), e.extMessage);
            return true;
          }
          if (m.type === NLMSG_OVERRUN) throw new NetlinkError(ENOBUFS, request.describe());
          out.push(m);
          return false;
        });
        if (!interrupted || attempt >= 4) return out;
      }
    });
  }

  /**
   * Send one request that the kernel answers with one message (e.g.
   * RTM_GETLINK by name).
   *
   * @param request The request.
   * @returns The reply.
   * @throws {NetlinkError} With the kernel's errno (ENODEV for a missing link, …).
   */
  get(request: NlRequest): Promise<NlMessage> {
    return this.lock(async () => {
      this.#check(request.describe());
      const seq = this.#nextSeq();
      this.#send(
        encodeMessage(request.type, request.flags | NLM_F_REQUEST, seq, request.body),
        request.describe(),
      );
      let reply: NlMessage | undefined;
      await this.#receiveUntil(request.describe(), (m) => {
        if (m.seq !== seq) return false;
        if (m.type === NLMSG_ERROR) {
          const e = decodeError(m);
          if (e.errno !== 0) throw new NetlinkError(e.errno, request.describe(), e.extMessage);
          return false;
        }
        reply = m;
        return true;
      });
      return reply!;
    });
  }

  /**
   * Read every queued multicast datagram (or the oldest `max`) without
   * blocking: up to {@link DRAIN_BATCH} per `recvmmsg` call (one system
   * call, one FFI call), since a large write makes the kernel queue one
   * notification datagram per object and a call each cost more than the
   * message itself.
   *
   * @param visit Called with each datagram in place, `bytes[at, at + len)`
   *   of a receive buffer that the next call overwrites (copy what you keep).
   * @param max Read at most this many datagrams.
   * @returns Whether the kernel dropped some (ENOBUFS) or a datagram did not
   *   fit its slot (then it is lost too, and reported the same way).
   * @throws {NetlinkError} On other receive errors.
   */
  drain(
    visit: (bytes: Uint8Array, at: number, len: number) => void,
    max = Infinity,
  ): { overrun: boolean } {
    this.#check("read netlink events");
    const b = this.#batch ??= drainBatch(this.#libc);
    let overrun = false;
    for (let calls = 0; calls < 4096 && max > 0; calls++) {
      const want = Math.min(DRAIN_BATCH, max);
      const n = this.#libc.fn.recvmmsg(this.#fd, b.headers, want, MSG_DONTWAIT, null);
      if (n < 0) {
        const errno = this.#libc.errno();
        if (errno === EINTR) continue;
        if (errno === EAGAIN) break;
        if (errno === ENOBUFS) {
          overrun = true;
          continue;
        }
        throw new NetlinkError(errno, "recvmmsg");
      }
      for (let i = 0; i < n; i++) {
        const h = i * MMSGHDR;
        if (b.view.getUint32(h + MSG_FLAGS, true) & MSG_TRUNC) {
          overrun = true; // the rest of the datagram is gone: as good as dropped
          continue;
        }
        visit(b.data, i * DRAIN_SLOT, b.view.getUint32(h + MSG_LEN, true));
      }
      max -= n;
      if (n < want) break;
    }
    return { overrun };
  }
}

const SO_ATTACH_FILTER = 26;
/** Classic BPF opcodes: load half-word / word at an absolute offset, jump if equal, return. */
const BPF_LD_H_ABS = 0x28;
const BPF_LD_W_ABS = 0x20;
const BPF_JEQ_K = 0x15;
const BPF_RET_K = 0x06;

/** Datagrams read per `recvmmsg` in {@link NetlinkSocket.drain}. */
export const DRAIN_BATCH = 32;
/** Room for one notification datagram (link notifications are the largest, a few KiB). */
const DRAIN_SLOT = 32 * 1024;
const MSG_DONTWAIT = 0x40;
/** `struct mmsghdr`: `struct msghdr` (56 bytes on 64-bit Linux) and `msg_len`, padded. */
const MMSGHDR = 64;
const IOVEC = 16;
/** Offset of `msg_hdr.msg_flags` in a `struct mmsghdr`. */
const MSG_FLAGS = 48;
/** Offset of `msg_len` in a `struct mmsghdr`. */
const MSG_LEN = 56;

/** The buffers of one `recvmmsg`: headers with one iovec each, pointing at the slots of `data`. */
interface DrainBatch {
  readonly headers: Uint8Array;
  /** Over `headers`. */
  readonly view: DataView;
  readonly data: Uint8Array;
  /** Over `data` (the datagrams' own headers). */
  readonly slots: DataView;
}

function drainBatch(libc: Libc): DrainBatch {
  const headers = new Uint8Array(new ArrayBuffer(DRAIN_BATCH * (MMSGHDR + IOVEC)));
  const data = new Uint8Array(new ArrayBuffer(DRAIN_BATCH * DRAIN_SLOT));
  const view = new DataView(headers.buffer);
  const base = libc.addressOf(headers);
  const dataBase = libc.addressOf(data);
  for (let i = 0; i < DRAIN_BATCH; i++) {
    const h = i * MMSGHDR;
    const iov = DRAIN_BATCH * MMSGHDR + i * IOVEC;
    view.setBigUint64(h + 16, BigInt(base + iov), true); // msg_iov
    view.setBigUint64(h + 24, 1n, true); // msg_iovlen
    view.setBigUint64(iov, BigInt(dataBase + i * DRAIN_SLOT), true); // iov_base
    view.setBigUint64(iov + 8, BigInt(DRAIN_SLOT), true); // iov_len
  }
  return { headers, view, data, slots: new DataView(data.buffer) };
}
