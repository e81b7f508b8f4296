/**
 * The routed-peer engine: one backend shape for every backend that gives
 * each peer lease some entries in a target (vxlan and host-gw in the
 * kernel; a cloud route table later).
 *
 * An instance supplies three things ({@link RoutedSetup}):
 * - a setup step run at register: devices, the lease attributes to publish
 *   (it acquires the lease), and the {@link RouteTarget};
 * - a pure per-peer function: peer lease → its entries, or why it is
 *   skipped (warned once per peer and reason);
 * - the target, which applies a full set (`sync`: read what is there and
 *   diff) or a few peers' changes (`update`: cost independent of the number
 *   of peers) and reports drift.
 *
 * The engine keeps the peers and their entries, and turns `syncPeers` into
 * a full sync, `updatePeers` into an update of the changed peers, and in
 * `run` drift into repairs (entries drift: those peers; device drift and
 * lost events: a full sync), plus a slow periodic full sync and retries
 * with back-off of writes that failed.
 *
 * A cloud route table is the third target (`backends/cloud/target.ts`,
 * used by aws-vpc and the hybrid vxlan mode): its `sync` writes only this
 * host's route (`ownEntries`) and, when its own jittered listing is due,
 * reads the table and deletes routes of leases that are gone (the entries
 * of peers are "keep" markers, so a peer's route is never deleted while its
 * lease lives); its `update` writes only this host's route; it has no
 * `drift`, so the periodic sync finds what others changed; it tells
 * `notReadyReason` why its route is not written, and `release` removes it.
 *
 * No periodic sync runs before the agent has given the peers (`syncPeers`,
 * or `updatePeers`): with an empty peer set it would remove every peer's
 * entries (a cloud target: every other host's route).
 *
 * @module
 */

import { formatSubnetPair, type IPv4Net, type IPv6Net } from "../../core/ip.ts";
import { ConfigError } from "../../core/errors.ts";
import type { Logger } from "../../core/log.ts";
import { cpuTimeMs } from "../../core/runtime.ts";
import type { NetworkConfig } from "../../lease/config.ts";
import type { Lease } from "../../lease/types.ts";
import { NetlinkBatchError, NetlinkError } from "../../datapath/netlink/error.ts";
import type { ApplyResult, Drift, EntryFailure } from "../../datapath/types.ts";
import { Repairs, type RepairWork } from "../repair.ts";
import type { BackendContext, Network, PeerChange, PeerKernelState } from "../types.ts";

/**
 * A peer's entries (with `partial`: why some of them are missing, e.g. a
 * dual-stack peer whose IPv6 data is unusable), or why the peer gets none.
 */
export type PeerResult<E> =
  | { readonly entries: E; readonly partial?: string }
  | { readonly skip: string };

/**
 * Where a routed backend's entries go: the kernel (vxlan, host-gw) or a
 * cloud route table. Entries are keyed by peer (its subnet, e.g.
 * `10.5.2.0/24`).
 */
export interface RouteTarget<E> {
  /** Names the target's table in drift reports (entry drift of other tables is ignored). */
  readonly name: string;
  /**
   * Make everything right: the target's own infrastructure (devices) and
   * exactly these entries, reading what is there and writing the difference.
   *
   * @returns Counts and the failed writes (the rest is applied).
   */
  sync(entries: ReadonlyMap<string, E>, signal: AbortSignal): Promise<ApplyResult>;
  /**
   * Apply these peers' entries (null: remove them) from what the target
   * knows it holds, without reading everything.
   *
   * @returns Counts and the failed writes.
   */
  update(changes: ReadonlyMap<string, E | null>, signal: AbortSignal): Promise<ApplyResult>;
  /** Changes made behind the target's back; absent when it cannot watch (the periodic sync covers it). */
  drift?(signal: AbortSignal): AsyncIterable<Drift>;
  /** Why the target is not in place yet (a cloud route not written), or null; absent: always ready. */
  notReadyReason?(): string | null;
  /**
   * How long until the target wants a full sync of its own (a cloud
   * listing due); the engine syncs then or at its periodic interval,
   * whichever comes first. Absent: only the periodic interval.
   */
  nextSyncInMs?(): number;
}

/** What an instance's setup step hands the engine. */
export interface RoutedSetup<E> {
  /** This host's lease (the setup acquired it with its attributes). */
  readonly lease: Lease;
  /** Pod MTU. */
  readonly mtu: number;
  readonly target: RouteTarget<E>;
  /** Pure: a peer lease's entries, or why it is skipped. */
  readonly peerEntries: (peer: Lease) => PeerResult<E>;
  /** This host's own entries (a cloud route to this host); none for kernel targets. */
  readonly ownEntries?: E;
  /** Re-read what `peerEntries` depends on (DirectRouting's prefixes) before each full sync. */
  readonly refresh?: () => Promise<void>;
  /** Undo this host's own entries when its lease is given back (a cloud route). */
  readonly release?: (signal: AbortSignal) => Promise<void>;
}

