/**
 * What the netlink datapath knows the kernel holds, kept current by its own
 * writes and by kernel change events, and the drift those events reveal.
 *
 * - {@link LinkTable}: links by index and name (entries name devices; the
 *   kernel reports indexes).
 * - {@link InstalledView}: the objects inside one entry table's scope, by
 *   object key, so an update finds what is installed without a dump.
 * - {@link Tracker}: applies kernel events to both and compares them with
 *   what was asked (ensured devices, desired entries); a contradiction is
 *   {@link Drift}.
 *
 * The kernel flushes a device's routes (silently, for IPv4) and neighbours
 * when it goes down, and everything on it when it is deleted; the view
 * does the same, and when a device comes up the desired entries on it that
 * are missing are reported. IPv6 routes the kernel reports with its
 * default metric 1024 (what a route written without one gets) are viewed
 * with metric 0, as they were asked.
 *
 * @module
 */

import { formatIP, formatIPNet, type IPAddr } from "../../core/ip.ts";
import {
  DesiredTable,
  dstKey,
  fdbInScope,
  fdbKey,
  type InstalledRoute,
  neighbourInScope,
  neighbourKey,
  type ObjectSet,
  routeInScope,
  sameRoute,
  type Touched,
} from "../plan.ts";
import { vxlanIncompatibility } from "../devices.ts";
import type { DeviceSpec, Drift, EntryScope, FdbSpec, NeighbourSpec } from "../types.ts";
import {
  type Address,
  type FdbEntry,
  IPV6_DEFAULT_METRIC,
  type KernelEvent,
  type Link,
  type Neighbour,
  NUD_PERMANENT,
  type Route,
  RT_TABLE_MAIN,
  RTPROT_KERNEL,
} from "./kernel.ts";

/**
 * Links by index and by name, and which IPv4 addresses each holds (the
 * kernel flushes a device's IPv4 routes and neighbours when its last IPv4
 * address goes, as when it goes down). IPv6 addresses are not counted.
 */
export class LinkTable {
  readonly #byIndex = new Map<number, Link>();
  readonly #byName = new Map<string, number>();
  readonly #addresses = new Map<number, Set<string>>();

  /** Replace the addresses with a fresh list. */
  resetAddresses(addresses: readonly Address[]): void {
    this.#addresses.clear();
    for (const a of addresses) this.addAddress(a);
  }

  /** Record an IPv4 address; true when it is the device's first (always false for IPv6). */
  addAddress(a: Address): boolean {
    if (typeof a.ip === "bigint") return false;
    let set = this.#addresses.get(a.index);
    if (!set) this.#addresses.set(a.index, set = new Set());
    const first = set.size === 0;
    set.add(`${a.ip}/${a.prefixLen}`);
    return first;
  }

  /** Forget an IPv4 address; true when the device has none left (always false for IPv6). */
  removeAddress(a: Address): boolean {
    if (typeof a.ip === "bigint") return false;
    const set = this.#addresses.get(a.index);
    if (!set?.delete(`${a.ip}/${a.prefixLen}`)) return false;
    return set.size === 0;
  }

  /** Replace everything with a fresh list. */
  reset(links: readonly Link[]): void {
    this.#byIndex.clear();
    this.#byName.clear();
    for (const l of links) this.set(l);
  }

  /** Record a link (new or changed); returns what was known before at its index. */
  set(link: Link): Link | undefined {
    const prev = this.#byIndex.get(link.index);
    if (prev && prev.name !== link.name && this.#byName.get(prev.name) === link.index) {
      this.#byName.delete(prev.name);
    }
    this.#byIndex.set(link.index, link);
    this.#byName.set(link.name, link.index);
    return prev;
  }

