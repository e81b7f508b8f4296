import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Buffer } from "node:buffer";
import { parseIPv4 } from "../../core/ip.ts";
import { encodeLeaseAttrs, type Lease } from "../../lease/types.ts";
import { FakeDatapath } from "../../testing/datapath_fake.ts";
import { FakeWireguardDriver } from "../../testing/wireguard_fake.ts";
import { peerLease, testContext } from "../../testing/routing.ts";
import { generateKeys } from "./keys.ts";
import { wireguardBackend, type WireguardNetwork } from "./backend.ts";

const keyA = generateKeys().publicKey;
const keyB = generateKeys().publicKey;

function wgLease(subnet: string, publicIP: string, publicKey: string, port?: number): Lease {
  return {
    ...peerLease(subnet, publicIP, "wireguard"),
    attrs: {
      publicIP,
      backendType: "wireguard",
      backendData: port === undefined
        ? { PublicKey: publicKey }
        : { PublicKey: publicKey, Port: port },
    },
  };
}

function setup(backend: Record<string, unknown> = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "w1wg-"));
  const keyFile = path.join(dir, "wgkey");
  const dp = new FakeDatapath();
  const eth0 = dp.addLink({
    name: "eth0",
    mtu: 1500,
    up: true,
    addresses: [{ ip: parseIPv4("192.0.2.11"), prefixLen: 24 }],
  });
  const driver = new FakeWireguardDriver(dp);
  const newCtx = () =>
    testContext({
      backend: { Type: "wireguard", ...backend },
      ext: {
        name: "eth0",
        index: eth0.index,
        mtu: 1500,
        ifaceAddr: "192.0.2.11",
        extAddr: "192.0.2.11",
      },
      subnet: "10.5.1.0/24",
    });
  const register = async (ctx = newCtx()) => {
    const net = await wireguardBackend({
      datapath: dp,
      driver: () => Promise.resolve(driver),
      keyFile,
      env: {},
      resyncIntervalMs: 0,
    }).register(ctx) as WireguardNetwork;
    return { net, ctx };
  };
  return { dp, driver, keyFile, register, cleanup: () => fs.rmSync(dir, { recursive: true }) };
}

const A = wgLease("10.5.2.0/24", "192.0.2.12", keyA, 51820);
const B = wgLease("10.5.3.0/24", "192.0.2.13", keyB); // a lease without Port (older flannel)

Deno.test("register publishes flannel's BackendData, keeps the key file, sets up the device with MTU − 80", async () => {
  const s = setup();
  try {
    const { net, ctx } = await s.register();
    assert.equal(net.mtu, 1420);
    assert.equal(net.deviceName, "flannel-wg");
    assert.equal(
      encodeLeaseAttrs(ctx.acquired[0]),
      `{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"${net.publicKey}","Port":51820}}`,
    );
    const key = fs.readFileSync(s.keyFile, "utf8");
    assert.match(key, /^[A-Za-z0-9+/]{43}=$/);
    assert.equal(fs.statSync(s.keyFile).mode & 0o777, 0o400);
    const dev = s.driver.devices.get("flannel-wg")!;
    assert.equal(dev.privateKeyHex, Buffer.from(key, "base64").toString("hex"));
    assert.equal(dev.listenPort, 51820);
    const link = await s.dp.link("flannel-wg");
    assert.equal(link?.mtu, 1420);
    assert.equal(link?.up, true);
    assert.deepEqual(link?.addresses, [{ ip: parseIPv4("10.5.1.0"), prefixLen: 32 }]);
    assert.deepEqual(s.dp.routes(), ["10.5.0.0/16 dev flannel-wg"]);
    // the private key shows in no log record
    const logs = ctx.logger.lines.join("\n");
    assert.ok(!logs.includes(key) && !logs.includes(dev.privateKeyHex!), "private key logged");
    assert.ok(logs.includes(net.publicKey), "the public key is logged");

    // a second start reads the same key
    const again = await s.register();
    assert.equal(again.net.publicKey, net.publicKey);
  } finally {
    s.cleanup();
  }
});

