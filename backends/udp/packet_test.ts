import assert from "node:assert/strict";
import { parseIPv4, parseIPv4Net } from "../../core/ip.ts";
import {
  acceptFromPeer,
  buildNetUnreachable,
  checkIPv4,
  decrementTtl,
  Drop,
  DROP_REASONS,
  dropReasonName,
  ICMP_UNREACHABLE_MAX,
  internetChecksum,
  type PeerRoute,
  routeFromTun,
  RouteTable,
  updateChecksum,
} from "./packet.ts";

/** An independent checksum: 32-bit word sums with a DataView, folded at the end. */
function refChecksum(bytes: Uint8Array): number {
  const padded = new Uint8Array(bytes.length + 3);
  padded.set(bytes);
  const view = new DataView(padded.buffer);
  let sum = 0n;
  for (let i = 0; i < bytes.length; i += 4) sum += BigInt(view.getUint32(i));
  while (sum >> 16n) sum = (sum & 0xffffn) + (sum >> 16n);
  return Number(~sum & 0xffffn);
}

function hex(text: string): Uint8Array {
  return Uint8Array.from(text.match(/../g)!.map((b) => parseInt(b, 16)));
}

function toHex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Build an IPv4 packet with a correct header checksum. */
function packet(opts: {
  src: string;
  dst: string;
  ttl?: number;
  proto?: number;
  payload?: Uint8Array;
  options?: Uint8Array;
  frag?: number;
}): Uint8Array {
  const optLen = opts.options?.length ?? 0;
  const ihl = 20 + optLen;
  const payload = opts.payload ?? new Uint8Array(12).fill(0xab);
  const p = new Uint8Array(ihl + payload.length);
  const v = new DataView(p.buffer);
  p[0] = 0x40 | (ihl / 4);
  v.setUint16(2, p.length);
  v.setUint16(4, 0x1234);
  v.setUint16(6, opts.frag ?? 0x4000);
  p[8] = opts.ttl ?? 64;
  p[9] = opts.proto ?? 17;
  v.setUint32(12, parseIPv4(opts.src));
  v.setUint32(16, parseIPv4(opts.dst));
  if (opts.options) p.set(opts.options, 20);
  p.set(payload, ihl);
  v.setUint16(10, refChecksum(p.subarray(0, ihl)));
  return p;
}

// A known packet built outside this code base: UDP 10.5.1.2:40000 → 10.9.0.5:53 "hello!", TTL 64.
const KNOWN = "450000221c464000401109710a0501020a0900059c400035000e000068656c6c6f21";
const KNOWN_TTL63 = "450000221c4640003f110a710a0501020a0900059c400035000e000068656c6c6f21";
const KNOWN_UNREACHABLE = "4500003800000000400164ba0a0501000a0501020300607c00000000" +
  "450000221c464000401109710a0501020a0900059c400035000e0000";

Deno.test("internetChecksum() verifies known headers and agrees with a reference sum", () => {
  const wiki = hex("45000073000040004011b861c0a80001c0a800c7");
  assert.equal(internetChecksum(wiki, 0, 20), 0);
  assert.equal(internetChecksum(hex(KNOWN), 0, 20), 0);
  for (let n = 0; n < 200; n++) {
    const bytes = new Uint8Array(n);
    for (let i = 0; i < n; i++) bytes[i] = (i * 151 + n * 7) & 0xff;
    assert.equal(internetChecksum(bytes, 0, n), refChecksum(bytes), `length ${n}`);
  }
});

Deno.test("updateChecksum() follows RFC 1624 equation 3", () => {
  const cases: [number, number, number, number][] = [
    // check, old word, new word, expected
    [0xb861, 0x4011, 0x3f11, 0xb961],
    [0xdd2f, 0x5555, 0x3285, 0x0000], // RFC 1624 section 4 example: result is 0x0000, not 0xFFFF
    [0x0000, 0x0100, 0x0000, 0x0100],
    [0xff80, 0x4011, 0x3f11, 0x0081], // TTL 64 → 63 wrapping through the end-around carry
  ];
  for (const [check, oldWord, newWord, expected] of cases) {
    assert.equal(updateChecksum(check, oldWord, newWord), expected, `${check.toString(16)}`);
  }
});

