/**
 * Planning entries, pure: which kernel objects an {@link EntryScope} owns,
 * the writes that turn what is installed into what is desired
 * ({@link planChanges}), and the book of what each peer asked for
 * ({@link DesiredTable}) that tells which objects a change touches, so an
 * incremental update plans exactly the part of a full plan it affects.
 *
 * Objects are keyed as the kernel keys them: routes by destination (and
 * metric), neighbours by device and IP, fdb entries by device and MAC.
 * Devices are referred to by name. IPv4 and IPv6 objects live side by
 * side: the keys of IPv6 ones start with `6:`.
 *
 * @module
 */

import {
  containsIPNet,
  equalIPNet,
  formatIP,
  formatIPNet,
  type IPAddr,
  type IPNet,
} from "../core/ip.ts";
import type { EntryScope, FdbSpec, NeighbourSpec, PeerEntries, RouteSpec } from "./types.ts";

/**
 * A route as installed (main table): a {@link RouteSpec} with its metric
 * (none: 0, so a desired route written as asked is its own installed form).
 */
export interface InstalledRoute extends RouteSpec {
  readonly metric?: number;
}

/** A set of objects: what is desired, or what is installed. */
export interface ObjectSet<R extends RouteSpec = RouteSpec> {
  readonly routes: readonly R[];
  readonly neighbours: readonly NeighbourSpec[];
  readonly fdb: readonly FdbSpec[];
}

/** The writes that turn the installed objects into the desired ones. */
export interface Plan {
  readonly deleteRoutes: InstalledRoute[];
  readonly deleteNeighbours: NeighbourSpec[];
  readonly deleteFdb: FdbSpec[];
  readonly replaceNeighbours: NeighbourSpec[];
  readonly replaceFdb: FdbSpec[];
  readonly replaceRoutes: RouteSpec[];
}

/** Which object keys a change touches. */
export interface Touched {
  /** Route destinations ({@link dstKey}). */
  readonly routes: Set<string>;
  /** {@link neighbourKey}s. */
  readonly neighbours: Set<string>;
  /** {@link fdbKey}s. */
  readonly fdb: Set<string>;
}

const ZERO_MAC = "00:00:00:00:00:00";

/** An address as a key part: IPv4 as its number, IPv6 as `6:` and its number. */
function ipKey(ip: IPAddr): string {
  return typeof ip === "bigint" ? `6:${ip}` : `${ip}`;
}

/** Key of a route destination. */
export function dstKey(dst: IPNet): string {
  return `${ipKey(dst.ip)}/${dst.prefixLen}`;
}

/** Key of a route as `replace` matches it: destination and metric. */
export function routeKey(r: RouteSpec & { readonly metric?: number }): string {
  return `${ipKey(r.dst.ip)}/${r.dst.prefixLen}/${r.metric ?? 0}`;
}

/** Key of a neighbour: device and IP. */
export function neighbourKey(n: { readonly device: string; readonly ip: IPAddr }): string {
  return `${n.device}/${ipKey(n.ip)}`;
}

/** Key of an fdb entry: device and MAC. */
export function fdbKey(e: { readonly device: string; readonly mac: string }): string {
  return `${e.device}/${e.mac}`;
}

/** Whether two scopes are the same (IPv6 addresses are bigints, which JSON cannot write). */
export function sameScope(a: EntryScope, b: EntryScope): boolean {
  const text = (s: EntryScope) => JSON.stringify(s, (_, v) => typeof v === "bigint" ? `${v}n` : v);
  return text(a) === text(b);
}

/** The networks of a scope: `network`, and `ipv6Network` when set. */
export function scopeNetworks(scope: EntryScope): IPNet[] {
  return scope.ipv6Network ? [scope.network, scope.ipv6Network] : [scope.network];
}

/** Whether a main-table route (not the kernel's own) belongs to the scope. */
export function routeInScope(scope: EntryScope, r: RouteSpec): boolean {
  if (
    !containsIPNet(scope.network, r.dst) &&
    !(scope.ipv6Network && containsIPNet(scope.ipv6Network, r.dst))
  ) return false;
  const except = scope.except;
  if (except) {
    for (let i = 0; i < except.length; i++) if (equalIPNet(except[i], r.dst)) return false;
  }
  if (scope.routeDevices?.includes(r.device)) return true;
  return r.gateway !== undefined && (scope.gatewayDevices?.includes(r.device) ?? false);
}

