/**
 * The extension backend with real `sh` and the real clock: a failing and a
 * hanging command, end to end through register, syncPeers and run.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { systemClock } from "../../core/clock.ts";
import { peerLease, testContext } from "../../testing/routing.ts";
import type { Lease } from "../../lease/types.ts";
import { extensionBackend, type ExtensionNetwork } from "./backend.ts";

function peer(subnet: string, publicIP: string, data: string): Lease {
  const base = peerLease(subnet, publicIP, "extension");
  return { ...base, attrs: { ...base.attrs, backendData: data } };
}

async function until<T>(what: string, check: () => T | null, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v !== null) return v;
    if (Date.now() > end) throw new Error(`${what}: not true after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

async function withNetwork(
  backend: Record<string, unknown>,
  fn: (net: ExtensionNetwork, ctx: ReturnType<typeof testContext>, dir: string) => Promise<void>,
): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-ext-sh-"));
  const ctx = testContext({
    backend: { Type: "extension", StateDir: path.join(dir, "state"), ...backend },
    ext: { name: "eth0", index: 2, mtu: 1500, ifaceAddr: "192.0.2.11", extAddr: "192.0.2.11" },
    subnet: "10.5.1.0/24",
    clock: systemClock,
  });
  const net = await extensionBackend({ retryBaseMs: 100, retryMaxMs: 200 }).register(
    ctx,
  ) as ExtensionNetwork;
  const ac = new AbortController();
  const running = net.run(ac.signal);
  try {
    await fn(net, ctx, dir);
  } finally {
    ac.abort();
    await running;
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

Deno.test("real sh: a failing SubnetAddCommand is retried, reported with exit status and stderr, and recovers once fixed", async () => {
  const flag = () => path.join(os.tmpdir(), `weft-ext-sh-ok-${Deno.pid}`);
  fs.rmSync(flag(), { force: true });
  await withNetwork({
    SubnetAddCommand:
      `read DATA; test -e ${flag()} || { echo "no route to $SUBNET ($DATA)" >&2; exit 7; }; echo "$SUBNET $DATA" >> "$OUT"`,
  }, async (net, ctx, dir) => {
    const out = path.join(dir, "out");
    // $OUT comes from weft's own environment, which commands inherit
    Deno.env.set("OUT", out);
    try {
      await net.syncPeers([peer("10.5.2.0/24", "192.0.2.12", "02:00:00:00:00:02")]);
      const reason = await until("a failure is reported", () => {
        const r = net.notReadyReason();
        return r && /attempt/.test(r) ? r : null;
      });
      assert.match(
        reason,
        /^SubnetAddCommand for 10\.5\.2\.0\/24 \(192\.0\.2\.12\) keeps failing: exit status 7: no route to 10\.5\.2\.0\/24 \(02:00:00:00:00:02\) \(\d+ attempt\(s\)/,
      );
      await until(
        "a retry",
        () => /result="failure"\} ([2-9]|\d\d)/.test(ctx.metrics.render()) ? true : null,
      );
      fs.writeFileSync(flag(), "");
      await until("recovery", () => (net.notReadyReason() === null ? true : null));
      assert.equal(fs.readFileSync(out, "utf8"), "10.5.2.0/24 02:00:00:00:00:02\n");
      const text = ctx.metrics.render();
      assert.match(
        text,
        /weft_extension_commands_total\{command="SubnetAddCommand",result="success"\} 1/,
      );
      assert.match(text, /weft_extension_commands_failing\{command="SubnetAddCommand"\} 0/);
      const warn = ctx.logger.lines.find((l) => l.includes("SubnetAddCommand failed, retrying"))!;
      assert.match(warn, /exitCode=7 /);
      assert.match(warn, /stderr="no route to 10\.5\.2\.0\/24 \(02:00:00:00:00:02\)"/);
    } finally {
      Deno.env.delete("OUT");
      fs.rmSync(flag(), { force: true });
    }
  });
});

Deno.test("real sh: a hanging SubnetAddCommand is killed with its process group at the time limit and reported", async () => {
  await withNetwork({
    SubnetAddCommand: `sleep 600 & echo $! >> "$PIDS"; echo $$ >> "$PIDS"; wait`,
    CommandTimeoutSeconds: 0.3,
  }, async (net, ctx, dir) => {
    const pids = path.join(dir, "pids");
    Deno.env.set("PIDS", pids);
    try {
      const t0 = Date.now();
      await net.syncPeers([peer("10.5.2.0/24", "192.0.2.12", "x")]);
      const reason = await until("the timeout is reported", () => {
        const r = net.notReadyReason();
        return r && /timed out/.test(r) ? r : null;
      });
      const elapsed = Date.now() - t0;
      assert.ok(elapsed >= 300, `reported after ${elapsed} ms, before the 0.3 s limit`);
      assert.match(
        reason,
        /^SubnetAddCommand for 10\.5\.2\.0\/24 \(192\.0\.2\.12\) keeps failing: timed out after 0\.3 s \(process group killed; raise Backend\.CommandTimeoutSeconds if it needs longer\)/,
      );
      const [sleepPid, shPid] = fs.readFileSync(pids, "utf8").trim().split("\n").map(Number);
      await until(
        "the first run's sleep and shell are dead",
        () => !alive(sleepPid) && !alive(shPid) ? true : null,
      );
      assert.match(
        ctx.metrics.render(),
        /weft_extension_commands_total\{command="SubnetAddCommand",result="timeout"\} [1-9]/,
      );
      assert.ok(ctx.logger.lines.some((l) => /failed, retrying.*result=timeout/.test(l)));
    } finally {
      Deno.env.delete("PIDS");
    }
  });
});
