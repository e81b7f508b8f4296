/**
 * weft's udp backend end to end: real agents (the CLI, `mod.ts`; host 2's
 * under Bun, the others under Deno) and a real etcd in a lab, the backend
 * chosen by the network config's `"Backend":{"Type":"udp"}`. The cluster is
 * test/lab/cluster.ts's; what is udp-specific (no per-peer kernel state to
 * compare, the TUN device that lives with the agent, the drop counters) is
 * checked here:
 *
 * - three hosts, every pod pair pings, leases in flannel's udp format;
 * - `kill -9` and restart of an agent (Deno, then Bun) while a pod pings
 *   pods on both other hosts every 50 ms: echo replies go missing only
 *   while that agent is down, and only towards its host; it comes back with
 *   its subnet and traffic resumes without anyone doing anything;
 * - spoofed and garbage datagrams sent at port 8285 from a namespace that
 *   is no peer: nothing reaches a pod (tcpdump in the pod), the agents stay
 *   up, and `/metrics` counts every datagram under its drop reason.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  type Cluster,
  type OverlayBackend,
  pingFailures,
  podsOf,
  startCluster,
} from "./lab/cluster.ts";
import { hold, waitFor } from "../testing/wait.ts";
import { evalCommand, REPO_ROOT } from "./lab/lab.ts";
import { formatIPv4, parseIPv4, parseIPv4Net } from "../core/ip.ts";
import { internetChecksum } from "../backends/udp/packet.ts";

/**
 * cluster.ts types only the kernel backends it reads peer state for; its
 * lab, etcd, agents, pod wiring and lease reading are backend-neutral. The
 * udp backend keeps its peers inside the agent, so `waitConverged` and
 * `peerStateDiff` are not used here.
 */
const UDP: OverlayBackend = "udp";

/** Where each agent serves /metrics, inside its own host namespace. */
const HEALTHZ_PORT = 9180;

/** How long each killed agent stays down in the restart test: part of the scenario. */
const AGENT_DOWN_MS = 300;

function startUdpCluster(options: { hosts: number; podsPerHost: number; internet?: boolean }) {
  return startCluster({
    backend: UDP,
    prefix: "wue",
    agentArgs: ["--healthz-port", String(HEALTHZ_PORT)],
    ...options,
  });
}

/** Wait until every pod pair pings (the agents learn peers just after "ready"). */
async function waitAllPing(c: Cluster, timeoutMs = 15_000): Promise<number> {
  return await waitFor(
    "every pod pair pings",
    async () => {
      const failed = await pingFailures(c.lab, c.pods);
      return failed.length ? failed.join(", ") : null;
    },
    timeoutMs,
    200,
  );
}

/** The agent's /metrics text. */
function metricsText(c: Cluster, host: number): Promise<string> {
  return c.lab.run(c.host(host).ns, ["curl", "-sf", `http://127.0.0.1:${HEALTHZ_PORT}/metrics`]);
}

/** The agent's `weft_udp_packets_total{direction="in"}`: packets it put into its TUN. */
async function packetsIn(c: Cluster, host: number): Promise<number> {
  const text = await metricsText(c, host);
  const m = text.match(/^weft_udp_packets_total\{direction="in"\} (\S+)$/m);
  assert.ok(m, `host ${host}'s /metrics has no weft_udp_packets_total{direction="in"}`);
  return Number(m[1]);
}

/** The agent's `weft_udp_dropped_packets_total` by reason, read from its /metrics. */
async function dropCounters(c: Cluster, host: number): Promise<Record<string, number>> {
  const text = await metricsText(c, host);
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^weft_udp_dropped_packets_total\{reason="([^"]+)"\} (\S+)$/gm)) {
    out[m[1]] = Number(m[2]);
  }
  assert.ok(Object.keys(out).length > 0, `host ${host}'s /metrics has no udp drop counters`);
  return out;
}

