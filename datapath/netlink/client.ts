/**
 * The rtnetlink kernel client: create, read, change and delete links, VXLAN
 * devices, bridges, addresses, routes and neighbours of both families
 * (IPv4 and IPv6) and VXLAN fdb entries through a NETLINK_ROUTE socket over FFI, with batched writes and
 * kernel change events. Works the same on Deno and Bun.
 *
 * This is the kernel access under the netlink implementation of the
 * Datapath seam (`datapath.ts`), which decides what to write; backends never
 * use it directly.
 *
 * Guarantees:
 * - Replace/append/add methods are idempotent: writing what is already
 *   there succeeds and changes nothing.
 * - Delete methods succeed when the object is already gone.
 * - Batch methods take arrays so that thousands of objects are one call (one
 *   or a few netlink sends); every request of a batch is attempted, then the
 *   failures are thrown ({@link NetlinkError} for one, `NetlinkBatchError`
 *   for several, listed in `errors`).
 * - `events()` and `subscribe()` report changes made by anyone, this process
 *   included.
 * - After `close()`, calls reject and event iterables end.
 *
 * @module
 */

import { NetlinkError, throwBatchErrors } from "./error.ts";
import { type BackgroundWriter, openBackgroundWriter } from "../../core/aio.ts";
import { type Libc, loadLibc } from "../../core/libc.ts";
import { type BatchPart, type ChunkListener, NetlinkSocket } from "./socket.ts";
import { align4, NLMSG_HDRLEN } from "./codec.ts";
import { sleepQuietly } from "../../core/abort.ts";
import { systemClock } from "../../core/clock.ts";
import {
  addAddressEncoder,
  addRouteEncoder,
  type BatchEncoder,
  createBridgeRequest,
  createVxlanRequest,
  decodeAddress,
  decodeEventAt,
  decodeLink,
  decodeNeigh,
  decodeRoute,
  deleteAddressEncoder,
  deleteLinkRequest,
  deleteNeighbourEncoder,
  deleteRouteEncoder,
  dumpAddressesRequest,
  dumpFdbRequest,
  dumpLinksRequest,
  dumpNeighboursRequest,
  dumpRoutesRequest,
  EVENT_GROUPS,
  fdbEncoders,
  getLinkRequest,
  type NlRequest,
  replaceNeighbourEncoder,
  replaceRouteEncoder,
  requestEncoder,
  RTM_DELNEIGH,
  RTM_DELROUTE,
  RTM_NEWNEIGH,
  RTM_NEWROUTE,
  setLinkRequest,
} from "./messages.ts";
import {
  type Address,
  type BridgeSpec,
  type FdbEntry,
  type KernelEvent,
  type Link,
  type LinkChanges,
  type Neighbour,
  type Route,
  type RouteFilter,
  RT_TABLE_MAIN,
  type VxlanSpec,
} from "./kernel.ts";

/** Options for {@link openNetlinkClient}. */
export interface NetlinkClientOptions {
  /**
   * Network namespace to work in: a name under `/var/run/netns` or an
   * absolute path. Default: the namespace this process runs in. Used by
   * tests to drive a namespace without touching the host's.
   */
  readonly netns?: string;
  /** How long one request may wait for the kernel. Default 5000 ms. */
  readonly timeoutMs?: number;
  /** How often `events()` polls its socket when idle. Default 50 ms. */
  readonly eventPollMs?: number;
  /** Requests per send in batches. Default 1024. */
  readonly chunkSize?: number;
  /**
   * Send batches from a libc AIO thread, pipelined with the work around
   * them (`core/aio.ts`). Default true; without libc AIO they are sent in
   * place either way.
   */
  readonly backgroundWrites?: boolean;
  /**
   * Receive buffer of event subscriptions (SO_RCVBUFFORCE). Default 16 MiB:
   * a full sync's fdb echoes (under a kilobyte each) may wait there while
   * the writes go on — 5000 peers' take about 4 MB.
   */
  readonly eventBufferBytes?: number;
}

/**
 * A kernel change subscription read without blocking: {@link drain} returns
 * what the kernel queued since the last call.
 */
export interface KernelSubscription {
  /**
   * Every queued change, oldest first (an `overrun` event first when the
   * kernel dropped notifications because nobody read them in time).
   *
   * @param max Read at most this many notification datagrams (default: all).
   * @throws {Error} After {@link close}.
   */
  drain(max?: number): KernelEvent[];
  /** Whether {@link close} was called (or the client closed). */
  readonly closed: boolean;
  /** Stop receiving. Idempotent. */
  close(): void;
}

