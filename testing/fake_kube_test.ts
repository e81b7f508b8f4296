import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createFetch } from "../core/runtime.ts";
import { systemExec } from "../core/exec.ts";
import { FakeClock } from "./fake_clock.ts";
import {
  createFakeKube,
  type FakeKube,
  jsonMergePatch,
  jsonPatch,
  makeTestCerts,
  strategicMergePatch,
  type WatchEvent,
  writeKubeconfig,
} from "./fake_kube.ts";

// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;

async function withKube(
  fn: (kube: FakeKube) => Promise<void>,
  options: Parameters<typeof createFakeKube>[0] = {},
) {
  const kube = await createFakeKube(options);
  try {
    await fn(kube);
  } finally {
    await kube.close();
  }
}

const req = (kube: FakeKube, path: string, init: RequestInit = {}) => kube.app.request(path, init);

const patch = (kube: FakeKube, path: string, type: string, body: unknown) =>
  req(kube, path, {
    method: "PATCH",
    headers: { "content-type": type },
    body: JSON.stringify(body),
  });

const SMP = "application/strategic-merge-patch+json";

/** Wait (up to 5 s) for a condition that follows an asynchronous event. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (const start = Date.now(); !cond();) {
    if (Date.now() - start > 5000) throw new Error(`timed out waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Read a watch stream until `n` events (or the stream ends). */
async function readEvents(res: Response, n: number, timeoutMs = 5000): Promise<WatchEvent[]> {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  const events: WatchEvent[] = [];
  let buf = "";
  const timer = setTimeout(() => reader.cancel(), timeoutMs);
  try {
    while (events.length < n) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      const lines = buf.split("\n");
      buf = lines.pop()!;
      for (const l of lines) if (l) events.push(JSON.parse(l));
    }
  } finally {
    clearTimeout(timer);
    await reader.cancel().catch(() => {});
  }
  return events;
}

Deno.test("strategicMergePatch() merges node fields the way the API server does", () => {
  const node = {
    metadata: { name: "n", annotations: { a: "1", b: "2" }, finalizers: ["x"] },
    spec: { podCIDRs: ["10.5.1.0/24"] },
    status: {
      conditions: [
        { type: "Ready", status: "True" },
        { type: "NetworkUnavailable", status: "True", reason: "NoRouteCreated" },
      ],
      images: [{ names: ["a"] }],
    },
  };
  const out = strategicMergePatch(node, {
    metadata: { annotations: { a: null, c: "3" }, finalizers: ["y"] },
    status: {
      conditions: [{ type: "NetworkUnavailable", status: "False", reason: "FlannelIsUp" }],
      "$setElementOrder/conditions": [{ type: "Ready" }, { type: "NetworkUnavailable" }],
      images: [{ names: ["b"] }],
    },
  }) as Obj;
  assert.deepEqual(out.metadata.annotations, { b: "2", c: "3" });
  assert.deepEqual(out.metadata.finalizers, ["x", "y"]);
  assert.deepEqual(out.status.conditions, [
    { type: "Ready", status: "True" },
    { type: "NetworkUnavailable", status: "False", reason: "FlannelIsUp" },
  ]);
  assert.deepEqual(out.status.images, [{ names: ["b"] }], "lists without a merge key are replaced");
  const deleted = strategicMergePatch(node, {
    status: { conditions: [{ type: "Ready", $patch: "delete" }] },
    metadata: { "$deleteFromPrimitiveList/finalizers": ["x"] },
  }) as Obj;
  assert.deepEqual(deleted.status.conditions.map((c: Obj) => c.type), ["NetworkUnavailable"]);
  assert.deepEqual(deleted.metadata.finalizers, []);
  const replaced = strategicMergePatch(node, {
    metadata: { annotations: { $patch: "replace", z: "9" } },
  }) as Obj;
  assert.deepEqual(replaced.metadata.annotations, { z: "9" });
});

