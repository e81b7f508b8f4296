/**
 * A cloud route table as the target of a routed-peer backend (aws-vpc, gce,
 * the hybrid vxlan mode): the reconcile loop shared by every
 * {@link RouteProvider}.
 *
 * What it keeps true, per table of this host (`self.tables`):
 * - **this host's route**: each of its lease's subnets → this host
 *   (`self.target`). Missing → create; a route with another target (or a
 *   blackhole) → replace; identical → nothing. A create that finds a route
 *   (another host wrote one meanwhile) replaces it, a replace that finds
 *   none creates it.
 * - **no stale routes inside `Network`**: an owned route (one weft can
 *   prove is its kind, see {@link ProviderRoute.owned}) whose destination
 *   lies inside the cluster networks is removed when it is a blackhole,
 *   when no current lease has that subnet, when the lease's host is known
 *   to be elsewhere (a hybrid peer in another VPC or on-prem), or when it
 *   points at a target no current lease has. A live peer's route is never
 *   removed or rewritten: its own host keeps it right. Routes outside the
 *   networks, and routes weft cannot own, are never touched.
 *
 * Cost, in API calls (the point of the design):
 * - a host joining: one `list` and one `create` per table (its own route);
 *   the other hosts make none for it (a peer's entry is only a "keep"
 *   marker, and their listing is not re-read on lease events);
 * - idle: one `list` per table per listing period (default 120 s, ±25 %
 *   jitter, so the hosts of a cluster spread their reads);
 * - a lease that went away: its route is removed by whichever host lists
 *   first after that, not by every host at once (others find it gone, and a
 *   remove of a missing route is not an error).
 *
 * So `sync` reads the table only when the listing is due (on the target's
 * own jittered schedule, whatever calls `sync` in between; `nextSyncInMs`
 * tells the engine when to call) and removes stale routes only right after
 * such a read; otherwise it works from the cached listing. `update` never reads: it writes this host's route when it is
 * among the changes (a retry) and leaves peers to the next listing.
 *
 * Failures: a call that fails is reported (the engine retries it) and, for
 * kinds that will not heal by themselves at once (`limit`, `denied`,
 * `invalid`: at least 30 s; `unavailable`: exponential from 1 s), no call
 * is made again before the hold ends — retries by the engine or the agent
 * meanwhile get the same error back without an API call. Throttling is left
 * to the process-wide gate of `calls.ts`. `notReadyReason()` says why this
 * host's route is not (yet) in every table, for `/readyz`.
 *
 * Metrics (besides the per-call counters of `calls.ts`), by provider and
 * table: `weft_cloud_route_table_routes` (all routes, for the quota),
 * `weft_cloud_routes_owned` (owned routes inside the networks),
 * `weft_cloud_own_route` (1 when this host's route is in place),
 * `weft_cloud_stale_routes_removed_total`.
 *
 * @module
 */

import { backoff, type Clock } from "../../core/clock.ts";
import {
  containsIPv4Net,
  containsIPv6,
  formatIPv4Net,
  formatIPv6Net,
  type IPv4Net,
  type IPv6Net,
  parseIPv4Net,
  parseIPv6Net,
} from "../../core/ip.ts";
import type { Logger } from "../../core/log.ts";
import type { Registry } from "../../core/metrics.ts";
import type { ApplyResult, EntryFailure } from "../../datapath/types.ts";
import {
  isRouteProviderError,
  type ProviderRoute,
  type ProviderSelf,
  type RouteProvider,
} from "./provider.ts";

/**
 * What the engine gives the target for one lease: this host's (`own`: write
 * its routes) or a peer's (`peer`: keep its routes). A peer's `target` is
 * its next hop in this host's location when its lease says so; `null` when
 * its lease says it is elsewhere (a route for it here is stale); absent
 * when its lease does not say (flannel's aws-vpc leases: keep its route).
 */
export type CloudEntry =
  | { readonly kind: "own"; readonly destinations: readonly string[] }
  | {
    readonly kind: "peer";
    readonly destinations: readonly string[];
    readonly target?: string | null;
  };

/** Options for {@link cloudRouteTarget}. */
export interface CloudTargetOptions {
  /** The provider, normally wrapped by `guardProvider` (gate and call counters). */
  readonly provider: RouteProvider;
  /** What discovery found: this host's target and its tables. */
  readonly self: ProviderSelf;
  /** The cluster networks (`Network`, `IPv6Network`): routes outside them are never touched. */
  readonly networks: readonly (IPv4Net | IPv6Net)[];
  /** The key of this host's entry (its IPv4 subnet), used for failures of its route. */
  readonly ownKey: string;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics?: Registry;
  /** Randomness for the jitter (default `Math.random`). */
  readonly random?: () => number;
  /** Mean time between listings of a table, ms (default 120 000). */
  readonly listIntervalMs?: number;
  /** Spread of the listing period, as a fraction of it (default 0.25: ±25 %). */
  readonly listJitter?: number;
}

