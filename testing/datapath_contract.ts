/**
 * The Datapath contract: what every implementation of the seam must do,
 * run against the fake (`datapath_fake_test.ts`) and the netlink datapath
 * in a fresh network namespace, under Deno (`datapath/netlink/datapath_test.ts`)
 * and Bun (`netlink_contract_bun.ts`).
 *
 * Each case gets a {@link ContractHarness}: the datapath, and a
 * {@link KernelPoke} that plays the outside world (an admin with `ip`) and
 * reads the kernel back as text. The namespace starts with `lo` and `ext0`
 * (up, MTU 1500, 192.0.2.1/24 and fd00::1/64). The IPv6 cases are in
 * `datapath_contract_ipv6.ts`; every runner runs both lists.
 *
 * @module
 */

import assert from "node:assert/strict";
import { formatIPNet, type IPAddr, type IPNet, parseIPv4, parseIPv4Net } from "../core/ip.ts";
import type {
  Datapath,
  Drift,
  EntryScope,
  FdbSpec,
  NeighbourSpec,
  PeerEntries,
  RouteSpec,
  VxlanDeviceSpec,
} from "../datapath/types.ts";

/** A VXLAN device made from outside (an earlier run, another tool). */
export interface PokeVxlan {
  readonly name: string;
  readonly vni: number;
  readonly port: number;
  readonly local?: IPAddr;
  readonly underlay?: string;
  readonly mac: string;
  readonly mtu?: number;
  readonly up?: boolean;
}

/** The kernel as text: what the contract compares across implementations. */
export interface KernelSnapshot {
  readonly devices: Record<string, {
    readonly kind: string | null;
    readonly mtu: number;
    readonly mac: string | null;
    readonly up: boolean;
    /** `10.5.1.0/32`, `fd00:5:1::/128`, sorted; IPv6 link-local ones left out. */
    readonly addresses: readonly string[];
    readonly vxlan: {
      readonly vni: number;
      readonly port: number;
      readonly local: string | null;
      readonly underlay: string | null;
      readonly learning: boolean;
      readonly gbp: boolean;
    } | null;
  }>;
  /**
   * Main-table routes other than the kernel's own, as `ip route` prints them
   * (IPv6 ones without their default metric), sorted.
   */
  readonly routes: readonly string[];
  /** Permanent neighbours: `10.5.2.0 lladdr 02:… dev flannel.1`, sorted. */
  readonly neighbours: readonly string[];
  /** Fdb entries with a remote: `02:… dev flannel.1 dst 192.0.2.12`, sorted. */
  readonly fdb: readonly string[];
}

/** Changes from outside the datapath, and a way to read the kernel back. */
export interface KernelPoke {
  snapshot(): Promise<KernelSnapshot>;
  createVxlan(spec: PokeVxlan): Promise<void>;
  addAddress(device: string, address: IPNet): Promise<void>;
  deleteAddress(device: string, address: IPNet): Promise<void>;
  deleteLink(name: string): Promise<void>;
  setLink(name: string, changes: { up?: boolean; mtu?: number; mac?: string }): Promise<void>;
  replaceRoute(route: RouteSpec & { metric?: number }): Promise<void>;
  deleteRoute(route: { dst: IPNet; device?: string }): Promise<void>;
  replaceNeighbour(n: NeighbourSpec): Promise<void>;
  deleteNeighbour(n: { device: string; ip: IPAddr }): Promise<void>;
  replaceFdb(f: FdbSpec): Promise<void>;
  deleteFdb(f: FdbSpec): Promise<void>;
}

/** What a contract case gets. */
export interface ContractHarness {
  readonly dp: Datapath;
  readonly kernel: KernelPoke;
}

/** One contract case. */
export interface ContractCase {
  readonly name: string;
  readonly fn: (h: ContractHarness) => Promise<void>;
}

const ip = parseIPv4;
const net = parseIPv4Net;

/** The VXLAN device every case uses. */
export const VXLAN: VxlanDeviceSpec = {
  kind: "vxlan",
  name: "flannel.1",
  vni: 1,
  port: 8472,
  local: ip("192.0.2.1"),
  underlay: "ext0",
  learning: false,
  gbp: false,
  mac: "02:00:00:00:00:01",
  mtu: 1450,
  addresses: [net("10.5.1.0/32")],
};

