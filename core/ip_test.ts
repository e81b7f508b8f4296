import assert from "node:assert/strict";
import {
  containsIPv4,
  containsIPv4Net,
  containsIPv6,
  equalIPv4Net,
  equalIPv6Net,
  formatIPv4,
  formatIPv4Net,
  formatIPv6,
  formatIPv6Net,
  formatMac,
  type IPv4Net,
  isIPv4,
  lastIPv4,
  maskIPv4,
  maskIPv6,
  nextIPv4Net,
  nextIPv6Net,
  overlapsIPv4Net,
  overlapsIPv6Net,
  parseIPv4,
  parseIPv4Net,
  parseIPv4NetStrict,
  parseIPv6,
  parseIPv6Net,
  parseMac,
  parseSubnetKey,
  sizeIPv4,
  subnetKey,
} from "./ip.ts";

const net4 = (text: string): IPv4Net => parseIPv4Net(text);

Deno.test("parseIPv4() reads dotted quads as unsigned 32-bit integers", () => {
  const cases: [string, number][] = [
    ["0.0.0.0", 0],
    ["10.0.0.1", 0x0a000001],
    ["10.5.34.0", 0x0a052200],
    ["192.168.64.3", 0xc0a84003],
    ["127.0.0.1", 0x7f000001],
    ["255.255.255.255", 0xffffffff],
    ["128.0.0.0", 0x80000000],
  ];
  for (const [text, want] of cases) {
    const got = parseIPv4(text);
    assert.equal(got, want, text);
    assert.ok(got >= 0, `${text} must not be negative`);
    assert.equal(formatIPv4(got), text, "round trip");
    assert.ok(isIPv4(text));
  }
});

Deno.test("parseIPv4() rejects leading zeros, octets over 255 and other garbage", () => {
  const bad = [
    "",
    "10.0.0",
    "10.0.0.1.2",
    "256.0.0.1",
    "10.0.0.256",
    "010.0.0.1",
    "10.00.0.1",
    "10.0.0.01",
    "1000.0.0.1",
    "-1.0.0.0",
    " 10.0.0.1",
    "10.0.0.1 ",
    "10.0.0.1/24",
    "a.b.c.d",
    "::1",
    "10..0.1",
    "１.2.3.4",
  ];
  for (const text of bad) {
    assert.throws(() => parseIPv4(text), (e: unknown) => {
      assert.ok(e instanceof SyntaxError);
      assert.equal(
        e.message,
        `Cannot parse IPv4 address: current value is ${JSON.stringify(text)}`,
      );
      return true;
    }, text);
    assert.equal(isIPv4(text), false, text);
  }
});

Deno.test("formatIPv4() prints any uint32, also values that came out of bit operations", () => {
  const cases: [number, string][] = [
    [0, "0.0.0.0"],
    [0xffffffff, "255.255.255.255"],
    [0xc0a84003, "192.168.64.3"],
    [(0xc0a84003 | 0) >>> 0, "192.168.64.3"],
    [0x01020304, "1.2.3.4"],
  ];
  for (const [ip, want] of cases) assert.equal(formatIPv4(ip), want);
});

Deno.test("maskIPv4() and sizeIPv4() cover /0, /1, /8, /24, /31 and /32", () => {
  const cases: [number, number, number][] = [
    [0, 0x00000000, 2 ** 32],
    [1, 0x80000000, 2 ** 31],
    [8, 0xff000000, 2 ** 24],
    [16, 0xffff0000, 65536],
    [24, 0xffffff00, 256],
    [30, 0xfffffffc, 4],
    [31, 0xfffffffe, 2],
    [32, 0xffffffff, 1],
  ];
  for (const [len, mask, size] of cases) {
    assert.equal(maskIPv4(len), mask, `mask /${len}`);
    assert.ok(maskIPv4(len) >= 0, `mask /${len} is unsigned`);
    assert.equal(sizeIPv4(len), size, `size /${len}`);
  }
});

Deno.test("parseIPv4Net() clears host bits the way Go's net.ParseCIDR does", () => {
  const cases: [string, string][] = [
    ["10.5.0.0/16", "10.5.0.0/16"],
    ["10.5.1.7/16", "10.5.0.0/16"],
    ["10.5.34.9/24", "10.5.34.0/24"],
    ["255.255.255.255/0", "0.0.0.0/0"],
    ["255.255.255.255/1", "128.0.0.0/1"],
    ["10.0.0.3/31", "10.0.0.2/31"],
    ["10.0.0.3/32", "10.0.0.3/32"],
  ];
  for (const [text, want] of cases) {
    const n = parseIPv4Net(text);
    assert.equal(formatIPv4Net(n), want, text);
    assert.ok(n.ip >= 0);
  }
});

