/**
 * The Backend seam: how a datapath (vxlan, host-gw, udp, alloc, …) plugs
 * into the agent. A backend registers (sets up its devices and acquires the
 * lease through the agent), then turns the set of peer leases into kernel
 * state with a pure desired-state function applied idempotently.
 *
 * @module
 */

import type { Logger } from "../core/log.ts";
import type { Registry as Metrics } from "../core/metrics.ts";
import type { Clock } from "../core/clock.ts";
import type { NetworkConfig } from "../lease/config.ts";
import type { Lease, LeaseAttrs } from "../lease/types.ts";
import type { ExternalInterface } from "../datapath/iface.ts";

export type { ExternalInterface };

/** What the agent hands a backend when it registers. */
export interface BackendContext {
  readonly config: NetworkConfig;
  readonly extIface: ExternalInterface;
  /**
   * Acquire this host's lease with the given attributes (the agent adds the
   * previous-subnet hint and retries); call once the attributes are known.
   */
  acquire(attrs: LeaseAttrs, signal?: AbortSignal): Promise<Lease>;
  /** This host's lease as the store last had it, if any (e.g. to keep a VtepMAC). */
  readonly previousLease?: Lease;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly clock: Clock;
  readonly signal: AbortSignal;
}

/**
 * One change of the peer set, as the agent's reducer derives it from lease
 * events: a peer lease appeared or changed (`added`, carrying the new
 * lease), or went away (`removed`).
 */
export type PeerChange =
  | { readonly type: "added"; readonly lease: Lease }
  | { readonly type: "removed"; readonly lease: Lease };

/**
 * Whether the kernel (or cloud) state for one peer is in place, as the
 * status page shows it: `applied` (written, no failure since), `failed`
 * (the last write failed; `detail` says why, a retry is scheduled),
 * `skipped` (the backend cannot serve this peer; `detail` says why).
 */
export interface PeerKernelState {
  readonly state: "applied" | "failed" | "skipped";
  readonly detail?: string;
}

/** A registered network: this host's lease plus the means to reach peers. */
export interface Network {
  /** This host's lease. */
  readonly lease: Lease;
  /** MTU for pods (written to subnet.env as FLANNEL_MTU). */
  readonly mtu: number;
  /**
   * Make the datapath match this set of peer leases (this host's own lease
   * is never among them). Idempotent: what is already right is not touched.
   * Peers of another backend type are skipped with a warning.
   */
  syncPeers(peers: readonly Lease[], signal?: AbortSignal): Promise<void>;
  /**
   * Apply only these changes to the peer set last given to `syncPeers` (or
   * built up by earlier calls): the per-event path, whose cost must not grow
   * with the number of peers. Optional: without it the agent calls
   * `syncPeers` with the whole set.
   */
  updatePeers?(changes: readonly PeerChange[], signal?: AbortSignal): Promise<void>;
  /**
   * Background duties until `signal` aborts: watching kernel events and
   * repairing what someone removed, packet loops. Resolves on abort; keeps
   * the datapath in place (a restart must not drop traffic).
   */
  run(signal: AbortSignal): Promise<void>;
  /** Why the datapath is not ready yet, or `null` when it is. */
  notReadyReason?(): string | null;
  /**
   * Per peer, keyed by `formatSubnetPair(lease)`, whether its state is in
   * place. Optional: backends that cannot tell leave it out.
   */
  peerStates?(): ReadonlyMap<string, PeerKernelState>;
}

/** A backend type. */
export interface Backend {
  /** Type name as in `Backend.Type`, e.g. `vxlan`. */
  readonly type: string;
  /** Set up devices, acquire the lease (via `ctx.acquire`), return the network. */
  register(ctx: BackendContext): Promise<Network>;
}
