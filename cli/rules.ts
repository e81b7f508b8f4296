/**
 * The host rules the flags ask for: masquerade (`--ip-masq`) and forward
 * accept rules (`--iptables-forward-rules`), in iptables or nftables as the
 * config's `EnableNFTables` says, re-checked every `--iptables-resync`
 * seconds. Rules of the mode not in use (flannel's, or ours from an earlier
 * config) are removed once. With `--ip-blackhole-route`, a blackhole route
 * for this host's subnet is kept too (checked at once, then every
 * `--iptables-resync` seconds; flannel waits one period before the first).
 *
 * @module
 */

import { sleepQuietly } from "../core/abort.ts";
import { type Clock, systemClock } from "../core/clock.ts";
import type { Logger } from "../core/log.ts";
import type { NetworkConfig } from "../lease/config.ts";
import type { Lease } from "../lease/types.ts";
import { formatIPv4Net, type IPv4Net } from "../core/ip.ts";
import type { HostRules } from "../agent/agent.ts";
import type { Flags } from "./flags.ts";

/**
 * The host rules for these flags, or undefined when none are wanted.
 *
 * @param flags Parsed flags.
 * @param logger Where rule changes are logged.
 * @returns The rules the agent installs and keeps.
 * @example
 * ```ts
 * const rules = hostRules(parseFlags(["--ip-masq"], {}), logger);
 * ```
 */
export function hostRules(flags: Flags, logger: Logger): HostRules | undefined {
  if (!flags.ipMasq && !flags.iptablesForwardRules && !flags.ipBlackholeRoute) return undefined;
  const rules = flags.ipMasq || flags.iptablesForwardRules;
  let cleaned: string | undefined;
  const ensure = async (config: NetworkConfig, lease: Lease, signal?: AbortSignal) => {
    const masq = await import("../datapath/masq.ts");
    const mode = config.enableNFTables ? "nftables" : "iptables";
    if (cleaned !== mode) {
      // rules of the mode not in use are flannel's or ours from an earlier config
      await masq.removeRules({
        mode: mode === "nftables" ? "iptables" : "nftables",
        logger,
        signal,
      });
      cleaned = mode;
    }
    let changed = false;
    const removed: string[] = [];
    const applied: string[] = [];
    if (flags.ipMasq) {
      const r = await masq.ensureMasqRules({
        network: config.network,
        subnet: lease.subnet,
        ipv6Network: config.enableIPv6 ? config.ipv6Network : undefined,
        ipv6Subnet: config.enableIPv6 ? lease.ipv6Subnet : undefined,
        mode,
        randomFully: flags.ipMasqFullyRandomDisable ? false : undefined,
        logger,
        signal,
      });
      changed ||= r.changed;
      removed.push(...r.removed);
      applied.push(...r.applied);
    }
    if (flags.iptablesForwardRules) {
      const r = await masq.ensureForwardRules({
        network: config.network,
        ipv6Network: config.enableIPv6 ? config.ipv6Network : undefined,
        mode,
        logger,
        signal,
      });
      changed ||= r.changed;
      removed.push(...r.removed);
      applied.push(...r.applied);
    }
    return { changed, removed, applied };
  };
  return {
    apply: async (config, lease) => {
      if (rules) await ensure(config, lease);
    },
    run: async (config, lease, signal) => {
      const tasks: Promise<void>[] = [];
      if (flags.ipBlackholeRoute && lease.subnet) {
        tasks.push(
          keepBlackholeRoute(lease.subnet, flags.iptablesResync, systemClock, logger, signal),
        );
      }
      if (rules) {
        const { keepRulesInSync } = await import("../datapath/masq.ts");
        tasks.push(keepRulesInSync(() => ensure(config, lease, signal), {
          intervalSeconds: flags.iptablesResync,
          clock: systemClock,
          signal,
          logger,
        }));
      }
      await Promise.all(tasks);
    },
  };
}

/**
 * Keep `blackhole <own IPv4 subnet>` until `signal` aborts: at once, then every
 * `intervalSeconds`; each addition is logged, other outcomes when they change.
 */
async function keepBlackholeRoute(
  own: IPv4Net,
  intervalSeconds: number,
  clock: Clock,
  logger: Logger,
  signal: AbortSignal,
): Promise<void> {
  const { openNetlinkClient } = await import("../datapath/netlink/client.ts");
  const { ensureBlackholeRoute } = await import("../datapath/blackhole.ts");
  const client = await openNetlinkClient();
  const subnet = formatIPv4Net(own);
  let last = "";
  try {
    do {
      let outcome: string;
      try {
        outcome = await ensureBlackholeRoute(client, own);
      } catch (e) {
        outcome = `failed: ${(e as Error).message}`;
      }
      // every addition is a change worth a line; the other outcomes only when they change
      if (outcome === "added") logger.info("added the blackhole route", { subnet });
      else if (outcome !== last && outcome === "routed") {
        logger.debug("no blackhole route: the subnet is routed already (the pod bridge)", {
          subnet,
        });
      } else if (outcome !== last && outcome !== "present") {
        logger.error("cannot add the blackhole route, will retry", { subnet, error: outcome });
      }
      last = outcome;
    } while (await sleepQuietly(clock, intervalSeconds * 1000, signal));
  } finally {
    client.close();
  }
}
