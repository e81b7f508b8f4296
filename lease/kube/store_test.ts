import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nullLogger } from "../../core/log.ts";
import { memoryLogger } from "../../testing/memory_logger.ts";
import { Registry } from "../../core/metrics.ts";
import {
  CONTRACT_CONFIG,
  type ContractHarness,
  hostIP,
  leaseStoreContract,
  replay,
  watchUntil,
} from "../../testing/lease_contract.ts";
import {
  createFakeKube,
  type FakeKube,
  type FakeKubeOptions,
  makeTestCerts,
  writeKubeconfig,
} from "../../testing/fake_kube.ts";
import { type Clock, systemClock } from "../../core/clock.ts";
import { waitForValue } from "../../testing/wait.ts";
import { formatIPv4Net } from "../../core/ip.ts";
import { createKubeLeaseStore, type KubeLeaseStoreOptions } from "./store.ts";
import { type LeaseAttrs, type LeaseEvent } from "../types.ts";
import { ConfigError, LeaseConflictError } from "../../core/errors.ts";

const A = "flannel.alpha.coreos.com/";
const TOKEN = "weft-test-token";
const VXLAN: LeaseAttrs = {
  publicIP: "192.0.2.1",
  backendType: "vxlan",
  backendData: { VNI: 1, VtepMAC: "aa:bb:cc:dd:ee:01" },
};

/** Real time, but retries and reconnects wait at most 20 ms. */
const fastClock: Clock = {
  now: () => systemClock.now(),
  sleep: (ms, signal) => systemClock.sleep(Math.min(ms, 20), signal),
};

const until = (cond: () => boolean, what: string) => waitForValue(what, cond, { intervalMs: 5 });

interface Env {
  kube: FakeKube;
  dir: string;
  kubeconfig: string;
  netConfigPath: string;
  store(o?: Partial<KubeLeaseStoreOptions>): ReturnType<typeof createKubeLeaseStore>;
}

