/**
 * Fuzzing lease records (etcd values and keys, the file store's records):
 * `decodeRecord` on mutations of flannel's lease vectors, and the store and
 * the agent's peer reducer together — garbled records put over live peers,
 * in watches and in re-lists after a compaction, must never remove or
 * change a peer the datapath already has.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { readFileSync } from "node:fs";
import { createKvLeaseStore, decodeRecord } from "./kv_store.ts";
import { encodeLeaseAttrs, type LeaseEvent } from "./types.ts";
import { formatIPv4Net, isIPv4, parseSubnetKey } from "../core/ip.ts";
import { createMemoryRegistry } from "../testing/memory_registry.ts";
import { memoryLogger } from "../testing/memory_logger.ts";
import { PeerSet, reducePeers } from "../agent/peers.ts";
import {
  assertCleanLog,
  fuzzParameters,
  MAX_MESSAGE,
  mutatedJson,
  mutatedText,
  nastyString,
  Tally,
} from "../testing/fuzz.ts";

const vectors = JSON.parse(
  readFileSync(new URL("../testing/flannel_vectors/lease_json.json", import.meta.url), "utf8"),
) as { rows: { kind: string; input: { key?: string; value?: string } }[] };
const decodes = vectors.rows.filter((r) => r.kind === "decode").map((r) => r.input);
const VALUES = [
  ...decodes.map((r) => r.value!),
  '{"PublicIP":"192.0.2.7","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:07"}}',
  '{"PublicIP":"192.0.2.8","PublicIPv6":"fd00::8","BackendType":"host-gw"}',
];
const VALUE_DOCS = VALUES.flatMap((v) => {
  try {
    return [JSON.parse(v)];
  } catch {
    return [];
  }
});
const KEYS = [
  ...decodes.map((r) => r.key!),
  "10.5.34.0-24",
  "10.5.34.0-24&fd00:12:13::-56",
  "0.0.0.0-0",
  "255.255.255.255-32",
];

const keys = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...KEYS) },
  { weight: 3, arbitrary: mutatedText(KEYS, 2) },
  { weight: 1, arbitrary: nastyString() },
);
const values = fc.oneof(
  { weight: 4, arbitrary: mutatedJson(VALUE_DOCS, 3).map((d) => JSON.stringify(d) ?? "") },
  { weight: 3, arbitrary: mutatedText(VALUES, 3) },
  { weight: 1, arbitrary: nastyString() },
);

Deno.test("fuzz decodeRecord(): mutated keys and values (10 000 inputs)", () => {
  const tally = new Tally();
  fc.assert(
    fc.property(keys, values, fc.option(fc.nat()), (key, value, expiration) => {
      const out = decodeRecord({ key, value, expiration });
      tally.count(typeof out !== "string");
      if (typeof out === "string") {
        assert.ok(out.length > 10 && out.length <= MAX_MESSAGE, `message: ${out.slice(0, 300)}`);
        return;
      }
      const sn = parseSubnetKey(key)!;
      assert.equal(formatIPv4Net(out.subnet!), formatIPv4Net(sn.subnet!));
      assert.ok(isIPv4(out.attrs.publicIP), `PublicIP ${out.attrs.publicIP}`);
      assert.equal(out.expiration, expiration);
      encodeLeaseAttrs(out.attrs); // what the agent republishes must encode
    }),
    fuzzParameters(),
  );
  tally.assertMix("lease records");
});

// ---- the store and the reducer together ------------------------------------------------

const PEERS = 6;
const OWN = {
  subnet: { ip: 0x0a05fa00, prefixLen: 24 },
  publicIP: "192.0.2.250",
  attrs: { publicIP: "192.0.2.250", publicIPv6: null },
};
const OWN_KEY = "10.5.250.0-24";
const SENTINEL_KEY = "10.5.251.0-24";
const peerKey = (i: number) => `10.5.${i + 1}.0-24`;
const goodValue = (i: number, version: number) =>
  encodeLeaseAttrs({
    publicIP: `192.0.2.${i + 1}`,
    backendType: "vxlan",
    backendData: {
      VNI: 1,
      VtepMAC: `02:00:00:00:${String(i + 1).padStart(2, "0")}:${version % 100}`,
    },
  });

/** One step against the registry. */
type Op =
  | { op: "garble"; peer: number; value: string }
  | { op: "put"; peer: number }
  | { op: "delete"; peer: number }
  | { op: "compact" }
  | { op: "sync" };

