/**
 * The extension backend end to end: flannel's two documented examples
 * (Documentation/extension.md, copied unchanged below) run by real agents
 * (host 2's under Bun) with a real etcd in a lab of three hosts, and pods
 * ping across all of them; plus a failing and a hanging SubnetAddCommand
 * seen through `/readyz` and `/metrics`.
 *
 * The agents keep their once-only state in the default
 * `/run/weft/extension/<PublicIP>.json` (the examples name no StateDir);
 * the lab's host addresses name those files, so each test removes them
 * before and after it runs.
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { systemExec } from "../core/exec.ts";
import { createLab, type Lab, type LabHost } from "./lab/lab.ts";
import { type AgentProcess, type AgentRuntime, startAgent } from "./lab/agents.ts";
import { pingFailures, type PodAddress } from "./lab/cluster.ts";
import { waitFor } from "../testing/wait.ts";
import { type EtcdServer, startEtcd } from "../testing/etcd_server.ts";
import { containsIPv4, parseIPv4, parseIPv4Net } from "../core/ip.ts";
import { DEFAULT_STATE_DIR } from "../backends/extension/config.ts";

/** flannel's "Simple example (host-gw)", unchanged. */
const HOST_GW_EXAMPLE = `{
  "Network": "10.0.0.0/16",
  "Backend": {
    "Type": "extension",
    "SubnetAddCommand": "ip route add $SUBNET via $PUBLIC_IP",
    "SubnetRemoveCommand": "ip route del $SUBNET via $PUBLIC_IP"
  }
}`;

/** flannel's "Complex example (vxlan)", unchanged. */
const VXLAN_EXAMPLE = `{
  "Network": "10.50.0.0/16",
  "Backend": {
    "Type": "extension",
    "PreStartupCommand": "export VNI=1; export IF_NAME=flannel-vxlan; ip link del $IF_NAME 2>/dev/null; ip link add $IF_NAME type vxlan id $VNI dstport 8472 && cat /sys/class/net/$IF_NAME/address",
    "PostStartupCommand": "export IF_NAME=flannel-vxlan; export SUBNET_IP=\`echo $SUBNET | cut -d'/' -f 1\`; ip addr add $SUBNET_IP/32 dev $IF_NAME && ip link set $IF_NAME up",
    "SubnetAddCommand": "export SUBNET_IP=\`echo $SUBNET | cut -d'/' -f 1\`; export IF_NAME=flannel-vxlan; read VTEP; ip route add $SUBNET nexthop via $SUBNET_IP dev $IF_NAME onlink && arp -s $SUBNET_IP $VTEP dev $IF_NAME && bridge fdb add $VTEP dev $IF_NAME self dst $PUBLIC_IP"
  }
}`;

const PREFIX = "/coreos.com/network";
const HEALTHZ_PORT = 18475;

/** A lease as stored in etcd: its subnet and the exact value bytes. */
interface StoredLease {
  readonly subnet: string;
  readonly value: string;
}

interface ExampleCluster {
  readonly lab: Lab;
  readonly etcd: EtcdServer;
  readonly network: string;
  readonly agents: Map<number, AgentProcess>;
  readonly subnets: Map<number, string>;
  readonly pods: PodAddress[];
  host(i: number): LabHost;
  startAgent(i: number, runtime?: AgentRuntime): Promise<string>;
  leases(): Promise<StoredLease[]>;
  close(): Promise<void>;
}

function removeStateFiles(lab: Lab): void {
  for (const h of lab.hosts) {
    for (const ext of [".json", ".journal"]) {
      fs.rmSync(path.join(DEFAULT_STATE_DIR, `${h.ip}${ext}`), { force: true });
    }
  }
}

