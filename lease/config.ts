/**
 * flannel's network configuration (`<prefix>/config` in etcd, or
 * net-conf.json): parsing, defaults and validation, matching flannel v0.28's
 * rules, with errors that name the field, its value and the fix.
 *
 * @module
 */

import * as v from "valibot";
import {
  containsIPv4,
  containsIPv6,
  formatIPv4,
  formatIPv4Net,
  formatIPv6,
  formatIPv6Net,
  type IPv4Net,
  type IPv6Net,
  maskIPv4,
  maskIPv6,
  parseIPv4,
  parseIPv4Net,
  parseIPv6,
  parseIPv6Net,
  sizeIPv4,
} from "./ip.ts";
import { ConfigError } from "./types.ts";

/** The validated network configuration, with every default filled in. */
export interface NetworkConfig {
  readonly enableIPv4: boolean;
  readonly enableIPv6: boolean;
  readonly enableNFTables: boolean;
  /** The cluster network (set when `enableIPv4`). */
  readonly network?: IPv4Net;
  readonly subnetLen: number;
  /** First subnet address that may be leased. */
  readonly subnetMin: number;
  /** Last subnet address that may be leased. */
  readonly subnetMax: number;
  readonly ipv6Network?: IPv6Net;
  readonly ipv6SubnetLen: number;
  readonly ipv6SubnetMin?: bigint;
  readonly ipv6SubnetMax?: bigint;
  /** `Backend.Type`, lowercase; `udp` when Backend is missing (flannel's default). */
  readonly backendType: string;
  /** The Backend object as written (keys in their original case). */
  readonly backend: Readonly<Record<string, unknown>>;
}

const TOP_KEYS = [
  "Network",
  "SubnetLen",
  "SubnetMin",
  "SubnetMax",
  "EnableIPv4",
  "EnableIPv6",
  "IPv6Network",
  "IPv6SubnetLen",
  "IPv6SubnetMin",
  "IPv6SubnetMax",
  "EnableNFTables",
  "Backend",
] as const;

/**
 * Look keys up the way Go's encoding/json does: an exact match first, else a
 * case-insensitive one. Returns the object re-keyed to `keys`' spelling and
 * the keys it did not know.
 */
export function foldKeys<K extends string>(
  obj: Record<string, unknown>,
  keys: readonly K[],
): { values: Partial<Record<K, unknown>>; unknown: string[] } {
  const values: Partial<Record<K, unknown>> = {};
  const used = new Set<string>();
  for (const key of keys) {
    if (Object.hasOwn(obj, key)) {
      values[key] = obj[key];
      used.add(key);
      continue;
    }
    const lower = key.toLowerCase();
    const found = Object.keys(obj).find((k) => k.toLowerCase() === lower);
    if (found !== undefined) {
      values[key] = obj[found];
      used.add(found);
    }
  }
  return { values, unknown: Object.keys(obj).filter((k) => !used.has(k)) };
}

const optBool = v.optional(v.boolean());
const optUint = (max: number) =>
  v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(max)));
const optString = v.optional(v.string());

const RawConfig = v.object({
  Network: optString,
  SubnetLen: optUint(32),
  SubnetMin: optString,
  SubnetMax: optString,
  EnableIPv4: optBool,
  EnableIPv6: optBool,
  IPv6Network: optString,
  IPv6SubnetLen: optUint(128),
  IPv6SubnetMin: optString,
  IPv6SubnetMax: optString,
  EnableNFTables: optBool,
  Backend: v.optional(v.record(v.string(), v.unknown())),
});

const EXPECTED: Record<string, string> = {
  Network: 'a CIDR string such as "10.5.0.0/16"',
  SubnetLen: "a whole number",
  SubnetMin: 'an IPv4 address string such as "10.5.1.0"',
  SubnetMax: 'an IPv4 address string such as "10.5.254.0"',
  EnableIPv4: "true or false",
  EnableIPv6: "true or false",
  IPv6Network: 'a CIDR string such as "fd00:10:5::/48"',
  IPv6SubnetLen: "a whole number",
  IPv6SubnetMin: "an IPv6 address string",
  IPv6SubnetMax: "an IPv6 address string",
  EnableNFTables: "true or false",
  Backend: 'an object such as {"Type": "vxlan"}',
};

/** Options for {@link parseNetworkConfig}. */
export interface ParseConfigOptions {
  /** Where the text came from, for messages (e.g. `etcd key /coreos.com/network/config`). */
  source?: string;
  /** Called for each unknown key (flannel ignores them silently). */
  onWarning?: (message: string) => void;
}

/**
 * Parse and validate a network configuration, applying flannel's defaults.
 *
 * @param text The JSON text.
 * @param options Source name for messages, warning sink.
 * @returns The configuration with defaults filled in.
 * @throws {ConfigError} With the offending field in `path` and a message that
 *   says what is wrong, the current value, and how to fix it.
 * @example
 * ```ts
 * const cfg = parseNetworkConfig('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}');
 * cfg.subnetLen; // 24
 * ```
 */
