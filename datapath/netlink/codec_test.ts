import assert from "node:assert/strict";
import {
  align4,
  decodeError,
  encodeMessage,
  listAttrs,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLMSG_ERROR,
  NlWriter,
  parseAttrs,
  parseMessages,
  readBe16,
  readI32,
  readIPv4,
  readMac,
  readString,
  readU16,
  readU32,
  readU8,
} from "./codec.ts";
import { decodeLink } from "./link_messages.ts";
import {
  be16Attr,
  encodeAttrs,
  encodeBody,
  flagAttr,
  ipv4Attr,
  macAttr,
  nestedAttr,
  stringAttr,
  u16Attr,
  u32Attr,
  u8Attr,
} from "../../testing/netlink_attrs.ts";
import { errnoName, errnoNumber } from "../../core/errno.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
const bytes = (s: string) => Uint8Array.from(s.trim().split(/\s+/).map((h) => parseInt(h, 16)));

Deno.test("align4 rounds up to multiples of four", () => {
  for (const [n, want] of [[0, 0], [1, 4], [4, 4], [5, 8], [10, 12], [16, 16]]) {
    assert.equal(align4(n), want);
  }
});

Deno.test("scalar attributes encode with host-order or network-order payloads", () => {
  const table: [string, Uint8Array, string][] = [
    ["u8", encodeAttrs([u8Attr(7, 1)]), "05 00 07 00 01 00 00 00"],
    ["u16", encodeAttrs([u16Attr(2, 0x1234)]), "06 00 02 00 34 12 00 00"],
    ["be16 port 8472", encodeAttrs([be16Attr(15, 8472)]), "06 00 0f 00 21 18 00 00"],
    ["u32", encodeAttrs([u32Attr(4, 1450)]), "08 00 04 00 aa 05 00 00"],
    ["ipv4 192.0.2.1", encodeAttrs([ipv4Attr(1, 0xc0000201)]), "08 00 01 00 c0 00 02 01"],
    ["flag", encodeAttrs([flagAttr(23)]), "04 00 17 00"],
    [
      "string with NUL and padding",
      encodeAttrs([stringAttr(3, "eth0")]),
      "09 00 03 00 65 74 68 30 00 00 00 00",
    ],
    ["mac", encodeAttrs([macAttr(1, "02:aa:bb:cc:dd:0e")]), "0a 00 01 00 02 aa bb cc dd 0e 00 00"],
  ];
  for (const [name, got, want] of table) assert.equal(hex(got), want, name);
});

Deno.test("nested attributes carry the total length of their children", () => {
  const got = encodeAttrs([
    nestedAttr(18, [stringAttr(1, "vxlan"), nestedAttr(2, [u32Attr(1, 1)])]),
  ]);
  assert.equal(
    hex(got),
    "1c 00 12 00 0a 00 01 00 76 78 6c 61 6e 00 00 00 0c 00 02 00 08 00 01 00 01 00 00 00",
  );
});

Deno.test("encodeAttrs rejects an attribute longer than 65535 bytes", () => {
  assert.throws(() => encodeAttrs([{ type: 1, value: new Uint8Array(70000) }]), RangeError);
});

Deno.test("encodeMessage writes length, type, flags, seq and pid, padded", () => {
  const body = encodeBody(Uint8Array.of(2, 0, 0), [u8Attr(1, 9)]);
  assert.equal(hex(body), "02 00 00 00 05 00 01 00 09 00 00 00");
  const m = encodeMessage(24, 0x0505, 0x01020304, body, 7);
  assert.equal(
    hex(m),
    "1c 00 00 00 18 00 05 05 04 03 02 01 07 00 00 00 02 00 00 00 05 00 01 00 09 00 00 00",
  );
});

Deno.test("parseMessages splits a datagram and round-trips encodeMessage", () => {
  const a = encodeMessage(16, 2, 1, Uint8Array.of(1, 2, 3));
  const b = encodeMessage(3, 2, 1, Uint8Array.of(0, 0, 0, 0));
  const buf = new Uint8Array(a.length + b.length);
  buf.set(a);
  buf.set(b, a.length);
  const msgs = parseMessages(buf);
  assert.deepEqual(msgs.map((m) => [m.type, m.flags, m.seq, m.body.length]), [[16, 2, 1, 3], [
    3,
    2,
    1,
    4,
  ]]);
  assert.deepEqual([...msgs[0].body], [1, 2, 3]);
});

Deno.test("parseMessages rejects a header whose length overruns the datagram", () => {
  const m = encodeMessage(16, 0, 1, new Uint8Array(8));
  new DataView(m.buffer).setUint32(0, 100, true);
  assert.throws(() => parseMessages(m), SyntaxError);
  const short = new Uint8Array(16);
  new DataView(short.buffer).setUint32(0, 8, true);
  assert.throws(() => parseMessages(short), SyntaxError);
});

