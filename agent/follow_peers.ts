/**
 * Following the peers: list all leases, then watch from that revision; each
 * batch goes through the pure reducer ({@link reducePeers}), whose changes go
 * to the {@link PeerSync} writer and whose "own lease lost" goes to the
 * agent. A broken watch is re-listed after a back-off; a re-list on request
 * (the own lease changed) starts at once.
 *
 * @module
 */

import { type Clock, retryDelay } from "../core/clock.ts";
import { type LinkedController, linkedController, sleepQuietly } from "../core/abort.ts";
import { formatSubnetPair } from "../core/ip.ts";
import type { Logger } from "../core/log.ts";
import { leaseKey } from "../lease/kv_store.ts";
import type { Lease, LeaseEvent, LeaseSnapshot, LeaseStore } from "../lease/types.ts";
import type { AgentMetrics } from "./metrics.ts";
import type { PeerSync } from "./peer_sync.ts";
import { type OwnLease, PeerSet, type PeerUpdate, reducePeers } from "./peers.ts";

/** Options of {@link PeerFollower}. */
export interface PeerFollowerOptions {
  readonly store: LeaseStore;
  readonly clock: Clock;
  readonly random: () => number;
  readonly logger: Logger;
  readonly metrics: AgentMetrics;
  /** Longest pause before re-listing after a failure. */
  readonly maxBackoffMs: number;
  /** This host's lease as it is now. */
  readonly own: () => OwnLease | undefined;
  /** Called when a batch shows the own lease gone, with why. */
  readonly onLost: (why: string) => void;
  /** Where peer changes are written. */
  readonly sync: PeerSync;
}

/**
 * The watch loop over all leases.
 *
 * @example
 * ```ts
 * const follower = new PeerFollower({ store, clock, random, logger, metrics, maxBackoffMs,
 *   own: () => ({ subnet, attrs: { publicIP } }), onLost: (why) => lost.abort(why), sync });
 * await follower.run(signal);
 * ```
 */
export class PeerFollower {
  readonly #options: PeerFollowerOptions;
  #peers: PeerSet = PeerSet.EMPTY;
  /** When each peer (by `formatSubnetPair`) was added or last changed, ms since the epoch. */
  readonly #changedAt = new Map<string, number>();
  #round: LinkedController | undefined;

  constructor(options: PeerFollowerOptions) {
    this.#options = options;
  }

  /** The peer set as last reduced. */
  get peers(): PeerSet {
    return this.#peers;
  }

  /** When each peer (keyed by `formatSubnetPair(lease)`) was added or last changed. */
  get changedAt(): ReadonlyMap<string, number> {
    return this.#changedAt;
  }

  /**
   * Start over with a fresh list: the own lease changed, so a lease left
   * out as "own" may be a peer now, and the new network needs the whole set.
   */
  relist(): void {
    this.#round?.abort();
  }

  /**
   * List and watch until `signal` aborts.
   *
   * @param signal Ends the loop.
   * @param listed A listing taken moments ago to start from (watching from
   *   its revision) instead of listing; later rounds list afresh.
   * @returns When `signal` aborts.
   */
  async run(signal: AbortSignal, listed?: LeaseSnapshot): Promise<void> {
    const { clock, logger, maxBackoffMs, random } = this.#options;
    let attempt = 0;
    let first = listed;
    while (!signal.aborted) {
      const round = this.#round = linkedController({ parents: [signal] });
      const given = first;
      first = undefined;
      try {
        await this.#listAndWatch(round.signal, () => (attempt = 0), given);
      } catch (e) {
        if (!round.signal.aborted) {
          const delay = retryDelay(attempt++, e, { max: maxBackoffMs, random });
          logger.warn("lease watch interrupted, re-listing", {
            error: e as Error,
            retryInMs: delay,
          });
          await sleepQuietly(clock, delay, round.signal);
        }
      } finally {
        round.dispose();
      }
    }
  }

  async #listAndWatch(
    signal: AbortSignal,
    listed: () => void,
    given?: LeaseSnapshot,
  ): Promise<void> {
    const { store, logger, metrics } = this.#options;
    // peers' exact expiry is not needed (only the own lease's drives renewal)
    const snapshot = given ?? await store.list(signal, { exactExpiry: false });
    this.#apply([{ type: "snapshot", leases: snapshot.leases }]);
    logger.info("peers listed", { peers: this.#peers.size, revision: snapshot.revision });
    listed();
    for await (const batch of store.watch(snapshot.revision, signal)) {
      for (const event of batch) metrics.leaseEvents.inc({ type: event.type });
      this.#apply(batch);
    }
    if (!signal.aborted) {
      throw new Error(`the ${store.name} store's lease watch ended without being stopped`);
    }
  }

  #apply(events: readonly LeaseEvent[]): void {
    const { logger, metrics, sync } = this.#options;
    const before = this.#peers;
    const update = reducePeers(before, this.#options.own(), events);
    this.#peers = update.peers;
    metrics.peers.set(update.peers.size);
    this.#noteChanges(before, update);
    if (!update.snapshot) logChanges(logger, before, update);
    if (update.lost !== null) this.#options.onLost(update.lost);
    if (update.snapshot) sync.requestWholeSet();
    else sync.requestChanges(update.changes);
  }

  #noteChanges(before: PeerSet, update: PeerUpdate): void {
    const now = this.#options.clock.now();
    if (update.snapshot) {
      // keep the times of peers listed again unchanged; new or changed ones are new
      const seen = new Set<string>();
      for (const lease of update.peers.values()) {
        const key = formatSubnetPair(lease);
        seen.add(key);
        if (!this.#changedAt.has(key) || !sameLease(before.get(leaseKey(lease)), lease)) {
          this.#changedAt.set(key, now);
        }
      }
      for (const key of [...this.#changedAt.keys()]) {
        if (!seen.has(key)) this.#changedAt.delete(key);
      }
      return;
    }
    for (const change of update.changes) {
      const key = formatSubnetPair(change.lease);
      if (change.type === "removed") this.#changedAt.delete(key);
      else this.#changedAt.set(key, now);
    }
  }
}

/** Whether a lease says the same as before (attributes and subnets). */
function sameLease(a: Lease | undefined, b: Lease): boolean {
  return a !== undefined && formatSubnetPair(a) === formatSubnetPair(b) &&
    JSON.stringify(a.attrs) === JSON.stringify(b.attrs);
}

function logChanges(logger: Logger, before: PeerSet, update: PeerUpdate): void {
  for (const change of update.changes) {
    const subnet = formatSubnetPair(change.lease);
    if (change.type === "removed") {
      logger.info("peer removed", { subnet });
    } else {
      logger.info(before.has(leaseKey(change.lease)) ? "peer updated" : "peer added", {
        subnet,
        publicIP: change.lease.attrs.publicIP,
      });
    }
  }
}
