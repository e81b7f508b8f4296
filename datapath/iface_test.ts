// Interface selection against table sources: no system access.
import assert from "node:assert/strict";
import { formatIPv4 } from "../core/ip.ts";
import {
  type AddressFacts,
  IFA_F_DEPRECATED,
  IFA_F_PERMANENT,
  IFA_F_SECONDARY,
  InterfaceError,
  type InterfaceFlags,
  type InterfaceInfo,
  type InterfaceSource,
  parseProcNetRoute,
  pickExternalInterface,
  preferredIPv4Order,
  type RouteEntry,
  withPreferredAddresses,
} from "./iface.ts";

const IFACES: InterfaceInfo[] = [
  { name: "lo", index: 1, mtu: 65536, up: true, ipv4: ["127.0.0.1"], ipv6: [] },
  {
    name: "eth0",
    index: 2,
    mtu: 1500,
    up: true,
    ipv4: ["192.0.2.10", "192.0.2.11"],
    ipv6: ["2001:db8::10"],
  },
  { name: "eth1", index: 3, mtu: 9000, up: true, ipv4: ["198.51.100.7"], ipv6: [] },
  { name: "wg0", index: 4, mtu: 1420, up: true, ipv4: [], ipv6: [] },
  { name: "ens5", index: 5, mtu: 1500, up: false, ipv4: ["10.0.1.5"], ipv6: [] },
];

const r = (iface: string, dst: string, prefixLen: number, metric = 0): RouteEntry => {
  const [a, b, c, d] = dst.split(".").map(Number);
  return { iface, dst: ((a << 24) | (b << 16) | (c << 8) | d) >>> 0, prefixLen, metric };
};

const ROUTES: RouteEntry[] = [
  r("eth1", "0.0.0.0", 0, 200),
  r("eth0", "0.0.0.0", 0, 100),
  r("eth0", "192.0.2.0", 24),
  r("eth1", "198.51.100.0", 24),
  r("eth1", "203.0.113.0", 24),
  r("eth0", "203.0.113.128", 25),
  r("wg0", "10.99.0.0", 16),
  r("ens5", "10.0.0.0", 8),
];

const table = (interfaces = IFACES, routes = ROUTES): InterfaceSource => ({
  interfaces: () => interfaces,
  routes: () => routes,
});

const LISTING =
  "lo (127.0.0.1), eth0 (192.0.2.10, 192.0.2.11), eth1 (198.51.100.7), wg0, ens5 (10.0.1.5)";

Deno.test("pickExternalInterface() picks by flags in flannel's order", () => {
  const cases: [string, InterfaceFlags, string, string][] = [
    ["default route with the lowest metric", {}, "eth0", "192.0.2.10"],
    ["--iface by name", { iface: ["eth1"] }, "eth1", "198.51.100.7"],
    ["--iface by IP uses that IP", { iface: ["192.0.2.11"] }, "eth0", "192.0.2.11"],
    [
      "several --iface: the first that exists",
      { iface: ["eth9", "eth1", "eth0"] },
      "eth1",
      "198.51.100.7",
    ],
    [
      "several --iface: an unaddressed one is skipped",
      { iface: ["wg0", "eth1"] },
      "eth1",
      "198.51.100.7",
    ],
    [
      "several --iface: an IP nobody has is skipped",
      { iface: ["10.9.9.9", "192.0.2.10"] },
      "eth0",
      "192.0.2.10",
    ],
    [
      "--iface wins over --iface-regex",
      { iface: ["eth0"], ifaceRegex: ["eth1"] },
      "eth0",
      "192.0.2.10",
    ],
    ["--iface-regex on a name", { ifaceRegex: ["^eth1$"] }, "eth1", "198.51.100.7"],
    [
      "--iface-regex on an IP picks that IP",
      { ifaceRegex: ["^192\\.0\\.2\\.11$"] },
      "eth0",
      "192.0.2.11",
    ],
    ["--iface-regex: IPs are tried before names", { ifaceRegex: ["1"] }, "lo", "127.0.0.1"],
    [
      "--iface-regex: IP matches beat an earlier name match",
      { ifaceRegex: ["^(eth0|198\\..*)$"] },
      "eth1",
      "198.51.100.7",
    ],
    [
      "--iface-regex: several, the first that matches",
      { ifaceRegex: ["^wl", "^ens"] },
      "ens5",
      "10.0.1.5",
    ],
    [
      "--iface-regex after a missing --iface",
      { iface: ["eth7"], ifaceRegex: ["^eth"] },
      "eth0",
      "192.0.2.10",
    ],
    ["--iface-can-reach: longest prefix", { ifaceCanReach: "203.0.113.200" }, "eth0", "192.0.2.10"],
    [
      "--iface-can-reach: the /24 outside the /25",
      { ifaceCanReach: "203.0.113.5" },
      "eth1",
      "198.51.100.7",
    ],
    [
      "--iface-can-reach: via the default route",
      { ifaceCanReach: "8.8.8.8" },
      "eth0",
      "192.0.2.10",
    ],
    [
      "--iface-can-reach after a missing --iface",
      { iface: ["eth7"], ifaceCanReach: "198.51.100.99" },
      "eth1",
      "198.51.100.7",
    ],
    [
      "--public-ip on a local interface picks it",
      { publicIP: "198.51.100.7" },
      "eth1",
      "198.51.100.7",
    ],
  ];
  for (const [why, flags, name, addr] of cases) {
    const got = pickExternalInterface(flags, table());
    assert.equal(got.name, name, why);
    assert.equal(got.ifaceAddr, addr, why);
    assert.equal(got.extAddr, flags.publicIP ?? addr, why);
  }
});

