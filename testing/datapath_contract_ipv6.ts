/**
 * The Datapath contract's IPv6 cases, run beside the IPv4 ones
 * (`datapath_contract.ts`) by every runner: the fake
 * (`datapath_fake_test.ts`), the netlink datapath under Deno
 * (`datapath/netlink/datapath_test.ts`) and under Bun
 * (`netlink_contract_bun.ts`).
 *
 * The device and entry forms are flannel's IPv6 ones
 * (pkg/backend/vxlan in v0.28): a VXLAN device `flannel-v6.1` whose local
 * address is the host's IPv6 underlay address, the `<ipv6Subnet.ip>/128`
 * address on it, and per peer a permanent neighbour `<peer ipv6Subnet.ip>`
 * → peer VtepMAC, an fdb entry `VtepMAC dst <peer PublicIPv6>` and the route
 * `<peer ipv6Subnet> via <peer ipv6Subnet.ip> dev flannel-v6.1 onlink`;
 * host-gw's `<peer ipv6Subnet> via <peer PublicIPv6> dev ext0`. The
 * harness's `ext0` holds `fd00::1/64`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { parseIPv4Net, parseIPv6, parseIPv6Net } from "../core/ip.ts";
import type { EntryScope, PeerEntries, VxlanDeviceSpec } from "../datapath/types.ts";
import {
  type ContractCase,
  deviceDrift,
  entriesOf,
  VXLAN,
  vxlanPeer,
  waitForDrift,
  withDrift,
} from "./datapath_contract.ts";

const ip6 = parseIPv6;
const net6 = parseIPv6Net;

/** The IPv6 VXLAN device (flannel's `flannel-v6.1`): MTU 1500 − 70. */
export const VXLAN6: VxlanDeviceSpec = {
  kind: "vxlan",
  name: "flannel-v6.1",
  vni: 1,
  port: 8472,
  local: ip6("fd00::1"),
  underlay: "ext0",
  learning: false,
  gbp: false,
  mac: "02:00:00:00:06:01",
  mtu: 1430,
  addresses: [{ ip: ip6("fd00:5:1::"), prefixLen: 128 }],
};

/** A dual-stack vxlan-like scope: both devices, both networks, this host's subnets excepted. */
export const SCOPE6: EntryScope = {
  name: "vx",
  network: parseIPv4Net("10.5.0.0/16"),
  ipv6Network: net6("fd00:5::/32"),
  except: [parseIPv4Net("10.5.1.0/24"), net6("fd00:5:1::/64")],
  routeDevices: ["flannel.1", "flannel-v6.1"],
  gatewayDevices: ["ext0"],
  neighbourDevices: ["flannel.1", "flannel-v6.1"],
};

const hex2 = (n: number) => n.toString(16).padStart(2, "0");

/** A vxlan peer's IPv6 entries (flannel's three on `flannel-v6.1`). */
export function vxlan6Peer(n: number, publicIPv6 = `fd00::${n}`, mac?: string): PeerEntries {
  const subnet = ip6(`fd00:5:${n}::`);
  const vtep = mac ?? `02:00:00:00:06:${hex2(n)}`;
  return {
    neighbours: [{ device: "flannel-v6.1", ip: subnet, mac: vtep }],
    fdb: [{ device: "flannel-v6.1", mac: vtep, dst: ip6(publicIPv6) }],
    routes: [{
      dst: { ip: subnet, prefixLen: 64 },
      gateway: subnet,
      device: "flannel-v6.1",
      onlink: true,
    }],
  };
}

/** A dual-stack vxlan peer: its IPv4 and its IPv6 entries. */
export function dualPeer(n: number): PeerEntries {
  const a = vxlanPeer(n), b = vxlan6Peer(n);
  return {
    neighbours: [...a.neighbours!, ...b.neighbours!],
    fdb: [...a.fdb!, ...b.fdb!],
    routes: [...a.routes!, ...b.routes!],
  };
}

/** A host-gw peer's IPv6 route via its public IPv6 on ext0. */
export function hostGw6Peer(n: number, publicIPv6 = `fd00::${n}`): PeerEntries {
  return {
    routes: [{ dst: net6(`fd00:5:${n}::/64`), gateway: ip6(publicIPv6), device: "ext0" }],
  };
}

/** Peer key of dual-stack peer n. */
export const key6 = (n: number): string => `10.5.${n}.0/24 + fd00:5:${n}::/64`;

