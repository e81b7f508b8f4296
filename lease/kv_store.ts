/**
 * A LeaseStore over any key-value registry with compare-and-swap create,
 * TTLs and a revisioned watch — etcd v3 and the embedded file store. The
 * registry speaks raw keys and JSON text; this layer owns flannel's record
 * format, allocation with bounded retries, and re-lists after compaction.
 *
 * A record that cannot be decoded is skipped with a warning (once per bad
 * value) and counted; when its key held a readable lease before, that last
 * readable lease stands in for it — in watches and in re-lists alike — so
 * garbage written over a live peer's key never tears down its routes, and
 * garbage over this host's own key does not make it give up its subnet.
 *
 * @module
 */

import * as v from "valibot";
import type { Logger } from "../core/log.ts";
import { nullLogger } from "../core/log.ts";
import type { Registry as Metrics } from "../core/metrics.ts";
import { isAbortError, sleepQuietly } from "../core/abort.ts";
import { type Clock, retryDelay, systemClock } from "../core/clock.ts";
import {
  findLeaseByHost,
  findLeaseOverlapping,
  isLeaseCompatible,
  pickFreeSubnet,
} from "./alloc.ts";
import { type NetworkConfig, parseNetworkConfig } from "./config.ts";
import {
  formatSubnetPair,
  isIPv4,
  parseIPv6,
  parseSubnetKey,
  subnetKey,
  subnetPair,
} from "../core/ip.ts";
import {
  type AcquireRequest,
  encodeLeaseAttrs,
  type Lease,
  type LeaseAttrs,
  type LeaseEvent,
  type LeaseSnapshot,
  type LeaseStore,
  type LeaseSubnets,
  NO_PUBLIC_IP,
} from "./types.ts";
import { ConfigError, LeaseConflictError } from "../core/errors.ts";
import { clip, quote } from "../core/quote.ts";

/** One stored lease record as the registry sees it. */
export interface RawRecord {
  /** Subnet key, e.g. `10.5.34.0-24`, `10.5.34.0-24&fd00:12:13::-56`, `0.0.0.0-0&fd00:12:13::-56`. */
  readonly key: string;
  /** JSON text of the attributes. */
  readonly value: string;
  /** Expiry in ms since the epoch; `null` = no TTL (a reservation). */
  readonly expiration: number | null;
}

/** A raw change from a registry watch. */
export type RawEvent =
  | { readonly type: "put"; readonly record: RawRecord }
  | { readonly type: "delete"; readonly key: string }
  /** History needed to resume is gone: re-list. */
  | { readonly type: "compacted" };

/** Storage primitives a key-value registry provides (etcd, file). */
export interface LeaseRegistry {
  readonly name: string;
  /** Where the config lives, for messages (e.g. `etcd key /coreos.com/network/config`). */
  readonly configSource: string;
  /** Text of the network config, or `null` when it does not exist. */
  getConfig(signal?: AbortSignal): Promise<string | null>;
  /**
   * All lease records and the revision they were read at. With
   * `exactExpiry: false` expirations may be estimates (allocation only needs
   * to know which subnets are taken).
   */
  list(
    signal?: AbortSignal,
    options?: { exactExpiry?: boolean },
  ): Promise<{ records: RawRecord[]; revision: number }>;
  /**
   * Create a record only if the key does not exist (etcd: `version(key) == 0`).
   * `ttlMs` null = no expiry. Returns the expiry, or `false` when the key exists.
   */
  create(
    key: string,
    value: string,
    ttlMs: number | null,
    signal?: AbortSignal,
  ): Promise<number | null | false>;
  /** Create or overwrite a record; returns the expiry. */
  put(
    key: string,
    value: string,
    ttlMs: number | null,
    signal?: AbortSignal,
  ): Promise<number | null>;
  /** Delete a record (no error when absent). */
  delete(key: string, signal?: AbortSignal): Promise<void>;
  /**
   * Changes after `revision`, in batches, each with the revision it brings
   * the reader to. Reconnects by itself; ends when `signal` aborts.
   */
  watch(
    revision: number,
    signal: AbortSignal,
  ): AsyncIterable<{ events: RawEvent[]; revision: number }>;
  close(): Promise<void>;
}

/** Options for {@link createKvLeaseStore}. */
export interface KvLeaseStoreOptions {
  /** TTL given to leases (flannel: 24 h). */
  ttlMs?: number;
  logger?: Logger;
  metrics?: Metrics;
  clock?: Clock;
  random?: () => number;
  /** Attempts when a create loses a race (flannel: 10, then exits). */
  maxAttempts?: number;
}

