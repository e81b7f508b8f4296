import assert from "node:assert/strict";
import { parseIPv4Net, parseIPv6Net } from "../core/ip.ts";
import { leaseKey } from "../lease/kv_store.ts";
import type { Lease, LeaseEvent } from "../lease/types.ts";
import type { PeerChange } from "../backends/types.ts";
import { mergePeerChanges, type OwnLease, peerDiffers, PeerSet, reducePeers } from "./peers.ts";

const OWN_IP = "192.0.2.10";
const own: OwnLease = { subnet: parseIPv4Net("10.5.1.0/24"), attrs: { publicIP: OWN_IP } };

function lease(cidr: string, publicIP: string, extra: Partial<Lease> = {}): Lease {
  return {
    subnet: parseIPv4Net(cidr),
    attrs: { publicIP, backendType: "vxlan", backendData: { VNI: 1 } },
    expiration: 1_000,
    ...extra,
  };
}

const setOf = (...leases: Lease[]): PeerSet => PeerSet.of(leases.map((l) => [leaseKey(l), l]));
const show = (changes: readonly PeerChange[]) =>
  changes.map((c) => `${c.type} ${leaseKey(c.lease)} ${c.lease.attrs.publicIP}`);

const A = lease("10.5.2.0/24", "192.0.2.2");
const A_RENEWED = { ...A, expiration: 2_000 };
const A_MOVED = lease("10.5.2.0/24", "192.0.2.22");
const B = lease("10.5.3.0/24", "192.0.2.3");
const C = lease("10.5.4.0/24", "192.0.2.4");
const OWN = lease("10.5.1.0/24", OWN_IP);
const OWN_TAKEN = lease("10.5.1.0/24", "192.0.2.99");

interface Case {
  name: string;
  peers: Lease[];
  own?: OwnLease;
  events: LeaseEvent[];
  want: { peers: string[]; changes: string[]; snapshot: boolean; lost: RegExp | null };
}

const CASES: Case[] = [
  {
    name: "a new peer is added",
    peers: [],
    events: [{ type: "added", lease: A }],
    want: {
      peers: ["10.5.2.0-24"],
      changes: ["added 10.5.2.0-24 192.0.2.2"],
      snapshot: false,
      lost: null,
    },
  },
  {
    name: "a renewal that only moves the expiry updates the set, asks nothing of the datapath",
    peers: [A],
    events: [{ type: "added", lease: A_RENEWED }],
    want: { peers: ["10.5.2.0-24"], changes: [], snapshot: false, lost: null },
  },
  {
    name: "a peer whose public IP changed is a change",
    peers: [A],
    events: [{ type: "added", lease: A_MOVED }],
    want: {
      peers: ["10.5.2.0-24"],
      changes: ["added 10.5.2.0-24 192.0.2.22"],
      snapshot: false,
      lost: null,
    },
  },
  {
    name: "removing a known peer is a change carrying the lease the agent knew",
    peers: [A, B],
    events: [{ type: "removed", lease: { ...A, attrs: { publicIP: "" } } }],
    want: {
      peers: ["10.5.3.0-24"],
      changes: ["removed 10.5.2.0-24 192.0.2.2"],
      snapshot: false,
      lost: null,
    },
  },
  {
    name: "removing an unknown peer is nothing",
    peers: [B],
    events: [{ type: "removed", lease: A }],
    want: { peers: ["10.5.3.0-24"], changes: [], snapshot: false, lost: null },
  },
  {
    name: "added then removed in one batch nets to nothing",
    peers: [],
    events: [{ type: "added", lease: A }, { type: "removed", lease: A }],
    want: { peers: [], changes: [], snapshot: false, lost: null },
  },
  {
    name: "removed then added again unchanged in one batch nets to nothing",
    peers: [A],
    events: [{ type: "removed", lease: A }, { type: "added", lease: A_RENEWED }],
    want: { peers: ["10.5.2.0-24"], changes: [], snapshot: false, lost: null },
  },
  {
    name: "one change per peer, the newest, in the order of the last events",
    peers: [B],
    events: [
      { type: "added", lease: A },
      { type: "removed", lease: B },
      { type: "added", lease: A_MOVED },
    ],
    want: {
      peers: ["10.5.2.0-24"],
      changes: ["removed 10.5.3.0-24 192.0.2.3", "added 10.5.2.0-24 192.0.2.22"],
      snapshot: false,
      lost: null,
    },
  },
  {
    name: "the own lease is never a peer",
    peers: [],
    events: [{ type: "added", lease: OWN }, { type: "added", lease: A }],
    want: {
      peers: ["10.5.2.0-24"],
      changes: ["added 10.5.2.0-24 192.0.2.2"],
      snapshot: false,
      lost: null,
    },
  },
  {
    name: "the own lease removed (deleted or expired) is lost",
    peers: [A],
    events: [{ type: "removed", lease: OWN }],
    want: {
      peers: ["10.5.2.0-24"],
      changes: [],
      snapshot: false,
      lost: /lease 10\.5\.1\.0\/24 was removed or expired/,
    },
  },
  {
    name: "the own subnet with another host's IP is lost, and not a peer",
    peers: [],
    events: [{ type: "added", lease: OWN_TAKEN }],
    want: {
      peers: [],
      changes: [],
      snapshot: false,
      lost: /subnet 10\.5\.1\.0\/24 now belongs to 192\.0\.2\.99/,
    },
  },
  {
    name: "lost is final for the batch: a later re-creation of the own lease does not undo it",
    peers: [],
    events: [{ type: "removed", lease: OWN }, { type: "added", lease: OWN }],
    want: { peers: [], changes: [], snapshot: false, lost: /was removed or expired/ },
  },
  {
    name: "before the agent has a lease nothing is own",
    peers: [],
    own: undefined,
    events: [{ type: "added", lease: OWN }],
    want: {
      peers: ["10.5.1.0-24"],
      changes: [`added 10.5.1.0-24 ${OWN_IP}`],
      snapshot: false,
      lost: null,
    },
  },
  {
    name: "a snapshot replaces the set; the changes are the difference",
    peers: [A, B],
    events: [{ type: "snapshot", leases: [OWN, A_RENEWED, C] }],
    want: {
      peers: ["10.5.2.0-24", "10.5.4.0-24"],
      changes: ["added 10.5.4.0-24 192.0.2.4", "removed 10.5.3.0-24 192.0.2.3"],
      snapshot: true,
      lost: null,
    },
  },
  {
    name: "a snapshot without the own lease says it is gone",
    peers: [A],
    events: [{ type: "snapshot", leases: [A] }],
    want: {
      peers: ["10.5.2.0-24"],
      changes: [],
      snapshot: true,
      lost: /lease 10\.5\.1\.0\/24 is no longer in the store/,
    },
  },
  {
    name: "a snapshot with the own subnet taken says who has it",
    peers: [],
    events: [{ type: "snapshot", leases: [OWN_TAKEN, A] }],
    want: {
      peers: ["10.5.2.0-24"],
      changes: ["added 10.5.2.0-24 192.0.2.2"],
      snapshot: true,
      lost: /now belongs to 192\.0\.2\.99/,
    },
  },
  {
    name: "events after a snapshot in the same batch apply on top of it",
    peers: [A],
    events: [{ type: "snapshot", leases: [OWN, B] }, { type: "added", lease: C }],
    want: {
      peers: ["10.5.3.0-24", "10.5.4.0-24"],
      changes: [
        "added 10.5.3.0-24 192.0.2.3",
        "removed 10.5.2.0-24 192.0.2.2",
        "added 10.5.4.0-24 192.0.2.4",
      ],
      snapshot: true,
      lost: null,
    },
  },
];

