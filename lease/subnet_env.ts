/**
 * flannel's `subnet.env` (default `/run/flannel/subnet.env`): the file the
 * agent writes for CNI plugins and `weft attach`, in flannel's order:
 *
 * ```
 * FLANNEL_NETWORK=10.5.0.0/16
 * FLANNEL_SUBNET=10.5.52.1/24
 * FLANNEL_IPV6_NETWORK=fd00:12::/48      (only with IPv6)
 * FLANNEL_IPV6_SUBNET=fd00:12:13::1/64   (only with IPv6)
 * FLANNEL_MTU=1450
 * FLANNEL_IPMASQ=true
 * ```
 *
 * `FLANNEL_SUBNET` carries the first usable address of the lease (the
 * bridge gateway), not the network address. This file only formats and
 * parses; writing it atomically is the agent's job.
 *
 * @module
 */

import * as v from "valibot";
import {
  formatIPv4,
  formatIPv4Net,
  formatIPv6,
  formatIPv6Net,
  type IPv4Net,
  type IPv6Net,
  parseIPv4,
  parseIPv4Net,
  parseIPv6,
  parseIPv6Net,
} from "./ip.ts";

/** subnet.env as values. */
export interface SubnetEnv {
  /** `FLANNEL_NETWORK` (the first, when several are listed). */
  readonly network?: IPv4Net;
  /** Every network in `FLANNEL_NETWORK` (comma-separated in some flannel versions). */
  readonly networks: readonly IPv4Net[];
  /** The lease: `FLANNEL_SUBNET` with host bits cleared, e.g. 10.5.52.0/24. */
  readonly subnet?: IPv4Net;
  /** The address in `FLANNEL_SUBNET` (the bridge gateway), e.g. 10.5.52.1 as uint32. */
  readonly gateway?: number;
  readonly ipv6Network?: IPv6Net;
  readonly ipv6Subnet?: IPv6Net;
  /** The address in `FLANNEL_IPV6_SUBNET`. */
  readonly ipv6Gateway?: bigint;
  /** `FLANNEL_MTU`. */
  readonly mtu: number;
  /** `FLANNEL_IPMASQ`: whether the agent masquerades (then the CNI bridge must not). */
  readonly ipMasq: boolean;
}

const ipv4Cidr = v.pipe(
  v.string(),
  v.check((s) => {
    try {
      parseIPv4Net(s);
      return true;
    } catch {
      return false;
    }
  }, "expected IPv4 CIDR like 10.5.0.0/16"),
);
const ipv6Cidr = v.pipe(
  v.string(),
  v.check((s) => {
    try {
      parseIPv6Net(s);
      return true;
    } catch {
      return false;
    }
  }, "expected IPv6 CIDR like fd00:12::/48"),
);

const EnvSchema = v.object({
  FLANNEL_NETWORK: v.optional(
    v.pipe(v.string(), v.check((s) => s.split(",").every((p) => v.is(ipv4Cidr, p.trim())))),
  ),
  FLANNEL_SUBNET: v.optional(ipv4Cidr),
  FLANNEL_IPV6_NETWORK: v.optional(ipv6Cidr),
  FLANNEL_IPV6_SUBNET: v.optional(ipv6Cidr),
  FLANNEL_MTU: v.pipe(
    v.string("FLANNEL_MTU is missing"),
    v.regex(/^\d+$/, "expected a number"),
    v.transform(Number),
    v.minValue(68),
    v.maxValue(65535),
  ),
  FLANNEL_IPMASQ: v.pipe(
    v.optional(v.string(), "false"),
    v.picklist(["true", "false"], "expected true or false"),
  ),
});

/**
 * Parse subnet.env text (KEY=VALUE lines; quotes, blank lines and `#`
 * comments allowed, as godotenv reads them).
 *
 * @param text File content.
 * @param source Where it came from, for messages.
 * @returns The values.
 * @throws {SyntaxError} When a value is malformed, FLANNEL_MTU is missing, or
 *   neither FLANNEL_SUBNET nor FLANNEL_IPV6_SUBNET is present.
 * @example
 * ```ts
 * parseSubnetEnv("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n");
 * ```
 */
