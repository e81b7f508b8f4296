/**
 * The shipped forms side by side: source under Deno, source under Bun,
 * `dist/weft.js` under Deno and under Bun, and the Bun binary `dist/weft`.
 * For each:
 *
 * - size: what has to be on the host besides a runtime (the product source
 *   files; weft.js; the binary, which holds its runtime);
 * - `--version` wall time, spawn to exit (median of `versionRuns`);
 * - idle RSS of an on-prem agent (file store, vxlan backend, forward rules,
 *   in a lab namespace): VmRSS a few seconds after "ready" (median of
 *   `rssRuns` agent starts).
 *
 * For scale, the same figures for a Bun binary that only prints a line
 * (the floor any Bun binary starts from). The builds come from
 * `testing/build_cache.ts` (built once per tree).
 * Run on its own: `deno run -A test/bench/dist_bench.ts`.
 *
 * @module
 */

import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { createLab } from "../lab/lab.ts";
import { RUNTIME_BIN } from "../lab/agents.ts";
import { REPO_ROOT } from "../lab/lab.ts";
import { built } from "../../testing/build_cache.ts";
import { hold } from "../../testing/wait.ts";
import { median, roundTo } from "./stats.ts";

/** Figures of one form. */
export interface FormFigures {
  readonly form: string;
  /** Bytes to ship besides the runtime (the binary includes its runtime). */
  readonly sizeBytes: number;
  readonly versionMs: number;
  readonly idleRssMB: number;
}

/** Result of {@link benchDist}. */
export interface DistResult {
  readonly forms: readonly FormFigures[];
  /** A Bun binary that only prints a line: the floor under the binary's figures. */
  readonly bunFloor: { readonly sizeBytes: number; readonly runMs: number };
  /** Size of the runtimes a non-binary form needs, bytes. */
  readonly runtimeBytes: { readonly deno: number; readonly bun: number };
  readonly versionRuns: number;
  readonly rssRuns: number;
  readonly idleMs: number;
}

const PRODUCT = ["core", "lease", "datapath", "backends", "agent", "api", "cli"];

function sourceBytes(): number {
  let total = fs.statSync(path.join(REPO_ROOT, "mod.ts")).size;
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")) total += fs.statSync(p).size;
    }
  };
  for (const d of PRODUCT) walk(path.join(REPO_ROOT, d));
  return total;
}

function vmRssMB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}

/**
 * Measure every form.
 *
 * @param options Runs per measurement and how long an agent idles before its RSS is read.
 * @returns Size, `--version` time and idle RSS per form.
 */
export async function benchDist(
  options: { versionRuns?: number; rssRuns?: number; idleMs?: number } = {},
): Promise<DistResult> {
  const versionRuns = options.versionRuns ?? 7;
  const rssRuns = options.rssRuns ?? 3;
  const idleMs = options.idleMs ?? 3000;
  const [js, bin] = [await built("js"), await built("binary")];
  const mod = path.join(REPO_ROOT, "mod.ts");
  const forms: [string, string, string[], number][] = [
    ["source, Deno", RUNTIME_BIN.deno, ["run", "-A", mod], sourceBytes()],
    ["source, Bun", RUNTIME_BIN.bun, [mod], sourceBytes()],
    ["weft.js, Deno", RUNTIME_BIN.deno, ["run", "-A", js.main], fs.statSync(js.main).size],
    ["weft.js, Bun", RUNTIME_BIN.bun, [js.main], fs.statSync(js.main).size],
    ["binary", bin.main, [], fs.statSync(bin.main).size],
  ];
  const out: FormFigures[] = [];
  const timeRuns = (cmd: string, args: string[]): number => {
    execFileSync(cmd, args); // warm caches (deno's transpile cache, page cache)
    const times: number[] = [];
    for (let i = 0; i < versionRuns; i++) {
      const t0 = performance.now();
      execFileSync(cmd, args);
      times.push(performance.now() - t0);
    }
    return roundTo(median(times), 1);
  };
  const floorDir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-bench-floor-"));
  let bunFloor: DistResult["bunFloor"];
  try {
    fs.writeFileSync(path.join(floorDir, "hello.ts"), 'console.log("hello");\n');
    execFileSync(RUNTIME_BIN.bun, [
      "build",
      "--compile",
      "--minify",
      "hello.ts",
      "--outfile",
      "hello",
    ], {
      cwd: floorDir,
      stdio: "pipe",
    });
    const hello = path.join(floorDir, "hello");
    bunFloor = { sizeBytes: fs.statSync(hello).size, runMs: timeRuns(hello, []) };
  } finally {
    fs.rmSync(floorDir, { recursive: true, force: true });
  }
  const lab = await createLab({ prefix: "wbn", hosts: 1 });
  try {
    const host = lab.hosts[0];
    const netConfig = path.join(lab.dir, "net.json");
    fs.writeFileSync(netConfig, '{"Network":"10.9.0.0/16","Backend":{"Type":"vxlan"}}');
    for (const [form, cmd, pre, sizeBytes] of forms) {
      const versionMs = timeRuns(cmd, [...pre, "--version"]);
      const rss: number[] = [];
      for (let i = 0; i < rssRuns; i++) {
        const agent = lab.spawn(host.ns, cmd, [
          ...pre,
          "--lease-file",
          path.join(lab.dir, "leases.json"),
          "--net-config-path",
          netConfig,
          "--subnet-file",
          path.join(lab.dir, "subnet.env"),
          "--iface",
          "eth0",
          "--log-format",
          "json",
        ], { cwd: REPO_ROOT });
        try {
          await agent.waitForOutput(/"msg":"ready"/, 60_000);
          await hold("an idle agent, before its RSS is read", idleMs);
          rss.push(vmRssMB(agent.pid));
        } finally {
          await agent.stop();
        }
      }
      out.push({
        form,
        sizeBytes,
        versionMs,
        idleRssMB: roundTo(median(rss), 1),
      });
    }
  } finally {
    await lab.teardown();
  }
  return {
    forms: out,
    bunFloor,
    runtimeBytes: {
      deno: fs.statSync(fs.realpathSync(RUNTIME_BIN.deno)).size,
      bun: fs.statSync(fs.realpathSync(RUNTIME_BIN.bun)).size,
    },
    versionRuns,
    rssRuns,
    idleMs,
  };
}

if (import.meta.main) {
  const r = await benchDist();
  console.log(JSON.stringify(r, null, 2));
  process.exit(0);
}
