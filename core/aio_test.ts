import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { execPath } from "./runtime.ts";

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const BUN = path.join(ROOT, "node_modules/.bin/bun");

/**
 * Run in a child (Deno or Bun), so a write that blocked the calling thread
 * shows as a timeout instead of a hung test: through a FIFO whose reader is
 * the same thread, 1 MiB (far over a pipe's 64 KiB) can only arrive when the
 * write runs elsewhere while the thread reads. Then the error path: a
 * read-only descriptor. `busy()` says the write runs until it has ended.
 * Prints one JSON line.
 */
const CHILD = `
import * as fs from "node:fs";
import { openBackgroundWriter } from ${JSON.stringify(path.join(ROOT, "core/aio.ts"))};
const [fifo, file] = process.argv.slice(-2);
const w = await openBackgroundWriter();
if (!w) throw new Error("no libc AIO");
const r = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
const out = fs.openSync(fifo, fs.constants.O_WRONLY);
const bytes = new Uint8Array(1 << 20).map((_, i) => i % 251);
const started = w.start(out, bytes);
const busyWhileBlocked = w.busy(); // 1 MiB cannot go into a pipe nobody has read yet
const got = [];
let total = 0;
const buf = new Uint8Array(65536);
const deadline = Date.now() + 5000;
while (total < bytes.length && Date.now() < deadline) {
  let n = 0;
  try { n = fs.readSync(r, buf); } catch (e) { if (e.code !== "EAGAIN") throw e; }
  if (n > 0) { got.push(buf.slice(0, n)); total += n; }
  else await new Promise((res) => setTimeout(res, 1));
}
const written = w.finish();
const busyAfter = w.busy();
const same = total === bytes.length && Buffer.concat(got).equals(Buffer.from(bytes));
const ro = fs.openSync(file, "r");
const bad = w.start(ro, new Uint8Array(4096));
const failed = bad === 0 ? w.finish() : -bad;
console.log(JSON.stringify({ started, busyWhileBlocked, written, busyAfter, total, same, failed }));
`;

for (const runtime of ["deno", "bun"] as const) {
  Deno.test(`a background write runs off the calling thread and reports errors (${runtime})`, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-aio-"));
    try {
      const script = path.join(dir, "child.ts");
      const fifo = path.join(dir, "fifo");
      const file = path.join(dir, "file");
      fs.writeFileSync(script, CHILD);
      fs.writeFileSync(file, "x");
      const made = spawnSync("mkfifo", [fifo]);
      assert.equal(made.status, 0, `mkfifo: ${made.stderr}`);
      const argv = runtime === "deno"
        ? [execPath(), ["run", "-A", script, fifo, file]] as const
        : [BUN, [script, fifo, file]] as const;
      const child = spawn(argv[0], [...argv[1]], { stdio: ["ignore", "pipe", "pipe"] });
      let out = "", err = "";
      child.stdout.on("data", (c: Uint8Array) => (out += new TextDecoder().decode(c)));
      child.stderr.on("data", (c: Uint8Array) => (err += new TextDecoder().decode(c)));
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      const code = await new Promise<number | null>((r) => child.on("close", r));
      clearTimeout(timer);
      assert.equal(code, 0, `child (${runtime}) failed or hung: ${err}`);
      const r = JSON.parse(out.trim().split("\n").at(-1)!);
      assert.deepEqual(r, {
        started: 0,
        busyWhileBlocked: true,
        written: 1 << 20,
        busyAfter: false,
        total: 1 << 20,
        same: true,
        failed: -9, // EBADF: the descriptor is not open for writing
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