/** The vxlan-like scope every case uses. */
export const SCOPE: EntryScope = {
  name: "vx",
  network: net("10.5.0.0/16"),
  except: [net("10.5.1.0/24")],
  routeDevices: ["flannel.1"],
  gatewayDevices: ["ext0"],
  neighbourDevices: ["flannel.1"],
};

/** A vxlan peer's entries: neighbour, fdb and onlink route (flannel's three). */
export function vxlanPeer(n: number, publicIP = `192.0.2.${n}`, mac?: string): PeerEntries {
  const subnet = ip(`10.5.${n}.0`);
  const vtep = mac ?? `02:00:00:00:00:${n.toString(16).padStart(2, "0")}`;
  return {
    neighbours: [{ device: "flannel.1", ip: subnet, mac: vtep }],
    fdb: [{ device: "flannel.1", mac: vtep, dst: ip(publicIP) }],
    routes: [{
      dst: { ip: subnet, prefixLen: 24 },
      gateway: subnet,
      device: "flannel.1",
      onlink: true,
    }],
  };
}

/** A host-gw peer's route via its public IP on ext0. */
export function hostGwPeer(n: number, publicIP = `192.0.2.${n}`): PeerEntries {
  return { routes: [{ dst: net(`10.5.${n}.0/24`), gateway: ip(publicIP), device: "ext0" }] };
}

/** Peer key of peer n. */
export const key = (n: number): string => `10.5.${n}.0/24`;

/** The external interface's addresses every harness starts with. */
export const EXT_ADDRESSES: readonly IPNet[] = [
  { ip: 0xc0000201, prefixLen: 24 }, // 192.0.2.1/24
  { ip: 0xfd000000000000000000000000000001n, prefixLen: 64 }, // fd00::1/64
];

/**
 * Wait for a drift report matching `pred` (at most `ms` of wall time).
 *
 * @returns The report.
 * @throws {Error} When none arrives in time, or the stream ends.
 */
export async function waitForDrift(
  it: AsyncIterator<Drift>,
  pred: (d: Drift) => boolean,
  ms = 3000,
): Promise<Drift> {
  const deadline = Date.now() + ms;
  const seen: Drift[] = [];
  for (;;) {
    const left = deadline - Date.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const r = await Promise.race([
      it.next(),
      new Promise<"timeout">((
        res,
      ) => (timer = setTimeout(() => res("timeout"), Math.max(0, left)))),
    ]);
    clearTimeout(timer);
    if (r === "timeout") {
      throw new Error(`no matching drift within ${ms} ms; saw ${JSON.stringify(seen)}`);
    }
    if (r.done) throw new Error(`the drift stream ended; saw ${JSON.stringify(seen)}`);
    if (pred(r.value)) return r.value;
    seen.push(r.value);
  }
}

/** Drift of peer `k`'s entries. */
export const entriesOf = (k: string) => (d: Drift): boolean =>
  d.kind === "entries" && d.keys.includes(k);
/** Drift of a device. */
export const deviceDrift = (name: string, re: RegExp) => (d: Drift): boolean =>
  d.kind === "device" && d.device === name && re.test(d.reason);

/**
 * Run `fn` with a drift iterator of `dp`, ended afterwards.
 *
 * @param dp The datapath.
 * @param fn What to do while listening.
 */
export async function withDrift(
  dp: Datapath,
  fn: (it: AsyncIterator<Drift>) => Promise<void>,
): Promise<void> {
  const ac = new AbortController();
  const it = dp.drift(ac.signal)[Symbol.asyncIterator]();
  try {
    await fn(it);
  } finally {
    ac.abort();
    await it.return?.();
  }
}

const three = () =>
  new Map([[key(2), vxlanPeer(2)], [key(3), vxlanPeer(3)], [key(4), vxlanPeer(4)]]);