async function startExampleCluster(options: {
  config: string;
  hosts: number;
  prefix: string;
  env?: (i: number) => Record<string, string>;
}): Promise<ExampleCluster> {
  const lab = await createLab({ prefix: options.prefix, hosts: options.hosts, podsPerHost: 1 });
  const agents = new Map<number, AgentProcess>();
  const subnets = new Map<number, string>();
  const pods: PodAddress[] = [];
  let etcd: EtcdServer | undefined;
  const close = async () => {
    try {
      await Promise.all([...agents.values()].map((a) => a.stop()));
      await etcd?.close();
    } finally {
      await lab.teardown();
      removeStateFiles(lab);
    }
  };
  try {
    removeStateFiles(lab);
    etcd = await startEtcd({ netns: lab.underlay.ns, host: lab.underlay.serviceIP });
    await etcd.etcdctl(["put", `${PREFIX}/config`, options.config]);
    const endpoint = `http://${lab.underlay.serviceIP}:2379`;
    const e = etcd;
    const host = (i: number) => lab.hosts[i - 1];
    const cluster: ExampleCluster = {
      lab,
      etcd: e,
      network: JSON.parse(options.config).Network,
      agents,
      subnets,
      pods,
      host,
      async startAgent(i, runtime = i === 2 ? "bun" : "deno") {
        const a = startAgent(lab, host(i), {
          runtime,
          args: [
            "--etcd-endpoints",
            endpoint,
            "--iface",
            "eth0",
            "--healthz-port",
            String(HEALTHZ_PORT),
          ],
          env: options.env?.(i),
        });
        agents.set(i, a);
        const subnet = await a.waitReady();
        subnets.set(i, subnet);
        return subnet;
      },
      async leases() {
        const out = await e.etcdctl(["get", "--prefix", `${PREFIX}/subnets/`]);
        const lines = out.split("\n").filter((l) => l !== "");
        const rows: StoredLease[] = [];
        for (let i = 0; i + 1 < lines.length; i += 2) {
          const m = lines[i].match(/\/subnets\/(\d+\.\d+\.\d+\.\d+)-(\d+)$/);
          if (m) rows.push({ subnet: `${m[1]}/${m[2]}`, value: lines[i + 1] });
        }
        return rows;
      },
      close,
    };
    const all = Array.from({ length: options.hosts }, (_, i) => i + 1);
    await Promise.all(all.map((i) => cluster.startAgent(i)));
    for (const i of all) {
      const wired = await lab.attachPods(host(i), agents.get(i)!.subnetFile);
      pods.push(...wired.map((w, j) => ({ ns: host(i).pods[j].ns, ip: w.ip, hostIndex: i })));
    }
    return cluster;
  } catch (err) {
    await close();
    throw err;
  }
}

interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  flags?: string[];
}

/** Routes into the overlay network through a gateway, as `S via G dev D[ onlink]`. */
async function overlayRoutes(c: ExampleCluster, i: number): Promise<string[]> {
  const network = parseIPv4Net(c.network);
  const routes = JSON.parse(
    await c.lab.run(c.host(i).ns, "ip -j route show table main"),
  ) as IpRoute[];
  return routes
    .filter((r) => r.gateway && r.dst !== "default")
    .filter((r) => containsIPv4(network, parseIPv4(r.dst.split("/")[0])))
    .map((r) =>
      `${r.dst} via ${r.gateway} dev ${r.dev}${r.flags?.includes("onlink") ? " onlink" : ""}`
    )
    .sort();
}

/** What the host-gw example installs on host i for the other running hosts. */
function hostGwWant(c: ExampleCluster, i: number, hosts: readonly number[]): string[] {
  return hosts.filter((j) => j !== i)
    .map((j) => `${c.subnets.get(j)} via ${c.host(j).ip} dev eth0`)
    .sort();
}

async function waitHostGw(
  c: ExampleCluster,
  hosts: readonly number[],
  timeoutMs = 20_000,
): Promise<void> {
  await waitFor("every host routes to the others as the host-gw example says", async () => {
    const problems: string[] = [];
    for (const i of hosts) {
      const got = await overlayRoutes(c, i);
      const want = hostGwWant(c, i, hosts);
      if (JSON.stringify(got) !== JSON.stringify(want)) {
        problems.push(`host ${i}: ${JSON.stringify(got)} ≠ ${JSON.stringify(want)}`);
      }
    }
    return problems.length ? problems.join("; ") : null;
  }, timeoutMs);
}

