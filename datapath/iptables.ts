/**
 * flannel's masquerade and forward rules for iptables, as text.
 *
 * Kernel state (per address family, in the agent's own network namespace):
 *
 * ```
 * *nat
 * -A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
 * -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
 * -A FLANNEL-POSTRTG -s <subnet> -d <network> -m comment --comment "flanneld masq" -j RETURN
 * -A FLANNEL-POSTRTG -s <network> -d <subnet> -m comment --comment "flanneld masq" -j RETURN
 * -A FLANNEL-POSTRTG ! -s <network> -d <subnet> -m comment --comment "flanneld masq" -j RETURN
 * -A FLANNEL-POSTRTG -s <network> ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
 * -A FLANNEL-POSTRTG ! -s <network> -d <network> -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
 * *filter
 * -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
 * -A FLANNEL-FWD -s <network> -m comment --comment "flanneld forward" -j ACCEPT
 * -A FLANNEL-FWD -d <network> -m comment --comment "flanneld forward" -j ACCEPT
 * ```
 *
 * These are flannel v0.28's rules word for word (pkg/trafficmngr/iptables),
 * so `iptables -t nat -S` reads the same on a weft host and a flannel host.
 *
 * How they are applied differs from flannel on purpose: flannel clears the
 * chain (`iptables -F`) and re-adds the rules one by one, which leaves a
 * moment without masquerading on every restart. Here the whole chain is
 * rewritten by one `iptables-restore --noflush` transaction: declaring
 * `:FLANNEL-POSTRTG - [0:0]` empties that chain inside the same commit that
 * refills it, so the kernel swaps old for new at once. The jump from
 * POSTROUTING/FORWARD is appended only when absent (duplicates are deleted),
 * and leftover rules carrying flannel's comment directly in POSTROUTING or
 * FORWARD (older flannel releases put them there) are deleted in the same
 * transaction. Stale rules from a previous subnet therefore disappear with
 * the rewrite. When the chain already reads exactly right, nothing is
 * written at all.
 *
 * Everything here is pure; {@link ./masq.ts} runs the commands.
 *
 * @module
 */

/** nat chain holding the masquerade rules. */
export const MASQ_CHAIN = "FLANNEL-POSTRTG";
/** filter chain holding the forward-accept rules. */
export const FORWARD_CHAIN = "FLANNEL-FWD";
/** Comment on every masquerade rule. */
export const MASQ_COMMENT = "flanneld masq";
/** Comment on every forward rule. */
export const FORWARD_COMMENT = "flanneld forward";
/** kube-proxy's masquerade mark: traffic carrying it is left to kube-proxy. */
export const KUBE_PROXY_MARK = "0x4000/0x4000";

/** IPv4 or IPv6. */
export type IpFamily = 4 | 6;

/** One iptables rule: its table, chain and the specification after `-A <chain>`. */
export interface IptablesRule {
  readonly table: "nat" | "filter";
  readonly chain: string;
  readonly spec: readonly string[];
}

/** A chain weft owns, the built-in chain that jumps to it, and what it must contain. */
export interface OwnedChain {
  readonly table: "nat" | "filter";
  /** e.g. `FLANNEL-POSTRTG`. */
  readonly chain: string;
  /** Built-in chain holding the jump, e.g. `POSTROUTING`. */
  readonly parent: string;
  /** Comment that marks rules as flannel's. */
  readonly comment: string;
  /** The jump rule in {@link parent}. */
  readonly jump: IptablesRule;
  /** The chain's rules, in order. */
  readonly rules: readonly IptablesRule[];
}

function multicast(family: IpFamily): string {
  return family === 4 ? "224.0.0.0/4" : "ff00::/8";
}

/**
 * flannel's masquerade chain for one address family.
 *
 * @param network The cluster network as CIDR text, e.g. `10.5.0.0/16`.
 * @param subnet This host's subnet (network address) as CIDR text, e.g. `10.5.52.0/24`.
 * @param options `family` picks the multicast range; `randomFully` adds `--random-fully`.
 * @returns The chain description.
 * @example
 * ```ts
 * const c = masqChain("10.5.0.0/16", "10.5.52.0/24", { family: 4, randomFully: true });
 * c.rules.map((r) => formatRule(r)); // "-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 …"
 * ```
 */
