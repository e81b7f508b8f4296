import assert from "node:assert/strict";
import { startEtcd } from "../../testing/etcd_server.ts";
import { b64, fakeFetch, header, json, unb64 } from "../../testing/fake_etcd_gateway.ts";
import { EtcdClient, EtcdError, type EtcdWatchResponse, GrpcCode } from "./client.ts";

Deno.test("range() decodes base64 and int64 strings and keeps lease IDs above 2^53 exact", async () => {
  const { fetch, calls } = fakeFetch(() =>
    json({
      header: header(42),
      kvs: [
        {
          key: b64("/p/subnets/10.5.1.0-24"),
          create_revision: "5",
          mod_revision: "7",
          version: "2",
          value: b64('{"PublicIP":"192.0.2.1"}'),
          lease: "7587862072907398406",
        },
        {
          key: b64("/p/subnets/10.5.2.0-24"),
          create_revision: "6",
          mod_revision: "6",
          version: "1",
        },
      ],
      count: "2",
    })
  );
  const c = new EtcdClient({ endpoints: ["http://e1:2379/"], fetch });
  const r = await c.range("/p/subnets/", { prefix: true });
  assert.equal(calls[0].url, "http://e1:2379/v3/kv/range");
  assert.equal(unb64(calls[0].body.key as string), "/p/subnets/");
  assert.equal(unb64(calls[0].body.range_end as string), "/p/subnets0");
  assert.equal(r.revision, 42);
  assert.equal(r.count, 2);
  assert.equal(r.more, false);
  assert.deepEqual(r.kvs[0], {
    key: "/p/subnets/10.5.1.0-24",
    value: '{"PublicIP":"192.0.2.1"}',
    createRevision: 5,
    modRevision: 7,
    version: 2,
    lease: "7587862072907398406",
  });
  assert.equal(r.kvs[1].value, "", "an empty value is omitted by the gateway");
  assert.equal(r.kvs[1].lease, undefined, "no lease: no lease field");
});

Deno.test("range() of nothing: the gateway omits kvs and count", async () => {
  const { fetch } = fakeFetch(() => json({ header: header(3) }));
  const c = new EtcdClient({ endpoints: ["http://e1:2379"], fetch });
  assert.deepEqual(await c.range("/x"), { kvs: [], count: 0, more: false, revision: 3 });
});

Deno.test("txn() sends compare and put with lease; an absent `succeeded` means false", async () => {
  const answers = [{ header: header(9), succeeded: true }, { header: header(9) }];
  const { fetch, calls } = fakeFetch(() => json(answers.shift()));
  const c = new EtcdClient({ endpoints: ["http://e1:2379"], fetch });
  const req = {
    compare: [{ key: "/k", target: "VERSION", result: "EQUAL", value: 0 }] as const,
    success: [{ put: { key: "/k", value: "v", lease: "18446744073709551" } }],
  };
  assert.deepEqual(await c.txn({ ...req, compare: [...req.compare] }), {
    succeeded: true,
    revision: 9,
  });
  assert.deepEqual(await c.txn({ ...req, compare: [...req.compare] }), {
    succeeded: false,
    revision: 9,
  });
  assert.deepEqual(calls[0].body, {
    compare: [{ key: b64("/k"), target: "VERSION", result: "EQUAL", version: "0" }],
    success: [{ request_put: { key: b64("/k"), value: b64("v"), lease: "18446744073709551" } }],
    failure: [],
  });
});

async function collect(
  it: AsyncIterable<EtcdWatchResponse>,
  max = 100,
): Promise<EtcdWatchResponse[]> {
  const out: EtcdWatchResponse[] = [];
  for await (const r of it) {
    out.push(r);
    if (out.length >= max) break;
  }
  return out;
}

