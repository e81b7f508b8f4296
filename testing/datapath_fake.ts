/**
 * An in-memory {@link Datapath} that behaves like the kernel in the ways
 * weft depends on (checked by the shared contract suite) and records every
 * write, for unit tests of backends without root or namespaces.
 *
 * Kernel behaviour it models: names are unique (EEXIST); writes to a missing
 * link fail with ENODEV; routes need their device up (ENETDOWN) and a
 * gateway on a connected prefix unless `onlink` (ENETUNREACH); setting a
 * link down drops its routes (silently, as IPv4 does) and its neighbours;
 * deleting a link drops everything on it; fdb `append` leaves an existing
 * unicast MAC alone while `replace` repoints it; connected-prefix routes
 * appear for addresses on up links. Events are emitted as the kernel does:
 * no route events for routes dropped with their link.
 *
 * @module
 */

import { formatIPv4, formatIPv4Net, type IPv4Net, maskIPv4 } from "../core/ip.ts";
import { NetlinkError, throwBatchErrors } from "../datapath/netlink/error.ts";
import {
  addAddressRequest,
  addFdbRequest,
  createBridgeRequest,
  createVxlanRequest,
  deleteAddressRequest,
  deleteFdbRequest,
  deleteNeighbourRequest,
  deleteRouteRequest,
  replaceNeighbourRequest,
  replaceRouteRequest,
  setLinkRequest,
} from "../datapath/netlink/messages.ts";
import {
  type Address,
  type BridgeSpec,
  type Datapath,
  type DatapathEvent,
  type FdbEntry,
  type Link,
  type LinkChanges,
  type Neighbour,
  NUD_PERMANENT,
  type Route,
  type RouteFilter,
  RT_SCOPE_LINK,
  RT_SCOPE_UNIVERSE,
  RT_TABLE_MAIN,
  RTN_UNICAST,
  RTPROT_BOOT,
  RTPROT_KERNEL,
  type VxlanSpec,
} from "../datapath/types.ts";

/** One recorded write: the Datapath method and its argument(s). */
export interface FakeWrite {
  readonly method: string;
  readonly args: readonly unknown[];
}

/** What to seed a plain (physical-like) link with. */
export interface FakeLinkSpec {
  readonly name: string;
  readonly mtu?: number;
  readonly mac?: string;
  readonly up?: boolean;
  readonly kind?: string | null;
}

const ENODEV = 19, EEXIST = 17, ENETDOWN = 100, ENETUNREACH = 101, ESRCH = 3, ENOENT = 2;
const EADDRNOTAVAIL = 99;

function routeKey(r: Required<Route>): string {
  return `${r.table}/${r.dst.ip}/${r.dst.prefixLen}/${r.metric}`;
}

function sameNet(a: IPv4Net, b: IPv4Net): boolean {
  return a.ip === b.ip && a.prefixLen === b.prefixLen;
}

function normRoute(r: Route): Required<Route> {
  const hasGw = r.gateway !== undefined && r.gateway !== null;
  return {
    dst: { ip: (r.dst.ip & maskIPv4(r.dst.prefixLen)) >>> 0, prefixLen: r.dst.prefixLen },
    gateway: hasGw ? r.gateway! : null,
    index: r.index ?? null,
    onlink: r.onlink ?? false,
    table: r.table ?? RT_TABLE_MAIN,
    protocol: r.protocol ?? RTPROT_BOOT,
    scope: r.scope ?? (hasGw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK),
    type: r.type ?? RTN_UNICAST,
    metric: r.metric ?? 0,
  };
}

/**
 * The recording in-memory datapath.
 *
 * @example
 * ```ts
 * const dp = new FakeDatapath();
 * const eth0 = dp.addLink({ name: "eth0", mtu: 1500, up: true });
 * await dp.addAddresses([{ index: eth0.index, ip: parseIPv4("192.0.2.1"), prefixLen: 24 }]);
 * dp.writes.length; // 1
 * ```
 */
