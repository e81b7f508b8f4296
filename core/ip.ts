/**
 * IP address and network arithmetic. IPv4 addresses are unsigned 32-bit
 * integers (`>>> 0`), IPv6 addresses are bigints; a network is
 * `{ ip, prefixLen }` with `ip` always the network address.
 *
 * @module
 */

/** An IPv4 network: `ip` is the network address as an unsigned 32-bit integer. */
export interface IPv4Net {
  readonly ip: number;
  readonly prefixLen: number;
}

/** An IPv6 network: `ip` is the network address as a 128-bit bigint. */
export interface IPv6Net {
  readonly ip: bigint;
  readonly prefixLen: number;
}

const V4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/**
 * Parse a dotted-quad IPv4 address.
 *
 * @param text e.g. `10.5.0.1`
 * @returns The address as an unsigned 32-bit integer.
 * @throws {SyntaxError} When the text is not an IPv4 address.
 * @example
 * ```ts
 * parseIPv4("10.0.0.1"); // 167772161
 * ```
 */
export function parseIPv4(text: string): number {
  const m = V4_RE.exec(text);
  if (!m) {
    throw new SyntaxError(`Cannot parse IPv4 address: current value is ${JSON.stringify(text)}`);
  }
  let n = 0;
  for (let i = 1; i <= 4; i++) {
    const part = m[i];
    const octet = Number(part);
    if (octet > 255 || (part.length > 1 && part[0] === "0")) {
      throw new SyntaxError(`Cannot parse IPv4 address: current value is ${JSON.stringify(text)}`);
    }
    n = n * 256 + octet;
  }
  return n >>> 0;
}

