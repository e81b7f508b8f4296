import assert from "node:assert/strict";
import { formatIPv4Net, formatIPv6Net, parseIPv4Net, parseIPv6Net } from "../core/ip.ts";
import { createKvLeaseStore, decodeRecord, leaseKey, type RawRecord } from "./kv_store.ts";
import {
  encodeLeaseAttrs,
  goJsonStringify,
  type Lease,
  type LeaseAttrs,
  type LeaseEvent,
} from "./types.ts";
import {
  CONTRACT_CONFIG,
  type ContractHarness,
  leaseStoreContract,
} from "../testing/lease_contract.ts";
import { createMemoryRegistry } from "../testing/memory_registry.ts";
import { FakeClock } from "../testing/fake_clock.ts";
import { memoryLogger } from "../testing/memory_logger.ts";

/**
 * The key-value LeaseStore over the in-memory registry, on a FakeClock: the
 * contract without I/O, so TTLs expire when the test moves the clock.
 */
function memoryHarness(): Promise<ContractHarness> {
  const clock = new FakeClock();
  const registry = createMemoryRegistry({ config: CONTRACT_CONFIG, clock });
  const key = (cidr: string) => cidr.replace("/", "-");
  return Promise.resolve({
    clock,
    open: (_host, o) => Promise.resolve(createKvLeaseStore(registry, { ttlMs: o?.ttlMs, clock })),
    writeReservation: (subnet, publicIP) =>
      registry.put(key(subnet), encodeLeaseAttrs({ publicIP, backendType: "alloc" }), null)
        .then(() => {}),
    writeGarbage: (subnet, value) => registry.put(key(subnet), value, null).then(() => {}),
    removeExternally: (lease) => registry.delete(leaseKey(lease)),
    compact: () => Promise.resolve(registry.compact()),
    async restart() {
      registry.restart();
      // the watch backs off on the fake clock before it resumes
      await clock.advance(10_000);
    },
    watchers: () => Promise.resolve(registry.watchers),
    cleanup: () => Promise.resolve(),
  });
}

leaseStoreContract("memory", {
  ttl: true,
  reservations: true,
  compaction: true,
  restart: true,
  allocation: true,
  garbage: true,
}, memoryHarness);

const record = (key: string, value: string, expiration: number | null = 1_700_000_000_000) => ({
  key,
  value,
  expiration,
});

