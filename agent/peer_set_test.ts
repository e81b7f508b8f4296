import assert from "node:assert/strict";
import fc from "fast-check";
import type { Lease } from "../lease/types.ts";
import { PeerSet } from "./peer_set.ts";

const LEASES: Lease[] = Array.from({ length: 301 }, (_, n) => ({
  subnet: { ip: (10 << 24 | 5 << 16 | n << 8) >>> 0, prefixLen: 24 },
  attrs: { publicIP: `192.0.2.${n}` },
  expiration: null,
}));
const lease = (n: number): Lease => LEASES[n];
const key = (n: number) => `10.5.${n}.0-24`;

Deno.test("PeerSet.with() builds a new set and leaves the old one as it was", () => {
  const one = PeerSet.of([[key(1), lease(1)], [key(2), lease(2)]]);
  const two = one.with(new Map([[key(1), null], [key(3), lease(3)], [key(9), null]]));
  assert.deepEqual([...one.keys()].sort(), [key(1), key(2)]);
  assert.equal(one.size, 2);
  assert.deepEqual([...two.keys()].sort(), [key(2), key(3)]);
  assert.equal(two.size, 2);
  assert.equal(two.get(key(3)), lease(3));
  assert.equal(two.has(key(1)), false);
  assert.equal(one.with(new Map()), one, "no edits: the same set");
  assert.equal(PeerSet.EMPTY.size, 0);
  assert.deepEqual([...PeerSet.EMPTY], []);
});

Deno.test("PeerSet behaves as a Map under any sequence of edits (property)", () => {
  const edit = fc.tuple(fc.integer({ min: 0, max: 300 }), fc.boolean());
  fc.assert(
    fc.property(fc.array(fc.array(edit, { maxLength: 40 }), { maxLength: 20 }), (batches) => {
      let set = PeerSet.EMPTY;
      const versions: [PeerSet, Map<string, Lease>][] = [];
      const model = new Map<string, Lease>();
      for (const batch of batches) {
        const edits = new Map<string, Lease | null>();
        for (const [n, keep] of batch) {
          edits.set(key(n), keep ? lease(n) : null);
          if (keep) model.set(key(n), lease(n));
          else model.delete(key(n));
        }
        set = set.with(edits);
        versions.push([set, new Map(model)]);
      }
      // every version still shows what it showed when it was made
      for (const [version, expected] of versions) {
        assert.equal(version.size, expected.size);
        assert.deepEqual(new Map(version.entries()), expected);
        for (const [k, v] of expected) assert.equal(version.get(k), v);
      }
    }),
    { numRuns: 200, seed: 42 },
  );
});
