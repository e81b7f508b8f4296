/**
 * Docker hosts: `weft docker-opts` run exactly as examples/docker.conf runs
 * it, on two lab hosts of a vxlan cluster; its output for masquerade on and
 * off and with an IPv6 lease; and a plain Linux bridge set up from its
 * `--bip`/`--mtu` as dockerd would set up docker0 (no Docker engine runs
 * here), whose "containers" (veth'd namespaces) ping across the hosts.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { REPO_ROOT } from "./lab/lab.ts";
import { agentCommand } from "./lab/agents.ts";
import { type Cluster, podPing, startCluster } from "./lab/cluster.ts";
import { waitFor } from "../testing/wait.ts";

const DROP_IN = path.join(REPO_ROOT, "examples/docker.conf");

/** The drop-in's `weft docker-opts` arguments and the file it writes. */
function dropInCommand(): { args: string[]; out: string; key: string } {
  const text = fs.readFileSync(DROP_IN, "utf8");
  const line = /^ExecStartPre=\/usr\/local\/bin\/weft docker-opts (.*)$/m.exec(text);
  assert.ok(line, "examples/docker.conf runs weft docker-opts in ExecStartPre=");
  const args = line[1].split(/\s+/);
  const out = args[args.indexOf("-d") + 1];
  const key = args[args.indexOf("-k") + 1];
  assert.match(text, new RegExp(`^EnvironmentFile=${out.replaceAll(".", "\\.")}$`, "m"));
  assert.match(text, new RegExp(`^ExecStart=/usr/bin/dockerd .*\\$${key}$`, "m"));
  return { args, out, key };
}

/** Run weft docker-opts in host i with the drop-in's flags, reading `subnetEnv`, writing into the lab dir. */
async function dockerOpts(c: Cluster, i: number, subnetEnv: string, name: string): Promise<string> {
  const { args, out } = dropInCommand();
  const target = path.join(c.lab.dir, `${name}.docker`);
  const { cmd, args: full } = agentCommand("deno", [
    "docker-opts",
    ...args.map((a) => (a === out ? target : a)),
    "-f",
    subnetEnv,
  ]);
  await c.lab.run(c.host(i).ns, [cmd, ...full]);
  return fs.readFileSync(target, "utf8");
}

Deno.test({
  name:
    "docker hosts: docker-opts as examples/docker.conf runs it, masquerade on/off and IPv6, and docker0 bridges carry traffic across two hosts",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { key } = dropInCommand();
    const c = await startCluster({
      backend: "vxlan",
      hosts: 2,
      prefix: "wdk",
      attach: false,
      podsPerHost: 1,
      agentArgs: ["--ip-masq"],
    });
    try {
      await c.waitConverged();
      const containers: { ns: string; ip: string }[] = [];
      for (const i of [1, 2]) {
        const subnetEnv = c.agents.get(i)!.subnetFile;
        const env = fs.readFileSync(subnetEnv, "utf8");
        const subnet = /^FLANNEL_SUBNET=(.*)$/m.exec(env)![1];
        const mtu = /^FLANNEL_MTU=(.*)$/m.exec(env)![1];
        assert.match(env, /^FLANNEL_IPMASQ=true$/m);
        // weft masquerades (--ip-masq): docker must not
        const on = await dockerOpts(c, i, subnetEnv, `h${i}`);
        assert.equal(on, `${key}=" --bip=${subnet} --ip-masq=false --mtu=${mtu}"\n`);
        // without --ip-masq docker masquerades its containers itself
        const offEnv = path.join(c.lab.dir, `h${i}-nomasq.env`);
        fs.writeFileSync(offEnv, env.replace("FLANNEL_IPMASQ=true", "FLANNEL_IPMASQ=false"));
        assert.equal(
          await dockerOpts(c, i, offEnv, `h${i}-nomasq`),
          `${key}=" --bip=${subnet} --ip-masq=true --mtu=${mtu}"\n`,
        );
        // an IPv6 lease adds nothing: mk-docker-opts.sh gives docker no IPv6 option
        const v6Env = path.join(c.lab.dir, `h${i}-v6.env`);
        fs.writeFileSync(
          v6Env,
          `${env}FLANNEL_IPV6_NETWORK=fd00:5::/56\nFLANNEL_IPV6_SUBNET=fd00:5:0:${i}::1/64\n`,
        );
        assert.equal(await dockerOpts(c, i, v6Env, `h${i}-v6`), on);

        // docker0 as dockerd sets it up from --bip and --mtu; a container on it
        const bip = /--bip=(\S+)/.exec(on)![1];
        const optMtu = /--mtu=(\d+)/.exec(on)![1];
        const [gw, len] = bip.split("/");
        const parts = gw.split(".").map(Number);
        const ip = [...parts.slice(0, 3), parts[3] + 1].join(".");
        const hostNs = c.host(i).ns;
        const podNs = c.host(i).pods[0].ns;
        const veth = `vd${i}`;
        for (
          const cmd of [
            "ip link add docker0 type bridge",
            `ip addr add ${bip} dev docker0`,
            `ip link set docker0 mtu ${optMtu} up`,
            `ip link add ${veth} mtu ${optMtu} type veth peer name eth0 netns ${podNs}`,
            `ip link set ${veth} master docker0 up`,
          ]
        ) await c.lab.run(hostNs, cmd);
        for (
          const cmd of [
            `ip addr add ${ip}/${len} dev eth0`,
            `ip link set eth0 mtu ${optMtu} up`,
            "ip link set lo up",
            `ip route add default via ${gw}`,
          ]
        ) await c.lab.run(podNs, cmd);
        assert.equal(
          (await c.lab.run(podNs, "cat /sys/class/net/eth0/mtu")).trim(),
          optMtu,
          "the container's MTU is docker-opts' --mtu",
        );
        containers.push({ ns: podNs, ip });
      }
      await waitFor(
        "the containers on docker0 of both hosts ping each other over vxlan",
        async () => {
          const a = await podPing(c.lab, containers[0].ns, containers[1].ip);
          const b = await podPing(c.lab, containers[1].ns, containers[0].ip);
          return a && b ? null : `h1→h2 ${a}, h2→h1 ${b}`;
        },
        15_000,
        200,
      );
      // full-size packets fit: the MTU docker was given is what the overlay carries
      const big =
        Number(/--mtu=(\d+)/.exec(await dockerOpts(c, 1, c.agents.get(1)!.subnetFile, "h1b"))![1]) -
        28;
      const r = await c.lab.exec(containers[0].ns, [
        "ping",
        "-c",
        "2",
        "-W",
        "2",
        "-M",
        "do",
        "-s",
        String(big),
        containers[1].ip,
      ]);
      assert.equal(r.code, 0, `a ${big}-byte ping with DF set: ${r.stdout}${r.stderr}`);
    } finally {
      await c.close();
    }
  },
});
