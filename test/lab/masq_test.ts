/**
 * Masquerade and forward rules on real kernels, in a lab:
 *
 * ```
 * pod h1p1 10.5.1.x ─ cni0 ─ h1 192.0.2.11 ─┐
 *                                           br0 ─ net 192.0.2.1 / 203.0.113.1 ("the internet")
 * pod h2p1 10.5.2.x ─ cni0 ─ h2 192.0.2.12 ─┘
 * ```
 *
 * Pods are wired with weft attach; the hosts route each other's pod
 * subnets with static routes (no backend needed). The internet namespace
 * has no route to 10.5.0.0/16, so a pod reaches it only when masqueraded.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { netnsExec } from "../../core/exec.ts";
import {
  ensureForwardRules,
  ensureMasqRules,
  keepRulesInSync,
  type MasqOptions,
  removeRules,
} from "../../datapath/masq.ts";
import { parseIPv4Net } from "../../core/ip.ts";
import { renderSubnetEnv } from "../../lease/subnet_env.ts";
import { waitFor } from "../../testing/wait.ts";
import { createLab, type Lab } from "./lab.ts";

const network = parseIPv4Net("10.5.0.0/16");
const subnets = [parseIPv4Net("10.5.1.0/24"), parseIPv4Net("10.5.2.0/24")];

/** flannel's rules for 10.5.0.0/16 and 10.5.1.0/24 as `iptables -t nat -S` prints them. */
const EXPECTED_NAT_S = `-P PREROUTING ACCEPT
-P INPUT ACCEPT
-P OUTPUT ACCEPT
-P POSTROUTING ACCEPT
-N FLANNEL-POSTRTG
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.5.1.0/24 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.5.0.0/16 -d 10.5.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
`;

const EXPECTED_FILTER_S = `-P INPUT ACCEPT
-P FORWARD DROP
-P OUTPUT ACCEPT
-N FLANNEL-FWD
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
`;

interface Cluster {
  lab: Lab;
  podIPs: string[];
}

/** Two hosts with one attached pod each, static routes between the pod subnets. */
async function cluster(): Promise<Cluster> {
  const lab = await createLab({ prefix: "wlb", hosts: 2, podsPerHost: 1, internet: true });
  try {
    const podIPs: string[] = [];
    for (const [i, host] of lab.hosts.entries()) {
      const file = path.join(lab.dir, `${host.ns}.env`);
      fs.writeFileSync(
        file,
        renderSubnetEnv({ network, subnet: subnets[i], mtu: 1500, ipMasq: true }),
      );
      const [pod] = await lab.attachPods(host, file);
      podIPs.push(pod.ip);
      const peer = lab.hosts[1 - i];
      await lab.run(host.ns, `ip route add 10.5.${2 - i}.0/24 via ${peer.ip} dev eth0`);
    }
    return { lab, podIPs };
  } catch (e) {
    await lab.teardown();
    throw e;
  }
}

/**
 * Capture one ICMP echo request in `ns` while `act` runs and return its source address.
 */
async function echoSource(lab: Lab, ns: string, act: () => Promise<unknown>): Promise<string> {
  const filter = "icmp[icmptype] == icmp-echo";
  const dump = lab.spawn(ns, "tcpdump", ["-l", "-n", "-i", "eth0", "-c", "1", filter]);
  await dump.waitForOutput(/listening on/);
  await act();
  const m = await dump.waitForOutput(/IP (\d+\.\d+\.\d+\.\d+) > \S+: ICMP echo request/, 5000);
  await dump.exited;
  return m[1];
}

function masqOptions(lab: Lab, host: number, extra: Partial<MasqOptions> = {}): MasqOptions {
  return {
    network,
    subnet: subnets[host],
    exec: netnsExec(lab.hosts[host].ns),
    ...extra,
  };
}

