/**
 * Fuzzing Kubernetes Node objects as weft reads them: mutations of
 * flannel's node vectors and of a full kubelet-written Node (fields
 * deleted, retyped, nasty annotation values, podCIDRs garbled) through
 * parseKubeNode → nodeToLease under IPv4, dual-stack and unknown configs;
 * the annotation patch for arbitrary current annotations; annotation
 * prefixes. Property: a lease that satisfies its invariants, null, or a
 * message of readable length — never a throw. parseKubeNode's fast path
 * gives what the schema gives.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import * as v from "valibot";
import { readFileSync } from "node:fs";
import {
  annotationKeys,
  annotationUpdate,
  DEFAULT_ANNOTATION_PREFIX,
  KubeNodeSchema,
  nodeToLease,
  parseKubeNode,
} from "./node.ts";
import { parseNetworkConfig } from "../config.ts";
import { ConfigError } from "../../core/errors.ts";
import { containsIPv4Net, formatIPv4Net, isIPv4 } from "../../core/ip.ts";
import {
  fuzzParameters,
  MAX_MESSAGE,
  mutatedJson,
  nastyJson,
  nastyString,
  returnsOrThrowsClearly,
  Tally,
} from "../../testing/fuzz.ts";

const A = `${DEFAULT_ANNOTATION_PREFIX}/`;
const vectors = JSON.parse(
  readFileSync(new URL("../../testing/flannel_vectors/kube.json", import.meta.url), "utf8"),
) as {
  rows: {
    kind: string;
    input: {
      node?: {
        name: string;
        annotations?: Record<string, string>;
        podCIDR?: string;
        podCIDRs?: string[];
      };
    };
  }[];
};
const FULL_NODE = {
  kind: "Node",
  apiVersion: "v1",
  metadata: {
    name: "worker-1",
    uid: "5b1e0e4c-2f0e-4c1a-9d0c-1f2e3d4c5b6a",
    resourceVersion: "123456",
    labels: { "kubernetes.io/hostname": "worker-1", "kubernetes.io/os": "linux" },
    annotations: {
      [A + "kube-subnet-manager"]: "true",
      [A + "backend-type"]: "vxlan",
      [A + "backend-data"]: '{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}',
      [A + "public-ip"]: "192.168.64.3",
      "node.alpha.kubernetes.io/ttl": "0",
    },
  },
  spec: { podCIDR: "10.244.1.0/24", podCIDRs: ["10.244.1.0/24", "fd00:10:244:1::/64"] },
  status: {
    addresses: [{ type: "InternalIP", address: "192.168.64.3" }],
    conditions: [{ type: "Ready", status: "True" }],
  },
};
const NODES: unknown[] = [
  FULL_NODE,
  ...vectors.rows.filter((r) => r.kind === "nodeToLease" && r.input.node).map((r) => {
    const n = r.input.node!;
    return {
      metadata: {
        name: n.name,
        annotations: { [A + "kube-subnet-manager"]: "true", ...n.annotations },
      },
      spec: { podCIDR: n.podCIDR, podCIDRs: n.podCIDRs },
    };
  }),
];

const CONFIGS = [
  undefined,
  parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}'),
  parseNetworkConfig(
    '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/48","Backend":{"Type":"vxlan"}}',
  ),
  parseNetworkConfig('{"Network":"10.0.0.0/8","Backend":{"Type":"host-gw"}}'),
];
const KEYS = annotationKeys();

/** Nodes: mutated real ones, or real ones with nasty annotation values on flannel's keys. */
const nodes = fc.oneof(
  { weight: 3, arbitrary: mutatedJson(NODES, 4) },
  {
    weight: 2,
    arbitrary: fc.tuple(
      fc.constantFrom(...NODES),
      fc.dictionary(
        fc.constantFrom(...Object.values(KEYS)),
        fc.oneof(nastyString(), fc.constantFrom("true", "192.0.2.1", "fd00::1", "{}", "null")),
        { maxKeys: 4 },
      ),
    ).map(([node, ann]) => {
      const n = structuredClone(node) as { metadata: { annotations?: Record<string, string> } };
      n.metadata.annotations = { ...n.metadata.annotations, ...ann };
      return n;
    }),
  },
  { weight: 1, arbitrary: nastyJson() },
);

