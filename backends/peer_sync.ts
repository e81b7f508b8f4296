/**
 * Reconciling peer state into the kernel, shared by the routing backends
 * (vxlan, host-gw): a desired state (routes, neighbours, fdb entries) that a
 * pure function derives from the leases is compared with what the kernel
 * holds, and only the difference is written. A repair loop turns kernel
 * events (someone deleted a route, a neighbour, the device) into a resync.
 *
 * @module
 */

import type { Logger } from "../core/log.ts";
import type { Clock } from "../core/clock.ts";
import { backoff } from "../core/clock.ts";
import type { NetworkConfig } from "../lease/config.ts";
import { formatSubnetPair, type IPv4Net } from "../core/ip.ts";
import type { Lease } from "../lease/types.ts";
import { NetlinkBatchError, NetlinkError } from "../datapath/netlink/error.ts";
import {
  type Datapath,
  type DatapathEvent,
  type FdbEntry,
  type Neighbour,
  NUD_PERMANENT,
  type Route,
  RT_TABLE_MAIN,
} from "../datapath/types.ts";

/** The kernel state a backend wants for its peers. */
export interface DesiredState {
  readonly routes: readonly Route[];
  readonly neighbours: readonly Neighbour[];
  readonly fdb: readonly FdbEntry[];
}

/** A peer lease the desired-state function could not use, and why. */
export interface SkippedPeer {
  readonly lease: Lease;
  readonly reason: string;
}

/** What a backend owns in the kernel: anything else is never deleted. */
export interface ManagedScope {
  isOurRoute(r: Route): boolean;
  isOurNeighbour(n: Neighbour): boolean;
  isOurFdb(e: FdbEntry): boolean;
}

/** What the kernel holds now (dumps). */
export interface InstalledState {
  readonly routes: readonly Route[];
  readonly neighbours: readonly Neighbour[];
  readonly fdb: readonly FdbEntry[];
}

/** The writes that turn the installed state into the desired one. */
export interface Plan {
  readonly replaceRoutes: Route[];
  readonly deleteRoutes: Route[];
  readonly replaceNeighbours: Neighbour[];
  readonly deleteNeighbours: Neighbour[];
  readonly replaceFdb: FdbEntry[];
  readonly deleteFdb: FdbEntry[];
}

/** Number of writes in a plan. */
export function planSize(p: Plan): number {
  return p.replaceRoutes.length + p.deleteRoutes.length + p.replaceNeighbours.length +
    p.deleteNeighbours.length + p.replaceFdb.length + p.deleteFdb.length;
}

/** Key of a route: table and destination (what `replace` matches on, with metric). */
export function routeKey(r: Route): string {
  return `${r.table ?? RT_TABLE_MAIN}/${r.dst.ip}/${r.dst.prefixLen}/${r.metric ?? 0}`;
}

/** Key of a neighbour: link and IP. */
export function neighbourKey(n: Neighbour): string {
  return `${n.index}/${n.ip}`;
}

function sameRoute(want: Route, have: Route): boolean {
  return (want.gateway ?? null) === (have.gateway ?? null) &&
    (want.index ?? null) === (have.index ?? null) &&
    (want.onlink ?? false) === (have.onlink ?? false);
}

function sameNeighbour(want: Neighbour, have: Neighbour): boolean {
  return want.mac === have.mac && ((have.state ?? 0) & NUD_PERMANENT) !== 0;
}

/**
 * Compute the writes that make `installed` match `desired` (pure).
 *
 * Routes and neighbours are replaced when missing or different and deleted
 * when they are ours but not desired. A desired fdb MAC whose remotes are
 * not exactly the desired one gets its other remotes deleted and, if
 * missing, the desired one written; fdb entries of undesired MACs are
 * deleted. Nothing outside `scope` is ever deleted.
 *
 * @param desired What should be there.
 * @param installed What the kernel holds.
 * @param scope Which installed objects this backend owns.
 * @returns The plan (empty arrays when everything is right).
 */