Deno.test("jsonMergePatch() follows RFC 7386", () => {
  const table: [unknown, unknown, unknown][] = [
    [{ a: "b" }, { a: "c" }, { a: "c" }],
    [{ a: "b" }, { b: "c" }, { a: "b", b: "c" }],
    [{ a: "b" }, { a: null }, {}],
    [{ a: ["b"] }, { a: "c" }, { a: "c" }],
    [{ a: { b: "c" } }, { a: { b: "d", c: null } }, { a: { b: "d" } }],
    [{ a: [{ b: "c" }] }, { a: [1] }, { a: [1] }],
    [["a", "b"], ["c", "d"], ["c", "d"]],
  ];
  for (const [target, p, want] of table) {
    assert.deepEqual(jsonMergePatch(target, p), want, JSON.stringify([target, p]));
  }
});

Deno.test("jsonPatch() applies RFC 6902 operations and fails a false test", () => {
  const doc = { a: { b: [1, 2] }, "x/y": 1 };
  const out = jsonPatch(doc, [
    { op: "add", path: "/a/b/1", value: 9 },
    { op: "add", path: "/a/b/-", value: 3 },
    { op: "remove", path: "/x~1y" },
    { op: "add", path: "/a/c", value: 0 },
  ]) as Obj;
  assert.deepEqual(out, { a: { b: [1, 9, 2, 3], c: 0 } });
  assert.deepEqual(doc, { a: { b: [1, 2] }, "x/y": 1 }, "the input is not modified");
  assert.deepEqual(
    jsonPatch({ a: 1 }, [{ op: "move", from: "/a", path: "/b" }, {
      op: "copy",
      from: "/b",
      path: "/c",
    }]),
    { b: 1, c: 1 },
  );
  assert.throws(() => jsonPatch({ a: 1 }, [{ op: "test", path: "/a", value: 2 }]), /test failed/);
  assert.throws(
    () => jsonPatch({ a: 1 }, [{ op: "replace", path: "/nope", value: 2 }]),
    /does not exist/,
  );
});

Deno.test("fake lists nodes with the store's resourceVersion", async () => {
  await withKube(async (kube) => {
    kube.addNode("b", { podCIDRs: ["10.5.2.0/24"] });
    kube.addNode("a");
    const res = await req(kube, "/api/v1/nodes");
    const list = await res.json();
    assert.equal(list.kind, "NodeList");
    assert.equal(list.metadata.resourceVersion, String(kube.resourceVersion));
    assert.deepEqual(list.items.map((n: Obj) => n.metadata.name), ["a", "b"]);
    assert.equal(list.items[1].spec.podCIDR, "10.5.2.0/24");
    assert.deepEqual(list.items[1].spec.podCIDRs, ["10.5.2.0/24"]);
    const one = await (await req(kube, "/api/v1/nodes?fieldSelector=metadata.name%3Db")).json();
    assert.deepEqual(one.items.map((n: Obj) => n.metadata.name), ["b"]);
    const bad = await req(kube, "/api/v1/nodes?fieldSelector=spec.unschedulable%3Dtrue");
    assert.equal(bad.status, 400);
  });
});

Deno.test("fake pages a list over one consistent snapshot", async () => {
  await withKube(async (kube) => {
    for (let i = 0; i < 5; i++) kube.addNode(`n${i}`);
    const first = await (await req(kube, "/api/v1/nodes?limit=2")).json();
    assert.equal(first.items.length, 2);
    assert.equal(first.metadata.remainingItemCount, 3);
    const rv = first.metadata.resourceVersion;
    kube.addNode("n0a"); // sorts into the middle; must not appear in this list
    kube.deleteNode("n4");
    const names = first.items.map((n: Obj) => n.metadata.name);
    let cont = first.metadata.continue;
    while (cont) {
      const page =
        await (await req(kube, `/api/v1/nodes?limit=2&continue=${encodeURIComponent(cont)}`))
          .json();
      assert.equal(page.metadata.resourceVersion, rv, "every page is at the first page's revision");
      names.push(...page.items.map((n: Obj) => n.metadata.name));
      cont = page.metadata.continue;
    }
    assert.deepEqual(names, ["n0", "n1", "n2", "n3", "n4"]);
  });
});

