/**
 * The kernel side of the udp engine: the UDP socket (created on the main
 * thread, optionally inside a network namespace) and, inside the Worker, the
 * {@link PacketDevice} and {@link PacketBind} over the TUN and socket file
 * descriptors, plus the poll(2) that waits for either.
 *
 * Two socket paths: `mmsg` (recvmmsg/sendmmsg, one system call per batch)
 * and `single` (recvfrom/sendto per datagram). `mmsg` needs the addresses of
 * the batch buffers for its msghdr/iovec arrays; they are written once per
 * batch when first used.
 *
 * @module
 */

import { loadLibc } from "../../core/libc.ts";
import { withNetns } from "../../datapath/netns.ts";
import { SyscallError } from "../../core/errno.ts";
import type { PacketBatch, PacketBind, PacketDevice } from "./loop.ts";

const AF_INET = 2;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0x80000;
const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
const SO_SNDBUFFORCE = 32;
const SO_RCVBUFFORCE = 33;
const MSG_DONTWAIT = 0x40;
const EAGAIN = 11;
const EINTR = 4;
const POLLIN = 1;

const SOL_UDP = 17;
const UDP_SEGMENT = 103;
const UDP_GRO = 104;
const EIO = 5;
const EINVAL = 22;
const EMSGSIZE = 90;

/** Options for {@link createKernelIo}. */
export interface KernelIoOptions {
  /** Socket path (default `mmsg`). */
  readonly mode?: SocketIoMode;
  /** The TUN fd carries virtio headers (opened with `offload`). */
  readonly vnetHdr?: boolean;
  /** Use UDP GSO for sends and UDP GRO for receives when the kernel has them (default true; `mmsg` only). */
  readonly gso?: boolean;
}

/** Options for {@link openUdpSocket}. */
export interface UdpSocketOptions {
  /** Local IPv4 address as uint32 (0 = any; flannel binds the interface address). */
  readonly address?: number;
  /** Local port (0 = any free one). */
  readonly port: number;
  /** Network namespace to create the socket in; default this thread's. */
  readonly netns?: string;
  /** Send and receive buffer size (SO_*BUFFORCE, else SO_*BUF). Default 4 MiB. */
  readonly bufferBytes?: number;
}

/** An open, bound UDP socket. */
export interface UdpSocket {
  readonly fd: number;
  /** The bound port (useful with port 0). */
  readonly port: number;
  /** Close the socket. Idempotent. */
  close(): void;
}

function sockaddrIn(address: number, port: number): Uint8Array {
  const sa = new Uint8Array(16);
  const v = new DataView(sa.buffer);
  v.setUint16(0, AF_INET, true);
  v.setUint16(2, port, false);
  v.setUint32(4, address, false);
  return sa;
}

/**
 * Create a blocking UDP socket bound to `address:port` with large buffers.
 * The engine receives with MSG_DONTWAIT and sends blocking, so a full send
 * buffer slows the sender instead of dropping.
 *
 * @param options Address, port, namespace, buffer size.
 * @returns The socket.
 * @throws {SyscallError} When socket or bind fails (`EADDRINUSE`: another process has the port).
 * @example
 * ```ts
 * const sock = await openUdpSocket({ port: 8285 });
 * ```
 */
