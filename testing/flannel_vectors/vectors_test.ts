/**
 * flannel v0.28.9's own test vectors, run against weft.
 *
 * The JSON files beside this one hold the table cases of flannel's unit tests
 * (and, where flannel has no test, facts read from its source), each row
 * naming the flannel file and test or function it comes from, with flannel's
 * expected result. This file runs every row against weft's functions and
 * registers one test per row: a row weft agrees with is a plain test; a row
 * weft disagrees with today is listed in {@link KNOWN_DIFFERENCES} and
 * registered ignored, with the reason in its name. A separate test checks
 * that every listed difference still differs, so the change that makes weft
 * agree must also remove the row from the list (turning it into a real test).
 *
 * DIFFERENCES.md beside this file explains each difference and what it
 * means for a switch from flannel or a mixed cluster.
 *
 * @module
 */

import assert from "node:assert/strict";
import { testUnless } from "../ignorable.ts";
import { FakeDatapath } from "../datapath_fake.ts";
import { testContext } from "../routing.ts";

// ---- weft under test: the only imports of product code (paths may move) ----
import {
  containsIPv4,
  containsIPv6,
  equalIPv4Net,
  formatIP,
  formatIPNet,
  formatIPv4,
  formatIPv4Net,
  formatIPv6,
  formatIPv6Net,
  overlapsIPv4Net,
  overlapsIPv6Net,
  parseIPv4,
  parseIPv4Net,
  parseIPv6,
  parseIPv6Net,
  parseSubnetKey,
  subnetKey,
} from "../../core/ip.ts";
import { type NetworkConfig, parseNetworkConfig } from "../../lease/config.ts";
import { encodeLeaseAttrs, type Lease, type LeaseAttrs } from "../../lease/types.ts";
import { decodeRecord } from "../../lease/kv_store.ts";
import { parseSubnetEnv, renderSubnetEnv } from "../../lease/subnet_env.ts";
import {
  annotationKeys,
  annotationUpdate,
  checkPodCidrs,
  networkAvailablePatch,
  nodeToLease,
  parseKubeNode,
} from "../../lease/kube/node.ts";
import {
  flannelRuleList,
  formatRule,
  forwardChain,
  masqChain,
  parseTableState,
  planChain,
  planRemoval,
  versionSupportsRandomFully,
} from "../../datapath/iptables.ts";
import {
  nftChainTransaction,
  nftForwardChain,
  nftMasqChain,
  nftRandomFullyProbe,
  nftRemovalTransaction,
} from "../../datapath/nft.ts";
import {
  parseVxlanConfig,
  parseVxlanLeaseData,
  vxlanBackend,
  vxlanPeerEntries,
} from "../../backends/routed/vxlan.ts";
import { hostGwBackend, hostGwPeerEntries } from "../../backends/routed/host_gw.ts";
import type { PeerEntries } from "../../datapath/types.ts";
import { parseUdpConfig } from "../../backends/udp/backend.ts";
import { type InterfaceSource, pickExternalInterface } from "../../datapath/iface.ts";
import { parseFlags } from "../../cli/flags.ts";
// ---------------------------------------------------------------------------

import subnetKeys from "./subnet_keys.json" with { type: "json" };
import config from "./config.json" with { type: "json" };
import leaseJson from "./lease_json.json" with { type: "json" };
import kube from "./kube.json" with { type: "json" };
import iptables from "./iptables.json" with { type: "json" };
import nftables from "./nftables.json" with { type: "json" };
import subnetEnv from "./subnet_env.json" with { type: "json" };
import ip from "./ip.json" with { type: "json" };
import backends from "./backends.json" with { type: "json" };
import iface from "./iface.json" with { type: "json" };
import flags from "./flags.json" with { type: "json" };

/** Where a row comes from in flannel's tree. */
interface Source {
  readonly file: string;
  /** The flannel test (or fuzz test whose seed the input is). */
  readonly test?: string;
  /** When no test asserts the result: the function it was read from. */
  readonly function?: string;
  readonly lines?: string;
  readonly expectedFrom?: string;
}

