/**
 * subnet.env: the file flannel's CNI plugin (and anything else on the host)
 * reads to learn this host's subnet and MTU. Written atomically in flannel's
 * exact format and order.
 *
 * @module
 */

import * as fs from "node:fs";
import { writeFileAtomic } from "../core/files.ts";
import type { NetworkConfig } from "./config.ts";
import type { LeaseSubnets } from "./types.ts";
import {
  formatIPv4,
  formatIPv4Net,
  formatIPv6,
  formatIPv6Net,
  type IPv4Net,
  type IPv6Net,
  parseIPv4Net,
  parseIPv6Net,
} from "../core/ip.ts";

/** What subnet.env says. */
export interface SubnetEnv {
  readonly network?: IPv4Net;
  /** This host's subnet (the file holds its first address, e.g. 10.5.52.1/24). */
  readonly subnet?: IPv4Net;
  readonly ipv6Network?: IPv6Net;
  readonly ipv6Subnet?: IPv6Net;
  readonly mtu: number;
  readonly ipMasq: boolean;
}

/**
 * Render subnet.env text exactly as flannel's `WriteSubnetFile`
 * (pkg/subnet/subnet.go) does: FLANNEL_NETWORK and FLANNEL_SUBNET (first
 * address/len) when there is an IPv4 pair, FLANNEL_IPV6_NETWORK and
 * FLANNEL_IPV6_SUBNET (first address/len) when there is an IPv6 pair, then
 * FLANNEL_MTU and FLANNEL_IPMASQ.
 *
 * @example
 * ```ts
 * renderSubnetEnv({ network: parseIPv4Net("10.5.0.0/16"), subnet: parseIPv4Net("10.5.52.0/24"), mtu: 1450, ipMasq: true });
 * // "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
 * ```
 */
export function renderSubnetEnv(env: SubnetEnv): string {
  let out = "";
  if (env.network && env.subnet) {
    out += `FLANNEL_NETWORK=${formatIPv4Net(env.network)}\n`;
    out += `FLANNEL_SUBNET=${formatIPv4(env.subnet.ip + 1)}/${env.subnet.prefixLen}\n`;
  }
  if (env.ipv6Network && env.ipv6Subnet) {
    out += `FLANNEL_IPV6_NETWORK=${formatIPv6Net(env.ipv6Network)}\n`;
    out += `FLANNEL_IPV6_SUBNET=${
      formatIPv6(env.ipv6Subnet.ip + 1n)
    }/${env.ipv6Subnet.prefixLen}\n`;
  }
  out += `FLANNEL_MTU=${env.mtu}\nFLANNEL_IPMASQ=${env.ipMasq}\n`;
  return out;
}

/**
 * Build the subnet.env contents for a config and lease, as flannel's
 * `WriteSubnetFile` decides: the IPv4 pair only with `EnableIPv4`, the IPv6
 * pair only with `EnableIPv6` (an IPv6-only host writes no FLANNEL_NETWORK
 * or FLANNEL_SUBNET).
 *
 * @param config The network config.
 * @param lease This host's subnets.
 * @param mtu The backend's MTU.
 * @param ipMasq Whether weft masquerades (`--ip-masq`).
 * @returns What to write.
 */
export function subnetEnvFor(
  config: NetworkConfig,
  lease: LeaseSubnets,
  mtu: number,
  ipMasq: boolean,
): SubnetEnv {
  return {
    network: config.enableIPv4 ? config.network : undefined,
    subnet: config.enableIPv4 ? lease.subnet : undefined,
    ipv6Network: config.enableIPv6 ? config.ipv6Network : undefined,
    ipv6Subnet: config.enableIPv6 ? lease.ipv6Subnet : undefined,
    mtu,
    ipMasq,
  };
}

/**
 * Write subnet.env atomically (temporary file in the same directory, then
 * rename), creating the directory. Readers see the old or the new file, never
 * half of one.
 *
 * @param file Target path, e.g. `/run/flannel/subnet.env`.
 * @param env Contents.
 * @throws {Error} When the directory cannot be created or written.
 */
export function writeSubnetEnv(file: string, env: SubnetEnv): void {
  // 0644: the CNI plugin and docker tooling read it; it holds no secret
  writeFileAtomic(file, renderSubnetEnv(env), { mode: 0o644 });
}

/**
 * The assignments of subnet.env text as written, unparsed (`FLANNEL_SUBNET`
 * keeps its host address, `FLANNEL_IPMASQ` any value): for tools that pass
 * them on byte for byte, like `weft docker-opts`.
 *
 * @param text The file's content.
 * @returns Variable name → value (trimmed), later lines winning.
 * @example
 * ```ts
 * parseSubnetEnvVars("FLANNEL_SUBNET=10.5.52.1/24\n").get("FLANNEL_SUBNET"); // "10.5.52.1/24"
 * ```
 */
export function parseSubnetEnvVars(text: string): Map<string, string> {
  const vars = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^\s*([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) vars.set(m[1], m[2].trim());
  }
  return vars;
}

/**
 * Parse subnet.env text; unknown lines are ignored, bad values are left out.
 */
export function parseSubnetEnv(text: string): Partial<SubnetEnv> {
  const vars = parseSubnetEnvVars(text);
  const v4 = (k: string) => {
    try {
      return vars.has(k) ? parseIPv4Net(vars.get(k)!) : undefined;
    } catch {
      return undefined;
    }
  };
  const v6 = (k: string) => {
    try {
      return vars.has(k) ? parseIPv6Net(vars.get(k)!) : undefined;
    } catch {
      return undefined;
    }
  };
  const mtu = Number(vars.get("FLANNEL_MTU"));
  return {
    network: v4("FLANNEL_NETWORK"),
    subnet: v4("FLANNEL_SUBNET"),
    ipv6Network: v6("FLANNEL_IPV6_NETWORK"),
    ipv6Subnet: v6("FLANNEL_IPV6_SUBNET"),
    ...(Number.isInteger(mtu) && mtu > 0 ? { mtu } : {}),
    ...(vars.has("FLANNEL_IPMASQ") ? { ipMasq: vars.get("FLANNEL_IPMASQ") === "true" } : {}),
  };
}

/** Read subnet.env if it exists (the previous subnet hint at start-up). */
export function readSubnetEnv(file: string): Partial<SubnetEnv> | null {
  try {
    return parseSubnetEnv(fs.readFileSync(file, "utf8"));
  } catch {
    return null;
  }
}