/** Whether the text is a valid dotted-quad IPv4 address. */
export function isIPv4(text: string): boolean {
  try {
    parseIPv4(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * Format an IPv4 address.
 *
 * @param ip Unsigned 32-bit address.
 * @returns Dotted quad.
 */
export function formatIPv4(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;
}

/**
 * Netmask of a prefix length as an unsigned 32-bit integer.
 *
 * @param prefixLen 0..32
 * @returns The mask.
 */
export function maskIPv4(prefixLen: number): number {
  return prefixLen === 0 ? 0 : (0xffffffff << (32 - prefixLen)) >>> 0;
}

/** Number of addresses in an IPv4 network of the given prefix length. */
export function sizeIPv4(prefixLen: number): number {
  return 2 ** (32 - prefixLen);
}

/**
 * Parse `a.b.c.d/n`. Host bits are cleared (like Go's `net.ParseCIDR`), so
 * `10.5.1.0/16` is the network `10.5.0.0/16`; see {@link parseIPv4NetStrict}
 * to reject them.
 *
 * @param text CIDR text.
 * @returns The network.
 * @throws {SyntaxError} When the text is not IPv4 CIDR notation.
 */
export function parseIPv4Net(text: string): IPv4Net {
  const slash = text.indexOf("/");
  if (slash < 0) {
    throw new SyntaxError(
      `Cannot parse IPv4 network: expected a.b.c.d/len, current value is ${JSON.stringify(text)}`,
    );
  }
  const ip = parseIPv4(text.slice(0, slash));
  const lenText = text.slice(slash + 1);
  if (!/^\d{1,2}$/.test(lenText) || Number(lenText) > 32) {
    throw new SyntaxError(
      `Cannot parse IPv4 network: prefix length must be 0..32, current value is ${
        JSON.stringify(text)
      }`,
    );
  }
  const prefixLen = Number(lenText);
  return { ip: (ip & maskIPv4(prefixLen)) >>> 0, prefixLen };
}

/**
 * Parse `a.b.c.d/n` and require the address to be the network address.
 *
 * @param text CIDR text.
 * @returns The network.
 * @throws {SyntaxError} When malformed or when host bits are set.
 */
export function parseIPv4NetStrict(text: string): IPv4Net {
  const net = parseIPv4Net(text);
  if (formatIPv4(net.ip) !== text.slice(0, text.indexOf("/"))) {
    throw new SyntaxError(
      `Cannot use ${text} as a network: host bits are set, did you mean ${formatIPv4Net(net)}?`,
    );
  }
  return net;
}

/** Format a network as CIDR text. */
export function formatIPv4Net(net: IPv4Net): string {
  return `${formatIPv4(net.ip)}/${net.prefixLen}`;
}

/** Whether `ip` lies inside `net`. */
export function containsIPv4(net: IPv4Net, ip: number): boolean {
  return ((ip & maskIPv4(net.prefixLen)) >>> 0) === net.ip;
}

/** Whether network `inner` lies entirely inside `outer`. */
export function containsIPv4Net(outer: IPv4Net, inner: IPv4Net): boolean {
  return inner.prefixLen >= outer.prefixLen && containsIPv4(outer, inner.ip);
}

/** Whether two networks share any address. */
export function overlapsIPv4Net(a: IPv4Net, b: IPv4Net): boolean {
  const len = Math.min(a.prefixLen, b.prefixLen);
  const m = maskIPv4(len);
  return ((a.ip & m) >>> 0) === ((b.ip & m) >>> 0);
}

/** Whether two networks are the same. */
export function equalIPv4Net(a: IPv4Net, b: IPv4Net): boolean {
  return a.ip === b.ip && a.prefixLen === b.prefixLen;
}

/**
 * The network of the same size that follows `net`, or `null` past
 * 255.255.255.255.
 */
export function nextIPv4Net(net: IPv4Net): IPv4Net | null {
  const next = net.ip + sizeIPv4(net.prefixLen);
  return next > 0xffffffff ? null : { ip: next, prefixLen: net.prefixLen };
}

/** Last address of a network (its broadcast address). */
export function lastIPv4(net: IPv4Net): number {
  return (net.ip + sizeIPv4(net.prefixLen) - 1) >>> 0;
}

// ---------------------------------------------------------------------------
// IPv6

/**
 * Parse an IPv6 address (with `::` compression; an embedded IPv4 tail is
 * accepted).
 *
 * @param text e.g. `fd00:12:13::`
 * @returns The address as a bigint.
 * @throws {SyntaxError} When the text is not an IPv6 address.
 */
export function parseIPv6(text: string): bigint {
  const bad = () =>
    new SyntaxError(`Cannot parse IPv6 address: current value is ${JSON.stringify(text)}`);
  if (!/^[0-9a-fA-F:.]+$/.test(text)) throw bad();
  let groups: string[];
  const dbl = text.indexOf("::");
  if (dbl >= 0) {
    if (text.indexOf("::", dbl + 1) >= 0) throw bad();
    const head = text.slice(0, dbl) ? text.slice(0, dbl).split(":") : [];
    const tail = text.slice(dbl + 2) ? text.slice(dbl + 2).split(":") : [];
    const tailCount = tail.length + (tail.length && tail[tail.length - 1].includes(".") ? 1 : 0);
    const missing = 8 - head.length - tailCount;
    if (missing < 1) throw bad();
    groups = [...head, ...Array(missing).fill("0"), ...tail];
  } else {
    groups = text.split(":");
  }
  const last = groups[groups.length - 1];
  if (last.includes(".")) {
    let v4: number;
    try {
      v4 = parseIPv4(last);
    } catch {
      throw bad();
    }
    groups.splice(groups.length - 1, 1, (v4 >>> 16).toString(16), (v4 & 0xffff).toString(16));
  }
  if (groups.length !== 8) throw bad();
  let n = 0n;
  for (const gr of groups) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(gr)) throw bad();
    n = (n << 16n) | BigInt(parseInt(gr, 16));
  }
  return n;
}

/**
 * Whether text is an IPv6 address (see {@link parseIPv6}).
 *
 * @param text e.g. `fd00::1`.
 * @returns True when it parses.
 */
export function isIPv6(text: string): boolean {
  try {
    parseIPv6(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * Format an IPv6 address exactly as Go's `net.IP.String` (flannel's key and
 * subnet.env format): RFC 5952 — lowercase hex without leading zeros, the
 * longest run of two or more zero groups compressed to `::` (the first one on
 * a tie), a single zero group left as `0`; and, like Go, an IPv4-mapped
 * address (`::ffff:a.b.c.d`) as plain dotted IPv4.
 *
 * @param ip The address as a 128-bit bigint.
 * @returns The text, e.g. `fd00:12:13::`.
 * @example
 * ```ts
 * formatIPv6(0xfd000012001300000000000000000000n); // "fd00:12:13::"
 * ```
 */
export function formatIPv6(ip: bigint): string {
  if (ip >> 32n === 0xffffn) return formatIPv4(Number(ip & 0xffffffffn));
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((ip >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((x) => x.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

/** Netmask of an IPv6 prefix length. */
export function maskIPv6(prefixLen: number): bigint {
  const all = (1n << 128n) - 1n;
  return prefixLen === 0 ? 0n : (all << BigInt(128 - prefixLen)) & all;
}

/**
 * Parse IPv6 CIDR text; host bits are cleared.
 *
 * @throws {SyntaxError} When malformed.
 */
export function parseIPv6Net(text: string): IPv6Net {
  const slash = text.indexOf("/");
  const lenText = text.slice(slash + 1);
  if (slash < 0 || !/^\d{1,3}$/.test(lenText) || Number(lenText) > 128) {
    throw new SyntaxError(
      `Cannot parse IPv6 network: expected addr/len with len 0..128, current value is ${
        JSON.stringify(text)
      }`,
    );
  }
  const prefixLen = Number(lenText);
  return { ip: parseIPv6(text.slice(0, slash)) & maskIPv6(prefixLen), prefixLen };
}

/** Format an IPv6 network as CIDR text. */
export function formatIPv6Net(net: IPv6Net): string {
  return `${formatIPv6(net.ip)}/${net.prefixLen}`;
}

/** Whether `ip` lies inside `net`. */
export function containsIPv6(net: IPv6Net, ip: bigint): boolean {
  return (ip & maskIPv6(net.prefixLen)) === net.ip;
}

/** Whether two IPv6 networks share any address. */
export function overlapsIPv6Net(a: IPv6Net, b: IPv6Net): boolean {
  const m = maskIPv6(Math.min(a.prefixLen, b.prefixLen));
  return (a.ip & m) === (b.ip & m);
}

/** Whether two IPv6 networks are the same. */
export function equalIPv6Net(a: IPv6Net | undefined, b: IPv6Net | undefined): boolean {
  if (!a || !b) return a === b;
  return a.ip === b.ip && a.prefixLen === b.prefixLen;
}

/** The following IPv6 network of the same size, or `null` past the end of the space. */
export function nextIPv6Net(net: IPv6Net): IPv6Net | null {
  const next = net.ip + (1n << BigInt(128 - net.prefixLen));
  return next >= 1n << 128n ? null : { ip: next, prefixLen: net.prefixLen };
}

// ---------------------------------------------------------------------------
// flannel's subnet keys

/**
 * The subnets a lease holds: an IPv4 subnet (with an IPv6 one in a
 * dual-stack network), or an IPv6 subnet alone in an IPv6-only network
 * (`EnableIPv4: false`). At least one is always present.
 */
export type SubnetPair =
  | { readonly subnet: IPv4Net; readonly ipv6Subnet?: IPv6Net }
  | { readonly subnet?: undefined; readonly ipv6Subnet: IPv6Net };

/**
 * Pair up optional subnets.
 *
 * @param subnet The IPv4 subnet, if any.
 * @param ipv6Subnet The IPv6 subnet, if any.
 * @returns The pair, or `null` when both are missing.
 * @example
 * ```ts
 * subnetPair(undefined, parseIPv6Net("fd00::/64")); // { ipv6Subnet: … }
 * ```
 */
export function subnetPair(subnet?: IPv4Net, ipv6Subnet?: IPv6Net): SubnetPair | null {
  if (subnet) return ipv6Subnet ? { subnet, ipv6Subnet } : { subnet };
  return ipv6Subnet ? { ipv6Subnet } : null;
}

/**
 * A pair as text for messages and logs: `10.5.1.0/24`, `fd00::/64` or
 * `10.5.1.0/24 + fd00::/64`.
 *
 * @param pair The subnets.
 * @returns The text.
 */
export function formatSubnetPair(pair: SubnetPair): string {
  const parts: string[] = [];
  if (pair.subnet) parts.push(formatIPv4Net(pair.subnet));
  if (pair.ipv6Subnet) parts.push(formatIPv6Net(pair.ipv6Subnet));
  return parts.join(" + ");
}

/**
 * The IPv4 part flannel writes for a lease without an IPv4 subnet: Go's
 * `MakeSubnetKey` formats the zero `ip.IP4Net` (pkg/subnet/subnet.go).
 */
const NO_IPV4_KEY = "0.0.0.0-0";

/**
 * The etcd key suffix flannel uses for a lease (pkg/subnet/subnet.go
 * `MakeSubnetKey`): `10.5.34.0-24`, `10.5.34.0-24&fd00:12:13::-56` with an
 * IPv6 subnet, and `0.0.0.0-0&fd00:12:13::-56` for an IPv6-only lease (Go's
 * zero IPv4 network).
 *
 * @param subnet The IPv4 subnet; `undefined` for an IPv6-only lease.
 * @param ipv6Subnet The IPv6 subnet, if any.
 * @returns The key suffix.
 * @throws {TypeError} When both are missing.
 * @example
 * ```ts
 * subnetKey(undefined, parseIPv6Net("fd00:12:13::/56")); // "0.0.0.0-0&fd00:12:13::-56"
 * ```
 */
export function subnetKey(subnet: IPv4Net | undefined, ipv6Subnet?: IPv6Net): string {
  if (!subnet && !ipv6Subnet) {
    throw new TypeError("Cannot make a subnet key: neither an IPv4 nor an IPv6 subnet is given");
  }
  const v4 = subnet ? `${formatIPv4(subnet.ip)}-${subnet.prefixLen}` : NO_IPV4_KEY;
  return ipv6Subnet ? `${v4}&${formatIPv6(ipv6Subnet.ip)}-${ipv6Subnet.prefixLen}` : v4;
}

// flannel's own pattern: the IPv6 part is lowercase hex, as Go formats it
const KEY_RE = /^(\d+\.\d+\.\d+\.\d+)-(\d+)(?:&([0-9a-f:]+)-(\d+))?$/;

/**
 * Parse a subnet key (see {@link subnetKey}). `0.0.0.0-0&<v6>-<len>` is an
 * IPv6-only lease.
 *
 * @param key e.g. `10.5.34.0-24&fd00:12:13::-56`.
 * @returns The subnets; `null` for anything that is not a key, whose
 *   address is not the network address, or `0.0.0.0-0` without an IPv6 part.
 */
export function parseSubnetKey(key: string): SubnetPair | null {
  const m = KEY_RE.exec(key);
  if (!m) return null;
  try {
    const len = Number(m[2]);
    if (len > 32) return null;
    const ip = parseIPv4(m[1]);
    if (((ip & maskIPv4(len)) >>> 0) !== ip) return null;
    const noIPv4 = `${m[1]}-${m[2]}` === NO_IPV4_KEY;
    if (!m[3]) return noIPv4 ? null : { subnet: { ip, prefixLen: len } };
    const len6 = Number(m[4]);
    if (len6 > 128) return null;
    const ip6 = parseIPv6(m[3]);
    if ((ip6 & maskIPv6(len6)) !== ip6) return null;
    const ipv6Subnet = { ip: ip6, prefixLen: len6 };
    return noIPv4 ? { ipv6Subnet } : { subnet: { ip, prefixLen: len }, ipv6Subnet };
  } catch {
    return null;
  }
}

/**
 * Parse a MAC address `aa:bb:cc:dd:ee:ff` (case-insensitive).
 *
 * @throws {SyntaxError} When malformed.
 */
export function parseMac(text: string): Uint8Array {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(text)) {
    throw new SyntaxError(
      `Cannot parse MAC address: expected aa:bb:cc:dd:ee:ff, current value is ${
        JSON.stringify(text)
      }`,
    );
  }
  return Uint8Array.from(text.split(":").map((h) => parseInt(h, 16)));
}

/** Format 6 bytes as a lowercase MAC address. */
export function formatMac(bytes: Uint8Array): string {
  return Array.from(bytes.subarray(0, 6), (b) => b.toString(16).padStart(2, "0")).join(":");
}