Deno.test("decodeRecord() reads the values flannel writes", () => {
  const cases: [string, RawRecord, {
    subnet?: string;
    ipv6Subnet?: string;
    attrs: LeaseAttrs;
    expiration: number | null;
  }][] = [
    [
      "vxlan with BackendData",
      record(
        "10.5.34.0-24",
        `{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`,
      ),
      {
        subnet: "10.5.34.0/24",
        attrs: {
          publicIP: "192.168.64.3",
          publicIPv6: null,
          backendType: "vxlan",
          backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" },
        },
        expiration: 1_700_000_000_000,
      },
    ],
    [
      "udp writes no BackendType",
      record("10.5.1.0-24", `{"PublicIP":"192.168.64.4","PublicIPv6":null}`),
      {
        subnet: "10.5.1.0/24",
        attrs: { publicIP: "192.168.64.4", publicIPv6: null },
        expiration: 1_700_000_000_000,
      },
    ],
    [
      "host-gw, a reservation without TTL",
      record(
        "10.5.2.0-24",
        `{"PublicIP":"192.0.2.7","PublicIPv6":null,"BackendType":"host-gw"}`,
        null,
      ),
      {
        subnet: "10.5.2.0/24",
        attrs: { publicIP: "192.0.2.7", publicIPv6: null, backendType: "host-gw" },
        expiration: null,
      },
    ],
    [
      "older flannel without PublicIPv6",
      record("10.5.1.0-24", `{"PublicIP":"192.168.0.1","BackendType":"vxlan"}`),
      {
        subnet: "10.5.1.0/24",
        attrs: { publicIP: "192.168.0.1", publicIPv6: null, backendType: "vxlan" },
        expiration: 1_700_000_000_000,
      },
    ],
    [
      "dual stack key and IPv6 data",
      record(
        "10.5.34.0-24&fd00:12:13::-56",
        `{"PublicIP":"192.168.64.3","PublicIPv6":"fc00::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}}`,
      ),
      {
        subnet: "10.5.34.0/24",
        ipv6Subnet: "fd00:12:13::/56",
        attrs: {
          publicIP: "192.168.64.3",
          publicIPv6: "fc00::1",
          backendType: "vxlan",
          backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" },
          backendV6Data: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:45" },
        },
        expiration: 1_700_000_000_000,
      },
    ],
    [
      // pkg/subnet/subnet.go MakeSubnetKey with the zero ip.IP4Net; PublicIP is Go's zero ip.IP4
      "IPv6-only: flannel's 0.0.0.0-0 key and zero PublicIP",
      record(
        "0.0.0.0-0&fd00:10:5:1::-64",
        `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::11","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:46"}}`,
      ),
      {
        ipv6Subnet: "fd00:10:5:1::/64",
        attrs: {
          publicIP: "",
          publicIPv6: "2001:db8::11",
          backendType: "vxlan",
          backendV6Data: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:46" },
        },
        expiration: 1_700_000_000_000,
      },
    ],
    [
      "IPv6-only host-gw",
      record(
        "0.0.0.0-0&fd00:10:5:2::-64",
        `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::12","BackendType":"host-gw"}`,
      ),
      {
        ipv6Subnet: "fd00:10:5:2::/64",
        attrs: { publicIP: "", publicIPv6: "2001:db8::12", backendType: "host-gw" },
        expiration: 1_700_000_000_000,
      },
    ],
    [
      "unknown fields are dropped",
      record("10.5.3.0-24", `{"PublicIP":"192.0.2.9","PublicIPv6":null,"Future":true}`),
      {
        subnet: "10.5.3.0/24",
        attrs: { publicIP: "192.0.2.9", publicIPv6: null },
        expiration: 1_700_000_000_000,
      },
    ],
  ];
  for (const [why, rec, want] of cases) {
    const got = decodeRecord(rec);
    assert.ok(typeof got !== "string", `${why}: ${got}`);
    assert.deepEqual(
      {
        ...(got.subnet ? { subnet: formatIPv4Net(got.subnet) } : {}),
        ...(got.ipv6Subnet ? { ipv6Subnet: formatIPv6Net(got.ipv6Subnet) } : {}),
        attrs: got.attrs,
        expiration: got.expiration,
      },
      want,
      why,
    );
    assert.equal(leaseKey(got), rec.key, `${why}: leaseKey round trip`);
  }
});

