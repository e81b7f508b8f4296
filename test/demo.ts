/**
 * `deno task demo` (as root): weft on three hosts, two pods each, built
 * from network namespaces on this machine.
 *
 * 1. Builds a lab (prefix `demo`): hosts `<id>-h1…h3` on one underlay
 *    bridge, pods `<id>-h<i>p1`, `p2`.
 * 2. Writes net-conf.json (vxlan) and starts one agent per host on the
 *    embedded file store (`--lease-file`, `--net-config-path` in the lab's
 *    directory): hosts 1 and 3 under Deno, host 2 under Bun (when installed).
 * 3. Wires the pods from each agent's subnet.env (weft attach logic).
 * 4. Prints a pod-to-pod reachability matrix (ping) and the lease table.
 * 5. Tears everything down — unless `--keep`, which leaves it running and
 *    says how to look around; `deno task demo --down` removes it later.
 *
 * Exits 1 when any pod pair cannot ping, 2 on a usage error.
 *
 * @module
 */

import * as fs from "node:fs";
import * as path from "node:path";
import process from "node:process";
import { formatSubnetPair } from "../core/ip.ts";
import { createFileLeaseStore } from "../lease/file_store.ts";
import type { Lease } from "../lease/types.ts";
import { agentCommand, type AgentRuntime, RUNTIME_BIN } from "./lab/agents.ts";
import {
  expectedPeerState,
  type LeaseRow,
  mapLimit,
  podPing,
  readPeerState,
  stateDiff,
} from "./lab/cluster.ts";
import { waitFor } from "../testing/wait.ts";
import { createLab, type Lab, type LabHost, REPO_ROOT, sweepLabs } from "./lab/lab.ts";

const PREFIX = "demo";
const HEALTHZ_PORT = 9101;
const NET_CONF = { Network: "10.5.0.0/16", Backend: { Type: "vxlan" } };

const HELP = `usage: deno task demo [--keep | --down]

  (no flag)  build a 3-host lab with 2 pods per host, run one weft agent per host
             (vxlan, embedded file store), print the pod-to-pod reachability
             matrix and the lease table, then tear everything down
  --keep     leave the lab and the agents running, and print how to look around
  --down     remove a lab left by --keep

Needs root (network namespaces); touches nothing outside its namespaces.`;

