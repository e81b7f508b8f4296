// IPv6 masquerade and forward rules: flannel's exact text (golden, from
// pkg/trafficmngr/iptables/iptables.go:171-231 masqIP6Rules/forwardRules and
// pkg/trafficmngr/nftables/nftables.go:113-276, v0.28.9), applied as one transaction, and applied
// for real with ip6tables-restore and nft inside a throwaway namespace.
import assert from "node:assert/strict";
import { netnsExec, recordingExec } from "../core/exec.ts";
import { parseIPv4Net, parseIPv6Net } from "../core/ip.ts";
import { createNetns, deleteNetns, run, sweepNetns } from "../testing/netns.ts";
import { ensureForwardRules, ensureMasqRules, type MasqOptions, removeRules } from "./masq.ts";

const network = parseIPv4Net("10.5.0.0/16");
const subnet = parseIPv4Net("10.5.52.0/24");
const ipv6Network = parseIPv6Net("fd00:10:5::/48");
const ipv6Subnet = parseIPv6Net("fd00:10:5:34::/64");

const M = `-m comment --comment "flanneld masq"`;
const F = `-m comment --comment "flanneld forward"`;

/** flannel's IPv6 masquerade rules for fd00:10:5::/48 and fd00:10:5:34::/64, as `ip6tables -S` prints them. */
const V6_MASQ_RULES = [
  `-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 ${M} -j RETURN`,
  `-A FLANNEL-POSTRTG -s fd00:10:5:34::/64 -d fd00:10:5::/48 ${M} -j RETURN`,
  `-A FLANNEL-POSTRTG -s fd00:10:5::/48 -d fd00:10:5:34::/64 ${M} -j RETURN`,
  `-A FLANNEL-POSTRTG ! -s fd00:10:5::/48 -d fd00:10:5:34::/64 ${M} -j RETURN`,
  `-A FLANNEL-POSTRTG -s fd00:10:5::/48 ! -d ff00::/8 ${M} -j MASQUERADE --random-fully`,
  `-A FLANNEL-POSTRTG ! -s fd00:10:5::/48 -d fd00:10:5::/48 ${M} -j MASQUERADE --random-fully`,
];
const V6_MASQ_JUMP = `-A POSTROUTING ${M} -j FLANNEL-POSTRTG`;
const V6_FWD_RULES = [
  `-A FLANNEL-FWD -s fd00:10:5::/48 ${F} -j ACCEPT`,
  `-A FLANNEL-FWD -d fd00:10:5::/48 ${F} -j ACCEPT`,
];
const V6_FWD_JUMP = `-A FORWARD ${F} -j FLANNEL-FWD`;

/** flannel's nftables IPv6 table as one transaction (knftables' add/flush/add order). */
const V6_NFT_MASQ = `add table ip6 flannel-ipv6 { comment "rules for flannel-ipv6" ; }
add chain ip6 flannel-ipv6 postrtg { type nat hook postrouting priority srcnat ; comment "chain to manage traffic masquerading by flannel" ; }
flush chain ip6 flannel-ipv6 postrtg
add rule ip6 flannel-ipv6 postrtg meta mark 0x4000 return
add rule ip6 flannel-ipv6 postrtg ip6 saddr fd00:10:5:34::/64 ip6 daddr fd00:10:5::/48 return
add rule ip6 flannel-ipv6 postrtg ip6 saddr fd00:10:5::/48 ip6 daddr fd00:10:5:34::/64 return
add rule ip6 flannel-ipv6 postrtg ip6 saddr != fd00:10:5:34::/64 ip6 daddr fd00:10:5::/48 return
add rule ip6 flannel-ipv6 postrtg ip6 saddr fd00:10:5::/48 ip6 daddr != ff00::/8 masquerade fully-random
add rule ip6 flannel-ipv6 postrtg ip6 saddr != fd00:10:5::/48 ip6 daddr fd00:10:5::/48 masquerade fully-random
`;
const V6_NFT_FWD = `add table ip6 flannel-ipv6 { comment "rules for flannel-ipv6" ; }
add chain ip6 flannel-ipv6 forward { type filter hook forward priority filter ; comment "chain to accept flannel traffic" ; }
flush chain ip6 flannel-ipv6 forward
add rule ip6 flannel-ipv6 forward ip6 saddr fd00:10:5::/48 accept
add rule ip6 flannel-ipv6 forward ip6 daddr fd00:10:5::/48 accept
`;

const EMPTY_NAT =
  "-P PREROUTING ACCEPT\n-P INPUT ACCEPT\n-P OUTPUT ACCEPT\n-P POSTROUTING ACCEPT\n";
const EMPTY_FILTER = "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n";

