/**
 * The Datapath seam: backends say what kernel state they want, the datapath
 * applies only the difference and reports *drift*, kernel changes that
 * contradict what was asked.
 *
 * What a backend asks for:
 * - **Devices** ({@link DeviceSpec}): a VXLAN device weft creates and owns
 *   (VNI, port, underlay, MAC, MTU, up, exactly these addresses), or an
 *   existing device such as the TUN weft opened (its addresses, MTU, up).
 * - **Per-peer entries** ({@link PeerEntries}: routes, neighbours, fdb
 *   entries) keyed by peer inside an owned {@link EntryScope}: a full set
 *   ({@link EntryTable.sync}: read the kernel and diff) or the changes of a
 *   few peers ({@link EntryTable.update}: only their difference, no read).
 *   Nothing outside the scope is ever deleted.
 *
 * Devices are named, never indexed: entries say `device: "flannel.1"`, so a
 * device that is deleted and recreated (new index) needs no new entries.
 *
 * One implementation speaks rtnetlink (`netlink/datapath.ts`, over the
 * kernel client in `netlink/client.ts`); `testing/datapath_fake.ts` records
 * what was asked. Both pass `testing/datapath_contract.ts`.
 *
 * Both families: IPv4 addresses are unsigned 32-bit integers, IPv6
 * addresses bigints (the type tells the family), networks `{ ip, prefixLen }`,
 * MAC addresses lowercase `aa:bb:cc:dd:ee:ff` strings. A route's gateway
 * is of its destination's family; an IPv6 VXLAN device (local address
 * IPv6) takes IPv6 fdb remotes. IPv6 link-local addresses (`fe80::/10`)
 * are the kernel's own: never reported in {@link DeviceInfo.addresses},
 * never added or removed.
 *
 * @module
 */

import type { IPAddr, IPNet, IPv6Net } from "../core/ip.ts";

export { NetlinkBatchError, NetlinkError } from "./netlink/error.ts";

/** Route scope universe (flannel's udp route `Network dev flannel0`). */
export const RT_SCOPE_UNIVERSE = 0;
/** Route scope link: a directly connected route (the default without a gateway). */
export const RT_SCOPE_LINK = 253;

/** VXLAN-specific attributes of a device. */
export interface VxlanInfo {
  /** VXLAN network identifier. */
  readonly vni: number;
  /** Local (source) address, IPv4 or IPv6, or null when unset. */
  readonly local: IPAddr | null;
  /** Index of the underlay device, or null when unset. */
  readonly link: number | null;
  /** Destination UDP port. */
  readonly port: number;
  /** Whether the device learns remote MACs from received packets. */
  readonly learning: boolean;
  /** Group Based Policy extension enabled. */
  readonly gbp: boolean;
}

/** A device as the kernel has it, with its addresses. */
export interface DeviceInfo {
  readonly index: number;
  readonly name: string;
  /** `IFLA_INFO_KIND`, e.g. `vxlan`, `bridge`, `veth`, `tun`; null for physical devices and `lo`. */
  readonly kind: string | null;
  readonly mtu: number;
  /** Hardware address, or null for devices without one (TUN). */
  readonly mac: string | null;
  /** Administratively up. */
  readonly up: boolean;
  /**
   * IPv4 and IPv6 addresses (host address and prefix length, e.g.
   * 192.0.2.11/24, fd00::11/64), IPv6 link-local ones left out.
   */
  readonly addresses: readonly IPNet[];
  /** VXLAN details when `kind` is `vxlan`, else null. */
  readonly vxlan: VxlanInfo | null;
}

/**
 * A VXLAN device weft creates and owns. An existing device of that name
 * whose VNI, port, local address, underlay, GBP or learning differ is
 * deleted and recreated (with `mac`).
 */
export interface VxlanDeviceSpec {
  readonly kind: "vxlan";
  readonly name: string;
  readonly vni: number;
  /** Destination UDP port (flannel: 8472). */
  readonly port: number;
  /** Source address: IPv4, or IPv6 for a VXLAN device over an IPv6 underlay. */
  readonly local: IPAddr;
  /** Underlay device name, e.g. `eth0`. */
  readonly underlay?: string;
  /** Learn remote MACs (flannel: false = `nolearning`). */
  readonly learning: boolean;
  /** Group Based Policy. */
  readonly gbp: boolean;
  /** Hardware address (the VtepMAC peers address this host by). */
  readonly mac: string;
  readonly mtu: number;
  /**
   * Exactly these addresses (host address and prefix length), of either
   * family; others are removed (IPv6 link-local ones excepted).
   */
  readonly addresses: readonly IPNet[];
}

/**
 * A device someone else created (the TUN weft opened): weft owns its
 * addresses, MTU and up state, never the device itself.
 */
export interface ExistingDeviceSpec {
  readonly kind: "existing";
  readonly name: string;
  readonly mtu: number;
  /** Exactly these addresses; others are removed (IPv6 link-local ones excepted). */
  readonly addresses: readonly IPNet[];
}

/** A device to have, up, exactly as specified. */
export type DeviceSpec = VxlanDeviceSpec | ExistingDeviceSpec;

/** What {@link Datapath.ensureDevice} found and did. */
export interface DeviceResult {
  /** The device as it now is. */
  readonly device: DeviceInfo;
  /** What was changed, for logs (empty when it already matched), e.g. `set up`. */
  readonly changes: readonly string[];
}

