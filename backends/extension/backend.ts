/**
 * The extension backend: flannel's `extension` (its datapath is four shell
 * commands from the network config), compatible and hardened.
 *
 * Kernel state it creates: none of its own — exactly what the commands do.
 *
 * As flannel (v0.28.0/.1; Documentation/extension.md), every command runs as
 * `sh -c <command>` with weft's environment plus:
 * - `PreStartupCommand`, before the lease is acquired; stdin empty (a
 *   newline). Its standard output, trimmed as Go's `strings.TrimSpace` does,
 *   becomes this host's `BackendData`, stored as a JSON string:
 *   `{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"extension","BackendData":"02:42:…"}`.
 *   Without a PreStartupCommand the lease has no BackendData.
 * - `PostStartupCommand`, after the lease: env `NETWORK`, `SUBNET`,
 *   `IPV6SUBNET`, `PUBLIC_IP`, `PUBLIC_IPV6` (this host's).
 * - `SubnetAddCommand` / `SubnetRemoveCommand`, per peer lease of type
 *   `extension`: env `SUBNET`, `IPV6SUBNET`, `PUBLIC_IP`, `PUBLIC_IPV6` (the
 *   peer's); stdin the peer's BackendData string and a newline. Leases of
 *   another type, or whose BackendData is not a JSON string, are skipped
 *   with a warning.
 *
 * Better than flannel:
 * - a failed startup command fails registration, which the agent retries
 *   with back-off and shows in `/readyz`; a failed peer command is retried
 *   with back-off (1 s doubling to 30 s) until it succeeds or the peer
 *   changes; failures are logged with exit status and stderr, counted in
 *   `/metrics`, and shown in `/readyz` while they last;
 * - every run has a time limit (`CommandTimeoutSeconds`, 30 s): then its
 *   whole process group is killed and that is reported;
 * - a peer's add runs once per peer state — not again on a resync, a lease
 *   renewal or a restart — and a peer that leaves gets its remove once,
 *   also when it left while weft was down (state in `StateDir`, see
 *   ./state.ts); a changed peer gets remove (old) then add (new);
 * - at most `MaxParallelCommands` (4) peer commands run at once, each
 *   peer's in order.
 *
 * Desired state is the set of peer states (pure: {@link peerStates}); the
 * difference from the recorded adds is worked off by ./peers.ts. A stop
 * (SIGTERM) lets running peer commands finish (bounded by their time limit)
 * and records them; startup commands are killed on stop.
 *
 * Not copied from flannel: BackendData is stdout only (flannel mixes in
 * stderr); `PUBLIC_IP` is the public IP (`--public-ip`, else the interface's
 * address; flannel 0.28 takes the interface's); absent IPv6 values are
 * empty (flannel writes `::/0` and `<nil>`); flannel ≥ 0.28.2 no longer
 * uses a shell (it splits the command on white space), which breaks its own
 * documented examples — weft keeps `sh -c`.
 *
 * @module
 */

import { whenAborted } from "../../core/abort.ts";
import { formatIPv4Net, formatIPv6Net, formatSubnetPair, subnetKey } from "../../core/ip.ts";
import { type Logger, nullLogger } from "../../core/log.ts";
import type { Lease } from "../../lease/types.ts";
import type { Backend, BackendContext, Network, PeerChange } from "../types.ts";
import { type CommandRunner, goTrimSpace, shellRunner } from "./command.ts";
import { type ExtensionConfig, parseExtensionConfig } from "./config.ts";
import { CommandExecutor, ExtensionCommandError } from "./executor.ts";
import { PeerCommands } from "./peers.ts";
import { type PeerState, PeerStateFile } from "./state.ts";

/** The backend type name, as in `Backend.Type` and the lease's `BackendType`. */
export const EXTENSION_TYPE = "extension";

/** Options of {@link extensionBackend} (the config's keys are in ./config.ts). */
export interface ExtensionBackendOptions {
  /** Runs the commands (default: `sh -c` through node:child_process). */
  readonly runner?: CommandRunner;
  /** Defaults to the context's logger. */
  readonly logger?: Logger;
  /** Jitter source of the retry back-off. */
  readonly random?: () => number;
  /** First retry delay of a peer command, ms (default 1000). */
  readonly retryBaseMs?: number;
  /** Longest retry delay of a peer command, ms (default 30 000). */
  readonly retryMaxMs?: number;
}

/** The extension Network, with hooks for tests and tools. */
export interface ExtensionNetwork extends Network {
  /** The options in force. */
  readonly extensionConfig: ExtensionConfig;
  /** Apply single peer changes (the per-event path). */
  updatePeers(changes: readonly PeerChange[], signal?: AbortSignal): Promise<void>;
  /** A failing command (the oldest, and how many more), the first pass, or null. */
  notReadyReason(): string | null;
  /**
   * Resolves when no peer command is running or waiting for a slot
   * (commands pausing before a retry do not count).
   */
  idle(): Promise<void>;
  /** Peers whose add command succeeded, by lease key. */
  applied(): ReadonlyMap<string, PeerState>;
}

