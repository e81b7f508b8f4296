/**
 * Keeping this host's lease: renew it `renewMarginMs` before it expires (at
 * the latest half-way through what is left), retry a failed renewal with
 * back-off — never a hot loop, even past the expiry; within a second while
 * the store does not answer at all (`retryDelay`) — and stop when the
 * lease is lost: the store refused the renewal as no longer ours
 * (`LeaseConflictError`), or the peer follower saw it removed or taken.
 *
 * @module
 */

import { type Clock, retryDelay } from "../core/clock.ts";
import { linkedController, sleepQuietly, whenAborted } from "../core/abort.ts";
import { LeaseConflictError } from "../core/errors.ts";
import { formatSubnetPair } from "../core/ip.ts";
import type { Logger } from "../core/log.ts";
import type { Lease, LeaseAttrs, LeaseStore } from "../lease/types.ts";
import { type AgentMetrics, expirySeconds } from "./metrics.ts";

/** Options of {@link keepLease}. */
export interface KeepLeaseOptions {
  readonly store: LeaseStore;
  readonly clock: Clock;
  readonly random: () => number;
  readonly logger: Logger;
  readonly metrics: AgentMetrics;
  /** Renew this long before expiry. */
  readonly renewMarginMs: number;
  /** Longest pause between failed renewals. */
  readonly maxBackoffMs: number;
}

/** The lease to keep, and how the keeper reports back. */
export interface KeptLease {
  /** The lease as registered. */
  readonly lease: Lease;
  /** The attributes to publish with each renewal. */
  readonly attrs: LeaseAttrs;
  /** Aborts, with the reason as a string, when the peer follower sees the lease gone. */
  readonly lost: AbortSignal;
  /** Called with each renewed lease. */
  readonly onRenewed: (lease: Lease) => void;
}

/**
 * Renew a lease until it is lost or `signal` aborts.
 *
 * @param options Store, clock, margins, logger, metrics.
 * @param kept The lease, its attributes, the lost signal and the renewal callback.
 * @param signal Ends the keeping.
 * @returns Why the lease was lost, or null when `signal` aborted.
 * @example
 * ```ts
 * const why = await keepLease(options, { lease, attrs, lost, onRenewed: (l) => (lease = l) }, signal);
 * if (why !== null) reacquire(why);
 * ```
 */
export async function keepLease(
  options: KeepLeaseOptions,
  kept: KeptLease,
  signal: AbortSignal,
): Promise<string | null> {
  const { clock, logger, metrics } = options;
  const { attrs, lost, onRenewed } = kept;
  let current = kept.lease;
  let failures = 0;
  /** Why the last renewal failed (it sets the pause before the next). */
  let lastError: unknown;
  for (;;) {
    if (signal.aborted) return null;
    if (lost.aborted) return String(lost.reason);
    const wake = linkedController({ parents: [signal, lost] });
    try {
      if (current.expiration === null) {
        await whenAborted(wake.signal);
      } else {
        const left = current.expiration - clock.now();
        const margin = Math.min(options.renewMarginMs, left / 2);
        const wait = failures
          ? retryDelay(failures, lastError, { max: options.maxBackoffMs, random: options.random })
          : left - margin;
        await sleepQuietly(clock, Math.max(0, wait), wake.signal);
      }
    } finally {
      wake.dispose();
    }
    if (signal.aborted) return null;
    if (lost.aborted) return String(lost.reason);
    try {
      current = await options.store.renew({ ...current, attrs }, signal);
      metrics.renewals.inc({ result: "ok" });
      metrics.leaseExpiry.set(expirySeconds(current.expiration));
      failures = 0;
      onRenewed(current);
      logger.info("lease renewed", {
        subnet: formatSubnetPair(current),
        expires: current.expiration === null ? "never" : new Date(current.expiration).toISOString(),
      });
    } catch (e) {
      if (signal.aborted) return null;
      metrics.renewals.inc({ result: "error" });
      // the store says the lease is no longer ours (e.g. the node's podCIDR changed)
      if (e instanceof LeaseConflictError) return e.message;
      failures++;
      lastError = e;
      logger.error("lease renewal failed, retrying", { error: e as Error, attempt: failures });
    }
  }
}
