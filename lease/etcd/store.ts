/**
 * The etcd v3 lease store, key- and byte-compatible with flannel:
 * config at `<prefix>/config`, leases at `<prefix>/subnets/<subnetKey>`
 * holding flannel's JSON, each bound to an etcd lease with a TTL; a key
 * without an etcd lease is a reservation and never expires.
 *
 * - create: grant a lease, then a txn `version(key) == 0 → put with lease`;
 *   the grant is revoked when the txn loses (or fails).
 * - put (renew, reuse): grant a new lease, put with it, then revoke the key's
 *   previous lease so renewals leave no lease behind (flannel leaves them to
 *   expire after 24 h).
 * - list: one range over the prefix. Expiry of a lease this store granted or
 *   already looked up is exact. For others etcd tells the TTL only one lease
 *   per request (5000 took 1.1–2.2 s here, most of it etcd CPU), so up to
 *   `maxTtlLookups` (default 64) unknown leases are looked up per list and
 *   the rest are reported as `now + ttlMs` until a later list looks them up.
 *   The watch looks nothing up (its events report `now + ttlMs` for leases
 *   it does not know): with N agents every lease change would otherwise
 *   cost etcd N requests. Only this host's own expiry drives renewals, and
 *   that one is always exact.
 * - watch: from `revision + 1` over the prefix with progress notifications;
 *   a broken or silent stream is resumed by the client from the revision
 *   after the last one delivered (logged and counted here); a compacted start
 *   revision yields `compacted` (the LeaseStore re-lists); a refusal throws
 *   and the LeaseStore retries with backoff.
 *
 * TLS with user/password: when etcd has both `--client-cert-auth` and auth
 * enabled, its JSON gateway refuses client certificates that carry a Common
 * Name (it cannot map the CN to a user); weft's certificate must have none.
 *
 * @module
 */

import { readFileSync } from "node:fs";
import type { Logger } from "../../core/log.ts";
import { nullLogger } from "../../core/log.ts";
import type { Registry as Metrics } from "../../core/metrics.ts";
import { type Clock, systemClock } from "../../core/clock.ts";
import { EtcdClient, type EtcdKeyValue } from "./client.ts";
import {
  createKvLeaseStore,
  type LeaseRegistry,
  type RawEvent,
  type RawRecord,
} from "../kv_store.ts";
import { type LeaseStore } from "../types.ts";
import { ConfigError } from "../../core/errors.ts";

/** flannel's default `--etcd-prefix`. */
export const DEFAULT_ETCD_PREFIX = "/coreos.com/network";

/** flannel's default `--etcd-endpoints`. */
export const DEFAULT_ETCD_ENDPOINTS = ["http://127.0.0.1:4001", "http://127.0.0.1:2379"];

/** Options for {@link createEtcdLeaseStore}. */
export interface EtcdStoreOptions {
  /** Client URLs (`--etcd-endpoints`). */
  readonly endpoints: readonly string[];
  /** Key prefix (`--etcd-prefix`, default `/coreos.com/network`). */
  readonly prefix?: string;
  /** TTL of leases in ms (default 24 h, flannel's fixed value). */
  readonly ttlMs?: number;
  /** `--etcd-username` / `--etcd-password`. */
  readonly username?: string;
  readonly password?: string;
  /** `--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`: PEM file paths. */
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
  /** Per-request timeout in ms (default 5000). */
  readonly requestTimeoutMs?: number;
  /** TTL lookups per list for leases not granted here (default 64). */
  readonly maxTtlLookups?: number;
  /** Reconnect a watch that received nothing for this long (default 15 min). */
  readonly watchIdleTimeoutMs?: number;
  /** Attempts when a create loses a race (default 100). */
  readonly maxAttempts?: number;
  readonly logger?: Logger;
  readonly metrics?: Metrics;
  readonly clock?: Clock;
  readonly random?: () => number;
  /** A fetch to use instead of one built from the TLS files (tests). */
  readonly fetch?: typeof fetch;
}