Deno.test("decodeRecord() explains why garbage is not a lease", () => {
  const cases: [string, RawRecord, string | RegExp][] = [
    [
      "not JSON",
      record("10.5.1.0-24", "PublicIP=192.0.2.1"),
      `value is not JSON: "PublicIP=192.0.2.1"`,
    ],
    [
      "empty value",
      record("10.5.1.0-24", ""),
      `value is not JSON: ""`,
    ],
    [
      "missing PublicIP",
      record("10.5.1.0-24", `{"BackendType":"vxlan"}`),
      /^value "\{\\"BackendType\\":\\"vxlan\\"\}" is not a lease: PublicIP: /,
    ],
    [
      "IPv6 as PublicIP (flannel's own fuzz seed)",
      record("10.5.1.0-24", `{"PublicIP":"2001:db8::1"}`),
      `value "{\\"PublicIP\\":\\"2001:db8::1\\"}" is not a lease: PublicIP: PublicIP must be an IPv4 address`,
    ],
    [
      "PublicIP not a string",
      record("10.5.1.0-24", `{"PublicIP":3232235521}`),
      /is not a lease: PublicIP: /,
    ],
    [
      "a JSON array",
      record("10.5.1.0-24", `["192.0.2.1"]`),
      /^value "\[\\"192\.0\.2\.1\\"\]" is not a lease: /,
    ],
    [
      "bad PublicIPv6",
      record("10.5.1.0-24", `{"PublicIP":"192.0.2.1","PublicIPv6":"fc00:::1"}`),
      `PublicIPv6 "fc00:::1" is not an IPv6 address`,
    ],
    [
      "BackendType not a string",
      record("10.5.1.0-24", `{"PublicIP":"192.0.2.1","BackendType":5}`),
      /is not a lease: BackendType: /,
    ],
    [
      "bad key",
      record("10.5.1.0/24", `{"PublicIP":"192.0.2.1"}`),
      `key "10.5.1.0/24" is not a subnet key like 10.5.34.0-24, 10.5.34.0-24&fd00:12:13::-56 or 0.0.0.0-0&fd00:12:13::-56`,
    ],
    [
      "key with host bits",
      record("10.5.1.7-24", `{"PublicIP":"192.0.2.1"}`),
      `key "10.5.1.7-24" is not a subnet key like 10.5.34.0-24, 10.5.34.0-24&fd00:12:13::-56 or 0.0.0.0-0&fd00:12:13::-56`,
    ],
    [
      "a zero IPv4 network without an IPv6 part",
      record("0.0.0.0-0", `{"PublicIP":"0.0.0.0"}`),
      `key "0.0.0.0-0" is not a subnet key like 10.5.34.0-24, 10.5.34.0-24&fd00:12:13::-56 or 0.0.0.0-0&fd00:12:13::-56`,
    ],
    [
      "key of another kind",
      record("config", `{"Network":"10.5.0.0/16"}`),
      `key "config" is not a subnet key like 10.5.34.0-24, 10.5.34.0-24&fd00:12:13::-56 or 0.0.0.0-0&fd00:12:13::-56`,
    ],
  ];
  for (const [why, rec, want] of cases) {
    const got = decodeRecord(rec);
    assert.equal(typeof got, "string", why);
    if (typeof want === "string") assert.equal(got, want, why);
    else assert.match(got as string, want, why);
  }
  const long = decodeRecord(record("10.5.1.0-24", "x".repeat(500)));
  assert.equal(
    long,
    `value is not JSON: "${"x".repeat(80)}"`,
    "long values are cut to 80 characters",
  );
});

Deno.test("encodeLeaseAttrs() writes the bytes flannel's Go json.Marshal writes", () => {
  const cases: [string, LeaseAttrs, string][] = [
    [
      "vxlan (flannel's reservations.md example)",
      {
        publicIP: "192.168.64.3",
        backendType: "vxlan",
        backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" },
      },
      `{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`,
    ],
    [
      "host-gw",
      { publicIP: "192.0.2.7", publicIPv6: null, backendType: "host-gw" },
      `{"PublicIP":"192.0.2.7","PublicIPv6":null,"BackendType":"host-gw"}`,
    ],
    [
      "udp writes no BackendType",
      { publicIP: "192.0.2.8" },
      `{"PublicIP":"192.0.2.8","PublicIPv6":null}`,
    ],
    [
      "empty BackendType and null data are omitted (omitempty)",
      { publicIP: "192.0.2.8", backendType: "", backendData: null, backendV6Data: undefined },
      `{"PublicIP":"192.0.2.8","PublicIPv6":null}`,
    ],
    [
      "dual stack, IPv6 canonicalised like Go's net.IP.String",
      {
        publicIP: "192.0.2.9",
        publicIPv6: "FC00:0:0:0::0001",
        backendType: "vxlan",
        backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" },
        backendV6Data: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:45" },
      },
      `{"PublicIP":"192.0.2.9","PublicIPv6":"fc00::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}}`,
    ],
    [
      // flannel's vxlan newSubnetAttrs with no IPv4 device: PublicIP stays Go's zero ip.IP4
      "IPv6-only vxlan: PublicIP is 0.0.0.0, no BackendData",
      {
        publicIP: "",
        publicIPv6: "2001:db8::11",
        backendType: "vxlan",
        backendV6Data: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:46" },
      },
      `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::11","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:46"}}`,
    ],
    [
      "IPv6-only host-gw",
      { publicIP: "", publicIPv6: "2001:db8::12", backendType: "host-gw" },
      `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::12","BackendType":"host-gw"}`,
    ],
    [
      "Go escapes <, > and & (also inside BackendData), U+2028 and U+2029",
      {
        publicIP: "192.0.2.10",
        backendType: "a<b>&c",
        backendData: { "k<": "x>y&z\u2028\u2029", n: '\n\t"\\' },
      },
      `{"PublicIP":"192.0.2.10","PublicIPv6":null,"BackendType":"a\\u003cb\\u003e\\u0026c","BackendData":{"k\\u003c":"x\\u003ey\\u0026z\\u2028\\u2029","n":"\\n\\t\\"\\\\"}}`,
    ],
  ];
  for (const [why, attrs, want] of cases) assert.equal(encodeLeaseAttrs(attrs), want, why);
});

