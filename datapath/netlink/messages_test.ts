import assert from "node:assert/strict";
import { parseIPv4, parseIPv4Net } from "../../core/ip.ts";
import { NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE } from "./codec.ts";
import {
  be16Attr,
  encodeBody,
  ipv4Attr,
  macAttr,
  nestedAttr,
  stringAttr,
  u32Attr,
  u8Attr,
} from "../../testing/netlink_attrs.ts";
import {
  addAddressRequest,
  addFdbRequest,
  AF_BRIDGE,
  AF_INET,
  createBridgeRequest,
  createVxlanRequest,
  decodeAddress,
  decodeEvent,
  decodeLink,
  decodeNeigh,
  decodeRoute,
  deleteFdbRequest,
  deleteNeighbourRequest,
  deleteRouteRequest,
  dumpFdbRequest,
  dumpRoutesRequest,
  getLinkRequest,
  replaceNeighbourRequest,
  replaceRouteRequest,
  RTM_DELLINK,
  RTM_DELNEIGH,
  RTM_DELROUTE,
  RTM_NEWADDR,
  RTM_NEWLINK,
  RTM_NEWNEIGH,
  RTM_NEWROUTE,
  setLinkRequest,
} from "./messages.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
const bytes = (s: string) => Uint8Array.from(s.trim().split(/\s+/).map((h) => parseInt(h, 16)));
const ip = parseIPv4;

Deno.test("createVxlanRequest encodes flannel.1 exactly as the kernel expects", () => {
  const r = createVxlanRequest({
    name: "flannel.1",
    vni: 1,
    port: 8472,
    local: ip("192.0.2.1"),
    link: 2,
    mac: "02:00:00:00:00:01",
    mtu: 1450,
    up: true,
  });
  assert.equal(r.type, RTM_NEWLINK);
  assert.equal(r.flags, NLM_F_CREATE | NLM_F_EXCL);
  assert.equal(
    hex(r.body),
    [
      "00 00 00 00 00 00 00 00 01 00 00 00 01 00 00 00", // ifinfomsg, IFF_UP in flags and change
      "0e 00 03 00 66 6c 61 6e 6e 65 6c 2e 31 00 00 00", // IFLA_IFNAME
      "08 00 04 00 aa 05 00 00", // IFLA_MTU 1450
      "0a 00 01 00 02 00 00 00 00 01 00 00", // IFLA_ADDRESS
      "3c 00 12 00", // IFLA_LINKINFO
      "0a 00 01 00 76 78 6c 61 6e 00 00 00", // IFLA_INFO_KIND "vxlan"
      "2c 00 02 00", // IFLA_INFO_DATA
      "08 00 01 00 01 00 00 00", // VNI 1
      "08 00 03 00 02 00 00 00", // dev index 2
      "08 00 04 00 c0 00 02 01", // local 192.0.2.1
      "06 00 0f 00 21 18 00 00", // port 8472, network order
      "05 00 07 00 00 00 00 00", // nolearning
    ].join(" "),
  );
  assert.equal(
    r.describe(),
    "RTM_NEWLINK create vxlan flannel.1 (vni 1, port 8472, local 192.0.2.1, dev 2, nolearning, address 02:00:00:00:00:01, mtu 1450)",
  );
});

Deno.test("createVxlanRequest adds the GBP flag and learning when asked", () => {
  const r = createVxlanRequest({ name: "v", vni: 7, port: 4789, learning: true, gbp: true });
  assert.match(hex(r.body), /05 00 07 00 01 00 00 00 04 00 17 00$/);
});

Deno.test("link requests reject bad names, VNIs and ports", () => {
  const table = [
    { name: "", vni: 1, port: 8472 },
    { name: "a-very-long-name-x", vni: 1, port: 8472 },
    { name: "has space", vni: 1, port: 8472 },
    { name: "v", vni: 1 << 24, port: 8472 },
    { name: "v", vni: 1, port: 0 },
    { name: "v", vni: 1, port: 70000 },
  ];
  for (const spec of table) {
    assert.throws(() => createVxlanRequest(spec), RangeError, JSON.stringify(spec));
  }
  assert.throws(() => createBridgeRequest({ name: "a/b" }), RangeError);
});

