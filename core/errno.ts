/**
 * Errno names, and the error raised when a libc call made through FFI
 * fails: which call, the errno, and how to fix the usual causes.
 *
 * @module
 */

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

/** Linux errno names by number (x86-64 / generic). */
const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  7: "E2BIG",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  18: "EXDEV",
  19: "ENODEV",
  20: "ENOTDIR",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  28: "ENOSPC",
  34: "ERANGE",
  38: "ENOSYS",
  61: "ENODATA",
  71: "EPROTO",
  90: "EMSGSIZE",
  93: "EPROTONOSUPPORT",
  95: "EOPNOTSUPP",
  97: "EAFNOSUPPORT",
  98: "EADDRINUSE",
  99: "EADDRNOTAVAIL",
  100: "ENETDOWN",
  101: "ENETUNREACH",
  105: "ENOBUFS",
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
  113: "EHOSTUNREACH",
  114: "EALREADY",
};

/**
 * The symbolic name of an errno.
 *
 * @param errno A positive errno.
 * @returns e.g. `EEXIST`, or `E<n>` when unknown.
 */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `E${errno}`;
}

/** The errno number for a name, e.g. `EEXIST` → 17. */
export function errnoNumber(name: string): number {
  for (const [n, s] of Object.entries(ERRNO_NAMES)) if (s === name) return Number(n);
  throw new RangeError(`Unknown errno name: current value is ${JSON.stringify(name)}`);
}