export function parseNetworkConfig(text: string, options: ParseConfigOptions = {}): NetworkConfig {
  const source = options.source ?? "the network config";
  const fail = (path: string | undefined, msg: string): never => {
    throw new ConfigError(`${source}: ${msg}`, path);
  };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(
      undefined,
      `is not valid JSON (${
        (e as Error).message
      }); write it as a JSON object such as {"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}`,
    );
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return fail(undefined, `must be a JSON object: current value is ${JSON.stringify(json)}`);
  }
  const { values, unknown } = foldKeys(json as Record<string, unknown>, TOP_KEYS);
  for (const k of unknown) options.onWarning?.(`${source}: unknown key "${k}" ignored`);
  const parsed = v.safeParse(RawConfig, values);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    const key = String(issue.path?.[0]?.key ?? "");
    const value = (values as Record<string, unknown>)[key];
    return fail(
      key,
      `"${key}" must be ${EXPECTED[key] ?? issue.expected}: current value is ${
        JSON.stringify(value)
      }`,
    );
  }
  const raw = parsed.output;

  const enableIPv4 = raw.EnableIPv4 ?? true;
  const enableIPv6 = raw.EnableIPv6 ?? false;
  const backend = raw.Backend ?? {};
  let backendType = "udp";
  if (raw.Backend) {
    const t = foldKeys(backend, ["Type"] as const).values.Type;
    if (typeof t !== "string" || t === "") {
      fail(
        "Backend.Type",
        `"Backend.Type" must name a backend (vxlan, host-gw, udp, alloc): current value is ${
          JSON.stringify(t)
        }`,
      );
    }
    backendType = (t as string).toLowerCase();
  }
  if (!enableIPv4 && !enableIPv6) {
    fail("EnableIPv4", "both EnableIPv4 and EnableIPv6 are false: enable at least one");
  }

  let network: IPv4Net | undefined;
  let subnetLen = 0, subnetMin = 0, subnetMax = 0;
  if (enableIPv4) {
    if (raw.Network === undefined || raw.Network === "") {
      fail(
        "Network",
        `"Network" is missing: set it to the cluster's IPv4 range, e.g. "Network": "10.5.0.0/16"`,
      );
    }
    try {
      network = parseIPv4Net(raw.Network!);
    } catch {
      fail(
        "Network",
        `"Network" must be ${EXPECTED.Network}: current value is ${JSON.stringify(raw.Network)}`,
      );
    }
    const net = network!;
    if (raw.SubnetLen !== undefined && raw.SubnetLen > 0) {
      subnetLen = raw.SubnetLen;
      if (subnetLen > 30) {
        fail(
          "SubnetLen",
          `"SubnetLen" must be 30 or less (each host needs room for a gateway and pods): current value is ${subnetLen}`,
        );
      }
      if (subnetLen < net.prefixLen + 2) {
        fail(
          "SubnetLen",
          `"SubnetLen" ${subnetLen} gives fewer than 4 subnets in ${
            formatIPv4Net(net)
          }: the network must be able to accommodate at least four subnets; use SubnetLen ${
            net.prefixLen + 2
          } or more, or a larger Network`,
        );
      }
    } else {
      if (net.prefixLen > 28) {
        fail(
          "Network",
          `"Network" ${formatIPv4Net(net)} is too small: the minimum useful network prefix is /28`,
        );
      }
      subnetLen = net.prefixLen <= 22 ? 24 : net.prefixLen + 2;
    }
    const size = sizeIPv4(subnetLen);
    const mask = maskIPv4(subnetLen);
    const addr = (key: "SubnetMin" | "SubnetMax", fallback: number): number => {
      const text = raw[key];
      if (text === undefined || text === "" || text === "0.0.0.0") return fallback;
      let ip = 0;
      try {
        ip = parseIPv4(text);
      } catch {
        fail(key, `"${key}" must be ${EXPECTED[key]}: current value is ${JSON.stringify(text)}`);
      }
      if (!containsIPv4(net, ip)) {
        fail(key, `"${key}" ${text} is not in the range of the Network ${formatIPv4Net(net)}`);
      }
      if (((ip & mask) >>> 0) !== ip) {
        fail(
          key,
          `"${key}" ${text} is not on a SubnetLen (/${subnetLen}) boundary: use ${
            formatIPv4((ip & mask) >>> 0)
          }`,
        );
      }
      return ip;
    };
    subnetMin = addr("SubnetMin", net.ip + size);
    subnetMax = addr("SubnetMax", net.ip + sizeIPv4(net.prefixLen) - size);
    if (subnetMin > subnetMax) {
      fail(
        "SubnetMin",
        `"SubnetMin" ${formatIPv4(subnetMin)} is after "SubnetMax" ${
          formatIPv4(subnetMax)
        }: no subnet can be leased`,
      );
    }
  }

  let ipv6Network: IPv6Net | undefined;
  let ipv6SubnetLen = 0;
  let ipv6SubnetMin: bigint | undefined, ipv6SubnetMax: bigint | undefined;
  if (enableIPv6) {
    if (raw.IPv6Network === undefined || raw.IPv6Network === "") {
      fail(
        "IPv6Network",
        `"IPv6Network" is missing while EnableIPv6 is true: set it, e.g. "IPv6Network": "fd00:10:5::/48"`,
      );
    }
    try {
      ipv6Network = parseIPv6Net(raw.IPv6Network!);
    } catch {
      fail(
        "IPv6Network",
        `"IPv6Network" must be ${EXPECTED.IPv6Network}: current value is ${
          JSON.stringify(raw.IPv6Network)
        }`,
      );
    }
    const net = ipv6Network!;
    if (raw.IPv6SubnetLen !== undefined && raw.IPv6SubnetLen > 0) {
      ipv6SubnetLen = raw.IPv6SubnetLen;
      if (ipv6SubnetLen > 126) {
        fail(
          "IPv6SubnetLen",
          `"IPv6SubnetLen" must be 126 or less: current value is ${ipv6SubnetLen}`,
        );
      }
      if (ipv6SubnetLen < net.prefixLen + 2) {
        fail(
          "IPv6SubnetLen",
          `"IPv6SubnetLen" ${ipv6SubnetLen} gives fewer than 4 subnets in ${
            formatIPv6Net(net)
          }: use ${net.prefixLen + 2} or more`,
        );
      }
    } else {
      if (net.prefixLen > 124) {
        fail(
          "IPv6Network",
          `"IPv6Network" ${formatIPv6Net(net)} is too small: the minimum useful prefix is /124`,
        );
      }
      ipv6SubnetLen = net.prefixLen <= 62 ? 64 : net.prefixLen + 2;
    }
    const size = 1n << BigInt(128 - ipv6SubnetLen);
    const mask = maskIPv6(ipv6SubnetLen);
    const addr6 = (key: "IPv6SubnetMin" | "IPv6SubnetMax", fallback: bigint): bigint => {
      const text = raw[key];
      if (text === undefined || text === "" || text === "::") return fallback;
      let ip = 0n;
      try {
        ip = parseIPv6(text);
      } catch {
        fail(key, `"${key}" must be ${EXPECTED[key]}: current value is ${JSON.stringify(text)}`);
      }
      if (!containsIPv6(net, ip)) {
        fail(key, `"${key}" ${text} is not in the range of the IPv6Network ${formatIPv6Net(net)}`);
      }
      if ((ip & mask) !== ip) {
        fail(
          key,
          `"${key}" ${text} is not on an IPv6SubnetLen (/${ipv6SubnetLen}) boundary: use ${
            formatIPv6(ip & mask)
          }`,
        );
      }
      return ip;
    };
    ipv6SubnetMin = addr6("IPv6SubnetMin", net.ip + size);
    ipv6SubnetMax = addr6("IPv6SubnetMax", net.ip + (1n << BigInt(128 - net.prefixLen)) - size);
  }

  return {
    enableIPv4,
    enableIPv6,
    enableNFTables: raw.EnableNFTables ?? false,
    network,
    subnetLen,
    subnetMin,
    subnetMax,
    ipv6Network,
    ipv6SubnetLen,
    ipv6SubnetMin,
    ipv6SubnetMax,
    backendType,
    backend,
  };
}

/**
 * Read backend options from `Backend` case-insensitively and validate them
 * with a valibot schema; the error names `Backend.<Key>`.
 *
 * @param config The network configuration.
 * @param schema A valibot object schema whose keys are the canonical spellings.
 * @returns The validated options.
 * @throws {ConfigError} When an option has the wrong type or range.
 */
export function parseBackendOptions<
  const TEntries extends v.ObjectEntries,
  TSchema extends v.ObjectSchema<TEntries, v.ErrorMessage<v.ObjectIssue> | undefined>,
>(config: NetworkConfig, schema: TSchema, source = "the network config"): v.InferOutput<TSchema> {
  const keys = Object.keys(schema.entries);
  const { values } = foldKeys(config.backend, [...keys, "Type"]);
  delete (values as Record<string, unknown>).Type;
  const parsed = v.safeParse(schema, values);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    const key = String(issue.path?.[0]?.key ?? "");
    throw new ConfigError(
      `${source}: "Backend.${key}" for backend ${config.backendType} is invalid (${issue.message}): current value is ${
        JSON.stringify((values as Record<string, unknown>)[key])
      }`,
      `Backend.${key}`,
    );
  }
  return parsed.output;
}
