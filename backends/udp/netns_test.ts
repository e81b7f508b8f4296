/**
 * The udp backend over the real kernel, in throwaway network namespaces:
 * host A runs in this process (Deno, engine in a Worker, offloads on), host
 * B in a Bun process with offloads off (one datagram per packet, as flannel
 * sends), and a third namespace, no peer, sends spoofed and garbage
 * datagrams at port 8285. Needs root and /dev/net/tun, and fails saying so
 * without them.
 *
 * @module
 */

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import process from "node:process";
import { nullLogger } from "../../core/log.ts";
import { Registry } from "../../core/metrics.ts";
import { openNetlinkDatapath } from "../../datapath/netlink/datapath.ts";
import { createLab, nsRun, run, sweepNetns } from "../../testing/netns.ts";
import { execPath, openLibrary } from "../../core/runtime.ts";
import { systemClock } from "../../core/clock.ts";
import { parseNetworkConfig } from "../../lease/config.ts";
import { parseIPv4, parseIPv4Net } from "../../core/ip.ts";
import { spawnUdpHost, type UdpHostProcess } from "../../test/bench/udp_host.ts";
import { kernelUdpIo, udpBackend } from "./backend.ts";
import { openUdpSocket } from "./io.ts";
import { internetChecksum } from "./packet.ts";

/** What the test needs from the machine; it fails (never skips) without it. */
function requireKernel(): void {
  const missing = [
    process.getuid?.() === 0 ? null : "root",
    existsSync("/dev/net/tun") ? null : "/dev/net/tun",
    spawnSync("ip", ["netns", "list"]).status === 0 ? null : "`ip netns` (iproute2)",
  ].filter((x) => x !== null);
  if (missing.length > 0) {
    throw new Error(
      `the udp netns test needs ${
        missing.join(", ")
      }: run the suite as root on a kernel with TUN and network namespaces`,
    );
  }
}

const NETWORK = "10.66.0.0/16";
const A_SUBNET = "10.66.1.0/24";
const B_SUBNET = "10.66.2.0/24";

/** An IPv4 packet with a correct header checksum (ICMP echo request by default). */
function packet(src: string, dst: string, opts: { ttl?: number; proto?: number } = {}) {
  const p = new Uint8Array(28);
  const v = new DataView(p.buffer);
  p[0] = 0x45;
  v.setUint16(2, p.length);
  p[8] = opts.ttl ?? 64;
  p[9] = opts.proto ?? 1;
  v.setUint32(12, parseIPv4(src));
  v.setUint32(16, parseIPv4(dst));
  v.setUint16(10, internetChecksum(p, 0, 20));
  p[20] = 8; // echo request
  v.setUint16(22, internetChecksum(p, 20, 8));
  return p;
}

/** RX packets of flannel0 in a namespace: what the engine wrote into the kernel. */
function tunRxPackets(ns: string): number {
  const [link] = JSON.parse(run("ip", ["-n", ns, "-s", "-j", "link", "show", "flannel0"]));
  return link.stats64.rx.packets;
}

function ping(ns: string, dst: string, count = 3): string {
  const r = spawnSync("ip", [
    "netns",
    "exec",
    ns,
    "ping",
    "-n",
    "-c",
    String(count),
    "-i",
    "0.2",
    "-W",
    "2",
    dst,
  ], {
    encoding: "utf8",
  });
  return r.stdout;
}

const SINK = `
import { createServer } from "node:net";
import { createHash } from "node:crypto";
import process from "node:process";
const [addr, port] = process.argv.slice(-2);
const server = createServer((sock) => {
  const h = createHash("sha256");
  let n = 0;
  sock.on("data", (d) => { h.update(d); n += d.length; });
  sock.on("end", () => { console.log(JSON.stringify({ n, sha: h.digest("hex") })); server.close(); });
});
server.listen(Number(port), addr, () => console.log("listening"));
`;

const SOURCE = `
import { connect } from "node:net";
import { createHash } from "node:crypto";
import process from "node:process";
const [addr, port, bytes] = process.argv.slice(-3);
const total = Number(bytes);
const h = createHash("sha256");
const sock = connect(Number(port), addr, async () => {
  let seed = 1;
  for (let sent = 0; sent < total;) {
    const chunk = new Uint8Array(Math.min(65536, total - sent));
    for (let i = 0; i < chunk.length; i++) chunk[i] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
    h.update(chunk);
    sent += chunk.length;
    if (!sock.write(chunk)) await new Promise((r) => sock.once("drain", r));
  }
  sock.end(() => console.log(JSON.stringify({ n: total, sha: h.digest("hex") })));
});
`;

/**
 * Send `bytes` of pseudo-random data over TCP from one namespace to a sink in
 * another; both ends hash what they saw.
 */