Deno.test("parseIPv4NetStrict() accepts network addresses and rejects set host bits with the fix", () => {
  assert.deepEqual(parseIPv4NetStrict("10.5.0.0/16"), { ip: 0x0a050000, prefixLen: 16 });
  assert.deepEqual(parseIPv4NetStrict("0.0.0.0/0"), { ip: 0, prefixLen: 0 });
  assert.deepEqual(parseIPv4NetStrict("10.0.0.3/32"), { ip: 0x0a000003, prefixLen: 32 });
  const cases: [string, string][] = [
    ["10.5.1.0/16", "10.5.0.0/16"],
    ["10.0.0.3/31", "10.0.0.2/31"],
    ["1.0.0.0/0", "0.0.0.0/0"],
  ];
  for (const [text, fix] of cases) {
    assert.throws(() => parseIPv4NetStrict(text), {
      name: "SyntaxError",
      message: `Cannot use ${text} as a network: host bits are set, did you mean ${fix}?`,
    });
  }
});

Deno.test("parseIPv4Net() rejects malformed CIDR text naming the value", () => {
  const cases: [string, RegExp][] = [
    ["10.5.0.0", /expected a\.b\.c\.d\/len, current value is "10\.5\.0\.0"/],
    ["10.5.0.0/33", /prefix length must be 0\.\.32, current value is "10\.5\.0\.0\/33"/],
    ["10.5.0.0/", /prefix length must be 0\.\.32/],
    ["10.5.0.0/-1", /prefix length must be 0\.\.32/],
    ["10.5.0.0/1a", /prefix length must be 0\.\.32/],
    ["10.5.0.0/100", /prefix length must be 0\.\.32/],
    ["10.5.0/16", /Cannot parse IPv4 address: current value is "10\.5\.0"/],
    ["fd00::/48", /Cannot parse IPv4 address/],
  ];
  for (const [text, re] of cases) {
    assert.throws(() => parseIPv4Net(text), (e: unknown) => {
      assert.ok(e instanceof SyntaxError, text);
      assert.match(e.message, re);
      return true;
    });
  }
});

Deno.test("nextIPv4Net() steps by the network size and returns null past 255.255.255.255", () => {
  const cases: [string, string | null][] = [
    ["10.5.0.0/24", "10.5.1.0/24"],
    ["10.5.255.0/24", "10.6.0.0/24"],
    ["10.0.0.0/8", "11.0.0.0/8"],
    ["127.255.255.254/31", "128.0.0.0/31"],
    ["10.0.0.1/32", "10.0.0.2/32"],
    ["255.255.255.0/24", null],
    ["255.255.255.254/31", null],
    ["255.255.255.255/32", null],
    ["128.0.0.0/1", null],
    ["0.0.0.0/1", "128.0.0.0/1"],
    ["0.0.0.0/0", null],
  ];
  for (const [text, want] of cases) {
    const next = nextIPv4Net(net4(text));
    assert.equal(next ? formatIPv4Net(next) : null, want, text);
  }
});

Deno.test("lastIPv4() is the broadcast address, also for /0 and /32", () => {
  const cases: [string, string][] = [
    ["10.5.0.0/16", "10.5.255.255"],
    ["0.0.0.0/0", "255.255.255.255"],
    ["255.255.255.0/24", "255.255.255.255"],
    ["10.0.0.2/31", "10.0.0.3"],
    ["10.0.0.7/32", "10.0.0.7"],
  ];
  for (const [text, want] of cases) assert.equal(formatIPv4(lastIPv4(net4(text))), want, text);
});

