/**
 * How weft tells it is ready, as a real process in a lab host: `READY=1` to
 * systemd's `$NOTIFY_SOCKET` (flanneld does it, so `Type=notify` units
 * work), and `/readyz` when the host's `/proc/sys` is read-only (an
 * unprivileged container): right values are fine, a wrong one is a clear
 * reason and no crash loop, and fixing it from outside makes the agent ready.
 * Also which address it publishes when a DHCP address precedes a static one
 * on the interface (flannel's preference: the static one), and
 * `--ip-blackhole-route` kept by the real process.
 *
 * Each agent runs the alloc backend on the embedded file store, so only the
 * host preparation and the readiness path are exercised.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { type AgentRuntime, startAgent } from "./lab/agents.ts";
import { createLab, type Lab, type LabHost } from "./lab/lab.ts";
import { waitFor } from "../testing/wait.ts";

const PREFIX = "wrd";
const STATUS_PORT = 9102;

/** A read-only bind mount of /proc/sys in the agent's own mount namespace (ip netns exec made one). */
const READ_ONLY_PROC_SYS = [
  "sh",
  "-c",
  'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"',
  "sh",
];

function fileStoreArgs(lab: Lab, host: LabHost): string[] {
  const config = path.join(lab.dir, `${host.ns}.net-conf.json`);
  fs.writeFileSync(config, '{"Network":"10.5.0.0/16","Backend":{"Type":"alloc"}}');
  return [
    `--lease-file=${path.join(lab.dir, `${host.ns}.leases.json`)}`,
    `--net-config-path=${config}`,
    `--healthz-port=${STATUS_PORT}`,
  ];
}

async function readyz(lab: Lab, ns: string): Promise<[number, string]> {
  const r = await lab.exec(ns, [
    ...["curl", "-s", "--max-time", "5", "-w", "\n%{http_code}"],
    `http://127.0.0.1:${STATUS_PORT}/readyz`,
  ]);
  const i = r.stdout.lastIndexOf("\n");
  return [Number(r.stdout.slice(i + 1)), r.stdout.slice(0, i).trimEnd()];
}

/** A python3 receiver on a unix datagram socket, collecting what arrives. */
function notifyReceiver(socket: string): { child: ChildProcess; messages: () => string[] } {
  const code = [
    "import socket, sys",
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)",
    `s.bind(${JSON.stringify(socket)})`,
    "while True:",
    "    print(s.recv(4096).decode().replace('\\n', ' '), flush=True)",
  ].join("\n");
  const child = spawn("python3", ["-c", code], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout!.on("data", (c: Uint8Array) => (out += new TextDecoder().decode(c)));
  return { child, messages: () => out.split("\n").filter(Boolean) };
}

for (const runtime of ["deno", "bun"] as AgentRuntime[]) {
  Deno.test(`weft under ${runtime} sends READY=1 to NOTIFY_SOCKET once it is ready`, async () => {
    const lab = await createLab({ prefix: PREFIX, hosts: 1 });
    const socket = path.join(lab.dir, "notify");
    const receiver = notifyReceiver(socket);
    try {
      await waitFor(
        "the receiver's socket",
        () => Promise.resolve(fs.existsSync(socket) ? null : "none"),
      );
      const [h] = lab.hosts;
      const agent = startAgent(lab, h, {
        runtime,
        args: fileStoreArgs(lab, h),
        env: { NOTIFY_SOCKET: socket },
      });
      await agent.waitReady();
      await waitFor(
        "READY=1 at the socket",
        () => Promise.resolve(receiver.messages().length ? null : "nothing yet"),
      );
      assert.deepEqual(receiver.messages(), ["READY=1"]);
      assert.equal((await readyz(lab, h.ns))[0], 200);
    } finally {
      receiver.child.kill("SIGKILL");
      await lab.teardown();
    }
  });
}

