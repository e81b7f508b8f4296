import assert from "node:assert/strict";
import * as v from "valibot";
import { foldKeys, type NetworkConfig, parseBackendOptions, parseNetworkConfig } from "./config.ts";
import { formatIPv4, formatIPv4Net, formatIPv6, formatIPv6Net } from "../core/ip.ts";
import { ConfigError } from "../core/errors.ts";

const SRC = "the network config";

/** Parse and expect a ConfigError with this exact message (after the source) and path. */
function assertConfigError(json: string, message: string, path?: string): void {
  assert.throws(() => parseNetworkConfig(json), (e: unknown) => {
    assert.ok(e instanceof ConfigError, `${json}: ${e}`);
    assert.equal(e.message, `${SRC}: ${message}`, json);
    assert.equal(e.path, path, `path for ${json}`);
    return true;
  });
}

const v4 = (c: NetworkConfig) => ({
  network: c.network && formatIPv4Net(c.network),
  subnetLen: c.subnetLen,
  subnetMin: formatIPv4(c.subnetMin),
  subnetMax: formatIPv4(c.subnetMax),
});

Deno.test("parseNetworkConfig() fills SubnetLen, SubnetMin and SubnetMax as flannel does", () => {
  const cases: [string, ReturnType<typeof v4>][] = [
    // flannel's TestConfigDefaults
    [`{ "network": "10.3.0.0/16" }`, {
      network: "10.3.0.0/16",
      subnetLen: 24,
      subnetMin: "10.3.1.0",
      subnetMax: "10.3.255.0",
    }],
    // flannel's TestConfigOverrides
    [
      `{ "Network": "10.3.0.0/16", "SubnetMin": "10.3.5.0", "SubnetMax": "10.3.8.0", "SubnetLen": 28 }`,
      {
        network: "10.3.0.0/16",
        subnetLen: 28,
        subnetMin: "10.3.5.0",
        subnetMax: "10.3.8.0",
      },
    ],
    [`{"Network":"10.0.0.0/8"}`, {
      network: "10.0.0.0/8",
      subnetLen: 24,
      subnetMin: "10.0.1.0",
      subnetMax: "10.255.255.0",
    }],
    // prefix ≤ 22 → /24
    [`{"Network":"10.5.0.0/22"}`, {
      network: "10.5.0.0/22",
      subnetLen: 24,
      subnetMin: "10.5.1.0",
      subnetMax: "10.5.3.0",
    }],
    // prefix > 22 → prefix + 2
    [`{"Network":"10.5.0.0/23"}`, {
      network: "10.5.0.0/23",
      subnetLen: 25,
      subnetMin: "10.5.0.128",
      subnetMax: "10.5.1.128",
    }],
    [`{"Network":"10.5.0.0/28"}`, {
      network: "10.5.0.0/28",
      subnetLen: 30,
      subnetMin: "10.5.0.4",
      subnetMax: "10.5.0.12",
    }],
    // host bits of Network are cleared, like Go's net.ParseCIDR
    [`{"Network":"10.5.7.0/16"}`, {
      network: "10.5.0.0/16",
      subnetLen: 24,
      subnetMin: "10.5.1.0",
      subnetMax: "10.5.255.0",
    }],
    // SubnetLen 0 and 0.0.0.0 mean "default", as in flannel
    [`{"Network":"10.5.0.0/16","SubnetLen":0,"SubnetMin":"0.0.0.0","SubnetMax":""}`, {
      network: "10.5.0.0/16",
      subnetLen: 24,
      subnetMin: "10.5.1.0",
      subnetMax: "10.5.255.0",
    }],
    // JSON null leaves a number at its default, as in Go
    [`{"Network":"10.5.0.0/16","SubnetLen":null}`, {
      network: "10.5.0.0/16",
      subnetLen: 24,
      subnetMin: "10.5.1.0",
      subnetMax: "10.5.255.0",
    }],
    [`{"Network":"10.5.0.0/16","SubnetLen":30}`, {
      network: "10.5.0.0/16",
      subnetLen: 30,
      subnetMin: "10.5.0.4",
      subnetMax: "10.5.255.252",
    }],
    // exactly four subnets is enough
    [`{"Network":"10.5.0.0/16","SubnetLen":18}`, {
      network: "10.5.0.0/16",
      subnetLen: 18,
      subnetMin: "10.5.64.0",
      subnetMax: "10.5.192.0",
    }],
    [`{"Network":"10.5.0.0/16","SubnetMin":"10.5.100.0","SubnetMax":"10.5.100.0"}`, {
      network: "10.5.0.0/16",
      subnetLen: 24,
      subnetMin: "10.5.100.0",
      subnetMax: "10.5.100.0",
    }],
  ];
  for (const [json, want] of cases) assert.deepEqual(v4(parseNetworkConfig(json)), want, json);
});