/** The contract cases. */
export const datapathContract: readonly ContractCase[] = [
  {
    name: "link() reports a device with its addresses, and null for a missing one",
    fn: async ({ dp }) => {
      const ext = await dp.link("ext0");
      assert.ok(ext);
      assert.equal(ext.up, true);
      assert.equal(ext.mtu, 1500);
      assert.deepEqual(ext.addresses.map(formatIPNet).sort(), ["192.0.2.1/24", "fd00::1/64"]);
      assert.equal((await dp.link(ext.index))?.name, "ext0");
      assert.equal(await dp.link("nope0"), null);
    },
  },
  {
    name: "ensureDevice creates a VXLAN device as asked, and a second call changes nothing",
    fn: async ({ dp, kernel }) => {
      const first = await dp.ensureDevice(VXLAN);
      assert.ok(first.changes.includes("created"), JSON.stringify(first.changes));
      const s = await kernel.snapshot();
      assert.deepEqual(s.devices["flannel.1"], {
        kind: "vxlan",
        mtu: 1450,
        mac: "02:00:00:00:00:01",
        up: true,
        addresses: ["10.5.1.0/32"],
        vxlan: {
          vni: 1,
          port: 8472,
          local: "192.0.2.1",
          underlay: "ext0",
          learning: false,
          gbp: false,
        },
      });
      assert.equal(first.device.mac, VXLAN.mac);
      const again = await dp.ensureDevice(VXLAN);
      assert.deepEqual(again.changes, []);
      assert.equal(again.device.index, first.device.index);
    },
  },
  {
    name:
      "ensureDevice recreates an incompatible VXLAN device with the asked MAC, without stale addresses",
    fn: async ({ dp, kernel }) => {
      await kernel.createVxlan({
        name: "flannel.1",
        vni: 9,
        port: 4789,
        underlay: "ext0",
        mac: "0a:00:00:00:00:09",
        up: true,
      });
      await kernel.addAddress("flannel.1", net("10.5.99.0/32"));
      const r = await dp.ensureDevice(VXLAN);
      assert.ok(
        r.changes.some((c) => /incompatible configuration \(VNI 9, want 1\)/.test(c)),
        JSON.stringify(r.changes),
      );
      const d = (await kernel.snapshot()).devices["flannel.1"];
      assert.equal(d.vxlan?.vni, 1);
      assert.equal(d.vxlan?.port, 8472);
      assert.equal(d.mac, VXLAN.mac);
      assert.deepEqual(d.addresses, ["10.5.1.0/32"]);
    },
  },
  {
    name: "ensureDevice puts back the MAC, MTU, addresses and up state of a compatible device",
    fn: async ({ dp, kernel }) => {
      await dp.ensureDevice(VXLAN);
      await kernel.setLink("flannel.1", { up: false, mtu: 1300, mac: "02:ba:ad:00:00:01" });
      await kernel.addAddress("flannel.1", net("10.5.77.0/32"));
      const r = await dp.ensureDevice(VXLAN);
      assert.ok(!r.changes.includes("created"), JSON.stringify(r.changes));
      const d = (await kernel.snapshot()).devices["flannel.1"];
      assert.deepEqual([d.up, d.mtu, d.mac, d.addresses], [true, 1450, VXLAN.mac, ["10.5.1.0/32"]]);
    },
  },
  {
    name: "ensureDevice configures an existing device and refuses a missing one",
    fn: async ({ dp, kernel }) => {
      await kernel.createVxlan({ name: "tun9", vni: 7, port: 4789, mac: "02:00:00:00:00:07" });
      const spec = {
        kind: "existing",
        name: "tun9",
        mtu: 1400,
        addresses: [net("10.6.1.0/32")],
      } as const;
      const r = await dp.ensureDevice(spec);
      assert.deepEqual(r.changes.length > 0, true);
      const d = (await kernel.snapshot()).devices["tun9"];
      assert.deepEqual([d.up, d.mtu, d.addresses, d.vxlan?.vni], [true, 1400, ["10.6.1.0/32"], 7]);
      assert.deepEqual((await dp.ensureDevice(spec)).changes, []);
      await assert.rejects(dp.ensureDevice({ ...spec, name: "nope0" }), /nope0.*does not exist/);
    },
  },
  {
    name:
      "sync installs every peer's entries, a second sync writes nothing, peers left out are removed",
    fn: async ({ dp, kernel }) => {
      await dp.ensureDevice(VXLAN);
      const table = dp.entries(SCOPE);
      const all = three();
      all.set(key(5), hostGwPeer(5));
      const r = await table.sync(all);
      assert.deepEqual(r, { written: 10, deleted: 0, failures: [] });
      const s = await kernel.snapshot();
      assert.deepEqual(s.routes, [
        "10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink",
        "10.5.3.0/24 via 10.5.3.0 dev flannel.1 onlink",
        "10.5.4.0/24 via 10.5.4.0 dev flannel.1 onlink",
        "10.5.5.0/24 via 192.0.2.5 dev ext0",
      ]);
      assert.deepEqual(s.neighbours, [
        "10.5.2.0 lladdr 02:00:00:00:00:02 dev flannel.1",
        "10.5.3.0 lladdr 02:00:00:00:00:03 dev flannel.1",
        "10.5.4.0 lladdr 02:00:00:00:00:04 dev flannel.1",
      ]);
      assert.deepEqual(s.fdb, [
        "02:00:00:00:00:02 dev flannel.1 dst 192.0.2.2",
        "02:00:00:00:00:03 dev flannel.1 dst 192.0.2.3",
        "02:00:00:00:00:04 dev flannel.1 dst 192.0.2.4",
      ]);
      assert.deepEqual(await table.sync(all), { written: 0, deleted: 0, failures: [] });
      all.delete(key(3));
      all.delete(key(5));
      assert.deepEqual(await table.sync(all), { written: 0, deleted: 4, failures: [] });
      const after = await kernel.snapshot();
      assert.deepEqual(after.routes, [
        "10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink",
        "10.5.4.0/24 via 10.5.4.0 dev flannel.1 onlink",
      ]);
      assert.equal(after.neighbours.length, 2);
      assert.equal(after.fdb.length, 2);
    },
  },
  {
    name: "sync deletes stale objects inside the scope and never touches objects outside it",
    fn: async ({ dp, kernel }) => {
      await dp.ensureDevice(VXLAN);
      await kernel.createVxlan({
        name: "other.2",
        vni: 2,
        port: 4790,
        mac: "02:00:00:00:00:f2",
        up: true,
      });
      const foreign = [
        "10.5.1.0/24 via 192.0.2.9 dev ext0", // this host's own subnet
        "10.5.9.0/24 dev other.2", // inside the network, another device
        "172.16.0.0/16 via 192.0.2.9 dev ext0", // outside the network
        "10.5.8.0/24 dev ext0", // ext0 without a gateway
      ];
      await kernel.replaceRoute({
        dst: net("10.5.1.0/24"),
        gateway: ip("192.0.2.9"),
        device: "ext0",
      });
      await kernel.replaceRoute({ dst: net("10.5.9.0/24"), device: "other.2" });
      await kernel.replaceRoute({
        dst: net("172.16.0.0/16"),
        gateway: ip("192.0.2.9"),
        device: "ext0",
      });
      await kernel.replaceRoute({ dst: net("10.5.8.0/24"), device: "ext0" });
      await kernel.replaceNeighbour({
        device: "other.2",
        ip: ip("10.5.9.0"),
        mac: "02:00:00:00:00:99",
      });
      await kernel.replaceFdb({
        device: "other.2",
        mac: "02:00:00:00:00:99",
        dst: ip("192.0.2.99"),
      });
      // Stale, in scope: a left-over peer of an earlier run.
      await kernel.replaceRoute({
        dst: net("10.5.7.0/24"),
        gateway: ip("10.5.7.0"),
        device: "flannel.1",
        onlink: true,
      });
      await kernel.replaceRoute({
        dst: net("10.5.6.0/24"),
        gateway: ip("192.0.2.6"),
        device: "ext0",
      });
      await kernel.replaceNeighbour({
        device: "flannel.1",
        ip: ip("10.5.7.0"),
        mac: "02:00:00:00:00:77",
      });
      await kernel.replaceFdb({
        device: "flannel.1",
        mac: "02:00:00:00:00:77",
        dst: ip("192.0.2.7"),
      });
      const r = await dp.entries(SCOPE).sync(new Map([[key(2), vxlanPeer(2)]]));
      assert.deepEqual([r.written, r.deleted, r.failures], [3, 4, []]);
      const s = await kernel.snapshot();
      assert.deepEqual(
        s.routes,
        [...foreign, "10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink"].sort(),
      );
      assert.deepEqual(s.neighbours, [
        "10.5.2.0 lladdr 02:00:00:00:00:02 dev flannel.1",
        "10.5.9.0 lladdr 02:00:00:00:00:99 dev other.2",
      ]);
      assert.deepEqual(s.fdb, [
        "02:00:00:00:00:02 dev flannel.1 dst 192.0.2.2",
        "02:00:00:00:00:99 dev other.2 dst 192.0.2.99",
      ]);
    },
  },
  {
    name: "update writes only the changed peers, and afterwards a full sync finds nothing to do",
    fn: async ({ dp, kernel }) => {
      await dp.ensureDevice(VXLAN);
      const table = dp.entries(SCOPE);
      const all = three();
      await table.sync(all);
      // A new peer, a peer that left, a peer with a new public IP and MAC.
      const changes = new Map<string, PeerEntries | null>([
        [key(6), vxlanPeer(6)],
        [key(3), null],
        [key(4), vxlanPeer(4, "192.0.2.44", "02:00:00:00:00:44")],
      ]);
      const r = await table.update(changes);
      assert.deepEqual(r.failures, []);
      // Peer 6: neighbour, fdb, route. Peer 4: neighbour (new MAC), fdb (new MAC), not its route.
      assert.equal(r.written, 3 + 2);
      // Peer 3: neighbour, fdb, route. Peer 4: the fdb entry of its old MAC.
      assert.equal(r.deleted, 3 + 1);
      const s = await kernel.snapshot();
      assert.deepEqual(s.fdb, [
        "02:00:00:00:00:02 dev flannel.1 dst 192.0.2.2",
        "02:00:00:00:00:06 dev flannel.1 dst 192.0.2.6",
        "02:00:00:00:00:44 dev flannel.1 dst 192.0.2.44",
      ]);
      assert.ok(s.neighbours.includes("10.5.4.0 lladdr 02:00:00:00:00:44 dev flannel.1"));
      assert.ok(!s.routes.some((x) => x.startsWith("10.5.3.0/24")));
      all.delete(key(3));
      all.set(key(6), vxlanPeer(6));
      all.set(key(4), vxlanPeer(4, "192.0.2.44", "02:00:00:00:00:44"));
      assert.deepEqual(await table.sync(all), { written: 0, deleted: 0, failures: [] });
      // An unchanged peer given again writes nothing.
      assert.deepEqual(await table.update(new Map([[key(2), vxlanPeer(2)]])), {
        written: 0,
        deleted: 0,
        failures: [],
      });
    },
  },
  {
    name: "a write the kernel refuses is reported with its peer, and the rest is applied",
    fn: async ({ dp, kernel }) => {
      const table = dp.entries(SCOPE);
      const r = await table.sync(
        new Map([
          [key(2), hostGwPeer(2)],
          [key(3), hostGwPeer(3, "198.51.100.3")], // not on a connected network of ext0
          [key(4), hostGwPeer(4)],
        ]),
      );
      assert.equal(r.written, 2);
      assert.deepEqual(r.failures.map((f) => f.key), [key(3)]);
      assert.match(r.failures[0].error.message, /ENETUNREACH.*10\.5\.3\.0\/24 via 198\.51\.100\.3/);
      assert.deepEqual((await kernel.snapshot()).routes, [
        "10.5.2.0/24 via 192.0.2.2 dev ext0",
        "10.5.4.0/24 via 192.0.2.4 dev ext0",
      ]);
      const again = await table.update(new Map([[key(3), hostGwPeer(3)]]));
      assert.deepEqual([again.written, again.failures], [1, []]);
    },
  },
  {
    name:
      "entries on a device that does not exist fail for their peers with ENODEV, and the rest is applied",
    fn: async ({ dp, kernel }) => {
      const table = dp.entries(SCOPE); // flannel.1 was never made
      const r = await table.sync(
        new Map([[key(2), vxlanPeer(2)], [key(3), hostGwPeer(3)], [key(4), vxlanPeer(4)]]),
      );
      assert.equal(r.written, 1);
      assert.deepEqual([...new Set(r.failures.map((f) => f.key))], [key(2), key(4)]);
      assert.equal(r.failures.length, 6, "a route, a neighbour and an fdb entry each");
      for (const f of r.failures) {
        assert.equal((f.error as { code?: string }).code, "ENODEV");
        assert.match(f.error.message, /flannel\.1/);
      }
      assert.deepEqual((await kernel.snapshot()).routes, ["10.5.3.0/24 via 192.0.2.3 dev ext0"]);
      await dp.ensureDevice(VXLAN);
      const again = await table.update(new Map([[key(2), vxlanPeer(2)], [key(4), vxlanPeer(4)]]));
      assert.deepEqual([again.written, again.failures], [6, []]);
    },
  },
  {
    name: "update before any sync syncs, removing stale objects of the scope",
    fn: async ({ dp, kernel }) => {
      await kernel.replaceRoute({
        dst: net("10.5.6.0/24"),
        gateway: ip("192.0.2.6"),
        device: "ext0",
      });
      const r = await dp.entries(SCOPE).update(new Map([[key(2), hostGwPeer(2)]]));
      assert.deepEqual(r, { written: 1, deleted: 1, failures: [] });
      assert.deepEqual((await kernel.snapshot()).routes, ["10.5.2.0/24 via 192.0.2.2 dev ext0"]);
    },
  },
  {
    name: "entries outside the scope are refused before anything is written",
    fn: async ({ dp, kernel }) => {
      const table = dp.entries(SCOPE);
      const outside = {
        routes: [{ dst: net("172.16.0.0/16"), gateway: ip("192.0.2.9"), device: "ext0" }],
      };
      await assert.rejects(
        table.sync(new Map([[key(2), hostGwPeer(2)], ["x", outside]])),
        RangeError,
      );
      await assert.rejects(
        table.update(new Map([["x", outside]])),
        /outside the scope of table "vx"/,
      );
      assert.deepEqual((await kernel.snapshot()).routes, []);
    },
  },
  {
    name:
      "a deleted, downed or changed device is reported as device drift; ensureDevice restores it",
    fn: async ({ dp, kernel }) => {
      await dp.ensureDevice(VXLAN);
      await withDrift(dp, async (it) => {
        await kernel.setLink("flannel.1", { mac: "02:ba:ad:00:00:01" });
        await waitForDrift(it, deviceDrift("flannel.1", /MAC changed/));
        await dp.ensureDevice(VXLAN);
        await kernel.setLink("flannel.1", { mtu: 1300 });
        await waitForDrift(it, deviceDrift("flannel.1", /MTU changed to 1300/));
        await dp.ensureDevice(VXLAN);
        await kernel.deleteAddress("flannel.1", net("10.5.1.0/32"));
        await waitForDrift(
          it,
          deviceDrift("flannel.1", /10\.5\.1\.0\/32 was removed|addresses changed/),
        );
        await dp.ensureDevice(VXLAN);
        await kernel.setLink("flannel.1", { up: false });
        await waitForDrift(it, deviceDrift("flannel.1", /set down/));
        await dp.ensureDevice(VXLAN);
        await kernel.deleteLink("flannel.1");
        await waitForDrift(it, deviceDrift("flannel.1", /deleted/));
        await dp.ensureDevice(VXLAN);
      });
      const d = (await kernel.snapshot()).devices["flannel.1"];
      assert.deepEqual([d.up, d.mtu, d.mac, d.addresses], [true, 1450, VXLAN.mac, ["10.5.1.0/32"]]);
    },
  },
  {
    name:
      "a deleted or changed route, neighbour or fdb entry is reported with its peer; update restores it",
    fn: async ({ dp, kernel }) => {
      await dp.ensureDevice(VXLAN);
      const table = dp.entries(SCOPE);
      const all = three();
      await table.sync(all);
      const restore = async (k: string) => {
        const r = await table.update(new Map([[k, all.get(k)!]]));
        assert.deepEqual([r.written, r.failures], [1, []], `restoring ${k}`);
      };
      await withDrift(dp, async (it) => {
        await kernel.deleteRoute({ dst: net("10.5.2.0/24") });
        await waitForDrift(it, entriesOf(key(2)));
        await restore(key(2));
        await kernel.replaceRoute({
          dst: net("10.5.3.0/24"),
          gateway: ip("192.0.2.33"),
          device: "ext0",
        });
        await waitForDrift(it, entriesOf(key(3)));
        await restore(key(3));
        await kernel.deleteNeighbour({ device: "flannel.1", ip: ip("10.5.4.0") });
        await waitForDrift(it, entriesOf(key(4)));
        await restore(key(4));
        await kernel.replaceNeighbour({
          device: "flannel.1",
          ip: ip("10.5.2.0"),
          mac: "02:ba:ad:00:00:02",
        });
        await waitForDrift(it, entriesOf(key(2)));
        await restore(key(2));
        await kernel.deleteFdb({
          device: "flannel.1",
          mac: "02:00:00:00:00:03",
          dst: ip("192.0.2.3"),
        });
        await waitForDrift(it, entriesOf(key(3)));
        await restore(key(3));
      });
      assert.deepEqual(await table.sync(all), { written: 0, deleted: 0, failures: [] });
    },
  },
  {
    name: "the datapath's own writes are never reported as drift",
    fn: async ({ dp, kernel }) => {
      await withDrift(dp, async (it) => {
        await dp.ensureDevice(VXLAN);
        const table = dp.entries(SCOPE);
        await table.sync(three());
        await table.update(
          new Map([[key(3), null], [key(6), vxlanPeer(6)], [key(4), vxlanPeer(4, "192.0.2.44")]]),
        );
        await table.sync(new Map([[key(2), vxlanPeer(2)]]));
        await dp.ensureDevice({ ...VXLAN, mtu: 1400, addresses: [net("10.5.1.1/32")] });
        // A marker from outside: the first report must be about it.
        await kernel.deleteRoute({ dst: net("10.5.2.0/24") });
        const first = await waitForDrift(it, () => true);
        assert.ok(entriesOf(key(2))(first), `first drift was ${JSON.stringify(first)}`);
      });
    },
  },
  {
    name: "routes through a device that went down are reported once it is up again",
    fn: async ({ dp, kernel }) => {
      const table = dp.entries(SCOPE);
      await table.sync(new Map([[key(2), hostGwPeer(2)], [key(3), hostGwPeer(3)]]));
      await withDrift(dp, async (it) => {
        await kernel.setLink("ext0", { up: false });
        assert.deepEqual((await kernel.snapshot()).routes, []);
        await kernel.setLink("ext0", { up: true });
        const d = await waitForDrift(it, (d) => d.kind === "entries");
        assert.deepEqual(d.kind === "entries" && [...d.keys].sort(), [key(2), key(3)]);
        const r = await table.update(new Map([[key(2), hostGwPeer(2)], [key(3), hostGwPeer(3)]]));
        assert.deepEqual([r.written, r.failures], [2, []]);
      });
    },
  },
  {
    name: "a drift iterable ends when its signal aborts; close ends it and later calls reject",
    fn: async ({ dp }) => {
      const ac = new AbortController();
      const it = dp.drift(ac.signal)[Symbol.asyncIterator]();
      const next = it.next();
      ac.abort();
      assert.equal((await next).done, true);
      const it2 = dp.drift(new AbortController().signal)[Symbol.asyncIterator]();
      const next2 = it2.next();
      dp.close();
      assert.equal((await next2).done, true);
      await assert.rejects(dp.link("ext0"), /closed/);
      await assert.rejects(dp.ensureDevice(VXLAN), /closed/);
    },
  },
];