Deno.test("pickExternalInterface() fills index, MTU and IPv6, and applies --public-ip", () => {
  assert.deepEqual(pickExternalInterface({}, table()), {
    name: "eth0",
    index: 2,
    mtu: 1500,
    ifaceAddr: "192.0.2.10",
    extAddr: "192.0.2.10",
    ifaceV6Addr: "2001:db8::10",
    extV6Addr: "2001:db8::10",
  });
  assert.deepEqual(
    pickExternalInterface(
      { iface: ["eth1"], publicIP: "203.0.113.50", publicIPv6: "2001:db8::50" },
      table(),
    ),
    {
      name: "eth1",
      index: 3,
      mtu: 9000,
      ifaceAddr: "198.51.100.7",
      extAddr: "203.0.113.50",
      ifaceV6Addr: undefined,
      extV6Addr: "2001:db8::50",
    },
  );
  // a public IP that no interface holds (NAT) keeps the default interface
  const nat = pickExternalInterface({ publicIP: "203.0.113.50" }, table());
  assert.equal(nat.name, "eth0");
  assert.equal(nat.ifaceAddr, "192.0.2.10");
  assert.equal(nat.extAddr, "203.0.113.50");
});

Deno.test("pickExternalInterface() falls back to the only up interface without a default route", () => {
  const noDefault = ROUTES.filter((x) => x.prefixLen !== 0);
  const single: InterfaceInfo[] = [IFACES[0], IFACES[2], IFACES[3], IFACES[4]];
  assert.equal(pickExternalInterface({}, table(single, noDefault)).name, "eth1");
  // a default route through an unaddressed interface does not count either
  assert.equal(pickExternalInterface({}, table(single, [r("wg0", "0.0.0.0", 0)])).name, "eth1");
});

Deno.test("pickExternalInterface() errors name the options, why each missed and the interfaces", () => {
  const cases: [InterfaceFlags, InterfaceSource, string][] = [
    [
      { iface: ["eth9", "wg0", "10.9.9.9"] },
      table(),
      `no interface matches the options given (--iface eth9: no such interface; --iface wg0: the interface has no IPv4 address; --iface 10.9.9.9: no interface has this address); interfaces here: ${LISTING}`,
    ],
    [
      { ifaceRegex: ["^wl"] },
      table(),
      `no interface matches the options given (--iface-regex ^wl: matches no interface name or IPv4 address); interfaces here: ${LISTING}`,
    ],
    [
      { iface: ["eth9"], ifaceCanReach: "10.99.1.1" },
      table(),
      `no interface matches the options given (--iface eth9: no such interface; --iface-can-reach 10.99.1.1: its route goes through wg0, which has no IPv4 address); interfaces here: ${LISTING}`,
    ],
    [
      { ifaceCanReach: "8.8.8.8" },
      table(IFACES, ROUTES.filter((x) => x.prefixLen !== 0)),
      `no interface matches the options given (--iface-can-reach 8.8.8.8: no route reaches it); interfaces here: ${LISTING}`,
    ],
    [
      {},
      table(IFACES, []),
      `cannot pick the external interface: there is no default route; name it with --iface <name|ip> or --iface-can-reach <peer ip> (interfaces: ${LISTING})`,
    ],
    [
      {},
      table([], []),
      "cannot pick the external interface: there is no default route; name it with --iface <name|ip> or --iface-can-reach <peer ip> (interfaces: none)",
    ],
    [
      { ifaceCanReach: "example.com" },
      table(),
      `--iface-can-reach must be an IPv4 address: current value is "example.com"`,
    ],
    [
      { publicIP: "2001:db8::1" },
      table(),
      `--public-ip must be an IPv4 address: current value is "2001:db8::1"`,
    ],
  ];
  for (const [flags, source, message] of cases) {
    assert.throws(() => pickExternalInterface(flags, source), (e: unknown) => {
      assert.ok(e instanceof InterfaceError, String(e));
      assert.equal(e.name, "InterfaceError");
      assert.equal(e.message, message, JSON.stringify(flags));
      return true;
    });
  }
});

