import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import type { Exec, ExecOptions } from "../../core/exec.ts";
import { userspaceDriver } from "./driver.ts";

/** A UAPI server answering `get=1` on `<dir>/<dev>.sock`. */
async function fakeWireguardGo(sock: string): Promise<net.Server> {
  const server = net.createServer((c) => {
    c.setEncoding("utf8");
    let req = "";
    c.on("data", (d: string) => {
      req += d;
      if (req.endsWith("\n\n")) c.end("listen_port=51820\nerrno=0\n\n");
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  return server;
}

const closeServer = (s: net.Server) => new Promise<void>((r) => s.close(() => r()));

Deno.test("ensure() leaves a wireguard-go that answers alone", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "w1drv-"));
  const server = await fakeWireguardGo(path.join(dir, "flannel-wg.sock"));
  try {
    const calls: string[][] = [];
    const exec: Exec = (cmd, args) => {
      calls.push([cmd, ...args]);
      return Promise.resolve({ code: 0, stdout: "", stderr: "" });
    };
    const d = userspaceDriver({ socketDir: dir, exec });
    assert.deepEqual(await d.ensure("flannel-wg", new AbortController().signal), []);
    assert.deepEqual(calls, []);
    assert.equal((await d.get("flannel-wg")).listenPort, 51820);
  } finally {
    await closeServer(server);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("ensure() starts wireguard-go detached, without a foreground variable, and waits for its socket", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "w1drv-"));
  const sock = path.join(dir, "flannel-wg.sock");
  fs.writeFileSync(sock, ""); // a stale socket file nobody answers on
  let server: net.Server | undefined;
  try {
    const seen: { argv: string[]; options?: ExecOptions }[] = [];
    const exec: Exec = async (cmd, args, options) => {
      seen.push({ argv: [cmd, ...args], options });
      server = await fakeWireguardGo(sock); // the daemon comes up
      return { code: 0, stdout: "", stderr: "" };
    };
    const d = userspaceDriver({ socketDir: dir, exec, program: "/usr/bin/wireguard-go" });
    assert.deepEqual(await d.ensure("flannel-wg", new AbortController().signal), [
      "started wireguard-go flannel-wg (removed a stale socket)",
    ]);
    assert.deepEqual(seen[0].argv, ["/usr/bin/wireguard-go", "flannel-wg"]);
    assert.equal(seen[0].options?.detached, true);
    assert.deepEqual(seen[0].options?.env, { LOG_LEVEL: "" });
  } finally {
    if (server) await closeServer(server);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("ensure() names wireguard-go's error without its banner, and a socket that never answers", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "w1drv-"));
  try {
    const failing: Exec = () =>
      Promise.resolve({
        code: 1,
        stdout: "",
        stderr:
          "┌────┐\n│ Running wireguard-go is not required │\n└────┘\nERROR: (flannel-wg) 2026/11/30 Failed to create TUN device: file exists\n",
      });
    await assert.rejects(
      userspaceDriver({ socketDir: dir, exec: failing }).ensure(
        "flannel-wg",
        new AbortController().signal,
      ),
      (e: Error) => {
        assert.match(
          e.message,
          /exit status 1\): ERROR: \(flannel-wg\) .*file exists; install wireguard-go/,
        );
        assert.ok(!e.message.includes("│"));
        return true;
      },
    );
    const silent: Exec = () => Promise.resolve({ code: 0, stdout: "", stderr: "" });
    await assert.rejects(
      userspaceDriver({ socketDir: dir, exec: silent, startTimeoutMs: 100 })
        .ensure("flannel-wg", new AbortController().signal),
      /its UAPI socket .*flannel-wg\.sock does not answer after 100 ms/,
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