Deno.test("parseNetworkConfig() matches keys case-insensitively like Go's encoding/json", () => {
  const cases: [string, number][] = [
    [`{"network":"10.5.0.0/16","subnetlen":26}`, 26],
    [`{"NETWORK":"10.5.0.0/16","SUBNETLEN":25}`, 25],
    [`{"NeTwOrK":"10.5.0.0/16","SubnetLEN":20}`, 20],
  ];
  for (const [json, len] of cases) {
    const c = parseNetworkConfig(json);
    assert.equal(c.network && formatIPv4Net(c.network), "10.5.0.0/16", json);
    assert.equal(c.subnetLen, len, json);
  }
  // Go assigns keys in order, so the last spelling wins
  const c = parseNetworkConfig(`{"Network":"10.5.0.0/16","network":"10.6.0.0/16"}`);
  assert.equal(c.network && formatIPv4Net(c.network), "10.6.0.0/16");
  const cfg = parseNetworkConfig(
    `{"network":"10.5.0.0/16","enableipv4":true,"ENABLEIPV6":true,"ipv6network":"fd00::/48","backend":{"type":"host-gw"},"enablenftables":true}`,
  );
  assert.equal(cfg.enableIPv6, true);
  assert.equal(cfg.enableNFTables, true);
  assert.equal(cfg.backendType, "host-gw");
  assert.equal(cfg.ipv6Network && formatIPv6Net(cfg.ipv6Network), "fd00::/48");
});

Deno.test("parseNetworkConfig() defaults: EnableIPv4 true, IPv6 and nftables off, Backend udp", () => {
  const c = parseNetworkConfig(`{"Network":"10.5.0.0/16"}`);
  assert.equal(c.enableIPv4, true);
  assert.equal(c.enableIPv6, false);
  assert.equal(c.enableNFTables, false);
  assert.equal(c.backendType, "udp");
  assert.deepEqual(c.backend, {});
  assert.equal(c.ipv6Network, undefined);
  assert.equal(parseNetworkConfig(`{"Network":"10.5.0.0/16","EnableIPv4":null}`).enableIPv4, true);
  const cases: [string, string][] = [
    [`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`, "vxlan"],
    [`{"Network":"10.5.0.0/16","Backend":{"Type":"VXLAN","VNI":4}}`, "vxlan"],
    [`{"Network":"10.5.0.0/16","Backend":{"type":"host-gw"}}`, "host-gw"],
    [`{"Network":"10.5.0.0/16","Backend":{"TYPE":"udp","Port":8285}}`, "udp"],
  ];
  for (const [json, type] of cases) assert.equal(parseNetworkConfig(json).backendType, type, json);
  const kept = parseNetworkConfig(`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","vni":4}}`);
  assert.deepEqual(kept.backend, { Type: "vxlan", vni: 4 }, "Backend kept as written");
});