export function planChanges(
  desired: DesiredState,
  installed: InstalledState,
  scope: ManagedScope,
): Plan {
  const plan: Plan = {
    replaceRoutes: [],
    deleteRoutes: [],
    replaceNeighbours: [],
    deleteNeighbours: [],
    replaceFdb: [],
    deleteFdb: [],
  };

  const haveRoutes = new Map<string, Route[]>();
  for (const r of installed.routes) {
    const k = routeKey(r);
    const list = haveRoutes.get(k);
    if (list) list.push(r);
    else haveRoutes.set(k, [r]);
  }
  const wantRoutes = new Map<string, Route>();
  for (const r of desired.routes) wantRoutes.set(routeKey(r), r);
  for (const [k, want] of wantRoutes) {
    const have = haveRoutes.get(k);
    if (!have || !have.some((h) => sameRoute(want, h))) plan.replaceRoutes.push(want);
  }
  for (const [k, list] of haveRoutes) {
    const want = wantRoutes.get(k);
    for (const have of list) {
      if (!scope.isOurRoute(have)) continue;
      if (!want || (list.length > 1 && !sameRoute(want, have))) {
        plan.deleteRoutes.push({
          dst: have.dst,
          gateway: have.gateway,
          index: have.index,
          table: have.table,
          metric: have.metric,
        });
      }
    }
  }

  const haveNeigh = new Map<string, Neighbour>();
  for (const n of installed.neighbours) haveNeigh.set(neighbourKey(n), n);
  const wantNeigh = new Map<string, Neighbour>();
  for (const n of desired.neighbours) wantNeigh.set(neighbourKey(n), n);
  for (const [k, want] of wantNeigh) {
    const have = haveNeigh.get(k);
    if (!have || !sameNeighbour(want, have)) plan.replaceNeighbours.push(want);
  }
  for (const [k, have] of haveNeigh) {
    if (!wantNeigh.has(k) && scope.isOurNeighbour(have)) {
      plan.deleteNeighbours.push({ index: have.index, ip: have.ip, mac: have.mac });
    }
  }

  const wantFdb = new Map<string, FdbEntry>();
  for (const e of desired.fdb) wantFdb.set(`${e.index}/${e.mac}`, e);
  const haveFdb = new Map<string, FdbEntry[]>();
  for (const e of installed.fdb) {
    const k = `${e.index}/${e.mac}`;
    const list = haveFdb.get(k);
    if (list) list.push(e);
    else haveFdb.set(k, [e]);
  }
  for (const [k, want] of wantFdb) {
    const have = haveFdb.get(k) ?? [];
    for (const h of have) {
      if (h.dst !== want.dst) plan.deleteFdb.push({ index: h.index, mac: h.mac, dst: h.dst });
    }
    if (!have.some((h) => h.dst === want.dst)) plan.replaceFdb.push(want);
  }
  for (const [k, list] of haveFdb) {
    if (wantFdb.has(k)) continue;
    for (const h of list) {
      if (scope.isOurFdb(h)) plan.deleteFdb.push({ index: h.index, mac: h.mac, dst: h.dst });
    }
  }
  return plan;
}

/**
 * Read the installed state the plan is computed against.
 *
 * @param dp The datapath.
 * @param want Which tables to read (a backend without fdb skips that dump).
 * @returns Routes of the main table, neighbours and fdb entries.
 */
export async function readInstalled(
  dp: Datapath,
  want: { neighbours: boolean; fdb: boolean; linkIndex?: number },
): Promise<InstalledState> {
  const [routes, neighbours, fdb] = await Promise.all([
    dp.listRoutes(),
    want.neighbours ? dp.listNeighbours(want.linkIndex) : Promise.resolve([]),
    want.fdb ? dp.listFdb(want.linkIndex) : Promise.resolve([]),
  ]);
  return { routes, neighbours, fdb };
}

/**
 * Write a plan: stale routes go first (traffic stops using them), then stale
 * neighbours and fdb entries, then new neighbours and fdb entries, and new
 * routes last (so the kernel never resolves a fresh route's gateway before
 * its neighbour exists). Every step runs even when an earlier one fails.
 *
 * @param dp The datapath.
 * @param plan From {@link planChanges}.
 * @returns The failures (empty when everything was written).
 */
export async function applyPlan(dp: Datapath, plan: Plan): Promise<NetlinkError[]> {
  const errors: NetlinkError[] = [];
  const step = async (items: readonly unknown[], write: () => Promise<void>) => {
    if (items.length === 0) return;
    try {
      await write();
    } catch (e) {
      if (e instanceof NetlinkBatchError) errors.push(...e.errors);
      else if (e instanceof NetlinkError) errors.push(e);
      else throw e;
    }
  };
  await step(plan.deleteRoutes, () => dp.deleteRoutes(plan.deleteRoutes));
  await step(plan.deleteNeighbours, () => dp.deleteNeighbours(plan.deleteNeighbours));
  await step(plan.deleteFdb, () => dp.deleteFdb(plan.deleteFdb));
  await step(plan.replaceNeighbours, () => dp.replaceNeighbours(plan.replaceNeighbours));
  await step(plan.replaceFdb, () => dp.replaceFdb(plan.replaceFdb));
  await step(plan.replaceRoutes, () => dp.replaceRoutes(plan.replaceRoutes));
  return errors;
}

/** Counts of what one reconcile wrote, for logs and tests. */
export interface SyncResult {
  readonly added: number;
  readonly removed: number;
  readonly failed: number;
}

/**
 * Summarise a plan's outcome; throw when some writes failed.
 *
 * @throws {NetlinkError} The failure (or `NetlinkBatchError` with all of them).
 */
export function finishSync(plan: Plan, errors: readonly NetlinkError[]): SyncResult {
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new NetlinkBatchError(errors, planSize(plan));
  return {
    added: plan.replaceRoutes.length + plan.replaceNeighbours.length + plan.replaceFdb.length,
    removed: plan.deleteRoutes.length + plan.deleteNeighbours.length + plan.deleteFdb.length,
    failed: 0,
  };
}

