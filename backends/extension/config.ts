/**
 * The extension backend's keys of `Backend`: flannel's four commands plus
 * weft's own limits (time limit, parallelism, where the once-only state
 * lives), validated with valibot through `parseBackendOptions` so errors
 * name `Backend.<Key>`, the value and what is expected.
 *
 * @module
 */

import * as path from "node:path";
import * as v from "valibot";
import { type NetworkConfig, parseBackendOptions } from "../../lease/config.ts";

/** Where the once-only state lives unless `Backend.StateDir` says otherwise. */
export const DEFAULT_STATE_DIR = "/run/weft/extension";
/** Time limit of one command run unless `Backend.CommandTimeoutSeconds` says otherwise. */
export const DEFAULT_COMMAND_TIMEOUT_SECONDS = 30;
/** Peer commands running at once unless `Backend.MaxParallelCommands` says otherwise. */
export const DEFAULT_MAX_PARALLEL_COMMANDS = 4;

const command = v.optional(
  v.string("must be a shell command line (a JSON string), as flannel reads it"),
  "",
);

const ExtensionOptionsSchema = v.object({
  PreStartupCommand: command,
  PostStartupCommand: command,
  SubnetAddCommand: command,
  SubnetRemoveCommand: command,
  CommandTimeoutSeconds: v.optional(
    v.pipe(
      v.number("must be a number of seconds such as 30"),
      v.gtValue(0, "must be more than 0 seconds"),
      v.maxValue(86_400, "must be at most 86400 seconds (one day)"),
    ),
    DEFAULT_COMMAND_TIMEOUT_SECONDS,
  ),
  MaxParallelCommands: v.optional(
    v.pipe(
      v.number("must be a whole number such as 4"),
      v.integer("must be a whole number such as 4"),
      v.minValue(1, "must be at least 1"),
      v.maxValue(256, "must be at most 256"),
    ),
    DEFAULT_MAX_PARALLEL_COMMANDS,
  ),
  StateDir: v.optional(
    v.pipe(
      v.string("must be a directory path such as /run/weft/extension"),
      v.check(path.isAbsolute, "must be an absolute directory path such as /run/weft/extension"),
    ),
    DEFAULT_STATE_DIR,
  ),
});

/** The extension backend's options, defaults applied. */
export interface ExtensionConfig {
  /** Run (through `sh -c`) before the lease is acquired; its stdout becomes BackendData. */
  readonly preStartupCommand: string;
  /** Run after the lease is acquired (env NETWORK, SUBNET, IPV6SUBNET, PUBLIC_IP, PUBLIC_IPV6). */
  readonly postStartupCommand: string;
  /** Run once per peer state (env SUBNET, IPV6SUBNET, PUBLIC_IP, PUBLIC_IPV6; stdin its BackendData). */
  readonly subnetAddCommand: string;
  /** Run once when a peer whose add succeeded goes away (same env and stdin as its add). */
  readonly subnetRemoveCommand: string;
  /** Time limit of one run, ms; the process group is killed after it. */
  readonly commandTimeoutMs: number;
  /** Peer commands running at once. */
  readonly maxParallelCommands: number;
  /** Directory of the once-only state files. */
  readonly stateDir: string;
}

/**
 * Read the extension backend's options from `Backend` (keys matched
 * case-insensitively, as flannel's Go decoder does).
 *
 * @param config The network configuration.
 * @returns The options with defaults: no commands, a 30 s time limit, 4
 *   parallel peer commands, state under `/run/weft/extension`.
 * @throws {ConfigError} When a key has the wrong type or range, naming
 *   `Backend.<Key>`, the current value and what is expected.
 * @example
 * ```ts
 * const cfg = parseExtensionConfig(parseNetworkConfig(
 *   '{"Network":"10.0.0.0/16","Backend":{"Type":"extension","SubnetAddCommand":"ip route add $SUBNET via $PUBLIC_IP"}}',
 * ));
 * cfg.commandTimeoutMs; // 30000
 * ```
 */
export function parseExtensionConfig(config: NetworkConfig): ExtensionConfig {
  const o = parseBackendOptions(config, ExtensionOptionsSchema);
  return {
    preStartupCommand: o.PreStartupCommand,
    postStartupCommand: o.PostStartupCommand,
    subnetAddCommand: o.SubnetAddCommand,
    subnetRemoveCommand: o.SubnetRemoveCommand,
    commandTimeoutMs: Math.round(o.CommandTimeoutSeconds * 1000),
    maxParallelCommands: o.MaxParallelCommands,
    stateDir: o.StateDir,
  };
}