const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(1)} s`;
const say = (line: string) => console.log(line);

interface DemoAgent {
  readonly host: LabHost;
  readonly runtime: AgentRuntime;
  readonly logFile: string;
  readonly subnetFile: string;
  /** Its exit code once it has ended, else null. */
  exitCode(): number | null;
}

function readyLine(logFile: string): { subnet: string } | undefined {
  let text = "";
  try {
    text = fs.readFileSync(logFile, "utf8");
  } catch {
    return undefined;
  }
  for (const line of text.split("\n")) {
    if (!line.includes('"ready"')) continue;
    try {
      const r = JSON.parse(line);
      if (r.msg === "ready") return { subnet: String(r.subnet) };
    } catch {
      // partial line
    }
  }
  return undefined;
}

function tail(file: string, lines = 15): string {
  try {
    return fs.readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/**
 * Start an agent whose output goes to a log file (not to a pipe of this
 * process), so it outlives the demo with --keep.
 */
function startDemoAgent(lab: Lab, host: LabHost, runtime: AgentRuntime): DemoAgent {
  const logFile = path.join(lab.dir, `${host.ns}.log`);
  const subnetFile = path.join(lab.dir, `${host.ns}.subnet.env`);
  const { cmd, args } = agentCommand(runtime, [
    "--lease-file",
    path.join(lab.dir, "leases.json"),
    "--net-config-path",
    path.join(lab.dir, "net-conf.json"),
    "--subnet-file",
    subnetFile,
    "--iface",
    "eth0",
    "--ip-masq",
    "--healthz-port",
    String(HEALTHZ_PORT),
    "--log-format",
    "json",
  ]);
  const proc = lab.spawn(
    host.ns,
    "sh",
    ["-c", 'exec "$@" >>"$WEFT_LOG" 2>&1', "sh", cmd, ...args],
    {
      cwd: REPO_ROOT,
      env: { WEFT_LOG: logFile },
    },
  );
  return { host, runtime, logFile, subnetFile, exitCode: proc.exitCode };
}

async function waitReady(agent: DemoAgent, timeoutMs = 60_000): Promise<string> {
  let subnet = "";
  await waitFor(
    `the agent on ${agent.host.ns} (${agent.runtime}) is ready`,
    () => {
      const r = readyLine(agent.logFile);
      if (r) {
        subnet = r.subnet;
        return null;
      }
      const code = agent.exitCode();
      if (code !== null) {
        throw new Error(
          `the agent on ${agent.host.ns} (${agent.runtime}) exited with ${code}; its log:\n${
            tail(agent.logFile)
          }`,
        );
      }
      return `no "ready" line yet; its log:\n${tail(agent.logFile)}`;
    },
    timeoutMs,
    25,
  );
  return subnet;
}

function leaseRow(l: Lease): LeaseRow {
  const data = l.attrs.backendData as { VtepMAC?: string } | undefined;
  return {
    subnet: formatSubnetPair(l),
    publicIP: l.attrs.publicIP,
    backendType: l.attrs.backendType,
    vtepMAC: data?.VtepMAC?.toLowerCase(),
  };
}

function pad(s: string, n: number): string {
  return s + " ".repeat(Math.max(0, n - [...s].length));
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => [...r[i]].length)));
  return rows.map((r) => "  " + r.map((c, i) => pad(c, widths[i])).join("  ").trimEnd()).join(
    "\n",
  );
}

function expiresIn(ms: number | null): string {
  if (ms === null) return "never";
  const left = Math.max(0, ms - Date.now());
  const h = Math.floor(left / 3600_000);
  const m = Math.floor((left % 3600_000) / 60_000);
  return `${new Date(ms).toISOString().replace(/\.\d+Z$/, "Z")} (in ${h}h${
    String(m).padStart(2, "0")
  }m)`;
}

async function run(keep: boolean): Promise<number> {
  const old = await sweepLabs(PREFIX);
  if (old.length) say(`removed a previous demo lab (${old.length} namespaces)`);
  const lab = await createLab({ prefix: PREFIX, hosts: 3, podsPerHost: 2, sweep: false });
  let keepIt = false;
  const onSignal = () => {
    say("\ninterrupted: tearing down");
    lab.teardown().finally(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  try {
    say(
      `lab ${lab.id}: 3 hosts (${
        lab.hosts.map((h) => `${h.ns} ${h.ip}`).join(", ")
      }) (${elapsed()})`,
    );
    const netConf = path.join(lab.dir, "net-conf.json");
    fs.writeFileSync(netConf, JSON.stringify(NET_CONF, null, 2) + "\n");
    say(`net-conf.json: ${JSON.stringify(NET_CONF)}`);

    const bun = fs.existsSync(RUNTIME_BIN.bun);
    if (!bun) say(`${RUNTIME_BIN.bun} is missing (npm ci installs it): host 2 runs Deno too`);
    const agents = lab.hosts.map((h) =>
      startDemoAgent(lab, h, bun && h.index === 2 ? "bun" : "deno")
    );
    const subnets = await Promise.all(agents.map((a) => waitReady(a)));
    say(
      `agents ready: ${
        agents.map((a, i) => `${a.host.ns} (${a.runtime}) ${subnets[i]}`).join(", ")
      } (${elapsed()})`,
    );

    const pods: { ns: string; ip: string; label: string }[] = [];
    for (const a of agents) {
      const wired = await lab.attachPods(a.host, a.subnetFile);
      wired.forEach((w, j) =>
        pods.push({ ns: a.host.pods[j].ns, ip: w.ip, label: `h${a.host.index}p${j + 1}` })
      );
    }
    say(`pods wired: ${pods.map((p) => `${p.label} ${p.ip}`).join(", ")} (${elapsed()})`);

    const store = createFileLeaseStore({
      path: path.join(lab.dir, "leases.json"),
      configPath: netConf,
    });
    let leases: Lease[] = [];
    try {
      await waitFor("every host routes to its peers", async () => {
        leases = (await store.list()).leases;
        const rows = leases.map(leaseRow);
        const problems: string[] = [];
        for (const [i, a] of agents.entries()) {
          const want = expectedPeerState("vxlan", rows.filter((r) => r.subnet !== subnets[i]));
          const diff = stateDiff(want, await readPeerState(lab, a.host.ns, "vxlan"));
          if (diff) problems.push(`${a.host.ns}: ${diff}`);
        }
        return problems.length ? problems.join("\n") : null;
      }, 20_000);
    } catch (e) {
      say(`warning: ${(e as Error).message}`);
    } finally {
      await store.close();
    }

    const pairs = pods.flatMap((a) => pods.map((b) => [a, b] as const));
    const ok = await mapLimit(
      pairs,
      8,
      ([a, b]) => a === b ? Promise.resolve(true) : podPing(lab, a.ns, b.ip),
    );
    const failed = pairs.filter(([a, b], i) => a !== b && !ok[i]);
    say(`\npod-to-pod reachability (ping from row to column; ✓ reply, ✗ none) (${elapsed()}):`);
    const header = ["from \\ to", ...pods.map((p) => p.label)];
    const rows = pods.map((a, i) => [
      `${a.label} ${a.ip}`,
      ...pods.map((b, j) => (a === b ? "·" : ok[i * pods.length + j] ? "✓" : "✗")),
    ]);
    say(table([header, ...rows]));
    const total = pairs.length - pods.length;
    say(`  ${total - failed.length}/${total} pairs reachable`);

    say("\nleases (embedded file store, " + path.join(lab.dir, "leases.json") + "):");
    const byIP = new Map(lab.hosts.map((h) => [h.ip, h.ns]));
    const sorted = [...leases].sort((a, b) => a.subnet!.ip - b.subnet!.ip);
    say(table([
      ["SUBNET", "HOST", "PUBLIC IP", "BACKEND", "VTEP MAC", "EXPIRES"],
      ...sorted.map((l) => {
        const r = leaseRow(l);
        return [
          r.subnet,
          byIP.get(r.publicIP) ?? "?",
          r.publicIP,
          r.backendType ?? "",
          r.vtepMAC ?? "",
          expiresIn(l.expiration),
        ];
      }),
    ]));

    if (keep) {
      keepIt = true;
      const [h1] = lab.hosts;
      const far = pods[pods.length - 1];
      const hints: [string, string][] = [
        [`ip netns exec ${pods[0].ns} ping -c 3 ${far.ip}`, `pod ${pods[0].label} → ${far.label}`],
        [`ip netns exec ${h1.ns} ip route`, "the routes weft installed"],
        [`ip netns exec ${h1.ns} bridge fdb show dev flannel.1`, "where peers' VTEPs are"],
        [`ip netns exec ${h1.ns} iptables -t nat -S`, "flannel's masquerade rules"],
        [
          `ip netns exec ${h1.ns} curl -s 127.0.0.1:${HEALTHZ_PORT}/v1/leases`,
          "the agent's status API",
        ],
        [`cat ${agents[0].subnetFile}`, "what CNI plugins read"],
        [`tail -f ${agents[0].logFile}`, "an agent's log"],
      ];
      const w = Math.max(...hints.map(([cmd]) => cmd.length));
      say(`\nthe lab is still running (files in ${lab.dir}). Look around:`);
      for (const [cmd, why] of hints) say(`  ${pad(cmd, w)}  # ${why}`);
      say("tear it down: deno task demo --down");
    } else {
      say(`\ntearing down (${elapsed()})`);
    }
    if (failed.length) {
      say(`\nFAILED: ${failed.map(([a, b]) => `${a.label} → ${b.label}`).join(", ")}`);
      for (const a of agents) say(`--- ${a.host.ns} log tail\n${tail(a.logFile, 8)}`);
      return 1;
    }
    return 0;
  } finally {
    process.off("SIGINT", onSignal);
    if (!keepIt) {
      await lab.teardown();
      say(`done (${elapsed()})`);
    }
  }
}

async function main(argv: string[]): Promise<number> {
  const flags = new Set(argv);
  const known = new Set(["--keep", "--down", "--help", "-h"]);
  const unknown = argv.filter((a) => !known.has(a));
  if (unknown.length || (flags.has("--keep") && flags.has("--down"))) {
    console.error(`demo: unexpected ${unknown.join(" ") || "--keep with --down"}\n\n${HELP}`);
    return 2;
  }
  if (flags.has("--help") || flags.has("-h")) {
    say(HELP);
    return 0;
  }
  if (process.getuid?.() !== 0) {
    console.error("demo: needs root to create network namespaces: sudo deno task demo");
    return 1;
  }
  if (flags.has("--down")) {
    const removed = await sweepLabs(PREFIX);
    say(
      removed.length
        ? `removed the demo lab: ${removed.length} namespaces and their agents`
        : "no demo lab left running",
    );
    return 0;
  }
  return await run(flags.has("--keep"));
}

process.exitCode = await main(process.argv.slice(2));
// agents kept with --keep must not hold this process open
setTimeout(() => process.exit(process.exitCode ?? 0), 100).unref?.();
