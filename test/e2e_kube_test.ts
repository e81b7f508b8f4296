/**
 * End to end in Kubernetes mode: real agents (`mod.ts --kube-subnet-mgr`,
 * under Deno and one under Bun) in lab hosts, the vxlan backend in the
 * kernel, and the fake API server running inside the lab (testing/fake_kube_main.ts)
 * acting as the cluster. Kernel state is read with `ip -j` / `bridge -j` in
 * each host namespace and compared with what the API's Node objects say.
 * The first test drives the fake with the real `kubectl` (client-go: create,
 * patch podCIDR, annotate, delete, `get -o json`), so the fake is checked
 * against client-go's view of the API, not only against weft's.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import type { PodAttachment } from "../cli/attach.ts";
import { type LabKube, startLabKube } from "../testing/fake_kube_main.ts";
import { type AgentProcess, type AgentRuntime, startAgent } from "./lab/agents.ts";
import { createLab, type Lab, type LabHost } from "./lab/lab.ts";
import { waitFor } from "../testing/wait.ts";

const PREFIX = "wku";
const A = "flannel.alpha.coreos.com/";
const NETWORK = "10.244.0.0/16";
const HEALTHZ_PORT = 10256;

// deno-lint-ignore no-explicit-any
type Node = Record<string, any>;

/** The peer entries one host's flannel.1 holds, as sorted strings. */
interface PeerState {
  routes: string[];
  neighbours: string[];
  fdb: string[];
}

function writeNetConf(lab: Lab): string {
  const file = path.join(lab.dir, "net-conf.json");
  fs.writeFileSync(file, JSON.stringify({ Network: NETWORK, Backend: { Type: "vxlan" } }));
  return file;
}

function kubeAgent(
  lab: Lab,
  kube: LabKube,
  netConf: string,
  host: LabHost,
  runtime: AgentRuntime,
  extra: string[] = [],
): AgentProcess {
  return startAgent(lab, host, {
    runtime,
    args: [
      "--kube-subnet-mgr",
      "--kubeconfig-file",
      kube.kubeconfig,
      "--net-config-path",
      netConf,
      ...extra,
    ],
    env: { NODE_NAME: host.ns },
  });
}

/** Read the peer routes, neighbours and fdb entries of flannel.1 in a host. */
async function kernelPeers(lab: Lab, ns: string): Promise<PeerState> {
  const json = async (cmd: string[]) => {
    const r = await lab.exec(ns, cmd);
    if (r.code !== 0) throw new Error(`${cmd.join(" ")} in ${ns} failed: ${r.stderr.trim()}`);
    return JSON.parse(r.stdout || "[]") as Node[];
  };
  const routes = await json(["ip", "-j", "route", "show", "dev", "flannel.1"]);
  const neigh = await json(["ip", "-j", "neigh", "show", "dev", "flannel.1"]);
  const fdb = await json(["bridge", "-j", "fdb", "show", "dev", "flannel.1"]);
  return {
    routes: routes.map((r) => `${r.dst} via ${r.gateway} ${(r.flags ?? []).join(",")}`).sort(),
    neighbours: neigh.map((n) => `${n.dst} ${n.lladdr} ${(n.state ?? []).join(",")}`).sort(),
    fdb: fdb.map((f) => `${f.mac} ${f.dst} ${f.state ?? ""}`).sort(),
  };
}

/** What a host's flannel.1 must hold for the nodes the API has (all but its own). */
function expectedPeers(nodes: Node[], self: string): PeerState {
  const out: PeerState = { routes: [], neighbours: [], fdb: [] };
  for (const n of nodes) {
    const ann = n.metadata.annotations ?? {};
    const cidr: string | undefined = n.spec?.podCIDRs?.[0];
    if (n.metadata.name === self || !cidr || ann[A + "kube-subnet-manager"] !== "true") continue;
    if (ann[A + "backend-type"] !== "vxlan") continue;
    const mac: string = JSON.parse(ann[A + "backend-data"]).VtepMAC;
    const gw = cidr.split("/")[0];
    out.routes.push(`${cidr} via ${gw} onlink`);
    out.neighbours.push(`${gw} ${mac} PERMANENT`);
    out.fdb.push(`${mac} ${ann[A + "public-ip"]} permanent`);
  }
  out.routes.sort();
  out.neighbours.sort();
  out.fdb.sort();
  return out;
}

