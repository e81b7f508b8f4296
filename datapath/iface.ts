/**
 * Picking the external (underlay) interface and public IP, as flannel's
 * `--iface`, `--iface-regex`, `--iface-can-reach` and `--public-ip` do,
 * defaulting to the interface of the default route. Reads the current
 * network namespace through /sys/class/net, /proc/net/route and
 * getifaddrs (node:os), so it works unchanged under `ip netns exec`.
 *
 * @module
 */

import * as fs from "node:fs";
import * as os from "node:os";
import { containsIPv4, isIPv4, parseIPv4 } from "../core/ip.ts";

/** The host's external (underlay) interface, as picked from the flags. */
export interface ExternalInterface {
  /** Interface name, e.g. `eth0`. */
  readonly name: string;
  /** Kernel interface index (0 when unknown, e.g. in unit tests). */
  readonly index: number;
  /** Interface MTU. */
  readonly mtu: number;
  /** The IPv4 address on the interface (the VXLAN/UDP source). */
  readonly ifaceAddr: string;
  /** The address peers reach this host at (`--public-ip`, else `ifaceAddr`). */
  readonly extAddr: string;
  /** The IPv6 address on the interface, when IPv6 is enabled. */
  readonly ifaceV6Addr?: string;
  /** Public IPv6 address, when IPv6 is enabled. */
  readonly extV6Addr?: string;
}

/** One interface of this namespace. */
export interface InterfaceInfo {
  readonly name: string;
  readonly index: number;
  readonly mtu: number;
  readonly up: boolean;
  /** IPv4 addresses (dotted), in kernel order. */
  readonly ipv4: string[];
  /** Global IPv6 addresses. */
  readonly ipv6: string[];
}

/** One IPv4 route from the main table. */
export interface RouteEntry {
  readonly iface: string;
  readonly dst: number;
  readonly prefixLen: number;
  readonly metric: number;
}

/** Where interface facts come from (the real system, or a table in tests). */
export interface InterfaceSource {
  interfaces(): InterfaceInfo[];
  routes(): RouteEntry[];
}

const readNum = (p: string): number => {
  try {
    return Number(fs.readFileSync(p, "utf8").trim());
  } catch {
    return 0;
  }
};

/** The real system: /sys/class/net, getifaddrs, /proc/net/route. */
export const systemInterfaces: InterfaceSource = {
  interfaces() {
    const addrs = os.networkInterfaces();
    let names: string[] = [];
    try {
      names = fs.readdirSync("/sys/class/net");
    } catch {
      names = Object.keys(addrs);
    }
    return names.map((name) => {
      const list = addrs[name] ?? [];
      const flags = readNum(`/sys/class/net/${name}/flags`);
      return {
        name,
        index: readNum(`/sys/class/net/${name}/ifindex`),
        mtu: readNum(`/sys/class/net/${name}/mtu`) || 1500,
        up: (flags & 1) === 1,
        ipv4: list.filter((a) => a.family === "IPv4").map((a) => a.address),
        ipv6: list.filter((a) => a.family === "IPv6" && !a.address.startsWith("fe80")).map((a) =>
          a.address
        ),
      };
    }).sort((a, b) => a.index - b.index);
  },
  routes() {
    let text = "";
    try {
      text = fs.readFileSync("/proc/net/route", "utf8");
    } catch {
      return [];
    }
    return parseProcNetRoute(text);
  },
};

/** Parse /proc/net/route (hex, host byte order = little-endian here). */
export function parseProcNetRoute(text: string): RouteEntry[] {
  const out: RouteEntry[] = [];
  const le = (hex: string) => {
    const n = parseInt(hex, 16) >>> 0;
    return (((n & 0xff) << 24) | ((n >>> 8 & 0xff) << 16) | ((n >>> 16 & 0xff) << 8) |
      (n >>> 24)) >>>
      0;
  };
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const flags = parseInt(f[3], 16);
    if (!(flags & 1)) continue; // RTF_UP
    const mask = le(f[7]);
    let prefixLen = 0;
    for (let m = mask; m; m = (m << 1) >>> 0) prefixLen++;
    out.push({ iface: f[0], dst: le(f[1]), prefixLen, metric: Number(f[6]) });
  }
  return out;
}

