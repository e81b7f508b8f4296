/**
 * Host preparation before the backend registers: forwarding on (and bridge
 * netfilter's switch when the module is loaded), and a warning naming
 * `modprobe br_netfilter` when masquerade or forward rules are asked for but
 * the module is missing (flanneld refuses to start then; weft runs, since
 * traffic between hosts does not depend on it).
 *
 * A sysctl that is already right is never written, so a read-only
 * `/proc/sys` (an unprivileged container) is fine when the host set it; a
 * wrong one on a read-only `/proc/sys` throws with the fix, and the agent
 * keeps retrying with that reason in `/readyz`.
 *
 * @module
 */

import type { Logger } from "../core/log.ts";
import {
  bridgeNetfilterMissing,
  ensureForwarding,
  type ForwardingOptions,
} from "../datapath/sysctl.ts";

/** Options of {@link prepareHost}. */
export interface PrepareOptions
  extends Pick<ForwardingOptions, "ipv4" | "ipv6" | "keepRouterAdvertisements" | "procRoot"> {
  /** Whether masquerade or forward rules are installed (`--ip-masq`, `--iptables-forward-rules`). */
  readonly rules: boolean;
  readonly logger: Logger;
}

/**
 * Prepare this network namespace for routing pod traffic.
 *
 * @param options Whether rules are used, the families, interfaces whose
 *   router advertisements stay accepted, the logger, the proc root.
 * @throws {Error} When a sysctl must change and cannot be written (the message names the fix).
 * @example
 * ```ts
 * prepareHost({ rules: true, logger });
 * ```
 */
export function prepareHost(options: PrepareOptions): void {
  const { logger, rules: _rules, ...forwarding } = options;
  if (options.rules) {
    const missing = bridgeNetfilterMissing(forwarding);
    if (missing.length) {
      logger.warn(
        "br_netfilter is not loaded: traffic between pods on this host's bridge bypasses the masquerade and forward rules (flanneld refuses to start here); run `modprobe br_netfilter` and list it in /etc/modules-load.d/",
        { missing: missing.join(",") },
      );
    }
  }
  const changed = ensureForwarding(forwarding);
  if (changed.length) logger.info("enabled forwarding", { sysctls: changed.join(",") });
}