/** A fake API server, a kubeconfig and net-conf.json in a temp dir, cleaned up after. */
async function withEnv(
  loader: Loader,
  fn: (env: Env) => Promise<void>,
  o: { fake?: FakeKubeOptions; netConf?: string } = {},
): Promise<void> {
  const kube = await createFakeKube({ token: TOKEN, ...o.fake });
  const dir = mkdtempSync(join(tmpdir(), "weft-kube-store-"));
  const netConfigPath = join(dir, "net-conf.json");
  writeFileSync(netConfigPath, o.netConf ?? '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}');
  const kubeconfig = writeKubeconfig(dir, kube, { token: TOKEN });
  const stores: ReturnType<typeof createKubeLeaseStore>[] = [];
  try {
    await fn({
      kube,
      dir,
      kubeconfig,
      netConfigPath,
      store: (so = {}) => {
        const s = createKubeLeaseStore({
          kubeconfigFile: kubeconfig,
          loader,
          nodeName: "n1",
          netConfigPath,
          env: {},
          clock: fastClock,
          logger: nullLogger,
          ...so,
        });
        stores.push(s);
        return s;
      },
    });
  } finally {
    for (const s of stores) await s.close();
    await kube.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const managed = (ip: string, extra: Record<string, string> = {}) => ({
  [A + "kube-subnet-manager"]: "true",
  [A + "public-ip"]: ip,
  [A + "backend-type"]: "vxlan",
  [A + "backend-data"]: '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}',
  ...extra,
});

// ---------------------------------------------------------------------------
// The shared contract. The harness plays kube-controller-manager and gives
// host n the podCIDR 10.5.(n+1).0/24.

/** What the kube store supports, and why not where it does not. */
const KUBE_CAPABILITIES = {
  ttl: "Kubernetes has no lease TTL: a node holds its podCIDR for its whole life",
  reservations: "Kubernetes has no reservations: podCIDRs belong to nodes, nothing expires",
  compaction: true,
  restart: true,
  allocation:
    "podCIDRs are assigned by kube-controller-manager (--allocate-node-cidrs), never by the agent",
  garbage: true,
} as const;

async function kubeHarness(loader: Loader): Promise<ContractHarness> {
  const kube = await createFakeKube({ token: TOKEN });
  const dir = mkdtempSync(join(tmpdir(), "weft-kube-contract-"));
  const netConfigPath = join(dir, "net-conf.json");
  writeFileSync(netConfigPath, CONTRACT_CONFIG);
  const kubeconfigFile = writeKubeconfig(dir, kube, { token: TOKEN });
  return {
    open(host) {
      const name = `host-${host}`;
      if (!kube.getNode(name)) {
        kube.addNode(name, { podCIDRs: [`10.5.${host + 1}.0/24`], internalIP: hostIP(host) });
      }
      return Promise.resolve(createKubeLeaseStore({
        kubeconfigFile,
        loader,
        nodeName: name,
        netConfigPath,
        env: {},
        watchTimeoutSeconds: 60,
      }));
    },
    // A node claiming the subnet with unreadable flannel data: a value that
    // is a JSON object gives the annotations it names (PublicIP, BackendType,
    // BackendData); anything else becomes the backend-data annotation.
    writeGarbage(subnet, value) {
      let ann: Record<string, string> = {
        [A + "kube-subnet-manager"]: "true",
        [A + "public-ip"]: "192.0.2.250",
        [A + "backend-data"]: value,
      };
      try {
        const o = JSON.parse(value);
        ann = { [A + "kube-subnet-manager"]: "true", [A + "public-ip"]: String(o.PublicIP) };
        if (o.BackendType) ann[A + "backend-type"] = String(o.BackendType);
        if (o.BackendData !== undefined) ann[A + "backend-data"] = JSON.stringify(o.BackendData);
      } catch { /* not JSON: kept as backend-data */ }
      kube.addNode(`garbage-${subnet.replace(/[./]/g, "-")}`, {
        podCIDRs: [subnet],
        annotations: ann,
      });
      return Promise.resolve();
    },
    removeExternally(lease) {
      const cidr = formatIPv4Net(lease.subnet!);
      const name = kube.nodeNames().find((n) => kube.getNode(n)!.spec.podCIDRs?.[0] === cidr);
      if (!name) throw new Error(`no node has podCIDR ${cidr}`);
      kube.deleteNode(name);
      return Promise.resolve();
    },
    compact() {
      kube.compactHistory();
      return Promise.resolve();
    },
    restart: () => kube.restart(),
    watchers: () => Promise.resolve(kube.watchCount),
    async cleanup() {
      await kube.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The leases the fake's nodes describe now, by subnet. */
function expected(kube: FakeKube): string[] {
  return kube.nodeNames()
    .map((n) => kube.getNode(n)!)
    .filter((n) => n.metadata.annotations?.[A + "kube-subnet-manager"] === "true")
    .map((n) => `${n.spec.podCIDRs[0]} ${n.metadata.annotations[A + "public-ip"]}`)
    .sort();
}

function final(initial: Parameters<typeof replay>[0], events: LeaseEvent[]): string[] {
  return [...replay(initial, events).values()]
    .map((l) => `${formatIPv4Net(l.subnet!)} ${l.attrs.publicIP}`)
    .sort();
}

/** Write a kubeconfig as JSON (which is YAML) with the given user, for a plain-http server. */
function writeJsonKubeconfig(
  dir: string,
  name: string,
  server: string,
  user: Record<string, unknown>,
): string {
  const file = join(dir, name);
  writeFileSync(
    file,
    JSON.stringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "c", cluster: { server, "insecure-skip-tls-verify": true } }],
      users: [{ name: "u", user }],
      contexts: [{ name: "x", context: { cluster: "c", user: "u" } }],
      "current-context": "x",
    }),
  );
  return file;
}

const LOADERS = ["builtin", "client-node"] as const;
type Loader = typeof LOADERS[number];

Deno.test("the example DaemonSet grants exactly the API access the store uses", async () => {
  const k8s = await import("@kubernetes/client-node");
  const text = readFileSync(new URL("../../examples/kube-weft.yml", import.meta.url), "utf8");
  // deno-lint-ignore no-explicit-any
  const docs = k8s.loadAllYaml(text) as any[];
  const kinds = docs.map((d) => d.kind);
  assert.deepEqual(kinds, [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "ServiceAccount",
    "ConfigMap",
    "DaemonSet",
  ]);
  const role = docs[1];
  const rules = role.rules.map((r: { resources: string[]; verbs: string[] }) =>
    `${r.resources.join()}: ${r.verbs.join()}`
  );
  assert.deepEqual(rules, ["pods: get", "nodes: get,list,watch", "nodes/status: patch"]);
  const cm = docs[4];
  const { parseNetworkConfig } = await import("../config.ts");
  assert.equal(parseNetworkConfig(cm.data["net-conf.json"]).backendType, "vxlan");
  JSON.parse(cm.data["cni-conf.json"]);
  const ds = docs[5];
  const pod = ds.spec.template.spec;
  const c = pod.containers[0];
  assert.ok(c.args.includes("--kube-subnet-mgr") && c.args.includes("--ip-masq"));
  assert.equal(pod.serviceAccountName, docs[3].metadata.name);
  assert.equal(docs[2].subjects[0].name, docs[3].metadata.name);
  const nodeName = c.env.find((e: { name: string }) => e.name === "NODE_NAME");
  assert.equal(nodeName.valueFrom.fieldRef.fieldPath, "spec.nodeName");
  const mount = c.volumeMounts.find((m: { name: string }) => m.name === "weft-cfg");
  assert.equal(mount.mountPath + "net-conf.json", "/etc/kube-flannel/net-conf.json");
});

// Every test below runs once per loader of the address and credentials:
// the builtin one and @kubernetes/client-node.
for (const loader of LOADERS) {
  leaseStoreContract(`kube [${loader}]`, KUBE_CAPABILITIES, () => kubeHarness(loader));

  // ---------------------------------------------------------------------------
  // Kubernetes-specific behaviour.

  Deno.test(`kube store [${loader}] waits for a missing podCIDR, says why once, and takes it when assigned`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      kube.addNode("n1");
      const log = memoryLogger();
      const s = store({ logger: log });
      const cfg = await s.getNetworkConfig();
      const pending = s.acquire(cfg, { attrs: VXLAN });
      await until(() => /no podCIDR yet/.test(s.status() ?? ""), "status() reports the wait");
      assert.match(s.status()!, /node n1 has no podCIDR yet/);
      assert.match(s.status()!, /--allocate-node-cidrs=true/);
      assert.match(s.status()!, /--pod-network-cidr/);
      await until(() => kube.watchCount === 1, "it watches the node instead of polling");
      kube.annotate("n1", { unrelated: "change" }); // still no podCIDR: keep waiting quietly
      kube.setPodCIDR("n1", ["10.5.7.0/24"]);
      const lease = await pending;
      assert.equal(formatIPv4Net(lease.subnet!), "10.5.7.0/24");
      assert.equal(s.status(), null);
      assert.equal(log.lines.filter((l) => l.includes("no podCIDR yet")).length, 1, "said once");
      const lists = kube.requests.filter((r) => r.method === "GET" && !r.url.includes("watch="));
      assert.equal(lists.length, 1, "one list, then a watch: no polling");
    });
  });

  Deno.test(`kube store [${loader}] with exitOnMissingPodCidr fails at once, as flannel does`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      kube.addNode("n1");
      const s = store({ exitOnMissingPodCidr: true });
      await assert.rejects(
        async () => s.acquire(await s.getNetworkConfig(), { attrs: VXLAN }),
        (e: Error) =>
          e instanceof ConfigError && /pod cidr not assigned/.test(e.message) &&
          /--exit-on-missing-podcidr/.test(e.message),
      );
    });
  });

  Deno.test(`kube store [${loader}] waits for its node to register`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      const s = store();
      const pending = s.acquire(await s.getNetworkConfig(), { attrs: VXLAN });
      await until(
        () => /not registered/.test(s.status() ?? ""),
        "status() says the node is missing",
      );
      kube.addNode("n1", { podCIDRs: ["10.5.3.0/24"] });
      assert.equal(formatIPv4Net((await pending).subnet!), "10.5.3.0/24");
    });
  });

  Deno.test(`kube store [${loader}] rejects a podCIDR outside Network, naming both`, async () => {
    await withEnv(loader, async ({ kube, store, netConfigPath }) => {
      kube.addNode("n1", { podCIDRs: ["10.6.1.0/24"] });
      const s = store();
      await assert.rejects(
        async () => s.acquire(await s.getNetworkConfig(), { attrs: VXLAN }),
        (e: Error) =>
          e instanceof ConfigError &&
          e.message.includes(`podCIDR 10.6.1.0/24 of node n1 is not inside Network 10.5.0.0/16`) &&
          e.message.includes(netConfigPath),
      );
    });
  });

  Deno.test(`kube store [${loader}] rejects two podCIDRs of one family on its own node`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      kube.addNode("n1");
      kube.setPodCIDR("n1", ["10.5.1.0/24", "10.5.2.0/24"]);
      const s = store();
      await assert.rejects(
        async () => s.acquire(await s.getNetworkConfig(), { attrs: VXLAN }),
        (e: Error) => e instanceof ConfigError && /two IPv4 podCIDRs/.test(e.message),
      );
    });
  });

  Deno.test(`kube store [${loader}] publishes flannel's annotations on the status subresource, only when changed`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      kube.addNode("n1", { podCIDRs: ["10.5.1.0/24"] });
      const s = store();
      const cfg = await s.getNetworkConfig();
      const lease = await s.acquire(cfg, { attrs: VXLAN });
      assert.equal(lease.expiration, null);
      const ann = kube.getNode("n1")!.metadata.annotations;
      assert.deepEqual(ann, {
        [A + "backend-type"]: "vxlan",
        [A + "backend-data"]: '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}',
        [A + "public-ip"]: "192.0.2.1",
        [A + "kube-subnet-manager"]: "true",
      });
      const patches = () => kube.requests.filter((r) => r.method === "PATCH");
      assert.deepEqual(
        patches().map((r) => [r.url, r.contentType]),
        [["/api/v1/nodes/n1/status", "application/strategic-merge-patch+json"]],
      );
      const again = store();
      await again.acquire(cfg, { attrs: VXLAN });
      await again.renew(lease);
      assert.equal(patches().length, 1, "nothing changed: no second patch");
    });
  });

  Deno.test(`kube store [${loader}] honours public-ip-overwrite and offers node-public-ip and the stored MAC`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      kube.addNode("n1", {
        podCIDRs: ["10.5.1.0/24"],
        annotations: managed("192.0.2.1", {
          [A + "public-ip-overwrite"]: "198.51.100.7",
          [A + "node-public-ip"]: "192.0.2.99",
        }),
      });
      const s = store();
      const cfg = await s.getNetworkConfig();
      const hints = await s.nodeHints();
      assert.equal(hints.publicIP, "192.0.2.99");
      assert.deepEqual(hints.previousLease?.attrs.backendData, {
        VNI: 1,
        VtepMAC: "aa:bb:cc:dd:ee:02",
      });
      const lease = await s.acquire(cfg, { attrs: VXLAN });
      assert.equal(lease.attrs.publicIP, "198.51.100.7");
      assert.equal(kube.getNode("n1")!.metadata.annotations[A + "public-ip"], "198.51.100.7");
      assert.equal(
        kube.getNode("n1")!.metadata.annotations[A + "public-ip-overwrite"],
        "198.51.100.7",
        "the read-only annotation is left alone",
      );
    });
  });

  Deno.test(`kube store [${loader}] sets NetworkUnavailable=False like flannel, unless told not to`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      kube.addNode("n1", { podCIDRs: ["10.5.1.0/24"] });
      await store({ setNodeCondition: false }).markNetworkAvailable();
      assert.equal(kube.requests.filter((r) => r.method === "PATCH").length, 0);
      await store().markNetworkAvailable();
      const cond = kube.getNode("n1")!.status.conditions;
      assert.equal(cond.length, 1);
      assert.deepEqual(
        [cond[0].type, cond[0].status, cond[0].reason, cond[0].message],
        ["NetworkUnavailable", "False", "FlannelIsUp", "Flannel is running on this node"],
      );
    });
  });

  Deno.test(`kube store [${loader}] finds its node from NODE_NAME or its pod`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      kube.addPod("kube-flannel", "weft-x1", "n7");
      assert.equal(await store({ nodeName: undefined, env: { NODE_NAME: "n5" } }).nodeName(), "n5");
      assert.equal(
        await store({
          nodeName: undefined,
          env: { POD_NAME: "weft-x1", POD_NAMESPACE: "kube-flannel" },
        }).nodeName(),
        "n7",
      );
      await assert.rejects(
        () => store({ nodeName: undefined, env: {} }).nodeName(),
        (e: Error) => e instanceof ConfigError && /set NODE_NAME/.test(e.message),
      );
    });
  });

  Deno.test(`kube store [${loader}] uses the in-cluster service account over TLS`, async () => {
    const { ca, cert, key } = makeTestCerts();
    await withEnv(loader, async ({ kube, dir, store }) => {
      kube.addNode("n1", { podCIDRs: ["10.5.1.0/24"] });
      const sa = join(dir, "var/run/secrets/kubernetes.io/serviceaccount");
      mkdirSync(sa, { recursive: true });
      writeFileSync(join(sa, "token"), TOKEN);
      writeFileSync(join(sa, "ca.crt"), ca);
      writeFileSync(join(sa, "namespace"), "kube-flannel");
      const s = store({
        kubeconfigFile: undefined,
        inClusterPathPrefix: dir,
        env: { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: String(kube.port) },
      });
      const lease = await s.acquire(await s.getNetworkConfig(), { attrs: VXLAN });
      assert.equal(formatIPv4Net(lease.subnet!), "10.5.1.0/24");
      const { leases } = await s.list();
      assert.equal(leases.length, 1);
    }, { fake: { tls: { cert, key } } });
  });

  Deno.test(`kube store [${loader}]: --kube-api-url overrides the kubeconfig's server`, async () => {
    await withEnv(loader, async ({ kube, dir, store }) => {
      kube.addNode("n1", { podCIDRs: ["10.5.1.0/24"] });
      const wrong = writeKubeconfig(join(dir), { url: "http://127.0.0.1:9" }, { token: TOKEN });
      const s = store({ kubeconfigFile: wrong, apiUrl: kube.url });
      assert.equal((await s.list()).leases.length, 0);
      assert.ok(kube.requests.length > 0);
    });
  });

  Deno.test(`kube store [${loader}] explains a missing net-conf.json and missing credentials`, async () => {
    await withEnv(loader, async ({ store }) => {
      await assert.rejects(
        () => store({ netConfigPath: "/nonexistent/net-conf.json" }).getNetworkConfig(),
        (e: Error) => e instanceof ConfigError && /--net-config-path/.test(e.message),
      );
      await assert.rejects(
        () => store({ kubeconfigFile: undefined, env: {} }).list(),
        (e: Error) =>
          e instanceof ConfigError && /KUBERNETES_SERVICE_HOST is unset/.test(e.message),
      );
    });
  });

  Deno.test(`kube store [${loader}] names the RBAC fix on 403 and retries a 503`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      kube.addNode("n1", { podCIDRs: ["10.5.1.0/24"] });
      const s = store();
      const cfg = await s.getNetworkConfig();
      kube.injectFailure({ method: "PATCH", status: 403 });
      await assert.rejects(
        () => s.acquire(cfg, { attrs: VXLAN }),
        (e: Error) => /403 Forbidden/.test(e.message) && /nodes\/status patch/.test(e.message),
      );
      kube.injectFailure({ method: "PATCH", status: 503, times: 2 });
      const lease = await s.acquire(cfg, { attrs: VXLAN });
      assert.equal(formatIPv4Net(lease.subnet!), "10.5.1.0/24");
      assert.deepEqual(
        kube.requests.filter((r) => r.method === "PATCH").map((r) => r.status),
        [403, 503, 503, 200],
      );
    });
  });

  Deno.test(`kube store [${loader}] renew republishes attributes and fails once the node is gone`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      kube.addNode("n1", { podCIDRs: ["10.5.1.0/24"] });
      const s = store();
      const lease = await s.acquire(await s.getNetworkConfig(), { attrs: VXLAN });
      const renewed = await s.renew({ ...lease, attrs: { ...VXLAN, publicIP: "192.0.2.5" } });
      assert.equal(renewed.expiration, null);
      assert.equal(kube.getNode("n1")!.metadata.annotations[A + "public-ip"], "192.0.2.5");
      kube.deleteNode("n1");
      await assert.rejects(
        () => s.renew(lease),
        (e: Error) => e instanceof LeaseConflictError && /no longer exists/.test(e.message),
      );
    });
  });

  Deno.test(`kube store [${loader}] skips malformed peers with one warning each and counts them`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      kube.addNode("good", { podCIDRs: ["10.5.2.0/24"], annotations: managed("192.0.2.2") });
      kube.addNode("garbage-json", {
        podCIDRs: ["10.5.3.0/24"],
        annotations: managed("192.0.2.3", { [A + "backend-data"]: "{not json" }),
      });
      kube.addNode("outside", { podCIDRs: ["10.9.4.0/24"], annotations: managed("192.0.2.4") });
      kube.addNode("two-v4", { annotations: managed("192.0.2.5") });
      kube.setPodCIDR("two-v4", ["10.5.5.0/24", "10.5.6.0/24"]);
      kube.addNode("bad-ip", { podCIDRs: ["10.5.7.0/24"], annotations: managed("banana") });
      kube.addNode("not-weft", { podCIDRs: ["10.5.8.0/24"] });
      const log = memoryLogger();
      const metrics = new Registry();
      const s = store({ logger: log, metrics });
      await s.getNetworkConfig();
      const snap = await s.list();
      await s.list();
      assert.deepEqual(snap.leases.map((l) => formatIPv4Net(l.subnet!)), ["10.5.2.0/24"]);
      const events = await watchUntil(
        s,
        snap.revision,
        (ev) => ev.some((e) => e.type === "added" && e.lease.attrs.publicIP === "192.0.2.9"),
        10_000,
        () => {
          kube.annotate("garbage-json", { [A + "backend-data"]: "{still not json" });
          kube.annotate("outside", { x: "y" });
          kube.annotate("good", { [A + "public-ip"]: "192.0.2.9" });
          return Promise.resolve();
        },
      );
      assert.deepEqual(events.map((e) => e.type), ["added"]);
      const warnings = log.lines.filter((l) => l.includes("skipping node with malformed"));
      assert.equal(warnings.length, 5, warnings.join("\n")); // 4 + the changed garbage
      for (const n of ["garbage-json", "outside", "two-v4", "bad-ip"]) {
        assert.ok(warnings.some((w) => w.includes(`node=${n}`)), n);
      }
      assert.ok(warnings.some((w) => w.includes("not inside Network 10.5.0.0/16")));
      assert.ok(warnings.some((w) => w.includes("two IPv4 podCIDRs")));
      assert.equal(
        metrics.counter("weft_store_malformed_records_total", "").get({ store: "kube" }),
        5,
      );
    });
  });

  Deno.test(`kube store [${loader}] watch misses nothing across a broken stream and a 410 Gone`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      for (let i = 1; i <= 3; i++) {
        kube.addNode(`p${i}`, {
          podCIDRs: [`10.5.${i}.0/24`],
          annotations: managed(`192.0.2.${i}`),
        });
      }
      const s = store({ watchTimeoutSeconds: 60 });
      await s.getNetworkConfig();
      const snap = await s.list();
      let phase = 0;
      const events = await watchUntil(
        s,
        snap.revision,
        (ev) =>
          phase === 3 && JSON.stringify(final(snap.leases, ev)) === JSON.stringify(expected(kube)),
        15_000,
        async () => {
          await until(() => kube.watchCount === 1, "watching");
          kube.annotate("p1", { [A + "public-ip"]: "192.0.2.11" });
          kube.breakWatches({ abrupt: true }); // cut mid-event
          kube.addNode("p4", { podCIDRs: ["10.5.4.0/24"], annotations: managed("192.0.2.4") });
          kube.deleteNode("p2"); // both happen while disconnected
          phase = 1;
          await until(() => kube.watchCount === 1, "reconnected");
          kube.breakWatches();
          kube.annotate("p3", { [A + "kube-subnet-manager"]: null });
          kube.addNode("p5", { podCIDRs: ["10.5.5.0/24"], annotations: managed("192.0.2.5") });
          kube.compactHistory(); // the watch cannot resume: 410, re-list
          phase = 2;
          await until(() => kube.watchCount === 1, "reconnected after the re-list");
          kube.annotate("p5", { [A + "public-ip"]: "192.0.2.55" });
          phase = 3;
        },
      );
      assert.ok(events.some((e) => e.type === "snapshot"), "the 410 produced a snapshot");
      assert.deepEqual(final(snap.leases, events), expected(kube));
      assert.deepEqual(expected(kube), [
        "10.5.1.0/24 192.0.2.11",
        "10.5.4.0/24 192.0.2.4",
        "10.5.5.0/24 192.0.2.55",
      ]);
    });
  });

  Deno.test(`kube store [${loader}] watch follows bookmarks, so a later reconnect needs no re-list`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      kube.addNode("p1", { podCIDRs: ["10.5.1.0/24"], annotations: managed("192.0.2.1") });
      const s = store({ watchTimeoutSeconds: 60 });
      await s.getNetworkConfig();
      const snap = await s.list();
      const events = await watchUntil(
        s,
        snap.revision,
        (ev) => ev.some((e) => e.type === "added"),
        10_000,
        async () => {
          await until(() => kube.watchCount === 1, "watching");
          kube.advanceResourceVersion(5); // other resources were written
          kube.sendBookmarks();
          // the stream delivers the bookmark before its end: the store reads both in order
          kube.compactHistory(); // history before the bookmark is gone
          kube.breakWatches();
          await until(() => kube.watchCount === 1, "reconnected");
          kube.addNode("p2", { podCIDRs: ["10.5.2.0/24"], annotations: managed("192.0.2.2") });
        },
      );
      assert.ok(!events.some((e) => e.type === "snapshot"), "resumed from the bookmark");
      const watches = kube.requests.filter((r) => r.url.includes("watch=true"));
      assert.ok(
        !watches[1].url.includes(`resourceVersion=${snap.revision}&`),
        "the second watch starts after the bookmark's revision",
      );
    });
  });

  Deno.test(`kube store [${loader}] lists thousands of nodes page by page`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      for (let i = 0; i < 1200; i++) {
        kube.addNode(`n${i}`, {
          podCIDRs: [`10.5.${Math.floor(i / 256)}.${i % 256}/32`],
          annotations: managed(`192.0.2.${i % 250}`),
        });
      }
      const s = store({ pageSize: 500 });
      await s.getNetworkConfig();
      const { leases, revision } = await s.list();
      assert.equal(leases.length, 1200);
      assert.equal(revision, String(kube.resourceVersion));
      const pages = kube.requests.filter((r) =>
        r.url.startsWith("/api/v1/nodes?") && r.url.includes("limit=500")
      );
      assert.equal(pages.length, 3);
    });
  });

  Deno.test(`kube store [${loader}] starts a paged list over when the continue token expires`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      for (let i = 1; i <= 5; i++) {
        kube.addNode(`p${i}`, {
          podCIDRs: [`10.5.${i}.0/24`],
          annotations: managed(`192.0.2.${i}`),
        });
      }
      kube.injectFailure({ method: "GET", path: /continue=/, status: 410 });
      const s = store({ pageSize: 2 });
      await s.getNetworkConfig();
      const { leases } = await s.list();
      assert.deepEqual(leases.map((l) => formatIPv4Net(l.subnet!)).sort(), [
        "10.5.1.0/24",
        "10.5.2.0/24",
        "10.5.3.0/24",
        "10.5.4.0/24",
        "10.5.5.0/24",
      ]);
      const gets = kube.requests.filter((r) => r.method === "GET");
      assert.equal(gets.filter((r) => r.status === 410).length, 1);
      assert.equal(gets.filter((r) => !r.url.includes("continue=")).length, 2, "started over once");
    });
  });

  Deno.test(`kube store [${loader}] watch from a revision it did not list still reports deletions`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      kube.addNode("p1", { podCIDRs: ["10.5.1.0/24"], annotations: managed("192.0.2.1") });
      const rev = String(kube.resourceVersion);
      const s = store();
      await s.getNetworkConfig();
      const events = await watchUntil(s, rev, (ev) => ev.length > 0, 10_000, () => {
        kube.deleteNode("p1");
        return Promise.resolve();
      });
      assert.deepEqual(
        events.map((e) =>
          e.type === "snapshot" ? e.type : `${e.type} ${formatIPv4Net(e.lease.subnet!)}`
        ),
        [
          "removed 10.5.1.0/24",
        ],
      );
    });
  });

  Deno.test(`kube store [${loader}] watch backs off and reconnects after the server refuses it`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      const log = memoryLogger();
      const s = store({ logger: log });
      await s.getNetworkConfig();
      const snap = await s.list();
      kube.injectFailure({ method: "GET", path: /watch=true/, status: 500, times: 2 });
      const events = await watchUntil(s, snap.revision, (ev) => ev.length > 0, 10_000, async () => {
        await until(() => kube.watchCount === 1, "third attempt connected");
        kube.addNode("p1", { podCIDRs: ["10.5.1.0/24"], annotations: managed("192.0.2.1") });
      });
      assert.equal(events[0].type, "added");
      const watches = kube.requests.filter((r) => r.url.includes("watch=true")).map((r) =>
        r.status
      );
      assert.deepEqual(watches.slice(0, 3), [500, 500, 200]);
      assert.equal(
        log.lines.filter((l) => l.includes("node watch failed, reconnecting")).length,
        2,
      );
    });
  });

  Deno.test(`kube store [${loader}] keeps a peer's last good lease through a malformed update`, async () => {
    await withEnv(loader, async ({ kube, store }) => {
      kube.addNode("p1", { podCIDRs: ["10.5.1.0/24"], annotations: managed("192.0.2.1") });
      const s = store();
      await s.getNetworkConfig();
      const snap = await s.list();
      const events = await watchUntil(s, snap.revision, (ev) => ev.length > 0, 10_000, async () => {
        await until(() => kube.watchCount === 1, "watching");
        kube.annotate("p1", { [A + "backend-data"]: "garbage" }); // skipped: no event
        kube.deleteNode("p1");
      });
      assert.equal(events.length, 1);
      const [ev] = events;
      assert.ok(ev.type === "removed");
      assert.equal(ev.lease.attrs.publicIP, "192.0.2.1");
      assert.deepEqual(ev.lease.attrs.backendData, { VNI: 1, VtepMAC: "aa:bb:cc:dd:ee:02" });
    });
  });

  Deno.test(`kube store [${loader}] authenticates with the kubeconfig's username and password`, async () => {
    await withEnv(loader, async ({ kube, dir, store }) => {
      kube.addNode("n1", { podCIDRs: ["10.5.1.0/24"] });
      const file = writeJsonKubeconfig(dir, "basic.kubeconfig", kube.url, {
        username: "admin",
        password: "pa:ss",
      });
      assert.equal((await store({ kubeconfigFile: file }).list()).leases.length, 0);
      assert.deepEqual(kube.requests.map((r) => r.status), [200]);
    }, { fake: { token: undefined, basicAuth: { username: "admin", password: "pa:ss" } } });
  });
}

