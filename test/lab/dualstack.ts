/**
 * Dual-stack and IPv6-only clusters in the lab: a dual-stack underlay
 * (192.0.2.0/24 + fd00::/64), etcd in the underlay, weft agents (host 2
 * under Bun) and pods wired by the real CNI `bridge` + `host-local` plugins
 * with both ranges from subnet.env (test/lab/cni.ts). Used by
 * test/e2e_ipv6_test.ts and `deno task demo --ipv6`.
 *
 * @module
 */

import * as path from "node:path";
import { type AgentProcess, type AgentRuntime, startAgent } from "./agents.ts";
import { cniAdd } from "./cni.ts";
import { createLab, type Lab, type LabHost } from "./lab.ts";
import { ETCD_PREFIX, mapLimit } from "./cluster.ts";
import { type EtcdServer, startEtcd } from "../../testing/etcd_server.ts";

/** Which families the network config enables. */
export type Stack = "dual" | "ipv6";

/** The IPv6 cluster network (flannel's IPv6Network). */
export const IPV6_NETWORK = "fd00:10:5::/48";

/** A pod and its addresses (per family, as host-local gave them). */
export interface StackPod {
  readonly ns: string;
  readonly hostIndex: number;
  readonly ipv4?: string;
  readonly ipv6?: string;
}

/** A running dual-stack or IPv6-only cluster. */
export interface StackCluster {
  readonly lab: Lab;
  readonly etcd: EtcdServer;
  readonly stack: Stack;
  readonly agents: Map<number, AgentProcess>;
  readonly pods: StackPod[];
  /** Start (or restart) host i's agent and wait until it is ready. */
  startAgent(index: number, runtime?: AgentRuntime): Promise<AgentProcess>;
  /** Every ordered pod pair of a family that does not answer (`a → b (ip)`). */
  pingFailures(family: 4 | 6): Promise<string[]>;
  close(): Promise<void>;
}

/**
 * The network config of a stack.
 *
 * @param backend vxlan or host-gw.
 * @param stack dual or ipv6.
 * @returns JSON text for etcd.
 */
export function stackConfigJson(backend: string, stack: Stack): string {
  return JSON.stringify({
    ...(stack === "dual" ? { Network: "10.5.0.0/16", SubnetLen: 24 } : { EnableIPv4: false }),
    EnableIPv6: true,
    IPv6Network: IPV6_NETWORK,
    IPv6SubnetLen: 64,
    Backend: { Type: backend },
  });
}

/** Ping once (with a retry) from a namespace; IPv6 addresses use `ping -6`. */
export async function ping(lab: Lab, ns: string, ip: string): Promise<boolean> {
  const family = ip.includes(":") ? "-6" : "-4";
  const r = await lab.exec(ns, ["ping", family, "-n", "-q", "-c", "2", "-i", "0.1", "-W", "2", ip]);
  return r.code === 0;
}

/**
 * Build the lab, start etcd and `hosts` agents, wire one pod per host with
 * CNI.
 *
 * @param options Backend, stack, hosts, lab prefix.
 * @returns The cluster; call `close()` in `finally`.
 */
export async function startStackCluster(options: {
  readonly backend: "vxlan" | "host-gw";
  readonly stack: Stack;
  readonly hosts?: number;
  readonly prefix?: string;
  /** Extra agent flags. */
  readonly agentArgs?: readonly string[];
  /**
   * Hosts whose eth0 loses its IPv4 address before their agent starts (an
   * IPv6-only host; with any, etcd listens on the underlay's fd00::2 only).
   */
  readonly ipv4lessHosts?: readonly number[];
}): Promise<StackCluster> {
  const n = options.hosts ?? 3;
  const lab = await createLab({
    prefix: options.prefix ?? "wi6",
    hosts: n,
    podsPerHost: 1,
    ipv6: true,
  });
  const agents = new Map<number, AgentProcess>();
  let etcd: EtcdServer | undefined;
  const close = async () => {
    try {
      await Promise.all([...agents.values()].map((a) => a.stop()));
      await etcd?.close();
    } finally {
      await lab.teardown();
    }
  };
  try {
    const v6Only = (options.ipv4lessHosts ?? []).length > 0;
    for (const i of options.ipv4lessHosts ?? []) {
      await lab.run(lab.hosts[i - 1].ns, "ip -4 addr flush dev eth0");
    }
    const etcdHost = v6Only ? "fd00::2" : lab.underlay.serviceIP;
    etcd = await startEtcd({ netns: lab.underlay.ns, host: etcdHost });
    await etcd.etcdctl([
      "put",
      `${ETCD_PREFIX}/config`,
      stackConfigJson(options.backend, options.stack),
    ]);
    const endpoint = v6Only ? "http://[fd00::2]:2379" : `http://${lab.underlay.serviceIP}:2379`;
    const pods: StackPod[] = [];
    const cluster: StackCluster = {
      lab,
      etcd,
      stack: options.stack,
      agents,
      pods,
      async startAgent(index, runtime = index === 2 ? "bun" : "deno") {
        const host: LabHost = lab.hosts[index - 1];
        const a = startAgent(lab, host, {
          runtime,
          args: ["--etcd-endpoints", endpoint, "--iface", "eth0", ...(options.agentArgs ?? [])],
        });
        agents.set(index, a);
        await a.waitReady(60_000);
        return a;
      },
      async pingFailures(family) {
        const key = family === 4 ? "ipv4" : "ipv6";
        const pairs = pods.flatMap((a) =>
          pods.filter((b) => b !== a && b[key]).map((b) => [a, b] as const)
        );
        const ok = await mapLimit(pairs, 6, ([a, b]) => ping(lab, a.ns, b[key]!));
        return pairs.filter((_, i) => !ok[i]).map(([a, b]) => `${a.ns} → ${b.ns} (${b[key]})`);
      },
      close,
    };
    await Promise.all(lab.hosts.map((h) => cluster.startAgent(h.index)));
    for (const h of lab.hosts) {
      const a = agents.get(h.index)!;
      for (const pod of h.pods) {
        const r = await cniAdd({
          hostNs: h.ns,
          podNs: pod.ns,
          subnetFile: a.subnetFile,
          dataDir: path.join(lab.dir, "cni", h.ns),
        });
        const of = (v: string) =>
          r.ips.find((x) => (x.address.includes(":") ? "6" : "4") === v)?.address.split("/")[0];
        pods.push({
          ns: pod.ns,
          hostIndex: h.index,
          ...(of("4") ? { ipv4: of("4") } : {}),
          ...(of("6") ? { ipv6: of("6") } : {}),
        });
      }
    }
    return cluster;
  } catch (e) {
    await close();
    throw e;
  }
}
