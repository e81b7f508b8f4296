/**
 * An in-memory LeaseRegistry for unit tests: revisions, TTLs on an injected
 * clock, compaction, and a switch that makes every call fail as an
 * unreachable store would. It follows etcd's semantics closely enough that
 * the shared contract suite passes against it.
 *
 * @module
 */

import { linkedController, sleepQuietly } from "../core/abort.ts";
import { type Clock, systemClock } from "../core/clock.ts";
import type { LeaseRegistry, RawEvent, RawRecord } from "../lease/kv_store.ts";
import { StoreUnavailableError } from "../core/errors.ts";

interface Entry {
  value: string;
  expiration: number | null;
}

/** The memory registry with test controls. */
export interface MemoryRegistry extends LeaseRegistry {
  /** The config text (null = missing). */
  config: string | null;
  /** When true every call rejects with StoreUnavailableError. */
  down: boolean;
  /** Current revision. */
  readonly revision: number;
  /** Forget history up to now (watchers from older revisions get `compacted`). */
  compact(): void;
  /** Drop expired records now (normally done on every call). */
  expire(): void;
  /** Fail every open watch, as a server restart does (the data stays). */
  restart(): void;
  /** Watches open now. */
  readonly watchers: number;
}

/**
 * Create a memory registry.
 *
 * @param options Initial config text and the clock TTLs run on.
 */
export function createMemoryRegistry(
  options: { config?: string | null; clock?: Clock } = {},
): MemoryRegistry {
  const clock = options.clock ?? systemClock;
  const records = new Map<string, Entry>();
  const log: { revision: number; event: RawEvent }[] = [];
  let revision = 1;
  let compacted = 0;
  /** Bumped by restart(): watches begun before it fail. */
  let generation = 0;
  let watchers = 0;
  const waiters = new Set<() => void>();

  const emit = (event: RawEvent) => {
    revision++;
    log.push({ revision, event });
    for (const w of [...waiters]) w();
  };
  const expire = () => {
    const now = clock.now();
    for (const [key, e] of records) {
      if (e.expiration !== null && e.expiration <= now) {
        records.delete(key);
        emit({ type: "delete", key });
      }
    }
  };
  const guard = () => {
    if (reg.down) throw new StoreUnavailableError("memory store is down (test switch)");
    expire();
  };
  const expiry = (ttl: number | null) => (ttl === null ? null : clock.now() + ttl);

  const reg: MemoryRegistry = {
    name: "memory",
    configSource: "memory config",
    config: options.config ?? null,
    down: false,
    get revision() {
      return revision;
    },
    compact() {
      compacted = revision;
      log.length = 0;
    },
    restart() {
      generation++;
      for (const w of [...waiters]) w();
    },
    get watchers() {
      return watchers;
    },
    expire,
    getConfig() {
      return Promise.resolve().then(() => {
        guard();
        return reg.config;
      });
    },
    list() {
      return Promise.resolve().then(() => {
        guard();
        const out: RawRecord[] = [...records].map(([key, e]) => ({ key, ...e }));
        return { records: out, revision };
      });
    },
    create(key, value, ttlMs) {
      return Promise.resolve().then(() => {
        guard();
        if (records.has(key)) return false as const;
        const expiration = expiry(ttlMs);
        records.set(key, { value, expiration });
        emit({ type: "put", record: { key, value, expiration } });
        return expiration;
      });
    },
    put(key, value, ttlMs) {
      return Promise.resolve().then(() => {
        guard();
        const expiration = expiry(ttlMs);
        records.set(key, { value, expiration });
        emit({ type: "put", record: { key, value, expiration } });
        return expiration;
      });
    },
    delete(key) {
      return Promise.resolve().then(() => {
        guard();
        if (records.delete(key)) emit({ type: "delete", key });
      });
    },
    async *watch(from, signal) {
      let rev = from;
      const born = generation;
      watchers++;
      try {
        yield* follow();
      } finally {
        watchers--;
      }
      async function* follow(): AsyncGenerator<{ events: RawEvent[]; revision: number }> {
        while (!signal.aborted) {
          if (reg.down) throw new StoreUnavailableError("memory store is down (test switch)");
          if (generation !== born) {
            throw new StoreUnavailableError(
              "memory store restarted under this watch (test switch)",
            );
          }
          expire();
          if (rev < compacted) {
            yield { events: [{ type: "compacted" }], revision };
            return;
          }
          const events = log.filter((l) => l.revision > rev).map((l) => l.event);
          if (revision > rev) {
            rev = revision;
            if (events.length) yield { events, revision: rev };
            continue;
          }
          const due = [...records.values()].map((e) => e.expiration).filter((x): x is number =>
            x !== null
          );
          // sleep until a change, the next expiry, or the end of the watch
          const wake = linkedController({ parents: [signal] });
          await new Promise<void>((resolve) => {
            const done = () => {
              waiters.delete(done);
              resolve();
            };
            waiters.add(done);
            wake.signal.addEventListener("abort", done, { once: true });
            if (due.length) {
              sleepQuietly(clock, Math.max(0, Math.min(...due) - clock.now()), wake.signal)
                .then(done);
            }
          });
          wake.abort();
          wake.dispose();
        }
      }
    },
    close: () => Promise.resolve(),
  };
  return reg;
}
