/**
 * Run synchronous code with the calling thread inside a named network
 * namespace, then switch back. Sockets and TUN devices belong to the
 * namespace their creator was in when it opened them, so tests create
 * them inside throwaway namespaces this way, never touching the host's.
 *
 * Only the calling thread moves (setns(2) with CLONE_NEWNET); `fn` must be
 * synchronous so that no other task runs while the thread is away.
 *
 * @module
 */

import { closeSync, openSync } from "node:fs";
import process from "node:process";
import { loadLibc } from "../core/libc.ts";
import { SyscallError } from "../core/errno.ts";

const CLONE_NEWNET = 0x40000000;

/**
 * The file of a namespace name: names resolve under `/var/run/netns` (as
 * `ip netns add` makes them), absolute paths (e.g. `/proc/<pid>/ns/net`) are kept.
 *
 * @param netns Name or path.
 * @returns The path.
 */
export function netnsPath(netns: string): string {
  return netns.startsWith("/") ? netns : `/var/run/netns/${netns}`;
}

/** The two system calls {@link inNetnsSync} needs (so callers that already hold libc can pass theirs). */
export interface SetnsCalls {
  setns(fd: number, type: number): number;
  errno(): number;
}

/**
 * Run `fn` with the calling thread inside `netns`, or directly when `netns`
 * is undefined. If switching back fails the process exits: carrying on in
 * the wrong namespace could change the host's network.
 *
 * @param netns Namespace name or path, or undefined for "here".
 * @param fn Synchronous work, e.g. opening a socket.
 * @returns What `fn` returned.
 * @throws {Error} When the namespace does not exist.
 * @throws {SyscallError} When setns fails (EPERM without CAP_SYS_ADMIN).
 * @example
 * ```ts
 * const fd = await withNetns("wud-a", () => openSync("/dev/net/tun", "r+"));
 * ```
 */
export async function withNetns<T>(netns: string | undefined, fn: () => T): Promise<T> {
  if (netns === undefined) return fn();
  const libc = await loadLibc();
  return inNetnsSync({ setns: libc.fn.setns, errno: libc.errno }, netns, fn);
}

/**
 * The synchronous core of {@link withNetns}, for callers that must not
 * yield (e.g. opening a socket inside a synchronous constructor) and already
 * have the system calls at hand.
 *
 * @param sys setns and errno.
 * @param netns Namespace name or path.
 * @param fn Synchronous work.
 * @returns What `fn` returned.
 * @throws {Error} When the namespace does not exist.
 * @throws {SyscallError} When setns fails.
 */
export function inNetnsSync<T>(sys: SetnsCalls, netns: string, fn: () => T): T {
  const path = netnsPath(netns);
  let target: number;
  try {
    target = openSync(path, "r");
  } catch (e) {
    throw new Error(
      `Cannot open network namespace ${
        JSON.stringify(netns)
      } at ${path}: create it with 'ip netns add ${netns}'`,
      { cause: e },
    );
  }
  let saved = -1;
  try {
    saved = openSync("/proc/thread-self/ns/net", "r");
    if (sys.setns(target, CLONE_NEWNET) !== 0) {
      throw new SyscallError(sys.errno(), `setns(${path}, CLONE_NEWNET)`);
    }
    try {
      return fn();
    } finally {
      if (sys.setns(saved, CLONE_NEWNET) !== 0) {
        process.stderr.write(
          `weft: FATAL: could not switch back from network namespace ${path} (errno ${sys.errno()}); ` +
            "exiting so that nothing is changed in the wrong namespace\n",
        );
        process.exit(70);
      }
    }
  } finally {
    if (saved >= 0) closeSync(saved);
    closeSync(target);
  }
}