  /** Forget a link. */
  delete(index: number): void {
    const prev = this.#byIndex.get(index);
    this.#byIndex.delete(index);
    this.#addresses.delete(index);
    if (prev && this.#byName.get(prev.name) === index) this.#byName.delete(prev.name);
  }

  /** A link by index. */
  get(index: number): Link | undefined {
    return this.#byIndex.get(index);
  }

  /** The name of an index. */
  name(index: number | null | undefined): string | undefined {
    return index === null || index === undefined ? undefined : this.#byIndex.get(index)?.name;
  }

  /** The index of a name. */
  index(name: string): number | undefined {
    return this.#byName.get(name);
  }
}

/** A kernel route as an installed main-table route by device name; null when not one. */
export function installedRoute(r: Route, links: LinkTable): InstalledRoute | null {
  if ((r.table ?? RT_TABLE_MAIN) !== RT_TABLE_MAIN || r.protocol === RTPROT_KERNEL) return null;
  const device = links.name(r.index);
  if (device === undefined) return null;
  const metric = r.metric ?? 0;
  return {
    dst: r.dst,
    ...(r.gateway !== null && r.gateway !== undefined ? { gateway: r.gateway } : {}),
    device,
    onlink: r.onlink ?? false,
    metric: typeof r.dst.ip === "bigint" && metric === IPV6_DEFAULT_METRIC ? 0 : metric,
  };
}

/**
 * A kernel neighbour by device name, and whether it is a permanent one with
 * a MAC (deletions often come without one); null on an unknown device.
 */
export function namedNeighbour(
  n: Neighbour,
  links: LinkTable,
): { spec: NeighbourSpec; permanent: boolean } | null {
  const device = links.name(n.index);
  if (device === undefined) return null;
  return {
    spec: { device, ip: n.ip, mac: n.mac ?? "" },
    permanent: n.mac !== null && ((n.state ?? 0) & NUD_PERMANENT) !== 0,
  };
}

/** A kernel fdb entry by device name; null without a remote. */
export function namedFdb(e: FdbEntry, links: LinkTable): FdbSpec | null {
  const device = links.name(e.index);
  if (device === undefined || e.dst === null) return null;
  return { device, mac: e.mac, dst: e.dst };
}

/** The objects inside one scope, by object key. */
export class InstalledView {
  /** Routes by destination ({@link dstKey}). */
  readonly routes = new Map<string, InstalledRoute[]>();
  readonly neighbours = new Map<string, NeighbourSpec>();
  readonly fdb = new Map<string, FdbSpec[]>();

  /** @param scope What belongs in the view. */
  constructor(readonly scope: EntryScope) {}

  /** Replace everything with what a dump found (objects outside the scope are dropped). */
  reset(found: ObjectSet<InstalledRoute>): void {
    this.routes.clear();
    this.neighbours.clear();
    this.fdb.clear();
    for (const r of found.routes) this.putRoute(r, false);
    for (const n of found.neighbours) this.putNeighbour(n);
    for (const f of found.fdb) this.putFdb(f, false);
  }

  /**
   * Record a route. With `replace`, routes of the same destination and
   * metric go (what a replace or a notification of one means), even when
   * the new route lies outside the scope.
   */
  putRoute(r: InstalledRoute, replace = true): void {
    const k = dstKey(r.dst);
    let list = this.routes.get(k);
    if (list === undefined) {
      if (routeInScope(this.scope, r)) this.routes.set(k, [r]);
      return;
    }
    // same destination (one list per destination): the metric decides
    if (replace) list = list.filter((x) => (x.metric ?? 0) !== (r.metric ?? 0));
    if (routeInScope(this.scope, r)) list.push(r);
    if (list.length > 0) this.routes.set(k, list);
    else this.routes.delete(k);
  }

  /** Forget a route (the one with its destination, metric, gateway and device). */
  removeRoute(r: InstalledRoute): boolean {
    const k = dstKey(r.dst);
    const list = this.routes.get(k);
    if (!list) return false;
    const metric = r.metric ?? 0;
    const rest = list.filter((x) =>
      !((x.metric ?? 0) === metric && x.gateway === r.gateway && x.device === r.device)
    );
    if (rest.length > 0) this.routes.set(k, rest);
    else this.routes.delete(k);
    return rest.length !== list.length;
  }

  /** Record a permanent neighbour. */
  putNeighbour(n: NeighbourSpec): void {
    if (neighbourInScope(this.scope, n)) this.neighbours.set(neighbourKey(n), n);
  }

  /** Forget a neighbour. */
  removeNeighbour(n: { device: string; ip: IPAddr }): void {
    this.neighbours.delete(neighbourKey(n));
  }