/** A route in the main table (IPv4 or IPv6, by its destination). */
export interface RouteSpec {
  readonly dst: IPNet;
  /** Next hop, of the destination's family, or absent for a directly connected route. */
  readonly gateway?: IPAddr;
  /** Output device name. */
  readonly device: string;
  /** The gateway is on the link even without a matching address (`onlink`). */
  readonly onlink?: boolean;
  /** Route scope; default universe with a gateway, link without. */
  readonly scope?: number;
}

/** A permanent neighbour entry: IPv4 (ARP) or IPv6 (NDP). */
export interface NeighbourSpec {
  readonly device: string;
  readonly ip: IPAddr;
  readonly mac: string;
}

/** A permanent VXLAN forwarding entry (`bridge fdb … self`): frames to `mac` go to `dst`. */
export interface FdbSpec {
  readonly device: string;
  readonly mac: string;
  /** Remote VTEP address: IPv4, or IPv6 on an IPv6 VXLAN device. */
  readonly dst: IPAddr;
}

/** The kernel entries one peer needs. */
export interface PeerEntries {
  readonly routes?: readonly RouteSpec[];
  readonly neighbours?: readonly NeighbourSpec[];
  readonly fdb?: readonly FdbSpec[];
}

/**
 * What an entry table owns, and so may delete: routes of the main table
 * (not the kernel's own) whose destination lies inside `network` (or
 * `ipv6Network`) but is none of `except`, out of a device of `routeDevices` (any route) or of
 * `gatewayDevices` (only routes with a gateway); permanent neighbours and
 * fdb entries with a remote on a device of `neighbourDevices`. Everything
 * asked must lie inside the scope.
 */
export interface EntryScope {
  /** Names the table in drift reports and logs, e.g. `vxlan`. */
  readonly name: string;
  /** The cluster network: IPv4, or IPv6 for an IPv6-only table. */
  readonly network: IPNet;
  /** A dual-stack table's IPv6 network (besides an IPv4 `network`). */
  readonly ipv6Network?: IPv6Net;
  /** Destinations never owned (this host's own subnets), of either family. */
  readonly except?: readonly IPNet[];
  readonly routeDevices?: readonly string[];
  readonly gatewayDevices?: readonly string[];
  readonly neighbourDevices?: readonly string[];
}

/** A write that failed, with the peer it was for (absent for a stale object no peer asked for). */
export interface EntryFailure {
  readonly key?: string;
  readonly error: Error;
}

/** What applying entries did. */
export interface ApplyResult {
  /** Objects (routes, neighbours, fdb entries) written. */
  readonly written: number;
  /** Objects deleted. */
  readonly deleted: number;
  /** Writes that failed; everything else was applied. */
  readonly failures: readonly EntryFailure[];
}

/**
 * A kernel change that contradicts what was asked:
 * - `device`: an ensured device was deleted, set down, or had its MAC, MTU
 *   or addresses changed: ensure it again and sync what hangs on it;
 * - `entries`: these peers' entries of table `table` were deleted or
 *   changed: update them again;
 * - `lost`: change notifications were lost (receive buffer overrun): sync
 *   everything.
 */
export type Drift =
  | { readonly kind: "device"; readonly device: string; readonly reason: string }
  | {
    readonly kind: "entries";
    readonly table: string;
    readonly keys: readonly string[];
    readonly reason: string;
  }
  | { readonly kind: "lost"; readonly reason: string };

/** The entries of one owned scope, by peer key. */
export interface EntryTable {
  readonly scope: EntryScope;
  /**
   * Make the scope hold exactly `entries`: read what the kernel holds in
   * the scope and write only the difference (stale objects are deleted).
   * For start, snapshots and repairs after lost events.
   *
   * @param entries Every peer's entries, by peer key.
   * @returns Counts and the failed writes (the rest is applied).
   * @throws {RangeError} When an entry lies outside the scope.
   */
  sync(entries: ReadonlyMap<string, PeerEntries>): Promise<ApplyResult>;
  /**
   * Change only these peers (null removes a peer's entries), against what
   * the table knows is installed: no kernel read, cost independent of the
   * number of peers. Before the first {@link sync} it syncs.
   *
   * @param changes Peer key → its new entries, or null.
   * @returns Counts and the failed writes.
   * @throws {RangeError} When an entry lies outside the scope.
   */
  update(changes: ReadonlyMap<string, PeerEntries | null>): Promise<ApplyResult>;
}

/**
 * Kernel state, as asked. All methods act on the network namespace the
 * datapath was opened in.
 *
 * Guarantees:
 * - Asking for what is already there writes nothing.
 * - Nothing outside an ensured device or an entry table's scope is deleted.
 * - Drift is reported only for what was asked; the datapath's own writes
 *   are never reported.
 * - After `close()`, calls reject and drift iterables end.
 */
export interface Datapath {
  /** A device by name or index, with its addresses; null when there is none. */
  link(nameOrIndex: string | number): Promise<DeviceInfo | null>;
  /**
   * Make a device exist (VXLAN) and match `spec`: MAC, MTU, up, exactly its
   * addresses. Later changes to it are reported as drift.
   *
   * @returns The device and what was changed.
   * @throws {Error} When an existing device is missing, or the kernel refuses.
   */
  ensureDevice(spec: DeviceSpec): Promise<DeviceResult>;
  /** The entry table of a scope (one per scope name; a new scope replaces an older one). */
  entries(scope: EntryScope): EntryTable;
  /**
   * Drift reports until `signal` aborts or the datapath closes. Each call
   * subscribes anew; reports start with changes after the call.
   */
  drift(signal: AbortSignal): AsyncIterable<Drift>;
  /** Release the kernel sockets. */
  close(): void;
}
