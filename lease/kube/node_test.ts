import assert from "node:assert/strict";
import * as v from "valibot";
import { parseNetworkConfig } from "../config.ts";
import { formatIPv4Net, formatIPv6Net, parseIPv6Net } from "../../core/ip.ts";
import {
  annotationKeys,
  annotationUpdate,
  type KubeNode,
  KubeNodeSchema,
  networkAvailablePatch,
  nodeToLease,
  parseKubeNode,
  podCidrsOf,
} from "./node.ts";
import { type Lease, type LeaseAttrs } from "../types.ts";
import { ConfigError } from "../../core/errors.ts";

const keys = annotationKeys();
const A = "flannel.alpha.coreos.com/";
const v4config = parseNetworkConfig('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}');
const dualConfig = parseNetworkConfig(
  '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:5::/48","Backend":{"Type":"vxlan"}}',
);
const v6Config = parseNetworkConfig(
  '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:5::/48","Backend":{"Type":"vxlan"}}',
);

function node(
  podCIDRs: string[] | undefined,
  annotations: Record<string, string> = {},
  podCIDR?: string,
): KubeNode {
  return {
    metadata: { name: "n1", annotations },
    spec: { ...(podCIDRs ? { podCIDRs } : {}), ...(podCIDR ? { podCIDR } : {}) },
  };
}

const managed = (extra: Record<string, string> = {}) => ({
  [A + "kube-subnet-manager"]: "true",
  [A + "public-ip"]: "192.0.2.1",
  [A + "backend-type"]: "vxlan",
  [A + "backend-data"]: '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}',
  ...extra,
});

Deno.test("annotationKeys() follows flannel's prefix rules", () => {
  const table: [string, string][] = [
    ["flannel.alpha.coreos.com", "flannel.alpha.coreos.com/public-ip"],
    ["example.com/weft", "example.com/weft-public-ip"],
    ["example.com/weft-", "example.com/weft-public-ip"],
    ["example.com/", "example.com/public-ip"],
  ];
  for (const [prefix, want] of table) assert.equal(annotationKeys(prefix).publicIP, want, prefix);
  assert.equal(keys.nodePublicIP, A + "node-public-ip");
  assert.equal(keys.publicIPOverwrite, A + "public-ip-overwrite");
  assert.equal(keys.subnetKubeManaged, A + "kube-subnet-manager");
});

Deno.test("annotationKeys() rejects prefixes Kubernetes would reject", () => {
  for (const bad of ["a/b/c", "NoDots", "UPPER.case.com", "example.com/Bad Name"]) {
    assert.throws(() => annotationKeys(bad), (e: Error) => e instanceof ConfigError, bad);
  }
});

Deno.test("podCidrsOf() reads podCIDRs by family, falling back to podCIDR", () => {
  const ok = podCidrsOf(node(["10.5.1.0/24", "fd00:10:5:1::/64"]));
  assert.ok(typeof ok !== "string");
  assert.equal(formatIPv4Net(ok.v4!), "10.5.1.0/24");
  assert.equal(formatIPv6Net(ok.v6!), "fd00:10:5:1::/64");
  const legacy = podCidrsOf(node(undefined, {}, "10.5.7.0/24"));
  assert.ok(typeof legacy !== "string");
  assert.equal(formatIPv4Net(legacy.v4!), "10.5.7.0/24");
  const none = podCidrsOf(node(undefined));
  assert.ok(typeof none !== "string" && !none.v4 && !none.v6);
});

Deno.test("podCidrsOf() explains malformed podCIDRs", () => {
  const table: [string[], RegExp][] = [
    [["10.5.1.0/24", "10.5.2.0/24"], /two IPv4 podCIDRs.*at most one CIDR per family/],
    [["fd00::/64", "fd01::/64"], /two IPv6 podCIDRs/],
    [["10.5.1.0/24", "fd00::/64", "10.5.2.0/24"], /3 podCIDRs/],
    [["banana"], /"banana", which is not a CIDR/],
  ];
  for (const [cidrs, re] of table) {
    const r = podCidrsOf(node(cidrs));
    assert.equal(typeof r, "string", cidrs.join());
    assert.match(r as string, re);
  }
});