/** Counts of what one sync wrote, for logs and tests. */
export interface SyncResult {
  readonly added: number;
  readonly removed: number;
  readonly failed: number;
}

/** A routed Network, with a hook to resync on demand. */
export interface RoutedNetwork extends Network {
  /** Full sync now against the current peers; returns what was written. */
  resync(): Promise<SyncResult>;
  /**
   * Remove what this host published for itself outside the host (its cloud
   * route), after its lease was given back; a no-op for kernel targets.
   */
  release(signal?: AbortSignal): Promise<void>;
}

/** Timings and hooks of the engine. */
export interface RoutedOptions {
  /**
   * Periodic full sync in `run` (default 60 s; 0 = only on drift and when
   * the target asks, see {@link RouteTarget.nextSyncInMs}).
   */
  readonly resyncIntervalMs?: number;
  /** Debounce of repairs after drift (default 20 ms). */
  readonly repairDebounceMs?: number;
  /** Called after each repair (for tests and metrics). */
  readonly onRepaired?: (reason: string) => void;
}

/** The key of a peer: its subnets (`10.5.2.0/24`, `10.5.2.0/24 + fd00:5:2::/64`). */
export function peerKey(lease: Lease): string {
  return formatSubnetPair(lease);
}

/**
 * Remember which skipped peers were warned about, so a resync does not
 * repeat the warning.
 */
class SkipWarner {
  readonly #warned = new Map<string, string>();

  constructor(readonly logger: Logger) {}

  /** Why `key` is skipped, if it is. */
  reason(key: string): string | undefined {
    return this.#warned.get(key);
  }

  skip(key: string, lease: Lease, reason: string, message = "skipping peer lease"): void {
    if (this.#warned.get(key) === reason) return;
    this.#warned.set(key, reason);
    this.logger.warn(message, {
      subnet: key,
      publicIP: lease.attrs.publicIP,
      ...(lease.attrs.publicIPv6 ? { publicIPv6: lease.attrs.publicIPv6 } : {}),
      reason,
    });
  }

  forget(key: string): void {
    this.#warned.delete(key);
  }

  retain(keys: ReadonlyMap<string, unknown>): void {
    for (const k of this.#warned.keys()) if (!keys.has(k)) this.#warned.delete(k);
  }
}

/** A mutex for async work: calls run one at a time in call order. */
class Serial {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(fn, fn);
    this.#tail = result.catch(() => {});
    return result;
  }
}

/**
 * Throw the failures of an apply: the error itself when there is one, a
 * {@link NetlinkBatchError} (kernel) or `AggregateError` when several.
 */
function throwFailures(failures: readonly EntryFailure[], total: number): void {
  const errors = failures.map((f) => f.error);
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) {
    if (errors.every((e) => e instanceof NetlinkError)) {
      throw new NetlinkBatchError(errors as NetlinkError[], total);
    }
    throw new AggregateError(
      errors,
      `${errors.length} peer writes failed; first: ${errors[0].message}`,
    );
  }
}

/**
 * Run a routed backend's network over what its setup step made.
 *
 * @param type Backend type, for logs (`vxlan`).
 * @param setup From the instance's setup step.
 * @param ctx The register context (clock).
 * @param log Where the engine logs.
 * @param options Timings and hooks.
 * @returns The network.
 */