/** The cloud target; a `RouteTarget<CloudEntry>` of the routed-peer engine. */
export interface CloudRouteTarget {
  /** The provider's name. */
  readonly name: string;
  /** The tables it programs. */
  readonly tables: readonly string[];
  /**
   * Ensure this host's route in every table, and — when the listing is due
   * — read the tables and remove stale routes, given the complete entries.
   */
  sync(entries: ReadonlyMap<string, CloudEntry>, signal: AbortSignal): Promise<ApplyResult>;
  /** Write this host's route if it is among the changes; peers wait for the next listing. */
  update(
    changes: ReadonlyMap<string, CloudEntry | null>,
    signal: AbortSignal,
  ): Promise<ApplyResult>;
  /**
   * Read every table (whatever the schedule) and write this host's route:
   * what a host does when it joins, before it knows its peers (nothing is
   * removed).
   */
  ensureOwn(own: CloudEntry, signal: AbortSignal): Promise<ApplyResult>;
  /** Remove this host's routes from every table (its lease was given back). */
  release(own: CloudEntry, signal: AbortSignal): Promise<void>;
  /** Why this host's route is not in every table, or null. */
  notReadyReason(): string | null;
  /** Time until the next listing is due, ms (0: due now). */
  nextSyncInMs(): number;
  /** The destinations of a table as last listed (or written), with their targets. */
  listing(table: string): ReadonlyMap<string, ProviderRoute> | undefined;
}

/** Failure kinds that do not heal at once: wait at least this long before calling again. */
const SLOW_KINDS = new Set(["limit", "denied", "invalid"]);
const SLOW_HOLD_MS = 30_000;

/**
 * Whether a destination lies inside one of the networks.
 *
 * @param networks Cluster networks.
 * @param destination Canonical CIDR text.
 * @returns True when contained (same or longer prefix).
 */
export function insideNetworks(
  networks: readonly (IPv4Net | IPv6Net)[],
  destination: string,
): boolean {
  try {
    if (destination.includes(":")) {
      const d = parseIPv6Net(destination);
      return networks.some((n) =>
        typeof n.ip === "bigint" && d.prefixLen >= n.prefixLen && containsIPv6(n as IPv6Net, d.ip)
      );
    }
    const d = parseIPv4Net(destination);
    return networks.some((n) => typeof n.ip === "number" && containsIPv4Net(n as IPv4Net, d));
  } catch {
    return false;
  }
}

/**
 * Why an owned route is stale, or null when it must stay (pure).
 *
 * @param route A route of the table.
 * @param live Every destination of the current leases → its entry.
 * @param liveTargets The targets current leases have (this host's included).
 * @param location Where this host is, for the reason text.
 * @returns The reason, or null.
 */
export function staleReason(
  route: ProviderRoute,
  live: ReadonlyMap<string, CloudEntry>,
  liveTargets: ReadonlySet<string>,
  location: string,
): string | null {
  const entry = live.get(route.destination);
  if (entry?.kind === "own") return null; // this host's: replaced, never removed
  if (route.target === null) return "blackhole (its target is gone)";
  if (!entry) return "no current lease has this subnet";
  if (entry.target === null) return `the lease's host is not in ${location}`;
  if (
    entry.target !== undefined && route.target !== entry.target && !liveTargets.has(route.target)
  ) {
    return `it points at ${route.target}, which no current lease has`;
  }
  return null;
}

/**
 * Make the cloud target for one lease of this host.
 *
 * @param options Provider, discovery result, networks, timings, logger, metrics.
 * @returns The target.
 * @example
 * ```ts
 * const target = cloudRouteTarget({ provider, self, networks: [config.network!],
 *   ownKey: "10.5.1.0/24", clock, logger });
 * await target.ensureOwn({ kind: "own", destinations: ["10.5.1.0/24"] }, signal);
 * ```
 */
