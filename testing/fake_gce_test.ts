import assert from "node:assert/strict";
import { createGceMetadata } from "../backends/cloud/gce/metadata.ts";
import { createComputeClients } from "../backends/cloud/gce/sdk.ts";
import { evaluateFilter, parseFilter } from "./fake_gce_filter.ts";
import { type FakeGce, startFakeGce } from "./fake_gce.ts";

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn });

/** The real client library pointed at the fake, with the metadata server's token. */
function clientsFor(fake: FakeGce, token?: string) {
  const md = createGceMetadata({ env: fake.env });
  const endpoint = new URL(fake.computeEndpoint);
  return createComputeClients({
    apiEndpoint: endpoint.hostname,
    port: Number(endpoint.port),
    protocol: "http",
    authClient: {
      getRequestHeaders: async () => new Headers({ authorization: `Bearer ${await md.token()}` }),
      async fetch(url: string, init: RequestInit & { validateStatus?: (s: number) => boolean }) {
        const headers = new Headers(init.headers);
        headers.set("authorization", `Bearer ${token ?? await md.token()}`);
        const res = await fetch(url, { method: init.method, headers, body: init.body });
        if (init.validateStatus && !init.validateStatus(res.status)) {
          const data = await res.text();
          throw Object.assign(new Error(data), { status: res.status, response: { data } });
        }
        return res;
      },
    },
  });
}

async function apiStatus(p: Promise<unknown>): Promise<{ status: number; message: string }> {
  try {
    await p;
  } catch (e) {
    const err = e as { httpStatusCode: number; message: string };
    return { status: err.httpStatusCode, message: err.message };
  }
  assert.fail("expected an API error");
}

Deno.test("the fake's filter: =, !=, eq/ne regex on the whole field, :*, AND/OR, invalid input", () => {
  const r = {
    name: "flannel-10-244-1-0-24",
    priority: 1000,
    network: "https://x/global/networks/default",
  };
  const yes = [
    "",
    "name = flannel-10-244-1-0-24",
    'network eq ".*/networks/default"',
    "name ne 'default-.*'",
    "(name eq flannel-.*) (priority = 1000)",
    "(name eq flannel-.*) AND (priority != 0)",
    "(name = nope) OR (priority = 1000)",
    "network:*",
  ];
  const no = [
    "name = flannel",
    'network eq "default"',
    "(name eq flannel-.*) (priority = 0)",
    "tags:*",
  ];
  for (const f of yes) assert.equal(evaluateFilter(parseFilter(f), r), true, f);
  for (const f of no) assert.equal(evaluateFilter(parseFilter(f), r), false, f);
  for (
    const bad of ["name", "name ~ x", "(a = 1) AND (b = 2) OR (c = 3)", "name = a b", "(name = x"]
  ) {
    assert.throws(() => parseFilter(bad), SyntaxError, bad);
  }
});

test("insert accepts partial and foreign-host links and stores canonical selfLinks", async () => {
  const fake = await startFakeGce();
  const c = clientsFor(fake);
  try {
    const p = fake.projectId;
    const forms: [string, string][] = [
      ["default", "zones/europe-west1-b/instances/node-1"],
      ["global/networks/default", `projects/${p}/zones/europe-west1-b/instances/node-1`],
      [`projects/${fake.projectNumber}/global/networks/default`, fake.instanceLink],
      [
        `https://compute.googleapis.com/compute/v1/projects/${p}/global/networks/default`,
        `https://compute.googleapis.com/compute/v1/projects/${p}/zones/europe-west1-b/instances/node-1`,
      ],
    ];
    for (const [i, [network, nextHopInstance]] of forms.entries()) {
      const name = `r-${i}`;
      const [op] = await c.routes.insert({
        project: p,
        routeResource: { name, network, nextHopInstance, destRange: `10.9.${i}.0/24` },
      });
      assert.equal(op.latestResponse.status, "PENDING");
      const [done] = await c.operations.wait({
        project: p,
        operation: String(op.latestResponse.name),
      });
      assert.equal(done.status, "DONE");
      const [route] = await c.routes.get({ project: p, route: name });
      assert.equal(route.network, fake.networkLink, network);
      assert.equal(route.nextHopInstance, fake.instanceLink, nextHopInstance);
      assert.equal(
        route.selfLink,
        `https://www.googleapis.com/compute/v1/projects/${p}/global/routes/${name}`,
      );
    }
  } finally {
    await c.close();
    await fake.close();
  }
});

test("list pages with maxResults and pageToken, filters, and refuses bad arguments with 400", async () => {
  const fake = await startFakeGce();
  const c = clientsFor(fake);
  try {
    const other = fake.addNetwork("other");
    for (let i = 0; i < 7; i++) {
      fake.addRoute({
        name: `route-${i}`,
        network: i < 5 ? fake.networkLink : other,
        destRange: `10.1.${i}.0/24`,
        nextHopInstance: fake.instanceLink,
      });
    }
    const seen: string[] = [];
    let pageToken: string | undefined;
    let pages = 0;
    const filter = 'network eq ".*/global/networks/default"';
    do {
      const [items, , raw] = await c.routes.list(
        { project: fake.projectId, filter, maxResults: 2, pageToken },
        { autoPaginate: false },
      );
      seen.push(...items.map((r) => String(r.name)));
      pageToken = raw.nextPageToken || undefined;
      pages++;
    } while (pageToken);
    assert.deepEqual(seen, ["route-0", "route-1", "route-2", "route-3", "route-4"]);
    assert.equal(pages, 3);
    assert.equal(fake.calls["routes.list"], 3);
    const bad = [
      c.routes.list({ project: fake.projectId, filter: "name ~ x" }, { autoPaginate: false }),
      c.routes.list({ project: fake.projectId, maxResults: 501 }, { autoPaginate: false }),
      c.routes.list({ project: fake.projectId, pageToken: "bogus" }, { autoPaginate: false }),
    ];
    for (const p of bad) {
      const e = await apiStatus(p);
      assert.equal(e.status, 400);
      assert.match(e.message, /^Invalid value for field '(filter|maxResults|pageToken)'/);
    }
  } finally {
    await c.close();
    await fake.close();
  }
});

