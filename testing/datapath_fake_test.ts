import assert from "node:assert/strict";
import { parseIPv4 } from "../core/ip.ts";
import { datapathContract } from "./datapath_contract.ts";
import { FakeDatapath } from "./datapath_fake.ts";
import { NetlinkError } from "../datapath/netlink/error.ts";

for (const c of datapathContract) {
  Deno.test(`FakeDatapath contract: ${c.name}`, async () => {
    const dp = new FakeDatapath();
    try {
      await c.fn(dp);
    } finally {
      dp.close();
    }
  });
}

Deno.test("FakeDatapath records writes and not reads", async () => {
  const dp = new FakeDatapath();
  const eth0 = dp.addLink({ name: "eth0", up: true });
  await dp.listLinks();
  await dp.addAddresses([{ index: eth0.index, ip: parseIPv4("192.0.2.1"), prefixLen: 24 }]);
  await dp.listAddresses();
  assert.deepEqual(dp.writes.map((w) => w.method), ["addAddresses"]);
  assert.equal(dp.writeCount("addAddresses"), 1);
  assert.equal(dp.writeCount("replaceRoutes"), 0);
});

Deno.test("FakeDatapath.failNext makes the next call of that method fail once", async () => {
  const dp = new FakeDatapath();
  dp.failNext("createBridge", 1);
  await assert.rejects(
    dp.createBridge({ name: "br0" }),
    (e) => e instanceof NetlinkError && e.code === "EPERM",
  );
  const br = await dp.createBridge({ name: "br0" });
  assert.equal(br.name, "br0");
});

Deno.test("FakeDatapath rejects calls after close", async () => {
  const dp = new FakeDatapath();
  dp.close();
  await assert.rejects(dp.createBridge({ name: "br0" }), /closed/);
});