Deno.test("udp e2e: three hosts (host 2 under Bun) ping pairwise over flannel0, leases in flannel's udp format", async () => {
  const c = await startUdpCluster({ hosts: 3, podsPerHost: 2 });
  try {
    assert.equal(c.agents.get(2)?.runtime, "bun", "host 2's agent runs under Bun");
    assert.equal(c.agents.get(1)?.runtime, "deno");
    await waitAllPing(c);
    assert.equal(c.pods.length, 6);

    const leases = await c.leases();
    assert.deepEqual(
      leases.map((l) => [l.subnet, l.publicIP, l.backendType]).sort(),
      [1, 2, 3].map((i) => [c.subnets.get(i), c.host(i).ip, undefined]).sort(),
      "one lease per host, PublicIP only, no BackendType (flannel's udp lease)",
    );
    for (const i of [1, 2, 3]) {
      const ns = c.host(i).ns;
      const [link] = JSON.parse(await c.lab.run(ns, "ip -j -d link show flannel0"));
      assert.equal(link.linkinfo?.info_kind, "tun", `host ${i}: flannel0 is a TUN device`);
      assert.equal(link.mtu, 1500 - 28, `host ${i}: flannel0 MTU = external MTU − 28`);
      const routes = JSON.parse(await c.lab.run(ns, "ip -j route show dev flannel0"));
      assert.deepEqual(routes.map((r: { dst: string }) => r.dst), ["10.5.0.0/16"]);
      const ss = await c.lab.run(ns, "ss -Hlun sport = :8285");
      assert.match(ss, new RegExp(`${c.host(i).ip.replaceAll(".", "\\.")}:8285`));
    }
  } finally {
    await c.close();
  }
});

/** Echo replies in `ping -D` output: sequence number → arrival (ms since the epoch). */
function replyTimes(output: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const m of output.matchAll(/^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)/gm)) {
    out.set(Number(m[2]), Number(m[1]) * 1000);
  }
  return out;
}

/** A run of lost echo requests: the replies around it and when they came. */
interface Gap {
  readonly first: number;
  readonly last: number;
  /** Arrival of the reply just before the gap (ms since the epoch). */
  readonly before: number;
  /** Arrival of the reply just after the gap. */
  readonly after: number;
}

/**
 * The runs of sequence numbers without a reply, up to the last reply.
 *
 * @param replies Sequence → arrival time.
 * @returns Gaps; a gap before the first reply has `before` = -Infinity.
 */
function gaps(replies: Map<number, number>): Gap[] {
  const seqs = [...replies.keys()].sort((a, b) => a - b);
  const out: Gap[] = [];
  let prev = 0;
  for (const s of seqs) {
    if (s > prev + 1) {
      out.push({
        first: prev + 1,
        last: s - 1,
        before: prev ? replies.get(prev)! : -Infinity,
        after: replies.get(s)!,
      });
    }
    prev = s;
  }
  return out;
}

