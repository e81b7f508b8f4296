import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { notifyAddress, sdNotify } from "./notify.ts";

/** A python3 receiver bound to a unix datagram socket: resolves with the first datagram. */
function receiver(address: string): { bound: Promise<void>; message: Promise<string> } {
  const bindTo = address.startsWith("@") ? `"\\0${address.slice(1)}"` : JSON.stringify(address);
  const code = [
    "import socket, sys",
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)",
    `s.bind(${bindTo})`,
    "s.settimeout(10)",
    "print('bound', flush=True)",
    "print(s.recv(4096).decode(), flush=True)",
  ].join("\n");
  const child = spawn("python3", ["-c", code], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  let onBound: () => void;
  const bound = new Promise<void>((r) => (onBound = r));
  child.stdout.on("data", (c: Uint8Array) => {
    out += new TextDecoder().decode(c);
    if (out.startsWith("bound\n")) onBound();
  });
  child.stderr.on("data", (c: Uint8Array) => (err += new TextDecoder().decode(c)));
  const message = new Promise<string>((resolve, reject) =>
    child.on(
      "close",
      (code: number) =>
        code === 0
          ? resolve(out.slice("bound\n".length).replace(/\n$/, ""))
          : reject(new Error(`receiver exited ${code}: ${err}`)),
    )
  );
  return { bound, message };
}

Deno.test("notifyAddress() encodes a path with its NUL and an abstract name without one", () => {
  const p = notifyAddress("/run/x");
  assert.equal(p.length, 2 + 6 + 1);
  assert.deepEqual([...p.bytes.subarray(0, 9)], [1, 0, ...new TextEncoder().encode("/run/x"), 0]);
  const a = notifyAddress("@sd");
  assert.equal(a.length, 2 + 3);
  assert.deepEqual([...a.bytes.subarray(0, 5)], [1, 0, 0, ...new TextEncoder().encode("sd")]);
  assert.throws(() => notifyAddress("relative"), /absolute path or @name.*"relative"/);
  assert.throws(() => notifyAddress("/" + "x".repeat(200)), /longer than 107 bytes/);
});

Deno.test("sdNotify() sends nothing without NOTIFY_SOCKET", async () => {
  assert.equal(await sdNotify("READY=1", {}), false);
  assert.equal(await sdNotify("READY=1", { NOTIFY_SOCKET: "" }), false);
});

Deno.test("sdNotify() delivers READY=1 to a socket path and to an abstract name", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-notify-"));
  try {
    for (const address of [path.join(dir, "notify"), `@weft-notify-${process.pid}`]) {
      const r = receiver(address);
      await r.bound;
      assert.equal(await sdNotify("READY=1", { NOTIFY_SOCKET: address }), true);
      assert.equal(await r.message, "READY=1", address);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("sdNotify() names the socket and the errno when nobody listens", async () => {
  await assert.rejects(
    sdNotify("READY=1", { NOTIFY_SOCKET: "/nonexistent/weft/notify" }),
    /NOTIFY_SOCKET=\/nonexistent\/weft\/notify: sendto failed with ENOENT/,
  );
});
