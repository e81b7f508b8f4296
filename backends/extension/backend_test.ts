import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { FakeClock } from "../../testing/fake_clock.ts";
import { FakeCommandRunner } from "../../testing/fake_command_runner.ts";
import { peerLease, testContext } from "../../testing/routing.ts";
import { parseIPv4Net, parseIPv6Net } from "../../core/ip.ts";
import { ConfigError } from "../../core/errors.ts";
import { encodeLeaseAttrs, type Lease } from "../../lease/types.ts";
import { parseNetworkConfig } from "../../lease/config.ts";
import { extensionBackend, type ExtensionNetwork, peerStates } from "./backend.ts";
import { parseExtensionConfig } from "./config.ts";
import { ExtensionCommandError } from "./executor.ts";

const EXT = {
  name: "eth0",
  index: 2,
  mtu: 1500,
  ifaceAddr: "192.0.2.11",
  extAddr: "192.0.2.11",
};

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "weft-ext-test-"));
}

/** A peer lease of type extension with this BackendData (a JSON string in the lease). */
function peer(subnet: string, publicIP: string, data?: unknown): Lease {
  const base = peerLease(subnet, publicIP, "extension");
  return { ...base, attrs: { ...base.attrs, backendData: data } };
}

const A = peer("10.5.2.0/24", "192.0.2.12", "02:00:00:00:00:02");
const B = peer("10.5.3.0/24", "192.0.2.13", "02:00:00:00:00:03");

interface Setup {
  readonly net: ExtensionNetwork;
  readonly ctx: ReturnType<typeof testContext>;
  readonly clock: FakeClock;
  readonly fake: FakeCommandRunner;
  /** Stop the network (as the agent does on SIGTERM) and wait for it. */
  stop(): Promise<void>;
}

async function start(options: {
  backend: Record<string, unknown>;
  stateDir: string;
  fake?: FakeCommandRunner;
  clock?: FakeClock;
}): Promise<Setup> {
  const clock = options.clock ?? new FakeClock();
  const fake = options.fake ?? new FakeCommandRunner();
  const ctx = testContext({
    backend: { Type: "extension", StateDir: options.stateDir, ...options.backend },
    ext: EXT,
    subnet: "10.5.1.0/24",
    clock,
  });
  const backend = extensionBackend({ runner: fake.runner, random: () => 1 });
  const net = await backend.register(ctx) as ExtensionNetwork;
  const ac = new AbortController();
  const running = net.run(ac.signal);
  return {
    net,
    ctx,
    clock,
    fake,
    stop: async () => {
      ac.abort();
      await running;
    },
  };
}

const ADD = "ip route add $SUBNET via $PUBLIC_IP";
const REMOVE = "ip route del $SUBNET via $PUBLIC_IP";

Deno.test("parseExtensionConfig() reads flannel's four commands case-insensitively and applies weft's defaults", () => {
  const cfg = parseExtensionConfig(parseNetworkConfig(JSON.stringify({
    Network: "10.0.0.0/16",
    Backend: { type: "extension", subnetaddcommand: "a", SUBNETREMOVECOMMAND: "r" },
  })));
  assert.deepEqual(cfg, {
    preStartupCommand: "",
    postStartupCommand: "",
    subnetAddCommand: "a",
    subnetRemoveCommand: "r",
    commandTimeoutMs: 30_000,
    maxParallelCommands: 4,
    stateDir: "/run/weft/extension",
  });
});

Deno.test("parseExtensionConfig() names Backend.<Key>, the value and what is expected", () => {
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ SubnetAddCommand: ["ip", "route"] }, "Backend.SubnetAddCommand", /shell command line/],
    [
      { CommandTimeoutSeconds: 0 },
      "Backend.CommandTimeoutSeconds",
      /more than 0.*current value is 0/,
    ],
    [{ CommandTimeoutSeconds: "30s" }, "Backend.CommandTimeoutSeconds", /number of seconds.*"30s"/],
    [{ MaxParallelCommands: 1.5 }, "Backend.MaxParallelCommands", /whole number.*1\.5/],
    [{ MaxParallelCommands: 0 }, "Backend.MaxParallelCommands", /at least 1/],
    [{ StateDir: "run/weft" }, "Backend.StateDir", /absolute directory path.*"run\/weft"/],
  ];
  for (const [extra, key, message] of cases) {
    const config = parseNetworkConfig(
      JSON.stringify({ Network: "10.0.0.0/16", Backend: { Type: "extension", ...extra } }),
    );
    assert.throws(() => parseExtensionConfig(config), (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.equal(e.path, key);
      assert.match(e.message, message);
      assert.match(e.message, /backend extension/);
      return true;
    }, JSON.stringify(extra));
  }
});