const ran = (a: AgentProcess, command: string, since = 0) =>
  a.logs().slice(since).filter((r) => r.msg === `ran ${command}`);

Deno.test("extension e2e: flannel's host-gw example on three hosts — pods ping, a restart runs no add again, a host that left while an agent was down is removed once", async () => {
  const c = await startExampleCluster({ config: HOST_GW_EXAMPLE, hosts: 3, prefix: "wxg" });
  try {
    assert.equal(c.agents.get(2)!.runtime, "bun");
    await waitHostGw(c, [1, 2, 3]);
    assert.deepEqual(await pingFailures(c.lab, c.pods), [], "every pod pair pings");

    // the lease, byte for byte as flannel writes it (no PreStartupCommand: no BackendData)
    const leases = await c.leases();
    for (const i of [1, 2, 3]) {
      const lease = leases.find((l) => l.subnet === c.subnets.get(i));
      assert.equal(
        lease?.value,
        `{"PublicIP":"${c.host(i).ip}","PublicIPv6":null,"BackendType":"extension"}`,
      );
      assert.equal(
        ran(c.agents.get(i)!, "SubnetAddCommand").length,
        2,
        `host ${i}: one add per peer`,
      );
    }

    // restart host 1's agent: its routes are still in the kernel, so no add runs again
    // (flannel's would, and `ip route add` would fail with "File exists")
    await c.agents.get(1)!.stop();
    await c.startAgent(1);
    const a1 = c.agents.get(1)!;
    await a1.waitLog((r) => r.msg === "peer commands recorded before this start" && r.peers === 2);
    await a1.waitLog((r) => r.msg === "peers listed");

    // host 3 leaves while host 1's agent is down
    await a1.stop();
    await c.agents.get(3)!.kill9();
    c.agents.delete(3);
    const s3 = c.subnets.get(3)!;
    await c.etcd.etcdctl(["del", `${PREFIX}/subnets/${s3.replace("/", "-")}`]);
    await waitFor("host 2 (running) removes host 3's route", async () => {
      const got = await overlayRoutes(c, 2);
      return got.some((r) => r.startsWith(s3)) ? JSON.stringify(got) : null;
    });
    assert.ok(
      (await overlayRoutes(c, 1)).some((r) => r.startsWith(s3)),
      "host 1 still has the route while its agent is down",
    );
    await c.startAgent(1);
    const restarted = c.agents.get(1)!;
    const removed = await restarted.waitLog((r) => r.msg === "ran SubnetRemoveCommand");
    assert.equal(removed.subnet, s3);
    await waitHostGw(c, [1, 2]);
    assert.deepEqual(
      ran(restarted, "SubnetAddCommand"),
      [],
      "no add ran again after either restart",
    );
    assert.deepEqual(ran(a1, "SubnetAddCommand"), []);
    assert.ok(!restarted.logs().some((r) => /failed/.test(r.msg)), "no command failed");

    // once: the next start runs nothing at all
    await restarted.stop();
    await c.startAgent(1);
    const third = c.agents.get(1)!;
    await third.waitLog((r) =>
      r.msg === "peer commands recorded before this start" && r.peers === 1
    );
    await third.waitLog((r) => r.msg === "peers listed");
    await waitHostGw(c, [1, 2]);
    assert.deepEqual(
      third.logs().filter((r) => /^ran Subnet/.test(r.msg)),
      [],
      "neither add nor remove runs again",
    );
    const remaining = c.pods.filter((p) => p.hostIndex !== 3);
    assert.deepEqual(await pingFailures(c.lab, remaining), [], "pods of hosts 1 and 2 still ping");
  } finally {
    await c.close();
  }
});