Deno.test("encodeLeaseAttrs() output decodes back to the same attributes", () => {
  const attrs: LeaseAttrs = {
    publicIP: "192.168.64.3",
    publicIPv6: "fd00::3",
    backendType: "vxlan",
    backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44", Note: "<&>" },
  };
  const lease = decodeRecord(record("10.5.34.0-24&fd00:12:13::-56", encodeLeaseAttrs(attrs), null));
  assert.ok(typeof lease !== "string", String(lease));
  assert.deepEqual(lease.attrs, attrs);
  const expected: Lease = {
    subnet: parseIPv4Net("10.5.34.0/24"),
    ipv6Subnet: parseIPv6Net("fd00:12:13::/56"),
    attrs,
    expiration: null,
  };
  assert.deepEqual(lease, expected);

  const v6only: LeaseAttrs = { publicIP: "", publicIPv6: "2001:db8::11", backendType: "host-gw" };
  const back = decodeRecord(record("0.0.0.0-0&fd00:10:5:1::-64", encodeLeaseAttrs(v6only), null));
  assert.deepEqual(back, {
    ipv6Subnet: parseIPv6Net("fd00:10:5:1::/64"),
    attrs: v6only,
    expiration: null,
  });
});

Deno.test("goJsonStringify() differs from JSON.stringify only in Go's HTML-safe escapes", () => {
  const cases: [unknown, string][] = [
    ["plain", `"plain"`],
    ["<script>", `"\\u003cscript\\u003e"`],
    ["a&b", `"a\\u0026b"`],
    ["\u2028", `"\\u2028"`],
    ["é ☃", `"é ☃"`],
    [{ a: [1, null, true] }, `{"a":[1,null,true]}`],
  ];
  for (const [value, want] of cases) {
    assert.equal(goJsonStringify(value), want);
    assert.deepEqual(JSON.parse(goJsonStringify(value)), value);
  }
});

