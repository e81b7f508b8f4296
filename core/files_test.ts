import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { LockTimeoutError, processAlive, withLockFile, writeFileAtomic } from "./files.ts";

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "weft-files-"));
}

Deno.test("processAlive() is true for this process and false for a pid that cannot exist", () => {
  assert.equal(processAlive(process.pid), true);
  assert.equal(processAlive(2147483646), false);
  assert.equal(processAlive(0), false);
  assert.equal(processAlive(-1), false);
});

Deno.test("writeFileAtomic() creates the directory, sets the mode and leaves no temporary file", () => {
  const dir = tempDir();
  try {
    const file = path.join(dir, "a", "b", "subnet.env");
    writeFileAtomic(file, "X=1\n", { mode: 0o640 });
    assert.equal(fs.readFileSync(file, "utf8"), "X=1\n");
    assert.equal(fs.statSync(file).mode & 0o777, 0o640);
    writeFileAtomic(file, "X=2\n");
    assert.equal(fs.readFileSync(file, "utf8"), "X=2\n");
    assert.deepEqual(fs.readdirSync(path.dirname(file)), ["subnet.env"]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("writeFileAtomic() removes its temporary file when the rename fails", () => {
  const dir = tempDir();
  try {
    const target = path.join(dir, "is-a-dir");
    fs.mkdirSync(path.join(target, "child"), { recursive: true });
    assert.throws(() => writeFileAtomic(target, "x"));
    assert.deepEqual(fs.readdirSync(dir), ["is-a-dir"]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("withLockFile() breaks a lock left by a dead process and removes its own", async () => {
  const dir = tempDir();
  try {
    const lock = path.join(dir, "x.lock");
    fs.writeFileSync(lock, `2147483646 ${Date.now()}`); // no such pid
    const broken: (number | null)[] = [];
    assert.equal(
      await withLockFile(lock, () => 42, { timeoutMs: 500, onBreak: (p) => broken.push(p) }),
      42,
    );
    assert.deepEqual(broken, [2147483646]);
    assert.ok(!fs.existsSync(lock));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("withLockFile() waits for a live holder and names it when the time is up", async () => {
  const dir = tempDir();
  try {
    const lock = path.join(dir, "x.lock");
    fs.writeFileSync(lock, `${process.pid} ${Date.now()}`);
    await assert.rejects(
      () => withLockFile(lock, () => 1, { timeoutMs: 50 }),
      (e) =>
        e instanceof LockTimeoutError && e.holder === process.pid &&
        e.message.includes(`process ${process.pid} holds it`),
    );
    assert.ok(fs.existsSync(lock), "a live holder's lock is never removed");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("withLockFile() breaks a stale lock even when its process lives, and a half-written one by age", async () => {
  const dir = tempDir();
  try {
    const lock = path.join(dir, "x.lock");
    fs.writeFileSync(lock, `${process.pid} ${Date.now() - 60_000}`);
    assert.equal(await withLockFile(lock, () => "stale", { timeoutMs: 500 }), "stale");
    fs.writeFileSync(lock, "");
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(lock, old, old);
    assert.equal(await withLockFile(lock, () => "half", { timeoutMs: 500 }), "half");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("withLockFile() runs callers one at a time", async () => {
  const dir = tempDir();
  try {
    const lock = path.join(dir, "x.lock");
    let inside = 0, most = 0;
    await Promise.all(Array.from({ length: 8 }, () =>
      withLockFile(lock, async () => {
        inside++;
        most = Math.max(most, inside);
        await new Promise((r) => setTimeout(r, 2));
        inside--;
      })));
    assert.equal(most, 1);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("withLockFile() stops waiting when the signal aborts", async () => {
  const dir = tempDir();
  try {
    const lock = path.join(dir, "x.lock");
    fs.writeFileSync(lock, `${process.pid} ${Date.now()}`);
    const ac = new AbortController();
    const p = withLockFile(lock, () => 1, { signal: ac.signal });
    ac.abort(new Error("stop"));
    await assert.rejects(p, /stop/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
