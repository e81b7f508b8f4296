import assert from "node:assert/strict";
import {
  containsIP,
  containsIPNet,
  equalIPNet,
  formatIP,
  formatIPNet,
  isIPv6Net,
  isLinkLocalIPv6,
  networkOf,
  parseIP,
  parseIPNet,
} from "./ip.ts";

Deno.test("parseIP() and formatIP() take either family: numbers for IPv4, bigints for IPv6", () => {
  assert.equal(parseIP("10.5.0.1"), 0x0a050001);
  assert.equal(parseIP("fd00::1"), 0xfd000000000000000000000000000001n);
  assert.equal(formatIP(0x0a050001), "10.5.0.1");
  assert.equal(formatIP(0xfd000005000200000000000000000000n), "fd00:5:2::");
  for (const bad of ["", "10.5.0", "fd00::1::2", "host"]) {
    assert.throws(() => parseIP(bad), SyntaxError, bad);
  }
});

Deno.test("parseIPNet() clears host bits in either family; isIPv6Net() tells them apart", () => {
  const v4 = parseIPNet("10.5.1.7/16");
  const v6 = parseIPNet("fd00:5:1::7/48");
  assert.equal(formatIPNet(v4), "10.5.0.0/16");
  assert.equal(formatIPNet(v6), "fd00:5:1::/48");
  assert.deepEqual([isIPv6Net(v4), isIPv6Net(v6)], [false, true]);
});

Deno.test("containsIP() and containsIPNet() are false across families", () => {
  const v4 = parseIPNet("10.5.0.0/16"), v6 = parseIPNet("fd00:5::/32");
  const table: [boolean, boolean][] = [
    [containsIP(v4, parseIP("10.5.9.9")), true],
    [containsIP(v4, BigInt(parseIP("10.5.9.9") as number)), false],
    [containsIP(v6, parseIP("fd00:5:9::1")), true],
    [containsIP(v6, parseIP("fd00:6::1")), false],
    [containsIP(v6, 0), false],
    [containsIPNet(v6, parseIPNet("fd00:5:2::/64")), true],
    [containsIPNet(v6, parseIPNet("fd00::/16")), false],
    [containsIPNet(v4, v6), false],
  ];
  table.forEach(([got, want], i) => assert.equal(got, want, `case ${i}`));
  assert.equal(equalIPNet(v4, parseIPNet("10.5.0.0/16")), true);
  assert.equal(equalIPNet(v6, parseIPNet("fd00:5::/33")), false);
});

Deno.test("networkOf() turns interface addresses into their networks", () => {
  assert.equal(
    formatIPNet(networkOf({ ip: parseIP("192.0.2.11") as number, prefixLen: 24 })),
    "192.0.2.0/24",
  );
  assert.equal(
    formatIPNet(networkOf({ ip: parseIP("fd00::11") as bigint, prefixLen: 64 })),
    "fd00::/64",
  );
  assert.equal(
    formatIPNet(networkOf({ ip: parseIP("fd00::11") as bigint, prefixLen: 128 })),
    "fd00::11/128",
  );
});

Deno.test("isLinkLocalIPv6() is true for fe80::/10 only", () => {
  const table: [string, boolean][] = [
    ["fe80::1", true],
    ["febf:ffff::1", true],
    ["fec0::1", false],
    ["fd00::1", false],
    ["::1", false],
    ["169.254.0.1", false],
  ];
  for (const [text, want] of table) assert.equal(isLinkLocalIPv6(parseIP(text)), want, text);
});
