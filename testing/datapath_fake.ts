/**
 * An in-memory {@link Datapath} for unit tests of backends, without root or
 * namespaces: it records what was asked (`calls`), keeps the resulting
 * devices and entries by name, and lets a test play the outside world
 * (delete a route, set a device down, lose events) to inject drift, or
 * make writes fail.
 *
 * It plans with the same pure code as the netlink datapath
 * (`datapath/plan.ts`, `datapath/devices.ts`) and models only the kernel
 * rules backends meet: a device must exist (ENODEV) and be up (ENETDOWN)
 * for routes, a gateway without `onlink` must lie on a connected prefix of
 * the device (ENETUNREACH), a device set down loses its routes and
 * neighbours, a deleted one everything on it. It passes the contract suite
 * (`datapath_contract.ts`) like the netlink datapath.
 *
 * @module
 */

import { containsIPv4, formatIPv4, formatIPv4Net, type IPv4Net, maskIPv4 } from "../core/ip.ts";
import { NetlinkError } from "../datapath/netlink/error.ts";
import { addressChanges, describeAddress, vxlanIncompatibility } from "../datapath/devices.ts";
import {
  checkInScope,
  describeRoute,
  DesiredTable,
  dstKey,
  fdbInScope,
  fdbKey,
  type InstalledRoute,
  neighbourInScope,
  neighbourKey,
  noneTouched,
  type ObjectSet,
  type Plan,
  planChanges,
  routeInScope,
  routeKey,
  sameRoute,
  type Touched,
} from "../datapath/plan.ts";
import type {
  ApplyResult,
  Datapath,
  DeviceInfo,
  DeviceResult,
  DeviceSpec,
  Drift,
  EntryFailure,
  EntryScope,
  EntryTable,
  FdbSpec,
  NeighbourSpec,
  PeerEntries,
  RouteSpec,
  VxlanInfo,
} from "../datapath/types.ts";
import type { KernelPoke, KernelSnapshot, PokeVxlan } from "./datapath_contract.ts";

/** One call a backend made: what it asked for. */
export interface FakeCall {
  readonly method: "ensureDevice" | "sync" | "update";
  /** The entry table's scope name (sync, update). */
  readonly table?: string;
  /** The spec, the full entry map, or the changes. */
  readonly arg: unknown;
}

/** What to seed a link with. */
export interface FakeLinkSpec {
  readonly name: string;
  readonly kind?: string | null;
  readonly mtu?: number;
  readonly mac?: string | null;
  readonly up?: boolean;
  readonly addresses?: readonly IPv4Net[];
  readonly vxlan?: VxlanInfo | null;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };
type FakeLink = Mutable<Omit<DeviceInfo, "addresses">> & { addresses: IPv4Net[] };

const ENODEV = 19, ENETDOWN = 100, ENETUNREACH = 101, EOPNOTSUPP = 95;

/**
 * The recording in-memory datapath.
 *
 * @example
 * ```ts
 * const dp = new FakeDatapath();
 * dp.addLink({ name: "eth0", up: true, addresses: [parseIPv4Net("192.0.2.11/24")] });
 * const table = dp.entries({ name: "host-gw", network: parseIPv4Net("10.5.0.0/16"), gatewayDevices: ["eth0"] });
 * await table.sync(new Map([["10.5.2.0/24", { routes: [route] }]]));
 * dp.routes(); // ["10.5.2.0/24 via 192.0.2.12 dev eth0"]
 * ```
 */
