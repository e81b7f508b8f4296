/**
 * The aws-vpc backend and hybrid clusters end to end in the netns lab:
 * real agents (`mod.ts`, one under Bun) with a real etcd, talking to the
 * EC2 and metadata fakes through the real AWS SDK — the fakes run in the
 * lab's underlay namespace (testing/aws_lab_main.ts), which also plays the
 * VPC router by mirroring the fake's route table into its own routing
 * table. Hosts' default routes lead to the underlay, so pods of VPC hosts
 * reach each other only through those routes.
 *
 * @module
 */

import assert from "node:assert/strict";
import { startLabVpc } from "../testing/aws_lab_main.ts";
import { type EtcdServer, startEtcd } from "../testing/etcd_server.ts";
import { waitFor } from "../testing/wait.ts";
import { type AgentProcess, startAgent } from "./lab/agents.ts";
import { ETCD_PREFIX, parseEtcdLeases, pingFailures, type PodAddress } from "./lab/cluster.ts";
import { createLab, type Lab, type LabHost } from "./lab/lab.ts";
import { linkKinds, tunnelLinks, vxlanTxPackets } from "./lab/links.ts";

const PREFIX = "waw";
const NETWORK = "10.5.0.0/16";

interface AwsLab {
  lab: Lab;
  etcd: EtcdServer;
  agents: Map<number, AgentProcess>;
  pods: PodAddress[];
  subnets: Map<number, string>;
}

/** Build a routed lab with etcd, the fake VPC (for `vpcHosts`) and agents on every host. */
async function withAwsLab(
  backend: Record<string, unknown>,
  vpcHosts: readonly number[],
  fn: (l: AwsLab, vpc: Awaited<ReturnType<typeof startLabVpc>>) => Promise<void>,
): Promise<void> {
  const lab = await createLab({ prefix: PREFIX, hosts: 3, podsPerHost: 1, underlay: "router" });
  const agents = new Map<number, AgentProcess>();
  let etcd: EtcdServer | undefined;
  try {
    // a router that forwards, never redirects: hosts must not learn shortcuts
    for (const k of ["all", "default", "br0", "br1"]) {
      await lab.run(lab.underlay.ns, `sysctl -q -w net.ipv4.conf.${k}.send_redirects=0`);
    }
    etcd = await startEtcd({ netns: lab.underlay.ns, host: lab.underlay.serviceIP });
    await etcd.etcdctl([
      "put",
      `${ETCD_PREFIX}/config`,
      JSON.stringify({ Network: NETWORK, SubnetLen: 24, Backend: backend }),
    ]);
    const vpc = await startLabVpc(lab, {
      hosts: vpcHosts.map((i) => lab.hosts[i - 1]),
      network: NETWORK,
    });
    const endpoint = `http://${lab.underlay.serviceIP}:2379`;
    const subnets = new Map<number, string>();
    const start = async (host: LabHost) => {
      const a = startAgent(lab, host, {
        runtime: host.index === 2 ? "bun" : "deno",
        args: ["--etcd-endpoints", endpoint, "--iface", "eth0"],
        env: vpcHosts.includes(host.index)
          ? vpc.envFor(host)
          : { AWS_EC2_METADATA_DISABLED: "true" },
      });
      agents.set(host.index, a);
      subnets.set(host.index, await a.waitReady(60_000));
    };
    await Promise.all(lab.hosts.map(start));
    const pods: PodAddress[] = [];
    for (const host of lab.hosts) {
      const wired = await lab.attachPods(host, agents.get(host.index)!.subnetFile);
      pods.push(...wired.map((w, i) => ({ ns: host.pods[i].ns, ip: w.ip, hostIndex: host.index })));
    }
    await fn({ lab, etcd, agents, pods, subnets }, vpc);
  } finally {
    await Promise.all([...agents.values()].map((a) => a.stop()));
    await etcd?.close();
    await lab.teardown();
  }
}

const printCalls = (what: string, calls: Record<string, number>) =>
  console.log(`${what}: EC2 route-table calls ${JSON.stringify(calls)}`);

