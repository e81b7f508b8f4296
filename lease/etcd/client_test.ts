import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { memoryLogger } from "../../testing/memory_logger.ts";
import { startEtcd } from "../../testing/etcd_server.ts";
import { FakeClock } from "../../testing/fake_clock.ts";
import {
  EtcdClient,
  EtcdError,
  type EtcdWatchResponse,
  GrpcCode,
  prefixRangeEnd,
} from "./client.ts";
import { StoreUnavailableError } from "../../core/errors.ts";

const b64 = (s: string) => Buffer.from(s, "latin1").toString("base64");
const unb64 = (s: string) => Buffer.from(s, "base64").toString("latin1");

interface Call {
  url: string;
  body: Record<string, unknown>;
  headers: Headers;
}

/** A fake gateway: `handler` answers each request; calls are recorded. */
function fakeFetch(
  handler: (call: Call, init: RequestInit) => Response | Promise<Response>,
): { fetch: typeof fetch; calls: Call[] } {
  const calls: Call[] = [];
  const f = async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const call = {
      url: String(input),
      body: JSON.parse(String(init.body ?? "{}")),
      headers: new Headers(init.headers),
    };
    calls.push(call);
    return await handler(call, init);
  };
  return { fetch: f as typeof fetch, calls };
}

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

const header = (revision: number) => ({
  cluster_id: "1",
  member_id: "2",
  revision: String(revision),
});

/** A streaming body that delivers `chunks` and then stays open until cancelled. */
function stream(chunks: string[], end = false): Response {
  const enc = new TextEncoder();
  return new Response(
    new ReadableStream<Uint8Array>({
      start(c) {
        for (const ch of chunks) c.enqueue(enc.encode(ch));
        if (end) c.close();
      },
    }),
  );
}

Deno.test("prefixRangeEnd() bumps the last UTF-8 byte of the prefix", () => {
  const cases: [string, number[]][] = [
    ["/coreos.com/network/subnets/", [...Buffer.from("/coreos.com/network/subnets0")]],
    ["a", [0x62]],
    ["\u00e9", [0xc3, 0xaa]], // é is c3 a9
    ["", [0x00]], // every key
  ];
  for (const [prefix, want] of cases) {
    assert.deepEqual(
      [...Buffer.from(prefixRangeEnd(prefix), "base64")],
      want,
      JSON.stringify(prefix),
    );
  }
});

Deno.test("EtcdClient rejects bad options with messages that say how to fix them", () => {
  const cases: [ConstructorParameters<typeof EtcdClient>[0], RegExp][] = [
    [{ endpoints: [] }, /no endpoints given \(--etcd-endpoints\)/],
    [{ endpoints: ["127.0.0.1:2379"] }, /scheme must be http or https|not a URL/],
    [{ endpoints: ["not a url"] }, /not a URL; write it like http:\/\/127.0.0.1:2379/],
    [{ endpoints: ["ftp://x:1"] }, /scheme must be http or https/],
    [{ endpoints: ["http://x:1"], username: "u" }, /give both --etcd-username and --etcd-password/],
  ];
  for (const [options, message] of cases) {
    assert.throws(
      () => new EtcdClient(options),
      (e: Error) => e instanceof TypeError && message.test(e.message),
    );
  }
});

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

Deno.test("gateway errors become EtcdError with the gRPC code; revoking a missing lease is fine", async () => {
  const err = {
    error: "etcdserver: requested lease not found",
    message: "etcdserver: requested lease not found",
    code: 5,
  };
  const { fetch } = fakeFetch(() => json(err, 404));
  const c = new EtcdClient({ endpoints: ["http://e1:2379"], fetch });
  await assert.rejects(
    () => c.put("/k", "v", "123"),
    (e: Error) =>
      e instanceof EtcdError && e instanceof StoreUnavailableError &&
      e.code === GrpcCode.NotFound &&
      e.endpoint === "http://e1:2379" &&
      /refused \/v3\/kv\/put: etcdserver: requested lease not found/.test(e.message),
  );
  await c.leaseRevoke("123");
});