/** Whether a permanent neighbour belongs to the scope. */
export function neighbourInScope(scope: EntryScope, n: NeighbourSpec): boolean {
  return scope.neighbourDevices?.includes(n.device) ?? false;
}

/** Whether an fdb entry with a remote belongs to the scope. */
export function fdbInScope(scope: EntryScope, e: FdbSpec): boolean {
  return e.mac !== ZERO_MAC && (scope.neighbourDevices?.includes(e.device) ?? false);
}

/** Describe a route the way `ip route` prints it. */
export function describeRoute(r: RouteSpec): string {
  return `${formatIPNet(r.dst)}${
    r.gateway !== undefined ? ` via ${formatIP(r.gateway)}` : ""
  } dev ${r.device}${r.onlink ? " onlink" : ""}`;
}

/**
 * Check that every entry lies inside the scope.
 *
 * @throws {RangeError} Naming the first entry outside it.
 */
export function checkInScope(scope: EntryScope, key: string, e: PeerEntries): void {
  const outside = (what: string) => {
    throw new RangeError(
      `Cannot ask for ${what} of peer ${key}: it lies outside the scope of table ${
        JSON.stringify(scope.name)
      } (network ${
        scopeNetworks(scope).map(formatIPNet).join(" + ")
      }); widen the scope or fix the entry`,
    );
  };
  // indexed loops: a full sync checks every peer's objects, 15 000 at 5000 peers
  const { routes = [], neighbours = [], fdb = [] } = e;
  for (let i = 0; i < routes.length; i++) {
    const r = routes[i];
    if (!routeInScope(scope, r)) outside(`route ${describeRoute(r)}`);
  }
  for (let i = 0; i < neighbours.length; i++) {
    const n = neighbours[i];
    if (!neighbourInScope(scope, n)) outside(`neighbour ${formatIP(n.ip)} dev ${n.device}`);
  }
  for (let i = 0; i < fdb.length; i++) {
    const f = fdb[i];
    if (!fdbInScope(scope, f)) outside(`fdb ${f.mac} dev ${f.device}`);
  }
}

/** Whether an installed route is what is wanted (gateway, device, onlink). */
export function sameRoute(want: RouteSpec, have: RouteSpec): boolean {
  return want.gateway === have.gateway && want.device === have.device &&
    (want.onlink ?? false) === (have.onlink ?? false);
}

/** An empty plan. */
export function emptyPlan(): Plan {
  return {
    deleteRoutes: [],
    deleteNeighbours: [],
    deleteFdb: [],
    replaceNeighbours: [],
    replaceFdb: [],
    replaceRoutes: [],
  };
}

/** Number of writes in a plan. */
export function planSize(p: Plan): number {
  return p.replaceRoutes.length + p.deleteRoutes.length + p.replaceNeighbours.length +
    p.deleteNeighbours.length + p.replaceFdb.length + p.deleteFdb.length;
}

/**
 * Append every item, with an indexed loop: code that runs once per full sync
 * over thousands of objects runs unoptimized, where a `for…of` can cost an
 * allocation per step.
 */
function appendAll<T>(to: T[], from: readonly T[]): void {
  for (let i = 0; i < from.length; i++) to.push(from[i]);
}

function groupBy<T>(items: readonly T[], key: (x: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const x of items) {
    const k = key(x);
    const list = m.get(k);
    if (list) list.push(x);
    else m.set(k, [x]);
  }
  return m;
}

/**
 * Compute the writes that make `installed` match `desired` (pure).
 *
 * Routes and neighbours are replaced when missing or different and deleted
 * when in scope but not desired; a different IPv6 route of the same
 * destination and metric is deleted first (the kernel will not replace it
 * by an onlink route through another device). A desired fdb MAC gets its other remotes
 * deleted and, if missing, the desired one written; fdb entries of
 * undesired MACs are deleted. Nothing outside `scope` is ever deleted.
 * Planning a subset of object keys (both sides restricted to the same keys)
 * gives exactly that subset of the full plan.
 *
 * @param desired What should be there (one object per key).
 * @param installed What the kernel holds.
 * @param scope Which installed objects may be deleted.
 * @returns The plan (empty arrays when everything is right).
 */
