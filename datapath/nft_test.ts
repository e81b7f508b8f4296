import assert from "node:assert/strict";
import {
  nftChainTransaction,
  nftForwardChain,
  nftMasqChain,
  nftRemovalTransaction,
  nftRulesEqual,
  parseNftChainRules,
} from "./nft.ts";

Deno.test("nftMasqChain() produces flannel's nftables masquerade rules", () => {
  const c = nftMasqChain("10.5.0.0/16", "10.5.52.0/24", { family: 4, randomFully: true });
  assert.deepEqual(c.table, "flannel-ipv4");
  assert.deepEqual(c.chain, "postrtg");
  assert.deepEqual(c.rules, [
    "meta mark 0x4000 return",
    "ip saddr 10.5.52.0/24 ip daddr 10.5.0.0/16 return",
    "ip saddr 10.5.0.0/16 ip daddr 10.5.52.0/24 return",
    "ip saddr != 10.5.52.0/24 ip daddr 10.5.0.0/16 return",
    "ip saddr 10.5.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
    "ip saddr != 10.5.0.0/16 ip daddr 10.5.0.0/16 masquerade fully-random",
  ]);
});

Deno.test("nftMasqChain() for IPv6 uses ip6, flannel-ipv6 and ff00::/8; plain masquerade", () => {
  const c = nftMasqChain("fd00:12::/48", "fd00:12:13::/64", { family: 6, randomFully: false });
  assert.deepEqual(c.family, "ip6");
  assert.deepEqual(c.table, "flannel-ipv6");
  assert.deepEqual(c.rules[4], "ip6 saddr fd00:12::/48 ip6 daddr != ff00::/8 masquerade");
});

Deno.test("nftChainTransaction() adds table and chain, flushes, then adds the rules", () => {
  const tx = nftChainTransaction(nftForwardChain("10.5.0.0/16", 4));
  assert.deepEqual(
    tx,
    `add table ip flannel-ipv4 { comment "rules for flannel-ipv4" ; }\n` +
      `add chain ip flannel-ipv4 forward { type filter hook forward priority filter ; ` +
      `comment "chain to accept flannel traffic" ; }\n` +
      `flush chain ip flannel-ipv4 forward\n` +
      `add rule ip flannel-ipv4 forward ip saddr 10.5.0.0/16 accept\n` +
      `add rule ip flannel-ipv4 forward ip daddr 10.5.0.0/16 accept\n`,
  );
});

Deno.test("nftRemovalTransaction() deletes the table whether or not it exists", () => {
  assert.deepEqual(
    nftRemovalTransaction(6),
    "add table ip6 flannel-ipv6\ndelete table ip6 flannel-ipv6\n",
  );
});

const LISTING = `table ip flannel-ipv4 {
	chain postrtg {
		comment "chain to manage traffic masquerading by flannel"
		type nat hook postrouting priority srcnat; policy accept;
		meta mark 0x00004000 return
		ip saddr 10.5.52.0/24 ip daddr 10.5.0.0/16 return
		ip saddr 10.5.0.0/16 ip daddr 10.5.52.0/24 return
		ip saddr != 10.5.52.0/24 ip daddr 10.5.0.0/16 return
		ip saddr 10.5.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
		ip saddr != 10.5.0.0/16 ip daddr 10.5.0.0/16 masquerade fully-random
	}
}
`;

Deno.test("parseNftChainRules() + nftRulesEqual() accept nft's own listing of the rules", () => {
  const c = nftMasqChain("10.5.0.0/16", "10.5.52.0/24", { family: 4, randomFully: true });
  const listed = parseNftChainRules(LISTING);
  assert.deepEqual(listed.length, 6);
  assert.ok(nftRulesEqual(listed, c.rules));
  const other = nftMasqChain("10.5.0.0/16", "10.5.9.0/24", { family: 4, randomFully: true });
  assert.ok(!nftRulesEqual(listed, other.rules));
  assert.ok(!nftRulesEqual(listed.slice(1), c.rules));
});