export async function openUdpSocket(options: UdpSocketOptions): Promise<UdpSocket> {
  const libc = await loadLibc();
  const fn = libc.fn;
  const errno = libc.errno;
  const address = options.address ?? 0;
  const fd = await withNetns(options.netns, () => {
    const fd = fn.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new SyscallError(errno(), "socket(AF_INET, SOCK_DGRAM)");
    return fd;
  });
  try {
    const int = new Uint8Array(4);
    const iv = new DataView(int.buffer);
    iv.setInt32(0, options.bufferBytes ?? 4 * 1024 * 1024, true);
    if (fn.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, int, 4) !== 0) {
      fn.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, int, 4);
    }
    if (fn.setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, int, 4) !== 0) {
      fn.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, int, 4);
    }
    const sa = sockaddrIn(address, options.port);
    if (fn.bind(fd, sa, 16) !== 0) {
      const ip = [address >>> 24, (address >>> 16) & 255, (address >>> 8) & 255, address & 255];
      throw new SyscallError(errno(), `bind(udp ${ip.join(".")}:${options.port})`);
    }
    const len = new Uint32Array([16]);
    fn.getsockname(fd, sa, len);
    const port = new DataView(sa.buffer).getUint16(2, false);
    let open = true;
    const close = fn.close;
    return {
      fd,
      port,
      close() {
        if (!open) return;
        open = false;
        close(fd);
      },
    };
  } catch (e) {
    fn.close(fd);
    throw e;
  }
}

/** How the socket side moves datagrams. */
export type SocketIoMode = "mmsg" | "single";

/** The engine's kernel I/O inside a Worker. */
export interface KernelIo {
  readonly tun: PacketDevice;
  readonly bind: PacketBind;
  /**
   * Block until the TUN device or the socket is readable, or `timeoutMs`
   * passes (poll(2)).
   */
  wait(timeoutMs: number): void;
  /** Release the library handle (the fds belong to the caller). */
  close(): void;
}

const MMSGHDR = 64;
const IOVEC = 16;
const SOCKADDR = 16;
const CONTROL = 32;
const PER_MESSAGE = MMSGHDR + IOVEC + SOCKADDR + CONTROL;

/** The kernel structures of one batch for recvmmsg/sendmmsg. */
interface MmsgLayout {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly u32: Uint32Array;
  /** `bytes` from message i on (what sendmmsg gets to skip a failed one). */
  readonly from: Uint8Array[];
  readonly iovOff: number;
  readonly saOff: number;
  readonly ctlOff: number;
  /** Address of the control area (for msg_control). */
  readonly ctlBase: number;
}

/**
 * Bind the TUN and socket fds for the engine. Call inside the thread that
 * runs the engine.
 *
 * @param tunFd Non-blocking TUN descriptor.
 * @param sockFd UDP socket descriptor.
 * @param options Socket path, virtio headers, GSO/GRO.
 * @returns The devices and the wait function.
 * @throws {Error} When the runtime has no FFI.
 */