export function masqChain(
  network: string,
  subnet: string,
  options: { family: IpFamily; randomFully: boolean },
): OwnedChain {
  const c = ["-m", "comment", "--comment", MASQ_COMMENT];
  const masq = options.randomFully ? ["-j", "MASQUERADE", "--random-fully"] : ["-j", "MASQUERADE"];
  const rule = (spec: string[]): IptablesRule => ({ table: "nat", chain: MASQ_CHAIN, spec });
  return {
    table: "nat",
    chain: MASQ_CHAIN,
    parent: "POSTROUTING",
    comment: MASQ_COMMENT,
    jump: { table: "nat", chain: "POSTROUTING", spec: [...c, "-j", MASQ_CHAIN] },
    rules: [
      // leave kube-proxy's marked traffic alone (double-NAT bug on some kernels)
      rule(["-m", "mark", "--mark", KUBE_PROXY_MARK, ...c, "-j", "RETURN"]),
      // no NAT inside the overlay
      rule(["-s", subnet, "-d", network, ...c, "-j", "RETURN"]),
      rule(["-s", network, "-d", subnet, ...c, "-j", "RETURN"]),
      // outside traffic arriving for this host's pods keeps its source
      rule(["!", "-s", network, "-d", subnet, ...c, "-j", "RETURN"]),
      // pods to the outside, except multicast
      rule(["-s", network, "!", "-d", multicast(options.family), ...c, ...masq]),
      // the host itself towards the overlay
      rule(["!", "-s", network, "-d", network, ...c, ...masq]),
    ],
  };
}

/**
 * flannel's forward-accept chain (`--iptables-forward-rules`).
 *
 * @param network The cluster network as CIDR text.
 * @returns The chain description.
 */
export function forwardChain(network: string): OwnedChain {
  const c = ["-m", "comment", "--comment", FORWARD_COMMENT];
  return {
    table: "filter",
    chain: FORWARD_CHAIN,
    parent: "FORWARD",
    comment: FORWARD_COMMENT,
    jump: { table: "filter", chain: "FORWARD", spec: [...c, "-j", FORWARD_CHAIN] },
    rules: [
      { table: "filter", chain: FORWARD_CHAIN, spec: ["-s", network, ...c, "-j", "ACCEPT"] },
      { table: "filter", chain: FORWARD_CHAIN, spec: ["-d", network, ...c, "-j", "ACCEPT"] },
    ],
  };
}

/**
 * flannel's rule list in its own order (the jump first, then the chain),
 * as flannel's `masqRules`/`forwardRules` return it.
 *
 * @param chain An owned chain.
 * @returns Jump followed by the chain's rules.
 */
export function flannelRuleList(chain: OwnedChain): IptablesRule[] {
  return [chain.jump, ...chain.rules];
}

