/**
 * Files shared between processes: an atomic writer (temporary file in the
 * same directory, then rename, so a reader sees the old or the new content,
 * never half of one) and one lock-file algorithm (O_EXCL create holding
 * `<pid> <ms since epoch>`; a lock whose process is gone, or older than the
 * stale limit, is broken).
 *
 * @module
 */

import * as fs from "node:fs";
import * as path from "node:path";
import process from "node:process";

/**
 * Whether a process with this pid exists (signal 0; `EPERM` means it exists
 * but belongs to someone else).
 *
 * @param pid Process id.
 * @returns True when it exists.
 */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Write a file atomically: the content goes to a unique temporary file in
 * the same directory (created when missing), which is then renamed over the
 * target.
 *
 * @param file Target path.
 * @param data The content.
 * @param options `mode` of the new file (default 0o644).
 * @throws {Error} When the directory cannot be created or written (the
 *   temporary file is removed).
 * @example
 * ```ts
 * writeFileAtomic("/run/flannel/subnet.env", "FLANNEL_MTU=1450\n", { mode: 0o644 });
 * ```
 */
/**
 * Create a directory and its missing parents as `0755` (less what the umask
 * takes away): never writable by group or others, whatever the umask — a
 * world-writable /run/flannel would let any user swap subnet.env.
 *
 * @param dir The directory.
 * @throws {Error} When it cannot be created.
 * @example
 * ```ts
 * ensureDir("/run/flannel");
 * ```
 */
export function ensureDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
}

export function writeFileAtomic(
  file: string,
  data: string | Uint8Array,
  options: { mode?: number } = {},
): void {
  ensureDir(path.dirname(file));
  const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2, 10)}.tmp`;
  try {
    fs.writeFileSync(tmp, data, { mode: options.mode ?? 0o644 });
    // writeFileSync's mode is filtered by the umask; the caller asked for this one
    if (options.mode !== undefined) fs.chmodSync(tmp, options.mode);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** Why a lock could not be taken in time; `holder` is the pid in the lock file, if known. */
export class LockTimeoutError extends Error {
  override name = "LockTimeoutError";
  constructor(readonly lockPath: string, readonly holder: number | null, timeoutMs: number) {
    super(
      `Cannot take the lock ${lockPath} within ${timeoutMs} ms: ${
        holder ? `process ${holder} holds it` : "another process holds it"
      }; remove the file if no weft process runs`,
    );
  }
}

/** Options of {@link withLockFile}. */
export interface LockOptions {
  /** Give up after this long (default 30 s). */
  readonly timeoutMs?: number;
  /** A lock older than this is broken even when its process lives (default 10 s). */
  readonly staleMs?: number;
  readonly signal?: AbortSignal;
  /** Told when a stale lock is broken. */
  readonly onBreak?: (holder: number | null) => void;
}

/**
 * Run `fn` while holding a lock file. Waits (real time: the holder is
 * another process) with a short growing pause between tries.
 *
 * @param lockPath The lock file; its directory is created when missing.
 * @param fn The critical section.
 * @param options Timeout, stale limit, abort signal.
 * @returns What `fn` returns.
 * @throws {LockTimeoutError} When the lock is not free within the timeout.
 * @example
 * ```ts
 * await withLockFile("/var/lib/weft/leases.json.lock", () => update());
 * ```
 */
export async function withLockFile<T>(
  lockPath: string,
  fn: () => Promise<T> | T,
  options: LockOptions = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const staleMs = options.staleMs ?? 10_000;
  const start = Date.now();
  ensureDir(path.dirname(lockPath));
  for (let attempt = 0;; attempt++) {
    options.signal?.throwIfAborted();
    if (tryCreateLock(lockPath)) break;
    const holder = readLock(lockPath);
    const dead = holder?.pid != null && !processAlive(holder.pid);
    if (holder && (dead || Date.now() - holder.at > staleMs)) {
      options.onBreak?.(holder.pid);
      fs.rmSync(lockPath, { force: true });
      continue;
    }
    if (Date.now() - start > timeoutMs) {
      throw new LockTimeoutError(lockPath, holder?.pid ?? null, timeoutMs);
    }
    await new Promise((r) => setTimeout(r, 2 + Math.min(attempt, 10) * 2));
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(lockPath, { force: true });
  }
}

function tryCreateLock(lockPath: string): boolean {
  try {
    const fd = fs.openSync(lockPath, "wx", 0o600);
    try {
      fs.writeSync(fd, `${process.pid} ${Date.now()}`);
    } finally {
      fs.closeSync(fd);
    }
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw new Error(`Cannot create the lock file ${lockPath}: ${(e as Error).message}`, {
      cause: e,
    });
  }
}

/** The lock's holder; a half-written lock counts from its file time, with no live holder. */
function readLock(lockPath: string): { pid: number | null; at: number } | null {
  try {
    const [pidText, atText] = fs.readFileSync(lockPath, "utf8").split(" ");
    const pid = Number(pidText), at = Number(atText);
    if (Number.isInteger(pid) && pid > 0 && Number.isFinite(at)) return { pid, at };
    return { pid: null, at: fs.statSync(lockPath).mtimeMs };
  } catch {
    return null; // vanished: try again
  }
}
