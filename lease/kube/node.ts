/**
 * Kubernetes Node objects as flannel reads and writes them, as pure code:
 * the annotation keys under a prefix, a node's podCIDRs, a node turned into a
 * lease (or a message saying why it cannot be), and the annotation patch
 * that publishes this host's lease attributes (written only when something
 * changed, as flannel does).
 *
 * @module
 */

import * as v from "valibot";
import type { NetworkConfig } from "../config.ts";
import {
  containsIPv4Net,
  containsIPv6,
  formatIPv4Net,
  formatIPv6Net,
  type IPv4Net,
  type IPv6Net,
  isIPv4,
  parseIPv4Net,
  parseIPv6,
  parseIPv6Net,
} from "../../core/ip.ts";
import {
  canonicalIPv6,
  goJsonStringify,
  type Lease,
  type LeaseAttrs,
  NO_PUBLIC_IP,
} from "../types.ts";
import { ConfigError } from "../../core/errors.ts";
import { clip, quote } from "../../core/quote.ts";

/** flannel's default annotation prefix. */
export const DEFAULT_ANNOTATION_PREFIX = "flannel.alpha.coreos.com";

/** The annotation keys flannel uses on a node, under one prefix. */
export interface KubeAnnotationKeys {
  /** `kube-subnet-manager`: "true" on every node that runs flannel/weft. */
  readonly subnetKubeManaged: string;
  readonly backendData: string;
  readonly backendV6Data: string;
  readonly backendType: string;
  readonly publicIP: string;
  readonly publicIPv6: string;
  /** Read-only: the public IP to use for this node's interface (set by an operator). */
  readonly nodePublicIP: string;
  readonly nodePublicIPv6: string;
  /** Read-only: publish this address as `public-ip` instead of the detected one. */
  readonly publicIPOverwrite: string;
  readonly publicIPv6Overwrite: string;
}

/**
 * Build the annotation keys for a prefix, with flannel's rules: at most one
 * slash; without one, `/` is appended; a prefix with a slash that does not
 * end in `/` or `-` gets a `-`; the result must look like `fqdn/[a-z0-9_-]*`.
 *
 * @param prefix e.g. `flannel.alpha.coreos.com`.
 * @returns The keys, e.g. `flannel.alpha.coreos.com/backend-data`.
 * @throws {ConfigError} When the prefix is not a valid annotation prefix.
 * @example
 * ```ts
 * annotationKeys("flannel.alpha.coreos.com").publicIP; // "flannel.alpha.coreos.com/public-ip"
 * ```
 */
export function annotationKeys(prefix: string = DEFAULT_ANNOTATION_PREFIX): KubeAnnotationKeys {
  const slashes = prefix.split("/").length - 1;
  if (slashes > 1) {
    throw new ConfigError(
      `--kube-annotation-prefix must contain at most one "/": current value is ${quote(prefix)}`,
      "kube-annotation-prefix",
    );
  }
  let p = slashes === 0 ? prefix + "/" : prefix;
  if (!p.endsWith("/") && !p.endsWith("-")) p += "-";
  if (!/^(?:[a-z0-9_-]+\.)+[a-z0-9_-]+\/(?:[a-z0-9_-]+-)?$/.test(p)) {
    throw new ConfigError(
      `--kube-annotation-prefix must look like a DNS name with an optional "/name", e.g. flannel.alpha.coreos.com: current value is ${
        quote(prefix)
      }`,
      "kube-annotation-prefix",
    );
  }
  return {
    subnetKubeManaged: p + "kube-subnet-manager",
    backendData: p + "backend-data",
    backendV6Data: p + "backend-v6-data",
    backendType: p + "backend-type",
    publicIP: p + "public-ip",
    publicIPv6: p + "public-ipv6",
    nodePublicIP: p + "node-public-ip",
    nodePublicIPv6: p + "node-public-ipv6",
    publicIPOverwrite: p + "public-ip-overwrite",
    publicIPv6Overwrite: p + "public-ipv6-overwrite",
  };
}