Deno.test("nodeToLease() ignores nodes without the kube-subnet-manager annotation", () => {
  assert.equal(nodeToLease(node(["10.5.1.0/24"], {}), keys, v4config), null);
  assert.equal(
    nodeToLease(node(["10.5.1.0/24"], { [A + "kube-subnet-manager"]: "false" }), keys),
    null,
  );
});

Deno.test("nodeToLease() decodes flannel's annotations", () => {
  const lease = nodeToLease(node(["10.5.1.0/24"], managed()), keys, v4config) as Lease;
  assert.equal(formatIPv4Net(lease.subnet!), "10.5.1.0/24");
  assert.deepEqual(lease.attrs, {
    publicIP: "192.0.2.1",
    publicIPv6: null,
    backendType: "vxlan",
    backendData: { VNI: 1, VtepMAC: "aa:bb:cc:dd:ee:01" },
  });
  assert.equal(lease.expiration, null);
  const dual = nodeToLease(
    node(
      ["10.5.1.0/24", "fd00:10:5:1::/64"],
      managed({ [A + "public-ipv6"]: "2001:db8::1", [A + "backend-v6-data"]: '{"VNI":1}' }),
    ),
    keys,
    dualConfig,
  ) as Lease;
  assert.equal(formatIPv6Net(dual.ipv6Subnet!), "fd00:10:5:1::/64");
  assert.equal(dual.attrs.publicIPv6, "2001:db8::1");
  assert.deepEqual(dual.attrs.backendV6Data, { VNI: 1 });
});

Deno.test("nodeToLease() explains why a managed node is unusable", () => {
  const table: [KubeNode, RegExp][] = [
    [
      node(["10.5.1.0/24"], managed({ [A + "backend-data"]: "{not json" })),
      /backend-data that is not JSON: "\{not json"/,
    ],
    [node(["10.5.1.0/24"], managed({ [A + "public-ip"]: "nope" })), /"nope", which is not an IPv4/],
    [
      node(["10.6.1.0/24"], managed()),
      /podCIDR 10\.6\.1\.0\/24 of node n1 is not inside Network 10\.5\.0\.0\/16 from/,
    ],
    [node(["10.5.1.0/24", "10.5.2.0/24"], managed()), /two IPv4 podCIDRs/],
  ];
  for (const [n, re] of table) {
    const r = nodeToLease(n, keys, v4config, "/etc/kube-flannel/net-conf.json");
    assert.equal(typeof r, "string", String(re));
    assert.match(r as string, re);
  }
  const v6missing = nodeToLease(node(["10.5.1.0/24"], managed()), keys, dualConfig);
  assert.match(v6missing as string, /no IPv6 podCIDR.*EnableIPv6/);
});

Deno.test("nodeToLease() takes a managed node without any podCIDR for no peer, not for garbage", () => {
  // not assigned yet, or taken away: nothing to route to, and no warning either
  assert.equal(nodeToLease(node(undefined, managed()), keys, v4config), null);
  // a spec that is no object is garbage: a message (the peer view keeps the last good lease)
  const garbled = { ...node(undefined, managed()), spec: [[1]] } as unknown as KubeNode;
  assert.equal(typeof nodeToLease(garbled, keys, v4config), "string");
});

Deno.test("nodeToLease() reads an IPv6-only node as flannel annotates it", () => {
  // flannel v0.28 IPv6-only vxlan: no backend-data/public-ip (kube.go:434 skips them while
  // BackendData is null), public-ipv6 and backend-v6-data as Go writes them
  const vxlan = nodeToLease(
    node(["fd00:10:5:1::/64"], {
      [A + "kube-subnet-manager"]: "true",
      [A + "backend-type"]: "vxlan",
      [A + "backend-v6-data"]: '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:06"}',
      [A + "public-ipv6"]: "2001:db8::11",
    }),
    keys,
    v6Config,
  );
  assert.deepEqual(vxlan, {
    ipv6Subnet: parseIPv6Net("fd00:10:5:1::/64"),
    attrs: {
      publicIP: "",
      publicIPv6: "2001:db8::11",
      backendType: "vxlan",
      backendV6Data: { VNI: 1, VtepMAC: "aa:bb:cc:dd:ee:06" },
    },
    expiration: null,
  });
  // host-gw also writes public-ip "0.0.0.0" and backend-data "null": not read without IPv4
  const hostgw = nodeToLease(
    node(["fd00:10:5:2::/64"], {
      [A + "kube-subnet-manager"]: "true",
      [A + "backend-type"]: "host-gw",
      [A + "backend-data"]: "null",
      [A + "public-ip"]: "0.0.0.0",
      [A + "backend-v6-data"]: "null",
      [A + "public-ipv6"]: "2001:DB8:0::12",
    }),
    keys,
    v6Config,
  );
  assert.deepEqual(hostgw, {
    ipv6Subnet: parseIPv6Net("fd00:10:5:2::/64"),
    attrs: { publicIP: "", publicIPv6: "2001:db8::12", backendType: "host-gw" },
    expiration: null,
  });
  // the legacy single podCIDR field may hold the IPv6 CIDR
  const legacy = nodeToLease(
    node(undefined, managed({ [A + "public-ipv6"]: "2001:db8::13" }), "fd00:10:5:3::/64"),
    keys,
    v6Config,
  ) as Lease;
  assert.equal(formatIPv6Net(legacy.ipv6Subnet!), "fd00:10:5:3::/64");
  assert.equal(legacy.subnet, undefined);
});

