/**
 * Subnet allocation as pure code over a snapshot of leases: which subnet
 * a host should take. Stores add the compare-and-swap create and the retry.
 *
 * @module
 */

import type { NetworkConfig } from "./config.ts";
import {
  containsIPv4Net,
  containsIPv6,
  formatIPv4,
  formatIPv4Net,
  formatIPv6,
  formatIPv6Net,
  type IPv4Net,
  type IPv6Net,
  overlapsIPv4Net,
  overlapsIPv6Net,
  sizeIPv4,
} from "../core/ip.ts";
import { type Lease, type LeaseAttrs, type LeaseSubnets, sameHost } from "./types.ts";
import { PoolExhaustedError } from "../core/errors.ts";

/** How many free subnets the random pick chooses among (flannel: 100). */
export const PICK_WINDOW = 100;

/**
 * Whether an IPv4 subnet (or its absence) fits the configuration: with
 * `EnableIPv4`, the right length, inside the network and between SubnetMin
 * and SubnetMax; without it, no IPv4 subnet at all.
 */
export function isSubnetCompatible(config: NetworkConfig, subnet?: IPv4Net): boolean {
  if (!config.enableIPv4) return subnet === undefined;
  if (!subnet || !config.network) return false;
  return subnet.prefixLen === config.subnetLen &&
    containsIPv4Net(config.network, subnet) &&
    subnet.ip >= config.subnetMin && subnet.ip <= config.subnetMax;
}

/** Whether an IPv6 subnet (or its absence) fits the configuration. */
export function isIPv6SubnetCompatible(config: NetworkConfig, subnet?: IPv6Net): boolean {
  if (!config.enableIPv6) return subnet === undefined;
  if (!subnet || !config.ipv6Network) return false;
  return subnet.prefixLen === config.ipv6SubnetLen && containsIPv6(config.ipv6Network, subnet.ip) &&
    subnet.ip >= config.ipv6SubnetMin! && subnet.ip <= config.ipv6SubnetMax!;
}

/** Whether a lease's subnets fit the configuration (both families, as flannel checks). */
export function isLeaseCompatible(config: NetworkConfig, lease: LeaseSubnets): boolean {
  return isSubnetCompatible(config, lease.subnet) &&
    isIPv6SubnetCompatible(config, lease.ipv6Subnet);
}

/**
 * The lease held by this host, if any: the one with the same public IPv4
 * address, or in an IPv6-only network the same public IPv6 address (see
 * {@link sameHost}).
 */
export function findLeaseByHost(
  leases: readonly Lease[],
  attrs: Pick<LeaseAttrs, "publicIP" | "publicIPv6">,
): Lease | undefined {
  return leases.find((l) => sameHost(l.attrs, attrs));
}

/**
 * The first lease that shares an address with any of these subnets (IPv4
 * or IPv6), if any: a subnet pair is free only when this is undefined.
 */
export function findLeaseOverlapping(
  leases: readonly Lease[],
  pair: LeaseSubnets,
): Lease | undefined {
  return leases.find((l) =>
    (pair.subnet !== undefined && l.subnet !== undefined &&
      overlapsIPv4Net(l.subnet, pair.subnet)) ||
    (pair.ipv6Subnet !== undefined && l.ipv6Subnet !== undefined &&
      overlapsIPv6Net(l.ipv6Subnet, pair.ipv6Subnet))
  );
}

/** Number of IPv4 subnets between SubnetMin and SubnetMax (0 without IPv4). */
export function poolSize(config: NetworkConfig): number {
  if (!config.enableIPv4) return 0;
  return Math.floor((config.subnetMax - config.subnetMin) / sizeIPv4(config.subnetLen)) + 1;
}

/** Number of IPv6 subnets between IPv6SubnetMin and IPv6SubnetMax (0 without IPv6). */
export function ipv6PoolSize(config: NetworkConfig): bigint {
  if (!config.enableIPv6) return 0n;
  return (config.ipv6SubnetMax! - config.ipv6SubnetMin!) / ipv6Size(config.ipv6SubnetLen) + 1n;
}

/** Human description of the IPv4 pool, for messages. */
export function describePool(config: NetworkConfig): string {
  return `${config.network ? formatIPv4Net(config.network) : "?"} (/${config.subnetLen} subnets ${
    formatIPv4(config.subnetMin)
  } to ${formatIPv4(config.subnetMax)})`;
}

/** Human description of the IPv6 pool, for messages. */
export function describeIPv6Pool(config: NetworkConfig): string {
  return `${
    config.ipv6Network ? formatIPv6Net(config.ipv6Network) : "?"
  } (/${config.ipv6SubnetLen} subnets ${formatIPv6(config.ipv6SubnetMin ?? 0n)} to ${
    formatIPv6(config.ipv6SubnetMax ?? 0n)
  })`;
}

const ipv6Size = (prefixLen: number): bigint => 1n << BigInt(128 - prefixLen);

