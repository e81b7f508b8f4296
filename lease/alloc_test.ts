import assert from "node:assert/strict";
import {
  describeIPv6Pool,
  describePool,
  findLeaseByHost,
  findLeaseOverlapping,
  ipv6PoolSize,
  isIPv6SubnetCompatible,
  isLeaseCompatible,
  isSubnetCompatible,
  PICK_WINDOW,
  pickFreeSubnet,
  poolSize,
} from "./alloc.ts";
import { parseNetworkConfig } from "./config.ts";
import {
  formatIPv4,
  formatIPv4Net,
  formatIPv6Net,
  parseIPv4Net,
  parseIPv6Net,
} from "../core/ip.ts";
import { type Lease } from "./types.ts";
import { PoolExhaustedError } from "../core/errors.ts";

const config16 = parseNetworkConfig(`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`);

function lease(cidr: string, publicIP = "192.0.2.1", cidr6?: string): Lease {
  return {
    subnet: parseIPv4Net(cidr),
    ...(cidr6 ? { ipv6Subnet: parseIPv6Net(cidr6) } : {}),
    attrs: { publicIP },
    expiration: null,
  };
}

function v6lease(cidr6: string, publicIPv6: string): Lease {
  return { ipv6Subnet: parseIPv6Net(cidr6), attrs: { publicIP: "", publicIPv6 }, expiration: null };
}

/** A random source that returns these values in turn and counts its calls. */
function scripted(...values: number[]): (() => number) & { calls: number } {
  const f = Object.assign(() => {
    const value = values[f.calls % values.length];
    f.calls++;
    return value;
  }, { calls: 0 });
  return f;
}

const pick = (json: string, leases: Lease[], r: number) =>
  formatIPv4Net(pickFreeSubnet(parseNetworkConfig(json), leases, scripted(r)).subnet!);

Deno.test("pickFreeSubnet() walks SubnetMin..SubnetMax and skips used and overlapping subnets", () => {
  const net16 = `{"Network":"10.5.0.0/16"}`;
  const cases: [string, string, Lease[], number, string][] = [
    [
      "first free is SubnetMin (the network's first subnet is never used)",
      net16,
      [],
      0,
      "10.5.1.0/24",
    ],
    [
      "used subnets are skipped",
      net16,
      [lease("10.5.1.0/24"), lease("10.5.2.0/24")],
      0,
      "10.5.3.0/24",
    ],
    [
      "input order does not matter",
      net16,
      [lease("10.5.3.0/24"), lease("10.5.1.0/24"), lease("10.5.2.0/24")],
      0,
      "10.5.4.0/24",
    ],
    [
      "a wider foreign lease blocks every subnet inside it",
      net16,
      [lease("10.5.0.0/20")],
      0,
      "10.5.16.0/24",
    ],
    [
      "a wider lease after a small one still blocks",
      net16,
      [lease("10.5.1.0/24"), lease("10.5.0.0/22"), lease("10.5.4.0/24")],
      0,
      "10.5.5.0/24",
    ],
    [
      "a narrower lease blocks the subnet holding it",
      net16,
      [lease("10.5.1.128/25"), lease("10.5.2.4/30")],
      0,
      "10.5.3.0/24",
    ],
    [
      "leases outside the pool are ignored",
      net16,
      [lease("10.6.1.0/24"), lease("10.5.0.0/24"), lease("10.4.0.0/16")],
      0,
      "10.5.1.0/24",
    ],
    [
      "a foreign lease below SubnetMin does not matter",
      `{"Network":"10.5.0.0/16","SubnetMin":"10.5.9.0"}`,
      [lease("10.5.0.0/21")],
      0,
      "10.5.9.0/24",
    ],
    [
      "SubnetMin and SubnetMax bound the walk",
      `{"Network":"10.5.0.0/16","SubnetMin":"10.5.100.0","SubnetMax":"10.5.102.0"}`,
      [],
      0.999,
      "10.5.102.0/24",
    ],
    [
      "SubnetMax is inclusive",
      `{"Network":"10.5.0.0/16","SubnetMin":"10.5.100.0","SubnetMax":"10.5.102.0"}`,
      [lease("10.5.100.0/24"), lease("10.5.101.0/24")],
      0.5,
      "10.5.102.0/24",
    ],
    [
      "SubnetLen steps",
      `{"Network":"10.5.0.0/16","SubnetLen":26}`,
      [lease("10.5.0.64/26")],
      0,
      "10.5.0.128/26",
    ],
    [
      "small networks split in four",
      `{"Network":"10.5.0.0/28"}`,
      [lease("10.5.0.4/30")],
      0,
      "10.5.0.8/30",
    ],
    [
      "the top of the address space",
      `{"Network":"255.255.0.0/16","SubnetMin":"255.255.200.0"}`,
      [lease("255.255.0.0/17")],
      0.999,
      "255.255.255.0/24",
    ],
  ];
  for (const [why, json, leases, r, want] of cases) assert.equal(pick(json, leases, r), want, why);
});