export class FakeDatapath implements Datapath, KernelPoke {
  /** Every call asking for state, in order. */
  readonly calls: FakeCall[] = [];
  /** Kernel changes made for callers (device changes and objects written or deleted). */
  writes = 0;
  readonly #links = new Map<string, FakeLink>();
  #nextIndex = 1;
  readonly #routes = new Map<string, InstalledRoute[]>();
  readonly #neighbours = new Map<string, NeighbourSpec>();
  readonly #fdb = new Map<string, FdbSpec[]>();
  readonly #devices = new Map<string, DeviceSpec>();
  readonly #tables = new Map<
    string,
    { scope: EntryScope; desired: DesiredTable; synced: boolean }
  >();
  readonly #failures: { method: string; errno: number }[] = [];
  readonly #failingKeys = new Map<string, number>();
  readonly #listeners = new Set<(d: Drift) => void>();
  readonly #closed = new AbortController();
  readonly #random: () => number;

  /**
   * @param options `random` for generated MAC addresses; `loopback` adds
   *   `lo` (index 1, up) like a fresh namespace (default true).
   */
  constructor(options: { random?: () => number; loopback?: boolean } = {}) {
    this.#random = options.random ?? Math.random;
    if (options.loopback ?? true) {
      this.addLink({ name: "lo", mtu: 65536, mac: "00:00:00:00:00:00", up: true });
    }
  }

  // ---- seeding and injection ---------------------------------------------

