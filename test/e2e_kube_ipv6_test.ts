/**
 * Kubernetes mode, dual stack, end to end: three lab hosts on a dual-stack
 * underlay (192.0.2.0/24 + fd00::/64), the fake API server in the lab
 * (testing/fake_kube_main.ts), a net-conf.json with `EnableIPv6` and
 * `IPv6Network`, the vxlan backend. Hosts 1 and 2 run weft
 * (`--kube-subnet-mgr`, one under Deno, one under Bun) on Nodes whose
 * `spec.podCIDRs` hold an IPv4 and an IPv6 CIDR. Host 3 is a flannel v0.28
 * host: its Node is written the way flanneld annotates a dual-stack vxlan
 * node and its kernel state (flannel.1 and flannel-v6.1, neighbours, fdb,
 * routes, ip(6)tables, subnet.env) is wired by hand from flannel's source
 * (test/lab/flannel_host.ts), never by weft's code. Pods on every host are
 * wired by the real CNI `bridge` + `host-local` plugins with both ranges.
 *
 * Asserted: the annotations weft writes for its own Nodes are exactly the
 * ones flannel writes (same keys, same JSON text, the MACs of its devices);
 * the weft hosts hold, on both devices, exactly the peer entries the API's
 * Nodes call for (so the flannel-annotated Node is read and routed on both
 * families); every pod pair pings over IPv4 and over IPv6; a fourth
 * flannel-annotated Node without a host, added, re-annotated with `kubectl
 * annotate` (new IPv6 VtepMAC and public-ipv6) and deleted, is followed
 * exactly on both weft hosts; finally weft takes over the flannel host
 * (kube mode, dual stack) while its pod is pinged over IPv6 every 50 ms: no
 * reply lost, flannel.1 and flannel-v6.1 kept (index, MAC, MTU), the
 * annotations flannel wrote kept byte for byte.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { type LabKube, startLabKube } from "../testing/fake_kube_main.ts";
import { type AgentProcess, type AgentRuntime, startAgent } from "./lab/agents.ts";
import { cniAdd } from "./lab/cni.ts";
import { mapLimit } from "./lab/cluster.ts";
import { ping } from "./lab/dualstack.ts";
import { replySeqs } from "./lab/scenarios.ts";
import {
  buildFlannelHost,
  createFlannelNode,
  FLANNEL_ANNOTATIONS as A,
  flannelAnnotations,
  flannelMac,
  type FlannelNode,
  type FlannelSetup,
} from "./lab/flannel_host.ts";
import { createLab, type Lab } from "./lab/lab.ts";
import { waitFor } from "../testing/wait.ts";

const V4_DEVICE = "flannel.1";
const V6_DEVICE = "flannel-v6.1";

// deno-lint-ignore no-explicit-any
type Node = Record<string, any>;

/** The cluster: IPv4 10.244.0.0/16, IPv6 fd00:10:244::/48, vxlan, no --ip-masq. */
const SETUP: FlannelSetup = {
  backend: "vxlan",
  network: "10.244.0.0/16",
  ipv6Network: "fd00:10:244::/48",
  ipMasq: false,
};

/** Host i's pod CIDRs, as the node IPAM controller assigns them. */
function podCidrs(i: number): [string, string] {
  return [`10.244.${i}.0/24`, `fd00:10:244:${i}::/64`];
}

/** A pod and its addresses. */
interface Pod {
  readonly ns: string;
  readonly ipv4: string;
  readonly ipv6: string;
}

/** The peer entries of one host's two vxlan devices, as sorted strings. */
interface PeerState {
  readonly v4: string[];
  readonly v6: string[];
}

