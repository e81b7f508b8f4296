import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { execPath } from "../core/runtime.ts";
import {
  failureReasons,
  ignoredCases,
  parseDenoFailures,
  parseDenoSummary,
  parseJUnit,
  type TestCase,
  testFiles,
  withTestFiles,
} from "./run_report.ts";

const IGNORABLE = new URL("../testing/ignorable.ts", import.meta.url).pathname;

/** Test files covering every outcome the runner reads, run by the deno under test. */
const FIXTURES: Record<string, string> = {
  "a_test.ts": `import { stepUnless, testUnless } from ${JSON.stringify(IGNORABLE)};
Deno.test("plain <ok> & \\"quoted\\"", () => {});
Deno.test({ name: "ignored without reason", ignore: true, fn() {} }); // fixture: for the runner
testUnless("no tun here", { name: "needs a tun", fn() {} });
testUnless(null, { name: "runs", fn() {} });
Deno.test("with steps", async (t) => {
  await t.step("s1", () => {});
  await stepUnless(t, "not on this store", "s2", () => {});
  await t.step("s3", async (t) => { await t.step("s3a", () => {}); });
});
Deno.test("fails", () => { throw new Error("boom\\nsecond <line> & more"); });
Deno.test("step fails", async (t) => {
  await t.step("bad step", () => { throw new Error("x"); });
});
`,
  "b_test.ts": `Deno.test("b ok", () => {});
throw new Error("top-level boom");
`,
};

interface FixtureRun {
  readonly output: string;
  readonly cases: TestCase[];
}

let fixtureRun: FixtureRun | undefined;