Deno.test("ensureMasqRules() dual stack: one iptables-restore and one ip6tables-restore with flannel's text", async () => {
  const { exec, calls } = recordingExec((argv) => argv.includes("-S") ? { stdout: EMPTY_NAT } : {});
  const r = await ensureMasqRules({
    network,
    subnet,
    ipv6Network,
    ipv6Subnet,
    randomFully: true,
    exec,
  });
  assert.equal(r.changed, true);
  assert.deepEqual(calls.map((c) => c.argv), [
    ["iptables", "--wait", "-t", "nat", "-S"],
    ["iptables-restore", "--noflush", "--wait"],
    ["ip6tables", "--wait", "-t", "nat", "-S"],
    ["ip6tables-restore", "--noflush", "--wait"],
  ]);
  assert.equal(
    calls[3].input,
    ["*nat", ":FLANNEL-POSTRTG - [0:0]", ...V6_MASQ_RULES, V6_MASQ_JUMP, "COMMIT", ""].join("\n"),
  );
  assert.deepEqual(r.applied, [calls[1].input, calls[3].input]);
});

Deno.test("ensureMasqRules() and ensureForwardRules() IPv6-only: ip6tables alone", async () => {
  const { exec, calls } = recordingExec((argv) =>
    argv.includes("-S") ? { stdout: argv.includes("nat") ? EMPTY_NAT : EMPTY_FILTER } : {}
  );
  await ensureMasqRules({ ipv6Network, ipv6Subnet, randomFully: true, exec });
  await ensureForwardRules({ ipv6Network, exec });
  assert.deepEqual(calls.map((c) => c.argv[0]), [
    "ip6tables",
    "ip6tables-restore",
    "ip6tables",
    "ip6tables-restore",
  ]);
  assert.equal(
    calls[3].input,
    ["*filter", ":FLANNEL-FWD - [0:0]", ...V6_FWD_RULES, V6_FWD_JUMP, "COMMIT", ""].join("\n"),
  );
  // what is already exact is left alone
  const state = EMPTY_NAT + "-N FLANNEL-POSTRTG\n" + [V6_MASQ_JUMP, ...V6_MASQ_RULES].join("\n");
  const again = recordingExec((argv) => (argv.includes("-S") ? { stdout: state } : {}));
  const r = await ensureMasqRules({ ipv6Network, ipv6Subnet, randomFully: true, exec: again.exec });
  assert.deepEqual(r, { changed: false, applied: [], removed: [] });
});

Deno.test("ensureMasqRules() and ensureForwardRules() in nftables mode write flannel's ip6 flannel-ipv6 table", async () => {
  const { exec, calls } = recordingExec((argv) =>
    argv[1] === "list" ? { code: 1, stderr: "Error: No such file or directory" } : {}
  );
  await ensureMasqRules({ ipv6Network, ipv6Subnet, mode: "nftables", randomFully: true, exec });
  await ensureForwardRules({ ipv6Network, mode: "nftables", exec });
  assert.deepEqual(calls.map((c) => c.argv), [
    ["nft", "list", "chain", "ip6", "flannel-ipv6", "postrtg"],
    ["nft", "-f", "-"],
    ["nft", "list", "chain", "ip6", "flannel-ipv6", "forward"],
    ["nft", "-f", "-"],
  ]);
  assert.equal(calls[1].input, V6_NFT_MASQ);
  assert.equal(calls[3].input, V6_NFT_FWD);
});

Deno.test("ensureMasqRules() rejects an IPv6 network without an IPv6 subnet", async () => {
  const { exec, calls } = recordingExec();
  await assert.rejects(
    () => ensureMasqRules({ ipv6Network, exec }),
    (e: Error) => e instanceof TypeError && /'ipv6Network' and 'ipv6Subnet'/.test(e.message),
  );
  assert.equal(calls.length, 0);
});

// ---------------------------------------------------------------------------
// The real ip6tables and nft, inside a throwaway namespace

const PREFIX = "wm6";

async function withNetns(fn: (ns: string) => Promise<void>): Promise<void> {
  sweepNetns(PREFIX);
  const ns = createNetns(PREFIX, "h");
  try {
    await fn(ns);
  } finally {
    deleteNetns(ns);
  }
}

const show = (ns: string, ...args: string[]) => run("ip", ["netns", "exec", ns, ...args]) + "\n";

