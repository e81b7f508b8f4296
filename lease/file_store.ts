/**
 * The embedded lease store: one JSON file shared by the agents of ONE
 * machine (the demo, single-host development, network namespaces on one
 * box). It does not span machines — use etcd or Kubernetes for a cluster.
 *
 * Layout of the file (written whole, to a temporary file then renamed, so a
 * reader never sees half a write):
 *
 * ```json
 * { "revision": 7, "compacted": 0,
 *   "records": { "10.5.3.0-24": { "value": "{\"PublicIP\":…}", "expiration": 1700000000000 } },
 *   "log": [ { "revision": 7, "key": "10.5.3.0-24", "value": "…", "expiration": … } ] }
 * ```
 *
 * Writers serialise on a lock file created with O_EXCL (a lock older than
 * 10 s, or whose process is gone, is broken). Every write first removes
 * expired records, logging their deletion, so TTLs behave as in etcd.
 * The log keeps the last {@link LOG_LIMIT} changes; a watcher further
 * behind gets `compacted` and re-lists. Watchers wake on fs.watch of the
 * directory, with a poll as a fallback, and on the next expiry; they parse
 * the file only when its revision changed (read from its first bytes).
 *
 * Cost: every write and every watcher's read handle the whole file. At 1000
 * leases (about 600 KB with a full log) a write took ~13 ms of CPU and a
 * watcher's read ~6 ms here, so the store suits one machine and tens of
 * changes per second, not a cluster.
 *
 * @module
 */

import * as fs from "node:fs";
import * as path from "node:path";
import type { Logger } from "../core/log.ts";
import type { Registry as Metrics } from "../core/metrics.ts";
import { sleepQuietly } from "../core/abort.ts";
import { type Clock, systemClock } from "../core/clock.ts";
import { LockTimeoutError, withLockFile, writeFileAtomic } from "../core/files.ts";
import {
  createKvLeaseStore,
  type LeaseRegistry,
  type RawEvent,
  type RawRecord,
} from "./kv_store.ts";
import { StoreUnavailableError } from "../core/errors.ts";
import type { LeaseStore } from "./types.ts";

/** Changes kept for watchers that fall behind. */
export const LOG_LIMIT = 2000;

interface FileRecord {
  value: string;
  expiration: number | null;
}

interface LogEntry {
  revision: number;
  key: string;
  /** Absent for a deletion. */
  value?: string;
  expiration?: number | null;
}

interface FileState {
  revision: number;
  compacted: number;
  records: Record<string, FileRecord>;
  log: LogEntry[];
}

const empty = (): FileState => ({ revision: 1, compacted: 0, records: {}, log: [] });

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

/**
 * The file store's registry primitives. Most callers want
 * {@link createFileLeaseStore}.
 *
 * @param options File paths, clock, poll interval.
 * @returns The registry.
 */
