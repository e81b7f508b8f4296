import assert from "node:assert/strict";
import { parseIPv4, parseIPv4Net } from "../core/ip.ts";
import fc from "fast-check";
import {
  checkInScope,
  DesiredTable,
  dstKey,
  fdbInScope,
  fdbKey,
  type InstalledRoute,
  neighbourInScope,
  neighbourKey,
  noneTouched,
  type ObjectSet,
  planChanges,
  planSize,
  routeInScope,
} from "./plan.ts";
import type { EntryScope, PeerEntries, RouteSpec } from "./types.ts";

const ip = parseIPv4;
const net = parseIPv4Net;

const SCOPE: EntryScope = {
  name: "vxlan",
  network: net("10.5.0.0/16"),
  except: [net("10.5.1.0/24")],
  routeDevices: ["flannel.1"],
  gatewayDevices: ["eth0"],
  neighbourDevices: ["flannel.1"],
};

const route = (
  dst: string,
  via: string | undefined,
  device: string,
  metric = 0,
): InstalledRoute => ({
  dst: net(dst),
  ...(via ? { gateway: ip(via) } : {}),
  device,
  onlink: device === "flannel.1",
  metric,
});

function peer(n: number, mac = `02:00:00:00:00:0${n}`, publicIP = `192.0.2.${n}`): PeerEntries {
  return {
    routes: [{
      dst: net(`10.5.${n}.0/24`),
      gateway: ip(`10.5.${n}.0`),
      device: "flannel.1",
      onlink: true,
    }],
    neighbours: [{ device: "flannel.1", ip: ip(`10.5.${n}.0`), mac }],
    fdb: [{ device: "flannel.1", mac, dst: ip(publicIP) }],
  };
}

const none: ObjectSet<InstalledRoute> = { routes: [], neighbours: [], fdb: [] };

Deno.test("routeInScope owns routes in the network out of its devices, never the excepted subnet", () => {
  const table: [RouteSpec, boolean][] = [
    [route("10.5.2.0/24", "10.5.2.0", "flannel.1"), true],
    [route("10.5.2.0/24", undefined, "flannel.1"), true],
    [route("10.5.2.0/24", "192.0.2.2", "eth0"), true],
    [route("10.5.2.0/24", undefined, "eth0"), false], // ext without a gateway
    [route("10.5.1.0/24", "192.0.2.2", "eth0"), false], // own subnet
    [route("10.6.2.0/24", "192.0.2.2", "eth0"), false], // outside the network
    [route("10.0.0.0/8", "192.0.2.2", "eth0"), false], // wider than the network
    [route("10.5.2.0/24", undefined, "cni0"), false], // another device
  ];
  for (const [r, want] of table) assert.equal(routeInScope(SCOPE, r), want, JSON.stringify(r));
  assert.equal(neighbourInScope(SCOPE, { device: "eth0", ip: 1, mac: "02:00:00:00:00:01" }), false);
  assert.equal(fdbInScope(SCOPE, { device: "flannel.1", mac: "00:00:00:00:00:00", dst: 1 }), false);
});

Deno.test("checkInScope names an entry outside the scope", () => {
  checkInScope(SCOPE, "p", peer(2));
  assert.throws(
    () => checkInScope(SCOPE, "p", { routes: [route("172.16.0.0/16", "192.0.2.1", "eth0")] }),
    /route 172\.16\.0\.0\/16 via 192\.0\.2\.1 dev eth0 of peer p: it lies outside the scope of table "vxlan"/,
  );
});

Deno.test("planChanges writes what is missing or different, deletes stale objects in scope only", () => {
  const desired = new DesiredTable();
  desired.set("a", peer(2));
  desired.set("b", peer(3, "02:00:00:00:00:33", "192.0.2.33"));
  const installed: ObjectSet<InstalledRoute> = {
    routes: [
      route("10.5.2.0/24", "10.5.2.0", "flannel.1"), // right
      route("10.5.3.0/24", "192.0.2.3", "eth0"), // wrong
      route("10.5.4.0/24", "10.5.4.0", "flannel.1"), // stale
      route("10.5.4.0/24", "10.5.4.0", "flannel.1", 100), // stale, another metric
    ],
    neighbours: [
      { device: "flannel.1", ip: ip("10.5.2.0"), mac: "02:00:00:00:00:02" },
      { device: "flannel.1", ip: ip("10.5.3.0"), mac: "02:00:00:00:00:03" },
    ],
    fdb: [
      { device: "flannel.1", mac: "02:00:00:00:00:02", dst: ip("192.0.2.2") },
      { device: "flannel.1", mac: "02:00:00:00:00:02", dst: ip("192.0.2.99") }, // extra remote
      { device: "flannel.1", mac: "02:00:00:00:00:03", dst: ip("192.0.2.3") }, // old MAC
    ],
  };
  const plan = planChanges(desired.all(), installed, SCOPE);
  assert.deepEqual(plan.replaceRoutes.map((r) => r.gateway), [ip("10.5.3.0")]);
  assert.deepEqual(plan.deleteRoutes.map((r) => [r.dst.ip, r.metric]), [
    [ip("10.5.4.0"), 0],
    [ip("10.5.4.0"), 100],
  ]);
  assert.deepEqual(plan.replaceNeighbours.map((n) => n.mac), ["02:00:00:00:00:33"]);
  assert.deepEqual(plan.deleteNeighbours, []);
  assert.deepEqual(plan.replaceFdb.map((f) => f.mac), ["02:00:00:00:00:33"]);
  assert.deepEqual(plan.deleteFdb.map((f) => [f.mac, f.dst]), [
    ["02:00:00:00:00:02", ip("192.0.2.99")],
    ["02:00:00:00:00:03", ip("192.0.2.3")],
  ]);
  assert.equal(planSize(planChanges(desired.all(), none, SCOPE)), 6);
});