/** The parts of a Node weft reads, validated at the edge. */
export const KubeNodeSchema = v.object({
  metadata: v.object({
    name: v.pipe(v.string(), v.minLength(1)),
    resourceVersion: v.optional(v.string()),
    annotations: v.optional(v.nullable(v.record(v.string(), v.string()))),
  }),
  spec: v.optional(v.nullable(v.object({
    podCIDR: v.optional(v.nullable(v.string())),
    podCIDRs: v.optional(v.nullable(v.array(v.string()))),
  }))),
});

/** A node as weft sees it. */
export type KubeNode = v.InferOutput<typeof KubeNodeSchema>;

type Plain = Record<string, unknown>;

/** A JSON object (what `JSON.parse` makes): the only kind the fast path takes. */
const isPlain = (x: unknown): x is Plain =>
  typeof x === "object" && x !== null && Object.getPrototypeOf(x) === Object.prototype;

/** Keys valibot's `record` leaves out of its output. */
const UNSAFE_KEYS = new Set(["__proto__", "prototype", "constructor"]);

const isStringArray = (x: unknown): x is string[] => {
  if (!Array.isArray(x)) return false;
  for (let i = 0; i < x.length; i++) if (typeof x[i] !== "string") return false;
  return true;
};

/**
 * {@link KubeNodeSchema} for a well-formed node from `JSON.parse`, without
 * valibot (a list of 5000 nodes spent most of its decoding there): the same
 * output, sharing the input's annotations and podCIDRs rather than copying
 * them. `undefined` for anything it does not take at once (a malformed node,
 * an object that is not a JSON object): the schema judges those.
 */
function fastKubeNode(obj: unknown): KubeNode | undefined {
  if (!isPlain(obj)) return undefined;
  const m = obj.metadata;
  if (!isPlain(m) || typeof m.name !== "string" || m.name.length === 0) return undefined;
  const metadata: Plain = { name: m.name };
  if ("resourceVersion" in m) {
    const rv = m.resourceVersion;
    if (rv !== undefined && typeof rv !== "string") return undefined;
    metadata.resourceVersion = rv;
  }
  if ("annotations" in m) {
    const a = m.annotations;
    if (a !== undefined && a !== null) {
      if (!isPlain(a)) return undefined;
      for (const k in a) {
        if (!Object.hasOwn(a, k) || UNSAFE_KEYS.has(k) || typeof a[k] !== "string") {
          return undefined;
        }
      }
    }
    metadata.annotations = a;
  }
  const out: Plain = { metadata };
  if ("spec" in obj) {
    const s = obj.spec;
    if (s === undefined || s === null) out.spec = s;
    else {
      if (!isPlain(s)) return undefined;
      const spec: Plain = {};
      if ("podCIDR" in s) {
        const c = s.podCIDR;
        if (c !== undefined && c !== null && typeof c !== "string") return undefined;
        spec.podCIDR = c;
      }
      if ("podCIDRs" in s) {
        const cs = s.podCIDRs;
        if (cs !== undefined && cs !== null && !isStringArray(cs)) return undefined;
        spec.podCIDRs = cs;
      }
      out.spec = spec;
    }
  }
  return out as KubeNode;
}

/**
 * Validate an object from the API server as a node.
 *
 * @returns The node, or a message saying what is wrong.
 */
export function parseKubeNode(obj: unknown): KubeNode | string {
  const fast = fastKubeNode(obj);
  if (fast) return fast;
  const r = v.safeParse(KubeNodeSchema, obj);
  if (r.success) return r.output;
  const issue = r.issues[0];
  const path = issue.path?.map((p) => p.key).join(".") ?? "";
  return `not a Node object: ${path ? clip(path, 100) + ": " : ""}${clip(issue.message)}`;
}