export function routedNetwork<E>(
  type: string,
  setup: RoutedSetup<E>,
  ctx: BackendContext,
  log: Logger,
  options: RoutedOptions = {},
): RoutedNetwork {
  const { lease, target } = setup;
  const ownKey = peerKey(lease);
  const peers = new Map<string, Lease>();
  const desired = new Map<string, E>();
  const warner = new SkipWarner(log);
  const serial = new Serial();
  /** Peers whose last write failed, with the error (for `peerStates`). */
  const failedKeys = new Map<string, string>();
  /** A failure of the last full sync that names no peer (all peers are in doubt). */
  let unkeyedFailure: string | null = null;
  const idle = new AbortController().signal;

  /** A peer's entries (null: none), warning about a skipped peer once. */
  const compute = (key: string, peer: Lease): E | null => {
    const r = setup.peerEntries(peer);
    if ("skip" in r) {
      warner.skip(key, peer, r.skip);
      return null;
    }
    if (r.partial) warner.skip(key, peer, r.partial, "peer lease only partly usable");
    else warner.forget(key);
    return r.entries;
  };

  /**
   * Whether the agent gave the peers yet (`syncPeers`, or changes after
   * its own listing): before that a full sync would remove every peer.
   */
  let peersKnown = false;

  const repairs = new Repairs({
    drift: target.drift ? (signal) => target.drift!(signal) : undefined,
    table: target.name,
    repair: (work, signal) => serial.run(() => repair(work, signal)),
    clock: ctx.clock,
    logger: log,
    debounceMs: options.repairDebounceMs,
    resyncIntervalMs: () => {
      const periodic = options.resyncIntervalMs ?? 60_000;
      // the target's own schedule (at most once a second) counts once the peers are
      // known; until then look again every second
      const own = target.nextSyncInMs
        ? (peersKnown ? Math.max(1000, target.nextSyncInMs()) : 1000)
        : Infinity;
      const next = Math.min(periodic > 0 ? periodic : Infinity, own);
      return Number.isFinite(next) ? next : 0;
    },
    onRepaired: options.onRepaired,
  });

  /** Log, schedule retries of failed writes, and throw them. */
  const finish = (
    r: ApplyResult,
    what: string,
    peersCount: number,
    startedAt: number,
    cpuAt: number,
    keys: Iterable<string> | null,
    writing?: { ms: number; cpuMs: number },
  ): SyncResult => {
    // keys: what this write covered (null: everything)
    if (keys === null) {
      failedKeys.clear();
      unkeyedFailure = null;
    } else for (const k of keys) failedKeys.delete(k);
    for (const f of r.failures) {
      if (f.key !== undefined) failedKeys.set(f.key, f.error.message);
      else unkeyedFailure = f.error.message;
    }
    if (r.written + r.deleted + r.failures.length > 0) {
      const fields = {
        peers: peersCount,
        written: r.written,
        deleted: r.deleted,
        failed: r.failures.length,
        durationMs: ctx.clock.now() - startedAt,
        // the whole process's CPU meanwhile: unlike durationMs, not stretched by a busy machine
        cpuMs: Math.round(cpuTimeMs() - cpuAt),
        // of it, the target's part (a kernel datapath: dumps, diff, writes), after the
        // entries were derived from the leases
        ...(writing
          ? { targetMs: Math.round(writing.ms), targetCpuMs: Math.round(writing.cpuMs) }
          : {}),
      };
      // a full sync is news; an update follows one lease event, which the agent logged already
      if (what === "synced") log.info(`${type} peers synced`, fields);
      else log.debug(`${type} peers ${what}`, fields);
    }
    for (const f of r.failures) {
      log.warn("could not write peer state", { peer: f.key, error: f.error.message });
    }
    if (r.failures.length > 0) {
      const keys = r.failures.map((f) => f.key);
      repairs.request(
        keys.every((k) => k !== undefined)
          ? { keys: keys as string[], reason: "retrying writes that failed" }
          : { full: true, reason: "retrying writes that failed" },
      );
    }
    throwFailures(r.failures, r.written + r.deleted + r.failures.length);
    return { added: r.written, removed: r.deleted, failed: 0 };
  };

  const full = async (signal: AbortSignal): Promise<SyncResult> => {
    const startedAt = ctx.clock.now();
    const cpuAt = cpuTimeMs();
    await setup.refresh?.();
    desired.clear();
    if (setup.ownEntries !== undefined) desired.set(ownKey, setup.ownEntries);
    // forEach: no [key, lease] pair per peer (5000 at start, which runs unoptimized)
    peers.forEach((peer, k) => {
      const e = compute(k, peer);
      if (e !== null) desired.set(k, e);
    });
    warner.retain(peers);
    const writeAt = performance.now();
    const writeCpuAt = cpuTimeMs();
    const r = await target.sync(desired, signal);
    return finish(r, "synced", desired.size, startedAt, cpuAt, null, {
      ms: performance.now() - writeAt,
      cpuMs: cpuTimeMs() - writeCpuAt,
    });
  };

  const incremental = async (keys: Iterable<string>, signal: AbortSignal): Promise<SyncResult> => {
    const changes = new Map<string, E | null>();
    for (const k of keys) changes.set(k, desired.get(k) ?? null);
    if (changes.size === 0) return { added: 0, removed: 0, failed: 0 };
    const startedAt = ctx.clock.now();
    const cpuAt = cpuTimeMs();
    return finish(
      await target.update(changes, signal),
      "updated",
      desired.size,
      startedAt,
      cpuAt,
      changes.keys(),
    );
  };

  const repair = async (work: RepairWork, signal: AbortSignal): Promise<void> => {
    const periodic = work.reason === "periodic resync";
    if (periodic && !peersKnown) return; // the first syncPeers syncs everything
    if (!periodic) log.warn(`repairing the ${type} datapath`, { reason: work.reason });
    const r = work.full ? await full(signal) : await incremental(work.keys, signal);
    if (!periodic || r.added + r.removed > 0) {
      log.info(`${type} datapath repaired`, {
        reason: work.reason,
        added: r.added,
        removed: r.removed,
      });
    }
  };

  return {
    lease,
    mtu: setup.mtu,
    syncPeers: (list, signal) =>
      serial.run(async () => {
        peers.clear();
        for (const p of list) {
          const k = peerKey(p);
          if (k !== ownKey) peers.set(k, p);
        }
        peersKnown = true;
        await full(signal ?? idle);
      }),
    updatePeers: (changes: readonly PeerChange[], signal?: AbortSignal) =>
      serial.run(async () => {
        peersKnown = true;
        const keys = new Set<string>();
        for (const c of changes) {
          const k = peerKey(c.lease);
          if (k === ownKey) continue;
          keys.add(k);
          desired.delete(k);
          if (c.type === "removed") {
            peers.delete(k);
            warner.forget(k);
            continue;
          }
          peers.set(k, c.lease);
          const e = compute(k, c.lease);
          if (e !== null) desired.set(k, e);
        }
        await incremental(keys, signal ?? idle);
      }),
    resync: () => serial.run(() => full(idle)),
    release: (signal) => serial.run(() => setup.release?.(signal ?? idle) ?? Promise.resolve()),
    run: (signal) => repairs.run(signal),
    notReadyReason: () => target.notReadyReason?.() ?? null,
    peerStates: () => {
      const states = new Map<string, PeerKernelState>();
      for (const k of peers.keys()) {
        const skipped = warner.reason(k);
        const failed = failedKeys.get(k) ?? unkeyedFailure;
        states.set(
          k,
          skipped !== undefined
            ? { state: "skipped", detail: skipped }
            : failed !== null
            ? { state: "failed", detail: failed }
            : desired.has(k)
            ? { state: "applied" }
            : { state: "failed", detail: "not written yet" },
        );
      }
      return states;
    },
  };
}

