import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { memoryLogger } from "../testing/memory_logger.ts";
import { prepareHost } from "./prepare.ts";

function fakeProc(values: Record<string, string>): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "weft-prepare-"));
  for (const [name, value] of Object.entries(values)) {
    const file = path.join(root, ...name.split("."));
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, value + "\n");
  }
  return root;
}

Deno.test("prepareHost() warns naming modprobe br_netfilter when rules are asked for without it", () => {
  const root = fakeProc({ "net.ipv4.ip_forward": "0" });
  try {
    const logger = memoryLogger();
    prepareHost({ rules: true, logger, procRoot: root });
    const warning = logger.lines.find((l) => /WARN/.test(l));
    assert.ok(warning, logger.lines.join("\n"));
    assert.match(warning, /br_netfilter is not loaded.*`modprobe br_netfilter`/);
    assert.match(warning, /missing=net\.bridge\.bridge-nf-call-iptables/);
    assert.ok(logger.lines.some((l) => /enabled forwarding/.test(l)), "forwarding still enabled");
    assert.equal(fs.readFileSync(path.join(root, "net/ipv4/ip_forward"), "utf8"), "1\n");

    // no rules, no warning
    const quiet = memoryLogger();
    prepareHost({ rules: false, logger: quiet, procRoot: root });
    assert.deepEqual(quiet.lines, []);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

Deno.test("prepareHost() turns bridge netfilter on when the module is loaded, without a warning", () => {
  const root = fakeProc({
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "0",
  });
  try {
    const logger = memoryLogger();
    prepareHost({ rules: true, logger, procRoot: root });
    assert.ok(!logger.lines.some((l) => /WARN/.test(l)), logger.lines.join("\n"));
    assert.equal(
      fs.readFileSync(path.join(root, "net/bridge/bridge-nf-call-iptables"), "utf8"),
      "1\n",
    );
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
