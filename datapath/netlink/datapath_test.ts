import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { parseIPv4 } from "../../core/ip.ts";
import { datapathContract, waitForEvent } from "../../testing/datapath_contract.ts";
import { openNetlinkDatapath } from "./datapath.ts";
import { createNetns, deleteNetns, nsRun, run, sweepNetns } from "../../testing/netns.ts";

/** Bun as installed by `npm ci` (test/setup.sh); the test must not skip silently without it. */
const BUN = new URL("../../node_modules/.bin/bun", import.meta.url).pathname;

const PREFIX = "wdp";
sweepNetns(PREFIX);

const opts = { sanitizeResources: false, sanitizeOps: false };

for (const c of datapathContract) {
  Deno.test({
    name: `NetlinkDatapath contract: ${c.name}`,
    ...opts,
    fn: async () => {
      const ns = createNetns(PREFIX, "c");
      const dp = await openNetlinkDatapath({ netns: ns });
      try {
        await c.fn(dp);
      } finally {
        dp.close();
        deleteNetns(ns);
      }
    },
  });
}

Deno.test({
  name: "NetlinkDatapath in a namespace does not see or touch the host namespace",
  ...opts,
  fn: async () => {
    const ns = createNetns(PREFIX, "c");
    const hostLinks = run("ip", ["-o", "link", "show"]);
    const dp = await openNetlinkDatapath({ netns: ns });
    try {
      assert.deepEqual((await dp.listLinks()).map((l) => l.name), ["lo"]);
      await dp.createBridge({ name: "wdpbr0", up: true });
      assert.match(nsRun(ns, "ip", "-o", "link", "show", "wdpbr0"), /wdpbr0/);
      assert.equal(run("ip", ["-o", "link", "show"]), hostLinks);
    } finally {
      dp.close();
      deleteNetns(ns);
    }
  },
});

Deno.test({
  name: "NetlinkDatapath events report changes made by other processes",
  ...opts,
  fn: async () => {
    const ns = createNetns(PREFIX, "c");
    const dp = await openNetlinkDatapath({ netns: ns });
    const ac = new AbortController();
    const it = dp.events(ac.signal)[Symbol.asyncIterator]();
    try {
      nsRun(ns, "ip", "link", "add", "br7", "type", "bridge");
      nsRun(ns, "ip", "link", "set", "br7", "up");
      nsRun(ns, "ip", "addr", "add", "192.0.2.1/24", "dev", "br7");
      nsRun(ns, "ip", "route", "add", "10.5.2.0/24", "via", "192.0.2.2");
      nsRun(ns, "ip", "route", "del", "10.5.2.0/24");
      const e = await waitForEvent(it, (e) => e.kind === "route" && e.action === "del");
      assert.equal(e.kind === "route" && e.route.gateway, parseIPv4("192.0.2.2"));
      nsRun(ns, "ip", "link", "del", "br7");
      await waitForEvent(
        it,
        (e) => e.kind === "link" && e.action === "del" && e.link.name === "br7",
      );
    } finally {
      ac.abort();
      dp.close();
      deleteNetns(ns);
    }
  },
});

Deno.test({
  name: "openNetlinkDatapath names the missing namespace and how to create it",
  ...opts,
  fn: async () => {
    await assert.rejects(
      openNetlinkDatapath({ netns: `${PREFIX}-does-not-exist` }),
      /ip netns add wdp-does-not-exist/,
    );
  },
});

Deno.test({
  name: "NetlinkDatapath passes the same contract under Bun",
  ...opts,
  fn: () => {
    const script = new URL("../../testing/netlink_contract_bun.ts", import.meta.url).pathname;
    const r = spawnSync(BUN, [script, PREFIX], { encoding: "utf8", timeout: 60_000 });
    const last = r.stdout.trim().split("\n").at(-1) ?? "";
    assert.equal(r.status, 0, `bun contract run failed:\n${r.stdout}\n${r.stderr}`);
    const out = JSON.parse(last);
    assert.equal(out.runtime, "bun");
    assert.equal(out.passed, datapathContract.length);
  },
});