/**
 * Remember which skipped peers were already warned about, so a resync does
 * not repeat the same warning.
 */
export class SkipWarner {
  #seen = new Set<string>();

  /** @param logger Where warnings go. */
  constructor(readonly logger: Logger) {}

  /** Warn about newly skipped peers; forget peers no longer skipped. */
  report(skipped: readonly SkippedPeer[]): void {
    const now = new Set<string>();
    for (const s of skipped) {
      const k = `${formatSubnetPair(s.lease)} ${s.reason}`;
      now.add(k);
      if (!this.#seen.has(k)) {
        this.logger.warn("skipping peer lease", {
          subnet: formatSubnetPair(s.lease),
          publicIP: s.lease.attrs.publicIP,
          reason: s.reason,
        });
      }
    }
    this.#seen = now;
  }
}

/** Options for {@link repairLoop}. */
export interface RepairLoopOptions {
  readonly datapath: Datapath;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Why this event needs a resync, or null when it does not. */
  readonly needsRepair: (e: DatapathEvent) => string | null;
  /** Put everything right (recreate devices, resync peers). */
  readonly repair: (reason: string, signal: AbortSignal) => Promise<void>;
  /** Wait after the first triggering event, to batch a burst. Default 20 ms. */
  readonly debounceMs?: number;
  /** Full resync even without events. Default 60 s; 0 = never. */
  readonly resyncIntervalMs?: number;
  /** Called after each successful repair (tests, metrics). */
  readonly onRepaired?: (reason: string) => void;
}

/**
 * Watch kernel events and repair until `signal` aborts: a triggering event
 * (or a lost-events overrun, or the periodic timer) schedules a resync after
 * a short debounce; a failed resync is retried with backoff (up to 30 s).
 *
 * @param options Datapath, clock, logger, trigger and repair functions.
 * @param signal Ends the loop.
 * @returns When `signal` aborts.
 */
export async function repairLoop(options: RepairLoopOptions, signal: AbortSignal): Promise<void> {
  const { datapath, clock, logger } = options;
  const debounceMs = options.debounceMs ?? 20;
  const intervalMs = options.resyncIntervalMs ?? 60_000;
  let pending: string | null = null;
  let wake: (() => void) | null = null;
  const trigger = (reason: string) => {
    pending ??= reason;
    wake?.();
  };

  const watcher = (async () => {
    while (!signal.aborted) {
      try {
        for await (const e of datapath.events(signal)) {
          const reason = e.kind === "overrun"
            ? "kernel events were lost (receive buffer overrun)"
            : options.needsRepair(e);
          if (reason) trigger(reason);
        }
      } catch (e) {
        if (signal.aborted) return;
        logger.error("kernel event subscription failed; resubscribing", { error: e });
        trigger("kernel event subscription restarted");
        await sleepQuietly(clock, 1000, signal);
      }
      if (!signal.aborted) {
        // The subscription ended without an abort (datapath closed): nothing more to watch.
        return;
      }
    }
  })();

  let attempt = 0;
  while (!signal.aborted) {
    if (pending === null) {
      const local = new AbortController();
      const waitSignal = AbortSignal.any([signal, local.signal]);
      const woke = new Promise<void>((r) => (wake = r));
      const timer = intervalMs > 0
        ? sleepQuietly(clock, intervalMs, waitSignal).then(() => {
          if (!local.signal.aborted && !signal.aborted) trigger("periodic resync");
        })
        : new Promise<void>(() => {});
      await Promise.race([woke, timer, abortPromise(waitSignal)]);
      wake = null;
      local.abort();
      if (signal.aborted) break;
      if (pending === null) continue;
    }
    await sleepQuietly(clock, debounceMs, signal);
    if (signal.aborted) break;
    const reason: string = pending ?? "resync";
    pending = null;
    try {
      await options.repair(reason, signal);
      attempt = 0;
      options.onRepaired?.(reason);
    } catch (e) {
      if (signal.aborted) break;
      const delay = backoff(attempt++, { base: 100, max: 30_000 });
      logger.error("repair failed; retrying", { reason, error: e, retryInMs: delay });
      await sleepQuietly(clock, delay, signal);
      pending ??= reason;
    }
  }
  await watcher;
}

function abortPromise(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((r) => signal.addEventListener("abort", () => r(), { once: true }));
}

/** Sleep on the clock; resolve early (without throwing) when `signal` aborts. */
async function sleepQuietly(clock: Clock, ms: number, signal: AbortSignal): Promise<void> {
  try {
    await clock.sleep(ms, signal);
  } catch {
    // aborted
  }
}

/**
 * A mutex for async work: calls run one at a time in call order.
 */
export class Serial {
  #tail: Promise<unknown> = Promise.resolve();

  /** Run `fn` after every earlier call has settled. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(fn, fn);
    this.#tail = result.catch(() => {});
    return result;
  }
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