Deno.test("decrementTtl() patches the checksum like a full recomputation, for every TTL", () => {
  assert.equal(toHex(((p) => (decrementTtl(p), p))(hex(KNOWN))), KNOWN_TTL63);
  for (let seed = 0; seed < 64; seed++) {
    for (let ttl = 2; ttl <= 255; ttl++) {
      const p = packet({
        src: `10.${seed}.${ttl}.1`,
        dst: `10.${255 - seed}.${(ttl * 3) & 255}.9`,
        ttl,
        proto: (seed * 37 + ttl) & 255,
      });
      assert.equal(decrementTtl(p), true);
      assert.equal(p[8], ttl - 1);
      assert.equal(refChecksum(p.subarray(0, 20)), 0, `seed ${seed} ttl ${ttl}`);
    }
  }
});

Deno.test("decrementTtl() refuses TTL 1 and 0 and leaves the packet unchanged", () => {
  for (const ttl of [0, 1]) {
    const p = packet({ src: "10.5.1.2", dst: "10.5.2.2", ttl });
    const before = toHex(p);
    assert.equal(decrementTtl(p), false);
    assert.equal(toHex(p), before);
  }
});

Deno.test("checkIPv4() classifies headers", () => {
  const good = packet({ src: "10.5.1.2", dst: "10.5.2.2" });
  const withOptions = packet({
    src: "10.5.1.2",
    dst: "10.5.2.2",
    options: new Uint8Array([0x94, 0x04, 0, 0]),
  });
  const mutate = (f: (p: Uint8Array) => void, base = good) => {
    const p = base.slice();
    f(p);
    return p;
  };
  const cases: [string, Uint8Array, number, boolean, number][] = [
    ["well-formed", good, good.length, true, Drop.OK],
    ["with options", withOptions, withOptions.length, true, Drop.OK],
    [
      "trailing bytes beyond total length",
      new Uint8Array([...good, 1, 2]),
      good.length + 2,
      true,
      Drop.OK,
    ],
    ["empty", new Uint8Array(0), 0, true, Drop.TRUNCATED],
    ["shorter than a header", good.subarray(0, 19), 19, true, Drop.TRUNCATED],
    ["IPv6", mutate((p) => (p[0] = 0x60)), good.length, true, Drop.NOT_IPV4],
    ["short garbage", new Uint8Array([0xff, 1, 2]), 3, true, Drop.NOT_IPV4],
    ["header length 16", mutate((p) => (p[0] = 0x44)), good.length, true, Drop.MALFORMED],
    ["header longer than data", mutate((p) => (p[0] = 0x4f)), 40, true, Drop.TRUNCATED],
    [
      "total length below header",
      mutate((p) => (p[2] = 0, p[3] = 10)),
      good.length,
      true,
      Drop.MALFORMED,
    ],
    ["total length beyond data", good.subarray(0, 25), 25, true, Drop.TRUNCATED],
    ["bad checksum", mutate((p) => (p[11] ^= 1)), good.length, true, Drop.BAD_CHECKSUM],
    ["bad checksum, not verified", mutate((p) => (p[11] ^= 1)), good.length, false, Drop.OK],
  ];
  for (const [name, buf, len, verify, expected] of cases) {
    assert.equal(checkIPv4(buf, len, verify), expected, name);
  }
});

Deno.test("buildNetUnreachable() matches a packet built by hand", () => {
  const out = new Uint8Array(ICMP_UNREACHABLE_MAX);
  const n = buildNetUnreachable(hex(KNOWN), parseIPv4("10.5.1.0"), out);
  assert.equal(toHex(out.subarray(0, n)), KNOWN_UNREACHABLE);
});

