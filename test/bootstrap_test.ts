/**
 * The VM bootstrap (examples/cloud-init.yaml, examples/weft.service),
 * checked by the real tools and run:
 *
 * - `cloud-init schema --config-file` accepts the cloud-config (and rejects
 *   a broken one, so the check can fail);
 * - `systemd-analyze verify` accepts the unit with nothing to say (with the
 *   binary installed under a temporary root), and the unit is what the
 *   brief asks: `Type=notify`, restarts, the capability bounding set,
 *   `NoNewPrivileges`, `ProtectSystem=strict`, `ProtectHome`, not the
 *   kubelet's port; cloud-init writes that unit verbatim;
 * - the cloud-config's commands, in a lab host: `weft-install` fetches the
 *   binary from an HTTP server on the host's loopback, checks its SHA-256
 *   (a wrong one installs nothing) and installs it under a temporary root;
 *   the agent starts as the unit starts it — ExecStart, EnvironmentFile,
 *   the runtime and state directories — under the unit's capability
 *   bounding set, no_new_privs and a read-only file system except those
 *   directories (what systemd would do), against etcd in the lab; it
 *   writes subnet.env and `/readyz` answers 200.
 *
 * Needs `cloud-init` (Debian package; test/setup.sh installs it) and
 * `systemd-analyze`, `setpriv`, `unshare` (systemd, util-linux).
 *
 * @module
 */

import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createLab, REPO_ROOT } from "./lab/lab.ts";
import { BINARY_AGENT_ENV } from "./lab/agents.ts";
import { waitFor } from "../testing/wait.ts";
import { startEtcd } from "../testing/etcd_server.ts";
import { built } from "../testing/build_cache.ts";
import { VERSION } from "../cli/main.ts";

const CLOUD_INIT = path.join(REPO_ROOT, "examples/cloud-init.yaml");
const UNIT = path.join(REPO_ROOT, "examples/weft.service");

interface CloudConfig {
  write_files: { path: string; permissions?: string; content: string }[];
  runcmd: (string | string[])[];
}

/** Parse YAML with the PyYAML that cloud-init itself uses. */
function readYaml(file: string): CloudConfig {
  const out = execFileSync("python3", [
    "-c",
    "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
    file,
  ]);
  return JSON.parse(out.toString());
}

/** A systemd unit as section → [key, value] pairs, in order. */
function parseUnit(text: string): Map<string, [string, string][]> {
  const out = new Map<string, [string, string][]>();
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = s[1];
      out.set(section, out.get(section) ?? []);
      continue;
    }
    const eq = line.indexOf("=");
    out.get(section)!.push([line.slice(0, eq).trim(), line.slice(eq + 1).trim()]);
  }
  return out;
}

function unitValue(unit: Map<string, [string, string][]>, section: string, key: string): string {
  const hits = (unit.get(section) ?? []).filter(([k]) => k === key);
  assert.equal(hits.length, 1, `[${section}] ${key} must be set once`);
  return hits[0][1];
}

/** The `Environment=` assignments of a unit's [Service] (`KEY=VALUE`, space-separated, "quoted"). */
function unitEnvironment(unit: Map<string, [string, string][]>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of unit.get("Service") ?? []) {
    if (key !== "Environment") continue;
    for (const m of value.matchAll(/"([^"]*)"|(\S+)/g)) {
      const item = m[1] ?? m[2];
      const eq = item.indexOf("=");
      if (eq > 0) env[item.slice(0, eq)] = item.slice(eq + 1);
    }
  }
  return env;
}

/** A systemd EnvironmentFile: KEY=VALUE lines, # comments. */
function parseEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (m) env[m[1]] = m[2].trim();
  }
  return env;
}

function tempRoot(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "weft-bootstrap-"));
}