/** Flags that choose the external interface. */
export interface InterfaceFlags {
  /** `--iface`: names or IPs, tried in order. */
  readonly iface?: readonly string[];
  /** `--iface-regex`: patterns matched against names and IPs, after `iface`. */
  readonly ifaceRegex?: readonly string[];
  /** `--iface-can-reach`: the interface the route to this IP uses. */
  readonly ifaceCanReach?: string;
  /** `--public-ip`: what peers use to reach this host. */
  readonly publicIP?: string;
  /** `--public-ipv6`. */
  readonly publicIPv6?: string;
}

/** No interface matches the flags; the message lists what exists. */
export class InterfaceError extends Error {
  override name = "InterfaceError";
}

/**
 * Choose the external interface and public address, in flannel's order:
 * each `--iface` (a name, or an IP held by an interface), then each
 * `--iface-regex` (matched against every interface's IPv4 addresses first,
 * then against the names), then `--iface-can-reach` (the interface of the
 * longest-prefix route to that IP). An option that matches nothing is
 * skipped; when options were given and none matched, that is an error. With
 * no options: the interface holding `--public-ip` if there is one, else the
 * default route's interface (lowest metric), else the only up non-loopback
 * interface with an IPv4 address.
 *
 * @param flags The interface flags.
 * @param source Where to read interfaces and routes (default: this namespace).
 * @returns The interface with its address and the public IP peers should use.
 * @throws {InterfaceError} Naming the flag, its value and the interfaces that exist.
 * @example
 * ```ts
 * const ext = pickExternalInterface({ iface: ["eth1", "eth0"] });
 * ext.name; // "eth1" when it exists and has an IPv4 address
 * ```
 */
export function pickExternalInterface(
  flags: InterfaceFlags,
  source: InterfaceSource = systemInterfaces,
): ExternalInterface {
  const all = source.interfaces();
  const usable = all.filter((i) => i.ipv4.length > 0);
  const known = () =>
    all.map((i) => `${i.name}${i.ipv4.length ? ` (${i.ipv4.join(", ")})` : ""}`).join(", ") ||
    "none";
  const result = (i: InterfaceInfo, addr?: string): ExternalInterface => {
    const ifaceAddr = addr ?? i.ipv4[0];
    return {
      name: i.name,
      index: i.index,
      mtu: i.mtu,
      ifaceAddr,
      extAddr: flags.publicIP || ifaceAddr,
      ifaceV6Addr: i.ipv6[0],
      extV6Addr: flags.publicIPv6 || i.ipv6[0],
    };
  };
  if (flags.publicIP && !isIPv4(flags.publicIP)) {
    throw new InterfaceError(
      `--public-ip must be an IPv4 address: current value is ${JSON.stringify(flags.publicIP)}`,
    );
  }

  // Compile every pattern first: a typo is an error even when an earlier option matches.
  const patterns = (flags.ifaceRegex ?? []).map((pattern) => {
    try {
      return { pattern, re: new RegExp(pattern) };
    } catch (e) {
      throw new InterfaceError(
        `--iface-regex ${JSON.stringify(pattern)} is not a valid regular expression (${
          (e as Error).message
        }); fix the pattern, e.g. --iface-regex '^eth[0-9]+$'`,
      );
    }
  });

  const misses: string[] = [];
  for (const want of flags.iface ?? []) {
    if (isIPv4(want)) {
      const i = usable.find((x) => x.ipv4.includes(want));
      if (i) return result(i, want);
      misses.push(`--iface ${want}: no interface has this address`);
    } else {
      const i = all.find((x) => x.name === want);
      if (i && i.ipv4.length) return result(i);
      misses.push(
        i
          ? `--iface ${want}: the interface has no IPv4 address`
          : `--iface ${want}: no such interface`,
      );
    }
  }
  for (const { pattern, re } of patterns) {
    for (const i of usable) {
      const ip = i.ipv4.find((a) => re.test(a));
      if (ip) return result(i, ip);
    }
    const i = usable.find((x) => re.test(x.name));
    if (i) return result(i);
    misses.push(`--iface-regex ${pattern}: matches no interface name or IPv4 address`);
  }

  const routes = source.routes();
  if (flags.ifaceCanReach) {
    let target: number;
    try {
      target = parseIPv4(flags.ifaceCanReach);
    } catch {
      throw new InterfaceError(
        `--iface-can-reach must be an IPv4 address: current value is ${
          JSON.stringify(flags.ifaceCanReach)
        }`,
      );
    }
    const best = routes
      .filter((r) => containsIPv4({ ip: r.dst, prefixLen: r.prefixLen }, target))
      .sort((a, b) => b.prefixLen - a.prefixLen || a.metric - b.metric)[0];
    const i = best && usable.find((x) => x.name === best.iface);
    if (i) return result(i);
    misses.push(
      `--iface-can-reach ${flags.ifaceCanReach}: ${
        best
          ? `its route goes through ${best.iface}, which has no IPv4 address`
          : "no route reaches it"
      }`,
    );
  }
  if (misses.length) {
    throw new InterfaceError(
      `no interface matches the options given (${misses.join("; ")}); interfaces here: ${known()}`,
    );
  }

  if (flags.publicIP) {
    const holder = usable.find((x) => x.ipv4.includes(flags.publicIP!));
    if (holder) return result(holder, flags.publicIP);
  }
  const def = routes.filter((r) => r.prefixLen === 0).sort((a, b) => a.metric - b.metric)[0];
  const i = def && usable.find((x) => x.name === def.iface);
  if (i) return result(i);
  const fallback = usable.filter((x) => x.name !== "lo" && x.up);
  if (fallback.length === 1) return result(fallback[0]);
  throw new InterfaceError(
    `cannot pick the external interface: there is no default route; name it with --iface <name|ip> or --iface-can-reach <peer ip> (interfaces: ${known()})`,
  );
}

