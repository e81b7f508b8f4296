// Dual-stack and IPv6-only nodes through the kube store and the fake API server, in flannel
// v0.28's exact annotation format (pkg/subnet/kube/kube.go:420-464 AcquireLease writes,
// kube.go:542-622 nodeToLease reads).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nullLogger } from "../../core/log.ts";
import { type Clock, systemClock } from "../../core/clock.ts";
import { formatSubnetPair, parseIPv4Net, parseIPv6Net } from "../../core/ip.ts";
import { createFakeKube, type FakeKube, writeKubeconfig } from "../../testing/fake_kube.ts";
import { watchUntil } from "../../testing/lease_contract.ts";
import { createKubeLeaseStore } from "./store.ts";
import type { LeaseAttrs } from "../types.ts";
import { LeaseConflictError } from "../../core/errors.ts";

const A = "flannel.alpha.coreos.com/";
const TOKEN = "weft-test-token";
const DUAL =
  '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:5::/48","Backend":{"Type":"vxlan"}}';
const V6ONLY =
  '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:5::/48","Backend":{"Type":"host-gw"}}';

const fastClock: Clock = {
  now: () => systemClock.now(),
  sleep: (ms, signal) => systemClock.sleep(Math.min(ms, 20), signal),
};

/** A flannel v0.28 dual-stack vxlan node's annotations, as its AcquireLease leaves them. */
const FLANNEL_DUAL_ANNOTATIONS = {
  [A + "backend-type"]: "vxlan",
  [A + "backend-data"]: '{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}',
  [A + "public-ip"]: "192.0.2.12",
  [A + "backend-v6-data"]: '{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}',
  [A + "public-ipv6"]: "2001:db8::12",
  [A + "kube-subnet-manager"]: "true",
};