test("operations go PENDING → RUNNING → DONE; busy and duplicate routes are refused", async () => {
  const fake = await startFakeGce({ waitTimeoutMs: 5 });
  const c = clientsFor(fake);
  try {
    const project = fake.projectId;
    fake.holdOperations(true);
    const routeResource = {
      name: "flannel-10-244-1-0-24",
      network: fake.networkLink,
      destRange: "10.244.1.0/24",
      nextHopInstance: fake.instanceLink,
    };
    const [op] = await c.routes.insert({ project, routeResource });
    const operation = String(op.latestResponse.name);
    assert.equal(op.latestResponse.status, "PENDING");
    let [w] = await c.operations.wait({ project, operation });
    assert.equal(w.status, "RUNNING", "wait answers before DONE once its time is up");
    assert.equal((await apiStatus(c.routes.insert({ project, routeResource }))).status, 409);
    assert.equal(
      (await apiStatus(c.routes.get({ project, route: routeResource.name }))).status,
      404,
    );
    fake.completeOperations();
    [w] = await c.operations.wait({ project, operation });
    assert.equal(w.status, "DONE");
    const [del] = await c.routes.delete({ project, route: routeResource.name });
    const busy = await apiStatus(c.routes.delete({ project, route: routeResource.name }));
    assert.equal(busy.status, 400);
    assert.match(busy.message, /is not ready/);
    fake.completeOperations();
    const [gone] = await c.operations.get({ project, operation: String(del.latestResponse.name) });
    assert.equal(gone.status, "DONE");
    const missing = await apiStatus(c.routes.delete({ project, route: routeResource.name }));
    assert.equal(missing.status, 404);
    assert.match(
      missing.message,
      /The resource 'projects\/weft-test\/global\/routes\/flannel-10-244-1-0-24' was not found/,
    );
  } finally {
    await c.close();
    await fake.close();
  }
});

test("a deleted instance leaves its routes with NEXT_HOP_INSTANCE_NOT_FOUND", async () => {
  const fake = await startFakeGce();
  const c = clientsFor(fake);
  try {
    const node2 = fake.addInstance("europe-west1-c", "node-2");
    fake.addRoute({
      name: "r",
      network: "default",
      destRange: "10.2.0.0/24",
      nextHopInstance: node2,
    });
    fake.deleteInstance(node2);
    const [route] = await c.routes.get({ project: fake.projectId, route: "r" });
    assert.equal(route.nextHopInstance, node2);
    assert.deepEqual(route.warnings?.map((w) => w.code), ["NEXT_HOP_INSTANCE_NOT_FOUND"]);
    const e = await apiStatus(c.routes.insert({
      project: fake.projectId,
      routeResource: {
        name: "r2",
        network: "default",
        destRange: "10.3.0.0/24",
        nextHopInstance: node2,
      },
    }));
    assert.equal(e.status, 404, "a route to a missing instance cannot be created");
  } finally {
    await c.close();
    await fake.close();
  }
});

test("an unknown token is 401; calls are counted per method", async () => {
  const fake = await startFakeGce();
  const c = clientsFor(fake, "ya29.not-issued");
  try {
    const e = await apiStatus(c.routes.list({ project: fake.projectId }, { autoPaginate: false }));
    assert.equal(e.status, 401);
    assert.equal(fake.calls["routes.list"], 1);
    fake.resetCalls();
    assert.deepEqual(fake.calls, {});
  } finally {
    await c.close();
    await fake.close();
  }
});

test("addVm() gives another VM its own metadata server over the same project and routes", async () => {
  const fake = await startFakeGce({ ip: "192.0.2.11" });
  try {
    const vm2 = await fake.addVm({ zone: "europe-west1-c", name: "node-2", ip: "192.0.2.12" });
    const [a, b] = [createGceMetadata({ env: fake.env }), createGceMetadata({ env: vm2.env })];
    assert.equal((await a.instance()).name, "node-1");
    const me2 = await b.instance();
    assert.deepEqual([me2.name, me2.zone], ["node-2", "europe-west1-c"]);
    assert.equal(await b.get("instance/network-interfaces/0/ip"), "192.0.2.12");
    assert.equal(fake.instanceIP(fake.instanceLink), "192.0.2.11");
    assert.equal(fake.instanceIP(vm2.instanceLink), "192.0.2.12");
    const c = clientsFor(fake);
    try {
      // a token of the second VM's metadata server is as good as the first's
      const token = await b.token();
      const c2 = clientsFor(fake, token);
      const [op] = await c2.routes.insert({
        project: fake.projectId,
        routeResource: {
          name: "r",
          network: "default",
          destRange: "10.2.0.0/24",
          nextHopInstance: vm2.instanceLink,
        },
      });
      await c2.operations.wait({
        project: fake.projectId,
        operation: String(op.latestResponse.name),
      });
      await c2.close();
      const [route] = await c.routes.get({ project: fake.projectId, route: "r" });
      assert.equal(route.nextHopInstance, vm2.instanceLink);
    } finally {
      await c.close();
    }
  } finally {
    await fake.close();
  }
});
