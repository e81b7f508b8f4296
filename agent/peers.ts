/**
 * The peer set as a pure reducer: what a batch of lease events does to the
 * set of peer leases, which {@link PeerChange}s the datapath must apply, and
 * whether this host's own lease was lost on the way. No I/O, no clock: the
 * agent feeds it every watch batch (and every re-list, as a `snapshot`
 * event) and acts on the result.
 *
 * Rules:
 * - This host's lease (the one with the own subnet) is never a peer.
 * - `added` for a new peer, or one whose subnet, IPv6 subnet or attributes
 *   changed, is a change; a renewal that only moves the expiry updates the
 *   set but asks nothing of the datapath.
 * - `removed` of a known peer is a change; of an unknown one, nothing.
 * - `snapshot` replaces the set (the changes are the difference, and
 *   `snapshot` is set so the caller writes the whole set).
 * - The own lease is lost when it is removed, missing from a snapshot, or
 *   now carries another host's public IP. That is final for the batch: a
 *   later `added` of it (e.g. a renewal that re-created the key after it
 *   expired) does not undo it; the agent registers again, which reuses the
 *   subnet when it can.
 *
 * @module
 */

import { equalIPv4Net, equalIPv6Net, formatSubnetPair, type IPv4Net } from "../core/ip.ts";
import { leaseKey } from "../lease/kv_store.ts";
import {
  type Lease,
  type LeaseAttrs,
  type LeaseEvent,
  type LeaseSubnets,
  sameHost,
} from "../lease/types.ts";
import type { PeerChange } from "../backends/types.ts";
import { PeerSet } from "./peer_set.ts";

export { PeerSet };

/** What identifies this host's own lease among all leases. */
export type OwnLease = LeaseSubnets & {
  /**
   * This host's public addresses: the own subnet published with other
   * addresses means someone else took it (IPv4 decides; IPv6 when the
   * network is IPv6-only, see `sameHost`).
   */
  readonly attrs: Pick<LeaseAttrs, "publicIP" | "publicIPv6">;
};

/** The result of {@link reducePeers}. */
export interface PeerUpdate {
  /** The new peer set (the input itself when nothing changed); keys are {@link leaseKey}s. */
  readonly peers: PeerSet;
  /** What the datapath must do, at most one change per peer key, in event order. */
  readonly changes: readonly PeerChange[];
  /** A snapshot replaced the set: write the whole set rather than the changes. */
  readonly snapshot: boolean;
  /** Why this host's own lease is gone (the first sign in the batch), or null when it is still ours. */
  readonly lost: string | null;
}

/** Two optional IPv4 subnets are the same (both absent counts as the same). */
function equalSubnet(a: IPv4Net | undefined, b: IPv4Net | undefined): boolean {
  return a === undefined || b === undefined ? a === b : equalIPv4Net(a, b);
}

/**
 * Whether two leases of the same key differ in anything the datapath uses
 * (subnets and attributes; the expiry does not count).
 *
 * @param a One lease.
 * @param b The other.
 * @returns True when a backend would program them differently.
 */
export function peerDiffers(a: Lease, b: Lease): boolean {
  return !equalSubnet(a.subnet, b.subnet) || !equalIPv6Net(a.ipv6Subnet, b.ipv6Subnet) ||
    JSON.stringify(a.attrs) !== JSON.stringify(b.attrs);
}

/**
 * Apply a batch of lease events to the peer set (pure: the input set is
 * immutable and is returned unchanged when the batch changes nothing).
 *
 * Cost: constant work per event plus, per batch, a copy of the trie paths the
 * batch touched (see agent/peer_set.ts) — not a copy of the whole set. A
 * snapshot costs one pass over the old and the new set.
 *
 * @param peers The current peer set.
 * @param own This host's lease, or undefined before it has one (then nothing is "own").
 * @param events One watch batch, in order; a `snapshot` event is a full re-list.
 * @returns The new set, the changes for the datapath, and whether the own lease was lost.
 * @example
 * ```ts
 * const { peers: next, changes, lost } = reducePeers(peers, { subnet, attrs: { publicIP } }, batch);
 * if (lost) reacquire(lost); else await network.updatePeers(changes);
 * ```
 */
