/**
 * The single-file build users deploy (`deno task compile:bun`): it starts,
 * and its udp packet engine Worker — a second entry point in the bundle —
 * loads and carries traffic between two lab hosts.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { createLab, REPO_ROOT } from "./lab/lab.ts";
import { RUNTIME_BIN } from "./lab/agents.ts";

Deno.test({
  name: "the compiled single file runs the agent, udp Worker included",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const lab = await createLab({ prefix: "wcp", hosts: 2 });
    try {
      const bin = path.join(lab.dir, "weft");
      execFileSync(RUNTIME_BIN.bun, [
        "build",
        "--compile",
        "--minify",
        "--format=esm",
        "mod.ts",
        "backends/udp/worker.ts",
        "--outfile",
        bin,
      ], { cwd: REPO_ROOT, stdio: "pipe" });
      assert.match(execFileSync(bin, ["--version"]).toString(), /^weft \d+\.\d+\.\d+ \(bun /);
      fs.writeFileSync(
        path.join(lab.dir, "net.json"),
        '{"Network":"10.7.0.0/16","Backend":{"Type":"udp"}}',
      );
      const agents = lab.hosts.map((h) =>
        lab.spawn(h.ns, bin, [
          "--lease-file",
          path.join(lab.dir, "leases.json"),
          "--net-config-path",
          path.join(lab.dir, "net.json"),
          "--subnet-file",
          path.join(lab.dir, `${h.ns}.env`),
          "--iface",
          "eth0",
          "--log-format",
          "json",
        ])
      );
      // each knows the other: listed at start, or added later when it came second
      for (const a of agents) {
        await a.waitForOutput(/"msg":"peers listed","peers":1|"msg":"peer added"/, 20_000);
      }
      const addr = async (ns: string) =>
        (await lab.run(ns, "ip -4 -o addr show flannel0")).split(/\s+/)[3].split("/")[0];
      const [a, b] = [await addr(lab.hosts[0].ns), await addr(lab.hosts[1].ns)];
      const r = await lab.exec(lab.hosts[0].ns, `ping -c 3 -i 0.2 -W 2 -I ${a} ${b}`);
      assert.equal(
        r.code,
        0,
        `ping over udp failed:\n${r.stdout}\n${agents[0].stderr().slice(-2000)}`,
      );
      assert.doesNotMatch(agents[0].stderr(), /worker crashed/);
    } finally {
      await lab.teardown();
    }
  },
});
