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
import { Registry } from "../core/metrics.ts";
import type { NetworkConfig } from "../lease/config.ts";
import { type ExternalInterface, pickExternalInterface } from "../datapath/iface.ts";
import { backendTable } from "./backends.ts";
import { type Flags, helpText, parseFlags, UsageError } from "./flags.ts";
import { type CliIo, processIo } from "./io.ts";
import { podCommand } from "./pods.ts";
import { hostRules } from "./rules.ts";
import { stopOnSignals } from "./signals.ts";
import { type OpenedStore, openStore } from "./stores.ts";

export type { CliIo } from "./io.ts";

/** weft's version. */
export const VERSION = "0.1.0";

/**
 * Run weft with these arguments.
 *
 * @param argv Arguments after the program name.
 * @param env Environment (FLANNELD_*, NODE_NAME, …).
 * @param options Output sinks; an abort signal to stop the agent (else SIGTERM/SIGINT).
 * @returns The exit code.
 * @example
 * ```ts
 * process.exitCode = await main(process.argv.slice(2));
 * ```
 */
export async function main(
  argv: readonly string[],
  env: Record<string, string | undefined> = process.env,
  options: { io?: CliIo; signal?: AbortSignal } = {},
): Promise<number> {
  const io = options.io ?? processIo;
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
    level: flags.logLevel as "info",
  });

  const [command, ...rest] = flags.args;
  if (command === "attach" || command === "detach") {
    return await podCommand(command, rest, flags, io, logger);
  }
  if (command !== undefined) {
    io.stderr(
      `weft: unexpected argument ${
        JSON.stringify(command)
      } (commands: attach, detach; run weft --help)`,
    );
    return 2;
  }
  return await runAgent(flags, env, logger, options.signal);
}

/**
 * The agent's interface picker: the flags' choice for the families the
 * network config enables, with the store's stored public addresses (the
 * Kubernetes node's annotations) standing in for `--public-ip(v6)`.
 */
function interfacePicker(
  flags: Flags,
  opened: OpenedStore,
  logger: Logger,
): (config: NetworkConfig) => ExternalInterface {
  return (config) => {
    let ext = pickExternalInterface({
      iface: flags.iface,
      ifaceRegex: flags.ifaceRegex,
      ifaceCanReach: flags.ifaceCanReach || undefined,
      publicIP: flags.publicIp || undefined,
      publicIPv6: flags.publicIpv6 || undefined,
      families: { ipv4: config.enableIPv4, ipv6: config.enableIPv6 },
    });
    if (config.enableIPv4 && opened.publicIP && opened.publicIP !== ext.extAddr) {
      logger.info("public IP set by the node's annotation", { publicIP: opened.publicIP });
      ext = { ...ext, extAddr: opened.publicIP };
    }
    if (config.enableIPv6 && opened.publicIPv6 && opened.publicIPv6 !== ext.extV6Addr) {
      // flannel's GetStoredPublicIP: node-public-ipv6 stands in for --public-ipv6
      logger.info("public IPv6 set by the node's annotation", { publicIPv6: opened.publicIPv6 });
      ext = { ...ext, extV6Addr: opened.publicIPv6 };
    }
    return ext;
  };
}

/**
 * Open the store, run the agent until stopped (it reads the config, then
 * picks the interface for the families it enables); close everything.
 */
async function runAgent(
  flags: Flags,
  env: Record<string, string | undefined>,
  logger: Logger,
  parent: AbortSignal | undefined,
): Promise<number> {
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
    const agent = createAgent({
      store: opened.store,
      backends: table.backends,
      pickInterface: interfacePicker(flags, opened, logger),
      subnetFile: flags.subnetFile,
      ipMasq: flags.ipMasq,
      renewMarginMs: flags.subnetLeaseRenewMargin * 60_000,
      rules: hostRules(flags, logger),
      prepare: async (config, extIface) => {
        const { ensureForwarding } = await import("../datapath/sysctl.ts");
        const changed = ensureForwarding({
          ipv4: config.enableIPv4,
          ipv6: config.enableIPv6,
          keepRouterAdvertisements: [extIface.name],
        });
        if (changed.length) logger.info("enabled forwarding", { sysctls: changed.join(",") });
      },
      previousLease: opened.previousLease,
      onReady: opened.onReady,
      logger,
      metrics,
    });
    if (flags.healthzPort > 0) {
      const app = createStatusApp({ status: () => agent.status(), metrics, version: VERSION });
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