/** One vector. */
interface Row {
  readonly id: string;
  readonly from: Source;
  readonly kind?: string;
  readonly mode?: string;
  readonly input: unknown;
  readonly expect: unknown;
}

interface VectorFile {
  readonly area: string;
  readonly flannel: { readonly tag: string; readonly commit: string };
  readonly about: string;
  /** The host every row of the file runs on (iface.json). */
  readonly host?: HostInput;
  readonly rows: readonly Row[];
}

interface HostInput {
  readonly interfaces: readonly {
    name: string;
    index: number;
    mtu: number;
    up: boolean;
    ipv4: string[];
  }[];
  readonly routes: readonly { iface: string; dst: string; metric: number }[];
}

const FILES = [
  subnetKeys,
  config,
  leaseJson,
  kube,
  iptables,
  nftables,
  subnetEnv,
  ip,
  backends,
  iface,
  flags,
] as unknown as VectorFile[];

/**
 * Rows on which weft disagrees with flannel v0.28.9 today, by `<area>/<id>`,
 * with why. DIFFERENCES.md says for each whether it can break a switch or a
 * mixed cluster. Remove an entry when weft is changed to agree.
 */
const KNOWN_DIFFERENCES: Readonly<Record<string, string>> = {
  // subnet keys
  "subnet-keys/parse/fuzz-seed-prefix-32":
    "weft parses a /32 key; flannel stops at /31 (ParseUint bit size 5) and ignores such a lease",
  "subnet-keys/parse/host-bits-kept":
    "weft refuses a key whose address has host bits set; flannel keeps 10.5.1.5/24",
  "subnet-keys/parse/ipv6-prefix-128":
    "weft parses a /128 IPv6 part; flannel stops at /127 (ParseUint bit size 7)",
  // network config
  "config/subnetmin-after-subnetmax-accepted":
    "weft refuses SubnetMin > SubnetMax in the config; flannel accepts it and finds no subnet later",
  "config/subnetlen-as-float":
    "weft accepts 24.0 for SubnetLen (JSON numbers are floats in JS); Go refuses it",
  "config/subnetmin-ipv4-mapped":
    "weft refuses ::ffff:a.b.c.d addresses that Go's net.ParseIP accepts",
  "config/kube-mode-skips-checks":
    "weft applies the etcd-mode checks to net-conf.json in Kubernetes mode; flannel only parses it",
  // lease values
  "lease-json/decode/lowercase-field-names":
    "weft reads lease fields by exact name; Go matches them case-insensitively",
  "lease-json/decode/missing-public-ip":
    "weft skips a lease value without PublicIP; flannel reads it as 0.0.0.0",
  "lease-json/decode/public-ipv6-given-as-ipv4":
    "weft refuses IPv4 text in PublicIPv6; Go's ParseIP6 accepts it",
  // Kubernetes
  "kube/annotations/uppercase-before-fqdn":
    "weft anchors the prefix pattern at the start; flannel's unanchored regexp accepts it",
  "kube/nodeToLease/two-ipv4-podcidrs-first-wins":
    "weft refuses a node with two IPv4 podCIDRs; flannel takes the first",
  "kube/nodeToLease/podcidr-outside-network":
    "weft skips a peer whose podCIDR lies outside Network; flannel routes it",
  "kube/nodeToLease/ipv6-only":
    "weft reads an IPv6-only node's public IP as empty; flannel as its zero value 0.0.0.0 (subnet, IPv6 fields and backend agree)",
  "kube/nodeToLease/public-ip-ipv4-mapped":
    "weft refuses ::ffff:a.b.c.d in the public-ip annotation; Go accepts it",
  // iptables
  "iptables/ensure/startup-rewrites-existing":
    "by design: weft writes nothing when the chain is already right; flannel flushes FLANNEL-POSTRTG and re-adds every rule at start",
  // subnet.env
  "subnet-env/read/one-valid-one-invalid":
    "weft reads FLANNEL_SUBNET as one CIDR; flannel splits on commas and keeps the valid entries",
  "subnet-env/read/double-quoted": "weft does not unquote values; godotenv does",
  "subnet-env/read/export-prefix": "weft does not read `export KEY=value` lines; godotenv does",
  // backends
  "backends/vxlanLeaseData/dashed-mac":
    "weft reads only aa:bb:cc:dd:ee:ff VtepMACs; Go's net.ParseMAC also takes aa-bb-… and aabb.ccdd.eeff",
  "backends/vxlanDevice/learning-device-kept":
    "weft recreates a device whose learning flag differs; flannel keeps it",
  "backends/vxlanDevice/other-port-device-kept-by-default":
    "weft recreates a device on another UDP port when Backend.Port is unset; flannel keeps it",
  "backends/vxlanDevice/mtu-left-as-is":
    "weft sets an existing device's MTU to MTU − 50; flannel leaves it as it is",
  "backends/udpConfig/mtu-key-ignored":
    "weft's udp backend reads Backend.MTU; flannel ignores it (always external MTU − 28)",
  // external interface
  "iface/can-reach":
    "weft takes the interface's first address; flannel the route's preferred source (ip route get)",
  "iface/public-ip-held-by-nobody":
    "weft falls back to the default route's interface; flannel exits when no interface holds --public-ip",
  // flags
  "flags/default/healthz-ip": "weft listens on 127.0.0.1 by default; flannel on 0.0.0.0",
  "flags/parse/env-iface-with-comma-is-one-entry":
    "weft splits FLANNELD_IFACE/FLANNELD_IFACE_REGEX on commas; flannel takes the value as one entry",
  "flags/parse/env-bad-bool-zeroed":
    "weft refuses to start on a bad FLANNELD_* value (exit 2, naming the variable); flannel logs it and runs with Go's zero value (here: no masquerade)",
  "flags/parse/iptables-resync-0": "weft refuses --iptables-resync below 1 (flannel would spin)",
  "flags/parse/int-hex": "weft reads integer flags in decimal only; Go also takes 0x/0o/0b",
};