  /**
   * Seed a link (the external interface, a device left by an earlier run,
   * an opened TUN device). Reports drift when it is an asked device that
   * does not match.
   *
   * @returns The link.
   * @throws {NetlinkError} EEXIST when the name is taken.
   */
  addLink(spec: FakeLinkSpec): DeviceInfo {
    if (this.#links.has(spec.name)) throw new NetlinkError(17, `add link ${spec.name}`);
    const link: FakeLink = {
      index: this.#nextIndex++,
      name: spec.name,
      kind: spec.kind ?? null,
      mtu: spec.mtu ?? 1500,
      mac: spec.mac === undefined ? this.#randomMac() : spec.mac,
      up: spec.up ?? false,
      addresses: [...(spec.addresses ?? [])],
      vxlan: spec.vxlan ?? null,
    };
    this.#links.set(spec.name, link);
    this.#checkDevice(spec.name);
    return this.#info(link);
  }

  /** Make the next call of `method` (`ensureDevice`, `sync`, `update`, `link`) fail with `errno`. */
  failNext(method: string, errno: number): void {
    this.#failures.push({ method, errno });
  }

  /** Make writes for peer `key` fail with `errno` (`times` times, default until cleared with 0). */
  failKey(key: string, errno: number): void {
    if (errno === 0) this.#failingKeys.delete(key);
    else this.#failingKeys.set(key, errno);
  }

  /** Lose events, as an overrun of the kernel's receive buffer does. */
  overrun(): void {
    this.#emit({ kind: "lost", reason: "kernel change notifications were lost (injected)" });
  }

  // ---- KernelPoke: outside changes ---------------------------------------

  snapshot(): Promise<KernelSnapshot> {
    const devices: KernelSnapshot["devices"] = {};
    for (const l of this.#links.values()) {
      const underlay = l.vxlan?.link
        ? [...this.#links.values()].find((x) => x.index === l.vxlan!.link)?.name ?? null
        : null;
      devices[l.name] = {
        kind: l.kind,
        mtu: l.mtu,
        mac: l.mac,
        up: l.up,
        addresses: l.addresses.map(describeAddress).sort(),
        vxlan: l.vxlan && {
          vni: l.vxlan.vni,
          port: l.vxlan.port,
          local: l.vxlan.local === null ? null : formatIPv4(l.vxlan.local),
          underlay,
          learning: l.vxlan.learning,
          gbp: l.vxlan.gbp,
        },
      };
    }
    return Promise.resolve({
      devices,
      routes: this.routes(),
      neighbours: [...this.#neighbours.values()].map((n) =>
        `${formatIPv4(n.ip)} lladdr ${n.mac} dev ${n.device}`
      ).sort(),
      fdb: [...this.#fdb.values()].flat().map((f) =>
        `${f.mac} dev ${f.device} dst ${formatIPv4(f.dst)}`
      ).sort(),
    });
  }

  /** The routes, as `ip route` prints them, sorted. */
  routes(): string[] {
    return [...this.#routes.values()].flat().map((r) =>
      `${describeRoute(r)}${r.metric ? ` metric ${r.metric}` : ""}`
    ).sort();
  }

  createVxlan(spec: PokeVxlan): Promise<void> {
    const underlay = spec.underlay ? this.#links.get(spec.underlay) : undefined;
    this.addLink({
      name: spec.name,
      kind: "vxlan",
      mtu: spec.mtu ?? 1500,
      mac: spec.mac,
      up: spec.up ?? false,
      vxlan: {
        vni: spec.vni,
        port: spec.port,
        local: spec.local ?? null,
        link: underlay?.index ?? null,
        learning: false,
        gbp: false,
      },
    });
    return Promise.resolve();
  }

  addAddress(device: string, address: IPv4Net): Promise<void> {
    this.#mustLink(device).addresses.push(address);
    return Promise.resolve();
  }

  deleteAddress(device: string, address: IPv4Net): Promise<void> {
    const l = this.#mustLink(device);
    l.addresses = l.addresses.filter((a) =>
      a.ip !== address.ip || a.prefixLen !== address.prefixLen
    );
    this.#checkDevice(device);
    return Promise.resolve();
  }

  deleteLink(name: string): Promise<void> {
    this.#removeLink(name);
    if (this.#devices.has(name)) {
      this.#emit({ kind: "device", device: name, reason: `${name} was deleted` });
    }
    return Promise.resolve();
  }

  setLink(name: string, changes: { up?: boolean; mtu?: number; mac?: string }): Promise<void> {
    const l = this.#mustLink(name);
    const wasUp = l.up;
    l.up = changes.up ?? l.up;
    l.mtu = changes.mtu ?? l.mtu;
    l.mac = changes.mac ?? l.mac;
    if (wasUp && !l.up) this.#dropDevice(name, false);
    this.#checkDevice(name);
    if (!wasUp && l.up && !this.#devices.has(name)) {
      // Routes through it vanished while it was down: report the missing ones.
      for (const [table, t] of this.#tables) {
        const keys = t.desired.keysOnDevice(name).filter((k) => !this.#holds(t.desired, k));
        if (keys.length > 0) {
          this.#emit({ kind: "entries", table, keys, reason: `${name} came up` });
        }
      }
    }
    return Promise.resolve();
  }

  replaceRoute(r: RouteSpec & { metric?: number }): Promise<void> {
    const route: InstalledRoute = { ...r, metric: r.metric ?? 0 };
    this.#putRoute(route);
    this.#driftRoute(route, "changed", (want) => !sameRoute(want, route));
    return Promise.resolve();
  }

  deleteRoute(r: { dst: IPv4Net; device?: string }): Promise<void> {
    const k = dstKey(r.dst);
    const gone = (this.#routes.get(k) ?? []).filter((x) =>
      r.device === undefined || x.device === r.device
    );
    this.#routes.set(k, (this.#routes.get(k) ?? []).filter((x) => !gone.includes(x)));
    for (const g of gone) this.#driftRoute(g, "deleted", (want) => sameRoute(want, g));
    return Promise.resolve();
  }

  replaceNeighbour(n: NeighbourSpec): Promise<void> {
    this.#neighbours.set(neighbourKey(n), n);
    this.#driftEntry(
      (t) => t.desired.neighbour(neighbourKey(n)),
      (w) => w.mac !== n.mac,
      `neighbour ${formatIPv4(n.ip)} was changed`,
    );
    return Promise.resolve();
  }

  deleteNeighbour(n: { device: string; ip: number }): Promise<void> {
    if (!this.#neighbours.delete(neighbourKey(n))) return Promise.resolve();
    this.#driftEntry(
      (t) => t.desired.neighbour(neighbourKey(n)),
      () => true,
      `neighbour ${formatIPv4(n.ip)} was deleted`,
    );
    return Promise.resolve();
  }

  replaceFdb(f: FdbSpec): Promise<void> {
    this.#fdb.set(fdbKey(f), [f]);
    this.#driftEntry(
      (t) => t.desired.fdb(fdbKey(f)),
      (w) => w.dst !== f.dst,
      `fdb entry ${f.mac} was changed`,
    );
    return Promise.resolve();
  }

  deleteFdb(f: FdbSpec): Promise<void> {
    const list = this.#fdb.get(fdbKey(f)) ?? [];
    if (!list.some((x) => x.dst === f.dst)) return Promise.resolve();
    const rest = list.filter((x) => x.dst !== f.dst);
    if (rest.length > 0) this.#fdb.set(fdbKey(f), rest);
    else this.#fdb.delete(fdbKey(f));
    this.#driftEntry(
      (t) => t.desired.fdb(fdbKey(f)),
      (w) => w.dst === f.dst,
      `fdb entry ${f.mac} was deleted`,
    );
    return Promise.resolve();
  }