Deno.test("containsIPv4() and containsIPv4Net() answer inclusion, edges included", () => {
  const ipCases: [string, string, boolean][] = [
    ["10.5.0.0/16", "10.5.0.0", true],
    ["10.5.0.0/16", "10.5.255.255", true],
    ["10.5.0.0/16", "10.6.0.0", false],
    ["10.5.0.0/16", "10.4.255.255", false],
    ["0.0.0.0/0", "255.255.255.255", true],
    ["128.0.0.0/1", "200.1.1.1", true],
    ["128.0.0.0/1", "127.255.255.255", false],
    ["10.0.0.7/32", "10.0.0.7", true],
    ["10.0.0.7/32", "10.0.0.6", false],
    ["10.0.0.2/31", "10.0.0.3", true],
  ];
  for (const [n, ip, want] of ipCases) {
    assert.equal(containsIPv4(net4(n), parseIPv4(ip)), want, `${n} ∋ ${ip}`);
  }
  const netCases: [string, string, boolean][] = [
    ["10.5.0.0/16", "10.5.34.0/24", true],
    ["10.5.0.0/16", "10.5.0.0/16", true],
    ["10.5.0.0/16", "10.0.0.0/8", false],
    ["10.5.0.0/16", "10.6.0.0/24", false],
    ["0.0.0.0/0", "10.0.0.0/8", true],
    ["10.5.34.0/24", "10.5.34.255/32", true],
  ];
  for (const [outer, inner, want] of netCases) {
    assert.equal(containsIPv4Net(net4(outer), net4(inner)), want, `${outer} ⊇ ${inner}`);
  }
});

Deno.test("overlapsIPv4Net() is symmetric and true exactly when the networks share an address", () => {
  const cases: [string, string, boolean][] = [
    ["10.5.0.0/16", "10.5.34.0/24", true],
    ["10.5.34.0/24", "10.5.34.0/24", true],
    ["10.5.34.0/24", "10.5.35.0/24", false],
    ["10.5.0.0/16", "10.6.0.0/16", false],
    ["0.0.0.0/0", "192.0.2.0/24", true],
    ["10.0.0.0/8", "11.0.0.0/8", false],
    ["10.0.0.2/31", "10.0.0.3/32", true],
    ["10.0.0.2/31", "10.0.0.4/32", false],
    ["128.0.0.0/1", "127.0.0.0/8", false],
  ];
  for (const [a, b, want] of cases) {
    assert.equal(overlapsIPv4Net(net4(a), net4(b)), want, `${a} ∩ ${b}`);
    assert.equal(overlapsIPv4Net(net4(b), net4(a)), want, `${b} ∩ ${a}`);
  }
  assert.ok(equalIPv4Net(net4("10.5.1.9/16"), net4("10.5.0.0/16")));
  assert.ok(!equalIPv4Net(net4("10.5.0.0/16"), net4("10.5.0.0/17")));
});

Deno.test("parseIPv6() reads compressed, full and IPv4-embedded forms", () => {
  const cases: [string, bigint][] = [
    ["::", 0n],
    ["::1", 1n],
    ["1::", 1n << 112n],
    ["fd00:12:13::", 0xfd000012001300000000000000000000n],
    ["FD00:12:13::", 0xfd000012001300000000000000000000n],
    ["2001:db8::8:800:200c:417a", 0x20010db80000000000080800200c417an],
    ["2001:0db8:0000:0000:0000:0000:0000:0001", 0x20010db8000000000000000000000001n],
    ["1:2:3:4:5:6:7:8", 0x00010002000300040005000600070008n],
    ["1:2:3:4:5:6:7::", 0x00010002000300040005000600070000n],
    ["::2:3:4:5:6:7:8", 0x00000002000300040005000600070008n],
    ["::ffff:192.0.2.1", 0xffffc0000201n],
    ["::192.0.2.1", 0xc0000201n],
    ["64:ff9b::10.0.0.1", 0x0064ff9b00000000000000000a000001n],
    ["1:2:3:4:5:6:1.2.3.4", 0x00010002000300040005000601020304n],
    ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", (1n << 128n) - 1n],
  ];
  for (const [text, want] of cases) assert.equal(parseIPv6(text), want, text);
});

Deno.test("parseIPv6() rejects too many groups, triple colons and other garbage", () => {
  const bad = [
    "",
    ":",
    ":::",
    "1:::2",
    "::1::",
    "1::2::3",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7:8::",
    "::1:2:3:4:5:6:7:8",
    "1:2:3:4:5:6:7",
    "1:2:3:4:5:6::1.2.3.4",
    "1:2:3:4:5:6:7:1.2.3.4",
    "12345::",
    "g::",
    ":1::",
    "1::2:",
    "1.2.3.4",
    "::1.2.3",
    "::256.0.0.1",
    "::1.2.3.4:5",
    "fe80::1%eth0",
    " ::1",
  ];
  for (const text of bad) {
    assert.throws(() => parseIPv6(text), (e: unknown) => {
      assert.ok(e instanceof SyntaxError, text);
      assert.equal(
        e.message,
        `Cannot parse IPv6 address: current value is ${JSON.stringify(text)}`,
      );
      return true;
    });
  }
});

