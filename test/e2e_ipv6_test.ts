/**
 * IPv6 end to end: three hosts on a dual-stack underlay (Deno agents, host
 * 2 under Bun), a real etcd, pods wired by the CNI bridge + host-local
 * plugins with both ranges from subnet.env (test/lab/dualstack.ts).
 * vxlan and host-gw, dual-stack and IPv6-only: every pod pair pings over
 * each configured family; kill -9 + restart loses no ping6; deleted IPv6
 * routes, fdb entries and neighbours are put back; a flannel-format
 * dual-stack lease written with etcdctl is routed.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { parseSubnetEnv } from "../lease/subnet_env.ts";
import { formatIPv6, formatIPv6Net } from "../core/ip.ts";
import { ETCD_PREFIX } from "./lab/cluster.ts";
import { replySeqs } from "./lab/scenarios.ts";
import { IPV6_NETWORK, type StackCluster, startStackCluster } from "./lab/dualstack.ts";
import { hold, waitFor } from "../testing/wait.ts";

const V6_DEVICE = "flannel-v6.1";

/** Host i's leased subnets, from its subnet.env. */
function subnetsOf(c: StackCluster, i: number) {
  const env = parseSubnetEnv(fs.readFileSync(c.agents.get(i)!.subnetFile, "utf8"));
  return {
    subnet: env.subnet,
    ipv6Subnet: env.ipv6Subnet!,
    v6: formatIPv6Net(env.ipv6Subnet!),
    v6ip: formatIPv6(env.ipv6Subnet!.ip),
  };
}

/** The IPv6 peer state of a host: routes into IPV6_NETWORK via a gateway, neighbours, fdb. */
async function v6State(c: StackCluster, i: number): Promise<string[]> {
  const ns = c.lab.hosts[i - 1].ns;
  const prefix = IPV6_NETWORK.split("::")[0];
  const routes = (await c.lab.run(ns, "ip -6 -o route show")).split("\n")
    .filter((l) => l.startsWith(prefix) && l.includes(" via "))
    .map((l) => `route ${l.replace(/ (metric \d+|pref \w+|proto \w+)/g, "").trim()}`);
  const dev = await c.lab.exec(ns, `ip link show ${V6_DEVICE}`);
  if (dev.code !== 0) return routes.sort();
  const neigh = (await c.lab.run(ns, `ip -6 neigh show dev ${V6_DEVICE}`)).split("\n")
    .filter((l) => l.includes("lladdr")).map((l) => `neigh ${l.trim()}`);
  const fdb = (await c.lab.run(ns, `bridge fdb show dev ${V6_DEVICE}`)).split("\n")
    .filter((l) => l.includes(" dst ")).map((l) => `fdb ${l.trim()}`);
  return [...routes, ...neigh, ...fdb].sort();
}

async function waitAllPing(c: StackCluster, families: (4 | 6)[]): Promise<void> {
  for (const f of families) {
    await waitFor(
      `every pod pair pings over IPv${f}`,
      async () => {
        const failed = await c.pingFailures(f);
        return failed.length ? failed.join(", ") : null;
      },
      30_000,
      200,
    );
  }
}

/** Delete kernel state by hand; wait until the host's IPv6 peer state is back; ms taken. */
async function repair(c: StackCluster, host: number, what: string, cmd: string): Promise<number> {
  const ns = c.lab.hosts[host - 1].ns;
  const before = await v6State(c, host);
  const start = performance.now();
  await c.lab.run(ns, cmd);
  await waitFor(
    `repair of ${what}`,
    async () => {
      const now = await v6State(c, host);
      const missing = before.filter((x) => !now.includes(x));
      return missing.length ? `missing ${missing.join("; ")}` : null;
    },
    10_000,
    10,
  );
  return Math.round(performance.now() - start);
}

