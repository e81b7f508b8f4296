/**
 * Masquerade (`--ip-masq`) and forward-accept (`--iptables-forward-rules`)
 * rules, applied with iptables (default) or nftables (`EnableNFTables`).
 *
 * The rule text lives in {@link ./iptables.ts} and {@link ./nft.ts} (pure,
 * identical to flannel v0.28); this file reads the current state through an
 * injected {@link Exec}, decides whether anything differs, and applies one
 * atomic transaction per table when it does:
 *
 * - iptables: `iptables -t <table> -S`, then `iptables-restore --noflush
 *   --wait` with the owned chain declared (which empties it), refilled,
 *   the jump appended only when missing, stale flannel-commented rules in
 *   the built-in chain deleted — all in one commit.
 * - nftables: `nft list chain …`, then `nft -f -` with add table / add
 *   chain / flush chain / add rules in one transaction.
 *
 * A call whose rules are already in place changes nothing, so calling it
 * again after a restart, or every few seconds from
 * {@link keepRulesInSync} (flannel's `--iptables-resync`, default 5 s),
 * neither drops nor duplicates rules. Rules of a previous subnet vanish
 * with the rewrite. Run these in the agent's own network namespace (agents
 * run under `ip netns exec` in the lab); tests pass {@link netnsExec}.
 *
 * @module
 */

import { sleepQuietly } from "../core/abort.ts";
import { type Clock, systemClock } from "../core/clock.ts";
import { formatIPv4Net, formatIPv6Net, type IPv4Net, type IPv6Net } from "../core/ip.ts";
import { type Logger, nullLogger } from "../core/log.ts";
import { CommandError, type Exec, type ExecResult, systemExec } from "../core/exec.ts";
import {
  FORWARD_CHAIN,
  FORWARD_COMMENT,
  forwardChain,
  type IpFamily,
  MASQ_CHAIN,
  MASQ_COMMENT,
  masqChain,
  type OwnedChain,
  parseTableState,
  planChain,
  planRemoval,
  versionSupportsRandomFully,
} from "./iptables.ts";
import {
  NFT_TABLES,
  type NftChain,
  nftChainTransaction,
  nftFamily,
  nftForwardChain,
  nftMasqChain,
  nftRandomFullyProbe,
  nftRemovalTransaction,
  nftRulesEqual,
  parseNftChainRules,
} from "./nft.ts";

/** Which kernel interface carries the rules. */
export type RuleMode = "iptables" | "nftables";

/** Options shared by every rule call. */
export interface RuleCommonOptions {
  /** `iptables` (default) or `nftables` (the network config's `EnableNFTables`). */
  readonly mode?: RuleMode;
  /** How to run `iptables*`/`nft` (default: in this process's namespace). */
  readonly exec?: Exec;
  readonly logger?: Logger;
  readonly signal?: AbortSignal;
}

/** Options of {@link ensureMasqRules}. */
export interface MasqOptions extends RuleCommonOptions {
  /** Cluster network (IPv4); with `subnet`. Leave out for an IPv6-only cluster. */
  readonly network?: IPv4Net;
  /** This host's IPv4 subnet (the lease). */
  readonly subnet?: IPv4Net;
  /** Cluster IPv6 network; with `ipv6Subnet`. */
  readonly ipv6Network?: IPv6Net;
  /** This host's IPv6 subnet. */
  readonly ipv6Subnet?: IPv6Net;
  /**
   * Use `--random-fully` / `fully-random`. Default: when supported
   * ({@link detectRandomFully}); `false` is flannel's
   * `--ip-masq-fully-random-disable`.
   */
  readonly randomFully?: boolean;
}

/** Options of {@link ensureForwardRules}. */
export interface ForwardOptions extends RuleCommonOptions {
  /** Cluster network (IPv4). */
  readonly network?: IPv4Net;
  /** Cluster IPv6 network. */
  readonly ipv6Network?: IPv6Net;
}