async function allNodes(kube: LabKube): Promise<Node[]> {
  const names: string[] = await kube.call("nodeNames");
  return await kube.control(names.map((n) => ({ op: "getNode", args: [n] }))) as Node[];
}

/** Every node as kubectl (client-go) reads it: `kubectl get nodes -o json`. */
async function kubectlNodes(kube: LabKube): Promise<Node[]> {
  const list = JSON.parse(await kube.kubectl(["get", "nodes", "-o", "json"]));
  assert.equal(list.kind, "List", "kubectl's list of nodes");
  return (list.items as Node[]).sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
}

/** `kubectl annotate --overwrite`: returns kubectl's output. */
function kubeAnnotate(kube: LabKube, name: string, ann: Record<string, string>): Promise<string> {
  return kube.kubectl([
    "annotate",
    "--overwrite",
    "node",
    name,
    ...Object.entries(ann).map(([k, v]) => `${k}=${v}`),
  ]);
}

/** `kubectl create` a Node (no client-side schema download: the fake serves no OpenAPI). */
async function kubectlCreateNode(
  kube: LabKube,
  name: string,
  o: { podCIDR?: string; internalIP?: string; annotations?: Record<string, string> } = {},
): Promise<void> {
  const node = {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name, annotations: o.annotations ?? {} },
    spec: o.podCIDR ? { podCIDR: o.podCIDR, podCIDRs: [o.podCIDR] } : {},
    status: { addresses: o.internalIP ? [{ type: "InternalIP", address: o.internalIP }] : [] },
  };
  const out = await kube.kubectl(["create", "--validate=false", "-f", "-"], JSON.stringify(node));
  assert.equal(out.trim(), `node/${name} created`);
}

/**
 * Poll `probe` until it returns `true` (else what is still wrong); an error
 * it throws counts as "not yet" (a device or the API not up yet). On
 * timeout fail with its last detail.
 */
async function eventually(
  what: string,
  probe: () => Promise<true | string>,
  timeoutMs = 30_000,
): Promise<void> {
  await waitFor(
    what,
    async () => {
      try {
        const r = await probe();
        return r === true ? null : r;
      } catch (e) {
        return (e as Error).message;
      }
    },
    timeoutMs,
    200,
  );
}

