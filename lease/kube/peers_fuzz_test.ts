/**
 * Fuzzing the kube store's peer view with the agent's reducer: an API
 * server (in memory, behind the KubeApi seam) whose nodes are put, garbled
 * and deleted, whose watch stream carries noise lines between the events
 * and now and then a 410 (so the view re-lists). Property: the reducer's
 * peer set always equals, per node, the last readable lease it had (a
 * garbled node never removes or changes an installed peer, also across a
 * re-list), the watch never ends or throws, and every log line is of
 * readable length.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { NodeDecoder, PeerView, type Shared } from "./peers.ts";
import { annotationKeys, DEFAULT_ANNOTATION_PREFIX, nodeToLease, parseKubeNode } from "./node.ts";
import { parseNetworkConfig } from "../config.ts";
import { encodeLeaseAttrs, type LeaseEvent } from "../types.ts";
import { leaseKey } from "../kv_store.ts";
import { formatIPv4Net } from "../../core/ip.ts";
import { PeerSet, reducePeers } from "../../agent/peers.ts";
import { memoryLogger } from "../../testing/memory_logger.ts";
import { FakeNodeServer, nextWithin, quickClock, stamped } from "../../testing/fake_node_api.ts";
import {
  assertCleanLog,
  fuzzParameters,
  mutatedJson,
  mutatedText,
  nastyString,
} from "../../testing/fuzz.ts";

const A = `${DEFAULT_ANNOTATION_PREFIX}/`;
const KEYS = annotationKeys();
const CONFIG = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
const NODES = 5;

function node(i: number, version: number): Record<string, unknown> {
  return {
    metadata: {
      name: `node-${i}`,
      resourceVersion: "0",
      annotations: {
        [A + "kube-subnet-manager"]: "true",
        [A + "backend-type"]: "vxlan",
        [A + "backend-data"]: `{"VNI":1,"VtepMAC":"02:00:00:00:0${i}:${version % 90 + 10}"}`,
        [A + "public-ip"]: `192.0.2.${i + 1}`,
      },
    },
    spec: { podCIDR: `10.244.${i + 1}.0/24`, podCIDRs: [`10.244.${i + 1}.0/24`] },
  };
}
const BASES = Array.from({ length: NODES }, (_, i) => node(i, 0));

/** Lines that are not events (the view skips them with a warning). */
const noise = fc.oneof(
  mutatedText(BASES.map((n) => JSON.stringify({ type: "MODIFIED", object: n })), 3),
  nastyString(),
  fc.constantFrom("null", "1", '"x"', "[]", "{}", '{"type":"MODIFIED"}', '{"type":7}'),
).filter((line) => !line.includes("\n") && !line.includes("\r") && !isEvent(line));

/** Whether a line would be read as a real change (noise must not be). */
function isEvent(line: string): boolean {
  try {
    const ev = JSON.parse(line);
    return typeof ev === "object" && ev !== null && !Array.isArray(ev) &&
      (typeof ev.object === "object" && ev.object !== null || ev.type === "ERROR");
  } catch {
    return false;
  }
}

type Op =
  | { op: "put"; node: number }
  | { op: "garble"; node: number; object: unknown }
  | { op: "delete"; node: number }
  | { op: "noise"; line: string }
  | { op: "gone" }
  | { op: "sync" };

const ops = fc.array(
  fc.oneof(
    {
      weight: 2,
      arbitrary: fc.record({ op: fc.constant("put" as const), node: fc.nat(NODES - 1) }),
    },
    {
      weight: 4,
      arbitrary: fc.record({
        op: fc.constant("garble" as const),
        node: fc.nat(NODES - 1),
        object: mutatedJson(BASES, 3),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ op: fc.constant("delete" as const), node: fc.nat(NODES - 1) }),
    },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("noise" as const), line: noise }) },
    { weight: 1, arbitrary: fc.constant({ op: "gone" as const }) },
    { weight: 2, arbitrary: fc.constant({ op: "sync" as const }) },
  ),
  { minLength: 1, maxLength: 12 },
);

/** The lease a node object stands for (null: no lease), or undefined when unreadable. */
function leaseOf(obj: unknown) {
  const n = parseKubeNode(obj);
  if (typeof n === "string") return undefined;
  const l = nodeToLease(n, KEYS, CONFIG, "net-conf.json");
  return typeof l === "string" ? undefined : l;
}

