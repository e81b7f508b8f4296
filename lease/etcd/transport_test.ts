import assert from "node:assert/strict";
import { memoryLogger } from "../../testing/memory_logger.ts";
import { FakeClock } from "../../testing/fake_clock.ts";
import { fakeFetch, header, json } from "../../testing/fake_etcd_gateway.ts";
import { EtcdClient, EtcdError, GrpcCode } from "./client.ts";
import { StoreUnavailableError } from "../../core/errors.ts";

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
  await assert.rejects(
    () => c.range("/k"),
    (e: Error) =>
      e instanceof EtcdError && !e.unreachable &&
      /\/v3\/kv\/range failed on every endpoint \(http:\/\/a:1: Connection refused; http:\/\/b:2: HTTP 503 .*no leader.*\); check that etcd runs and --etcd-endpoints/
        .test(e.message),
  );
});

Deno.test("when no endpoint answers at all the error is unreachable (retried within a second)", async () => {
  const clock = new FakeClock();
  const { fetch } = fakeFetch((call, init) => {
    if (call.url.startsWith("http://a")) throw new TypeError("Connection refused");
    return new Promise<Response>((_, reject) =>
      init.signal!.addEventListener("abort", () => reject(init.signal!.reason), { once: true })
    );
  });
  const c = new EtcdClient({
    endpoints: ["http://a:1", "http://b:2"],
    fetch,
    clock,
    requestTimeoutMs: 1000,
  });
  const p = c.range("/k");
  const failed = assert.rejects(() => p, (e: Error) =>
    e instanceof EtcdError && e.unreachable &&
    /http:\/\/a:1: Connection refused; http:\/\/b:2: no answer within 1000 ms/.test(e.message));
  await clock.advance(1000);
  await failed;
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