Deno.test("examples/cloud-init.yaml passes `cloud-init schema`; a broken cloud-config does not", () => {
  const ok = spawnSync("cloud-init", ["schema", "--config-file", CLOUD_INIT], { encoding: "utf8" });
  assert.equal(ok.error, undefined, "cloud-init is not installed: apt-get install -y cloud-init");
  assert.equal(ok.status, 0, `cloud-init schema:\n${ok.stdout}${ok.stderr}`);
  assert.match(ok.stdout, /^Valid cloud-config: /m);
  const dir = tempRoot();
  try {
    const bad = path.join(dir, "bad.yaml");
    fs.writeFileSync(
      bad,
      fs.readFileSync(CLOUD_INIT, "utf8").replace('permissions: "0755"', "permissions: 0755"),
    );
    const r = spawnSync("cloud-init", ["schema", "--config-file", bad], { encoding: "utf8" });
    assert.notEqual(r.status, 0);
    assert.match(r.stdout + r.stderr, /permissions: 493 is not of type 'string'/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("examples/weft.service: Type=notify, restarts, hardening, not the kubelet's port; cloud-init writes it verbatim", () => {
  const text = fs.readFileSync(UNIT, "utf8");
  const unit = parseUnit(text);
  const want: [string, string, string][] = [
    ["Service", "Type", "notify"],
    ["Service", "NotifyAccess", "main"],
    ["Service", "Restart", "always"],
    ["Service", "RestartSec", "2"],
    ["Unit", "StartLimitIntervalSec", "0"],
    ["Service", "CapabilityBoundingSet", "CAP_NET_ADMIN CAP_NET_RAW"],
    ["Service", "NoNewPrivileges", "yes"],
    ["Service", "ProtectSystem", "strict"],
    ["Service", "ProtectHome", "yes"],
    ["Service", "RuntimeDirectory", "flannel"],
    ["Service", "RuntimeDirectoryPreserve", "yes"],
    ["Service", "StateDirectory", "weft"],
    ["Service", "DeviceAllow", "/dev/net/tun rw"],
  ];
  for (const [section, key, value] of want) {
    assert.equal(unitValue(unit, section, key), value, `[${section}] ${key}`);
  }
  for (const key of ["ProtectKernelTunables", "MemoryDenyWriteExecute", "PrivateDevices"]) {
    assert.ok(
      !(unit.get("Service") ?? []).some(([k]) => k === key),
      `${key} would break the agent (sysctls, JIT, /dev/net/tun)`,
    );
  }
  // what the scale bench measured the binary with (README, Scale)
  const environment = unitEnvironment(unit);
  for (const [key, value] of Object.entries(BINARY_AGENT_ENV)) {
    assert.equal(environment[key], value, `[Service] Environment=${key}=${value}`);
  }
  const execStart = unitValue(unit, "Service", "ExecStart");
  assert.match(execStart, /--healthz-port=(\d+)/);
  assert.notEqual(
    /--healthz-port=(\d+)/.exec(execStart)![1],
    "10250",
    "the kubelet owns port 10250",
  );
  const written = readYaml(CLOUD_INIT).write_files.find((f) =>
    f.path === "/etc/systemd/system/weft.service"
  );
  assert.equal(written?.content, text, "cloud-init.yaml must carry examples/weft.service verbatim");
});

Deno.test("examples/weft.service passes `systemd-analyze verify` with weft installed; a broken unit does not", async () => {
  const bin = await built("binary");
  const root = tempRoot();
  try {
    fs.mkdirSync(path.join(root, "usr/local/bin"), { recursive: true });
    fs.mkdirSync(path.join(root, "etc/systemd/system"), { recursive: true });
    fs.mkdirSync(path.join(root, "usr/lib/systemd"), { recursive: true });
    // the targets it orders itself against
    fs.cpSync("/usr/lib/systemd/system", path.join(root, "usr/lib/systemd/system"), {
      recursive: true,
      verbatimSymlinks: true,
    });
    const verify = (name: string) =>
      spawnSync("systemd-analyze", [
        "verify",
        `--root=${root}`,
        path.join(root, "etc/systemd/system", name),
      ], { encoding: "utf8" });
    fs.copyFileSync(UNIT, path.join(root, "etc/systemd/system/weft.service"));
    const missing = verify("weft.service");
    assert.match(missing.stderr, /Command \/usr\/local\/bin\/weft is not executable/);
    fs.copyFileSync(bin.main, path.join(root, "usr/local/bin/weft"));
    const ok = verify("weft.service");
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(ok.stderr + ok.stdout, "", "systemd-analyze verify has nothing to say");
    // with the wireguard drop-in (examples/weft-wireguard.conf)
    fs.mkdirSync(path.join(root, "etc/systemd/system/weft.service.d"));
    fs.copyFileSync(
      path.join(REPO_ROOT, "examples/weft-wireguard.conf"),
      path.join(root, "etc/systemd/system/weft.service.d/wireguard.conf"),
    );
    const withDropIn = verify("weft.service");
    assert.equal(withDropIn.stderr + withDropIn.stdout, "", "the wireguard drop-in verifies too");
    fs.writeFileSync(
      path.join(root, "etc/systemd/system/bad.service"),
      fs.readFileSync(UNIT, "utf8").replace("ProtectSystem=strict", "ProtectSystem=very"),
    );
    assert.match(verify("bad.service").stderr, /Failed to parse protect system value/i);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

Deno.test({
  name:
    "the cloud-config's commands in a lab host: fetch and check the binary, install it, start it as the hardened unit does, reach ready",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const bin = await built("binary");
    const config = readYaml(CLOUD_INIT);
    const unit = parseUnit(fs.readFileSync(UNIT, "utf8"));
    const lab = await createLab({ prefix: "wbs", hosts: 1 });
    const etcd = await startEtcd({ netns: lab.underlay.ns, host: lab.underlay.serviceIP });
    try {
      const ns = lab.hosts[0].ns;
      await etcd.etcdctl([
        "put",
        "/coreos.com/network/config",
        '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}',
      ]);
      const root = path.join(lab.dir, "root");
      const file = (p: string) => path.join(root, p);
      for (const f of config.write_files) {
        fs.mkdirSync(path.dirname(file(f.path)), { recursive: true });
        fs.writeFileSync(file(f.path), f.content, { mode: parseInt(f.permissions ?? "0644", 8) });
      }

      // runcmd[0]: weft-install URL SHA256, the URL served on the host's loopback
      const [install, releaseUrl] = config.runcmd[0] as string[];
      assert.equal(install, "/usr/local/sbin/weft-install");
      const www = path.join(lab.dir, "www");
      fs.mkdirSync(www);
      const name = path.basename(new URL(releaseUrl).pathname);
      fs.copyFileSync(bin.main, path.join(www, name));
      const sha256 = createHash("sha256").update(fs.readFileSync(bin.main)).digest("hex");
      const server = lab.spawn(ns, "python3", [
        "-u",
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        "8099",
        "--directory",
        www,
      ]);
      await server.waitForOutput(/Serving HTTP/, 10_000);
      const url = `http://127.0.0.1:8099/${name}`;
      const runInstall = (sum: string) =>
        lab.exec(ns, ["env", `WEFT_ROOT=${root}`, "sh", file(install), url, sum]);
      const wrong = await runInstall("0".repeat(64));
      assert.notEqual(wrong.code, 0, "a wrong SHA-256 must fail the install");
      assert.ok(!fs.existsSync(file("usr/local/bin/weft")), "nothing installed on a wrong SHA-256");
      assert.deepEqual(fs.readdirSync(file("usr/local/bin")), [], "no temporary file left");
      const good = await runInstall(sha256);
      assert.equal(good.code, 0, `weft-install failed:\n${good.stdout}${good.stderr}`);
      assert.match(good.stdout, new RegExp(`^weft ${VERSION} `, "m"));
      assert.equal((fs.statSync(file("usr/local/bin/weft")).mode & 0o777).toString(8), "755");

      // the unit: Environment, EnvironmentFile (the lab's etcd in place of 10.0.0.10),
      // ExecStart, directories
      const envPath = unitValue(unit, "Service", "EnvironmentFile").replace(/^-/, "");
      const envText = fs.readFileSync(file(envPath), "utf8")
        .replaceAll("http://10.0.0.10:2379", etcd.endpoint)
        .replaceAll("10.0.0.10", lab.underlay.serviceIP);
      const env: Record<string, string> = {
        ...unitEnvironment(unit),
        ...parseEnvFile(envText),
        FLANNELD_SUBNET_FILE: file(
          `run/${unitValue(unit, "Service", "RuntimeDirectory")}/subnet.env`,
        ),
        FLANNELD_LEASE_FILE: file(
          `var/lib/${unitValue(unit, "Service", "StateDirectory")}/leases.json`,
        ),
        FLANNELD_LOG_FORMAT: "json",
      };
      const writable = [
        path.dirname(env.FLANNELD_SUBNET_FILE),
        path.dirname(env.FLANNELD_LEASE_FILE),
      ];
      for (const d of writable) fs.mkdirSync(d, { recursive: true });
      const [program, ...args] = unitValue(unit, "Service", "ExecStart").split(/\s+/);
      const port = /--healthz-port=(\d+)/.exec(args.join(" "))![1];
      const caps = unitValue(unit, "Service", "CapabilityBoundingSet").split(/\s+/)
        .map((c) => `+${c.replace(/^CAP_/, "").toLowerCase()}`).join(",");
      // ProtectSystem=strict + ProtectHome=yes + the writable directories, then the bounding set
      // and no_new_privs: a private mount namespace, everything read-only but those directories
      const script = [
        ...writable.map((d) => `mount --bind '${d}' '${d}'`),
        "for h in /root /home /run/user; do [ -d $h ] && mount -t tmpfs -o ro,mode=000 none $h; done",
        "mount -o remount,bind,ro /",
        `exec setpriv --no-new-privs --bounding-set -all,${caps} --inh-caps -all -- "$@"`,
      ].join("; ");
      const agent = lab.spawn(ns, "unshare", [
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
        "env",
        "-i",
        `PATH=${process.env.PATH}`,
        ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
        file(program),
        ...args,
      ]);
      await agent.waitForOutput(/"msg":"ready"/, 60_000);
      await waitFor(
        "/readyz answers 200",
        async () => {
          const r = await lab.exec(ns, [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            `http://127.0.0.1:${port}/readyz`,
          ]);
          return r.stdout.trim() === "200"
            ? null
            : `HTTP ${r.stdout.trim()}: ${agent.stderr().slice(-1500)}`;
        },
        20_000,
        200,
      );
      assert.match(fs.readFileSync(env.FLANNELD_SUBNET_FILE, "utf8"), /^FLANNEL_SUBNET=10\.244\./m);
      // the agent really ran confined: only the two capabilities, no_new_privs, a read-only /
      const status = fs.readFileSync(`/proc/${agent.pid}/status`, "utf8");
      assert.match(status, /^CapBnd:\s+0000000000003000$/m);
      assert.match(status, /^CapEff:\s+0000000000003000$/m);
      assert.match(status, /^NoNewPrivs:\s+1$/m);
      const rootMount = fs.readFileSync(`/proc/${agent.pid}/mountinfo`, "utf8").split("\n")
        .map((l) => l.split(" ")).find((f) => f[4] === "/");
      assert.ok(rootMount?.[5].split(",").includes("ro"), `/ is not read-only: ${rootMount}`);
      assert.doesNotMatch(agent.stderr(), /"level":"error"/);
      await agent.stop();
      server.kill();
    } finally {
      await etcd.close();
      await lab.teardown();
    }
  },
});