Deno.test("udp e2e: kill -9 and restart of an agent (Deno, Bun) loses pings only while it is down", async () => {
  const c = await startUdpCluster({ hosts: 3, podsPerHost: 1 });
  /** How late a lost request may still be answered after the restarted agent has its peers. */
  const RECOVERY_SLACK_MS = 1500;
  /** How early before the kill the last reply may have come (ping sends every 50 ms). */
  const KILL_SLACK_MS = 300;
  try {
    await waitAllPing(c);
    const [p3] = podsOf(c, 3);
    const pings = new Map<number, ReturnType<typeof c.lab.spawn>>();
    for (const target of [1, 2]) {
      const [p] = podsOf(c, target);
      pings.set(target, c.lab.spawn(p3.ns, "ping", ["-D", "-n", "-i", "0.05", p.ip]));
    }
    for (const p of pings.values()) await p.waitForOutput(/icmp_seq=5 /, 5000);

    const windows = new Map<number, { killed: number; recovered: number }>();
    for (const host of [1, 2]) {
      const agent = c.agents.get(host)!;
      const subnet = c.subnets.get(host);
      const ns = c.host(host).ns;
      const killed = Date.now();
      await agent.kill9();
      // flannel0 is not persistent: it goes with the agent, as in flannel
      await waitFor(`flannel0 on host ${host} gone with its agent`, async () => {
        const r = await c.lab.exec(ns, "ip link show flannel0");
        return r.code === 0 ? "still there" : null;
      }, 3000);
      await hold(`no agent on host ${host}`, AGENT_DOWN_MS);
      const after = await c.startAgent(host, agent.runtime);
      assert.equal(after, subnet, `host ${host}'s agent (${agent.runtime}) kept its subnet`);
      const restarted = c.agents.get(host)!;
      await restarted.waitLog((r) => r.msg === "peers listed");
      const recovered = Date.now();
      windows.set(host, { killed, recovered });
      // no operator action: the pings across simply resume
      const ping = pings.get(host)!;
      const seen = Math.max(0, ...replyTimes(ping.stdout()).keys());
      await waitFor(
        `pings to host ${host}'s pod resume after its agent restarted`,
        () =>
          Promise.resolve(
            Math.max(0, ...replyTimes(ping.stdout()).keys()) >= seen + 5
              ? null
              : ping.stdout().slice(-300),
          ),
        5000,
      );
    }
    // keep watching after the last restart, so that a later gap would show
    const lastSeq = (p: ReturnType<typeof c.lab.spawn>) =>
      Math.max(0, ...replyTimes(p.stdout()).keys());
    const upTo = new Map([...pings].map(([target, p]) => [target, lastSeq(p) + 10]));
    await waitFor("10 more echo replies from every pod after the last restart", () => {
      const behind = [...pings].filter(([target, p]) => lastSeq(p) < upTo.get(target)!);
      return behind.length ? `behind: ${behind.map(([t]) => `host ${t}'s pod`).join(", ")}` : null;
    }, 5000);
    for (const p of pings.values()) p.kill("SIGINT");
    for (const p of pings.values()) await p.exited;

    const report: string[] = [];
    for (const [target, ping] of pings) {
      const replies = replyTimes(ping.stdout());
      assert.ok(replies.size >= 20, `only ${replies.size} replies from host ${target}'s pod`);
      const w = windows.get(target)!;
      const found = gaps(replies);
      for (const g of found) {
        const inside = g.before >= w.killed - KILL_SLACK_MS &&
          g.after <= w.recovered + RECOVERY_SLACK_MS;
        assert.ok(
          inside,
          `pings to host ${target}'s pod: icmp_seq ${g.first}–${g.last} lost between replies at ${
            new Date(g.before).toISOString()
          } and ${new Date(g.after).toISOString()}, outside its agent's down time ${
            new Date(w.killed).toISOString()
          } – ${new Date(w.recovered).toISOString()} (+${RECOVERY_SLACK_MS} ms)`,
        );
      }
      assert.ok(found.length <= 1, `pings to host ${target}'s pod: ${found.length} gaps`);
      const lost = found.reduce((n, g) => n + g.last - g.first + 1, 0);
      report.push(
        `host ${target} (${c.agents.get(target)!.runtime}): down ${
          w.recovered - w.killed
        } ms, ${lost} of ${Math.max(...replies.keys())} pings lost`,
      );
    }
    console.log(report.join("; "));
  } finally {
    await c.close();
  }
});

/** An IPv4 packet carrying UDP, with a valid header checksum (UDP checksum 0). */
function ipv4Udp(
  p: { src: string; dst: string; ttl?: number; srcPort?: number; dstPort: number; data: string },
): Uint8Array {
  const data = new TextEncoder().encode(p.data);
  const pkt = new Uint8Array(28 + data.length);
  const dv = new DataView(pkt.buffer);
  pkt[0] = 0x45;
  dv.setUint16(2, pkt.length);
  dv.setUint16(4, 0x5757);
  pkt[8] = p.ttl ?? 64;
  pkt[9] = 17;
  dv.setUint32(12, parseIPv4(p.src));
  dv.setUint32(16, parseIPv4(p.dst));
  dv.setUint16(10, internetChecksum(pkt, 0, 20));
  dv.setUint16(20, p.srcPort ?? 6666);
  dv.setUint16(22, p.dstPort);
  dv.setUint16(24, 8 + data.length);
  pkt.set(data, 28);
  return pkt;
}

/** One datagram to send from the attacker's namespace. */
interface Datagram {
  /** Outer source address (must be local to the sending namespace). */
  readonly from: string;
  readonly to: string;
  readonly port: number;
  readonly payload: Uint8Array;
}