Deno.test("formatIPv6() matches Go's net.IP.String (RFC 5952)", () => {
  // Expected strings are what Go's net.ParseIP(x).String() prints.
  const cases: [string, string][] = [
    ["::", "::"],
    ["::1", "::1"],
    ["1::", "1::"],
    ["fd00:12:13::", "fd00:12:13::"],
    ["FD00:0012:0013:0000:0000:0000:0000:0000", "fd00:12:13::"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // tie: the first run
    ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"], // the longest run, not the first
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // one zero group stays
    ["1:0:1:0:1:0:1:0", "1:0:1:0:1:0:1:0"],
    ["0:1:2:3:4:5:6:7", "0:1:2:3:4:5:6:7"],
    ["1:2:3:4:5:6:7:0", "1:2:3:4:5:6:7:0"],
    ["0:0:1:2:3:4:5:6", "::1:2:3:4:5:6"],
    ["1:2:3:4:5:6:0:0", "1:2:3:4:5:6::"],
    ["fc00:0:0:1::", "fc00:0:0:1::"],
    ["fc00:0:0:ffff::", "fc00:0:0:ffff::"],
    ["fe80::a:b:c:d", "fe80::a:b:c:d"],
    ["::192.0.2.1", "::c000:201"],
    ["::ffff:192.0.2.1", "192.0.2.1"], // Go prints IPv4-mapped addresses as IPv4
    ["::fffe:192.0.2.1", "::fffe:c000:201"],
    ["64:ff9b::10.0.0.1", "64:ff9b::a00:1"],
  ];
  for (const [text, want] of cases) assert.equal(formatIPv6(parseIPv6(text)), want, text);
});

Deno.test("IPv6 networks: parse clears host bits, masks, containment, overlap and next", () => {
  assert.equal(formatIPv6Net(parseIPv6Net("fd00:12:13::5/56")), "fd00:12:13::/56");
  assert.equal(formatIPv6Net(parseIPv6Net("fd00::1/0")), "::/0");
  assert.equal(formatIPv6Net(parseIPv6Net("fd00::1/128")), "fd00::1/128");
  for (const bad of ["fd00::", "fd00::/129", "fd00::/", "fd00::/x", "10.0.0.0/8", "zz::/8"]) {
    assert.throws(() => parseIPv6Net(bad), SyntaxError, bad);
  }
  assert.equal(maskIPv6(0), 0n);
  assert.equal(maskIPv6(128), (1n << 128n) - 1n);
  assert.equal(maskIPv6(64), ((1n << 64n) - 1n) << 64n);
  const net = parseIPv6Net("fd00:12::/32");
  assert.ok(containsIPv6(net, parseIPv6("fd00:12:ffff::1")));
  assert.ok(!containsIPv6(net, parseIPv6("fd00:13::")));
  const cases: [string, string, boolean][] = [
    ["fd00::/48", "fd00:0:0:5::/64", true],
    ["fd00:0:0:4::/64", "fd00:0:0:5::/64", false],
    ["::/0", "2001:db8::/32", true],
  ];
  for (const [a, b, want] of cases) {
    assert.equal(overlapsIPv6Net(parseIPv6Net(a), parseIPv6Net(b)), want, `${a} ∩ ${b}`);
    assert.equal(overlapsIPv6Net(parseIPv6Net(b), parseIPv6Net(a)), want, `${b} ∩ ${a}`);
  }
  assert.ok(equalIPv6Net(undefined, undefined));
  assert.ok(!equalIPv6Net(parseIPv6Net("fd00::/64"), undefined));
  assert.ok(equalIPv6Net(parseIPv6Net("fd00::1/64"), parseIPv6Net("fd00::/64")));
  const next = nextIPv6Net(parseIPv6Net("fd00:0:0:ffff::/64"));
  assert.equal(next && formatIPv6Net(next), "fd00:0:1::/64");
  assert.equal(nextIPv6Net(parseIPv6Net("ffff:ffff:ffff:ffff::/64")), null);
  assert.equal(nextIPv6Net(parseIPv6Net("::/0")), null);
});

Deno.test("subnetKey() and parseSubnetKey() round-trip flannel's etcd key suffixes", () => {
  const cases: [string, string, string | undefined][] = [
    ["10.5.34.0-24", "10.5.34.0/24", undefined],
    ["10.244.0.0-16", "10.244.0.0/16", undefined],
    ["10.0.0.4-30", "10.0.0.4/30", undefined],
    ["10.5.34.0-24&fd00:12:13::-56", "10.5.34.0/24", "fd00:12:13::/56"],
    ["10.5.1.0-24&fc00:0:0:1::-64", "10.5.1.0/24", "fc00:0:0:1::/64"],
    ["10.5.1.0-24&::-0", "10.5.1.0/24", "::/0"],
  ];
  for (const [key, v4, v6] of cases) {
    const parsed = parseSubnetKey(key);
    assert.ok(parsed?.subnet, key);
    assert.equal(formatIPv4Net(parsed.subnet), v4, key);
    assert.equal(parsed.ipv6Subnet ? formatIPv6Net(parsed.ipv6Subnet) : undefined, v6, key);
    assert.equal(subnetKey(parsed.subnet, parsed.ipv6Subnet), key, "round trip");
  }
  assert.equal(
    subnetKey(parseIPv4Net("10.5.34.0/24"), parseIPv6Net("fd00:12:13::/56")),
    "10.5.34.0-24&fd00:12:13::-56",
  );
});

Deno.test("subnetKey() writes an IPv6-only lease with Go's zero IPv4 network, as flannel's MakeSubnetKey", () => {
  // pkg/subnet/subnet.go MakeSubnetKey: sn.StringSep(".", "-") of ip.IP4Net{} is "0.0.0.0-0"
  const v6 = parseIPv6Net("fd00:12:13::/56");
  assert.equal(subnetKey(undefined, v6), "0.0.0.0-0&fd00:12:13::-56");
  const parsed = parseSubnetKey("0.0.0.0-0&fd00:12:13::-56");
  assert.deepEqual(parsed, { ipv6Subnet: v6 });
  assert.equal(subnetKey(parsed?.subnet, parsed?.ipv6Subnet), "0.0.0.0-0&fd00:12:13::-56");
  // a zero IPv4 network alone holds no subnet at all
  assert.equal(parseSubnetKey("0.0.0.0-0"), null);
  assert.throws(() => subnetKey(undefined, undefined), TypeError);
});

Deno.test("parseSubnetKey() returns null for host bits, bad lengths and garbage", () => {
  const bad = [
    "",
    "10.5.34.1-24",
    "10.5.34.0-33",
    "10.5.34.0/24",
    "10.5.34-24",
    "256.5.34.0-24",
    "010.5.34.0-24",
    "10.5.34.0-24&fd00:12:13::1-56",
    "10.5.34.0-24&fd00:12:13::-129",
    "10.5.34.0-24&FD00:12:13::-56",
    "10.5.34.0-24&fd00:::-56",
    "10.5.34.0-24&",
    "10.5.34.0-24&fd00::",
    "/coreos.com/network/subnets/10.5.34.0-24",
    "10.5.34.0-24 ",
    "config",
  ];
  for (const key of bad) assert.equal(parseSubnetKey(key), null, key);
});

Deno.test("parseMac() and formatMac() handle case and reject malformed addresses", () => {
  const mac = parseMac("C6:d2:32:6F:8f:44");
  assert.deepEqual([...mac], [0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44]);
  assert.equal(formatMac(mac), "c6:d2:32:6f:8f:44");
  assert.equal(formatMac(Uint8Array.of(0, 1, 2, 10, 11, 255)), "00:01:02:0a:0b:ff");
  assert.equal(formatMac(Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8)), "01:02:03:04:05:06");
  for (
    const bad of [
      "",
      "c6:d2:32:6f:8f",
      "c6:d2:32:6f:8f:44:00",
      "c6-d2-32-6f-8f-44",
      "c6:d2:32:6f:8f:4g",
      "c6:d2:32:6f:8f:4",
    ]
  ) {
    assert.throws(() => parseMac(bad), {
      name: "SyntaxError",
      message: `Cannot parse MAC address: expected aa:bb:cc:dd:ee:ff, current value is ${
        JSON.stringify(bad)
      }`,
    });
  }
});