/** Wait until every listed host's flannel.1 matches the API's nodes exactly. */
async function datapathMatchesApi(
  lab: Lab,
  kube: LabKube,
  hosts: readonly LabHost[],
  timeoutMs = 30_000,
): Promise<Node[]> {
  let nodes: Node[] = [];
  await eventually("every host's vxlan peers match the API's nodes", async () => {
    nodes = await allNodes(kube);
    const wrong: string[] = [];
    for (const h of hosts) {
      const want = expectedPeers(nodes, h.ns);
      const got = await kernelPeers(lab, h.ns);
      if (JSON.stringify(got) !== JSON.stringify(want)) {
        wrong.push(`${h.ns}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
      }
    }
    return wrong.length ? wrong.join("\n") : true;
  }, timeoutMs);
  return nodes;
}

async function mapLimit<T, R>(xs: readonly T[], limit: number, f: (x: T) => Promise<R>) {
  const out: R[] = new Array(xs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, xs.length) }, async () => {
      while (next < xs.length) {
        const i = next++;
        out[i] = await f(xs[i]);
      }
    }),
  );
  return out;
}

/** Ping every `to` pod from every `from` pod (not itself); returns the pairs that failed. */
async function failedPings(
  lab: Lab,
  from: readonly PodAttachment[],
  to: readonly PodAttachment[],
): Promise<string[]> {
  const pairs = from.flatMap((a) => to.filter((b) => b !== a).map((b) => [a, b] as const));
  const ok = await mapLimit(
    pairs,
    6,
    ([a, b]) => lab.ping(path.basename(a.netns), b.ip, { count: 3, timeoutSeconds: 2 }),
  );
  return pairs.filter((_, i) => !ok[i]).map(([a, b]) => `${path.basename(a.netns)} → ${b.ip}`);
}

/** GET a status endpoint of an agent from inside its namespace: [HTTP code, body]. */
async function statusGet(lab: Lab, ns: string, urlPath: string): Promise<[number, string]> {
  const r = await lab.exec(ns, [
    "curl",
    "-s",
    "--max-time",
    "5",
    "-w",
    "\n%{http_code}",
    `http://127.0.0.1:${HEALTHZ_PORT}${urlPath}`,
  ]);
  const i = r.stdout.lastIndexOf("\n");
  return [Number(r.stdout.slice(i + 1)), r.stdout.slice(0, i)];
}

/** Assert a node carries flannel's annotations and condition for this host's agent. */
async function assertFlannelNode(lab: Lab, node: Node, host: LabHost): Promise<void> {
  const ann = node.metadata.annotations;
  assert.equal(ann[A + "kube-subnet-manager"], "true");
  assert.equal(ann[A + "backend-type"], "vxlan");
  assert.equal(ann[A + "public-ip"], host.ip);
  assert.match(ann[A + "backend-data"], /^\{"VNI":1,"VtepMAC":"(?:[0-9a-f]{2}:){5}[0-9a-f]{2}"\}$/);
  const [link] = JSON.parse(await lab.run(host.ns, "ip -d -j link show flannel.1"));
  assert.equal(JSON.parse(ann[A + "backend-data"]).VtepMAC, link.address, "VtepMAC is flannel.1's");
  assert.equal(link.mtu, 1450);
  assert.equal(link.linkinfo.info_kind, "vxlan");
  assert.equal(link.linkinfo.info_data.id, 1);
  assert.equal(link.linkinfo.info_data.port, 8472);
  const cond = (node.status?.conditions ?? []).find((c: Node) => c.type === "NetworkUnavailable");
  assert.ok(cond, `node ${host.ns} has no NetworkUnavailable condition`);
  assert.equal(cond.status, "False");
  assert.equal(cond.reason, "FlannelIsUp");
}

Deno.test(
  "kube mode: three vxlan hosts' pods all ping; a node without podCIDR waits with /readyz saying why, joins when assigned and is reachable; a deleted node leaves every peer's datapath",
  async () => {
    const lab = await createLab({ prefix: PREFIX, hosts: 4, podsPerHost: 2 });
    try {
      const [h1, h2, h3, h4] = lab.hosts;
      const kube = await startLabKube(lab);
      const netConf = writeNetConf(lab);
      for (const h of [h1, h2, h3]) {
        await kubectlCreateNode(kube, h.ns, {
          podCIDR: `10.244.${h.index}.0/24`,
          internalIP: h.ip,
        });
      }
      const runtimes: AgentRuntime[] = ["deno", "bun", "deno"];
      const agents = [h1, h2, h3].map((h, i) => kubeAgent(lab, kube, netConf, h, runtimes[i]));
      const subnets = await Promise.all(agents.map((a) => a.waitReady(60_000)));
      assert.deepEqual(subnets, ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]);

      // the annotations and the node condition are flannel's
      await eventually("NetworkUnavailable=False on every node", async () => {
        const nodes = await allNodes(kube);
        const missing = nodes.filter((n) =>
          !(n.status?.conditions ?? []).some((c: Node) => c.type === "NetworkUnavailable")
        );
        return missing.length ? `not yet on ${missing.map((n) => n.metadata.name)}` : true;
      });
      await datapathMatchesApi(lab, kube, [h1, h2, h3]);
      // what the agents wrote, as client-go reads it back
      const nodes = await kubectlNodes(kube);
      assert.deepEqual(nodes.map((n) => n.metadata.name), [h1.ns, h2.ns, h3.ns]);
      for (const h of [h1, h2, h3]) {
        await assertFlannelNode(lab, nodes.find((n) => n.metadata.name === h.ns)!, h);
      }

      // a flannel host without an agent here, created, re-annotated and deleted with kubectl
      const other = {
        podCIDR: "10.244.100.0/24",
        annotations: {
          [A + "kube-subnet-manager"]: "true",
          [A + "backend-type"]: "vxlan",
          [A + "backend-data"]: '{"VNI":1,"VtepMAC":"0e:00:00:00:01:00"}',
          [A + "public-ip"]: "192.0.2.100",
        },
      };
      await kubectlCreateNode(kube, "other-1", other);
      await datapathMatchesApi(lab, kube, [h1, h2, h3]);
      assert.equal(
        (await kubeAnnotate(kube, "other-1", {
          [A + "backend-data"]: '{"VNI":1,"VtepMAC":"0e:00:00:00:01:99"}',
          [A + "public-ip"]: "192.0.2.101",
        })).trim(),
        "node/other-1 annotated",
      );
      await datapathMatchesApi(lab, kube, [h1, h2, h3]);
      const moved = JSON.stringify(await kernelPeers(lab, h1.ns));
      assert.ok(moved.includes("0e:00:00:00:01:99 192.0.2.101"), moved);
      assert.ok(!moved.includes("0e:00:00:00:01:00"), moved);
      assert.equal(
        (await kube.kubectl(["delete", "node", "other-1"])).trim(),
        'node "other-1" deleted',
      );
      await datapathMatchesApi(lab, kube, [h1, h2, h3]);
      assert.doesNotMatch(JSON.stringify(await kernelPeers(lab, h2.ns)), /10\.244\.100\./);

      // every pod reaches every other pod
      const pods = new Map<LabHost, PodAttachment[]>();
      for (const [i, h] of [h1, h2, h3].entries()) {
        pods.set(h, await lab.attachPods(h, agents[i].subnetFile));
      }
      const first = [h1, h2, h3].flatMap((h) => pods.get(h)!);
      assert.deepEqual(await failedPings(lab, first, first), []);

      // a node registered without a podCIDR: its agent waits and /readyz says why
      await kubectlCreateNode(kube, h4.ns, { internalIP: h4.ip });
      const a4 = kubeAgent(lab, kube, netConf, h4, "deno", [
        "--healthz-port",
        String(HEALTHZ_PORT),
      ]);
      let notReady = "";
      await eventually(
        "/readyz on the node without podCIDR answers 503 with the reason",
        async () => {
          const [code, body] = await statusGet(lab, h4.ns, "/readyz");
          notReady = body;
          return code === 503 && /podCIDR/.test(body) ? true : `${code} ${body}`;
        },
        60_000,
      );
      assert.match(notReady, new RegExp(`node ${h4.ns} has no podCIDR`));
      assert.equal((await statusGet(lab, h4.ns, "/healthz"))[0], 200);
      assert.ok(!a4.logs().some((r) => r.msg === "ready"), "not ready without a podCIDR");

      // the controller assigns it (kubectl's strategic merge patch): ready, and reachable from every pod
      await kube.kubectl([
        "patch",
        "node",
        h4.ns,
        "-p",
        '{"spec":{"podCIDR":"10.244.4.0/24","podCIDRs":["10.244.4.0/24"]}}',
      ]);
      // a second change of the podCIDR is refused, as by the real API server
      await assert.rejects(
        kube.kubectl(["patch", "node", h4.ns, "-p", '{"spec":{"podCIDRs":["10.244.9.0/24"]}}']),
        /node updates may not change podCIDR except from "" to valid/,
      );
      assert.equal(await a4.waitReady(30_000), "10.244.4.0/24");
      await eventually("/readyz answers 200 once the podCIDR is assigned", async () => {
        const [code, body] = await statusGet(lab, h4.ns, "/readyz");
        return code === 200 ? true : `${code} ${body}`;
      });
      await datapathMatchesApi(lab, kube, [h1, h2, h3, h4]);
      const nodes4 = await kubectlNodes(kube);
      await assertFlannelNode(lab, nodes4.find((n) => n.metadata.name === h4.ns)!, h4);
      pods.set(h4, await lab.attachPods(h4, a4.subnetFile));
      const all = [...pods.values()].flat();
      assert.deepEqual(await failedPings(lab, pods.get(h4)!, all), []);
      assert.deepEqual(await failedPings(lab, first, pods.get(h4)!), []);

      // a node deleted from the API disappears from every peer's datapath
      const gone = nodes4.find((n) => n.metadata.name === h3.ns)!;
      const goneMac = JSON.parse(gone.metadata.annotations[A + "backend-data"]).VtepMAC;
      await kube.kubectl(["delete", "node", h3.ns]);
      await datapathMatchesApi(lab, kube, [h1, h2, h4]);
      for (const h of [h1, h2, h4]) {
        const s = await kernelPeers(lab, h.ns);
        const text = JSON.stringify(s);
        assert.ok(
          !text.includes("10.244.3.") && !text.includes(goneMac) && !text.includes(h3.ip),
          text,
        );
        assert.doesNotMatch(await lab.run(h.ns, "ip route"), /10\.244\.3\.0/);
      }
      const p3 = pods.get(h3)![0];
      assert.equal(
        await lab.ping(path.basename(pods.get(h1)![0].netns), p3.ip, { timeoutSeconds: 1 }),
        false,
        "a pod of the deleted node is no longer reachable",
      );
      // the rest still talk
      const rest = [h1, h2, h4].flatMap((h) => pods.get(h)!);
      assert.deepEqual(await failedPings(lab, rest.slice(0, 2), rest), []);
    } finally {
      await lab.teardown();
    }
  },
);

Deno.test(
  "kube mode: watches broken mid-stream and 410 Gone while nodes change miss no event: every agent's routes end right",
  async () => {
    const lab = await createLab({ prefix: PREFIX, hosts: 3 });
    try {
      const hosts = lab.hosts;
      const kube = await startLabKube(lab);
      const netConf = writeNetConf(lab);
      await kube.control(hosts.map((h) => ({
        op: "addNode",
        args: [h.ns, { podCIDRs: [`10.244.${h.index}.0/24`], internalIP: h.ip }],
      })));
      const runtimes: AgentRuntime[] = ["deno", "bun", "deno"];
      const agents = hosts.map((h, i) => kubeAgent(lab, kube, netConf, h, runtimes[i]));
      await Promise.all(agents.map((a) => a.waitReady(60_000)));
      await datapathMatchesApi(lab, kube, hosts);

      // nodes of other flannel hosts (no agent here; only their datapath entries matter)
      const other = (i: number, mac = i) => ({
        podCIDRs: [`10.244.${100 + i}.0/24`],
        annotations: {
          [A + "kube-subnet-manager"]: "true",
          [A + "backend-type"]: "vxlan",
          [A + "backend-data"]: `{"VNI":1,"VtepMAC":"0e:00:00:00:00:${
            mac.toString(16).padStart(2, "0")
          }"}`,
          [A + "public-ip"]: `192.0.2.${100 + i}`,
        },
      });
      const add = (i: number) => ({ op: "addNode" as const, args: [`other-${i}`, other(i)] });
      const del = (i: number) => ({ op: "deleteNode" as const, args: [`other-${i}`] });
      const seen = agents.map((a) => a.logs().length);

      // 1. connections reset mid-event; changes while the agents reconnect
      //    come from the history after the last resourceVersion they saw
      await kube.control([
        { op: "breakWatches", args: [{ abrupt: true }] },
        add(1),
        add(2),
        add(3),
      ]);
      await datapathMatchesApi(lab, kube, hosts);

      // 2. a server-side timeout, then a change of MAC and public IP, a delete, an add
      const moved = other(2, 0x22);
      await kube.control([
        { op: "breakWatches", args: [{ abrupt: false }] },
        {
          op: "annotate",
          args: ["other-2", {
            [A + "backend-data"]: moved.annotations[A + "backend-data"],
            [A + "public-ip"]: "192.0.2.122",
          }],
        },
        del(1),
        add(4),
      ]);
      await datapathMatchesApi(lab, kube, hosts);

      // 3. watches broken, nodes changed and the history compacted before the
      //    agents come back: their resume gets 410 Gone, they re-list
      await kube.control([
        { op: "breakWatches", args: [{ abrupt: true }] },
        del(3),
        add(5),
        { op: "setPodCIDR", args: ["other-4", []] }, // a node that loses its podCIDR is no peer
        add(6),
        del(6),
        { op: "compactHistory" },
      ]);
      const nodes = await datapathMatchesApi(lab, kube, hosts);
      for (const a of agents) {
        await a.waitLog(
          (r) => r.msg === "node watch fell behind the API server's history, re-listing",
          20_000,
          seen[agents.indexOf(a)],
        );
      }
      assert.deepEqual(
        nodes.map((n) => n.metadata.name).filter((n) => n.startsWith("other-")),
        ["other-2", "other-4", "other-5"],
      );

      // 4. watch requests failing for a while (500s), with changes meanwhile
      await kube.control([
        {
          op: "injectFailure",
          args: [{ method: "GET", path: "watch=(true|1)", status: 500, times: 4 }],
        },
        { op: "breakWatches", args: [{ abrupt: true }] },
        add(7),
        del(5),
        { op: "setPodCIDR", args: ["other-4", ["10.244.104.0/24"]] },
      ]);
      const final = await datapathMatchesApi(lab, kube, hosts);
      const names = final.map((n) => n.metadata.name).filter((n) => n.startsWith("other-"));
      assert.deepEqual(names, ["other-2", "other-4", "other-7"]);
      // the agents still run and each has the two real hosts plus three others as peers
      for (const h of hosts) {
        const s = await kernelPeers(lab, h.ns);
        assert.equal(s.routes.length, 5, JSON.stringify(s));
      }
      for (const a of agents) assert.equal(a.logs().some((r) => r.level === "error"), false);
    } finally {
      await lab.teardown();
    }
  },
);