Deno.test("buildNetUnreachable() quotes the header and up to 8 payload bytes with valid checksums", () => {
  const cases: [string, Uint8Array, number][] = [
    ["UDP", packet({ src: "10.5.1.2", dst: "10.9.0.5" }), 20 + 8],
    [
      "with IP options",
      packet({ src: "10.5.1.2", dst: "10.9.0.5", options: new Uint8Array([1, 1, 1, 0]) }),
      24 + 8,
    ],
    [
      "3-byte payload",
      packet({ src: "10.5.1.2", dst: "10.9.0.5", payload: new Uint8Array(3) }),
      23,
    ],
    [
      "odd 7-byte payload",
      packet({ src: "10.5.1.2", dst: "10.9.0.5", payload: new Uint8Array(7) }),
      27,
    ],
    [
      "ICMP echo request",
      packet({
        src: "10.5.1.2",
        dst: "10.9.0.5",
        proto: 1,
        payload: new Uint8Array([8, 0, 0, 0, 0, 1, 0, 1, 9]),
      }),
      28,
    ],
  ];
  for (const [name, offender, quoted] of cases) {
    const out = new Uint8Array(ICMP_UNREACHABLE_MAX).fill(0xee);
    const n = buildNetUnreachable(offender, parseIPv4("10.5.1.0"), out);
    const reply = out.subarray(0, n);
    assert.equal(n, 28 + quoted, name);
    assert.equal(refChecksum(reply.subarray(0, 20)), 0, `${name}: IP checksum`);
    assert.equal(refChecksum(reply.subarray(20)), 0, `${name}: ICMP checksum`);
    assert.deepEqual([reply[0], reply[9], reply[20], reply[21]], [0x45, 1, 3, 0], name);
    assert.equal((reply[2] << 8) | reply[3], n, `${name}: total length`);
    assert.deepEqual(reply.subarray(12, 16), parseBytes("10.5.1.0"), `${name}: source`);
    assert.deepEqual(reply.subarray(16, 20), offender.subarray(12, 16), `${name}: destination`);
    assert.deepEqual(reply.subarray(28), offender.subarray(0, quoted), `${name}: quote`);
  }
});

function parseBytes(ip: string): Uint8Array {
  return Uint8Array.from(ip.split(".").map(Number));
}

Deno.test("buildNetUnreachable() stays silent where RFC 1122 forbids an error", () => {
  const cases: [string, Uint8Array][] = [
    [
      "ICMP error",
      packet({
        src: "10.5.1.2",
        dst: "10.9.0.5",
        proto: 1,
        payload: new Uint8Array([3, 1, 0, 0, 0, 0, 0, 0]),
      }),
    ],
    [
      "ICMP time exceeded",
      packet({
        src: "10.5.1.2",
        dst: "10.9.0.5",
        proto: 1,
        payload: new Uint8Array([11, 0, 0, 0]),
      }),
    ],
    [
      "ICMP without a type",
      packet({ src: "10.5.1.2", dst: "10.9.0.5", proto: 1, payload: new Uint8Array(0) }),
    ],
    ["later fragment", packet({ src: "10.5.1.2", dst: "10.9.0.5", frag: 0x2001 })],
    ["source 0.0.0.0", packet({ src: "0.0.0.0", dst: "10.9.0.5" })],
    ["multicast source", packet({ src: "224.0.0.5", dst: "10.9.0.5" })],
    ["broadcast source", packet({ src: "255.255.255.255", dst: "10.9.0.5" })],
    ["multicast destination", packet({ src: "10.5.1.2", dst: "239.1.2.3" })],
  ];
  for (const [name, offender] of cases) {
    assert.equal(buildNetUnreachable(offender, 1, new Uint8Array(ICMP_UNREACHABLE_MAX)), 0, name);
  }
  // A first fragment (offset 0, MF set) still gets an answer.
  const first = packet({ src: "10.5.1.2", dst: "10.9.0.5", frag: 0x2000 });
  assert.ok(buildNetUnreachable(first, 1, new Uint8Array(ICMP_UNREACHABLE_MAX)) > 0);
});