export function reducePeers(
  peers: PeerSet,
  own: OwnLease | undefined,
  events: readonly LeaseEvent[],
): PeerUpdate {
  /** The set the edits apply to: `peers`, or the last snapshot of the batch. */
  let base = peers;
  /** Keys changed since `base`: a lease, or null for gone. */
  const edits = new Map<string, Lease | null>();
  const lookup = (key: string) => edits.has(key) ? edits.get(key) ?? undefined : base.get(key);
  const changes = new Map<string, PeerChange>();
  let snapshot = false;
  let lost: string | null = null;
  // the own lease is the one holding this host's IPv4 subnet (its IPv6 one when IPv6-only)
  const isOwn = (lease: Lease) =>
    own !== undefined &&
    (own.subnet
      ? equalSubnet(own.subnet, lease.subnet)
      : equalIPv6Net(own.ipv6Subnet, lease.ipv6Subnet));
  const takenWhy = (lease: Lease) =>
    `subnet ${formatSubnetPair(lease)} now belongs to ${
      lease.attrs.publicIP || lease.attrs.publicIPv6
    }`;
  // changes are recorded per key; deleting first keeps the event order of the last change
  const record = (key: string, change: PeerChange) => {
    changes.delete(key);
    changes.set(key, change);
  };

  for (const event of events) {
    if (event.type === "snapshot") {
      const before = base.with(edits);
      edits.clear();
      snapshot = true;
      let ownSeen = false;
      const listed: [string, Lease][] = [];
      for (const lease of event.leases) {
        if (isOwn(lease)) {
          ownSeen = true;
          if (!sameHost(lease.attrs, own!.attrs)) lost ??= takenWhy(lease);
          continue;
        }
        const key = leaseKey(lease);
        const old = before.get(key);
        if (!old || peerDiffers(old, lease)) record(key, { type: "added", lease });
        listed.push([key, lease]);
      }
      base = PeerSet.of(listed);
      for (const [key, lease] of before) {
        if (!base.has(key)) record(key, { type: "removed", lease });
      }
      if (own && !ownSeen) lost ??= `lease ${formatSubnetPair(own)} is no longer in the store`;
      continue;
    }
    const lease = event.lease;
    if (isOwn(lease)) {
      if (event.type === "removed") {
        lost ??= `lease ${formatSubnetPair(lease)} was removed or expired`;
      } else if (!sameHost(lease.attrs, own!.attrs)) {
        lost ??= takenWhy(lease);
      }
      continue;
    }
    const key = leaseKey(lease);
    const old = lookup(key);
    if (event.type === "added") {
      if (old === lease) continue;
      edits.set(key, lease);
      if (!old || peerDiffers(old, lease)) record(key, { type: "added", lease });
    } else if (old) {
      edits.set(key, null);
      record(key, { type: "removed", lease: old });
    }
  }
  const next = base.with(edits);
  // a peer added and removed within one batch (or the reverse) may net to nothing
  if (peers.size === 0) {
    // nothing was there (the first listing): only a removal can net to nothing
    for (const [key, change] of changes) if (change.type === "removed") changes.delete(key);
  } else {
    for (const [key, change] of changes) {
      const was = peers.get(key);
      const now = next.get(key);
      if (change.type === "removed" && !was) changes.delete(key);
      else if (change.type === "added" && was && now && !peerDiffers(was, now)) changes.delete(key);
    }
  }
  return { peers: next, changes: [...changes.values()], snapshot, lost };
}

/**
 * Merge changes that wait for a datapath write with newer ones: per peer
 * key the newest change wins (added then removed is removed; removed then
 * added is added with the newer lease). Mutates and returns `pending`.
 *
 * @param pending Changes not written yet, by peer key.
 * @param changes Newer changes.
 * @returns `pending`.
 * @example
 * ```ts
 * const pending = mergePeerChanges(new Map(), [{ type: "added", lease }]);
 * ```
 */
export function mergePeerChanges(
  pending: Map<string, PeerChange>,
  changes: readonly PeerChange[],
): Map<string, PeerChange> {
  for (const change of changes) {
    const key = leaseKey(change.lease);
    pending.delete(key);
    pending.set(key, change);
  }
  return pending;
}
