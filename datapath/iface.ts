/**
 * Picking the external (underlay) interface and public addresses, as
 * flannel's `--iface`, `--iface-regex`, `--iface-can-reach`, `--public-ip`
 * and `--public-ipv6` do (pkg/ipmatch/match.go), for IPv4, IPv6-only and
 * dual-stack networks; defaulting to the interface of the default route
 * (`/proc/net/route`, `/proc/net/ipv6_route`). Reads the current network
 * namespace through /sys/class/net, getifaddrs (node:os), /proc/net/if_inet6
 * and the route files, so it works unchanged under `ip netns exec`.
 *
 * IPv6 addresses are taken as flannel orders them (pkg/ip/iface.go
 * `GetInterfaceIP6Addrs`): global scope (ULAs included), not deprecated;
 * manually assigned before autoconfigured, non-temporary before temporary.
 * Unlike flannel, a link-local address is never used: peers cannot reach it.
 *
 * @module
 */

import * as fs from "node:fs";
import * as os from "node:os";
import {
  containsIPv4,
  containsIPv6,
  formatIPv6,
  isIPv4,
  isIPv6,
  parseIPv4,
  parseIPv6,
} from "../core/ip.ts";

/** The host's external (underlay) interface, as picked from the flags. */
export interface ExternalInterface {
  /** Interface name, e.g. `eth0`. */
  readonly name: string;
  /** Kernel interface index (0 when unknown, e.g. in unit tests). */
  readonly index: number;
  /** Interface MTU. */
  readonly mtu: number;
  /** The IPv4 address on the interface (the VXLAN/UDP source); `""` when IPv4 is disabled. */
  readonly ifaceAddr: string;
  /** The address peers reach this host at (`--public-ip`, else `ifaceAddr`); `""` when IPv4 is disabled. */
  readonly extAddr: string;
  /** The IPv6 address on the interface, when IPv6 is enabled. */
  readonly ifaceV6Addr?: string;
  /** The IPv6 address peers reach this host at (`--public-ipv6`, else `ifaceV6Addr`). */
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
  /** Usable IPv6 addresses (global scope, not deprecated), in flannel's preference order. */
  readonly ipv6: string[];
}

/** One IPv4 route from the main table. */
export interface RouteEntry {
  readonly iface: string;
  readonly dst: number;
  readonly prefixLen: number;
  readonly metric: number;
}

/** One IPv6 route (unicast, up, not a local or reject route). */
export interface Route6Entry {
  readonly iface: string;
  readonly dst: bigint;
  readonly prefixLen: number;
  readonly metric: number;
}

/** Where interface facts come from (the real system, or a table in tests). */
export interface InterfaceSource {
  interfaces(): InterfaceInfo[];
  routes(): RouteEntry[];
  /** IPv6 routes; none when absent. */
  routes6?(): Route6Entry[];
}

const readText = (p: string): string | undefined => {
  try {
    return fs.readFileSync(p, "utf8");
  } catch {
    return undefined;
  }
};

const readNum = (p: string): number => Number(readText(p)?.trim() ?? 0) || 0;