Deno.test("parseNetworkConfig() warns about unknown keys and still parses", () => {
  const warnings: string[] = [];
  const c = parseNetworkConfig(`{"Network":"10.5.0.0/16","Netwrok":"x","SubnetLength":22}`, {
    source: "etcd key /coreos.com/network/config",
    onWarning: (m) => warnings.push(m),
  });
  assert.equal(c.subnetLen, 24);
  assert.deepEqual(warnings, [
    `etcd key /coreos.com/network/config: unknown key "Netwrok" ignored`,
    `etcd key /coreos.com/network/config: unknown key "SubnetLength" ignored`,
  ]);
  const none: string[] = [];
  parseNetworkConfig(`{"network":"10.5.0.0/16"}`, { onWarning: (m) => none.push(m) });
  assert.deepEqual(none, []);
});

Deno.test("parseNetworkConfig() rejects flannel's invalid sizes with the field, value and fix", () => {
  const cases: [string, string, string][] = [
    [
      `{"Network":"10.5.0.0/29"}`,
      `"Network" 10.5.0.0/29 is too small: the minimum useful network prefix is /28; use a larger Network such as 10.5.0.0/28`,
      "Network",
    ],
    [
      `{"Network":"10.5.0.8/32"}`,
      `"Network" 10.5.0.8/32 is too small: the minimum useful network prefix is /28; use a larger Network such as 10.5.0.0/28`,
      "Network",
    ],
    [
      `{"Network":"10.5.0.0/16","SubnetLen":31}`,
      `"SubnetLen" must be 30 or less (each host needs room for a gateway and pods): current value is 31`,
      "SubnetLen",
    ],
    [
      `{"Network":"10.5.0.0/16","SubnetLen":40}`,
      `"SubnetLen" must be 30 or less (each host needs room for a gateway and pods): current value is 40`,
      "SubnetLen",
    ],
    [
      `{"Network":"10.5.0.0/16","SubnetLen":17}`,
      `"SubnetLen" 17 gives fewer than 4 subnets in 10.5.0.0/16: the network must be able to accommodate at least four subnets; use SubnetLen 18 or more, or a larger Network`,
      "SubnetLen",
    ],
    [
      `{"Network":"10.5.0.0/16","SubnetLen":8}`,
      `"SubnetLen" 8 gives fewer than 4 subnets in 10.5.0.0/16: the network must be able to accommodate at least four subnets; use SubnetLen 18 or more, or a larger Network`,
      "SubnetLen",
    ],
    [
      `{"Network":"10.5.0.0/29","SubnetLen":30}`,
      `"SubnetLen" 30 gives fewer than 4 subnets in 10.5.0.0/29: the network must be able to accommodate at least four subnets; use SubnetLen 31 or more, or a larger Network`,
      "SubnetLen",
    ],
  ];
  for (const [json, msg, path] of cases) assertConfigError(json, msg, path);
});

Deno.test("parseNetworkConfig() rejects SubnetMin/SubnetMax outside the Network or off a boundary", () => {
  const cases: [string, string, string][] = [
    [
      `{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}`,
      `"SubnetMin" 10.6.0.0 is not in the range of the Network 10.5.0.0/16: use an address inside it, or leave SubnetMin out for the default`,
      "SubnetMin",
    ],
    [
      `{"Network":"10.5.0.0/16","SubnetMax":"10.4.255.0"}`,
      `"SubnetMax" 10.4.255.0 is not in the range of the Network 10.5.0.0/16: use an address inside it, or leave SubnetMax out for the default`,
      "SubnetMax",
    ],
    [
      `{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.7"}`,
      `"SubnetMin" 10.5.1.7 is not on a SubnetLen (/24) boundary: use 10.5.1.0`,
      "SubnetMin",
    ],
    [
      `{"Network":"10.5.0.0/16","SubnetLen":26,"SubnetMax":"10.5.9.100"}`,
      `"SubnetMax" 10.5.9.100 is not on a SubnetLen (/26) boundary: use 10.5.9.64`,
      "SubnetMax",
    ],
    [
      `{"Network":"10.5.0.0/16","SubnetMin":"10.5.9.0","SubnetMax":"10.5.8.0"}`,
      `"SubnetMin" 10.5.9.0 is after "SubnetMax" 10.5.8.0: no subnet can be leased; make SubnetMin the lower bound and SubnetMax the upper one`,
      "SubnetMin",
    ],
    [
      `{"Network":"10.5.0.0/16","SubnetMin":"10.5.1"}`,
      `"SubnetMin" must be an IPv4 address string such as "10.5.1.0": current value is "10.5.1"`,
      "SubnetMin",
    ],
    [
      `{"Network":"10.5.0.0/16","SubnetMax":"fd00::"}`,
      `"SubnetMax" must be an IPv4 address string such as "10.5.254.0": current value is "fd00::"`,
      "SubnetMax",
    ],
  ];
  for (const [json, msg, path] of cases) assertConfigError(json, msg, path);
});