Deno.test({
  name:
    "aws-vpc e2e: pods on three hosts ping through the VPC router with no encapsulation; a stopped host with its lease removed loses its route",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withAwsLab(
      { Type: "aws-vpc", RouteResyncSeconds: 2 },
      [1, 2, 3],
      async ({ lab, etcd, agents, pods, subnets }, vpc) => {
        const want = () =>
          Object.fromEntries(
            [...subnets].map(([i, s]) => [s, `via ${lab.hosts[i - 1].ip}`]),
          );
        await waitFor("the mirror holds every host's route", async () => {
          const got = await vpc.mirror();
          // the mirror lists by destination, the hosts became ready in any order
          return JSON.stringify(Object.entries(got).sort()) ===
              JSON.stringify(Object.entries(want()).sort())
            ? null
            : JSON.stringify(got);
        }, 10_000);
        const routes = await vpc.routes();
        for (const [i, s] of subnets) assert.equal(routes[s], vpc.eniOf(lab.hosts[i - 1]));
        printCalls("after 3 joins", await vpc.calls());

        assert.deepEqual(await pingFailures(lab, pods), []);
        for (const host of lab.hosts) {
          assert.deepEqual(
            await tunnelLinks(lab, host.ns),
            [],
            `${host.ns} has no tunnel device: ${JSON.stringify(await linkKinds(lab, host.ns))}`,
          );
        }
        // the leases are flannel's aws-vpc leases: the public IP only
        const leases = parseEtcdLeases(
          await etcd.etcdctl(["get", "--prefix", `${ETCD_PREFIX}/subnets/`]),
        );
        assert.deepEqual(leases.map((l) => l.backendType), [undefined, undefined, undefined]);

        // host 3 goes away for good: agent stopped, its lease removed
        const gone = subnets.get(3)!;
        await agents.get(3)!.stop();
        agents.delete(3);
        await etcd.etcdctl(["del", `${ETCD_PREFIX}/subnets/${gone.replace("/", "-")}`]);
        const ms = await waitFor(
          `the route of ${gone} leaves the table and the mirror`,
          async () => {
            const [t, m] = [await vpc.routes(), await vpc.mirror()];
            return gone in t || gone in m ? `table ${t[gone]}, mirror ${m[gone]}` : null;
          },
          15_000,
        );
        console.log(
          `lease removed → route gone from the table and the mirror: ${Math.round(ms)} ms`,
        );
        assert.deepEqual(
          await pingFailures(lab, pods.filter((p) => p.hostIndex !== 3)),
          [],
          "hosts 1 and 2 still reach each other",
        );
        printCalls("after the removal", await vpc.calls());
      },
    );
  },
});

Deno.test({
  name:
    "hybrid e2e: two VPC hosts route through the VPC, an on-prem vxlan host through vxlan; all pods reach each other",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withAwsLab(
      { Type: "vxlan", CloudRoutes: { Type: "aws-vpc", RouteResyncSeconds: 2 } },
      [1, 2],
      async ({ lab, etcd, pods, subnets }, vpc) => {
        await waitFor("the mirror holds the two VPC hosts' routes", async () => {
          const got = await vpc.mirror();
          const want = {
            [subnets.get(1)!]: `via ${lab.hosts[0].ip}`,
            [subnets.get(2)!]: `via ${lab.hosts[1].ip}`,
          };
          return JSON.stringify(Object.entries(got).sort()) ===
              JSON.stringify(Object.entries(want).sort())
            ? null
            : JSON.stringify(got);
        }, 10_000);
        assert.deepEqual(await pingFailures(lab, pods), []);

        const leases = parseEtcdLeases(
          await etcd.etcdctl(["get", "--prefix", `${ETCD_PREFIX}/subnets/`]),
        );
        assert.deepEqual(leases.map((l) => l.backendType), ["vxlan", "vxlan", "vxlan"]);
        const raw = await etcd.etcdctl(["get", "--prefix", `${ETCD_PREFIX}/subnets/`]);
        assert.equal((raw.match(/"CloudRoute"/g) ?? []).length, 2, raw);

        // VPC host to VPC host: not through flannel.1; to the on-prem host: through it
        const [p1, p2, p3] = [1, 2, 3].map((i) => pods.find((p) => p.hostIndex === i)!);
        const h1 = lab.hosts[0].ns;
        const before = await vxlanTxPackets(lab, h1);
        assert.ok(await lab.ping(p1.ns, p2.ip, { count: 5 }));
        const sent = (await vxlanTxPackets(lab, h1)) - before;
        // (a stray IPv6 neighbour-discovery packet of the device itself may pass)
        assert.ok(sent < 5, `1 → 2 left flannel.1 alone: it sent ${sent} packets for 5 pings`);
        assert.ok(await lab.ping(p1.ns, p3.ip, { count: 5 }));
        assert.ok(await vxlanTxPackets(lab, h1) >= before + 5, "1 → 3 went through flannel.1");
      },
    );
  },
});