Deno.test("nodeToLease() drops a dual-stack node without IPv6 annotations, as flannel does", () => {
  // flannel's nodeToLease: ip.ParseIP6(public-ipv6) fails on "" and the node is skipped
  const table: [Record<string, string>, RegExp][] = [
    [managed(), /annotation flannel\.alpha\.coreos\.com\/public-ipv6 "", which is not an IPv6/],
    [managed({ [A + "public-ipv6"]: "192.0.2.1" }), /"192\.0\.2\.1", which is not an IPv6/],
    [
      managed({ [A + "public-ipv6"]: "2001:db8::1", [A + "backend-v6-data"]: "{" }),
      /backend-v6-data that is not JSON/,
    ],
  ];
  for (const [ann, re] of table) {
    const r = nodeToLease(node(["10.5.1.0/24", "fd00:10:5:1::/64"], ann), keys, dualConfig);
    assert.match(r as string, re);
  }
  const v4only = nodeToLease(node(["fd00:10:5:1::/64"], managed()), keys, dualConfig);
  assert.match(v4only as string, /has no IPv4 podCIDR/);
  const noV6 = nodeToLease(node(["10.5.1.0/24"], managed()), keys, v6Config);
  assert.match(noV6 as string, /no IPv6 podCIDR/);
});

Deno.test("parseKubeNode() gives what KubeNodeSchema gives for odd but readable nodes", () => {
  const odd: unknown[] = [
    JSON.parse('{"metadata":{"name":"n","annotations":{"__proto__":"x","a":"b"}}}'),
    JSON.parse('{"metadata":{"name":"n","annotations":{"constructor":"x"}},"spec":null}'),
    { metadata: { name: "n", resourceVersion: undefined, annotations: null }, spec: {} },
    { metadata: Object.assign(Object.create(null), { name: "n" }) },
    { metadata: { name: "n" }, spec: { podCIDR: null, podCIDRs: ["10.0.0.0/24"], x: 1 } },
    [],
  ];
  for (const obj of odd) {
    const want = v.safeParse(KubeNodeSchema, obj);
    if (want.success) assert.deepStrictEqual(parseKubeNode(obj), want.output);
    else assert.equal(typeof parseKubeNode(obj), "string", JSON.stringify(obj));
  }
});

Deno.test("parseKubeNode() rejects objects that are not nodes", () => {
  assert.match(parseKubeNode({ metadata: {} }) as string, /metadata\.name/);
  assert.match(
    parseKubeNode({ metadata: { name: "x", annotations: { a: 1 } } }) as string,
    /not a Node/,
  );
  assert.equal(typeof parseKubeNode({ metadata: { name: "x" } }), "object");
});

Deno.test("annotationUpdate() writes flannel's annotations and nothing when unchanged", () => {
  const attrs = {
    publicIP: "192.0.2.1",
    backendType: "vxlan",
    backendData: { VNI: 1, VtepMAC: "aa:bb:cc:dd:ee:01" },
  };
  const first = annotationUpdate({}, attrs, keys);
  assert.deepEqual(first.changes, {
    [A + "backend-type"]: "vxlan",
    [A + "backend-data"]: '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}',
    [A + "public-ip"]: "192.0.2.1",
    [A + "kube-subnet-manager"]: "true",
  });
  assert.deepEqual(annotationUpdate(first.changes, attrs, keys).changes, {});
});

