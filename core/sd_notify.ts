/**
 * systemd's readiness protocol (`sd_notify(3)`): under a `Type=notify` unit,
 * systemd passes a unix datagram socket in `$NOTIFY_SOCKET`; the service
 * sends newline-separated `KEY=value` assignments to it — `READY=1` once it
 * serves, `STATUS=…` for `systemctl status`, `STOPPING=1` when it begins to
 * shut down. Without the variable every call is a no-op, so the agent calls
 * these unconditionally.
 *
 * `node:dgram` has no unix sockets, so the datagram goes out through the
 * libc table (`socket`, `sendto`, `close`): one socket per message, as
 * libsystemd does. Addresses are a filesystem path (`/run/systemd/notify`)
 * or an abstract name written with a leading `@`.
 *
 * @module
 */

import process from "node:process";
import { SyscallError } from "./errno.ts";
import { loadLibc } from "./libc.ts";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
/** Do not raise SIGPIPE when the receiver is gone. */
const MSG_NOSIGNAL = 0x4000;
/** `sizeof(struct sockaddr_un)`: a 2-byte family and a 108-byte path. */
const SOCKADDR_UN_SIZE = 110;
const SUN_PATH_MAX = 108;

/**
 * The assignments of one notification, sent in insertion order, e.g.
 * `{ READY: 1, STATUS: "lease 10.5.3.0/24" }`.
 */
export type NotifyState = Readonly<Record<string, string | number>>;

/** Options of {@link sdNotify}. */
export interface SdNotifyOptions {
  /** Where `NOTIFY_SOCKET` is read from (default `process.env`). */
  readonly env?: Record<string, string | undefined>;
}

/**
 * Encode `$NOTIFY_SOCKET` as a `struct sockaddr_un` and its length.
 *
 * @param socket An absolute path, or `@name` for an abstract socket.
 * @returns The address bytes and the length to pass to `sendto`.
 * @throws {TypeError} When the value is neither an absolute path nor `@name`,
 *   or is too long for a unix socket address.
 * @example
 * ```ts
 * const { address, length } = notifySocketAddress("@weft-test");
 * // address[2] === 0 (abstract), length === 2 + 1 + 9
 * ```
 */
export function notifySocketAddress(socket: string): { address: Uint8Array; length: number } {
  const abstract = socket.startsWith("@");
  if (!abstract && !socket.startsWith("/")) {
    throw new TypeError(
      `Cannot notify systemd: NOTIFY_SOCKET must be an absolute path or an abstract name starting with '@' (weft does not speak vsock), current value is ${
        JSON.stringify(socket)
      }`,
    );
  }
  const name = new TextEncoder().encode(abstract ? socket.slice(1) : socket);
  // a path needs its NUL terminator, an abstract name its leading NUL: 107 bytes either way
  const room = SUN_PATH_MAX - 1;
  if (name.length === 0 || name.length > room) {
    throw new TypeError(
      `Cannot notify systemd: NOTIFY_SOCKET must name 1 to ${room} bytes, current value is ${
        JSON.stringify(socket)
      } (${name.length} bytes)`,
    );
  }
  const address = new Uint8Array(SOCKADDR_UN_SIZE);
  new DataView(address.buffer).setUint16(0, AF_UNIX, true);
  address.set(name, abstract ? 3 : 2);
  // family + name + one NUL (the path's terminator, or the abstract name's first byte),
  // as libsystemd counts it: an abstract name is matched on exactly these bytes
  const length = 2 + 1 + name.length;
  return { address, length };
}

/**
 * Render a notification: `KEY=value` lines joined by newlines.
 *
 * @param state The assignments, in order.
 * @returns The datagram's text.
 * @throws {TypeError} When a key is not upper-case letters, digits and `_`,
 *   or a value holds a newline (it would start a new assignment).
 * @example
 * ```ts
 * formatNotifyState({ READY: 1, STATUS: "ready" }); // "READY=1\nSTATUS=ready"
 * ```
 */
