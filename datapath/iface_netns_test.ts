/**
 * Address preference against the real kernel, in a throwaway namespace: the
 * flags rtnetlink reports order the addresses as flannel does.
 *
 * @module
 */

import assert from "node:assert/strict";
import { formatIPv4 } from "../core/ip.ts";
import { preferredIPv4Order } from "./iface.ts";
import { openNetlinkClient } from "./netlink/client.ts";
import { createNetns, deleteNetns, nsRun, sweepNetns } from "../testing/netns.ts";

Deno.test({
  name: "the kernel's address flags (rtnetlink) order a DHCP address after a static one",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    sweepNetns("wif");
    const ns = createNetns("wif");
    const client = await openNetlinkClient({ netns: ns });
    try {
      nsRun(ns, "ip", "link", "add", "br0", "type", "bridge");
      // as a DHCP client adds it: with lifetimes (dynamic), then a static secondary, a deprecated one
      nsRun(
        ns,
        "ip",
        "addr",
        "add",
        "192.0.2.50/24",
        "dev",
        "br0",
        "valid_lft",
        "600",
        "preferred_lft",
        "600",
      );
      nsRun(ns, "ip", "addr", "add", "192.0.2.60/24", "dev", "br0");
      nsRun(ns, "ip", "addr", "add", "192.0.2.70/24", "dev", "br0", "preferred_lft", "0");
      const br = (await client.getLink("br0"))!;
      const facts = (await client.listAddresses(br.index)).map((a) => ({
        ip: formatIPv4(a.ip),
        flags: a.flags ?? 0,
      }));
      assert.deepEqual(facts.map((f) => f.ip), ["192.0.2.50", "192.0.2.60", "192.0.2.70"]);
      assert.deepEqual(preferredIPv4Order(facts), ["192.0.2.60", "192.0.2.50"]);
    } finally {
      client.close();
      deleteNetns(ns);
    }
  },
});