Deno.test("annotationUpdate() leaves vxlan's backend-data alone until it has data", () => {
  const u = annotationUpdate({}, { publicIP: "192.0.2.1", backendType: "vxlan" }, keys);
  assert.equal(u.changes[A + "backend-data"], undefined);
  assert.equal(u.changes[A + "public-ip"], undefined);
  const hostgw = annotationUpdate({}, { publicIP: "192.0.2.1", backendType: "host-gw" }, keys);
  assert.equal(hostgw.changes[A + "backend-data"], "null");
  assert.equal(hostgw.changes[A + "public-ip"], "192.0.2.1");
});

Deno.test("annotationUpdate() publishes public-ip-overwrite instead of the detected IP", () => {
  const current = { [A + "public-ip-overwrite"]: "198.51.100.9" };
  const u = annotationUpdate(current, { publicIP: "192.0.2.1", backendType: "host-gw" }, keys);
  assert.equal(u.changes[A + "public-ip"], "198.51.100.9");
  assert.equal(u.published.publicIP, "198.51.100.9");
});

Deno.test("annotationUpdate() publishes IPv6 attributes for dual-stack backends", () => {
  const u = annotationUpdate({ [A + "public-ipv6-overwrite"]: "2001:db8::9" }, {
    publicIP: "192.0.2.1",
    publicIPv6: "2001:db8::1",
    backendType: "vxlan",
    backendData: { VNI: 1 },
    backendV6Data: { VNI: 1, VtepMAC: "aa:bb:cc:dd:ee:02" },
  }, keys);
  assert.equal(u.changes[A + "backend-v6-data"], '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}');
  assert.equal(u.changes[A + "public-ipv6"], "2001:db8::9");
});

Deno.test("annotationUpdate() writes each family's annotations exactly as flannel's AcquireLease", () => {
  // golden values from pkg/subnet/kube/kube.go:431-464 (v0.28.9): which keys are written for
  // each backend and family, with Go's JSON of BackendData and Go's IPv6 text
  const mac4 = { VNI: 1, VtepMAC: "aa:bb:cc:dd:ee:01" };
  const mac6 = { VNI: 1, VtepMAC: "aa:bb:cc:dd:ee:02" };
  const cases: [string, LeaseAttrs, Record<string, string>][] = [
    [
      "dual-stack vxlan",
      {
        publicIP: "192.0.2.1",
        publicIPv6: "2001:DB8:0:0::1",
        backendType: "vxlan",
        backendData: mac4,
        backendV6Data: mac6,
      },
      {
        [A + "backend-type"]: "vxlan",
        [A + "backend-data"]: '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}',
        [A + "public-ip"]: "192.0.2.1",
        [A + "backend-v6-data"]: '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}',
        [A + "public-ipv6"]: "2001:db8::1",
        [A + "kube-subnet-manager"]: "true",
      },
    ],
    [
      "dual-stack host-gw: null data for both families",
      { publicIP: "192.0.2.1", publicIPv6: "2001:db8::1", backendType: "host-gw" },
      {
        [A + "backend-type"]: "host-gw",
        [A + "backend-data"]: "null",
        [A + "public-ip"]: "192.0.2.1",
        [A + "backend-v6-data"]: "null",
        [A + "public-ipv6"]: "2001:db8::1",
        [A + "kube-subnet-manager"]: "true",
      },
    ],
    [
      "IPv6-only vxlan: nothing of IPv4",
      { publicIP: "", publicIPv6: "2001:db8::11", backendType: "vxlan", backendV6Data: mac6 },
      {
        [A + "backend-type"]: "vxlan",
        [A + "backend-v6-data"]: '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}',
        [A + "public-ipv6"]: "2001:db8::11",
        [A + "kube-subnet-manager"]: "true",
      },
    ],
    [
      "IPv6-only host-gw: Go's zero IPv4 as public-ip",
      { publicIP: "", publicIPv6: "2001:db8::12", backendType: "host-gw" },
      {
        [A + "backend-type"]: "host-gw",
        [A + "backend-data"]: "null",
        [A + "public-ip"]: "0.0.0.0",
        [A + "backend-v6-data"]: "null",
        [A + "public-ipv6"]: "2001:db8::12",
        [A + "kube-subnet-manager"]: "true",
      },
    ],
    [
      "vxlan without IPv6 data yet: no IPv6 keys",
      { publicIP: "192.0.2.1", publicIPv6: "2001:db8::1", backendType: "vxlan", backendData: mac4 },
      {
        [A + "backend-type"]: "vxlan",
        [A + "backend-data"]: '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}',
        [A + "public-ip"]: "192.0.2.1",
        [A + "kube-subnet-manager"]: "true",
      },
    ],
    [
      "wireguard with null data still writes backend-data (only vxlan waits for it)",
      { publicIP: "192.0.2.1", backendType: "wireguard" },
      {
        [A + "backend-type"]: "wireguard",
        [A + "backend-data"]: "null",
        [A + "public-ip"]: "192.0.2.1",
        [A + "kube-subnet-manager"]: "true",
      },
    ],
    [
      "extension with IPv6",
      { publicIP: "192.0.2.1", publicIPv6: "2001:db8::1", backendType: "extension" },
      {
        [A + "backend-type"]: "extension",
        [A + "backend-data"]: "null",
        [A + "public-ip"]: "192.0.2.1",
        [A + "backend-v6-data"]: "null",
        [A + "public-ipv6"]: "2001:db8::1",
        [A + "kube-subnet-manager"]: "true",
      },
    ],
    [
      "udp never writes IPv6 keys",
      { publicIP: "192.0.2.1", publicIPv6: "2001:db8::1", backendType: "udp" },
      {
        [A + "backend-type"]: "udp",
        [A + "backend-data"]: "null",
        [A + "public-ip"]: "192.0.2.1",
        [A + "kube-subnet-manager"]: "true",
      },
    ],
  ];
  for (const [why, attrs, want] of cases) {
    const u = annotationUpdate({}, attrs, keys);
    assert.deepEqual(u.changes, want, why);
    assert.deepEqual(annotationUpdate(want, attrs, keys).changes, {}, `${why}: then nothing`);
    // what peers read back is what was published
    const back = nodeToLease(
      node(["10.5.1.0/24", "fd00:10:5:1::/64"], { ...want }),
      keys,
      attrs.publicIP ? dualConfig : v6Config,
    );
    if (attrs.publicIPv6 && want[A + "public-ipv6"]) {
      assert.equal((back as Lease).attrs.publicIPv6, u.published.publicIPv6, why);
    }
  }
});

