/**
 * The agent's public types: what it is given ({@link AgentDeps}), what it
 * reports ({@link AgentStatus}) and what it is ({@link Agent}).
 *
 * @module
 */

import type { Logger } from "../core/log.ts";
import type { Registry as Metrics } from "../core/metrics.ts";
import type { Clock } from "../core/clock.ts";
import type { NetworkConfig } from "../lease/config.ts";
import type { Lease, LeaseStore } from "../lease/types.ts";
import type { Backend, PeerKernelState } from "../backends/types.ts";
import type { ExternalInterface } from "../datapath/iface.ts";
import type { AgentStateName } from "./state.ts";

/** Host-level rules the agent keeps in place (masquerade, forward). */
export interface HostRules {
  /** Install or replace the rules for this lease (atomically; stale ones removed). */
  apply(config: NetworkConfig, lease: Lease): Promise<void>;
  /** Keep them in place until `signal` aborts (periodic re-check). */
  run?(config: NetworkConfig, lease: Lease, signal: AbortSignal): Promise<void>;
}

/** Everything the agent needs, injected. */
export interface AgentDeps {
  readonly store: LeaseStore;
  /** Backends by type name; the config's `Backend.Type` picks one. */
  readonly backends: Readonly<Record<string, () => Backend | Promise<Backend>>>;
  /**
   * The external interface, when it is known before the config (tests, a
   * fixed setup). Give this or {@link AgentDeps.pickInterface}.
   */
  readonly extIface?: ExternalInterface;
  /**
   * Pick the external interface once the network config is known, so the
   * families it enables decide which addresses are needed (an IPv6-only
   * host has no IPv4 address). Called after each (re-)read of the config;
   * a failure is retried with back-off after reading the config again.
   */
  readonly pickInterface?: (
    config: NetworkConfig,
  ) => ExternalInterface | Promise<ExternalInterface>;
  /** Where subnet.env goes (flannel: /run/flannel/subnet.env). */
  readonly subnetFile: string;
  /** `--ip-masq`: written to subnet.env as FLANNEL_IPMASQ. */
  readonly ipMasq: boolean;
  /** Renew this long before expiry (flannel: 60 min). */
  readonly renewMarginMs?: number;
  /** Masquerade/forward rules; none when omitted. */
  readonly rules?: HostRules;
  /**
   * One-time host preparation before registering (e.g. enable ip_forward,
   * and IPv6 forwarding when the config enables IPv6), once the external
   * interface is picked.
   */
  readonly prepare?: (config: NetworkConfig, extIface: ExternalInterface) => Promise<void>;
  /**
   * This host's lease as the store knows it, when the store has a better
   * answer than "the lease with my public IP" (Kubernetes: the node's
   * annotations). `signal` aborts when the agent stops.
   */
  readonly previousLease?: (signal: AbortSignal) => Promise<Lease | undefined>;
  /**
   * Called each time the agent becomes ready (Kubernetes: set the node
   * condition); retried until it succeeds or `signal` aborts (the agent stops
   * or registers again).
   */
  readonly onReady?: (signal: AbortSignal) => Promise<void>;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly clock?: Clock;
  readonly random?: () => number;
  /** Longest pause between retries, ms (default 10 s). */
  readonly maxBackoffMs?: number;
}

/** What the agent is doing, for /readyz and /v1/*. */
export interface AgentStatus {
  readonly ready: boolean;
  /** The state machine's state (see agent/state.ts). */
  readonly state: AgentStateName;
  /** Why it is not ready, or null. */
  readonly reason: string | null;
  readonly config?: NetworkConfig;
  readonly lease?: Lease;
  readonly peers: readonly Lease[];
  /** When each peer (keyed by `formatSubnetPair(lease)`) was added or last changed, ms since the epoch. */
  readonly peerChangedAt?: ReadonlyMap<string, number>;
  /**
   * Whether each peer's kernel state is in place (keyed as `peerChangedAt`),
   * when the backend tells (see `Network.peerStates`).
   */
  readonly peerStates?: ReadonlyMap<string, PeerKernelState>;
  readonly backendType?: string;
  /** The external interface, once picked. */
  readonly extIface?: ExternalInterface;
  readonly storeName: string;
}

/** A running agent. */
export interface Agent {
  /** Run until `signal` aborts. Resolves after a clean stop (lease and datapath kept). */
  run(signal: AbortSignal): Promise<void>;
  /** Current state. */
  status(): AgentStatus;
}