export function planChanges(
  desired: ObjectSet,
  installed: ObjectSet<InstalledRoute>,
  scope: EntryScope,
): Plan {
  const plan = emptyPlan();
  // nothing installed of a kind (a fresh host): every desired object is written as it is
  // (desired holds one object per key), without indexing either side
  if (installed.routes.length === 0) appendAll(plan.replaceRoutes, desired.routes);
  if (installed.neighbours.length === 0) appendAll(plan.replaceNeighbours, desired.neighbours);
  if (installed.fdb.length === 0) appendAll(plan.replaceFdb, desired.fdb);
  if (installed.routes.length > 0) planRoutes(desired, installed, scope, plan);
  if (installed.neighbours.length > 0) planNeighbours(desired, installed, scope, plan);
  if (installed.fdb.length > 0) planFdb(desired, installed, scope, plan);
  return plan;
}

function planRoutes(
  desired: ObjectSet,
  installed: ObjectSet<InstalledRoute>,
  scope: EntryScope,
  plan: Plan,
): void {
  const haveRoutes = groupBy(installed.routes, routeKey);
  const wantRoutes = new Map<string, RouteSpec>();
  for (const r of desired.routes) wantRoutes.set(routeKey(r), r);
  for (const [k, want] of wantRoutes) {
    const have = haveRoutes.get(k);
    if (!have || !have.some((h) => sameRoute(want, h))) plan.replaceRoutes.push(want);
  }
  for (const [k, list] of haveRoutes) {
    const want = wantRoutes.get(k);
    // IPv6: the kernel refuses to replace a route by an onlink one whose gateway the old
    // route covers ("device mismatch"), so a differing IPv6 route goes before the new one
    const v6 = want !== undefined && typeof want.dst.ip === "bigint" &&
      !list.some((h) => sameRoute(want, h));
    for (const have of list) {
      if (!routeInScope(scope, have)) continue;
      if (!want || ((list.length > 1 || v6) && !sameRoute(want, have))) {
        plan.deleteRoutes.push(have);
      }
    }
  }
}

function planNeighbours(
  desired: ObjectSet,
  installed: ObjectSet<InstalledRoute>,
  scope: EntryScope,
  plan: Plan,
): void {
  const haveNeigh = new Map<string, NeighbourSpec>();
  for (const n of installed.neighbours) haveNeigh.set(neighbourKey(n), n);
  const wantNeigh = new Map<string, NeighbourSpec>();
  for (const n of desired.neighbours) wantNeigh.set(neighbourKey(n), n);
  for (const [k, want] of wantNeigh) {
    if (haveNeigh.get(k)?.mac !== want.mac) plan.replaceNeighbours.push(want);
  }
  for (const [k, have] of haveNeigh) {
    if (!wantNeigh.has(k) && neighbourInScope(scope, have)) plan.deleteNeighbours.push(have);
  }
}

function planFdb(
  desired: ObjectSet,
  installed: ObjectSet<InstalledRoute>,
  scope: EntryScope,
  plan: Plan,
): void {
  const wantFdb = new Map<string, FdbSpec>();
  for (const e of desired.fdb) wantFdb.set(fdbKey(e), e);
  const haveFdb = groupBy(installed.fdb, fdbKey);
  for (const [k, want] of wantFdb) {
    const have = haveFdb.get(k) ?? [];
    for (const h of have) if (h.dst !== want.dst) plan.deleteFdb.push(h);
    if (!have.some((h) => h.dst === want.dst)) plan.replaceFdb.push(want);
  }
  for (const [k, list] of haveFdb) {
    if (wantFdb.has(k)) continue;
    for (const h of list) if (fdbInScope(scope, h)) plan.deleteFdb.push(h);
  }
}

/** The object keys of one peer's entries. */
function keysOf(e: PeerEntries | undefined, into: Touched): void {
  for (const r of e?.routes ?? []) into.routes.add(dstKey(r.dst));
  for (const n of e?.neighbours ?? []) into.neighbours.add(neighbourKey(n));
  for (const f of e?.fdb ?? []) into.fdb.add(fdbKey(f));
}

/** No touched keys. */
export function noneTouched(): Touched {
  return { routes: new Set(), neighbours: new Set(), fdb: new Set() };
}

/** A desired object and the peer that asked for it. */
export interface Claim<V> {
  /** The peer. */
  readonly key: string;
  readonly spec: V;
}