Deno.test("masquerade: pod → internet is NATed to the host address, pod → pod is not", async () => {
  const { lab, podIPs } = await cluster();
  try {
    const [h1, h2] = lab.hosts;
    const pod1 = h1.pods[0].ns;
    const inet = lab.internet!;
    assert.ok(await lab.ping(pod1, podIPs[1]), "pod subnets are routed");
    assert.ok(!await lab.ping(pod1, inet.ip, { timeoutSeconds: 1 }), "no masquerade yet: no reply");

    for (const i of [0, 1]) {
      const r = await ensureMasqRules(masqOptions(lab, i));
      assert.equal(r.changed, true);
    }
    assert.equal(await lab.run(h1.ns, "iptables -t nat -S"), EXPECTED_NAT_S);

    const outside = await echoSource(lab, inet.ns, () => lab.ping(pod1, inet.ip));
    assert.equal(outside, h1.ip, "source NATed to host 1's address");
    assert.ok(await lab.ping(pod1, inet.ip), "replies come back through the NAT");

    const inside = await echoSource(lab, h2.pods[0].ns, () => lab.ping(pod1, podIPs[1]));
    assert.equal(inside, podIPs[0], "pod-to-pod keeps the pod address");
  } finally {
    await lab.teardown();
  }
});

Deno.test("masquerade: re-applying changes nothing; a previous subnet's rules are replaced; deleted rules come back", async () => {
  const { lab } = await cluster();
  try {
    const h1 = lab.hosts[0];
    const show = () => lab.run(h1.ns, "iptables -t nat -S");
    // a previous run with another subnet, plus a rule in POSTROUTING from an old flannel
    await ensureMasqRules(masqOptions(lab, 0, { subnet: parseIPv4Net("10.5.9.0/24") }));
    // deno-fmt-ignore
    await lab.run(h1.ns, [
      "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.5.0.0/16", "-d", "10.5.0.0/16",
      "-m", "comment", "--comment", "flanneld masq", "-j", "RETURN",
    ]);
    assert.match(await show(), /10\.5\.9\.0\/24/);

    const r = await ensureMasqRules(masqOptions(lab, 0));
    assert.equal(r.changed, true);
    assert.equal(await show(), EXPECTED_NAT_S, "stale subnet and legacy rules gone, one jump");
    assert.ok(r.removed.some((l) => l.includes("10.5.9.0/24")));

    const again = await ensureMasqRules(masqOptions(lab, 0));
    assert.deepEqual(again, { changed: false, applied: [], removed: [] });
    assert.equal(await show(), EXPECTED_NAT_S, "restart neither drops nor duplicates");

    // someone deletes a rule and the jump; the resync loop restores both
    await lab.run(h1.ns, "iptables -t nat -D FLANNEL-POSTRTG 5");
    // deno-fmt-ignore
    await lab.run(h1.ns, [
      "iptables", "-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq",
      "-j", "FLANNEL-POSTRTG",
    ]);
    const ac = new AbortController();
    let repairs = 0;
    let checks = 0;
    const loop = keepRulesInSync(
      async () => {
        const r = await ensureMasqRules(masqOptions(lab, 0, { signal: ac.signal }));
        checks++;
        return r;
      },
      {
        intervalSeconds: 0.1,
        signal: ac.signal,
        onRepair: () => repairs++,
      },
    );
    await waitFor(
      "the resync loop restores the deleted rule and jump",
      async () => {
        const now = await show();
        if (now !== EXPECTED_NAT_S) return now;
        return repairs > 0 ? null : "rules back, but the loop has not reported its repair yet";
      },
      5000,
      50,
    );
    const repaired = checks;
    await waitFor(
      "three more resync checks after the repair (they must not rewrite again)",
      () => checks >= repaired + 3 ? null : `${checks - repaired} so far`,
      5000,
      10,
    );
    ac.abort();
    await loop;
    assert.equal(await show(), EXPECTED_NAT_S);
    assert.equal(repairs, 1);
  } finally {
    await lab.teardown();
  }
});

Deno.test("masquerade: rewriting the chain while new flows start drops none of them", async () => {
  const { lab } = await cluster();
  try {
    const [h1] = lab.hosts;
    await ensureMasqRules(masqOptions(lab, 0));
    let rewrites = 0;
    let stop = false;
    const churn = (async () => {
      while (!stop) {
        // force a real rewrite each time (the mark rule is irrelevant to this traffic)
        await lab.run(h1.ns, "iptables -t nat -D FLANNEL-POSTRTG 1");
        if ((await ensureMasqRules(masqOptions(lab, 0))).changed) rewrites++;
      }
    })();
    const results: boolean[] = [];
    while ((results.length < 30 || rewrites < 15) && results.length < 300) {
      results.push(await lab.ping(h1.pods[0].ns, lab.internet!.ip));
    }
    stop = true;
    await churn;
    assert.ok(rewrites >= 15, `only ${rewrites} rewrites happened during ${results.length} pings`);
    assert.equal(results.filter((ok) => !ok).length, 0, "every new flow (ping id) was NATed");
  } finally {
    await lab.teardown();
  }
});

