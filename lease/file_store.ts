/**
 * The embedded lease store: one file shared by the agents of ONE machine
 * (the demo, single-host development, network namespaces on one box). It
 * does not span machines — use etcd or Kubernetes for a cluster.
 *
 * The file is a snapshot line followed by one line per change (see
 * `file_journal.ts` for the format): a change appends one line, and a reader
 * decodes only the lines it has not seen, so a change costs the same at 10
 * leases as at 1000. When the changes outgrow the snapshot a writer folds
 * them into a new snapshot, written to a temporary file and renamed over the
 * file (core/files.ts), so a reader never sees half a snapshot; a reader
 * that had followed every change takes the new file over from its first
 * bytes, any other reads it whole once.
 *
 * Writers serialise on a lock file created with O_EXCL (a lock older than
 * 10 s, or whose process is gone, is broken). Every write first removes
 * expired records, logging their deletion, so TTLs behave as in etcd. The
 * last {@link LOG_LIMIT} changes stay readable; a watcher further behind
 * gets `compacted` and re-lists. Watchers wake on fs.watch of the directory,
 * with a poll as a fallback, and on the next expiry.
 *
 * @module
 */

import * as fs from "node:fs";
import * as path from "node:path";
import type { Logger } from "../core/log.ts";
import type { Registry as Metrics } from "../core/metrics.ts";
import { sleepQuietly } from "../core/abort.ts";
import { type Clock, systemClock } from "../core/clock.ts";
import { ensureDir, LockTimeoutError, withLockFile, writeFileAtomic } from "../core/files.ts";
import {
  createKvLeaseStore,
  type LeaseRegistry,
  type RawEvent,
  type RawRecord,
} from "./kv_store.ts";
import { StoreUnavailableError } from "../core/errors.ts";
import type { LeaseStore } from "./types.ts";
import {
  applyChange,
  type Change,
  changeLine,
  COMPACT_MIN_BYTES,
  type FileRecord,
  type FileView,
  nextExpiry,
  refreshView,
  writeSnapshot,
} from "./file_journal.ts";

export { COMPACT_MIN_BYTES, LOG_LIMIT } from "./file_journal.ts";

/** Options for {@link createFileRegistry}. */
export interface FileRegistryOptions {
  /** The shared lease file, e.g. `/var/lib/weft/leases.json`. */
  path: string;
  /** The network config file (net-conf.json). */
  configPath: string;
  clock?: Clock;
  logger?: Logger;
  /** Fallback poll interval for watchers, ms (default 250). */
  pollMs?: number;
}

const encoder = new TextEncoder();

/** The records a write may read and change (changes are applied and logged as they are made). */
interface Txn {
  get(key: string): FileRecord | undefined;
  set(key: string, record: FileRecord): void;
  delete(key: string): void;
}

