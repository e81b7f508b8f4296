/**
 * An in-memory {@link Datapath} for unit tests of backends, without root or
 * namespaces: it records what was asked (`calls`), keeps the resulting
 * devices and entries by name, and lets a test play the outside world
 * (delete a route, set a device down, lose events) to inject drift, or
 * make writes fail.
 *
 * It plans with the same pure code as the netlink datapath (`plan.ts`,
 * `devices.ts`) and models only the kernel rules backends meet: a route
 * needs its device (ENODEV) up (ENETDOWN) and, without `onlink`, a gateway
 * on a connected prefix (IPv4: ENETUNREACH, IPv6: EHOSTUNREACH, as the
 * kernel answers); fdb entries need a VXLAN device; a
 * device set down loses its routes and neighbours, a deleted one all. It
 * passes the contract suite (`datapath_contract.ts`).
 *
 * @module
 */

import {
  containsIP,
  formatIP,
  formatIPNet,
  type IPAddr,
  type IPNet,
  networkOf,
} from "../core/ip.ts";
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
  type Plan,
  planChanges,
  routeInScope,
  routeKey,
  sameRoute,
  sameScope,
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
  readonly addresses?: readonly IPNet[];
  readonly vxlan?: VxlanInfo | null;
}

type FakeLink = { -readonly [K in keyof DeviceInfo]: DeviceInfo[K] } & { addresses: IPNet[] };
type Table = { scope: EntryScope; desired: DesiredTable; synced: boolean };

const ENODEV = 19, ENETDOWN = 100, ENETUNREACH = 101, EHOSTUNREACH = 113, EOPNOTSUPP = 95;
const neighText = (n: NeighbourSpec) => `${formatIP(n.ip)} lladdr ${n.mac} dev ${n.device}`;
const fdbText = (f: FdbSpec) => `${f.mac} dev ${f.device} dst ${formatIP(f.dst)}`;

/**
 * The recording in-memory datapath.
 *
 * @example
 * ```ts
 * const dp = new FakeDatapath();
 * dp.addLink({ name: "eth0", up: true, addresses: [{ ip: parseIPv4("192.0.2.11"), prefixLen: 24 }] });
 * await dp.entries(scope).sync(new Map([["10.5.2.0/24", { routes: [route] }]]));
 * dp.routes(); // ["10.5.2.0/24 via 192.0.2.12 dev eth0"]
 * ```
 */
export class FakeDatapath implements Datapath, KernelPoke {
  /** Every call asking for state, in order. */
  readonly calls: FakeCall[] = [];
  /** Kernel changes made for callers (device changes, objects written or deleted). */
  writes = 0;
  readonly #links = new Map<string, FakeLink>();
  #nextIndex = 1;
  readonly #routes = new Map<string, InstalledRoute>();
  readonly #neighbours = new Map<string, NeighbourSpec>();
  readonly #fdb = new Map<string, FdbSpec>();
  readonly #devices = new Map<string, DeviceSpec>();
  readonly #tables = new Map<string, Table>();
  readonly #failures: { method: string; errno: number }[] = [];
  readonly #failingKeys = new Map<string, number>();
  readonly #listeners = new Set<(d: Drift) => void>();
  readonly #closed = new AbortController();
  readonly #random: () => number;

  /**
   * @param options `random` for generated MAC addresses; `loopback` adds
   *   `lo` (up) like a fresh namespace (default true).
   */
  constructor(options: { random?: () => number; loopback?: boolean } = {}) {
    this.#random = options.random ?? Math.random;
    if (options.loopback ?? true) {
      this.addLink({ name: "lo", mtu: 65536, mac: "00:00:00:00:00:00", up: true });
    }
  }

  // ---- seeding and injection --------------------------------------------

