/**
 * flannel's masquerade and forward rules for nftables (`EnableNFTables`), as text.
 *
 * Kernel state (flannel v0.28, pkg/trafficmngr/nftables), IPv4 shown; IPv6
 * uses `table ip6 flannel-ipv6`, `ip6 saddr/daddr` and `ff00::/8`:
 *
 * ```
 * table ip flannel-ipv4 {
 *   comment "rules for flannel-ipv4"
 *   chain postrtg {
 *     comment "chain to manage traffic masquerading by flannel"
 *     type nat hook postrouting priority srcnat; policy accept;
 *     meta mark 0x00004000 return
 *     ip saddr <subnet> ip daddr <network> return
 *     ip saddr <network> ip daddr <subnet> return
 *     ip saddr != <subnet> ip daddr <network> return
 *     ip saddr <network> ip daddr != 224.0.0.0/4 masquerade fully-random
 *     ip saddr != <network> ip daddr <network> masquerade fully-random
 *   }
 *   chain forward {
 *     comment "chain to accept flannel traffic"
 *     type filter hook forward priority filter; policy accept;
 *     ip saddr <network> accept
 *     ip daddr <network> accept
 *   }
 * }
 * ```
 *
 * The fourth masquerade rule is flannel's nftables text as released: it
 * tests `saddr != <subnet>` where the iptables variant tests
 * `! -s <network>`, which makes the last rule unreachable (the host's own
 * traffic into the overlay is not masqueraded in nftables mode). weft keeps
 * flannel's text so both agents leave the same ruleset behind.
 *
 * Each change is one `nft -f -` transaction — add table, add chain, flush
 * chain, add rules — which the kernel applies atomically, so replacing the
 * rules (also after a subnet change) never leaves a moment without them.
 *
 * @module
 */

import type { IpFamily } from "./iptables.ts";

/** flannel's nftables table name per family. */
export const NFT_TABLES: Readonly<Record<IpFamily, string>> = {
  4: "flannel-ipv4",
  6: "flannel-ipv6",
};
/** The masquerade chain. */
export const NFT_MASQ_CHAIN = "postrtg";
/** The forward-accept chain. */
export const NFT_FORWARD_CHAIN = "forward";

/** An nftables base chain weft owns, with its rules. */
export interface NftChain {
  /** `ip` or `ip6`. */
  readonly family: "ip" | "ip6";
  readonly table: string;
  readonly chain: string;
  /** Base-chain declaration, e.g. `type nat hook postrouting priority srcnat`. */
  readonly hook: string;
  readonly comment: string;
  /** Rule bodies in order, e.g. `ip saddr 10.5.0.0/16 accept`. */
  readonly rules: readonly string[];
}

/**
 * The nft family keyword of an address family.
 *
 * @param family 4 or 6.
 * @returns `ip` or `ip6`.
 */
export function nftFamily(family: IpFamily): "ip" | "ip6" {
  return family === 4 ? "ip" : "ip6";
}

/**
 * flannel's nftables masquerade chain.
 *
 * @param network Cluster network as CIDR text.
 * @param subnet This host's subnet (network address) as CIDR text.
 * @param options Family and whether to use `masquerade fully-random`.
 * @returns The chain.
 * @example
 * ```ts
 * nftMasqChain("10.5.0.0/16", "10.5.52.0/24", { family: 4, randomFully: true }).rules[0];
 * // "meta mark 0x4000 return"
 * ```
 */
export function nftMasqChain(
  network: string,
  subnet: string,
  options: { family: IpFamily; randomFully: boolean },
): NftChain {
  const f = nftFamily(options.family);
  const masq = options.randomFully ? "masquerade fully-random" : "masquerade";
  const mcast = options.family === 4 ? "224.0.0.0/4" : "ff00::/8";
  return {
    family: f,
    table: NFT_TABLES[options.family],
    chain: NFT_MASQ_CHAIN,
    hook: "type nat hook postrouting priority srcnat",
    comment: "chain to manage traffic masquerading by flannel",
    rules: [
      "meta mark 0x4000 return",
      `${f} saddr ${subnet} ${f} daddr ${network} return`,
      `${f} saddr ${network} ${f} daddr ${subnet} return`,
      `${f} saddr != ${subnet} ${f} daddr ${network} return`,
      `${f} saddr ${network} ${f} daddr != ${mcast} ${masq}`,
      `${f} saddr != ${network} ${f} daddr ${network} ${masq}`,
    ],
  };
}