export function createFileRegistry(options: FileRegistryOptions): LeaseRegistry {
  const file = options.path;
  const lockFile = `${file}.lock`;
  const clock = options.clock ?? systemClock;
  const pollMs = options.pollMs ?? 250;

  const read = (): FileState => {
    let text: string;
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return empty();
      throw new StoreUnavailableError(`cannot read lease file ${file}: ${(e as Error).message}`, {
        cause: e,
      });
    }
    try {
      const s = JSON.parse(text) as FileState;
      if (
        typeof s.revision !== "number" || typeof s.records !== "object" || !Array.isArray(s.log)
      ) {
        throw new Error("missing revision, records or log");
      }
      return s;
    } catch (e) {
      throw new StoreUnavailableError(
        `lease file ${file} is corrupt (${
          (e as Error).message
        }): move it aside and restart the agents; they will re-register`,
        { cause: e },
      );
    }
  };

  const write = (state: FileState) => writeFileAtomic(file, JSON.stringify(state), { mode: 0o644 });

  const locked = <T>(fn: () => T, signal?: AbortSignal): Promise<T> =>
    withLockFile(lockFile, fn, {
      signal,
      onBreak: (pid) =>
        options.logger?.warn("breaking stale lease-file lock", { lock: lockFile, pid }),
    }).catch((e) => {
      if (e instanceof LockTimeoutError) throw new StoreUnavailableError(e.message, { cause: e });
      throw e;
    });

  const append = (s: FileState, entry: Omit<LogEntry, "revision">) => {
    s.revision++;
    s.log.push({ revision: s.revision, ...entry });
    if (s.log.length > LOG_LIMIT) {
      const dropped = s.log.splice(0, s.log.length - LOG_LIMIT);
      s.compacted = dropped[dropped.length - 1].revision;
    }
  };

  const purgeExpired = (s: FileState): boolean => {
    const now = clock.now();
    let changed = false;
    for (const [key, rec] of Object.entries(s.records)) {
      if (rec.expiration !== null && rec.expiration <= now) {
        delete s.records[key];
        append(s, { key });
        changed = true;
      }
    }
    return changed;
  };

  const mutate = <T>(fn: (s: FileState) => T, signal?: AbortSignal): Promise<T> =>
    locked(() => {
      const s = read();
      const before = s.revision;
      purgeExpired(s);
      const out = fn(s);
      if (s.revision !== before) write(s);
      return out;
    }, signal);

  const live = (s: FileState) => {
    const now = clock.now();
    return Object.entries(s.records).filter(([, r]) => r.expiration === null || r.expiration > now);
  };

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
        const s = read();
        const records: RawRecord[] = live(s).map(([key, r]) => ({
          key,
          value: r.value,
          expiration: r.expiration,
        }));
        return Promise.resolve({ records, revision: s.revision });
      } catch (e) {
        return Promise.reject(e);
      }
    },

    create(key, value, ttlMs, signal) {
      return mutate((s) => {
        if (s.records[key]) return false as const;
        const expiration = expiry(ttlMs);
        s.records[key] = { value, expiration };
        append(s, { key, value, expiration });
        return expiration;
      }, signal);
    },

    put(key, value, ttlMs, signal) {
      return mutate((s) => {
        const expiration = expiry(ttlMs);
        s.records[key] = { value, expiration };
        append(s, { key, value, expiration });
        return expiration;
      }, signal);
    },

    delete(key, signal) {
      return mutate((s) => {
        if (!s.records[key]) return;
        delete s.records[key];
        append(s, { key });
      }, signal);
    },

    async *watch(revision, signal) {
      let rev = revision;
      let wake: (() => void) | null = null;
      const poke = () => wake?.();
      let watcher: fs.FSWatcher | undefined;
      try {
        fs.mkdirSync(path.dirname(file), { recursive: true });
        // the directory also sees the lock and temporary files: wake only for the
        // rename that lands a new version of the lease file
        const base = path.basename(file);
        watcher = fs.watch(path.dirname(file), { persistent: false }, (_event, name) => {
          if (name === null || String(name) === base) poke();
        });
        watcher.on("error", () => {});
      } catch {
        // no inotify: the poll below still works
      }
      signal.addEventListener("abort", poke, { once: true });
      // The whole file is parsed only when its revision (written first, and
      // moved by every write) changed: at 1000 leases the file is ~600 KB and
      // a parse ~6 ms of CPU, which the 250 ms poll paid four times a second.
      let seen: { revision: string; state: FileState } | undefined;
      const head = new Uint8Array(64);
      const readIfChanged = (): FileState => {
        let revision: string | undefined;
        try {
          const fd = fs.openSync(file, "r");
          try {
            const n = fs.readSync(fd, head, 0, head.length, 0);
            revision = new TextDecoder().decode(head.subarray(0, n)).match(/^\{"revision":(\d+),/)
              ?.[1];
          } finally {
            fs.closeSync(fd);
          }
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
          revision = "absent";
        }
        if (revision === undefined || seen?.revision !== revision) {
          seen = { revision: revision ?? "", state: read() };
        }
        return seen.state;
      };
      try {
        while (!signal.aborted) {
          const s = readIfChanged();
          if (rev < s.compacted) {
            yield { events: [{ type: "compacted" } as RawEvent], revision: s.revision };
            return;
          }
          const events: RawEvent[] = [];
          for (const e of s.log) {
            if (e.revision <= rev) continue;
            events.push(
              e.value === undefined ? { type: "delete", key: e.key } : {
                type: "put",
                record: { key: e.key, value: e.value, expiration: e.expiration ?? null },
              },
            );
          }
          if (s.revision > rev) {
            rev = s.revision;
            if (events.length) yield { events, revision: rev };
            continue;
          }
          // nothing new: expire what is due, else sleep until a change, the poll, or the next expiry
          const now = clock.now();
          const due = Object.values(s.records)
            .map((r) => r.expiration)
            .filter((x): x is number => x !== null);
          if (due.some((x) => x <= now)) {
            await mutate(() => {}, signal);
            continue;
          }
          const nextExpiry = due.length ? Math.min(...due) - now + 5 : Infinity;
          const nap = new AbortController();
          const woken = new Promise<void>((r) => (wake = r));
          await Promise.race([
            woken,
            sleepQuietly(clock, Math.min(pollMs, nextExpiry), nap.signal),
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