Deno.test("DesiredTable.set reports the object keys of the old and the new entries", () => {
  const d = new DesiredTable();
  d.set("a", peer(2));
  const touched = noneTouched();
  d.set("a", peer(2, "02:00:00:00:00:22"), touched);
  assert.deepEqual([...touched.routes], [`${ip("10.5.2.0")}/24`]);
  assert.deepEqual([...touched.fdb], [
    "flannel.1/02:00:00:00:00:02",
    "flannel.1/02:00:00:00:00:22",
  ]);
  assert.deepEqual(d.at(touched).fdb.map((f) => f.mac), ["02:00:00:00:00:22"]);
  d.set("a", null, noneTouched());
  assert.equal(d.size, 0);
  assert.deepEqual(d.all(), { routes: [], neighbours: [], fdb: [] });
});

Deno.test("DesiredTable: when two peers ask for one object the latest wins, and the other's returns", () => {
  const d = new DesiredTable();
  d.set("a", { fdb: [{ device: "flannel.1", mac: "02:00:00:00:00:09", dst: ip("192.0.2.1") }] });
  d.set("b", { fdb: [{ device: "flannel.1", mac: "02:00:00:00:00:09", dst: ip("192.0.2.2") }] });
  assert.deepEqual(d.fdb("flannel.1/02:00:00:00:00:09"), {
    key: "b",
    spec: { device: "flannel.1", mac: "02:00:00:00:00:09", dst: ip("192.0.2.2") },
  });
  d.set("b", null);
  assert.equal(d.fdb("flannel.1/02:00:00:00:00:09")?.key, "a");
  assert.deepEqual(d.keysOnDevice("flannel.1"), ["a"]);
});

Deno.test("DesiredTable after replaceAll: the listing before its index is complete, written in order, leaves what the index holds (property)", () => {
  // few peers' numbers and MACs, so peers often ask for one object
  const peers = fc.array(
    fc.record({
      n: fc.integer({ min: 2, max: 6 }),
      mac: fc.constantFrom("02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"),
      pub: fc.integer({ min: 2, max: 4 }),
    }),
    { maxLength: 12 },
  );
  fc.assert(
    fc.property(peers, fc.integer({ min: 0, max: 12 }), (list, partly) => {
      const entries = new Map(list.map((p, i) => [`p${i}`, peer(p.n, p.mac, `192.0.2.${p.pub}`)]));
      const reference = new DesiredTable(); // indexed as it goes
      for (const [k, e] of entries) reference.set(k, e);
      const d = new DesiredTable();
      d.replaceAll(entries);
      const listed = d.all();
      d.indexSome(partly);
      const byKey = <T>(xs: readonly T[], key: (x: T) => string) => {
        const m = new Map<string, T>();
        for (const x of xs) m.set(key(x), x); // in order: the later write replaces
        return m;
      };
      const ref = reference.all();
      assert.deepEqual(
        byKey(listed.routes, (r) => dstKey(r.dst)),
        byKey(ref.routes, (r) => dstKey(r.dst)),
      );
      assert.deepEqual(byKey(listed.neighbours, neighbourKey), byKey(ref.neighbours, neighbourKey));
      assert.deepEqual(byKey(listed.fdb, fdbKey), byKey(ref.fdb, fdbKey));
      // lookups finish the index; then everything matches the reference, also after a change
      for (const f of ref.fdb) assert.deepEqual(d.fdb(fdbKey(f)), reference.fdb(fdbKey(f)));
      assert.deepEqual(d.all(), ref);
      d.set("p0", null);
      reference.set("p0", null);
      assert.deepEqual(d.all(), reference.all());
    }),
    { numRuns: 500 },
  );
});

Deno.test("planning the touched keys of a change gives exactly that part of the full plan", () => {
  const d = new DesiredTable();
  for (let n = 2; n < 9; n++) d.set(`p${n}`, peer(n));
  // What is installed: everything as desired.
  const installed: ObjectSet<InstalledRoute> = {
    routes: d.all().routes.map((r) => ({ ...r, metric: 0 })),
    neighbours: [...d.all().neighbours],
    fdb: [...d.all().fdb],
  };
  const touched = noneTouched();
  d.set("p3", null, touched);
  d.set("p4", peer(4, "02:00:00:00:00:44"), touched);
  d.set("p9", peer(9), touched);
  const restrict = (o: ObjectSet<InstalledRoute>): ObjectSet<InstalledRoute> => ({
    routes: o.routes.filter((r) => touched.routes.has(`${r.dst.ip}/${r.dst.prefixLen}`)),
    neighbours: o.neighbours.filter((n) => touched.neighbours.has(`${n.device}/${n.ip}`)),
    fdb: o.fdb.filter((f) => touched.fdb.has(`${f.device}/${f.mac}`)),
  });
  const part = planChanges(d.at(touched), restrict(installed), SCOPE);
  const full = planChanges(d.all(), installed, SCOPE);
  assert.deepEqual(part, full);
  assert.equal(planSize(part), 3 + 3 + 3); // p3 out, p4's neighbour and fdb (in and out), p9 in
});
