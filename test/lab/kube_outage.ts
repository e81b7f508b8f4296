/**
 * The Kubernetes API server down under running agents: three vxlan agents
 * in Kubernetes mode (`--kube-subnet-mgr`, host 2's under Bun) against the
 * fake API server in the lab (testing/fake_kube_main.ts), whose pods ping
 * each other. The API server stops serving for `downMs` (connections
 * refused, watches cut; its data kept, as a real API server's is in etcd)
 * and comes back; {@link kubeOutage} checks the promises of the etcd outage
 * (test/lab/store_outages.ts): no echo reply lost, agents up, the datapath
 * untouched, and a node that appears as the API returns — a host whose
 * agent boots meanwhile, and a node already annotated by its agent — is
 * routed on every peer within {@link RECOVERY_LIMIT_MS} of the API's
 * return. It returns the figures, connection and request counts included.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { type AgentProcess, startAgent } from "./agents.ts";
import {
  expectedPeerState,
  type LeaseRow,
  NETWORK,
  type PodAddress,
  readPeerState,
  stateDiff,
} from "./cluster.ts";
import { createLab, type Lab, type LabHost } from "./lab.ts";
import {
  type ClientTraffic,
  kernelSnapshot,
  type PingPairResult,
  since,
  startPingRing,
  trafficBetween,
  trafficCounter,
  waitRouted,
} from "./probes.ts";
import { RECOVERY_LIMIT_MS } from "./store_outages.ts";
import { type LabKube, startLabKube } from "../../testing/fake_kube_main.ts";
import { hold, waitFor } from "../../testing/wait.ts";

const A = "flannel.alpha.coreos.com/";

/** A node the test annotates itself, as if its agent had (a host that is only a Node). */
const PROBE_NODE = {
  name: "probe",
  podCIDR: "10.5.250.0/24",
  annotations: {
    [A + "kube-subnet-manager"]: "true",
    [A + "backend-type"]: "vxlan",
    [A + "backend-data"]: JSON.stringify({ VNI: 1, VtepMAC: "0e:00:00:00:02:50" }),
    [A + "public-ip"]: "192.0.2.99",
  },
};

/** Figures of {@link kubeOutage}. */
export interface KubeOutageFigures {
  readonly downMs: number;
  readonly pings: readonly PingPairResult[];
  /** Connection attempts per agent per second while the API server was down. */
  readonly connectionsPerAgentPerSecondDown: number;
  /** Requests per agent from its return to `recoveryWindowMs` after it. */
  readonly requestsPerAgentAtRecovery: number;
  readonly recoveryWindowMs: number;
  readonly traffic: Record<string, { down: ClientTraffic; recovery: ClientTraffic }>;
  /** From the API's return to an annotated node created then being routed on every old host. */
  readonly probeRoutedMs: number;
  /** From the API's return to the new host's agent (booted during the outage) being ready. */
  readonly joinReadyMs: number;
  /** From the API's return to the new host being routed on every old host. */
  readonly joinRoutedMs: number;
}

function kubeAgent(lab: Lab, kube: LabKube, netConf: string, host: LabHost): AgentProcess {
  return startAgent(lab, host, {
    runtime: host.index === 2 ? "bun" : "deno",
    args: ["--kube-subnet-mgr", "--kubeconfig-file", kube.kubeconfig, "--net-config-path", netConf],
    env: { NODE_NAME: host.ns },
  });
}

/** The flannel leases the API's nodes describe (nodes without them are skipped). */
// deno-lint-ignore no-explicit-any
function leasesOfNodes(nodes: any[]): LeaseRow[] {
  return nodes.flatMap((n) => {
    const ann = n.metadata.annotations ?? {};
    const subnet = n.spec?.podCIDRs?.[0];
    if (!subnet || ann[A + "kube-subnet-manager"] !== "true") return [];
    return [{
      subnet,
      publicIP: ann[A + "public-ip"],
      backendType: ann[A + "backend-type"],
      vtepMAC: JSON.parse(ann[A + "backend-data"]).VtepMAC.toLowerCase(),
    }];
  });
}

/** Wait until every host's vxlan peer state matches the API's nodes (its own left out). */
async function waitMatchesApi(lab: Lab, kube: LabKube, hosts: readonly LabHost[]): Promise<void> {
  await waitFor(
    "every host's peer state matches the API's nodes",
    async () => {
      const names: string[] = await kube.call("nodeNames");
      const nodes = await kube.control(names.map((n) => ({ op: "getNode", args: [n] })));
      const problems: string[] = [];
      for (const h of hosts) {
        const peers = leasesOfNodes(nodes.filter((n) =>
          (n as { metadata: { name: string } })
            .metadata.name !== h.ns
        ));
        const diff = stateDiff(
          expectedPeerState("vxlan", peers),
          await readPeerState(lab, h.ns, "vxlan"),
        );
        if (diff) problems.push(`${h.ns}: ${diff}`);
      }
      return problems.length ? problems.join("\n") : null;
    },
    30_000,
    100,
  );
}

/**
 * Three vxlan agents in Kubernetes mode; the API server down `downMs`, then
 * back (see the module doc).
 *
 * @param options How long the API server stays down (the issue: 20 s).
 * @returns The figures.
 * @throws {AssertionError} When a promise is broken.
 */
