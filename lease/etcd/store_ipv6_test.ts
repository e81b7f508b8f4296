// Dual-stack and IPv6-only leases in a real etcd, in flannel v0.28's exact format.
//
// The golden keys and values below are what flannel writes, derived from its source
// (v0.28.9):
// - key: pkg/subnet/etcd/registry.go:221 path.Join(prefix, "subnets", MakeSubnetKey(sn, sn6));
//   pkg/subnet/subnet.go:62 MakeSubnetKey = sn.StringSep(".", "-") [+ "&" + sn6.StringSep(":", "-")],
//   so an IPv6-only lease (zero ip.IP4Net) is "0.0.0.0-0&<v6>-<len>";
// - value: registry.go:222 json.Marshal(attrs) of pkg/lease/lease.go:42 LeaseAttrs
//   {PublicIP ip.IP4; PublicIPv6 *ip.IP6; BackendType, BackendData, BackendV6Data omitempty}:
//   PublicIP through pkg/ip/ipnet.go:90 IP4.MarshalJSON ("0.0.0.0" when unset), PublicIPv6
//   through pkg/ip/ip6net.go:95 (Go's net.IP text) or null;
// - vxlan data: pkg/backend/vxlan/vxlan.go:92 newSubnetAttrs sets PublicIP/BackendData only with
//   an IPv4 device, PublicIPv6/BackendV6Data only with an IPv6 one; host-gw
//   (pkg/backend/hostgw/hostgw.go:64-80) sets PublicIP/PublicIPv6 per enabled family, no data.
import assert from "node:assert/strict";
import { nullLogger } from "../../core/log.ts";
import { watchUntil } from "../../testing/lease_contract.ts";
import { type EtcdServer, startEtcd } from "../../testing/etcd_server.ts";
import { formatSubnetPair, parseIPv4Net, parseIPv6Net } from "../../core/ip.ts";
import { createEtcdLeaseStore, type EtcdStoreOptions } from "./store.ts";
import type { Lease, LeaseStore } from "../types.ts";

const PREFIX = "/coreos.com/network";
const DUAL =
  '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:5::/48","Backend":{"Type":"vxlan"}}';
const V6ONLY =
  '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:5::/48","Backend":{"Type":"host-gw"}}';

/** flannel's dual-stack vxlan host 192.168.64.3 / 2001:db8::3 on 10.5.34.0/24 + fd00:10:5:22::/64. */
const FLANNEL_DUAL_KEY = `${PREFIX}/subnets/10.5.34.0-24&fd00:10:5:22::-64`;
const FLANNEL_DUAL_VALUE =
  `{"PublicIP":"192.168.64.3","PublicIPv6":"2001:db8::3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}}`;
/** flannel's IPv6-only host-gw host 2001:db8::3 on fd00:10:5:22::/64. */
const FLANNEL_V6_KEY = `${PREFIX}/subnets/0.0.0.0-0&fd00:10:5:22::-64`;
const FLANNEL_V6_VALUE =
  `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::3","BackendType":"host-gw"}`;

async function withEtcd(
  config: string,
  fn: (etcd: EtcdServer, open: (o?: Partial<EtcdStoreOptions>) => LeaseStore) => Promise<void>,
): Promise<void> {
  const etcd = await startEtcd();
  const stores: LeaseStore[] = [];
  try {
    await etcd.etcdctl(["put", `${PREFIX}/config`, config]);
    await fn(etcd, (o = {}) => {
      const s = createEtcdLeaseStore({ endpoints: [etcd.endpoint], logger: nullLogger, ...o });
      stores.push(s);
      return s;
    });
  } finally {
    for (const s of stores) await s.close();
    await etcd.close();
  }
}

/** flannel's way: grant a 24 h etcd lease, put the key with it. */
async function flannelPut(etcd: EtcdServer, key: string, value: string): Promise<void> {
  const grant = await etcd.etcdctl(["lease", "grant", "86400"]);
  const id = grant.match(/lease ([0-9a-f]+) granted/)![1];
  await etcd.etcdctl(["put", "--lease", id, "--", key], { input: value });
}

async function getValue(etcd: EtcdServer, key: string): Promise<string> {
  return (await etcd.etcdctl(["get", "--print-value-only", "--", key])).replace(/\n$/, "");
}

async function subnetKeys(etcd: EtcdServer): Promise<string[]> {
  const out = await etcd.etcdctl(["get", "--prefix", "--keys-only", `${PREFIX}/subnets/`]);
  return out.split("\n").filter((l) => l !== "").sort();
}

Deno.test("etcd store: flannel's dual-stack lease written with etcdctl is listed and watched", async () => {
  await withEtcd(DUAL, async (etcd, open) => {
    await flannelPut(etcd, FLANNEL_DUAL_KEY, FLANNEL_DUAL_VALUE);
    const s = open();
    const cfg = await s.getNetworkConfig();
    assert.equal(cfg.enableIPv6, true);
    const snap = await s.list();
    assert.equal(snap.leases.length, 1);
    const flannel = snap.leases[0];
    assert.deepEqual({ ...flannel, expiration: null }, {
      subnet: parseIPv4Net("10.5.34.0/24"),
      ipv6Subnet: parseIPv6Net("fd00:10:5:22::/64"),
      attrs: {
        publicIP: "192.168.64.3",
        publicIPv6: "2001:db8::3",
        backendType: "vxlan",
        backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" },
        backendV6Data: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:45" },
      },
      expiration: null,
    });
    const left = flannel.expiration! - Date.now();
    assert.ok(left > 86_300_000 && left <= 86_400_000, `expiry from the etcd lease, got ${left}`);

    // a second flannel host appears while weft watches
    const key2 = `${PREFIX}/subnets/10.5.35.0-24&fd00:10:5:23::-64`;
    const value2 = FLANNEL_DUAL_VALUE.replaceAll("192.168.64.3", "192.168.64.4")
      .replace("2001:db8::3", "2001:db8::4");
    const events = await watchUntil(
      s,
      snap.revision,
      (ev) => ev.some((e) => e.type === "added" && e.lease.attrs.publicIPv6 === "2001:db8::4"),
      10_000,
      () => flannelPut(etcd, key2, value2),
    );
    const added = events.find((e) => e.type === "added")!;
    assert.ok(added.type === "added");
    assert.equal(formatSubnetPair(added.lease), "10.5.35.0/24 + fd00:10:5:23::/64");
  });
});

