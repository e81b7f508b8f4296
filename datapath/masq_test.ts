import assert from "node:assert/strict";
import { FakeClock } from "../testing/fake_clock.ts";
import { parseIPv4Net, parseIPv6Net } from "../core/ip.ts";
import { memoryLogger } from "../testing/memory_logger.ts";
import { recordingExec } from "../core/exec.ts";
import { flannelRuleList, formatRule, masqChain } from "./iptables.ts";
import {
  detectRandomFully,
  ensureForwardRules,
  ensureMasqRules,
  keepRulesInSync,
  removeRules,
  RuleError,
  type RuleResult,
} from "./masq.ts";

const network = parseIPv4Net("10.5.0.0/16");
const subnet = parseIPv4Net("10.5.52.0/24");
const EMPTY_NAT =
  "-P PREROUTING ACCEPT\n-P INPUT ACCEPT\n-P OUTPUT ACCEPT\n-P POSTROUTING ACCEPT\n";

Deno.test("ensureMasqRules() reads the nat table, then applies one iptables-restore --noflush", async () => {
  const { exec, calls } = recordingExec((argv) =>
    argv[0] === "iptables" && argv.includes("-S") ? { stdout: EMPTY_NAT } : {}
  );
  const r = await ensureMasqRules({ network, subnet, randomFully: true, exec });
  assert.equal(r.changed, true);
  assert.deepEqual(calls.map((c) => c.argv), [
    ["iptables", "--wait", "-t", "nat", "-S"],
    ["iptables-restore", "--noflush", "--wait"],
  ]);
  assert.equal(calls[1].input, r.applied[0]);
  assert.match(calls[1].input!, /^\*nat\n:FLANNEL-POSTRTG - \[0:0\]\n/);
});

Deno.test("ensureMasqRules() writes nothing when the rules are already exact", async () => {
  const chain = masqChain("10.5.0.0/16", "10.5.52.0/24", { family: 4, randomFully: true });
  const state = EMPTY_NAT + "-N FLANNEL-POSTRTG\n" +
    flannelRuleList(chain).map((r) => formatRule(r)).join("\n") + "\n";
  const { exec, calls } = recordingExec((argv) => (argv.includes("-S") ? { stdout: state } : {}));
  const r = await ensureMasqRules({ network, subnet, randomFully: true, exec });
  assert.deepEqual(r, { changed: false, applied: [], removed: [] });
  assert.equal(calls.length, 1);
});

Deno.test("ensureMasqRules() detects --random-fully from the iptables version", async () => {
  for (
    const [version, flag] of [["iptables v1.8.9 (nf_tables)", true], ["iptables v1.4.21", false]]
  ) {
    const { exec, calls } = recordingExec((argv) =>
      argv.includes("--version")
        ? { stdout: version as string }
        : argv.includes("-S")
        ? { stdout: EMPTY_NAT }
        : {}
    );
    await ensureMasqRules({ network, subnet, exec });
    const payload = calls.find((c) => c.argv[0] === "iptables-restore")!.input!;
    assert.equal(payload.includes("--random-fully"), flag);
  }
});

Deno.test("ensureMasqRules() handles IPv6 with ip6tables", async () => {
  const { exec, calls } = recordingExec((argv) => (argv.includes("-S") ? { stdout: "" } : {}));
  await ensureMasqRules({
    ipv6Network: parseIPv6Net("fd00:12::/48"),
    ipv6Subnet: parseIPv6Net("fd00:12:13::/64"),
    randomFully: false,
    exec,
  });
  assert.deepEqual(calls.map((c) => c.argv[0]), ["ip6tables", "ip6tables-restore"]);
  assert.match(calls[1].input!, /-s fd00:12::\/48 ! -d ff00::\/8 .* -j MASQUERADE\n/);
});

Deno.test("ensureMasqRules() rejects a network without a subnet", async () => {
  const { exec } = recordingExec();
  await assert.rejects(() => ensureMasqRules({ network, exec }), TypeError);
});

Deno.test("ensureMasqRules() names the missing tool and the fix", async () => {
  const { exec } = recordingExec(() => ({ code: 127, stderr: "spawn iptables ENOENT" }));
  await assert.rejects(
    () => ensureMasqRules({ network, subnet, randomFully: true, exec }),
    (e: Error) =>
      e instanceof RuleError &&
      /iptables is not installed/.test(String((e.cause as Error).message)),
  );
});

Deno.test("ensureForwardRules() in nftables mode lists the chain and applies one nft transaction", async () => {
  const { exec, calls } = recordingExec((argv) =>
    argv[1] === "list" ? { code: 1, stderr: "No such file or directory" } : {}
  );
  const r = await ensureForwardRules({ mode: "nftables", network, exec });
  assert.equal(r.changed, true);
  assert.deepEqual(calls.map((c) => c.argv), [
    ["nft", "list", "chain", "ip", "flannel-ipv4", "forward"],
    ["nft", "-f", "-"],
  ]);
  assert.match(calls[1].input!, /flush chain ip flannel-ipv4 forward\n/);
});

Deno.test("detectRandomFully() in nftables mode runs flannel's nft -c probe", async () => {
  const ok = recordingExec();
  assert.equal(await detectRandomFully({ mode: "nftables", exec: ok.exec }), true);
  assert.deepEqual(ok.calls[0].argv, ["nft", "-c", "-f", "-"]);
  assert.match(ok.calls[0].input!, /masquerade fully-random/);
  const no = recordingExec(() => ({ code: 1, stderr: "Error: syntax error" }));
  assert.equal(await detectRandomFully({ mode: "nftables", exec: no.exec }), false);
});

Deno.test("removeRules() skips families whose tool is missing and tables that are absent", async () => {
  const { exec, calls } = recordingExec((argv) =>
    argv[0] === "ip6tables" ? { code: 127 } : argv.includes("-S") ? { stdout: EMPTY_NAT } : {}
  );
  const r = await removeRules({ exec });
  assert.equal(r.changed, false);
  assert.ok(calls.every((c) => !c.argv[0].endsWith("-restore")));
});

Deno.test("keepRulesInSync() re-checks every interval and reports repairs", async () => {
  const clock = new FakeClock();
  const ac = new AbortController();
  const logger = memoryLogger();
  let calls = 0;
  const repairs: RuleResult[] = [];
  const loop = keepRulesInSync(() => {
    calls++;
    if (calls === 3) return Promise.reject(new Error("iptables busy"));
    return Promise.resolve({ changed: calls === 2, applied: [], removed: [] });
  }, { intervalSeconds: 5, clock, signal: ac.signal, logger, onRepair: (r) => repairs.push(r) });
  await clock.advance(4999);
  assert.equal(calls, 0);
  await clock.advance(1);
  assert.equal(calls, 1);
  await clock.advance(10_000);
  assert.equal(calls, 3);
  assert.equal(repairs.length, 1);
  assert.ok(logger.lines.some((l) => l.includes("iptables busy")), "errors are logged, not thrown");
  ac.abort();
  await loop;
  await assert.rejects(
    () => keepRulesInSync(() => Promise.reject(), { intervalSeconds: 0, signal: ac.signal }),
    RangeError,
  );
});
