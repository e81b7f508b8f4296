/**
 * Taking over hosts that ran flannel, without a lost packet: vxlan and
 * host-gw, on etcd and on the Kubernetes API (the fake, driven with
 * kubectl).
 *
 * Three lab hosts are first put in exactly the state flanneld v0.28 leaves
 * (test/lab/flannel_host.ts builds it from flannel's source with ip, bridge,
 * iptables-restore, etcdctl/kubectl — not with weft's code), pods wired by
 * the CNI plugins from flannel's subnet.env. Host 2 ran flannel NAT-style:
 * its public IP is a second address of eth0 (`--public-ip` with `--iface
 * eth0` for vxlan, `--public-ip` alone for host-gw, the `node-public-ip`
 * annotation on Kubernetes). Host 3 keeps "running flannel" throughout, so
 * the cluster is mixed at the end.
 *
 * While pods ping across hosts every 50 ms, weft starts on host 1 (Deno)
 * and then on host 2 (Bun), with the flags flannel ran with. Then: no echo
 * reply is missing; flannel.1 keeps its ifindex and MAC; routes, neighbours,
 * fdb entries, addresses, subnet.env and the lease (key and value, or the
 * node's podCIDR and annotations) are unchanged; `iptables-save` is the same
 * (see {@link iptablesSave} for the only normalisation), also the position
 * of flannel's jumps before another agent's rules (a restarted flanneld
 * would move them to the end: the one place flannel itself differs); weft
 * logged no warning or error and left the device as it was.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { type AgentProcess, type AgentRuntime, startAgent } from "./lab/agents.ts";
import {
  buildFlannelHost,
  createFlannelNode,
  FLANNEL_ANNOTATIONS,
  flannelMac,
  type FlannelNode,
  type FlannelSetup,
  putFlannelLease,
} from "./lab/flannel_host.ts";
import { createLab, type Lab, type LabHost, type LabProcess } from "./lab/lab.ts";
import { mapLimit } from "./lab/cluster.ts";
import { replySeqs } from "./lab/scenarios.ts";
import { type EtcdServer, startEtcd } from "../testing/etcd_server.ts";
import { type LabKube, startLabKube } from "../testing/fake_kube_main.ts";
import { waitFor } from "../testing/wait.ts";

const PREFIX = "wto";
const ETCD_PREFIX = "/coreos.com/network";
/** Host 2's public IP: a second address of its eth0. */
const NAT_IP = "192.0.2.112";

/** Rules of another agent on the host (a firewall), appended after flannel's. */
const OTHER_RULES = [
  "*nat",
  '-A POSTROUTING -s 198.18.0.0/15 -m comment --comment "another agent" -j RETURN',
  "COMMIT",
  "*filter",
  '-A FORWARD -s 198.18.0.0/15 -m comment --comment "another agent" -j DROP',
  "COMMIT",
  "",
].join("\n");

type Backend = FlannelSetup["backend"];
type Store = "etcd" | "kube";

/** What a host's kernel and files hold, as comparable text. */
interface HostState {
  device?: {
    index: number;
    mac: string;
    mtu: number;
    vni: number;
    local: string;
    dev: string;
    port: number;
    learning: boolean;
  };
  addresses: string[];
  routes: string[];
  neighbours: string[];
  fdb: string[];
  iptables: string;
  subnetEnv: string;
}

/**
 * `iptables-save` of all tables, without its `# Generated`/`# Completed`
 * comment lines and with packet counters zeroed (they count the pings).
 */
async function iptablesSave(lab: Lab, ns: string): Promise<string> {
  const text = await lab.run(ns, "iptables-save");
  return text.split("\n")
    .filter((l) => !l.startsWith("#"))
    .map((l) => l.replace(/\[\d+:\d+\]/g, "[0:0]"))
    .join("\n");
}