Deno.test("answers that are not etcd's are explained", async () => {
  const cases: [string, RegExp][] = [
    [
      "404 page not found",
      /answered \/v3\/kv\/range with something that is not JSON: "404 page not found"; is this an etcd v3 client URL\?/,
    ],
    [
      "CommonName of client sending a request against gateway will be ignored and not used as expected\n",
      /client certificates that carry a Common Name; give weft a client certificate without CN/,
    ],
  ];
  for (const [body, message] of cases) {
    const { fetch } = fakeFetch(() => new Response(body, { status: 400 }));
    const c = new EtcdClient({ endpoints: ["http://e1:2379"], fetch });
    await assert.rejects(() => c.range("/k"), message);
  }
  const { fetch } = fakeFetch(() => json({ header: header(1), kvs: [{ key: 5 }] }));
  await assert.rejects(
    () => new EtcdClient({ endpoints: ["http://e1:2379"], fetch }).range("/k"),
    /answered \/v3\/kv\/range unexpectedly \(kvs: entry 0: key must be a string, got 5\)/,
  );
});

Deno.test("a dead endpoint fails over to the next, which then stays first", async () => {
  const { fetch, calls } = fakeFetch((call) => {
    if (call.url.startsWith("http://dead")) {
      throw new TypeError("tcp connect error: Connection refused");
    }
    return json({ header: header(1) });
  });
  const logger = memoryLogger();
  const c = new EtcdClient({ endpoints: ["http://dead:2379", "http://live:2379"], fetch, logger });
  await c.range("/a");
  assert.equal(c.currentEndpoint, "http://live:2379");
  await c.range("/b");
  assert.deepEqual(calls.map((x) => x.url.split("/v3")[0]), [
    "http://dead:2379",
    "http://live:2379",
    "http://live:2379",
  ]);
  assert.equal(logger.lines.filter((l) => l.includes("etcd endpoint failed over")).length, 1);
  assert.match(
    logger.lines[0],
    /from=http:\/\/dead:2379 to=http:\/\/live:2379 errors=.*Connection refused/,
  );
});

Deno.test("when every endpoint fails the error names each one and what failed", async () => {
  const { fetch } = fakeFetch((call) => {
    if (call.url.startsWith("http://a")) throw new TypeError("Connection refused");
    return json(
      { error: "etcdserver: no leader", message: "etcdserver: no leader", code: 14 },
      503,
    );
  });
  const c = new EtcdClient({ endpoints: ["http://a:1", "http://b:2"], fetch });
  await assert.rejects(() => c.range("/k"), (e: Error) =>
    e instanceof EtcdError &&
    /\/v3\/kv\/range failed on every endpoint \(http:\/\/a:1: Connection refused; http:\/\/b:2: HTTP 503 .*no leader.*\); check that etcd runs and --etcd-endpoints/
      .test(e.message));
});

Deno.test("a request with no answer times out on the injected clock and fails over", async () => {
  const clock = new FakeClock();
  const { fetch } = fakeFetch((call, init) => {
    if (call.url.startsWith("http://slow")) {
      return new Promise<Response>((_, reject) =>
        init.signal!.addEventListener("abort", () => reject(init.signal!.reason), { once: true })
      );
    }
    return json({ header: header(4) });
  });
  const c = new EtcdClient({
    endpoints: ["http://slow:1", "http://fast:2"],
    fetch,
    clock,
    requestTimeoutMs: 3000,
  });
  const p = c.range("/k");
  await clock.advance(2999);
  assert.equal(c.currentEndpoint, "http://slow:1");
  await clock.advance(1);
  assert.equal((await p).revision, 4);
  assert.equal(c.currentEndpoint, "http://fast:2");
});

