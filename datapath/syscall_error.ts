/**
 * The error raised when a libc call made through FFI fails: which call,
 * the errno, and how to fix the usual causes.
 *
 * @module
 */

import { errnoName } from "./nl_codec.ts";

/**
 * A system call failed. `code` is the errno name (`EPERM`, `EBUSY`, …).
 *
 * @example
 * ```ts
 * try { await openTun({ name: "flannel0" }); } catch (e) {
 *   if (e instanceof SyscallError && e.code === "EBUSY") { … }
 * }
 * ```
 */
export class SyscallError extends Error {
  override name = "SyscallError";
  /** Positive errno. */
  readonly errno: number;
  /** Errno name, e.g. `EBUSY`. */
  readonly code: string;
  /** The call that failed, e.g. `ioctl(TUNSETIFF flannel0)`. */
  readonly call: string;

  /**
   * @param errno Positive errno.
   * @param call What was called, with its key arguments.
   * @param hint How to fix it (appended to the message), if known.
   * @param options Error options (`cause`).
   */
  constructor(errno: number, call: string, hint?: string, options?: ErrorOptions) {
    const code = errnoName(errno);
    super(`${call} failed with ${code}${hint ? `: ${hint}` : defaultHint(code)}`, options);
    this.errno = errno;
    this.code = code;
    this.call = call;
  }
}

function defaultHint(code: string): string {
  switch (code) {
    case "EPERM":
    case "EACCES":
      return ": run weft as root or with CAP_NET_ADMIN";
    case "EADDRINUSE":
      return ": another process holds that address and port (is another agent running?)";
    case "EADDRNOTAVAIL":
      return ": the address is not on any interface of this host (check --iface/--public-ip)";
    default:
      return "";
  }
}