Deno.test("getLinkRequest looks up by name attribute or by index in the header", () => {
  assert.equal(
    hex(getLinkRequest("lo").body),
    "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 07 00 03 00 6c 6f 00 00",
  );
  assert.equal(hex(getLinkRequest(5).body), "00 00 00 00 05 00 00 00 00 00 00 00 00 00 00 00");
});

Deno.test("setLinkRequest sets only what changes", () => {
  const down = setLinkRequest(3, { up: false });
  assert.equal(hex(down.body), "00 00 00 00 03 00 00 00 00 00 00 00 01 00 00 00");
  assert.equal(down.describe(), "RTM_NEWLINK set dev 3 down");
  const mtu = setLinkRequest(3, { mtu: 1400 });
  assert.equal(
    hex(mtu.body),
    "00 00 00 00 03 00 00 00 00 00 00 00 00 00 00 00 08 00 04 00 78 05 00 00",
  );
});

Deno.test("replaceRouteRequest encodes an onlink route via the peer's flannel address", () => {
  const r = replaceRouteRequest({
    dst: parseIPv4Net("10.5.2.0/24"),
    gateway: ip("10.5.2.0"),
    index: 3,
    onlink: true,
  });
  assert.equal(r.type, RTM_NEWROUTE);
  assert.equal(r.flags, NLM_F_CREATE | NLM_F_REPLACE);
  assert.equal(
    hex(r.body),
    "02 18 00 00 fe 03 00 01 04 00 00 00 08 00 01 00 0a 05 02 00 08 00 05 00 0a 05 02 00 08 00 04 00 03 00 00 00",
  );
  assert.equal(r.describe(), "RTM_NEWROUTE replace 10.5.2.0/24 via 10.5.2.0 dev 3 onlink");
});

Deno.test("replaceRouteRequest uses scope link without a gateway and RTA_TABLE for big tables", () => {
  const r = replaceRouteRequest({
    dst: parseIPv4Net("10.5.0.0/16"),
    index: 4,
    table: 1000,
    metric: 5,
  });
  assert.equal(
    hex(r.body),
    "02 10 00 00 00 03 fd 01 00 00 00 00 08 00 01 00 0a 05 00 00 08 00 04 00 04 00 00 00 08 00 06 00 05 00 00 00 08 00 0f 00 e8 03 00 00",
  );
});

Deno.test("deleteRouteRequest matches any scope, protocol and type", () => {
  const r = deleteRouteRequest({ dst: parseIPv4Net("10.5.2.0/24") });
  assert.equal(r.type, RTM_DELROUTE);
  assert.equal(hex(r.body), "02 18 00 00 fe 00 ff 00 00 00 00 00 08 00 01 00 0a 05 02 00");
  assert.equal(
    hex(deleteRouteRequest({ dst: parseIPv4Net("0.0.0.0/0") }).body),
    "02 00 00 00 fe 00 ff 00 00 00 00 00",
  );
});