/** The real system: /sys/class/net, getifaddrs, /proc/net/if_inet6, the route files. */
export const systemInterfaces: InterfaceSource = {
  interfaces() {
    const addrs = os.networkInterfaces();
    let names: string[] = [];
    try {
      names = fs.readdirSync("/sys/class/net");
    } catch {
      names = Object.keys(addrs);
    }
    const inet6 = readText("/proc/net/if_inet6");
    const v6 = inet6 === undefined ? undefined : parseProcNetIfInet6(inet6);
    return names.map((name) => {
      const list = addrs[name] ?? [];
      const flags = readNum(`/sys/class/net/${name}/flags`);
      return {
        name,
        index: readNum(`/sys/class/net/${name}/ifindex`),
        mtu: readNum(`/sys/class/net/${name}/mtu`) || 1500,
        up: (flags & 1) === 1,
        ipv4: list.filter((a) => a.family === "IPv4").map((a) => a.address),
        ipv6: v6
          ? usableIPv6(v6.filter((a) => a.iface === name))
          : list.filter((a) => a.family === "IPv6" && !/^fe[89ab]/i.test(a.address)).map((a) =>
            a.address
          ),
      };
    }).sort((a, b) => a.index - b.index);
  },
  routes() {
    return parseProcNetRoute(readText("/proc/net/route") ?? "");
  },
  routes6() {
    return parseProcNetIPv6Route(readText("/proc/net/ipv6_route") ?? "");
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

const RTF_UP = 0x1;
const RTF_REJECT = 0x200;
const RTF_LOCAL = 0x80000000;

/**
 * Parse /proc/net/ipv6_route: `dst dstlen src srclen nexthop metric refcnt
 * use flags iface`, all hex. Routes that are down, reject routes (the
 * kernel's `lo` null route) and local routes (this host's own addresses)
 * are left out.
 *
 * @param text The file's contents.
 * @returns The routes.
 */
export function parseProcNetIPv6Route(text: string): Route6Entry[] {
  const out: Route6Entry[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || !/^[0-9a-f]{32}$/i.test(f[0])) continue;
    const flags = parseInt(f[8], 16) >>> 0;
    if (!(flags & RTF_UP) || flags & RTF_REJECT || (flags & RTF_LOCAL) >>> 0) continue;
    out.push({
      iface: f[9],
      dst: BigInt("0x" + f[0]),
      prefixLen: parseInt(f[1], 16),
      metric: parseInt(f[5], 16) >>> 0,
    });
  }
  return out;
}

/** One line of /proc/net/if_inet6. */
export interface IfInet6Entry {
  readonly iface: string;
  /** The address in Go's text form. */
  readonly address: string;
  readonly prefixLen: number;
  /** Kernel scope: 0x00 global, 0x10 host, 0x20 link. */
  readonly scope: number;
  /** IFA_F_* flags. */
  readonly flags: number;
}

/**
 * Parse /proc/net/if_inet6: `address ifindex prefixlen scope flags iface`, hex.
 *
 * @param text The file's contents.
 * @returns The addresses, in file order.
 */
export function parseProcNetIfInet6(text: string): IfInet6Entry[] {
  const out: IfInet6Entry[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6 || !/^[0-9a-f]{32}$/i.test(f[0])) continue;
    out.push({
      iface: f[5],
      address: formatIPv6(BigInt("0x" + f[0])),
      prefixLen: parseInt(f[2], 16),
      scope: parseInt(f[3], 16),
      flags: parseInt(f[4], 16),
    });
  }
  return out;
}

const IFA_F_TEMPORARY = 0x01;
const IFA_F_DADFAILED = 0x08;
/** `IFA_F_DEPRECATED`. */
export const IFA_F_DEPRECATED = 0x20;
const IFA_F_TENTATIVE = 0x40;
/** `IFA_F_PERMANENT`: configured, not from DHCP or autoconfiguration. */
export const IFA_F_PERMANENT = 0x80;
const SCOPE_GLOBAL = 0x00;

/**
 * The addresses flannel would use, in its order (pkg/ip/iface.go
 * `compareAddrs`): global scope only, without deprecated, tentative or
 * DAD-failed ones; permanent (manually assigned) before autoconfigured,
 * non-temporary before temporary, otherwise as listed.
 *
 * @param entries One interface's addresses.
 * @returns The usable addresses, best first.
 */
export function usableIPv6(entries: readonly IfInet6Entry[]): string[] {
  const rank = (e: IfInet6Entry) =>
    (e.flags & IFA_F_PERMANENT ? 0 : 2) + (e.flags & IFA_F_TEMPORARY ? 1 : 0);
  return entries
    .filter((e) =>
      e.scope === SCOPE_GLOBAL &&
      !(e.flags & (IFA_F_DEPRECATED | IFA_F_TENTATIVE | IFA_F_DADFAILED))
    )
    .map((e, i) => ({ e, i }))
    .sort((a, b) => rank(a.e) - rank(b.e) || a.i - b.i)
    .map(({ e }) => e.address);
}

/** Address families to pick addresses for (the network config's EnableIPv4/EnableIPv6). */
export interface AddressFamilies {
  readonly ipv4: boolean;
  readonly ipv6: boolean;
}

/** Flags that choose the external interface. */
export interface InterfaceFlags {
  /** `--iface`: names or IPs (IPv4 or IPv6), tried in order. */
  readonly iface?: readonly string[];
  /** `--iface-regex`: patterns matched against names and IPs, after `iface`. */
  readonly ifaceRegex?: readonly string[];
  /** `--iface-can-reach`: the interface the route to this IP (IPv4 or IPv6) uses. */
  readonly ifaceCanReach?: string;
  /** `--public-ip`: what peers use to reach this host over IPv4 (ignored without IPv4). */
  readonly publicIP?: string;
  /** `--public-ipv6`: what peers use to reach this host over IPv6. */
  readonly publicIPv6?: string;
  /**
   * The families the network uses (flannel's ipStack). Each enabled family
   * needs an address on the interface. Default: IPv4 needed, and the
   * interface's IPv6 address filled in when it has one.
   */
  readonly families?: AddressFamilies;
}

/** No interface matches the flags; the message lists what exists. */
export class InterfaceError extends Error {
  override name = "InterfaceError";
}

const sameIPv6 = (a: string, b: string) => isIPv6(a) && isIPv6(b) && parseIPv6(a) === parseIPv6(b);

