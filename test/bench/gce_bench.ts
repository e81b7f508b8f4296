/**
 * What the gce route provider costs: loading the Compute client library
 * (the whole `@google-cloud/compute` package, only its routes and
 * global-operations client files, and those files with weft's pruned
 * protos), measured in fresh Deno and Bun processes (import ms,
 * construct + initialize ms, RSS; first API call and a failing call against
 * the GCE fake), and the API calls of a node join and a node leave.
 *
 * `deno run -A test/bench/gce_bench.ts [runs]` prints the report;
 * `--probe <mode>` is the child that measures one load.
 *
 * @module
 */

import { spawn } from "node:child_process";
import * as path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { rssBytes, runtimeName } from "../../core/runtime.ts";
import { median } from "./stats.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = {
  deno: path.join(ROOT, "node_modules/.bin/deno"),
  bun: path.join(ROOT, "node_modules/.bin/bun"),
};

/** How the client library is loaded. */
export type LoadMode = "baseline" | "whole" | "two-files" | "two-files-lean";

/** One child's measurements. */
export interface LoadProbe {
  readonly mode: LoadMode;
  readonly runtime: string;
  readonly importMs: number;
  /** Construct both clients and initialize them (stubs built, no request sent). */
  readonly constructMs: number;
  readonly rssMB: number;
  /**
   * CPU time (user + system) until the clients are ready (import, the fake's
   * start, construct, initialize; baseline: the fake alone): steadier than
   * wall time on a busy machine.
   */
  readonly cpuMs: number;
  /** The first routes.list against the fake (0 for baseline). */
  readonly firstCallMs: number;
  /** A routes.insert refused with a denied permission (details in the error), twice. */
  readonly deniedCallMs: number;
  readonly deniedCall2Ms: number;
}

// deno-lint-ignore no-explicit-any
type Any = any;

async function probe(mode: LoadMode): Promise<LoadProbe> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  // deno-lint-ignore no-explicit-any
  let clients: { routes: any; operations: any; close(): Promise<void> } | null = null;
  let makeClients: ((opts: Record<string, unknown>) => typeof clients) | null = null;
  if (mode === "whole") {
    const spec = "@google-cloud/compute";
    const m: Any = await import(spec);
    makeClients = (o) => {
      const routes = new m.RoutesClient({ ...o, fallback: true });
      const operations = new m.GlobalOperationsClient({ ...o, fallback: true });
      return { routes, operations, close: async () => {} };
    };
  } else if (mode !== "baseline") {
    const sdk = await import("../../backends/cloud/gce/sdk.ts");
    makeClients = (o) => sdk.createComputeClients(o, mode === "two-files-lean");
  }
  const importMs = performance.now() - t0;
  const { startFakeGce } = await import("../../testing/fake_gce.ts");
  const { createGceMetadata } = await import("../../backends/cloud/gce/metadata.ts");
  const fake = await startFakeGce();
  const md = createGceMetadata({ env: fake.env });
  const endpoint = new URL(fake.computeEndpoint);
  const authClient = {
    getRequestHeaders: async () => new Headers({ authorization: `Bearer ${await md.token()}` }),
    async fetch(url: string, init: Any) {
      const headers = new Headers(init.headers);
      headers.set("authorization", `Bearer ${await md.token()}`);
      const res = await fetch(url, { method: init.method, headers, body: init.body });
      if (init.validateStatus && !init.validateStatus(res.status)) {
        const data = await res.text();
        throw Object.assign(new Error(data), { status: res.status, response: { data } });
      }
      return res;
    },
  };
  let constructMs = 0, firstCallMs = 0, deniedCallMs = 0, deniedCall2Ms = 0, cpuMs = 0;
  let rssMB = rssBytes() / 1e6;
  if (!makeClients) {
    const cpu = process.cpuUsage(cpu0);
    cpuMs = (cpu.user + cpu.system) / 1000;
  }
  try {
    if (makeClients) {
      const t1 = performance.now();
      clients = makeClients({
        apiEndpoint: endpoint.hostname,
        port: Number(endpoint.port),
        protocol: "http",
        authClient,
      });
      await Promise.all([clients!.routes.initialize(), clients!.operations.initialize()]);
      constructMs = performance.now() - t1;
      rssMB = rssBytes() / 1e6;
      const cpu = process.cpuUsage(cpu0);
      cpuMs = (cpu.user + cpu.system) / 1000;
      const opts = { retry: null, autoPaginate: false, timeout: Number.POSITIVE_INFINITY };
      const t2 = performance.now();
      await clients!.routes.list({ project: fake.projectId }, opts);
      firstCallMs = performance.now() - t2;
      fake.deny("compute.routes.create");
      const insert = async () => {
        const t = performance.now();
        await clients!.routes.insert({
          project: fake.projectId,
          routeResource: {
            name: "flannel-10-244-1-0-24",
            destRange: "10.244.1.0/24",
            network: fake.networkLink,
            nextHopInstance: fake.instanceLink,
          },
        }, { retry: null, timeout: Number.POSITIVE_INFINITY }).then(
          () => assert403(false),
          (e: Any) => assert403(e.httpStatusCode === 403),
        );
        return performance.now() - t;
      };
      deniedCallMs = await insert();
      deniedCall2Ms = await insert();
    }
  } finally {
    await clients?.close();
    await fake.close();
  }
  return {
    mode,
    runtime: runtimeName,
    importMs,
    constructMs,
    rssMB,
    cpuMs,
    firstCallMs,
    deniedCallMs,
    deniedCall2Ms,
  };
}