/** A node's pod CIDRs by family. */
export interface PodCidrs {
  readonly v4?: IPv4Net;
  readonly v6?: IPv6Net;
  /** The text as found, for messages. */
  readonly text: readonly string[];
}

/**
 * Read `spec.podCIDRs` (or `spec.podCIDR` when the list is empty).
 *
 * @returns The CIDRs by family (both absent when none is assigned yet), or a
 *   message when they are malformed: unparsable, more than two, or two of
 *   one family.
 */
export function podCidrsOf(node: KubeNode): PodCidrs | string {
  const name = clip(node.metadata.name, 100);
  const list = node.spec?.podCIDRs?.length
    ? node.spec.podCIDRs
    : node.spec?.podCIDR
    ? [node.spec.podCIDR]
    : [];
  if (list.length > 2) {
    return `node ${name} has ${list.length} podCIDRs ${
      quote(list)
    }: expected one IPv4 and/or one IPv6 CIDR`;
  }
  let v4: IPv4Net | undefined, v6: IPv6Net | undefined;
  for (const text of list) {
    if (text.includes(":")) {
      let net: IPv6Net;
      try {
        net = parseIPv6Net(text);
      } catch {
        return `node ${name} has podCIDR ${quote(text)}, which is not a CIDR`;
      }
      if (v6) {
        return `node ${name} has two IPv6 podCIDRs ${
          quote(list)
        }: a node has at most one CIDR per family`;
      }
      v6 = net;
    } else {
      let net: IPv4Net;
      try {
        net = parseIPv4Net(text);
      } catch {
        return `node ${name} has podCIDR ${quote(text)}, which is not a CIDR`;
      }
      if (v4) {
        return `node ${name} has two IPv4 podCIDRs ${
          quote(list)
        }: a node has at most one CIDR per family`;
      }
      v4 = net;
    }
  }
  return { v4, v6, text: list };
}

/** Which families the network uses (IPv4 only when no config is known). */
function families(config?: NetworkConfig): { v4: boolean; v6: boolean } {
  return { v4: config ? config.enableIPv4 : true, v6: config ? config.enableIPv6 : false };
}

/**
 * Check a node's pod CIDRs against the network config: each enabled family
 * must be present and lie inside `Network` / `IPv6Network`.
 *
 * @param cidrs From {@link podCidrsOf}.
 * @param config The network config (unknown = IPv4 only, no containment check).
 * @param source Where the config came from, for messages.
 * @returns A message when something is wrong, else `null`.
 */
export function checkPodCidrs(
  name: string,
  cidrs: PodCidrs,
  config: NetworkConfig | undefined,
  source = "the network config",
): string | null {
  const fam = families(config);
  if (fam.v4 && !cidrs.v4) {
    return `node ${name} has no IPv4 podCIDR (podCIDRs ${quote(cidrs.text)})`;
  }
  if (fam.v6 && !cidrs.v6) {
    return `node ${name} has no IPv6 podCIDR (podCIDRs ${
      quote(cidrs.text)
    }) while EnableIPv6 is true`;
  }
  if (fam.v4 && config?.network && !containsIPv4Net(config.network, cidrs.v4!)) {
    return `podCIDR ${formatIPv4Net(cidrs.v4!)} of node ${name} is not inside Network ${
      formatIPv4Net(config.network)
    } from ${source}: make Network match the cluster CIDR (kube-controller-manager --cluster-cidr, kubeadm --pod-network-cidr)`;
  }
  if (
    fam.v6 && config?.ipv6Network &&
    !(cidrs.v6!.prefixLen >= config.ipv6Network.prefixLen &&
      containsIPv6(config.ipv6Network, cidrs.v6!.ip))
  ) {
    return `IPv6 podCIDR ${formatIPv6Net(cidrs.v6!)} of node ${name} is not inside IPv6Network ${
      formatIPv6Net(config.ipv6Network)
    } from ${source}: make IPv6Network match the cluster's IPv6 CIDR`;
  }
  return null;
}