/** The etcd registry with its client exposed (for tests and the status API). */
export interface EtcdLeaseRegistry extends LeaseRegistry {
  /**
   * As {@link LeaseRegistry.list}; `exactExpiry: false` skips the TTL lookups
   * of leases this store does not know (their expiry is then `now + ttlMs`).
   */
  list(
    signal?: AbortSignal,
    options?: { exactExpiry?: boolean },
  ): Promise<{ records: RawRecord[]; revision: number }>;
  readonly client: EtcdClient;
  /** Normalised prefix, e.g. `/coreos.com/network`. */
  readonly prefix: string;
}

function readPem(path: string | undefined, flag: string): string | undefined {
  if (!path) return undefined;
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(
      `Cannot read --${flag} ${JSON.stringify(path)}: ${(e as Error).message}; ` +
        `give the path of a PEM file readable by this process`,
      flag,
      { cause: e },
    );
  }
}

/** Run `f` over `items` with at most `limit` in flight. */
async function forEachLimit<T>(
  items: readonly T[],
  limit: number,
  f: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await f(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * The etcd storage primitives under a LeaseStore (see the module doc).
 *
 * @param options Endpoints, prefix, TTL, credentials, TLS files.
 * @returns The registry.
 * @throws {ConfigError} When a TLS file cannot be read.
 * @throws {TypeError} When an endpoint is not an http(s) URL, or only one of
 *   username and password is given.
 */
export function createEtcdRegistry(options: EtcdStoreOptions): EtcdLeaseRegistry {
  const prefix = (options.prefix ?? DEFAULT_ETCD_PREFIX).replace(/\/+$/, "");
  const configKey = `${prefix}/config`;
  const subnetsPrefix = `${prefix}/subnets/`;
  const ttlMs = options.ttlMs ?? 24 * 3600_000;
  const maxLookups = options.maxTtlLookups ?? 64;
  const log = options.logger ?? nullLogger;
  const clock = options.clock ?? systemClock;
  const tls = {
    ca: readPem(options.caFile, "etcd-cafile"),
    cert: readPem(options.certFile, "etcd-certfile"),
    key: readPem(options.keyFile, "etcd-keyfile"),
  };
  if (!!tls.cert !== !!tls.key) {
    throw new ConfigError(
      "etcd client TLS needs both --etcd-certfile and --etcd-keyfile; only one was given",
      tls.cert ? "etcd-keyfile" : "etcd-certfile",
    );
  }
  const client = new EtcdClient({
    endpoints: options.endpoints,
    username: options.username,
    password: options.password,
    tls,
    requestTimeoutMs: options.requestTimeoutMs,
    fetch: options.fetch,
    logger: log,
    clock,
  });

  const storeErrors = options.metrics?.counter(
    "weft_store_errors_total",
    "Failed requests to the lease store",
  );

  /** The etcd lease each subnet key was last seen bound to. */
  const leaseOf = new Map<string, string>();
  /** Exact expiry (ms since the epoch) of etcd leases we granted or looked up. */
  const expiryOf = new Map<string, number>();

  const ttlSeconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000));

  const grant = async (ms: number, signal?: AbortSignal) => {
    const t0 = clock.now();
    const { id, ttl } = await client.leaseGrant(ttlSeconds(ms), signal);
    const expiration = t0 + ttl * 1000;
    expiryOf.set(id, expiration);
    return { id, expiration };
  };

  const revokeQuietly = async (id: string, why: string) => {
    expiryOf.delete(id);
    try {
      await client.leaseRevoke(id);
    } catch (e) {
      log.warn("could not revoke an etcd lease; it expires by itself", {
        lease: id,
        why,
        error: e as Error,
      });
    }
  };

  /** Revoke the lease `key` was bound to, unless another known key uses it. */
  const dropPrevious = async (key: string, previous: string | undefined, why: string) => {
    if (!previous || leaseOf.get(key) === previous) return;
    for (const id of leaseOf.values()) if (id === previous) return;
    await revokeQuietly(previous, why);
  };

  /**
   * Fill `expiryOf` for up to `maxLookups` unknown leases among `kvs`. Best
   * effort: a failed lookup leaves the estimate in place.
   */
  const lookUpExpiries = async (kvs: readonly EtcdKeyValue[], signal?: AbortSignal) => {
    const unknown = new Set<string>();
    for (const kv of kvs) {
      if (kv.lease && !expiryOf.has(kv.lease) && unknown.size < maxLookups) unknown.add(kv.lease);
    }
    await forEachLimit([...unknown], 8, async (id) => {
      const t0 = clock.now();
      try {
        const ttl = await client.leaseTimeToLive(id, signal);
        expiryOf.set(id, ttl < 0 ? t0 : t0 + ttl * 1000);
      } catch (e) {
        if (signal?.aborted) throw e;
        log.debug("could not look up an etcd lease's TTL; estimating", {
          lease: id,
          error: e as Error,
        });
      }
    });
  };

  const expiryFor = (kv: EtcdKeyValue, now: number): number | null =>
    kv.lease ? expiryOf.get(kv.lease) ?? now + ttlMs : null;

  const toRecord = (kv: EtcdKeyValue, now: number): RawRecord => ({
    key: kv.key.slice(subnetsPrefix.length),
    value: kv.value,
    expiration: expiryFor(kv, now),
  });

  const track = (key: string, lease: string | undefined) => {
    const old = leaseOf.get(key);
    if (lease) leaseOf.set(key, lease);
    else leaseOf.delete(key);
    // a replaced lease's expiry is not needed any more (keeps a long watch from growing it)
    if (old && old !== lease) expiryOf.delete(old);
  };

  return {
    name: "etcd",
    configSource: `etcd key ${configKey}`,
    client,
    prefix,

    async getConfig(signal) {
      const { kvs } = await client.range(configKey, {}, signal);
      return kvs.length ? kvs[0].value : null;
    },

    /**
     * All lease records. `options.exactExpiry: false` skips the TTL lookups
     * (callers that only need to know which subnets are taken, such as
     * acquire, save up to `maxTtlLookups` requests).
     */
    async list(signal?: AbortSignal, options: { exactExpiry?: boolean } = {}) {
      const { kvs, revision } = await client.range(subnetsPrefix, { prefix: true }, signal);
      if (options.exactExpiry ?? true) await lookUpExpiries(kvs, signal);
      const now = clock.now();
      const records: RawRecord[] = [];
      const seen = new Set<string>();
      leaseOf.clear();
      for (const kv of kvs) {
        const r = toRecord(kv, now);
        track(r.key, kv.lease);
        if (kv.lease) seen.add(kv.lease);
        records.push(r);
      }
      // forget leases no key uses any more (expired, revoked, replaced)
      for (const id of expiryOf.keys()) if (!seen.has(id)) expiryOf.delete(id);
      return { records, revision };
    },

    async create(key, value, ttl, signal) {
      const full = subnetsPrefix + key;
      const absent = { key: full, target: "VERSION", result: "EQUAL", value: 0 } as const;
      if (ttl === null) {
        const r = await client.txn(
          { compare: [absent], success: [{ put: { key: full, value } }] },
          signal,
        );
        if (!r.succeeded) return false;
        track(key, undefined);
        return null;
      }
      const lease = await grant(ttl, signal);
      let succeeded: boolean;
      try {
        ({ succeeded } = await client.txn({
          compare: [absent],
          success: [{ put: { key: full, value, lease: lease.id } }],
        }, signal));
      } catch (e) {
        await revokeQuietly(lease.id, "the create txn failed");
        throw e;
      }
      if (!succeeded) {
        await revokeQuietly(lease.id, "the subnet was taken first");
        return false;
      }
      track(key, lease.id);
      return lease.expiration;
    },

    async put(key, value, ttl, signal) {
      const full = subnetsPrefix + key;
      const previous = leaseOf.get(key);
      if (ttl === null) {
        await client.put(full, value, undefined, signal);
        track(key, undefined);
        await dropPrevious(key, previous, "the key became a reservation");
        return null;
      }
      const lease = await grant(ttl, signal);
      try {
        await client.put(full, value, lease.id, signal);
      } catch (e) {
        await revokeQuietly(lease.id, "the put failed");
        throw e;
      }
      track(key, lease.id);
      await dropPrevious(key, previous, "the key was renewed with a new lease");
      return lease.expiration;
    },

    async delete(key, signal) {
      const previous = leaseOf.get(key);
      await client.delete(subnetsPrefix + key, {}, signal);
      track(key, undefined);
      await dropPrevious(key, previous, "the key was deleted");
    },

    async *watch(revision, signal) {
      let rev = revision;
      const stream = client.watch(subnetsPrefix, {
        prefix: true,
        startRevision: revision + 1,
        progressNotify: true,
        idleTimeoutMs: options.watchIdleTimeoutMs ?? 15 * 60_000,
        random: options.random,
        onResume: (error, resume) => {
          storeErrors?.inc({ store: "etcd" });
          log.warn("etcd watch stream failed, resuming", {
            error: error as Error,
            fromRevision: resume.fromRevision,
            retryInMs: resume.delayMs,
          });
        },
      }, signal);
      for await (const res of stream) {
        if (res.compactRevision !== undefined) {
          log.warn("etcd compacted the history this watch needed", {
            fromRevision: revision + 1,
            compactRevision: res.compactRevision,
          });
          yield { events: [{ type: "compacted" }], revision: rev };
          return;
        }
        // `created` carries the current revision, not how far events were delivered
        if (res.created) continue;
        if (res.events.length === 0) {
          // progress notification: everything up to res.revision was delivered
          if (res.revision > rev) {
            rev = res.revision;
            yield { events: [], revision: rev };
          }
          continue;
        }
        // No TTL lookups here: a watch event is another host's lease (its
        // exact expiry drives nothing), and a lookup per event would cost
        // every agent one request per change in the cluster.
        const now = clock.now();
        const events: RawEvent[] = [];
        for (const e of res.events) {
          const key = e.kv.key.slice(subnetsPrefix.length);
          if (e.type === "put") {
            track(key, e.kv.lease);
            events.push({ type: "put", record: toRecord(e.kv, now) });
          } else {
            track(key, undefined);
            events.push({ type: "delete", key });
          }
          rev = Math.max(rev, e.kv.modRevision);
        }
        yield { events, revision: rev };
      }
    },

    close: () => client.close(),
  };
}

/**
 * The etcd LeaseStore (flannel-compatible keys and values).
 *
 * @param options Endpoints, prefix, TTL, credentials, TLS files, logger,
 *   metrics, clock, randomness.
 * @returns The store; `close()` it when done.
 * @throws {ConfigError} When a TLS file cannot be read.
 * @throws {TypeError} When an endpoint is not an http(s) URL, or only one of
 *   username and password is given.
 * @example
 * ```ts
 * const store = createEtcdLeaseStore({ endpoints: ["http://127.0.0.1:2379"] });
 * const config = await store.getNetworkConfig();
 * const lease = await store.acquire(config, { attrs: { publicIP: "192.0.2.10", backendType: "vxlan" } });
 * ```
 */
export function createEtcdLeaseStore(options: EtcdStoreOptions): LeaseStore {
  return createKvLeaseStore(createEtcdRegistry(options), {
    ttlMs: options.ttlMs,
    logger: options.logger,
    metrics: options.metrics,
    clock: options.clock,
    random: options.random,
    maxAttempts: options.maxAttempts,
  });
}