export async function kubeOutage(options: { downMs: number }): Promise<KubeOutageFigures> {
  const lab = await createLab({ prefix: "wrk", hosts: 4, podsPerHost: 1 });
  try {
    const kube = await startLabKube(lab);
    const netConf = path.join(lab.dir, "net-conf.json");
    fs.writeFileSync(netConf, JSON.stringify({ Network: NETWORK, Backend: { Type: "vxlan" } }));
    const node = (h: LabHost) => ({
      op: "addNode" as const,
      args: [h.ns, { podCIDRs: [`10.5.${h.index}.0/24`], internalIP: h.ip }],
    });
    const old = lab.hosts.slice(0, 3);
    const h4 = lab.hosts[3];
    await kube.control(old.map(node));
    const agents = old.map((h) => kubeAgent(lab, kube, netConf, h));
    await Promise.all(agents.map((a) => a.waitReady(60_000)));
    const pods: PodAddress[] = [];
    for (const [i, h] of old.entries()) {
      const wired = await lab.attachPods(h, agents[i].subnetFile);
      pods.push(...wired.map((w, j) => ({ ns: h.pods[j].ns, ip: w.ip, hostIndex: h.index })));
    }
    await waitMatchesApi(lab, kube, old);
    const ring = await startPingRing(lab, pods);
    const before = await Promise.all(old.map((h) => kernelSnapshot(lab, h.ns, "vxlan")));
    const clients = old.map((h) => h.ip);
    const counter = await trafficCounter(
      lab,
      lab.underlay.ns,
      Number(new URL(kube.url).port),
      clients,
    );

    await kube.call("down");
    const atDown = await counter.read();
    const downAt = performance.now();
    await hold("the Kubernetes API server is down", options.downMs);
    const atUp = await counter.read();
    const downMs = since(downAt);
    for (const a of agents) {
      assert.equal(a.process.exitCode(), null, `${a.host.ns}'s agent exited`);
    }
    const during = await Promise.all(old.map((h) => kernelSnapshot(lab, h.ns, "vxlan")));
    assert.deepEqual(during, before, "the datapath is untouched while the API server is down");

    // host 4's agent boots during the outage; its kubelet registers the node on the API's return
    const a4 = kubeAgent(lab, kube, netConf, h4);
    await a4.process.waitForOutput(/"msg":"starting"/, 30_000);
    await kube.call("up");
    const backAt = performance.now();
    await kube.control([node(h4), {
      op: "addNode",
      args: [PROBE_NODE.name, {
        podCIDRs: [PROBE_NODE.podCIDR],
        annotations: PROBE_NODE.annotations,
      }],
    }]);
    const oldNs = old.map((h) => h.ns);
    const probeRoutedAt = await waitRouted(lab, oldNs, PROBE_NODE.podCIDR);
    const subnet4 = await a4.waitReady(30_000);
    const readyAt = performance.now();
    const routedAt = await waitRouted(lab, oldNs, subnet4);
    const recoveryWindowMs = 3000;
    await hold(
      "the API server serves the recovering agents",
      Math.max(0, recoveryWindowMs - since(backAt)),
    );
    const atWindowEnd = await counter.read();
    await counter.remove();

    await kube.call("deleteNode", PROBE_NODE.name);
    const wired = await lab.attachPods(h4, a4.subnetFile);
    pods.push(...wired.map((w, j) => ({ ns: h4.pods[j].ns, ip: w.ip, hostIndex: 4 })));
    await waitMatchesApi(lab, kube, lab.hosts);
    const pings = await ring.stop();
    for (const p of pings) {
      assert.deepEqual(p.missing, [], `echo replies lost from ${p.from} to ${p.to}`);
    }
    const down = trafficBetween(atUp, atDown);
    const recovery = trafficBetween(atWindowEnd, atUp);
    const traffic: KubeOutageFigures["traffic"] = {};
    for (const ip of clients) traffic[ip] = { down: down[ip], recovery: recovery[ip] };
    const figures: KubeOutageFigures = {
      downMs,
      pings,
      connectionsPerAgentPerSecondDown: Math.round(
        down.all.connections / clients.length / (downMs / 1000) * 100,
      ) / 100,
      requestsPerAgentAtRecovery: Math.round(recovery.all.requests / clients.length * 100) / 100,
      recoveryWindowMs,
      traffic,
      probeRoutedMs: Math.round(probeRoutedAt - backAt),
      joinReadyMs: Math.round(readyAt - backAt),
      joinRoutedMs: Math.round(routedAt - backAt),
    };
    for (
      const [what, ms] of [
        ["an annotated node", figures.probeRoutedMs],
        ["host 4", figures.joinRoutedMs],
      ] as const
    ) {
      assert.ok(
        ms <= RECOVERY_LIMIT_MS,
        `${what} was routed on every peer ${ms} ms after the API server returned ` +
          `(limit ${RECOVERY_LIMIT_MS}): ${JSON.stringify(figures)}`,
      );
    }
    return figures;
  } finally {
    await lab.teardown();
  }
}