/** The cluster networks of the enabled families. */
export interface ClusterNetworks {
  /** `Network`, when IPv4 is enabled. */
  readonly ipv4?: IPv4Net;
  /** `IPv6Network`, when IPv6 is enabled. */
  readonly ipv6?: IPv6Net;
}

/**
 * The cluster networks a kernel backend that carries both families
 * programs (IPv4, dual-stack or IPv6-only).
 *
 * @param config The network config.
 * @param backend Backend name for messages.
 * @returns The networks of the enabled families (at least one).
 * @throws {ConfigError} When an enabled family has no network, or none is enabled.
 */
export function clusterNetworksOf(config: NetworkConfig, backend: string): ClusterNetworks {
  if (config.enableIPv4 && !config.network) {
    throw new ConfigError(
      `the ${backend} backend needs "Network" when IPv4 is enabled: set it (e.g. "10.5.0.0/16") or set "EnableIPv4": false`,
      "Network",
    );
  }
  if (config.enableIPv6 && !config.ipv6Network) {
    throw new ConfigError(
      `the ${backend} backend needs "IPv6Network" when IPv6 is enabled: set it (e.g. "fd00:5::/48") or drop "EnableIPv6"`,
      "IPv6Network",
    );
  }
  const out = {
    ...(config.enableIPv4 ? { ipv4: config.network } : {}),
    ...(config.enableIPv6 ? { ipv6: config.ipv6Network } : {}),
  };
  if (!out.ipv4 && !out.ipv6) {
    throw new ConfigError(
      `the ${backend} backend has no network to carry: enable IPv4 ("Network") or IPv6 ("EnableIPv6" and "IPv6Network")`,
      "EnableIPv4",
    );
  }
  return out;
}

/**
 * The IPv4 cluster network a kernel backend programs, or a clear error when
 * the config has none; warns once that IPv6 peers get no routes.
 *
 * @param config The network config.
 * @param backend Backend name for messages.
 * @param log Where the IPv6 warning goes.
 * @returns The IPv4 network.
 * @throws {Error} When IPv4 is disabled or Network is missing.
 */
export function ipv4NetworkOf(config: NetworkConfig, backend: string, log: Logger): IPv4Net {
  if (!config.enableIPv4 || !config.network) {
    throw new Error(
      `the ${backend} backend of weft supports IPv4 only: set "Network" and leave "EnableIPv4" on in the network config`,
    );
  }
  if (config.enableIPv6) {
    log.warn(
      `EnableIPv6 is set, but weft's ${backend} backend programs IPv4 only; IPv6 peers get no routes`,
    );
  }
  return config.network;
}