/**
 * flannel's nftables forward-accept chain.
 *
 * @param network Cluster network as CIDR text.
 * @param family 4 or 6.
 * @returns The chain.
 */
export function nftForwardChain(network: string, family: IpFamily): NftChain {
  const f = nftFamily(family);
  return {
    family: f,
    table: NFT_TABLES[family],
    chain: NFT_FORWARD_CHAIN,
    hook: "type filter hook forward priority filter",
    comment: "chain to accept flannel traffic",
    rules: [`${f} saddr ${network} accept`, `${f} daddr ${network} accept`],
  };
}

/**
 * The one `nft -f -` transaction that creates the table and chain if
 * needed and replaces the chain's rules.
 *
 * @param c The chain.
 * @returns nft script text.
 */
export function nftChainTransaction(c: NftChain): string {
  const t = `${c.family} ${c.table}`;
  return [
    `add table ${t} { comment "rules for ${c.table}" ; }`,
    `add chain ${t} ${c.chain} { ${c.hook} ; comment "${c.comment}" ; }`,
    `flush chain ${t} ${c.chain}`,
    ...c.rules.map((r) => `add rule ${t} ${c.chain} ${r}`),
  ].join("\n") + "\n";
}

/**
 * The transaction that deletes a family's flannel table, whether or not it
 * exists (add, then delete, in one commit).
 *
 * @param family 4 or 6.
 * @returns nft script text.
 */
export function nftRemovalTransaction(family: IpFamily): string {
  const t = `${nftFamily(family)} ${NFT_TABLES[family]}`;
  return `add table ${t}\ndelete table ${t}\n`;
}

/**
 * The `nft -c -f -` probe flannel uses to learn whether the kernel accepts
 * `masquerade fully-random` (checked, never committed).
 *
 * @returns nft script text.
 */
export function nftRandomFullyProbe(): string {
  const t = `ip ${NFT_TABLES[4]}`;
  return [
    `add table ${t}`,
    `add chain ${t} masqueradeTest { type nat hook postrouting priority srcnat ; }`,
    `add rule ${t} masqueradeTest ip saddr != 127.0.0.1 masquerade fully-random`,
  ].join("\n") + "\n";
}

/**
 * The rule lines of a chain from `nft list chain <family> <table> <chain>`.
 *
 * @param listing The command's output.
 * @returns Rule bodies in order (declaration and comment lines left out).
 */
export function parseNftChainRules(listing: string): string[] {
  const out: string[] = [];
  let depth = 0;
  for (const raw of listing.split("\n")) {
    const line = raw.trim();
    if (line.endsWith("{")) {
      depth++;
      continue;
    }
    if (line === "}") {
      depth--;
      continue;
    }
    if (depth !== 2 || line === "") continue;
    if (/^(comment |type |policy )/.test(line)) continue;
    out.push(line.replace(/\s+# handle \d+$/, ""));
  }
  return out;
}

function normalizeNft(rule: string): string {
  return rule.replace(/\b0x[0-9a-fA-F]+\b/g, (h) => String(parseInt(h, 16))).replace(/\s+/g, " ");
}

/**
 * Whether listed rules equal the wanted ones, ignoring how nft prints
 * numbers (`0x4000` is listed as `0x00004000`).
 *
 * @param listed Rules from {@link parseNftChainRules}.
 * @param wanted Rule bodies as written.
 * @returns True when equal in order.
 */
export function nftRulesEqual(listed: readonly string[], wanted: readonly string[]): boolean {
  return listed.length === wanted.length &&
    listed.every((l, i) => normalizeNft(l) === normalizeNft(wanted[i]));
}
