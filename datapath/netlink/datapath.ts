/**
 * The netlink implementation of the {@link Datapath} seam, over the
 * rtnetlink kernel client (`client.ts`).
 *
 * Incremental by design: it keeps a view of what each entry table has
 * installed ({@link Tracker}), updated by its own writes and by kernel
 * change events, so `update` computes and writes only the changed peers'
 * difference, without a dump: a lease event costs the same at 5000 peers as
 * at 10. A full dump-and-diff runs on `sync` (start, snapshots, periodic
 * resyncs) and, on the next update, after lost events (ENOBUFS).
 *
 * Events are read without blocking: before and after every write, and
 * every `pollMs` while someone listens for drift. The datapath's own route
 * and neighbour writes go into the view as the kernel acknowledges them and
 * their notifications are not read back (the kernel names the sender; a
 * full sync of 5000 peers would otherwise decode 10 000 of its own
 * changes); its fdb writes, which the kernel reports without a sender, are
 * read back and applied in kernel order. Should another program change an
 * entry in the instant between the datapath's read and its write, the view
 * may take the other's change as the later one: that is reported as drift
 * and repaired (writes are idempotent) or, for an entry being deleted, the
 * view keeps it until the next full sync. Writes go in slices, each
 * followed by a read, so a large sync does not overflow the event socket.
 *
 * @module
 */

import { sleepQuietly, whenAborted } from "../../core/abort.ts";
import { formatIP, isLinkLocalIPv6 } from "../../core/ip.ts";
import { type Clock, systemClock } from "../../core/clock.ts";
import { addressChanges, describeAddress, vxlanIncompatibility } from "../devices.ts";
import {
  checkInScope,
  describeRoute,
  type InstalledRoute,
  noneTouched,
  type Plan,
  planChanges,
  sameScope,
} from "../plan.ts";
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
} from "../types.ts";
import {
  type BatchItems,
  type NetlinkClient,
  type NetlinkClientOptions,
  openNetlinkClient,
  type SettleStep,
  settleStep,
} from "./client.ts";
import { NetlinkError } from "./error.ts";
import {
  type FdbEntry,
  IPV6_DEFAULT_METRIC,
  type Neighbour,
  type Route,
  RT_TABLE_MAIN,
} from "./kernel.ts";
import {
  installedRoute,
  namedFdb,
  namedNeighbour,
  type QuietOptions,
  TableState,
  Tracker,
} from "./view.ts";

/** Options for {@link openNetlinkDatapath}. */
export interface NetlinkDatapathOptions extends NetlinkClientOptions {
  /** How often drift listeners poll the kernel when idle. Default 50 ms. */
  readonly pollMs?: number;
  /** Clock for polling. Default the system clock. */
  readonly clock?: Clock;
}

/** Kernel requests the datapath made, for tests and measurements. */
export interface NetlinkDatapathStats {
  /** Dumps of routes, neighbours, fdb entries or links. */
  readonly dumps: number;
  /** Objects written or deleted (routes, neighbours, fdb entries). */
  readonly writes: number;
}

const ENODEV = 19;

/** A kernel object type whose fields a reused request object may change. */
type Writable<T> = { -readonly [P in keyof T]: T[P] };

/** The netlink Datapath; open one with {@link openNetlinkDatapath}. */
export class NetlinkDatapath implements Datapath {
  /** The namespace it was opened in, if one was given. */
  readonly netns?: string;
  readonly #client: NetlinkClient;
  readonly #sub: ReturnType<NetlinkClient["subscribe"]>;
  readonly #tracker = new Tracker();
  readonly #listeners = new Set<(d: readonly Drift[]) => void>();
  readonly #pollMs: number;
  readonly #clock: Clock;
  readonly #stop = new AbortController();
  #pumping = false;
  #queue: Promise<unknown> = Promise.resolve();
  #dumps = 0;
  #writes = 0;

  /**
   * Subscribes to kernel changes; then call {@link NetlinkDatapath.start}.
   * {@link openNetlinkDatapath} does both.
   *
   * @param client An open kernel client (closed with the datapath).
   * @param options Polling, clock, and the kernel client's options.
   */
  constructor(client: NetlinkClient, options: NetlinkDatapathOptions = {}) {
    this.#client = client;
    this.netns = client.netns;
    // its own entry writes go into the view as they are acknowledged (see #write)
    this.#sub = client.subscribe({ withoutOwnEntryWrites: true });
    this.#pollMs = options.pollMs ?? 50;
    this.#clock = options.clock ?? systemClock;
  }