Deno.test("etcd store: weft's dual-stack lease is byte-identical to flannel's", async () => {
  await withEtcd(DUAL, async (etcd, open) => {
    await flannelPut(etcd, FLANNEL_DUAL_KEY, FLANNEL_DUAL_VALUE);
    const s = open();
    const cfg = await s.getNetworkConfig();
    const attrs = {
      publicIP: "192.168.64.5",
      publicIPv6: "2001:DB8:0::5", // written in Go's text
      backendType: "vxlan",
      backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:54" },
      backendV6Data: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:55" },
    };
    const mine = await s.acquire(cfg, {
      attrs,
      previousSubnet: parseIPv4Net("10.5.36.0/24"),
      previousIPv6Subnet: parseIPv6Net("fd00:10:5:24::/64"),
    });
    assert.equal(formatSubnetPair(mine), "10.5.36.0/24 + fd00:10:5:24::/64");
    const key = `${PREFIX}/subnets/10.5.36.0-24&fd00:10:5:24::-64`;
    assert.deepEqual(await subnetKeys(etcd), [FLANNEL_DUAL_KEY, key]);
    assert.equal(
      await getValue(etcd, key),
      `{"PublicIP":"192.168.64.5","PublicIPv6":"2001:db8::5","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:54"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:55"}}`,
    );
    // a previous subnet held by flannel's host is not taken, in either family
    const other = await open().acquire(cfg, {
      attrs: { ...attrs, publicIP: "192.168.64.6", publicIPv6: "2001:db8::6" },
      previousSubnet: parseIPv4Net("10.5.37.0/24"),
      previousIPv6Subnet: parseIPv6Net("fd00:10:5:22::/64"),
    });
    assert.notEqual(formatSubnetPair(other), "10.5.37.0/24 + fd00:10:5:22::/64");
    assert.ok(other.subnet && other.ipv6Subnet);
    // flannel's host restarted as weft keeps its record byte for byte
    const flannel = (await s.list()).leases.find((l) => l.attrs.publicIP === "192.168.64.3")!;
    await open().acquire(cfg, { attrs: flannel.attrs });
    assert.equal(await getValue(etcd, FLANNEL_DUAL_KEY), FLANNEL_DUAL_VALUE);
  });
});

Deno.test("etcd store: IPv6-only — flannel's 0.0.0.0-0 lease is read, weft writes the same form", async () => {
  await withEtcd(V6ONLY, async (etcd, open) => {
    await flannelPut(etcd, FLANNEL_V6_KEY, FLANNEL_V6_VALUE);
    const s = open();
    const cfg = await s.getNetworkConfig();
    assert.equal(cfg.enableIPv4, false);
    const { leases } = await s.list();
    assert.deepEqual(leases.map((l) => ({ ...l, expiration: null })), [{
      ipv6Subnet: parseIPv6Net("fd00:10:5:22::/64"),
      attrs: { publicIP: "", publicIPv6: "2001:db8::3", backendType: "host-gw" },
      expiration: null,
    }]);

    const hosts: Lease[] = [];
    for (const n of [5, 6, 7]) {
      hosts.push(
        await open().acquire(cfg, {
          attrs: { publicIP: "", publicIPv6: `2001:db8::${n}`, backendType: "host-gw" },
        }),
      );
    }
    // flannel's own etcd allocator cannot give a second IPv6-only host a subnet (every lease
    // overlaps 0.0.0.0/0); weft allocates IPv6 alone
    const pairs = hosts.map((l) => formatSubnetPair(l));
    assert.equal(new Set([...pairs, "fd00:10:5:22::/64"]).size, 4, pairs.join(", "));
    for (const l of hosts) assert.equal(l.subnet, undefined);
    const keys = await subnetKeys(etcd);
    assert.equal(keys.length, 4);
    for (const k of keys) {
      assert.match(k, /^\/coreos\.com\/network\/subnets\/0\.0\.0\.0-0&fd00:10:5:[0-9a-f]+::-64$/);
    }
    const key5 = `${PREFIX}/subnets/0.0.0.0-0&${formatSubnetPair(hosts[0]).replace("/", "-")}`;
    assert.equal(
      await getValue(etcd, key5),
      `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::5","BackendType":"host-gw"}`,
    );
    // a restarted IPv6-only host is recognised by its IPv6 address
    const again = await open().acquire(cfg, {
      attrs: { publicIP: "", publicIPv6: "2001:db8::6", backendType: "host-gw" },
    });
    assert.equal(formatSubnetPair(again), pairs[1]);
    assert.equal((await subnetKeys(etcd)).length, 4);
  });
});
