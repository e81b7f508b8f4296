/**
 * The forms weft ships in, as `scripts/build.ts` makes them (built once per
 * tree, `testing/build_cache.ts`):
 *
 * - `dist/weft.js` under Deno and under Bun, and the Bun binary: `--version`
 *   and `--help`, then a lab of three hosts — weft.js on Deno, weft.js on
 *   Bun, the binary — running real udp agents (file store): every host's
 *   packet engine Worker carries pings to both others, and `/readyz` is 200;
 * - split modules (the cloud SDKs' way out of the main file): a stand-in
 *   that imports the EC2 SDK is absent from the main file, not loaded until
 *   asked, then loaded from its own file in each form; weft.js itself loads
 *   `@kubernetes/client-node` from `weft-kube.js` when a kubeconfig needs it.
 *
 * @module
 */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { createLab, type LabProcess } from "./lab/lab.ts";
import { pingFailures, type PodAddress } from "./lab/cluster.ts";
import { startLabGce } from "../testing/gce_lab_main.ts";
import { RUNTIME_BIN } from "./lab/agents.ts";
import { waitFor } from "../testing/wait.ts";
import { built } from "../testing/build_cache.ts";
import type { ProbeReport } from "../testing/split_probe/main.ts";
import { VERSION } from "../cli/main.ts";

/** How each form is started: program and arguments before weft's own. */
function forms(weftJs: string, binary: string): Record<string, [string, string[]]> {
  return {
    "weft.js on deno": [RUNTIME_BIN.deno, ["run", "-A", weftJs]],
    "weft.js on bun": [RUNTIME_BIN.bun, [weftJs]],
    "binary": [binary, []],
  };
}

Deno.test("weft.js (Deno, Bun) and the binary print --version and --help", async () => {
  const [js, bin] = await Promise.all([built("js"), built("binary")]);
  const runtimeOf: Record<string, string> = {
    "weft.js on deno": "deno",
    "weft.js on bun": "bun",
    "binary": "bun",
  };
  for (const [form, [cmd, pre]] of Object.entries(forms(js.main, bin.main))) {
    const version = execFileSync(cmd, [...pre, "--version"]).toString().trim();
    assert.match(version, new RegExp(`^weft ${VERSION} \\(${runtimeOf[form]} \\d`), form);
    const help = execFileSync(cmd, [...pre, "--help"]).toString();
    assert.match(help, /--etcd-endpoints/, `${form} --help`);
  }
});

Deno.test({
  name:
    "agents from weft.js on Deno, weft.js on Bun and the binary reach ready and carry udp traffic through their Workers",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const [js, bin] = await Promise.all([built("js"), built("binary")]);
    const lab = await createLab({ prefix: "wbd", hosts: 3 });
    const agents: LabProcess[] = [];
    try {
      const netConfig = path.join(lab.dir, "net.json");
      fs.writeFileSync(netConfig, '{"Network":"10.7.0.0/16","Backend":{"Type":"udp"}}');
      const entries = Object.entries(forms(js.main, bin.main));
      for (const [i, host] of lab.hosts.entries()) {
        const [cmd, pre] = entries[i][1];
        agents.push(lab.spawn(host.ns, cmd, [
          ...pre,
          "--lease-file",
          path.join(lab.dir, "leases.json"),
          "--net-config-path",
          netConfig,
          "--subnet-file",
          path.join(lab.dir, `${host.ns}.env`),
          "--iface",
          "eth0",
          "--healthz-port",
          "9181",
          "--log-format",
          "json",
        ]));
      }
      for (const [i, a] of agents.entries()) {
        await a.waitForOutput(/"msg":"ready"/, 30_000).catch((e) => {
          throw new Error(`${entries[i][0]}: ${(e as Error).message}`);
        });
      }
      const addrs: string[] = [];
      for (const h of lab.hosts) {
        addrs.push(
          (await lab.run(h.ns, "ip -4 -o addr show flannel0")).split(/\s+/)[3].split("/")[0],
        );
      }
      await waitFor(
        "every host pings both others over flannel0",
        async () => {
          const failed: string[] = [];
          for (const [i, h] of lab.hosts.entries()) {
            for (const [j, to] of addrs.entries()) {
              if (i === j) continue;
              const r = await lab.exec(h.ns, `ping -c 1 -W 1 -I ${addrs[i]} ${to}`);
              if (r.code !== 0) failed.push(`${entries[i][0]} → ${entries[j][0]}`);
            }
          }
          return failed.length ? failed.join(", ") : null;
        },
        20_000,
        200,
      );
      for (const [i, h] of lab.hosts.entries()) {
        // the backend reports its Worker up within one readiness poll (500 ms) of "ready"
        await waitFor(
          `${entries[i][0]}: /readyz answers 200`,
          async () => {
            const readyz = (await lab.run(h.ns, [
              "curl",
              "-s",
              "-w",
              " %{http_code}",
              "http://127.0.0.1:9181/readyz",
            ])).trim();
            return readyz === "ok\n 200" ? null : `${readyz}\n${agents[i].stderr().slice(-3000)}`;
          },
          10_000,
          100,
        );
        assert.doesNotMatch(
          agents[i].stderr(),
          /worker crashed|packet engine failed/,
          entries[i][0],
        );
      }
    } finally {
      await lab.teardown();
    }
  },
});

