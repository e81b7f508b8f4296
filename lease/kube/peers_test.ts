import assert from "node:assert/strict";
import { NodeDecoder, PeerView, type Shared } from "./peers.ts";
import { annotationKeys, DEFAULT_ANNOTATION_PREFIX } from "./node.ts";
import { parseNetworkConfig } from "../config.ts";
import type { LeaseEvent } from "../types.ts";
import { formatIPv4Net } from "../../core/ip.ts";
import { memoryLogger } from "../../testing/memory_logger.ts";
import { FakeNodeServer, nextWithin, quickClock } from "../../testing/fake_node_api.ts";
import { waitFor } from "../../testing/wait.ts";

const A = `${DEFAULT_ANNOTATION_PREFIX}/`;

function node(i: number): Record<string, unknown> {
  return {
    metadata: {
      name: `node-${i}`,
      annotations: {
        [A + "kube-subnet-manager"]: "true",
        [A + "backend-type"]: "host-gw",
        [A + "public-ip"]: `192.0.2.${i + 1}`,
      },
    },
    spec: { podCIDR: `10.244.${i + 1}.0/24` },
  };
}

function setUp() {
  const server = new FakeNodeServer();
  const log = memoryLogger("warn");
  const closed = new AbortController();
  const shared: Shared = {
    api: server.api,
    log,
    clock: quickClock,
    random: () => 0.5,
    keys: annotationKeys(),
    netConfigPath: "net-conf.json",
    pageSize: 500,
    closed: closed.signal,
    config: parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}'),
    watchTimeoutSeconds: () => 60,
  };
  return { server, log, closed, view: new PeerView(shared, new NodeDecoder(shared)) };
}

const subnets = (batch: LeaseEvent[]) =>
  batch.map((e) =>
    e.type === "snapshot"
      ? `snapshot ${e.leases.map((l) => formatIPv4Net(l.subnet!)).join(",")}`
      : `${e.type} ${formatIPv4Net(e.lease.subnet!)}`
  );

// Found by lease/kube/peers_fuzz_test.ts (counterexample: a 410 on the watch, node-0
// garbled to `0` before the re-list): the re-list left node-0 out, so the agent
// removed its routes.
Deno.test("PeerView: a node garbled before a re-list keeps its last readable lease in the snapshot", async () => {
  const { server, closed, view } = setUp();
  server.change("ADDED", "node-0", node(0));
  server.change("ADDED", "node-1", node(1));
  const snap = await view.list();
  const ac = new AbortController();
  const events = view.watch(snap.revision, ac.signal)[Symbol.asyncIterator]();
  try {
    const first = nextWithin(events, 5000);
    await waitFor("the watch stream to open", () => server.watching ? null : "not yet");
    server.line(JSON.stringify({ type: "ERROR", object: { code: 410, message: "too old" } }));
    server.change("MODIFIED", "node-0", 0);
    const batch = (await first).value as LeaseEvent[];
    assert.deepEqual(subnets(batch), ["snapshot 10.244.1.0/24,10.244.2.0/24"]);
    // deleted for real: gone from the next re-list
    server.change("DELETED", "node-0", 0);
    const after: string[] = [];
    let next = nextWithin(events, 5000);
    after.push(...subnets((await next).value as LeaseEvent[]));
    next = nextWithin(events, 5000);
    await waitFor("the watch stream to open again", () => server.watching ? null : "not yet");
    server.line(JSON.stringify({ type: "ERROR", object: { code: 410, message: "too old" } }));
    after.push(...subnets((await next).value as LeaseEvent[]));
    assert.deepEqual(after, ["removed 10.244.1.0/24", "snapshot 10.244.2.0/24"]);
  } finally {
    ac.abort();
    closed.abort();
    await events.return?.(undefined);
  }
});

// Found by the same fuzz test (counterexample: the line `null` on the watch): the
// event handler read `null.object`, failed the stream with a TypeError and reconnected.
Deno.test("PeerView: a watch line that is not an event is skipped with a warning", async () => {
  const { server, log, closed, view } = setUp();
  server.change("ADDED", "node-0", node(0));
  const snap = await view.list();
  const ac = new AbortController();
  const events = view.watch(snap.revision, ac.signal)[Symbol.asyncIterator]();
  try {
    const first = nextWithin(events, 5000);
    await waitFor("the watch stream to open", () => server.watching ? null : "not yet");
    for (const line of ["null", "7", '"x"', "[]", '{"object":{}}']) server.line(line);
    server.change("ADDED", "node-1", node(1));
    const batch = (await first).value as LeaseEvent[];
    assert.deepEqual(subnets(batch), ["added 10.244.2.0/24"]);
    assert.equal(log.lines.filter((l) => /not an event/.test(l)).length, 5, log.lines.join("\n"));
    assert.ok(!log.lines.some((l) => /reconnecting|Cannot read/.test(l)), log.lines.join("\n"));
  } finally {
    ac.abort();
    closed.abort();
    await events.return?.(undefined);
  }
});
