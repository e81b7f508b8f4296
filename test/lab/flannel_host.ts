/**
 * A lab host put in exactly the state flanneld v0.28 leaves behind, built
 * from flannel's source (v0.28.9) with `ip`, `bridge`, `sysctl`,
 * `iptables-restore` and `etcdctl`/`kubectl` — never with weft's code — so
 * that the takeover tests start weft on a host that ran flannel.
 *
 * What flanneld leaves (file:line in flannel v0.28.9):
 * - vxlan: `flannel.<VNI>` created with the MAC (random locally-administered,
 *   or the one in the node's annotation), MTU = external MTU − 50, VNI 1,
 *   `local` = ExtAddr (the public IP), `dev` = the external interface,
 *   `nolearning`, and no port attribute, so the kernel's default 8472
 *   (`pkg/backend/vxlan/device.go:59-72`, `vxlan.go:130,207-218`);
 *   `net.ipv6.conf.flannel/1.accept_ra=0` (`device.go:78`); address
 *   `<subnet.ip>/32`, set up (`device.go:133-140`). Per peer, in this order
 *   (`vxlan_network.go:312-340`): a permanent neighbour `<peer subnet.ip>
 *   lladdr <VtepMAC>` (NeighSet = create|replace), a permanent `self` fdb
 *   entry `<VtepMAC> dst <peer PublicIP>`, and `ip route replace <peer
 *   subnet> via <peer subnet.ip> dev flannel.1 onlink` (proto boot).
 * - vxlan with IPv6 (`EnableIPv6`, `vxlan.go:222-247`): also `flannel-v6.<VNI>`
 *   with its own MAC, the same MTU request (external − 50), `local` = the
 *   public IPv6 address, address `<ipv6Subnet.ip>/128`; per IPv6 peer a
 *   permanent neighbour `<peer ipv6Subnet.ip> lladdr <v6 VtepMAC>`, fdb
 *   `<v6 VtepMAC> dst <peer PublicIPv6> self permanent` and `<peer
 *   ipv6Subnet> via <peer ipv6Subnet.ip> dev flannel-v6.1 onlink`
 *   (`vxlan_network.go:398-453`); ip6tables FLANNEL-FWD (and FLANNEL-POSTRTG
 *   with `ff00::/8`, `iptables.go:171-231`).
 * - host-gw: per peer `ip route replace <peer subnet> via <peer PublicIP> dev
 *   <ext>` (`route_network.go`, `hostgw.go`).
 * - iptables (`pkg/trafficmngr/iptables/iptables.go`): nat chain
 *   `FLANNEL-POSTRTG` jumped from POSTROUTING with `--ip-masq`, filter chain
 *   `FLANNEL-FWD` jumped from FORWARD (`--iptables-forward-rules`, default),
 *   rule text as flannel's `TestRules` vectors.
 * - `subnet.env` (`pkg/subnet/subnet.go` WriteSubnetFile): NETWORK, SUBNET
 *   (`.1` address), MTU, IPMASQ.
 * - etcd: `<prefix>/subnets/<ip>-<len>` with flannel's JSON bound to a 24 h
 *   lease (`pkg/subnet/etcd/registry.go`); Kubernetes: the node's podCIDR
 *   and the four annotations plus `NetworkUnavailable=False`/`FlannelIsUp`
 *   (`pkg/subnet/kube/kube.go`).
 *
 * @module
 */

import * as fs from "node:fs";
import * as path from "node:path";
import { cniAdd } from "./cni.ts";
import type { Lab, LabHost } from "./lab.ts";
import type { EtcdServer } from "../../testing/etcd_server.ts";
import type { LabKube } from "../../testing/fake_kube_main.ts";
import { formatIPv6, parseIPv6Net } from "../../core/ip.ts";

/** The flannel annotation prefix. */
export const FLANNEL_ANNOTATIONS = "flannel.alpha.coreos.com/";

/** One flannel host as its peers see it. */
export interface FlannelNode {
  readonly host: LabHost;
  /** e.g. `10.5.1.0/24`. */
  readonly subnet: string;
  /** What the lease publishes (ExtAddr). */
  readonly publicIP: string;
  /** vxlan only. */
  readonly vtepMac?: string;
  /** With IPv6 (`FlannelSetup.ipv6Network`): e.g. `fd00:10:244:1::/64`. */
  readonly ipv6Subnet?: string;
  /** With IPv6: what the lease publishes as PublicIPv6. */
  readonly publicIPv6?: string;
  /** vxlan with IPv6: flannel-v6.1's MAC (`BackendV6Data.VtepMAC`). */
  readonly vtepMacV6?: string;
}

