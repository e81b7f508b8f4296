/**
 * One write at a time on a libc AIO thread (`aio_write`), so the calling
 * thread goes on while the kernel works: a netlink batch is processed by
 * the kernel inside the sending system call, and a 1000-route batch takes
 * tens of milliseconds there. Sending it from glibc's AIO thread lets the
 * JavaScript thread encode the next batch and apply the previous one's
 * results meanwhile. It is plain FFI into libc, so Deno and Bun behave the
 * same (Bun's FFI has no calls off the JavaScript thread).
 *
 * glibc runs an `aio_write` on a socket as `write()` (its `pwrite` fails with
 * ESPIPE and it falls back); on a netlink socket that is not connected,
 * `write()` sends to the kernel, as `sendto` with the kernel's address does.
 * Requests on one descriptor run in order on one thread.
 *
 * The `struct aiocb` layout below is glibc's on 64-bit Linux.
 *
 * @module
 */

import { type FfiLibrary, makeAddressOf, makePointerReader, openLibrary } from "./runtime.ts";

const AIO_SYMBOLS = {
  aio_write: { parameters: ["buffer"], result: "i32" },
  aio_error: { parameters: ["buffer"], result: "i32" },
  aio_return: { parameters: ["buffer"], result: "i32" },
  aio_suspend: { parameters: ["buffer", "i32", "buffer"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

/** `struct aiocb` offsets (glibc, LP64). */
const AIOCB = {
  fildes: 0,
  buf: 16,
  nbytes: 24,
  sigevNotify: 44,
  offset: 128,
  size: 168,
} as const;
const SIGEV_NONE = 1;
const EINPROGRESS = 115;

/** A write that runs on a libc AIO thread; see the module doc. */
export interface BackgroundWriter {
  /**
   * Start writing `bytes` to `fd`. The bytes must stay unchanged until
   * {@link BackgroundWriter.finish} returns; one write at a time.
   *
   * @returns 0, or the errno when the write could not be queued.
   */
  start(fd: number, bytes: Uint8Array): number;
  /** Whether the started write is still running (the kernel still working on it). */
  busy(): boolean;
  /**
   * Wait (blocking the calling thread) until the started write has ended.
   *
   * @returns The bytes written, or minus the errno of the failed write.
   */
  finish(): number;
}

let loading: Promise<BackgroundWriter | null> | undefined;

/**
 * A background writer for this thread, or null when libc has no AIO
 * (callers then write in place).
 *
 * @returns The writer, or null.
 */
export function openBackgroundWriter(): Promise<BackgroundWriter | null> {
  loading ??= (async () => {
    let lib: FfiLibrary<typeof AIO_SYMBOLS>;
    try {
      lib = await openLibrary("libc.so.6", AIO_SYMBOLS); // glibc ≥ 2.34
    } catch {
      try {
        lib = await openLibrary("librt.so.1", AIO_SYMBOLS);
      } catch {
        return null;
      }
    }
    const read = await makePointerReader();
    const errno = () => read(lib.symbols.__errno_location());
    return makeWriter(lib, await makeAddressOf(), errno);
  })();
  return loading;
}

function makeWriter(
  lib: FfiLibrary<typeof AIO_SYMBOLS>,
  addressOf: (view: ArrayBufferView) => number,
  errno: () => number,
): BackgroundWriter {
  const f = lib.symbols;
  // One block, large enough that neither runtime keeps it in its moving heap:
  // the control block, then the one-entry list aio_suspend takes.
  const block = new Uint8Array(4096);
  const cb = block.subarray(0, AIOCB.size);
  const list = block.subarray(256, 264);
  const view = new DataView(block.buffer);
  const cbAddress = addressOf(cb);
  view.setBigUint64(256, BigInt(cbAddress), true);
  let pending: Uint8Array | null = null;
  return {
    start(fd, bytes) {
      if (pending) throw new Error("a background write is already running");
      block.fill(0, 0, AIOCB.size);
      view.setInt32(AIOCB.fildes, fd, true);
      view.setBigUint64(AIOCB.buf, BigInt(addressOf(bytes)), true);
      view.setBigUint64(AIOCB.nbytes, BigInt(bytes.length), true);
      view.setInt32(AIOCB.sigevNotify, SIGEV_NONE, true);
      view.setBigInt64(AIOCB.offset, 0n, true);
      if (f.aio_write(cb) !== 0) return errno();
      pending = bytes; // kept reachable while the AIO thread reads it
      return 0;
    },
    busy() {
      return pending !== null && f.aio_error(cb) === EINPROGRESS;
    },
    finish() {
      if (!pending) throw new Error("no background write is running");
      for (;;) {
        const state = f.aio_error(cb);
        if (state !== EINPROGRESS) {
          const n = f.aio_return(cb);
          pending = null;
          return state === 0 ? n : -state;
        }
        // No timeout: as a blocking send would, it waits for the kernel as long as it
        // takes. An interrupted wait (EINTR) returns early; the loop looks again.
        f.aio_suspend(list, 1, null);
      }
    },
  };
}
