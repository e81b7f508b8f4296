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
  equalIPv4Net,
  formatIPv4,
  formatIPv4Net,
  formatIPv6,
  formatIPv6Net,
  type IPv4Net,
  type IPv6Net,
  nextIPv6Net,
  overlapsIPv6Net,
  sizeIPv4,
} from "../core/ip.ts";
import type { Lease } from "./types.ts";
import { PoolExhaustedError } from "../core/errors.ts";

/** How many free subnets the random pick chooses among (flannel: 100). */
export const PICK_WINDOW = 100;

/**
 * Whether a subnet fits the configuration: right length, inside the network
 * and between SubnetMin and SubnetMax.
 */
export function isSubnetCompatible(config: NetworkConfig, subnet: IPv4Net): boolean {
  if (!config.network) return false;
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

/** Whether a whole lease fits the configuration. */
export function isLeaseCompatible(config: NetworkConfig, lease: Lease): boolean {
  return isSubnetCompatible(config, lease.subnet) &&
    isIPv6SubnetCompatible(config, lease.ipv6Subnet);
}

/** The lease held by the host with this public IP, if any. */
export function findLeaseByPublicIP(leases: readonly Lease[], publicIP: string): Lease | undefined {
  return leases.find((l) => l.attrs.publicIP === publicIP);
}

/** The lease on this subnet, if any. */
export function findLeaseBySubnet(leases: readonly Lease[], subnet: IPv4Net): Lease | undefined {
  return leases.find((l) => equalIPv4Net(l.subnet, subnet));
}

/** Number of subnets between SubnetMin and SubnetMax. */
export function poolSize(config: NetworkConfig): number {
  return Math.floor((config.subnetMax - config.subnetMin) / sizeIPv4(config.subnetLen)) + 1;
}

/** Human description of the pool, for messages. */
export function describePool(config: NetworkConfig): string {
  return `${config.network ? formatIPv4Net(config.network) : "?"} (/${config.subnetLen} subnets ${
    formatIPv4(config.subnetMin)
  } to ${formatIPv4(config.subnetMax)})`;
}

/**
 * Pick a free subnet: walk SubnetMin..SubnetMax in SubnetLen steps, skip
 * those overlapping a lease (of any size, also one wider than SubnetLen or
 * outside the pool's alignment), and choose at random among the first
 * {@link PICK_WINDOW} free ones — flannel's algorithm.
 *
 * @param config Network configuration.
 * @param leases Current leases (any order), including records that only occupy a subnet.
 * @param random Source of randomness in [0, 1).
 * @returns The subnet (and an IPv6 subnet when IPv6 is enabled).
 * @throws {PoolExhaustedError} When nothing is free; the message names the
 *   pool, how many of its subnets are in use and how to make room.
 * @example
 * ```ts
 * const { subnet } = pickFreeSubnet(config, leases, Math.random);
 * ```
 */
export function pickFreeSubnet(
  config: NetworkConfig,
  leases: readonly Lease[],
  random: () => number,
): { subnet: IPv4Net; ipv6Subnet?: IPv6Net } {
  const size = sizeIPv4(config.subnetLen);
  const used = leases.map((l) => l.subnet).sort((a, b) => a.ip - b.ip);
  const free: number[] = [];
  let walked = 0;
  let u = 0;
  for (let ip = config.subnetMin; ip <= config.subnetMax && free.length < PICK_WINDOW; ip += size) {
    walked++;
    const last = ip + size - 1;
    // Leases are sorted by start: those before index u end before this
    // candidate (and so before every later one). Any lease that overlaps the
    // candidate starts at or before `last`, so the scan below sees it.
    while (u < used.length && used[u].ip + sizeIPv4(used[u].prefixLen) <= ip) u++;
    let taken = false;
    for (let j = u; j < used.length && used[j].ip <= last; j++) {
      if (used[j].ip + sizeIPv4(used[j].prefixLen) > ip) {
        taken = true;
        break;
      }
    }
    if (!taken) free.push(ip);
  }
  if (free.length === 0) {
    const holders = leases.filter((l) =>
      l.subnet.ip <= config.subnetMax + size - 1 &&
      l.subnet.ip + sizeIPv4(l.subnet.prefixLen) > config.subnetMin
    ).length;
    throw new PoolExhaustedError(
      `no free subnet left in ${describePool(config)}: ${walked} of ${poolSize(config)} in use ` +
        `(by ${holders} lease${holders === 1 ? "" : "s"}); ` +
        `enlarge Network or widen SubnetMin/SubnetMax, or delete stale leases`,
    );
  }
  const subnet = { ip: free[Math.floor(random() * free.length)], prefixLen: config.subnetLen };
  if (!config.enableIPv6) return { subnet };

  const free6: bigint[] = [];
  let walked6 = 0n;
  for (
    let sn: IPv6Net | null = { ip: config.ipv6SubnetMin!, prefixLen: config.ipv6SubnetLen };
    sn && sn.ip <= config.ipv6SubnetMax! && free6.length < PICK_WINDOW;
    sn = nextIPv6Net(sn)
  ) {
    walked6++;
    const cur = sn;
    if (!leases.some((l) => l.ipv6Subnet && overlapsIPv6Net(l.ipv6Subnet, cur))) free6.push(cur.ip);
  }
  if (free6.length === 0) {
    throw new PoolExhaustedError(
      `no free IPv6 subnet left in ${
        config.ipv6Network ? formatIPv6Net(config.ipv6Network) : "?"
      } (/${config.ipv6SubnetLen} subnets ${formatIPv6(config.ipv6SubnetMin!)} to ${
        formatIPv6(config.ipv6SubnetMax!)
      }): ${walked6} of ${walked6} in use; ` +
        `enlarge IPv6Network or widen IPv6SubnetMin/IPv6SubnetMax, or delete stale leases`,
    );
  }
  return {
    subnet,
    ipv6Subnet: { ip: free6[Math.floor(random() * free6.length)], prefixLen: config.ipv6SubnetLen },
  };
}