  /**
   * Record an fdb remote. With `replace` it becomes the MAC's only remote
   * (what `bridge fdb replace`, and a notification of a change, mean).
   * `k` is its {@link fdbKey}, for a caller that has it already.
   *
   * @returns Whether the view changed (false: it held just that already, as
   *   for the notification of this datapath's own write, or it is out of scope).
   */
  putFdb(f: FdbSpec, replace = true, k: string = fdbKey(f)): boolean {
    if (!fdbInScope(this.scope, f)) return false;
    const have = this.fdb.get(k);
    if (replace) {
      if (have?.length === 1 && have[0].dst === f.dst) return false;
      this.fdb.set(k, [f]);
      return true;
    }
    const list = (have ?? []).filter((x) => x.dst !== f.dst);
    list.push(f);
    this.fdb.set(k, list);
    return true;
  }

  /** Forget an fdb remote. */
  removeFdb(f: FdbSpec): void {
    const k = fdbKey(f);
    const rest = (this.fdb.get(k) ?? []).filter((x) => x.dst !== f.dst);
    if (rest.length > 0) this.fdb.set(k, rest);
    else this.fdb.delete(k);
  }

  /**
   * Forget what a device held: its routes and neighbours (down; with
   * `ipv4Only`, as when its last IPv4 address goes, only the IPv4 ones), and
   * its fdb (deleted).
   */
  dropDevice(device: string, fdbToo: boolean, ipv4Only = false): void {
    const gone = (x: { device: string }, ip: IPAddr) =>
      x.device === device && (!ipv4Only || typeof ip === "number");
    for (const [k, list] of this.routes) {
      const rest = list.filter((r) => !gone(r, r.dst.ip));
      if (rest.length === 0) this.routes.delete(k);
      else if (rest.length !== list.length) this.routes.set(k, rest);
    }
    for (const [k, n] of this.neighbours) if (gone(n, n.ip)) this.neighbours.delete(k);
    if (fdbToo) {
      for (const [k, list] of this.fdb) if (list[0]?.device === device) this.fdb.delete(k);
    }
  }

  /** Every object. */
  all(): ObjectSet<InstalledRoute> {
    return {
      routes: [...this.routes.values()].flat(),
      neighbours: [...this.neighbours.values()],
      fdb: [...this.fdb.values()].flat(),
    };
  }

  /** The objects at these keys. */
  at(touched: Touched): ObjectSet<InstalledRoute> {
    const routes: InstalledRoute[] = [];
    for (const k of touched.routes) routes.push(...(this.routes.get(k) ?? []));
    const neighbours: NeighbourSpec[] = [];
    for (const k of touched.neighbours) {
      const n = this.neighbours.get(k);
      if (n) neighbours.push(n);
    }
    const fdb: FdbSpec[] = [];
    for (const k of touched.fdb) fdb.push(...(this.fdb.get(k) ?? []));
    return { routes, neighbours, fdb };
  }

  /** Whether the desired entries of a peer are all installed. */
  holds(desired: DesiredTable, key: string): boolean {
    const e = desired.get(key);
    if (!e) return true;
    return (e.routes ?? []).every((r) =>
      (this.routes.get(dstKey(r.dst)) ?? []).some((h) => (h.metric ?? 0) === 0 && sameRoute(r, h))
    ) &&
      (e.neighbours ?? []).every((n) => this.neighbours.get(neighbourKey(n))?.mac === n.mac) &&
      (e.fdb ?? []).every((f) => (this.fdb.get(fdbKey(f)) ?? []).some((h) => h.dst === f.dst));
  }
}

/** One entry table: its scope, what was asked, what is installed. */
export class TableState {
  readonly desired: DesiredTable = new DesiredTable();
  readonly view: InstalledView;
  /** Whether the view comes from a dump and was kept since (false: the next update syncs). */
  synced = false;

  /** @param scope The table's scope. */
  constructor(readonly scope: EntryScope) {
    this.view = new InstalledView(scope);
  }
}

/** What to hold back while applying events. */
export interface QuietOptions {
  /** Tables about to be rebuilt from a dump: no entry drift for them. */
  readonly tables?: ReadonlySet<TableState>;
}

/** Collects the drift of one batch of events: one report per device, one per table. */
class DriftBatch {
  readonly devices = new Map<string, string>();
  readonly entries = new Map<string, { keys: Set<string>; reason: string }>();
  lost: string | null = null;

  device(name: string, reason: string): void {
    this.devices.set(name, reason); // the latest says most: down, then deleted
  }