// ---------------------------------------------------------------------------
// What only the builtin loader does, and the fallback to client-node.

Deno.test("kube store re-reads a rotated service account token after a 401", async () => {
  const { ca, cert, key } = makeTestCerts();
  await withEnv("builtin", async ({ kube, dir, store }) => {
    const sa = join(dir, "var/run/secrets/kubernetes.io/serviceaccount");
    mkdirSync(sa, { recursive: true });
    writeFileSync(join(sa, "token"), TOKEN);
    writeFileSync(join(sa, "ca.crt"), ca);
    writeFileSync(join(sa, "namespace"), "kube-flannel");
    kube.addPod("kube-flannel", "weft-x1", "n1");
    kube.addNode("n1", { podCIDRs: ["10.5.1.0/24"] });
    const log = memoryLogger();
    const s = store({
      kubeconfigFile: undefined,
      loader: "auto",
      logger: log,
      nodeName: undefined,
      inClusterPathPrefix: dir,
      env: {
        KUBERNETES_SERVICE_HOST: "127.0.0.1",
        KUBERNETES_SERVICE_PORT: String(kube.port),
        POD_NAME: "weft-x1", // the namespace comes from the service account
      },
    });
    assert.equal(await s.nodeName(), "n1");
    kube.setToken("rotated-token");
    writeFileSync(join(sa, "token"), "rotated-token\n");
    assert.equal((await s.list()).leases.length, 0);
    assert.deepEqual(kube.requests.map((r) => r.status), [200, 401, 200]);
    assert.ok(log.lines.some((l) => l.includes("retrying with the rotated one")));
    assert.ok(!log.lines.some((l) => l.includes("client-node")), log.lines.join("\n"));
  }, { fake: { tls: { cert, key } } });
});

