import assert from "node:assert/strict";
import { parseIPv4Net } from "../core/ip.ts";
import type { Overview } from "../api/page.ts";
import { expiresIn, leaseTable, overviewTable } from "./status.ts";

const NOW = Date.UTC(2030, 0, 1, 12, 0, 0);

Deno.test("expiresIn() gives the time and what is left, or never", () => {
  assert.equal(expiresIn("2030-01-02T11:30:00.000Z", NOW), "2030-01-02T11:30:00Z (in 23h30m)");
  assert.equal(expiresIn(null, NOW), "never");
});

Deno.test("leaseTable() lists leases in address order with their VTEP MAC", () => {
  const lease = (cidr: string, ip: string, mac?: string) => ({
    subnet: parseIPv4Net(cidr),
    attrs: {
      publicIP: ip,
      backendType: "vxlan",
      backendData: mac ? { VNI: 1, VtepMAC: mac } : null,
    },
    expiration: NOW + 3600_000,
  });
  assert.equal(
    leaseTable([
      lease("10.5.10.0/24", "192.0.2.10"),
      lease("10.5.2.0/24", "192.0.2.2", "aa:bb:cc:dd:ee:ff"),
    ], NOW),
    [
      "SUBNET        PUBLIC IP   BACKEND  VTEP MAC           EXPIRES",
      "10.5.2.0/24   192.0.2.2   vxlan    aa:bb:cc:dd:ee:ff  2030-01-01T13:00:00Z (in 1h00m)",
      "10.5.10.0/24  192.0.2.10  vxlan                       2030-01-01T13:00:00Z (in 1h00m)",
    ].join("\n"),
  );
});

Deno.test("overviewTable() heads with the node's state and shows each peer's kernel state and last change", () => {
  const view = (subnet: string, ip: string) => ({
    subnet,
    publicIP: ip,
    publicIPv6: null,
    backendType: "vxlan",
    backendData: null,
    expiration: null,
  });
  const o: Overview = {
    now: new Date(NOW).toISOString(),
    node: {
      version: "0.1.0",
      ready: false,
      state: "ready",
      reason: "backend: waiting",
      store: "etcd",
      backend: "vxlan",
      iface: "eth0",
      publicIP: "192.0.2.1",
      network: "10.5.0.0/16",
      lease: view("10.5.1.0/24", "192.0.2.1"),
    },
    peers: [
      {
        ...view("10.5.2.0/24", "192.0.2.2"),
        changedAt: new Date(NOW - 90_000).toISOString(),
        kernel: { state: "applied" },
      },
      {
        ...view("10.5.3.0/24", "192.0.2.3"),
        changedAt: null,
        kernel: { state: "failed", detail: "ENOBUFS" },
      },
    ],
    events: [],
  };
  assert.equal(
    overviewTable(o),
    [
      "not ready: backend: waiting · store etcd · backend vxlan · eth0 192.0.2.1 · network 10.5.0.0/16",
      "SUBNET       PUBLIC IP  BACKEND  VTEP MAC  EXPIRES  KERNEL           CHANGED",
      "10.5.1.0/24  192.0.2.1  vxlan              never    this node",
      "10.5.2.0/24  192.0.2.2  vxlan              never    applied          2 min ago",
      "10.5.3.0/24  192.0.2.3  vxlan              never    failed: ENOBUFS",
    ].join("\n"),
  );
});