Deno.test("neighbour and fdb requests encode family, state, flags and attributes", () => {
  const n = replaceNeighbourRequest({ index: 3, ip: ip("10.5.2.0"), mac: "02:00:00:00:00:02" });
  assert.equal(n.type, RTM_NEWNEIGH);
  assert.equal(
    hex(n.body),
    "02 00 00 00 03 00 00 00 80 00 00 01 08 00 01 00 0a 05 02 00 0a 00 02 00 02 00 00 00 00 02 00 00",
  );
  assert.throws(() => replaceNeighbourRequest({ index: 3, ip: 1, mac: null }), TypeError);
  assert.equal(
    hex(deleteNeighbourRequest({ index: 3, ip: ip("10.5.2.0"), mac: null }).body),
    "02 00 00 00 03 00 00 00 00 00 00 00 08 00 01 00 0a 05 02 00",
  );
  const f = addFdbRequest({ index: 3, mac: "02:00:00:00:00:02", dst: ip("192.0.2.2") }, "append");
  assert.equal(f.flags, NLM_F_CREATE | NLM_F_APPEND);
  assert.equal(
    hex(f.body),
    "07 00 00 00 03 00 00 00 80 00 02 00 0a 00 02 00 02 00 00 00 00 02 00 00 08 00 01 00 c0 00 02 02",
  );
  assert.equal(
    addFdbRequest({ index: 3, mac: "02:00:00:00:00:02", dst: 1 }, "replace").flags,
    NLM_F_CREATE | NLM_F_REPLACE,
  );
  const d = deleteFdbRequest({ index: 3, mac: "02:00:00:00:00:02", dst: ip("192.0.2.2") });
  assert.equal(d.type, RTM_DELNEIGH);
  assert.equal(d.describe(), "RTM_DELNEIGH fdb 02:00:00:00:00:02 dev 3 dst 192.0.2.2 self");
  assert.equal(dumpFdbRequest().flags, NLM_F_DUMP);
  assert.equal(dumpFdbRequest().body[0], AF_BRIDGE);
  assert.equal(dumpRoutesRequest().body[0], AF_INET);
});

Deno.test("addAddressRequest sets IFA_LOCAL and IFA_ADDRESS", () => {
  const a = addAddressRequest({ index: 3, ip: ip("10.5.1.0"), prefixLen: 32 });
  assert.equal(
    hex(a.body),
    "02 20 00 00 03 00 00 00 08 00 02 00 0a 05 01 00 08 00 01 00 0a 05 01 00",
  );
  assert.equal(a.describe(), "RTM_NEWADDR 10.5.1.0/32 dev 3");
});

Deno.test("decodeLink reads name, kind, MTU, MAC, state, master and VXLAN details", () => {
  const ifi = bytes("00 00 01 00 07 00 00 00 43 10 01 00 00 00 00 00");
  const body = encodeBody(ifi, [
    stringAttr(3, "flannel.1"),
    u32Attr(4, 1450),
    macAttr(1, "0a:0b:0c:0d:0e:0f"),
    u32Attr(10, 9),
    nestedAttr(18, [
      stringAttr(1, "vxlan"),
      nestedAttr(2, [
        u32Attr(1, 1),
        u32Attr(3, 2),
        ipv4Attr(4, ip("192.0.2.1")),
        be16Attr(15, 8472),
        u8Attr(7, 0),
      ]),
    ]),
  ]);
  assert.deepEqual(decodeLink(body), {
    index: 7,
    name: "flannel.1",
    kind: "vxlan",
    mtu: 1450,
    mac: "0a:0b:0c:0d:0e:0f",
    up: true,
    flags: 0x11043,
    master: 9,
    vxlan: { vni: 1, local: ip("192.0.2.1"), link: 2, port: 8472, learning: false, gbp: false },
  });
  const lo = decodeLink(
    encodeBody(bytes("00 00 04 03 01 00 00 00 08 00 00 00 00 00 00 00"), [stringAttr(3, "lo")]),
  );
  assert.deepEqual([lo.name, lo.kind, lo.up, lo.mac, lo.vxlan], ["lo", null, false, null, null]);
  assert.throws(() => decodeLink(new Uint8Array(8)), SyntaxError);
});

Deno.test("decodeRoute reads IPv4 routes and skips cloned and IPv6 ones", () => {
  const body = bytes(
    "02 18 00 00 fe 03 00 01 04 00 00 00 08 00 0f 00 fe 00 00 00 08 00 01 00 0a 05 02 00 08 00 05 00 0a 05 02 00 08 00 04 00 03 00 00 00",
  );
  assert.deepEqual(decodeRoute(body), {
    dst: { ip: ip("10.5.2.0"), prefixLen: 24 },
    gateway: ip("10.5.2.0"),
    index: 3,
    onlink: true,
    table: 254,
    protocol: 3,
    scope: 0,
    type: 1,
    metric: 0,
  });
  const cloned = body.slice();
  cloned[9] = 0x02; // RTM_F_CLONED (0x200)
  assert.equal(decodeRoute(cloned), null);
  const v6 = body.slice();
  v6[0] = 10;
  assert.equal(decodeRoute(v6), null);
  const def = decodeRoute(bytes("02 00 00 00 fe 03 00 01 00 00 00 00 08 00 05 00 c0 00 02 01"));
  assert.deepEqual(def?.dst, { ip: 0, prefixLen: 0 });
});

