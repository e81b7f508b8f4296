/**
 * What the kernel of a lab host holds, for the cloud-route e2e tests: the
 * kinds of its links, and how many packets its vxlan device sent.
 *
 * @module
 */

import type { Lab } from "./lab.ts";

/**
 * Link kinds in a host namespace, by name.
 *
 * @param lab The lab.
 * @param ns The host's namespace.
 * @returns name → kind (`vxlan`, `veth`, `-` for none).
 */
export async function linkKinds(lab: Lab, ns: string): Promise<Record<string, string>> {
  const links = JSON.parse(await lab.run(ns, "ip -j -d link show")) as {
    ifname: string;
    linkinfo?: { info_kind?: string };
  }[];
  return Object.fromEntries(links.map((l) => [l.ifname, l.linkinfo?.info_kind ?? "-"]));
}

/**
 * The tunnel devices of a host (vxlan, tun, or named `flannel*`).
 *
 * @param lab The lab.
 * @param ns The host's namespace.
 * @returns [name, kind] of each.
 */
export async function tunnelLinks(lab: Lab, ns: string): Promise<[string, string][]> {
  const kinds = await linkKinds(lab, ns);
  return Object.entries(kinds).filter(([name, kind]) =>
    kind === "vxlan" || kind === "tun" || name.startsWith("flannel")
  );
}

/**
 * Packets flannel.1 sent so far in a host.
 *
 * @param lab The lab.
 * @param ns The host's namespace.
 * @returns The device's tx packet counter.
 */
export async function vxlanTxPackets(lab: Lab, ns: string): Promise<number> {
  const [link] = JSON.parse(await lab.run(ns, "ip -j -s link show flannel.1")) as {
    stats64: { tx: { packets: number } };
  }[];
  return link.stats64.tx.packets;
}