const LeaseValue = v.object({
  PublicIP: v.pipe(v.string(), v.check(isIPv4, "PublicIP must be an IPv4 address")),
  PublicIPv6: v.optional(v.nullable(v.string())),
  BackendType: v.optional(v.string()),
  BackendData: v.optional(v.unknown()),
  BackendV6Data: v.optional(v.unknown()),
});

/**
 * Decode a stored record into a lease. flannel's zero `PublicIP`
 * (`"0.0.0.0"`, written for an IPv6-only lease) becomes `publicIP: ""`.
 *
 * @returns The lease, or an error message saying what is wrong with it.
 */
export function decodeRecord(record: RawRecord): Lease | string {
  const sn = parseSubnetKey(record.key);
  if (!sn) {
    return `key ${
      quote(record.key)
    } is not a subnet key like 10.5.34.0-24, 10.5.34.0-24&fd00:12:13::-56 or 0.0.0.0-0&fd00:12:13::-56`;
  }
  let json: unknown;
  try {
    json = JSON.parse(record.value);
  } catch {
    return `value is not JSON: ${JSON.stringify(record.value.slice(0, 80))}`;
  }
  const fast = fastDecode(json, sn, record.expiration);
  if (fast) return fast;
  const parsed = v.safeParse(LeaseValue, json);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    const path = issue.path?.map((p) => p.key).join(".") ?? "";
    return `value ${JSON.stringify(record.value.slice(0, 120))} is not a lease: ${
      path ? path + ": " : ""
    }${clip(issue.message)}`;
  }
  const o = parsed.output;
  if (o.PublicIPv6) {
    try {
      parseIPv6(o.PublicIPv6);
    } catch {
      return `PublicIPv6 ${quote(o.PublicIPv6)} is not an IPv6 address`;
    }
  }
  const attrs: LeaseAttrs = {
    publicIP: o.PublicIP === NO_PUBLIC_IP ? "" : o.PublicIP,
    publicIPv6: o.PublicIPv6 ?? null,
    ...(o.BackendType !== undefined ? { backendType: o.BackendType } : {}),
    ...(o.BackendData !== undefined ? { backendData: o.BackendData } : {}),
    ...(o.BackendV6Data !== undefined ? { backendV6Data: o.BackendV6Data } : {}),
  };
  return { ...sn, attrs, expiration: record.expiration };
}

const V4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/**
 * The common case without valibot (5000 records per list make it matter):
 * a well-formed IPv4-only value. Anything unusual returns null and takes the
 * validating path, which also words the error.
 */
function fastDecode(
  json: unknown,
  sn: LeaseSubnets,
  expiration: number | null,
): Lease | null {
  if (typeof json !== "object" || json === null) return null;
  const o = json as Record<string, unknown>;
  if (typeof o.PublicIP !== "string" || !V4.test(o.PublicIP) || o.PublicIP === NO_PUBLIC_IP) {
    return null;
  }
  if (o.PublicIPv6 !== undefined && o.PublicIPv6 !== null) return null;
  if (o.BackendType !== undefined && typeof o.BackendType !== "string") return null;
  const attrs: LeaseAttrs = {
    publicIP: o.PublicIP,
    publicIPv6: null,
    ...(o.BackendType !== undefined ? { backendType: o.BackendType as string } : {}),
    ...(o.BackendData !== undefined ? { backendData: o.BackendData } : {}),
    ...(o.BackendV6Data !== undefined ? { backendV6Data: o.BackendV6Data } : {}),
  };
  return { ...sn, attrs, expiration };
}

/** Stable identity of a lease in a map: its subnet key. */
export function leaseKey(lease: LeaseSubnets): string {
  return subnetKey(lease.subnet, lease.ipv6Subnet);
}

/**
 * Build a LeaseStore on a registry.
 *
 * @param registry The storage primitives.
 * @param options TTL, logger, metrics, clock, randomness, retry bound.
 * @returns The store.
 */