/** Run the fixtures once with `deno test --junit-path` (as test/run.ts does). */
function runFixtures(): FixtureRun {
  if (fixtureRun) return fixtureRun;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-run-report-"));
  try {
    for (const [name, text] of Object.entries(FIXTURES)) {
      fs.writeFileSync(path.join(dir, name), text);
    }
    const junit = path.join(dir, "junit.xml");
    const r = spawnSync(
      execPath(),
      ["test", "-A", "--no-check", `--junit-path=${junit}`, "a_test.ts", "b_test.ts"],
      { cwd: dir, encoding: "utf8", env: { ...process.env, NO_COLOR: "" } },
    );
    assert.notEqual(r.status, 0, "the fixtures contain failures");
    fixtureRun = {
      output: r.stdout + r.stderr,
      cases: withTestFiles(parseJUnit(fs.readFileSync(junit, "utf8")), testFiles(r.stdout)),
    };
    return fixtureRun;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

Deno.test("parseDenoSummary() reads tests and steps apart", () => {
  const table: [string, ReturnType<typeof parseDenoSummary>][] = [
    [
      "\x1b[32mok\x1b[0m | 557 passed (35 steps) | 0 failed | 0 ignored (13 steps) \x1b[38;5;245m(4m)",
      {
        passed: 557,
        passedSteps: 35,
        failed: 0,
        failedSteps: 0,
        ignored: 0,
        ignoredSteps: 13,
      },
    ],
    [
      "FAILED | 3 passed (1 step) | 2 failed (1 step) | 2 ignored | 4 filtered out (1s)",
      { passed: 3, passedSteps: 1, failed: 2, failedSteps: 1, ignored: 2, ignoredSteps: 0 },
    ],
    ["running 3 tests from ./x_test.ts\nerror: Module not found", null],
  ];
  for (const [text, want] of table) assert.deepEqual(parseDenoSummary(text), want, text);
});

Deno.test("parseJUnit() and withTestFiles() read every test and step of a real deno run with its file and outcome", () => {
  const { cases } = runFixtures();
  const got = cases.map((c) => `${c.file} | ${c.name} | ${c.outcome}`);
  assert.deepEqual(
    got.sort(),
    [
      "./a_test.ts | fails | failed",
      "./a_test.ts | ignored without reason | ignored",
      "./a_test.ts | needs a tun — ignored: no tun here | ignored",
      './a_test.ts | plain <ok> & "quoted" | passed',
      "./a_test.ts | runs | passed",
      "./a_test.ts | step fails | failed",
      "./a_test.ts | step fails > bad step | failed",
      "./a_test.ts | with steps | passed",
      "./a_test.ts | with steps > s1 | passed",
      "./a_test.ts | with steps > s2 — ignored: not on this store | ignored",
      "./a_test.ts | with steps > s3 | passed",
      "./a_test.ts | with steps > s3 > s3a | passed",
    ].sort(),
  );
});

Deno.test("the summary of a real deno run counts what its JUnit report lists, plus uncaught files", () => {
  const { output, cases } = runFixtures();
  const s = parseDenoSummary(output);
  assert.ok(s, `no summary in:\n${output}`);
  const count = (o: TestCase["outcome"]) => cases.filter((c) => c.outcome === o).length;
  assert.equal(s.passed + s.passedSteps, count("passed"));
  assert.equal(s.ignored + s.ignoredSteps, count("ignored"));
  // b_test.ts threw outside any test: one failure in the summary, none in the report
  assert.equal(s.failed + s.failedSteps, count("failed") + 1);
});

Deno.test("parseDenoFailures() names failed tests, failed steps and files that threw", () => {
  const { output } = runFixtures();
  assert.deepEqual(parseDenoFailures(output), [
    "fails",
    "step fails ... bad step",
    "./b_test.ts (uncaught error)",
  ]);
});

Deno.test("testFiles() maps top-level tests to the file deno announced before them", () => {
  const out = [
    "running 2 tests from ./a_test.ts",
    "x ... ok (1ms)",
    "y > z ...",
    "  s ... ignored (0ms)",
    "y > z ... ok (1ms)",
    "running 1 test from ./b_test.ts",
    "\x1b[0mw — ignored: r ... \x1b[33mignored\x1b[0m (0ms)",
  ].join("\n");
  const files = testFiles(out);
  assert.deepEqual([...files], [
    ["x", "./a_test.ts"],
    ["y > z", "./a_test.ts"],
    ["w — ignored: r", "./b_test.ts"],
  ]);
  assert.deepEqual(
    withTestFiles(
      [{ file: "../testing/ignorable.ts", name: "y > z > s", outcome: "ignored" }],
      files,
    ),
    [{ file: "./a_test.ts", name: "y > z > s", outcome: "ignored" }],
    "a step of a test whose name holds ' > ' finds it",
  );
});

Deno.test("ignoredCases() splits the reason from the name; a missing reason is null", () => {
  const { cases } = runFixtures();
  const byName = (a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name);
  assert.deepEqual(ignoredCases(cases).sort(byName), [
    { file: "./a_test.ts", name: "ignored without reason", reason: null },
    { file: "./a_test.ts", name: "needs a tun", reason: "no tun here" },
    { file: "./a_test.ts", name: "with steps > s2", reason: "not on this store" },
  ]);
  assert.deepEqual(
    ignoredCases([{ file: "x", name: "t — ignored:   ", outcome: "ignored" }]),
    [{ file: "x", name: "t", reason: null }],
    "an empty reason is no reason",
  );
});

Deno.test("failureReasons() says why each failed test or step failed, with its file; a test whose step failed is left to the step", () => {
  const { cases } = runFixtures();
  const reasons = failureReasons(cases).map((r) => r.split("\n").slice(0, 3).join("\n"));
  assert.deepEqual(reasons.sort(), [
    "./a_test.ts: fails\n    Uncaught Error: boom\n    second <line> & more",
    "./a_test.ts: step fails > bad step\n    Uncaught Error: x",
  ]);
  const long = Array.from({ length: 40 }, (_, i) => `line ${i}`).join("\n");
  const [one] = failureReasons([{
    file: "./x_test.ts",
    name: "t",
    outcome: "failed",
    message: long,
  }]);
  const lines = one.split("\n");
  assert.equal(lines.length, 1 + 30 + 1, "a long message is cut to 30 lines");
  assert.equal(lines.at(-2), "    line 29");
  assert.equal(lines.at(-1), "    … (10 more lines)");
});

Deno.test("withTestFiles() drops the tests a --filter left out (deno's report lists them as skipped) and keeps the ignored ones", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-run-report-"));
  try {
    fs.writeFileSync(path.join(dir, "a_test.ts"), FIXTURES["a_test.ts"]);
    const junit = path.join(dir, "junit.xml");
    const r = spawnSync(
      execPath(),
      ["test", "-A", "--no-check", `--junit-path=${junit}`, "--filter", "steps", "a_test.ts"],
      { cwd: dir, encoding: "utf8", env: { ...process.env, NO_COLOR: "" } },
    );
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const raw = parseJUnit(fs.readFileSync(junit, "utf8"));
    assert.ok(
      raw.some((c) => c.name === "runs" && c.outcome === "ignored"),
      "the report lists a filtered test as skipped",
    );
    const cases = withTestFiles(raw, testFiles(r.stdout));
    assert.deepEqual(
      cases.map((c) => `${c.name} | ${c.outcome}`).sort(),
      [
        "with steps | passed",
        "with steps > s1 | passed",
        "with steps > s2 — ignored: not on this store | ignored",
        "with steps > s3 | passed",
        "with steps > s3 > s3a | passed",
      ].sort(),
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