function parseJsonAnnotation(name: string, key: string, text: string | undefined): unknown {
  if (text === undefined || text === "" || text === "null") return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(
      `node ${name} has annotation ${key} that is not JSON: ${quote(text, 80)}`,
    );
  }
}

/**
 * Turn a node into the lease it stands for, as flannel's `nodeToLease`
 * (pkg/subnet/kube/kube.go): only nodes annotated `kube-subnet-manager:
 * "true"` are leases; with IPv4 enabled the IPv4 podCIDR, `public-ip` and
 * `backend-data` are read, with IPv6 enabled the IPv6 podCIDR, `public-ipv6`
 * and `backend-v6-data`. An IPv6-only lease has no `subnet` and
 * `publicIP: ""`.
 *
 * @param node The node.
 * @param keys Annotation keys.
 * @param config The network config, when known (families and containment).
 * @param source Where the config came from, for messages.
 * @returns The lease; `null` when the node is not managed by flannel/weft
 *   or has no podCIDR (yet); a message when it is but cannot be read
 *   (flannel skips such a node too).
 */
export function nodeToLease(
  node: KubeNode,
  keys: KubeAnnotationKeys,
  config?: NetworkConfig,
  source?: string,
): Lease | null | string {
  const ann = node.metadata.annotations ?? {};
  if (ann[keys.subnetKubeManaged] !== "true") return null;
  // No podCIDR at all (not assigned yet, or taken away) on an otherwise
  // well-formed node: no peer, and nothing malformed either.
  const spec: unknown = node.spec;
  if (
    spec === undefined ||
    (typeof spec === "object" && spec !== null && !Array.isArray(spec) &&
      !(spec as { podCIDR?: unknown }).podCIDR &&
      !((spec as { podCIDRs?: unknown }).podCIDRs as unknown[] | undefined)?.length)
  ) return null;
  const name = clip(node.metadata.name, 100); // for messages
  const cidrs = podCidrsOf(node);
  if (typeof cidrs === "string") return cidrs;
  const bad = checkPodCidrs(name, cidrs, config, source);
  if (bad) return bad;
  const fam = families(config);
  let publicIP = "";
  if (fam.v4) {
    publicIP = ann[keys.publicIP] ?? "";
    if (!isIPv4(publicIP)) {
      return `node ${name} has annotation ${keys.publicIP} ${
        quote(publicIP)
      }, which is not an IPv4 address`;
    }
  }
  let publicIPv6: string | null = null;
  if (fam.v6) {
    const text = ann[keys.publicIPv6] ?? "";
    try {
      parseIPv6(text);
    } catch {
      return `node ${name} has annotation ${keys.publicIPv6} ${
        quote(text)
      }, which is not an IPv6 address (an agent without IPv6 support, or one that has not published it yet)`;
    }
    publicIPv6 = canonicalIPv6(text);
  }
  let backendData: unknown, backendV6Data: unknown;
  try {
    if (fam.v4) backendData = parseJsonAnnotation(name, keys.backendData, ann[keys.backendData]);
    if (fam.v6) {
      backendV6Data = parseJsonAnnotation(name, keys.backendV6Data, ann[keys.backendV6Data]);
    }
  } catch (e) {
    return (e as Error).message;
  }
  const backendType = ann[keys.backendType];
  const attrs: LeaseAttrs = {
    publicIP,
    publicIPv6,
    ...(backendType ? { backendType } : {}),
    ...(backendData !== undefined ? { backendData } : {}),
    ...(backendV6Data !== undefined ? { backendV6Data } : {}),
  };
  // checkPodCidrs made sure each enabled family has its CIDR
  if (fam.v4) {
    return {
      subnet: cidrs.v4!,
      ...(fam.v6 ? { ipv6Subnet: cidrs.v6! } : {}),
      attrs,
      expiration: null,
    };
  }
  return { ipv6Subnet: cidrs.v6!, attrs, expiration: null };
}

