/**
 * The control plane end to end: real agents (the CLI) with the lease-only
 * `alloc` backend, one of them under Bun, against a real etcd running in the
 * lab; each in its own network namespace.
 */
import assert from "node:assert/strict";
import { startEtcd } from "../testing/etcd_server.ts";
import { type AgentProcess, startAgent } from "./lab/agents.ts";
import { createLab } from "./lab/lab.ts";

const CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"alloc"}}';

Deno.test({
  name:
    "alloc agents on one etcd (one under Bun) see each other's lease changes (latency logged; measured by `deno task bench reconcile`)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const lab = await createLab({ prefix: "wal", hosts: 4 });
    const etcd = await startEtcd({ netns: lab.underlay.ns, host: lab.underlay.serviceIP });
    const agents: AgentProcess[] = [];
    try {
      await etcd.etcdctl(["put", "/coreos.com/network/config", CONFIG]);
      const args = (port: number) => [
        "--etcd-endpoints",
        etcd.endpoint,
        "--iface",
        "eth0",
        "--healthz-port",
        String(port),
      ];
      for (const [i, runtime] of [[0, "deno"], [1, "bun"], [2, "deno"]] as const) {
        agents.push(startAgent(lab, lab.hosts[i], { runtime, args: args(9100) }));
      }
      const subnets = await Promise.all(agents.map((a) => a.waitReady()));
      assert.equal(new Set(subnets).size, 3, `distinct subnets: ${subnets}`);
      for (const a of agents) await a.waitLog((r) => r.msg === "peers listed");

      const delays = (records: { ts: string }[], from: number) =>
        records.map((r) => Date.parse(r.ts) - from);

      // an independent watch on the leases, which etcd feeds as it feeds the agents':
      // it stamps when etcd announced the removal below. From the revision before
      // the fourth host joins, so its lease's PUT proves the watch is in place.
      const prefix = "/coreos.com/network/subnets/";
      const watcher = lab.spawn(lab.underlay.ns, "etcdctl", [
        `--endpoints=${etcd.endpoint}`,
        "watch",
        "--prefix",
        `--rev=${(await etcd.revision()) + 1}`,
        prefix,
      ], { env: { ETCDCTL_API: "3" } });

      // a fourth host joins: everyone sees it
      const marks = agents.map((a) => a.logs().length);
      const fourth = startAgent(lab, lab.hosts[3], { args: args(9100) });
      agents.push(fourth);
      const acquired = await fourth.waitLog((r) => r.msg === "lease acquired");
      const sub4 = String(acquired.subnet);
      const added = await Promise.all(
        agents.slice(0, 3).map((a, i) =>
          a.waitLog((r) => r.msg === "peer added" && r.subnet === sub4, 5000, marks[i])
        ),
      );
      const joinDelays = delays(added, Date.parse(acquired.ts));
      console.log(`join seen by peers after ${joinDelays.join(", ")} ms`);

      // it leaves: stop it (the lease stays), then an operator deletes the lease
      const key4 = `${prefix}${sub4.replace("/", "-")}`;
      const escaped = key4.replace(/[./]/g, "\\$&");
      await watcher.waitForOutput(new RegExp(`^PUT\n${escaped}\n`, "m"), 5000);
      await fourth.stop();
      const marks2 = agents.map((a) => a.logs().length);
      const started = Date.now();
      const deleting = etcd.etcdctl(["del", key4]);
      await watcher.waitForOutput(new RegExp(`^DELETE\n${escaped}\n`, "m"), 5000);
      const t0 = Date.now();
      await deleting;
      watcher.kill();
      const removed = await Promise.all(
        agents.slice(0, 3).map((a, i) =>
          a.waitLog((r) => r.msg === "peer removed" && r.subnet === sub4, 5000, marks2[i])
        ),
      );
      const leaveDelays = delays(removed, t0);
      console.log(
        `removal seen by peers ${leaveDelays.join(", ")} ms after etcd announced it (${
          delays(removed, started).join(", ")
        } ms after etcdctl del started)`,
      );

      // garbage written by hand: skipped with a warning, counted, nothing torn down
      await etcd.etcdctl(["put", "/coreos.com/network/subnets/10.5.250.0-24", "{oops"]);
      for (const a of agents.slice(0, 3)) {
        await a.waitLog((r) =>
          r.msg === "skipping malformed lease record" && r.key === "10.5.250.0-24"
        );
      }
      const metrics = await lab.run(lab.hosts[0].ns, "curl -sf http://127.0.0.1:9100/metrics");
      assert.match(metrics, /weft_store_malformed_records_total\{store="etcd"\} [1-9]/);
      assert.match(metrics, /weft_peers 2/);
      const ready = await lab.exec(
        lab.hosts[1].ns,
        "curl -s -o /dev/null -w %{http_code} http://127.0.0.1:9100/readyz",
      );
      assert.equal(ready.stdout, "200", "the Bun agent is still ready");
      const leases = JSON.parse(
        await lab.run(lab.hosts[1].ns, "curl -sf http://127.0.0.1:9100/v1/leases"),
      );
      assert.equal(leases.peers.length, 2);
      assert.equal(leases.self.subnet, subnets[1]);
    } finally {
      for (const a of agents) await a.stop().catch(() => {});
      await etcd.close();
      await lab.teardown();
    }
  },
});

Deno.test({
  name:
    "an agent started before etcd is up keeps retrying, says why in /readyz, then becomes ready",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const lab = await createLab({ prefix: "wal", hosts: 1 });
    let etcd: Awaited<ReturnType<typeof startEtcd>> | undefined;
    let agent: AgentProcess | undefined;
    try {
      agent = startAgent(lab, lab.hosts[0], {
        args: [
          "--etcd-endpoints",
          `http://${lab.underlay.serviceIP}:2379`,
          "--healthz-port",
          "9100",
        ],
      });
      await agent.waitLog((r) => r.msg.includes("will keep retrying"));
      const res = await lab.exec(
        lab.hosts[0].ns,
        "curl -s -w \\n%{http_code} http://127.0.0.1:9100/readyz",
      );
      const lines = res.stdout.trim().split("\n");
      const code = lines.pop();
      const body = lines.join("\n");
      assert.equal(code, "503");
      assert.match(
        body,
        /not ready: reading the network config from the etcd store: .*192\.0\.2\.2:2379/,
      );
      etcd = await startEtcd({ netns: lab.underlay.ns, host: lab.underlay.serviceIP });
      await etcd.etcdctl(["put", "/coreos.com/network/config", CONFIG]);
      await agent.waitReady(30_000);
    } finally {
      await agent?.stop().catch(() => {});
      await etcd?.close();
      await lab.teardown();
    }
  },
});
