/**
 * IPv6 vxlan throughput: iperf3 TCP pod → pod across two hosts of an
 * IPv6-only network over weft's `flannel-v6.1` vs a hand-built kernel IPv6
 * vxlan pair in the same run (same underlay fd00::/64, same MTU 1430 =
 * 1500 − 70, same VNI/port/nolearning, the same neighbour/fdb/onlink route
 * per peer written with `ip`/`bridge`; pods wired by the same CNI bridge +
 * host-local plugins from subnet.env on both sides). Runs alternate and are
 * pinned as in lab_bench.ts; figures are medians.
 *
 * Run alone: `deno run -A test/bench/ipv6_bench.ts [seconds] [repetitions]`.
 *
 * @module
 */

import * as fs from "node:fs";
import * as path from "node:path";
import process from "node:process";
import { createLab, type Lab } from "../lab/lab.ts";
import { cniAdd } from "../lab/cni.ts";
import { startStackCluster } from "../lab/dualstack.ts";
import { renderSubnetEnv } from "../../lease/subnet_env.ts";
import { parseIPv6Net } from "../../core/ip.ts";
import { median, roundTo } from "./stats.ts";
import { interleaved, iperf, iperfServer } from "./lab_bench.ts";

/** Result of {@link benchVxlan6Throughput}. */
export interface Vxlan6ThroughputResult {
  /** Median Gbit/s pod → pod over weft's IPv6 vxlan. */
  readonly weftGbps: number;
  /** Median Gbit/s over the hand-built kernel IPv6 vxlan pair. */
  readonly kernelGbps: number;
  /** weft / kernel (goal ≥ 0.97). */
  readonly ratio: number;
  readonly mtu: number;
  readonly runs: { readonly weft: number[]; readonly kernel: number[] };
}

const DEV = "flannel-v6.1";

/** Two hosts with a hand-built IPv6 vxlan (fd00:6:<i>::/64 per host) and one CNI-wired pod each. */
async function handBuilt6(mtu: number): Promise<{ lab: Lab; podIPs: string[] }> {
  const lab = await createLab({ prefix: "wi6b", hosts: 2, podsPerHost: 1, ipv6: true });
  try {
    const macs: string[] = [];
    for (const h of lab.hosts) {
      // what weft and flannel create for an IPv6 underlay
      // deno-fmt-ignore
      await lab.run(h.ns, ["ip", "link", "add", DEV, "type", "vxlan", "id", "1", "local", h.ipv6!,
        "dev", "eth0", "dstport", "8472", "nolearning"]);
      await lab.run(h.ns, ["ip", "link", "set", DEV, "mtu", String(mtu), "up"]);
      await lab.run(h.ns, ["ip", "addr", "add", `fd00:6:${h.index}::/128`, "dev", DEV, "nodad"]);
      await lab.run(h.ns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"]);
      macs.push(JSON.parse(await lab.run(h.ns, `ip -j link show ${DEV}`))[0].address);
    }
    const podIPs: string[] = [];
    for (const h of lab.hosts) {
      const j = 3 - h.index;
      const peer = lab.hosts[j - 1];
      // deno-fmt-ignore
      await lab.run(h.ns, ["ip", "neigh", "add", `fd00:6:${j}::`, "lladdr", macs[j - 1], "dev", DEV,
        "nud", "permanent"]);
      // deno-fmt-ignore
      await lab.run(h.ns, ["bridge", "fdb", "append", macs[j - 1], "dev", DEV, "dst", peer.ipv6!,
        "self", "permanent"]);
      // deno-fmt-ignore
      await lab.run(h.ns, ["ip", "route", "add", `fd00:6:${j}::/64`, "via", `fd00:6:${j}::`, "dev",
        DEV, "onlink"]);
      const file = path.join(lab.dir, `${h.ns}.subnet.env`);
      fs.writeFileSync(
        file,
        renderSubnetEnv({
          ipv6Network: parseIPv6Net("fd00:6::/48"),
          ipv6Subnet: parseIPv6Net(`fd00:6:${h.index}::/64`),
          mtu,
          ipMasq: false,
        }),
      );
      const r = await cniAdd({
        hostNs: h.ns,
        podNs: h.pods[0].ns,
        subnetFile: file,
        dataDir: path.join(lab.dir, "cni", h.ns),
      });
      podIPs.push(r.ips[0].address.split("/")[0]);
    }
    return { lab, podIPs };
  } catch (e) {
    await lab.teardown();
    throw e;
  }
}

/**
 * iperf3 pod → pod over weft's IPv6 vxlan (an IPv6-only network) vs a
 * hand-built kernel IPv6 vxlan pair.
 *
 * @param options Seconds per run (default 3), runs per side (default 4).
 * @returns Medians, ratio and every run.
 * @throws {Error} When a lab, an agent or iperf3 fails.
 */
export async function benchVxlan6Throughput(
  options: { seconds?: number; repetitions?: number } = {},
): Promise<Vxlan6ThroughputResult> {
  const seconds = options.seconds ?? 3;
  const reps = options.repetitions ?? 4;
  const mtu = 1430;
  // like for like: the hand-built pair has no iptables rules, so neither does weft here
  const c = await startStackCluster({
    backend: "vxlan",
    stack: "ipv6",
    hosts: 2,
    prefix: "wi6w",
    agentArgs: ["--iptables-forward-rules=false"],
  });
  let pair: Awaited<ReturnType<typeof handBuilt6>> | undefined;
  try {
    const failed = await c.pingFailures(6);
    if (failed.length) throw new Error(`weft's pods do not reach each other: ${failed.join(", ")}`);
    pair = await handBuilt6(mtu);
    const [w1, w2] = c.pods;
    const weftMtu = (await c.lab.run(w1.ns, "ip -o link show eth0")).match(/mtu (\d+)/)?.[1];
    if (Number(weftMtu) !== mtu) {
      throw new Error(`weft's pod MTU is ${weftMtu}, the hand-built pair uses ${mtu}`);
    }
    const p = pair;
    const [k1, k2] = p.lab.hosts.map((h) => h.pods[0].ns);
    await iperfServer(c.lab, w2.ns);
    await iperfServer(p.lab, k2);
    const weft: number[] = [];
    const kernel: number[] = [];
    await interleaved(reps, [
      async () => weft.push(await iperf(c.lab, w1.ns, w2.ipv6!, seconds)),
      async () => kernel.push(await iperf(p.lab, k1, p.podIPs[1], seconds)),
    ]);
    const weftGbps = median(weft);
    const kernelGbps = median(kernel);
    return {
      weftGbps: roundTo(weftGbps, 2),
      kernelGbps: roundTo(kernelGbps, 2),
      ratio: roundTo(weftGbps / kernelGbps, 3),
      mtu,
      runs: { weft: weft.map((x) => roundTo(x, 2)), kernel: kernel.map((x) => roundTo(x, 2)) },
    };
  } finally {
    await pair?.lab.teardown();
    await c.close();
  }
}

if (import.meta.main) {
  const [seconds, reps] = process.argv.slice(2).map(Number);
  console.log(JSON.stringify(
    await benchVxlan6Throughput({ seconds: seconds || 3, repetitions: reps || 4 }),
    null,
    2,
  ));
}