Deno.test("decodeNeigh tells IPv4 neighbours from self fdb entries", () => {
  const neigh = bytes(
    "02 00 00 00 03 00 00 00 80 00 00 01 08 00 01 00 0a 05 02 00 0a 00 02 00 02 00 00 00 00 02 00 00",
  );
  assert.deepEqual(decodeNeigh(neigh), {
    kind: "neighbour",
    neighbour: { index: 3, ip: ip("10.5.2.0"), mac: "02:00:00:00:00:02", state: 0x80 },
  });
  const fdb = bytes(
    "07 00 00 00 03 00 00 00 80 00 02 00 0a 00 02 00 02 00 00 00 00 02 00 00 08 00 01 00 c0 00 02 02",
  );
  assert.deepEqual(decodeNeigh(fdb), {
    kind: "fdb",
    fdb: { index: 3, mac: "02:00:00:00:00:02", dst: ip("192.0.2.2"), state: 0x80 },
  });
  const master = fdb.slice();
  master[10] = 0x04; // NTF_MASTER only: a bridge port entry, not ours
  assert.equal(decodeNeigh(master), null);
});

Deno.test("decodeAddress prefers IFA_LOCAL and ignores IPv6", () => {
  const body = bytes("02 20 00 00 03 00 00 00 08 00 01 00 0a 05 09 09 08 00 02 00 0a 05 01 00");
  assert.deepEqual(decodeAddress(body), {
    index: 3,
    ip: ip("10.5.1.0"),
    prefixLen: 32,
    flags: 0,
    scope: 0,
  });
  // the header's flags byte and scope, or the 32-bit IFA_FLAGS attribute when present
  const flagged = bytes("02 18 01 fd 03 00 00 00 08 00 02 00 0a 05 01 07 08 00 08 00 80 02 00 00");
  assert.deepEqual(decodeAddress(flagged), {
    index: 3,
    ip: ip("10.5.1.7"),
    prefixLen: 24,
    flags: 0x280,
    scope: 253,
  });
  const v6 = body.slice();
  v6[0] = 10;
  assert.equal(decodeAddress(v6), null);
});

Deno.test("decodeEvent maps message types to event kinds and actions", () => {
  const link = encodeBody(bytes("00 00 01 00 07 00 00 00 00 00 00 00 00 00 00 00"), [
    stringAttr(3, "flannel.1"),
  ]);
  const e1 = decodeEvent({ type: RTM_DELLINK, flags: 0, seq: 0, pid: 0, body: link });
  assert.equal(e1?.kind === "link" && `${e1.action} ${e1.link.name}`, "del flannel.1");
  const route = bytes("02 18 00 00 fe 03 00 01 00 00 00 00 08 00 01 00 0a 05 02 00");
  const e2 = decodeEvent({ type: RTM_NEWROUTE, flags: 0, seq: 0, pid: 0, body: route });
  assert.equal(e2?.kind === "route" && e2.action, "new");
  const fdb = bytes("07 00 00 00 03 00 00 00 80 00 02 00 0a 00 02 00 02 00 00 00 00 02 00 00");
  const e3 = decodeEvent({ type: RTM_DELNEIGH, flags: 0, seq: 0, pid: 0, body: fdb });
  assert.equal(e3?.kind === "fdb" && e3.fdb.dst, null);
  const addr = bytes("0a 40 00 00 03 00 00 00");
  assert.equal(decodeEvent({ type: RTM_NEWADDR, flags: 0, seq: 0, pid: 0, body: addr }), null);
  assert.equal(decodeEvent({ type: 99, flags: 0, seq: 0, pid: 0, body: new Uint8Array(0) }), null);
});