Deno.test("peerStates() keeps extension peers, skips this host and other backends or non-string BackendData", () => {
  const own = peer("10.5.1.0/24", "192.0.2.11", "own");
  const dual: Lease = {
    ...peer("10.5.4.0/24", "192.0.2.14", undefined),
    ipv6Subnet: parseIPv6Net("fd00:5:4::/64"),
    attrs: { publicIP: "192.0.2.14", publicIPv6: "2001:db8::14", backendType: "extension" },
  };
  const { peers, skipped } = peerStates(own, [
    own,
    A,
    dual,
    peerLease("10.5.5.0/24", "192.0.2.15", "vxlan"),
    peer("10.5.6.0/24", "192.0.2.16", { VtepMAC: "x" }),
  ]);
  assert.deepEqual([...peers], [
    ["10.5.2.0-24", {
      subnet: "10.5.2.0/24",
      ipv6Subnet: null,
      publicIP: "192.0.2.12",
      publicIPv6: null,
      backendData: "02:00:00:00:00:02",
    }],
    ["10.5.4.0-24&fd00:5:4::-64", {
      subnet: "10.5.4.0/24",
      ipv6Subnet: "fd00:5:4::/64",
      publicIP: "192.0.2.14",
      publicIPv6: "2001:db8::14",
      backendData: "",
    }],
  ]);
  assert.deepEqual(skipped.map((s) => s.reason), [
    'backend type is "vxlan", not "extension"',
    'BackendData {"VtepMAC":"x"} is not a JSON string (flannel\'s extension backend writes PreStartupCommand\'s output as one)',
  ]);
});