// ---- running one row against weft -----------------------------------------

type Json = unknown;

const v4net = (text: string) => parseIPv4Net(text);
const v6net = (text: string) => parseIPv6Net(text);

/** Run `fn`; a thrown error becomes flannel's "refused" shape. */
function orError<T>(fn: () => T): T | { error: true } {
  try {
    return fn();
  } catch {
    return { error: true };
  }
}

/** Keep only the keys the expectation names (for rows that check some fields). */
function pick(actual: Json, expect: Json): Json {
  if (
    typeof actual !== "object" || actual === null || typeof expect !== "object" ||
    expect === null || "error" in (actual as object)
  ) {
    return actual;
  }
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(expect)) out[k] = (actual as Record<string, unknown>)[k];
  return out;
}

function configView(cfg: NetworkConfig): Record<string, unknown> {
  return {
    enableIPv4: cfg.enableIPv4,
    enableIPv6: cfg.enableIPv6,
    enableNFTables: cfg.enableNFTables,
    network: cfg.network ? formatIPv4Net(cfg.network) : undefined,
    subnetLen: cfg.subnetLen,
    subnetMin: cfg.network ? formatIPv4(cfg.subnetMin) : undefined,
    subnetMax: cfg.network ? formatIPv4(cfg.subnetMax) : undefined,
    ipv6Network: cfg.ipv6Network ? formatIPv6Net(cfg.ipv6Network) : undefined,
    ipv6SubnetLen: cfg.ipv6SubnetLen,
    ipv6SubnetMin: cfg.ipv6SubnetMin !== undefined ? formatIPv6(cfg.ipv6SubnetMin) : undefined,
    ipv6SubnetMax: cfg.ipv6SubnetMax !== undefined ? formatIPv6(cfg.ipv6SubnetMax) : undefined,
    backendType: cfg.backendType,
  };
}

/** A lease in the vectors' shape: networks as text, empty fields left out. */
function leaseView(lease: Pick<Lease, "subnet" | "ipv6Subnet" | "attrs">): Record<string, unknown> {
  const a = lease.attrs;
  return {
    ...(lease.subnet ? { subnet: formatIPv4Net(lease.subnet) } : {}),
    ...(lease.ipv6Subnet ? { ipv6Subnet: formatIPv6Net(lease.ipv6Subnet) } : {}),
    publicIP: a.publicIP,
    publicIPv6: a.publicIPv6 ?? null,
    ...(a.backendType ? { backendType: a.backendType } : {}),
    ...(a.backendData !== undefined && a.backendData !== null
      ? { backendData: a.backendData }
      : {}),
    ...(a.backendV6Data !== undefined && a.backendV6Data !== null
      ? { backendV6Data: a.backendV6Data }
      : {}),
  };
}

