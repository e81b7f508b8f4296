/**
 * Deciding about devices, pure: whether an existing VXLAN device can be
 * kept for a spec (flannel's rules), and which addresses to remove and add
 * so that a device holds exactly the asked ones. Shared by every Datapath
 * implementation.
 *
 * @module
 */

import { formatIP, formatIPNet, type IPNet, isLinkLocalIPv6 } from "../core/ip.ts";
import type { DeviceInfo, VxlanDeviceSpec } from "./types.ts";

/**
 * Why an existing device cannot be reused for `want`, or null when it can
 * (flannel's rules: type, VNI, underlay device, local address, port, GBP;
 * weft adds learning, which flannel sets but never checks).
 *
 * @param existing The device as the kernel has it.
 * @param want The spec.
 * @param underlayIndex The index `want.underlay` resolves to, or null.
 * @returns The first difference, e.g. `VNI 9, want 1`, or null.
 */
export function vxlanIncompatibility(
  existing: Pick<DeviceInfo, "kind" | "vxlan">,
  want: Pick<VxlanDeviceSpec, "vni" | "port" | "local" | "gbp" | "learning">,
  underlayIndex: number | null,
): string | null {
  if (existing.kind !== "vxlan" || !existing.vxlan) {
    return `link type is ${existing.kind ?? "physical"}, not vxlan`;
  }
  const x = existing.vxlan;
  if (x.vni !== want.vni) return `VNI ${x.vni}, want ${want.vni}`;
  if (underlayIndex && x.link && x.link !== underlayIndex) {
    return `underlay device index ${x.link}, want ${underlayIndex}`;
  }
  if (x.local !== null && x.local !== want.local) {
    return `local address ${formatIP(x.local)}, want ${formatIP(want.local)}`;
  }
  if (x.port !== want.port) return `port ${x.port}, want ${want.port}`;
  if (x.gbp !== want.gbp) return `gbp ${x.gbp}, want ${want.gbp}`;
  if (x.learning !== want.learning) return `learning ${x.learning}, want ${want.learning}`;
  return null;
}

/**
 * The addresses to remove and to add so a device holds exactly `want`, of
 * either family. IPv6 link-local addresses are the kernel's: never removed.
 *
 * @param have The device's addresses.
 * @param want The asked ones.
 * @returns Both lists (empty when it already matches).
 */
export function addressChanges<A extends { readonly ip: number | bigint; prefixLen: number }>(
  have: readonly A[],
  want: readonly IPNet[],
): { remove: A[]; add: IPNet[] } {
  const same = (a: A | IPNet, b: IPNet) => a.ip === b.ip && a.prefixLen === b.prefixLen;
  const managed = have.filter((a) => !isLinkLocalIPv6(a.ip));
  return {
    remove: managed.filter((a) => !want.some((w) => same(a, w))),
    add: want.filter((w) => !managed.some((a) => same(a, w))),
  };
}

/** `10.5.1.0/32`, `fd00:5:1::/128`: an address with its prefix length (host bits kept). */
export function describeAddress(a: { readonly ip: number | bigint; prefixLen: number }): string {
  return formatIPNet(a as IPNet);
}