/** Longest-prefix match, lowest metric on a tie; `undefined` when no route covers the target. */
function bestRoute<R extends { prefixLen: number; metric: number }>(
  routes: readonly R[],
  covers: (r: R) => boolean,
): R | undefined {
  return routes.filter(covers).sort((a, b) => b.prefixLen - a.prefixLen || a.metric - b.metric)[0];
}

/**
 * Choose the external interface and public addresses, in flannel's order:
 * each `--iface` (a name, or an IPv4 or IPv6 address held by an interface),
 * then each `--iface-regex` (matched against the interfaces' addresses of
 * the enabled families — in a dual-stack network one interface must match
 * with an IPv4 and an IPv6 address — then against the names), then
 * `--iface-can-reach` (the interface of the longest-prefix route to that IPv4
 * or IPv6 address). An option that matches nothing, or an interface without
 * an address of an enabled family, is skipped; when options were given and
 * none matched, that is an error. With no options: the interface holding
 * `--public-ip` (or `--public-ipv6`) if there is one, else the default
 * route's interface (lowest metric; IPv6's default route in an IPv6-only
 * network; in a dual-stack network both default routes must leave through
 * the same interface, as flannel requires), else the only up non-loopback
 * interface with the needed addresses.
 *
 * The IPv6 address on the interface is `--public-ipv6` when the interface
 * holds it (flannel's dual-stack rule), else its first usable one.
 *
 * @param flags The interface flags.
 * @param source Where to read interfaces and routes (default: this namespace).
 * @returns The interface with its addresses and the public ones peers should use.
 * @throws {InterfaceError} Naming the flag, its value and the interfaces that exist.
 * @example
 * ```ts
 * const ext = pickExternalInterface({ iface: ["eth1"], families: { ipv4: true, ipv6: true } });
 * ext.ifaceV6Addr; // eth1's global IPv6 address
 * ```
 */