/**
 * Who asks for one object: almost always one peer (kept without a map, as
 * a full sync builds 15 000 of these at 5000 peers, and handed out as it
 * is), else every asker in the order they asked.
 */
type Claims<V> = Claim<V> | Map<string, V>;

function last<V>(claims: Claims<V> | undefined): Claim<V> | undefined {
  if (!(claims instanceof Map)) return claims;
  let out: [string, V] | undefined;
  for (const c of claims) out = c;
  return out && { key: out[0], spec: out[1] };
}

function claim<V>(index: Map<string, Claims<V>>, objKey: string, peer: string, v: V): void {
  const claims = index.get(objKey);
  if (claims === undefined || (!(claims instanceof Map) && claims.key === peer)) {
    index.set(objKey, { key: peer, spec: v });
  } else if (claims instanceof Map) {
    claims.delete(peer); // a new claim goes last: the latest asker wins
    claims.set(peer, v);
  } else {
    index.set(objKey, new Map([[claims.key, claims.spec], [peer, v]]));
  }
}

function unclaim<V>(index: Map<string, Claims<V>>, objKey: string, peer: string): void {
  const claims = index.get(objKey);
  if (claims === undefined) return;
  if (!(claims instanceof Map)) {
    if (claims.key === peer) index.delete(objKey);
    return;
  }
  claims.delete(peer);
  if (claims.size === 1) {
    const [[only, spec]] = claims;
    index.set(objKey, { key: only, spec });
  } else if (claims.size === 0) index.delete(objKey);
}

/**
 * What each peer asked for, indexed by object key. When two peers ask for
 * the same object (two leases with one VtepMAC), the latest asker wins;
 * when it leaves, the other's object is desired again.
 *
 * After {@link replaceAll} the index is built on the side: a full sync lists
 * every object at once ({@link all}) and hands the indexing to the time the
 * kernel spends on its writes ({@link indexSome}); anything that needs the
 * index finishes it first.
 */
export class DesiredTable {
  readonly #entries = new Map<string, PeerEntries>();
  readonly #routes = new Map<string, Claims<RouteSpec>>();
  readonly #neighbours = new Map<string, Claims<NeighbourSpec>>();
  readonly #fdb = new Map<string, Claims<FdbSpec>>();
  /** Peers set by {@link replaceAll} (from `at` on) whose objects are not indexed yet. */
  #unindexed: { readonly keys: readonly string[]; at: number } | null = null;

  /** Number of peers. */
  get size(): number {
    return this.#entries.size;
  }

  /** Peer keys, in the order they were set. */
  keys(): IterableIterator<string> {
    return this.#entries.keys();
  }

  /** A peer's entries. */
  get(key: string): PeerEntries | undefined {
    return this.#entries.get(key);
  }

