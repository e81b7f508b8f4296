/**
 * The command line: flags → store, interface, backends, rules → the agent,
 * plus the `attach`/`detach` pod helpers. `main` returns the exit code:
 * 0 clean stop, 1 runtime failure, 2 usage error.
 *
 * @module
 */

import process from "node:process";
import { createAgent, type HostRules } from "../agent/agent.ts";
import { allocBackend } from "../backends/alloc.ts";
import type { Backend } from "../backends/types.ts";
import type { ExternalInterface } from "../datapath/iface.ts";
import { InterfaceError, pickExternalInterface } from "../datapath/iface.ts";
import { runtimeVersion, serveHttp } from "../core/runtime.ts";
import type { Datapath } from "../datapath/types.ts";
import { systemClock } from "../core/clock.ts";
import type { NetworkConfig } from "../lease/config.ts";
import type { Lease, LeaseStore } from "../lease/types.ts";
import { createStatusApp } from "../api/app.ts";
import { type Flags, helpText, parseFlags, UsageError } from "./flags.ts";
import { createLogger, type Logger } from "../core/log.ts";
import { Registry } from "../core/metrics.ts";

/** weft's version. */
export const VERSION = "0.1.0";

/** Where output goes (injectable for tests). */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
}

const defaultIo: CliIo = {
  stdout: (t) => console.log(t),
  stderr: (t) => console.error(t),
};

/**
 * Run weft with these arguments.
 *
 * @param argv Arguments after the program name.
 * @param env Environment (FLANNELD_*, NODE_NAME, …).
 * @param options Output sinks; an abort signal to stop the agent (else SIGTERM/SIGINT).
 * @returns The exit code.
 */
export async function main(
  argv: readonly string[],
  env: Record<string, string | undefined> = process.env,
  options: { io?: CliIo; signal?: AbortSignal } = {},
): Promise<number> {
  const io = options.io ?? defaultIo;
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

  let extIface: ExternalInterface;
  try {
    extIface = pickExternalInterface({
      iface: flags.iface,
      ifaceRegex: flags.ifaceRegex,
      ifaceCanReach: flags.ifaceCanReach || undefined,
      publicIP: flags.publicIp || undefined,
      publicIPv6: flags.publicIpv6 || undefined,
    });
  } catch (e) {
    if (e instanceof InterfaceError) {
      logger.error(e.message);
      return 1;
    }
    throw e;
  }

  const metrics = new Registry();
  const ac = new AbortController();
  const stop = (sig: string) => {
    if (ac.signal.aborted) return;
    logger.info("signal received, stopping", { signal: sig });
    ac.abort();
  };
  const onTerm = () => stop("SIGTERM");
  const onInt = () => stop("SIGINT");
  if (options.signal) {
    options.signal.addEventListener("abort", () => ac.abort(), { once: true });
  } else {
    process.on("SIGTERM", onTerm);
    process.on("SIGINT", onInt);
  }

  let store: LeaseStore;
  let onReady: (() => Promise<void>) | undefined;
  let previousLease: (() => Promise<Lease | undefined>) | undefined;
  try {
    const made = await makeStore(flags, env, logger, metrics);
    store = made.store;
    onReady = made.onReady;
    previousLease = made.previousLease;
    if (made.publicIP && made.publicIP !== extIface.extAddr) {
      logger.info("public IP set by the node's annotation", { publicIP: made.publicIP });
      extIface = { ...extIface, extAddr: made.publicIP };
    }
  } catch (e) {
    logger.error((e as Error).message);
    return 1;
  }

  let datapath: Promise<Datapath> | undefined;
  const openDatapath = () =>
    datapath ??= import("../datapath/netlink/datapath.ts").then((m) => m.openNetlinkDatapath());
  const backends: Record<string, () => Promise<Backend>> = {
    alloc: () => Promise.resolve(allocBackend()),
    vxlan: async () =>
      (await import("../backends/routed/vxlan.ts")).vxlanBackend({
        datapath: await openDatapath(),
      }),
    "host-gw": async () =>
      (await import("../backends/routed/host_gw.ts")).hostGwBackend({
        datapath: await openDatapath(),
      }),
    udp: async () =>
      (await import("../backends/udp/backend.ts")).udpBackend({ datapath: await openDatapath() }),
    extension: async () => (await import("../backends/extension/backend.ts")).extensionBackend(),
    "aws-vpc": async () => (await import("../backends/routed/aws_vpc.ts")).awsVpcBackend(),
  };

  const agent = createAgent({
    store,
    backends,
    extIface,
    subnetFile: flags.subnetFile,
    ipMasq: flags.ipMasq,
    renewMarginMs: flags.subnetLeaseRenewMargin * 60_000,
    rules: hostRules(flags, logger),
    prepare: async () => {
      const { ensureForwarding } = await import("../datapath/sysctl.ts");
      const changed = ensureForwarding({});
      if (changed.length) logger.info("enabled forwarding", { sysctls: changed.join(",") });
    },
    previousLease,
    onReady,
    logger,
    metrics,
  });

  let server: Awaited<ReturnType<typeof serveHttp>> | undefined;
  if (flags.healthzPort > 0) {
    const app = createStatusApp({ status: () => agent.status(), metrics, version: VERSION });
    try {
      server = await serveHttp({
        hostname: flags.healthzIp,
        port: flags.healthzPort,
        fetch: app.fetch,
      });
      logger.info("status API listening", { address: `http://${flags.healthzIp}:${server.port}` });
    } catch (e) {
      logger.error(
        `cannot serve the status API on ${flags.healthzIp}:${flags.healthzPort}: ${
          (e as Error).message
        }; pick another --healthz-port or --healthz-ip`,
      );
      return 1;
    }
  }
  try {
    await agent.run(ac.signal);
  } catch (e) {
    logger.error("agent failed", { error: e as Error });
    return 1;
  } finally {
    process.off("SIGTERM", onTerm);
    process.off("SIGINT", onInt);
    await server?.shutdown();
    await store.close().catch(() => {});
    (await datapath?.catch(() => undefined))?.close();
  }
  return 0;
}

