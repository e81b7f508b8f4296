/**
 * The kube store's view of the peers: every node that runs flannel/weft as
 * a lease (a malformed node is skipped, warned about once per reason and
 * counted), listed, and followed through node changes: an event becomes
 * `added`/`removed` only when something peers see changed (not for the
 * kubelet's heartbeats), and a re-list after a 410 becomes a `snapshot`.
 *
 * A node whose flannel data turns unreadable keeps its last readable lease
 * (as flannel ignores a bad update) — in watch events and in re-lists
 * alike, so garbage on a live peer's node never tears down its routes.
 *
 * @module
 */

import { linkedController } from "../../core/abort.ts";
import { subnetKey } from "../../core/ip.ts";
import type { Counter, Registry as Metrics } from "../../core/metrics.ts";
import { encodeLeaseAttrs, type Lease, type LeaseEvent, type LeaseSnapshot } from "../types.ts";
import { followNodes, listNodes, type NodeChange } from "./list_watch.ts";
import { nodeToLease, parseKubeNode } from "./node.ts";
import type { Clock } from "../../core/clock.ts";
import type { Logger } from "../../core/log.ts";
import type { NetworkConfig } from "../config.ts";
import type { KubeApi } from "./api.ts";
import type { KubeAnnotationKeys } from "./node.ts";

/** What the pieces of the kube store (peers.ts, store.ts) share. */
export interface Shared {
  readonly api: KubeApi;
  readonly log: Logger;
  readonly clock: Clock;
  readonly random: () => number;
  readonly keys: KubeAnnotationKeys;
  readonly netConfigPath: string;
  readonly pageSize: number;
  /** Aborts when the store is closed. */
  readonly closed: AbortSignal;
  /** The network config last read: nodes are judged against it. */
  config?: NetworkConfig;
  /** The server-side timeout of one watch request, seconds. */
  watchTimeoutSeconds(): number;
}

const fingerprint = (l: Lease) => subnetKey(l.subnet, l.ipv6Subnet) + encodeLeaseAttrs(l.attrs);

/**
 * A peer's lease, and the text that changes when anything peers see
 * changes — made when first compared (a watch event for this node), not for
 * every node of a list.
 */
class Known {
  readonly lease: Lease;
  #fingerprint?: string;

  constructor(lease: Lease) {
    this.lease = lease;
  }

  get fingerprint(): string {
    return this.#fingerprint ??= fingerprint(this.lease);
  }
}

/** A node object's name, when it has a readable one. */
function nameOf(obj: unknown): string | undefined {
  const name = (obj as { metadata?: { name?: unknown } } | null)?.metadata?.name;
  return typeof name === "string" && name !== "" ? name : undefined;
}

const sameSubnet = (a: Lease, b: Lease) =>
  subnetKey(a.subnet, a.ipv6Subnet) === subnetKey(b.subnet, b.ipv6Subnet);

/** Nodes as leases; a malformed node is warned about once per reason and counted. */
export class NodeDecoder {
  readonly #shared: Shared;
  readonly #malformed?: Counter;
  readonly #warned = new Map<string, string>();

  constructor(shared: Shared, metrics?: Metrics) {
    this.#shared = shared;
    this.#malformed = metrics?.counter(
      "weft_store_malformed_records_total",
      "Lease records skipped because they could not be decoded",
    );
  }

  /**
   * A node object (from a list or an event) as a lease: `lease` null when
   * the node is not managed by flannel/weft, `null` altogether when it is
   * malformed.
   */
  decode(obj: unknown): { name: string; lease: Lease | null } | null {
    const node = parseKubeNode(obj);
    if (typeof node === "string") {
      const name = String((obj as { metadata?: { name?: unknown } })?.metadata?.name ?? "?");
      this.#skip(name, node);
      return null;
    }
    const name = node.metadata.name;
    const { keys, config, netConfigPath } = this.#shared;
    const lease = nodeToLease(node, keys, config, netConfigPath);
    if (typeof lease === "string") {
      this.#skip(name, lease);
      return null;
    }
    this.#warned.delete(name);
    return { name, lease };
  }

  #skip(name: string, reason: string): void {
    if (this.#warned.get(name) === reason) return;
    this.#warned.set(name, reason);
    this.#malformed?.inc({ store: "kube" });
    this.#shared.log.warn("skipping node with malformed flannel data", { node: name, reason });
  }
}

/** The peers: a list, and watches that turn node changes into lease events. */
export class PeerView {
  readonly #shared: Shared;
  readonly #decoder: NodeDecoder;
  /** The last list, so a watch from its revision starts knowing every lease. */
  #lastList?: { revision: string; known: Map<string, Known> };
  /**
   * The last readable lease of each node (by name) that exists: stands in
   * for the node while its data is unreadable, also in a re-list.
   */
  readonly #lastGood = new Map<string, Known>();

