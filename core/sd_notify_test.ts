import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import {
  formatNotifyState,
  notifySocketAddress,
  sdNotify,
  sdNotifyReady,
  sdNotifyStatus,
  sdNotifyStopping,
} from "./sd_notify.ts";
import { SyscallError } from "./errno.ts";

const BUN = path.resolve(
  path.dirname(new URL(import.meta.url).pathname),
  "../node_modules/.bin/bun",
);

/**
 * A receiver independent of weft's FFI: python3 binds a unix datagram
 * socket at `address` (`@name` = abstract), says "bound", and prints each
 * datagram as a JSON string on its own line until it has `count` of them.
 */
function pythonReceiver(address: string, count: number) {
  const script = `
import json, socket, sys
addr = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\\0" + addr[1:] if addr.startswith("@") else addr)
s.settimeout(20)
print("bound", flush=True)
for _ in range(int(sys.argv[2])):
    print(json.dumps(s.recv(4096).decode()), flush=True)
`;
  const child = spawn("python3", ["-c", script, address, String(count)], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  const changed: (() => void)[] = [];
  child.stdout.on("data", (c: Uint8Array) => {
    out += new TextDecoder().decode(c);
    changed.splice(0).forEach((f) => f());
  });
  child.stderr.on("data", (c: Uint8Array) => (err += new TextDecoder().decode(c)));
  const exited = new Promise<number>((r) => child.on("close", (code) => r(code ?? 1)));
  exited.then(() => changed.splice(0).forEach((f) => f()));
  let done = false;
  exited.then(() => (done = true));
  const lines = () => out.split("\n").filter(Boolean);
  return {
    async bound() {
      while (!lines().includes("bound")) {
        if (done) throw new Error(`python receiver ended before binding: ${err}`);
        await new Promise<void>((r) => changed.push(r));
      }
    },
    async messages(): Promise<string[]> {
      const code = await exited;
      assert.equal(code, 0, `python receiver failed: ${err}`);
      return lines().filter((l) => l !== "bound").map((l) => JSON.parse(l));
    },
  };
}

const tempDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "weft-notify-"));
const uniqueName = () => `weft-notify-test-${process.pid}-${Math.random().toString(36).slice(2)}`;

Deno.test("formatNotifyState() joins KEY=value lines in order", () => {
  assert.equal(formatNotifyState({ READY: 1 }), "READY=1");
  assert.equal(
    formatNotifyState({ READY: 1, STATUS: "lease 10.5.3.0/24, 2 peers" }),
    "READY=1\nSTATUS=lease 10.5.3.0/24, 2 peers",
  );
  assert.equal(formatNotifyState({ STOPPING: 1, STATUS: "" }), "STOPPING=1\nSTATUS=");
});

Deno.test("formatNotifyState() rejects keys that are not upper-case words, multi-line values and nothing", () => {
  assert.throws(() => formatNotifyState({ ready: 1 }), /keys are upper-case words.*"ready"/);
  assert.throws(() => formatNotifyState({ "READY=1\nX": 1 }), /keys are upper-case/);
  assert.throws(
    () => formatNotifyState({ STATUS: "a\nREADY=1" }),
    /value of STATUS must be one line, current value is "a\\nREADY=1"/,
  );
  assert.throws(() => formatNotifyState({}), /state is empty/);
});

Deno.test("notifySocketAddress() encodes a path with its terminator and an abstract name after a NUL", () => {
  const p = notifySocketAddress("/run/systemd/notify");
  assert.equal(p.length, 2 + "/run/systemd/notify".length + 1);
  assert.deepEqual([...p.address.subarray(0, 2)], [1, 0]); // AF_UNIX, little-endian
  assert.equal(
    new TextDecoder().decode(p.address.subarray(2, p.length - 1)),
    "/run/systemd/notify",
  );
  assert.equal(p.address[p.length - 1], 0);

  const a = notifySocketAddress("@weft/x");
  assert.equal(a.length, 2 + 1 + 6);
  assert.deepEqual([...a.address.subarray(0, 3)], [1, 0, 0]);
  assert.equal(new TextDecoder().decode(a.address.subarray(3, a.length)), "weft/x");
});