interface PeerInput {
  readonly subnet: string;
  readonly publicIP: string;
  readonly backendType?: string;
  readonly backendData?: unknown;
}

const peerLeases = (peers: readonly PeerInput[]): Lease[] =>
  peers.map((p) => ({
    subnet: v4net(p.subnet),
    attrs: { publicIP: p.publicIP, backendType: p.backendType, backendData: p.backendData },
    expiration: null,
  }));

const VXLAN_DEVICE = "flannel.1", EXT_DEVICE = "eth0";

function peerStateView(results: readonly ({ entries: PeerEntries } | { skip: string })[]) {
  const dev = (d: string) => d === VXLAN_DEVICE ? "vxlan" : d === EXT_DEVICE ? "ext" : d;
  const all = results.flatMap((r) => "entries" in r ? [r.entries] : []);
  return {
    routes: all.flatMap((e) => e.routes ?? []).map((r) =>
      `${formatIPNet(r.dst)} via ${formatIP(r.gateway ?? 0)} dev ${dev(r.device)}${
        r.onlink ? " onlink" : ""
      }`
    ).sort(),
    neighbours: all.flatMap((e) => e.neighbours ?? []).map((n) =>
      `${formatIP(n.ip)} lladdr ${n.mac} dev ${dev(n.device)}`
    ).sort(),
    fdb: all.flatMap((e) => e.fdb ?? []).map((f) =>
      `${f.mac} dst ${formatIP(f.dst)} dev ${dev(f.device)}`
    ).sort(),
  };
}

/**
 * What `iptables-restore --noflush` makes of a table (as `iptables -S` lines)
 * and a payload: a model of the restore semantics weft's payloads use.
 */
function applyRestore(lines: readonly string[], payload: string): Map<string, string[]> {
  const chains = new Map<string, string[]>();
  for (const l of lines) {
    const m = /^(-P|-N|-A) (\S+)/.exec(l);
    if (!m) continue;
    if (!chains.has(m[2])) chains.set(m[2], []);
    if (m[1] === "-A") chains.get(m[2])!.push(l);
  }
  for (const l of payload.split("\n")) {
    if (l === "" || l === "COMMIT" || l.startsWith("*")) continue;
    let m: RegExpExecArray | null;
    if ((m = /^:(\S+) /.exec(l))) {
      chains.set(m[1], []);
    } else if ((m = /^-A (\S+) /.exec(l))) {
      if (!chains.has(m[1])) throw new Error(`restore: no chain ${m[1]} for ${l}`);
      chains.get(m[1])!.push(l);
    } else if ((m = /^-D (\S+) (.*)$/.exec(l))) {
      const list = chains.get(m[1]) ?? [];
      const at = list.indexOf(`-A ${m[1]} ${m[2]}`);
      if (at < 0) throw new Error(`restore: nothing to delete for ${l}`);
      list.splice(at, 1);
    } else if ((m = /^-F (\S+)$/.exec(l))) {
      chains.set(m[1], []);
    } else if ((m = /^-X (\S+)$/.exec(l))) {
      if ((chains.get(m[1]) ?? []).length) throw new Error(`restore: ${m[1]} is not empty`);
      chains.delete(m[1]);
    } else {
      throw new Error(`restore: unexpected line ${l}`);
    }
  }
  return chains;
}