export function pickExternalInterface(
  flags: InterfaceFlags,
  source: InterfaceSource = systemInterfaces,
): ExternalInterface {
  const fam = flags.families ?? { ipv4: true, ipv6: false };
  const lenient6 = flags.families === undefined;
  if (!fam.ipv4 && !fam.ipv6) {
    throw new InterfaceError(
      "cannot pick the external interface: neither IPv4 nor IPv6 is enabled; enable one in the network config",
    );
  }
  const all = source.interfaces();
  const missing = (i: InterfaceInfo): string | null =>
    fam.ipv4 && !i.ipv4.length
      ? "has no IPv4 address"
      : fam.ipv6 && !i.ipv6.length
      ? "has no global IPv6 address"
      : null;
  const usable = all.filter((i) => missing(i) === null);
  const known = () =>
    all.map((i) => {
      const a = [...(fam.ipv4 ? i.ipv4 : []), ...(fam.ipv6 ? i.ipv6 : [])];
      return `${i.name}${a.length ? ` (${a.join(", ")})` : ""}`;
    }).join(", ") || "none";
  const families = fam.ipv4 ? (fam.ipv6 ? "IPv4 and IPv6" : "IPv4") : "IPv6";

  if (flags.publicIP && !isIPv4(flags.publicIP)) {
    throw new InterfaceError(
      `--public-ip must be an IPv4 address: current value is ${JSON.stringify(flags.publicIP)}`,
    );
  }
  if (flags.publicIPv6 && !isIPv6(flags.publicIPv6)) {
    throw new InterfaceError(
      `--public-ipv6 must be an IPv6 address: current value is ${JSON.stringify(flags.publicIPv6)}`,
    );
  }
  const result = (i: InterfaceInfo, pin: { v4?: string; v6?: string } = {}): ExternalInterface => {
    const ifaceAddr = fam.ipv4 ? pin.v4 ?? i.ipv4[0] : "";
    const held6 = flags.publicIPv6 && i.ipv6.find((a) => sameIPv6(a, flags.publicIPv6!));
    const ifaceV6Addr = fam.ipv6 || lenient6 ? pin.v6 ?? (held6 || i.ipv6[0]) : undefined;
    return {
      name: i.name,
      index: i.index,
      mtu: i.mtu,
      ifaceAddr,
      extAddr: fam.ipv4 ? flags.publicIP || ifaceAddr : "",
      ifaceV6Addr,
      extV6Addr: fam.ipv6 || lenient6 ? flags.publicIPv6 || ifaceV6Addr : undefined,
    };
  };

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
    const v6 = !isIPv4(want) && isIPv6(want);
    if (isIPv4(want) || v6) {
      const i = all.find((x) => v6 ? x.ipv6.some((a) => sameIPv6(a, want)) : x.ipv4.includes(want));
      const why = i ? missing(i) : "no interface has this address";
      if (i && why === null) return result(i, v6 ? { v6: want } : { v4: want });
      misses.push(`--iface ${want}: ${i ? `the interface ${i.name} ${why}` : why}`);
    } else {
      const i = all.find((x) => x.name === want);
      const why = i ? missing(i) : null;
      if (i && why === null) return result(i);
      misses.push(`--iface ${want}: ${i ? `the interface ${why}` : "no such interface"}`);
    }
  }
  for (const { pattern, re } of patterns) {
    for (const i of usable) {
      const v4 = fam.ipv4 ? i.ipv4.find((a) => re.test(a)) : undefined;
      const v6 = fam.ipv6 ? i.ipv6.find((a) => re.test(a)) : undefined;
      if ((!fam.ipv4 || v4) && (!fam.ipv6 || v6)) return result(i, { v4, v6 });
    }
    const i = usable.find((x) => re.test(x.name));
    if (i) return result(i);
    misses.push(
      `--iface-regex ${pattern}: matches no interface name or ${
        fam.ipv4 && fam.ipv6 ? "IPv4 and IPv6 address pair" : `${families} address`
      }`,
    );
  }

  const routes = fam.ipv4 ? source.routes() : [];
  const routes6 = fam.ipv6 ? source.routes6?.() ?? [] : [];
  if (flags.ifaceCanReach) {
    const target = flags.ifaceCanReach;
    let best: { iface: string } | undefined;
    if (isIPv4(target)) {
      const ip = parseIPv4(target);
      best = bestRoute(
        source.routes(),
        (r) => containsIPv4({ ip: r.dst, prefixLen: r.prefixLen }, ip),
      );
    } else if (isIPv6(target)) {
      const ip = parseIPv6(target);
      best = bestRoute(
        source.routes6?.() ?? [],
        (r) => containsIPv6({ ip: r.dst, prefixLen: r.prefixLen }, ip),
      );
    } else {
      throw new InterfaceError(
        `--iface-can-reach must be an IPv4 or IPv6 address: current value is ${
          JSON.stringify(target)
        }`,
      );
    }
    const i = best && all.find((x) => x.name === best!.iface);
    if (i && missing(i) === null) return result(i);
    misses.push(
      `--iface-can-reach ${target}: ${
        best
          ? `its route goes through ${best.iface}, which ${i ? missing(i) : "does not exist"}`
          : "no route reaches it"
      }`,
    );
  }
  if (misses.length) {
    throw new InterfaceError(
      `no interface matches the options given (${misses.join("; ")}); interfaces here: ${known()}`,
    );
  }

  if (fam.ipv4 && flags.publicIP) {
    const holder = usable.find((x) => x.ipv4.includes(flags.publicIP!));
    if (holder) return result(holder, { v4: flags.publicIP });
  }
  if (fam.ipv6 && flags.publicIPv6) {
    const holder = usable.find((x) => x.ipv6.some((a) => sameIPv6(a, flags.publicIPv6!)));
    if (holder) {
      return result(holder, { v6: holder.ipv6.find((a) => sameIPv6(a, flags.publicIPv6!)) });
    }
  }
  const lowest = <R extends { prefixLen: number; metric: number }>(rs: readonly R[]) =>
    rs.filter((r) => r.prefixLen === 0).sort((a, b) => a.metric - b.metric)[0];
  const def4 = fam.ipv4 ? lowest(routes) : undefined;
  const def6 = fam.ipv6 ? lowest(routes6) : undefined;
  if (def4 && def6 && def4.iface !== def6.iface) {
    // flannel: "v6 default route interface … must be the same with v4 default route interface …"
    throw new InterfaceError(
      `cannot pick the external interface: the IPv4 default route leaves through ${def4.iface} but the IPv6 one through ${def6.iface}; a dual-stack host needs one interface for both: name it with --iface <name>`,
    );
  }
  const def = def4 ?? def6;
  const i = def && usable.find((x) => x.name === def.iface);
  if (i) return result(i);
  const fallback = usable.filter((x) => x.name !== "lo" && x.up);
  if (fallback.length === 1) return result(fallback[0]);
  const viaDefault = def && all.find((x) => x.name === def.iface);
  throw new InterfaceError(
    viaDefault
      ? `cannot pick the external interface: the default route leaves through ${def.iface}, which ${
        missing(viaDefault)
      }; name the interface with --iface <name|ip> or --iface-can-reach <peer ip> (interfaces: ${known()})`
      : `cannot pick the external interface: there is no ${
        fam.ipv4 ? "" : "IPv6 "
      }default route; name it with --iface <name|ip> or --iface-can-reach <peer ip> (interfaces: ${known()})`,
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
    ...source,
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
  };
}
