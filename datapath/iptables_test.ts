import assert from "node:assert/strict";
import {
  flannelRuleList,
  formatRule,
  forwardChain,
  masqChain,
  parseTableState,
  planChain,
  planRemoval,
  versionSupportsRandomFully,
} from "./iptables.ts";

// flannel v0.28 pkg/trafficmngr/iptables masqRules(), spelled out for
// network 10.5.0.0/16 and lease 10.5.52.0/24, as `iptables -t nat -S` prints them.
const FLANNEL_MASQ_RANDOM_FULLY = [
  `-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
  `-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
  `-A FLANNEL-POSTRTG -s 10.5.52.0/24 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j RETURN`,
  `-A FLANNEL-POSTRTG -s 10.5.0.0/16 -d 10.5.52.0/24 -m comment --comment "flanneld masq" -j RETURN`,
  `-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.52.0/24 -m comment --comment "flanneld masq" -j RETURN`,
  `-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
  `-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
];

Deno.test("masqChain() produces flannel's masquerade rules word for word", () => {
  const chain = masqChain("10.5.0.0/16", "10.5.52.0/24", { family: 4, randomFully: true });
  assert.deepEqual(flannelRuleList(chain).map((r) => formatRule(r)), FLANNEL_MASQ_RANDOM_FULLY);
});

Deno.test("masqChain() keeps flannel's argument vectors (Rulespec)", () => {
  const chain = masqChain("10.5.0.0/16", "10.5.52.0/24", { family: 4, randomFully: false });
  const c = ["-m", "comment", "--comment", "flanneld masq"];
  assert.deepEqual(chain.jump.spec, [...c, "-j", "FLANNEL-POSTRTG"]);
  assert.deepEqual(chain.rules.map((r) => r.spec), [
    ["-m", "mark", "--mark", "0x4000/0x4000", ...c, "-j", "RETURN"],
    ["-s", "10.5.52.0/24", "-d", "10.5.0.0/16", ...c, "-j", "RETURN"],
    ["-s", "10.5.0.0/16", "-d", "10.5.52.0/24", ...c, "-j", "RETURN"],
    ["!", "-s", "10.5.0.0/16", "-d", "10.5.52.0/24", ...c, "-j", "RETURN"],
    ["-s", "10.5.0.0/16", "!", "-d", "224.0.0.0/4", ...c, "-j", "MASQUERADE"],
    ["!", "-s", "10.5.0.0/16", "-d", "10.5.0.0/16", ...c, "-j", "MASQUERADE"],
  ]);
  assert.ok(chain.rules.every((r) => r.table === "nat" && r.chain === "FLANNEL-POSTRTG"));
});

