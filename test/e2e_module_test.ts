/**
 * Backend modules end to end in the netns lab: the example router module
 * (examples/router-module) loaded by real agents at run time with
 * `"Backend": {"Type": "module", "Module": …}`. The router API
 * (examples/router-module/router.ts) runs in the lab's underlay namespace,
 * a router: each agent writes its pod subnet there as a kernel route via
 * its host, so pods of the three hosts reach each other through the
 * underlay with no tunnel. Once from source (Deno, Bun, Deno; the module as
 * TypeScript), once from the built forms (weft.js on Deno, weft.js on Bun,
 * the binary; the module bundled into one file outside the repository).
 * From source the router API starts only after every agent has reported
 * that it cannot reach it: the agents retry and become ready once it is up.
 *
 * @module
 */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { built } from "../testing/build_cache.ts";
import { type EtcdServer, startEtcd } from "../testing/etcd_server.ts";
import { waitFor } from "../testing/wait.ts";
import { RUNTIME_BIN } from "./lab/agents.ts";
import { ETCD_PREFIX, pingFailures, type PodAddress } from "./lab/cluster.ts";
import { createLab, type Lab, type LabProcess, REPO_ROOT } from "./lab/lab.ts";

const PREFIX = "wm1";
const NETWORK = "10.6.0.0/16";
const TOKEN = "lab-token";
const MODULE_SOURCE = path.join(REPO_ROOT, "examples/router-module/module.ts");
const ROUTER = path.join(REPO_ROOT, "examples/router-module/router.ts");

/** How an agent is started: program and the arguments before weft's own. */
type Form = readonly [label: string, cmd: string, pre: readonly string[]];

const SOURCE_FORMS: readonly Form[] = [
  ["mod.ts on deno", RUNTIME_BIN.deno, ["run", "-A", path.join(REPO_ROOT, "mod.ts")]],
  ["mod.ts on bun", RUNTIME_BIN.bun, [path.join(REPO_ROOT, "mod.ts")]],
  ["mod.ts on deno", RUNTIME_BIN.deno, ["run", "-A", path.join(REPO_ROOT, "mod.ts")]],
];

/** The kernel routes the router API wrote in the underlay: subnet → `via IP`. */
async function apiRoutes(lab: Lab): Promise<Record<string, string>> {
  const rows = JSON.parse(
    await lab.run(lab.underlay.ns, "ip -4 -j route show proto 87"),
  ) as { dst: string; gateway?: string; type?: string }[];
  return Object.fromEntries(rows.map((r) => [r.dst, r.gateway ? `via ${r.gateway}` : r.type!]));
}

/**
 * A lab of three hosts whose agents run `forms`, with etcd and the router
 * API in the underlay, and `module` as `Backend.Module`.
 */
async function withModuleLab(
  forms: readonly Form[],
  module: (lab: Lab) => string,
  routerRuntime: "deno" | "bun",
  routerLate: boolean,
  fn: (
    l: { lab: Lab; etcd: EtcdServer; pods: PodAddress[]; subnets: Map<number, string> },
    agents: Map<number, LabProcess>,
  ) => Promise<void>,
): Promise<void> {
  const lab = await createLab({ prefix: PREFIX, hosts: 3, podsPerHost: 1, underlay: "router" });
  const agents = new Map<number, LabProcess>();
  let etcd: EtcdServer | undefined;
  try {
    for (const k of ["all", "default", "br0", "br1"]) {
      await lab.run(lab.underlay.ns, `sysctl -q -w net.ipv4.conf.${k}.send_redirects=0`);
    }
    const startRouter = async () => {
      const router = lab.spawn(
        lab.underlay.ns,
        RUNTIME_BIN[routerRuntime],
        [
          ...(routerRuntime === "deno" ? ["run", "-A"] : []),
          ROUTER,
          "--listen",
          `${lab.underlay.serviceIP}:8087`,
          "--token",
          TOKEN,
          "--name",
          "lab-router",
        ],
        { cwd: REPO_ROOT },
      );
      agents.set(0, router);
      await router.waitForOutput(/listening on/, 30_000);
    };
    if (!routerLate) await startRouter();
    etcd = await startEtcd({ netns: lab.underlay.ns, host: lab.underlay.serviceIP });
    const backend = {
      Type: "module",
      Module: module(lab),
      RouterURL: `http://${lab.underlay.serviceIP}:8087`,
      Token: TOKEN,
      RouteResyncSeconds: 2,
    };
    await etcd.etcdctl([
      "put",
      `${ETCD_PREFIX}/config`,
      JSON.stringify({ Network: NETWORK, SubnetLen: 24, Backend: backend }),
    ]);
    const endpoint = `http://${lab.underlay.serviceIP}:2379`;
    const subnets = new Map<number, string>();
    const subnetFile = (i: number) => path.join(lab.dir, `h${i}.subnet.env`);
    for (const [i, host] of lab.hosts.entries()) {
      const [, cmd, pre] = forms[i];
      agents.set(
        host.index,
        lab.spawn(host.ns, cmd, [
          ...pre,
          "--etcd-endpoints",
          endpoint,
          "--iface",
          "eth0",
          "--subnet-file",
          subnetFile(host.index),
          "--log-format",
          "json",
        ], { cwd: REPO_ROOT }),
      );
    }
    if (routerLate) {
      // the module cannot reach its router: every agent says so and keeps retrying
      for (const host of lab.hosts) {
        await agents.get(host.index)!.waitForOutput(
          /cannot be reached[^\n]*check RouterURL/,
          60_000,
        );
      }
      await startRouter();
    }
    for (const host of lab.hosts) {
      const a = agents.get(host.index)!;
      const m = await a.waitForOutput(/"msg":"ready"[^\n]*"subnet":"([^"]+)"/, 60_000).catch(
        (e) => {
          throw new Error(
            `${forms[host.index - 1][0]} on ${host.ns}: ${(e as Error).message}\n${
              a.stderr().slice(-3000)
            }`,
          );
        },
      );
      subnets.set(host.index, m[1]);
    }
    const pods: PodAddress[] = [];
    for (const host of lab.hosts) {
      const wired = await lab.attachPods(host, subnetFile(host.index));
      pods.push(...wired.map((w, i) => ({ ns: host.pods[i].ns, ip: w.ip, hostIndex: host.index })));
    }
    await fn({ lab, etcd, pods, subnets }, agents);
  } finally {
    await Promise.all([...agents.values()].map((a) => a.stop()));
    await etcd?.close();
    await lab.teardown();
  }
}

