import assert from "node:assert/strict";
import { parseIPv4, parseIPv4Net, parseIPv6, parseIPv6Net } from "../core/ip.ts";
import {
  checkInScope,
  DesiredTable,
  dstKey,
  type InstalledRoute,
  neighbourKey,
  noneTouched,
  planChanges,
  routeInScope,
  routeKey,
} from "./plan.ts";
import type { EntryScope, RouteSpec } from "./types.ts";

const ip6 = parseIPv6;
const net6 = parseIPv6Net;

const SCOPE: EntryScope = {
  name: "vxlan",
  network: parseIPv4Net("10.5.0.0/16"),
  ipv6Network: net6("fd00:5::/32"),
  except: [parseIPv4Net("10.5.1.0/24"), net6("fd00:5:1::/64")],
  routeDevices: ["flannel.1", "flannel-v6.1"],
  gatewayDevices: ["eth0"],
  neighbourDevices: ["flannel.1", "flannel-v6.1"],
};

const onlink6 = (n: number): RouteSpec => ({
  dst: net6(`fd00:5:${n}::/64`),
  gateway: ip6(`fd00:5:${n}::`),
  device: "flannel-v6.1",
  onlink: true,
});

Deno.test("keys keep the families apart: an IPv4 and an IPv6 address of the same value differ", () => {
  const v4 = { ip: parseIPv4("10.5.2.0"), prefixLen: 24 };
  const v6 = { ip: BigInt(parseIPv4("10.5.2.0")), prefixLen: 24 };
  assert.notEqual(dstKey(v4), dstKey(v6));
  assert.notEqual(routeKey({ dst: v4, device: "x" }), routeKey({ dst: v6, device: "x" }));
  assert.notEqual(
    neighbourKey({ device: "d", ip: v4.ip }),
    neighbourKey({ device: "d", ip: v6.ip }),
  );
  assert.equal(dstKey(v4), "168100352/24", "IPv4 keys are as before");
});

Deno.test("routeInScope owns IPv6 routes inside ipv6Network, never the excepted IPv6 subnet", () => {
  const table: [RouteSpec, boolean][] = [
    [onlink6(2), true],
    [{ dst: net6("fd00:5:2::/64"), gateway: ip6("fd00::2"), device: "eth0" }, true],
    [onlink6(1), false], // this host's own
    [{ dst: net6("fd00:6::/64"), gateway: ip6("fd00::2"), device: "eth0" }, false],
    [{ dst: net6("fd00:5:2::/64"), device: "eth0" }, false], // eth0 without a gateway
  ];
  for (const [r, want] of table) {
    assert.equal(
      routeInScope(SCOPE, r),
      want,
      JSON.stringify(r, (_, v) => typeof v === "bigint" ? `${v}` : v),
    );
  }
  const v4only: EntryScope = { ...SCOPE, ipv6Network: undefined };
  assert.equal(routeInScope(v4only, onlink6(2)), false);
  assert.throws(
    () => checkInScope(v4only, "p", { routes: [onlink6(2)] }),
    /route fd00:5:2::\/64 via fd00:5:2:: dev flannel-v6.1 onlink of peer p: .*network 10\.5\.0\.0\/16\)/,
  );
});

Deno.test("planChanges deletes a different IPv6 route of the same destination before writing ours", () => {
  const theirs: InstalledRoute = {
    dst: net6("fd00:5:2::/64"),
    gateway: ip6("fd00::33"),
    device: "eth0",
    metric: 0,
  };
  const plan = planChanges(
    { routes: [onlink6(2)], neighbours: [], fdb: [] },
    { routes: [theirs], neighbours: [], fdb: [] },
    SCOPE,
  );
  assert.deepEqual(plan.deleteRoutes, [theirs]);
  assert.deepEqual(plan.replaceRoutes, [onlink6(2)]);
  // IPv4 keeps replacing in place
  const theirs4: InstalledRoute = {
    dst: parseIPv4Net("10.5.2.0/24"),
    gateway: parseIPv4("192.0.2.33"),
    device: "eth0",
    metric: 0,
  };
  const ours4: RouteSpec = {
    dst: parseIPv4Net("10.5.2.0/24"),
    gateway: parseIPv4("10.5.2.0"),
    device: "flannel.1",
    onlink: true,
  };
  const plan4 = planChanges(
    { routes: [ours4], neighbours: [], fdb: [] },
    { routes: [theirs4], neighbours: [], fdb: [] },
    SCOPE,
  );
  assert.deepEqual([plan4.deleteRoutes, plan4.replaceRoutes], [[], [ours4]]);
  // what is right is left alone
  const same = planChanges(
    { routes: [onlink6(2)], neighbours: [], fdb: [] },
    { routes: [{ ...onlink6(2), metric: 0 }], neighbours: [], fdb: [] },
    SCOPE,
  );
  assert.deepEqual([same.deleteRoutes, same.replaceRoutes], [[], []]);
});

Deno.test("DesiredTable holds a dual-stack peer's IPv4 and IPv6 objects under separate keys", () => {
  const t = new DesiredTable();
  const touched = noneTouched();
  t.set("p", {
    routes: [onlink6(2), {
      dst: parseIPv4Net("10.5.2.0/24"),
      gateway: parseIPv4("10.5.2.0"),
      device: "flannel.1",
      onlink: true,
    }],
    neighbours: [{ device: "flannel-v6.1", ip: ip6("fd00:5:2::"), mac: "02:00:00:00:06:02" }],
    fdb: [{ device: "flannel-v6.1", mac: "02:00:00:00:06:02", dst: ip6("fd00::2") }],
  }, touched);
  assert.equal(touched.routes.size, 2);
  assert.equal(t.route(dstKey(net6("fd00:5:2::/64")))?.key, "p");
  assert.equal(
    t.ownerOf("neighbour", { device: "flannel-v6.1", ip: ip6("fd00:5:2::"), mac: "" }),
    "p",
  );
  assert.deepEqual(t.keysOnDevice("flannel-v6.1"), ["p"]);
});