export class FakeDatapath implements Datapath {
  /** Every write call, in order (seeding with {@link addLink} is not recorded). */
  readonly writes: FakeWrite[] = [];
  #links = new Map<number, Link>();
  #nextIndex = 1;
  #addresses: Address[] = [];
  #routes = new Map<string, Required<Route>>();
  #neighbours = new Map<string, Neighbour>();
  #fdb = new Map<string, FdbEntry>();
  #subscribers = new Set<(e: DatapathEvent) => void>();
  #stops = new Set<() => void>();
  #closed = false;
  #failures: { method: string; code: number }[] = [];
  #random: () => number;

  /**
   * @param options `random` for generated MAC addresses (default Math.random);
   *   `loopback` adds `lo` (index 1, up) like a fresh namespace (default true).
   */
  constructor(options: { random?: () => number; loopback?: boolean } = {}) {
    this.#random = options.random ?? Math.random;
    if (options.loopback ?? true) {
      const lo = this.addLink({ name: "lo", mtu: 65536, mac: "00:00:00:00:00:00", up: true });
      this.#addresses.push({ index: lo.index, ip: 0x7f000001, prefixLen: 8 });
    }
  }

  /** Number of recorded writes of one method (or all when omitted). */
  writeCount(method?: string): number {
    return method ? this.writes.filter((w) => w.method === method).length : this.writes.length;
  }

  /**
   * Make the next call of `method` fail with `errno` (for error-path tests).
   *
   * @param method A Datapath method name, e.g. `replaceRoutes`.
   * @param errno The errno to fail with.
   */
  failNext(method: string, errno: number): void {
    this.#failures.push({ method, code: errno });
  }

  /**
   * Seed a link (e.g. the external interface) without recording a write.
   *
   * @param spec Name, MTU, MAC, state, kind.
   * @returns The link.
   * @throws {NetlinkError} EEXIST when the name is taken.
   */
  addLink(spec: FakeLinkSpec): Link {
    if (this.#byName(spec.name)) {
      throw new NetlinkError(EEXIST, `add link ${spec.name}`);
    }
    const index = this.#nextIndex++;
    const link: Link = {
      index,
      name: spec.name,
      kind: spec.kind ?? null,
      mtu: spec.mtu ?? 1500,
      mac: spec.mac ?? this.#randomMac(),
      up: spec.up ?? false,
      flags: spec.up ? 1 : 0,
      master: null,
      vxlan: null,
    };
    this.#links.set(index, link);
    this.#emit({ kind: "link", action: "new", link });
    return link;
  }

  #randomMac(): string {
    const b = Array.from({ length: 6 }, () => Math.floor(this.#random() * 256));
    b[0] = (b[0] & 0xfe) | 0x02;
    return b.map((x) => x.toString(16).padStart(2, "0")).join(":");
  }

  #byName(name: string): Link | undefined {
    for (const l of this.#links.values()) if (l.name === name) return l;
    return undefined;
  }

  #begin(method: string, args: unknown[]): void {
    if (this.#closed) throw new Error(`Cannot call ${method}: the datapath is closed`);
    this.writes.push({ method, args });
    const i = this.#failures.findIndex((f) => f.method === method);
    if (i >= 0) {
      const f = this.#failures.splice(i, 1)[0];
      throw new NetlinkError(f.code, `${method} (injected failure)`);
    }
  }

  #read<T>(method: string, fn: () => T): Promise<T> {
    return Promise.resolve().then(() => {
      this.#checkOpen(method);
      return fn();
    });
  }

  #checkOpen(method: string): void {
    if (this.#closed) throw new Error(`Cannot call ${method}: the datapath is closed`);
  }

  #emit(e: DatapathEvent): void {
    for (const s of this.#subscribers) s(e);
  }

