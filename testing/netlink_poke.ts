/**
 * The outside world of the Datapath contract in a real network namespace:
 * a {@link KernelPoke} that changes and reads the kernel through its own
 * rtnetlink client (a second socket, as another program would), and the
 * harness factory used under Deno and Bun.
 *
 * @module
 */

import { formatIP, formatIPNet, type IPAddr, type IPNet, isLinkLocalIPv6 } from "../core/ip.ts";
import { type NetlinkClient, openNetlinkClient } from "../datapath/netlink/client.ts";
import {
  IPV6_DEFAULT_METRIC,
  NUD_PERMANENT,
  RT_TABLE_MAIN,
  RTPROT_KERNEL,
} from "../datapath/netlink/kernel.ts";
import { type NetlinkDatapathOptions, openNetlinkDatapath } from "../datapath/netlink/datapath.ts";
import { describeRoute } from "../datapath/plan.ts";
import type { FdbSpec, NeighbourSpec, RouteSpec } from "../datapath/types.ts";
import {
  type ContractHarness,
  EXT_ADDRESSES,
  type KernelPoke,
  type KernelSnapshot,
  type PokeVxlan,
} from "./datapath_contract.ts";

async function index(c: NetlinkClient, name: string): Promise<number> {
  const l = await c.getLink(name);
  if (!l) throw new Error(`no link ${name} in the namespace`);
  return l.index;
}

/**
 * A poke over a kernel client.
 *
 * @param c A client in the namespace under test.
 * @returns The poke.
 */
export function netlinkPoke(c: NetlinkClient): KernelPoke {
  return {
    async snapshot(): Promise<KernelSnapshot> {
      const links = await c.listLinks();
      const names = new Map(links.map((l) => [l.index, l.name]));
      const addresses = await c.listAddresses();
      const devices: Record<string, KernelSnapshot["devices"][string]> = {};
      for (const l of links) {
        devices[l.name] = {
          kind: l.kind,
          mtu: l.mtu,
          mac: l.mac,
          up: l.up,
          addresses: addresses.filter((a) => a.index === l.index && !isLinkLocalIPv6(a.ip)).map((
            a,
          ) => formatIPNet(a as IPNet)).sort(),
          vxlan: l.vxlan && {
            vni: l.vxlan.vni,
            port: l.vxlan.port,
            local: l.vxlan.local === null ? null : formatIP(l.vxlan.local),
            underlay: l.vxlan.link === null ? null : names.get(l.vxlan.link) ?? null,
            learning: l.vxlan.learning,
            gbp: l.vxlan.gbp,
          },
        };
      }
      // IPv6's default metric (what a route without one gets) is shown as none
      const metric = (r: { dst: IPNet; metric?: number }) =>
        typeof r.dst.ip === "bigint" && r.metric === IPV6_DEFAULT_METRIC ? 0 : r.metric ?? 0;
      const routes = (await c.listRoutes()).filter((r) =>
        r.table === RT_TABLE_MAIN && r.protocol !== RTPROT_KERNEL
      ).map((r) =>
        `${
          describeRoute({
            dst: r.dst,
            gateway: r.gateway ?? undefined,
            device: names.get(r.index ?? -1) ?? `#${r.index}`,
            onlink: r.onlink,
          })
        }${metric(r) ? ` metric ${metric(r)}` : ""}`
      ).sort();
      const neighbours = (await c.listNeighbours()).filter((n) =>
        ((n.state ?? 0) & NUD_PERMANENT) !== 0
      ).map((n) => `${formatIP(n.ip)} lladdr ${n.mac} dev ${names.get(n.index)}`).sort();
      const fdb = (await c.listFdb()).filter((f) => f.dst !== null).map((f) =>
        `${f.mac} dev ${names.get(f.index)} dst ${formatIP(f.dst!)}`
      ).sort();
      return { devices, routes, neighbours, fdb };
    },
    async createVxlan(spec: PokeVxlan) {
      await c.createVxlan({
        name: spec.name,
        vni: spec.vni,
        port: spec.port,
        local: spec.local,
        link: spec.underlay ? await index(c, spec.underlay) : undefined,
        mac: spec.mac,
        mtu: spec.mtu,
        up: spec.up,
      });
    },
    async addAddress(device: string, a: IPNet) {
      await c.addAddresses([{ index: await index(c, device), ...a }]);
    },
    async deleteAddress(device: string, a: IPNet) {
      await c.deleteAddresses([{ index: await index(c, device), ...a }]);
    },
    async deleteLink(name: string) {
      await c.deleteLink(await index(c, name));
    },
    async setLink(name: string, changes: { up?: boolean; mtu?: number; mac?: string }) {
      await c.setLink(await index(c, name), changes);
    },
    async replaceRoute(r: RouteSpec & { metric?: number }) {
      await c.replaceRoutes([{
        dst: r.dst,
        gateway: r.gateway ?? null,
        index: await index(c, r.device),
        onlink: r.onlink,
        metric: r.metric,
      }]);
    },
    async deleteRoute(r: { dst: IPNet; device?: string }) {
      await c.deleteRoutes([{
        dst: r.dst,
        index: r.device === undefined ? undefined : await index(c, r.device),
      }]);
    },
    async replaceNeighbour(n: NeighbourSpec) {
      await c.replaceNeighbours([{ index: await index(c, n.device), ip: n.ip, mac: n.mac }]);
    },
    async deleteNeighbour(n: { device: string; ip: IPAddr }) {
      await c.deleteNeighbours([{ index: await index(c, n.device), ip: n.ip, mac: null }]);
    },
    async replaceFdb(f: FdbSpec) {
      await c.replaceFdb([{ index: await index(c, f.device), mac: f.mac, dst: f.dst }]);
    },
    async deleteFdb(f: FdbSpec) {
      await c.deleteFdb([{ index: await index(c, f.device), mac: f.mac, dst: f.dst }]);
    },
  };
}

/**
 * Run `fn` with a contract harness over a namespace: `ext0` (a bridge, up,
 * MTU 1500, 192.0.2.1/24 and fd00::1/64), the netlink datapath, and a poke.
 *
 * @param ns An empty namespace (only `lo`).
 * @param fn The case.
 * @param options Datapath options.
 */
export async function withNetlinkHarness(
  ns: string,
  fn: (h: ContractHarness) => Promise<void>,
  options: NetlinkDatapathOptions = {},
): Promise<void> {
  const client = await openNetlinkClient({ netns: ns });
  try {
    const ext = await client.createBridge({ name: "ext0", mtu: 1500, up: true });
    await client.addAddresses(EXT_ADDRESSES.map((a) => ({ index: ext.index, ...a })));
    const dp = await openNetlinkDatapath({ ...options, netns: ns });
    try {
      await fn({ dp, kernel: netlinkPoke(client) });
    } finally {
      dp.close();
    }
  } finally {
    client.close();
  }
}