async function makeStore(
  flags: Flags,
  env: Record<string, string | undefined>,
  logger: Logger,
  metrics: Registry,
): Promise<{
  store: LeaseStore;
  onReady?: () => Promise<void>;
  previousLease?: () => Promise<Lease | undefined>;
  publicIP?: string;
}> {
  if (flags.kubeSubnetMgr) {
    const { createKubeLeaseStore } = await import("../lease/kube/store.ts");
    const store = createKubeLeaseStore({
      kubeconfigFile: flags.kubeconfigFile || undefined,
      apiUrl: flags.kubeApiUrl || undefined,
      env,
      annotationPrefix: flags.kubeAnnotationPrefix,
      netConfigPath: flags.netConfigPath,
      exitOnMissingPodCidr: flags.exitOnMissingPodcidr,
      setNodeCondition: flags.setNodeNetworkUnavailable,
      logger,
      metrics,
    });
    let hints: Awaited<ReturnType<typeof store.nodeHints>> | undefined;
    const getHints = async () => (hints ??= await store.nodeHints());
    let publicIP: string | undefined;
    try {
      publicIP = (await getHints()).publicIP;
    } catch (e) {
      logger.warn("cannot read this node's annotations yet; will retry while registering", {
        error: e as Error,
      });
    }
    return {
      store,
      publicIP,
      previousLease: async () => (await getHints()).previousLease,
      onReady: () => store.markNetworkAvailable(),
    };
  }
  if (flags.explicit.has("etcd-endpoints")) {
    const { createEtcdLeaseStore } = await import("../lease/etcd/store.ts");
    return {
      store: createEtcdLeaseStore({
        endpoints: flags.etcdEndpoints.split(",").map((s) => s.trim()).filter(Boolean),
        prefix: flags.etcdPrefix,
        ttlMs: flags.leaseTtl,
        username: flags.etcdUsername || undefined,
        password: flags.etcdPassword || undefined,
        caFile: flags.etcdCafile || undefined,
        certFile: flags.etcdCertfile || undefined,
        keyFile: flags.etcdKeyfile || undefined,
        logger,
        metrics,
      }),
    };
  }
  const { createFileLeaseStore } = await import("../lease/file_store.ts");
  logger.info(
    "using the embedded file store (one machine only); give --etcd-endpoints for a cluster",
    {
      leaseFile: flags.leaseFile,
      config: flags.netConfigPath,
    },
  );
  return {
    store: createFileLeaseStore({
      path: flags.leaseFile,
      configPath: flags.netConfigPath,
      ttlMs: flags.leaseTtl,
      logger,
      metrics,
    }),
  };
}

/** Masquerade and forward rules from the flags, kept in sync every --iptables-resync seconds. */
function hostRules(flags: Flags, logger: Logger): HostRules | undefined {
  if (!flags.ipMasq && !flags.iptablesForwardRules) return undefined;
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
    apply: async (config, lease) => void (await ensure(config, lease)),
    run: async (config, lease, signal) => {
      const { keepRulesInSync } = await import("../datapath/masq.ts");
      await keepRulesInSync(() => ensure(config, lease, signal), {
        intervalSeconds: flags.iptablesResync,
        clock: systemClock,
        signal,
        logger,
      });
    },
  };
}

async function podCommand(
  command: "attach" | "detach",
  args: string[],
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