Deno.test("fake answers 410 Gone to a continue token older than the compacted history", async () => {
  await withKube(async (kube) => {
    for (let i = 0; i < 3; i++) kube.addNode(`n${i}`);
    const first = await (await req(kube, "/api/v1/nodes?limit=1")).json();
    kube.compactHistory();
    const res = await req(
      kube,
      `/api/v1/nodes?limit=1&continue=${encodeURIComponent(first.metadata.continue)}`,
    );
    assert.equal(res.status, 410);
    const body = await res.json();
    assert.equal(body.kind, "Status");
    assert.equal(body.reason, "Expired");
    assert.match(body.message, /continue parameter is too old/);
  });
});

Deno.test("fake watch resumes after a resourceVersion and streams changes in order", async () => {
  await withKube(async (kube) => {
    kube.addNode("a");
    const rv = kube.resourceVersion;
    kube.setPodCIDR("a", ["10.5.1.0/24"]);
    kube.addNode("b");
    const res = await fetch(`${kube.url}/api/v1/nodes?watch=true&resourceVersion=${rv}`);
    assert.equal(res.headers.get("content-type"), "application/json");
    const pending = readEvents(res, 4);
    kube.deleteNode("b");
    kube.annotate("a", { x: "y" });
    const events = await pending;
    assert.deepEqual(events.map((e) => `${e.type} ${e.object.metadata.name}`), [
      "MODIFIED a",
      "ADDED b",
      "DELETED b",
      "MODIFIED a",
    ]);
    const rvs = events.map((e) => Number(e.object.metadata.resourceVersion));
    assert.deepEqual(rvs, [...rvs].sort((x, y) => x - y));
    assert.equal(events[0].object.kind, "Node");
    await until(() => kube.watchCount === 0, "the watch is gone once the client leaves");
  });
});

Deno.test("fake watch without a resourceVersion starts with the current nodes", async () => {
  await withKube(async (kube) => {
    kube.addNode("a");
    kube.addNode("b");
    const res = await fetch(`${kube.url}/api/v1/nodes?watch=1&fieldSelector=metadata.name%3Db`);
    const events = await readEvents(res, 1);
    assert.deepEqual(events.map((e) => `${e.type} ${e.object.metadata.name}`), ["ADDED b"]);
  });
});

Deno.test("fake watch from a compacted resourceVersion gets a 410 Expired ERROR event", async () => {
  await withKube(async (kube) => {
    kube.addNode("a");
    const old = kube.resourceVersion;
    kube.addNode("b");
    kube.compactHistory();
    const res = await fetch(`${kube.url}/api/v1/nodes?watch=true&resourceVersion=${old}`);
    assert.equal(res.status, 200, "the real server reports this inside the stream");
    const events = await readEvents(res, 2);
    assert.equal(events.length, 1, "the stream ends after the error");
    assert.equal(events[0].type, "ERROR");
    assert.equal(events[0].object.code, 410);
    assert.equal(events[0].object.reason, "Expired");
    const fresh = await fetch(
      `${kube.url}/api/v1/nodes?watch=true&resourceVersion=${kube.resourceVersion}`,
    );
    const later = readEvents(fresh, 1);
    kube.deleteNode("a");
    assert.equal((await later)[0].type, "DELETED", "the compacted revision itself is fine");
  });
});

Deno.test("fake sends bookmarks only to watches that allow them", async () => {
  await withKube(async (kube) => {
    kube.addNode("a");
    const rv = kube.resourceVersion;
    const withBm = await fetch(
      `${kube.url}/api/v1/nodes?watch=true&resourceVersion=${rv}&allowWatchBookmarks=true`,
    );
    const without = await fetch(`${kube.url}/api/v1/nodes?watch=true&resourceVersion=${rv}`);
    const a = readEvents(withBm, 2);
    const b = readEvents(without, 1);
    kube.sendBookmarks();
    kube.annotate("a", { k: "v" });
    const ea = await a;
    assert.deepEqual(ea.map((e) => e.type), ["BOOKMARK", "MODIFIED"]);
    assert.equal(ea[0].object.metadata.resourceVersion, String(rv));
    assert.deepEqual((await b).map((e) => e.type), ["MODIFIED"]);
  });
});