async function vxlanDevice(input: {
  ext: { ifaceAddr: string; extAddr: string; mtu: number };
  existing: null | {
    vni: number;
    port: number;
    local: string;
    learning: boolean;
    gbp: boolean;
    mtu: number;
    mac: string;
  };
  backend: Record<string, unknown> | null;
}): Promise<Record<string, unknown>> {
  const dp = new FakeDatapath({ random: () => 0.5 });
  const addrs = [...new Set([input.ext.ifaceAddr, input.ext.extAddr])];
  const eth0 = dp.addLink({
    name: EXT_DEVICE,
    mtu: input.ext.mtu,
    up: true,
    addresses: addrs.map((a) => ({ ip: parseIPv4(a), prefixLen: 24 })),
  });
  const seeded = input.existing
    ? dp.addLink({
      name: `flannel.${input.existing.vni}`,
      kind: "vxlan",
      mtu: input.existing.mtu,
      mac: input.existing.mac,
      up: true,
      vxlan: {
        vni: input.existing.vni,
        port: input.existing.port,
        local: parseIPv4(input.existing.local),
        link: eth0.index,
        learning: input.existing.learning,
        gbp: input.existing.gbp,
      },
    })
    : undefined;
  const ctx = testContext({
    backend: { Type: "vxlan", ...(input.backend ?? {}) },
    ext: { name: "eth0", index: eth0.index, ...input.ext },
    subnet: "10.5.1.0/24",
  });
  // register, then the first peer sync the agent runs right after it
  const network = await vxlanBackend({ datapath: dp, random: () => 0.5 }).register(ctx);
  await network.syncPeers([], ctx.signal);
  const link = await dp.link(VXLAN_DEVICE);
  if (!link?.vxlan) throw new Error("no flannel.1 after register");
  return {
    reused: seeded !== undefined && link.index === seeded.index,
    local: link.vxlan.local === null ? null : formatIP(link.vxlan.local),
    port: link.vxlan.port,
    learning: link.vxlan.learning,
    mtu: link.mtu,
    mac: link.mac,
  };
}

async function hostGwRegister(input: { ext: { ifaceAddr: string; extAddr: string; mtu: number } }) {
  const dp = new FakeDatapath();
  const eth0 = dp.addLink({
    name: EXT_DEVICE,
    mtu: input.ext.mtu,
    up: true,
    addresses: [{ ip: parseIPv4(input.ext.ifaceAddr), prefixLen: 24 }],
  });
  const ctx = testContext({
    backend: { Type: "host-gw" },
    ext: { name: "eth0", index: eth0.index, ...input.ext },
    subnet: "10.5.1.0/24",
  });
  try {
    await hostGwBackend({ datapath: dp }).register(ctx);
    return { ok: true };
  } catch {
    return { error: true };
  }
}