Deno.test("fuzz the kube peer view + peer reducer: garbled nodes, noise lines and 410s never remove or change an installed peer (2 000 sequences)", async () => {
  let garbled = 0, relists = 0, noiseLines = 0;
  await fc.assert(
    fc.asyncProperty(ops, async (script) => {
      const server = new FakeNodeServer();
      const log = memoryLogger("warn");
      const closed = new AbortController();
      const shared: Shared = {
        api: server.api,
        log,
        clock: quickClock,
        random: () => 0.5,
        keys: KEYS,
        netConfigPath: "net-conf.json",
        pageSize: 500,
        closed: closed.signal,
        config: CONFIG,
        watchTimeoutSeconds: () => 60,
      };
      const view = new PeerView(shared, new NodeDecoder(shared));
      /**
       * Per node name, the last readable lease (encoded with its subnet). A
       * watch sees every change; a re-list after a 410 sees only the nodes
       * as they are then, so a node that is unreadable then may keep an
       * older readable lease or the latest one — never lose one it had.
       */
      const model = new Map<string, string>();
      /** Names whose stored node is unreadable now. */
      const unreadable = new Set<string>();
      /**
       * Per name, every readable lease written since the last catch-up: after a
       * 410 the view may have seen any of them last (the watch ends at the ERROR
       * line, so changes written after it reach the view only through the re-list).
       */
      const written = new Map<string, string[]>();
      let gone = false;
      /**
       * The model when the first 410 since the last catch-up was sent: the
       * view saw every change before it, so a node the model lacked then
       * (deleted, or readable but unmanaged) and that is unreadable at the
       * re-list may be absent — the readable versions between the 410 and
       * the re-list never reached the view (seed 659188592).
       */
      let modelAtGone: Map<string, string> | undefined;
      const describe = (l: NonNullable<ReturnType<typeof leaseOf>>) =>
        `${leaseKey(l)} ${encodeLeaseAttrs(l.attrs)}`;
      const apply = (name: string, obj: unknown) => {
        const l = leaseOf(obj);
        unreadable.delete(name);
        if (l === null) model.delete(name);
        else if (l !== undefined) {
          model.set(name, describe(l));
          written.set(name, [...written.get(name) ?? [], describe(l)]);
        } else unreadable.add(name);
      };
      /** Node i's lease is on 10.244.(i+1).0/24 (garbling never moves it): peers by node name. */
      const byName = (set: PeerSet) => {
        const out = new Map<string, string>();
        for (const [key, l] of set) {
          const i = Number(key.split(".")[2]) - 1;
          if (i !== 9) out.set(`node-${i}`, describe(l));
        }
        return out;
      };
      let previous = new Map<string, string>();
      for (let i = 0; i < NODES; i++) {
        apply(`node-${i}`, server.change("ADDED", `node-${i}`, node(i, 0)));
      }
      const snap = await view.list();
      let peers = reducePeers(PeerSet.EMPTY, undefined, [{ type: "snapshot", leases: snap.leases }])
        .peers;
      previous = byName(peers);
      const ac = new AbortController();
      const events = view.watch(snap.revision, ac.signal)[Symbol.asyncIterator]();
      let sync = 0;
      const catchUp = async () => {
        sync++;
        const marker = server.change("MODIFIED", "node-9", node(9, sync));
        const want = describe(leaseOf(marker)!);
        for (let i = 0;; i++) {
          assert.ok(i < 50, "the watch did not deliver the sentinel");
          const next = await nextWithin(events, 5000);
          assert.ok(!next.done, "the watch ended");
          const batch = next.value as LeaseEvent[];
          if (batch.some((e) => e.type === "snapshot")) relists++;
          peers = reducePeers(peers, undefined, batch).peers;
          const s = [...peers].find(([k]) => k === "10.244.10.0-24");
          if (s && describe(s[1]) === want) break;
        }
        const got = byName(peers);
        if (gone) {
          for (const name of unreadable) {
            const seen = got.get(name);
            const allowed = [previous.get(name), model.get(name), ...written.get(name) ?? []];
            if (!previous.has(name) || !modelAtGone?.has(name)) allowed.push(undefined);
            assert.ok(
              allowed.includes(seen),
              `unreadable ${name} shows ${seen}: expected one of ${allowed.join(" | ")}`,
            );
            if (seen === undefined) model.delete(name);
            else model.set(name, seen);
          }
          gone = false;
          modelAtGone = undefined;
        }
        assert.deepEqual(got, model);
        previous = got;
        written.clear();
      };
      try {
        for (const step of script) {
          const name = "node" in step ? `node-${step.node}` : "";
          if (step.op === "put") {
            const type = server.nodes.has(name) ? "MODIFIED" : "ADDED";
            apply(name, server.change(type, name, node(step.node, sync + 1)));
          } else if (step.op === "garble") {
            // podCIDRs are unique per node in a cluster: a garbled node that reads as
            // another node's subnet would be a collision, not garbage
            const l = leaseOf(stamped(name, step.object, 1));
            if (l && formatIPv4Net(l.subnet!) !== `10.244.${step.node + 1}.0/24`) continue;
            garbled++;
            apply(name, server.change("MODIFIED", name, step.object));
          } else if (step.op === "delete") {
            const obj = server.nodes.get(name);
            if (obj === undefined) continue;
            server.change("DELETED", name, obj);
            model.delete(name);
          } else if (step.op === "noise") {
            noiseLines++;
            server.line(step.line);
          } else if (step.op === "gone") {
            gone = true;
            modelAtGone ??= new Map(model);
            server.line(
              JSON.stringify({ type: "ERROR", object: { code: 410, message: "too old" } }),
            );
          } else {
            await catchUp();
          }
        }
        await catchUp();
      } finally {
        ac.abort();
        closed.abort();
        await events.return?.(undefined);
      }
      assertCleanLog(log.lines);
    }),
    {
      ...fuzzParameters(2_000),
      // seed 1974683423 (shrunk): a readable change, a 410, then the node garbled
      // twice — the view last saw the change before the 410, which the model allowed not
      examples: [[[
        { op: "sync" },
        { op: "put", node: 1 },
        { op: "gone" },
        { op: "garble", node: 1, object: node(1, 0) },
        { op: "garble", node: 1, object: "" },
      ]]],
    },
  );
  const runs = fuzzParameters(2_000).numRuns!;
  assert.ok(
    garbled > runs / 2 && relists > runs / 20 && noiseLines > runs / 4,
    `${garbled} garbled, ${relists} re-lists, ${noiseLines} noise lines`,
  );
});