/**
 * The walk shared by both families, over numbers (IPv4) or bigints (IPv6):
 * candidates from `min` to `max` in steps of `size`, skipping any that
 * overlaps a used range (a network of any size, also one wider than a
 * subnet or not aligned to the pool), until {@link PICK_WINDOW} free ones
 * are found. Used ranges are sorted once, so a pool with thousands of
 * leases is one pass.
 */
function walkFree<T extends number | bigint>(
  pool: { min: T; max: T; size: T; add: (a: T, b: T) => T },
  used: { start: T; end: T }[],
): { free: T[]; walked: number } {
  used.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const free: T[] = [];
  let walked = 0;
  let u = 0;
  for (let ip = pool.min; ip <= pool.max && free.length < PICK_WINDOW;) {
    const next = pool.add(ip, pool.size);
    walked++;
    // Ranges before index u end before this candidate (and so before every
    // later one). Any range overlapping the candidate starts before `next`,
    // so the scan below sees it.
    while (u < used.length && used[u].end < ip) u++;
    let taken = false;
    for (let j = u; j < used.length && used[j].start < next; j++) {
      if (used[j].end >= ip) {
        taken = true;
        break;
      }
    }
    if (!taken) free.push(ip);
    ip = next;
  }
  return { free, walked };
}

/**
 * Pick a free subnet for each enabled family: walk SubnetMin..SubnetMax in
 * SubnetLen steps (and IPv6SubnetMin..IPv6SubnetMax in IPv6SubnetLen
 * steps), skip those overlapping a lease (of any size, also one wider than
 * SubnetLen or outside the pool's alignment), and choose at random among
 * the first {@link PICK_WINDOW} free ones — flannel's algorithm, one random
 * draw per family. In an IPv6-only network (`EnableIPv4: false`) only the
 * IPv6 subnet is picked (flannel's etcd manager cannot allocate there).
 *
 * @param config Network configuration.
 * @param leases Current leases (any order), including records that only occupy a subnet.
 * @param random Source of randomness in [0, 1).
 * @returns The subnets: IPv4, IPv4 + IPv6, or IPv6 alone, as the config enables.
 * @throws {PoolExhaustedError} When nothing is free; the message names the
 *   pool, how many of its subnets are in use and how to make room.
 * @example
 * ```ts
 * const { subnet, ipv6Subnet } = pickFreeSubnet(config, leases, Math.random);
 * ```
 */
export function pickFreeSubnet(
  config: NetworkConfig,
  leases: readonly Lease[],
  random: () => number,
): LeaseSubnets {
  let subnet: IPv4Net | undefined;
  if (config.enableIPv4) {
    const size = sizeIPv4(config.subnetLen);
    const used = leases.flatMap((l) =>
      l.subnet ? [{ start: l.subnet.ip, end: l.subnet.ip + sizeIPv4(l.subnet.prefixLen) - 1 }] : []
    );
    const { free, walked } = walkFree({
      min: config.subnetMin,
      max: config.subnetMax,
      size,
      add: (a, b) => a + b,
    }, used);
    if (free.length === 0) {
      const holders = used.filter((r) =>
        r.start <= config.subnetMax + size - 1 && r.end >= config.subnetMin
      ).length;
      throw new PoolExhaustedError(
        `no free subnet left in ${describePool(config)}: ${walked} of ${poolSize(config)} in use ` +
          `(by ${holders} lease${holders === 1 ? "" : "s"}); ` +
          `enlarge Network or widen SubnetMin/SubnetMax, or delete stale leases`,
      );
    }
    subnet = { ip: free[Math.floor(random() * free.length)], prefixLen: config.subnetLen };
  }
  if (!config.enableIPv6) return { subnet: subnet! };

  const min = config.ipv6SubnetMin!, max = config.ipv6SubnetMax!;
  const size = ipv6Size(config.ipv6SubnetLen);
  const used = leases.flatMap((l) =>
    l.ipv6Subnet
      ? [{ start: l.ipv6Subnet.ip, end: l.ipv6Subnet.ip + ipv6Size(l.ipv6Subnet.prefixLen) - 1n }]
      : []
  );
  const { free, walked } = walkFree({ min, max, size, add: (a, b) => a + b }, used);
  if (free.length === 0) {
    const holders = used.filter((r) => r.start <= max + size - 1n && r.end >= min).length;
    throw new PoolExhaustedError(
      `no free IPv6 subnet left in ${describeIPv6Pool(config)}: ${walked} of ${
        ipv6PoolSize(config)
      } in use (by ${holders} lease${holders === 1 ? "" : "s"}); ` +
        `enlarge IPv6Network or widen IPv6SubnetMin/IPv6SubnetMax, or delete stale leases`,
    );
  }
  const ipv6Subnet = {
    ip: free[Math.floor(random() * free.length)],
    prefixLen: config.ipv6SubnetLen,
  };
  return subnet ? { subnet, ipv6Subnet } : { ipv6Subnet };
}
