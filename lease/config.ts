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
} from "../core/ip.ts";
import { ConfigError } from "../core/errors.ts";
import { quote } from "../core/quote.ts";

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
 * Map an object's keys onto field names the way Go's encoding/json does:
 * each key goes to the field of the same name, else to a field whose name
 * matches ignoring case; when several keys land on one field (`Network` and
 * `network`), the last one in the object wins, as in Go.
 *
 * @param obj A decoded JSON object.
 * @param keys The canonical field names.
 * @returns The values re-keyed to `keys`' spelling, and the keys that matched no field.
 * @example
 * ```ts
 * foldKeys({ network: "10.5.0.0/16", Foo: 1 }, ["Network"] as const);
 * // { values: { Network: "10.5.0.0/16" }, unknown: ["Foo"] }
 * ```
 */
export function foldKeys<K extends string>(
  obj: Record<string, unknown>,
  keys: readonly K[],
): { values: Partial<Record<K, unknown>>; unknown: string[] } {
  const values: Partial<Record<K, unknown>> = {};
  const unknown: string[] = [];
  for (const [k, value] of Object.entries(obj)) {
    const field = keys.find((key) => key === k) ??
      keys.find((key) => key.toLowerCase() === k.toLowerCase());
    if (field === undefined) unknown.push(k);
    else values[field] = value;
  }
  return { values, unknown };
}

// Like Go, a JSON null leaves a bool or number field at its default.
const optBool = v.nullish(v.boolean());
// The upper bounds are rules with their own messages below.
const optUint = v.nullish(v.pipe(v.number(), v.integer(), v.minValue(0)));
const optString = v.optional(v.string());

const RawConfig = v.object({
  Network: optString,
  SubnetLen: optUint,
  SubnetMin: optString,
  SubnetMax: optString,
  EnableIPv4: optBool,
  EnableIPv6: optBool,
  IPv6Network: optString,
  IPv6SubnetLen: optUint,
  IPv6SubnetMin: optString,
  IPv6SubnetMax: optString,
  EnableNFTables: optBool,
  Backend: v.optional(
    // v.record alone would accept (and copy) an array
    v.custom<Record<string, unknown>>((o) =>
      typeof o === "object" && o !== null && !Array.isArray(o)
    ),
  ),
});

const EXPECTED: Record<string, string> = {
  Network: 'a CIDR string such as "10.5.0.0/16"',
  SubnetLen: "a whole number such as 24 (or 0 for the default)",
  SubnetMin: 'an IPv4 address string such as "10.5.1.0"',
  SubnetMax: 'an IPv4 address string such as "10.5.254.0"',
  EnableIPv4: "true or false",
  EnableIPv6: "true or false",
  IPv6Network: 'a CIDR string such as "fd00:10:5::/48"',
  IPv6SubnetLen: "a whole number such as 64 (or 0 for the default)",
  IPv6SubnetMin: "an IPv6 address string",
  IPv6SubnetMax: "an IPv6 address string",
  EnableNFTables: "true or false",
  Backend: 'an object such as {"Type": "vxlan"}',
};