export function cloudRouteTarget(options: CloudTargetOptions): CloudRouteTarget {
  const { provider, self, networks, ownKey, clock, logger: log, metrics } = options;
  const random = options.random ?? Math.random;
  const interval = options.listIntervalMs ?? 120_000;
  const jitter = options.listJitter ?? 0.25;
  if (!(interval > 0) || !(jitter >= 0 && jitter < 1)) {
    throw new RangeError(
      `Cannot make a cloud route target as 'listIntervalMs' must be positive and 'listJitter' in [0, 1): current values are ${interval} and ${jitter}`,
    );
  }
  const tables = [...self.tables];
  const cache = new Map<string, Map<string, ProviderRoute>>();
  /** Tables where this host's route is known to be right. */
  const ownOk = new Set<string>();
  let ownDestinations: readonly string[] = [];
  let nextListAt = 0;
  let problem: { error: Error; key?: string; until: number } | null = null;
  let attempt = 0;

  const gTable = metrics?.gauge(
    "weft_cloud_route_table_routes",
    "Routes in each cloud route table as last listed (compare with the quota)",
  );
  const gOwned = metrics?.gauge(
    "weft_cloud_routes_owned",
    "Routes inside the cluster networks that weft owns, in each table as last listed",
  );
  const gOwn = metrics?.gauge(
    "weft_cloud_own_route",
    "1 when this host's route is in the table, 0 when it is not (yet)",
  );
  const cStale = metrics?.counter(
    "weft_cloud_stale_routes_removed_total",
    "Stale routes (blackholes, leases gone) this host removed",
  );

  const labelsOf = (table: string) => ({ provider: provider.name, table });
  const report = () => {
    for (const table of tables) {
      const routes = cache.get(table);
      if (routes) {
        gTable?.set(routes.size, labelsOf(table));
        let owned = 0;
        for (const r of routes.values()) {
          if (r.owned && insideNetworks(networks, r.destination)) owned++;
        }
        gOwned?.set(owned, labelsOf(table));
      }
      gOwn?.set(ownOk.has(table) ? 1 : 0, labelsOf(table));
    }
  };

  const held = (): ApplyResult | null => {
    if (!problem || clock.now() >= problem.until) return null;
    return { written: 0, deleted: 0, failures: [{ key: problem.key, error: problem.error }] };
  };

  /** Remember a failure and how long to hold off; rethrows aborts. */
  const failed = (e: unknown, key: string | undefined, signal: AbortSignal): EntryFailure => {
    if (signal.aborted) throw signal.reason;
    const error = e instanceof Error ? e : new Error(String(e));
    const kind = isRouteProviderError(e) ? e.kind : "unavailable";
    let holdMs = 0;
    if (kind !== "throttled") {
      holdMs = backoff(attempt++, { base: 1000, max: 60_000, random });
      if (SLOW_KINDS.has(kind)) holdMs = Math.max(holdMs, SLOW_HOLD_MS);
    }
    problem = { error, key, until: clock.now() + holdMs };
    return { key, error };
  };
  const succeeded = () => {
    problem = null;
    attempt = 0;
  };

  const list = async (table: string, signal: AbortSignal) => {
    const routes = new Map<string, ProviderRoute>();
    for (const r of await provider.list(table, signal)) routes.set(r.destination, r);
    cache.set(table, routes);
    ownOk.delete(table);
    const mine = ownDestinations.every((d) => routes.get(d)?.target === self.target);
    if (mine && ownDestinations.length > 0) ownOk.add(table);
    return routes;
  };

  /** Create or replace, switching when the table changed under us. */
  const write = async (
    table: string,
    destination: string,
    exists: boolean,
    signal: AbortSignal,
  ) => {
    try {
      if (exists) await provider.replace(table, destination, self.target, signal);
      else await provider.create(table, destination, self.target, signal);
    } catch (e) {
      const kind = isRouteProviderError(e) ? e.kind : undefined;
      if (kind === "exists" && !exists) {
        await provider.replace(table, destination, self.target, signal);
      } else if (kind === "not-found" && exists) {
        await provider.create(table, destination, self.target, signal);
      } else throw e;
    }
  };

  /** This host's routes in one table, from the cached listing; returns routes written. */
  const ensureOwnIn = async (table: string, signal: AbortSignal): Promise<number> => {
    const routes = cache.get(table) ?? await list(table, signal);
    let written = 0;
    for (const destination of ownDestinations) {
      const current = routes.get(destination);
      if (current?.target === self.target) continue;
      if (current && !current.owned) {
        log.warn("replacing a route weft did not write: it has this host's subnet", {
          table,
          destination,
        });
      }
      await write(table, destination, current !== undefined, signal);
      routes.set(destination, { table, destination, target: self.target, owned: true });
      written++;
      log.info("cloud route written", { table, destination, target: self.target });
    }
    ownOk.add(table);
    return written;
  };

  /** Remove the stale routes of a freshly listed table; returns routes removed. */
  const removeStale = async (
    table: string,
    entries: ReadonlyMap<string, CloudEntry>,
    signal: AbortSignal,
    failures: EntryFailure[],
  ): Promise<number> => {
    const routes = cache.get(table)!;
    const live = new Map<string, CloudEntry>();
    const liveTargets = new Set<string>([self.target]);
    for (const e of entries.values()) {
      for (const d of e.destinations) live.set(d, e);
      if (e.kind === "peer" && typeof e.target === "string") liveTargets.add(e.target);
    }
    let deleted = 0;
    for (const route of [...routes.values()]) {
      if (!route.owned || !insideNetworks(networks, route.destination)) continue;
      const reason = staleReason(route, live, liveTargets, self.location);
      if (reason === null) continue;
      try {
        await provider.remove(table, route.destination, signal);
        routes.delete(route.destination);
        deleted++;
        cStale?.inc(labelsOf(table));
        log.info("stale cloud route removed", {
          table,
          destination: route.destination,
          target: route.target ?? "blackhole",
          reason,
        });
      } catch (e) {
        failures.push(failed(e, undefined, signal));
      }
    }
    return deleted;
  };

  const ownFrom = (entries: Iterable<CloudEntry | null>) => {
    for (const e of entries) if (e?.kind === "own") ownDestinations = e.destinations;
  };

  const dueListing = () => clock.now() >= nextListAt;
  const scheduleListing = () => {
    nextListAt = clock.now() + Math.round(interval * (1 + jitter * (2 * random() - 1)));
  };

  return {
    name: provider.name,
    tables,

    async sync(entries, signal) {
      ownFrom(entries.values());
      const wait = held();
      if (wait) return wait;
      const due = dueListing();
      let written = 0, deleted = 0;
      const failures: EntryFailure[] = [];
      let listed = true;
      for (const table of tables) {
        try {
          if (due || !cache.has(table)) await list(table, signal);
        } catch (e) {
          listed = false;
          failures.push(failed(e, undefined, signal));
          continue;
        }
        try {
          written += await ensureOwnIn(table, signal);
        } catch (e) {
          failures.push(failed(e, ownKey, signal));
        }
        if (due) deleted += await removeStale(table, entries, signal, failures);
      }
      if (due && listed) scheduleListing();
      if (failures.length === 0) succeeded();
      report();
      return { written, deleted, failures };
    },

    async update(changes, signal) {
      const own = [...changes.values()].some((e) => e?.kind === "own");
      if (!own) return { written: 0, deleted: 0, failures: [] };
      ownFrom(changes.values());
      const wait = held();
      if (wait) return wait;
      let written = 0;
      const failures: EntryFailure[] = [];
      for (const table of tables) {
        try {
          written += await ensureOwnIn(table, signal);
        } catch (e) {
          failures.push(failed(e, ownKey, signal));
        }
      }
      if (failures.length === 0) succeeded();
      report();
      return { written, deleted: 0, failures };
    },

    async ensureOwn(own, signal) {
      ownFrom([own]);
      let written = 0;
      const failures: EntryFailure[] = [];
      for (const table of tables) {
        try {
          await list(table, signal);
          written += await ensureOwnIn(table, signal);
        } catch (e) {
          failures.push(failed(e, ownKey, signal));
        }
      }
      if (failures.length === 0) {
        succeeded();
        scheduleListing();
      }
      report();
      return { written, deleted: 0, failures };
    },

    async release(own, signal) {
      for (const table of tables) {
        for (const destination of own.destinations) {
          await provider.remove(table, destination, signal);
          cache.get(table)?.delete(destination);
          log.info("cloud route removed: the lease was given back", { table, destination });
        }
        ownOk.delete(table);
      }
      report();
    },

    notReadyReason() {
      if (tables.every((t) => ownOk.has(t))) return null;
      const missing = tables.filter((t) => !ownOk.has(t));
      if (problem) return problem.error.message;
      return `writing this host's route (${
        ownDestinations.join(", ") || "its subnet"
      } → ${self.target}) into ${missing.join(", ")}`;
    },

    nextSyncInMs: () => Math.max(0, nextListAt - clock.now()),

    listing: (table) => cache.get(table),
  };
}

/**
 * A lease's destinations: its IPv4 subnet, and its IPv6 subnet when the
 * cluster has an IPv6 network.
 *
 * @param subnet The IPv4 subnet.
 * @param ipv6Subnet The IPv6 subnet, if any.
 * @param withIPv6 Whether IPv6 routes are written.
 * @returns Canonical CIDR texts.
 */
export function leaseDestinations(
  subnet: IPv4Net | undefined,
  ipv6Subnet: IPv6Net | undefined,
  withIPv6: boolean,
): string[] {
  const out = subnet ? [formatIPv4Net(subnet)] : [];
  if (withIPv6 && ipv6Subnet) out.push(formatIPv6Net(ipv6Subnet));
  return out;
}
