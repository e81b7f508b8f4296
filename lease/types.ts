/**
 * The LeaseStore seam: what every lease store (file, etcd, Kubernetes)
 * provides to the agent, and the lease record they all share.
 *
 * @module
 */

import { formatIPv6, type IPv4Net, type IPv6Net, parseIPv6, type SubnetPair } from "../core/ip.ts";
import type { NetworkConfig } from "./config.ts";

/**
 * What a host publishes about itself with its lease. Serialised to etcd
 * exactly as flannel's `LeaseAttrs` (see {@link encodeLeaseAttrs}).
 */
export interface LeaseAttrs {
  /**
   * The host's public (underlay) IPv4 address, dotted quad; `""` when the
   * host publishes none (an IPv6-only network). Stored as flannel stores
   * its zero address: `"0.0.0.0"` (see {@link NO_PUBLIC_IP}).
   */
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

/**
 * How flannel writes "no IPv4 public address" (Go's zero `ip.IP4`): in the
 * etcd value of an IPv6-only lease and in its `public-ip` annotation.
 */
export const NO_PUBLIC_IP = "0.0.0.0";

/**
 * The subnets a lease holds: `subnet` (IPv4) with an optional `ipv6Subnet`
 * (dual stack), or `ipv6Subnet` alone when the network is IPv6-only
 * (`EnableIPv4: false`). At least one is always there.
 */
export type LeaseSubnets = SubnetPair;

/** What a lease carries besides its subnets. */
export interface LeaseBody {
  readonly attrs: LeaseAttrs;
  /**
   * When the lease expires, in ms since the epoch; `null` for a reservation
   * (an etcd key without a TTL), which never expires.
   */
  readonly expiration: number | null;
}

/**
 * A host's subnet lease: IPv4 (`subnet`), dual stack (`subnet` and
 * `ipv6Subnet`) or IPv6-only (`ipv6Subnet`, no `subnet`).
 */
export type Lease = LeaseSubnets & LeaseBody;

/**
 * A lease's IPv4 subnet, for code that handles IPv4 leases only (the
 * backends whose IPv6 side is not built yet).
 *
 * @param lease The lease.
 * @param who What needs it, for the message (e.g. `the vxlan backend`).
 * @returns The IPv4 subnet.
 * @throws {TypeError} When the lease is IPv6-only.
 */
export function ipv4SubnetOf(lease: Lease, who: string): IPv4Net {
  if (!lease.subnet) {
    throw new TypeError(
      `${who} needs an IPv4 subnet, but the lease holds only ${
        lease.ipv6Subnet
          ? formatIPv6(lease.ipv6Subnet.ip) + "/" + lease.ipv6Subnet.prefixLen
          : "nothing"
      }: set "EnableIPv4": true and "Network" in the network config`,
    );
  }
  return lease.subnet;
}

/**
 * Whether two sets of attributes come from the same host: the same public
 * IPv4 address, or — when neither has one (IPv6-only) — the same public
 * IPv6 address. The identity flannel uses to reuse a host's lease.
 *
 * @param a One host's attributes.
 * @param b The other's.
 * @returns True when they are the same host.
 * @example
 * ```ts
 * sameHost({ publicIP: "", publicIPv6: "fd00::1" }, { publicIP: "", publicIPv6: "FD00:0::1" }); // true
 * ```
 */
export function sameHost(
  a: Pick<LeaseAttrs, "publicIP" | "publicIPv6">,
  b: Pick<LeaseAttrs, "publicIP" | "publicIPv6">,
): boolean {
  if (a.publicIP || b.publicIP) return a.publicIP === b.publicIP;
  if (!a.publicIPv6 || !b.publicIPv6) return false;
  return canonicalIPv6(a.publicIPv6) === canonicalIPv6(b.publicIPv6);
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
  /** Previous IPv6 subnet: with `previousSubnet`, or alone in an IPv6-only network. */
  readonly previousIPv6Subnet?: IPv6Net;
  /**
   * The leases this store's {@link LeaseStore.list} returned to the caller
   * moments ago: a store may take its first try from them instead of
   * listing again (a lost race for a subnet lists afresh).
   */
  readonly listed?: LeaseSnapshot;
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
 * `LeaseAttrs` does: `PublicIP` (`"0.0.0.0"` when unset, Go's zero
 * `ip.IP4`), `PublicIPv6` (always, null when unset), then `BackendType`,
 * `BackendData`, `BackendV6Data` when set.
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
    PublicIP: attrs.publicIP || NO_PUBLIC_IP,
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

/**
 * An IPv6 address as Go's `net.IP.String` writes it (flannel's `PublicIPv6`
 * and `public-ipv6` annotation): `FD00:0::1` becomes `fd00::1`. Text that
 * is not an address is returned unchanged.
 *
 * @param text An IPv6 address.
 * @returns The canonical text.
 */
export function canonicalIPv6(text: string): string {
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
