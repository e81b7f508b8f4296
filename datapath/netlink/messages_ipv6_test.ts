/**
 * The IPv6 side of the rtnetlink messages, byte for byte: routes,
 * neighbours, fdb entries with an IPv6 remote, addresses and the IPv6 VXLAN
 * device (`IFLA_VXLAN_LOCAL6`), encoded as `ip -6 …` / `bridge fdb …`
 * send them and decoded from what the kernel answers.
 *
 * @module
 */

import assert from "node:assert/strict";
import { parseIPv6, parseIPv6Net } from "../../core/ip.ts";
import { NlWriter, readIP, readIPv6 } from "./codec.ts";
import {
  encodeBody,
  ipv6Attr,
  macAttr,
  nestedAttr,
  stringAttr,
  u32Attr,
} from "../../testing/netlink_attrs.ts";
import {
  addAddressRequest,
  addFdbRequest,
  AF_INET6,
  createVxlanRequest,
  decodeAddress,
  decodeEvent,
  decodeLink,
  decodeNeigh,
  decodeRoute,
  deleteAddressRequest,
  deleteNeighbourRequest,
  deleteRouteRequest,
  dumpAddressesRequest,
  dumpNeighboursRequest,
  EVENT_GROUPS,
  replaceNeighbourRequest,
  replaceRouteRequest,
  RTM_NEWROUTE,
} from "./messages.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
const bytes = (s: string) => Uint8Array.from(s.trim().split(/\s+/).map((h) => parseInt(h, 16)));
const ip6 = parseIPv6;

// fd00:5:2:: and fd00::12 as they go on the wire
const FD00_5_2 = "fd 00 00 05 00 02 00 00 00 00 00 00 00 00 00 00";
const FD00_12 = "fd 00 00 00 00 00 00 00 00 00 00 00 00 00 00 12";

Deno.test("NlWriter.ipv6 and readIPv6 round-trip 128-bit addresses in network order", () => {
  for (const text of ["::", "::1", "fd00:5:2::", "fe80::1:2:3:4", "ffff:ffff:ffff:ffff::ffff"]) {
    const w = new NlWriter();
    w.ip(1, ip6(text));
    const b = w.finish();
    assert.equal(b.length, 20);
    assert.equal(readIPv6(b.subarray(4)), ip6(text), text);
    assert.equal(readIP(b.subarray(4)), ip6(text));
  }
  assert.equal(readIP(new Uint8Array(5)), null);
});

Deno.test("IPv6 route requests: family AF_INET6, 16-byte RTA_DST and RTA_GATEWAY, onlink", () => {
  const r = replaceRouteRequest({
    dst: parseIPv6Net("fd00:5:2::/64"),
    gateway: ip6("fd00:5:2::"),
    index: 3,
    onlink: true,
  });
  assert.equal(r.type, RTM_NEWROUTE);
  assert.equal(
    hex(r.body),
    // rtmsg: family 10, dst_len 64, table main, proto boot, scope universe, unicast, RTNH_F_ONLINK
    "0a 40 00 00 fe 03 00 01 04 00 00 00 " +
      `14 00 01 00 ${FD00_5_2} ` + // RTA_DST
      `14 00 05 00 ${FD00_5_2} ` + // RTA_GATEWAY
      "08 00 04 00 03 00 00 00", // RTA_OIF
  );
  assert.equal(
    r.describe(),
    "RTM_NEWROUTE replace fd00:5:2::/64 via fd00:5:2:: dev 3 onlink",
  );
  const d = deleteRouteRequest({
    dst: parseIPv6Net("fd00:5:3::/64"),
    gateway: ip6("fd00::12"),
    index: 2,
    metric: 1024,
  });
  assert.equal(d.body[0], AF_INET6);
  assert.match(hex(d.body), /08 00 06 00 00 04 00 00$/, "RTA_PRIORITY 1024");
  assert.ok(hex(d.body).includes(`14 00 05 00 ${FD00_12}`));
});

Deno.test("decodeRoute reads IPv6 routes, their gateway and metric", () => {
  const body = encodeBody(bytes("0a 40 00 00 fe 03 00 01 04 00 00 00"), [
    { type: 15, value: bytes("fe 00 00 00") },
    ipv6Attr(1, ip6("fd00:5:2::")),
    ipv6Attr(5, ip6("fd00:5:2::")),
    u32Attr(4, 3),
    u32Attr(6, 1024),
  ]);
  assert.deepEqual(decodeRoute(body), {
    dst: parseIPv6Net("fd00:5:2::/64"),
    gateway: ip6("fd00:5:2::"),
    index: 3,
    onlink: true,
    table: 254,
    protocol: 3,
    scope: 0,
    type: 1,
    metric: 1024,
  });
  const def = decodeRoute(encodeBody(bytes("0a 00 00 00 fe 03 00 01 00 00 00 00"), [
    ipv6Attr(5, ip6("fd00::1")),
  ]));
  assert.deepEqual([def?.dst, def?.gateway], [{ ip: 0n, prefixLen: 0 }, ip6("fd00::1")]);
});

Deno.test("IPv6 neighbour requests: AF_INET6 and a 16-byte NDA_DST; dumps ask for both families", () => {
  const n = replaceNeighbourRequest({ index: 3, ip: ip6("fd00:5:2::"), mac: "02:00:00:00:00:02" });
  assert.equal(
    hex(n.body),
    "0a 00 00 00 03 00 00 00 80 00 00 01 " + // ndmsg: AF_INET6, permanent, unicast
      `14 00 01 00 ${FD00_5_2} ` + // NDA_DST
      "0a 00 02 00 02 00 00 00 00 02 00 00", // NDA_LLADDR
  );
  assert.equal(
    hex(deleteNeighbourRequest({ index: 3, ip: ip6("fd00:5:2::"), mac: null }).body),
    `0a 00 00 00 03 00 00 00 00 00 00 00 14 00 01 00 ${FD00_5_2}`,
  );
  assert.equal(dumpNeighboursRequest().body[0], 0);
  assert.equal(dumpAddressesRequest().body[0], 0);
});