Deno.test("fake bookmark timer and server-side timeout run on the injected clock", async () => {
  const clock = new FakeClock(0);
  await withKube(async (kube) => {
    kube.addNode("a");
    const res = await req(
      kube,
      `/api/v1/nodes?watch=true&resourceVersion=${kube.resourceVersion}&allowWatchBookmarks=true&timeoutSeconds=1`,
    );
    const reading = readEvents(res, 100, 5000);
    await clock.advance(999);
    assert.equal(kube.watchCount, 1, "still open before timeoutSeconds");
    await clock.advance(1);
    const events = await reading;
    assert.deepEqual(
      events.map((e) => `${e.type} ${e.object.metadata.resourceVersion}`),
      Array(4).fill(`BOOKMARK ${kube.resourceVersion}`),
      "a bookmark every 200 ms until the timeout at 1 s",
    );
    assert.equal(kube.watchCount, 0);
    assert.equal(clock.pending, 0, "no timer left behind");
  }, { bookmarkIntervalMs: 200, clock });
});

Deno.test("fake breakWatches() ends streams, abruptly mid-event when asked", async () => {
  await withKube(async (kube) => {
    kube.addNode("a");
    const res = await fetch(
      `${kube.url}/api/v1/nodes?watch=true&resourceVersion=${kube.resourceVersion}`,
    );
    await until(() => kube.watchCount === 1, "the watch is registered");
    assert.equal(kube.watchCount, 1);
    kube.breakWatches({ abrupt: true });
    const text = await res.text();
    assert.ok(text.length > 0 && !text.endsWith("\n"), "a half-sent event");
    assert.throws(() => JSON.parse(text));
    await until(() => kube.watchCount === 0, "no watch left");
  });
});

Deno.test("fake PUT with a stale resourceVersion is a 409 Conflict", async () => {
  await withKube(async (kube) => {
    const node = kube.addNode("a");
    const put = (body: unknown) =>
      req(kube, "/api/v1/nodes/a", { method: "PUT", body: JSON.stringify(body) });
    const ok = await put({ ...node, metadata: { ...node.metadata, labels: { x: "1" } } });
    assert.equal(ok.status, 200);
    const updated = await ok.json();
    assert.ok(Number(updated.metadata.resourceVersion) > Number(node.metadata.resourceVersion));
    const stale = await put({ ...node, metadata: { ...node.metadata, labels: { x: "2" } } });
    assert.equal(stale.status, 409);
    const status = await stale.json();
    assert.equal(status.reason, "Conflict");
    assert.match(status.message, /the object has been modified/);
    assert.equal(kube.getNode("a")!.metadata.labels.x, "1");
  });
});

Deno.test("fake status subresource keeps spec, main resource keeps status", async () => {
  await withKube(async (kube) => {
    kube.addNode("a", { podCIDRs: ["10.5.1.0/24"] });
    const s = await patch(kube, "/api/v1/nodes/a/status", SMP, {
      spec: { unschedulable: true },
      metadata: { annotations: { k: "v" } },
      status: { conditions: [{ type: "NetworkUnavailable", status: "False" }] },
    });
    assert.equal(s.status, 200);
    let n = kube.getNode("a")!;
    assert.equal(n.spec.unschedulable, undefined, "spec changes are dropped on /status");
    assert.equal(n.metadata.annotations.k, "v", "metadata changes pass on /status");
    assert.equal(n.status.conditions[0].status, "False");
    const m = await patch(kube, "/api/v1/nodes/a", SMP, {
      spec: { unschedulable: true },
      status: { conditions: [] },
    });
    assert.equal(m.status, 200);
    n = kube.getNode("a")!;
    assert.equal(n.spec.unschedulable, true);
    assert.equal(n.status.conditions.length, 1, "status changes are dropped on the main resource");
  });
});