function assert403(ok: boolean): void {
  if (!ok) throw new Error("expected the insert to be refused with HTTP 403");
}

function runProbe(runtime: "deno" | "bun", mode: LoadMode): Promise<LoadProbe> {
  const self = fileURLToPath(import.meta.url);
  const args = runtime === "deno" ? ["run", "-A", self, "--probe", mode] : [self, "--probe", mode];
  return new Promise((resolve, reject) => {
    const child = spawn(BIN[runtime], args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let out = "", err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    child.once("error", reject);
    child.once(
      "exit",
      (code) =>
        code === 0
          ? resolve(JSON.parse(out.trim().split("\n").at(-1)!))
          : reject(new Error(`${runtime} --probe ${mode} exited ${code}: ${err.trim()}`)),
    );
  });
}

/** Medians per runtime and mode over `runs` fresh processes. */
export interface GceLoadBench {
  readonly runs: number;
  readonly results: Record<string, Record<LoadMode, Omit<LoadProbe, "mode" | "runtime">>>;
}

/**
 * Measure loading the client library in fresh processes.
 *
 * @param runs Processes per runtime and mode (the median is reported).
 * @returns Medians.
 */
export async function benchGceLoad(runs = 3): Promise<GceLoadBench> {
  const modes: LoadMode[] = ["baseline", "whole", "two-files", "two-files-lean"];
  const results: GceLoadBench["results"] = {};
  for (const runtime of ["deno", "bun"] as const) {
    const byMode: Partial<Record<LoadMode, LoadProbe[]>> = {};
    // interleave the modes so a noisy neighbour spreads over all of them
    for (let r = 0; r < runs; r++) {
      for (const mode of modes) (byMode[mode] ??= []).push(await runProbe(runtime, mode));
    }
    results[runtime] = Object.fromEntries(modes.map((mode) => {
      const ps = byMode[mode]!;
      const med = (k: keyof LoadProbe) => Math.round(median(ps.map((p) => p[k] as number)));
      return [mode, {
        importMs: med("importMs"),
        constructMs: med("constructMs"),
        rssMB: med("rssMB"),
        cpuMs: med("cpuMs"),
        firstCallMs: med("firstCallMs"),
        deniedCallMs: med("deniedCallMs"),
        deniedCall2Ms: med("deniedCall2Ms"),
      }];
    })) as Record<LoadMode, Omit<LoadProbe, "mode" | "runtime">>;
  }
  return { runs, results };
}

/** API calls of one node's life, counted by the fake. */
export interface GceCallsBench {
  /** discover + list + create of its own route. */
  readonly join: Record<string, number>;
  /** list when nothing changed (a periodic resync). */
  readonly resync: Record<string, number>;
  /** another host removes this node's route after its lease is gone. */
  readonly leave: Record<string, number>;
  /** the node's route pointed elsewhere and is replaced. */
  readonly replace: Record<string, number>;
}

/**
 * Count the API and metadata calls of a node join, an idle resync, a
 * replace and a leave, through the provider against the fake.
 *
 * @returns Calls per method for each.
 */
export async function benchGceCalls(): Promise<GceCallsBench> {
  const { startFakeGce } = await import("../../testing/fake_gce.ts");
  const { createGceRouteProvider } = await import("../../backends/cloud/gce/provider.ts");
  const fake = await startFakeGce();
  const provider = createGceRouteProvider({ env: fake.env, operationPollMs: 1 });
  const other = fake.addInstance("europe-west1-c", "node-2");
  const snapshot = () => {
    const c = { ...fake.calls };
    fake.resetCalls();
    return c;
  };
  try {
    fake.resetCalls();
    const self = await provider.discover();
    await provider.list(self.tables[0]);
    await provider.create(self.tables[0], "10.244.1.0/24", self.target);
    const join = snapshot();
    await provider.list(self.tables[0]);
    const resync = snapshot();
    await provider.replace(self.tables[0], "10.244.1.0/24", other);
    const replace = snapshot();
    await provider.remove(self.tables[0], "10.244.1.0/24");
    const leave = snapshot();
    return { join, resync, leave, replace };
  } finally {
    await provider.close();
    await fake.close();
  }
}

/** Report lines. */
export function reportGce(load: GceLoadBench, calls: GceCallsBench): string[] {
  const lines: string[] = [];
  for (const [runtime, byMode] of Object.entries(load.results)) {
    for (const [mode, r] of Object.entries(byMode)) {
      lines.push(
        `${runtime} ${mode.padEnd(15)} import ${r.importMs} ms, construct+init ` +
          `${r.constructMs} ms (CPU to ready ${r.cpuMs} ms), RSS ${r.rssMB} MB, first list ${r.firstCallMs} ms, denied insert ${r.deniedCallMs} ms ` +
          `(again ${r.deniedCall2Ms} ms)`,
      );
    }
  }
  const fmt = (c: Record<string, number>) => {
    const api = Object.entries(c).filter(([k]) => !k.startsWith("metadata."));
    const meta = Object.entries(c).filter(([k]) => k.startsWith("metadata."));
    const n = (xs: [string, number][]) => xs.reduce((s, [, v]) => s + v, 0);
    return `${n(api)} API calls (${api.map(([k, v]) => `${k} ${v}`).join(", ")}), ${
      n(meta)
    } metadata`;
  };
  lines.push(`node join (discover, list, create): ${fmt(calls.join)}`);
  lines.push(`periodic resync (list): ${fmt(calls.resync)}`);
  lines.push(`replace: ${fmt(calls.replace)}`);
  lines.push(`node leave (remove): ${fmt(calls.leave)}`);
  return lines;
}

if (import.meta.main) {
  const i = process.argv.indexOf("--probe");
  if (i >= 0) {
    console.log(JSON.stringify(await probe(process.argv[i + 1] as LoadMode)));
  } else {
    const runs = Number(process.argv[2] ?? 3);
    const load = await benchGceLoad(runs);
    const calls = await benchGceCalls();
    for (const line of reportGce(load, calls)) console.log(line);
  }
}