const route = (subnet: string, publicIP: string, port = 8285): PeerRoute => ({
  subnet: parseIPv4Net(subnet),
  publicIP: parseIPv4(publicIP),
  port,
});

Deno.test("RouteTable.lookup() finds the longest matching prefix", () => {
  const table = new RouteTable([
    route("10.5.2.0/24", "192.0.2.2"),
    route("10.5.3.0/24", "192.0.2.3", 9000),
    route("10.6.0.0/16", "192.0.2.4"),
    route("10.6.7.0/24", "192.0.2.5"),
    route("10.6.7.128/25", "192.0.2.6"),
  ]);
  const cases: [string, string | undefined][] = [
    ["10.5.2.0", "192.0.2.2"],
    ["10.5.2.255", "192.0.2.2"],
    ["10.5.3.77", "192.0.2.3"],
    ["10.5.4.1", undefined],
    ["10.6.1.1", "192.0.2.4"],
    ["10.6.7.1", "192.0.2.5"],
    ["10.6.7.200", "192.0.2.6"],
    ["255.255.255.255", undefined],
    ["0.0.0.0", undefined],
  ];
  for (const [dst, expected] of cases) {
    const r = table.lookup(parseIPv4(dst));
    assert.equal(r ? r.publicIP : undefined, expected ? parseIPv4(expected) : undefined, dst);
  }
  assert.equal(table.lookup(parseIPv4("10.5.3.1"))?.port, 9000);
  assert.equal(table.size, 5);
  assert.equal(table.routes[0].subnet.prefixLen, 25);
});

Deno.test("RouteTable handles /0 and /32 routes and keeps the last duplicate", () => {
  const table = new RouteTable([
    route("0.0.0.0/0", "192.0.2.9"),
    route("10.5.9.9/32", "192.0.2.1"),
    route("10.5.9.9/32", "192.0.2.2"),
  ]);
  assert.equal(table.lookup(parseIPv4("8.8.8.8"))?.publicIP, parseIPv4("192.0.2.9"));
  assert.equal(table.lookup(parseIPv4("10.5.9.9"))?.publicIP, parseIPv4("192.0.2.2"));
  assert.equal(table.size, 2);
  assert.equal(table.isPeer(parseIPv4("192.0.2.1")), false);
});

Deno.test("RouteTable rejects host bits and bad ports, naming the route", () => {
  assert.throws(
    () =>
      new RouteTable([{
        subnet: { ip: parseIPv4("10.5.2.1"), prefixLen: 24 },
        publicIP: 1,
        port: 1,
      }]),
    /10\.5\.2\.1\/24: host bits are set/,
  );
  for (const port of [0, 65536, 1.5]) {
    assert.throws(
      () => new RouteTable([route("10.5.2.0/24", "192.0.2.2", port)]),
      /port must be 1\.\.65535/,
    );
  }
});

Deno.test("RouteTable.peerOwns() checks the inner source against that peer's subnets only", () => {
  const table = new RouteTable([
    route("10.5.2.0/24", "192.0.2.2"),
    route("10.5.12.0/24", "192.0.2.2"),
    route("10.5.3.0/24", "192.0.2.3"),
  ]);
  const cases: [string, string, boolean][] = [
    ["192.0.2.2", "10.5.2.9", true],
    ["192.0.2.2", "10.5.12.0", true],
    ["192.0.2.2", "10.5.3.9", false],
    ["192.0.2.3", "10.5.3.255", true],
    ["192.0.2.7", "10.5.3.1", false],
  ];
  for (const [peer, inner, expected] of cases) {
    assert.equal(table.peerOwns(parseIPv4(peer), parseIPv4(inner)), expected, `${peer} ${inner}`);
  }
  assert.ok(table.isPeer(parseIPv4("192.0.2.3")));
});