/** kill -9 and restart agents while pod 1 pings pod 2 over IPv6 every 50 ms: no reply missing. */
async function killRestartNoLoss(c: StackCluster, hosts: number[]): Promise<number> {
  const [p1, p2] = c.pods;
  const ping = c.lab.spawn(p1.ns, "ping", ["-6", "-n", "-i", "0.05", p2.ipv6!]);
  try {
    await ping.waitForOutput(/icmp_seq=3 /, 10_000);
    for (const h of hosts) {
      const agent = c.agents.get(h)!;
      const before = subnetsOf(c, h).v6;
      await agent.kill9();
      await hold(`no agent on host ${h}`, 250);
      const again = await c.startAgent(h, agent.runtime);
      await again.waitLog((r) => r.msg === "peers listed");
      assert.equal(subnetsOf(c, h).v6, before, `host ${h} (${agent.runtime}) kept its IPv6 subnet`);
    }
    const seen = replySeqs(ping.stdout()).size;
    await waitFor(
      "10 more echo replies",
      () =>
        Promise.resolve(
          replySeqs(ping.stdout()).size >= seen + 10 ? null : ping.stdout().slice(-200),
        ),
    );
  } finally {
    ping.kill("SIGINT");
    await ping.exited;
  }
  const seqs = replySeqs(ping.stdout());
  const last = Math.max(...seqs);
  const missing = Array.from({ length: last }, (_, i) => i + 1).filter((s) => !seqs.has(s));
  assert.ok(last >= 20, `only ${last} pings were sent across the restarts`);
  assert.deepEqual(
    missing,
    [],
    `ping6 replies missing out of ${last}:\n${ping.stdout().slice(-2000)}`,
  );
  return last;
}

Deno.test("IPv6 e2e, vxlan dual-stack: pods ping over IPv4 and IPv6; deleted IPv6 entries come back; an etcdctl-written flannel lease is routed; kill -9 loses no ping6", async () => {
  const c = await startStackCluster({ backend: "vxlan", stack: "dual" });
  try {
    assert.equal(c.pods.filter((p) => p.ipv4 && p.ipv6).length, 3, JSON.stringify(c.pods));
    await waitAllPing(c, [4, 6]);
    // both devices, flannel's forms
    const h1 = c.lab.hosts[0].ns;
    const v6dev = await c.lab.run(h1, `ip -d -o link show ${V6_DEVICE}`);
    assert.match(v6dev, /mtu 1430 /, "IPv6 underlay: MTU 1500 − 70");
    assert.match(v6dev, /vxlan id 1 local fd00::11 dev eth0 srcport 0 0 dstport 8472 nolearning/);
    assert.match(await c.lab.run(h1, "ip -o link show flannel.1"), /mtu 1450 /);
    const s2 = subnetsOf(c, 2);
    assert.ok(
      (await v6State(c, 1)).includes(`route ${s2.v6} via ${s2.v6ip} dev ${V6_DEVICE} onlink`),
      (await v6State(c, 1)).join("\n"),
    );
    assert.match(
      await c.lab.run(h1, `ip -6 -o addr show dev ${V6_DEVICE}`),
      new RegExp(`inet6 ${subnetsOf(c, 1).v6ip}/128`),
    );

    // self-healing of IPv6 entries (host 2 runs Bun)
    const s3 = subnetsOf(c, 3);
    const fdbOf1 = (await c.lab.run(c.lab.hosts[2].ns, `bridge fdb show dev ${V6_DEVICE}`))
      .split("\n").find((l) => l.includes("dst fd00::11"))!;
    const times = {
      "host 1: IPv6 route to host 2": await repair(c, 1, "route", `ip -6 route del ${s2.v6}`),
      "host 2: IPv6 neighbour of host 3": await repair(
        c,
        2,
        "neighbour",
        `ip -6 neigh del ${s3.v6ip} dev ${V6_DEVICE}`,
      ),
      "host 3: IPv6 fdb entry of host 1": await repair(
        c,
        3,
        "fdb",
        `bridge fdb del ${fdbOf1.split(" ")[0]} dev ${V6_DEVICE} dst fd00::11`,
      ),
    };
    console.log("IPv6 repair times (ms):", JSON.stringify(times));

    // a flannel v0.28 dual-stack lease, written by hand, is routed on both families
    await c.etcd.etcdctl([
      "put",
      `${ETCD_PREFIX}/subnets/10.5.250.0-24&fd00:10:5:fa::-64`,
      JSON.stringify({
        PublicIP: "192.0.2.99",
        PublicIPv6: "fd00::99",
        BackendType: "vxlan",
        BackendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" },
        BackendV6Data: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:66" },
      }),
    ]);
    await waitFor("the etcdctl lease routed on host 1", async () => {
      const v6 = await v6State(c, 1);
      const v4 = await c.lab.run(h1, "ip route show 10.5.250.0/24");
      const want = [
        `route fd00:10:5:fa::/64 via fd00:10:5:fa:: dev ${V6_DEVICE} onlink`,
        "neigh fd00:10:5:fa:: lladdr c6:d2:32:6f:8f:66 PERMANENT",
        `fdb c6:d2:32:6f:8f:66 dst fd00::99 self permanent`,
      ].filter((w) => !v6.includes(w));
      if (!v4.includes("via 10.5.250.0 dev flannel.1 onlink")) want.push(`IPv4 route: ${v4}`);
      return want.length ? `missing ${want.join("; ")}` : null;
    }, 10_000);
    await c.etcd.etcdctl(["del", `${ETCD_PREFIX}/subnets/10.5.250.0-24&fd00:10:5:fa::-64`]);

    const sent = await killRestartNoLoss(c, [1, 2]);
    console.log(`ping6 across kill -9 + restart of a Deno and a Bun agent: ${sent} sent, 0 lost`);
    await waitAllPing(c, [4, 6]);
  } finally {
    await c.close();
  }
});