/** What a rule call did. */
export interface RuleResult {
  /** Whether anything was written. */
  readonly changed: boolean;
  /** Transactions applied, as fed to `iptables-restore`/`nft`. */
  readonly applied: readonly string[];
  /** Rule lines that were deleted (stale, duplicate or replaced). */
  readonly removed: readonly string[];
}

/** Applying masquerade or forward rules failed. */
export class RuleError extends Error {
  /**
   * @param message What failed and how to fix it.
   * @param options The underlying error.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RuleError";
  }
}

const tools = {
  4: { iptables: "iptables", restore: "iptables-restore" },
  6: { iptables: "ip6tables", restore: "ip6tables-restore" },
} as const;

async function must(
  exec: Exec,
  cmd: string,
  args: string[],
  input: string | undefined,
  signal: AbortSignal | undefined,
  what: string,
): Promise<ExecResult> {
  const r = await exec(cmd, args, { input, signal });
  if (r.code !== 0) {
    const hint = r.code === 127
      ? `${cmd} is not installed: install it (Debian: apt-get install iptables nftables) or switch ${
        cmd.startsWith("nft") ? "EnableNFTables off" : "EnableNFTables on"
      }`
      : `check that this process may change netfilter rules (root or CAP_NET_ADMIN)`;
    throw new RuleError(`Cannot ${what}`, { cause: new CommandError([cmd, ...args], r, hint) });
  }
  return r;
}

/**
 * Whether `--random-fully` (iptables) or `masquerade fully-random`
 * (nftables) is available: iptables ≥ 1.6.2 as go-iptables decides, or an
 * `nft -c` probe as flannel does.
 *
 * @param options Mode, family and exec.
 * @returns True when supported.
 * @throws {RuleError} When the tool cannot be run.
 */
export async function detectRandomFully(
  options: RuleCommonOptions & { family?: IpFamily } = {},
): Promise<boolean> {
  const exec = options.exec ?? systemExec;
  if ((options.mode ?? "iptables") === "nftables") {
    const r = await exec("nft", ["-c", "-f", "-"], {
      input: nftRandomFullyProbe(),
      signal: options.signal,
    });
    if (r.code === 127) {
      await must(exec, "nft", ["--version"], undefined, options.signal, "run nft");
    }
    return r.code === 0;
  }
  const cmd = tools[options.family ?? 4].iptables;
  const r = await must(exec, cmd, ["--version"], undefined, options.signal, `run ${cmd}`);
  return versionSupportsRandomFully(r.stdout + r.stderr);
}

async function ensureIptablesChain(
  family: IpFamily,
  want: OwnedChain,
  o: RuleCommonOptions,
): Promise<RuleResult> {
  const exec = o.exec ?? systemExec;
  const { iptables, restore } = tools[family];
  const state = parseTableState(
    (await must(
      exec,
      iptables,
      ["--wait", "-t", want.table, "-S"],
      undefined,
      o.signal,
      `read the ${want.table} table`,
    )).stdout,
  );
  const plan = planChain(state, want);
  if (plan.upToDate) return { changed: false, applied: [], removed: [] };
  await must(
    exec,
    restore,
    ["--noflush", "--wait"],
    plan.payload,
    o.signal,
    `apply the ${want.chain} chain with ${restore}:\n${plan.payload}`,
  );
  (o.logger ?? nullLogger).info("installed rules", {
    chain: want.chain,
    family,
    rules: want.rules.length,
    removed: plan.removed.length,
  });
  return { changed: true, applied: [plan.payload], removed: plan.removed };
}

async function ensureNftChain(want: NftChain, o: RuleCommonOptions): Promise<RuleResult> {
  const exec = o.exec ?? systemExec;
  const listed = await exec("nft", ["list", "chain", want.family, want.table, want.chain], {
    signal: o.signal,
  });
  if (listed.code === 127) {
    await must(exec, "nft", ["--version"], undefined, o.signal, "run nft");
  }
  const current = listed.code === 0 ? parseNftChainRules(listed.stdout) : [];
  if (listed.code === 0 && nftRulesEqual(current, want.rules)) {
    return { changed: false, applied: [], removed: [] };
  }
  const tx = nftChainTransaction(want);
  await must(exec, "nft", ["-f", "-"], tx, o.signal, `apply nftables rules:\n${tx}`);
  (o.logger ?? nullLogger).info("installed nftables rules", {
    table: want.table,
    chain: want.chain,
    rules: want.rules.length,
  });
  const removed = current.filter((l) => !want.rules.includes(l));
  return { changed: true, applied: [tx], removed };
}

function merge(results: RuleResult[]): RuleResult {
  return {
    changed: results.some((r) => r.changed),
    applied: results.flatMap((r) => r.applied),
    removed: results.flatMap((r) => r.removed),
  };
}

/**
 * Install flannel's masquerade rules for each configured family, or leave
 * them untouched when they are already exactly right. Rules of a previous
 * subnet or network are replaced in the same transaction.
 *
 * @param options Networks, mode, exec.
 * @returns What changed.
 * @throws {TypeError} When a network is given without its subnet or the reverse.
 * @throws {RuleError} When a tool is missing or refuses the transaction.
 * @example
 * ```ts
 * await ensureMasqRules({ network: parseIPv4Net("10.5.0.0/16"), subnet: lease.subnet });
 * ```
 */
export async function ensureMasqRules(options: MasqOptions): Promise<RuleResult> {
  if (!options.network !== !options.subnet) {
    throw new TypeError(
      `Cannot set up masquerading: 'network' and 'subnet' must be given together, current values are ${
        options.network ? formatIPv4Net(options.network) : "none"
      } and ${options.subnet ? formatIPv4Net(options.subnet) : "none"}`,
    );
  }
  if (!options.ipv6Network !== !options.ipv6Subnet) {
    throw new TypeError(
      `Cannot set up IPv6 masquerading: 'ipv6Network' and 'ipv6Subnet' must be given together`,
    );
  }
  const mode = options.mode ?? "iptables";
  const jobs: [IpFamily, string, string][] = [];
  if (options.network && options.subnet) {
    jobs.push([4, formatIPv4Net(options.network), formatIPv4Net(options.subnet)]);
  }
  if (options.ipv6Network && options.ipv6Subnet) {
    jobs.push([6, formatIPv6Net(options.ipv6Network), formatIPv6Net(options.ipv6Subnet)]);
  }
  const results: RuleResult[] = [];
  for (const [family, network, subnet] of jobs) {
    const randomFully = options.randomFully ??
      await detectRandomFully({ ...options, mode, family });
    results.push(
      mode === "nftables"
        ? await ensureNftChain(nftMasqChain(network, subnet, { family, randomFully }), options)
        : await ensureIptablesChain(
          family,
          masqChain(network, subnet, { family, randomFully }),
          options,
        ),
    );
  }
  return merge(results);
}

/**
 * Install flannel's forward-accept rules (traffic from or to the cluster
 * network is accepted even when the FORWARD policy is DROP).
 *
 * @param options Networks, mode, exec.
 * @returns What changed.
 * @throws {RuleError} When a tool is missing or refuses the transaction.
 */
export async function ensureForwardRules(options: ForwardOptions): Promise<RuleResult> {
  const mode = options.mode ?? "iptables";
  const jobs: [IpFamily, string][] = [];
  if (options.network) jobs.push([4, formatIPv4Net(options.network)]);
  if (options.ipv6Network) jobs.push([6, formatIPv6Net(options.ipv6Network)]);
  const results: RuleResult[] = [];
  for (const [family, network] of jobs) {
    results.push(
      mode === "nftables"
        ? await ensureNftChain(nftForwardChain(network, family), options)
        : await ensureIptablesChain(family, forwardChain(network), options),
    );
  }
  return merge(results);
}

/**
 * Remove every masquerade and forward rule weft (or flannel) installed in
 * the given mode — the jumps, the chains, or the nftables tables. flannel
 * does this for the mode it is not using when it starts, so switching
 * `EnableNFTables` leaves no second rule set behind. A family whose tool is
 * not installed is skipped.
 *
 * @param options Mode, families (default both), exec.
 * @returns What was removed.
 * @throws {RuleError} When a tool refuses the transaction.
 */
export async function removeRules(
  options: RuleCommonOptions & { families?: readonly IpFamily[] },
): Promise<RuleResult> {
  const exec = options.exec ?? systemExec;
  const applied: string[] = [];
  for (const family of options.families ?? [4, 6]) {
    if ((options.mode ?? "iptables") === "nftables") {
      const tx = nftRemovalTransaction(family);
      const listed = await exec("nft", ["list", "tables"], { signal: options.signal });
      if (listed.code === 127) continue;
      const name = `table ${nftFamily(family)} ${NFT_TABLES[family]}`;
      if (!listed.stdout.split("\n").some((l) => l.trim() === name)) continue;
      await must(exec, "nft", ["-f", "-"], tx, options.signal, "delete the flannel nftables table");
      applied.push(tx);
      continue;
    }
    const { iptables, restore } = tools[family];
    const owned = [
      { table: "nat", chain: MASQ_CHAIN, parent: "POSTROUTING", comment: MASQ_COMMENT },
      { table: "filter", chain: FORWARD_CHAIN, parent: "FORWARD", comment: FORWARD_COMMENT },
    ] as const;
    for (const o of owned) {
      const args = ["--wait", "-t", o.table, "-S"];
      const r = await exec(iptables, args, { signal: options.signal });
      if (r.code === 127) break;
      if (r.code !== 0) {
        throw new RuleError(`Cannot read the ${o.table} table`, {
          cause: new CommandError([iptables, ...args], r),
        });
      }
      const payload = planRemoval(parseTableState(r.stdout), o);
      if (!payload) continue;
      await must(exec, restore, ["--noflush", "--wait"], payload, options.signal, "remove rules");
      applied.push(payload);
    }
  }
  if (applied.length) {
    (options.logger ?? nullLogger).info("removed rules", { mode: options.mode ?? "iptables" });
  }
  return { changed: applied.length > 0, applied, removed: [] };
}

/** Options of {@link keepRulesInSync}. */
export interface ResyncOptions {
  /** Seconds between checks (`--iptables-resync`, flannel default 5). */
  readonly intervalSeconds?: number;
  readonly clock?: Clock;
  /** Ends the loop. */
  readonly signal: AbortSignal;
  readonly logger?: Logger;
  /** Called after a check found rules missing and restored them. */
  readonly onRepair?: (result: RuleResult) => void;
}

/**
 * Re-check rules every interval and restore them when someone deleted or
 * changed them. `ensure` is normally a closure over
 * {@link ensureMasqRules} or {@link ensureForwardRules}, which write only
 * when something differs. Errors are logged and retried at the next tick.
 *
 * @param ensure The check-and-apply call.
 * @param options Interval, clock, abort signal, logger.
 * @returns When the signal aborts.
 * @throws {RangeError} When the interval is not a positive number.
 * @example
 * ```ts
 * keepRulesInSync(() => ensureMasqRules(opts), { intervalSeconds: 5, signal });
 * ```
 */
export async function keepRulesInSync(
  ensure: () => Promise<RuleResult>,
  options: ResyncOptions,
): Promise<void> {
  const seconds = options.intervalSeconds ?? 5;
  if (!(seconds > 0) || !Number.isFinite(seconds)) {
    throw new RangeError(
      `Cannot resync rules: 'intervalSeconds' must be a positive number, current value is ${seconds}`,
    );
  }
  const clock = options.clock ?? systemClock;
  const logger = options.logger ?? nullLogger;
  const { signal } = options;
  while (!signal.aborted) {
    if (!(await sleepQuietly(clock, seconds * 1000, signal))) return;
    try {
      const r = await ensure();
      if (r.changed) {
        logger.warn("rules were missing or changed; restored them", { removed: r.removed.length });
        options.onRepair?.(r);
      }
    } catch (e) {
      if (signal.aborted) return;
      logger.error("cannot check rules; retrying at the next interval", { error: e });
    }
  }
}
