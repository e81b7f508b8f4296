import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { goTrimSpace, OUTPUT_LIMIT, shellRunner } from "./command.ts";

const never = () => new AbortController().signal;

/** Whether a process exists and is not a zombie (an unreaped zombie holds nothing). */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`${what}: not true after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test("shellRunner runs sh -c with stdin, the extra env on top of weft's, and reports stdout", async () => {
  const r = await shellRunner({
    command: `read X; printf '%s|%s|%s|%s' "$X" "$SUBNET" "$PUBLIC_IPV6" "\${HOME:+home}"`,
    env: { SUBNET: "10.5.2.0/24", PUBLIC_IPV6: "" },
    stdin: "02:00:00:00:00:02\n",
    signal: never(),
  });
  assert.deepEqual(r, {
    exitCode: 0,
    signal: null,
    stdout: "02:00:00:00:00:02|10.5.2.0/24||home",
    stderr: "",
  });
});

Deno.test("shellRunner reports a failing command's exit status and stderr", async () => {
  const r = await shellRunner({
    command: "echo partial; echo 'RTNETLINK answers: File exists' >&2; exit 3",
    env: {},
    stdin: "\n",
    signal: never(),
  });
  assert.deepEqual(r, {
    exitCode: 3,
    signal: null,
    stdout: "partial\n",
    stderr: "RTNETLINK answers: File exists\n",
  });
});

Deno.test("shellRunner reports the signal that ended a command", async () => {
  const r = await shellRunner({ command: "kill -TERM $$", env: {}, stdin: "", signal: never() });
  assert.equal(r.exitCode, null);
  assert.equal(r.signal, "SIGTERM");
});

Deno.test("shellRunner: abort kills the whole process group, background children too", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-ext-cmd-"));
  const pidFile = path.join(dir, "pids");
  const ac = new AbortController();
  try {
    const running = shellRunner({
      command: `sleep 60 & echo $! > "$PIDS"; echo $$ >> "$PIDS"; wait`,
      env: { PIDS: pidFile },
      stdin: "",
      signal: ac.signal,
    });
    await until("the command wrote its pids", () => {
      try {
        return fs.readFileSync(pidFile, "utf8").trim().split("\n").length === 2;
      } catch {
        return false;
      }
    });
    const [sleepPid, shPid] = fs.readFileSync(pidFile, "utf8").trim().split("\n").map(Number);
    assert.ok(alive(sleepPid) && alive(shPid));
    ac.abort();
    const r = await running;
    assert.equal(r.signal, "SIGKILL");
    await until("the background sleep is dead", () => !alive(sleepPid));
    assert.equal(alive(shPid), false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("shellRunner keeps at most OUTPUT_LIMIT bytes of output and says how much it dropped", async () => {
  const r = await shellRunner({
    command: `head -c ${OUTPUT_LIMIT + 10} /dev/zero | tr '\\0' a`,
    env: {},
    stdin: "",
    signal: never(),
  });
  assert.equal(r.exitCode, 0);
  assert.ok(r.stdout.startsWith("a".repeat(OUTPUT_LIMIT)));
  assert.equal(r.stdout.slice(OUTPUT_LIMIT), "\n[10 more bytes dropped]");
});

Deno.test("shellRunner: an already aborted run starts nothing", async () => {
  const r = await shellRunner({
    command: "echo no",
    env: {},
    stdin: "",
    signal: AbortSignal.abort(),
  });
  assert.equal(r.startError, "aborted");
  assert.equal(r.stdout, "");
});

Deno.test("goTrimSpace() trims what Go's strings.TrimSpace trims, not U+FEFF", () => {
  const cases: [string, string][] = [
    ["  02:42:ac:11:00:02\n", "02:42:ac:11:00:02"],
    ["\t\v\f\r\n x \n", "x"],
    ["\u0085\u00a0x\u2028\u3000", "x"],
    ["\ufeffx\ufeff", "\ufeffx\ufeff"],
    ["a b\nc", "a b\nc"],
    ["", ""],
    [" \n ", ""],
  ];
  for (const [input, want] of cases) assert.equal(goTrimSpace(input), want, JSON.stringify(input));
});