Deno.test({
  name:
    "gce from the built files: weft-gce.js is the trimmed SDK (REST only, pruned protos); agents from weft.js on Deno and Bun and the binary write their routes and pods ping through the VPC router",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const [js, bin] = await Promise.all([built("js"), built("binary")]);
    const gceJs = js.splitFiles.find((f) => f.endsWith("/weft-gce.js"));
    assert.ok(gceJs, `no weft-gce.js among ${js.splitFiles.join(", ")}`);
    const text = fs.readFileSync(gceJs, "utf8");
    assert.ok(!text.includes("ChannelCredentials"), "weft-gce.js carries no @grpc/grpc-js");
    assert.ok(!text.includes("InstanceGroupManager"), "the protos are pruned to the two services");
    assert.ok(
      fs.statSync(gceJs).size < 2_000_000,
      `weft-gce.js is ${fs.statSync(gceJs).size} bytes`,
    );

    const lab = await createLab({ prefix: "wbg", hosts: 3, podsPerHost: 1, underlay: "router" });
    const agents: LabProcess[] = [];
    try {
      for (const k of ["all", "default", "br0", "br1"]) {
        await lab.run(lab.underlay.ns, `sysctl -q -w net.ipv4.conf.${k}.send_redirects=0`);
      }
      const network = "10.8.0.0/16";
      const gce = await startLabGce(lab, { hosts: lab.hosts, network });
      const netConfig = path.join(lab.dir, "net.json");
      fs.writeFileSync(
        netConfig,
        JSON.stringify({ Network: network, Backend: { Type: "gce", RouteResyncSeconds: 2 } }),
      );
      const entries = Object.entries(forms(js.main, bin.main));
      const subnetFile = (ns: string) => path.join(lab.dir, `${ns}.env`);
      for (const [i, host] of lab.hosts.entries()) {
        const [cmd, pre] = entries[i][1];
        agents.push(lab.spawn(host.ns, cmd, [
          ...pre,
          "--lease-file",
          path.join(lab.dir, "leases.json"),
          "--net-config-path",
          netConfig,
          "--subnet-file",
          subnetFile(host.ns),
          "--iface",
          "eth0",
          "--log-format",
          "json",
        ], { env: gce.envFor(host) }));
      }
      await waitFor(
        "each form's route is in the project, to its VM, and in the VPC router",
        async () => {
          const [routes, mirror] = [await gce.routes(), await gce.mirror()];
          const ours = Object.entries(routes).filter(([d]) => d.startsWith("10.8."));
          const targets = ours.map(([, t]) => t).sort();
          const want = lab.hosts.map((h) => gce.instanceOf(h)).sort();
          return JSON.stringify(targets) === JSON.stringify(want) &&
              Object.keys(mirror).length === 3
            ? null
            : `${JSON.stringify(ours)} ${JSON.stringify(mirror)}\n${
              agents.map((a) => a.stderr().slice(-1500)).join("\n")
            }`;
        },
        60_000,
        200,
      );
      await waitFor("every agent wrote its subnet.env", () => {
        const missing = lab.hosts.filter((h) => !fs.existsSync(subnetFile(h.ns)));
        return missing.length ? missing.map((h) => h.ns).join(", ") : null;
      }, 30_000);
      const pods: PodAddress[] = [];
      for (const host of lab.hosts) {
        const wired = await lab.attachPods(host, subnetFile(host.ns));
        pods.push(
          ...wired.map((w, i) => ({ ns: host.pods[i].ns, ip: w.ip, hostIndex: host.index })),
        );
      }
      assert.deepEqual(await pingFailures(lab, pods), []);
      for (const [i, a] of agents.entries()) {
        assert.doesNotMatch(a.stderr(), /Cannot load|not found/i, entries[i][0]);
      }
    } finally {
      await Promise.all(agents.map((a) => a.stop()));
      await lab.teardown();
    }
  },
});

function probe(cmd: string, args: string[]): ProbeReport {
  return JSON.parse(execFileSync(cmd, args).toString().trim().split("\n").pop()!);
}