async function hostState(lab: Lab, ns: string, subnetFile: string): Promise<HostState> {
  const lines = async (cmd: string) =>
    (await lab.run(ns, cmd)).split("\n").map((l) => l.trim()).filter(Boolean).sort();
  const state: HostState = {
    addresses: [],
    routes: await lines("ip route show table main"),
    neighbours: [],
    fdb: [],
    iptables: await iptablesSave(lab, ns),
    subnetEnv: fs.readFileSync(subnetFile, "utf8"),
  };
  if ((await lab.exec(ns, "ip link show flannel.1")).code === 0) {
    const [link] = JSON.parse(await lab.run(ns, "ip -d -j link show flannel.1"));
    const d = link.linkinfo.info_data;
    state.device = {
      index: link.ifindex,
      mac: link.address,
      mtu: link.mtu,
      vni: d.id,
      local: d.local,
      dev: d.link,
      port: d.port,
      learning: d.learning,
    };
    const [addr] = JSON.parse(await lab.run(ns, "ip -j addr show dev flannel.1"));
    state.addresses = addr.addr_info.map((a: { local: string; prefixlen: number }) =>
      `${a.local}/${a.prefixlen}`
    );
    state.neighbours = await lines("ip neigh show dev flannel.1");
    state.fdb = await lines("bridge fdb show dev flannel.1");
  }
  return state;
}

/** A ping every 50 ms from a pod, and the echo replies that never came. */
interface Pinger {
  readonly what: string;
  readonly proc: LabProcess;
}

function startPing(lab: Lab, from: LabHost, to: { host: LabHost; ip: string }): Pinger {
  return {
    what: `pod of ${from.ns} → pod of ${to.host.ns} (${to.ip})`,
    proc: lab.spawn(from.pods[0].ns, "ping", ["-n", "-i", "0.05", to.ip]),
  };
}

/** Stop a pinger; sent = the last sequence number, missing = sequence numbers without a reply. */
async function stopPing(p: Pinger): Promise<{ what: string; sent: number; missing: number[] }> {
  p.proc.kill("SIGINT");
  await p.proc.exited;
  const seqs = replySeqs(p.proc.stdout());
  const sent = Math.max(0, ...seqs);
  const missing = Array.from({ length: sent }, (_, i) => i + 1).filter((s) => !seqs.has(s));
  return { what: p.what, sent, missing };
}

/** The lease as the store holds it: the etcd key and value, or the node's podCIDR and annotations. */
async function storeRecord(
  store: Store,
  node: FlannelNode,
  etcd?: EtcdServer,
  kube?: LabKube,
): Promise<string> {
  if (store === "etcd") {
    const key = `${ETCD_PREFIX}/subnets/${node.subnet.replace("/", "-")}`;
    return (await etcd!.etcdctl(["get", key])).trim();
  }
  const n = JSON.parse(await kube!.kubectl(["get", "node", node.host.ns, "-o", "json"]));
  const ann = Object.fromEntries(
    Object.entries(n.metadata.annotations as Record<string, string>).sort(),
  );
  return JSON.stringify({ podCIDRs: n.spec.podCIDRs, annotations: ann });
}

/** Every ordered pair of pods pings once (the flannel state works before the switch). */
async function allPodsPing(lab: Lab, pods: readonly { host: LabHost; ip: string }[]) {
  const pairs = pods.flatMap((a) => pods.filter((b) => b !== a).map((b) => [a, b] as const));
  const ok = await mapLimit(
    pairs,
    6,
    ([a, b]) => lab.ping(a.host.pods[0].ns, b.ip, { count: 2, timeoutSeconds: 2 }),
  );
  return pairs.filter((_, i) => !ok[i]).map(([a, b]) => `${a.host.ns} → ${b.ip}`);
}