/** The annotation changes that publish this host's attributes. */
export interface AnnotationUpdate {
  /** Annotations to set; empty when the node already says all of it. */
  readonly changes: Record<string, string>;
  /** The attributes as peers will read them (public IP after any overwrite). */
  readonly published: LeaseAttrs;
}

/**
 * Work out the annotations that publish `attrs` on a node, following
 * flannel's AcquireLease (pkg/subnet/kube/kube.go): `backend-type`;
 * `backend-data` and `public-ip` unless the backend is vxlan without data
 * yet (an operator's `public-ip-overwrite` wins; flannel's zero address
 * `0.0.0.0` when the host has no IPv4, as in an IPv6-only host-gw network);
 * `backend-v6-data` and `public-ipv6` when the host has a public IPv6
 * address and the backend is vxlan or wireguard with IPv6 data, host-gw or
 * extension (`public-ipv6-overwrite` wins); and `kube-subnet-manager:
 * "true"`. Values are written as flannel writes them: Go's JSON of the
 * backend data, Go's canonical IPv6 text.
 *
 * @param current The node's annotations now.
 * @param attrs What this host publishes.
 * @param keys Annotation keys.
 * @returns The changed annotations and the attributes peers will see.
 */
export function annotationUpdate(
  current: Readonly<Record<string, string>>,
  attrs: LeaseAttrs,
  keys: KubeAnnotationKeys,
): AnnotationUpdate {
  const type = attrs.backendType ?? "";
  const bd = attrs.backendData === undefined || attrs.backendData === null
    ? "null"
    : goJsonStringify(attrs.backendData);
  const v6bd = attrs.backendV6Data === undefined || attrs.backendV6Data === null
    ? "null"
    : goJsonStringify(attrs.backendV6Data);
  const want: Record<string, string> = { [keys.backendType]: type };
  let publicIP = attrs.publicIP;
  // kube.go: (vxlan && bd != "null") || (wireguard && bd != "null") || type != "vxlan"
  if (type !== "vxlan" || bd !== "null") {
    want[keys.backendData] = bd;
    publicIP = current[keys.publicIPOverwrite] || attrs.publicIP || NO_PUBLIC_IP;
    want[keys.publicIP] = publicIP;
  }
  let publicIPv6 = attrs.publicIPv6 ? canonicalIPv6(attrs.publicIPv6) : null;
  if (
    publicIPv6 &&
    (((type === "vxlan" || type === "wireguard") && v6bd !== "null") ||
      type === "host-gw" || type === "extension")
  ) {
    want[keys.backendV6Data] = v6bd;
    publicIPv6 = current[keys.publicIPv6Overwrite] || publicIPv6;
    want[keys.publicIPv6] = publicIPv6;
  }
  want[keys.subnetKubeManaged] = "true";
  const changes: Record<string, string> = {};
  for (const [k, val] of Object.entries(want)) if (current[k] !== val) changes[k] = val;
  return {
    changes,
    published: { ...attrs, publicIP: publicIP === NO_PUBLIC_IP ? "" : publicIP, publicIPv6 },
  };
}

/**
 * The strategic-merge patch body that sets the `NetworkUnavailable=False`
 * condition, exactly as flannel writes it.
 *
 * @param nowMs Current time (ms since the epoch).
 * @returns The patch object.
 */
export function networkAvailablePatch(nowMs: number): Record<string, unknown> {
  const now = new Date(nowMs).toISOString().replace(/\.\d{3}Z$/, "Z");
  return {
    status: {
      conditions: [{
        type: "NetworkUnavailable",
        status: "False",
        reason: "FlannelIsUp",
        message: "Flannel is running on this node",
        lastTransitionTime: now,
        lastHeartbeatTime: now,
      }],
    },
  };
}
