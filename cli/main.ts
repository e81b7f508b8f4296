/**
 * The command line: flags → the `attach`/`detach` commands, or the agent
 * wired from its parts (interface, store in ./stores.ts, backends in
 * ./backends.ts, rules in ./rules.ts, the status API, stop signals in
 * ./signals.ts). `main` returns the exit code: 0 clean stop, 1 runtime
 * failure, 2 usage error. Everything it opens it closes before returning,
 * so the process ends by itself.
 *
 * @module
 */

import process from "node:process";
import { createAgent } from "../agent/agent.ts";
import { createStatusApp } from "../api/app.ts";
import { type HttpServer, runtimeVersion, serveHttp } from "../core/runtime.ts";
import { createLogger, type Logger } from "../core/log.ts";
import { EventRing, recordingLogger } from "../core/events.ts";
import { Registry } from "../core/metrics.ts";
import type { NetworkConfig } from "../lease/config.ts";
import {
  type AddressFacts,
  type ExternalInterface,
  type InterfaceSource,
  pickExternalInterface,
  systemInterfaces,
  withPreferredAddresses,
} from "../datapath/iface.ts";
import { formatIPv4 } from "../core/ip.ts";
import { backendTable } from "./backends.ts";
import {
  effectiveLogLevel,
  type Flags,
  helpText,
  klogNotes,
  parseFlags,
  UsageError,
} from "./flags.ts";
import { type CliIo, processIo } from "./io.ts";
import { type NotifyState, sdNotify } from "../core/sd_notify.ts";
import { podCommand } from "./pods.ts";
import { hostRules } from "./rules.ts";
import { stopOnSignals } from "./signals.ts";
import { type OpenedStore, openStore } from "./stores.ts";

export type { CliIo } from "./io.ts";

/** weft's version. */
export const VERSION = "0.1.0";

/** Options of {@link main}. */
export interface MainOptions {
  /** Output sinks (default: the process's stdout and stderr). */
  readonly io?: CliIo;
  /** Stops the agent (default: SIGTERM/SIGINT). */
  readonly signal?: AbortSignal;
  /**
   * Tells the service manager the agent's state, called with `READY=1` once
   * the agent is first ready (default: systemd's `$NOTIFY_SOCKET`, as
   * flanneld does). A failure is logged, never fatal.
   */
  readonly notify?: (state: NotifyState) => Promise<unknown>;
}

/**
 * Run weft with these arguments.
 *
 * @param argv Arguments after the program name.
 * @param env Environment (FLANNELD_*, NODE_NAME, NOTIFY_SOCKET, …).
 * @param options Output sinks; an abort signal to stop the agent (else
 *   SIGTERM/SIGINT); the readiness notification.
 * @returns The exit code.
 * @example
 * ```ts
 * process.exitCode = await main(process.argv.slice(2));
 * ```
 */
export async function main(
  argv: readonly string[],
  env: Record<string, string | undefined> = process.env,
  options: MainOptions = {},
): Promise<number> {
  const io = options.io ?? processIo;
  if (argv[0] === "docker-opts") {
    // mk-docker-opts.sh's own getopts-style flags, not weft's
    const { dockerOptsCommand } = await import("./docker_opts.ts");
    // it writes exact bytes (the script's output) to the process's streams unless told otherwise
    return await dockerOptsCommand(argv.slice(1), {
      env,
      ...(options.io
        ? {
          stdout: (t: string) => io.stdout(t.replace(/\n$/, "")),
          stderr: (t: string) => io.stderr(t.replace(/\n$/, "")),
        }
        : {}),
    });
  }
  let flags: Flags;
  try {
    flags = parseFlags(argv, env);
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr(`weft: ${e.message}`);
      return 2;
    }
    throw e;
  }
  if (flags.help) {
    io.stdout(helpText());
    return 0;
  }
  if (flags.version) {
    io.stdout(`weft ${VERSION} (${runtimeVersion()})`);
    return 0;
  }
  const logger = createLogger({
    format: flags.logFormat as "text" | "json",
    level: effectiveLogLevel(flags),
  });
  for (const note of klogNotes(flags)) logger.info(note);

  const [command, ...rest] = flags.args;
  if (command === "attach" || command === "detach") {
    return await podCommand(command, rest, flags, io, logger);
  }
  if ((command === "doctor" || command === "status") && rest.length === 0) {
    // their own output is the answer: the store's info lines would only clutter it
    const quiet = createLogger({ format: flags.logFormat as "text" | "json", level: "warn" });
    if (command === "doctor") {
      const { doctorCommand } = await import("./doctor.ts");
      return await doctorCommand(flags, env, io, quiet);
    }
    const { statusCommand } = await import("./status.ts");
    return await statusCommand(flags, env, io, quiet);
  }
  if (command !== undefined) {
    io.stderr(
      `weft: unexpected argument ${
        JSON.stringify(command)
      } (commands: attach, detach, docker-opts, doctor, status; run weft --help)`,
    );
    return 2;
  }
  return await runAgent(
    flags,
    env,
    logger,
    options.signal,
    options.notify ?? ((state) => sdNotify(state, { env })),
  );
}

/**
/**
 * The agent's interface picker: the flags' choice for the families the
 * network config enables, with the store's stored public addresses (the
 * Kubernetes node's `node-public-ip(v6)` annotations) winning over
 * `--public-ip(v6)`, as flanneld's GetStoredPublicIP; interface addresses
 * in flannel's order of preference.
 */
