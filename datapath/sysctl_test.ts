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
import { createNetns, deleteNetns, run, sweepNetns } from "../testing/netns.ts";

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

Deno.test("ensureForwarding() per family: IPv6-only sets IPv6 forwarding alone, dual stack both", () => {
  const all = {
    "net.ipv4.ip_forward": "0",
    "net.ipv6.conf.all.forwarding": "0",
    "net.bridge.bridge-nf-call-iptables": "0",
    "net.bridge.bridge-nf-call-ip6tables": "0",
  };
  const cases: [string, Parameters<typeof ensureForwarding>[0], string[]][] = [
    ["IPv4", { ipv4: true }, ["net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"]],
    [
      "IPv6-only",
      { ipv4: false, ipv6: true },
      ["net.ipv6.conf.all.forwarding", "net.bridge.bridge-nf-call-ip6tables"],
    ],
    [
      "dual stack",
      { ipv4: true, ipv6: true },
      [
        "net.ipv4.ip_forward",
        "net.ipv6.conf.all.forwarding",
        "net.bridge.bridge-nf-call-iptables",
        "net.bridge.bridge-nf-call-ip6tables",
      ],
    ],
  ];
  for (const [why, options, want] of cases) {
    const root = fakeProc(all);
    try {
      assert.deepEqual(ensureForwarding({ ...options, procRoot: root }), want, why);
      for (const name of Object.keys(all)) {
        assert.equal(readSysctl(name, root), want.includes(name) ? "1" : "0", `${why}: ${name}`);
      }
      assert.deepEqual(
        ensureForwarding({ ...options, procRoot: root }),
        [],
        `${why}: then nothing`,
      );
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  }
});

Deno.test("ensureForwarding() keeps router advertisements on the named interfaces once IPv6 forwarding is on", () => {
  const root = fakeProc({
    "net.ipv6.conf.all.forwarding": "0",
    "net.ipv6.conf.eth0.accept_ra": "1",
    "net.ipv6.conf.eth1.accept_ra": "0",
    "net.ipv6.conf.eth2.accept_ra": "2",
  });
  // a VLAN interface's name holds a dot: its directory is eth0.100, not eth0/100
  const vlan = path.join(root, "net", "ipv6", "conf", "eth0.100");
  fs.mkdirSync(vlan, { recursive: true });
  fs.writeFileSync(path.join(vlan, "accept_ra"), "1\n");
  try {
    const names = ["eth0", "eth1", "eth2", "eth0.100", "gone0"];
    assert.deepEqual(
      ensureForwarding({
        ipv4: false,
        ipv6: true,
        keepRouterAdvertisements: names,
        procRoot: root,
      }),
      [
        "net.ipv6.conf.eth0.accept_ra",
        "net.ipv6.conf.eth0.100.accept_ra",
        "net.ipv6.conf.all.forwarding",
      ],
    );
    const ra = (n: string) =>
      fs.readFileSync(path.join(root, "net", "ipv6", "conf", n, "accept_ra"), "utf8").trim();
    assert.deepEqual(names.slice(0, 4).map(ra), ["2", "0", "2", "2"]);
    // IPv4 alone leaves accept_ra untouched
    fs.writeFileSync(path.join(root, "net", "ipv6", "conf", "eth0", "accept_ra"), "1\n");
    fs.mkdirSync(path.join(root, "net", "ipv4"), { recursive: true });
    fs.writeFileSync(path.join(root, "net", "ipv4", "ip_forward"), "1\n");
    assert.deepEqual(
      ensureForwarding({ ipv4: true, keepRouterAdvertisements: ["eth0"], procRoot: root }),
      [],
    );
    assert.equal(ra("eth0"), "1");
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

Deno.test("ensureForwarding() with IPv6 in a child process changes only that namespace", async () => {
  sweepNetns("wsy");
  const [a, b] = [createNetns("wsy", "a"), createNetns("wsy", "b")];
  try {
    const fwd = (ns: string) =>
      run("ip", ["netns", "exec", ns, "cat", "/proc/sys/net/ipv6/conf/all/forwarding"]);
    assert.equal(fwd(a), "0");
    const { cmd, args } = evalCommand(
      `import { ensureForwarding } from ${
        JSON.stringify(new URL("./sysctl.ts", import.meta.url).href)
      };
console.log(JSON.stringify(ensureForwarding({ ipv4: false, ipv6: true, keepRouterAdvertisements: ["lo"] })));`,
    );
    const out = await new Promise<string>((resolve, reject) =>
      execFile(
        "ip",
        ["netns", "exec", a, cmd, ...args],
        { cwd: REPO_ROOT },
        (e, so, se) => e ? reject(new Error(`${e.message}\n${se}`)) : resolve(so),
      )
    );
    assert.ok(JSON.parse(out).includes("net.ipv6.conf.all.forwarding"), out);
    assert.equal(fwd(a), "1");
    assert.equal(
      run("ip", ["netns", "exec", a, "cat", "/proc/sys/net/ipv4/ip_forward"]),
      "0",
      "IPv4 untouched",
    );
    assert.equal(fwd(b), "0", "other namespace untouched");
  } finally {
    deleteNetns(a, b);
  }
});