Deno.test("parseNetworkConfig() names the field, the value and the expected form for wrong JSON types", () => {
  const cases: [string, string, string | undefined][] = [
    [
      `{"Network":16}`,
      `"Network" must be a CIDR string such as "10.5.0.0/16": current value is 16`,
      "Network",
    ],
    [
      `{"Network":null}`,
      `"Network" must be a CIDR string such as "10.5.0.0/16": current value is null`,
      "Network",
    ],
    [
      `{"Network":"10.5.0.0"}`,
      `"Network" must be a CIDR string such as "10.5.0.0/16": current value is "10.5.0.0"`,
      "Network",
    ],
    [
      `{"Network":"fd00::/48"}`,
      `"Network" must be a CIDR string such as "10.5.0.0/16": current value is "fd00::/48"`,
      "Network",
    ],
    [
      `{"Network":"10.5.0.0/16","SubnetLen":"24"}`,
      `"SubnetLen" must be a whole number such as 24 (or 0 for the default): current value is "24"`,
      "SubnetLen",
    ],
    [
      `{"Network":"10.5.0.0/16","SubnetLen":24.5}`,
      `"SubnetLen" must be a whole number such as 24 (or 0 for the default): current value is 24.5`,
      "SubnetLen",
    ],
    [
      `{"Network":"10.5.0.0/16","SubnetLen":-1}`,
      `"SubnetLen" must be a whole number such as 24 (or 0 for the default): current value is -1`,
      "SubnetLen",
    ],
    [
      `{"Network":"10.5.0.0/16","SubnetMin":167837952}`,
      `"SubnetMin" must be an IPv4 address string such as "10.5.1.0": current value is 167837952`,
      "SubnetMin",
    ],
    [
      `{"Network":"10.5.0.0/16","EnableIPv4":"true"}`,
      `"EnableIPv4" must be true or false: current value is "true"`,
      "EnableIPv4",
    ],
    [
      `{"Network":"10.5.0.0/16","enableipv6":1}`,
      `"EnableIPv6" must be true or false: current value is 1`,
      "EnableIPv6",
    ],
    [
      `{"Network":"10.5.0.0/16","EnableNFTables":"yes"}`,
      `"EnableNFTables" must be true or false: current value is "yes"`,
      "EnableNFTables",
    ],
    [
      `{"Network":"10.5.0.0/16","Backend":"vxlan"}`,
      `"Backend" must be an object such as {"Type": "vxlan"}: current value is "vxlan"`,
      "Backend",
    ],
    [
      `{"Network":"10.5.0.0/16","Backend":[]}`,
      `"Backend" must be an object such as {"Type": "vxlan"}: current value is []`,
      "Backend",
    ],
    [
      `{"Network":"10.5.0.0/16","Backend":{}}`,
      `"Backend.Type" is missing: name the backend, e.g. "Backend": {"Type": "vxlan"} (or leave Backend out for udp)`,
      "Backend.Type",
    ],
    [
      `{"Network":"10.5.0.0/16","Backend":{"Type":""}}`,
      `"Backend.Type" is missing: name the backend, e.g. "Backend": {"Type": "vxlan"} (or leave Backend out for udp)`,
      "Backend.Type",
    ],
    [
      `{"Network":"10.5.0.0/16","Backend":{"Type":1}}`,
      `"Backend.Type" must name a backend (vxlan, host-gw, udp, alloc): current value is 1`,
      "Backend.Type",
    ],
    [
      `{"Network":"10.5.0.0/16","IPv6SubnetLen":"64","EnableIPv6":true,"IPv6Network":"fd00::/48"}`,
      `"IPv6SubnetLen" must be a whole number such as 64 (or 0 for the default): current value is "64"`,
      "IPv6SubnetLen",
    ],
    [
      `{}`,
      `"Network" is missing: set it to the cluster's IPv4 range, e.g. "Network": "10.5.0.0/16"`,
      "Network",
    ],
    [
      `{"Network":""}`,
      `"Network" is missing: set it to the cluster's IPv4 range, e.g. "Network": "10.5.0.0/16"`,
      "Network",
    ],
    [
      `{"EnableIPv4":false}`,
      `"EnableIPv4" and "EnableIPv6" are both false: no address family is left to lease; set "EnableIPv4": true with "Network", or "EnableIPv6": true with "IPv6Network" (or both for dual stack)`,
      "EnableIPv4",
    ],
    [
      `{"Network":"10.5.0.0/16","EnableIPv4":false,"EnableIPv6":false}`,
      `"EnableIPv4" and "EnableIPv6" are both false: no address family is left to lease; set "EnableIPv4": true with "Network", or "EnableIPv6": true with "IPv6Network" (or both for dual stack)`,
      "EnableIPv4",
    ],
    [
      // flannel: Network.Empty() is "please define a correct Network parameter"
      `{"Network":"0.0.0.0/0"}`,
      `"Network" 0.0.0.0/0 is the whole IPv4 space, which flannel reads as no network at all: set the cluster's range, e.g. "Network": "10.5.0.0/16"`,
      "Network",
    ],
    [
      `[1,2]`,
      `must be a JSON object such as {"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}: current value is [1,2]`,
      undefined,
    ],
    [
      `null`,
      `must be a JSON object such as {"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}: current value is null`,
      undefined,
    ],
    [
      `"10.5.0.0/16"`,
      `must be a JSON object such as {"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}: current value is "10.5.0.0/16"`,
      undefined,
    ],
  ];
  for (const [json, msg, path] of cases) assertConfigError(json, msg, path);
});