Deno.test("parseAttrs masks the nested/byte-order flag bits and keeps the last repeat", () => {
  const raw = bytes("08 00 12 80 01 00 00 00 08 00 04 00 01 00 00 00 08 00 04 00 02 00 00 00");
  const m = parseAttrs(raw);
  assert.deepEqual([...m.keys()], [0x12, 4]);
  assert.equal(readU32(m.get(4)!), 2);
  assert.equal(listAttrs(raw).length, 3);
  assert.throws(() => parseAttrs(bytes("09 00 01 00 00 00 00 00")), SyntaxError);
  assert.throws(() => parseAttrs(bytes("02 00 01 00")), SyntaxError);
});

Deno.test("payload readers decode network order, strings and MACs", () => {
  assert.equal(readBe16(bytes("21 18")), 8472);
  assert.equal(readIPv4(bytes("0a 05 02 00")), 0x0a050200);
  assert.equal(readString(bytes("66 6c 61 6e 6e 65 6c 2e 31 00")), "flannel.1");
  assert.equal(readString(bytes("6c 6f")), "lo");
  assert.equal(readMac(bytes("02 aa bb cc dd 0e")), "02:aa:bb:cc:dd:0e");
});

Deno.test("decodeError reads an ack, an errno, the request header and the extended-ack text", () => {
  const orig = "20 00 00 00 18 00 05 06 2a 00 00 00 00 00 00 00";
  const ack = {
    type: NLMSG_ERROR,
    flags: NLM_F_CAPPED,
    seq: 42,
    pid: 0,
    body: bytes(`00 00 00 00 ${orig}`),
  };
  assert.deepEqual(decodeError(ack), {
    errno: 0,
    request: { type: 24, flags: 0x0605, seq: 42, pid: 0 },
    extMessage: undefined,
  });
  // -101 (ENETUNREACH), capped, with NLMSGERR_ATTR_MSG "bad gw".
  const err = {
    type: NLMSG_ERROR,
    flags: NLM_F_CAPPED | NLM_F_ACK_TLVS,
    seq: 42,
    pid: 0,
    body: bytes(`9b ff ff ff ${orig} 0b 00 01 00 62 61 64 20 67 77 00 00`),
  };
  const d = decodeError(err);
  assert.equal(d.errno, 101);
  assert.equal(d.extMessage, "bad gw");
  assert.throws(() => decodeError({ ...ack, body: new Uint8Array(8) }), SyntaxError);
});

Deno.test("errnoName names common errnos and falls back to E<n>", () => {
  assert.deepEqual([17, 2, 19, 101, 100, 3, 105, 4242].map(errnoName), [
    "EEXIST",
    "ENOENT",
    "ENODEV",
    "ENETUNREACH",
    "ENETDOWN",
    "ESRCH",
    "ENOBUFS",
    "E4242",
  ]);
  assert.equal(errnoNumber("EEXIST"), 17);
  assert.throws(() => errnoNumber("ENOPE"), RangeError);
});

Deno.test("NlWriter writes the same bytes as the attribute builders", () => {
  const w = new NlWriter(8);
  w.put8(w.header(3), 2);
  w.u8(7, 1).u16(2, 0x1234).be16(15, 8472).u32(4, 1450).ipv4(1, 0xc0000201).flag(23);
  w.string(3, "eth0").mac(1, "02:aa:bb:cc:dd:0e").bytes(9, Uint8Array.of(1, 2, 3));
  w.nest(18, () => w.string(1, "vxlan").nest(2, () => w.u32(1, 1)));
  const want = encodeBody(Uint8Array.of(2, 0, 0), [
    u8Attr(7, 1),
    u16Attr(2, 0x1234),
    be16Attr(15, 8472),
    u32Attr(4, 1450),
    ipv4Attr(1, 0xc0000201),
    flagAttr(23),
    stringAttr(3, "eth0"),
    macAttr(1, "02:aa:bb:cc:dd:0e"),
    { type: 9, value: Uint8Array.of(1, 2, 3) },
    nestedAttr(18, [stringAttr(1, "vxlan"), nestedAttr(2, [u32Attr(1, 1)])]),
  ]);
  assert.equal(hex(w.finish()), hex(want));
  assert.equal(w.length, 0);
});