  /**
   * Read the links (after subscribing, so a link made meanwhile is seen
   * either way).
   */
  async start(): Promise<this> {
    this.#tracker.links.reset(await this.#client.listLinks());
    this.#tracker.links.resetAddresses(await this.#client.listAddresses());
    return this;
  }

  /** Kernel requests made so far. */
  stats(): NetlinkDatapathStats {
    return { dumps: this.#dumps, writes: this.#writes };
  }

  #check(what: string): void {
    if (this.#stop.signal.aborted) throw new Error(`Cannot ${what}: the datapath is closed`);
  }

  /** Run `fn` after every earlier datapath call (plans depend on the view). */
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  /**
   * Read queued kernel events (all, or the oldest `max` datagrams) into the
   * view; hand the drift to listeners.
   */
  #drain(quiet?: QuietOptions, max?: number): void {
    if (this.#sub.closed) return;
    for (;;) {
      const events = this.#sub.drain(max);
      if (events.length === 0) return;
      const drift = this.#tracker.apply(events, quiet);
      if (drift.length > 0) { for (const l of this.#listeners) l(drift); }
      if (max !== undefined) return;
    }
  }

  async link(nameOrIndex: string | number): Promise<DeviceInfo | null> {
    this.#check("look up a link");
    const link = await this.#client.getLink(nameOrIndex);
    if (!link) return null;
    const addresses = await this.#client.listAddresses(link.index);
    return {
      index: link.index,
      name: link.name,
      kind: link.kind,
      mtu: link.mtu,
      mac: link.mac,
      up: link.up,
      addresses: addresses.filter((a) => !isLinkLocalIPv6(a.ip)).map((a) =>
        ({ ip: a.ip, prefixLen: a.prefixLen }) as DeviceInfo["addresses"][number]
      ),
      vxlan: link.vxlan,
    };
  }

  async ensureDevice(spec: DeviceSpec): Promise<DeviceResult> {
    this.#check(`ensure device ${spec.name}`);
    return await this.#exclusive(async () => {
      this.#drain();
      this.#tracker.ensuring.add(spec.name);
      const changes: string[] = [];
      try {
        await this.#ensure(spec, changes);
        this.#tracker.devices.set(spec.name, spec);
      } finally {
        this.#drain(); // our own changes: applied, never reported
        this.#tracker.ensuring.delete(spec.name);
      }
      const device = await this.link(spec.name);
      const why = device ? this.#mismatch(spec, device) : `${spec.name} was deleted`;
      if (why) {
        // Someone changed it while we worked: report it as any later change.
        for (const l of this.#listeners) l([{ kind: "device", device: spec.name, reason: why }]);
      }
      if (!device) throw new Error(`${spec.name} was deleted right after it was set up`);
      return { device, changes };
    });
  }

  #mismatch(spec: DeviceSpec, d: DeviceInfo): string | null {
    if (!d.up) return `${spec.name} was set down`;
    if (spec.kind === "vxlan" && d.mac !== spec.mac) {
      return `${spec.name}'s MAC changed to ${d.mac}`;
    }
    if (d.mtu !== spec.mtu) return `${spec.name}'s MTU changed to ${d.mtu}`;
    const { remove, add } = addressChanges(d.addresses, spec.addresses);
    if (remove.length + add.length > 0) return `${spec.name}'s addresses changed`;
    return null;
  }

  async #ensure(spec: DeviceSpec, changes: string[]): Promise<void> {
    const c = this.#client;
    let link = await c.getLink(spec.name);
    if (spec.kind === "vxlan") {
      const underlay = spec.underlay === undefined ? null : await c.getLink(spec.underlay);
      if (spec.underlay !== undefined && !underlay) {
        throw new NetlinkError(
          ENODEV,
          `create vxlan ${spec.name}: its underlay device ${spec.underlay} does not exist`,
        );
      }
      const underlayIndex = underlay?.index ?? null;
      for (let attempt = 0;; attempt++) {
        if (link) {
          const why = vxlanIncompatibility(link, spec, underlayIndex);
          if (why === null) break;
          changes.push(`recreated: the existing device has an incompatible configuration (${why})`);
          await c.deleteLink(link.index);
          link = null;
        }
        try {
          link = await c.createVxlan({
            name: spec.name,
            vni: spec.vni,
            port: spec.port,
            local: spec.local,
            link: underlayIndex ?? undefined,
            learning: spec.learning,
            gbp: spec.gbp,
            mac: spec.mac,
            mtu: spec.mtu,
          });
          changes.push("created");
          break;
        } catch (e) {
          // Someone created it between our look and our create: look again.
          if (!(e instanceof NetlinkError && e.code === "EEXIST" && attempt < 3)) throw e;
          link = await c.getLink(spec.name);
        }
      }
      if (link!.mac !== spec.mac) {
        changes.push(`MAC ${link!.mac} → ${spec.mac}`);
        await c.setLink(link!.index, { mac: spec.mac });
      }
    } else if (!link) {
      throw new NetlinkError(
        ENODEV,
        `configure ${spec.name}: the device does not exist (is the datapath opened in the namespace it was created in?)`,
      );
    }
    if (!link) throw new Error(`${spec.name} vanished while it was being created`);
    this.#tracker.links.set(link);
    if (link.mtu !== spec.mtu) {
      changes.push(`MTU ${link.mtu} → ${spec.mtu}`);
      await c.setLink(link.index, { mtu: spec.mtu });
    }
    const have = await c.listAddresses(link.index);
    const { remove, add } = addressChanges(have, spec.addresses);
    const index = link.index;
    // Add before removing: a device without IPv4 addresses loses its routes.
    if (add.length > 0) {
      changes.push(`added ${add.map(describeAddress).join(", ")}`);
      await c.addAddresses(add.map((a) => ({ index, ...a })));
    }
    if (remove.length > 0) {
      changes.push(`removed ${remove.map(describeAddress).join(", ")}`);
      await c.deleteAddresses(remove);
    }
    if (!link.up) {
      changes.push("set up");
      await c.setLink(link.index, { up: true });
    }
  }