Deno.test("fdb entries take an IPv6 remote: NDA_DST of 16 bytes, decoded by its length", () => {
  const f = addFdbRequest({ index: 4, mac: "02:00:00:00:00:02", dst: ip6("fd00::12") }, "replace");
  assert.equal(
    hex(f.body),
    "07 00 00 00 04 00 00 00 80 00 02 00 0a 00 02 00 02 00 00 00 00 02 00 00 " +
      `14 00 01 00 ${FD00_12}`,
  );
  assert.equal(f.describe(), "RTM_NEWNEIGH fdb replace 02:00:00:00:00:02 dev 4 dst fd00::12 self");
  assert.deepEqual(decodeNeigh(f.body), {
    kind: "fdb",
    fdb: { index: 4, mac: "02:00:00:00:00:02", dst: ip6("fd00::12"), state: 0x80 },
  });
});

Deno.test("decodeNeigh reads IPv6 neighbours; a short NDA_DST is no neighbour", () => {
  const body = encodeBody(bytes("0a 00 00 00 03 00 00 00 80 00 00 01"), [
    ipv6Attr(1, ip6("fd00:5:2::")),
    macAttr(2, "02:00:00:00:00:02"),
  ]);
  assert.deepEqual(decodeNeigh(body), {
    kind: "neighbour",
    neighbour: { index: 3, ip: ip6("fd00:5:2::"), mac: "02:00:00:00:00:02", state: 0x80 },
  });
  const short = encodeBody(bytes("0a 00 00 00 03 00 00 00 80 00 00 01"), [
    { type: 1, value: bytes("fd 00 00 05") },
  ]);
  assert.equal(decodeNeigh(short), null);
});

Deno.test("IPv6 addresses: IFA_ADDRESS only, added with IFA_F_NODAD; decoded from dumps", () => {
  const a = addAddressRequest({ index: 5, ip: ip6("fd00:5:1::"), prefixLen: 128 });
  assert.equal(
    hex(a.body),
    // ifaddrmsg: AF_INET6, /128, flags NODAD, scope 0, index 5; then IFA_ADDRESS
    "0a 80 02 00 05 00 00 00 " + "14 00 01 00 fd 00 00 05 00 01 00 00 00 00 00 00 00 00 00 00",
  );
  assert.equal(a.describe(), "RTM_NEWADDR fd00:5:1::/128 dev 5");
  assert.equal(
    deleteAddressRequest({ index: 5, ip: ip6("fd00:5:1::"), prefixLen: 128 }).body[0],
    10,
  );
  assert.deepEqual(decodeAddress(a.body), {
    index: 5,
    ip: ip6("fd00:5:1::"),
    prefixLen: 128,
    flags: 0x02,
    scope: 0,
  });
  // flags and scope as reported (here: the header's byte, permanent; link scope)
  const linkLocal = encodeBody(bytes("0a 40 80 fd 05 00 00 00"), [ipv6Attr(1, ip6("fe80::1"))]);
  assert.deepEqual(decodeAddress(linkLocal), {
    index: 5,
    ip: ip6("fe80::1"),
    prefixLen: 64,
    flags: 0x80,
    scope: 0xfd,
  });
});

Deno.test("an IPv6 VXLAN device is created with IFLA_VXLAN_LOCAL6 and decoded with its IPv6 local", () => {
  const r = createVxlanRequest({
    name: "flannel-v6.1",
    vni: 1,
    port: 8472,
    local: ip6("fd00::12"),
    link: 2,
    mac: "02:00:00:00:00:61",
    mtu: 1430,
  });
  assert.ok(hex(r.body).includes(`14 00 11 00 ${FD00_12}`), hex(r.body)); // type 17 = LOCAL6
  assert.ok(!/08 00 04 00/.test(hex(r.body).split("76 78 6c 61 6e")[1]), "no IPv4 local");
  assert.match(r.describe(), /local fd00::12/);
  const body = encodeBody(bytes("00 00 01 00 07 00 00 00 43 10 01 00 00 00 00 00"), [
    stringAttr(3, "flannel-v6.1"),
    u32Attr(4, 1430),
    nestedAttr(18, [
      stringAttr(1, "vxlan"),
      nestedAttr(2, [u32Attr(1, 1), u32Attr(3, 2), ipv6Attr(17, ip6("fd00::12"))]),
    ]),
  ]);
  assert.equal(decodeLink(body).vxlan?.local, ip6("fd00::12"));
});

Deno.test("events: the client subscribes to IPv6 routes and addresses, and decodes them", () => {
  assert.equal(EVENT_GROUPS & 0x100, 0x100, "RTMGRP_IPV6_IFADDR");
  assert.equal(EVENT_GROUPS & 0x400, 0x400, "RTMGRP_IPV6_ROUTE");
  const route = encodeBody(bytes("0a 40 00 00 fe 03 00 01 00 00 00 00"), [
    ipv6Attr(1, ip6("fd00:5:2::")),
  ]);
  const e = decodeEvent({ type: RTM_NEWROUTE, flags: 0, seq: 0, pid: 0, body: route });
  assert.deepEqual(e?.kind === "route" && e.route.dst, parseIPv6Net("fd00:5:2::/64"));
});