  /** A device reason that says less than one already given (an address flushed by a down). */
  deviceUnlessKnown(name: string, reason: string): void {
    if (!this.devices.has(name)) this.devices.set(name, reason);
  }

  entry(table: string, key: string, reason: string): void {
    const e = this.entries.get(table);
    if (e) e.keys.add(key);
    else this.entries.set(table, { keys: new Set([key]), reason });
  }

  drifts(): Drift[] {
    const out: Drift[] = [];
    if (this.lost) out.push({ kind: "lost", reason: this.lost });
    for (const [device, reason] of this.devices) out.push({ kind: "device", device, reason });
    for (const [table, e] of this.entries) {
      const more = e.keys.size > 1 ? ` (and ${e.keys.size - 1} more)` : "";
      out.push({ kind: "entries", table, keys: [...e.keys], reason: `${e.reason}${more}` });
    }
    return out;
  }
}

/**
 * The kernel as the netlink datapath knows it, and what was asked of it.
 */
export class Tracker {
  readonly links: LinkTable = new LinkTable();
  /** Devices asked for, by name. */
  readonly devices: Map<string, DeviceSpec> = new Map();
  /** Devices being ensured right now: their changes are the datapath's own. */
  readonly ensuring: Set<string> = new Set();
  /** Entry tables by scope name. */
  readonly tables: Map<string, TableState> = new Map();

  /**
   * Apply kernel events in order; return the drift they reveal.
   *
   * @param events From the kernel subscription.
   * @param quiet What not to report.
   * @returns Drift reports (empty when nothing contradicts what was asked).
   */
  apply(events: readonly KernelEvent[], quiet: QuietOptions = {}): Drift[] {
    const batch = new DriftBatch();
    for (const e of events) {
      switch (e.kind) {
        case "overrun":
          for (const t of this.tables.values()) t.synced = false;
          batch.lost = "kernel change notifications were lost (receive buffer overrun)";
          break;
        case "link":
          this.#link(e.action, e.link, batch, quiet);
          break;
        case "address": {
          const name = this.links.name(e.address.index);
          if (name !== undefined) this.#address(e.action, e.address, name, batch, quiet);
          const spec = name === undefined ? undefined : this.devices.get(name);
          if (
            e.action === "del" && spec && !this.ensuring.has(spec.name) &&
            spec.addresses.some((a) => a.ip === e.address.ip && a.prefixLen === e.address.prefixLen)
          ) {
            batch.deviceUnlessKnown(
              spec.name,
              `address ${
                formatIP(e.address.ip)
              }/${e.address.prefixLen} was removed from ${spec.name}`,
            );
          }
          break;
        }
        case "route":
          this.#route(e.action, e.route, batch, quiet);
          break;
        case "neighbour":
          this.#neighbour(e.action, e.neighbour, batch, quiet);
          break;
        case "fdb":
          this.#fdb(e.action, e.fdb, batch, quiet);
          break;
      }
    }
    return batch.drifts();
  }

  #quiet(t: TableState, device: string, quiet: QuietOptions): boolean {
    return quiet.tables?.has(t) === true || this.ensuring.has(device);
  }