Deno.test("fake PATCH content types: merge patch, JSON patch, unknown", async () => {
  await withKube(async (kube) => {
    kube.addNode("a");
    await patch(kube, "/api/v1/nodes/a/status", SMP, {
      status: { conditions: [{ type: "Ready", status: "True" }] },
    });
    const merge = await patch(kube, "/api/v1/nodes/a/status", "application/merge-patch+json", {
      status: { conditions: [{ type: "NetworkUnavailable", status: "False" }] },
    });
    assert.equal(merge.status, 200);
    assert.deepEqual(
      kube.getNode("a")!.status.conditions.map((c: Obj) => c.type),
      ["NetworkUnavailable"],
      "a merge patch replaces lists",
    );
    const jp = await patch(kube, "/api/v1/nodes/a", "application/json-patch+json", [
      { op: "add", path: "/metadata/labels/zone", value: "z1" },
    ]);
    assert.equal(jp.status, 200);
    assert.equal(kube.getNode("a")!.metadata.labels.zone, "z1");
    const failed = await patch(kube, "/api/v1/nodes/a", "application/json-patch+json", [
      { op: "test", path: "/metadata/labels/zone", value: "z2" },
    ]);
    assert.equal(failed.status, 422);
    const unknown = await patch(kube, "/api/v1/nodes/a", "application/json", {});
    assert.equal(unknown.status, 415);
    const rv = kube.resourceVersion;
    const noop = await patch(kube, "/api/v1/nodes/a", SMP, {
      metadata: { labels: { zone: "z1" } },
    });
    assert.equal(noop.status, 200);
    assert.equal(kube.resourceVersion, rv, "a patch that changes nothing writes nothing");
  });
});

Deno.test("fake PATCH with a stale resourceVersion precondition is a 409", async () => {
  await withKube(async (kube) => {
    const n = kube.addNode("a");
    kube.annotate("a", { x: "1" });
    const res = await patch(kube, "/api/v1/nodes/a", SMP, {
      metadata: { resourceVersion: n.metadata.resourceVersion, labels: { y: "2" } },
    });
    assert.equal(res.status, 409);
  });
});

Deno.test("fake refuses to change a set podCIDR through the API, as the node strategy does", async () => {
  await withKube(async (kube) => {
    kube.addNode("a");
    const set = await patch(kube, "/api/v1/nodes/a", SMP, { spec: { podCIDR: "10.5.1.0/24" } });
    assert.equal(set.status, 200);
    assert.deepEqual(kube.getNode("a")!.spec.podCIDRs, ["10.5.1.0/24"], "podCIDRs defaulted");
    const change = await patch(kube, "/api/v1/nodes/a", "application/merge-patch+json", {
      spec: { podCIDR: "10.5.2.0/24", podCIDRs: ["10.5.2.0/24"] },
    });
    assert.equal(change.status, 422);
    assert.match((await change.json()).message, /may not change podCIDR/);
    kube.setPodCIDR("a", ["10.5.1.0/24", "10.5.2.0/24"]);
    assert.deepEqual(kube.getNode("a")!.spec.podCIDRs, ["10.5.1.0/24", "10.5.2.0/24"]);
  });
});

Deno.test("fake creates, gets and deletes nodes with Status errors", async () => {
  await withKube(async (kube) => {
    const create = () =>
      req(kube, "/api/v1/nodes", {
        method: "POST",
        body: JSON.stringify({ metadata: { name: "c" }, spec: { podCIDR: "10.5.3.0/24" } }),
      });
    const made = await create();
    assert.equal(made.status, 201);
    assert.deepEqual((await made.json()).spec.podCIDRs, ["10.5.3.0/24"]);
    assert.equal((await create()).status, 409);
    assert.equal((await req(kube, "/api/v1/nodes/c")).status, 200);
    assert.equal((await req(kube, "/api/v1/nodes/c", { method: "DELETE" })).status, 200);
    const gone = await req(kube, "/api/v1/nodes/c");
    assert.equal(gone.status, 404);
    const status = await gone.json();
    assert.deepEqual([status.kind, status.reason, status.code], ["Status", "NotFound", 404]);
    assert.equal((await req(kube, "/api/v1/namespaces/x/pods/p")).status, 404);
    kube.addPod("kube-flannel", "weft-abc", "c");
    const pod = await (await req(kube, "/api/v1/namespaces/kube-flannel/pods/weft-abc")).json();
    assert.equal(pod.spec.nodeName, "c");
  });
});