Deno.test("masqChain() uses ff00::/8 as the multicast range for IPv6", () => {
  const chain = masqChain("fd00:12::/48", "fd00:12:13::/64", { family: 6, randomFully: true });
  assert.deepEqual(
    formatRule(chain.rules[4]),
    `-A FLANNEL-POSTRTG -s fd00:12::/48 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
  );
});

Deno.test("forwardChain() produces flannel's forward rules", () => {
  const chain = forwardChain("10.5.0.0/16");
  assert.deepEqual(flannelRuleList(chain).map((r) => formatRule(r)), [
    `-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD`,
    `-A FLANNEL-FWD -s 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
    `-A FLANNEL-FWD -d 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
  ]);
  assert.ok(flannelRuleList(chain).every((r) => r.table === "filter"));
});

const EMPTY_NAT =
  "-P PREROUTING ACCEPT\n-P INPUT ACCEPT\n-P OUTPUT ACCEPT\n-P POSTROUTING ACCEPT\n";

Deno.test("planChain() on an empty table declares the chain, fills it and appends one jump", () => {
  const chain = masqChain("10.5.0.0/16", "10.5.52.0/24", { family: 4, randomFully: true });
  const plan = planChain(parseTableState(EMPTY_NAT), chain);
  assert.deepEqual(plan.upToDate, false);
  assert.deepEqual(
    plan.payload,
    ["*nat", ":FLANNEL-POSTRTG - [0:0]", ...FLANNEL_MASQ_RANDOM_FULLY.slice(1)].join("\n") +
      "\n" + FLANNEL_MASQ_RANDOM_FULLY[0] + "\nCOMMIT\n",
  );
});

Deno.test("planChain() reports up to date when chain and single jump are exact", () => {
  const chain = masqChain("10.5.0.0/16", "10.5.52.0/24", { family: 4, randomFully: true });
  const text = EMPTY_NAT + "-N FLANNEL-POSTRTG\n" + FLANNEL_MASQ_RANDOM_FULLY.join("\n") + "\n";
  const plan = planChain(parseTableState(text), chain);
  assert.deepEqual(plan, { upToDate: true, payload: "", removed: [] });
});

Deno.test("planChain() rewrites the chain of a previous subnet without touching the jump", () => {
  const old = masqChain("10.5.0.0/16", "10.5.9.0/24", { family: 4, randomFully: true });
  const text = EMPTY_NAT + "-N FLANNEL-POSTRTG\n" +
    flannelRuleList(old).map((r) => formatRule(r)).join("\n") + "\n";
  const chain = masqChain("10.5.0.0/16", "10.5.52.0/24", { family: 4, randomFully: true });
  const plan = planChain(parseTableState(text), chain);
  assert.deepEqual(plan.upToDate, false);
  assert.ok(!plan.payload.includes("10.5.9.0/24"));
  assert.ok(!plan.payload.includes("-A POSTROUTING"), "jump exists, must not be added again");
  assert.ok(plan.payload.includes(":FLANNEL-POSTRTG - [0:0]"));
  assert.deepEqual(plan.removed.filter((l) => l.includes("10.5.9.0/24")).length, 3);
});

Deno.test("planChain() deletes duplicate jumps and legacy flannel rules in POSTROUTING", () => {
  const chain = masqChain("10.5.0.0/16", "10.5.52.0/24", { family: 4, randomFully: true });
  const legacy =
    `-A POSTROUTING -s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j RETURN`;
  const other = `-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE`;
  const text = EMPTY_NAT + "-N FLANNEL-POSTRTG\n" + [
    FLANNEL_MASQ_RANDOM_FULLY[0],
    legacy,
    other,
    FLANNEL_MASQ_RANDOM_FULLY[0],
    ...FLANNEL_MASQ_RANDOM_FULLY.slice(1),
  ].join("\n");
  const plan = planChain(parseTableState(text), chain);
  const lines = plan.payload.trim().split("\n");
  assert.ok(
    lines.includes(`-D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`),
  );
  assert.ok(lines.includes(legacy.replace(/^-A/, "-D")));
  assert.ok(!plan.payload.includes("172.17.0.0/16"), "foreign rules are left alone");
  assert.deepEqual(lines.filter((l) => l.startsWith("-A POSTROUTING")).length, 0);
});

Deno.test("planRemoval() deletes jumps, flushes and deletes the chain; nothing when absent", () => {
  const text = EMPTY_NAT + "-N FLANNEL-POSTRTG\n" + FLANNEL_MASQ_RANDOM_FULLY.join("\n") + "\n";
  const owned = masqChain("10.5.0.0/16", "10.5.52.0/24", { family: 4, randomFully: true });
  assert.deepEqual(
    planRemoval(parseTableState(text), owned),
    `*nat\n-D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG\n` +
      `-F FLANNEL-POSTRTG\n-X FLANNEL-POSTRTG\nCOMMIT\n`,
  );
  assert.deepEqual(planRemoval(parseTableState(EMPTY_NAT), owned), "");
});

Deno.test("versionSupportsRandomFully() needs iptables 1.6.2 or newer", () => {
  const table: [string, boolean][] = [
    ["iptables v1.8.9 (nf_tables)", true],
    ["iptables v1.6.2", true],
    ["iptables v1.6.1", false],
    ["iptables v1.4.21", false],
    ["iptables v2.0.0", true],
  ];
  for (const [text, want] of table) assert.deepEqual(versionSupportsRandomFully(text), want, text);
  assert.throws(() => versionSupportsRandomFully("iptables"), SyntaxError);
});