/** The lock, the writer's cached view, and the write itself: shared by the registry and {@link compactLeaseFile}. */
function fileWriter(file: string, logger?: Logger) {
  const lockFile = `${file}.lock`;
  const warn = (msg: string, fields: Record<string, unknown>) => logger?.warn(msg, fields);
  /** What this process last read or wrote (reused while the file is the same). */
  let cached: FileView | undefined;

  const read = (): FileView => (cached = refreshView(file, cached, warn).view);

  const locked = <T>(fn: () => T, signal?: AbortSignal): Promise<T> =>
    withLockFile(lockFile, fn, {
      signal,
      onBreak: (pid) => logger?.warn("breaking stale lease-file lock", { lock: lockFile, pid }),
    }).catch((e) => {
      if (e instanceof LockTimeoutError) throw new StoreUnavailableError(e.message, { cause: e });
      throw e;
    });

  const compact = (view: FileView, forgetHistory = false) => {
    writeSnapshot(view, (bytes) => {
      writeFileAtomic(file, bytes, { mode: 0o644 });
      const st = fs.statSync(file); // ours: writers hold the lock
      return `${st.dev}:${st.ino}`;
    }, forgetHistory);
    cached = view;
  };

  /** Under the lock: bring the view up to date, run `fn`, append what it changed. */
  const mutate = <T>(fn: (txn: Txn) => T, now: number, signal?: AbortSignal): Promise<T> =>
    locked(() => {
      try {
        return change(fn, now);
      } catch (e) {
        // the view may hold changes the file does not: read the file afresh next time
        cached = undefined;
        throw e;
      }
    }, signal);

  const change = <T>(fn: (txn: Txn) => T, now: number): T => {
    const r = refreshView(file, cached, warn);
    const view = cached = r.view;
    if (r.tail > 0) {
      // a change torn by a writer that died mid-line: no reader has taken it
      logger?.warn("dropping a torn last line of the lease file", { file, bytes: r.tail });
      fs.truncateSync(file, view.offset);
    }
    const made: Change[] = [];
    const txn: Txn = {
      get: (key) => view.records.get(key),
      set: (key, record) => {
        const c = { revision: view.revision + 1, key, ...record };
        applyChange(view, c);
        made.push(c);
      },
      delete: (key) => {
        if (!view.records.has(key)) return;
        const c = { revision: view.revision + 1, key };
        applyChange(view, c);
        made.push(c);
      },
    };
    const due = nextExpiry(view);
    if (due !== null && due <= now) {
      for (const [key, rec] of view.records) {
        if (rec.expiration !== null && rec.expiration <= now) txn.delete(key);
      }
    }
    const out = fn(txn);
    if (made.length === 0) return out;
    const journal = view.offset - view.snapshotBytes;
    if (
      view.snapshotBytes === 0 || view.unterminated ||
      journal > Math.max(COMPACT_MIN_BYTES, view.snapshotBytes)
    ) {
      compact(view);
    } else {
      const text = made.map(changeLine).join("");
      const fd = fs.openSync(file, "a");
      try {
        const bytes = encoder.encode(text);
        let done = 0;
        while (done < bytes.length) done += fs.writeSync(fd, bytes, done);
        view.offset += bytes.length;
      } finally {
        fs.closeSync(fd);
      }
    }
    return out;
  };

  return {
    read,
    mutate,
    compact: (forgetHistory: boolean) => locked(() => compact(read(), forgetHistory)),
  };
}

/**
 * Fold the changes of a lease file into a new snapshot now (writers do it by
 * themselves when the changes outgrow the snapshot).
 *
 * @param file The lease file.
 * @param options `forgetHistory`: also drop the history, so watchers behind
 *   the file must re-list (as after an etcd compaction).
 * @throws {StoreUnavailableError} When the lock cannot be taken or the file is corrupt.
 * @example
 * ```ts
 * await compactLeaseFile("/var/lib/weft/leases.json");
 * ```
 */
export function compactLeaseFile(
  file: string,
  options: { forgetHistory?: boolean; logger?: Logger } = {},
): Promise<void> {
  return fileWriter(file, options.logger).compact(options.forgetHistory ?? false);
}

/**
 * The file store's registry primitives. Most callers want
 * {@link createFileLeaseStore}.
 *
 * @param options File paths, clock, poll interval.
 * @returns The registry.
 */