/** The attacker: sends datagrams with node:dgram (run by `deno eval` / `bun -e`). */
const SENDER = `
import dgram from "node:dgram";
const plan = JSON.parse(process.env.WUE_DATAGRAMS);
const sockets = new Map();
for (const d of plan) {
  let s = sockets.get(d.from);
  if (!s) {
    s = dgram.createSocket("udp4");
    await new Promise((resolve, reject) => {
      s.once("error", reject);
      s.bind({ address: d.from, port: 0 }, resolve);
    });
    sockets.set(d.from, s);
  }
  await new Promise((resolve, reject) =>
    s.send(Buffer.from(d.hex, "hex"), d.port, d.to, (e) => (e ? reject(e) : resolve()))
  );
}
for (const s of sockets.values()) s.close();
console.log("sent " + plan.length);
`;

async function sendDatagrams(c: Cluster, ns: string, datagrams: readonly Datagram[]) {
  const { cmd, args } = evalCommand(SENDER);
  const plan = datagrams.map((d) => ({
    from: d.from,
    to: d.to,
    port: d.port,
    hex: Array.from(d.payload, (b) => b.toString(16).padStart(2, "0")).join(""),
  }));
  const p = c.lab.spawn(ns, cmd, args, {
    cwd: REPO_ROOT,
    env: { WUE_DATAGRAMS: JSON.stringify(plan) },
  });
  const code = await p.exited;
  assert.equal(code, 0, `sender failed: ${p.stderr()}`);
  assert.match(p.stdout(), new RegExp(`sent ${datagrams.length}`));
}