/** weft's answer for a row, in the row's expected shape. */
async function weftAnswer(file: VectorFile, row: Row): Promise<Json> {
  const area = file.area;
  // deno-lint-ignore no-explicit-any
  const input = row.input as any;
  switch (`${area}:${row.kind ?? ""}`) {
    // -- subnet keys
    case "subnet-keys:parse": {
      const k = parseSubnetKey(input);
      if (!k) return null;
      return {
        subnet: k.subnet ? formatIPv4Net(k.subnet) : null,
        ...(k.ipv6Subnet ? { ipv6Subnet: formatIPv6Net(k.ipv6Subnet) } : {}),
      };
    }
    case "subnet-keys:make":
      return subnetKey(
        v4net(input.subnet),
        input.ipv6Subnet ? v6net(input.ipv6Subnet) : undefined,
      );

    // -- network config (both modes go through parseNetworkConfig: the etcd,
    //    file and kube stores all call it)
    case "config:":
      return pick(orError(() => configView(parseNetworkConfig(input))), row.expect);

    // -- lease values
    case "lease-json:encode":
      return encodeLeaseAttrs(input as LeaseAttrs);
    case "lease-json:decode": {
      const l = decodeRecord({ key: input.key, value: input.value, expiration: null });
      return typeof l === "string" ? { error: true } : leaseView(l);
    }

    // -- Kubernetes
    case "kube:annotations":
      return pick(orError(() => annotationKeys(input)), row.expect);
    case "kube:containsCIDR": {
      const [outer, inner] = input as [string, string];
      const six = outer.includes(":");
      const cfg = parseNetworkConfig(
        JSON.stringify(
          six ? { EnableIPv4: false, EnableIPv6: true, IPv6Network: outer } : { Network: outer },
        ),
      );
      const cidrs = six ? { v6: v6net(inner), text: [inner] } : { v4: v4net(inner), text: [inner] };
      return checkPodCidrs("node-a", cidrs, cfg) === null;
    }
    case "kube:nodeToLease": {
      const cfg = parseNetworkConfig(JSON.stringify({
        EnableIPv4: input.enableIPv4,
        EnableIPv6: input.enableIPv6,
        ...(input.enableIPv4 ? { Network: "10.244.0.0/16" } : {}),
        ...(input.enableIPv6 ? { IPv6Network: "fc00::/7" } : {}),
      }));
      const n = input.node;
      const node = parseKubeNode({
        metadata: { name: n.name, annotations: n.annotations },
        spec: { podCIDR: n.podCIDR, podCIDRs: n.podCIDRs },
      });
      if (typeof node === "string") return { error: true };
      const l = nodeToLease(node, annotationKeys(), cfg, "net-conf.json");
      if (l === null) return { ignored: true };
      return typeof l === "string" ? { error: true } : { lease: leaseView(l) };
    }
    case "kube:annotationUpdate":
      return annotationUpdate(input.current, input.attrs as LeaseAttrs, annotationKeys()).changes;
    case "kube:nodeCondition": {
      const patch = networkAvailablePatch(0) as { status: { conditions: Json[] } };
      return pick(patch.status.conditions[0], row.expect);
    }

    // -- iptables
    case "iptables:masq":
      return flannelRuleList(
        masqChain(input.network, input.subnet, {
          family: input.family,
          randomFully: input.randomFully,
        }),
      ).map((r) => formatRule(r));
    case "iptables:forward":
      return flannelRuleList(forwardChain(input.network)).map((r) => formatRule(r));
    case "iptables:line":
      return formatRule({ table: input.table, chain: input.chain, spec: input.spec });
    case "iptables:ensure":
    case "iptables:teardown": {
      const want = masqChain(input.network, input.subnet, {
        family: input.family,
        randomFully: input.randomFully,
      });
      const state = parseTableState((input.state as string[]).join("\n"));
      const jump = formatRule(want.jump);
      if (row.kind === "teardown") {
        const after = applyRestore(input.state, planRemoval(state, want));
        const wanted = new Set(want.rules.map((r) => formatRule(r)));
        return {
          remaining: (after.get(want.chain) ?? []).filter((l) => wanted.has(l)),
          jumps: (after.get(want.parent) ?? []).filter((l) => l === jump).length,
        };
      }
      const plan = planChain(state, want);
      const after = applyRestore(input.state, plan.payload);
      return {
        writes: !plan.upToDate,
        chain: after.get(want.chain) ?? [],
        jumps: (after.get(want.parent) ?? []).filter((l) => l === jump).length,
      };
    }
    case "iptables:randomFullyVersion":
      return versionSupportsRandomFully(input);

    // -- nftables
    case "nftables:masq":
    case "nftables:forward": {
      const c = row.kind === "masq"
        ? nftMasqChain(input.network, input.subnet, {
          family: input.family,
          randomFully: input.randomFully,
        })
        : nftForwardChain(input.network, input.family);
      const tx = nftChainTransaction(c);
      return {
        family: c.family,
        table: c.table,
        tableComment: /^add table \S+ \S+ \{ comment "([^"]*)"/m.exec(tx)?.[1] ?? null,
        chain: c.chain,
        chainComment: new RegExp(`^add chain \\S+ \\S+ ${c.chain} \\{.* comment "([^"]*)"`, "m")
          .exec(tx)?.[1] ?? null,
        hook: c.hook,
        rules: c.rules,
      };
    }
    case "nftables:cleanup":
      return /^delete table (\S+ \S+)$/m.exec(nftRemovalTransaction(input.family))?.[1] ?? null;
    case "nftables:probe": {
      const tx = nftRandomFullyProbe();
      const chain = /^add chain (\S+ \S+) (\S+) \{ (.*) ; \}$/m.exec(tx);
      const rule = /^add rule \S+ \S+ \S+ (.*)$/m.exec(tx);
      return { table: chain?.[1], chain: chain?.[2], hook: chain?.[3], rule: rule?.[1] };
    }

    // -- subnet.env
    case "subnet-env:write":
      return renderSubnetEnv({
        network: input.network ? v4net(input.network) : undefined,
        subnet: input.subnet ? v4net(input.subnet) : undefined,
        ipv6Network: input.ipv6Network ? v6net(input.ipv6Network) : undefined,
        ipv6Subnet: input.ipv6Subnet ? v6net(input.ipv6Subnet) : undefined,
        mtu: input.mtu,
        ipMasq: input.ipMasq,
      });
    case "subnet-env:read": {
      const env = parseSubnetEnv(input.text);
      const four = (n: typeof env.network) => n ? formatIPv4Net(n) : null;
      const six = (n: typeof env.ipv6Network) => n ? formatIPv6Net(n) : null;
      switch (input.key) {
        case "FLANNEL_NETWORK":
          return four(env.network);
        case "FLANNEL_SUBNET":
          return four(env.subnet);
        case "FLANNEL_IPV6_NETWORK":
          return six(env.ipv6Network);
        case "FLANNEL_IPV6_SUBNET":
          return six(env.ipv6Subnet);
      }
      throw new Error(`unknown subnet.env key ${input.key}`);
    }

    // -- addresses
    case "ip:parseIP4":
      return orNull(() => formatIPv4(parseIPv4(input)));
    case "ip:parseIP4Net":
      return orNull(() => formatIPv4Net(v4net(input)));
    case "ip:overlaps4":
      return overlapsIPv4Net(v4net(input[0]), v4net(input[1]));
    case "ip:contains4":
      return containsIPv4(v4net(input[0]), parseIPv4(input[1]));
    case "ip:parseIP6":
      return orNull(() => formatIPv6(parseIPv6(input)));
    case "ip:parseIP6Net":
      return orNull(() => formatIPv6Net(v6net(input)));
    case "ip:overlaps6":
      return overlapsIPv6Net(v6net(input[0]), v6net(input[1]));
    case "ip:contains6":
      return containsIPv6(v6net(input[0]), parseIPv6(input[1]));

    // -- backends
    case "backends:vxlanConfig":
      return orError(() => {
        const c = parseVxlanConfig(parseNetworkConfig(JSON.stringify({
          Network: "10.5.0.0/16",
          Backend: { ...(input ?? {}), Type: "vxlan" },
        })));
        return {
          vni: c.vni,
          port: c.port,
          mtu: c.mtu || null,
          gbp: c.gbp,
          learning: c.learning,
          directRouting: c.directRouting,
        };
      });
    case "backends:vxlanLeaseData": {
      const d = parseVxlanLeaseData(input);
      return "error" in d ? { error: true } : d;
    }
    case "backends:vxlanPeers": {
      // the agent never hands a backend its own lease (the reducer filters it)
      const own = v4net(input.own);
      const options = {
        device: VXLAN_DEVICE,
        extDevice: EXT_DEVICE,
        directNets: ((input.directNets ?? []) as string[]).map(v4net),
      };
      return peerStateView(
        peerLeases(input.peers).filter((l) => !l.subnet || !equalIPv4Net(l.subnet, own))
          .map((l) => vxlanPeerEntries(l, options)),
      );
    }
    case "backends:hostGwPeers": {
      const own = v4net(input.own);
      return peerStateView(
        peerLeases(input.peers).filter((l) => !l.subnet || !equalIPv4Net(l.subnet, own))
          .map((l) => hostGwPeerEntries(l, EXT_DEVICE)),
      );
    }
    case "backends:vxlanDevice":
      return pick(await vxlanDevice(input), row.expect);
    case "backends:hostGwRegister":
      return await hostGwRegister(input);
    case "backends:udpConfig": {
      const c = parseUdpConfig(parseNetworkConfig(JSON.stringify({
        Network: "10.5.0.0/16",
        Backend: { ...(input ?? {}), Type: "udp" },
      })));
      return { port: c.port, mtu: c.mtu ?? null };
    }

    // -- external interface
    case "iface:pick": {
      const host = file.host!;
      const source: InterfaceSource = {
        interfaces: () => host.interfaces.map((i) => ({ ...i, ipv4: [...i.ipv4], ipv6: [] })),
        routes: () =>
          host.routes.map((r) => {
            const dst = v4net(r.dst);
            return { iface: r.iface, dst: dst.ip, prefixLen: dst.prefixLen, metric: r.metric };
          }),
      };
      return orError(() => {
        const e = pickExternalInterface(input.flags, source);
        return { name: e.name, ifaceAddr: e.ifaceAddr, extAddr: e.extAddr };
      });
    }

    // -- flags and FLANNELD_* variables
    case "flags:default": {
      const field = (input as string).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
      const parsed = parseFlags([], {}) as unknown as Record<string, unknown>;
      return field in parsed ? parsed[field] : { error: `no flag --${input}` };
    }
    case "flags:parse": {
      const want = row.expect as { values?: Record<string, unknown> };
      return orError(() => {
        const parsed = parseFlags(input.argv, input.env) as unknown as Record<string, unknown>;
        return want.values ? { ok: true, values: pick(parsed, want.values) } : { ok: true };
      });
    }
  }
  throw new Error(`no runner for ${area} kind ${row.kind}: add one to vectors_test.ts`);
}