export function createFileRegistry(options: FileRegistryOptions): LeaseRegistry {
  const file = options.path;
  const clock = options.clock ?? systemClock;
  const pollMs = options.pollMs ?? 250;
  const warn = (msg: string, fields: Record<string, unknown>) => options.logger?.warn(msg, fields);
  const writer = fileWriter(file, options.logger);
  const mutate = <T>(fn: (txn: Txn) => T, signal?: AbortSignal) =>
    writer.mutate(fn, clock.now(), signal);
  const expiry = (ttlMs: number | null) => (ttlMs === null ? null : clock.now() + ttlMs);

  return {
    name: "file",
    configSource: `file ${options.configPath}`,

    getConfig() {
      try {
        return Promise.resolve(fs.readFileSync(options.configPath, "utf8"));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return Promise.resolve(null);
        return Promise.reject(
          new StoreUnavailableError(`cannot read ${options.configPath}: ${(e as Error).message}`, {
            cause: e,
          }),
        );
      }
    },

    list() {
      try {
        const view = writer.read();
        const now = clock.now();
        const records: RawRecord[] = [];
        for (const [key, r] of view.records) {
          if (r.expiration === null || r.expiration > now) {
            records.push({ key, value: r.value, expiration: r.expiration });
          }
        }
        return Promise.resolve({ records, revision: view.revision });
      } catch (e) {
        return Promise.reject(e);
      }
    },

    create(key, value, ttlMs, signal) {
      return mutate((txn) => {
        if (txn.get(key)) return false as const;
        const expiration = expiry(ttlMs);
        txn.set(key, { value, expiration });
        return expiration;
      }, signal);
    },

    put(key, value, ttlMs, signal) {
      return mutate((txn) => {
        const expiration = expiry(ttlMs);
        txn.set(key, { value, expiration });
        return expiration;
      }, signal);
    },

    delete(key, signal) {
      return mutate((txn) => txn.delete(key), signal);
    },

    async *watch(revision, signal) {
      let rev = revision;
      let wake: (() => void) | null = null;
      const poke = () => wake?.();
      let watcher: fs.FSWatcher | undefined;
      try {
        ensureDir(path.dirname(file));
        // the directory also sees the lock and temporary files: wake only for
        // the lease file itself (an append, or the rename of a new snapshot)
        const base = path.basename(file);
        watcher = fs.watch(path.dirname(file), { persistent: false }, (_event, name) => {
          if (name === null || String(name) === base) poke();
        });
        watcher.on("error", () => {});
      } catch {
        // no inotify: the poll below still works
      }
      signal.addEventListener("abort", poke, { once: true });
      // this watcher's own view: it decodes only the lines appended since its last look
      let view: FileView | undefined;
      try {
        while (!signal.aborted) {
          const r = refreshView(file, view, warn);
          view = r.view;
          let changes = r.changes;
          if (changes === null) {
            // a whole new file: its history says what happened since `rev`
            if (view.revision > rev && rev < view.compacted) {
              yield { events: [{ type: "compacted" } as RawEvent], revision: view.revision };
              return;
            }
            changes = view.history.filter((c) => c.revision > rev);
          }
          if (view.revision > rev) {
            const events: RawEvent[] = [];
            for (const c of changes) {
              if (c.revision <= rev) continue;
              events.push(
                c.value === undefined ? { type: "delete", key: c.key } : {
                  type: "put",
                  record: { key: c.key, value: c.value, expiration: c.expiration ?? null },
                },
              );
            }
            rev = view.revision;
            if (events.length) yield { events, revision: rev };
            continue;
          }
          // nothing new: expire what is due, else sleep until a change, the poll, or the next expiry
          const now = clock.now();
          const due = nextExpiry(view);
          if (due !== null && due <= now) {
            await mutate(() => {}, signal);
            continue;
          }
          const nap = new AbortController();
          const woken = new Promise<void>((r) => (wake = r));
          await Promise.race([
            woken,
            sleepQuietly(
              clock,
              Math.min(pollMs, due === null ? Infinity : due - now + 5),
              nap.signal,
            ),
          ]);
          nap.abort();
          wake = null;
        }
      } finally {
        watcher?.close();
        signal.removeEventListener("abort", poke);
      }
    },

    close: () => Promise.resolve(),
  };
}

/**
 * The embedded file lease store (single machine).
 *
 * @param options Paths, TTL, logger, metrics, clock, randomness.
 * @returns A LeaseStore.
 * @example
 * ```ts
 * const store = createFileLeaseStore({ path: "/tmp/weft/leases.json", configPath: "/tmp/weft/net-conf.json" });
 * const config = await store.getNetworkConfig();
 * ```
 */
export function createFileLeaseStore(
  options: FileRegistryOptions & {
    ttlMs?: number;
    metrics?: Metrics;
    random?: () => number;
  },
): LeaseStore {
  return createKvLeaseStore(createFileRegistry(options), options);
}
