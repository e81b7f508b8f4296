import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createLab, evalCommand, REPO_ROOT } from "../test/lab/lab.ts";
import {
  bridgeNetfilterMissing,
  ensureForwarding,
  ensureSysctl,
  readSysctl,
  sysctlPath,
} from "./sysctl.ts";

function fakeProc(values: Record<string, string>): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "wlb-sysctl-"));
  for (const [name, value] of Object.entries(values)) {
    const file = sysctlPath(name, root);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, value + "\n");
  }
  return root;
}

Deno.test("sysctlPath() maps dotted names under the proc root and rejects others", () => {
  assert.equal(sysctlPath("net.ipv4.ip_forward", "/p"), "/p/net/ipv4/ip_forward");
  assert.equal(
    sysctlPath("net.bridge.bridge-nf-call-iptables"),
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
  );
  for (const bad of ["ip_forward", "net/ipv4/ip_forward", "net..x", "../../etc.passwd"]) {
    assert.throws(() => sysctlPath(bad), TypeError, bad);
  }
});

Deno.test("ensureForwarding() writes only what differs and skips absent bridge netfilter", () => {
  const root = fakeProc({ "net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0" });
  try {
    assert.deepEqual(ensureForwarding({ procRoot: root }), ["net.ipv4.ip_forward"]);
    assert.equal(readSysctl("net.ipv4.ip_forward", root), "1");
    assert.equal(readSysctl("net.ipv6.conf.all.forwarding", root), "0");
    assert.deepEqual(ensureForwarding({ procRoot: root }), []);
    assert.deepEqual(ensureForwarding({ procRoot: root, ipv6: true }), [
      "net.ipv6.conf.all.forwarding",
    ]);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

Deno.test("ensureForwarding() turns on bridge-nf-call-iptables when br_netfilter is present", () => {
  const root = fakeProc({
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "0",
  });
  try {
    assert.deepEqual(ensureForwarding({ procRoot: root }), ["net.bridge.bridge-nf-call-iptables"]);
    assert.deepEqual(ensureForwarding({ procRoot: root, bridgeNetfilter: false }), []);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

Deno.test("bridgeNetfilterMissing() names the switches br_netfilter would add", () => {
  const without = fakeProc({ "net.ipv4.ip_forward": "1" });
  const loaded = fakeProc({
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
  });
  try {
    assert.deepEqual(bridgeNetfilterMissing({ procRoot: without }), [
      "net.bridge.bridge-nf-call-iptables",
    ]);
    assert.deepEqual(bridgeNetfilterMissing({ procRoot: without, ipv6: true }), [
      "net.bridge.bridge-nf-call-iptables",
      "net.bridge.bridge-nf-call-ip6tables",
    ]);
    assert.deepEqual(bridgeNetfilterMissing({ procRoot: loaded, ipv6: true }), []);
  } finally {
    fs.rmSync(without, { recursive: true, force: true });
    fs.rmSync(loaded, { recursive: true, force: true });
  }
});

Deno.test("ensureSysctl() names a sysctl the kernel does not have", () => {
  const root = fakeProc({});
  try {
    assert.throws(() => ensureSysctl("net.ipv4.ip_forward", "1", root), /does not exist/);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

Deno.test("ensureForwarding() in a child process changes only that process's namespace", async () => {
  const lab = await createLab({ prefix: "wlb", hosts: 2, hostForwarding: false });
  try {
    const [h1, h2] = lab.hosts;
    assert.equal(await lab.run(h1.ns, "cat /proc/sys/net/ipv4/ip_forward"), "0\n");
    const { cmd, args } = evalCommand(
      `import { ensureForwarding } from ${
        JSON.stringify(new URL("./sysctl.ts", import.meta.url).href)
      };
console.log(JSON.stringify(ensureForwarding()));`,
    );
    const out = await new Promise<string>((resolve, reject) =>
      execFile(
        "ip",
        ["netns", "exec", h1.ns, cmd, ...args],
        { cwd: REPO_ROOT },
        (e, so, se) => e ? reject(new Error(`${e.message}\n${se}`)) : resolve(so),
      )
    );
    assert.ok(JSON.parse(out).includes("net.ipv4.ip_forward"));
    assert.equal(await lab.run(h1.ns, "cat /proc/sys/net/ipv4/ip_forward"), "1\n");
    assert.equal(
      await lab.run(h2.ns, "cat /proc/sys/net/ipv4/ip_forward"),
      "0\n",
      "other host untouched",
    );
  } finally {
    await lab.teardown();
  }
});