export async function createKernelIo(
  tunFd: number,
  sockFd: number,
  options: KernelIoOptions = {},
): Promise<KernelIo> {
  const mode = options.mode ?? "mmsg";
  const libc = await loadLibc();
  const addressOf = libc.addressOf;
  const fn = libc.fn;
  const read = fn.read;
  const write = fn.write;
  const errno = libc.errno;

  const tun: PacketDevice = {
    vnetHdr: options.vnetHdr === true,
    read(buf) {
      const n = read(tunFd, buf, buf.length);
      if (n >= 0) return n;
      const e = errno();
      if (e === EAGAIN || e === EINTR) return 0;
      throw new SyscallError(
        e,
        `read(TUN fd ${tunFd})`,
        "the TUN device is gone (was flannel0 deleted?)",
      );
    },
    write(buf, len) {
      let n = write(tunFd, buf, len);
      if (n < 0 && errno() === EAGAIN) n = write(tunFd, buf, len);
      return n === len;
    },
  };

  // GSO/GRO: probe the socket options; both or neither.
  let gso = false;
  if (mode === "mmsg" && options.gso !== false) {
    const int = new Uint8Array(4);
    const iv = new DataView(int.buffer);
    iv.setInt32(0, 0, true);
    if (fn.setsockopt(sockFd, SOL_UDP, UDP_SEGMENT, int, 4) === 0) {
      iv.setInt32(0, 1, true);
      gso = fn.setsockopt(sockFd, SOL_UDP, UDP_GRO, int, 4) === 0;
    }
  }

  const layouts = new Map<PacketBatch, MmsgLayout>();
  const layoutFor = (batch: PacketBatch): MmsgLayout => {
    let l = layouts.get(batch);
    if (l) return l;
    const cap = batch.capacity;
    const iovOff = cap * MMSGHDR;
    const saOff = iovOff + cap * IOVEC;
    const ctlOff = saOff + cap * SOCKADDR;
    const bytes = new Uint8Array(new ArrayBuffer(Math.max(4096, cap * PER_MESSAGE)));
    const view = new DataView(bytes.buffer);
    const base = addressOf(bytes);
    const data = addressOf(batch.buffer);
    for (let i = 0; i < cap; i++) {
      const h = i * MMSGHDR;
      view.setBigUint64(h, BigInt(base + saOff + i * SOCKADDR), true); // msg_name
      view.setUint32(h + 8, SOCKADDR, true); // msg_namelen
      view.setBigUint64(h + 16, BigInt(base + iovOff + i * IOVEC), true); // msg_iov
      view.setBigUint64(h + 24, 1n, true); // msg_iovlen
      const iov = iovOff + i * IOVEC;
      view.setBigUint64(iov, BigInt(data + i * batch.slotSize), true); // iov_base
      view.setBigUint64(iov + 8, BigInt(batch.slotSize), true); // iov_len
      view.setUint16(saOff + i * SOCKADDR, AF_INET, true);
    }
    const from: Uint8Array[] = [];
    for (let i = 0; i < cap; i++) from.push(bytes.subarray(i * MMSGHDR));
    l = {
      bytes,
      view,
      u32: new Uint32Array(bytes.buffer),
      from,
      iovOff,
      saOff,
      ctlOff,
      ctlBase: base + ctlOff,
    };
    layouts.set(batch, l);
    return l;
  };

  // One datagram by sendto, for GSO sends the kernel refused.
  const fallbackSa = new Uint8Array(16);
  const fallbackView = new DataView(fallbackSa.buffer);
  fallbackView.setUint16(0, AF_INET, true);
  const sendSeparately = (batch: PacketBatch, i: number): boolean => {
    fallbackView.setUint16(2, batch.ports[i], false);
    fallbackView.setUint32(4, batch.addrs[i], false);
    const size = batch.gso[i] || batch.lens[i];
    const slot = batch.slots[i];
    let ok = true;
    for (let o = 0; o < batch.lens[i]; o += size) {
      const len = Math.min(size, batch.lens[i] - o);
      if (fn.sendto(sockFd, slot.subarray(o, o + len), len, 0, fallbackSa, 16) !== len) ok = false;
    }
    return ok;
  };

  let bind: PacketBind;
  if (mode === "mmsg") {
    const recvmmsg = fn.recvmmsg;
    const sendmmsg = fn.sendmmsg;
    bind = {
      get gso() {
        return gso;
      },
      recv(batch) {
        const l = layoutFor(batch);
        const { view, u32 } = l;
        if (gso) {
          for (let i = 0; i < batch.capacity; i++) {
            const h = i * MMSGHDR;
            view.setBigUint64(h + 32, BigInt(l.ctlBase + i * CONTROL), true); // msg_control
            u32[(h + 40) >> 2] = CONTROL; // msg_controllen (low word)
          }
        }
        const n = recvmmsg(sockFd, l.bytes, batch.capacity, MSG_DONTWAIT, null);
        if (n <= 0) return 0;
        for (let i = 0; i < n; i++) {
          const h = i * MMSGHDR;
          const sa = l.saOff + i * SOCKADDR;
          batch.lens[i] = u32[(h + 56) >> 2];
          batch.ports[i] = view.getUint16(sa + 2, false);
          batch.addrs[i] = view.getUint32(sa + 4, false);
          u32[(h + 8) >> 2] = SOCKADDR; // msg_namelen is value-result
          let seg = 0;
          if (gso && u32[(h + 40) >> 2] >= 20) {
            const c = l.ctlOff + i * CONTROL;
            if (view.getInt32(c + 8, true) === SOL_UDP && view.getInt32(c + 12, true) === UDP_GRO) {
              seg = view.getInt32(c + 16, true);
            }
          }
          batch.gso[i] = seg;
        }
        return n;
      },
      send(batch, count) {
        const l = layoutFor(batch);
        const { view, u32 } = l;
        for (let i = 0; i < count; i++) {
          u32[(l.iovOff + i * IOVEC + 8) >> 2] = batch.lens[i];
          const sa = l.saOff + i * SOCKADDR;
          view.setUint16(sa + 2, batch.ports[i], false);
          view.setUint32(sa + 4, batch.addrs[i], false);
          const h = i * MMSGHDR;
          const seg = gso ? batch.gso[i] : 0;
          if (seg > 0 && seg < batch.lens[i]) {
            const c = l.ctlOff + i * CONTROL;
            view.setBigUint64(c, 18n, true); // cmsg_len = CMSG_LEN(2)
            view.setInt32(c + 8, SOL_UDP, true);
            view.setInt32(c + 12, UDP_SEGMENT, true);
            view.setUint16(c + 16, seg, true);
            view.setBigUint64(h + 32, BigInt(l.ctlBase + i * CONTROL), true);
            u32[(h + 40) >> 2] = 24; // CMSG_SPACE(2)
          } else {
            view.setBigUint64(h + 32, 0n, true);
            u32[(h + 40) >> 2] = 0;
          }
        }
        let done = 0;
        let sent = 0;
        while (done < count) {
          const r = sendmmsg(sockFd, l.from[done], count - done, 0);
          if (r > 0) {
            done += r;
            sent += r;
            continue;
          }
          const e = errno();
          if (e === EINTR) continue;
          if (batch.gso[done] > 0 && (e === EIO || e === EINVAL || e === EMSGSIZE)) {
            // The device cannot segment UDP (no checksum offload): stop asking.
            if (e === EIO || e === EINVAL) gso = false;
            if (sendSeparately(batch, done)) sent++;
          }
          done++; // refused (e.g. EHOSTUNREACH): go on with the rest
        }
        for (let i = 0; i < count; i++) u32[(l.iovOff + i * IOVEC + 8) >> 2] = batch.slotSize;
        return sent;
      },
    };
  } else {
    const recvfrom = fn.recvfrom;
    const sendto = fn.sendto;
    const sa = new Uint8Array(16);
    const saView = new DataView(sa.buffer);
    const saLen = new Uint32Array(1);
    saView.setUint16(0, AF_INET, true);
    bind = {
      gso: false,
      recv(batch) {
        let n = 0;
        while (n < batch.capacity) {
          saLen[0] = 16;
          const slot = batch.slots[n];
          const r = recvfrom(sockFd, slot, slot.length, MSG_DONTWAIT, sa, saLen);
          if (r < 0) break;
          batch.lens[n] = r;
          batch.ports[n] = saView.getUint16(2, false);
          batch.addrs[n] = saView.getUint32(4, false);
          batch.gso[n] = 0;
          n++;
        }
        return n;
      },
      send(batch, count) {
        let sent = 0;
        for (let i = 0; i < count; i++) {
          saView.setUint16(2, batch.ports[i], false);
          saView.setUint32(4, batch.addrs[i], false);
          const len = batch.lens[i];
          if (sendto(sockFd, batch.slots[i], len, 0, sa, 16) === len) sent++;
        }
        return sent;
      },
    };
  }

  const pollfds = new Uint8Array(16);
  const pv = new DataView(pollfds.buffer);
  pv.setInt32(0, tunFd, true);
  pv.setInt16(4, POLLIN, true);
  pv.setInt32(8, sockFd, true);
  pv.setInt16(12, POLLIN, true);
  const poll = fn.poll;

  return {
    tun,
    bind,
    wait(timeoutMs) {
      pv.setInt16(6, 0, true);
      pv.setInt16(14, 0, true);
      poll(pollfds, 2, timeoutMs);
    },
    close() {
      // libc stays bound for the thread's life; the fds belong to their owners
    },
  };
}
