/**
 * The rtnetlink {@link Datapath}: links, VXLAN devices, bridges, IPv4
 * addresses, routes, neighbours and VXLAN fdb entries through a
 * NETLINK_ROUTE socket over FFI, with batched writes and kernel change
 * events. Works the same on Deno and Bun.
 *
 * @module
 */

import { NetlinkError, throwBatchErrors } from "./error.ts";
import { type Libc, loadLibc } from "../../core/libc.ts";
import { NetlinkSocket } from "./socket.ts";
import {
  addAddressEncoder,
  type BatchEncoder,
  createBridgeRequest,
  createVxlanRequest,
  decodeAddress,
  decodeEvent,
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
  setLinkRequest,
} from "./messages.ts";
import {
  type Address,
  type BridgeSpec,
  type Datapath,
  type DatapathEvent,
  type FdbEntry,
  type Link,
  type LinkChanges,
  type Neighbour,
  type Route,
  type RouteFilter,
  RT_TABLE_MAIN,
  type VxlanSpec,
} from "../types.ts";

/** Options for {@link openNetlinkDatapath}. */
export interface NetlinkDatapathOptions {
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
}

/** The rtnetlink datapath returned by {@link openNetlinkDatapath}. */
export interface NetlinkDatapath extends Datapath {
  /** The namespace it was opened in, if one was given. */
  readonly netns?: string;
}

// Errnos that mean "already gone" for delete requests.
const GONE = new Set(["ENOENT", "ESRCH", "ENODEV", "EADDRNOTAVAIL"]);

class NetlinkDatapathImpl implements NetlinkDatapath {
  readonly netns?: string;
  readonly #libc: Libc;
  readonly #sock: NetlinkSocket;
  readonly #options: NetlinkDatapathOptions;
  readonly #eventSockets = new Set<NetlinkSocket>();

  constructor(libc: Libc, options: NetlinkDatapathOptions) {
    this.#libc = libc;
    this.#options = options;
    this.netns = options.netns;
    this.#sock = NetlinkSocket.openWith(libc, options);
  }

  #run(requests: readonly NlRequest[], ignore?: ReadonlySet<string>): Promise<void> {
    return this.#batch(requestEncoder, requests, ignore);
  }

  async #batch<T>(
    encoder: BatchEncoder<T>,
    items: readonly T[],
    ignore?: ReadonlySet<string>,
  ): Promise<void> {
    if (items.length === 0) return;
    const results = await this.#sock.executeBatch(encoder, items);
    const errors = results.filter((e): e is NetlinkError => e !== null && !ignore?.has(e.code));
    throwBatchErrors(errors, items.length);
  }

  async getLink(nameOrIndex: string | number): Promise<Link | null> {
    try {
      return decodeLink((await this.#sock.get(getLinkRequest(nameOrIndex))).body);
    } catch (e) {
      if (e instanceof NetlinkError && e.code === "ENODEV") return null;
      throw e;
    }
  }

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

  async createVxlan(spec: VxlanSpec): Promise<Link> {
    await this.#run([createVxlanRequest(spec)]);
    return this.#created(spec.name);
  }

  async createBridge(spec: BridgeSpec): Promise<Link> {
    await this.#run([createBridgeRequest(spec)]);
    return this.#created(spec.name);
  }

  setLink(index: number, changes: LinkChanges): Promise<void> {
    return this.#run([setLinkRequest(index, changes)]);
  }

  deleteLink(index: number): Promise<void> {
    return this.#run([deleteLinkRequest(index)], GONE);
  }

  async listAddresses(index?: number): Promise<Address[]> {
    const out: Address[] = [];
    for (const m of await this.#sock.dump(dumpAddressesRequest())) {
      const a = decodeAddress(m.body);
      if (a && (index === undefined || a.index === index)) out.push(a);
    }
    return out;
  }

  addAddresses(addresses: readonly Address[]): Promise<void> {
    return this.#batch(addAddressEncoder, addresses);
  }

  deleteAddresses(addresses: readonly Address[]): Promise<void> {
    return this.#batch(deleteAddressEncoder, addresses, GONE);
  }

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

  replaceRoutes(routes: readonly Route[]): Promise<void> {
    return this.#batch(replaceRouteEncoder, routes);
  }

  deleteRoutes(routes: readonly Route[]): Promise<void> {
    return this.#batch(deleteRouteEncoder, routes, GONE);
  }

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

  replaceNeighbours(neighbours: readonly Neighbour[]): Promise<void> {
    return this.#batch(replaceNeighbourEncoder, neighbours);
  }

  deleteNeighbours(neighbours: readonly Neighbour[]): Promise<void> {
    return this.#batch(deleteNeighbourEncoder, neighbours, GONE);
  }

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

  appendFdb(entries: readonly FdbEntry[]): Promise<void> {
    return this.#batch(fdbEncoders.append, entries);
  }

  replaceFdb(entries: readonly FdbEntry[]): Promise<void> {
    return this.#batch(fdbEncoders.replace, entries);
  }

  deleteFdb(entries: readonly FdbEntry[]): Promise<void> {
    return this.#batch(fdbEncoders.delete, entries, GONE);
  }

  events(signal: AbortSignal): AsyncIterable<DatapathEvent> {
    if (this.#sock.closed) throw new Error("Cannot subscribe to events: the datapath is closed");
    const sock = NetlinkSocket.openWith(this.#libc, { netns: this.netns, groups: EVENT_GROUPS });
    this.#eventSockets.add(sock);
    const pollMs = this.#options.eventPollMs ?? 50;
    let wake: (() => void) | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stop = () => {
      sock.close();
      this.#eventSockets.delete(sock);
      clearTimeout(timer);
      wake?.();
    };
    if (signal.aborted) stop();
    else signal.addEventListener("abort", stop, { once: true });
    return (async function* () {
      try {
        while (!sock.closed) {
          const { messages, overrun } = sock.drain();
          if (overrun) yield { kind: "overrun" } as const;
          for (const m of messages) {
            let e: DatapathEvent | null = null;
            try {
              e = decodeEvent(m);
            } catch {
              // A malformed notification is skipped; the next resync covers it.
            }
            if (e) yield e;
          }
          if (messages.length === 0 && !overrun && !sock.closed) {
            await new Promise<void>((resolve) => {
              wake = resolve;
              timer = setTimeout(resolve, pollMs);
            });
            wake = undefined;
          }
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
 * Open the rtnetlink datapath.
 *
 * @param options Namespace (for tests), timeouts, event poll interval.
 * @returns The datapath; call `close()` when done.
 * @throws {NetlinkError} When the socket cannot be opened (EPERM without CAP_NET_ADMIN).
 * @throws {Error} When the namespace does not exist or the runtime has no FFI.
 * @example
 * ```ts
 * const dp = await openNetlinkDatapath({ netns: "wdp-a" });
 * console.log((await dp.listLinks()).map((l) => l.name));
 * dp.close();
 * ```
 */
export async function openNetlinkDatapath(
  options: NetlinkDatapathOptions = {},
): Promise<NetlinkDatapath> {
  return new NetlinkDatapathImpl(await loadLibc(), options);
}