Deno.test("register: PreStartupCommand's trimmed stdout is the lease's BackendData, written as flannel writes it", async () => {
  const dir = tempDir();
  const calls: string[] = [];
  const fake = new FakeCommandRunner((spec) => {
    calls.push(spec.command);
    return spec.command === "pre" ? { stdout: " \n02:42:ac:11:00:02\n\u0085", stderr: "note" } : {};
  });
  try {
    const s = await start({
      backend: { PreStartupCommand: "pre", PostStartupCommand: "post" },
      stateDir: dir,
      fake,
    });
    assert.deepEqual(calls, ["pre", "post"], "pre before the lease, post after it");
    assert.equal(s.ctx.acquired.length, 1);
    assert.equal(
      encodeLeaseAttrs(s.ctx.acquired[0]),
      '{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"extension","BackendData":"02:42:ac:11:00:02"}',
    );
    const [pre, post] = fake.calls;
    assert.equal(pre.stdin, "\n", "flannel writes an empty stdin and a newline");
    assert.deepEqual(pre.env, {});
    assert.equal(post.stdin, "\n");
    assert.deepEqual(post.env, {
      NETWORK: "10.5.0.0/16",
      SUBNET: "10.5.1.0/24",
      IPV6SUBNET: "",
      PUBLIC_IP: "192.0.2.11",
      PUBLIC_IPV6: "",
    });
    assert.equal(s.net.mtu, 1500, "MTU is the external interface's, as flannel");
    await s.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("register: without PreStartupCommand the lease has no BackendData; an empty output is an empty string", async () => {
  const dir = tempDir();
  try {
    const none = await start({ backend: { SubnetAddCommand: ADD }, stateDir: dir });
    assert.equal(
      encodeLeaseAttrs(none.ctx.acquired[0]),
      '{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"extension"}',
    );
    await none.stop();
    const empty = await start({ backend: { PreStartupCommand: "true" }, stateDir: dir });
    assert.equal(
      encodeLeaseAttrs(empty.ctx.acquired[0]),
      '{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"extension","BackendData":""}',
    );
    await empty.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("register: a failing PreStartupCommand fails registration with exit status and stderr, counted, before any lease", async () => {
  const dir = tempDir();
  const clock = new FakeClock();
  const fake = new FakeCommandRunner(() => ({ exitCode: 2, stderr: "Cannot find device\n" }));
  const ctx = testContext({
    backend: { Type: "extension", StateDir: dir, PreStartupCommand: "ip link show nope" },
    ext: EXT,
    subnet: "10.5.1.0/24",
    clock,
  });
  try {
    await assert.rejects(
      () => extensionBackend({ runner: fake.runner }).register(ctx),
      (e: unknown) => {
        assert.ok(e instanceof ExtensionCommandError, String(e));
        assert.equal(
          e.message,
          'PreStartupCommand "ip link show nope" failed: exit status 2: Cannot find device; fix the command in Backend.PreStartupCommand or what it depends on',
        );
        return true;
      },
    );
    assert.equal(ctx.acquired.length, 0, "no lease without BackendData");
    const text = ctx.metrics.render();
    assert.match(
      text,
      /weft_extension_commands_total\{command="PreStartupCommand",result="failure"\} 1/,
    );
    assert.match(text, /weft_extension_commands_failing\{command="PreStartupCommand"\} 1/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("a peer's add gets its BackendData on stdin and flannel's env, and runs once per peer state", async () => {
  const dir = tempDir();
  try {
    const s = await start({ backend: { SubnetAddCommand: ADD }, stateDir: dir });
    await s.net.syncPeers([A, B]);
    await s.net.idle();
    assert.deepEqual(
      s.fake.calls.map((c) => [c.command, c.env, c.stdin]),
      [
        [ADD, {
          SUBNET: "10.5.2.0/24",
          IPV6SUBNET: "",
          PUBLIC_IP: "192.0.2.12",
          PUBLIC_IPV6: "",
        }, "02:00:00:00:00:02\n"],
        [ADD, {
          SUBNET: "10.5.3.0/24",
          IPV6SUBNET: "",
          PUBLIC_IP: "192.0.2.13",
          PUBLIC_IPV6: "",
        }, "02:00:00:00:00:03\n"],
      ],
    );
    // a resync, and a lease renewal (new expiry, same attributes), run nothing
    await s.net.syncPeers([A, B]);
    await s.net.syncPeers([{ ...A, expiration: 123 }, B]);
    await s.net.updatePeers([{ type: "added", lease: { ...B, expiration: 456 } }]);
    await s.net.idle();
    assert.equal(s.fake.calls.length, 2);
    assert.equal(s.net.notReadyReason(), null);
    await s.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("a failed add is retried with back-off, logged with exit status and stderr, counted, and shown until it succeeds", async () => {
  const dir = tempDir();
  let failures = 2;
  const fake = new FakeCommandRunner(() =>
    failures-- > 0 ? { exitCode: 2, stderr: "RTNETLINK answers: Network is unreachable\n" } : {}
  );
  try {
    const s = await start({ backend: { SubnetAddCommand: ADD }, stateDir: dir, fake });
    await s.net.syncPeers([A]);
    await s.net.idle();
    assert.equal(fake.calls.length, 1);
    assert.equal(
      s.net.notReadyReason(),
      "SubnetAddCommand for 10.5.2.0/24 (192.0.2.12) keeps failing: exit status 2: RTNETLINK answers: Network is unreachable (1 attempt(s), next try in 1 s)",
    );
    const metrics = () => s.ctx.metrics.render();
    assert.match(metrics(), /weft_extension_commands_failing\{command="SubnetAddCommand"\} 1/);
    const warn = s.ctx.logger.lines.find((l) => l.includes("SubnetAddCommand failed, retrying"));
    assert.ok(warn, s.ctx.logger.lines.join("\n"));
    assert.match(warn, /exitCode=2/);
    assert.match(warn, /stderr="RTNETLINK answers: Network is unreachable"/);
    assert.match(warn, /retryInMs=1000/);

    await s.clock.advance(999);
    assert.equal(fake.calls.length, 1, "no retry before the back-off has passed");
    await s.clock.advance(1);
    await s.net.idle();
    assert.equal(fake.calls.length, 2, "first retry after 1 s");
    assert.match(s.net.notReadyReason()!, /2 attempt\(s\), next try in 2 s/);
    await s.clock.advance(1999);
    assert.equal(fake.calls.length, 2);
    await s.clock.advance(1);
    await s.net.idle();
    assert.equal(fake.calls.length, 3, "second retry 2 s later");
    assert.equal(s.net.notReadyReason(), null);
    assert.match(
      metrics(),
      /weft_extension_commands_total\{command="SubnetAddCommand",result="failure"\} 2/,
    );
    assert.match(
      metrics(),
      /weft_extension_commands_total\{command="SubnetAddCommand",result="success"\} 1/,
    );
    assert.match(metrics(), /weft_extension_commands_failing\{command="SubnetAddCommand"\} 0/);
    assert.ok(s.ctx.logger.lines.some((l) => l.includes("succeeded after 2 failed attempt(s)")));
    await s.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("a command over its time limit is killed, reported as a timeout, and retried", async () => {
  const dir = tempDir();
  const fake = new FakeCommandRunner(() => "hang");
  try {
    const s = await start({
      backend: { SubnetAddCommand: "sleep 600", CommandTimeoutSeconds: 5 },
      stateDir: dir,
      fake,
    });
    await s.net.syncPeers([A]);
    await s.clock.advance(4999);
    assert.equal(fake.calls[0].running, true, "still within its 5 s");
    assert.match(s.net.notReadyReason()!, /running the first extension commands for 1 peer/);
    await s.clock.advance(1);
    assert.equal(fake.calls[0].killed, true, "killed at 5 s");
    assert.match(
      s.net.notReadyReason()!,
      /^SubnetAddCommand for 10\.5\.2\.0\/24 \(192\.0\.2\.12\) keeps failing: timed out after 5 s \(process group killed; raise Backend\.CommandTimeoutSeconds if it needs longer\)/,
    );
    assert.match(
      s.ctx.metrics.render(),
      /weft_extension_commands_total\{command="SubnetAddCommand",result="timeout"\} 1/,
    );
    assert.ok(s.ctx.logger.lines.some((l) => l.includes("result=timeout")));
    fake.setScript(() => ({}));
    await s.clock.advance(1000);
    await s.net.idle();
    assert.equal(fake.calls.length, 2);
    assert.equal(s.net.notReadyReason(), null);
    await s.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("a peer removed while weft was down gets its remove once after the restart, with the stdin and env of its add", async () => {
  const dir = tempDir();
  try {
    const first = await start({
      backend: { SubnetAddCommand: ADD, SubnetRemoveCommand: REMOVE },
      stateDir: dir,
    });
    await first.net.syncPeers([A, B]);
    await first.net.idle();
    await first.stop();
    assert.equal(first.fake.calls.length, 2);

    // restart: B left while weft was down
    const second = await start({
      backend: { SubnetAddCommand: ADD, SubnetRemoveCommand: REMOVE },
      stateDir: dir,
    });
    await second.net.syncPeers([A]);
    await second.net.idle();
    assert.deepEqual(
      second.fake.calls.map((c) => [c.command, c.env.SUBNET, c.env.PUBLIC_IP, c.stdin]),
      [[REMOVE, "10.5.3.0/24", "192.0.2.13", "02:00:00:00:00:03\n"]],
      "A's add is not run again; B's remove runs",
    );
    await second.stop();

    // another restart: nothing left to do
    const third = await start({
      backend: { SubnetAddCommand: ADD, SubnetRemoveCommand: REMOVE },
      stateDir: dir,
    });
    await third.net.syncPeers([A]);
    await third.net.idle();
    assert.deepEqual(third.fake.calls, []);
    assert.deepEqual([...third.net.applied().keys()], ["10.5.2.0-24"]);
    await third.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("a remove that kept failing until shutdown runs after the restart, then never again", async () => {
  const dir = tempDir();
  const backend = { SubnetAddCommand: ADD, SubnetRemoveCommand: REMOVE };
  try {
    const first = await start({ backend, stateDir: dir });
    await first.net.syncPeers([A]);
    await first.net.idle();
    first.fake.setScript(() => ({ exitCode: 1, stderr: "busy" }));
    await first.net.syncPeers([]);
    await first.net.idle();
    assert.equal(first.fake.callsOf(REMOVE).length, 1);
    assert.match(
      first.net.notReadyReason()!,
      /SubnetRemoveCommand .* keeps failing: exit status 1: busy/,
    );
    await first.stop();

    const second = await start({ backend, stateDir: dir });
    await second.net.syncPeers([]);
    await second.net.idle();
    assert.equal(second.fake.callsOf(REMOVE).length, 1, "the remove runs again after the restart");
    await second.stop();

    const third = await start({ backend, stateDir: dir });
    await third.net.syncPeers([]);
    await third.net.idle();
    assert.deepEqual(third.fake.calls, [], "and only once");
    await third.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("a changed peer gets remove with its old state, then add with the new one", async () => {
  const dir = tempDir();
  try {
    const s = await start({
      backend: { SubnetAddCommand: ADD, SubnetRemoveCommand: REMOVE },
      stateDir: dir,
    });
    await s.net.syncPeers([A]);
    await s.net.idle();
    const moved = peer("10.5.2.0/24", "192.0.2.99", "02:00:00:00:00:99");
    await s.net.syncPeers([moved]);
    await s.net.idle();
    assert.deepEqual(
      s.fake.calls.map((c) => [c.command, c.env.PUBLIC_IP, c.stdin]),
      [
        [ADD, "192.0.2.12", "02:00:00:00:00:02\n"],
        [REMOVE, "192.0.2.12", "02:00:00:00:00:02\n"],
        [ADD, "192.0.2.99", "02:00:00:00:00:99\n"],
      ],
    );
    await s.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("a peer that leaves while its add keeps failing stops being retried and gets no remove", async () => {
  const dir = tempDir();
  const fake = new FakeCommandRunner((spec) => (spec.command === ADD ? { exitCode: 1 } : {}));
  try {
    const s = await start({
      backend: { SubnetAddCommand: ADD, SubnetRemoveCommand: REMOVE },
      stateDir: dir,
      fake,
    });
    await s.net.syncPeers([A]);
    await s.net.idle();
    assert.ok(s.net.notReadyReason());
    await s.net.updatePeers([{ type: "removed", lease: A }]);
    await s.clock.advance(60_000);
    await s.net.idle();
    assert.deepEqual(fake.calls.map((c) => c.command), [ADD]);
    assert.equal(s.net.notReadyReason(), null);
    assert.match(s.ctx.metrics.render(), /commands_failing\{command="SubnetAddCommand"\} 0/);
    await s.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("a new PreStartupCommand output (the datapath was rebuilt) runs every add again, and no remove", async () => {
  const dir = tempDir();
  let mac = "02:00:00:00:01:01";
  const script = (spec: { command: string }) => (spec.command === "pre" ? { stdout: mac } : {});
  const backend = { PreStartupCommand: "pre", SubnetAddCommand: ADD, SubnetRemoveCommand: REMOVE };
  try {
    const first = await start({ backend, stateDir: dir, fake: new FakeCommandRunner(script) });
    await first.net.syncPeers([A, B]);
    await first.net.idle();
    await first.stop();

    const same = await start({ backend, stateDir: dir, fake: new FakeCommandRunner(script) });
    await same.net.syncPeers([A, B]);
    await same.net.idle();
    assert.deepEqual(same.fake.calls.map((c) => c.command), ["pre"], "same BackendData: no replay");
    await same.stop();

    mac = "02:00:00:00:01:02";
    const rebuilt = await start({ backend, stateDir: dir, fake: new FakeCommandRunner(script) });
    await rebuilt.net.syncPeers([A]);
    await rebuilt.net.idle();
    assert.deepEqual(
      rebuilt.fake.calls.map((c) => [c.command, c.env.SUBNET ?? ""]),
      [["pre", ""], [ADD, "10.5.2.0/24"]],
    );
    await rebuilt.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("at most MaxParallelCommands peer commands run at once", async () => {
  const dir = tempDir();
  const fake = new FakeCommandRunner(() => "hang");
  try {
    const s = await start({
      backend: { SubnetAddCommand: ADD, MaxParallelCommands: 2 },
      stateDir: dir,
      fake,
    });
    const leases = [2, 3, 4, 5, 6].map((i) => peer(`10.5.${i}.0/24`, `192.0.2.${10 + i}`, "x"));
    await s.net.syncPeers(leases);
    await s.clock.advance(0);
    assert.equal(fake.running, 2);
    fake.releaseHung(); // two finish, two more start
    await s.clock.advance(0);
    assert.deepEqual([fake.calls.length, fake.running], [4, 2]);
    fake.releaseHung(); // two finish, the last one starts
    await s.clock.advance(0);
    assert.deepEqual([fake.calls.length, fake.running], [5, 1]);
    fake.releaseHung();
    await s.net.idle();
    assert.equal(fake.calls.length, 5);
    assert.equal(fake.maxConcurrent, 2);
    assert.equal(s.net.applied().size, 5);
    await s.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("stopping waits for a running command and records its result, so the restart does not run it again", async () => {
  const dir = tempDir();
  const fake = new FakeCommandRunner(() => "hang");
  try {
    const s = await start({ backend: { SubnetAddCommand: ADD }, stateDir: dir, fake });
    await s.net.syncPeers([A]);
    await s.clock.advance(0);
    let stopped = false;
    const stopping = s.stop().then(() => (stopped = true));
    await s.clock.advance(0);
    assert.equal(stopped, false, "stop waits for the command");
    fake.releaseHung();
    await stopping;

    const again = await start({ backend: { SubnetAddCommand: ADD }, stateDir: dir });
    await again.net.syncPeers([A]);
    await again.net.idle();
    assert.deepEqual(again.fake.calls, []);
    await again.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("an unwritable state directory is reported in notReadyReason, commands still run", async () => {
  const dir = tempDir();
  const blocker = path.join(dir, "file");
  fs.writeFileSync(blocker, "");
  try {
    const s = await start({
      backend: { SubnetAddCommand: ADD },
      stateDir: path.join(blocker, "state"),
    });
    await s.net.syncPeers([A]);
    await s.net.idle();
    assert.equal(s.fake.calls.length, 1);
    assert.match(
      s.net.notReadyReason()!,
      /^cannot write the extension state .*file\/state\/192\.0\.2\.11\.json: .*set Backend\.StateDir$/,
    );
    await s.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("updatePeers() adds and removes single peers without touching the rest", async () => {
  const dir = tempDir();
  try {
    const s = await start({
      backend: { SubnetAddCommand: ADD, SubnetRemoveCommand: REMOVE },
      stateDir: dir,
    });
    await s.net.syncPeers([A]);
    await s.net.idle();
    await s.net.updatePeers([{ type: "added", lease: B }, { type: "removed", lease: A }]);
    await s.net.idle();
    assert.deepEqual(
      s.fake.calls.map((c) => `${c.command === ADD ? "add" : "remove"} ${c.env.SUBNET}`),
      ["add 10.5.2.0/24", "add 10.5.3.0/24", "remove 10.5.2.0/24"],
    );
    assert.deepEqual([...s.net.applied().keys()], ["10.5.3.0-24"]);
    assert.equal(parseIPv4Net(s.net.applied().get("10.5.3.0-24")!.subnet).prefixLen, 24);
    await s.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("notReadyReason() names the oldest failing command and how many more fail", async () => {
  const dir = tempDir();
  const fake = new FakeCommandRunner((spec) => ({ exitCode: 1, stderr: `no ${spec.env.SUBNET}` }));
  try {
    const s = await start({ backend: { SubnetAddCommand: ADD }, stateDir: dir, fake });
    await s.net.syncPeers([A, B]);
    await s.net.idle();
    assert.equal(
      s.net.notReadyReason(),
      "SubnetAddCommand for 10.5.2.0/24 (192.0.2.12) keeps failing: exit status 1: no 10.5.2.0/24 (1 attempt(s), next try in 1 s) (and 1 more failing)",
    );
    assert.match(s.ctx.metrics.render(), /commands_failing\{command="SubnetAddCommand"\} 2/);
    await s.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("registering again (the lease was lost) first waits for the previous network's running command", async () => {
  const dir = tempDir();
  const clock = new FakeClock();
  const fake = new FakeCommandRunner((spec) => (spec.command === ADD ? "hang" : {}));
  const backend = { PreStartupCommand: "pre", SubnetAddCommand: ADD };
  try {
    const first = await start({ backend, stateDir: dir, fake, clock });
    await first.net.syncPeers([A]);
    await clock.advance(0);
    assert.equal(fake.running, 1);
    let registered = false;
    const second = start({ backend, stateDir: dir, fake, clock }).then((s) => {
      registered = true;
      return s;
    });
    await clock.advance(0);
    assert.equal(registered, false, "waits for the running add");
    assert.equal(fake.callsOf("pre").length, 1, "its PreStartupCommand has not run yet");
    fake.releaseHung();
    const s2 = await second;
    assert.equal(fake.callsOf("pre").length, 2);
    await s2.net.syncPeers([A]);
    await s2.net.idle();
    assert.equal(fake.callsOf(ADD).length, 1, "the add the first network finished is recorded");
    await first.stop();
    await s2.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("without SubnetRemoveCommand a changed peer gets only its new add, and a gone one is forgotten", async () => {
  const dir = tempDir();
  try {
    const s = await start({ backend: { SubnetAddCommand: ADD }, stateDir: dir });
    await s.net.syncPeers([A]);
    await s.net.idle();
    await s.net.syncPeers([peer("10.5.2.0/24", "192.0.2.12", "new")]);
    await s.net.idle();
    assert.deepEqual(s.fake.calls.map((c) => c.stdin), ["02:00:00:00:00:02\n", "new\n"]);
    await s.net.syncPeers([]);
    await s.net.idle();
    assert.equal(s.fake.calls.length, 2);
    assert.equal(s.net.applied().size, 0);
    await s.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