async function tcpTransfer(fromNs: string, toNs: string, addr: string, bytes: number) {
  const port = String(20000 + Math.floor(Math.random() * 20000));
  const deno = execPath();
  const sink = spawn("ip", ["netns", "exec", toNs, deno, "eval", SINK, addr, port], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  sink.stdout!.on("data", (d) => (out += d));
  const ended = new Promise((r) => sink.on("exit", r));
  try {
    for (let i = 0; i < 200 && !out.includes("listening"); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const src = spawnSync("ip", [
      "netns",
      "exec",
      fromNs,
      deno,
      "eval",
      SOURCE,
      addr,
      port,
      String(bytes),
    ], {
      encoding: "utf8",
      timeout: 60_000,
    });
    await Promise.race([ended, new Promise((r) => setTimeout(r, 10_000))]);
    const received = JSON.parse(out.split("\n").find((l) => l.startsWith("{")) ?? "{}");
    return { sent: JSON.parse(src.stdout || "{}"), received };
  } finally {
    sink.kill("SIGKILL");
  }
}

function routeOnFlannel0(ns: string): boolean {
  return run("ip", ["-n", ns, "route", "show", NETWORK]).includes("dev flannel0");
}

/** Poll `check` every 100 ms for up to 10 s. */
async function eventually(check: () => boolean): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

const received = (out: string) => Number(/(\d+) received/.exec(out)?.[1] ?? 0);

/** Start host A in this process (the real backend, Deno Worker engine). */
async function startInProcess(ns: string, ip: string, peerIp: string) {
  const datapath = await openNetlinkDatapath({ netns: ns });
  const metrics = new Registry();
  const stop = new AbortController();
  const network = await udpBackend({
    datapath,
    io: kernelUdpIo({ netns: ns }),
    metricsIntervalMs: 50,
  })
    .register({
      config: parseNetworkConfig(`{"Network":"${NETWORK}","Backend":{"Type":"udp"}}`),
      extIface: { name: "eth0", index: 0, mtu: 1500, ifaceAddr: ip, extAddr: ip },
      acquire: (attrs) =>
        Promise.resolve({ subnet: parseIPv4Net(A_SUBNET), attrs, expiration: null }),
      logger: nullLogger,
      metrics,
      clock: systemClock,
      signal: stop.signal,
    });
  await network.syncPeers([{
    subnet: parseIPv4Net(B_SUBNET),
    attrs: { publicIP: peerIp },
    expiration: null,
  }]);
  const running = network.run(stop.signal);
  while (network.notReadyReason?.() !== null) await new Promise((r) => setTimeout(r, 10));
  const dropped = (reason: string) =>
    metrics.counter("weft_udp_dropped_packets_total", "").get({ reason });
  return {
    network,
    dropped,
    async close() {
      stop.abort();
      await running;
      datapath.close();
    },
  };
}

Deno.test({
  name:
    "udp backend: hosts ping over the tunnel, a non-peer's spoofed and garbage datagrams are dropped and counted",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    requireKernel();
    sweepNetns("wud");
    const lab = createLab("wud", 3);
    const [a, b, c] = lab.hosts;
    let hostA: Awaited<ReturnType<typeof startInProcess>> | undefined;
    let hostB: UdpHostProcess | undefined;
    const sockets: { close(): void }[] = [];
    const bConfig = {
      network: NETWORK,
      subnet: B_SUBNET,
      publicIP: b.ip,
      peers: [{ subnet: A_SUBNET, publicIP: a.ip }],
      offload: false,
    };
    try {
      hostA = await startInProcess(a.ns, a.ip, b.ip);
      hostB = await spawnUdpHost(b.ns, "bun", bConfig);

      // Both ways over the encapsulation; TTL 64 − 2 (one decrement per agent).
      const ab = ping(a.ns, "10.66.2.0");
      assert.equal(received(ab), 3, ab);
      assert.match(ab, /ttl=62/);
      assert.equal(received(ping(b.ns, "10.66.1.0")), 3);
      // TCP both ways: A cuts TSO super-packets, B sends packet by packet, A merges.
      for (const [from, to, addr] of [[a, b, "10.66.2.0"], [b, a, "10.66.1.0"]] as const) {
        const { sent, received } = await tcpTransfer(from.ns, to.ns, addr, 30_000_000);
        assert.equal(received.n, 30_000_000, `${from.ns} → ${to.ns}`);
        assert.equal(received.sha, sent.sha, "the bytes arrive intact");
      }
      // No peer owns 10.66.9.9: ICMP net-unreachable comes back through the TUN.
      assert.match(ping(a.ns, "10.66.9.9", 1), /Destination Net Unreachable/);

      const own = await openUdpSocket({ netns: c.ns, address: parseIPv4(c.ip), port: 0 });
      sockets.push(own);
      const libc = await openLibrary("libc.so.6", {
        sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "i32" },
      });
      const send = (fd: number, to: string, payload: Uint8Array) => {
        const sa = new Uint8Array(16);
        const v = new DataView(sa.buffer);
        v.setUint16(0, 2, true);
        v.setUint16(2, 8285);
        v.setUint32(4, parseIPv4(to));
        assert.equal(libc.symbols.sendto(fd, payload, payload.length, 0, sa, 16), payload.length);
      };

      const rxA = tunRxPackets(a.ns);
      const rxB = tunRxPackets(b.ns);
      const before = (await hostB.stats()).counters.dropped;
      let seed = 7;
      const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
      const garbage = () =>
        Uint8Array.from({ length: Math.floor(rand() * 1400) }, () => rand() * 256);

      // From the attacker's own address: not a peer → unknown-peer, at both hosts.
      for (const target of [a.ip, b.ip]) {
        send(own.fd, target, packet("10.66.1.5", target === a.ip ? "10.66.1.0" : "10.66.2.0"));
        for (let i = 0; i < 50; i++) send(own.fd, target, garbage());
      }
      // The attacker owns A's PublicIP on its loopback to send with it as source; it
      // neither answers ARP for it nor announces it (A keeps its neighbour entries).
      nsRun(
        c.ns,
        "sysctl",
        "-qw",
        "net.ipv4.conf.all.arp_ignore=1",
        "net.ipv4.conf.all.arp_announce=2",
      );
      nsRun(c.ns, "ip", "addr", "add", `${a.ip}/32`, "dev", "lo");
      const spoof = await openUdpSocket({ netns: c.ns, address: parseIPv4(a.ip), port: 8285 });
      sockets.push(spoof);
      // Spoofing A's PublicIP towards B: each inner defect has its own reason.
      const bad = packet("10.66.1.5", "10.66.2.0");
      bad[11] ^= 0xff;
      const v6 = new Uint8Array(48);
      v6[0] = 0x60;
      const spoofs: [string, Uint8Array][] = [
        ["spoofed-inner-source", packet("10.66.7.7", "10.66.2.0")],
        ["spoofed-inner-source", packet("10.66.2.9", "10.66.2.0")],
        ["wrong-destination", packet("10.66.1.5", "10.66.3.3")],
        ["bad-checksum", bad],
        ["truncated", packet("10.66.1.5", "10.66.2.0").subarray(0, 24)],
        ["truncated", new Uint8Array(0)],
        ["not-ipv4", v6],
        ["ttl-expired", packet("10.66.1.5", "10.66.2.0", { ttl: 1 })],
      ];
      for (const [, p] of spoofs) send(spoof.fd, b.ip, p);

      const total = (d: Record<string, number>) => Object.values(d).reduce((x, y) => x + y, 0);
      const expected = total(before) + 51 + spoofs.length;
      let after = (await hostB.stats()).counters.dropped;
      for (let i = 0; i < 20 && total(after) < expected; i++) {
        after = (await hostB.stats()).counters.dropped; // under load the copy may lag
      }
      const grew = (reason: string) =>
        after[reason as keyof typeof after] - before[reason as keyof typeof before];
      assert.equal(grew("unknown-peer"), 51);
      for (const reason of new Set(spoofs.map(([r]) => r))) {
        assert.equal(grew(reason), spoofs.filter(([r]) => r === reason).length, reason);
      }
      for (let i = 0; i < 50 && hostA.dropped("unknown-peer") < 51; i++) {
        await new Promise((r) => setTimeout(r, 20)); // metrics are copied every 50 ms
      }
      assert.equal(hostA.dropped("unknown-peer"), 51);
      // Nothing reached the inner side of either host.
      assert.equal(tunRxPackets(a.ns), rxA);
      assert.equal(tunRxPackets(b.ns), rxB);

      // Both engines are still up and forwarding.
      assert.equal(hostB.alive, true);
      assert.equal(received(ping(a.ns, "10.66.2.0")), 3);

      // kill -9 B: traffic stops; a restarted B carries it again, A needs nothing.
      process.kill(hostB.pid, "SIGKILL");
      await hostB.stop(2000);
      assert.equal(received(ping(a.ns, "10.66.2.0", 1)), 0);
      hostB = await spawnUdpHost(b.ns, "bun", bConfig);
      assert.equal(received(ping(a.ns, "10.66.2.0")), 3);

      // Someone deletes A's overlay route, then A's flannel0 itself: A puts both back.
      nsRun(a.ns, "ip", "route", "del", NETWORK, "dev", "flannel0");
      assert.ok(await eventually(() => routeOnFlannel0(a.ns)), "route restored");
      nsRun(a.ns, "ip", "link", "del", "flannel0");
      assert.ok(await eventually(() => routeOnFlannel0(a.ns)), "device and route recreated");
      assert.ok(
        await eventually(() => received(ping(a.ns, "10.66.2.0", 1)) === 1),
        "traffic again",
      );
    } finally {
      for (const s of sockets) s.close();
      await hostB?.stop(2000).catch(() => {});
      await hostA?.close().catch(() => {});
      lab.destroy();
    }
  },
});