async function takeover(backend: Backend, store: Store): Promise<void> {
  const lab = await createLab({ prefix: PREFIX, hosts: 3, podsPerHost: 1 });
  let etcd: EtcdServer | undefined;
  const agents: AgentProcess[] = [];
  try {
    const [h1, h2, h3] = lab.hosts;
    await lab.run(h2.ns, `ip addr add ${NAT_IP}/24 dev eth0`);
    const base = store === "etcd" ? "10.5" : "10.244";
    const setup: FlannelSetup = { backend, network: `${base}.0.0/16`, ipMasq: true };
    const nodes: FlannelNode[] = lab.hosts.map((h) => ({
      host: h,
      subnet: `${base}.${h.index}.0/24`,
      publicIP: h === h2 ? NAT_IP : h.ip,
      vtepMac: backend === "vxlan" ? flannelMac() : undefined,
    }));
    const subnetFile = (h: LabHost) => path.join(lab.dir, `${h.ns}.subnet.env`);

    // the store as flannel left it
    let kube: LabKube | undefined;
    let storeArgs: string[];
    let env: Record<string, string> = {};
    const netConfig = JSON.stringify({ Network: setup.network, Backend: { Type: backend } });
    if (store === "etcd") {
      etcd = await startEtcd({ netns: lab.underlay.ns, host: lab.underlay.serviceIP });
      await etcd.etcdctl(["put", `${ETCD_PREFIX}/config`, netConfig]);
      for (const n of nodes) await putFlannelLease(etcd, ETCD_PREFIX, setup, n);
      storeArgs = ["--etcd-endpoints", `http://${lab.underlay.serviceIP}:2379`];
    } else {
      kube = await startLabKube(lab);
      const netConf = path.join(lab.dir, "net-conf.json");
      fs.writeFileSync(netConf, netConfig);
      for (const n of nodes) {
        await createFlannelNode(
          lab,
          kube,
          setup,
          n,
          n.host === h2 ? { [FLANNEL_ANNOTATIONS + "node-public-ip"]: NAT_IP } : {},
        );
      }
      storeArgs = ["--kube-subnet-mgr", "--kubeconfig-file", kube.kubeconfig];
      storeArgs.push("--net-config-path", netConf);
    }

    // the hosts as flannel left them, and their pods
    const pods: { host: LabHost; ip: string }[] = [];
    for (const n of nodes) {
      const ips = await buildFlannelHost(lab, {
        setup,
        node: n,
        peers: nodes.filter((p) => p !== n),
        subnetFile: subnetFile(n.host),
      });
      pods.push({ host: n.host, ip: ips[0] });
      // another agent's rules after flannel's jumps: flanneld itself, restarted, would move
      // its jumps behind them (-D, -A); weft must leave the order alone
      await lab.run(n.host.ns, ["iptables-restore", "--noflush"], OTHER_RULES);
    }
    assert.deepEqual(await allPodsPing(lab, pods), [], "flannel's state works before the switch");

    const switched = [h1, h2];
    const before = await Promise.all(switched.map((h) => hostState(lab, h.ns, subnetFile(h))));
    const records = await Promise.all(
      nodes.map((n) => storeRecord(store, n, etcd, kube)),
    );
    if (backend === "vxlan") {
      assert.equal(before[1].device?.local, NAT_IP, "host 2's flannel.1 sends from its public IP");
    }

    const [p1, p2, p3] = pods;
    const pingers = [
      startPing(lab, h1, p2),
      startPing(lab, h1, p3),
      startPing(lab, h2, p1),
      startPing(lab, h3, p2),
    ];
    await Promise.all(pingers.map((p) => p.proc.waitForOutput(/icmp_seq=3 /, 5000)));

    // weft takes over host 1 (Deno), then host 2 (Bun), with the flags flannel ran with
    const nat = store === "kube"
      ? []
      : backend === "vxlan"
      ? ["--iface", "eth0", "--public-ip", NAT_IP]
      : ["--public-ip", NAT_IP];
    const flagsOf = (h: LabHost) => [...storeArgs, "--ip-masq", ...(h === h2 ? nat : [])];
    const runtimes: AgentRuntime[] = ["deno", "bun"];
    for (const [i, h] of switched.entries()) {
      if (store === "kube") env = { NODE_NAME: h.ns };
      const agent = startAgent(lab, h, {
        runtime: runtimes[i],
        args: flagsOf(h),
        env,
        subnetFile: subnetFile(h),
      });
      agents.push(agent);
      const subnet = await agent.waitReady(60_000);
      assert.equal(subnet, nodes[i].subnet, `weft on ${h.ns} kept flannel's subnet`);
      await agent.waitLog((r) => r.msg === "peers listed", 20_000);
    }
    // traffic keeps flowing with weft on two hosts and flannel on the third: every pinger
    // gets 20 more echo replies after the last switch (how many came before depends on speed)
    const seen = pingers.map((p) => replySeqs(p.proc.stdout()).size);
    await waitFor("20 more echo replies on every pair after the switch", () =>
      Promise.resolve(
        pingers.every((p, i) => replySeqs(p.proc.stdout()).size >= seen[i] + 20) ? null : "not yet",
      ), 20_000);
    const results = await Promise.all(pingers.map(stopPing));
    console.log(
      `takeover ${backend}/${store}: ` +
        results.map((r) => `${r.what}: ${r.sent} sent, ${r.missing.length} lost`).join("; "),
    );
    for (const r of results) {
      assert.deepEqual(r.missing, [], `${r.what}: echo replies missing`);
    }

    const after = await Promise.all(switched.map((h) => hostState(lab, h.ns, subnetFile(h))));
    for (const [i, h] of switched.entries()) {
      const b = before[i], a = after[i];
      if (backend === "vxlan") {
        console.log(
          `${h.ns} flannel.1: ifindex ${b.device!.index} → ${a.device!.index}, MAC ${
            b.device!.mac
          } → ${a.device!.mac}, local ${b.device!.local} → ${a.device!.local}`,
        );
      }
      assert.deepEqual(
        a.device,
        b.device,
        `${h.ns}: flannel.1 kept (same ifindex, MAC, attributes)`,
      );
      assert.deepEqual(a.addresses, b.addresses, `${h.ns}: flannel.1's addresses`);
      assert.deepEqual(a.routes, b.routes, `${h.ns}: the main routing table`);
      assert.deepEqual(a.neighbours, b.neighbours, `${h.ns}: flannel.1's neighbours`);
      assert.deepEqual(a.fdb, b.fdb, `${h.ns}: flannel.1's fdb`);
      assert.equal(a.subnetEnv, b.subnetEnv, `${h.ns}: subnet.env`);
      assert.equal(a.iptables, b.iptables, `${h.ns}: iptables-save`);
      assert.match(a.iptables, /-A POSTROUTING .*flanneld masq.*\n-A POSTROUTING .*another agent/);
      assert.match(a.iptables, /-A FORWARD .*flanneld forward.*\n-A FORWARD .*another agent/);
    }
    const recordsAfter = await Promise.all(nodes.map((n) => storeRecord(store, n, etcd, kube)));
    assert.deepEqual(recordsAfter, records, "the leases (keys and values) are unchanged");

    for (const a of agents) {
      const noisy = a.logs().filter((r) => r.level === "warn" || r.level === "error");
      assert.deepEqual(noisy, [], `weft on ${a.host.ns} warned`);
      assert.ok(
        !a.logs().some((r) => r.msg === "device set up as asked"),
        `weft on ${a.host.ns} changed flannel.1`,
      );
    }
    // weft now runs the host: a deleted peer route comes back
    await lab.run(h1.ns, `ip route del ${nodes[2].subnet}`);
    await waitFor(
      `the route to ${nodes[2].subnet} restored on ${h1.ns}`,
      async () =>
        (await lab.run(h1.ns, `ip route show ${nodes[2].subnet}`)).trim() ? null : "missing",
    );
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
    await etcd?.close();
    await lab.teardown();
  }
}

for (const store of ["etcd", "kube"] as const) {
  for (const backend of ["vxlan", "host-gw"] as const) {
    Deno.test(
      `takeover ${backend} on ${store}: weft replaces flanneld on two hosts (one NAT-style) while pods ping; nothing lost, nothing rewritten`,
      () => takeover(backend, store),
    );
  }
}