Deno.test("pickFreeSubnet() chooses at random among the first 100 free subnets", () => {
  assert.equal(PICK_WINDOW, 100);
  const seen = new Set<string>();
  for (let k = 0; k < 100; k++) seen.add(pick(`{"Network":"10.5.0.0/16"}`, [], (k + 0.5) / 100));
  assert.equal(seen.size, 100);
  assert.ok(seen.has("10.5.1.0/24"));
  assert.ok(seen.has("10.5.100.0/24"));
  assert.ok(!seen.has("10.5.101.0/24"));
  // the window counts free subnets only: with the first ten used it moves by ten
  const used = Array.from({ length: 10 }, (_, i) => lease(`10.5.${i + 1}.0/24`));
  assert.equal(pick(`{"Network":"10.5.0.0/16"}`, used, 0), "10.5.11.0/24");
  assert.equal(pick(`{"Network":"10.5.0.0/16"}`, used, 0.999), "10.5.110.0/24");
  // fewer than 100 free: the window is what is left
  const few = `{"Network":"10.5.0.0/16","SubnetMin":"10.5.250.0"}`;
  assert.equal(pick(few, [lease("10.5.255.0/24")], 0.999), "10.5.254.0/24");
});

Deno.test("pickFreeSubnet() draws one random number per address family", () => {
  const r4 = scripted(0.5);
  pickFreeSubnet(config16, [], r4);
  assert.equal(r4.calls, 1);
  const dual = parseNetworkConfig(
    `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:12:13::/48"}`,
  );
  const r6 = scripted(0, 0.999);
  const got = pickFreeSubnet(dual, [], r6);
  assert.equal(r6.calls, 2);
  assert.equal(formatIPv4Net(got.subnet!), "10.5.1.0/24");
  assert.equal(got.ipv6Subnet && formatIPv6Net(got.ipv6Subnet), "fd00:12:13:64::/64");
});

Deno.test("pickFreeSubnet() skips IPv6 subnets held by other leases", () => {
  const dual = parseNetworkConfig(
    `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:12:13::/48"}`,
  );
  const leases = [
    lease("10.5.1.0/24", "192.0.2.1", "fd00:12:13:1::/64"),
    lease("10.5.2.0/24", "192.0.2.2", "fd00:12:13:2::/63"),
  ];
  const got = pickFreeSubnet(dual, leases, () => 0);
  assert.equal(formatIPv4Net(got.subnet!), "10.5.3.0/24");
  assert.equal(got.ipv6Subnet && formatIPv6Net(got.ipv6Subnet), "fd00:12:13:4::/64");
  assert.equal(pickFreeSubnet(config16, [], () => 0).ipv6Subnet, undefined);
});

