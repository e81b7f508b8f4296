/**
 * The agent: the life of weft on one host, with everything injected.
 *
 * 1. Read the network config (retrying while the store is unreachable or
 *    the config is missing/invalid, saying why in the status).
 * 2. Register the backend named by `Backend.Type`: it sets up its devices
 *    and acquires the lease (reusing this host's lease, else the subnet from
 *    subnet.env, else a free one).
 * 3. Write subnet.env atomically, install host rules (masquerade, forward).
 *    Ready.
 * 4. Watch all leases and hand the peer set to the backend (coalesced: a
 *    burst of events is one sync); renew the lease before it expires; when
 *    the own lease is removed, expires or is taken, acquire again — never exit.
 * 5. On abort (SIGTERM): stop, keeping the lease and the datapath, so a
 *    restart drops no traffic.
 *
 * @module
 */

import type { Logger } from "../core/log.ts";
import { DURATION_BUCKETS, type Registry as Metrics } from "../core/metrics.ts";
import { backoff, type Clock, systemClock } from "../core/clock.ts";
import type { NetworkConfig } from "../lease/config.ts";
import { equalIPv4Net, formatIPv4Net, type IPv4Net } from "../core/ip.ts";
import { leaseKey } from "../lease/kv_store.ts";
import { readSubnetEnv, subnetEnvFor, writeSubnetEnv } from "../lease/subnet_env.ts";
import { type Lease, type LeaseAttrs, type LeaseStore } from "../lease/types.ts";
import { ConfigError, LeaseConflictError } from "../core/errors.ts";
import type { Backend, Network } from "../backends/types.ts";
import type { ExternalInterface } from "../datapath/iface.ts";

/** Host-level rules the agent keeps in place (masquerade, forward). */
export interface HostRules {
  /** Install or replace the rules for this lease (atomically; stale ones removed). */
  apply(config: NetworkConfig, lease: Lease): Promise<void>;
  /** Keep them in place until `signal` aborts (periodic re-check). */
  run?(config: NetworkConfig, lease: Lease, signal: AbortSignal): Promise<void>;
}

/** Everything the agent needs, injected. */
export interface AgentDeps {
  readonly store: LeaseStore;
  /** Backends by type name; the config's `Backend.Type` picks one. */
  readonly backends: Readonly<Record<string, () => Backend | Promise<Backend>>>;
  readonly extIface: ExternalInterface;
  /** Where subnet.env goes (flannel: /run/flannel/subnet.env). */
  readonly subnetFile: string;
  /** `--ip-masq`: written to subnet.env as FLANNEL_IPMASQ. */
  readonly ipMasq: boolean;
  /** Renew this long before expiry (flannel: 60 min). */
  readonly renewMarginMs?: number;
  /** Masquerade/forward rules; none when omitted. */
  readonly rules?: HostRules;
  /** One-time host preparation before registering (e.g. enable ip_forward). */
  readonly prepare?: () => Promise<void>;
  /**
   * This host's lease as the store knows it, when the store has a better
   * answer than "the lease with my public IP" (Kubernetes: the node's annotations).
   */
  readonly previousLease?: () => Promise<Lease | undefined>;
  /** Called once each time the agent becomes ready (Kubernetes: set the node condition). */
  readonly onReady?: () => Promise<void>;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly clock?: Clock;
  readonly random?: () => number;
  /** Longest pause between retries, ms (default 10 s). */
  readonly maxBackoffMs?: number;
}

/** What the agent is doing, for /readyz and /v1/*. */
export interface AgentStatus {
  readonly ready: boolean;
  /** Why it is not ready, or null. */
  readonly reason: string | null;
  readonly config?: NetworkConfig;
  readonly lease?: Lease;
  readonly peers: readonly Lease[];
  readonly backendType?: string;
  readonly extIface: ExternalInterface;
  readonly storeName: string;
}