Deno.test("udp e2e: spoofed and garbage datagrams from a non-peer reach no pod, agents stay up, /metrics counts them by reason", async () => {
  const c = await startUdpCluster({ hosts: 3, podsPerHost: 1, internet: true });
  const listeners: ReturnType<typeof c.lab.spawn>[] = [];
  try {
    await waitAllPing(c);
    const attacker = c.lab.internet!;
    const ownIP = "192.0.2.1"; // the internet namespace's underlay address: no peer's
    const peer = c.host(3); // the peer whose address the attacker forges
    const [p3] = podsOf(c, 3);
    assert.ok(!(await c.leases()).some((l) => l.publicIP === ownIP), `${ownIP} is no peer`);

    // the attacker also sends from host 3's address, without answering ARP for it
    // and without announcing it (so no host's neighbour entry for host 3 changes)
    for (
      const cmd of [
        "sysctl -q -w net.ipv4.conf.all.arp_ignore=1",
        "sysctl -q -w net.ipv4.conf.all.arp_announce=2",
        `ip addr add ${peer.ip}/32 dev lo`,
      ]
    ) await c.lab.run(attacker.ns, cmd);
    for (const target of [1, 2]) {
      const h = c.host(target);
      const [link] = JSON.parse(await c.lab.run(h.ns, "ip -j link show eth0"));
      await c.lab.run(
        attacker.ns,
        `ip neigh replace ${h.ip} lladdr ${link.address} dev eth0 nud permanent`,
      );
    }

    const REPEAT = 3;
    const expected = new Map<number, Record<string, number>>();
    const datagrams: Datagram[] = [];
    for (const target of [1, 2]) {
      const other = target === 1 ? 2 : 1;
      const [pod] = podsOf(c, target);
      const [otherPod] = podsOf(c, other);
      const otherNet = parseIPv4Net(c.subnets.get(other)!);
      const inner = (o: { src: string; dst?: string; ttl?: number }) =>
        ipv4Udp({ dst: pod.ip, dstPort: 7777, data: "attack", ...o });
      const badSum = inner({ src: p3.ip });
      badSum[10] ^= 0xff;
      const longer = inner({ src: p3.ip });
      new DataView(longer.buffer).setUint16(2, 200); // claims 200 bytes, has 34
      const cases: [string, string, Uint8Array][] = [
        ["unknown-peer", ownIP, inner({ src: p3.ip })],
        ["unknown-peer", ownIP, new Uint8Array(40).fill(0xa5)],
        ["spoofed-inner-source", peer.ip, inner({ src: formatIPv4(otherNet.ip + 9) })],
        ["spoofed-inner-source", peer.ip, inner({ src: "203.0.113.1" })],
        ["wrong-destination", peer.ip, inner({ src: p3.ip, dst: otherPod.ip })],
        ["truncated", peer.ip, Uint8Array.of(0x45, 0, 0, 10, 1, 2, 3, 4, 5, 6)],
        ["truncated", peer.ip, longer],
        ["not-ipv4", peer.ip, new Uint8Array(48).fill(0x60, 0, 1)],
        ["malformed", peer.ip, inner({ src: p3.ip }).fill(0x44, 0, 1)],
        ["bad-checksum", peer.ip, badSum],
        ["ttl-expired", peer.ip, inner({ src: p3.ip, ttl: 1 })],
      ];
      const want: Record<string, number> = {};
      for (let i = 0; i < REPEAT; i++) {
        for (const [reason, from, payload] of cases) {
          datagrams.push({ from, to: c.host(target).ip, port: 8285, payload });
          if (i === 0) want[reason] = (want[reason] ?? 0) + REPEAT;
        }
      }
      expected.set(target, want);
    }

    // every pod watches for packets to its UDP port 7777, where every forged inner packet is aimed
    for (const pod of c.pods) {
      const l = c.lab.spawn(pod.ns, "tcpdump", ["-l", "-n", "-i", "eth0", "udp port 7777"]);
      listeners.push(l);
      await l.waitForOutput(/listening on/, 10_000);
    }
    // /metrics gets the engine's counters once a second: a ping sent now must
    // show up there first, so every drop before the attack is in `before`
    for (const h of [1, 2]) {
      const [pod] = podsOf(c, h);
      const seen = await packetsIn(c, h);
      assert.ok(await c.lab.ping(p3.ns, pod.ip), `${p3.ns} pings ${pod.ip}`);
      await waitFor(
        `host ${h}'s /metrics counts the ping just sent`,
        async () => {
          const now = await packetsIn(c, h);
          return now > seen ? null : `weft_udp_packets_total{direction="in"} still ${now}`;
        },
        5000,
        100,
      );
    }
    const before = new Map<number, Record<string, number>>();
    for (const h of [1, 2]) before.set(h, await dropCounters(c, h));

    await sendDatagrams(c, attacker.ns, datagrams);

    for (const target of [1, 2]) {
      const want = expected.get(target)!;
      await waitFor(
        `host ${target}'s drop counters`,
        async () => {
          const now = await dropCounters(c, target);
          const got: Record<string, number> = {};
          for (const reason of Object.keys(want)) {
            got[reason] = now[reason] - (before.get(target)![reason] ?? 0);
          }
          return JSON.stringify(got) === JSON.stringify(want)
            ? null
            : `grew by ${JSON.stringify(got)}, want ${JSON.stringify(want)}`;
        },
        5000,
        200,
      );
    }

    // a real packet across the overlay does reach the pod's listener
    for (const target of [1, 2]) {
      const [pod] = podsOf(c, target);
      await c.lab.run(p3.ns, ["bash", "-c", `echo legit >/dev/udp/${pod.ip}/7777`]);
      await listeners[c.pods.indexOf(pod)].waitForOutput(/length 6/, 5000);
    }
    // Nothing else can arrive: the drop counters accounted for every forged
    // datagram, and the legit packets, sent after them, have been seen.
    for (const l of listeners) l.kill("SIGINT");
    for (const l of listeners) await l.exited;
    for (const [i, l] of listeners.entries()) {
      const pod = c.pods[i];
      const lines = l.stdout().split("\n").filter((x) => x.includes(` > ${pod.ip}.7777:`));
      const want = pod.hostIndex === 3 ? 0 : 1;
      assert.equal(
        lines.length,
        want,
        `${pod.ns} saw ${lines.length} packets on udp port 7777, want ${want} (the legit one):\n${
          lines.join("\n")
        }`,
      );
      assert.ok(!lines.some((x) => x.includes(".6666 >")), `a forged packet reached ${pod.ns}`);
    }

    // the agents are still up and carry traffic
    for (const [i, a] of c.agents) {
      assert.equal(a.process.exitCode(), null, `host ${i}'s agent exited`);
      await c.lab.run(c.host(i).ns, ["curl", "-sf", `http://127.0.0.1:${HEALTHZ_PORT}/healthz`]);
    }
    assert.deepEqual(await pingFailures(c.lab, c.pods), [], "all pod pairs still ping");
    console.log(
      `drops counted: host 1 (deno) ${JSON.stringify(expected.get(1))}; host 2 (bun) same`,
    );
  } finally {
    for (const l of listeners) l.kill("SIGKILL");
    await c.close();
  }
});