Deno.test("a split module (stand-in with the EC2 SDK) stays out of the main file and loads from its own in every form", async () => {
  const [weftJs, js, bin] = await Promise.all([
    built("js"),
    built("probe-js"),
    built("probe-binary"),
  ]);
  assert.deepEqual(
    js.splitFiles.map((f) => path.basename(f)).sort(),
    ["weft-aws.js", "weft-gce.js", "weft-probe.js"],
  );
  assert.deepEqual(
    weftJs.splitFiles.map((f) => path.basename(f)).sort(),
    ["weft-aws.js", "weft-gce.js", "weft-kube.js"],
  );
  // the SDK's marker is in the split file, not in the program, nor in weft.js
  const marker = "@aws-sdk/client-ec2";
  assert.ok(
    fs.readFileSync(js.splitFiles.find((f) => f.endsWith("/weft-probe.js"))!, "utf8")
      .includes(marker),
    "the split file holds the SDK",
  );
  assert.ok(!fs.readFileSync(js.main, "utf8").includes(marker), "the probe's main file has no SDK");
  assert.ok(!fs.readFileSync(weftJs.main, "utf8").includes(marker), "weft.js has no EC2 SDK");
  assert.ok(fs.statSync(js.main).size < 50_000, `probe main is ${fs.statSync(js.main).size} bytes`);

  const source = path.join(
    path.dirname(new URL(import.meta.url).pathname),
    "../testing/split_probe/main.ts",
  );
  const cases: [string, string, string[], "source" | "bundle" | "binary"][] = [
    ["source on deno", RUNTIME_BIN.deno, ["run", "-A", source], "source"],
    ["source on bun", RUNTIME_BIN.bun, [source], "source"],
    ["bundle on deno", RUNTIME_BIN.deno, ["run", "-A", js.main], "bundle"],
    ["bundle on bun", RUNTIME_BIN.bun, [js.main], "bundle"],
    ["binary", bin.main, [], "binary"],
  ];
  for (const [name, cmd, args, form] of cases) {
    const idle = probe(cmd, args);
    assert.equal(idle.form, form, name);
    assert.equal(idle.loaded, undefined, name);
    const r = probe(cmd, [...args, "--load"]);
    assert.ok(r.loaded, name);
    assert.equal(r.loaded.serviceId, "EC2", name);
    assert.equal(r.loaded.apiVersion, 1, name);
    assert.equal(r.loaded.recognized, true, `${name}: isRouteProviderError across the split`);
    assert.equal(r.loaded.kind, "denied", name);
    // one copy of provider.ts in source and binary (--splitting); the bundle's split file has its own
    assert.equal(r.loaded.sameClass, form !== "bundle", `${name}: instanceof across the split`);
    // the SDK costs memory only once loaded
    assert.ok(r.loaded.rssMB - r.rssMB > 10, `${name}: RSS ${r.rssMB} → ${r.loaded.rssMB} MB`);
    // the real cloud modules load the same way, from their own files beside the bundle
    const cloud = probe(cmd, [...args, "--cloud"]).cloud;
    assert.ok(cloud?.aws.includes("createAwsVpcProvider"), `${name}: aws ${cloud?.aws}`);
    assert.ok(cloud?.gce.includes("createGceRouteProvider"), `${name}: gce ${cloud?.gce}`);
  }
});

Deno.test({
  name:
    "weft.js loads @kubernetes/client-node from weft-kube.js for an exec-plugin kubeconfig, on Deno and Bun",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const js = await built("js");
    const kubeFile = js.splitFiles.find((f) => f.endsWith("/weft-kube.js"));
    assert.ok(kubeFile, `no weft-kube.js among ${js.splitFiles.join(", ")}`);
    // a property name of client-node's KubeConfig survives minifying: it is in the split file only
    assert.ok(fs.readFileSync(kubeFile, "utf8").includes("applySecurityAuthentication"));
    assert.ok(!fs.readFileSync(js.main, "utf8").includes("applySecurityAuthentication"));
    const lab = await createLab({ prefix: "wbk", hosts: 1 });
    try {
      const kubeconfig = path.join(lab.dir, "kubeconfig");
      fs.writeFileSync(
        kubeconfig,
        [
          "apiVersion: v1",
          "kind: Config",
          "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]",
          "contexts: [{name: ctx, context: {cluster: c, user: weft}}]",
          "current-context: ctx",
          "users: [{name: weft, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/false, interactiveMode: Never}}}]",
          "",
        ].join("\n"),
      );
      for (const [name, [cmd, pre]] of Object.entries(forms(js.main, "")).slice(0, 2)) {
        const agent = lab.spawn(lab.hosts[0].ns, cmd, [
          ...pre,
          "--kube-subnet-mgr",
          "--kubeconfig-file",
          kubeconfig,
          "--net-config-path",
          path.join(lab.dir, "absent.json"),
          "--iface",
          "eth0",
          "--log-format",
          "json",
        ], { env: { NODE_NAME: "n1" } });
        try {
          await agent.waitForOutput(
            /"msg":"loaded @kubernetes\/client-node for the Kubernetes credentials"/,
            30_000,
          );
          // client-node ran the exec plugin (/bin/false fails): its ConfigError, not a load failure
          await agent.waitForOutput(
            /cannot use the Kubernetes credentials for http:\/\/127\.0\.0\.1:1/,
            30_000,
          );
          assert.doesNotMatch(agent.stderr(), /Cannot load weft's kube module/, name);
        } finally {
          await agent.stop();
        }
      }
    } finally {
      await lab.teardown();
    }
  },
});