  /**
   * Seed a link (the external interface, a device of an earlier run, an
   * opened TUN). Reports drift when it is an asked device that differs.
   *
   * @throws {NetlinkError} EEXIST when the name is taken.
   */
  addLink(spec: FakeLinkSpec): DeviceInfo {
    if (this.#links.has(spec.name)) throw new NetlinkError(17, `add link ${spec.name}`);
    const b = Array.from({ length: 6 }, () => Math.floor(this.#random() * 256));
    b[0] = (b[0] & 0xfe) | 0x02;
    const link: FakeLink = {
      index: this.#nextIndex++,
      name: spec.name,
      kind: spec.kind ?? null,
      mtu: spec.mtu ?? 1500,
      mac: spec.mac !== undefined
        ? spec.mac
        : b.map((x) => x.toString(16).padStart(2, "0")).join(":"),
      up: spec.up ?? false,
      addresses: [...(spec.addresses ?? [])],
      vxlan: spec.vxlan ?? null,
    };
    this.#links.set(spec.name, link);
    this.#checkDevice(spec.name);
    return { ...link };
  }

  /** Make the next call of `method` (`ensureDevice`, `sync`, `update`, `link`) fail with `errno`. */
  failNext(method: string, errno: number): void {
    this.#failures.push({ method, errno });
  }

  /** Make every write for peer `key` fail with `errno`, until called with 0. */
  failKey(key: string, errno: number): void {
    if (errno === 0) this.#failingKeys.delete(key);
    else this.#failingKeys.set(key, errno);
  }

  /** Lose events, as an overrun of the kernel's receive buffer does. */
  overrun(): void {
    this.#emit({
      kind: "lost",
      reason: "kernel change notifications were lost (injected overrun)",
    });
  }

  /** The routes, as `ip route` prints them, sorted. */
  routes(): string[] {
    return [...this.#routes.values()].map((r) =>
      `${describeRoute(r)}${r.metric ? ` metric ${r.metric}` : ""}`
    ).sort();
  }

  // ---- KernelPoke: the outside world --------------------------------------

  snapshot(): Promise<KernelSnapshot> {
    const devices: Record<string, KernelSnapshot["devices"][string]> = {};
    const names = new Map([...this.#links.values()].map((l) => [l.index, l.name]));
    for (const l of this.#links.values()) {
      const x = l.vxlan;
      devices[l.name] = {
        kind: l.kind,
        mtu: l.mtu,
        mac: l.mac,
        up: l.up,
        addresses: l.addresses.map(describeAddress).sort(),
        vxlan: x && {
          vni: x.vni,
          port: x.port,
          local: x.local === null ? null : formatIP(x.local),
          underlay: x.link === null ? null : names.get(x.link) ?? null,
          learning: x.learning,
          gbp: x.gbp,
        },
      };
    }
    return Promise.resolve({
      devices,
      routes: this.routes(),
      neighbours: [...this.#neighbours.values()].map(neighText).sort(),
      fdb: [...this.#fdb.values()].map(fdbText).sort(),
    });
  }

  createVxlan(s: PokeVxlan): Promise<void> {
    const link = s.underlay ? this.#links.get(s.underlay)?.index ?? null : null;
    const vxlan = {
      vni: s.vni,
      port: s.port,
      local: s.local ?? null,
      link,
      learning: false,
      gbp: false,
    };
    this.addLink({ name: s.name, kind: "vxlan", mtu: s.mtu, mac: s.mac, up: s.up, vxlan });
    return Promise.resolve();
  }

  addAddress(device: string, address: IPNet): Promise<void> {
    this.#link(device).addresses.push(address);
    return Promise.resolve();
  }

  deleteAddress(device: string, a: IPNet): Promise<void> {
    const l = this.#link(device);
    l.addresses = l.addresses.filter((x) => x.ip !== a.ip || x.prefixLen !== a.prefixLen);
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
    const l = this.#link(name);
    const wasUp = l.up;
    Object.assign(l, changes);
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
    const route = { ...r, metric: r.metric ?? 0 };
    this.#routes.set(routeKey(route), route);
    if (route.metric === 0) {
      this.#drift(
        (t) => t.route(dstKey(r.dst)),
        (w) => !sameRoute(w, route),
        `route ${formatIPNet(r.dst)} was changed`,
      );
    }
    return Promise.resolve();
  }

  deleteRoute(r: { dst: IPNet; device?: string }): Promise<void> {
    for (const [k, x] of this.#routes) {
      if (dstKey(x.dst) !== dstKey(r.dst) || (r.device !== undefined && x.device !== r.device)) {
        continue;
      }
      this.#routes.delete(k);
      if (x.metric === 0) {
        this.#drift(
          (t) => t.route(dstKey(r.dst)),
          (w) => sameRoute(w, x),
          `route ${formatIPNet(r.dst)} was deleted`,
        );
      }
    }
    return Promise.resolve();
  }

  replaceNeighbour(n: NeighbourSpec): Promise<void> {
    this.#neighbours.set(neighbourKey(n), n);
    this.#drift(
      (t) => t.neighbour(neighbourKey(n)),
      (w) => w.mac !== n.mac,
      `neighbour ${formatIP(n.ip)} was changed`,
    );
    return Promise.resolve();
  }

  deleteNeighbour(n: { device: string; ip: IPAddr }): Promise<void> {
    if (this.#neighbours.delete(neighbourKey(n))) {
      this.#drift(
        (t) => t.neighbour(neighbourKey(n)),
        () => true,
        `neighbour ${formatIP(n.ip)} was deleted`,
      );
    }
    return Promise.resolve();
  }

  replaceFdb(f: FdbSpec): Promise<void> {
    this.#fdb.set(fdbKey(f), f);
    this.#drift((t) => t.fdb(fdbKey(f)), (w) => w.dst !== f.dst, `fdb entry ${f.mac} was changed`);
    return Promise.resolve();
  }

  deleteFdb(f: FdbSpec): Promise<void> {
    if (this.#fdb.get(fdbKey(f))?.dst === f.dst) {
      this.#fdb.delete(fdbKey(f));
      this.#drift(
        (t) => t.fdb(fdbKey(f)),
        (w) => w.dst === f.dst,
        `fdb entry ${f.mac} was deleted`,
      );
    }
    return Promise.resolve();
  }