  /**
   * Set (or with null remove) a peer's entries.
   *
   * @param key The peer.
   * @param next Its entries, or null.
   * @param touched Collects the object keys of the old and the new entries.
   */
  set(key: string, next: PeerEntries | null, touched?: Touched): void {
    this.indexSome(Infinity);
    const old = this.#entries.get(key);
    if (touched) {
      keysOf(old, touched);
      keysOf(next ?? undefined, touched);
    }
    for (const r of old?.routes ?? []) unclaim(this.#routes, dstKey(r.dst), key);
    for (const n of old?.neighbours ?? []) unclaim(this.#neighbours, neighbourKey(n), key);
    for (const f of old?.fdb ?? []) unclaim(this.#fdb, fdbKey(f), key);
    this.#entries.delete(key);
    if (next) {
      this.#entries.set(key, next);
      this.#index(key, next);
    }
  }

  /** Replace everything; the index follows (see the class doc). */
  replaceAll(entries: ReadonlyMap<string, PeerEntries>): void {
    this.#entries.clear();
    this.#routes.clear();
    this.#neighbours.clear();
    this.#fdb.clear();
    // forEach and a key list: no [key, entries] pair per peer (this runs unoptimized)
    const keys: string[] = [];
    entries.forEach((next, key) => {
      keys.push(key);
      this.#entries.set(key, next);
    });
    this.#unindexed = keys.length > 0 ? { keys, at: 0 } : null;
  }

  /** Whether every peer's objects are indexed (lookups need not finish the index first). */
  get indexed(): boolean {
    return this.#unindexed === null;
  }

  /**
   * Index the objects of up to `peers` more peers of the last
   * {@link replaceAll} (as set() would, without removing old claims: there
   * are none).
   *
   * @returns Whether the index is complete.
   */
  indexSome(peers: number): boolean {
    const u = this.#unindexed;
    if (!u) return true;
    const end = Math.min(u.keys.length, u.at + peers);
    for (; u.at < end; u.at++) this.#index(u.keys[u.at], this.#entries.get(u.keys[u.at])!);
    if (u.at < u.keys.length) return false;
    this.#unindexed = null;
    return true;
  }

  #index(key: string, next: PeerEntries): void {
    const { routes = [], neighbours = [], fdb = [] } = next;
    for (let i = 0; i < routes.length; i++) {
      claim(this.#routes, dstKey(routes[i].dst), key, routes[i]);
    }
    for (let i = 0; i < neighbours.length; i++) {
      claim(this.#neighbours, neighbourKey(neighbours[i]), key, neighbours[i]);
    }
    for (let i = 0; i < fdb.length; i++) claim(this.#fdb, fdbKey(fdb[i]), key, fdb[i]);
  }

  /** The desired route to a destination and who asked for it. */
  route(dst: string): Claim<RouteSpec> | undefined {
    this.indexSome(Infinity);
    return last(this.#routes.get(dst));
  }

  /** The desired neighbour at a {@link neighbourKey} and who asked for it. */
  neighbour(k: string): Claim<NeighbourSpec> | undefined {
    this.indexSome(Infinity);
    return last(this.#neighbours.get(k));
  }

  /** The desired fdb entry at an {@link fdbKey} and who asked for it. */
  fdb(k: string): Claim<FdbSpec> | undefined {
    this.indexSome(Infinity);
    return last(this.#fdb.get(k));
  }

  /**
   * Every desired object: one per key, or, while the index is not complete,
   * every peer's objects in the order the peers were set. Then a key may
   * come twice, the later asker's last, so writing the list in order (a
   * `replace` each) leaves what the index would hold.
   */
  all(): ObjectSet {
    if (this.#unindexed) {
      const out: { routes: RouteSpec[]; neighbours: NeighbourSpec[]; fdb: FdbSpec[] } = {
        routes: [],
        neighbours: [],
        fdb: [],
      };
      this.#entries.forEach((e) => {
        if (e.routes) appendAll(out.routes, e.routes);
        if (e.neighbours) appendAll(out.neighbours, e.neighbours);
        if (e.fdb) appendAll(out.fdb, e.fdb);
      });
      return out;
    }
    const specs = <V>(index: Map<string, Claims<V>>): V[] => {
      const out: V[] = [];
      index.forEach((c) => out.push(last(c)!.spec));
      return out;
    };
    return {
      routes: specs(this.#routes),
      neighbours: specs(this.#neighbours),
      fdb: specs(this.#fdb),
    };
  }

  /** The desired objects at these keys. */
  at(touched: Touched): ObjectSet {
    const pick = <T>(keys: Set<string>, get: (k: string) => { spec: T } | undefined): T[] => {
      const out: T[] = [];
      for (const k of keys) {
        const c = get(k);
        if (c) out.push(c.spec);
      }
      return out;
    };
    return {
      routes: pick(touched.routes, (k) => this.route(k)),
      neighbours: pick(touched.neighbours, (k) => this.neighbour(k)),
      fdb: pick(touched.fdb, (k) => this.fdb(k)),
    };
  }

  /** Peers with an object on this device (routes out of it, neighbours and fdb on it). */
  keysOnDevice(device: string): string[] {
    const out = new Set<string>();
    for (const [k, e] of this.#entries) {
      if (
        e.routes?.some((r) => r.device === device) ||
        e.neighbours?.some((n) => n.device === device) || e.fdb?.some((f) => f.device === device)
      ) out.add(k);
    }
    return [...out];
  }

  /** Which peer asked for the object a planned write is about (for failure reports). */
  ownerOf(
    kind: "route" | "neighbour" | "fdb",
    obj: RouteSpec | NeighbourSpec | FdbSpec,
  ): string | undefined {
    if (kind === "route") return this.route(dstKey((obj as RouteSpec).dst))?.key;
    if (kind === "neighbour") return this.neighbour(neighbourKey(obj as NeighbourSpec))?.key;
    return this.fdb(fdbKey(obj as FdbSpec))?.key;
  }
}
