/**
 * Pod → pod TCP throughput over weft's wireguard backend (wireguard-go
 * started and configured by the agents) vs the same two hosts wired by hand
 * with `wireguard-go` and `wg` (the same device name, MTU 1420, port 51820,
 * address, route and peers flannel's wireguard backend sets up), in the
 * same run, alternating sides. A second phase measures weft's devices again
 * after its agents and etcd are killed (wireguard-go keeps running): on a
 * busy 2-core machine the agents' CPU shows in a CPU-bound userspace
 * datapath, and this phase tells the two apart.
 *
 * Run alone: `deno run -A test/bench/wireguard_bench.ts [seconds] [repetitions]`.
 *
 * @module
 */

import * as fs from "node:fs";
import * as path from "node:path";
import process from "node:process";
import { systemExec } from "../../core/exec.ts";
import { podsOf, startCluster } from "../lab/cluster.ts";
import type { Lab } from "../lab/lab.ts";
import { inWgMount, WG_DEVICE, wgKeyFile } from "../lab/wireguard.ts";
import {
  handBuiltPair,
  interleaved,
  iperf,
  iperfServer,
  type ThroughputOptions,
} from "./lab_bench.ts";
import { median, roundTo } from "./stats.ts";

/** Result of {@link benchWireguardThroughput}. */
export interface WireguardThroughputResult {
  /** Median Gbit/s pod → pod over weft's wireguard. */
  readonly weftGbps: number;
  /** Median Gbit/s over the hand-wired wireguard-go pair. */
  readonly handGbps: number;
  /** weft / hand (goal ≥ 0.95). */
  readonly ratio: number;
  readonly mtu: number;
  /**
   * The same weft-configured devices after its agents and etcd were killed
   * (wireguard-go keeps running), against the hand-wired pair in the same
   * phase: separates what weft configured from the CPU its agents take.
   */
  readonly withoutAgents: {
    readonly weftGbps: number;
    readonly handGbps: number;
    readonly ratio: number;
  };
  readonly runs: {
    readonly weft: number[];
    readonly hand: number[];
    readonly weftWithoutAgents: number[];
    readonly handWithoutAgents: number[];
  };
}

