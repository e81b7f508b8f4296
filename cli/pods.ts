/**
 * The `attach` and `detach` commands: put a network namespace on this
 * host's overlay subnet, or take it off (the work is in ./attach.ts).
 *
 * @module
 */

import type { Logger } from "../core/log.ts";
import type { Flags } from "./flags.ts";
import type { CliIo } from "./io.ts";

/** The pod commands. */
export type PodCommand = "attach" | "detach";

/**
 * Run `weft attach <netns>` or `weft detach <netns>`.
 *
 * @param command Which one.
 * @param args The arguments after the command (exactly one: the namespace).
 * @param flags Parsed flags (`--subnet-file`).
 * @param io Where the answer or the error goes.
 * @param logger For the steps taken.
 * @returns The exit code: 0 done, 1 failed (the message says why), 2 usage error.
 * @example
 * ```ts
 * const code = await podCommand("attach", ["pod1"], flags, processIo, logger);
 * ```
 */
export async function podCommand(
  command: PodCommand,
  args: readonly string[],
  flags: Flags,
  io: CliIo,
  logger: Logger,
): Promise<number> {
  if (args.length !== 1) {
    io.stderr(`weft: usage: weft ${command} <netns name or path> [--subnet-file path]`);
    return 2;
  }
  const { attachPod, detachPod, AttachError } = await import("./attach.ts");
  try {
    if (command === "attach") {
      const a = await attachPod({ netns: args[0], subnetFile: flags.subnetFile, logger });
      io.stdout(`${a.netns} ${a.ifname} ${a.ip}/${a.prefixLen} via ${a.gateway} mtu ${a.mtu}`);
    } else {
      const removed = await detachPod({ netns: args[0], logger });
      io.stdout(removed ? `detached ${args[0]}` : `${args[0]} was not attached`);
    }
    return 0;
  } catch (e) {
    if (e instanceof AttachError) {
      io.stderr(`weft ${command}: ${e.message}`);
      return 1;
    }
    throw e;
  }
}