/** The IPv6 contract cases. */
export const datapathContractIPv6: readonly ContractCase[] = [
  {
    name:
      "ensureDevice creates an IPv6 VXLAN device (local IPv6, /128 address) beside the IPv4 one; again changes nothing",
    fn: async ({ dp, kernel }) => {
      await dp.ensureDevice(VXLAN);
      const first = await dp.ensureDevice(VXLAN6);
      assert.ok(first.changes.includes("created"), JSON.stringify(first.changes));
      const s = await kernel.snapshot();
      assert.deepEqual(s.devices["flannel-v6.1"], {
        kind: "vxlan",
        mtu: 1430,
        mac: "02:00:00:00:06:01",
        up: true,
        addresses: ["fd00:5:1::/128"],
        vxlan: {
          vni: 1,
          port: 8472,
          local: "fd00::1",
          underlay: "ext0",
          learning: false,
          gbp: false,
        },
      });
      assert.equal(s.devices["flannel.1"].vxlan?.local, "192.0.2.1");
      assert.deepEqual(first.device.addresses, [{ ip: ip6("fd00:5:1::"), prefixLen: 128 }]);
      assert.deepEqual((await dp.ensureDevice(VXLAN6)).changes, []);
      assert.deepEqual((await dp.ensureDevice(VXLAN)).changes, []);
    },
  },
  {
    name: "ensureDevice recreates a VXLAN device whose local address is of the other family",
    fn: async ({ dp, kernel }) => {
      await kernel.createVxlan({
        name: "flannel-v6.1",
        vni: 1,
        port: 8472,
        local: 0xc0000201,
        underlay: "ext0",
        mac: "02:00:00:00:06:01",
        up: true,
      });
      const r = await dp.ensureDevice(VXLAN6);
      assert.ok(
        r.changes.some((c) => /local address 192\.0\.2\.1, want fd00::1/.test(c)),
        JSON.stringify(r.changes),
      );
      const d = (await kernel.snapshot()).devices["flannel-v6.1"];
      assert.deepEqual([d.vxlan?.local, d.mtu, d.addresses], ["fd00::1", 1430, ["fd00:5:1::/128"]]);
    },
  },
  {
    name:
      "sync installs dual-stack peers' IPv6 neighbours, fdb entries and routes; again writes nothing",
    fn: async ({ dp, kernel }) => {
      await dp.ensureDevice(VXLAN);
      await dp.ensureDevice(VXLAN6);
      const table = dp.entries(SCOPE6);
      const all = new Map([[key6(2), dualPeer(2)], [key6(3), dualPeer(3)], ["hg", hostGw6Peer(5)]]);
      assert.deepEqual(await table.sync(all), { written: 13, deleted: 0, failures: [] });
      const s = await kernel.snapshot();
      assert.deepEqual(s.routes, [
        "10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink",
        "10.5.3.0/24 via 10.5.3.0 dev flannel.1 onlink",
        "fd00:5:2::/64 via fd00:5:2:: dev flannel-v6.1 onlink",
        "fd00:5:3::/64 via fd00:5:3:: dev flannel-v6.1 onlink",
        "fd00:5:5::/64 via fd00::5 dev ext0",
      ]);
      assert.deepEqual(s.neighbours, [
        "10.5.2.0 lladdr 02:00:00:00:00:02 dev flannel.1",
        "10.5.3.0 lladdr 02:00:00:00:00:03 dev flannel.1",
        "fd00:5:2:: lladdr 02:00:00:00:06:02 dev flannel-v6.1",
        "fd00:5:3:: lladdr 02:00:00:00:06:03 dev flannel-v6.1",
      ]);
      assert.deepEqual(s.fdb, [
        "02:00:00:00:00:02 dev flannel.1 dst 192.0.2.2",
        "02:00:00:00:00:03 dev flannel.1 dst 192.0.2.3",
        "02:00:00:00:06:02 dev flannel-v6.1 dst fd00::2",
        "02:00:00:00:06:03 dev flannel-v6.1 dst fd00::3",
      ]);
      // IPv6 routes the kernel holds with its default metric are what was asked; the same
      // scope asked again (a restart of the backend) is the same table
      assert.deepEqual(await table.sync(all), { written: 0, deleted: 0, failures: [] });
      assert.deepEqual(await dp.entries({ ...SCOPE6 }).sync(all), {
        written: 0,
        deleted: 0,
        failures: [],
      });
      all.set(key6(3), vxlanPeer(3)); // peer 3 drops IPv6
      all.delete("hg");
      assert.deepEqual(await table.sync(all), { written: 0, deleted: 4, failures: [] });
      const after = await kernel.snapshot();
      assert.ok(!after.routes.some((r) => r.startsWith("fd00:5:3::")), after.routes.join("\n"));
      assert.ok(!after.routes.some((r) => r.startsWith("fd00:5:5::")), after.routes.join("\n"));
      assert.equal(after.fdb.filter((f) => f.includes("flannel-v6.1")).length, 1);
    },
  },
  {
    name:
      "sync deletes stale IPv6 objects inside the scope and never touches IPv6 objects outside it",
    fn: async ({ dp, kernel }) => {
      await dp.ensureDevice(VXLAN);
      await dp.ensureDevice(VXLAN6);
      const foreign = [
        "fd00:5:1::/64 via fd00::9 dev ext0", // this host's own subnet
        "fd00:6::/64 via fd00::9 dev ext0", // outside the network
        "fd00:5:8::/64 dev ext0", // ext0 without a gateway
      ];
      await kernel.replaceRoute({
        dst: net6("fd00:5:1::/64"),
        gateway: ip6("fd00::9"),
        device: "ext0",
      });
      await kernel.replaceRoute({
        dst: net6("fd00:6::/64"),
        gateway: ip6("fd00::9"),
        device: "ext0",
      });
      await kernel.replaceRoute({ dst: net6("fd00:5:8::/64"), device: "ext0" });
      // stale, in scope: a left-over IPv6 peer of an earlier run
      await kernel.replaceRoute({
        dst: net6("fd00:5:7::/64"),
        gateway: ip6("fd00:5:7::"),
        device: "flannel-v6.1",
        onlink: true,
      });
      await kernel.replaceNeighbour({
        device: "flannel-v6.1",
        ip: ip6("fd00:5:7::"),
        mac: "02:00:00:00:06:77",
      });
      await kernel.replaceFdb({
        device: "flannel-v6.1",
        mac: "02:00:00:00:06:77",
        dst: ip6("fd00::7"),
      });
      const r = await dp.entries(SCOPE6).sync(new Map([[key6(2), dualPeer(2)]]));
      assert.deepEqual([r.written, r.deleted, r.failures], [6, 3, []]);
      const s = await kernel.snapshot();
      assert.deepEqual(
        s.routes,
        [
          ...foreign,
          "10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink",
          "fd00:5:2::/64 via fd00:5:2:: dev flannel-v6.1 onlink",
        ].sort(),
      );
      assert.ok(!s.neighbours.some((n) => n.startsWith("fd00:5:7::")), s.neighbours.join("\n"));
      assert.ok(!s.fdb.some((f) => f.includes(":77")), s.fdb.join("\n"));
    },
  },
  {
    name: "update writes only a peer's changed IPv6 entries (new VtepMAC and public IPv6)",
    fn: async ({ dp, kernel }) => {
      await dp.ensureDevice(VXLAN);
      await dp.ensureDevice(VXLAN6);
      const table = dp.entries(SCOPE6);
      const all = new Map([[key6(2), dualPeer(2)], [key6(3), dualPeer(3)]]);
      await table.sync(all);
      const moved: PeerEntries = {
        ...dualPeer(3),
        ...(() => {
          const v4 = vxlanPeer(3), v6 = vxlan6Peer(3, "fd00::33", "02:00:00:00:06:33");
          return {
            neighbours: [...v4.neighbours!, ...v6.neighbours!],
            fdb: [...v4.fdb!, ...v6.fdb!],
            routes: [...v4.routes!, ...v6.routes!],
          };
        })(),
      };
      const r = await table.update(new Map([[key6(3), moved]]));
      // the IPv6 neighbour (new MAC) and fdb entry (new MAC); the old MAC's fdb entry goes
      assert.deepEqual([r.written, r.deleted, r.failures], [2, 1, []]);
      const s = await kernel.snapshot();
      assert.ok(
        s.fdb.includes("02:00:00:00:06:33 dev flannel-v6.1 dst fd00::33"),
        s.fdb.join("\n"),
      );
      assert.ok(s.neighbours.includes("fd00:5:3:: lladdr 02:00:00:00:06:33 dev flannel-v6.1"));
      all.set(key6(3), moved);
      assert.deepEqual(await table.sync(all), { written: 0, deleted: 0, failures: [] });
    },
  },
  {
    name:
      "an IPv6 route whose gateway is off every connected prefix is refused (EHOSTUNREACH) and reported with its peer",
    fn: async ({ dp, kernel }) => {
      const table = dp.entries(SCOPE6);
      const r = await table.sync(
        new Map([["a", hostGw6Peer(2)], ["b", hostGw6Peer(3, "fd01::3")], ["c", hostGw6Peer(4)]]),
      );
      assert.equal(r.written, 2);
      assert.deepEqual(r.failures.map((f) => f.key), ["b"]);
      assert.match(r.failures[0].error.message, /EHOSTUNREACH.*fd00:5:3::\/64 via fd01::3/);
      assert.deepEqual((await kernel.snapshot()).routes, [
        "fd00:5:2::/64 via fd00::2 dev ext0",
        "fd00:5:4::/64 via fd00::4 dev ext0",
      ]);
      const again = await table.update(new Map([["b", hostGw6Peer(3)]]));
      assert.deepEqual([again.written, again.failures], [1, []]);
    },
  },
  {
    name:
      "a deleted or changed IPv6 route, neighbour or fdb entry is reported with its peer; update restores it",
    fn: async ({ dp, kernel }) => {
      await dp.ensureDevice(VXLAN);
      await dp.ensureDevice(VXLAN6);
      const table = dp.entries(SCOPE6);
      const all = new Map([[key6(2), dualPeer(2)], [key6(3), dualPeer(3)], [key6(4), dualPeer(4)]]);
      await table.sync(all);
      const restore = async (k: string) => {
        const r = await table.update(new Map([[k, all.get(k)!]]));
        assert.deepEqual([r.written, r.failures], [1, []], `restoring ${k}`);
      };
      await withDrift(dp, async (it) => {
        await kernel.deleteRoute({ dst: net6("fd00:5:2::/64") });
        await waitForDrift(it, entriesOf(key6(2)));
        await restore(key6(2));
        await kernel.replaceRoute({
          dst: net6("fd00:5:3::/64"),
          gateway: ip6("fd00::33"),
          device: "ext0",
        });
        await waitForDrift(it, entriesOf(key6(3)));
        await restore(key6(3));
        await kernel.deleteNeighbour({ device: "flannel-v6.1", ip: ip6("fd00:5:4::") });
        await waitForDrift(it, entriesOf(key6(4)));
        await restore(key6(4));
        await kernel.deleteFdb({
          device: "flannel-v6.1",
          mac: "02:00:00:00:06:03",
          dst: ip6("fd00::3"),
        });
        await waitForDrift(it, entriesOf(key6(3)));
        await restore(key6(3));
      });
      assert.deepEqual(await table.sync(all), { written: 0, deleted: 0, failures: [] });
    },
  },
  {
    name:
      "an IPv6 VXLAN device that lost its address, was set down or deleted is reported; ensureDevice restores it",
    fn: async ({ dp, kernel }) => {
      await dp.ensureDevice(VXLAN6);
      await withDrift(dp, async (it) => {
        await kernel.deleteAddress("flannel-v6.1", VXLAN6.addresses[0]);
        await waitForDrift(
          it,
          deviceDrift("flannel-v6.1", /fd00:5:1::\/128 was removed|addresses changed/),
        );
        await dp.ensureDevice(VXLAN6);
        await kernel.setLink("flannel-v6.1", { up: false });
        await waitForDrift(it, deviceDrift("flannel-v6.1", /set down/));
        await dp.ensureDevice(VXLAN6);
        await kernel.deleteLink("flannel-v6.1");
        await waitForDrift(it, deviceDrift("flannel-v6.1", /deleted/));
        await dp.ensureDevice(VXLAN6);
      });
      const d = (await kernel.snapshot()).devices["flannel-v6.1"];
      assert.deepEqual(
        [d.up, d.mtu, d.mac, d.addresses, d.vxlan?.local],
        [true, 1430, VXLAN6.mac, ["fd00:5:1::/128"], "fd00::1"],
      );
    },
  },
  {
    name: "the datapath's own IPv6 writes are never reported as drift",
    fn: async ({ dp, kernel }) => {
      await withDrift(dp, async (it) => {
        await dp.ensureDevice(VXLAN);
        await dp.ensureDevice(VXLAN6);
        const table = dp.entries(SCOPE6);
        await table.sync(new Map([[key6(2), dualPeer(2)], [key6(3), dualPeer(3)]]));
        await table.update(new Map([[key6(3), null], [key6(4), dualPeer(4)]]));
        await dp.ensureDevice({
          ...VXLAN6,
          addresses: [{ ip: ip6("fd00:5:1::1"), prefixLen: 128 }],
        });
        // a marker from outside: the first report must be about it
        await kernel.deleteRoute({ dst: net6("fd00:5:2::/64") });
        const first = await waitForDrift(it, () => true);
        assert.ok(entriesOf(key6(2))(first), `first drift was ${JSON.stringify(first)}`);
      });
    },
  },
];