for (const c of CASES) {
  Deno.test(`reducePeers(): ${c.name}`, () => {
    const before = setOf(...c.peers);
    const frozen = [...before.entries()];
    const got = reducePeers(before, "own" in c ? c.own : own, c.events);
    assert.deepEqual([...got.peers.keys()].sort(), c.want.peers);
    assert.deepEqual(show(got.changes), c.want.changes);
    assert.equal(got.snapshot, c.want.snapshot);
    if (c.want.lost === null) assert.equal(got.lost, null);
    else assert.match(got.lost ?? "(null)", c.want.lost);
    assert.deepEqual([...before.entries()], frozen, "the input set is not modified");
  });
}

Deno.test("reducePeers() returns the same set object when a batch changes nothing", () => {
  const before = setOf(A);
  const got = reducePeers(before, own, [{ type: "removed", lease: B }, {
    type: "added",
    lease: OWN,
  }]);
  assert.equal(got.peers, before);
  assert.deepEqual(got.changes, []);
});

Deno.test("peerDiffers() ignores the expiry and sees subnets and attributes", () => {
  assert.equal(peerDiffers(A, A_RENEWED), false);
  assert.equal(peerDiffers(A, A_MOVED), true);
  assert.equal(peerDiffers(A, { ...A, attrs: { ...A.attrs, backendData: { VNI: 2 } } }), true);
  assert.equal(peerDiffers(A, { ...A, ipv6Subnet: parseIPv6Net("fd00:1::/64") }), true);
});

Deno.test("mergePeerChanges() keeps the newest change per peer, in the order of the last change", () => {
  const pending = mergePeerChanges(new Map(), [
    { type: "added", lease: A },
    { type: "added", lease: B },
  ]);
  mergePeerChanges(pending, [{ type: "removed", lease: A }, { type: "added", lease: C }]);
  mergePeerChanges(pending, [{ type: "added", lease: A_MOVED }]);
  assert.deepEqual(show([...pending.values()]), [
    "added 10.5.3.0-24 192.0.2.3",
    "added 10.5.4.0-24 192.0.2.4",
    "added 10.5.2.0-24 192.0.2.22",
  ]);
});