Deno.test("fake requires the bearer token when one is set", async () => {
  await withKube(async (kube) => {
    const none = await req(kube, "/api/v1/nodes");
    assert.equal(none.status, 401);
    assert.equal((await none.json()).reason, "Unauthorized");
    const wrong = await req(kube, "/api/v1/nodes", { headers: { authorization: "Bearer nope" } });
    assert.equal(wrong.status, 401);
    const right = await req(kube, "/api/v1/nodes", { headers: { authorization: "Bearer s3cret" } });
    assert.equal(right.status, 200);
  }, { token: "s3cret" });
});

Deno.test("fake accepts basic auth when configured and a rotated token only after setToken", async () => {
  await withKube(async (kube) => {
    const as = (authorization: string) =>
      req(kube, "/api/v1/nodes", { headers: { authorization } });
    assert.equal((await as(`Basic ${btoa("admin:pw")}`)).status, 200);
    assert.equal((await as(`Basic ${btoa("admin:wrong")}`)).status, 401);
    assert.equal((await req(kube, "/api/v1/nodes")).status, 401);
    assert.equal((await as("Bearer t1")).status, 200);
    kube.setToken("t2");
    assert.equal((await as("Bearer t1")).status, 401);
    assert.equal((await as("Bearer t2")).status, 200);
  }, { token: "t1", basicAuth: { username: "admin", password: "pw" } });
});

Deno.test("fake injects failures for the matching requests only", async () => {
  await withKube(async (kube) => {
    kube.addNode("a");
    kube.injectFailure({ method: "PATCH", path: /\/status$/, status: 503, times: 2 });
    const p = () =>
      patch(kube, "/api/v1/nodes/a/status", SMP, { metadata: { labels: { a: "b" } } });
    assert.equal((await req(kube, "/api/v1/nodes/a")).status, 200);
    assert.equal((await p()).status, 503);
    assert.equal((await p()).status, 503);
    assert.equal((await p()).status, 200);
    assert.deepEqual(kube.requests.map((r) => r.status), [200, 503, 503, 200]);
  });
});

Deno.test("fake serves the real @kubernetes/client-node with its own transport", async () => {
  // Plain http: client-node's undici transport negotiates HTTP/2 over TLS,
  // which crashes Deno 2.9 (nghttp2 assertion) when the server shuts down.
  // TLS is covered through the kube store, which uses the runtime's fetch.
  const dir = mkdtempSync(join(tmpdir(), "weft-fake-kube-"));
  const kube = await createFakeKube({ token: "t0k" });
  try {
    kube.addNode("n1", { podCIDRs: ["10.5.1.0/24"] });
    const k8s = await import("@kubernetes/client-node");
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(writeKubeconfig(dir, kube, { token: "t0k" }));
    const api = kc.makeApiClient(k8s.CoreV1Api);
    const list = await api.listNode();
    assert.deepEqual(list.items.map((n) => n.spec?.podCIDRs), [["10.5.1.0/24"]]);
    const seen: string[] = [];
    const watch = new k8s.Watch(kc);
    const ctl = await watch.watch(
      "/api/v1/nodes",
      { resourceVersion: list.metadata?.resourceVersion, allowWatchBookmarks: true },
      (type: string) => seen.push(type),
      () => {},
    );
    const patched = await api.patchNodeStatus(
      { name: "n1", body: { metadata: { annotations: { k: "v" } } } },
      k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.StrategicMergePatch),
    );
    assert.equal(patched.metadata?.annotations?.k, "v");
    kube.sendBookmarks();
    await until(() => seen.length >= 2, "the watch saw the patch and a bookmark");
    assert.deepEqual(seen, ["MODIFIED", "BOOKMARK"]);
    ctl.abort();
    await assert.rejects(
      () => api.readNode({ name: "missing" }),
      (e: { code?: number }) => e.code === 404,
    );
  } finally {
    await kube.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("fake serves HTTPS with the given certificate", async () => {
  const { ca, cert, key } = makeTestCerts();
  await withKube(async (kube) => {
    assert.ok(kube.url.startsWith("https://"));
    const res = await createFetch({ ca })(`${kube.url}/api/v1/nodes`, {
      headers: { authorization: "Bearer t" },
    });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).kind, "NodeList");
  }, { tls: { cert, key }, token: "t" });
});