/** Unknown keys warned about one by one; the rest are counted in one warning. */
const MAX_KEY_WARNINGS = 10;

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
    return fail(
      undefined,
      `must be a JSON object such as {"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}: current value is ${
        quote(json)
      }`,
    );
  }
  const { values, unknown } = foldKeys(json as Record<string, unknown>, TOP_KEYS);
  // one warning per unknown key, but a document of 100 000 keys is not 100 000 warnings
  for (const k of unknown.slice(0, MAX_KEY_WARNINGS)) {
    options.onWarning?.(`${source}: unknown key ${quote(k)} ignored`);
  }
  if (unknown.length > MAX_KEY_WARNINGS) {
    options.onWarning?.(
      `${source}: ${unknown.length - MAX_KEY_WARNINGS} more unknown keys ignored`,
    );
  }
  const parsed = v.safeParse(RawConfig, values);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    const key = String(issue.path?.[0]?.key ?? "");
    const value = (values as Record<string, unknown>)[key];
    return fail(
      key,
      `"${key}" must be ${EXPECTED[key] ?? issue.expected}: current value is ${quote(value)}`,
    );
  }
  const raw = parsed.output;
  // Like Go's json.Unmarshal into ip.IP4Net / ip.IP4 / ip.IP6Net / ip.IP6,
  // an address field that does not parse is an error even when its family
  // is disabled.
  const syntax: [keyof typeof raw & string, (t: string) => unknown][] = [
    ["Network", parseIPv4Net],
    ["SubnetMin", parseIPv4],
    ["SubnetMax", parseIPv4],
    ["IPv6Network", parseIPv6Net],
    ["IPv6SubnetMin", parseIPv6],
    ["IPv6SubnetMax", parseIPv6],
  ];
  for (const [key, parse] of syntax) {
    const text = raw[key];
    if (typeof text !== "string" || text === "") continue;
    try {
      parse(text);
    } catch {
      fail(key, `"${key}" must be ${EXPECTED[key]}: current value is ${quote(text)}`);
    }
  }

  const enableIPv4 = raw.EnableIPv4 ?? true;
  const enableIPv6 = raw.EnableIPv6 ?? false;
  const backend = raw.Backend ?? {};
  let backendType = "udp";
  if (raw.Backend) {
    const t = foldKeys(backend, ["Type"] as const).values.Type;
    if (t === undefined || t === "") {
      fail(
        "Backend.Type",
        `"Backend.Type" is missing: name the backend, e.g. "Backend": {"Type": "vxlan"} (or leave Backend out for udp)`,
      );
    }
    if (typeof t !== "string") {
      fail(
        "Backend.Type",
        `"Backend.Type" must name a backend (vxlan, host-gw, udp, alloc): current value is ${
          quote(t)
        }`,
      );
    }
    backendType = (t as string).toLowerCase();
  }
  if (!enableIPv4 && !enableIPv6) {
    fail(
      "EnableIPv4",
      `"EnableIPv4" and "EnableIPv6" are both false: no address family is left to lease; ` +
        `set "EnableIPv4": true with "Network", or "EnableIPv6": true with "IPv6Network" (or both for dual stack)`,
    );
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
        `"Network" must be ${EXPECTED.Network}: current value is ${quote(raw.Network)}`,
      );
    }
    const net = network!;
    if (net.ip === 0 && net.prefixLen === 0) {
      // flannel: Network.Empty() — "please define a correct Network parameter"
      fail(
        "Network",
        `"Network" 0.0.0.0/0 is the whole IPv4 space, which flannel reads as no network at all: set the cluster's range, e.g. "Network": "10.5.0.0/16"`,
      );
    }
    if (raw.SubnetLen) {
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
          `"Network" ${
            formatIPv4Net(net)
          } is too small: the minimum useful network prefix is /28; use a larger Network such as ${
            formatIPv4Net({ ip: (net.ip & maskIPv4(28)) >>> 0, prefixLen: 28 })
          }`,
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
        fail(key, `"${key}" must be ${EXPECTED[key]}: current value is ${quote(text)}`);
      }
      if (!containsIPv4(net, ip)) {
        fail(
          key,
          `"${key}" ${text} is not in the range of the Network ${
            formatIPv4Net(net)
          }: use an address inside it, or leave ${key} out for the default`,
        );
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
        }: no subnet can be leased; make SubnetMin the lower bound and SubnetMax the upper one`,
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
        `"IPv6Network" must be ${EXPECTED.IPv6Network}: current value is ${quote(raw.IPv6Network)}`,
      );
    }
    const net = ipv6Network!;
    if (net.ip === 0n && net.prefixLen === 0) {
      // flannel: IPv6Network.Empty() — "please define a correct IPv6Network parameter"
      fail(
        "IPv6Network",
        `"IPv6Network" ::/0 is the whole IPv6 space, which flannel reads as no network at all: set the cluster's range, e.g. "IPv6Network": "fd00:10:5::/48"`,
      );
    }
    if (raw.IPv6SubnetLen) {
      ipv6SubnetLen = raw.IPv6SubnetLen;
      if (ipv6SubnetLen > 126) {
        fail(
          "IPv6SubnetLen",
          `"IPv6SubnetLen" must be 126 or less (each host needs room for a gateway and pods): current value is ${ipv6SubnetLen}`,
        );
      }
      if (ipv6SubnetLen < net.prefixLen + 2) {
        fail(
          "IPv6SubnetLen",
          `"IPv6SubnetLen" ${ipv6SubnetLen} gives fewer than 4 subnets in ${
            formatIPv6Net(net)
          }: the network must be able to accommodate at least four subnets; use IPv6SubnetLen ${
            net.prefixLen + 2
          } or more, or a larger IPv6Network`,
        );
      }
    } else {
      if (net.prefixLen > 124) {
        fail(
          "IPv6Network",
          `"IPv6Network" ${
            formatIPv6Net(net)
          } is too small: the minimum useful network prefix is /124; use a larger IPv6Network`,
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
        fail(key, `"${key}" must be ${EXPECTED[key]}: current value is ${quote(text)}`);
      }
      if (!containsIPv6(net, ip)) {
        fail(
          key,
          `"${key}" ${text} is not in the range of the IPv6Network ${
            formatIPv6Net(net)
          }: use an address inside it, or leave ${key} out for the default`,
        );
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
    if (ipv6SubnetMin > ipv6SubnetMax) {
      fail(
        "IPv6SubnetMin",
        `"IPv6SubnetMin" ${formatIPv6(ipv6SubnetMin)} is after "IPv6SubnetMax" ${
          formatIPv6(ipv6SubnetMax)
        }: no subnet can be leased; make IPv6SubnetMin the lower bound and IPv6SubnetMax the upper one`,
      );
    }
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
        quote((values as Record<string, unknown>)[key])
      }`,
      `Backend.${key}`,
    );
  }
  return parsed.output;
}