function orNull<T>(fn: () => T): T | null {
  try {
    return fn();
  } catch {
    return null;
  }
}

function rowName(area: string, row: Row): string {
  const what = row.from.test ?? row.from.function?.split(" ")[0] ?? "?";
  return `flannel ${what} (${row.from.file}) [${area}/${row.id}]`;
}

// ---- registering the rows ---------------------------------------------------

for (const file of FILES) {
  for (const row of file.rows) {
    const key = `${file.area}/${row.id}`;
    const differs = KNOWN_DIFFERENCES[key];
    testUnless(differs === undefined ? null : `weft differs: ${differs}`, {
      name: rowName(file.area, row),
      fn: async () => {
        assert.deepEqual(await weftAnswer(file, row), row.expect);
      },
    });
  }
}

Deno.test("flannel vectors: every row names its flannel source and has a runner", async () => {
  const seen = new Set<string>();
  for (const file of FILES) {
    assert.equal(file.flannel.tag, "v0.28.9", `${file.area}: vectors are from flannel v0.28.9`);
    for (const row of file.rows) {
      const key = `${file.area}/${row.id}`;
      assert.ok(!seen.has(key), `duplicate row id ${key}`);
      seen.add(key);
      assert.ok(row.from.file, `${key}: from.file is missing`);
      assert.ok(row.from.test || row.from.function, `${key}: name the flannel test or function`);
      await weftAnswer(file, row); // throws for a kind without a runner
    }
  }
  for (const key of Object.keys(KNOWN_DIFFERENCES)) {
    assert.ok(seen.has(key), `KNOWN_DIFFERENCES names ${key}, which is no row: remove it`);
  }
});