  constructor(shared: Shared, decoder: NodeDecoder) {
    this.#shared = shared;
    this.#decoder = decoder;
  }

  async list(signal?: AbortSignal): Promise<LeaseSnapshot> {
    const known = new Map<string, Known>();
    const listed = new Set<string>();
    const revision = await listNodes(this.#shared.api, {
      onItem: (item) => this.#remember(known, item, listed),
      onRestart: () => (known.clear(), listed.clear()),
      signal,
      pageSize: this.#shared.pageSize,
      logger: this.#shared.log,
    });
    this.#forgetAllBut(listed);
    this.#lastList = { revision, known };
    return { leases: [...known.values()].map((k) => k.lease), revision };
  }

  /** Lease events after `revision`: resumed across failures, a snapshot after a 410. */
  async *watch(revision: string, signal: AbortSignal): AsyncGenerator<LeaseEvent[]> {
    const { log } = this.#shared;
    const life = linkedController({ parents: [signal, this.#shared.closed] });
    const known = new Map<string, Known>(
      this.#lastList?.revision === revision ? this.#lastList.known : undefined,
    );
    try {
      const changes = followNodes(this.#shared.api, {
        from: revision,
        bookmarks: true,
        timeoutSeconds: () => this.#shared.watchTimeoutSeconds(),
        pageSize: this.#shared.pageSize,
        signal: life.signal,
        clock: this.#shared.clock,
        random: this.#shared.random,
        logger: log,
        onRetry: (error, delayMs) =>
          log.warn("node watch failed, reconnecting", {
            error: error as Error,
            retryInMs: delayMs,
          }),
      });
      for await (const batch of changes) {
        const out: LeaseEvent[] = [];
        for (const change of batch) this.#apply(known, change, out);
        if (out.length) yield out;
      }
    } finally {
      life.dispose();
    }
  }

  /** One listed node into `known`: its lease, or its last readable one while it is malformed. */
  #remember(known: Map<string, Known>, item: unknown, listed: Set<string>): void {
    const d = this.#decoder.decode(item);
    if (!d) {
      const name = nameOf(item);
      const kept = name === undefined ? undefined : this.#lastGood.get(name);
      if (name !== undefined) listed.add(name);
      if (kept) known.set(name!, kept);
      return;
    }
    listed.add(d.name);
    if (d.lease) this.#keep(known, d.name, new Known(d.lease));
    else this.#lastGood.delete(d.name);
  }

  #keep(known: Map<string, Known>, name: string, k: Known): void {
    known.set(name, k);
    this.#lastGood.set(name, k);
  }

  /** After a full list: forget the nodes that are gone. */
  #forgetAllBut(listed: ReadonlySet<string>): void {
    for (const name of this.#lastGood.keys()) if (!listed.has(name)) this.#lastGood.delete(name);
  }

  /** One change → lease events, keeping `known` in step. */
  #apply(known: Map<string, Known>, change: NodeChange, out: LeaseEvent[]): void {
    if (change.type === "LISTED") {
      known.clear();
      const listed = new Set<string>();
      for (const item of change.items) this.#remember(known, item, listed);
      this.#forgetAllBut(listed);
      out.push({ type: "snapshot", leases: [...known.values()].map((k) => k.lease) });
      return;
    }
    const d = this.#decoder.decode(change.object);
    if (!d) {
      // Malformed: a deleted node is gone all the same; a bad update keeps
      // the last good lease, as flannel ignores it.
      const name = nameOf(change.object);
      if (name === undefined || change.type !== "DELETED") return;
      const prev = known.get(name);
      known.delete(name);
      this.#lastGood.delete(name);
      if (prev) out.push({ type: "removed", lease: prev.lease });
      return;
    }
    const prev = known.get(d.name);
    if (change.type === "DELETED" || !d.lease) {
      const gone = prev?.lease ?? (change.type === "DELETED" ? d.lease : null);
      known.delete(d.name);
      this.#lastGood.delete(d.name);
      if (gone) out.push({ type: "removed", lease: gone });
      return;
    }
    const next = new Known(d.lease);
    if (prev?.fingerprint === next.fingerprint) return; // a heartbeat or an unrelated field
    if (prev && !sameSubnet(prev.lease, d.lease)) out.push({ type: "removed", lease: prev.lease });
    this.#keep(known, d.name, next);
    out.push({ type: "added", lease: d.lease });
  }
}
