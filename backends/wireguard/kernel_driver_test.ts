/**
 * The kernel driver's probe: whether the `wireguard` generic netlink family
 * resolves decides the driver. Exactly one of the two tests applies on a
 * machine; the other is reported ignored with the reason.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { testUnless } from "../../testing/ignorable.ts";
import { kernelDriver, toSetDevice } from "./kernel_driver.ts";
import { parseIPv4Net } from "../../core/ip.ts";
import { Buffer } from "node:buffer";

const hasModule = fs.existsSync("/sys/module/wireguard");

testUnless(
  hasModule ? "this kernel has the WireGuard module" : null,
  {
    name:
      "kernelDriver reports that the wireguard genl family does not resolve on a kernel without WireGuard",
    fn: async () => {
      const probe = await kernelDriver();
      assert.equal(probe.available, false);
      if (!probe.available) {
        assert.match(probe.reason, /generic netlink family wireguard does not resolve/);
      }
    },
  },
);

testUnless(
  hasModule
    ? null
    : "cannot run here: this kernel has no WireGuard module (the genl family does not resolve)",
  {
    name: "kernelDriver resolves the wireguard genl family and offers the kernel driver",
    fn: async () => {
      const probe = await kernelDriver();
      assert.equal(probe.available, true);
    },
  },
);

Deno.test("toSetDevice turns a UAPI-style config into the genl request (keys raw, endpoint split, PSK zero when none)", () => {
  const pub = Buffer.alloc(32, 2).toString("base64");
  const set = toSetDevice("flannel-wg", {
    privateKeyHex: "11".repeat(32),
    listenPort: 51820,
    peers: [{
      publicKey: pub,
      endpoint: "192.0.2.12:51820",
      keepalive: 0,
      allowedIPs: [parseIPv4Net("10.5.2.0/24")],
    }, { publicKey: pub, remove: true, keepalive: 0, allowedIPs: [] }],
  });
  assert.equal(set.ifname, "flannel-wg");
  assert.deepEqual([...set.privateKey!], new Array(32).fill(0x11));
  assert.equal(set.listenPort, 51820);
  assert.deepEqual(set.peers[0].endpoint, { ip: 0xc000020c, n: 51820 });
  assert.deepEqual([...set.peers[0].presharedKey!], new Array(32).fill(0));
  assert.deepEqual(set.peers[0].allowedIPs, [{ ip: 0x0a050200, n: 24 }]);
  assert.deepEqual(set.peers[1], { publicKey: new Uint8Array(32).fill(2), remove: true });
});