Deno.test("notifySocketAddress() rejects relative paths, vsock, empty and over-long names", () => {
  assert.throws(
    () => notifySocketAddress("run/notify"),
    /absolute path or an abstract name.*"run\/notify"/,
  );
  assert.throws(() => notifySocketAddress("vsock:2:1234"), /does not speak vsock/);
  assert.throws(() => notifySocketAddress("@"), /1 to 107 bytes/);
  assert.equal(notifySocketAddress("/" + "x".repeat(106)).length, 110);
  assert.throws(() => notifySocketAddress("/" + "x".repeat(107)), /1 to 107 bytes.*\(108 bytes\)/);
  assert.equal(notifySocketAddress("@" + "x".repeat(107)).length, 110);
  assert.throws(() => notifySocketAddress("@" + "x".repeat(108)), /\(108 bytes\)/);
});

Deno.test("sdNotify() does nothing and returns false without NOTIFY_SOCKET", async () => {
  assert.equal(await sdNotify({ READY: 1 }, { env: {} }), false);
  assert.equal(await sdNotifyReady("x", { env: { NOTIFY_SOCKET: "" } }), false);
});

Deno.test("sdNotify() delivers READY, STATUS and STOPPING to a socket at a path", async () => {
  const dir = tempDir();
  try {
    const socket = path.join(dir, "notify");
    const rx = pythonReceiver(socket, 3);
    await rx.bound();
    const env = { NOTIFY_SOCKET: socket };
    assert.equal(await sdNotifyReady("lease 10.5.3.0/24", { env }), true);
    assert.equal(await sdNotifyStatus("2 peers", { env }), true);
    assert.equal(await sdNotifyStopping(undefined, { env }), true);
    assert.deepEqual(await rx.messages(), [
      "READY=1\nSTATUS=lease 10.5.3.0/24",
      "STATUS=2 peers",
      "STOPPING=1",
    ]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("sdNotify() reaches an abstract socket (@name), from Deno and from Bun", async () => {
  const name = `@${uniqueName()}`;
  const rx = pythonReceiver(name, 2);
  await rx.bound();
  assert.equal(await sdNotifyReady(undefined, { env: { NOTIFY_SOCKET: name } }), true);
  const module = new URL("./sd_notify.ts", import.meta.url).href;
  const bun = spawn(BUN, [
    "-e",
    `const m = await import(${
      JSON.stringify(module)
    }); console.log(await m.sdNotifyStatus("from bun"));`,
  ], { env: { ...process.env, NOTIFY_SOCKET: name }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  bun.stdout.on("data", (c: Uint8Array) => (out += new TextDecoder().decode(c)));
  bun.stderr.on("data", (c: Uint8Array) => (err += new TextDecoder().decode(c)));
  const code = await new Promise<number>((r) => bun.on("close", (c) => r(c ?? 1)));
  assert.equal(code, 0, `bun failed: ${err}`);
  assert.equal(out.trim(), "true");
  assert.deepEqual(await rx.messages(), ["READY=1", "STATUS=from bun"]);
});

Deno.test("sdNotify() names the socket and errno when nothing listens there", async () => {
  const dir = tempDir();
  try {
    const missing = path.join(dir, "gone");
    await assert.rejects(
      sdNotifyReady(undefined, { env: { NOTIFY_SOCKET: missing } }),
      (e: unknown) => {
        assert.ok(e instanceof SyscallError);
        assert.equal(e.code, "ENOENT");
        assert.match(
          e.message,
          new RegExp(`sendto\\(NOTIFY_SOCKET=${missing}\\) failed with ENOENT`),
        );
        return true;
      },
    );
    await assert.rejects(
      sdNotify({ READY: 1 }, { env: { NOTIFY_SOCKET: "relative" } }),
      TypeError,
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