Deno.test("kube store reads a kubeconfig tokenFile relative to the kubeconfig", async () => {
  await withEnv("builtin", async ({ kube, dir, store }) => {
    mkdirSync(join(dir, "creds"));
    writeFileSync(join(dir, "creds/token"), TOKEN + "\n");
    const file = writeJsonKubeconfig(dir, "tf.kubeconfig", kube.url, { tokenFile: "creds/token" });
    assert.equal((await store({ kubeconfigFile: file }).list()).leases.length, 0);
    assert.deepEqual(kube.requests.map((r) => r.status), [200]);
  });
});

Deno.test("kube store loads @kubernetes/client-node only for an exec plugin, which then works", async () => {
  await withEnv("builtin", async ({ kube, dir, store }) => {
    kube.addNode("n1", { podCIDRs: ["10.5.1.0/24"] });
    const plugin = join(dir, "weft-cred-plugin");
    writeFileSync(
      plugin,
      `#!/bin/sh\necho '${
        JSON.stringify({
          apiVersion: "client.authentication.k8s.io/v1",
          kind: "ExecCredential",
          status: { token: TOKEN },
        })
      }'\n`,
      { mode: 0o755 },
    );
    const file = writeJsonKubeconfig(dir, "exec.kubeconfig", kube.url, {
      exec: {
        apiVersion: "client.authentication.k8s.io/v1",
        command: plugin,
        interactiveMode: "Never",
      },
    });
    await assert.rejects(
      () => store({ kubeconfigFile: file, loader: "builtin" }).list(),
      (e: Error) => e instanceof ConfigError && /exec plugin/.test(e.message),
    );
    assert.equal(kube.requests.length, 0);
    const log = memoryLogger();
    const s = store({ kubeconfigFile: file, loader: "auto", logger: log });
    const lease = await s.acquire(await s.getNetworkConfig(), { attrs: VXLAN });
    assert.equal(formatIPv4Net(lease.subnet!), "10.5.1.0/24");
    assert.ok(kube.requests.every((r) => r.status === 200));
    assert.ok(
      log.lines.some((l) => l.includes("loaded @kubernetes/client-node") && l.includes("exec")),
      log.lines.join("\n"),
    );
    assert.ok(log.lines.some((l) => l.includes("loader=client-node")), log.lines.join("\n"));
  });
});