export function parseSubnetEnv(text: string, source = "subnet.env"): SubnetEnv {
  const raw: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const t = line.trim();
    if (t === "" || t.startsWith("#")) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(t);
    if (!m) {
      throw new SyntaxError(
        `Cannot parse ${source}: expected KEY=VALUE, current line is ${JSON.stringify(t)}`,
      );
    }
    raw[m[1]] = m[2].replace(/^(["'])(.*)\1$/, "$2");
  }
  const r = v.safeParse(EnvSchema, raw);
  if (!r.success) {
    const issue = r.issues[0];
    const key = issue.path?.map((p) => String(p.key)).join(".") ?? "";
    throw new SyntaxError(
      `Cannot use ${source}: ${key} ${issue.message}, current value is ${
        JSON.stringify(raw[key])
      }; it is written by the weft (or flannel) agent once it holds a lease`,
    );
  }
  const o = r.output;
  if (!o.FLANNEL_SUBNET && !o.FLANNEL_IPV6_SUBNET) {
    throw new SyntaxError(
      `Cannot use ${source}: neither FLANNEL_SUBNET nor FLANNEL_IPV6_SUBNET is set; is the agent running?`,
    );
  }
  const networks = o.FLANNEL_NETWORK
    ? o.FLANNEL_NETWORK.split(",").map((p) => parseIPv4Net(p.trim()))
    : [];
  const slash = (s: string) => s.slice(0, s.indexOf("/"));
  return {
    network: networks[0],
    networks,
    subnet: o.FLANNEL_SUBNET ? parseIPv4Net(o.FLANNEL_SUBNET) : undefined,
    gateway: o.FLANNEL_SUBNET ? parseIPv4(slash(o.FLANNEL_SUBNET)) : undefined,
    ipv6Network: o.FLANNEL_IPV6_NETWORK ? parseIPv6Net(o.FLANNEL_IPV6_NETWORK) : undefined,
    ipv6Subnet: o.FLANNEL_IPV6_SUBNET ? parseIPv6Net(o.FLANNEL_IPV6_SUBNET) : undefined,
    ipv6Gateway: o.FLANNEL_IPV6_SUBNET ? parseIPv6(slash(o.FLANNEL_IPV6_SUBNET)) : undefined,
    mtu: o.FLANNEL_MTU,
    ipMasq: o.FLANNEL_IPMASQ === "true",
  };
}

/**
 * Format subnet.env exactly as flannel writes it (the subnet's first
 * address in FLANNEL_SUBNET).
 *
 * @param values Network(s), lease subnet(s), MTU, whether the agent masquerades.
 * @returns File content.
 */
export function formatSubnetEnv(values: {
  network?: IPv4Net;
  subnet?: IPv4Net;
  ipv6Network?: IPv6Net;
  ipv6Subnet?: IPv6Net;
  mtu: number;
  ipMasq: boolean;
}): string {
  let out = "";
  if (values.network && values.subnet) {
    out += `FLANNEL_NETWORK=${formatIPv4Net(values.network)}\n`;
    out += `FLANNEL_SUBNET=${
      formatIPv4((values.subnet.ip + 1) >>> 0)
    }/${values.subnet.prefixLen}\n`;
  }
  if (values.ipv6Network && values.ipv6Subnet) {
    out += `FLANNEL_IPV6_NETWORK=${formatIPv6Net(values.ipv6Network)}\n`;
    out += `FLANNEL_IPV6_SUBNET=${
      formatIPv6(values.ipv6Subnet.ip + 1n)
    }/${values.ipv6Subnet.prefixLen}\n`;
  }
  out += `FLANNEL_MTU=${values.mtu}\nFLANNEL_IPMASQ=${values.ipMasq}\n`;
  return out;
}
