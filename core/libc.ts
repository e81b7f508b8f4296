/**
 * The one libc binding table: every system call weft makes through FFI
 * (netlink and UDP sockets, the TUN device, setns, the udp packet loop),
 * bound once per thread (a Worker binds its own).
 *
 * Results of `ssize_t` calls are declared `i32`: every buffer weft passes is
 * far below 2 GiB, and a 32-bit result avoids a bigint per call on Deno,
 * which matters in the packet loop. `ioctl` takes its argument as a 64-bit
 * value; pass `addressOf(buffer)` for ioctls that take a pointer.
 *
 * @module
 */

import { type FfiLibrary, makeAddressOf, makePointerReader, openLibrary } from "./runtime.ts";

/** Every libc function weft binds, with the signature it is called with. */
export const LIBC_SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "i32" },
  recvfrom: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "buffer"], result: "i32" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "i32" },
  recvmmsg: { parameters: ["i32", "buffer", "u32", "i32", "buffer"], result: "i32" },
  sendmmsg: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "u64"], result: "i32" },
  setns: { parameters: ["i32", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

/** libc, bound: the functions, the calling thread's errno, and buffer addresses. */
export interface Libc {
  readonly fn: FfiLibrary<typeof LIBC_SYMBOLS>["symbols"];
  /** The calling thread's errno (read right after the failing call). */
  errno(): number;
  /** The address of a typed array's first byte (see `makeAddressOf`). */
  addressOf(view: ArrayBufferView): number;
}

let loading: Promise<Libc> | undefined;

/**
 * Bind libc once for this thread.
 *
 * @returns The bound functions.
 * @throws {Error} When the runtime has no FFI (run with Deno or Bun).
 * @example
 * ```ts
 * const libc = await loadLibc();
 * const fd = libc.fn.socket(16, 3, 0);
 * if (fd < 0) console.log(libc.errno());
 * ```
 */
export function loadLibc(): Promise<Libc> {
  loading ??= (async () => {
    const lib = await openLibrary("libc.so.6", LIBC_SYMBOLS);
    const read = await makePointerReader();
    const addressOf = await makeAddressOf();
    const loc = lib.symbols.__errno_location;
    return { fn: lib.symbols, errno: () => read(loc()), addressOf };
  })();
  loading.catch(() => (loading = undefined));
  return loading;
}
