// Interface selection against table sources: no system access.
import assert from "node:assert/strict";
import { formatIPv4, formatIPv6, parseIPv6 } from "../core/ip.ts";
import {
  type AddressFacts,
  type AddressFamilies,
  type ExternalInterface,
  IFA_F_DEPRECATED,
  IFA_F_PERMANENT,
  IFA_F_SECONDARY,
  InterfaceError,
  type InterfaceFlags,
  type InterfaceInfo,
  type InterfaceSource,
  parseProcNetIfInet6,
  parseProcNetIPv6Route,
  parseProcNetRoute,
  pickExternalInterface,
  preferredIPv4Order,
  type Route6Entry,
  type RouteEntry,
  usableIPv6,
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
      `--iface-can-reach must be an IPv4 or IPv6 address: current value is "example.com"`,
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

// ---------------------------------------------------------------------------
// IPv6: dual-stack and IPv6-only networks

const DUAL: AddressFamilies = { ipv4: true, ipv6: true };
const V6: AddressFamilies = { ipv4: false, ipv6: true };

const IFACES6: InterfaceInfo[] = [
  { name: "lo", index: 1, mtu: 65536, up: true, ipv4: ["127.0.0.1"], ipv6: [] },
  {
    name: "eth0",
    index: 2,
    mtu: 1500,
    up: true,
    ipv4: ["192.0.2.10"],
    ipv6: ["fd00:1::10", "fd00:1::11"],
  },
  { name: "eth1", index: 3, mtu: 9000, up: true, ipv4: ["198.51.100.7"], ipv6: [] },
  { name: "eth2", index: 4, mtu: 1450, up: true, ipv4: [], ipv6: ["2001:db8:2::7"] },
  {
    name: "eth3",
    index: 5,
    mtu: 1500,
    up: true,
    ipv4: ["203.0.113.9"],
    ipv6: ["2001:db8:3::9"],
  },
];

const r6 = (iface: string, dst: string, prefixLen: number, metric = 0): Route6Entry => ({
  iface,
  dst: parseIPv6(dst),
  prefixLen,
  metric,
});

const ROUTES6: Route6Entry[] = [
  r6("eth2", "::", 0, 1024),
  r6("eth0", "::", 0, 100),
  r6("eth0", "fd00:1::", 64, 256),
  r6("eth2", "2001:db8:2::", 64, 256),
  r6("eth3", "2001:db8:3::", 64, 256),
  r6("eth3", "2001:db8:3:8000::", 65, 256),
  r6("eth2", "2001:db8:99::", 48, 256),
];

const table6 = (interfaces = IFACES6, routes = ROUTES, routes6 = ROUTES6): InterfaceSource => ({
  interfaces: () => interfaces,
  routes: () => routes,
  routes6: () => routes6,
});

const pick6 = (flags: InterfaceFlags, source = table6()) => pickExternalInterface(flags, source);

Deno.test("pickExternalInterface() picks both families in a dual-stack network, as flannel", () => {
  const cases: [string, InterfaceFlags, Partial<ExternalInterface>][] = [
    [
      "default: both default routes leave through eth0",
      {},
      {
        name: "eth0",
        ifaceAddr: "192.0.2.10",
        extAddr: "192.0.2.10",
        ifaceV6Addr: "fd00:1::10",
        extV6Addr: "fd00:1::10",
      },
    ],
    [
      "--iface by name takes the first global IPv6 address",
      { iface: ["eth3"] },
      { name: "eth3", ifaceAddr: "203.0.113.9", ifaceV6Addr: "2001:db8:3::9" },
    ],
    [
      "--iface by IPv6 address pins that address",
      { iface: ["fd00:1::11"] },
      { name: "eth0", ifaceAddr: "192.0.2.10", ifaceV6Addr: "fd00:1::11" },
    ],
    [
      "--iface by IPv6 address in another spelling",
      { iface: ["FD00:1:0::11"] },
      { name: "eth0", ifaceV6Addr: "FD00:1:0::11" },
    ],
    [
      "--iface by IPv4 with --public-ipv6 on the same interface: that is its IPv6 address",
      { iface: ["192.0.2.10"], publicIPv6: "fd00:1::11" },
      { name: "eth0", ifaceAddr: "192.0.2.10", ifaceV6Addr: "fd00:1::11", extV6Addr: "fd00:1::11" },
    ],
    [
      "--public-ipv6 not on the interface (NAT66): the interface keeps its own",
      { iface: ["eth0"], publicIPv6: "2001:db8:ff::1" },
      { name: "eth0", ifaceV6Addr: "fd00:1::10", extV6Addr: "2001:db8:ff::1" },
    ],
    [
      "--iface skips an interface without IPv6",
      { iface: ["eth1", "eth3"] },
      { name: "eth3" },
    ],
    [
      "--iface-regex needs an IPv4 and an IPv6 address of one interface to match",
      { ifaceRegex: ["^(203\\.|2001:db8:3:)"] },
      { name: "eth3", ifaceAddr: "203.0.113.9", ifaceV6Addr: "2001:db8:3::9" },
    ],
    [
      "--iface-regex: an IPv6-only match falls back to names",
      { ifaceRegex: ["^2001:db8:2:|^eth0$"] },
      { name: "eth0", ifaceV6Addr: "fd00:1::10" },
    ],
    [
      "--iface-can-reach an IPv6 peer: longest prefix",
      { ifaceCanReach: "2001:db8:3:8000::1" },
      { name: "eth3", ifaceAddr: "203.0.113.9", ifaceV6Addr: "2001:db8:3::9" },
    ],
    [
      "--iface-can-reach an IPv4 peer",
      { ifaceCanReach: "198.51.100.99", iface: ["eth9"] },
      { name: "eth3" },
    ],
    [
      "--public-ip on a local interface picks it",
      { publicIP: "203.0.113.9" },
      { name: "eth3", ifaceAddr: "203.0.113.9", ifaceV6Addr: "2001:db8:3::9" },
    ],
    [
      "--public-ipv6 on a local interface picks it",
      { publicIPv6: "2001:db8:3::9" },
      { name: "eth3", ifaceV6Addr: "2001:db8:3::9", extV6Addr: "2001:db8:3::9" },
    ],
  ];
  const routes4 = [...ROUTES, r("eth3", "198.51.100.64", 26)];
  for (const [why, flags, want] of cases) {
    const got = pick6({ ...flags, families: DUAL }, table6(IFACES6, routes4));
    for (const [k, v] of Object.entries(want)) {
      assert.equal(got[k as keyof ExternalInterface], v, `${why}: ${k}`);
    }
  }
});

Deno.test("pickExternalInterface() in an IPv6-only network uses IPv6 alone", () => {
  const cases: [string, InterfaceFlags, ExternalInterface][] = [
    [
      "default: the IPv6 default route with the lowest metric",
      {},
      {
        name: "eth0",
        index: 2,
        mtu: 1500,
        ifaceAddr: "",
        extAddr: "",
        ifaceV6Addr: "fd00:1::10",
        extV6Addr: "fd00:1::10",
      },
    ],
    [
      "an interface without IPv4 is fine; --public-ip is ignored",
      { iface: ["eth2"], publicIP: "192.0.2.99" },
      {
        name: "eth2",
        index: 4,
        mtu: 1450,
        ifaceAddr: "",
        extAddr: "",
        ifaceV6Addr: "2001:db8:2::7",
        extV6Addr: "2001:db8:2::7",
      },
    ],
    [
      "--iface-regex on IPv6 addresses",
      { ifaceRegex: ["^2001:db8:2:"], publicIPv6: "2001:db8:ff::2" },
      {
        name: "eth2",
        index: 4,
        mtu: 1450,
        ifaceAddr: "",
        extAddr: "",
        ifaceV6Addr: "2001:db8:2::7",
        extV6Addr: "2001:db8:ff::2",
      },
    ],
    [
      "--iface-can-reach an IPv6 peer",
      { ifaceCanReach: "2001:db8:99::5" },
      {
        name: "eth2",
        index: 4,
        mtu: 1450,
        ifaceAddr: "",
        extAddr: "",
        ifaceV6Addr: "2001:db8:2::7",
        extV6Addr: "2001:db8:2::7",
      },
    ],
  ];
  for (const [why, flags, want] of cases) {
    assert.deepEqual(pick6({ ...flags, families: V6 }), want, why);
  }
  // without an IPv6 default route, the only usable up interface
  const lone = [IFACES6[0], IFACES6[2], IFACES6[3]];
  assert.equal(pick6({ families: V6 }, table6(lone, [], [])).name, "eth2");
});

Deno.test("pickExternalInterface() IPv6 errors name the flag, the value and the fix", () => {
  const cases: [InterfaceFlags, InterfaceSource, string][] = [
    [
      { families: DUAL, iface: ["eth1", "eth2"] },
      table6(),
      "no interface matches the options given (--iface eth1: the interface has no global IPv6 address; " +
      "--iface eth2: the interface has no IPv4 address); interfaces here: lo (127.0.0.1), " +
      "eth0 (192.0.2.10, fd00:1::10, fd00:1::11), eth1 (198.51.100.7), eth2 (2001:db8:2::7), " +
      "eth3 (203.0.113.9, 2001:db8:3::9)",
    ],
    [
      { families: V6, iface: ["fd00:9::1", "198.51.100.7"] },
      table6(),
      "no interface matches the options given (--iface fd00:9::1: no interface has this address; " +
      "--iface 198.51.100.7: the interface eth1 has no global IPv6 address); interfaces here: lo, " +
      "eth0 (fd00:1::10, fd00:1::11), eth1, eth2 (2001:db8:2::7), eth3 (2001:db8:3::9)",
    ],
    [
      { families: V6, ifaceRegex: ["^192\\."] },
      table6(),
      "no interface matches the options given (--iface-regex ^192\\.: matches no interface name or IPv6 address); " +
      "interfaces here: lo, eth0 (fd00:1::10, fd00:1::11), eth1, eth2 (2001:db8:2::7), eth3 (2001:db8:3::9)",
    ],
    [
      { families: DUAL, ifaceRegex: ["^2001:db8:2:"] },
      table6(),
      "no interface matches the options given (--iface-regex ^2001:db8:2:: matches no interface name or IPv4 and IPv6 address pair); " +
      "interfaces here: lo (127.0.0.1), eth0 (192.0.2.10, fd00:1::10, fd00:1::11), eth1 (198.51.100.7), " +
      "eth2 (2001:db8:2::7), eth3 (203.0.113.9, 2001:db8:3::9)",
    ],
    [
      { families: DUAL, ifaceCanReach: "2001:db8:99::1" },
      table6(),
      "no interface matches the options given (--iface-can-reach 2001:db8:99::1: its route goes through eth2, which has no IPv4 address); " +
      "interfaces here: lo (127.0.0.1), eth0 (192.0.2.10, fd00:1::10, fd00:1::11), eth1 (198.51.100.7), " +
      "eth2 (2001:db8:2::7), eth3 (203.0.113.9, 2001:db8:3::9)",
    ],
    [
      { families: V6, ifaceCanReach: "fd77::1" },
      table6(IFACES6, ROUTES, ROUTES6.filter((x) => x.prefixLen !== 0)),
      "no interface matches the options given (--iface-can-reach fd77::1: no route reaches it); " +
      "interfaces here: lo, eth0 (fd00:1::10, fd00:1::11), eth1, eth2 (2001:db8:2::7), eth3 (2001:db8:3::9)",
    ],
    [
      { families: DUAL },
      table6(IFACES6, ROUTES, [r6("eth3", "::", 0)]),
      "cannot pick the external interface: the IPv4 default route leaves through eth0 but the IPv6 one through eth3; " +
      "a dual-stack host needs one interface for both: name it with --iface <name>",
    ],
    [
      { families: V6 },
      table6(IFACES6, ROUTES, []),
      "cannot pick the external interface: there is no IPv6 default route; name it with --iface <name|ip> or " +
      "--iface-can-reach <peer ip> (interfaces: lo, eth0 (fd00:1::10, fd00:1::11), eth1, eth2 (2001:db8:2::7), eth3 (2001:db8:3::9))",
    ],
    [
      { families: DUAL },
      table6(IFACES6, [r("eth1", "0.0.0.0", 0)], []),
      "cannot pick the external interface: the default route leaves through eth1, which has no global IPv6 address; " +
      "name the interface with --iface <name|ip> or --iface-can-reach <peer ip> (interfaces: lo (127.0.0.1), " +
      "eth0 (192.0.2.10, fd00:1::10, fd00:1::11), eth1 (198.51.100.7), eth2 (2001:db8:2::7), eth3 (203.0.113.9, 2001:db8:3::9))",
    ],
    [
      { families: DUAL, publicIPv6: "fd00::g" },
      table6(),
      `--public-ipv6 must be an IPv6 address: current value is "fd00::g"`,
    ],
    [
      { families: V6, publicIPv6: "192.0.2.1" },
      table6(),
      `--public-ipv6 must be an IPv6 address: current value is "192.0.2.1"`,
    ],
    [
      { families: { ipv4: false, ipv6: false } },
      table6(),
      "cannot pick the external interface: neither IPv4 nor IPv6 is enabled; enable one in the network config",
    ],
  ];
  for (const [flags, source, message] of cases) {
    assert.throws(() => pickExternalInterface(flags, source), (e: unknown) => {
      assert.ok(e instanceof InterfaceError, String(e));
      assert.equal(e.message, message, JSON.stringify(flags));
      return true;
    });
  }
});

Deno.test("pickExternalInterface() with explicit IPv4 only leaves IPv6 out", () => {
  const got = pick6({ families: { ipv4: true, ipv6: false }, publicIPv6: "2001:db8::1" });
  assert.equal(got.name, "eth0");
  assert.equal(got.ifaceV6Addr, undefined);
  assert.equal(got.extV6Addr, undefined);
  // while the default (families not given) fills in what the interface has
  assert.equal(pick6({}).ifaceV6Addr, "fd00:1::10");
});

Deno.test("parseProcNetIPv6Route() keeps up unicast routes and drops local and reject routes", () => {
  // captured in a namespace: veth0 with fd00:1::10/64 and 2001:db8::5/64, a default route via
  // fd00:1::1 metric 50 and 2001:db8:9::/48 via fd00:1::2
  const text =
    `20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001    veth0
20010db8000900000000000000000000 30 00000000000000000000000000000000 00 fd000001000000000000000000000002 00000400 00000001 00000000 00000003    veth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001    veth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000001000000000000000000000001 00000032 00000001 00000000 00000003    veth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000003 00000000 80200001       lo
fd000001000000000000000000000010 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001    veth0
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000003 00000000 00000001    veth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
`;
  const got = parseProcNetIPv6Route(text).map((x) => ({ ...x, dst: formatIPv6(x.dst) }));
  assert.deepEqual(got, [
    { iface: "veth0", dst: "2001:db8::", prefixLen: 64, metric: 256 },
    { iface: "veth0", dst: "2001:db8:9::", prefixLen: 48, metric: 1024 },
    { iface: "veth0", dst: "fe80::", prefixLen: 64, metric: 256 },
    { iface: "veth0", dst: "::", prefixLen: 0, metric: 50 },
    { iface: "veth0", dst: "ff00::", prefixLen: 8, metric: 256 },
  ]);
  assert.deepEqual(parseProcNetIPv6Route(""), []);
});

Deno.test("usableIPv6() orders addresses as flannel's compareAddrs and drops unusable ones", () => {
  // flags: 0x80 permanent, 0x01 temporary, 0x20 deprecated, 0x40 tentative, 0x08 dadfailed
  const text = [
    "fe80000000000000cc063ffffe93fe59 03 40 20 80    eth0", // link-local
    "20010db8000000000000000000000001 03 40 00 00    eth0", // autoconfigured (SLAAC)
    "20010db8000000000000000000000002 03 40 00 01    eth0", // temporary (privacy)
    "20010db8000000000000000000000005 03 40 00 a0    eth0", // permanent but deprecated
    "fd000001000000000000000000000010 03 40 00 80    eth0", // permanent ULA
    "fd000001000000000000000000000011 03 40 00 c0    eth0", // tentative
    "fd000001000000000000000000000012 03 40 00 88    eth0", // DAD failed
    "20010db8000000000000000000000003 03 40 00 82    eth0", // permanent, nodad
    "00000000000000000000000000000001 01 80 10 80       lo", // host scope
    "garbage",
  ].join("\n");
  const entries = parseProcNetIfInet6(text);
  assert.equal(entries.length, 9);
  assert.deepEqual(entries[1], {
    iface: "eth0",
    address: "2001:db8::1",
    prefixLen: 64,
    scope: 0,
    flags: 0,
  });
  assert.deepEqual(usableIPv6(entries.filter((e) => e.iface === "eth0")), [
    "fd00:1::10",
    "2001:db8::3",
    "2001:db8::1",
    "2001:db8::2",
  ]);
  assert.deepEqual(usableIPv6(entries.filter((e) => e.iface === "lo")), []);
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