// Found by lease/kv_store_fuzz_test.ts (counterexample: garble peer 10.5.1.0/24 with "",
// compact, put another peer): the re-list after the compaction left the garbled peer out,
// so the agent removed its routes.
Deno.test("a record garbled over a live peer keeps the peer's last readable lease, in the watch and after a re-list", async () => {
  const registry = createMemoryRegistry({ config: null });
  const log = memoryLogger("warn");
  const lines = log.lines;
  const store = createKvLeaseStore(registry, { logger: log });
  const good = encodeLeaseAttrs({ publicIP: "192.0.2.1", backendType: "host-gw" });
  await registry.put("10.5.1.0-24", good, null);
  const snap = await store.list();
  const ac = new AbortController();
  const events = store.watch(snap.revision, ac.signal)[Symbol.asyncIterator]();
  await registry.put("10.5.1.0-24", "", null);
  await registry.put("10.5.2.0-24", good.replace("192.0.2.1", "192.0.2.2"), null);
  let batch: LeaseEvent[] = (await events.next()).value!;
  assert.deepEqual(batch.map((e) => e.type === "added" && formatIPv4Net(e.lease.subnet!)), [
    "10.5.2.0/24",
  ], "the garbled value changes nothing in the watch");
  // the watch falls behind a compaction: it re-lists
  await registry.put("10.5.3.0-24", good.replace("192.0.2.1", "192.0.2.3"), null);
  registry.compact();
  batch = (await events.next()).value!;
  ac.abort();
  await events.return?.(undefined);
  assert.equal(batch[0].type, "snapshot");
  const listed: Lease[] = batch[0].type === "snapshot" ? batch[0].leases : [];
  const kept = listed.find((l) => formatIPv4Net(l.subnet!) === "10.5.1.0/24");
  assert.ok(kept, "the garbled peer is still in the re-list");
  assert.equal(kept.attrs.publicIP, "192.0.2.1");
  const malformed = lines.filter((l) => l.includes("malformed"));
  assert.equal(malformed.length, 1, "one warning per bad value, not one per list");
  assert.match(malformed[0], /keeping its last readable value .*key=10.5.1.0-24/);
  // deleted for real (and seen so by a list): nothing is kept for the key any more
  await registry.delete("10.5.1.0-24");
  await store.list();
  await registry.put("10.5.1.0-24", "{", null);
  assert.ok(!(await store.list()).leases.some((l) => l.subnet?.ip === kept.subnet!.ip));
});

Deno.test("decodeRecord() quotes a huge key or value in part", () => {
  const out = decodeRecord({ key: "a".repeat(5000), value: "{}", expiration: null });
  assert.equal(typeof out, "string");
  assert.ok((out as string).length < 300, out as string);
  const bad = decodeRecord({
    key: "10.5.1.0-24",
    value: JSON.stringify("a".repeat(5000)),
    expiration: null,
  });
  assert.ok((bad as string).length < 600, bad as string);
});

Deno.test("two hosts that list at once and pick one IPv6 subnet with different IPv4 ones end with two leases that do not overlap", async () => {
  // A dual-stack key names the pair, so the store's create lets both pairs in; found in the
  // IPv6 e2e lab (two hosts on fd00:10:5:18::/64). Each racer looks after its create and
  // gives way; the retries pick again.
  const config = JSON.stringify({
    Network: "10.5.0.0/16",
    EnableIPv6: true,
    IPv6Network: "fd00:10:5::/48",
    IPv6SubnetLen: 64,
  });
  const registry = createMemoryRegistry({ config });
  const log = memoryLogger("warn");
  // a draws IPv4 then IPv6, then b: the same first free IPv6 subnet, different IPv4 ones;
  // later draws (retries, their back-off) spread out
  const seq = [0, 0, 0.5, 0];
  let draws = 0;
  const random = () => seq[draws++] ?? ((draws * 0.37) % 1);
  const a = createKvLeaseStore(registry, { logger: log, random });
  const b = createKvLeaseStore(registry, { logger: log, random });
  const net = await a.getNetworkConfig();
  // each host's own listing, both taken before either creates its lease
  const [listedA, listedB] = [await a.list(), await b.list()];
  const [la, lb] = await Promise.all([
    a.acquire(net, { attrs: { publicIP: "192.0.2.1" }, listed: listedA }),
    b.acquire(net, { attrs: { publicIP: "192.0.2.2" }, listed: listedB }),
  ]);
  assert.notEqual(formatIPv6Net(la.ipv6Subnet!), formatIPv6Net(lb.ipv6Subnet!));
  assert.notEqual(formatIPv4Net(la.subnet!), formatIPv4Net(lb.subnet!));
  const held = (await a.list()).leases.map((l) => leaseKey(l)).sort();
  assert.deepEqual(held, [leaseKey(la), leaseKey(lb)].sort(), "exactly the two leases are left");
  assert.ok(log.lines.some((l) => l.includes("giving way")), log.lines.join("\n"));
});