Deno.test("networkAvailablePatch() matches flannel's NetworkUnavailable condition", () => {
  const p = networkAvailablePatch(Date.UTC(2026, 0, 2, 3, 4, 5, 678));
  assert.deepEqual(p, {
    status: {
      conditions: [{
        type: "NetworkUnavailable",
        status: "False",
        reason: "FlannelIsUp",
        message: "Flannel is running on this node",
        lastTransitionTime: "2026-01-02T03:04:05Z",
        lastHeartbeatTime: "2026-01-02T03:04:05Z",
      }],
    },
  });
});

// Found by lease/kube/node_fuzz_test.ts: messages quoted whole values (an
// annotation, a podCIDR list, an invalid field's input, a huge key in the
// issue path), so one hostile node made a multi-kilobyte log line.
Deno.test("node messages quote huge values in part", () => {
  const big = "💥".repeat(3000);
  const messages = [
    parseKubeNode(big),
    parseKubeNode({ metadata: { name: "n", annotations: { ["a".repeat(3000)]: 1 } } }),
    nodeToLease(
      {
        metadata: {
          name: big,
          annotations: { [keys.subnetKubeManaged]: "true", [keys.publicIP]: big },
        },
        spec: { podCIDR: "10.244.1.0/24" },
      },
      keys,
    ),
    nodeToLease(
      {
        metadata: { name: "n", annotations: { [keys.subnetKubeManaged]: "true" } },
        spec: { podCIDR: big },
      },
      keys,
    ),
  ];
  for (const m of messages) {
    assert.equal(typeof m, "string");
    assert.ok((m as string).length < 600, `${(m as string).length}: ${m}`);
  }
  assert.throws(() => annotationKeys("a".repeat(3000)), (e: unknown) => {
    assert.ok(e instanceof ConfigError && e.message.length < 400, String(e));
    return true;
  });
});
