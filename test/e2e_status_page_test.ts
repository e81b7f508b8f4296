/**
 * The status page in headless Chromium (Debian's `chromium`, driven over
 * the DevTools protocol from inside lab host 1 by
 * testing/status_page_driver.ts): it renders the lab's peers with their
 * kernel state, and shows a host that joins later without a reload.
 * `WEFT_UPDATE_SCREENSHOT=1` copies the screenshot to docs/status-page.png.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { REPO_ROOT } from "./lab/lab.ts";
import { RUNTIME_BIN } from "./lab/agents.ts";
import { startCluster } from "./lab/cluster.ts";

const PNG = [0x89, 0x50, 0x4e, 0x47];

Deno.test({
  name:
    "status page in Chromium: renders the lab's peers and their kernel state, and updates when a peer joins",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const c = await startCluster({
      backend: "vxlan",
      hosts: 3,
      start: 2,
      prefix: "wsp",
      attach: false,
      agentArgs: ["--healthz-port", "9192"],
    });
    try {
      await c.waitConverged();
      const png = path.join(c.lab.dir, "status-page.png");
      const driver = c.lab.spawn(c.host(1).ns, RUNTIME_BIN.deno, [
        "run",
        "-A",
        path.join(REPO_ROOT, "testing/status_page_driver.ts"),
        "http://127.0.0.1:9192/",
        png,
      ], { cwd: REPO_ROOT });
      const stage = async (name: string) => {
        const m = await driver.waitForOutput(new RegExp(`^\\{"stage":"${name}".*$`, "m"), 90_000);
        return JSON.parse(m[0]);
      };
      const first = await stage("peers");
      assert.equal(first.rows.length, 1, JSON.stringify(first));
      assert.match(
        first.rows[0],
        new RegExp(`^${c.subnets.get(2)} ${c.host(2).ip} vxlan \\d+ s ago ✓ in place$`),
      );
      await c.startAgent(3);
      const joined = await stage("joined");
      assert.equal(joined.navigations, 1, "updated in place, not reloaded");
      assert.deepEqual(
        joined.rows.map((r: string) => r.split(" ")[0]).sort(),
        [c.subnets.get(2), c.subnets.get(3)].sort(),
      );
      assert.ok(
        joined.rows.every((r: string) => r.endsWith("✓ in place")),
        JSON.stringify(joined.rows),
      );
      assert.match(
        joined.events,
        new RegExp(`peer added subnet=${c.subnets.get(3)!.replaceAll(".", "\\.")}`),
      );
      await stage("done");
      const bytes = fs.readFileSync(png);
      assert.deepEqual([...bytes.subarray(0, 4)], PNG);
      assert.ok(bytes.length > 10_000, `a screenshot of ${bytes.length} bytes`);
      if (Deno.env.get("WEFT_UPDATE_SCREENSHOT") === "1") {
        fs.mkdirSync(path.join(REPO_ROOT, "docs"), { recursive: true });
        fs.copyFileSync(png, path.join(REPO_ROOT, "docs/status-page.png"));
      }
      assert.equal(await driver.exited, 0, driver.stderr());
    } finally {
      await c.close();
    }
  },
});