/** How the flannel cluster ran. */
export interface FlannelSetup {
  readonly backend: "vxlan" | "host-gw";
  /** e.g. `10.5.0.0/16`. */
  readonly network: string;
  /** `--ip-masq`. */
  readonly ipMasq: boolean;
  /** `IPv6Network` when `EnableIPv6` (dual stack), e.g. `fd00:10:244::/48`. */
  readonly ipv6Network?: string;
}

/** A random locally-administered unicast MAC, as flannel's `mac.NewHardwareAddr`. */
export function flannelMac(): string {
  const b = crypto.getRandomValues(new Uint8Array(6));
  b[0] = (b[0] & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(":");
}

/** The lease value flannel writes to etcd (`json.Marshal` of LeaseAttrs), by hand. */
export function flannelLeaseJson(setup: FlannelSetup, node: FlannelNode): string {
  return setup.backend === "vxlan"
    ? `{"PublicIP":"${node.publicIP}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${node.vtepMac}"}}`
    : `{"PublicIP":"${node.publicIP}","PublicIPv6":null,"BackendType":"host-gw"}`;
}

/**
 * The node annotations flannel's kube subnet manager writes (`kube.go:420-464`):
 * with IPv6 also `backend-v6-data` (vxlan: `{"VNI":1,"VtepMAC":…}`, host-gw:
 * `null`) and `public-ipv6`.
 */
export function flannelAnnotations(
  setup: FlannelSetup,
  node: FlannelNode,
): Record<string, string> {
  const v6: Record<string, string> = setup.ipv6Network && node.publicIPv6
    ? {
      [FLANNEL_ANNOTATIONS + "backend-v6-data"]: setup.backend === "vxlan"
        ? `{"VNI":1,"VtepMAC":"${node.vtepMacV6}"}`
        : "null",
      [FLANNEL_ANNOTATIONS + "public-ipv6"]: node.publicIPv6,
    }
    : {};
  return {
    ...v6,
    [FLANNEL_ANNOTATIONS + "backend-data"]: setup.backend === "vxlan"
      ? `{"VNI":1,"VtepMAC":"${node.vtepMac}"}`
      : "null",
    [FLANNEL_ANNOTATIONS + "backend-type"]: setup.backend,
    [FLANNEL_ANNOTATIONS + "kube-subnet-manager"]: "true",
    [FLANNEL_ANNOTATIONS + "public-ip"]: node.publicIP,
  };
}

/** subnet.env as flannel writes it (`subnet.go:70-90`; IPv6 lines with `ipv6Network`). */
export function flannelSubnetEnv(setup: FlannelSetup, node: FlannelNode, mtu: number): string {
  const [net, len] = node.subnet.split("/");
  const o = net.split(".").map(Number);
  const v6: string[] = [];
  if (setup.ipv6Network && node.ipv6Subnet) {
    const sn = parseIPv6Net(node.ipv6Subnet);
    v6.push(
      `FLANNEL_IPV6_NETWORK=${setup.ipv6Network}`,
      `FLANNEL_IPV6_SUBNET=${formatIPv6(sn.ip + 1n)}/${sn.prefixLen}`,
    );
  }
  return [
    `FLANNEL_NETWORK=${setup.network}`,
    `FLANNEL_SUBNET=${o[0]}.${o[1]}.${o[2]}.${o[3] + 1}/${len}`,
    ...v6,
    `FLANNEL_MTU=${mtu}`,
    `FLANNEL_IPMASQ=${setup.ipMasq}`,
    "",
  ].join("\n");
}

/**
 * flannel's iptables rules for this host, as one `iptables-restore --noflush`
 * payload; with `family: 6` the ip6tables ones (IPv6Network, the IPv6
 * subnet, `ff00::/8`) for `ip6tables-restore`.
 */
export function flannelIptables(setup: FlannelSetup, node: FlannelNode, family: 4 | 6 = 4): string {
  const n = family === 4 ? setup.network : setup.ipv6Network!;
  const s = family === 4 ? node.subnet : node.ipv6Subnet!;
  const multicast = family === 4 ? "224.0.0.0/4" : "ff00::/8";
  const masq = '-m comment --comment "flanneld masq"';
  const fwd = '-m comment --comment "flanneld forward"';
  const lines: string[] = [];
  if (setup.ipMasq) {
    lines.push(
      "*nat",
      ":FLANNEL-POSTRTG - [0:0]",
      `-A POSTROUTING ${masq} -j FLANNEL-POSTRTG`,
      `-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 ${masq} -j RETURN`,
      `-A FLANNEL-POSTRTG -s ${s} -d ${n} ${masq} -j RETURN`,
      `-A FLANNEL-POSTRTG -s ${n} -d ${s} ${masq} -j RETURN`,
      `-A FLANNEL-POSTRTG ! -s ${n} -d ${s} ${masq} -j RETURN`,
      `-A FLANNEL-POSTRTG -s ${n} ! -d ${multicast} ${masq} -j MASQUERADE --random-fully`,
      `-A FLANNEL-POSTRTG ! -s ${n} -d ${n} ${masq} -j MASQUERADE --random-fully`,
      "COMMIT",
    );
  }
  lines.push(
    "*filter",
    ":FLANNEL-FWD - [0:0]",
    `-A FORWARD ${fwd} -j FLANNEL-FWD`,
    `-A FLANNEL-FWD -s ${n} ${fwd} -j ACCEPT`,
    `-A FLANNEL-FWD -d ${n} ${fwd} -j ACCEPT`,
    "COMMIT",
    "",
  );
  return lines.join("\n");
}

/** Options of {@link buildFlannelHost}. */
export interface BuildOptions {
  readonly setup: FlannelSetup;
  /** This host. */
  readonly node: FlannelNode;
  /** Every other flannel host. */
  readonly peers: readonly FlannelNode[];
  /** Where subnet.env goes. */
  readonly subnetFile: string;
  /** The external interface's MTU (lab: 1500). */
  readonly extMtu?: number;
}

/**
 * Put a lab host in flanneld's state: device (vxlan), per-peer entries,
 * iptables rules, subnet.env; then wire its pods with the CNI plugins as
 * flannel's CNI plugin would (bridge + host-local from subnet.env).
 *
 * @param lab The lab.
 * @param options The cluster's setup, this host and its peers, the subnet file.
 * @returns The pods' (first) addresses: IPv4 when enabled.
 * @throws {Error} When a command fails.
 */
export async function buildFlannelHost(lab: Lab, options: BuildOptions): Promise<string[]> {
  const { setup, node, peers } = options;
  const ns = node.host.ns;
  const extMtu = options.extMtu ?? 1500;
  const ip = (args: string) => lab.run(ns, `ip ${args}`);
  const batch: string[] = [];
  let mtu = extMtu;
  if (setup.backend === "vxlan") {
    mtu = extMtu - 50;
    await ip(
      `link add flannel.1 address ${node.vtepMac} mtu ${mtu} type vxlan id 1 local ${node.publicIP} dev ${node.host.iface} nolearning`,
    );
    await lab.run(ns, ["sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/flannel.1/accept_ra"]);
    await ip(`addr add ${node.subnet.split("/")[0]}/32 dev flannel.1`);
    await ip("link set flannel.1 up");
    for (const p of peers) {
      const gw = p.subnet.split("/")[0];
      batch.push(
        `neigh replace ${gw} lladdr ${p.vtepMac} dev flannel.1 nud permanent`,
        `route replace ${p.subnet} via ${gw} dev flannel.1 onlink`,
      );
      await lab.run(ns, [
        ...["bridge", "fdb", "replace", p.vtepMac!, "dev", "flannel.1"],
        ...["dst", p.publicIP, "self", "permanent"],
      ]);
    }
    if (setup.ipv6Network && node.ipv6Subnet) {
      const v6 = "flannel-v6.1";
      // flannel asks for external − 50 here too (device.go:63)
      await ip(
        `link add ${v6} address ${node.vtepMacV6} mtu ${mtu} type vxlan id 1 local ${node.publicIPv6} dev ${node.host.iface} nolearning`,
      );
      await lab.run(ns, ["sh", "-c", `echo 0 > /proc/sys/net/ipv6/conf/${v6}/accept_ra`]);
      await ip(`-6 addr add ${node.ipv6Subnet.split("/")[0]}/128 dev ${v6}`);
      await ip(`link set ${v6} up`);
      for (const p of peers.filter((p) => p.ipv6Subnet)) {
        const gw = p.ipv6Subnet!.split("/")[0];
        batch.push(
          `neigh replace ${gw} lladdr ${p.vtepMacV6} dev ${v6} nud permanent`,
          `route replace ${p.ipv6Subnet} via ${gw} dev ${v6} onlink`,
        );
        await lab.run(ns, [
          ...["bridge", "fdb", "replace", p.vtepMacV6!, "dev", v6],
          ...["dst", p.publicIPv6!, "self", "permanent"],
        ]);
      }
    }
  } else {
    for (const p of peers) {
      batch.push(`route replace ${p.subnet} via ${p.publicIP} dev ${node.host.iface}`);
    }
    for (const p of setup.ipv6Network ? peers.filter((p) => p.ipv6Subnet) : []) {
      batch.push(`route replace ${p.ipv6Subnet} via ${p.publicIPv6} dev ${node.host.iface}`);
    }
  }
  if (batch.length) await lab.run(ns, ["ip", "-batch", "-"], batch.join("\n") + "\n");
  await lab.run(ns, ["iptables-restore", "--noflush"], flannelIptables(setup, node));
  if (setup.ipv6Network && node.ipv6Subnet) {
    await lab.run(ns, ["ip6tables-restore", "--noflush"], flannelIptables(setup, node, 6));
  }
  fs.mkdirSync(path.dirname(options.subnetFile), { recursive: true });
  fs.writeFileSync(options.subnetFile, flannelSubnetEnv(setup, node, mtu), { mode: 0o644 });
  const ips: string[] = [];
  for (const pod of node.host.pods) {
    const r = await cniAdd({
      hostNs: ns,
      podNs: pod.ns,
      subnetFile: options.subnetFile,
      dataDir: path.join(lab.dir, "cni", ns),
    });
    ips.push(r.ips[0].address.split("/")[0]);
  }
  return ips;
}

/**
 * Write a flannel host's lease to etcd as flanneld does: its JSON under
 * `<prefix>/subnets/…`, bound to a fresh 24 h etcd lease.
 *
 * @param etcd The cluster's etcd.
 * @param prefix `--etcd-prefix`.
 * @param setup The backend.
 * @param node The host.
 * @returns The key.
 */
export async function putFlannelLease(
  etcd: EtcdServer,
  prefix: string,
  setup: FlannelSetup,
  node: FlannelNode,
): Promise<string> {
  const granted = await etcd.etcdctl(["lease", "grant", "86400"]);
  const id = /lease ([0-9a-f]+) granted/.exec(granted)?.[1];
  if (!id) throw new Error(`etcdctl lease grant: unexpected output ${granted}`);
  const key = `${prefix}/subnets/${node.subnet.replace("/", "-")}`;
  await etcd.etcdctl(["put", `--lease=${id}`, "--", key, flannelLeaseJson(setup, node)]);
  return key;
}

/**
 * Register a flannel host's Node with kubectl as its kubelet and flanneld
 * left it: podCIDR, flannel's annotations (plus `extra`, e.g.
 * `node-public-ip`), and the `NetworkUnavailable=False` condition flanneld
 * sets through the status subresource.
 *
 * @param lab The lab (the API server lives in its underlay namespace).
 * @param kube The lab's fake API server.
 * @param setup The backend.
 * @param node The host.
 * @param extra More annotations.
 */
export async function createFlannelNode(
  lab: Lab,
  kube: LabKube,
  setup: FlannelSetup,
  node: FlannelNode,
  extra: Record<string, string> = {},
): Promise<void> {
  const object = {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: node.host.ns, annotations: { ...flannelAnnotations(setup, node), ...extra } },
    spec: {
      podCIDR: node.subnet,
      podCIDRs: node.ipv6Subnet ? [node.subnet, node.ipv6Subnet] : [node.subnet],
    },
    status: { addresses: [{ type: "InternalIP", address: node.host.ip }] },
  };
  await kube.kubectl(["create", "--validate=false", "-f", "-"], JSON.stringify(object));
  const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  const condition = {
    type: "NetworkUnavailable",
    status: "False",
    reason: "FlannelIsUp",
    message: "Flannel is running on this node",
    lastTransitionTime: now,
    lastHeartbeatTime: now,
  };
  // as flanneld does it: a strategic merge patch of the status subresource (kubectl < 1.24
  // cannot address subresources, so plain HTTPS with the agents' token)
  const r = await lab.exec(lab.underlay.ns, [
    ...["curl", "-sS", "--fail-with-body", "--max-time", "10", "--cacert", kube.caFile],
    ...["-X", "PATCH", "-H", `Authorization: Bearer ${kube.token}`],
    ...["-H", "Content-Type: application/strategic-merge-patch+json", "--data-binary", "@-"],
    `${kube.url}/api/v1/nodes/${node.host.ns}/status`,
  ], JSON.stringify({ status: { conditions: [condition] } }));
  if (r.code !== 0) {
    throw new Error(`patching ${node.host.ns}'s status failed: ${r.stderr.trim()} ${r.stdout}`);
  }
}