Deno.test("ip6tables in a namespace: flannel's IPv6 chains are installed, kept, and replaced atomically", async () => {
  await withNetns(async (ns) => {
    const exec = netnsExec(ns);
    const opts: MasqOptions = { network, subnet, ipv6Network, ipv6Subnet, randomFully: true, exec };
    // a previous run with another IPv6 subnet
    await ensureMasqRules({ ...opts, ipv6Subnet: parseIPv6Net("fd00:10:5:9::/64") });
    assert.match(show(ns, "ip6tables", "-t", "nat", "-S"), /fd00:10:5:9::\/64/);

    const r = await ensureMasqRules(opts);
    assert.equal(r.changed, true);
    assert.ok(r.removed.some((l) => l.includes("fd00:10:5:9::/64")), "old subnet's rules reported");
    assert.equal(
      show(ns, "ip6tables", "-t", "nat", "-S"),
      EMPTY_NAT + "-N FLANNEL-POSTRTG\n" + [V6_MASQ_JUMP, ...V6_MASQ_RULES].join("\n") + "\n",
    );
    // the IPv4 side went to iptables, untouched by the IPv6 one
    assert.match(show(ns, "iptables", "-t", "nat", "-S"), /-s 10\.5\.52\.0\/24 -d 10\.5\.0\.0\/16/);
    assert.doesNotMatch(show(ns, "iptables", "-t", "nat", "-S"), /fd00/);

    await ensureForwardRules({ network, ipv6Network, exec });
    assert.equal(
      show(ns, "ip6tables", "-t", "filter", "-S"),
      EMPTY_FILTER + "-N FLANNEL-FWD\n" + [V6_FWD_JUMP, ...V6_FWD_RULES].join("\n") + "\n",
    );

    // a restart changes nothing
    assert.deepEqual(await ensureMasqRules(opts), { changed: false, applied: [], removed: [] });
    assert.deepEqual(await ensureForwardRules({ network, ipv6Network, exec }), {
      changed: false,
      applied: [],
      removed: [],
    });
    // a deleted rule comes back, in place
    run("ip", ["netns", "exec", ns, "ip6tables", "-t", "nat", "-D", "FLANNEL-POSTRTG", "5"]);
    assert.equal((await ensureMasqRules(opts)).changed, true);
    assert.equal(
      show(ns, "ip6tables", "-t", "nat", "-S"),
      EMPTY_NAT + "-N FLANNEL-POSTRTG\n" + [V6_MASQ_JUMP, ...V6_MASQ_RULES].join("\n") + "\n",
    );

    await removeRules({ exec, families: [6] });
    assert.equal(show(ns, "ip6tables", "-t", "nat", "-S"), EMPTY_NAT);
    assert.equal(show(ns, "ip6tables", "-t", "filter", "-S"), EMPTY_FILTER);
    assert.match(show(ns, "iptables", "-t", "nat", "-S"), /FLANNEL-POSTRTG/, "IPv4 left alone");
  });
});

Deno.test("nft in a namespace: flannel's ip6 flannel-ipv6 table is installed, kept and removed", async () => {
  await withNetns(async (ns) => {
    const exec = netnsExec(ns);
    const opts: MasqOptions = {
      ipv6Network,
      ipv6Subnet,
      mode: "nftables",
      randomFully: true,
      exec,
    };
    await ensureMasqRules({ ...opts, ipv6Subnet: parseIPv6Net("fd00:10:5:9::/64") });
    assert.equal((await ensureMasqRules(opts)).changed, true);
    await ensureForwardRules({ ipv6Network, mode: "nftables", exec });
    const listing = show(ns, "nft", "list", "table", "ip6", "flannel-ipv6");
    assert.equal(
      listing,
      `table ip6 flannel-ipv6 {
	comment "rules for flannel-ipv6"
	chain postrtg {
		comment "chain to manage traffic masquerading by flannel"
		type nat hook postrouting priority srcnat; policy accept;
		meta mark 0x00004000 return
		ip6 saddr fd00:10:5:34::/64 ip6 daddr fd00:10:5::/48 return
		ip6 saddr fd00:10:5::/48 ip6 daddr fd00:10:5:34::/64 return
		ip6 saddr != fd00:10:5:34::/64 ip6 daddr fd00:10:5::/48 return
		ip6 saddr fd00:10:5::/48 ip6 daddr != ff00::/8 masquerade fully-random
		ip6 saddr != fd00:10:5::/48 ip6 daddr fd00:10:5::/48 masquerade fully-random
	}

	chain forward {
		comment "chain to accept flannel traffic"
		type filter hook forward priority filter; policy accept;
		ip6 saddr fd00:10:5::/48 accept
		ip6 daddr fd00:10:5::/48 accept
	}
}
`,
    );
    assert.doesNotMatch(show(ns, "nft", "list", "tables"), /flannel-ipv4/, "no IPv4 table");
    assert.deepEqual(await ensureMasqRules(opts), { changed: false, applied: [], removed: [] });
    await removeRules({ mode: "nftables", exec });
    assert.equal(show(ns, "nft", "list", "tables"), "\n");
  });
});
