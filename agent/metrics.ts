/**
 * The agent's metrics, named once. The names are part of weft's interface
 * (dashboards and alerts use them): never rename one.
 *
 * @module
 */

import { type Counter, DURATION_BUCKETS, type Gauge, type Histogram } from "../core/metrics.ts";
import type { Registry } from "../core/metrics.ts";

/** The agent's instruments. */
export interface AgentMetrics {
  /** `weft_lease_expiration_timestamp_seconds`: when the own lease expires (0 = never). */
  readonly leaseExpiry: Gauge;
  /** `weft_peers`: peer leases known. */
  readonly peers: Gauge;
  /** `weft_ready`: 1 when the lease, datapath, rules and subnet.env are in place. */
  readonly ready: Gauge;
  /** `weft_lease_events_total{type}`: lease watch events handled. */
  readonly leaseEvents: Counter;
  /** `weft_lease_renewals_total{result}`: renewals, `ok` or `error`. */
  readonly renewals: Counter;
  /** `weft_lease_reacquisitions_total`: times the own lease was lost and acquired again. */
  readonly reacquisitions: Counter;
  /** `weft_reconcile_errors_total`: peer writes into the datapath that failed (retried). */
  readonly reconcileErrors: Counter;
  /** `weft_reconcile_duration_seconds`: time of one peer write into the datapath. */
  readonly reconcileDuration: Histogram;
}

/**
 * Register (or look up) the agent's instruments in a registry.
 *
 * @param registry Where they live.
 * @returns The instruments; `ready` starts at 0.
 * @example
 * ```ts
 * const metrics = agentMetrics(new Registry());
 * metrics.renewals.inc({ result: "ok" });
 * ```
 */
export function agentMetrics(registry: Registry): AgentMetrics {
  const metrics: AgentMetrics = {
    leaseExpiry: registry.gauge(
      "weft_lease_expiration_timestamp_seconds",
      "When this host's lease expires (0 = never: a reservation or a Kubernetes podCIDR)",
    ),
    peers: registry.gauge("weft_peers", "Peer leases known"),
    ready: registry.gauge(
      "weft_ready",
      "1 when the lease, datapath, rules and subnet.env are in place",
    ),
    leaseEvents: registry.counter("weft_lease_events_total", "Lease watch events handled, by type"),
    renewals: registry.counter("weft_lease_renewals_total", "Lease renewals, by result"),
    reacquisitions: registry.counter(
      "weft_lease_reacquisitions_total",
      "Times the own lease was lost (removed, expired, taken) and acquired again",
    ),
    reconcileErrors: registry.counter(
      "weft_reconcile_errors_total",
      "Peer syncs that failed (retried)",
    ),
    reconcileDuration: registry.histogram(
      "weft_reconcile_duration_seconds",
      "Time to bring the datapath in line with the peer set",
      DURATION_BUCKETS,
    ),
  };
  metrics.ready.set(0);
  return metrics;
}

/**
 * The expiry gauge's value for a lease: seconds since the epoch, 0 for never.
 *
 * @param expiration The lease's expiry in ms, or null.
 * @returns Seconds, or 0.
 */
export function expirySeconds(expiration: number | null): number {
  return expiration === null ? 0 : expiration / 1000;
}