/** Options of {@link NetlinkClient.subscribe}. */
export interface SubscribeOptions {
  /**
   * Leave out the route and neighbour notifications this client's own
   * requests caused (the kernel names the requesting socket in them), for
   * a writer that applies its own writes to its view: a full sync of 5000
   * peers would otherwise read back 10 000 of its own changes. Other
   * senders' changes, and fdb entries (which the kernel reports without a
   * sender), still come.
   */
  readonly withoutOwnEntryWrites?: boolean;
}

/** A little-endian u32 at `at`. */
const readU32 = (b: Uint8Array, at: number) =>
  (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;

/** Default of {@link NetlinkClientOptions.eventBufferBytes}. */
const EVENT_BUFFER_BYTES = 16 * 1024 * 1024;

/** Notification types {@link SubscribeOptions.withoutOwnEntryWrites} leaves out. */
const OWN_ENTRY_TYPES = new Set([RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWNEIGH, RTM_DELNEIGH]);

// Errnos that mean "already gone" for delete requests.
const GONE = new Set(["ENOENT", "ESRCH", "ENODEV", "EADDRNOTAVAIL"]);

/**
 * One step of {@link NetlinkClient.settleSteps}: a batch method and its
 * items. Make one with {@link settleStep}, which ties the types together.
 */
export interface SettleStep {
  readonly kind: keyof BatchItems;
  readonly items: readonly unknown[];
  /** As `BatchPart.onChunk` (outcomes already forgiven as in {@link NetlinkClient.settle}). */
  readonly onChunk?: ChunkListener;
  /** Turns an item into the batch method's item (see {@link settleStep}). */
  readonly toRequest?: (item: unknown) => unknown;
}

/**
 * A step of {@link NetlinkClient.settleSteps}.
 *
 * @param kind The batch method.
 * @param items Its items: the batch method's own, or any with `toRequest`.
 * @param onChunk Told as the outcomes come in, a slice of items at a time.
 * @param toRequest Turns an item into the batch method's item when it is
 *   encoded (or a failure described). Its result is read at once, so it may
 *   fill and return one reused object: a batch of thousands then allocates
 *   nothing per item.
 * @returns The step.
 */
export function settleStep<K extends keyof BatchItems>(
  kind: K,
  items: readonly BatchItems[K][],
  onChunk?: ChunkListener,
): SettleStep;
export function settleStep<K extends keyof BatchItems, T>(
  kind: K,
  items: readonly T[],
  onChunk: ChunkListener | undefined,
  toRequest: (item: T) => BatchItems[K],
): SettleStep;
export function settleStep<K extends keyof BatchItems, T>(
  kind: K,
  items: readonly T[],
  onChunk?: ChunkListener,
  toRequest?: (item: T) => BatchItems[K],
): SettleStep {
  return { kind, items, onChunk, toRequest: toRequest as ((item: unknown) => unknown) | undefined };
}

/** What each batch method of {@link NetlinkClient.settle} takes. */
export interface BatchItems {
  addAddresses: Address;
  deleteAddresses: Address;
  replaceRoutes: Route;
  deleteRoutes: Route;
  replaceNeighbours: Neighbour;
  deleteNeighbours: Neighbour;
  appendFdb: FdbEntry;
  replaceFdb: FdbEntry;
  deleteFdb: FdbEntry;
}

const BATCHES: {
  readonly [K in keyof BatchItems]: readonly [BatchEncoder<BatchItems[K]>, ReadonlySet<string>?];
} = {
  addAddresses: [addAddressEncoder],
  deleteAddresses: [deleteAddressEncoder, GONE],
  replaceRoutes: [replaceRouteEncoder],
  deleteRoutes: [deleteRouteEncoder, GONE],
  replaceNeighbours: [replaceNeighbourEncoder],
  deleteNeighbours: [deleteNeighbourEncoder, GONE],
  appendFdb: [fdbEncoders.append],
  replaceFdb: [fdbEncoders.replace],
  deleteFdb: [fdbEncoders.delete, GONE],
};

/**
 * The rtnetlink kernel client; open one with {@link openNetlinkClient}.
 */
export class NetlinkClient {
  /** The namespace it was opened in, if one was given. */
  readonly netns?: string;
  readonly #libc: Libc;
  readonly #sock: NetlinkSocket;
  readonly #options: NetlinkClientOptions;
  readonly #eventSockets = new Set<NetlinkSocket>();

  /**
   * @param libc From `loadLibc()`.
   * @param options Namespace, timeouts, batch size.
   * @param writer From `openBackgroundWriter()`, for batches; null sends them in place.
   */
  constructor(libc: Libc, options: NetlinkClientOptions, writer: BackgroundWriter | null = null) {
    this.#libc = libc;
    this.#options = options;
    this.netns = options.netns;
    this.#sock = NetlinkSocket.openWith(libc, { ...options, writer });
  }

  #run(requests: readonly NlRequest[], ignore?: ReadonlySet<string>): Promise<void> {
    return this.#throwing(requestEncoder, requests, ignore);
  }

  async #throwing<T>(
    encoder: BatchEncoder<T>,
    items: readonly T[],
    ignore?: ReadonlySet<string>,
  ): Promise<void> {
    const results = await this.#settle(encoder, items, ignore);
    throwBatchErrors(results.filter((e): e is NetlinkError => e !== null), items.length);
  }

  async #settle<T>(
    encoder: BatchEncoder<T>,
    items: readonly T[],
    ignore?: ReadonlySet<string>,
  ): Promise<(NetlinkError | null)[]> {
    if (items.length === 0) return [];
    const results = await this.#sock.executeBatch(encoder, items);
    return ignore ? results.map((e) => (e !== null && ignore.has(e.code) ? null : e)) : results;
  }

  /**
   * Run one batch and report each item's outcome instead of throwing: null
   * when it was done (for deletes: also when it was already gone), else its
   * error. For callers that must know which items failed.
   *
   * @param kind Which batch method.
   * @param items Its items.
   * @returns One outcome per item, in order.
   * @throws {NetlinkError} When the socket itself fails (send error, timeout).
   */
  async settle<K extends keyof BatchItems>(
    kind: K,
    items: readonly BatchItems[K][],
  ): Promise<(NetlinkError | null)[]> {
    return (await this.settleSteps([settleStep(kind, items)]))[0];
  }

  /**
   * Run batches one after the other, as {@link settle} each, pipelined: with
   * libc AIO the kernel works through one chunk while this thread encodes
   * the next and, while the kernel is still busy, hands earlier outcomes to
   * their step's `onChunk` (see `NetlinkSocket.executeBatches`), so a caller
   * applying outcomes as they come spends its time while the kernel spends
   * its own.
   *
   * @param steps The batches, in the order they must take effect (make each
   *   with {@link settleStep}).
   * @returns Per step, one outcome per item, in order.
   * @throws {NetlinkError} When the socket itself fails (send error, timeout).
   */
  settleSteps(steps: readonly SettleStep[]): Promise<(NetlinkError | null)[][]> {
    const parts = steps.map((step): BatchPart<unknown> => {
      const [own, ignore] = BATCHES[step.kind] as [BatchEncoder<unknown>, ReadonlySet<string>?];
      const as = step.toRequest;
      const encoder: BatchEncoder<unknown> = as
        ? {
          encode: (w, item, seq) => own.encode(w, as(item), seq),
          describe: (item) => own.describe(as(item)),
        }
        : own;
      return {
        items: step.items,
        encoder,
        onChunk: (start, end, results) => {
          if (ignore) {
            for (let i = start; i < end; i++) {
              const e = results[i];
              if (e !== null && ignore.has(e.code)) results[i] = null;
            }
          }
          step.onChunk?.(start, end, results);
        },
      };
    });
    return this.#sock.executeBatches(parts);
  }

  /** A link by name or index, or null when there is none. */
  async getLink(nameOrIndex: string | number): Promise<Link | null> {
    try {
      return decodeLink((await this.#sock.get(getLinkRequest(nameOrIndex))).body);
    } catch (e) {
      if (e instanceof NetlinkError && e.code === "ENODEV") return null;
      throw e;
    }
  }

  /** Every link. */
  async listLinks(): Promise<Link[]> {
    return (await this.#sock.dump(dumpLinksRequest())).map((m) => decodeLink(m.body));
  }

  async #created(name: string): Promise<Link> {
    const link = await this.getLink(name);
    if (!link) {
      throw new NetlinkError(
        19,
        `RTM_GETLINK ${name}: the link vanished right after it was created`,
      );
    }
    return link;
  }

  /**
   * Create a VXLAN device.
   * @throws {NetlinkError} `EEXIST` when a device of that name exists.
   */
  async createVxlan(spec: VxlanSpec): Promise<Link> {
    await this.#run([createVxlanRequest(spec)]);
    return this.#created(spec.name);
  }

  /**
   * Create a bridge.
   * @throws {NetlinkError} `EEXIST` when a device of that name exists.
   */
  async createBridge(spec: BridgeSpec): Promise<Link> {
    await this.#run([createBridgeRequest(spec)]);
    return this.#created(spec.name);
  }

  /**
   * Change a link's state, MTU, MAC or master.
   * @throws {NetlinkError} `ENODEV` when there is no such link.
   */
  setLink(index: number, changes: LinkChanges): Promise<void> {
    return this.#run([setLinkRequest(index, changes)]);
  }

  /** Delete a link (and with it its addresses, routes and neighbours). */
  deleteLink(index: number): Promise<void> {
    return this.#run([deleteLinkRequest(index)], GONE);
  }

  /** Addresses (IPv4 and IPv6, link-local ones included), of one link or all. */
  async listAddresses(index?: number): Promise<Address[]> {
    const out: Address[] = [];
    for (const m of await this.#sock.dump(dumpAddressesRequest())) {
      const a = decodeAddress(m.body);
      if (a && (index === undefined || a.index === index)) out.push(a);
    }
    return out;
  }

  /** Add addresses (replacing any identical one). */
  addAddresses(addresses: readonly Address[]): Promise<void> {
    return this.#throwing(addAddressEncoder, addresses);
  }

  /** Remove addresses. */
  deleteAddresses(addresses: readonly Address[]): Promise<void> {
    return this.#throwing(deleteAddressEncoder, addresses, GONE);
  }

  /** IPv4 and IPv6 routes (main table unless the filter says otherwise). */
  async listRoutes(filter: RouteFilter = {}): Promise<Route[]> {
    const table = filter.table ?? RT_TABLE_MAIN;
    const out: Route[] = [];
    for (const m of await this.#sock.dump(dumpRoutesRequest())) {
      const r = decodeRoute(m.body);
      if (!r) continue;
      if (table !== 0 && r.table !== table) continue;
      if (filter.index !== undefined && r.index !== filter.index) continue;
      out.push(r);
    }
    return out;
  }

  /** Create or replace routes (keyed by table, dst, tos, metric). */
  replaceRoutes(routes: readonly Route[]): Promise<void> {
    return this.#throwing(replaceRouteEncoder, routes);
  }

  /**
   * Add routes that must not replace anything (`ip route add`): a route with
   * the same table, dst, tos and metric makes it fail with EEXIST.
   */
  addRoutes(routes: readonly Route[]): Promise<void> {
    return this.#throwing(addRouteEncoder, routes);
  }

  /** Delete routes matching dst/table (and gateway/device when given). */
  deleteRoutes(routes: readonly Route[]): Promise<void> {
    return this.#throwing(deleteRouteEncoder, routes, GONE);
  }

  /** IPv4 and IPv6 neighbour entries (any state), of one link or all. */
  async listNeighbours(index?: number): Promise<Neighbour[]> {
    const out: Neighbour[] = [];
    for (const m of await this.#sock.dump(dumpNeighboursRequest())) {
      const d = decodeNeigh(m.body);
      if (d?.kind === "neighbour" && (index === undefined || d.neighbour.index === index)) {
        out.push(d.neighbour);
      }
    }
    return out;
  }

  /** Create or replace neighbour entries (permanent by default). */
  replaceNeighbours(neighbours: readonly Neighbour[]): Promise<void> {
    return this.#throwing(replaceNeighbourEncoder, neighbours);
  }

  /** Delete neighbour entries. */
  deleteNeighbours(neighbours: readonly Neighbour[]): Promise<void> {
    return this.#throwing(deleteNeighbourEncoder, neighbours, GONE);
  }

  /** Bridge fdb entries with a remote VTEP, of one link or all. */
  async listFdb(index?: number): Promise<FdbEntry[]> {
    const out: FdbEntry[] = [];
    for (const m of await this.#sock.dump(dumpFdbRequest())) {
      const d = decodeNeigh(m.body);
      if (
        d?.kind === "fdb" && d.fdb.dst !== null && (index === undefined || d.fdb.index === index)
      ) {
        out.push(d.fdb);
      }
    }
    return out;
  }

  /** `bridge fdb append … self`: add remotes (idempotent). */
  appendFdb(entries: readonly FdbEntry[]): Promise<void> {
    return this.#throwing(fdbEncoders.append, entries);
  }

  /** `bridge fdb replace … self`: create, or point an existing MAC at a new remote. */
  replaceFdb(entries: readonly FdbEntry[]): Promise<void> {
    return this.#throwing(fdbEncoders.replace, entries);
  }

  /** `bridge fdb del … self`. */
  deleteFdb(entries: readonly FdbEntry[]): Promise<void> {
    return this.#throwing(fdbEncoders.delete, entries, GONE);
  }

  /**
   * Subscribe to kernel changes (links, addresses and routes of both
   * families, neighbours, fdb) and read them without blocking. Subscribed before this
   * returns, so changes made after the call are seen.
   *
   * @returns The subscription; `close()` it when done.
   * @throws {Error} When the client is closed.
   * @throws {NetlinkError} When the socket cannot be opened.
   */
  subscribe(options: SubscribeOptions = {}): KernelSubscription {
    if (this.#sock.closed) throw new Error("Cannot subscribe to events: the client is closed");
    // the kernel names the requesting socket in route and neighbour notifications
    const own = options.withoutOwnEntryWrites ? this.#sock.portId : undefined;
    const skip = own === undefined
      ? undefined
      : (type: number, pid: number) => pid === own && OWN_ENTRY_TYPES.has(type);
    const sock = NetlinkSocket.openWith(this.#libc, {
      netns: this.netns,
      groups: EVENT_GROUPS,
      receiveBufferBytes: this.#options.eventBufferBytes ?? EVENT_BUFFER_BYTES,
    });
    // the kernel drops them before they are queued; the check in drain stays for a refusal
    if (own !== undefined) sock.dropNotificationsFrom(own, [...OWN_ENTRY_TYPES]);
    this.#eventSockets.add(sock);
    const sockets = this.#eventSockets;
    return {
      drain: (max) => {
        const out: KernelEvent[] = [];
        const { overrun } = sock.drain((bytes, at, len) => {
          // a datagram, normally of one message
          const end = at + len;
          for (let m = at; m + NLMSG_HDRLEN <= end;) {
            const size = readU32(bytes, m);
            if (size < NLMSG_HDRLEN || m + size > end) return; // malformed: the rest is skipped
            const type = bytes[m + 4] | (bytes[m + 5] << 8);
            if (!skip?.(type, readU32(bytes, m + 12))) {
              try {
                const e = decodeEventAt(bytes, m, size);
                if (e) out.push(e);
              } catch {
                // A malformed notification is skipped; the next full sync covers it.
              }
            }
            m += align4(size);
          }
        }, max);
        if (overrun) out.unshift({ kind: "overrun" });
        return out;
      },
      get closed() {
        return sock.closed;
      },
      close: () => {
        sock.close();
        sockets.delete(sock);
      },
    };
  }

  /**
   * Kernel change notifications until `signal` aborts or the client closes,
   * polled every `eventPollMs` while idle. Each call opens its own
   * subscription, before the iterable is returned.
   *
   * @param signal Ends the iteration.
   * @returns The events, oldest first.
   */
  events(signal: AbortSignal): AsyncIterable<KernelEvent> {
    const sub = this.subscribe();
    const pollMs = this.#options.eventPollMs ?? 50;
    const stop = () => sub.close();
    if (signal.aborted) stop();
    else signal.addEventListener("abort", stop, { once: true });
    return (async function* () {
      try {
        while (!sub.closed) {
          const events = sub.drain();
          yield* events;
          if (events.length === 0 && !sub.closed) await sleepQuietly(systemClock, pollMs, signal);
        }
      } finally {
        signal.removeEventListener("abort", stop);
        stop();
      }
    })();
  }

  close(): void {
    this.#sock.close();
    for (const s of this.#eventSockets) s.close();
    this.#eventSockets.clear();
  }
}

/**
 * Open the rtnetlink kernel client.
 *
 * @param options Namespace (for tests), timeouts, event poll interval.
 * @returns The client; call `close()` when done.
 * @throws {NetlinkError} When the socket cannot be opened (EPERM without CAP_NET_ADMIN).
 * @throws {Error} When the namespace does not exist or the runtime has no FFI.
 * @example
 * ```ts
 * const client = await openNetlinkClient({ netns: "wdp-a" });
 * console.log((await client.listLinks()).map((l) => l.name));
 * client.close();
 * ```
 */
export async function openNetlinkClient(
  options: NetlinkClientOptions = {},
): Promise<NetlinkClient> {
  const [libc, writer] = await Promise.all([
    loadLibc(),
    options.backgroundWrites === false ? null : openBackgroundWriter(),
  ]);
  return new NetlinkClient(libc, options, writer);
}
