/**
 * Writing the peer set into the registered network, one write at a time.
 *
 * - A network with `updatePeers` gets the reducer's changes; changes that
 *   arrive while a write is in flight are merged per peer key (the newest
 *   wins) and written together next.
 * - The whole set goes through `syncPeers` when the network is new, after a
 *   snapshot (re-list, compaction), after a failed incremental update, and
 *   always for a network without `updatePeers`.
 * - A failed whole-set write is retried after {@link PEER_SYNC_RETRY_MS}
 *   (or sooner, when new events arrive); the same error is logged once.
 *
 * @module
 */

import type { Clock } from "../core/clock.ts";
import type { Logger } from "../core/log.ts";
import { sleepQuietly } from "../core/abort.ts";
import type { Lease } from "../lease/types.ts";
import type { Network, PeerChange } from "../backends/types.ts";
import type { AgentMetrics } from "./metrics.ts";
import { mergePeerChanges } from "./peers.ts";

/** Pause before retrying a failed whole-set write, ms. */
export const PEER_SYNC_RETRY_MS = 1000;

/** Options of {@link PeerSync}. */
export interface PeerSyncOptions {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: AgentMetrics;
  /** The whole peer set as it is now (read when a whole-set write starts). */
  readonly peers: () => readonly Lease[];
}

/**
 * The coalescing writer of peers into a network.
 *
 * @example
 * ```ts
 * const sync = new PeerSync({ clock, logger, metrics, peers: () => [...peerSet.values()] });
 * sync.attach(network, registrationSignal); // first write: the whole set
 * sync.requestChanges(changes);            // then only what changed
 * ```
 */
export class PeerSync {
  readonly #options: PeerSyncOptions;
  #network: Network | undefined;
  #signal: AbortSignal | undefined;
  #wholeSet = false;
  #pending = new Map<string, PeerChange>();
  #writing: Promise<void> | undefined;
  #retrying = false;
  #lastError = "";

  constructor(options: PeerSyncOptions) {
    this.#options = options;
  }

  /**
   * Write into `network` from now on; its first write is the whole set. It
   * starts with the next request (the peer follower's list), so a network
   * is never handed a peer set that was not read yet. Writes stop when
   * `signal` aborts (the network's registration ended).
   *
   * @param network The registered network.
   * @param signal Ends writes into it.
   */
  attach(network: Network, signal: AbortSignal): void {
    this.#network = network;
    this.#signal = signal;
    this.#wholeSet = true;
    this.#pending.clear();
  }

  /**
   * Stop writing into the current network and wait for a write in flight.
   *
   * @returns When no write into it is running any more.
   */
  async detach(): Promise<void> {
    this.#network = undefined;
    this.#signal = undefined;
    await this.#writing;
  }

  /** The whole set changed (a snapshot): write it with `syncPeers`. */
  requestWholeSet(): void {
    this.#wholeSet = true;
    this.#pending.clear();
    this.#kick();
  }

  /**
   * These peers changed: write them with `updatePeers` (merged with changes
   * still waiting), or the whole set when the network cannot take changes.
   *
   * @param changes From the reducer.
   */
  requestChanges(changes: readonly PeerChange[]): void {
    if (changes.length === 0) return;
    if (!this.#wholeSet) mergePeerChanges(this.#pending, changes);
    this.#kick();
  }

  #kick(): void {
    if (this.#writing) return;
    this.#writing = this.#drain()
      .catch((e) => this.#options.logger.error("peer writer stopped", { error: e as Error }))
      .finally(() => (this.#writing = undefined));
  }

  async #drain(): Promise<void> {
    const { logger, metrics } = this.#options;
    while (this.#network && this.#signal && !this.#signal.aborted) {
      const network = this.#network;
      const signal = this.#signal;
      const wholeSet = this.#wholeSet || (this.#pending.size > 0 && !network.updatePeers);
      if (!wholeSet && this.#pending.size === 0) return;
      const changes = [...this.#pending.values()];
      this.#wholeSet = false;
      this.#pending = new Map();
      const started = performance.now();
      try {
        if (wholeSet) await network.syncPeers(this.#options.peers(), signal);
        else await network.updatePeers!(changes, signal);
        this.#lastError = "";
      } catch (e) {
        if (signal.aborted) continue;
        metrics.reconcileErrors.inc();
        const message = (e as Error).message;
        if (!wholeSet) {
          logger.warn("incremental peer update failed; writing the whole peer set", {
            error: message,
            changes: changes.length,
          });
          this.#wholeSet = true;
          continue;
        }
        if (message !== this.#lastError) {
          logger.error("peer sync failed, retrying in 1 s", { error: message });
        }
        this.#lastError = message;
        this.#wholeSet = true;
        this.#pending.clear();
        this.#retryLater(signal);
        return;
      } finally {
        metrics.reconcileDuration.observe((performance.now() - started) / 1000);
      }
    }
  }

  #retryLater(signal: AbortSignal): void {
    if (this.#retrying) return;
    this.#retrying = true;
    sleepQuietly(this.#options.clock, PEER_SYNC_RETRY_MS, signal).then((slept) => {
      this.#retrying = false;
      if (slept) this.#kick();
    }, () => (this.#retrying = false));
  }
}
