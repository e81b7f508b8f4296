/**
 * The LeaseStore seam: what every lease store (file, etcd, Kubernetes)
 * provides to the agent, and the lease record they all share.
 *
 * @module
 */

import { formatIPv6, type IPv4Net, type IPv6Net, parseIPv6 } from "../core/ip.ts";
import type { NetworkConfig } from "./config.ts";

/**
 * What a host publishes about itself with its lease. Serialised to etcd
 * exactly as flannel's `LeaseAttrs` (see {@link encodeLeaseAttrs}).
 */
export interface LeaseAttrs {
  /** The host's public (underlay) IPv4 address, dotted quad. */
  readonly publicIP: string;
  /** The host's public IPv6 address, or null. */
  readonly publicIPv6?: string | null;
  /** Backend type, e.g. `vxlan`; flannel's udp backend leaves it out. */
  readonly backendType?: string;
  /** Backend-specific data, e.g. `{ VNI: 1, VtepMAC: "…" }`; key order is kept. */
  readonly backendData?: unknown;
  /** Backend-specific data for the IPv6 side. */
  readonly backendV6Data?: unknown;
}

/** A host's subnet lease. */
export interface Lease {
  readonly subnet: IPv4Net;
  readonly ipv6Subnet?: IPv6Net;
  readonly attrs: LeaseAttrs;
  /**
   * When the lease expires, in ms since the epoch; `null` for a reservation
   * (an etcd key without a TTL), which never expires.
   */
  readonly expiration: number | null;
}

/** A consistent view of all leases at one store revision. */
export interface LeaseSnapshot {
  readonly leases: Lease[];
  /** Opaque store position; pass it to {@link LeaseStore.watch}. */
  readonly revision: string;
}

/** A change seen by a watch. */
export type LeaseEvent =
  /** A lease was created or its attributes changed. */
  | { readonly type: "added"; readonly lease: Lease }
  /** A lease was deleted or expired. */
  | { readonly type: "removed"; readonly lease: Lease }
  /**
   * The store could not deliver the changes in between (history compacted,
   * watch expired): this is the complete current set; anything not in it is gone.
   */
  | { readonly type: "snapshot"; readonly leases: Lease[] };

/** What the agent asks for when it acquires its lease. */
export interface AcquireRequest {
  /** What to publish. `publicIP` identifies this host: its existing lease is reused. */
  readonly attrs: LeaseAttrs;
  /** The subnet this host had before (from subnet.env), tried before a random one. */
  readonly previousSubnet?: IPv4Net;
  /** Previous IPv6 subnet, with `previousSubnet`. */
  readonly previousIPv6Subnet?: IPv6Net;
}

/**
 * The shared store of subnet leases. Every implementation passes the contract
 * suite in `testing/lease_contract.ts`.
 *
 * Guarantees:
 * - `acquire` never hands the same subnet to two hosts.
 * - `watch(rev)` yields every change after the snapshot `rev` came from, in
 *   order, or a `snapshot` event when it cannot; it ends only when the signal
 *   aborts, reconnecting on its own after store failures.
 * - Malformed records are skipped with a warning and counted, never thrown.
 */
export interface LeaseStore {
  /** Short name for logs and metrics: `file`, `etcd`, `kube`. */
  readonly name: string;
  /** Read and validate the network configuration. */
  getNetworkConfig(signal?: AbortSignal): Promise<NetworkConfig>;
  /** Take a lease for this host (reuse, previous subnet, or a new one). */
  acquire(config: NetworkConfig, request: AcquireRequest, signal?: AbortSignal): Promise<Lease>;
  /** Extend a lease (and republish its attributes); returns the new expiry. */
  renew(lease: Lease, signal?: AbortSignal): Promise<Lease>;
  /** Give a lease back. */
  release(lease: Lease, signal?: AbortSignal): Promise<void>;
  /**
   * All current leases and the revision they were read at. With
   * `exactExpiry: false` a store may estimate other hosts' expirations
   * (etcd: one TTL request per etcd lease is skipped); the agent lists peers
   * that way, since only its own lease's expiry drives anything.
   */
  list(signal?: AbortSignal, options?: { exactExpiry?: boolean }): Promise<LeaseSnapshot>;
  /** Changes after `revision`, batched as the store delivers them. */
  watch(revision: string, signal: AbortSignal): AsyncIterable<LeaseEvent[]>;
  /** Release connections. */
  close(): Promise<void>;
  /**
   * Why the store cannot give this host its lease yet (e.g. the Kubernetes
   * node has no podCIDR), for `/readyz`; `null` when nothing is wrong.
   */
  status?(): string | null;
}

/**
 * Encode lease attributes byte-for-byte as flannel's Go `json.Marshal` of
 * `LeaseAttrs` does: `PublicIP`, `PublicIPv6` (always, null when unset),
 * then `BackendType`, `BackendData`, `BackendV6Data` when set.
 *
 * @example
 * ```ts
 * encodeLeaseAttrs({ publicIP: "192.168.64.3", backendType: "vxlan",
 *   backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" } });
 * // {"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}
 * ```
 */
export function encodeLeaseAttrs(attrs: LeaseAttrs): string {
  const out: Record<string, unknown> = {
    PublicIP: attrs.publicIP,
    PublicIPv6: attrs.publicIPv6 ? canonicalIPv6(attrs.publicIPv6) : null,
  };
  if (attrs.backendType) out.BackendType = attrs.backendType;
  if (attrs.backendData !== undefined && attrs.backendData !== null) {
    out.BackendData = attrs.backendData;
  }
  if (attrs.backendV6Data !== undefined && attrs.backendV6Data !== null) {
    out.BackendV6Data = attrs.backendV6Data;
  }
  return goJsonStringify(out);
}

/** Go writes `PublicIPv6` through `net.IP.String`: `FD00:0::1` is stored as `fd00::1`. */
function canonicalIPv6(text: string): string {
  try {
    return formatIPv6(parseIPv6(text));
  } catch {
    return text;
  }
}

/**
 * `JSON.stringify` with Go's escaping of `<`, `>`, `&`, U+2028 and U+2029,
 * so the bytes match what flannel writes.
 */
export function goJsonStringify(value: unknown): string {
  return JSON.stringify(value).replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