Deno.test("the caller's abort is passed through as an AbortError, without failover", async () => {
  const { fetch, calls } = fakeFetch((_call, init) =>
    new Promise<Response>((_, reject) =>
      init.signal!.addEventListener("abort", () => reject(init.signal!.reason), { once: true })
    )
  );
  const c = new EtcdClient({
    endpoints: ["http://a:1", "http://b:2"],
    fetch,
    clock: new FakeClock(),
  });
  const ac = new AbortController();
  const p = c.range("/k", {}, ac.signal);
  for (let i = 0; i < 100 && calls.length === 0; i++) await Promise.resolve();
  assert.equal(calls.length, 1, "the request is in flight");
  ac.abort();
  await assert.rejects(p, (e: Error) => e instanceof DOMException && e.name === "AbortError");
  assert.equal(calls.length, 1);
});

Deno.test("user/password: a token is fetched once, sent, and renewed when etcd calls it invalid", async () => {
  let tokens = 0;
  let valid = "";
  const { fetch, calls } = fakeFetch((call) => {
    if (call.url.endsWith("/v3/auth/authenticate")) {
      assert.deepEqual(call.body, { name: "weft", password: "pw" });
      valid = `token-${++tokens}`;
      return json({ header: header(1), token: valid });
    }
    if (call.headers.get("authorization") !== valid) {
      return json({
        error: "etcdserver: invalid auth token",
        message: "etcdserver: invalid auth token",
        code: 16,
      }, 401);
    }
    return json({ header: header(2) });
  });
  const logger = memoryLogger();
  const c = new EtcdClient({
    endpoints: ["http://e:1"],
    fetch,
    username: "weft",
    password: "pw",
    logger,
  });
  await c.range("/a");
  await c.range("/b");
  assert.equal(tokens, 1);
  valid = "expired-on-the-server";
  await c.range("/c");
  assert.equal(tokens, 2);
  assert.ok(logger.lines.some((l) => l.includes("etcd auth token expired")));
  assert.deepEqual(calls.map((x) => x.url.split("/v3/")[1]), [
    "auth/authenticate",
    "kv/range",
    "kv/range",
    "kv/range",
    "auth/authenticate",
    "kv/range",
  ]);
});

