/**
 * The mixed lab: one vxlan cluster (etcd) whose hosts run weft in the
 * three forms it ships in — host 1 from source under Deno, host 2
 * `dist/weft.js` under Bun, host 3 the compiled binary (both built once per
 * tree, testing/build_cache.ts) — and every pod pair pings.
 *
 * @module
 */

import assert from "node:assert/strict";
import { built } from "../testing/build_cache.ts";
import { waitFor } from "../testing/wait.ts";
import { RUNTIME_BIN } from "./lab/agents.ts";
import { pingFailures, startCluster } from "./lab/cluster.ts";

Deno.test({
  name:
    "mixed lab: source on Deno, weft.js on Bun and the binary form one vxlan network; all pod pairs ping",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const [js, bin] = await Promise.all([built("js"), built("binary")]);
    const forms: Record<number, readonly string[] | undefined> = {
      1: undefined,
      2: [RUNTIME_BIN.bun, js.main],
      3: [bin.main],
    };
    const cluster = await startCluster({
      backend: "vxlan",
      hosts: 3,
      prefix: "wmx",
      runtimeOf: () => "deno",
      commandOf: (i) => forms[i],
    });
    try {
      for (const i of [1, 2, 3]) {
        const argv = cluster.agents.get(i)!.process.argv.join(" ");
        if (i === 1) assert.match(argv, /deno run -A .*mod\.ts/);
        else assert.ok(argv.includes(forms[i]!.join(" ")), argv);
      }
      assert.equal(cluster.pods.length, 3);
      await cluster.waitConverged();
      await waitFor(
        "every pod pings every other pod",
        async () => {
          const failed = await pingFailures(cluster.lab, cluster.pods);
          return failed.length ? failed.join(", ") : null;
        },
        20_000,
        200,
      );
    } finally {
      await cluster.close();
    }
  },
});