Deno.test("pickFreeSubnet() throws PoolExhaustedError naming the pool and N of M in use", () => {
  const small = parseNetworkConfig(`{"Network":"10.5.0.0/28"}`);
  const all = [
    lease("10.5.0.12/30"),
    lease("10.5.0.4/30"),
    lease("10.5.0.8/30"),
    lease("10.6.0.0/24"),
  ];
  const fix = "enlarge Network or widen SubnetMin/SubnetMax, or delete stale leases";
  const cases: [Lease[], string][] = [
    [
      all,
      `no free subnet left in 10.5.0.0/28 (/30 subnets 10.5.0.4 to 10.5.0.12): 3 of 3 in use (by 3 leases); ${fix}`,
    ],
    [
      [lease("10.5.0.0/28")],
      `no free subnet left in 10.5.0.0/28 (/30 subnets 10.5.0.4 to 10.5.0.12): 3 of 3 in use (by 1 lease); ${fix}`,
    ],
  ];
  for (const [leases, message] of cases) {
    assert.throws(() => pickFreeSubnet(small, leases, Math.random), (e) => {
      assert.ok(e instanceof PoolExhaustedError);
      assert.equal(e.name, "PoolExhaustedError");
      assert.equal(e.message, message);
      return true;
    });
  }
  const dual = parseNetworkConfig(
    `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/124"}`,
  );
  assert.throws(
    () => pickFreeSubnet(dual, [lease("10.5.1.0/24", "192.0.2.1", "fd00::/124")], Math.random),
    {
      name: "PoolExhaustedError",
      message:
        "no free IPv6 subnet left in fd00::/124 (/126 subnets fd00::4 to fd00::c): 3 of 3 in use (by 1 lease); " +
        "enlarge IPv6Network or widen IPv6SubnetMin/IPv6SubnetMax, or delete stale leases",
    },
  );
});

Deno.test("pickFreeSubnet() reports a full /8 pool of 65535 subnets and finds its only free one", () => {
  const big = parseNetworkConfig(`{"Network":"10.0.0.0/8"}`);
  const leases: Lease[] = [];
  for (let i = 1; i < 65536; i++) leases.push(lease(`10.${i >> 8}.${i & 255}.0/24`));
  assert.equal(poolSize(big), 65535);
  assert.throws(
    () => pickFreeSubnet(big, leases, Math.random),
    /65535 of 65535 in use \(by 65535 leases\)/,
  );
  leases.splice(40000, 1);
  assert.equal(formatIPv4Net(pickFreeSubnet(big, leases, () => 0.5).subnet!), "10.156.65.0/24");
});

Deno.test("isSubnetCompatible() requires SubnetLen, the Network and SubnetMin..SubnetMax", () => {
  const cfg = parseNetworkConfig(
    `{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.20.0"}`,
  );
  const cases: [string, boolean][] = [
    ["10.5.10.0/24", true],
    ["10.5.15.0/24", true],
    ["10.5.20.0/24", true],
    ["10.5.9.0/24", false],
    ["10.5.21.0/24", false],
    ["10.5.15.0/25", false],
    ["10.5.0.0/16", false],
    ["10.6.15.0/24", false],
  ];
  for (const [cidr, want] of cases) {
    assert.equal(isSubnetCompatible(cfg, parseIPv4Net(cidr)), want, cidr);
  }
  const v6only = parseNetworkConfig(
    `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48"}`,
  );
  assert.equal(isSubnetCompatible(v6only, parseIPv4Net("10.5.15.0/24")), false);
});

Deno.test("isIPv6SubnetCompatible() and isLeaseCompatible() follow EnableIPv6", () => {
  const dual = parseNetworkConfig(
    `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:12:13::/48"}`,
  );
  const cases: [typeof dual, string | undefined, boolean][] = [
    [config16, undefined, true],
    [config16, "fd00:12:13:5::/64", false],
    [dual, undefined, false],
    [dual, "fd00:12:13:5::/64", true],
    [dual, "fd00:12:13:ffff::/64", true],
    [dual, "fd00:12:13::/64", false],
    [dual, "fd00:12:13:5::/65", false],
    [dual, "fd00:12:14:5::/64", false],
  ];
  for (const [cfg, cidr6, want] of cases) {
    const sn6 = cidr6 ? parseIPv6Net(cidr6) : undefined;
    assert.equal(isIPv6SubnetCompatible(cfg, sn6), want, `${cfg.enableIPv6} ${cidr6}`);
    assert.equal(
      isLeaseCompatible(cfg, lease("10.5.7.0/24", "192.0.2.1", cidr6)),
      want,
      `lease ${cidr6}`,
    );
  }
  assert.equal(isLeaseCompatible(config16, lease("10.5.0.0/24")), false, "below SubnetMin");
});