Deno.test("pickExternalInterface() rejects an invalid --iface-regex even when --iface matched", () => {
  for (const flags of [{ ifaceRegex: ["eth(0"] }, { iface: ["eth0"], ifaceRegex: ["[a-"] }]) {
    assert.throws(() => pickExternalInterface(flags, table()), (e: unknown) => {
      assert.ok(e instanceof InterfaceError);
      const pattern = flags.ifaceRegex[0];
      assert.ok(
        e.message.startsWith(
          `--iface-regex ${JSON.stringify(pattern)} is not a valid regular expression (`,
        ),
        e.message,
      );
      assert.ok(e.message.endsWith(`); fix the pattern, e.g. --iface-regex '^eth[0-9]+$'`));
      return true;
    });
  }
});

Deno.test("parseProcNetRoute() decodes little-endian hex, masks and metrics and skips down routes", () => {
  const text = [
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT",
    "eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0",
    "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0",
    "eth1\t00006433\t00000000\t0001\t0\t0\t5\t0000FFFF\t0\t0\t0",
    "cni0\t0005050A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0",
    "eth1\t0A00000A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0",
    "eth1\t8000000A\t00000000\t0001\t0\t0\t0\t000000FE\t0\t0\t0",
    "tun0\t0000000B\t00000000\t0000\t0\t0\t0\t000000FF\t0\t0\t0",
    "short line",
    "",
  ].join("\n") + "\n";
  const got = parseProcNetRoute(text).map((x) => ({ ...x, dst: formatIPv4(x.dst) }));
  assert.deepEqual(got, [
    { iface: "eth0", dst: "0.0.0.0", prefixLen: 0, metric: 100 },
    { iface: "eth0", dst: "192.0.2.0", prefixLen: 24, metric: 0 },
    { iface: "eth1", dst: "51.100.0.0", prefixLen: 16, metric: 5 },
    { iface: "cni0", dst: "10.5.5.0", prefixLen: 24, metric: 0 },
    { iface: "eth1", dst: "10.0.0.10", prefixLen: 32, metric: 0 },
    { iface: "eth1", dst: "10.0.0.128", prefixLen: 7, metric: 0 },
  ]);
  assert.deepEqual(parseProcNetRoute(""), []);
  assert.deepEqual(parseProcNetRoute(text.split("\n")[0]), []);
});

Deno.test("pickExternalInterface() reads routes parsed from /proc/net/route text", () => {
  const routes = parseProcNetRoute(
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
      "eth1\t00000000\t016433C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n" +
      "eth1\t006433C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
  );
  assert.equal(pickExternalInterface({}, table(IFACES, routes)).name, "eth1");
  assert.equal(
    pickExternalInterface({ ifaceCanReach: "198.51.100.1" }, table(IFACES, routes)).name,
    "eth1",
  );
});

Deno.test("preferredIPv4Order() puts static before DHCP, primary before secondary, link-local last, and drops deprecated", () => {
  const P = IFA_F_PERMANENT, S = IFA_F_SECONDARY, D = IFA_F_DEPRECATED;
  const cases: [AddressFacts[], string[]][] = [
    [[{ ip: "192.0.2.1", flags: P }, { ip: "192.0.2.2", flags: P | S }], [
      "192.0.2.1",
      "192.0.2.2",
    ]],
    // a DHCP address first, a static one after it (flannel publishes the static one)
    [[{ ip: "192.0.2.50", flags: 0 }, { ip: "192.0.2.60", flags: P | S }], [
      "192.0.2.60",
      "192.0.2.50",
    ]],
    [[{ ip: "169.254.1.1", flags: P }, { ip: "192.0.2.9", flags: 0 }], [
      "192.0.2.9",
      "169.254.1.1",
    ]],
    [[{ ip: "192.0.2.7", flags: P | D }, { ip: "192.0.2.8", flags: 0 }], ["192.0.2.8"]],
    [[{ ip: "10.0.0.2", flags: 0 }, { ip: "10.0.0.1", flags: 0 }], ["10.0.0.2", "10.0.0.1"]],
    [[], []],
  ];
  for (const [input, want] of cases) assert.deepEqual(preferredIPv4Order(input), want);
});

Deno.test("withPreferredAddresses() reorders the interfaces it has facts for, by index", () => {
  const source: InterfaceSource = {
    interfaces: () => [
      { name: "eth0", index: 2, mtu: 1500, up: true, ipv4: ["192.0.2.50", "192.0.2.60"], ipv6: [] },
      { name: "eth1", index: 3, mtu: 1500, up: true, ipv4: ["198.51.100.5"], ipv6: [] },
    ],
    routes: () => [{ iface: "eth0", dst: 0, prefixLen: 0, metric: 0 }],
  };
  const facts = new Map([[2, [
    { ip: "192.0.2.50", flags: 0 },
    { ip: "192.0.2.60", flags: IFA_F_PERMANENT | IFA_F_SECONDARY },
  ]]]);
  const ordered = withPreferredAddresses(source, facts);
  assert.deepEqual(ordered.interfaces().map((i) => i.ipv4), [
    ["192.0.2.60", "192.0.2.50"],
    ["198.51.100.5"],
  ]);
  const ext = pickExternalInterface({}, ordered);
  assert.deepEqual([ext.name, ext.ifaceAddr, ext.extAddr], ["eth0", "192.0.2.60", "192.0.2.60"]);
});