  // ---- the Datapath seam ---------------------------------------------------

  link(nameOrIndex: string | number): Promise<DeviceInfo | null> {
    return this.#call("link", () => {
      const l = typeof nameOrIndex === "string"
        ? this.#links.get(nameOrIndex)
        : [...this.#links.values()].find((x) => x.index === nameOrIndex);
      return l ? this.#info(l) : null;
    });
  }

  ensureDevice(spec: DeviceSpec): Promise<DeviceResult> {
    return this.#call("ensureDevice", () => {
      this.calls.push({ method: "ensureDevice", arg: spec });
      const changes: string[] = [];
      let l = this.#links.get(spec.name);
      if (spec.kind === "vxlan") {
        const underlay = spec.underlay === undefined ? undefined : this.#links.get(spec.underlay);
        if (spec.underlay !== undefined && !underlay) {
          throw new NetlinkError(
            ENODEV,
            `create vxlan ${spec.name}: its underlay device ${spec.underlay} does not exist`,
          );
        }
        const why = l ? vxlanIncompatibility(l, spec, underlay?.index ?? null) : null;
        if (l && why) {
          changes.push(`recreated: the existing device has an incompatible configuration (${why})`);
          this.#removeLink(spec.name);
          l = undefined;
        }
        if (!l) {
          changes.push("created");
          this.addLink({
            name: spec.name,
            kind: "vxlan",
            mtu: spec.mtu,
            mac: spec.mac,
            vxlan: {
              vni: spec.vni,
              local: spec.local,
              link: underlay?.index ?? null,
              port: spec.port,
              learning: spec.learning,
              gbp: spec.gbp,
            },
          });
          l = this.#links.get(spec.name)!;
        }
        if (l.mac !== spec.mac) changes.push(`MAC ${l.mac} → ${spec.mac}`);
        l.mac = spec.mac;
      } else if (!l) {
        throw new NetlinkError(ENODEV, `configure ${spec.name}: the device does not exist`);
      }
      if (l.mtu !== spec.mtu) changes.push(`MTU ${l.mtu} → ${spec.mtu}`);
      l.mtu = spec.mtu;
      const { remove, add } = addressChanges(l.addresses, spec.addresses);
      if (remove.length > 0) changes.push(`removed ${remove.map(describeAddress).join(", ")}`);
      if (add.length > 0) changes.push(`added ${add.map(describeAddress).join(", ")}`);
      l.addresses = [...spec.addresses];
      if (!l.up) changes.push("set up");
      l.up = true;
      this.writes += changes.length;
      this.#devices.set(spec.name, spec);
      return { device: this.#info(l), changes };
    });
  }

  entries(scope: EntryScope): EntryTable {
    if (this.#closed.signal.aborted) {
      throw new Error("Cannot open an entry table: the datapath is closed");
    }
    let t = this.#tables.get(scope.name);
    if (!t || JSON.stringify(t.scope) !== JSON.stringify(scope)) {
      t = { scope, desired: new DesiredTable(), synced: false };
      this.#tables.set(scope.name, t);
    }
    const table = t;
    return {
      scope,
      sync: (entries) =>
        this.#call("sync", () => {
          this.calls.push({ method: "sync", table: scope.name, arg: new Map(entries) });
          for (const [k, e] of entries) checkInScope(scope, k, e);
          table.desired.replaceAll(entries);
          table.synced = true;
          return this.#apply(
            table,
            planChanges(table.desired.all(), this.#installed(scope), scope),
          );
        }),
      update: (changes) =>
        this.#call("update", () => {
          this.calls.push({ method: "update", table: scope.name, arg: new Map(changes) });
          for (const [k, e] of changes) if (e) checkInScope(scope, k, e);
          const touched = noneTouched();
          for (const [k, e] of changes) table.desired.set(k, e, touched);
          if (!table.synced) {
            table.synced = true;
            return this.#apply(
              table,
              planChanges(table.desired.all(), this.#installed(scope), scope),
            );
          }
          return this.#apply(
            table,
            planChanges(table.desired.at(touched), this.#installed(scope, touched), scope),
          );
        }),
    };
  }

  drift(signal: AbortSignal): AsyncIterable<Drift> {
    if (this.#closed.signal.aborted) {
      throw new Error("Cannot watch for drift: the datapath is closed");
    }
    const queue: Drift[] = [];
    let wake: (() => void) | undefined;
    const listener = (d: Drift) => {
      queue.push(d);
      wake?.();
    };
    this.#listeners.add(listener);
    const listeners = this.#listeners;
    const closed = this.#closed.signal;
    const ended = () => signal.aborted || closed.aborted;
    const onEnd = () => wake?.();
    signal.addEventListener("abort", onEnd, { once: true });
    closed.addEventListener("abort", onEnd, { once: true });
    return (async function* () {
      try {
        while (!ended()) {
          while (queue.length > 0 && !ended()) yield queue.shift()!;
          if (ended()) return;
          await new Promise<void>((r) => (wake = r));
          wake = undefined;
        }
      } finally {
        listeners.delete(listener);
        signal.removeEventListener("abort", onEnd);
        closed.removeEventListener("abort", onEnd);
      }
    })();
  }

  close(): void {
    this.#closed.abort();
  }

  /** The asked state and the kernel objects as text, for failure messages. */
  describe(): string {
    return [
      ...[...this.#links.values()].map((l) =>
        `link ${l.index} ${l.name} ${l.kind ?? "-"} mtu ${l.mtu} ${l.mac} ${l.up ? "up" : "down"} ${
          l.addresses.map(describeAddress).join(",")
        }`
      ),
      ...this.routes().map((r) => `route ${r}`),
      ...[...this.#neighbours.values()].map((n) =>
        `neigh ${formatIPv4(n.ip)} ${n.mac} dev ${n.device}`
      ),
      ...[...this.#fdb.values()].flat().map((f) =>
        `fdb ${f.mac} dev ${f.device} dst ${formatIPv4(f.dst)}`
      ),
    ].join("\n");
  }

  // ---- internals -------------------------------------------------------------

  #call<T>(method: string, fn: () => T): Promise<T> {
    return Promise.resolve().then(() => {
      if (this.#closed.signal.aborted) {
        throw new Error(`Cannot call ${method}: the datapath is closed`);
      }
      const i = this.#failures.findIndex((f) => f.method === method);
      if (i >= 0) {
        const f = this.#failures.splice(i, 1)[0];
        throw new NetlinkError(f.errno, `${method} (injected failure)`);
      }
      return fn();
    });
  }

  #emit(d: Drift): void {
    for (const l of this.#listeners) l(d);
  }

  #randomMac(): string {
    const b = Array.from({ length: 6 }, () => Math.floor(this.#random() * 256));
    b[0] = (b[0] & 0xfe) | 0x02;
    return b.map((x) => x.toString(16).padStart(2, "0")).join(":");
  }

  #info(l: FakeLink): DeviceInfo {
    return { ...l, addresses: l.addresses.map((a) => ({ ...a })) };
  }

  #mustLink(name: string): FakeLink {
    const l = this.#links.get(name);
    if (!l) throw new NetlinkError(ENODEV, `link ${name}`);
    return l;
  }

  #removeLink(name: string): void {
    if (!this.#links.delete(name)) return;
    this.#dropDevice(name, true);
  }

  #dropDevice(name: string, fdbToo: boolean): void {
    for (const [k, list] of this.#routes) {
      this.#routes.set(
        k,
        list.filter((r) => r.device !== name),
      );
    }
    for (const [k, n] of this.#neighbours) if (n.device === name) this.#neighbours.delete(k);
    if (fdbToo) {
      for (const [k, list] of this.#fdb) if (list[0]?.device === name) this.#fdb.delete(k);
    }
  }

  /** Report drift when an asked device no longer matches its spec. */
  #checkDevice(name: string): void {
    const spec = this.#devices.get(name);
    const l = this.#links.get(name);
    if (!spec || !l) return;
    const { remove, add } = addressChanges(l.addresses, spec.addresses);
    const why = !l.up
      ? `${name} was set down`
      : spec.kind === "vxlan" && l.mac !== spec.mac
      ? `${name}'s MAC changed to ${l.mac}`
      : l.mtu !== spec.mtu
      ? `${name}'s MTU changed to ${l.mtu}`
      : remove.length + add.length > 0
      ? `${name}'s addresses changed`
      : null;
    if (why) this.#emit({ kind: "device", device: name, reason: why });
  }

  #putRoute(r: InstalledRoute): void {
    const k = dstKey(r.dst);
    const list = (this.#routes.get(k) ?? []).filter((x) => routeKey(x) !== routeKey(r));
    list.push(r);
    this.#routes.set(k, list);
  }

  #driftRoute(r: InstalledRoute, what: string, contradicts: (want: RouteSpec) => boolean): void {
    if (r.metric !== 0) return;
    this.#driftEntry(
      (t) => t.desired.route(dstKey(r.dst)),
      contradicts,
      `route ${formatIPv4Net(r.dst)} was ${what}`,
    );
  }

  #driftEntry<S>(
    find: (t: { desired: DesiredTable }) => { key: string; spec: S } | undefined,
    contradicts: (want: S) => boolean,
    reason: string,
  ): void {
    for (const [table, t] of this.#tables) {
      const want = find(t);
      if (want && contradicts(want.spec)) {
        this.#emit({ kind: "entries", table, keys: [want.key], reason });
      }
    }
  }

  #holds(desired: DesiredTable, key: string): boolean {
    const e = desired.get(key);
    return !e ||
      ((e.routes ?? []).every((r) =>
        (this.#routes.get(dstKey(r.dst)) ?? []).some((h) => h.metric === 0 && sameRoute(r, h))
      ) &&
        (e.neighbours ?? []).every((n) => this.#neighbours.get(neighbourKey(n))?.mac === n.mac) &&
        (e.fdb ?? []).every((f) => (this.#fdb.get(fdbKey(f)) ?? []).some((h) => h.dst === f.dst)));
  }

  /** The objects of a scope (at these keys only, when given). */
  #installed(scope: EntryScope, at?: Touched): ObjectSet<InstalledRoute> {
    const routes = at
      ? [...at.routes].flatMap((k) => this.#routes.get(k) ?? [])
      : [...this.#routes.values()].flat();
    const neighbours = at
      ? [...at.neighbours].map((k) => this.#neighbours.get(k)).filter((n) => n !== undefined)
      : [...this.#neighbours.values()];
    const fdb = at
      ? [...at.fdb].flatMap((k) => this.#fdb.get(k) ?? [])
      : [...this.#fdb.values()].flat();
    return {
      routes: routes.filter((r) => routeInScope(scope, r)),
      neighbours: neighbours.filter((n) => neighbourInScope(scope, n)),
      fdb: fdb.filter((f) => fdbInScope(scope, f)),
    };
  }

  /** Why the kernel would refuse this route, or null. */
  #refuseRoute(r: RouteSpec): number | null {
    const l = this.#links.get(r.device);
    if (!l) return ENODEV;
    if (!l.up) return ENETDOWN;
    if (r.gateway !== undefined && !r.onlink) {
      const connected = l.addresses.some((a) =>
        a.prefixLen < 32 &&
        containsIPv4(
          { ip: (a.ip & maskIPv4(a.prefixLen)) >>> 0, prefixLen: a.prefixLen },
          r.gateway!,
        )
      );
      if (!connected) return ENETUNREACH;
    }
    return null;
  }

  #apply(t: { desired: DesiredTable }, plan: Plan): ApplyResult {
    const failures: EntryFailure[] = [];
    let written = 0, deleted = 0;
    const write = <S extends RouteSpec | NeighbourSpec | FdbSpec>(
      items: readonly S[],
      kind: "route" | "neighbour" | "fdb",
      isDelete: boolean,
      what: (s: S) => string,
      refuse: (s: S) => number | null,
      apply: (s: S) => void,
    ) => {
      for (const s of items) {
        const key = t.desired.ownerOf(kind, s);
        const errno = (key !== undefined && !isDelete ? this.#failingKeys.get(key) : undefined) ??
          (isDelete ? null : refuse(s));
        if (errno) {
          failures.push({ key, error: new NetlinkError(errno, what(s)) });
          continue;
        }
        apply(s);
        this.writes++;
        if (isDelete) deleted++;
        else written++;
      }
    };
    const device = (s: { device: string }, vxlanOnly = false) => {
      const l = this.#links.get(s.device);
      return !l ? ENODEV : vxlanOnly && l.kind !== "vxlan" ? EOPNOTSUPP : null;
    };
    const neigh = (n: NeighbourSpec) =>
      `neighbour ${formatIPv4(n.ip)} lladdr ${n.mac} dev ${n.device}`;
    const fdb = (f: FdbSpec) => `fdb ${f.mac} dev ${f.device} dst ${formatIPv4(f.dst)}`;
    write(plan.deleteRoutes, "route", true, describeRoute, () => null, (r) => {
      const k = dstKey(r.dst);
      this.#routes.set(
        k,
        (this.#routes.get(k) ?? []).filter((x) =>
          !(routeKey(x) === routeKey(r) && sameRoute(x, r))
        ),
      );
    });
    write(
      plan.deleteNeighbours,
      "neighbour",
      true,
      neigh,
      () => null,
      (n) => this.#neighbours.delete(neighbourKey(n)),
    );
    write(plan.deleteFdb, "fdb", true, fdb, () => null, (f) => {
      const rest = (this.#fdb.get(fdbKey(f)) ?? []).filter((x) => x.dst !== f.dst);
      if (rest.length > 0) this.#fdb.set(fdbKey(f), rest);
      else this.#fdb.delete(fdbKey(f));
    });
    write(
      plan.replaceNeighbours,
      "neighbour",
      false,
      neigh,
      (n) => device(n),
      (n) => this.#neighbours.set(neighbourKey(n), n),
    );
    write(
      plan.replaceFdb,
      "fdb",
      false,
      fdb,
      (f) => device(f, true),
      (f) => this.#fdb.set(fdbKey(f), [f]),
    );
    write(
      plan.replaceRoutes,
      "route",
      false,
      (r) => `route ${describeRoute(r)}`,
      (r) => this.#refuseRoute(r),
      (r) => this.#putRoute({ ...r, metric: 0 }),
    );
    return { written, deleted, failures };
  }
}