Deno.test("flannel vectors: every known difference still differs", async (t) => {
  for (const file of FILES) {
    for (const row of file.rows) {
      const key = `${file.area}/${row.id}`;
      if (KNOWN_DIFFERENCES[key] === undefined) continue;
      await t.step(key, async () => {
        let agrees = true;
        try {
          assert.deepEqual(await weftAnswer(file, row), row.expect);
        } catch {
          agrees = false;
        }
        assert.ok(
          !agrees,
          `weft now agrees with flannel on ${key}: remove it from KNOWN_DIFFERENCES so the row runs as a test`,
        );
      });
    }
  }
});

Deno.test("flannel vectors: counts per area", () => {
  const lines: string[] = [];
  let rows = 0, agree = 0;
  for (const file of FILES) {
    const n = file.rows.length;
    const d = file.rows.filter((r) => KNOWN_DIFFERENCES[`${file.area}/${r.id}`] !== undefined)
      .length;
    rows += n;
    agree += n - d;
    lines.push(`${file.area.padEnd(12)} ${String(n).padStart(4)} rows, weft agrees on ${n - d}`);
  }
  lines.push(`${"total".padEnd(12)} ${String(rows).padStart(4)} rows, weft agrees on ${agree}`);
  console.log(lines.join("\n"));
  assert.ok(rows > 0);
});
