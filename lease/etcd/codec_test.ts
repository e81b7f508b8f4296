import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as v from "valibot";
import {
  decodeKv,
  EtcdError,
  GrpcCode,
  isKeyValue,
  KeyValue,
  parseReply,
  prefixRangeEnd,
  RangeReply,
  unb64,
} from "./codec.ts";

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

Deno.test("isKeyValue() accepts exactly what the KeyValue schema accepts", () => {
  const int = "7587862072907398406";
  const cases: unknown[] = [
    { key: "a" },
    { key: "a", value: "b", create_revision: "1", mod_revision: "2", version: "3", lease: int },
    { key: "a", extra: { anything: true } },
    { key: "a", lease: "-1" },
    { key: 5 },
    { value: "b" },
    { key: "a", value: 1 },
    { key: "a", mod_revision: 2 },
    { key: "a", version: "1.5" },
    { key: "a", lease: "" },
    { key: "a", create_revision: null },
    null,
    "a",
    [],
  ];
  for (const c of cases) {
    assert.equal(isKeyValue(c), v.is(KeyValue, c), JSON.stringify(c));
  }
});

Deno.test("decodeKv() decodes base64 text, numbers, and keeps a lease ID above 2^53 exact", () => {
  const b = (s: string) => Buffer.from(s, "utf8").toString("base64");
  assert.deepEqual(
    decodeKv({
      key: b("/p/subnets/10.5.1.0-24"),
      value: b('{"é":1}'),
      create_revision: "5",
      mod_revision: "7",
      version: "2",
      lease: "7587862072907398406",
    }),
    {
      key: "/p/subnets/10.5.1.0-24",
      value: '{"é":1}',
      createRevision: 5,
      modRevision: 7,
      version: 2,
      lease: "7587862072907398406",
    },
  );
  assert.deepEqual(decodeKv({ key: b("/k"), lease: "0" }), {
    key: "/k",
    value: "",
    createRevision: 0,
    modRevision: 0,
    version: 0,
  });
  assert.equal(unb64(b("\u{1F600} ok")), "\u{1F600} ok");
  assert.equal(unb64(undefined), "");
});

Deno.test("parseReply() explains answers that are not etcd's", () => {
  const cases: [string, RegExp][] = [
    [
      "404 page not found",
      /etcd at http:\/\/e:1 answered \/v3\/kv\/range with something that is not JSON: "404 page not found"; is this an etcd v3 client URL\?/,
    ],
    [
      "CommonName of client sending a request against gateway will be ignored and not used as expected\n",
      /client certificates that carry a Common Name; give weft a client certificate without CN/,
    ],
    [
      JSON.stringify({ header: { revision: "1" }, kvs: [{ key: "a" }, { key: "b", version: 2 }] }),
      /answered \/v3\/kv\/range unexpectedly \(kvs: entry 1: version must be an int64 string, got 2\)/,
    ],
    [
      JSON.stringify({ header: { revision: "1" }, kvs: ["x"] }),
      /unexpectedly \(kvs: entry 0 is not an object\)/,
    ],
    [
      JSON.stringify({ header: { revision: 1 } }),
      /unexpectedly \(header\.revision: must be an int64 string\)/,
    ],
  ];
  for (const [text, message] of cases) {
    assert.throws(
      () => parseReply(text, RangeReply, "http://e:1", "/v3/kv/range"),
      (e: Error) => e instanceof EtcdError && message.test(e.message),
      text,
    );
  }
  assert.throws(
    () => parseReply("CommonName of client x", RangeReply, "http://e:1", "/v3/kv/range"),
    (e: Error) => e instanceof EtcdError && e.code === GrpcCode.InvalidArgument,
  );
});

// Found by lease/etcd/codec_fuzz_test.ts: the message quoted valibot's issue,
// which quotes the whole offending value (here a 3000-character string).
Deno.test("parseReply() quotes a huge offending value in part", () => {
  for (
    const text of [
      JSON.stringify("a".repeat(3000)),
      JSON.stringify({ header: "a".repeat(3000) }),
      JSON.stringify({ header: {}, kvs: [{ key: "a".repeat(3000), value: 7 }] }),
    ]
  ) {
    assert.throws(
      () => parseReply(text, RangeReply, "http://e:1", "/v3/kv/range"),
      (e: unknown) => {
        assert.ok(e instanceof EtcdError, String(e));
        assert.ok(e.message.length < 700, `${e.message.length}: ${e.message}`);
        return true;
      },
    );
  }
});

// Found by lease/etcd/watch_fuzz_test.ts (seed 1662942838): a revision of a thousand nines
// passed the int64 pattern and became Infinity.
Deno.test("parseReply() refuses int64 fields outside int64's range", () => {
  const reply = (revision: string) => JSON.stringify({ header: { revision }, kvs: [], count: "0" });
  for (const bad of ["9".repeat(1000), "9223372036854775808", "-9223372036854775809"]) {
    assert.throws(
      () => parseReply(reply(bad), RangeReply, "http://e:1", "/v3/kv/range"),
      (e: unknown) => e instanceof EtcdError && /int64/.test(e.message),
      bad.slice(0, 30),
    );
  }
  for (const ok of ["9223372036854775807", "-9223372036854775808", "0", "12"]) {
    parseReply(reply(ok), RangeReply, "http://e:1", "/v3/kv/range");
  }
});