Deno.test("forward rules: pods pass a FORWARD policy of DROP; flannel's filter text", async () => {
  const { lab, podIPs } = await cluster();
  try {
    const [h1, h2] = lab.hosts;
    const pod1 = h1.pods[0].ns;
    for (const h of [h1, h2]) await lab.run(h.ns, "iptables -P FORWARD DROP");
    assert.ok(!await lab.ping(pod1, podIPs[1], { timeoutSeconds: 1 }), "DROP policy blocks pods");
    for (const [i, h] of [h1, h2].entries()) {
      const r = await ensureForwardRules({ network, exec: netnsExec(h.ns) });
      assert.equal(r.changed, true, `host ${i + 1}`);
    }
    assert.ok(await lab.ping(pod1, podIPs[1]));
    assert.equal(await lab.run(h1.ns, "iptables -t filter -S"), EXPECTED_FILTER_S);
    const again = await ensureForwardRules({ network, exec: netnsExec(h1.ns) });
    assert.equal(again.changed, false);
  } finally {
    await lab.teardown();
  }
});

Deno.test("nftables mode: flannel's tables, NAT to the internet, no NAT between pods, atomic replace", async () => {
  const { lab, podIPs } = await cluster();
  try {
    const [h1, h2] = lab.hosts;
    const inet = lab.internet!;
    const pod1 = h1.pods[0].ns;
    // a host switching from iptables: the old rules are removed first
    await ensureMasqRules(masqOptions(lab, 0));
    await ensureForwardRules({ network, exec: netnsExec(h1.ns) });
    const cleaned = await removeRules({ mode: "iptables", exec: netnsExec(h1.ns) });
    assert.equal(cleaned.changed, true);
    assert.doesNotMatch(await lab.run(h1.ns, "iptables-save"), /flanneld|FLANNEL/);

    await ensureMasqRules(
      masqOptions(lab, 0, { mode: "nftables", subnet: parseIPv4Net("10.5.9.0/24") }),
    );
    for (const i of [0, 1]) {
      const r = await ensureMasqRules(masqOptions(lab, i, { mode: "nftables" }));
      assert.equal(r.changed, true);
      await ensureForwardRules({ mode: "nftables", network, exec: netnsExec(lab.hosts[i].ns) });
    }
    const table = await lab.run(h1.ns, "nft list table ip flannel-ipv4");
    assert.doesNotMatch(table, /10\.5\.9\.0/, "previous subnet replaced");
    for (
      const line of [
        'comment "rules for flannel-ipv4"',
        "chain postrtg {",
        "type nat hook postrouting priority srcnat; policy accept;",
        "meta mark 0x00004000 return",
        "ip saddr 10.5.1.0/24 ip daddr 10.5.0.0/16 return",
        "ip saddr 10.5.0.0/16 ip daddr 10.5.1.0/24 return",
        "ip saddr != 10.5.1.0/24 ip daddr 10.5.0.0/16 return",
        "ip saddr 10.5.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
        "ip saddr != 10.5.0.0/16 ip daddr 10.5.0.0/16 masquerade fully-random",
        "chain forward {",
        "type filter hook forward priority filter; policy accept;",
        "ip saddr 10.5.0.0/16 accept",
        "ip daddr 10.5.0.0/16 accept",
      ]
    ) assert.ok(table.includes(line), `missing: ${line}\n${table}`);
    const again = await ensureMasqRules(masqOptions(lab, 0, { mode: "nftables" }));
    assert.equal(again.changed, false);
    assert.equal(await lab.run(h1.ns, "nft list table ip flannel-ipv4"), table);

    const outside = await echoSource(lab, inet.ns, () => lab.ping(pod1, inet.ip));
    assert.equal(outside, h1.ip);
    const inside = await echoSource(lab, h2.pods[0].ns, () => lab.ping(pod1, podIPs[1]));
    assert.equal(inside, podIPs[0]);

    const removed = await removeRules({ mode: "nftables", exec: netnsExec(h1.ns) });
    assert.equal(removed.changed, true);
    assert.doesNotMatch(await lab.run(h1.ns, "nft list tables"), /flannel/);
  } finally {
    await lab.teardown();
  }
});