Deno.test("parseNetworkConfig() says how to write valid JSON when the text is not JSON", () => {
  for (const text of ["", "{Network: 10.5.0.0/16}", `{"Network":"10.5.0.0/16",}`]) {
    assert.throws(
      () => parseNetworkConfig(text, { source: "/etc/kube-flannel/net-conf.json" }),
      (e) => {
        assert.ok(e instanceof ConfigError);
        assert.match(
          e.message,
          /^\/etc\/kube-flannel\/net-conf\.json: is not valid JSON \(.+\); write it as a JSON object such as \{"Network": "10\.5\.0\.0\/16", "Backend": \{"Type": "vxlan"\}\}$/,
        );
        assert.equal(e.path, undefined);
        return true;
      },
    );
  }
});

Deno.test("parseNetworkConfig() applies flannel's IPv6 defaults and overrides", () => {
  const six = (c: NetworkConfig) => [
    c.ipv6Network && formatIPv6Net(c.ipv6Network),
    c.ipv6SubnetLen,
    c.ipv6SubnetMin !== undefined && formatIPv6(c.ipv6SubnetMin),
    c.ipv6SubnetMax !== undefined && formatIPv6(c.ipv6SubnetMax),
  ];
  const cases: [string, (string | number | false | undefined)[]][] = [
    // flannel's TestIPv6ConfigDefaults
    [`{ "enableIPv6": true, "ipv6Network": "fc00::/48", "enableIPv4": false }`, [
      "fc00::/48",
      64,
      "fc00:0:0:1::",
      "fc00:0:0:ffff::",
    ]],
    // flannel's TestIPv6ConfigOverrides
    [
      `{ "EnableIPv6": true, "IPv6Network": "fc00::/48", "IPv6SubnetMin": "fc00:0:0:1::", "IPv6SubnetMax": "fc00:0:0:f::", "IPv6SubnetLen": 124, "enableIPv4": false }`,
      ["fc00::/48", 124, "fc00:0:0:1::", "fc00:0:0:f::"],
    ],
    [`{"EnableIPv6":true,"IPv6Network":"fd00:10:5::/62","EnableIPv4":false}`, [
      "fd00:10:5::/62",
      64,
      "fd00:10:5:1::",
      "fd00:10:5:3::",
    ]],
    [`{"EnableIPv6":true,"IPv6Network":"fd00:10:5::/63","EnableIPv4":false}`, [
      "fd00:10:5::/63",
      65,
      "fd00:10:5:0:8000::",
      "fd00:10:5:1:8000::",
    ]],
    [`{"EnableIPv6":true,"IPv6Network":"fd00::/124","EnableIPv4":false}`, [
      "fd00::/124",
      126,
      "fd00::4",
      "fd00::c",
    ]],
  ];
  for (const [json, want] of cases) {
    const c = parseNetworkConfig(json);
    assert.deepEqual(six(c), want, json);
    assert.equal(c.enableIPv4, false);
    assert.equal(c.network, undefined);
  }
  const dual = parseNetworkConfig(
    `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:12:13::/48","Backend":{"Type":"vxlan"}}`,
  );
  assert.equal(dual.enableIPv4, true);
  assert.equal(dual.subnetLen, 24);
  assert.deepEqual(six(dual), ["fd00:12:13::/48", 64, "fd00:12:13:1::", "fd00:12:13:ffff::"]);
  // IPv4 keys are ignored while EnableIPv4 is false (flannel checks only their syntax)
  const v6only = parseNetworkConfig(
    `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","Network":"10.5.0.0/30","SubnetLen":99}`,
  );
  assert.deepEqual(
    [v6only.network, v6only.subnetLen, v6only.subnetMin, v6only.subnetMax],
    [undefined, 0, 0, 0],
  );
  // IPv6 keys are ignored while EnableIPv6 is false
  const off = parseNetworkConfig(`{"Network":"10.5.0.0/16","IPv6Network":"fd00::/48"}`);
  assert.equal(off.enableIPv6, false);
  assert.equal(off.ipv6Network, undefined);
});