/** A peer skipped, and why. */
export interface SkippedPeer {
  readonly lease: Lease;
  readonly reason: string;
}

/**
 * The desired peer states for a set of leases (pure): every lease of type
 * `extension` except this host's, keyed by lease key (`10.5.2.0-24`).
 *
 * @param own This host's lease.
 * @param leases Peer leases (this host's own is skipped if present).
 * @returns The peer states and the leases skipped with why.
 */
export function peerStates(
  own: Lease,
  leases: readonly Lease[],
): { peers: Map<string, PeerState>; skipped: SkippedPeer[] } {
  const peers = new Map<string, PeerState>();
  const skipped: SkippedPeer[] = [];
  const ownKey = subnetKey(own.subnet, own.ipv6Subnet);
  for (const lease of leases) {
    const key = subnetKey(lease.subnet, lease.ipv6Subnet);
    if (key === ownKey) continue;
    const state = peerState(lease);
    if ("reason" in state) skipped.push({ lease, reason: state.reason });
    else peers.set(key, state);
  }
  return { peers, skipped };
}

/**
 * One lease as its commands see it, or why it is skipped (as flannel: a
 * lease of another type, or BackendData that is not a JSON string).
 *
 * @param lease A peer lease.
 * @returns The peer state, or `{ reason }`.
 */
export function peerState(lease: Lease): PeerState | { reason: string } {
  const type = lease.attrs.backendType;
  if (type !== EXTENSION_TYPE) {
    return { reason: `backend type is ${JSON.stringify(type ?? "udp")}, not "extension"` };
  }
  const data = lease.attrs.backendData;
  if (data !== undefined && data !== null && typeof data !== "string") {
    return {
      reason: `BackendData ${
        JSON.stringify(data)
      } is not a JSON string (flannel's extension backend writes PreStartupCommand's output as one)`,
    };
  }
  return {
    subnet: lease.subnet ? formatIPv4Net(lease.subnet) : "",
    ipv6Subnet: lease.ipv6Subnet ? formatIPv6Net(lease.ipv6Subnet) : null,
    publicIP: lease.attrs.publicIP,
    publicIPv6: lease.attrs.publicIPv6 ?? null,
    backendData: data ?? "",
  };
}

/**
 * Create the extension backend.
 *
 * @param options Command runner, logger, retry timing (all optional).
 * @returns The backend, type `extension`.
 * @example
 * ```ts
 * const backend = extensionBackend();
 * // network config: {"Network":"10.0.0.0/16","Backend":{"Type":"extension",
 * //   "SubnetAddCommand":"ip route add $SUBNET via $PUBLIC_IP",
 * //   "SubnetRemoveCommand":"ip route del $SUBNET via $PUBLIC_IP"}}
 * ```
 */
export function extensionBackend(options: ExtensionBackendOptions = {}): Backend {
  return { type: EXTENSION_TYPE, register: (ctx) => registerExtension(options, ctx) };
}

/**
 * The live peer reconciler of each state file in this process: a network
 * registered again (the lease was lost) stops its predecessor's commands
 * before it runs its own, so two never work off the same file.
 */
const liveByStateFile = new Map<string, PeerCommands>();

