/**
 * An immutable set of peer leases by key that shares structure between
 * versions: the keys are spread over {@link PEER_SET_BUCKETS} buckets, and
 * a new version copies only the buckets an edit touches. A one-event batch
 * at 5000 peers copies about 80 entries instead of 5000, so the reducer
 * stays pure without its per-event cost growing with the peer count.
 *
 * @module
 */

import type { Lease } from "../lease/types.ts";

/** Number of buckets (a power of two). */
export const PEER_SET_BUCKETS = 64;

const NO_PEERS: ReadonlyMap<string, Lease> = new Map();

/** FNV-1a of the key, folded to a bucket index. */
function bucketOf(key: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) & (PEER_SET_BUCKETS - 1);
}

/**
 * Peer leases by key (`10.5.34.0-24`); never modified once built.
 *
 * @example
 * ```ts
 * const one = PeerSet.of([["10.5.2.0-24", lease]]);
 * const none = one.with(new Map([["10.5.2.0-24", null]]));
 * one.size; // still 1
 * ```
 */
export class PeerSet {
  /** The empty set. */
  static readonly EMPTY: PeerSet = new PeerSet(new Array(PEER_SET_BUCKETS).fill(NO_PEERS), 0);

  readonly #buckets: readonly ReadonlyMap<string, Lease>[];
  /** Number of peers. */
  readonly size: number;

  private constructor(buckets: readonly ReadonlyMap<string, Lease>[], size: number) {
    this.#buckets = buckets;
    this.size = size;
  }

  /**
   * Build a set from key/lease pairs (a later pair with the same key wins).
   *
   * @param entries The pairs.
   * @returns The set.
   */
  static of(entries: Iterable<readonly [string, Lease]>): PeerSet {
    return PeerSet.EMPTY.with(new Map(entries));
  }

  /** The lease under `key`, if any. */
  get(key: string): Lease | undefined {
    return this.#buckets[bucketOf(key)].get(key);
  }

  /** Whether a lease is under `key`. */
  has(key: string): boolean {
    return this.#buckets[bucketOf(key)].has(key);
  }

  /** Key/lease pairs (in no particular order). */
  *entries(): IterableIterator<[string, Lease]> {
    for (const bucket of this.#buckets) yield* bucket.entries();
  }

  /** The keys. */
  *keys(): IterableIterator<string> {
    for (const bucket of this.#buckets) yield* bucket.keys();
  }

  /** The leases. */
  *values(): IterableIterator<Lease> {
    for (const bucket of this.#buckets) yield* bucket.values();
  }

  /** Same as {@link PeerSet.entries}. */
  [Symbol.iterator](): IterableIterator<[string, Lease]> {
    return this.entries();
  }

  /**
   * A new set with these edits: a lease sets its key, `null` deletes it.
   * Only the buckets the edits touch are copied.
   *
   * @param edits Key → lease, or null to delete.
   * @returns The new set (`this` when there are no edits).
   */
  with(edits: ReadonlyMap<string, Lease | null>): PeerSet {
    if (edits.size === 0) return this;
    const buckets = [...this.#buckets];
    const copied = new Set<number>();
    let size = this.size;
    for (const [key, lease] of edits) {
      const index = bucketOf(key);
      if (!copied.has(index)) {
        buckets[index] = new Map(buckets[index]);
        copied.add(index);
      }
      const bucket = buckets[index] as Map<string, Lease>;
      const had = bucket.has(key);
      if (lease === null) {
        if (had) size--;
        bucket.delete(key);
      } else {
        if (!had) size++;
        bucket.set(key, lease);
      }
    }
    return new PeerSet(buckets, size);
  }
}