Deno.test("fuzz parseKubeNode() + nodeToLease(): mutated nodes under four configs (10 000 inputs)", () => {
  const tally = new Tally();
  fc.assert(
    fc.property(nodes, fc.constantFrom(...CONFIGS), (obj, config) => {
      const node = parseKubeNode(obj);
      if (typeof node === "string") {
        assert.ok(node.length <= MAX_MESSAGE, `a ${node.length}-character message`);
        tally.count(false);
        return;
      }
      const lease = nodeToLease(node, KEYS, config, "net-conf.json");
      tally.count(typeof lease === "object" && lease !== null);
      if (typeof lease === "string") {
        assert.ok(
          lease.length > 10 && lease.length <= MAX_MESSAGE,
          `message: ${lease.slice(0, 300)}`,
        );
        return;
      }
      if (lease === null) return;
      assert.ok(isIPv4(lease.attrs.publicIP), `PublicIP ${lease.attrs.publicIP}`);
      if (config?.network) assert.ok(containsIPv4Net(config.network, lease.subnet!));
      const cidrs = node.spec?.podCIDRs?.length ? node.spec.podCIDRs : [node.spec?.podCIDR];
      assert.ok(cidrs.includes(formatIPv4Net(lease.subnet!)), "the lease is the node's podCIDR");
      assert.equal(lease.expiration, null);
    }),
    fuzzParameters(),
  );
  tally.assertMix("nodes");
});

Deno.test("fuzz parseKubeNode(): the node KubeNodeSchema makes, or a message when it refuses (10 000 inputs)", () => {
  const tally = new Tally();
  fc.assert(
    fc.property(nodes, fc.boolean(), (made, viaJson) => {
      // as the API client sees it: what JSON.parse makes (own "__proto__" keys included)
      const obj = viaJson && made !== undefined ? JSON.parse(JSON.stringify(made)) : made;
      const want = v.safeParse(KubeNodeSchema, obj);
      const got = parseKubeNode(obj);
      tally.count(want.success);
      if (want.success) assert.deepStrictEqual(got, want.output);
      else assert.equal(typeof got, "string", `the schema refuses ${JSON.stringify(obj)}`);
    }),
    fuzzParameters(),
  );
  tally.assertMix("nodes");
});

Deno.test("fuzz annotationUpdate(): arbitrary current annotations and attributes (10 000 inputs)", () => {
  fc.assert(
    fc.property(
      fc.dictionary(
        fc.oneof(fc.constantFrom(...Object.values(KEYS)), nastyString()),
        nastyString(),
        {
          maxKeys: 6,
        },
      ),
      fc.record({
        publicIP: fc.oneof(fc.constant("192.0.2.1"), nastyString()),
        publicIPv6: fc.option(fc.oneof(fc.constant("fd00::1"), nastyString())),
        backendType: fc.option(fc.constantFrom("vxlan", "host-gw", "wireguard", "extension", "")),
        backendData: fc.option(nastyJson()),
        backendV6Data: fc.option(nastyJson()),
      }, { requiredKeys: ["publicIP"] }),
      (current, attrs) => {
        const { changes, published } = annotationUpdate(current, {
          ...attrs,
          publicIPv6: attrs.publicIPv6 ?? null,
          backendType: attrs.backendType ?? undefined,
        }, KEYS);
        for (const [k, v] of Object.entries(changes)) {
          assert.equal(typeof v, "string");
          assert.notEqual(current[k], v, "only changed annotations are patched");
        }
        assert.equal(changes[KEYS.subnetKubeManaged] ?? current[KEYS.subnetKubeManaged], "true");
        assert.equal(typeof published.publicIP, "string");
      },
    ),
    fuzzParameters(),
  );
});

Deno.test("fuzz annotationKeys(): prefixes (10 000 inputs)", () => {
  const tally = new Tally();
  fc.assert(
    fc.property(
      fc.oneof(
        nastyString(),
        fc.constantFrom("flannel.alpha.coreos.com", "example.com/net", "a.b/c-", "x.y/"),
        fc.stringOf(fc.constantFrom("a", "z", "0", ".", "/", "-", "_", "A", " "), {
          maxLength: 30,
        }),
      ),
      (prefix) => {
        const keys = returnsOrThrowsClearly(() => annotationKeys(prefix), [ConfigError], tally);
        if (keys) {
          for (const k of Object.values(keys)) assert.equal(k.split("/").length, 2, k);
        }
      },
    ),
    fuzzParameters(),
  );
  tally.assertMix("annotation prefixes");
});
