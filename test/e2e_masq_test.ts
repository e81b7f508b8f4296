/**
 * Masquerade end to end: real agents started with `--ip-masq` (vxlan over a
 * real etcd, host 2's agent under Bun) and the lab's "internet" namespace
 * (203.0.113.1, which has no route back to the pod network):
 *
 * - a pod reaches the internet with its source NATed to its host's address;
 * - pod-to-pod traffic across hosts keeps the pod's address;
 * - `iptables -t nat -S` / `-t filter -S` in each host is flannel's exact text for
 *   that host's subnet (built here from flannel's rule lists, not from weft's code);
 * - a rule deleted by hand is put back by the agent's resync.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { type Cluster, NETWORK, podsOf, startCluster } from "./lab/cluster.ts";
import { waitFor } from "../testing/wait.ts";

/**
 * flannel's masquerade rules (pkg/trafficmngr/iptables masqRules, with
 * --random-fully) in a fresh namespace, as `iptables -t nat -S` prints them.
 */
function flannelNatText(network: string, subnet: string): string {
  const c = '-m comment --comment "flanneld masq"';
  return [
    "-P PREROUTING ACCEPT",
    "-P INPUT ACCEPT",
    "-P OUTPUT ACCEPT",
    "-P POSTROUTING ACCEPT",
    "-N FLANNEL-POSTRTG",
    `-A POSTROUTING ${c} -j FLANNEL-POSTRTG`,
    `-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 ${c} -j RETURN`,
    `-A FLANNEL-POSTRTG -s ${subnet} -d ${network} ${c} -j RETURN`,
    `-A FLANNEL-POSTRTG -s ${network} -d ${subnet} ${c} -j RETURN`,
    `-A FLANNEL-POSTRTG ! -s ${network} -d ${subnet} ${c} -j RETURN`,
    `-A FLANNEL-POSTRTG -s ${network} ! -d 224.0.0.0/4 ${c} -j MASQUERADE --random-fully`,
    `-A FLANNEL-POSTRTG ! -s ${network} -d ${network} ${c} -j MASQUERADE --random-fully`,
    "",
  ].join("\n");
}

/** flannel's forward rules (forwardRules) as `iptables -t filter -S` prints them. */
function flannelFilterText(network: string): string {
  const c = '-m comment --comment "flanneld forward"';
  return [
    "-P INPUT ACCEPT",
    "-P FORWARD ACCEPT",
    "-P OUTPUT ACCEPT",
    "-N FLANNEL-FWD",
    `-A FORWARD ${c} -j FLANNEL-FWD`,
    `-A FLANNEL-FWD -s ${network} ${c} -j ACCEPT`,
    `-A FLANNEL-FWD -d ${network} ${c} -j ACCEPT`,
    "",
  ].join("\n");
}

/** The source address of the first ICMP echo request seen on `ns`'s eth0 while `act` runs. */
async function echoSource(c: Cluster, ns: string, act: () => Promise<unknown>): Promise<string> {
  const dump = c.lab.spawn(ns, "tcpdump", [
    "-l",
    "-n",
    "-i",
    "eth0",
    "-c",
    "1",
    "icmp[icmptype] == icmp-echo",
  ]);
  await dump.waitForOutput(/listening on/);
  await act();
  const m = await dump.waitForOutput(/IP (\d+\.\d+\.\d+\.\d+) > \S+: ICMP echo request/, 5000);
  await dump.exited;
  return m[1];
}

Deno.test("masquerade e2e: --ip-masq agents NAT pod → internet but not pod → pod, with flannel's exact rules", async () => {
  const c = await startCluster({
    backend: "vxlan",
    hosts: 2,
    podsPerHost: 1,
    internet: true,
    agentArgs: ["--ip-masq", "--iptables-resync", "1"],
  });
  try {
    await c.waitConverged();
    const inet = c.lab.internet!;
    for (const i of [1, 2]) {
      const ns = c.host(i).ns;
      const subnet = c.subnets.get(i)!;
      assert.equal(await c.lab.run(ns, "iptables -t nat -S"), flannelNatText(NETWORK, subnet));
      assert.equal(await c.lab.run(ns, "iptables -t filter -S"), flannelFilterText(NETWORK));
      const env = fs.readFileSync(c.agents.get(i)!.subnetFile, "utf8");
      assert.match(env, /^FLANNEL_IPMASQ=true$/m);

      const [pod] = podsOf(c, i);
      const [peer] = podsOf(c, 3 - i);
      const outside = await echoSource(c, inet.ns, () => c.lab.ping(pod.ns, inet.ip));
      assert.equal(outside, c.host(i).ip, `host ${i}'s pod is NATed to its host's address`);
      assert.ok(await c.lab.ping(pod.ns, inet.ip), "the internet's replies come back");
      const inside = await echoSource(c, peer.ns, () => c.lab.ping(pod.ns, peer.ip));
      assert.equal(inside, pod.ip, "pod-to-pod keeps the pod's address");
    }

    // a rule deleted by hand comes back with the agent's resync (every 1 s)
    const h1 = c.host(1);
    const want = flannelNatText(NETWORK, c.subnets.get(1)!);
    await c.lab.run(h1.ns, "iptables -t nat -D FLANNEL-POSTRTG 5");
    assert.notEqual(await c.lab.run(h1.ns, "iptables -t nat -S"), want);
    const ms = await waitFor("masquerade rules restored", async () => {
      const now = await c.lab.run(h1.ns, "iptables -t nat -S");
      return now === want ? null : now;
    }, 15_000);
    console.log(`masquerade rules restored after ${ms.toFixed(0)} ms (resync every 1 s)`);
  } finally {
    await c.close();
  }
});