async function wg(args: string[], input?: string): Promise<string> {
  const r = await systemExec("wg", args, { input });
  if (r.code !== 0) throw new Error(`wg ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout.trim();
}

/**
 * iperf3 pod → pod over weft's wireguard vs a hand-wired wireguard-go pair.
 *
 * @param options Run length (default 3 s) and repetitions (default 3).
 * @returns Medians, ratio and every run.
 * @throws {Error} When a lab, an agent, wireguard-go or iperf3 fails.
 */
export async function benchWireguardThroughput(
  options: ThroughputOptions = {},
): Promise<WireguardThroughputResult> {
  const seconds = options.seconds ?? 3;
  const reps = options.repetitions ?? 3;
  const mtu = 1420;
  const c = await startCluster({
    backend: "wireguard",
    prefix: "w1b",
    hosts: 2,
    podsPerHost: 1,
    agentArgs: options.agentArgs,
    agentWrap: (h, lab) => inWgMount(lab, h),
    agentEnv: (h, lab) => ({ WIREGUARD_KEY_FILE: wgKeyFile(lab, h) }),
  });
  let pair: Awaited<ReturnType<typeof handBuiltPair>> | undefined;
  try {
    const keys: { priv: string; pub: string }[] = [];
    for (let i = 0; i < 2; i++) {
      const priv = await wg(["genkey"]);
      keys.push({ priv, pub: await wg(["pubkey"], priv + "\n") });
    }
    const inHost = (
      lab: Lab,
      i: number,
      cmd: string[],
    ) => [...inWgMount(lab, lab.hosts[i - 1]), ...cmd];
    pair = await handBuiltPair(
      mtu,
      (lab, i) => {
        const file = path.join(lab.dir, `h${i}.key`);
        fs.writeFileSync(file, keys[i - 1].priv, { mode: 0o400 });
        return [
          inHost(lab, i, ["wireguard-go", WG_DEVICE]),
          inHost(lab, i, ["wg", "set", WG_DEVICE, "private-key", file, "listen-port", "51820"]),
          ["ip", "addr", "add", `10.6.${i}.0/32`, "dev", WG_DEVICE],
          ["ip", "link", "set", WG_DEVICE, "mtu", String(mtu), "up"],
          ["ip", "route", "add", "10.6.0.0/16", "dev", WG_DEVICE],
        ];
      },
      (lab, i, j) => [
        // deno-fmt-ignore
        inHost(lab, i, ["wg", "set", WG_DEVICE, "peer", keys[j - 1].pub, "endpoint",
          `${lab.hosts[j - 1].ip}:51820`, "allowed-ips", `10.6.${j}.0/24`]),
      ],
    );
    const [w1] = podsOf(c, 1);
    const [w2] = podsOf(c, 2);
    const weftPodMtu = (await c.lab.run(w1.ns, "ip -o link show eth0")).match(/mtu (\d+)/)?.[1];
    if (Number(weftPodMtu) !== mtu) {
      throw new Error(`weft's pod MTU is ${weftPodMtu}, the hand-wired pair uses ${mtu}`);
    }
    // both overlays carry a first packet (handshake) before measuring
    for (
      const [lab, ns, ip] of [
        [c.lab, w1.ns, w2.ip],
        [pair.lab, pair.lab.hosts[0].pods[0].ns, pair.podIPs[1]],
      ] as const
    ) {
      const r = await lab.exec(ns, ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", ip]);
      if (r.code !== 0) throw new Error(`no ping ${ns} → ${ip} before the bench: ${r.stdout}`);
    }
    await iperfServer(c.lab, w2.ns);
    await iperfServer(pair.lab, pair.lab.hosts[1].pods[0].ns);
    const weft: number[] = [];
    const hand: number[] = [];
    const p = pair;
    await interleaved(reps, [
      async () => weft.push(await iperf(c.lab, w1.ns, w2.ip, seconds)),
      async () => hand.push(await iperf(p.lab, p.lab.hosts[0].pods[0].ns, p.podIPs[1], seconds)),
    ]);
    for (const a of c.agents.values()) await a.kill9();
    c.agents.clear();
    await c.etcd.close();
    const weftAlone: number[] = [];
    const handAlone: number[] = [];
    await interleaved(reps, [
      async () => weftAlone.push(await iperf(c.lab, w1.ns, w2.ip, seconds)),
      async () =>
        handAlone.push(await iperf(p.lab, p.lab.hosts[0].pods[0].ns, p.podIPs[1], seconds)),
    ]);
    const weftGbps = median(weft);
    const handGbps = median(hand);
    const r2 = (xs: number[]) => xs.map((x) => roundTo(x, 2));
    return {
      weftGbps: roundTo(weftGbps, 2),
      handGbps: roundTo(handGbps, 2),
      ratio: roundTo(weftGbps / handGbps, 3),
      mtu,
      withoutAgents: {
        weftGbps: roundTo(median(weftAlone), 2),
        handGbps: roundTo(median(handAlone), 2),
        ratio: roundTo(median(weftAlone) / median(handAlone), 3),
      },
      runs: {
        weft: r2(weft),
        hand: r2(hand),
        weftWithoutAgents: r2(weftAlone),
        handWithoutAgents: r2(handAlone),
      },
    };
  } finally {
    await pair?.lab.teardown();
    await c.close();
  }
}

if (import.meta.main) {
  const [seconds, repetitions] = process.argv.slice(2).map(Number);
  console.log(
    JSON.stringify(
      await benchWireguardThroughput({
        seconds: seconds || undefined,
        repetitions: repetitions || undefined,
      }),
    ),
  );
}
