/**
 * The gce backend and hybrid clusters with `CloudRoutes` gce end to end in
 * the netns lab: real agents (`mod.ts`, one under Bun) with a real etcd,
 * talking to the GCE fake (Compute API and per-VM metadata servers) through
 * the real `@google-cloud/compute` client — the fake runs in the lab's
 * underlay namespace (testing/gce_lab_main.ts), which also plays the VPC
 * router by mirroring the fake's routes (destRange via the next-hop
 * instance's underlay IP) into its own routing table. Hosts' default routes
 * lead to the underlay, so pods of GCE hosts reach each other only through
 * those routes. Route operations take 0.2 s PENDING + 0.8 s RUNNING.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type LabGce, startLabGce } from "../testing/gce_lab_main.ts";
import { type EtcdServer, startEtcd } from "../testing/etcd_server.ts";
import { waitFor } from "../testing/wait.ts";
import { type AgentProcess, startAgent } from "./lab/agents.ts";
import { ETCD_PREFIX, parseEtcdLeases, pingFailures, type PodAddress } from "./lab/cluster.ts";
import { createLab, type Lab, type LabHost } from "./lab/lab.ts";
import { linkKinds, tunnelLinks, vxlanTxPackets } from "./lab/links.ts";

const PREFIX = "wgc";
const NETWORK = "10.5.0.0/16";

interface GceLab {
  lab: Lab;
  etcd: EtcdServer;
  agents: Map<number, AgentProcess>;
  pods: PodAddress[];
  subnets: Map<number, string>;
}

/** Build a routed lab with etcd, the fake GCE (for `gceHosts`) and agents on every host. */
async function withGceLab(
  backend: Record<string, unknown>,
  gceHosts: readonly number[],
  fn: (l: GceLab, gce: LabGce) => Promise<void>,
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
    const gce = await startLabGce(lab, {
      hosts: gceHosts.map((i) => lab.hosts[i - 1]),
      network: NETWORK,
    });
    const endpoint = `http://${lab.underlay.serviceIP}:2379`;
    const subnets = new Map<number, string>();
    const start = async (host: LabHost) => {
      const a = startAgent(lab, host, {
        runtime: host.index === 2 ? "bun" : "deno",
        args: ["--etcd-endpoints", endpoint, "--iface", "eth0"],
        env: gceHosts.includes(host.index)
          ? gce.envFor(host)
          : { METADATA_SERVER_DETECTION: "none" },
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
    await fn({ lab, etcd, agents, pods, subnets }, gce);
  } finally {
    await Promise.all([...agents.values()].map((a) => a.stop()));
    await etcd?.close();
    await lab.teardown();
  }
}

const printCalls = (what: string, calls: Record<string, number>) =>
  console.log(`${what}: GCE calls ${JSON.stringify(calls)}`);

Deno.test({
  name:
    "gce e2e: pods on three hosts ping through the VPC router with no encapsulation; a stopped host with its lease removed loses its route",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withGceLab(
      { Type: "gce", RouteResyncSeconds: 2 },
      [1, 2, 3],
      async ({ lab, etcd, agents, pods, subnets }, gce) => {
        const want = () =>
          Object.fromEntries(
            [...subnets].map(([i, s]) => [s, `via ${lab.hosts[i - 1].ip}`]),
          );
        await waitFor("the mirror holds every host's route", async () => {
          const got = await gce.mirror();
          return JSON.stringify(Object.entries(got).sort()) ===
              JSON.stringify(Object.entries(want()).sort())
            ? null
            : JSON.stringify(got);
        }, 15_000);
        const routes = await gce.routes();
        for (const [i, s] of subnets) assert.equal(routes[s], gce.instanceOf(lab.hosts[i - 1]));
        printCalls("after 3 joins", await gce.calls());

        assert.deepEqual(await pingFailures(lab, pods), []);
        for (const host of lab.hosts) {
          assert.deepEqual(
            await tunnelLinks(lab, host.ns),
            [],
            `${host.ns} has no tunnel device: ${JSON.stringify(await linkKinds(lab, host.ns))}`,
          );
        }
        // the leases are flannel's gce leases: the public IP only
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
          `the route of ${gone} leaves the project and the mirror`,
          async () => {
            const [t, m] = [await gce.routes(), await gce.mirror()];
            return gone in t || gone in m ? `routes ${t[gone]}, mirror ${m[gone]}` : null;
          },
          20_000,
        );
        console.log(
          `lease removed → route gone from the project and the mirror: ${Math.round(ms)} ms`,
        );
        assert.deepEqual(
          await pingFailures(lab, pods.filter((p) => p.hostIndex !== 3)),
          [],
          "hosts 1 and 2 still reach each other",
        );
        printCalls("after the removal", await gce.calls());
      },
    );
  },
});

Deno.test({
  name:
    "hybrid e2e (gce): two GCE hosts route through the VPC, an on-prem vxlan host through vxlan; all pods reach each other",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withGceLab(
      { Type: "vxlan", CloudRoutes: { Type: "gce", RouteResyncSeconds: 2 } },
      [1, 2],
      async ({ lab, etcd, pods, subnets }, gce) => {
        await waitFor("the mirror holds the two GCE hosts' routes", async () => {
          const got = await gce.mirror();
          const want = {
            [subnets.get(1)!]: `via ${lab.hosts[0].ip}`,
            [subnets.get(2)!]: `via ${lab.hosts[1].ip}`,
          };
          return JSON.stringify(Object.entries(got).sort()) ===
              JSON.stringify(Object.entries(want).sort())
            ? null
            : JSON.stringify(got);
        }, 15_000);
        assert.deepEqual(await pingFailures(lab, pods), []);

        const raw = await etcd.etcdctl(["get", "--prefix", `${ETCD_PREFIX}/subnets/`]);
        const leases = parseEtcdLeases(raw);
        assert.deepEqual(leases.map((l) => l.backendType), ["vxlan", "vxlan", "vxlan"]);
        assert.equal((raw.match(/"CloudRoute":\{"Type":"gce"/g) ?? []).length, 2, raw);

        // GCE host to GCE host: not through flannel.1; to the on-prem host: through it
        const [p1, p2, p3] = [1, 2, 3].map((i) => pods.find((p) => p.hostIndex === i)!);
        const h1 = lab.hosts[0].ns;
        const before = await vxlanTxPackets(lab, h1);
        assert.ok(await lab.ping(p1.ns, p2.ip, { count: 5 }));
        const sent = (await vxlanTxPackets(lab, h1)) - before;
        // (a stray IPv6 neighbour-discovery packet of the device itself may pass)
        assert.ok(sent < 5, `1 → 2 left flannel.1 alone: it sent ${sent} packets for 5 pings`);
        assert.ok(await lab.ping(p1.ns, p3.ip, { count: 5 }));
        assert.ok(await vxlanTxPackets(lab, h1) >= before + 5, "1 → 3 went through flannel.1");
        printCalls("hybrid", await gce.calls());
      },
    );
  },
});
