import assert from "node:assert/strict";
import { parseIPv4Net } from "../core/ip.ts";
import {
  datapathContract,
  EXT_ADDRESSES,
  hostGwPeer,
  key,
  SCOPE,
  VXLAN,
  waitForDrift,
} from "./datapath_contract.ts";
import { datapathContractIPv6 } from "./datapath_contract_ipv6.ts";
import { FakeDatapath } from "./datapath_fake.ts";
import { NetlinkError } from "../datapath/netlink/error.ts";

/** A fake with `ext0` as the contract expects it. */
function fake(): FakeDatapath {
  const dp = new FakeDatapath();
  dp.addLink({
    name: "ext0",
    kind: "bridge",
    mtu: 1500,
    up: true,
    addresses: EXT_ADDRESSES,
  });
  return dp;
}

for (const c of [...datapathContract, ...datapathContractIPv6]) {
  Deno.test(`FakeDatapath contract: ${c.name}`, async () => {
    const dp = fake();
    try {
      await c.fn({ dp, kernel: dp });
    } finally {
      dp.close();
    }
  });
}

Deno.test("FakeDatapath records what was asked, in order", async () => {
  const dp = fake();
  await dp.ensureDevice(VXLAN);
  const table = dp.entries(SCOPE);
  await table.sync(new Map([[key(2), hostGwPeer(2)]]));
  await table.update(new Map([[key(2), null]]));
  await dp.link("ext0");
  assert.deepEqual(dp.calls.map((c) => [c.method, c.table]), [
    ["ensureDevice", undefined],
    ["sync", "vx"],
    ["update", "vx"],
  ]);
  assert.deepEqual(dp.calls[2].arg, new Map([[key(2), null]]));
});

Deno.test("FakeDatapath.failNext fails the next call of that method once", async () => {
  const dp = fake();
  dp.failNext("ensureDevice", 1);
  await assert.rejects(
    dp.ensureDevice(VXLAN),
    (e) => e instanceof NetlinkError && e.code === "EPERM",
  );
  assert.equal((await dp.ensureDevice(VXLAN)).device.name, "flannel.1");
});

Deno.test("FakeDatapath.failKey fails a peer's writes until cleared", async () => {
  const dp = fake();
  const table = dp.entries(SCOPE);
  dp.failKey(key(3), 105);
  const r = await table.sync(new Map([[key(2), hostGwPeer(2)], [key(3), hostGwPeer(3)]]));
  assert.deepEqual(r.failures.map((f) => [f.key, (f.error as NetlinkError).code]), [
    [key(3), "ENOBUFS"],
  ]);
  dp.failKey(key(3), 0);
  assert.equal((await table.update(new Map([[key(3), hostGwPeer(3)]]))).written, 1);
});

Deno.test("FakeDatapath.overrun reports lost events", async () => {
  const dp = fake();
  const ac = new AbortController();
  const it = dp.drift(ac.signal)[Symbol.asyncIterator]();
  dp.overrun();
  assert.equal((await waitForDrift(it, () => true)).kind, "lost");
  ac.abort();
});

Deno.test("FakeDatapath rejects calls after close", async () => {
  const dp = fake();
  dp.close();
  await assert.rejects(dp.ensureDevice(VXLAN), /closed/);
  assert.throws(() => dp.entries({ ...SCOPE, network: parseIPv4Net("10.6.0.0/16") }), /closed/);
});
