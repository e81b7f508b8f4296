/**
 * systemd's readiness protocol, as flanneld speaks it (go-systemd's
 * `SdNotify(false, "READY=1")` once the backend runs): one datagram to the
 * unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the
 * abstract namespace), so a `Type=notify` unit starts when the agent is
 * ready. Without `$NOTIFY_SOCKET` nothing is sent.
 *
 * A small function of the command line on purpose: the agent only calls an
 * injected hook when it becomes ready (see `main`'s `notify` option).
 *
 * @module
 */

import { loadLibc } from "../core/libc.ts";
import { errnoName } from "../core/errno.ts";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0x80000;
const MSG_NOSIGNAL = 0x4000;
/** `sizeof(sun_path)`. */
const SUN_PATH = 108;

/**
 * The `sockaddr_un` for a `$NOTIFY_SOCKET` value (pure).
 *
 * @param socket A path (`/run/systemd/notify`) or `@name` (abstract).
 * @returns The address bytes and the length to pass to sendto(2).
 * @throws {RangeError} When the value is neither, or longer than sun_path.
 * @example
 * ```ts
 * notifyAddress("@abc").length; // 2 + 1 + 3
 * ```
 */
export function notifyAddress(socket: string): { bytes: Uint8Array; length: number } {
  if (!socket.startsWith("/") && !socket.startsWith("@")) {
    throw new RangeError(
      `Cannot notify systemd: NOTIFY_SOCKET must be an absolute path or @name, current value is ${
        JSON.stringify(socket)
      }`,
    );
  }
  const name = new TextEncoder().encode(socket);
  if (name.length >= SUN_PATH) {
    throw new RangeError(
      `Cannot notify systemd: NOTIFY_SOCKET is longer than ${
        SUN_PATH - 1
      } bytes: current value is ${JSON.stringify(socket)}`,
    );
  }
  const bytes = new Uint8Array(2 + SUN_PATH);
  new DataView(bytes.buffer).setUint16(0, AF_UNIX, true);
  bytes.set(name, 2);
  if (socket.startsWith("@")) {
    bytes[2] = 0; // abstract: a leading NUL, and the length says where the name ends
    return { bytes, length: 2 + name.length };
  }
  return { bytes, length: 2 + name.length + 1 };
}

/**
 * Send a state (e.g. `READY=1`) to systemd when `$NOTIFY_SOCKET` is set.
 *
 * @param state Newline-separated assignments, e.g. `READY=1`.
 * @param env The environment holding `NOTIFY_SOCKET`.
 * @returns Whether a datagram was sent (false without `NOTIFY_SOCKET`).
 * @throws {Error} When the socket cannot be reached, with the errno name.
 * @example
 * ```ts
 * await sdNotify("READY=1", process.env);
 * ```
 */
export async function sdNotify(
  state: string,
  env: Record<string, string | undefined>,
): Promise<boolean> {
  const socket = env.NOTIFY_SOCKET;
  if (!socket) return false;
  const { bytes, length } = notifyAddress(socket);
  const libc = await loadLibc();
  const fd = libc.fn.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw new Error(
      `Cannot notify systemd: socket(AF_UNIX) failed with ${errnoName(libc.errno())}`,
    );
  }
  try {
    const message = new TextEncoder().encode(state);
    const sent = Number(libc.fn.sendto(fd, message, message.length, MSG_NOSIGNAL, bytes, length));
    if (sent !== message.length) {
      throw new Error(
        `Cannot notify systemd at NOTIFY_SOCKET=${socket}: sendto failed with ${
          errnoName(libc.errno())
        }; is the unit's NotifyAccess= set to main or all?`,
      );
    }
    return true;
  } finally {
    libc.fn.close(fd);
  }
}