export function createKvLeaseStore(
  registry: LeaseRegistry,
  options: KvLeaseStoreOptions = {},
): LeaseStore {
  const ttlMs = options.ttlMs ?? 24 * 3600_000;
  const log = options.logger ?? nullLogger;
  const clock = options.clock ?? systemClock;
  const random = options.random ?? Math.random;
  const maxAttempts = options.maxAttempts ?? 100;
  const malformed = options.metrics?.counter(
    "weft_store_malformed_records_total",
    "Lease records skipped because they could not be decoded",
  );
  const storeErrors = options.metrics?.counter(
    "weft_store_errors_total",
    "Failed requests to the lease store",
  );
  const warned = new Map<string, string>();
  /**
   * The last lease each key decoded to, for the keys in the store: stands in
   * for a record that turned unreadable (see the module doc).
   */
  const lastGood = new Map<string, Lease>();

  /** The lease a record stands for: decoded, or the key's last readable one; null when neither. */
  const decode = (record: RawRecord): { lease: Lease | null; fresh: boolean } => {
    const lease = decodeRecord(record);
    if (typeof lease === "string") {
      const kept = lastGood.get(record.key);
      malformed?.inc({ store: registry.name });
      // one warning per bad record value, not one per list
      if (warned.get(record.key) !== record.value) {
        warned.set(record.key, record.value);
        log.warn(
          kept
            ? "skipping malformed lease record, keeping its last readable value"
            : "skipping malformed lease record",
          { store: registry.name, key: clip(record.key, 80), reason: lease },
        );
      }
      return { lease: kept ? { ...kept, expiration: record.expiration } : null, fresh: false };
    }
    warned.delete(record.key);
    lastGood.set(record.key, lease);
    return { lease, fresh: true };
  };

  /** A key is gone from the store: forget what was kept for it. */
  const forget = (key: string) => {
    lastGood.delete(key);
    warned.delete(key);
  };

  const counted = async <T>(p: Promise<T>): Promise<T> => {
    try {
      return await p;
    } catch (e) {
      if (!isAbortError(e)) {
        storeErrors?.inc({ store: registry.name });
      }
      throw e;
    }
  };

  /** Leases, plus the subnets of malformed records (occupied all the same). */
  const listAll = async (signal?: AbortSignal, exactExpiry = true) => {
    const { records, revision } = await counted(registry.list(signal, { exactExpiry }));
    const leases: Lease[] = [];
    const occupied: Lease[] = [];
    const present = new Set<string>();
    for (const r of records) {
      present.add(r.key);
      const l = decode(r).lease;
      if (l) {
        leases.push(l);
        occupied.push(l);
      } else {
        const sn = parseSubnetKey(r.key);
        if (sn) occupied.push({ ...sn, attrs: { publicIP: "" }, expiration: r.expiration });
      }
    }
    for (const key of lastGood.keys()) if (!present.has(key)) forget(key);
    for (const key of warned.keys()) if (!present.has(key)) forget(key);
    return { leases, occupied, revision: String(revision) };
  };

  /** The subnets each snapshot handed out by `list` found taken (malformed records too). */
  const occupiedAt = new WeakMap<LeaseSnapshot, Lease[]>();

  const list = async (
    signal?: AbortSignal,
    options: { exactExpiry?: boolean } = {},
  ): Promise<LeaseSnapshot> => {
    const { leases, occupied, revision } = await listAll(signal, options.exactExpiry ?? true);
    const snapshot = { leases, revision };
    occupiedAt.set(snapshot, occupied);
    return snapshot;
  };

  const tryAcquire = async (
    config: NetworkConfig,
    req: AcquireRequest,
    signal: AbortSignal | undefined,
    attempt: number,
  ): Promise<Lease | null> => {
    // the caller's fresh listing saves a list of every lease on the first try
    const listed = attempt === 0 && req.listed ? occupiedAt.get(req.listed) : undefined;
    const { leases, occupied } = listed
      ? { leases: req.listed!.leases, occupied: listed }
      : await listAll(signal, false);
    const value = encodeLeaseAttrs(req.attrs);
    const mine = findLeaseByHost(leases, req.attrs);
    if (mine) {
      if (isLeaseCompatible(config, mine)) {
        const ttl = mine.expiration === null ? null : ttlMs;
        const expiration = await counted(registry.put(leaseKey(mine), value, ttl, signal));
        log.info("reusing this host's lease", {
          subnet: formatSubnetPair(mine),
          publicIP: req.attrs.publicIP || req.attrs.publicIPv6 || "",
        });
        return { ...mine, attrs: req.attrs, expiration };
      }
      log.warn("this host's lease does not fit the network config, deleting it", {
        subnet: formatSubnetPair(mine),
      });
      await counted(registry.delete(leaseKey(mine), signal));
    }
    let choice: LeaseSubnets | undefined;
    const prev = subnetPair(req.previousSubnet, req.previousIPv6Subnet);
    if (prev && !findLeaseOverlapping(occupied, prev)) {
      if (isLeaseCompatible(config, prev)) {
        choice = prev;
      } else {
        log.warn("previous subnet does not fit the network config, ignoring it", {
          subnet: formatSubnetPair(prev),
        });
      }
    }
    choice ??= pickFreeSubnet(config, occupied, random);
    const key = leaseKey(choice);
    const expiration = await counted(registry.create(key, value, ttlMs, signal));
    if (expiration === false) return null;
    if (choice.subnet && choice.ipv6Subnet) {
      // A dual-stack key names the pair, so the create cannot tell that another host took
      // one of the two subnets since the listing (with a pair of its own; flannel has the
      // same race). Look, and give way when one did: both racers may, and try again.
      const { occupied: now } = await listAll(signal, false);
      const rival = findLeaseOverlapping(now.filter((l) => leaseKey(l) !== key), choice);
      if (rival) {
        log.warn("another host took one of this host's new subnets at the same time; giving way", {
          subnet: formatSubnetPair(choice),
          rival: formatSubnetPair(rival),
        });
        await counted(registry.delete(key, signal));
        return null;
      }
    }
    return { ...choice, attrs: req.attrs, expiration };
  };

  return {
    name: registry.name,

    async getNetworkConfig(signal) {
      const text = await counted(registry.getConfig(signal));
      if (text === null) {
        throw new ConfigError(
          `network config not found at ${registry.configSource}: write it first, e.g. ` +
            (registry.name === "etcd"
              ? `ETCDCTL_API=3 etcdctl put <prefix>/config '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}' (it must be written with the etcd v3 API; v2 keys are invisible to v3)`
              : `'{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}'`),
        );
      }
      return parseNetworkConfig(text, {
        source: registry.configSource,
        onWarning: (m) => log.warn(m),
      });
    },

    async acquire(config, req, signal) {
      for (let attempt = 0; attempt < maxAttempts; attempt++) {
        const lease = await tryAcquire(config, req, signal, attempt);
        if (lease) {
          log.info("lease acquired", {
            subnet: formatSubnetPair(lease),
            publicIP: req.attrs.publicIP || req.attrs.publicIPv6 || "",
            attempts: attempt + 1,
          });
          return lease;
        }
        log.debug("lost a race for a subnet, retrying", { attempt: attempt + 1 });
        await clock.sleep(Math.floor(random() * 20 * Math.min(attempt + 1, 5)), signal);
      }
      throw new LeaseConflictError(
        `lost the race for a free subnet ${maxAttempts} times in a row: the store is busy with other hosts acquiring; try again`,
      );
    },

    async renew(lease, signal) {
      const ttl = lease.expiration === null ? null : ttlMs;
      const expiration = await counted(
        registry.put(leaseKey(lease), encodeLeaseAttrs(lease.attrs), ttl, signal),
      );
      return { ...lease, expiration };
    },

    async release(lease, signal) {
      await counted(registry.delete(leaseKey(lease), signal));
    },

    list,

    async *watch(revision, signal) {
      let rev = Number(revision);
      if (!Number.isSafeInteger(rev)) {
        throw new TypeError(`Cannot watch from revision ${revision}: not a number`);
      }
      const known = new Map<string, Lease>();
      let attempt = 0;
      while (!signal.aborted) {
        try {
          for await (const batch of registry.watch(rev, signal)) {
            attempt = 0;
            const out: LeaseEvent[] = [];
            let compacted = false;
            for (const ev of batch.events) {
              if (ev.type === "compacted") {
                compacted = true;
                break;
              }
              if (ev.type === "put") {
                // an unreadable value keeps the last readable one: nothing changed
                const { lease, fresh } = decode(ev.record);
                if (lease && fresh) {
                  known.set(ev.record.key, lease);
                  out.push({ type: "added", lease });
                }
              } else {
                forget(ev.key);
                const sn = parseSubnetKey(ev.key);
                if (!sn) continue;
                const lease = known.get(ev.key) ??
                  { ...sn, attrs: { publicIP: "" }, expiration: null };
                known.delete(ev.key);
                out.push({ type: "removed", lease });
              }
            }
            if (compacted) {
              log.warn("lease watch fell behind the store's history, re-listing", {
                store: registry.name,
              });
              const snap = await list(signal);
              known.clear();
              for (const l of snap.leases) known.set(leaseKey(l), l);
              rev = Number(snap.revision);
              yield [{ type: "snapshot", leases: snap.leases }];
              break; // restart the registry watch from the new revision
            }
            rev = batch.revision;
            if (out.length) yield out;
          }
        } catch (e) {
          if (signal.aborted) return;
          storeErrors?.inc({ store: registry.name });
          const delay = retryDelay(attempt++, e, { random });
          log.warn("lease watch failed, reconnecting", {
            store: registry.name,
            error: e as Error,
            retryInMs: delay,
          });
          if (!(await sleepQuietly(clock, delay, signal))) return;
        }
      }
    },

    close: () => registry.close(),
  };
}
