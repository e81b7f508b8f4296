/**
 * Pods wired by the real CNI `bridge` + `host-local` plugins
 * (/usr/lib/cni) from the subnet.env that real weft agents wrote, mapped
 * the way flannel's CNI plugin maps it (test/lab/cni.ts), across three
 * hosts of a lab with a real etcd — for vxlan and host-gw.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { containsIPv4, formatIPv4, parseIPv4, parseIPv4Net } from "../core/ip.ts";
import { parseSubnetEnv } from "../lease/subnet_env.ts";
import { cniAdd, cniDel, type CniOptions } from "./lab/cni.ts";
import {
  NETWORK,
  type OverlayBackend,
  pingFailures,
  type PodAddress,
  startCluster,
} from "./lab/cluster.ts";

for (const [backend, mtu] of [["vxlan", 1450], ["host-gw", 1500]] as const) {
  Deno.test(`CNI e2e (${backend}): bridge + host-local from weft's subnet.env wire pods that reach each other across hosts`, async () => {
    const c = await startCluster({
      backend: backend as OverlayBackend,
      hosts: 3,
      podsPerHost: 2,
      attach: false,
      agentArgs: ["--ip-masq"],
    });
    try {
      const pods: PodAddress[] = [];
      const options: CniOptions[] = [];
      for (const [i, agent] of c.agents) {
        const host = c.host(i);
        const env = parseSubnetEnv(fs.readFileSync(agent.subnetFile, "utf8"));
        assert.equal(env.mtu, mtu, `FLANNEL_MTU of host ${i}`);
        const subnet = parseIPv4Net(c.subnets.get(i)!);
        const gateway = formatIPv4(subnet.ip + 1);
        for (const pod of host.pods) {
          const o: CniOptions = {
            hostNs: host.ns,
            podNs: pod.ns,
            subnetFile: agent.subnetFile,
            dataDir: path.join(c.lab.dir, "cni", host.ns),
          };
          const r = await cniAdd(o);
          options.push(o);
          const [addr, len] = r.ips[0].address.split("/");
          assert.ok(containsIPv4(subnet, parseIPv4(addr)), `${addr} in ${c.subnets.get(i)}`);
          assert.equal(len, "24");
          assert.equal(r.ips[0].gateway, gateway);
          const routes = await c.lab.run(pod.ns, "ip route");
          assert.match(routes, new RegExp(`^default via ${gateway} dev eth0`, "m"));
          assert.match(routes, new RegExp(`^${NETWORK} via ${gateway} dev eth0`, "m"));
          assert.match(await c.lab.run(pod.ns, "ip -o link show eth0"), new RegExp(`mtu ${mtu} `));
          pods.push({ ns: pod.ns, ip: addr, hostIndex: i });
        }
        assert.match(
          await c.lab.run(host.ns, "ip -o -4 addr show dev cni0"),
          new RegExp(`inet ${gateway}/24`),
        );
        // FLANNEL_IPMASQ=true → the delegate's ipMasq is false: the plugin adds no NAT of its own
        assert.doesNotMatch(await c.lab.run(host.ns, "iptables -t nat -S"), /CNI-/);
      }
      await c.waitConverged();
      assert.deepEqual(await pingFailures(c.lab, pods), [], "every pod pair pings");

      // DEL unwires the pod and gives its address back to host-local
      const first = options[0];
      const stateFile = path.join(first.dataDir, "cbr0", pods[0].ip);
      assert.ok(fs.existsSync(stateFile), `host-local recorded ${stateFile}`);
      await cniDel(first);
      assert.ok(!fs.existsSync(stateFile), "address released");
      assert.notEqual((await c.lab.exec(pods[0].ns, "ip link show eth0")).code, 0, "eth0 gone");
      assert.ok(!await c.lab.ping(pods[1].ns, pods[0].ip, { timeoutSeconds: 1 }));
    } finally {
      await c.close();
    }
  });
}