  #link(index: number, what: string): Link {
    const l = this.#links.get(index);
    if (!l) throw new NetlinkError(ENODEV, what);
    return l;
  }

  getLink(nameOrIndex: string | number): Promise<Link | null> {
    return this.#read("getLink", () => {
      const l = typeof nameOrIndex === "number"
        ? this.#links.get(nameOrIndex)
        : this.#byName(nameOrIndex);
      return (l ?? null);
    });
  }

  listLinks(): Promise<Link[]> {
    return this.#read("listLinks", () => {
      return [...this.#links.values()];
    });
  }

  #create(link: Omit<Link, "index">, describe: string): Link {
    if (this.#byName(link.name)) throw new NetlinkError(EEXIST, describe);
    const created = { ...link, index: this.#nextIndex++ };
    this.#links.set(created.index, created);
    this.#emit({ kind: "link", action: "new", link: created });
    return created;
  }

  createVxlan(spec: VxlanSpec): Promise<Link> {
    return Promise.resolve().then(() => {
      this.#begin("createVxlan", [spec]);
      const req = createVxlanRequest(spec); // validates like the real one
      if (spec.link !== undefined && spec.link > 0) this.#link(spec.link, req.describe());
      return this.#create({
        name: spec.name,
        kind: "vxlan",
        mtu: spec.mtu ?? 1500,
        mac: spec.mac ?? this.#randomMac(),
        up: spec.up ?? false,
        flags: spec.up ? 1 : 0,
        master: null,
        vxlan: {
          vni: spec.vni,
          local: spec.local ?? null,
          link: spec.link && spec.link > 0 ? spec.link : null,
          port: spec.port,
          learning: spec.learning ?? false,
          gbp: spec.gbp ?? false,
        },
      }, req.describe());
    });
  }

  createBridge(spec: BridgeSpec): Promise<Link> {
    return Promise.resolve().then(() => {
      this.#begin("createBridge", [spec]);
      const req = createBridgeRequest(spec);
      return this.#create({
        name: spec.name,
        kind: "bridge",
        mtu: spec.mtu ?? 1500,
        mac: spec.mac ?? this.#randomMac(),
        up: spec.up ?? false,
        flags: spec.up ? 1 : 0,
        master: null,
        vxlan: null,
      }, req.describe());
    });
  }

  setLink(index: number, changes: LinkChanges): Promise<void> {
    return Promise.resolve().then(() => {
      this.#begin("setLink", [index, changes]);
      const req = setLinkRequest(index, changes);
      const l = this.#link(index, req.describe());
      const up = changes.up ?? l.up;
      const next: Link = {
        ...l,
        up,
        flags: up ? l.flags | 1 : l.flags & ~1,
        mtu: changes.mtu ?? l.mtu,
        mac: changes.mac ?? l.mac,
        master: changes.master === undefined ? l.master : changes.master || null,
      };
      this.#links.set(index, next);
      if (l.up && !up) this.#linkDown(index);
      this.#emit({ kind: "link", action: "new", link: next });
    });
  }

  #linkDown(index: number): void {
    for (const [k, r] of this.#routes) if (r.index === index) this.#routes.delete(k);
    for (const [k, n] of this.#neighbours) {
      if (n.index !== index) continue;
      this.#neighbours.delete(k);
      this.#emit({ kind: "neighbour", action: "del", neighbour: n });
    }
  }

  deleteLink(index: number): Promise<void> {
    return Promise.resolve().then(() => {
      this.#begin("deleteLink", [index]);
      const l = this.#links.get(index);
      if (!l) return;
      this.#linkDown(index);
      for (const [k, e] of this.#fdb) {
        if (e.index !== index) continue;
        this.#fdb.delete(k);
        this.#emit({ kind: "fdb", action: "del", fdb: e });
      }
      const [addrGone, addrKept] = partition(this.#addresses, (a) => a.index === index);
      this.#addresses = addrKept;
      for (const a of addrGone) this.#emit({ kind: "address", action: "del", address: a });
      this.#links.delete(index);
      for (const [i, other] of this.#links) {
        if (other.master === index) this.#links.set(i, { ...other, master: null });
      }
      this.#emit({ kind: "link", action: "del", link: l });
    });
  }

  listAddresses(index?: number): Promise<Address[]> {
    return this.#read("listAddresses", () => {
      return (this.#addresses.filter((a) => index === undefined || a.index === index).map((a) => ({
        ...a,
      })));
    });
  }

  addAddresses(addresses: readonly Address[]): Promise<void> {
    return this.#batch("addAddresses", addresses, (a) => {
      const req = addAddressRequest(a);
      this.#link(a.index, req.describe());
      const i = this.#addresses.findIndex((x) => x.index === a.index && x.ip === a.ip);
      if (i >= 0) this.#addresses.splice(i, 1);
      const copy = { index: a.index, ip: a.ip, prefixLen: a.prefixLen };
      this.#addresses.push(copy);
      this.#emit({ kind: "address", action: "new", address: copy });
    });
  }

  deleteAddresses(addresses: readonly Address[]): Promise<void> {
    return this.#batch("deleteAddresses", addresses, (a) => {
      const req = deleteAddressRequest(a);
      const i = this.#addresses.findIndex((x) =>
        x.index === a.index && x.ip === a.ip && x.prefixLen === a.prefixLen
      );
      if (i < 0) throw new NetlinkError(EADDRNOTAVAIL, req.describe());
      const [gone] = this.#addresses.splice(i, 1);
      this.#emit({ kind: "address", action: "del", address: gone });
    }, new Set([EADDRNOTAVAIL]));
  }

  #connectedRoutes(): Required<Route>[] {
    const out: Required<Route>[] = [];
    for (const a of this.#addresses) {
      const l = this.#links.get(a.index);
      if (!l?.up || a.prefixLen >= 32 || l.name === "lo") continue;
      out.push({
        dst: { ip: (a.ip & maskIPv4(a.prefixLen)) >>> 0, prefixLen: a.prefixLen },
        gateway: null,
        index: a.index,
        onlink: false,
        table: RT_TABLE_MAIN,
        protocol: RTPROT_KERNEL,
        scope: RT_SCOPE_LINK,
        type: RTN_UNICAST,
        metric: 0,
      });
    }
    return out;
  }

  listRoutes(filter: RouteFilter = {}): Promise<Route[]> {
    return this.#read("listRoutes", () => {
      const table = filter.table ?? RT_TABLE_MAIN;
      return ([...this.#routes.values(), ...this.#connectedRoutes()]
        .filter((r) => (table === 0 || r.table === table))
        .filter((r) => filter.index === undefined || r.index === filter.index)
        .map((r) => ({ ...r, dst: { ...r.dst } })));
    });
  }

  replaceRoutes(routes: readonly Route[]): Promise<void> {
    return this.#batch("replaceRoutes", routes, (r0) => {
      const req = replaceRouteRequest(r0);
      const r = normRoute(r0);
      let index = r.index;
      if (r.gateway !== null) {
        const connected = this.#connectedRoutes().find((c) =>
          (r.gateway! & maskIPv4(c.dst.prefixLen)) >>> 0 === c.dst.ip &&
          (index === null || c.index === index)
        );
        if (r.onlink) {
          if (index === null) throw new NetlinkError(ENODEV, req.describe());
        } else if (!connected) {
          throw new NetlinkError(ENETUNREACH, req.describe(), "Nexthop has invalid gateway");
        } else {
          index = connected.index;
        }
      } else if (index === null) {
        throw new NetlinkError(ENODEV, req.describe());
      }
      const l = this.#link(index!, req.describe());
      if (!l.up) throw new NetlinkError(ENETDOWN, req.describe(), "Nexthop device is not up");
      const stored = { ...r, index };
      this.#routes.set(routeKey(r), stored);
      this.#emit({ kind: "route", action: "new", route: stored });
    });
  }

  deleteRoutes(routes: readonly Route[]): Promise<void> {
    return this.#batch("deleteRoutes", routes, (r0) => {
      const req = deleteRouteRequest(r0);
      const r = normRoute(r0);
      const matches = (x: Required<Route>) =>
        x.table === r.table && sameNet(x.dst, r.dst) &&
        (r.gateway === null || x.gateway === r.gateway) &&
        (r.index === null || x.index === r.index) &&
        (!r0.metric || x.metric === r0.metric);
      let key: string | undefined = routeKey(r);
      const direct = this.#routes.get(key);
      if (!direct || !matches(direct)) {
        key = [...this.#routes].find(([, x]) => matches(x))?.[0];
      }
      if (key === undefined) throw new NetlinkError(ESRCH, req.describe());
      const gone = this.#routes.get(key)!;
      this.#routes.delete(key);
      this.#emit({ kind: "route", action: "del", route: gone });
    }, new Set([ESRCH]));
  }

  listNeighbours(index?: number): Promise<Neighbour[]> {
    return this.#read("listNeighbours", () => {
      return [...this.#neighbours.values()]
        .filter((n) => index === undefined || n.index === index)
        .map((n) => ({ ...n }));
    });
  }

  replaceNeighbours(neighbours: readonly Neighbour[]): Promise<void> {
    return this.#batch("replaceNeighbours", neighbours, (n) => {
      const req = replaceNeighbourRequest(n);
      this.#link(n.index, req.describe());
      const stored = { index: n.index, ip: n.ip, mac: n.mac, state: n.state ?? NUD_PERMANENT };
      const key = `${n.index}/${n.ip}`;
      const old = this.#neighbours.get(key);
      if (old && old.mac === stored.mac && old.state === stored.state) return;
      this.#neighbours.set(key, stored);
      this.#emit({ kind: "neighbour", action: "new", neighbour: stored });
    });
  }

  deleteNeighbours(neighbours: readonly Neighbour[]): Promise<void> {
    return this.#batch("deleteNeighbours", neighbours, (n) => {
      const req = deleteNeighbourRequest(n);
      this.#link(n.index, req.describe());
      const key = `${n.index}/${n.ip}`;
      const gone = this.#neighbours.get(key);
      if (!gone) throw new NetlinkError(ENOENT, req.describe());
      this.#neighbours.delete(key);
      this.#emit({ kind: "neighbour", action: "del", neighbour: gone });
    }, new Set([ENOENT, ENODEV]));
  }

  listFdb(index?: number): Promise<FdbEntry[]> {
    return this.#read("listFdb", () => {
      return [...this.#fdb.values()]
        .filter((e) => index === undefined || e.index === index)
        .map((e) => ({ ...e }));
    });
  }

  #addFdb(e: FdbEntry, mode: "append" | "replace"): void {
    const req = addFdbRequest(e, mode);
    const l = this.#link(e.index, req.describe());
    if (l.kind !== "vxlan") throw new NetlinkError(95, req.describe());
    const stored = { index: e.index, mac: e.mac, dst: e.dst, state: e.state ?? NUD_PERMANENT };
    const key = `${e.index}/${e.mac}`;
    const old = this.#fdb.get(key);
    if (old && (mode === "append" || old.dst === e.dst)) return;
    this.#fdb.set(key, stored);
    this.#emit({ kind: "fdb", action: "new", fdb: stored });
  }

  appendFdb(entries: readonly FdbEntry[]): Promise<void> {
    return this.#batch("appendFdb", entries, (e) => this.#addFdb(e, "append"));
  }

  replaceFdb(entries: readonly FdbEntry[]): Promise<void> {
    return this.#batch("replaceFdb", entries, (e) => this.#addFdb(e, "replace"));
  }

  deleteFdb(entries: readonly FdbEntry[]): Promise<void> {
    return this.#batch("deleteFdb", entries, (e) => {
      const req = deleteFdbRequest(e);
      this.#link(e.index, req.describe());
      const key = `${e.index}/${e.mac}`;
      const gone = this.#fdb.get(key);
      if (!gone || (e.dst !== null && gone.dst !== e.dst)) {
        throw new NetlinkError(ENOENT, req.describe());
      }
      this.#fdb.delete(key);
      this.#emit({ kind: "fdb", action: "del", fdb: gone });
    }, new Set([ENOENT, ENODEV]));
  }

  #batch<T>(
    method: string,
    items: readonly T[],
    apply: (item: T) => void,
    ignore?: ReadonlySet<number>,
  ): Promise<void> {
    return Promise.resolve().then(() => {
      if (items.length === 0) return;
      this.#begin(method, [items.map((x) => (typeof x === "object" ? { ...x } : x))]);
      const errors: NetlinkError[] = [];
      for (const item of items) {
        try {
          apply(item);
        } catch (e) {
          if (!(e instanceof NetlinkError)) throw e;
          if (!ignore?.has(e.errno)) errors.push(e);
        }
      }
      throwBatchErrors(errors, items.length);
    });
  }

  events(signal: AbortSignal): AsyncIterable<DatapathEvent> {
    this.#checkOpen("events");
    const queue: DatapathEvent[] = [];
    let wake: (() => void) | undefined;
    const push = (e: DatapathEvent) => {
      queue.push(e);
      wake?.();
    };
    const subs = this.#subscribers;
    let done = signal.aborted;
    const stop = () => {
      done = true;
      subs.delete(push);
      wake?.();
    };
    if (!done) {
      subs.add(push);
      this.#stops.add(stop);
      signal.addEventListener("abort", stop, { once: true });
    }
    const stops = this.#stops;
    return (async function* () {
      try {
        for (;;) {
          while (queue.length > 0) yield queue.shift()!;
          if (done) return;
          await new Promise<void>((r) => (wake = r));
          wake = undefined;
        }
      } finally {
        signal.removeEventListener("abort", stop);
        stops.delete(stop);
        stop();
      }
    })();
  }

  /** Simulate lost notifications: subscribers get an `overrun` event. */
  overrun(): void {
    this.#emit({ kind: "overrun" });
  }

  close(): void {
    this.#closed = true;
    for (const stop of [...this.#stops]) stop();
    this.#stops.clear();
    this.#subscribers.clear();
  }

  /** A compact text dump of the state (for test failure messages). */
  describe(): string {
    const lines: string[] = [];
    for (const l of this.#links.values()) {
      lines.push(
        `link ${l.index} ${l.name} ${l.kind ?? "-"} mtu ${l.mtu} ${l.mac} ${l.up ? "up" : "down"}`,
      );
    }
    for (const a of this.#addresses) {
      lines.push(`addr ${formatIPv4(a.ip)}/${a.prefixLen} dev ${a.index}`);
    }
    for (const r of this.#routes.values()) {
      lines.push(
        `route ${formatIPv4Net(r.dst)}${
          r.gateway !== null ? ` via ${formatIPv4(r.gateway)}` : ""
        } dev ${r.index}${r.onlink ? " onlink" : ""}`,
      );
    }
    for (const n of this.#neighbours.values()) {
      lines.push(`neigh ${formatIPv4(n.ip)} ${n.mac} dev ${n.index}`);
    }
    for (const e of this.#fdb.values()) {
      lines.push(`fdb ${e.mac} dev ${e.index} dst ${e.dst === null ? "-" : formatIPv4(e.dst)}`);
    }
    return lines.join("\n");
  }
}

function partition<T>(xs: readonly T[], pred: (x: T) => boolean): [T[], T[]] {
  const yes: T[] = [], no: T[] = [];
  for (const x of xs) (pred(x) ? yes : no).push(x);
  return [yes, no];
}