async function withKube(
  netConf: string,
  fn: (kube: FakeKube, open: () => ReturnType<typeof createKubeLeaseStore>) => Promise<void>,
): Promise<void> {
  const kube = await createFakeKube({ token: TOKEN });
  const dir = mkdtempSync(join(tmpdir(), "weft-kube-ipv6-"));
  const netConfigPath = join(dir, "net-conf.json");
  writeFileSync(netConfigPath, netConf);
  const kubeconfigFile = writeKubeconfig(dir, kube, { token: TOKEN });
  const stores: ReturnType<typeof createKubeLeaseStore>[] = [];
  try {
    await fn(kube, () => {
      const s = createKubeLeaseStore({
        kubeconfigFile,
        loader: "builtin",
        nodeName: "n1",
        netConfigPath,
        env: {},
        clock: fastClock,
        logger: nullLogger,
      });
      stores.push(s);
      return s;
    });
  } finally {
    for (const s of stores) await s.close();
    await kube.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

Deno.test("kube store: a dual-stack node annotated by flannel is listed and watched with both families", async () => {
  await withKube(DUAL, async (kube, open) => {
    kube.addNode("flannel-1", {
      podCIDRs: ["10.5.2.0/24", "fd00:10:5:2::/64"],
      annotations: FLANNEL_DUAL_ANNOTATIONS,
    });
    // a flannel node without IPv6 annotations is dropped, as flannel's nodeToLease drops it
    kube.addNode("v4-agent", {
      podCIDRs: ["10.5.3.0/24", "fd00:10:5:3::/64"],
      annotations: {
        [A + "backend-type"]: "vxlan",
        [A + "backend-data"]: '{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:46"}',
        [A + "public-ip"]: "192.0.2.13",
        [A + "kube-subnet-manager"]: "true",
      },
    });
    const s = open();
    await s.getNetworkConfig();
    const snap = await s.list();
    assert.deepEqual(snap.leases, [{
      subnet: parseIPv4Net("10.5.2.0/24"),
      ipv6Subnet: parseIPv6Net("fd00:10:5:2::/64"),
      attrs: {
        publicIP: "192.0.2.12",
        publicIPv6: "2001:db8::12",
        backendType: "vxlan",
        backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" },
        backendV6Data: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:45" },
      },
      expiration: null,
    }]);
    // once the other agent publishes its IPv6 side, it appears
    const events = await watchUntil(
      s,
      snap.revision,
      (ev) => ev.some((e) => e.type === "added" && e.lease.attrs.publicIPv6 === "2001:db8::13"),
      10_000,
      () => {
        kube.annotate("v4-agent", {
          [A + "backend-v6-data"]: '{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:47"}',
          [A + "public-ipv6"]: "2001:db8::13",
        });
        return Promise.resolve();
      },
    );
    const added = events.find((e) => e.type === "added")!;
    assert.ok(added.type === "added");
    assert.equal(formatSubnetPair(added.lease), "10.5.3.0/24 + fd00:10:5:3::/64");
  });
});

Deno.test("kube store: weft's dual-stack annotations are byte-identical to flannel's", async () => {
  await withKube(DUAL, async (kube, open) => {
    kube.addNode("n1", { podCIDRs: ["10.5.1.0/24", "fd00:10:5:1::/64"] });
    const s = open();
    const cfg = await s.getNetworkConfig();
    const attrs: LeaseAttrs = {
      publicIP: "192.0.2.11",
      publicIPv6: "2001:DB8:0::11",
      backendType: "vxlan",
      backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" },
      backendV6Data: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:45" },
    };
    const lease = await s.acquire(cfg, { attrs });
    assert.equal(formatSubnetPair(lease), "10.5.1.0/24 + fd00:10:5:1::/64");
    assert.deepEqual(kube.getNode("n1")!.metadata.annotations, {
      ...FLANNEL_DUAL_ANNOTATIONS,
      [A + "public-ip"]: "192.0.2.11",
      [A + "public-ipv6"]: "2001:db8::11",
    });
    // the node as peers see it
    const mine = (await s.list()).leases.find((l) => l.attrs.publicIP === "192.0.2.11")!;
    assert.equal(mine.attrs.publicIPv6, "2001:db8::11");
    assert.deepEqual(mine.attrs.backendV6Data, attrs.backendV6Data);
    // renew keeps both podCIDRs; a changed IPv6 podCIDR is a conflict
    await s.renew(lease);
    kube.deleteNode("n1");
    kube.addNode("n1", { podCIDRs: ["10.5.1.0/24", "fd00:10:5:9::/64"] });
    await assert.rejects(
      () => s.renew(lease),
      (e: Error) =>
        e instanceof LeaseConflictError &&
        e.message.includes("podCIDR changed from 10.5.1.0/24 + fd00:10:5:1::/64"),
    );
  });
});

Deno.test("kube store: an IPv6-only node gets an IPv6 lease and flannel's IPv6-only annotations", async () => {
  await withKube(V6ONLY, async (kube, open) => {
    kube.addNode("n1", { podCIDRs: ["fd00:10:5:1::/64"] });
    kube.addNode("flannel-2", {
      podCIDRs: ["fd00:10:5:2::/64"],
      annotations: {
        // flannel's IPv6-only host-gw node: public-ip is Go's zero ip.IP4
        [A + "backend-type"]: "host-gw",
        [A + "backend-data"]: "null",
        [A + "public-ip"]: "0.0.0.0",
        [A + "backend-v6-data"]: "null",
        [A + "public-ipv6"]: "2001:db8::12",
        [A + "kube-subnet-manager"]: "true",
      },
    });
    const s = open();
    const cfg = await s.getNetworkConfig();
    assert.equal(cfg.enableIPv4, false);
    const lease = await s.acquire(cfg, {
      attrs: { publicIP: "", publicIPv6: "2001:db8::11", backendType: "host-gw" },
    });
    assert.deepEqual(lease, {
      ipv6Subnet: parseIPv6Net("fd00:10:5:1::/64"),
      attrs: { publicIP: "", publicIPv6: "2001:db8::11", backendType: "host-gw" },
      expiration: null,
    });
    assert.deepEqual(kube.getNode("n1")!.metadata.annotations, {
      [A + "backend-type"]: "host-gw",
      [A + "backend-data"]: "null",
      [A + "public-ip"]: "0.0.0.0",
      [A + "backend-v6-data"]: "null",
      [A + "public-ipv6"]: "2001:db8::11",
      [A + "kube-subnet-manager"]: "true",
    });
    const { leases } = await s.list();
    assert.deepEqual(
      leases.map((l) => [formatSubnetPair(l), l.attrs.publicIP, l.attrs.publicIPv6]).sort(),
      [["fd00:10:5:1::/64", "", "2001:db8::11"], ["fd00:10:5:2::/64", "", "2001:db8::12"]],
    );
    const renewed = await s.renew(lease);
    assert.equal(formatSubnetPair(renewed), "fd00:10:5:1::/64");
  });
});