Deno.test("parseNetworkConfig() rejects invalid IPv6 settings with the field, value and fix", () => {
  const base = `"EnableIPv6":true,"EnableIPv4":false`;
  const cases: [string, string, string][] = [
    [
      `{${base}}`,
      `"IPv6Network" is missing while EnableIPv6 is true: set it, e.g. "IPv6Network": "fd00:10:5::/48"`,
      "IPv6Network",
    ],
    [
      // flannel: IPv6Network.Empty() is "please define a correct IPv6Network parameter"
      `{${base},"IPv6Network":"::/0"}`,
      `"IPv6Network" ::/0 is the whole IPv6 space, which flannel reads as no network at all: set the cluster's range, e.g. "IPv6Network": "fd00:10:5::/48"`,
      "IPv6Network",
    ],
    [
      // Go's json.Unmarshal fails on it even with IPv4 disabled
      `{${base},"IPv6Network":"fd00::/48","Network":"bogus"}`,
      `"Network" must be a CIDR string such as "10.5.0.0/16": current value is "bogus"`,
      "Network",
    ],
    [
      `{"Network":"10.5.0.0/16","IPv6Network":"fd00::/48","IPv6SubnetMax":"nope"}`,
      `"IPv6SubnetMax" must be an IPv6 address string: current value is "nope"`,
      "IPv6SubnetMax",
    ],
    [
      // a dual-stack config needs both networks
      `{"Network":"10.5.0.0/16","EnableIPv6":true}`,
      `"IPv6Network" is missing while EnableIPv6 is true: set it, e.g. "IPv6Network": "fd00:10:5::/48"`,
      "IPv6Network",
    ],
    [
      `{"EnableIPv6":true,"IPv6Network":"fd00::/48"}`,
      `"Network" is missing: set it to the cluster's IPv4 range, e.g. "Network": "10.5.0.0/16"`,
      "Network",
    ],
    [
      `{${base},"IPv6Network":"10.5.0.0/16"}`,
      `"IPv6Network" must be a CIDR string such as "fd00:10:5::/48": current value is "10.5.0.0/16"`,
      "IPv6Network",
    ],
    [
      `{${base},"IPv6Network":"fd00::/125"}`,
      `"IPv6Network" fd00::/125 is too small: the minimum useful network prefix is /124; use a larger IPv6Network`,
      "IPv6Network",
    ],
    [
      `{${base},"IPv6Network":"fd00::/48","IPv6SubnetLen":127}`,
      `"IPv6SubnetLen" must be 126 or less (each host needs room for a gateway and pods): current value is 127`,
      "IPv6SubnetLen",
    ],
    [
      `{${base},"IPv6Network":"fd00::/48","IPv6SubnetLen":49}`,
      `"IPv6SubnetLen" 49 gives fewer than 4 subnets in fd00::/48: the network must be able to accommodate at least four subnets; use IPv6SubnetLen 50 or more, or a larger IPv6Network`,
      "IPv6SubnetLen",
    ],
    [
      `{${base},"IPv6Network":"fd00::/48","IPv6SubnetMin":"fd01::"}`,
      `"IPv6SubnetMin" fd01:: is not in the range of the IPv6Network fd00::/48: use an address inside it, or leave IPv6SubnetMin out for the default`,
      "IPv6SubnetMin",
    ],
    [
      `{${base},"IPv6Network":"fd00::/48","IPv6SubnetMax":"fd00:0:0:5::1"}`,
      `"IPv6SubnetMax" fd00:0:0:5::1 is not on an IPv6SubnetLen (/64) boundary: use fd00:0:0:5::`,
      "IPv6SubnetMax",
    ],
    [
      `{${base},"IPv6Network":"fd00::/48","IPv6SubnetMin":"fd00:0:0:9::","IPv6SubnetMax":"fd00:0:0:5::"}`,
      `"IPv6SubnetMin" fd00:0:0:9:: is after "IPv6SubnetMax" fd00:0:0:5::: no subnet can be leased; make IPv6SubnetMin the lower bound and IPv6SubnetMax the upper one`,
      "IPv6SubnetMin",
    ],
    [
      `{${base},"IPv6Network":"fd00::/48","IPv6SubnetMin":"fd00::g"}`,
      `"IPv6SubnetMin" must be an IPv6 address string: current value is "fd00::g"`,
      "IPv6SubnetMin",
    ],
  ];
  for (const [json, msg, path] of cases) assertConfigError(json, msg, path);
});