/** What flannel orders an interface's IPv4 addresses by (from an rtnetlink address dump). */
export interface AddressFacts {
  /** Dotted IPv4 address. */
  readonly ip: string;
  /** `IFA_F_*` flags. */
  readonly flags: number;
}

/** `IFA_F_SECONDARY` (for IPv6 the same bit is `IFA_F_TEMPORARY`). */
export const IFA_F_SECONDARY = 0x01;
/** `IFA_F_DEPRECATED`. */
export const IFA_F_DEPRECATED = 0x20;
/** `IFA_F_PERMANENT`: configured, not from DHCP or autoconfiguration. */
export const IFA_F_PERMANENT = 0x80;

/**
 * An interface's IPv4 addresses in flannel's order of preference (pure):
 * global before link-local (169.254/16), permanent (static) before dynamic
 * (DHCP), primary before secondary, kernel order otherwise; deprecated ones
 * dropped (flannel's `compareAddrs` and `GetInterfaceIP4Addrs`).
 *
 * @param addresses The addresses in kernel order, with their flags.
 * @returns The usable addresses, best first.
 * @example
 * ```ts
 * preferredIPv4Order([
 *   { ip: "192.0.2.50", flags: 0 },     // from DHCP
 *   { ip: "192.0.2.60", flags: 0x81 },  // static, secondary
 * ]); // ["192.0.2.60", "192.0.2.50"]
 * ```
 */
export function preferredIPv4Order(addresses: readonly AddressFacts[]): string[] {
  const rank = (a: AddressFacts) =>
    (a.ip.startsWith("169.254.") ? 4 : 0) + (a.flags & IFA_F_PERMANENT ? 0 : 2) +
    (a.flags & IFA_F_SECONDARY ? 1 : 0);
  return addresses
    .map((a, i) => ({ a, i, r: rank(a) }))
    .filter(({ a }) => !(a.flags & IFA_F_DEPRECATED))
    .sort((x, y) => x.r - y.r || x.i - y.i)
    .map(({ a }) => a.ip);
}

/**
 * An interface source whose IPv4 lists follow {@link preferredIPv4Order},
 * for the interfaces `facts` knows (by index); others keep kernel order.
 *
 * @param source Where interfaces and routes come from.
 * @param facts Address facts by interface index (an rtnetlink dump).
 * @returns The reordered source.
 */
export function withPreferredAddresses(
  source: InterfaceSource,
  facts: ReadonlyMap<number, readonly AddressFacts[]>,
): InterfaceSource {
  return {
    interfaces: () =>
      source.interfaces().map((i) => {
        const known = facts.get(i.index);
        if (!known) return i;
        const ordered = preferredIPv4Order(known).filter((ip) => i.ipv4.includes(ip));
        return {
          ...i,
          ipv4: [...ordered, ...i.ipv4.filter((ip) => !known.some((k) => k.ip === ip))],
        };
      }),
    routes: () => source.routes(),
  };
}
