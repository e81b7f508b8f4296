import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import process from "node:process";
import { systemExec } from "../../core/exec.ts";
import { waitFor } from "../../testing/wait.ts";
import { createLab, MARKER_DIR, sweepLabs } from "./lab.ts";

const PREFIX = "wlb";

async function netnsList(): Promise<string[]> {
  const r = await systemExec("ip", ["netns", "list"]);
  return r.stdout.split("\n").map((l) => l.split(" ")[0]).filter(Boolean);
}

Deno.test("createLab() bridge: hosts reach each other and the internet; names fit 15 chars", async () => {
  const lab = await createLab({ prefix: PREFIX, hosts: 3, podsPerHost: 2, internet: true });
  try {
    assert.match(lab.id, /^wlb[a-z0-9]{3}$/);
    const names = lab.namespaces();
    assert.equal(names.length, 1 + 3 + 1 + 6);
    assert.ok(names.every((n) => n.length <= 15), names.join(" "));
    const present = await netnsList();
    assert.ok(names.every((n) => present.includes(n)));
    const [h1, h2, h3] = lab.hosts;
    assert.deepEqual([h1.ip, h2.ip, h3.ip], ["192.0.2.11", "192.0.2.12", "192.0.2.13"]);
    assert.ok(await lab.ping(h1.ns, h2.ip));
    assert.ok(await lab.ping(h3.ns, h1.ip));
    assert.ok(await lab.ping(h2.ns, lab.internet!.ip));
    assert.equal(await lab.run(h1.ns, "cat /proc/sys/net/ipv4/ip_forward"), "1\n");
    assert.match(await lab.run(h1.ns, "ip route show default"), /default via 192.0.2.1 dev eth0/);
    // pods exist but are not wired
    assert.equal(h2.pods.length, 2);
    assert.doesNotMatch(await lab.run(h2.pods[0].ns, "ip -o link"), /eth0/);
  } finally {
    await lab.teardown();
  }
  const after = await netnsList();
  assert.ok(lab.namespaces().every((n) => !after.includes(n)), "namespaces removed");
  assert.ok(!fs.existsSync(path.join(MARKER_DIR, `${lab.id}.json`)));
  assert.ok(!fs.existsSync(lab.dir));
});

Deno.test("createLab() router: hosts on two segments route through the router; internet has no overlay route", async () => {
  const lab = await createLab({ prefix: PREFIX, hosts: 3, underlay: "router", internet: true });
  try {
    const [h1, h2, h3] = lab.hosts;
    assert.deepEqual([h1.segment, h2.segment, h3.segment], [0, 1, 0]);
    assert.equal(h2.ip, "198.51.100.12");
    assert.ok(await lab.ping(h1.ns, h2.ip));
    assert.ok(await lab.ping(h2.ns, h3.ip));
    assert.ok(await lab.ping(h1.ns, lab.internet!.ip));
    // h1 → h2 crosses the router: TTL is one lower than a same-segment ping
    const ttl = (out: string) => Number(/ttl=(\d+)/.exec(out)![1]);
    const routed = await lab.run(h1.ns, ["ping", "-c", "1", "-W", "2", h2.ip]);
    const direct = await lab.run(h1.ns, ["ping", "-c", "1", "-W", "2", h3.ip]);
    assert.equal(ttl(direct) - ttl(routed), 1);
    assert.doesNotMatch(await lab.run(lab.internet!.ns, "ip route"), /10\./);
  } finally {
    await lab.teardown();
  }
});

Deno.test("Lab.spawn() runs in the namespace; teardown kills the whole process group", async () => {
  const lab = await createLab({ prefix: PREFIX, hosts: 1 });
  let pids: number[] = [];
  try {
    const p = lab.spawn(lab.hosts[0].ns, "sh", [
      "-c",
      "sleep 300 & echo child $!; ip -o addr show dev eth0; wait",
    ]);
    const m = await p.waitForOutput(/child (\d+)/);
    await p.waitForOutput(/192\.0\.2\.11/);
    pids = [p.pid, Number(m[1])];
    assert.equal(p.exitCode(), null, "still running");
    for (const pid of pids) assert.ok(fs.existsSync(`/proc/${pid}`));
  } finally {
    await lab.teardown();
  }
  for (const pid of pids) {
    assert.ok(
      !fs.existsSync(`/proc/${pid}`) || /\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, "utf8")),
      `pid ${pid} still runs`,
    );
  }
});

Deno.test("Lab.spawn() waitForOutput() fails with the output when the process exits first", async () => {
  const lab = await createLab({ prefix: PREFIX, hosts: 1 });
  try {
    const p = lab.spawn(lab.hosts[0].ns, "sh", ["-c", "echo oops >&2; exit 3"]);
    await assert.rejects(() => p.waitForOutput(/ready/), /exited before printing[\s\S]*oops/);
    assert.equal(await p.exited, 3);
    assert.equal(p.exitCode(), 3);
  } finally {
    await lab.teardown();
  }
});

Deno.test("sweepLabs() removes a dead lab's namespaces and processes but not live labs", async () => {
  const live = await createLab({ prefix: PREFIX, hosts: 1 });
  const deadId = `${PREFIX}zz9`;
  const deadNs = `${deadId}-h1`;
  const marker = path.join(MARKER_DIR, `${deadId}.json`);
  let sleeper: number | undefined;
  try {
    await systemExec("ip", ["netns", "add", deadNs]);
    fs.writeFileSync(
      marker,
      JSON.stringify({
        prefix: PREFIX,
        pid: 2147483646,
        created: 0,
        namespaces: [deadNs],
        dir: "",
      }),
    );
    // a leftover process inside the dead lab's namespace
    const { spawn } = await import("node:child_process");
    const child = spawn("ip", ["netns", "exec", deadNs, "sleep", "300"], {
      stdio: "ignore",
      detached: true,
    });
    sleeper = child.pid;
    await waitFor(`the leftover process ${sleeper} runs inside ${deadNs}`, async () => {
      const r = await systemExec("ip", ["netns", "pids", deadNs]);
      return r.stdout.split(/\s+/).includes(String(sleeper))
        ? null
        : `ip netns pids ${deadNs}: ${r.stdout.trim() || "none"}`;
    }, 5000);
    const removed = await sweepLabs(PREFIX);
    assert.deepEqual(removed, [deadNs]);
    const after = await netnsList();
    assert.ok(!after.includes(deadNs));
    assert.ok(live.namespaces().every((n) => after.includes(n)), "live lab untouched");
    assert.ok(!fs.existsSync(marker));
    await waitFor(`the leftover process ${sleeper} killed by the sweep`, () => {
      try {
        const stat = fs.readFileSync(`/proc/${sleeper}/stat`, "utf8");
        return /\) Z/.test(stat) ? null : `still running: ${stat.slice(0, 60)}`;
      } catch {
        return null; // gone
      }
    }, 5000);
  } finally {
    if (sleeper && fs.existsSync(`/proc/${sleeper}`)) {
      try {
        process.kill(sleeper, "SIGKILL");
      } catch { /* gone */ }
    }
    await systemExec("ip", ["netns", "del", deadNs]);
    fs.rmSync(marker, { force: true });
    await live.teardown();
  }
});

Deno.test("createLab() rejects prefixes that would overflow 15-character names", async () => {
  await assert.rejects(() => createLab({ prefix: "toolong", hosts: 1 }), TypeError);
  await assert.rejects(() => createLab({ prefix: "wlb", hosts: 0 }), TypeError);
});