const ops = fc.array(
  fc.oneof(
    // index PEERS stands for the own lease
    {
      weight: 5,
      arbitrary: fc.record({
        op: fc.constant("garble" as const),
        peer: fc.nat(PEERS),
        value: values,
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({ op: fc.constant("put" as const), peer: fc.nat(PEERS - 1) }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ op: fc.constant("delete" as const), peer: fc.nat(PEERS - 1) }),
    },
    { weight: 1, arbitrary: fc.constant({ op: "compact" as const }) },
    { weight: 2, arbitrary: fc.constant({ op: "sync" as const }) },
  ),
  { minLength: 1, maxLength: 12 },
);

/** The peers as the reducer holds them, key → lease value as published. */
function peersOf(set: PeerSet): Map<string, string> {
  const out = new Map<string, string>();
  for (const [key, lease] of set) out.set(key, encodeLeaseAttrs(lease.attrs));
  return out;
}

Deno.test("fuzz the kv store + peer reducer: garbled records never remove or change an installed peer (2 000 sequences)", async () => {
  let steps = 0, garbled = 0, relists = 0;
  await fc.assert(
    fc.asyncProperty(ops, async (script) => {
      const registry = createMemoryRegistry({ config: null });
      const log = memoryLogger("warn");
      const store = createKvLeaseStore(registry, { logger: log });
      /**
       * The peer set the agent must hold: per key the last readable value
       * the store could see (the own lease left out). A watch sees every
       * value; a re-list after a compaction sees only the current one, so a
       * key whose current record is unreadable may keep an older readable
       * value or the latest — never lose one it had.
       */
      const model = new Map<string, string>();
      /** Each key's record now: its readable value, null when unreadable. */
      const current = new Map<string, string | null>();
      let compacted = false;
      let ownOurs = true, everLost = false, ownReadable = true, ownOursBefore = true;
      const putValue = async (key: string, value: string) => {
        await registry.put(key, value, null);
        const lease = decodeRecord({ key, value, expiration: null });
        const readable = typeof lease === "string" ? null : encodeLeaseAttrs(lease.attrs);
        if (key === OWN_KEY) {
          ownReadable = readable !== null;
          if (typeof lease !== "string" && lease.attrs.publicIP !== OWN.publicIP) ownOurs = false;
          return;
        }
        current.set(key, readable);
        if (readable !== null) model.set(key, readable);
      };
      for (let i = 0; i < PEERS; i++) await putValue(peerKey(i), goodValue(i, 0));
      await registry.put(OWN_KEY, encodeLeaseAttrs({ publicIP: OWN.publicIP }), null);

      const ac = new AbortController();
      const snap = await store.list(ac.signal);
      let peers = reducePeers(PeerSet.EMPTY, OWN, [{ type: "snapshot", leases: snap.leases }])
        .peers;
      let previous = peersOf(peers);
      assert.deepEqual(previous, model);
      const events = store.watch(snap.revision, ac.signal)[Symbol.asyncIterator]();
      let sync = 0;
      const catchUp = async () => {
        sync++;
        const marker = `198.51.100.${sync % 250}`;
        await registry.put(SENTINEL_KEY, encodeLeaseAttrs({ publicIP: marker }), null);
        for (let i = 0;; i++) {
          assert.ok(i < 20, "the watch did not deliver the sentinel");
          const next = await events.next();
          assert.ok(!next.done);
          const batch = next.value as LeaseEvent[];
          if (batch.some((e) => e.type === "snapshot")) relists++;
          const update = reducePeers(peers, OWN, batch);
          if (update.lost !== null) everLost = true;
          peers = update.peers;
          if (peers.get(SENTINEL_KEY)?.attrs.publicIP === marker) break;
        }
        const got = peersOf(peers);
        got.delete(SENTINEL_KEY);
        if (compacted) {
          for (const [key, now] of current) {
            if (now !== null) continue;
            const seen = got.get(key);
            const allowed = [previous.get(key), model.get(key)];
            if (!previous.has(key)) allowed.push(undefined);
            assert.ok(
              allowed.includes(seen),
              `unreadable ${key} shows ${seen}: expected one of ${allowed.join(" | ")}`,
            );
            if (seen === undefined) model.delete(key);
            else model.set(key, seen);
          }
          // the same for the own lease: another host's value put and garbled in the window
          if (!ownReadable && ownOurs !== ownOursBefore) ownOurs = !everLost;
          compacted = false;
        }
        ownOursBefore = ownOurs;
        assert.deepEqual(got, model);
        assert.equal(everLost, !ownOurs, "own lease lost exactly when a readable record says so");
        previous = got;
      };
      try {
        for (const step of script) {
          steps++;
          if (step.op === "garble") {
            garbled++;
            await putValue(step.peer === PEERS ? OWN_KEY : peerKey(step.peer), step.value);
          } else if (step.op === "put") {
            await putValue(peerKey(step.peer), goodValue(step.peer, steps));
          } else if (step.op === "delete") {
            await registry.delete(peerKey(step.peer));
            current.delete(peerKey(step.peer));
            model.delete(peerKey(step.peer));
          } else if (step.op === "compact") {
            registry.compact();
            compacted = true;
          } else {
            await catchUp();
          }
        }
        await catchUp();
      } finally {
        ac.abort();
        await events.return?.(undefined);
      }
      assertCleanLog(log.lines);
    }),
    fuzzParameters(2_000),
  );
  const runs = fuzzParameters(2_000).numRuns!;
  assert.ok(
    garbled > runs / 2 && relists > runs / 20,
    `${steps} steps, ${garbled} garbled, ${relists} re-lists`,
  );
});