Deno.test("EtcdClient against a real etcd: kv, txn, leases, watch and compaction", async () => {
  const etcd = await startEtcd();
  const c = new EtcdClient({ endpoints: [etcd.endpoint] });
  try {
    const r1 = await c.put("/t/a", "1");
    await c.put("/t/b", "2");
    await c.put("/u", "3");
    const all = await c.range("/t/", { prefix: true });
    assert.deepEqual(all.kvs.map((k) => `${k.key}=${k.value}`), ["/t/a=1", "/t/b=2"]);

    const create = {
      compare: [{ key: "/t/c", target: "VERSION", result: "EQUAL", value: 0 } as const],
      success: [{ put: { key: "/t/c", value: "x" } }],
    };
    assert.equal((await c.txn(create)).succeeded, true);
    assert.equal((await c.txn(create)).succeeded, false);

    const lease = await c.leaseGrant(60);
    assert.match(lease.id, /^\d+$/);
    assert.equal(lease.ttl, 60);
    // the ID is exact: etcdctl prints it in hex
    const listed = await etcd.etcdctl(["lease", "list"]);
    assert.ok(listed.includes(BigInt(lease.id).toString(16)), `${lease.id} in ${listed}`);
    await c.put("/t/leased", "y", lease.id);
    assert.equal((await c.range("/t/leased")).kvs[0].lease, lease.id);
    const ttl = await c.leaseTimeToLive(lease.id);
    assert.ok(ttl > 55 && ttl <= 60, String(ttl));
    assert.equal(await c.leaseKeepAlive(lease.id), 60);
    await c.leaseRevoke(lease.id);
    assert.equal((await c.range("/t/leased")).count, 0, "revoking deletes the bound key");
    assert.equal(await c.leaseTimeToLive(lease.id), -1);
    await assert.rejects(
      () => c.leaseKeepAlive(lease.id),
      (e: Error) => e instanceof EtcdError && e.code === GrpcCode.NotFound,
    );
    await assert.rejects(
      () => c.put("/t/z", "z", lease.id),
      (e: Error) => e instanceof EtcdError && e.code === GrpcCode.NotFound,
    );

    const short = await c.leaseGrant(1);
    assert.ok(short.ttl >= 1, "etcd may raise a short TTL to its minimum");

    // watch from the first put: history, then a live event
    const ac = new AbortController();
    const seen: string[] = [];
    const watching = (async () => {
      for await (const res of c.watch("/t/", { prefix: true, startRevision: r1 }, ac.signal)) {
        for (const e of res.events) seen.push(`${e.type}:${e.kv.key}`);
        if (seen.includes("delete:/t/b")) break;
      }
    })();
    await c.delete("/t/b");
    await watching;
    ac.abort();
    assert.deepEqual(seen, [
      "put:/t/a",
      "put:/t/b",
      "put:/t/c",
      "put:/t/leased",
      "delete:/t/leased",
      "delete:/t/b",
    ]);
    const before = (await c.range("/u")).revision;
    assert.deepEqual(await c.delete("/t/", { prefix: true }), { deleted: 2, revision: before + 1 });

    const rev = (await c.range("/u")).revision;
    await c.compact(rev);
    await assert.rejects(
      () => c.range("/t/", { prefix: true, revision: r1 }),
      (e: Error) =>
        e instanceof EtcdError && e.code === GrpcCode.OutOfRange && /compacted/.test(e.message),
    );
    const compacted = await collect(c.watch("/t/", { prefix: true, startRevision: r1 }));
    assert.equal(compacted.at(-1)?.compactRevision, rev);
  } finally {
    await c.close();
    await etcd.close();
  }
});

Deno.test("watch() against a real etcd: a delete at the revision etcd compacted at is reported as a compaction, not missed", async () => {
  // etcd drops a delete's tombstone when it compacts at exactly that revision, yet a
  // watch starting there gets neither the delete nor a compaction error (etcd 3.4)
  const etcd = await startEtcd();
  const c = new EtcdClient({ endpoints: [etcd.endpoint] });
  try {
    await c.put("/w/a", "1");
    await c.put("/w/b", "1");
    const { revision: deletedAt } = await c.delete("/w/a");
    await c.compact(deletedAt);
    const ac = new AbortController();
    const got: EtcdWatchResponse[] = [];
    const watching = (async () => {
      for await (
        const r of c.watch("/w/", { prefix: true, startRevision: deletedAt }, ac.signal)
      ) {
        got.push(r);
        if (r.compactRevision !== undefined || r.events.length > 0) break;
      }
    })();
    const timer = setTimeout(() => ac.abort(), 3000);
    await watching;
    clearTimeout(timer);
    assert.equal(
      got.find((r) => r.compactRevision !== undefined)?.compactRevision,
      deletedAt,
      `the watch from ${deletedAt} must say the history is compacted: ${JSON.stringify(got)}`,
    );
    // a delete that was not compacted away arrives, once, and nothing before it
    const { revision: later } = await c.delete("/w/b");
    const again: EtcdWatchResponse[] = [];
    for await (const r of c.watch("/w/", { prefix: true, startRevision: later })) {
      again.push(r);
      if (r.events.length > 0) break;
    }
    assert.deepEqual(
      again.flatMap((r) => r.events.map((e) => `${e.type}:${e.kv.key}:${e.kv.modRevision}`)),
      [`delete:/w/b:${later}`],
    );
  } finally {
    await c.close();
    await etcd.close();
  }
});