Deno.test("extension e2e: flannel's vxlan example on three hosts — the VTEP MAC is the lease's BackendData, pods ping", async () => {
  const c = await startExampleCluster({ config: VXLAN_EXAMPLE, hosts: 3, prefix: "wxv" });
  try {
    const macs = new Map<number, string>();
    for (const i of [1, 2, 3]) {
      const [link] = JSON.parse(await c.lab.run(c.host(i).ns, "ip -j link show flannel-vxlan"));
      macs.set(i, link.address);
      assert.ok(link.flags.includes("UP"), `host ${i}: flannel-vxlan is up (PostStartupCommand)`);
      const own = c.subnets.get(i)!.split("/")[0];
      const addr = await c.lab.run(c.host(i).ns, "ip -o -4 addr show dev flannel-vxlan");
      assert.match(addr, new RegExp(`inet ${own.replaceAll(".", "\\.")}/32 `));
    }
    const leases = await c.leases();
    for (const i of [1, 2, 3]) {
      assert.equal(
        leases.find((l) => l.subnet === c.subnets.get(i))?.value,
        `{"PublicIP":"${c.host(i).ip}","PublicIPv6":null,"BackendType":"extension","BackendData":"${
          macs.get(i)
        }"}`,
        "PreStartupCommand's output, a JSON string, as flannel writes it",
      );
    }
    await waitFor(
      "every host has the vxlan example's route, neighbour and fdb entry per peer",
      async () => {
        const problems: string[] = [];
        for (const i of [1, 2, 3]) {
          const ns = c.host(i).ns;
          const routes = await overlayRoutes(c, i);
          const neigh = JSON.parse(await c.lab.run(ns, "ip -j neigh show dev flannel-vxlan")) as {
            dst: string;
            lladdr?: string;
          }[];
          const fdb = JSON.parse(await c.lab.run(ns, "bridge -j fdb show dev flannel-vxlan")) as {
            mac: string;
            dst?: string;
          }[];
          for (const j of [1, 2, 3].filter((j) => j !== i)) {
            const s = c.subnets.get(j)!;
            const ip = s.split("/")[0];
            const mac = macs.get(j)!;
            if (!routes.includes(`${s} via ${ip} dev flannel-vxlan onlink`)) {
              problems.push(`host ${i}: no route to ${s} (${JSON.stringify(routes)})`);
            }
            if (!neigh.some((n) => n.dst === ip && n.lladdr === mac)) {
              problems.push(`host ${i}: no neighbour ${ip} → ${mac}`);
            }
            if (!fdb.some((f) => f.mac === mac && f.dst === c.host(j).ip)) {
              problems.push(`host ${i}: no fdb ${mac} → ${c.host(j).ip}`);
            }
          }
        }
        return problems.length ? problems.join("; ") : null;
      },
      20_000,
    );
    assert.deepEqual(await pingFailures(c.lab, c.pods), [], "every pod pair pings over vxlan");
    for (const i of [1, 2, 3]) {
      const a = c.agents.get(i)!;
      assert.equal(ran(a, "PreStartupCommand").length, 1);
      assert.equal(ran(a, "PostStartupCommand").length, 1);
      assert.equal(ran(a, "SubnetAddCommand").length, 2, `host ${i}: one add per peer`);
    }
  } finally {
    await c.close();
  }
});

async function statusGet(c: ExampleCluster, i: number, urlPath: string): Promise<[number, string]> {
  const r = await c.lab.exec(c.host(i).ns, [
    "curl",
    "-s",
    "--max-time",
    "5",
    "-w",
    "\n%{http_code}",
    `http://127.0.0.1:${HEALTHZ_PORT}${urlPath}`,
  ]);
  const at = r.stdout.lastIndexOf("\n");
  return [Number(r.stdout.slice(at + 1)), r.stdout.slice(0, at)];
}

/** `sleep 600` processes in a host's namespace. */
async function sleepers(c: ExampleCluster, i: number): Promise<number[]> {
  const r = await systemExec("ip", ["netns", "pids", c.host(i).ns]);
  return r.stdout.split(/\s+/).filter(Boolean).map(Number).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8") === "sleep\u0000600\u0000";
    } catch {
      return false;
    }
  });
}