Deno.test("findLeaseByHost() finds a host by its public IPv4, or its IPv6 without one", () => {
  const leases = [
    lease("10.5.1.0/24", "192.0.2.1"),
    lease("10.5.2.0/24", "192.0.2.2"),
    v6lease("fd00:10:5:1::/64", "2001:db8::1"),
    v6lease("fd00:10:5:2::/64", "2001:db8::2"),
  ];
  const cases: [string, string | null, Lease | undefined][] = [
    ["192.0.2.2", null, leases[1]],
    ["192.0.2.3", null, undefined],
    ["", "2001:db8::2", leases[3]],
    ["", "2001:DB8:0::2", leases[3]],
    ["", "2001:db8::3", undefined],
    // a host with no IPv4 address is not every other IPv6-only host
    ["", null, undefined],
  ];
  for (const [publicIP, publicIPv6, want] of cases) {
    assert.equal(
      findLeaseByHost(leases, { publicIP, publicIPv6 }),
      want,
      `${publicIP} ${publicIPv6}`,
    );
  }
});

Deno.test("findLeaseOverlapping() checks every family the pair holds", () => {
  const leases = [
    lease("10.5.1.0/24", "192.0.2.1", "fd00:10:5:1::/64"),
    v6lease("fd00:10:5:2::/64", "2001:db8::2"),
  ];
  const cases: [string, Parameters<typeof findLeaseOverlapping>[1], Lease | undefined][] = [
    ["same IPv4", { subnet: parseIPv4Net("10.5.1.0/24") }, leases[0]],
    ["inside IPv4", { subnet: parseIPv4Net("10.5.1.0/25") }, leases[0]],
    ["other IPv4", { subnet: parseIPv4Net("10.5.3.0/24") }, undefined],
    [
      "free IPv4, taken IPv6",
      { subnet: parseIPv4Net("10.5.3.0/24"), ipv6Subnet: parseIPv6Net("fd00:10:5:2::/64") },
      leases[1],
    ],
    ["IPv6 alone", { ipv6Subnet: parseIPv6Net("fd00:10:5:1::/64") }, leases[0]],
    ["wider IPv6", { ipv6Subnet: parseIPv6Net("fd00:10:5::/48") }, leases[0]],
    ["free IPv6", { ipv6Subnet: parseIPv6Net("fd00:10:5:3::/64") }, undefined],
  ];
  for (const [why, pair, want] of cases) {
    assert.equal(findLeaseOverlapping(leases, pair), want, why);
  }
});

Deno.test("pickFreeSubnet() in an IPv6-only network picks an IPv6 subnet alone", () => {
  const v6only = parseNetworkConfig(
    `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:5::/48"}`,
  );
  const r = scripted(0);
  const first = pickFreeSubnet(v6only, [], r);
  assert.equal(r.calls, 1, "one random draw: IPv6 only");
  assert.equal(first.subnet, undefined);
  assert.equal(first.ipv6Subnet && formatIPv6Net(first.ipv6Subnet), "fd00:10:5:1::/64");
  const used = [
    v6lease("fd00:10:5:1::/64", "2001:db8::1"),
    v6lease("fd00:10:5:2::/63", "2001:db8::2"),
    // an IPv4 lease of another network occupies nothing here
    lease("10.5.1.0/24"),
  ];
  const next = pickFreeSubnet(v6only, used, () => 0);
  assert.deepEqual(next, { ipv6Subnet: parseIPv6Net("fd00:10:5:4::/64") });
  // the window counts free subnets only, as for IPv4
  const top = pickFreeSubnet(v6only, used, () => 0.999);
  assert.equal(formatIPv6Net(top.ipv6Subnet!), "fd00:10:5:67::/64");
});

