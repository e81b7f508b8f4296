/**
 * TUN devices: open `/dev/net/tun` non-blocking and attach it to a named
 * layer-3 device (`IFF_TUN | IFF_NO_PI`: reads and writes are bare IP
 * packets, as flannel's udp backend uses them). The device exists while the
 * file descriptor is open (no `IFF_PERSIST`): when the agent dies, `flannel0`
 * and its address and routes go with it, and a restarted agent creates it
 * anew. Address, MTU and routes are set through the {@link Datapath}.
 *
 * @module
 */

import { closeSync, constants, existsSync, openSync, writeFileSync } from "node:fs";
import { loadLibc } from "../core/libc.ts";
import { withNetns } from "./netns.ts";
import { SyscallError } from "../core/errno.ts";

/** `TUNSETIFF` = `_IOW('T', 202, int)`. */
const TUNSETIFF = 0x400454ca;
/** `TUNSETOFFLOAD` = `_IOW('T', 208, unsigned int)`. */
const TUNSETOFFLOAD = 0x400454d0;
const IFF_TUN = 0x0001;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
const TUN_F_CSUM = 0x01;
const TUN_F_TSO4 = 0x02;
const IFNAMSIZ = 16;
const O_CLOEXEC = 0x80000;

/** Options for {@link openTun}. */
export interface TunOptions {
  /** Device name, 1..15 characters (default `flannel0`). */
  readonly name?: string;
  /**
   * Network namespace to create the device in (a name under
   * `/var/run/netns` or a path); default: this thread's. Used by tests.
   */
  readonly netns?: string;
  /**
   * Turn IPv6 off on the device (default true), before it goes up, so the
   * kernel sends no IPv6 (router solicitations, DAD) into an IPv4-only
   * tunnel. Skipped silently when the kernel has no IPv6.
   */
  readonly disableIPv6?: boolean;
  /**
   * Ask for `IFF_VNET_HDR` with checksum and TCPv4 segmentation offload
   * (default false): every packet read or written then starts with a 10-byte
   * `virtio_net_hdr`, and the kernel hands over TCP super-packets of up to
   * 64 KiB. See {@link Tun.vnetHdr} for what was granted.
   */
  readonly offload?: boolean;
}

/** An open TUN device. */
export interface Tun {
  /** The device name the kernel gave it. */
  readonly name: string;
  /** The non-blocking file descriptor (read a packet / write a packet). */
  readonly fd: number;
  /** Packets carry a `virtio_net_hdr` (offload was asked for and granted). */
  readonly vnetHdr: boolean;
  /** The kernel accepted TSO: reads may be TCP super-packets. */
  readonly tso: boolean;
  /** Close the descriptor; the device disappears. Idempotent. */
  close(): void;
}

/**
 * Create (or attach to) a TUN device.
 *
 * @param options Name and namespace.
 * @returns The open device.
 * @throws {RangeError} When the name is empty, too long or has `/`, `%` or spaces.
 * @throws {SyscallError} When the device cannot be opened: `EBUSY` when another
 *   process holds a device of that name, `EPERM` without CAP_NET_ADMIN.
 * @throws {Error} When `/dev/net/tun` is missing or the namespace does not exist.
 * @example
 * ```ts
 * const tun = await openTun({ name: "flannel0" });
 * // … configure address/MTU/route with the Datapath, then read/write tun.fd
 * tun.close();
 * ```
 */
export async function openTun(options: TunOptions = {}): Promise<Tun> {
  const name = options.name ?? "flannel0";
  if (name.length === 0 || name.length >= IFNAMSIZ || /[\s/%:]/.test(name)) {
    throw new RangeError(
      `Cannot create TUN device: the name must be 1..15 characters without spaces, '/', '%' or ':', current value is ${
        JSON.stringify(name)
      }`,
    );
  }
  const libc = await loadLibc();
  const ifr = new Uint8Array(40);
  ifr.set(new TextEncoder().encode(name));
  const vnetHdr = options.offload === true;
  new DataView(ifr.buffer).setUint16(
    IFNAMSIZ,
    IFF_TUN | IFF_NO_PI | (vnetHdr ? IFF_VNET_HDR : 0),
    true,
  );
  const { fd, actual } = await withNetns(options.netns, () => {
    let fd: number;
    try {
      fd = openSync(
        "/dev/net/tun",
        constants.O_RDWR | constants.O_NONBLOCK | O_CLOEXEC,
      );
    } catch (e) {
      throw new Error(
        `Cannot open /dev/net/tun to create ${name}: ${(e as Error).message}; ` +
          "load the tun module (modprobe tun) or give the container the /dev/net/tun device",
        { cause: e },
      );
    }
    if (libc.fn.ioctl(fd, TUNSETIFF, libc.addressOf(ifr)) !== 0) {
      const errno = libc.errno();
      closeSync(fd);
      throw new SyscallError(errno, `ioctl(TUNSETIFF ${name})`, hintFor(errno, name));
    }
    const end = ifr.indexOf(0);
    const actual = new TextDecoder().decode(ifr.subarray(0, end < 0 ? IFNAMSIZ : end));
    if (options.disableIPv6 ?? true) {
      // /proc/sys/net belongs to the namespace of the thread that opens it.
      const knob = `/proc/sys/net/ipv6/conf/${actual}/disable_ipv6`;
      if (existsSync(knob)) writeFileSync(knob, "1");
    }
    return { fd, actual };
  });
  // Without TSO the kernel segments before the device; vnet headers stay (all GSO_NONE).
  const tso = vnetHdr && libc.fn.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4) === 0;
  let open = true;
  return {
    name: actual,
    fd,
    vnetHdr,
    tso,
    close() {
      if (!open) return;
      open = false;
      closeSync(fd);
    },
  };
}

function hintFor(errno: number, name: string): string | undefined {
  if (errno === 16) {
    return `another process holds ${name} (is another agent running?); stop it or pick another name`;
  }
  if (errno === 22) {
    return `a device named ${name} exists and is not a TUN device; delete it (ip link del ${name})`;
  }
  if (errno === 1) return "run weft as root or with CAP_NET_ADMIN";
  return undefined;
}