Deno.test("acceptFromPeer() applies the drop rules in order", () => {
  const table = new RouteTable([
    route("10.5.2.0/24", "192.0.2.2"),
    route("10.5.3.0/24", "192.0.2.3"),
  ]);
  const own = parseIPv4Net("10.5.1.0/24");
  const good = () => packet({ src: "10.5.2.7", dst: "10.5.1.9" });
  const cases: [string, string, Uint8Array, number][] = [
    ["from a peer, inside its subnet", "192.0.2.2", good(), Drop.OK],
    ["unknown outer source", "192.0.2.99", good(), Drop.UNKNOWN_PEER],
    ["inner source of another peer", "192.0.2.3", good(), Drop.SPOOFED_INNER_SOURCE],
    [
      "inner source outside the network",
      "192.0.2.2",
      packet({ src: "8.8.8.8", dst: "10.5.1.9" }),
      Drop.SPOOFED_INNER_SOURCE,
    ],
    [
      "destination elsewhere",
      "192.0.2.2",
      packet({ src: "10.5.2.7", dst: "10.5.3.9" }),
      Drop.WRONG_DESTINATION,
    ],
    [
      "destination outside",
      "192.0.2.2",
      packet({ src: "10.5.2.7", dst: "1.1.1.1" }),
      Drop.WRONG_DESTINATION,
    ],
    ["TTL 1", "192.0.2.2", packet({ src: "10.5.2.7", dst: "10.5.1.9", ttl: 1 }), Drop.TTL_EXPIRED],
    [
      "garbage",
      "192.0.2.2",
      new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]),
      Drop.NOT_IPV4,
    ],
    ["bad checksum", "192.0.2.2", ((p) => (p[10] ^= 0x80, p))(good()), Drop.BAD_CHECKSUM],
    ["truncated", "192.0.2.2", good().subarray(0, 30), Drop.TRUNCATED],
  ];
  for (const [name, outer, buf, expected] of cases) {
    const before = toHex(buf);
    const got = acceptFromPeer(table, own, parseIPv4(outer), buf, buf.length);
    assert.equal(got, expected, `${name}: got ${got === 0 ? "OK" : dropReasonName(got)}`);
    if (expected === Drop.OK) {
      assert.equal(buf[8], 63, name);
      assert.equal(refChecksum(buf.subarray(0, 20)), 0, name);
    } else {
      assert.equal(toHex(buf), before, `${name}: unchanged`);
    }
  }
});

Deno.test("routeFromTun() returns the peer route or the reason", () => {
  const table = new RouteTable([route("10.5.2.0/24", "192.0.2.2")]);
  const p = packet({ src: "10.5.1.9", dst: "10.5.2.7" });
  const r = routeFromTun(table, p, p.length);
  assert.equal(typeof r === "object" ? r.publicIP : r, parseIPv4("192.0.2.2"));
  assert.equal(p[8], 64, "the packet is left as it is");
  const none = packet({ src: "10.5.1.9", dst: "10.5.7.7" });
  assert.equal(routeFromTun(table, none, none.length), Drop.NO_ROUTE);
  assert.equal(none[8], 64, "no TTL change without a route");
  const dying = packet({ src: "10.5.1.9", dst: "10.5.2.7", ttl: 1 });
  assert.equal(routeFromTun(table, dying, dying.length), Drop.TTL_EXPIRED);
  const v6 = new Uint8Array(40);
  v6[0] = 0x60;
  assert.equal(routeFromTun(table, v6, 40), Drop.NOT_IPV4);
});

Deno.test("dropReasonName() names every code and rejects others", () => {
  assert.equal(dropReasonName(Drop.UNKNOWN_PEER), "unknown-peer");
  assert.equal(dropReasonName(Drop.SPOOFED_INNER_SOURCE), "spoofed-inner-source");
  assert.equal(dropReasonName(Drop.TUN_WRITE_FAILED), "tun-write-failed");
  assert.equal(DROP_REASONS.length, Object.keys(Drop).length - 1);
  for (const [key, code] of Object.entries(Drop)) {
    if (code === 0) continue;
    assert.equal(dropReasonName(code).toUpperCase().replaceAll("-", "_"), key);
  }
  assert.throws(() => dropReasonName(0), RangeError);
  assert.throws(() => dropReasonName(99), /got 99/);
});