Deno.test("NlWriter grows its buffer mid-attribute without losing bytes", () => {
  const w = new NlWriter(4);
  for (let i = 0; i < 1000; i++) w.ipv4(1, i).u8(2, i & 0xff).be16(3, i);
  const attrs = listAttrs(w.view());
  assert.equal(attrs.length, 3000);
  assert.equal(readIPv4(attrs[2997][1]), 999);
  assert.equal(attrs[2998][1][0], 999 & 0xff);
  assert.equal(readBe16(attrs[2999][1]), 999);
});

Deno.test("NlWriter.message frames messages that parseMessages splits back", () => {
  const w = new NlWriter(16);
  w.message(24, 0x0405, 7, () => w.put8(w.header(12), 2)).message(1, 5, 8, () => {});
  w.message(30, 1, 9, () => w.string(3, "abcde"));
  const msgs = parseMessages(w.view());
  assert.deepEqual(msgs.map((m) => [m.type, m.flags, m.seq, m.body.length]), [
    [24, 0x0405, 7, 12],
    [1, 5, 8, 0],
    [30, 1, 9, 12],
  ]);
  assert.equal(w.view().length % 4, 0);
  w.reset();
  assert.equal(w.length, 0);
});

Deno.test("NlWriter writes zero headers and padding where an earlier message left bytes", () => {
  const w = new NlWriter(64);
  const fill = () => {
    w.message(0xffff, 0xffff, 0xffffffff, () => {
      w.put32(w.header(12), 0xffffffff);
      w.bytes(0x3fff, new Uint8Array(25).fill(0xff));
    });
  };
  const short = () => {
    w.message(24, 1, 2, () => {
      w.put8(w.header(12), 2);
      w.u8(3, 7).string(4, "ab");
    });
  };
  short();
  const fresh = [...w.finish()];
  for (const startOver of [() => w.reset(), () => w.finish()]) {
    fill();
    startOver();
    short();
    assert.deepEqual([...w.view()], fresh);
    w.reset();
  }
});

Deno.test("NlWriter.mac writes a MAC in either case, also mixed within an octet", () => {
  // a mixed-case octet passes parseMac's check; it was once written as a 0 byte
  for (const mac of ["02:ab:cd:ef:0a:9f", "02:AB:CD:EF:0A:9F", "02:aB:Cd:eF:0a:9F"]) {
    const w = new NlWriter();
    w.mac(1, mac);
    assert.deepEqual([...w.view().subarray(4, 10)], [0x02, 0xab, 0xcd, 0xef, 0x0a, 0x9f], mac);
  }
});

Deno.test("NlWriter.mac rejects malformed addresses", () => {
  for (
    const bad of [
      "02:aa:bb:cc:dd",
      "02:aa:bb:cc:dd:zz",
      "02-aa-bb-cc-dd-ee",
      "02:aa:bb:cc:dd:eee",
      "02:aa:bb:cc:dd:e ",
      "g2:aa:bb:cc:dd:ee",
      "02:aa:bb:cc:dd:e@",
      "02:aa:bb:cc:dd:e\u0100", // a code above 127 is no digit, also not modulo 256
      "02:aa:bb:cc:dd:\u0130e",
    ]
  ) {
    assert.throws(() => new NlWriter().mac(1, bad), SyntaxError, bad);
  }
});

// Found by datapath/netlink/codec_fuzz_test.ts (counterexample: an RTM_NEWLINK for cni0
// whose IFLA_MTU attribute has a 1-byte payload): readU32 threw the DataView's
// RangeError "Offset is outside the bounds of the DataView" instead of the
// documented SyntaxError.
Deno.test("attribute readers throw SyntaxError for a payload that is too short", () => {
  for (
    const [read, n] of [[readU32, 4], [readIPv4, 4], [readBe16, 2], [readU16, 2], [readI32, 4], [
      readU8,
      1,
    ]] as const
  ) {
    assert.throws(
      () => read(new Uint8Array(n - 1)),
      (e: unknown) => e instanceof SyntaxError && /payload is \d bytes, need \d/.test(e.message),
    );
  }
  const link = bytes(`
    00 00 00 00 02 00 00 00 00 00 00 00 00 00 00 00
    09 00 03 00 63 6e 69 30 00 00 00 00
    05 00 04 00 dc 00 00 00`); // ifinfomsg, IFLA_IFNAME "cni0", IFLA_MTU with 1 byte
  assert.throws(() => decodeLink(link), SyntaxError);
});

// Found by the same fuzz test: an NLMSG_ERROR with a positive error field (Linux
// sends -errno) gave a negative errno.
Deno.test("decodeError() reads a positive error field as the same errno", () => {
  const body = new Uint8Array(20);
  new DataView(body.buffer).setInt32(0, 22, true);
  const e = decodeError({ type: NLMSG_ERROR, flags: 0, seq: 1, pid: 0, body });
  assert.equal(e.errno, 22);
});