async function registerExtension(
  options: ExtensionBackendOptions,
  ctx: BackendContext,
): Promise<ExtensionNetwork> {
  const cfg = parseExtensionConfig(ctx.config);
  const log = (options.logger ?? ctx.logger ?? nullLogger).with({ backend: EXTENSION_TYPE });
  const ext = ctx.extIface;
  const clock = ctx.clock;
  const executor = new CommandExecutor({
    runner: options.runner ?? shellRunner,
    clock,
    timeoutMs: cfg.commandTimeoutMs,
    metrics: ctx.metrics,
  });
  const stateFile = new PeerStateFile(cfg.stateDir, ext.extAddr || ext.extV6Addr || "");
  await liveByStateFile.get(stateFile.snapshotPath)?.stop();

  const startup = async (
    name: "PreStartupCommand" | "PostStartupCommand",
    command: string,
    env: Record<string, string>,
  ) => {
    const outcome = await executor.run(name, command, env, "\n", ctx.signal);
    if (outcome.result !== "success") {
      const failed = executor.board.get(name);
      executor.board.set(name, {
        command: name,
        subject: "this host",
        summary: outcome.summary,
        attempts: (failed?.attempts ?? 0) + 1,
      });
      throw new ExtensionCommandError(outcome, command);
    }
    executor.board.clear(name);
    return outcome;
  };

  let hostBackendData: string | undefined;
  if (cfg.preStartupCommand) {
    const outcome = await startup("PreStartupCommand", cfg.preStartupCommand, {});
    // flannel's stdout+stderr, trimmed, json.Marshal'd as a string; ours is stdout only
    hostBackendData = goTrimSpace(outcome.raw.stdout);
    log.info("ran PreStartupCommand", { backendData: hostBackendData, ms: outcome.durationMs });
    const err = outcome.raw.stderr.trim();
    if (err) {
      log.info("PreStartupCommand wrote to stderr (not part of BackendData)", { stderr: err });
    }
  } else {
    log.info("no PreStartupCommand configured: the lease carries no BackendData");
  }
  if (!cfg.subnetAddCommand) {
    log.warn("no SubnetAddCommand configured: peers get nothing from this host");
  }

  const lease = await ctx.acquire({
    publicIP: ext.extAddr,
    publicIPv6: ext.extV6Addr ?? null,
    backendType: EXTENSION_TYPE,
    ...(hostBackendData !== undefined ? { backendData: hostBackendData } : {}),
  }, ctx.signal);

  if (cfg.postStartupCommand) {
    const outcome = await startup("PostStartupCommand", cfg.postStartupCommand, {
      NETWORK: ctx.config.network ? formatIPv4Net(ctx.config.network) : "",
      SUBNET: lease.subnet ? formatIPv4Net(lease.subnet) : "",
      IPV6SUBNET: lease.ipv6Subnet ? formatIPv6Net(lease.ipv6Subnet) : "",
      PUBLIC_IP: ext.extAddr,
      PUBLIC_IPV6: ext.extV6Addr ?? "",
    });
    log.info("ran PostStartupCommand", {
      subnet: formatSubnetPair(lease),
      ms: outcome.durationMs,
      ...(outcome.raw.stdout.trim() ? { output: outcome.raw.stdout.trim().slice(0, 500) } : {}),
    });
  }

  const peers = new PeerCommands({
    executor,
    stateFile,
    basis: { hostBackendData: hostBackendData ?? null, addCommand: cfg.subnetAddCommand },
    addCommand: cfg.subnetAddCommand,
    removeCommand: cfg.subnetRemoveCommand,
    maxParallel: cfg.maxParallelCommands,
    clock,
    logger: log,
    random: options.random,
    retryBaseMs: options.retryBaseMs,
    retryMaxMs: options.retryMaxMs,
  });
  liveByStateFile.set(stateFile.snapshotPath, peers);

  const warned = new Map<string, string>();
  const warnSkipped = (skipped: readonly SkippedPeer[]) => {
    for (const { lease: l, reason } of skipped) {
      const key = subnetKey(l.subnet, l.ipv6Subnet);
      if (warned.get(key) === reason) continue;
      warned.set(key, reason);
      log.warn("ignoring a peer lease", { subnet: formatSubnetPair(l), reason });
    }
  };

  return {
    lease,
    mtu: ext.mtu,
    extensionConfig: cfg,
    syncPeers(leases) {
      const { peers: states, skipped } = peerStates(lease, leases);
      warnSkipped(skipped);
      peers.setAll(states);
      return Promise.resolve();
    },
    updatePeers(changes: readonly PeerChange[]) {
      for (const change of changes) {
        const key = subnetKey(change.lease.subnet, change.lease.ipv6Subnet);
        if (key === subnetKey(lease.subnet, lease.ipv6Subnet)) continue;
        if (change.type === "removed") {
          peers.set(key, undefined);
          continue;
        }
        const state = peerState(change.lease);
        if ("reason" in state) {
          warnSkipped([{ lease: change.lease, reason: state.reason }]);
          peers.set(key, undefined);
        } else {
          peers.set(key, state);
        }
      }
      return Promise.resolve();
    },
    async run(signal) {
      await whenAborted(signal);
      await peers.stop();
      if (liveByStateFile.get(stateFile.snapshotPath) === peers) {
        liveByStateFile.delete(stateFile.snapshotPath);
      }
    },
    notReadyReason() {
      const f = executor.board.first();
      if (f) {
        const next = f.retryAt === undefined
          ? ""
          : `, next try in ${Math.max(0, Math.ceil((f.retryAt - clock.now()) / 1000))} s`;
        const n = executor.board.size;
        const more = n > 1 ? ` (and ${n - 1} more failing)` : "";
        return `${f.command} for ${f.subject} keeps failing: ${f.summary} (${f.attempts} attempt(s)${next})${more}`;
      }
      return peers.pendingReason();
    },
    idle: () => peers.idle(),
    applied: () => peers.applied(),
  };
}