  entries(scope: EntryScope): EntryTable {
    this.#check(`open entry table ${scope.name}`);
    let t = this.#tracker.tables.get(scope.name);
    if (!t || !sameScope(t.scope, scope)) {
      t = new TableState(scope);
      this.#tracker.tables.set(scope.name, t);
    }
    const table = t;
    return {
      scope,
      sync: async (entries) => {
        this.#check(`sync table ${scope.name}`);
        entries.forEach((e, k) => checkInScope(scope, k, e)); // no [k, e] per peer
        return await this.#exclusive(() => this.#sync(table, entries));
      },
      update: async (changes) => {
        this.#check(`update table ${scope.name}`);
        for (const [k, e] of changes) if (e) checkInScope(scope, k, e);
        return await this.#exclusive(() => this.#update(table, changes));
      },
    };
  }

  async #sync(t: TableState, entries: ReadonlyMap<string, PeerEntries>): Promise<ApplyResult> {
    this.#drain({ tables: new Set([t]) }); // the dump below supersedes what they said
    t.desired.replaceAll(entries);
    const withNeighbours = (t.scope.neighbourDevices?.length ?? 0) > 0;
    const c = this.#client;
    const [links, addresses, routes, neighbours, fdb] = await Promise.all([
      c.listLinks(),
      c.listAddresses(),
      c.listRoutes(),
      withNeighbours ? c.listNeighbours() : Promise.resolve([]),
      withNeighbours ? c.listFdb() : Promise.resolve([]),
    ]);
    this.#dumps += withNeighbours ? 5 : 3;
    const lt = this.#tracker.links;
    lt.reset(links);
    lt.resetAddresses(addresses);
    const found = {
      routes: routes.map((r) => installedRoute(r, lt)).filter((r) => r !== null),
      neighbours: neighbours.map((n) => namedNeighbour(n, lt)).filter((n) => n?.permanent).map((
        n,
      ) => n!.spec),
      fdb: fdb.map((e) => namedFdb(e, lt)).filter((e) => e !== null),
    };
    t.view.reset(found);
    t.synced = true;
    const result = await this.#write(t, planChanges(t.desired.all(), t.view.all(), t.scope));
    t.desired.indexSome(Infinity); // what the writes left, before the first event needs it
    return result;
  }

  #update(t: TableState, changes: ReadonlyMap<string, PeerEntries | null>): Promise<ApplyResult> {
    this.#drain();
    if (!t.synced) {
      const all = new Map<string, PeerEntries>();
      for (const k of t.desired.keys()) all.set(k, t.desired.get(k)!);
      for (const [k, e] of changes) {
        if (e) all.set(k, e);
        else all.delete(k);
      }
      return this.#sync(t, all);
    }
    const touched = noneTouched();
    for (const [k, e] of changes) t.desired.set(k, e, touched);
    return this.#write(t, planChanges(t.desired.at(touched), t.view.at(touched), t.scope));
  }

  /**
   * Write a plan: stale routes first (traffic stops using them), then stale
   * neighbours and fdb entries, then new neighbours and fdb entries, and new
   * routes last (so the kernel never resolves a fresh route's gateway before
   * its neighbour exists). Every step runs even when an earlier one fails.
   * The steps go to the kernel as one pipelined sequence: outcomes enter
   * the view while the kernel works on later ones, and after a full sync
   * the desired table indexes a peer per write meanwhile. Kernel events (the
   * fdb echoes of the writes) are read once the desired table is indexed:
   * each is checked against it, and finishing the index in one go would
   * stall the writes.
   */
  async #write(t: TableState, plan: Plan): Promise<ApplyResult> {
    const failures: EntryFailure[] = [];
    let written = 0, deleted = 0;
    const lt = this.#tracker.links;
    const v = t.view;
    // Each step turns its items into requests as they are encoded, into one reused object
    // per kind (a full sync at 5000 peers writes 15 000 objects): the encoder reads a request
    // at once, so steps may share it.
    const step = <K extends keyof BatchItems, S extends RouteSpec | NeighbourSpec | FdbSpec>(
      kind: K,
      items: readonly S[],
      owner: "route" | "neighbour" | "fdb",
      toKernel: (s: S, index: number) => BatchItems[K],
      describe: (s: S) => string,
      done: (s: S) => void,
    ): SettleStep | null => {
      // each device's index as it is now (one that goes during the writes fails its
      // items), looked up once: the items of a step are mostly on one device
      const indexes = new Map<string, number>();
      let last: string | undefined, lastIndex = 0;
      const indexOf = (device: string): number | undefined => {
        if (device === last) return lastIndex;
        let index = indexes.get(device);
        if (index === undefined) {
          index = lt.index(device);
          if (index === undefined) return undefined;
          indexes.set(device, index);
        }
        last = device;
        lastIndex = index;
        return index;
      };
      let sendable = items;
      if (!items.every((s) => indexOf(s.device) !== undefined)) {
        sendable = items.filter((s) => {
          if (indexOf(s.device) !== undefined) return true;
          const error = new NetlinkError(
            ENODEV,
            `${kind} ${describe(s)}: device ${s.device} does not exist`,
          );
          failures.push({ key: t.desired.ownerOf(owner, s), error });
          return false;
        });
      }
      if (sendable.length === 0) return null;
      const deleting = kind.startsWith("delete");
      return settleStep(kind, sendable, (start, end, results) => {
        t.desired.indexSome(end - start); // nothing left to index but after a full sync
        this.#writes += end - start;
        for (let i = start; i < end; i++) {
          const error = results[i];
          const s = sendable[i];
          if (error) {
            failures.push({ key: t.desired.ownerOf(owner, s), error });
            continue;
          }
          done(s);
          if (deleting) deleted++;
          else written++;
        }
        // at most two notifications per write (its echo, and one more of the backlog)
        if (t.desired.indexed) this.#drain(undefined, 2 * (end - start));
      }, (s: S) => toKernel(s, indexOf(s.device)!));
    };
    const route = (() => {
      const o: Writable<Route> = {
        dst: { ip: 0, prefixLen: 0 },
        gateway: null,
        index: 0,
        onlink: false,
        scope: undefined,
      };
      return (r: RouteSpec, index: number) => {
        o.dst = r.dst;
        o.gateway = r.gateway ?? null;
        o.index = index;
        o.onlink = r.onlink;
        o.scope = r.scope;
        return o;
      };
    })();
    const neigh = (() => {
      const o: Writable<Neighbour> = { index: 0, ip: 0, mac: null };
      return (n: NeighbourSpec, index: number) => {
        o.index = index;
        o.ip = n.ip;
        o.mac = n.mac;
        return o;
      };
    })();
    const fdb = (() => {
      const o: Writable<FdbEntry> = { index: 0, mac: "", dst: null };
      return (f: FdbSpec, index: number) => {
        o.index = index;
        o.mac = f.mac;
        o.dst = f.dst;
        return o;
      };
    })();
    const steps = [
      step(
        "deleteRoutes",
        plan.deleteRoutes,
        "route",
        (r: InstalledRoute, i) => ({
          ...route(r, i),
          table: RT_TABLE_MAIN,
          // the view shows IPv6's default metric as 0; the kernel matches 1024 exactly
          metric: typeof r.dst.ip === "bigint" && (r.metric ?? 0) === 0
            ? IPV6_DEFAULT_METRIC
            : r.metric,
        }),
        describeRoute,
        (r) => v.removeRoute(r),
      ),
      step(
        "deleteNeighbours",
        plan.deleteNeighbours,
        "neighbour",
        neigh,
        describeNeighbour,
        (n) => v.removeNeighbour(n),
      ),
      step("deleteFdb", plan.deleteFdb, "fdb", fdb, describeFdb, (f) => v.removeFdb(f)),
      step(
        "replaceNeighbours",
        plan.replaceNeighbours,
        "neighbour",
        neigh,
        describeNeighbour,
        (n) => v.putNeighbour(n),
      ),
      step("replaceFdb", plan.replaceFdb, "fdb", fdb, describeFdb, (f) => v.putFdb(f)),
      step(
        "replaceRoutes",
        plan.replaceRoutes,
        "route",
        route,
        describeRoute,
        (r) => v.putRoute(r), // written without a metric: its own installed form
      ),
    ].filter((x) => x !== null);
    if (steps.length > 0) await this.#client.settleSteps(steps);
    return { written, deleted, failures };
  }

  drift(signal: AbortSignal): AsyncIterable<Drift> {
    this.#check("watch for drift");
    const queue: Drift[] = [];
    let wake: (() => void) | undefined;
    const listener = (d: readonly Drift[]) => {
      queue.push(...d);
      wake?.();
    };
    this.#listeners.add(listener);
    void this.#pump();
    const listeners = this.#listeners;
    const stopped = this.#stop.signal;
    return (async function* () {
      try {
        while (!signal.aborted && !stopped.aborted) {
          while (queue.length > 0) yield queue.shift()!;
          await Promise.race([
            new Promise<void>((r) => (wake = r)),
            whenAborted(signal),
            whenAborted(stopped),
          ]);
          wake = undefined;
        }
      } finally {
        listeners.delete(listener);
      }
    })();
  }

  /** Poll the kernel while someone listens for drift. */
  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (this.#listeners.size > 0 && !this.#stop.signal.aborted) {
        this.#drain();
        await sleepQuietly(this.#clock, this.#pollMs, this.#stop.signal);
      }
    } finally {
      this.#pumping = false;
    }
  }

  close(): void {
    if (this.#stop.signal.aborted) return;
    this.#stop.abort();
    this.#sub.close();
    this.#client.close();
  }
}

function describeNeighbour(n: NeighbourSpec): string {
  return `${formatIP(n.ip)} lladdr ${n.mac} dev ${n.device}`;
}

function describeFdb(f: FdbSpec): string {
  return `${f.mac} dev ${f.device} dst ${formatIP(f.dst)}`;
}

/**
 * Open the netlink datapath (and its kernel client and event subscription).
 *
 * @param options Namespace (for tests), timeouts, polling.
 * @returns The datapath; call `close()` when done.
 * @throws {NetlinkError} When the sockets cannot be opened (EPERM without CAP_NET_ADMIN).
 * @throws {Error} When the namespace does not exist or the runtime has no FFI.
 * @example
 * ```ts
 * const dp = await openNetlinkDatapath({ netns: "wdp-a" });
 * console.log((await dp.link("eth0"))?.addresses);
 * dp.close();
 * ```
 */
export async function openNetlinkDatapath(
  options: NetlinkDatapathOptions = {},
): Promise<NetlinkDatapath> {
  const client = await openNetlinkClient(options);
  try {
    return await new NetlinkDatapath(client, options).start();
  } catch (e) {
    client.close();
    throw e;
  }
}