/** Every host's subnet routed via that host in the underlay; then pods ping all pairs. */
async function routesAndPings(
  lab: Lab,
  pods: PodAddress[],
  subnets: Map<number, string>,
): Promise<void> {
  const want = () =>
    JSON.stringify(
      Object.fromEntries(
        [...subnets].sort().map(([i, s]) => [s, `via ${lab.hosts[i - 1].ip}`]),
      ),
    );
  await waitFor("the router holds every host's route", async () => {
    const got = await apiRoutes(lab);
    const sorted = JSON.stringify(Object.fromEntries(Object.entries(got).sort()));
    return sorted === JSON.stringify(Object.fromEntries(Object.entries(JSON.parse(want())).sort()))
      ? null
      : `${sorted}, want ${want()}`;
  }, 20_000);
  assert.deepEqual(await pingFailures(lab, pods), []);
  for (const host of lab.hosts) {
    const links = JSON.parse(await lab.run(host.ns, "ip -j -d link show")) as {
      ifname: string;
      linkinfo?: { info_kind?: string };
    }[];
    const tunnels = links.filter((l) =>
      ["vxlan", "tun"].includes(l.linkinfo?.info_kind ?? "") || l.ifname.startsWith("flannel")
    );
    assert.deepEqual(tunnels.map((l) => l.ifname), [], `${host.ns} has no tunnel device`);
  }
}

Deno.test({
  name:
    "module e2e (source): agents on Deno, Bun and Deno load the router module, retry while the router is down, and pods on three hosts ping through it; a removed lease's route goes",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withModuleLab(SOURCE_FORMS, () => MODULE_SOURCE, "bun", true, async (l, agents) => {
      const { lab, etcd, pods, subnets } = l;
      await routesAndPings(lab, pods, subnets);
      const log = agents.get(2)!.stderr();
      assert.match(log, /"msg":"backend module loaded"[^\n]*"module":"router"/);

      const gone = subnets.get(3)!;
      await agents.get(3)!.stop();
      agents.delete(3);
      await etcd.etcdctl(["del", `${ETCD_PREFIX}/subnets/${gone.replace("/", "-")}`]);
      const ms = await waitFor(`the route of ${gone} leaves the router`, async () => {
        const r = await apiRoutes(lab);
        return gone in r ? r[gone] : null;
      }, 20_000);
      console.log(`lease removed → route gone from the router: ${Math.round(ms)} ms`);
      assert.deepEqual(await pingFailures(lab, pods.filter((p) => p.hostIndex !== 3)), []);
    });
  },
});

Deno.test({
  name:
    "module e2e (built): weft.js on Deno, weft.js on Bun and the binary load the router module, bundled into one file outside weft; pods on three hosts ping through the router",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const [js, bin] = await Promise.all([built("js"), built("binary")]);
    const forms: Form[] = [
      ["weft.js on deno", RUNTIME_BIN.deno, ["run", "-A", js.main]],
      ["weft.js on bun", RUNTIME_BIN.bun, [js.main]],
      ["binary", bin.main, []],
    ];
    const bundle = (lab: Lab) => {
      const out = path.join(lab.dir, "ext", "router-module.js");
      execFileSync(RUNTIME_BIN.bun, [
        "build",
        MODULE_SOURCE,
        "--outfile",
        out,
        "--target",
        "node",
      ], { cwd: REPO_ROOT, stdio: "pipe" });
      assert.ok(fs.existsSync(out));
      assert.ok(!out.startsWith(REPO_ROOT), `${out} is outside the repository`);
      return out;
    };
    await withModuleLab(forms, bundle, "deno", false, async ({ lab, pods, subnets }) => {
      await routesAndPings(lab, pods, subnets);
    });
  },
});