export function formatNotifyState(state: NotifyState): string {
  const lines: string[] = [];
  for (const [key, value] of Object.entries(state)) {
    if (!/^[A-Z][A-Z0-9_]*$/.test(key)) {
      throw new TypeError(
        `Cannot notify systemd: keys are upper-case words like READY or STATUS, current value is ${
          JSON.stringify(key)
        }`,
      );
    }
    const text = String(value);
    if (text.includes("\n")) {
      throw new TypeError(
        `Cannot notify systemd: the value of ${key} must be one line, current value is ${
          JSON.stringify(text)
        }`,
      );
    }
    lines.push(`${key}=${text}`);
  }
  if (lines.length === 0) {
    throw new TypeError("Cannot notify systemd: the state is empty; give at least one assignment");
  }
  return lines.join("\n");
}

/**
 * Send a notification to systemd, when `$NOTIFY_SOCKET` is set.
 *
 * @param state The assignments, e.g. `{ READY: 1, STATUS: "…" }`.
 * @param options Where to read `NOTIFY_SOCKET` from.
 * @returns True when sent, false when `NOTIFY_SOCKET` is not set (not under
 *   a `Type=notify` unit).
 * @throws {TypeError} When `NOTIFY_SOCKET` or the state is malformed.
 * @throws {SyscallError} When the socket cannot be made or the datagram not
 *   sent (e.g. `ECONNREFUSED`: nothing listens at that address).
 * @example
 * ```ts
 * await sdNotify({ READY: 1, STATUS: "lease 10.5.3.0/24, 2 peers" });
 * ```
 */
export async function sdNotify(
  state: NotifyState,
  options: SdNotifyOptions = {},
): Promise<boolean> {
  const socketName = (options.env ?? process.env).NOTIFY_SOCKET;
  if (!socketName) return false;
  const { address, length } = notifySocketAddress(socketName);
  const message = new TextEncoder().encode(formatNotifyState(state));
  const libc = await loadLibc();
  const fd = libc.fn.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new SyscallError(libc.errno(), "socket(AF_UNIX, SOCK_DGRAM) for sd_notify");
  try {
    const sent = libc.fn.sendto(fd, message, message.length, MSG_NOSIGNAL, address, length);
    if (sent < 0) {
      const errno = libc.errno();
      throw new SyscallError(
        errno,
        `sendto(NOTIFY_SOCKET=${socketName})`,
        "systemd's notify socket is not reachable; is the unit's NotifyAccess= and PrivateNetwork= compatible with weft, or is NOTIFY_SOCKET stale?",
      );
    }
    return true;
  } finally {
    libc.fn.close(fd);
  }
}

/**
 * Tell systemd the service is ready (`READY=1`), with an optional status line.
 *
 * @param status Shown by `systemctl status`, e.g. the lease.
 * @param options Where to read `NOTIFY_SOCKET` from.
 * @returns Whether a notification was sent.
 * @throws {SyscallError} When sending fails.
 */
export function sdNotifyReady(status?: string, options?: SdNotifyOptions): Promise<boolean> {
  return sdNotify(status === undefined ? { READY: 1 } : { READY: 1, STATUS: status }, options);
}

/**
 * Update the status line `systemctl status` shows (`STATUS=…`).
 *
 * @param status One line of text.
 * @param options Where to read `NOTIFY_SOCKET` from.
 * @returns Whether a notification was sent.
 * @throws {SyscallError} When sending fails.
 */
export function sdNotifyStatus(status: string, options?: SdNotifyOptions): Promise<boolean> {
  return sdNotify({ STATUS: status }, options);
}

/**
 * Tell systemd the service is stopping (`STOPPING=1`).
 *
 * @param status Optional status line, e.g. why.
 * @param options Where to read `NOTIFY_SOCKET` from.
 * @returns Whether a notification was sent.
 * @throws {SyscallError} When sending fails.
 */
export function sdNotifyStopping(status?: string, options?: SdNotifyOptions): Promise<boolean> {
  return sdNotify(
    status === undefined ? { STOPPING: 1 } : { STOPPING: 1, STATUS: status },
    options,
  );
}