Deno.test("fake keeps its data and port across restart()", async () => {
  await withKube(async (kube) => {
    kube.addNode("a");
    const rv = kube.resourceVersion;
    await kube.restart();
    const list = await (await fetch(`${kube.url}/api/v1/nodes`)).json();
    assert.deepEqual(list.items.map((n: Obj) => n.metadata.name), ["a"]);
    assert.equal(list.metadata.resourceVersion, String(rv));
  });
});

Deno.test("fake serves the discovery documents client-go reads first", async () => {
  await withKube(async (kube) => {
    const api = await (await req(kube, "/api")).json();
    assert.equal(api.kind, "APIVersions");
    assert.deepEqual(api.versions, ["v1"]);
    assert.equal((await (await req(kube, "/apis")).json()).kind, "APIGroupList");
    const v1 = await (await req(kube, "/api/v1")).json();
    assert.equal(v1.groupVersion, "v1");
    const nodes = v1.resources.find((r: Obj) => r.name === "nodes");
    assert.deepEqual([nodes.kind, nodes.namespaced, nodes.shortNames], ["Node", false, ["no"]]);
    assert.ok(v1.resources.some((r: Obj) => r.name === "nodes/status"));
    assert.equal((await (await req(kube, "/version")).json()).major, "1");
  });
});

Deno.test("fake answers the real kubectl (client-go): create, get, annotate, patch, delete", async () => {
  const dir = mkdtempSync(join(tmpdir(), "weft-kubectl-"));
  // client-go sends credentials only over TLS: this fake runs without a token
  await withKube(async (kube) => {
    const kubeconfig = writeKubeconfig(dir, kube);
    const kubectl = async (args: string[], input?: string) => {
      const r = await systemExec(
        "kubectl",
        ["--kubeconfig", kubeconfig, "--cache-dir", join(dir, "cache"), ...args],
        { input },
      );
      if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
      return r.stdout.trim();
    };
    const node = {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: "n1", annotations: { "example.com/a": "1" } },
      spec: {},
    };
    assert.equal(
      await kubectl(["create", "--validate=false", "-f", "-"], JSON.stringify(node)),
      "node/n1 created",
    );
    assert.equal(await kubectl(["annotate", "node", "n1", "example.com/b=2"]), "node/n1 annotated");
    assert.equal(
      await kubectl(["patch", "node", "n1", "-p", '{"spec":{"podCIDR":"10.244.1.0/24"}}']),
      "node/n1 patched",
    );
    const got = JSON.parse(await kubectl(["get", "node", "n1", "-o", "json"]));
    assert.deepEqual(got.metadata.annotations, { "example.com/a": "1", "example.com/b": "2" });
    assert.deepEqual(got.spec, { podCIDR: "10.244.1.0/24", podCIDRs: ["10.244.1.0/24"] });
    assert.deepEqual(got, { kind: "Node", apiVersion: "v1", ...kube.getNode("n1") });
    assert.equal(await kubectl(["delete", "node", "n1"]), 'node "n1" deleted');
    assert.deepEqual(kube.nodeNames(), []);
    const kinds = kube.requests.map((r) => `${r.method} ${r.url.split("?")[0]} ${r.status}`);
    assert.ok(kinds.includes("PATCH /api/v1/nodes/n1 200"), kinds.join("\n"));
    assert.ok(kinds.includes("DELETE /api/v1/nodes/n1 200"), kinds.join("\n"));
  });
  rmSync(dir, { recursive: true, force: true });
});