  #address(
    action: "new" | "del",
    a: Address,
    name: string,
    batch: DriftBatch,
    quiet: QuietOptions,
  ): void {
    if (action === "del") {
      if (this.links.removeAddress(a)) {
        // Its last IPv4 address went: the kernel flushed its IPv4 routes and neighbours.
        for (const t of this.tables.values()) t.view.dropDevice(name, false, true);
      }
    } else if (this.links.addAddress(a) && this.links.get(a.index)?.up) {
      this.#reportMissing(name, `${name} got an address again`, batch, quiet);
    }
  }

  /** Report the desired entries on a device that are not installed. */
  #reportMissing(device: string, reason: string, batch: DriftBatch, quiet: QuietOptions): void {
    if (this.ensuring.has(device)) return;
    for (const t of this.tables.values()) {
      if (quiet.tables?.has(t)) continue;
      for (const k of t.desired.keysOnDevice(device)) {
        if (!t.view.holds(t.desired, k)) batch.entry(t.scope.name, k, reason);
      }
    }
  }

  #link(action: "new" | "del", l: Link, batch: DriftBatch, quiet: QuietOptions): void {
    const spec = this.devices.get(l.name);
    const ours = spec !== undefined && !this.ensuring.has(l.name);
    if (action === "del") {
      this.links.delete(l.index);
      for (const t of this.tables.values()) t.view.dropDevice(l.name, true);
      if (ours) batch.device(l.name, `${l.name} was deleted`);
      return;
    }
    const stale = this.links.index(l.name);
    if (stale !== undefined && stale !== l.index) {
      // Another device of that name existed (a delete we did not see): its objects are gone.
      for (const t of this.tables.values()) t.view.dropDevice(l.name, true);
    }
    const prev = this.links.set(l);
    const wasUp = prev?.up === true && stale === l.index;
    if (!l.up && prev?.up) {
      for (const t of this.tables.values()) t.view.dropDevice(l.name, false);
    }
    if (ours) {
      const why = !l.up
        ? `${l.name} was set down`
        : spec.kind === "vxlan" && l.mac !== spec.mac
        ? `${l.name}'s MAC changed to ${l.mac}`
        : l.mtu !== spec.mtu
        ? `${l.name}'s MTU changed to ${l.mtu}`
        : spec.kind === "vxlan" && vxlanIncompatibility(l, spec, null) !== null
        ? `${l.name} was replaced by an incompatible device (${
          vxlanIncompatibility(l, spec, null)
        })`
        : null;
      if (why) batch.device(l.name, why);
    }
    if (l.up && !wasUp) {
      // Routes through a device vanish while it is down: report the missing ones once it is up.
      this.#reportMissing(l.name, `${l.name} came up`, batch, quiet);
    }
  }

  #route(action: "new" | "del", r: Route, batch: DriftBatch, quiet: QuietOptions): void {
    const route = installedRoute(r, this.links);
    if (!route) return;
    for (const t of this.tables.values()) {
      if (action === "del") t.view.removeRoute(route);
      else t.view.putRoute(route);
      const want = route.metric === 0 ? t.desired.route(dstKey(route.dst)) : undefined;
      if (!want || this.#quiet(t, want.spec.device, quiet)) continue;
      if (action === "del" && sameRoute(want.spec, route)) {
        batch.entry(t.scope.name, want.key, `route ${formatIPNet(route.dst)} was deleted`);
      } else if (action === "new" && !sameRoute(want.spec, route)) {
        batch.entry(t.scope.name, want.key, `route ${formatIPNet(route.dst)} was changed`);
      }
    }
  }

  #neighbour(action: "new" | "del", n: Neighbour, batch: DriftBatch, quiet: QuietOptions): void {
    const named = namedNeighbour(n, this.links);
    if (!named) return;
    const { spec, permanent } = named;
    for (const t of this.tables.values()) {
      if (action === "new" && permanent) t.view.putNeighbour(spec);
      else t.view.removeNeighbour(spec);
      const want = t.desired.neighbour(neighbourKey(spec));
      if (!want || this.#quiet(t, spec.device, quiet)) continue;
      if (action === "del") {
        batch.entry(t.scope.name, want.key, `neighbour ${formatIP(spec.ip)} was deleted`);
      } else if (spec.mac !== want.spec.mac || !permanent) {
        batch.entry(t.scope.name, want.key, `neighbour ${formatIP(spec.ip)} was changed`);
      }
    }
  }

  #fdb(action: "new" | "del", e: FdbEntry, batch: DriftBatch, quiet: QuietOptions): void {
    const spec = namedFdb(e, this.links);
    if (!spec) return;
    const k = fdbKey(spec);
    for (const t of this.tables.values()) {
      if (action === "new") {
        // what the view held already (the echo of an own write, 5000 after a full sync at
        // 5000 peers) tells nothing new
        if (!t.view.putFdb(spec, true, k)) continue;
      } else t.view.removeFdb(spec);
      const want = t.desired.fdb(k);
      if (!want || this.#quiet(t, spec.device, quiet)) continue;
      if (action === "del" && spec.dst === want.spec.dst) {
        batch.entry(t.scope.name, want.key, `fdb entry ${spec.mac} was deleted`);
      } else if (action === "new" && spec.dst !== want.spec.dst) {
        batch.entry(t.scope.name, want.key, `fdb entry ${spec.mac} was changed`);
      }
    }
  }
}