  // ---- the Datapath seam ----------------------------------------------------

  link(nameOrIndex: string | number): Promise<DeviceInfo | null> {
    return this.#call("link", () => {
      const l = typeof nameOrIndex === "string"
        ? this.#links.get(nameOrIndex)
        : [...this.#links.values()].find((x) => x.index === nameOrIndex);
      return l ? { ...l, addresses: [...l.addresses] } : null;
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
          const { vni, local, port, learning, gbp } = spec;
          const vxlan = { vni, local, link: underlay?.index ?? null, port, learning, gbp };
          this.addLink({ name: spec.name, kind: "vxlan", mtu: spec.mtu, mac: spec.mac, vxlan });
          l = this.#links.get(spec.name)!;
        }
        if (l.mac !== spec.mac) changes.push(`MAC ${l.mac} → ${spec.mac}`);
        l.mac = spec.mac;
      } else if (!l) {
        throw new NetlinkError(ENODEV, `configure ${spec.name}: the device does not exist`);
      }
      if (l.mtu !== spec.mtu) changes.push(`MTU ${l.mtu} → ${spec.mtu}`);
      const { remove, add } = addressChanges(l.addresses, spec.addresses);
      if (add.length > 0) changes.push(`added ${add.map(describeAddress).join(", ")}`);
      if (remove.length > 0) changes.push(`removed ${remove.map(describeAddress).join(", ")}`);
      if (!l.up) changes.push("set up");
      Object.assign(l, { mtu: spec.mtu, addresses: [...spec.addresses], up: true });
      this.writes += changes.length;
      this.#devices.set(spec.name, spec);
      return { device: { ...l, addresses: [...l.addresses] }, changes };
    });
  }

  entries(scope: EntryScope): EntryTable {
    if (this.#closed.signal.aborted) {
      throw new Error("Cannot open an entry table: the datapath is closed");
    }
    let t = this.#tables.get(scope.name);
    if (!t || !sameScope(t.scope, scope)) {
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
          const all = !table.synced; // before the first sync: a sync
          table.synced = true;
          const plan = all
            ? planChanges(table.desired.all(), this.#installed(scope), scope)
            : planChanges(table.desired.at(touched), this.#installed(scope, touched), scope);
          return this.#apply(table, plan);
        }),
    };
  }

  drift(signal: AbortSignal): AsyncIterable<Drift> {
    if (this.#closed.signal.aborted) {
      throw new Error("Cannot watch for drift: the datapath is closed");
    }
    const queue: Drift[] = [];
    let wake = () => {};
    const listener = (d: Drift) => {
      queue.push(d);
      wake();
    };
    this.#listeners.add(listener);
    const listeners = this.#listeners;
    const ended = AbortSignal.any([signal, this.#closed.signal]);
    ended.addEventListener("abort", () => wake(), { once: true });
    return (async function* () {
      try {
        while (!ended.aborted) {
          while (queue.length > 0 && !ended.aborted) yield queue.shift()!;
          if (!ended.aborted) await new Promise<void>((r) => (wake = r));
        }
      } finally {
        listeners.delete(listener);
      }
    })();
  }

  close(): void {
    this.#closed.abort();
  }

  // ---- internals ------------------------------------------------------------

  #call<T>(method: string, fn: () => T): Promise<T> {
    return Promise.resolve().then(() => {
      if (this.#closed.signal.aborted) {
        throw new Error(`Cannot call ${method}: the datapath is closed`);
      }
      const i = this.#failures.findIndex((f) => f.method === method);
      if (i >= 0) {
        throw new NetlinkError(
          this.#failures.splice(i, 1)[0].errno,
          `${method} (injected failure)`,
        );
      }
      return fn();
    });
  }

  #emit(d: Drift): void {
    for (const l of this.#listeners) l(d);
  }

  #link(name: string): FakeLink {
    const l = this.#links.get(name);
    if (!l) throw new NetlinkError(ENODEV, `link ${name}`);
    return l;
  }

  #removeLink(name: string): void {
    if (this.#links.delete(name)) this.#dropDevice(name, true);
  }

  #dropDevice(name: string, fdbToo: boolean): void {
    for (const [k, r] of this.#routes) if (r.device === name) this.#routes.delete(k);
    for (const [k, n] of this.#neighbours) if (n.device === name) this.#neighbours.delete(k);
    if (fdbToo) { for (const [k, f] of this.#fdb) if (f.device === name) this.#fdb.delete(k); }
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

  /** Report entry drift when an outside change contradicts what a table asked for. */
  #drift<S>(
    find: (d: DesiredTable) => { key: string; spec: S } | undefined,
    contradicts: (want: S) => boolean,
    reason: string,
  ): void {
    for (const [table, t] of this.#tables) {
      const want = find(t.desired);
      if (want && contradicts(want.spec)) {
        this.#emit({ kind: "entries", table, keys: [want.key], reason });
      }
    }
  }

  #holds(desired: DesiredTable, key: string): boolean {
    const e = desired.get(key);
    return !e ||
      ((e.routes ?? []).every((r) => {
        const h = this.#routes.get(routeKey(r));
        return h !== undefined && sameRoute(r, h);
      }) &&
        (e.neighbours ?? []).every((n) => this.#neighbours.get(neighbourKey(n))?.mac === n.mac) &&
        (e.fdb ?? []).every((f) => this.#fdb.get(fdbKey(f))?.dst === f.dst));
  }

  /** The objects of a scope (at these keys only, when given). */
  #installed(scope: EntryScope, at?: Touched) {
    const routes = [...this.#routes.values()].filter((r) => !at || at.routes.has(dstKey(r.dst)));
    const neighbours = [...this.#neighbours.entries()].filter(([k]) => !at || at.neighbours.has(k));
    const fdb = [...this.#fdb.entries()].filter(([k]) => !at || at.fdb.has(k));
    return {
      routes: routes.filter((r) => routeInScope(scope, r)),
      neighbours: neighbours.map(([, n]) => n).filter((n) => neighbourInScope(scope, n)),
      fdb: fdb.map(([, f]) => f).filter((f) => fdbInScope(scope, f)),
    };
  }

  /** Why the kernel would refuse to write this object, or null. */
  #refuse(
    s: RouteSpec | NeighbourSpec | FdbSpec,
    kind: "route" | "neighbour" | "fdb",
  ): number | null {
    const l = this.#links.get(s.device);
    if (!l) return ENODEV;
    if (kind === "fdb") return l.kind === "vxlan" ? null : EOPNOTSUPP;
    if (kind === "neighbour") return null;
    const r = s as RouteSpec;
    if (!l.up) return ENETDOWN;
    const host = typeof r.dst.ip === "bigint" ? 128 : 32;
    const connected = (a: IPNet) => a.prefixLen < host && containsIP(networkOf(a), r.gateway!);
    if (r.gateway === undefined || r.onlink || l.addresses.some(connected)) return null;
    return typeof r.dst.ip === "bigint" ? EHOSTUNREACH : ENETUNREACH;
  }

  #apply(t: Table, plan: Plan): ApplyResult {
    const failures: EntryFailure[] = [];
    let written = 0, deleted = 0;
    const write = <S extends RouteSpec | NeighbourSpec | FdbSpec>(
      items: readonly S[],
      kind: "route" | "neighbour" | "fdb",
      text: (s: S) => string,
      apply: (s: S) => unknown,
      isDelete = false,
    ) => {
      for (const s of items) {
        const key = t.desired.ownerOf(kind, s);
        const errno = isDelete
          ? null
          : (key && this.#failingKeys.get(key)) || this.#refuse(s, kind);
        if (errno) {
          failures.push({ key, error: new NetlinkError(errno, text(s)) });
          continue;
        }
        apply(s);
        this.writes++;
        if (isDelete) deleted++;
        else written++;
      }
    };
    const route = (r: RouteSpec) => `route ${describeRoute(r)}`;
    write(plan.deleteRoutes, "route", route, (r) => this.#routes.delete(routeKey(r)), true);
    write(
      plan.deleteNeighbours,
      "neighbour",
      neighText,
      (n) => this.#neighbours.delete(neighbourKey(n)),
      true,
    );
    write(plan.deleteFdb, "fdb", fdbText, (f) => this.#fdb.delete(fdbKey(f)), true);
    write(
      plan.replaceNeighbours,
      "neighbour",
      neighText,
      (n) => this.#neighbours.set(neighbourKey(n), n),
    );
    write(plan.replaceFdb, "fdb", fdbText, (f) => this.#fdb.set(fdbKey(f), f));
    write(
      plan.replaceRoutes,
      "route",
      route,
      (r) => this.#routes.set(routeKey(r), { ...r, metric: 0 }),
    );
    return { written, deleted, failures };
  }
}