Deno.test("syncPeers gives each peer its key, endpoint PublicIP:Port, subnet and keepalive; a restart writes nothing", async () => {
  const s = setup({ PersistentKeepaliveInterval: 25 });
  try {
    const { net } = await s.register();
    await net.syncPeers([A, B]);
    const peers = s.driver.devices.get("flannel-wg")!.peers;
    assert.deepEqual(peers.get(keyA), {
      publicKey: keyA,
      endpoint: "192.0.2.12:51820",
      keepalive: 25,
      allowedIPs: ["10.5.2.0/24"],
      lastHandshakeSec: 0,
    });
    assert.equal(peers.get(keyB)?.endpoint, "192.0.2.13:51820", "a lease without Port: own port");
    const sets = s.driver.sets.length;
    const writes = s.dp.writes;

    const { net: restarted } = await s.register();
    await restarted.syncPeers([A, B]);
    assert.equal(s.driver.sets.length, sets, "a restart sets nothing on the device");
    assert.equal(s.dp.writes, writes, "a restart writes nothing in the kernel");
    assert.equal(s.driver.created, 1);
  } finally {
    s.cleanup();
  }
});

Deno.test("updatePeers adds, re-keys and removes only the peers that changed", async () => {
  const s = setup();
  try {
    const { net } = await s.register();
    await net.syncPeers([A]);
    const before = s.driver.sets.length;
    await net.updatePeers!([{ type: "added", lease: B }]);
    assert.equal(s.driver.sets.length, before + 1);
    assert.deepEqual(s.driver.sets.at(-1)!.peers.map((p) => p.publicKey), [keyB]);

    const keyA2 = generateKeys().publicKey;
    await net.updatePeers!([{
      type: "added",
      lease: wgLease("10.5.2.0/24", "192.0.2.12", keyA2, 51820),
    }]);
    const peers = s.driver.devices.get("flannel-wg")!.peers;
    assert.ok(!peers.has(keyA), "the old key of a re-keyed peer is removed");
    assert.deepEqual(peers.get(keyA2)?.allowedIPs, ["10.5.2.0/24"]);

    await net.updatePeers!([{ type: "removed", lease: B }]);
    assert.deepEqual([...peers.keys()], [keyA2]);
  } finally {
    s.cleanup();
  }
});

Deno.test("a full sync restores a peer removed behind the agent's back and removes a stranger", async () => {
  const s = setup();
  try {
    const { net } = await s.register();
    await net.syncPeers([A, B]);
    const dev = s.driver.devices.get("flannel-wg")!;
    dev.peers.delete(keyA);
    const stranger = generateKeys().publicKey;
    dev.peers.set(stranger, {
      publicKey: stranger,
      keepalive: 0,
      allowedIPs: ["10.5.9.0/24"],
      lastHandshakeSec: 0,
    });
    const r = await net.resync();
    assert.deepEqual(r, { added: 1, removed: 1, failed: 0 });
    assert.deepEqual([...dev.peers.keys()].sort(), [keyA, keyB].sort());
  } finally {
    s.cleanup();
  }
});

Deno.test("peers of another backend type, or without a usable key are skipped with a warning", async () => {
  const s = setup();
  try {
    const { net, ctx } = await s.register();
    const bad = wgLease("10.5.4.0/24", "192.0.2.14", "not-a-key");
    await net.syncPeers([A, peerLease("10.5.5.0/24", "192.0.2.15", "vxlan"), bad]);
    assert.deepEqual([...s.driver.devices.get("flannel-wg")!.peers.keys()], [keyA]);
    const warned = ctx.logger.lines.filter((l) => l.includes("skipping peer lease"));
    assert.equal(warned.length, 2, warned.join("\n"));
    assert.match(warned[0], /not \\?"wireguard\\?"/);
    assert.match(warned[1], /PublicKey is not a WireGuard public key/);
  } finally {
    s.cleanup();
  }
});

Deno.test("a PSK is given to every peer; Mode ipv6 is refused with the fix", async () => {
  const psk = Buffer.alloc(32, 7).toString("base64");
  const s = setup({ PSK: psk });
  try {
    const { net } = await s.register();
    await net.syncPeers([A]);
    assert.equal(s.driver.devices.get("flannel-wg")!.peers.get(keyA)?.presharedKey, psk);
  } finally {
    s.cleanup();
  }
  const v6 = setup({ Mode: "ipv6" });
  try {
    await assert.rejects(v6.register(), /IPv4 only: "Backend.Mode" "ipv6" is not supported/);
  } finally {
    v6.cleanup();
  }
});
