/**
 * `ensureBlackholeRoute` against the real kernel, in a throwaway namespace.
 *
 * @module
 */

import assert from "node:assert/strict";
import { parseIPv4Net } from "../core/ip.ts";
import { ensureBlackholeRoute } from "./blackhole.ts";
import { openNetlinkClient } from "./netlink/client.ts";
import { createNetns, deleteNetns, nsRun, sweepNetns } from "../testing/netns.ts";

const PREFIX = "wbh";
sweepNetns(PREFIX);

Deno.test({
  name:
    "ensureBlackholeRoute() adds `blackhole <subnet>` once, and leaves a subnet routed by the pod bridge alone",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const ns = createNetns(PREFIX);
    const client = await openNetlinkClient({ netns: ns });
    try {
      const subnet = parseIPv4Net("10.5.1.0/24");
      assert.equal(await ensureBlackholeRoute(client, subnet), "added");
      assert.equal(nsRun(ns, "ip", "route", "show", "10.5.1.0/24").trim(), "blackhole 10.5.1.0/24");
      assert.equal(await ensureBlackholeRoute(client, subnet), "present");
      assert.equal(
        nsRun(ns, "ip", "route", "show", "type", "blackhole").trim().split("\n").length,
        1,
      );

      // a subnet the pod bridge routes (its connected route): nothing is replaced
      nsRun(ns, "ip", "link", "add", "cni0", "type", "bridge");
      nsRun(ns, "ip", "addr", "add", "10.5.2.1/24", "dev", "cni0");
      nsRun(ns, "ip", "link", "set", "cni0", "up");
      const bridged = parseIPv4Net("10.5.2.0/24");
      assert.equal(await ensureBlackholeRoute(client, bridged), "routed");
      assert.match(nsRun(ns, "ip", "route", "show", "10.5.2.0/24"), /^10\.5\.2\.0\/24 dev cni0 /);
      assert.doesNotMatch(nsRun(ns, "ip", "route", "show", "type", "blackhole"), /10\.5\.2\./);
    } finally {
      client.close();
      deleteNetns(ns);
    }
  },
});