/** Read the peer routes, neighbours and fdb entries of flannel.1 and flannel-v6.1. */
async function kernelPeers(lab: Lab, ns: string): Promise<PeerState> {
  const json = async (cmd: string) => {
    const r = await lab.exec(ns, cmd);
    if (r.code !== 0) throw new Error(`${cmd} in ${ns} failed: ${r.stderr.trim()}`);
    return JSON.parse(r.stdout || "[]") as Node[];
  };
  const read = async (family: "-4" | "-6", dev: string) => {
    const routes = (await json(`ip ${family} -j route show dev ${dev}`)).filter((r) => r.gateway);
    const neigh = (await json(`ip ${family} -j neigh show dev ${dev}`)).filter((n) => n.lladdr);
    const fdb = (await json(`bridge -j fdb show dev ${dev}`)).filter((f) => f.dst);
    return [
      ...routes.map((r) => `route ${r.dst} via ${r.gateway} ${(r.flags ?? []).join(",")}`),
      ...neigh.map((n) => `neigh ${n.dst} ${n.lladdr} ${(n.state ?? []).join(",")}`),
      ...fdb.map((f) => `fdb ${f.mac} dst ${f.dst} ${f.state ?? ""}`),
    ].sort();
  };
  return { v4: await read("-4", V4_DEVICE), v6: await read("-6", V6_DEVICE) };
}

/** What a host's devices must hold for the API's Nodes (every flannel vxlan Node but its own). */
function expectedPeers(nodes: Node[], self: string): PeerState {
  const out = { v4: [] as string[], v6: [] as string[] };
  for (const n of nodes) {
    const ann = n.metadata.annotations ?? {};
    if (n.metadata.name === self || ann[A + "kube-subnet-manager"] !== "true") continue;
    if (ann[A + "backend-type"] !== "vxlan") continue;
    const cidrs: string[] = n.spec?.podCIDRs ?? [];
    const v4 = cidrs.find((c) => !c.includes(":"));
    const v6 = cidrs.find((c) => c.includes(":"));
    if (!v4 || !v6 || !ann[A + "public-ipv6"]) continue; // not a dual-stack peer yet
    const mac: string = JSON.parse(ann[A + "backend-data"]).VtepMAC;
    const mac6: string = JSON.parse(ann[A + "backend-v6-data"]).VtepMAC;
    const gw = v4.split("/")[0], gw6 = v6.split("/")[0];
    out.v4.push(
      `route ${v4} via ${gw} onlink`,
      `neigh ${gw} ${mac} PERMANENT`,
      `fdb ${mac} dst ${ann[A + "public-ip"]} permanent`,
    );
    out.v6.push(
      `route ${v6} via ${gw6} onlink`,
      `neigh ${gw6} ${mac6} PERMANENT`,
      `fdb ${mac6} dst ${ann[A + "public-ipv6"]} permanent`,
    );
  }
  return { v4: out.v4.sort(), v6: out.v6.sort() };
}

/** Every node as kubectl (client-go) reads it. */
async function kubectlNodes(kube: LabKube): Promise<Node[]> {
  const list = JSON.parse(await kube.kubectl(["get", "nodes", "-o", "json"]));
  return list.items as Node[];
}

/** A node's annotations under flannel's prefix. */
function flannelAnnotationsOf(node: Node): Record<string, string> {
  return Object.fromEntries(
    Object.entries(node.metadata.annotations ?? {}).filter(([k]) => k.startsWith(A)),
  ) as Record<string, string>;
}

/** A pod's global addresses, per family, as host-local gave them. */
async function podAddresses(lab: Lab, ns: string): Promise<Pod> {
  const links = JSON.parse(await lab.run(ns, "ip -j addr show scope global")) as Node[];
  const addrs = links.flatMap((l) => (l.addr_info ?? []) as Node[]);
  const of = (family: string) => addrs.find((a) => a.family === family)?.local as string;
  const pod = { ns, ipv4: of("inet"), ipv6: of("inet6") };
  assert.ok(pod.ipv4 && pod.ipv6, `pod ${ns} has both families: ${JSON.stringify(addrs)}`);
  return pod;
}

/** Every ordered pod pair of a family that does not answer. */
async function pingFailures(lab: Lab, pods: readonly Pod[], family: 4 | 6): Promise<string[]> {
  const key = family === 4 ? "ipv4" : "ipv6";
  const pairs = pods.flatMap((a) => pods.filter((b) => b !== a).map((b) => [a, b] as const));
  const ok = await mapLimit(pairs, 6, ([a, b]) => ping(lab, a.ns, b[key]));
  return pairs.filter((_, i) => !ok[i]).map(([a, b]) => `${a.ns} → ${b.ns} (${b[key]})`);
}