function quoteWord(word: string, previous: string | undefined): string {
  if (previous === "--comment" || /[\s"]/.test(word)) {
    return `"${word.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
  }
  return word;
}

/**
 * A rule as one line, the way `iptables -S` prints it and
 * `iptables-restore` reads it (comments in double quotes).
 *
 * @param rule The rule.
 * @param action `-A` (append) or `-D` (delete).
 * @returns e.g. `-A FLANNEL-FWD -s 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`.
 */
export function formatRule(rule: IptablesRule, action: "-A" | "-D" = "-A"): string {
  const words = rule.spec.map((w, i) => quoteWord(w, rule.spec[i - 1]));
  return [action, rule.chain, ...words].join(" ");
}

/** Chains and rules of one table, parsed from `iptables -t <table> -S`. */
export interface TableState {
  /** Chains that exist (built-in ones from `-P`, user ones from `-N`). */
  readonly chains: ReadonlySet<string>;
  /** Rule lines per chain, each exactly as printed (starting with `-A <chain> `). */
  readonly rules: ReadonlyMap<string, readonly string[]>;
}

/**
 * Parse the output of `iptables -t <table> -S`.
 *
 * @param text The command's standard output.
 * @returns Chains and rule lines.
 */
export function parseTableState(text: string): TableState {
  const chains = new Set<string>();
  const rules = new Map<string, string[]>();
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    const m = /^(-P|-N|-A) (\S+)/.exec(line);
    if (!m) continue;
    chains.add(m[2]);
    if (m[1] === "-A") {
      const list = rules.get(m[2]) ?? [];
      list.push(line);
      rules.set(m[2], list);
    }
  }
  return { chains, rules };
}

/** What to do to bring one owned chain to its desired content. */
export interface ChainPlan {
  /** True when the chain, its single jump and the parent chain are already right. */
  readonly upToDate: boolean;
  /** The `iptables-restore --noflush` input that fixes everything at once ("" when up to date). */
  readonly payload: string;
  /** Rule lines found that are deleted (stale or duplicate), for logging. */
  readonly removed: readonly string[];
}

/**
 * Compare a table's current state with an owned chain's desired content and
 * produce the one transaction that makes them equal.
 *
 * @param state Current table state.
 * @param want The desired chain.
 * @returns The plan; `payload` is empty when nothing must change.
 */
export function planChain(state: TableState, want: OwnedChain): ChainPlan {
  const desired = want.rules.map((r) => formatRule(r));
  const current = state.rules.get(want.chain) ?? [];
  const jump = formatRule(want.jump);
  const parentRules = state.rules.get(want.parent) ?? [];
  const jumps = parentRules.filter((l) => l === jump).length;
  const marker = `--comment "${want.comment}"`;
  const stale = parentRules.filter((l) => l !== jump && l.includes(marker));
  const sameChain = state.chains.has(want.chain) &&
    current.length === desired.length && current.every((l, i) => l === desired[i]);
  const extraJumps = Math.max(0, jumps - 1);
  const removed = [...stale, ...Array(extraJumps).fill(jump)];
  // what the rewrite drops from the chain itself
  for (const l of current) if (!desired.includes(l)) removed.push(l);
  if (sameChain && jumps === 1 && stale.length === 0) {
    return { upToDate: true, payload: "", removed: [] };
  }
  const lines = [`*${want.table}`, `:${want.chain} - [0:0]`, ...desired];
  if (jumps === 0) lines.push(jump);
  for (let i = 0; i < extraJumps; i++) lines.push(`-D ${jump.slice(3)}`);
  for (const l of stale) lines.push(`-D ${l.slice(3)}`);
  lines.push("COMMIT");
  return { upToDate: false, payload: lines.join("\n") + "\n", removed };
}

/**
 * The transaction that removes an owned chain and every jump or rule with
 * its comment from the parent chain (used when switching to nftables, or
 * when masquerading is turned off). Empty when there is nothing to remove.
 *
 * @param state Current table state.
 * @param owned The chain to remove (its rules are not needed, only names).
 * @returns `iptables-restore --noflush` input, or "".
 */
export function planRemoval(
  state: TableState,
  owned: Pick<OwnedChain, "table" | "chain" | "parent" | "comment">,
): string {
  const marker = `--comment "${owned.comment}"`;
  const lines: string[] = [];
  for (const l of state.rules.get(owned.parent) ?? []) {
    if (l.includes(marker) || l.endsWith(`-j ${owned.chain}`)) lines.push(`-D ${l.slice(3)}`);
  }
  if (state.chains.has(owned.chain)) lines.push(`-F ${owned.chain}`, `-X ${owned.chain}`);
  if (lines.length === 0) return "";
  return [`*${owned.table}`, ...lines, "COMMIT"].join("\n") + "\n";
}

/**
 * Whether an iptables version supports `--random-fully` (and
 * `iptables-restore --wait`): 1.6.2 or newer, as go-iptables decides.
 *
 * @param versionText Output of `iptables --version`, e.g. `iptables v1.8.9 (nf_tables)`.
 * @returns True when 1.6.2 or newer.
 * @throws {SyntaxError} When no version number is found.
 */
export function versionSupportsRandomFully(versionText: string): boolean {
  const m = /v(\d+)\.(\d+)\.(\d+)/.exec(versionText);
  if (!m) {
    throw new SyntaxError(
      `Cannot find a version in iptables --version output: current value is ${
        JSON.stringify(versionText.trim())
      }`,
    );
  }
  const [a, b, c] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return a > 1 || (a === 1 && (b > 6 || (b === 6 && c >= 2)));
}