Deno.test("a read-only /proc/sys with ip_forward already on: the agent is ready", async () => {
  const lab = await createLab({ prefix: PREFIX, hosts: 1 });
  try {
    const [h] = lab.hosts;
    const agent = startAgent(lab, h, { args: fileStoreArgs(lab, h), wrap: READ_ONLY_PROC_SYS });
    await agent.waitReady();
    assert.deepEqual(await readyz(lab, h.ns), [200, "ok"]);
  } finally {
    await lab.teardown();
  }
});

Deno.test("a read-only /proc/sys with ip_forward off: /readyz names it and the fix, the agent keeps running, and is ready once the host sets it", async () => {
  const lab = await createLab({ prefix: PREFIX, hosts: 1, hostForwarding: false });
  try {
    const [h] = lab.hosts;
    const agent = startAgent(lab, h, { args: fileStoreArgs(lab, h), wrap: READ_ONLY_PROC_SYS });
    let body = "";
    await waitFor("/readyz answers 503 with the reason", async () => {
      const [code, text] = await readyz(lab, h.ns).catch(() => [0, ""] as [number, string]);
      body = text;
      return code === 503 && /ip_forward/.test(text) ? null : `${code} ${text}`;
    }, 30_000);
    assert.match(
      body,
      /^not ready: preparing the host: Cannot set net\.ipv4\.ip_forward=1 \(current value is 0\)/,
    );
    assert.match(body, /read-only here .*sysctl -w net\.ipv4\.ip_forward=1/);
    assert.equal(agent.process.exitCode(), null, "no crash: the agent keeps retrying");
    assert.ok(!agent.logs().some((r) => r.msg === "ready"));

    // the host (outside the agent's read-only view) turns it on: the next retry goes ahead
    await lab.run(h.ns, "sysctl -q -w net.ipv4.ip_forward=1");
    await agent.waitReady(30_000);
    assert.deepEqual(await readyz(lab, h.ns), [200, "ok"]);
  } finally {
    await lab.teardown();
  }
});

Deno.test("a DHCP address before a static one on eth0: weft publishes the static one, as flannel", async () => {
  const lab = await createLab({ prefix: PREFIX, hosts: 1 });
  try {
    const [h] = lab.hosts;
    await lab.run(
      h.ns,
      ["ip", "-batch", "-"],
      [
        `addr del ${h.ip}/24 dev eth0`,
        "addr add 192.0.2.50/24 dev eth0 valid_lft 600 preferred_lft 600",
        `addr add ${h.ip}/24 dev eth0`,
        "route replace default via 192.0.2.1 dev eth0 onlink",
        "",
      ].join("\n"),
    );
    const first = (await lab.run(h.ns, "ip -4 -o addr show dev eth0")).split("\n")[0];
    assert.match(
      first,
      /inet 192\.0\.2\.50\/24 .*dynamic/,
      "the kernel lists the DHCP address first",
    );
    const agent = startAgent(lab, h, { args: fileStoreArgs(lab, h) });
    await agent.waitReady();
    const start = agent.logs().find((r) => r.msg === "starting")!;
    assert.deepEqual([start.iface, start.publicIP], ["eth0", h.ip]);
  } finally {
    await lab.teardown();
  }
});

Deno.test("--ip-blackhole-route: the agent adds `blackhole <subnet>` and puts it back when deleted", async () => {
  const lab = await createLab({ prefix: PREFIX, hosts: 1 });
  try {
    const [h] = lab.hosts;
    const agent = startAgent(lab, h, {
      args: [...fileStoreArgs(lab, h), "--ip-blackhole-route", "--iptables-resync=1"],
    });
    const subnet = await agent.waitReady();
    const blackhole = async () =>
      (await lab.run(h.ns, "ip route show type blackhole")).trim() === `blackhole ${subnet}`
        ? null
        : "no blackhole route yet";
    await waitFor(`blackhole ${subnet}`, blackhole, 10_000);
    await lab.run(h.ns, `ip route del blackhole ${subnet}`);
    await waitFor(`blackhole ${subnet} put back`, blackhole, 10_000);
    await waitFor("the second 'added the blackhole route' record", () => {
      const n = agent.logs().filter((r) => r.msg === "added the blackhole route").length;
      return n === 2 ? null : `${n} so far`;
    });
  } finally {
    await lab.teardown();
  }
});