Deno.test("foldKeys() maps exact and case-folded keys and lists unknown ones", () => {
  const cases: [Record<string, unknown>, Record<string, unknown>, string[]][] = [
    [{ VNI: 1, Port: 2 }, { VNI: 1, Port: 2 }, []],
    [{ vni: 1, PORT: 2 }, { VNI: 1, Port: 2 }, []],
    [{ vni: 1, VNI: 2 }, { VNI: 2 }, []],
    [{ VNI: 2, vni: 1 }, { VNI: 1 }, []],
    [{ Vni: 1, Extra: true, "": 0 }, { VNI: 1 }, ["Extra", ""]],
    [{}, {}, []],
  ];
  for (const [obj, values, unknown] of cases) {
    assert.deepEqual(
      foldKeys(obj, ["VNI", "Port"] as const),
      { values, unknown },
      JSON.stringify(obj),
    );
  }
});

const VxlanLike = v.object({
  VNI: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(16777215)), 1),
  Port: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(65535)), 0),
  DirectRouting: v.optional(v.boolean(), false),
});

const withBackend = (backend: string) =>
  parseNetworkConfig(`{"Network":"10.5.0.0/16","Backend":${backend}}`);

Deno.test("parseBackendOptions() reads Backend keys case-insensitively through a valibot schema", () => {
  const cases: [string, v.InferOutput<typeof VxlanLike>][] = [
    [`{"Type":"vxlan"}`, { VNI: 1, Port: 0, DirectRouting: false }],
    [`{"Type":"vxlan","VNI":4,"Port":4789}`, { VNI: 4, Port: 4789, DirectRouting: false }],
    [`{"type":"vxlan","vni":7,"directrouting":true}`, { VNI: 7, Port: 0, DirectRouting: true }],
    [`{"Type":"vxlan","VNI":2,"Unknown":"kept out"}`, { VNI: 2, Port: 0, DirectRouting: false }],
  ];
  for (const [backend, want] of cases) {
    assert.deepEqual(parseBackendOptions(withBackend(backend), VxlanLike), want, backend);
  }
});