Deno.test("pickFreeSubnet() finds the one free IPv6 subnet among 4000 in one pass", () => {
  const cfg = parseNetworkConfig(
    `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:5::/48","IPv6SubnetMax":"fd00:10:5:fa0::"}`,
  );
  assert.equal(ipv6PoolSize(cfg), 4000n);
  const leases: Lease[] = [];
  for (let i = 1; i <= 4000; i++) {
    if (i !== 3001) {
      leases.push(v6lease(`fd00:10:5:${i.toString(16)}::/64`, `2001:db8::${i.toString(16)}`));
    }
  }
  leases.reverse(); // any order
  const t0 = performance.now();
  const got = pickFreeSubnet(cfg, leases, Math.random);
  assert.ok(performance.now() - t0 < 500, "sorted scan, not leases × candidates");
  assert.equal(formatIPv6Net(got.ipv6Subnet!), `fd00:10:5:${(3001).toString(16)}::/64`);
  leases.push(v6lease("fd00:10:5:bb9::/64", "2001:db8::ffff"));
  assert.throws(() => pickFreeSubnet(cfg, leases, Math.random), {
    name: "PoolExhaustedError",
    message:
      "no free IPv6 subnet left in fd00:10:5::/48 (/64 subnets fd00:10:5:1:: to fd00:10:5:fa0::): " +
      "4000 of 4000 in use (by 4000 leases); " +
      "enlarge IPv6Network or widen IPv6SubnetMin/IPv6SubnetMax, or delete stale leases",
  });
});

Deno.test("isLeaseCompatible() in an IPv6-only network wants the IPv6 subnet and no IPv4 one", () => {
  const v6only = parseNetworkConfig(
    `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:5::/48"}`,
  );
  assert.equal(isLeaseCompatible(v6only, v6lease("fd00:10:5:7::/64", "2001:db8::1")), true);
  assert.equal(isLeaseCompatible(v6only, v6lease("fd00:10:5::/64", "2001:db8::1")), false);
  assert.equal(
    isLeaseCompatible(v6only, lease("10.5.7.0/24", "192.0.2.1", "fd00:10:5:7::/64")),
    false,
    "an IPv4 subnet does not fit an IPv6-only network",
  );
  assert.equal(isSubnetCompatible(v6only, undefined), true);
  assert.equal(isSubnetCompatible(config16, undefined), false, "IPv4 enabled: a subnet is needed");
  assert.equal(isLeaseCompatible(config16, v6lease("fd00:10:5:7::/64", "2001:db8::1")), false);
  assert.equal(ipv6PoolSize(config16), 0n);
  assert.equal(poolSize(v6only), 0);
  assert.equal(
    describeIPv6Pool(v6only),
    "fd00:10:5::/48 (/64 subnets fd00:10:5:1:: to fd00:10:5:ffff::)",
  );
});

Deno.test("poolSize() and describePool() describe SubnetMin..SubnetMax", () => {
  const cases: [string, number, string][] = [
    [`{"Network":"10.5.0.0/16"}`, 255, "10.5.0.0/16 (/24 subnets 10.5.1.0 to 10.5.255.0)"],
    [`{"Network":"10.5.0.0/28"}`, 3, "10.5.0.0/28 (/30 subnets 10.5.0.4 to 10.5.0.12)"],
    [
      `{"Network":"10.5.0.0/16","SubnetMin":"10.5.3.0","SubnetMax":"10.5.3.0"}`,
      1,
      "10.5.0.0/16 (/24 subnets 10.5.3.0 to 10.5.3.0)",
    ],
    [`{"Network":"128.0.0.0/1"}`, 8388607, "128.0.0.0/1 (/24 subnets 128.0.1.0 to 255.255.255.0)"],
  ];
  for (const [json, size, text] of cases) {
    const cfg = parseNetworkConfig(json);
    assert.equal(poolSize(cfg), size, json);
    assert.equal(describePool(cfg), text, json);
  }
  assert.equal(formatIPv4(config16.subnetMax), "10.5.255.0");
});