function interfacePicker(
  flags: Flags,
  opened: OpenedStore,
  logger: Logger,
): (config: NetworkConfig) => Promise<ExternalInterface> {
  return async (config) => {
    const { publicIP, publicIPv6 } = publicIPsOf(flags, opened, logger, config);
    return pickExternalInterface({
      iface: flags.iface,
      ifaceRegex: flags.ifaceRegex,
      ifaceCanReach: flags.ifaceCanReach || undefined,
      publicIP,
      publicIPv6,
      families: { ipv4: config.enableIPv4, ipv6: config.enableIPv6 },
    }, await interfaceSource(logger));
  };
}

/**
 * Open the store, run the agent until stopped (it reads the config, then
 * picks the interface for the families it enables); close everything.
 */
async function runAgent(
  flags: Flags,
  env: Record<string, string | undefined>,
  baseLogger: Logger,
  parent: AbortSignal | undefined,
  notify: (state: NotifyState) => Promise<unknown>,
): Promise<number> {
  // what the agent, its store and backends log at info and above is the status page's events
  const events = new EventRing({ capacity: 200 });
  const logger = recordingLogger(baseLogger, events);
  const metrics = new Registry();
  const stop = stopOnSignals(logger, parent);
  const table = backendTable();
  let opened: OpenedStore | undefined;
  let server: HttpServer | undefined;
  try {
    try {
      opened = await openStore(flags, env, logger, metrics, stop.signal);
    } catch (e) {
      logger.error((e as Error).message);
      return 1;
    }
    let notified = false;
    const storeReady = opened.onReady;
    const onReady = async (s: AbortSignal) => {
      if (!notified) {
        notified = true;
        await notify({ READY: 1 }).catch((e) =>
          logger.warn("cannot tell the service manager that weft is ready", {
            error: (e as Error).message,
          })
        );
      }
      await storeReady?.(s);
    };
    const agent = createAgent({
      store: opened.store,
      backends: table.backends,
      pickInterface: interfacePicker(flags, opened, logger),
      subnetFile: flags.subnetFile,
      ipMasq: flags.ipMasq,
      renewMarginMs: flags.subnetLeaseRenewMargin * 60_000,
      rules: hostRules(flags, logger),
      prepare: async (config, extIface) => {
        const { prepareHost } = await import("./prepare.ts");
        prepareHost({
          rules: flags.ipMasq || flags.iptablesForwardRules,
          ipv4: config.enableIPv4,
          ipv6: config.enableIPv6,
          keepRouterAdvertisements: [extIface.name],
          logger,
        });
      },
      previousLease: opened.previousLease,
      onReady,
      logger,
      metrics,
    });
    if (flags.healthzPort > 0) {
      const app = createStatusApp({
        status: () => agent.status(),
        metrics,
        version: VERSION,
        events,
      });
      try {
        server = await serveHttp({
          hostname: flags.healthzIp,
          port: flags.healthzPort,
          fetch: app.fetch,
        });
      } catch (e) {
        logger.error(
          `cannot serve the status API on ${flags.healthzIp}:${flags.healthzPort}: ${
            (e as Error).message
          }; pick another --healthz-port or --healthz-ip`,
        );
        return 1;
      }
      logger.info("status API listening", { address: `http://${flags.healthzIp}:${server.port}` });
    }
    try {
      await agent.run(stop.signal);
    } catch (e) {
      logger.error("agent failed", { error: e as Error });
      return 1;
    }
    return 0;
  } finally {
    stop.dispose();
    await server?.shutdown();
    await opened?.store.close().catch(() => {});
    await table.close();
  }
}

/**
 * The public IPs the interface is picked for: the node's `node-public-ip`
 * and `node-public-ipv6` annotations (Kubernetes) win over `--public-ip` and
 * `--public-ipv6`, as flanneld's GetStoredPublicIP.
 */
function publicIPsOf(
  flags: Flags,
  opened: OpenedStore,
  logger: Logger,
  config: NetworkConfig,
): { publicIP?: string; publicIPv6?: string } {
  if (config.enableIPv4 && opened.publicIP) {
    logger.info("public IP set by the node's annotation", {
      publicIP: opened.publicIP,
      ...(flags.publicIp && flags.publicIp !== opened.publicIP ? { instead: flags.publicIp } : {}),
    });
  }
  if (config.enableIPv6 && opened.publicIPv6) {
    logger.info("public IPv6 set by the node's annotation", { publicIPv6: opened.publicIPv6 });
  }
  return {
    publicIP: config.enableIPv4 ? opened.publicIP || flags.publicIp || undefined : undefined,
    publicIPv6: config.enableIPv6 ? opened.publicIPv6 || flags.publicIpv6 || undefined : undefined,
  };
}

/**
 * This namespace's interfaces, each one's IPv4 addresses in flannel's order
 * of preference (static before DHCP, primary before secondary, deprecated
 * dropped), read from an rtnetlink address dump; kernel order when the dump
 * cannot be had.
 */
async function interfaceSource(logger: Logger): Promise<InterfaceSource> {
  try {
    const { openNetlinkClient } = await import("../datapath/netlink/client.ts");
    const client = await openNetlinkClient();
    try {
      const facts = new Map<number, AddressFacts[]>();
      for (const a of await client.listAddresses()) {
        if (typeof a.ip !== "number") continue; // IPv6 preference comes from /proc/net/if_inet6
        const list = facts.get(a.index) ?? [];
        list.push({ ip: formatIPv4(a.ip), flags: a.flags ?? 0 });
        facts.set(a.index, list);
      }
      return withPreferredAddresses(systemInterfaces, facts);
    } finally {
      client.close();
    }
  } catch (e) {
    logger.debug("cannot read address flags; interface addresses in kernel order", {
      error: (e as Error).message,
    });
    return systemInterfaces;
  }
}
