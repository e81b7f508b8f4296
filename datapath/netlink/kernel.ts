/**
 * The kernel's objects as rtnetlink reports and takes them: links, IPv4
 * addresses, routes, neighbours and VXLAN fdb entries (by interface index),
 * their change events, and the constants weft uses. The vocabulary of
 * `NetlinkClient` (`client.ts`), the kernel client under the netlink
 * implementation of the Datapath seam.
 *
 * IPv4 addresses are unsigned 32-bit integers, networks `{ ip, prefixLen }`,
 * MAC addresses lowercase `aa:bb:cc:dd:ee:ff` strings.
 *
 * @module
 */

import type { IPv4Net } from "../../core/ip.ts";
import type { VxlanInfo } from "../types.ts";

export type { VxlanInfo };

/** `NUD_PERMANENT`: a static neighbour / fdb entry that never expires. */
export const NUD_PERMANENT = 0x80;
/** `NUD_NOARP`. */
export const NUD_NOARP = 0x40;
/** The main routing table. */
export const RT_TABLE_MAIN = 254;
/** Route protocol `boot` (what `ip route add` and flannel use). */
export const RTPROT_BOOT = 3;
/** Route protocol `kernel` (routes the kernel adds for addresses). */
export const RTPROT_KERNEL = 2;
/** Route scope universe (gatewayed routes). */
export const RT_SCOPE_UNIVERSE = 0;
/** Route scope link (directly connected). */
export const RT_SCOPE_LINK = 253;
/** Route scope host. */
export const RT_SCOPE_HOST = 254;
/** Route type unicast. */
export const RTN_UNICAST = 1;
/** Route type blackhole: packets to it are dropped silently. */
export const RTN_BLACKHOLE = 6;

/** A network device as the kernel reports it. */
export interface Link {
  readonly index: number;
  readonly name: string;
  /** `IFLA_INFO_KIND`, e.g. `vxlan`, `bridge`, `veth`; null for physical devices and `lo`. */
  readonly kind: string | null;
  readonly mtu: number;
  /** Hardware address, or null for devices without one. */
  readonly mac: string | null;
  /** Administratively up (`IFF_UP`). */
  readonly up: boolean;
  /** Raw `IFF_*` flags. */
  readonly flags: number;
  /** Index of the master (bridge) device, or null. */
  readonly master: number | null;
  /** VXLAN details when `kind` is `vxlan`, else null. */
  readonly vxlan: VxlanInfo | null;
}

/** What to create a VXLAN device with. */
export interface VxlanSpec {
  readonly name: string;
  readonly vni: number;
  /** Destination UDP port (flannel: 8472). */
  readonly port: number;
  /** Source IPv4 address. */
  readonly local?: number;
  /** Underlay device index. */
  readonly link?: number;
  /** Learn remote MACs (flannel: false = `nolearning`). */
  readonly learning?: boolean;
  /** Group Based Policy. */
  readonly gbp?: boolean;
  /** Hardware address; the kernel picks a random one when absent. */
  readonly mac?: string;
  readonly mtu?: number;
  /** Set the device up right away. */
  readonly up?: boolean;
}

/** What to create a bridge with. */
export interface BridgeSpec {
  readonly name: string;
  readonly mtu?: number;
  readonly mac?: string;
  readonly up?: boolean;
}

/** Changes to apply to a link; absent fields stay as they are. */
export interface LinkChanges {
  readonly up?: boolean;
  readonly mtu?: number;
  readonly mac?: string;
  /** Enslave to this bridge index (0 = release). */
  readonly master?: number;
}

/** An IPv4 address on a link. */
export interface Address {
  /** Link index. */
  readonly index: number;
  readonly ip: number;
  readonly prefixLen: number;
  /** `IFA_F_*` flags (lists only), e.g. 0x80 permanent, 0x01 secondary, 0x20 deprecated. */
  readonly flags?: number;
  /** `RT_SCOPE_*` (lists only): 0 global, 253 link, 254 host. */
  readonly scope?: number;
}

/**
 * An IPv4 route. When writing, only `dst` is required: the table defaults
 * to main, protocol to boot, scope to universe with a gateway and link
 * without, type to unicast. Lists fill in every field.
 */
export interface Route {
  readonly dst: IPv4Net;
  /** Next hop, or null/absent for a directly connected route. */
  readonly gateway?: number | null;
  /** Output device index, or null/absent to let the kernel pick from the gateway. */
  readonly index?: number | null;
  /** `RTNH_F_ONLINK`: the gateway is on the link even without a matching address. */
  readonly onlink?: boolean;
  readonly table?: number;
  readonly protocol?: number;
  readonly scope?: number;
  readonly type?: number;
  /** `RTA_PRIORITY` (metric), 0 when absent. */
  readonly metric?: number;
}

/** An IPv4 neighbour (ARP) entry. */
export interface Neighbour {
  /** Link index. */
  readonly index: number;
  readonly ip: number;
  /** Link-layer address, or null for an unresolved entry (lists only). */
  readonly mac: string | null;
  /** `NUD_*` state; writes default to `NUD_PERMANENT`. */
  readonly state?: number;
}

/**
 * A bridge forwarding-database entry on a VXLAN device (`bridge fdb … self`):
 * frames to `mac` are sent to the remote VTEP `dst`.
 */
export interface FdbEntry {
  /** Link index (the VXLAN device). */
  readonly index: number;
  readonly mac: string;
  /** Remote VTEP IPv4 address, or null for entries without one (lists only). */
  readonly dst: number | null;
  /** `NUD_*` state; writes default to `NUD_PERMANENT`. */
  readonly state?: number;
}

/** Whether a change event reports a new/changed object or a removed one. */
export type ChangeAction = "new" | "del";

/** A kernel change notification. */
export type KernelEvent =
  | { readonly kind: "link"; readonly action: ChangeAction; readonly link: Link }
  | { readonly kind: "address"; readonly action: ChangeAction; readonly address: Address }
  | { readonly kind: "route"; readonly action: ChangeAction; readonly route: Route }
  | { readonly kind: "neighbour"; readonly action: ChangeAction; readonly neighbour: Neighbour }
  | { readonly kind: "fdb"; readonly action: ChangeAction; readonly fdb: FdbEntry }
  /** Notifications were lost (receive buffer overrun): re-read everything. */
  | { readonly kind: "overrun" };

/** Filter for route lists. */
export interface RouteFilter {
  /** Only this table (default: main). Use 0 for every table. */
  readonly table?: number;
  /** Only routes out of this device. */
  readonly index?: number;
}