Deno.test("a wrong password is reported as such, naming the flags", async () => {
  const { fetch } = fakeFetch(() =>
    json({
      error: "etcdserver: authentication failed, invalid user ID or password",
      message: "etcdserver: authentication failed, invalid user ID or password",
      code: 3,
    }, 400)
  );
  const c = new EtcdClient({ endpoints: ["http://e:1"], fetch, username: "weft", password: "x" });
  await assert.rejects(
    () => c.range("/a"),
    /refused user "weft": etcdserver: authentication failed.*; check --etcd-username and --etcd-password/,
  );
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

Deno.test("watch() parses a newline-delimited stream split anywhere", async () => {
  const msgs = [
    { result: { header: header(10), created: true } },
    {
      result: {
        header: header(11),
        events: [{
          kv: {
            key: b64("/p/a"),
            mod_revision: "11",
            create_revision: "11",
            version: "1",
            value: b64("x"),
            lease: "99",
          },
        }],
      },
    },
    {
      result: {
        header: header(12),
        events: [{ type: "DELETE", kv: { key: b64("/p/a"), mod_revision: "12" } }],
      },
    },
    { result: { header: header(15) } },
  ];
  const text = msgs.map((m) => JSON.stringify(m) + "\n").join("");
  // cut into 7-byte chunks, splitting lines and JSON tokens
  const chunks = text.match(/[\s\S]{1,7}/g)!;
  const { fetch, calls } = fakeFetch(() => stream(chunks));
  const c = new EtcdClient({ endpoints: ["http://e:1"], fetch });
  const ac = new AbortController();
  const got = await collect(
    c.watch("/p/", { prefix: true, startRevision: 11, progressNotify: true }, ac.signal),
    4,
  );
  ac.abort();
  assert.deepEqual(calls[0].body, {
    create_request: {
      key: b64("/p/"),
      range_end: b64("/p0"),
      start_revision: "11",
      progress_notify: true,
    },
  });
  assert.deepEqual(
    got.map((r) => [
      r.revision,
      r.created,
      r.events.map((e) => `${e.type}:${e.kv.key}:${e.kv.modRevision}`),
    ]),
    [
      [10, true, []],
      [11, false, ["put:/p/a:11"]],
      [12, false, ["delete:/p/a:12"]],
      [15, false, []],
    ],
  );
  assert.equal(got[1].events[0].kv.lease, "99");
});

Deno.test("watch() reports a compacted start revision once and ends", async () => {
  const { fetch } = fakeFetch(() =>
    stream([
      JSON.stringify({ result: { header: header(20), created: true } }) + "\n",
      JSON.stringify({ result: { header: {}, canceled: true, compact_revision: "17" } }) + "\n",
    ])
  );
  const got = await collect(
    new EtcdClient({ endpoints: ["http://e:1"], fetch }).watch("/p/", { startRevision: 3 }),
  );
  assert.equal(got.length, 2);
  assert.equal(got[1].compactRevision, 17);
});

Deno.test("watch() throws on a stream that ends, an error message, or a cancel for another reason", async () => {
  const cases: [string[], RegExp][] = [
    [[], /etcd watch stream from http:\/\/e:1 ended/],
    [
      [JSON.stringify({ error: { message: "boom", code: 13 } }) + "\n"],
      /etcd watch on http:\/\/e:1 failed: boom/,
    ],
    [
      [
        JSON.stringify({
          result: {
            header: header(1),
            canceled: true,
            cancel_reason:
              "rpc error: code = PermissionDenied desc = etcdserver: permission denied",
          },
        }) + "\n",
      ],
      /etcd canceled the watch on \/p\/ at http:\/\/e:1: .*permission denied/,
    ],
  ];
  for (const [chunks, message] of cases) {
    const { fetch } = fakeFetch(() => stream(chunks, true));
    await assert.rejects(
      () => collect(new EtcdClient({ endpoints: ["http://e:1"], fetch }).watch("/p/")),
      message,
    );
  }
});

Deno.test("watch() re-authenticates once when etcd cancels it for an invalid token", async () => {
  let auths = 0;
  const { fetch } = fakeFetch((call) => {
    if (call.url.endsWith("/authenticate")) return json({ token: `t${++auths}` });
    if (call.headers.get("authorization") === "t1") {
      return stream([
        JSON.stringify({
          result: {
            header: header(1),
            created: true,
            canceled: true,
            cancel_reason:
              "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token",
          },
        }) + "\n",
      ]);
    }
    return stream([JSON.stringify({ result: { header: header(5), created: true } }) + "\n"]);
  });
  const c = new EtcdClient({ endpoints: ["http://e:1"], fetch, username: "u", password: "p" });
  const ac = new AbortController();
  const got = await collect(c.watch("/p/", {}, ac.signal), 1);
  ac.abort();
  assert.equal(auths, 2);
  assert.equal(got[0].revision, 5);
});

Deno.test("watch() gives up on a silent stream after idleTimeoutMs", async () => {
  const clock = new FakeClock();
  const { fetch } = fakeFetch(() =>
    stream([JSON.stringify({ result: { header: header(1), created: true } }) + "\n"])
  );
  const c = new EtcdClient({ endpoints: ["http://e:1"], fetch, clock });
  const out: EtcdWatchResponse[] = [];
  const p = (async () => {
    for await (const r of c.watch("/p/", { idleTimeoutMs: 60_000 })) out.push(r);
  })();
  const failed = assert.rejects(p, /got nothing for 60000 ms, reconnecting/);
  await clock.advance(59_000);
  assert.equal(out.length, 1);
  await clock.advance(1_000);
  await failed;
});

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