/** A running agent. */
export interface Agent {
  /** Run until `signal` aborts. Resolves after a clean stop (lease and datapath kept). */
  run(signal: AbortSignal): Promise<void>;
  /** Current state. */
  status(): AgentStatus;
}

/**
 * Create an agent.
 *
 * @param deps Store, backends, interface, files, rules, logger, metrics, clock.
 * @returns The agent; call `run(signal)`.
 * @example
 * ```ts
 * const agent = createAgent({ store, backends: { alloc: () => allocBackend() }, extIface,
 *   subnetFile: "/run/flannel/subnet.env", ipMasq: false, logger, metrics: new Registry() });
 * await agent.run(AbortSignal.timeout(60_000));
 * ```
 */
export function createAgent(deps: AgentDeps): Agent {
  const log = deps.logger;
  const clock = deps.clock ?? systemClock;
  const random = deps.random ?? Math.random;
  const maxBackoff = deps.maxBackoffMs ?? 10_000;
  const renewMargin = deps.renewMarginMs ?? 60 * 60_000;
  const m = deps.metrics;
  const gExpiry = m.gauge(
    "weft_lease_expiration_timestamp_seconds",
    "When this host's lease expires (0 = never: a reservation or a Kubernetes podCIDR)",
  );
  const gPeers = m.gauge("weft_peers", "Peer leases known");
  const gReady = m.gauge(
    "weft_ready",
    "1 when the lease, datapath, rules and subnet.env are in place",
  );
  const cEvents = m.counter("weft_lease_events_total", "Lease watch events handled, by type");
  const cRenew = m.counter("weft_lease_renewals_total", "Lease renewals, by result");
  const cReacquire = m.counter(
    "weft_lease_reacquisitions_total",
    "Times the own lease was lost (removed, expired, taken) and acquired again",
  );
  const cSyncErr = m.counter("weft_reconcile_errors_total", "Peer syncs that failed (retried)");
  const hSync = m.histogram(
    "weft_reconcile_duration_seconds",
    "Time to bring the datapath in line with the peer set",
    DURATION_BUCKETS,
  );
  gReady.set(0);

  let reason: string | null = "starting";
  let config: NetworkConfig | undefined;
  let network: Network | undefined;
  /** The own lease as last renewed (the network keeps the one it registered with). */
  let current: Lease | undefined;
  let attrs: LeaseAttrs | undefined;
  const peers = new Map<string, Lease>();
  let lost: (() => void) | null = null;
  let lostFlag = false;

  const setReason = (r: string | null) => {
    reason = r;
    gReady.set(r === null ? 1 : 0);
  };
  /** The backend's not-ready reason, marked so the ready poll may clear it later. */
  const backendReason = (net: Network | undefined): string | null => {
    const r = net?.notReadyReason?.() ?? null;
    return r === null ? null : `backend: ${r}`;
  };

  /** Retry `fn` with capped backoff until it succeeds or the signal aborts. */
  const retry = async <T>(what: string, fn: () => Promise<T>, signal: AbortSignal): Promise<T> => {
    let last = "";
    for (let attempt = 0;; attempt++) {
      try {
        return await fn();
      } catch (e) {
        if (signal.aborted) throw signal.reason;
        const msg = (e as Error).message;
        const delay = backoff(attempt, { max: maxBackoff, random });
        setReason(`${what}: ${msg}`);
        if (msg !== last) {
          log.error(`${what} failed, will keep retrying`, { error: msg, retryInMs: delay });
          last = msg;
        } else {
          log.debug(`${what} still failing`, { error: msg, attempt: attempt + 1 });
        }
        await clock.sleep(delay, signal);
      }
    }
  };

  const markLost = (why: string) => {
    if (lostFlag) return;
    lostFlag = true;
    log.warn("this host's lease is gone; acquiring again", { why });
    lost?.();
  };

  const register = async (signal: AbortSignal, previous?: IPv4Net): Promise<Network> => {
    const cfg = config!;
    const factory = deps.backends[cfg.backendType];
    if (!factory) {
      throw new ConfigError(
        `Backend.Type "${cfg.backendType}" is not supported: use one of ${
          Object.keys(deps.backends).join(", ")
        }`,
        "Backend.Type",
      );
    }
    const backend = await factory();
    let previousLease: Lease | undefined;
    try {
      previousLease = deps.previousLease
        ? await deps.previousLease()
        : (await deps.store.list(signal, { exactExpiry: false })).leases.find((l) =>
          l.attrs.publicIP === deps.extIface.extAddr
        );
    } catch {
      // only a hint (e.g. to keep a VTEP MAC); acquire will surface store errors
    }
    const env = readSubnetEnv(deps.subnetFile);
    const prevSubnet = previous ?? env?.subnet;
    return await backend.register({
      config: cfg,
      extIface: deps.extIface,
      previousLease,
      logger: log.with({ backend: backend.type }),
      metrics: m,
      clock,
      signal,
      acquire: async (a, s) => {
        attrs = a;
        setReason("acquiring a subnet lease");
        const prev = prevSubnet && { ip: prevSubnet.ip, prefixLen: prevSubnet.prefixLen };
        return await deps.store.acquire(cfg, {
          attrs: a,
          previousSubnet: prev && prev.prefixLen === cfg.subnetLen ? prev : undefined,
          previousIPv6Subnet: env?.ipv6Subnet,
        }, s ?? signal);
      },
    });
  };

  const install = async (net: Network, signal: AbortSignal) => {
    const cfg = config!;
    setReason("installing host rules and subnet.env");
    await retry("installing host rules", async () => {
      await deps.rules?.apply(cfg, net.lease);
      writeSubnetEnv(deps.subnetFile, subnetEnvFor(cfg, net.lease, net.mtu, deps.ipMasq));
    }, signal);
    gExpiry.set(net.lease.expiration === null ? 0 : net.lease.expiration / 1000);
  };

  // ---- peer sync, coalesced -------------------------------------------------
  let syncing = false;
  let dirty = false;
  let syncSignal: AbortSignal | undefined;
  let lastSyncError = "";
  const requestSync = () => {
    dirty = true;
    if (!syncing) void drain();
  };
  const drain = async () => {
    syncing = true;
    try {
      while (dirty && network && syncSignal && !syncSignal.aborted) {
        dirty = false;
        const list = [...peers.values()];
        const t0 = performance.now();
        try {
          await network.syncPeers(list, syncSignal);
          lastSyncError = "";
        } catch (e) {
          cSyncErr.inc();
          const msg = (e as Error).message;
          if (msg !== lastSyncError) log.error("peer sync failed, retrying in 1 s", { error: msg });
          lastSyncError = msg;
          clock.sleep(1000, syncSignal).then(requestSync, () => {});
        } finally {
          hSync.observe((performance.now() - t0) / 1000);
        }
      }
    } finally {
      syncing = false;
    }
  };

  const own = () => current;
  const isOwn = (l: Lease) => {
    const mine = own();
    return mine !== undefined && equalIPv4Net(mine.subnet, l.subnet);
  };

  const applySnapshot = (leases: readonly Lease[]) => {
    peers.clear();
    let seenOwn = false;
    for (const l of leases) {
      if (isOwn(l)) {
        seenOwn = true;
        if (l.attrs.publicIP !== deps.extIface.extAddr) {
          markLost(`subnet ${formatIPv4Net(l.subnet)} now belongs to ${l.attrs.publicIP}`);
        }
        continue;
      }
      peers.set(leaseKey(l), l);
    }
    if (!seenOwn && own()) {
      markLost(`lease ${formatIPv4Net(own()!.subnet)} is no longer in the store`);
    }
    gPeers.set(peers.size);
  };

  const watchLoop = async (signal: AbortSignal) => {
    for (let attempt = 0; !signal.aborted; attempt++) {
      try {
        // peers' exact expiry is not needed (only the own lease's drives renewal)
        const snap = await deps.store.list(signal, { exactExpiry: false });
        applySnapshot(snap.leases);
        log.info("peers listed", { peers: peers.size, revision: snap.revision });
        requestSync();
        attempt = 0;
        for await (const batch of deps.store.watch(snap.revision, signal)) {
          for (const ev of batch) {
            cEvents.inc({ type: ev.type });
            if (ev.type === "snapshot") {
              applySnapshot(ev.leases);
            } else if (isOwn(ev.lease)) {
              if (ev.type === "removed") {
                markLost(`lease ${formatIPv4Net(ev.lease.subnet)} was removed or expired`);
              } else if (ev.lease.attrs.publicIP !== deps.extIface.extAddr) {
                markLost(
                  `subnet ${
                    formatIPv4Net(ev.lease.subnet)
                  } now belongs to ${ev.lease.attrs.publicIP}`,
                );
              }
            } else if (ev.type === "added") {
              const k = leaseKey(ev.lease);
              log.info(peers.has(k) ? "peer updated" : "peer added", {
                subnet: formatIPv4Net(ev.lease.subnet),
                publicIP: ev.lease.attrs.publicIP,
              });
              peers.set(k, ev.lease);
            } else if (peers.delete(leaseKey(ev.lease))) {
              log.info("peer removed", { subnet: formatIPv4Net(ev.lease.subnet) });
            }
          }
          gPeers.set(peers.size);
          requestSync();
        }
      } catch (e) {
        if (signal.aborted) return;
        const delay = backoff(attempt, { max: maxBackoff, random });
        log.warn("lease watch interrupted, re-listing", { error: e as Error, retryInMs: delay });
        try {
          await clock.sleep(delay, signal);
        } catch {
          return;
        }
      }
    }
  };

  // ---- lease keeping: renew before expiry, re-acquire when lost -------------
  const keepLease = async (signal: AbortSignal, restart: (n: Network) => void) => {
    let failures = 0;
    while (!signal.aborted) {
      const lease = current!;
      const waitLost = new Promise<void>((r) => (lost = r));
      if (lostFlag) lost?.();
      let wait = Infinity;
      if (lease.expiration !== null) {
        const left = lease.expiration - clock.now();
        const margin = Math.min(renewMargin, left / 2);
        // after a failed renewal retry with backoff (never a hot loop, even past expiry)
        wait = failures ? backoff(failures, { max: maxBackoff, random }) : left - margin;
      }
      const ac = new AbortController();
      const onAbort = () => ac.abort();
      signal.addEventListener("abort", onAbort, { once: true });
      await Promise.race([
        waitLost,
        wait === Infinity
          ? new Promise(() => {})
          : clock.sleep(Math.max(0, wait), ac.signal).catch(() => {}),
        new Promise<void>((r) => ac.signal.addEventListener("abort", () => r(), { once: true })),
      ]);
      ac.abort();
      signal.removeEventListener("abort", onAbort);
      if (signal.aborted) return;
      if (lostFlag) {
        cReacquire.inc();
        setReason("re-acquiring the lease");
        const old = current!;
        const net = await retry(
          "re-acquiring the lease",
          () => register(signal, old.subnet),
          signal,
        );
        if (!equalIPv4Net(old.subnet, net.lease.subnet)) {
          log.warn("this host's subnet changed", {
            from: formatIPv4Net(old.subnet),
            to: formatIPv4Net(net.lease.subnet),
          });
        }
        lostFlag = false;
        current = net.lease;
        restart(net);
        await install(net, signal);
        log.info("lease re-acquired", { subnet: formatIPv4Net(net.lease.subnet) });
        setReason(backendReason(network));
        failures = 0;
        continue;
      }
      try {
        const renewed = await deps.store.renew({ ...lease, attrs: attrs ?? lease.attrs }, signal);
        cRenew.inc({ result: "ok" });
        failures = 0;
        current = renewed;
        gExpiry.set(renewed.expiration === null ? 0 : renewed.expiration / 1000);
        log.info("lease renewed", {
          subnet: formatIPv4Net(renewed.subnet),
          expires: renewed.expiration === null
            ? "never"
            : new Date(renewed.expiration).toISOString(),
        });
      } catch (e) {
        if (signal.aborted) return;
        cRenew.inc({ result: "error" });
        if (e instanceof LeaseConflictError) {
          // the store says the lease is no longer ours (e.g. the node's podCIDR changed)
          markLost(e.message);
          continue;
        }
        failures++;
        log.error("lease renewal failed, retrying", { error: e as Error, attempt: failures });
      }
    }
  };

  return {
    status() {
      const storeReason = deps.store.status?.() ?? null;
      return {
        ready: reason === null,
        reason: reason ?? null,
        ...(storeReason && reason !== null ? { reason: `${reason} (${storeReason})` } : {}),
        config,
        lease: current,
        peers: [...peers.values()],
        backendType: config?.backendType,
        extIface: deps.extIface,
        storeName: deps.store.name,
      };
    },

    async run(signal) {
      try {
        log.info("starting", {
          store: deps.store.name,
          iface: deps.extIface.name,
          publicIP: deps.extIface.extAddr,
        });
        setReason(`reading the network config from the ${deps.store.name} store`);
        config = await retry(
          `reading the network config from the ${deps.store.name} store`,
          () => deps.store.getNetworkConfig(signal),
          signal,
        );
        log.info("network config", {
          network: config.network ? formatIPv4Net(config.network) : "-",
          subnetLen: config.subnetLen,
          backend: config.backendType,
        });
        if (deps.prepare) await retry("preparing the host", deps.prepare, signal);
        setReason("registering the backend");
        network = await retry(
          `registering the ${config.backendType} backend`,
          () => register(signal),
          signal,
        );
        current = network.lease;
        await install(network, signal);

        let netAbort = new AbortController();
        const onAbort = () => netAbort.abort();
        signal.addEventListener("abort", onAbort, { once: true });
        const running: Promise<unknown>[] = [];
        const startNetwork = (net: Network) => {
          const ac = netAbort;
          running.push(
            net.run(ac.signal).catch((e) => {
              if (!ac.signal.aborted) {
                log.error("backend stopped with an error", { error: e as Error });
              }
            }),
          );
          if (deps.rules?.run) {
            running.push(
              deps.rules.run(config!, net.lease, ac.signal).catch((e) => {
                if (!ac.signal.aborted) {
                  log.error("host rules keeper stopped", { error: e as Error });
                }
              }),
            );
          }
        };
        startNetwork(network);
        syncSignal = signal;
        setReason(backendReason(network));
        if (deps.onReady) {
          const onReady = deps.onReady;
          void retry("reporting readiness to the store", onReady, signal).catch(() => {});
        }
        log.info("ready", {
          subnet: formatIPv4Net(network.lease.subnet),
          mtu: network.mtu,
          subnetFile: deps.subnetFile,
        });
        const readyPoll = (async () => {
          // the backend may report readiness later (e.g. a device coming up)
          while (!signal.aborted && network?.notReadyReason) {
            if (reason === null || reason.startsWith("backend:")) {
              const r = network.notReadyReason();
              setReason(r === null ? null : `backend: ${r}`);
            }
            await clock.sleep(500, signal).catch(() => {});
          }
        })();
        await Promise.all([
          watchLoop(signal),
          keepLease(signal, (net) => {
            netAbort.abort();
            netAbort = new AbortController();
            network = net;
            startNetwork(net);
            requestSync();
          }),
          readyPoll,
        ]);
        signal.removeEventListener("abort", onAbort);
        netAbort.abort();
        await Promise.all(running);
      } catch (e) {
        if (!signal.aborted) throw e;
      } finally {
        setReason("stopped");
        log.info("stopped; lease and datapath left in place");
      }
    },
  };
}