Deno.test("extension e2e: a failing and a hanging SubnetAddCommand show in /readyz and /metrics, the hanging one is killed at its time limit; fixed, pods ping", async () => {
  // each agent's command reads what to do from a file named in its environment
  const modes = fs.mkdtempSync(path.join(os.tmpdir(), "weft-ext-e2e-"));
  const mode = (i: number) => path.join(modes, `mode-${i}`);
  fs.writeFileSync(mode(1), "fail");
  fs.writeFileSync(mode(2), "hang");
  const config = JSON.stringify({
    Network: "10.0.0.0/16",
    Backend: {
      Type: "extension",
      SubnetAddCommand:
        `case "$(cat "$EXT_MODE")" in ok) ip route add $SUBNET via $PUBLIC_IP ;; hang) sleep 600 ;; *) echo "mode file says no" >&2; exit 4 ;; esac`,
      SubnetRemoveCommand: "ip route del $SUBNET via $PUBLIC_IP",
      CommandTimeoutSeconds: 1,
    },
  });
  let c: ExampleCluster | undefined;
  try {
    c = await startExampleCluster({
      config,
      hosts: 2,
      prefix: "wxf",
      env: (i) => ({ EXT_MODE: mode(i) }),
    });
    const cl = c;
    // host 1: the add for host 2 exits 4
    await waitFor("host 1 reports the failing add in /readyz", async () => {
      const [code, body] = await statusGet(cl, 1, "/readyz");
      return code === 503 && /exit status 4/.test(body) ? null : `${code} ${body}`;
    });
    const [, body1] = await statusGet(c, 1, "/readyz");
    assert.match(
      body1,
      new RegExp(
        `^not ready: backend: SubnetAddCommand for ${c.subnets.get(2)} \\(${
          c.host(2).ip
        }\\) keeps failing: exit status 4: mode file says no \\(\\d+ attempt\\(s\\), next try in \\d+ s\\)`,
      ),
    );
    const [, metrics1] = await statusGet(c, 1, "/metrics");
    assert.match(
      metrics1,
      /weft_extension_commands_total\{command="SubnetAddCommand",result="failure"\} [1-9]/,
    );
    assert.match(metrics1, /weft_extension_commands_failing\{command="SubnetAddCommand"\} 1/);
    assert.equal((await statusGet(c, 1, "/healthz"))[0], 200);
    const failed = await c.agents.get(1)!.waitLog((r) =>
      r.msg === "SubnetAddCommand failed, retrying"
    );
    assert.equal(failed.exitCode, 4);
    assert.equal(failed.stderr, "mode file says no");

    // host 2: the add for host 1 hangs, and is killed after 1 s, every time
    await waitFor("host 2 reports two timeouts", async () => {
      const [code, body] = await statusGet(cl, 2, "/readyz");
      const [, metrics] = await statusGet(cl, 2, "/metrics");
      return code === 503 && /timed out after 1 s \(process group killed/.test(body) &&
          /command="SubnetAddCommand",result="timeout"\} [2-9]/.test(metrics)
        ? null
        : `${code} ${body}`;
    }, 20_000);
    assert.ok(
      (await sleepers(c, 2)).length <= 1,
      "the timed-out runs' sleep 600 died with their process group",
    );

    // fixed: the next retry installs the routes; ready again; pods ping
    fs.writeFileSync(mode(1), "ok");
    fs.writeFileSync(mode(2), "ok");
    await waitHostGw(c, [1, 2], 40_000);
    for (const i of [1, 2]) {
      await waitFor(`host ${i} ready`, async () => {
        const [code, body] = await statusGet(cl, i, "/readyz");
        return code === 200 ? null : `${code} ${body}`;
      }, 10_000);
      assert.deepEqual(await sleepers(c, i), [], `host ${i}: no sleep 600 left`);
    }
    assert.deepEqual(await pingFailures(c.lab, c.pods), []);
  } finally {
    await c?.close();
    fs.rmSync(modes, { recursive: true, force: true });
  }
});