Deno.test("IPv6 e2e, vxlan IPv6-only: only flannel-v6.1, every pod pair pings over IPv6, kill -9 of the Bun agent loses no ping6", async () => {
  const c = await startStackCluster({ backend: "vxlan", stack: "ipv6" });
  try {
    assert.equal(c.pods.filter((p) => p.ipv6 && !p.ipv4).length, 3, JSON.stringify(c.pods));
    await waitAllPing(c, [6]);
    const h1 = c.lab.hosts[0].ns;
    assert.notEqual((await c.lab.exec(h1, "ip link show flannel.1")).code, 0, "no IPv4 device");
    assert.equal((await c.lab.exec(h1, `ip link show ${V6_DEVICE}`)).code, 0);
    const sent = await killRestartNoLoss(c, [2]);
    console.log(`IPv6-only ping6 across kill -9 + restart (Bun): ${sent} sent, 0 lost`);
  } finally {
    await c.close();
  }
});

Deno.test("IPv6 e2e, host-gw dual-stack: IPv6 routes via the peers' PublicIPv6, pods ping over both families, a deleted IPv6 route comes back", async () => {
  const c = await startStackCluster({ backend: "host-gw", stack: "dual" });
  try {
    await waitAllPing(c, [4, 6]);
    const s2 = subnetsOf(c, 2);
    assert.ok((await v6State(c, 1)).includes(`route ${s2.v6} via fd00::12 dev eth0`));
    const ms = await repair(c, 1, "route", `ip -6 route del ${s2.v6}`);
    console.log(`host-gw IPv6 route restored after ${ms} ms`);
    await waitAllPing(c, [6]);
  } finally {
    await c.close();
  }
});

Deno.test("IPv6 e2e, host-gw IPv6-only: every pod pair pings over IPv6", async () => {
  const c = await startStackCluster({ backend: "host-gw", stack: "ipv6" });
  try {
    assert.equal(c.pods.filter((p) => p.ipv6 && !p.ipv4).length, 3, JSON.stringify(c.pods));
    await waitAllPing(c, [6]);
  } finally {
    await c.close();
  }
});

Deno.test("IPv6 e2e, a host without any IPv4 address: its agent picks eth0 for the IPv6-only config, starts (etcd over IPv6) and its pods reach the others", async () => {
  const c = await startStackCluster({ backend: "vxlan", stack: "ipv6", ipv4lessHosts: [3] });
  try {
    const h3 = c.lab.hosts[2].ns;
    assert.equal(
      (await c.lab.run(h3, "ip -4 -o addr show dev eth0")).trim(),
      "",
      "no IPv4 on eth0",
    );
    const picked = c.agents.get(3)!.logs().find((r) => r.msg === "external interface")!;
    assert.deepEqual([picked.iface, picked.publicIPv6, picked.publicIP], [
      "eth0",
      "fd00::13",
      undefined,
    ]);
    await waitAllPing(c, [6]);
  } finally {
    await c.close();
  }
});