Deno.test("parseBackendOptions() names Backend.<Key>, the backend and the value on bad options", () => {
  const cases: [string, string, RegExp][] = [
    [`{"Type":"vxlan","VNI":"1"}`, "Backend.VNI", /current value is "1"$/],
    [`{"Type":"vxlan","vni":0}`, "Backend.VNI", /current value is 0$/],
    [`{"Type":"vxlan","Port":70000}`, "Backend.Port", /current value is 70000$/],
    [`{"Type":"vxlan","directRouting":"yes"}`, "Backend.DirectRouting", /current value is "yes"$/],
  ];
  for (const [backend, path, value] of cases) {
    assert.throws(
      () => parseBackendOptions(withBackend(backend), VxlanLike, "net-conf.json"),
      (e) => {
        assert.ok(e instanceof ConfigError, backend);
        assert.equal(e.path, path);
        assert.ok(
          e.message.startsWith(`net-conf.json: "${path}" for backend vxlan is invalid (`),
          e.message,
        );
        assert.match(e.message, value);
        return true;
      },
    );
  }
});

// Found by lease/config_fuzz_test.ts: the message quoted the whole value, so
// a 4 MiB string made a 4 MiB error (and log line).
Deno.test("parseNetworkConfig() quotes a huge value in part", () => {
  for (
    const text of [
      JSON.stringify("a".repeat(2000)),
      `{"Network":"10.5.0.0/16","EnableIPv4":${JSON.stringify("a".repeat(2000))}}`,
      `{"Network":"10.5.0.0/16","Backend":${"[".repeat(1000)}1${"]".repeat(1000)}}`,
      // found again after main's IPv6 keys came in (counterexample shrunk to 2 000 a's)
      `{"Network":${JSON.stringify("a".repeat(2000))}}`,
      `{"Network":"10.5.0.0/16","IPv6Network":${JSON.stringify("a".repeat(2000))}}`,
      `{"Network":"10.5.0.0/16","IPv6SubnetMin":${JSON.stringify("a".repeat(2000))}}`,
    ]
  ) {
    assert.throws(() => parseNetworkConfig(text), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.ok(e.message.length < 400, `${e.message.length} characters: ${e.message}`);
      assert.match(e.message, /current value is .*… \(\d+ characters\)$/);
      return true;
    });
  }
});

Deno.test("parseNetworkConfig() warns about ten unknown keys one by one, then counts the rest", () => {
  const keys = Array.from({ length: 1000 }, (_, i) => `"k${i}":1`).join(",");
  const warnings: string[] = [];
  parseNetworkConfig(`{"Network":"10.5.0.0/16",${keys}}`, { onWarning: (m) => warnings.push(m) });
  assert.equal(warnings.length, 11);
  assert.equal(warnings[0], `${SRC}: unknown key "k0" ignored`);
  assert.equal(warnings[10], `${SRC}: 990 more unknown keys ignored`);
});