/** Poll until `probe` returns null; errors (a device not there yet) count as "not yet". */
function eventually(
  what: string,
  probe: () => Promise<string | null>,
  timeoutMs = 30_000,
): Promise<number> {
  return waitFor(
    what,
    async () => {
      try {
        return await probe();
      } catch (e) {
        return (e as Error).message;
      }
    },
    timeoutMs,
    200,
  );
}

Deno.test(
  "kube mode, dual-stack vxlan: weft (Deno, Bun) writes flannel's annotations, routes a flannel-annotated dual-stack Node on both families, and every pod pair pings over IPv4 and IPv6; weft takes the flannel host over without losing a ping6",
  async () => {
    const lab = await createLab({ prefix: "wk6", hosts: 3, podsPerHost: 1, ipv6: true });
    try {
      const [h1, h2, h3] = lab.hosts;
      const kube = await startLabKube(lab);
      const netConf = path.join(lab.dir, "net-conf.json");
      fs.writeFileSync(
        netConf,
        JSON.stringify({
          Network: SETUP.network,
          EnableIPv6: true,
          IPv6Network: SETUP.ipv6Network,
          Backend: { Type: "vxlan" },
        }),
      );

      // host 3: a flannel v0.28 dual-stack vxlan node, as flanneld annotates it
      const [sub3, sub3v6] = podCidrs(3);
      const flannel3: FlannelNode = {
        host: h3,
        subnet: sub3,
        publicIP: h3.ip,
        vtepMac: flannelMac(),
        ipv6Subnet: sub3v6,
        publicIPv6: h3.ipv6!,
        vtepMacV6: flannelMac(),
      };
      await createFlannelNode(lab, kube, SETUP, flannel3);

      // hosts 1 and 2: weft, on Nodes the controller gave both families
      await kube.control([h1, h2].map((h) => ({
        op: "addNode",
        args: [h.ns, { podCIDRs: podCidrs(h.index), internalIP: h.ip }],
      })));
      const runtimes: AgentRuntime[] = ["deno", "bun"];
      const agents: AgentProcess[] = [h1, h2].map((h, i) =>
        startAgent(lab, h, {
          runtime: runtimes[i],
          args: [
            ...["--kube-subnet-mgr", "--kubeconfig-file", kube.kubeconfig],
            ...["--net-config-path", netConf, "--iface", "eth0"],
          ],
          env: { NODE_NAME: h.ns },
        })
      );
      assert.deepEqual(
        await Promise.all(agents.map((a) => a.waitReady(60_000))),
        [1, 2].map((i) => podCidrs(i).join(" + ")),
      );
      for (const [i, a] of agents.entries()) {
        const env = fs.readFileSync(a.subnetFile, "utf8");
        assert.match(env, new RegExp(`^FLANNEL_IPV6_NETWORK=fd00:10:244::/48$`, "m"));
        assert.match(env, new RegExp(`^FLANNEL_IPV6_SUBNET=fd00:10:244:${i + 1}::1/64$`, "m"));
      }

      // weft's own Nodes carry exactly flannel's annotations for a dual-stack vxlan node
      let nodes: Node[] = [];
      await eventually("both weft Nodes publish public-ipv6", async () => {
        nodes = await kubectlNodes(kube);
        const missing = [h1, h2].filter((h) =>
          !nodes.find((n) => n.metadata.name === h.ns)?.metadata.annotations?.[A + "public-ipv6"]
        );
        return missing.length ? `not yet on ${missing.map((h) => h.ns)}` : null;
      });
      const weftNodes: FlannelNode[] = [];
      const flannelKeys = Object.keys(flannelAnnotationsOf(
        nodes.find((n) => n.metadata.name === h3.ns)!,
      )).sort();
      assert.deepEqual(
        flannelKeys,
        [
          "backend-data",
          "backend-type",
          "backend-v6-data",
          "kube-subnet-manager",
          "public-ip",
          "public-ipv6",
        ].map((k) => A + k),
      );
      for (const h of [h1, h2]) {
        const node = nodes.find((n) => n.metadata.name === h.ns)!;
        const [link] = JSON.parse(await lab.run(h.ns, `ip -j link show ${V4_DEVICE}`));
        const [link6] = JSON.parse(await lab.run(h.ns, `ip -j link show ${V6_DEVICE}`));
        const [subnet, ipv6Subnet] = podCidrs(h.index);
        const self: FlannelNode = {
          host: h,
          subnet,
          publicIP: h.ip,
          vtepMac: link.address,
          ipv6Subnet,
          publicIPv6: h.ipv6!,
          vtepMacV6: link6.address,
        };
        const ann = flannelAnnotationsOf(node);
        assert.deepEqual(ann, flannelAnnotations(SETUP, self), `${h.ns}'s annotations`);
        assert.deepEqual(Object.keys(ann).sort(), flannelKeys, "the keys of flannel's own node");
        assert.notEqual(link.address, link6.address, "each device has its own VtepMAC");
        assert.deepEqual(node.spec.podCIDRs, [subnet, ipv6Subnet]);
        const cond = (node.status?.conditions ?? []).find((c: Node) =>
          c.type === "NetworkUnavailable"
        );
        assert.deepEqual([cond?.status, cond?.reason], ["False", "FlannelIsUp"], h.ns);
        weftNodes.push(self);
      }

      // host 3's kernel as flanneld leaves it, with the weft hosts as its peers; its pod
      await buildFlannelHost(lab, {
        setup: SETUP,
        node: flannel3,
        peers: weftNodes,
        subnetFile: path.join(lab.dir, `${h3.ns}.subnet.env`),
      });
      // the weft hosts' pods
      for (const [i, h] of [h1, h2].entries()) {
        for (const pod of h.pods) {
          await cniAdd({
            hostNs: h.ns,
            podNs: pod.ns,
            subnetFile: agents[i].subnetFile,
            dataDir: path.join(lab.dir, "cni", h.ns),
          });
        }
      }

      // the weft hosts hold exactly what the Nodes call for, host 3 included, on both families
      const matchApi = () =>
        eventually("the weft hosts' vxlan peers match the API's Nodes", async () => {
          const all = await kubectlNodes(kube);
          const wrong: string[] = [];
          for (const h of [h1, h2]) {
            const want = expectedPeers(all, h.ns);
            const got = await kernelPeers(lab, h.ns);
            if (JSON.stringify(got) !== JSON.stringify(want)) {
              wrong.push(`${h.ns}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
            }
          }
          return wrong.length ? wrong.join("\n") : null;
        });
      await matchApi();
      for (const h of [h1, h2]) {
        const state = await kernelPeers(lab, h.ns);
        assert.ok(
          state.v6.includes(`route ${sub3v6} via ${sub3v6.split("/")[0]} onlink`) &&
            state.v6.includes(`fdb ${flannel3.vtepMacV6} dst ${h3.ipv6} permanent`) &&
            state.v4.includes(`fdb ${flannel3.vtepMac} dst ${h3.ip} permanent`),
          `${h.ns} routes the flannel node on both families: ${JSON.stringify(state)}`,
        );
      }

      // every pod pair pings over both families
      const pods = await Promise.all(
        lab.hosts.flatMap((h) => h.pods).map((p) => {
          return podAddresses(lab, p.ns);
        }),
      );
      assert.equal(pods.length, 3);
      for (const family of [4, 6] as const) {
        await eventually(`every pod pair pings over IPv${family}`, async () => {
          const failed = await pingFailures(lab, pods, family);
          return failed.length ? failed.join(", ") : null;
        });
      }

      // a fourth flannel Node (no host behind it): added, its IPv6 VtepMAC and public-ipv6
      // changed with kubectl annotate, deleted — each reaches both weft hosts on both families
      const other: FlannelNode = {
        host: { ...h3, ns: "other-4" },
        subnet: podCidrs(4)[0],
        publicIP: "192.0.2.104",
        vtepMac: flannelMac(),
        ipv6Subnet: podCidrs(4)[1],
        publicIPv6: "fd00::104",
        vtepMacV6: flannelMac(),
      };
      await kube.call("addNode", "other-4", {
        podCIDRs: podCidrs(4),
        annotations: flannelAnnotations(SETUP, other),
      });
      await matchApi();
      const moved = { ...other, publicIPv6: "fd00::105", vtepMacV6: flannelMac() };
      await kube.kubectl([
        ...["annotate", "--overwrite", "node", "other-4"],
        `${A}backend-v6-data=${flannelAnnotations(SETUP, moved)[A + "backend-v6-data"]}`,
        `${A}public-ipv6=fd00::105`,
      ]);
      await matchApi();
      const after = await kernelPeers(lab, h1.ns);
      assert.ok(
        after.v6.includes(`fdb ${moved.vtepMacV6} dst fd00::105 permanent`) &&
          !JSON.stringify(after).includes(other.vtepMacV6!),
        JSON.stringify(after),
      );
      await kube.kubectl(["delete", "node", "other-4"]);
      await matchApi();
      for (const h of [h1, h2]) {
        const left = JSON.stringify(await kernelPeers(lab, h.ns));
        assert.ok(!/10\.244\.4\.|fd00:10:244:4:|fd00::10[45]/.test(left), left);
      }
      assert.deepEqual(await pingFailures(lab, pods, 6), [], "IPv6 still works after");

      // weft takes over the flannel host: same devices, same MACs, same annotations
      const links = async () =>
        (JSON.parse(await lab.run(h3.ns, "ip -j -d link show type vxlan")) as Node[])
          .map((l) => `${l.ifname} #${l.ifindex} ${l.address} mtu ${l.mtu}`).sort();
      const before = await links();
      const annBefore = flannelAnnotationsOf(
        (await kubectlNodes(kube)).find((n) => n.metadata.name === h3.ns)!,
      );
      // pod 1 pings pod 3 over IPv6 every 50 ms throughout
      const ping6 = lab.spawn(pods[0].ns, "ping", ["-6", "-n", "-i", "0.05", pods[2].ipv6]);
      await ping6.waitForOutput(/icmp_seq=3 /, 10_000);
      const a3 = startAgent(lab, h3, {
        args: [
          ...["--kube-subnet-mgr", "--kubeconfig-file", kube.kubeconfig],
          ...["--net-config-path", netConf, "--iface", "eth0"],
        ],
        env: { NODE_NAME: h3.ns },
        subnetFile: path.join(lab.dir, `${h3.ns}.subnet.env`),
      });
      agents.push(a3);
      assert.equal(await a3.waitReady(60_000), podCidrs(3).join(" + "));
      assert.deepEqual(await links(), before, "flannel's devices kept as they were");
      assert.deepEqual(
        flannelAnnotationsOf((await kubectlNodes(kube)).find((n) => n.metadata.name === h3.ns)!),
        annBefore,
        "flannel's annotations kept byte for byte",
      );
      const seen = replySeqs(ping6.stdout()).size;
      await waitFor(
        "10 more echo replies after the takeover",
        () => Promise.resolve(replySeqs(ping6.stdout()).size >= seen + 10 ? null : "waiting"),
      );
      ping6.kill("SIGINT");
      await ping6.exited;
      const seqs = replySeqs(ping6.stdout());
      const last = Math.max(...seqs);
      const lost = Array.from({ length: last }, (_, i) => i + 1).filter((n) => !seqs.has(n));
      assert.deepEqual(
        lost,
        [],
        `ping6 replies lost out of ${last}: ${ping6.stdout().slice(-500)}`,
      );
      console.log(
        `ping6 pod 1 → pod 3 across weft's takeover of the flannel host: ${last} sent, 0 lost`,
      );
      for (const family of [4, 6] as const) {
        assert.deepEqual(await pingFailures(lab, pods, family), [], `IPv${family} after takeover`);
      }

      for (const a of agents) {
        assert.deepEqual(a.logs().filter((r) => r.level === "error"), [], "no agent error");
      }
    } finally {
      await lab.teardown();
    }
  },
);
