/**
 * The agent: the life of weft on one host, as a small state machine with
 * everything injected (states and transitions in agent/state.ts).
 *
 * 1. reading-config: read the network config, retrying while the store is
 *    unreachable or the config is missing or invalid, saying why.
 * 1b. picking-interface: pick the external interface with the families the
 *    config enables (`pickInterface`), after each read of the config; when
 *    none fits, read the config again after a back-off (fixing either the
 *    host or the config fixes the agent).
 * 2. preparing (once): host preparation such as enabling ip_forward.
 * 3. registering: register the backend named by `Backend.Type`; it sets up
 *    its devices and acquires the lease (this host's lease, else the subnet
 *    from subnet.env, else a free one). A `ConfigError` sends the agent back
 *    to reading the config after a back-off, so fixing the config in the
 *    store fixes the agent; other errors are retried as they are.
 * 4. installing: start the network's run (repair loop, packet loop), then
 *    write subnet.env atomically and install the host rules.
 * 5. ready: renew the lease before it expires (agent/keep_lease.ts); follow
 *    the peers (agent/follow_peers.ts → the pure reducer in agent/peers.ts →
 *    the coalescing writer in agent/peer_sync.ts).
 * 6. re-acquiring: the own lease was removed, expired or taken: register
 *    again (the old network keeps running meanwhile), end the old
 *    registration's tasks and peer writes, then start, install and serve
 *    the new one — never exit. Each registration owns its tasks (network
 *    run, rules keeper, readiness poll): none outlives it.
 * 7. stopped: on abort (SIGTERM), keeping the lease and the datapath, so a
 *    restart drops no traffic.
 *
 * @module
 */

import { retryDelay, systemClock } from "../core/clock.ts";
import { ConfigError } from "../core/errors.ts";
import { formatIPv4Net, formatIPv6Net, formatSubnetPair } from "../core/ip.ts";
import { leaseKey } from "../lease/kv_store.ts";
import { linkedController, sleepQuietly } from "../core/abort.ts";
import type { NetworkConfig } from "../lease/config.ts";
import type { Lease, LeaseSubnets } from "../lease/types.ts";
import { subnetEnvFor, writeSubnetEnv } from "../lease/subnet_env.ts";
import type { ExternalInterface, Network } from "../backends/types.ts";
import { PeerFollower } from "./follow_peers.ts";
import { keepLease, type KeepLeaseOptions } from "./keep_lease.ts";
import { agentMetrics, expirySeconds } from "./metrics.ts";
import { PeerSync } from "./peer_sync.ts";
import { registerBackend, type Registered, Registration } from "./registration.ts";
import { type AgentState, reasonOf, transition } from "./state.ts";
import type { Agent, AgentDeps } from "./types.ts";

export type { Agent, AgentDeps, AgentStatus, HostRules } from "./types.ts";

/** Pause between readiness checks of a backend that becomes ready later, ms. */
export const BACKEND_READY_POLL_MS = 500;

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
  if (!deps.extIface && !deps.pickInterface) {
    throw new TypeError(
      "Cannot create an agent: give 'extIface' (a fixed external interface) or 'pickInterface'",
    );
  }
  const logger = deps.logger;
  const clock = deps.clock ?? systemClock;
  const random = deps.random ?? Math.random;
  const maxBackoffMs = deps.maxBackoffMs ?? 10_000;
  const metrics = agentMetrics(deps.metrics);
  const keepOptions: KeepLeaseOptions = {
    store: deps.store,
    clock,
    random,
    logger,
    metrics,
    renewMarginMs: deps.renewMarginMs ?? 60 * 60_000,
    maxBackoffMs,
  };

  let state: AgentState = { name: "starting" };
  /** The config as last read; `stale` after a ConfigError (re-read before the next try). */
  let config: NetworkConfig | undefined;
  let configStale = true;
  /** The external interface for the config as last read (fixed when given). */
  let extIface: ExternalInterface | undefined = deps.extIface;
  let prepared = false;
  /** The live registration (during re-acquiring: the old one, still running). */
  let registration: Registration | undefined;
  /** The failure last logged per step, so a repeating failure is logged once. */
  const lastFailure = new Map<string, string>();

  const enter = (next: AgentState) => {
    const from = state.name;
    state = transition(state, next);
    if (from !== next.name) logger.debug("agent state", { from, to: next.name });
    metrics.ready.set(reasonOf(state) === null ? 1 : 0);
  };

  const sync: PeerSync = new PeerSync({
    clock,
    logger,
    metrics,
    peers: (): Lease[] => [...follower.peers.values()],
  });
  const follower: PeerFollower = new PeerFollower({
    store: deps.store,
    clock,
    random,
    logger,
    metrics,
    maxBackoffMs,
    own: () =>
      registration && extIface && {
        ...registration.lease,
        attrs: { publicIP: extIface.extAddr, publicIPv6: extIface.extV6Addr },
      },
    onLost: (why) => registration?.markLost(why),
    sync,
  });

  /** Log a failed attempt (once while the same error repeats) and return the back-off. */
  const failed = (what: string, error: unknown, attempt: number): number => {
    const message = (error as Error).message;
    const delay = retryDelay(attempt, error, { max: maxBackoffMs, random });
    if (lastFailure.get(what) !== message) {
      logger.error(`${what} failed, will keep retrying`, { error: message, retryInMs: delay });
      lastFailure.set(what, message);
    } else {
      logger.debug(`${what} still failing`, { error: message, attempt: attempt + 1 });
    }
    return delay;
  };

  /** Run `step` until it succeeds; each failure goes into the state via `withError`. */
  const retry = async <T>(
    what: string,
    step: () => Promise<T>,
    withError: ((error: string) => AgentState) | null,
    signal: AbortSignal,
  ): Promise<T> => {
    for (let attempt = 0;; attempt++) {
      signal.throwIfAborted();
      try {
        const result = await step();
        lastFailure.delete(what);
        return result;
      } catch (e) {
        if (signal.aborted) throw signal.reason;
        const delay = failed(what, e, attempt);
        if (withError) enter(withError((e as Error).message));
        await clock.sleep(delay, signal);
      }
    }
  };

  const readConfig = async (signal: AbortSignal): Promise<NetworkConfig> => {
    const store = deps.store.name;
    enter({ name: "reading-config", store });
    const read = await retry(
      `reading the network config from the ${store} store`,
      () => deps.store.getNetworkConfig(signal),
      (error) => ({ name: "reading-config", store, error }),
      signal,
    );
    logger.info("network config", {
      network: read.network ? formatIPv4Net(read.network) : "-",
      ...(read.enableIPv6 && read.ipv6Network
        ? { ipv6Network: formatIPv6Net(read.ipv6Network) }
        : {}),
      subnetLen: read.subnetLen,
      backend: read.backendType,
    });
    return read;
  };

  /**
   * picking-interface: the interface for this config, or undefined after a
   * failure (logged, back-off slept, config marked stale).
   */
  const pickInterface = async (
    current: NetworkConfig,
    attempt: number,
    signal: AbortSignal,
  ): Promise<ExternalInterface | undefined> => {
    const what = "picking the external interface";
    enter({ name: "picking-interface" });
    try {
      const picked = await deps.pickInterface!(current);
      lastFailure.delete(what);
      logger.info("external interface", {
        iface: picked.name,
        ...(picked.extAddr ? { publicIP: picked.extAddr } : {}),
        ...(picked.extV6Addr ? { publicIPv6: picked.extV6Addr } : {}),
        mtu: picked.mtu,
      });
      return picked;
    } catch (e) {
      if (signal.aborted) throw signal.reason;
      const delay = failed(what, e, attempt);
      enter({ name: "picking-interface", error: (e as Error).message });
      configStale = true;
      await clock.sleep(delay, signal);
      return undefined;
    }
  };

  /**
   * reading-config → (picking-interface) → (preparing) → registering, until
   * a network is registered; a ConfigError re-reads the config before the
   * next try.
   */
  const registerNetwork = async (
    signal: AbortSignal,
    reacquire?: { why: string; previous: LeaseSubnets },
  ): Promise<Registered> => {
    for (let attempt = 0;; attempt++) {
      signal.throwIfAborted();
      if (configStale || !config) {
        config = await readConfig(signal);
        configStale = false;
        if (deps.pickInterface) extIface = undefined;
      }
      const current = config;
      if (!extIface) {
        const picked = await pickInterface(current, attempt, signal);
        if (!picked) continue; // config stale: read it again
        extIface = picked;
      }
      const iface = extIface;
      if (!prepared && deps.prepare) {
        enter({ name: "preparing" });
        const prepare = deps.prepare;
        await retry("preparing the host", () => prepare(current, iface), (error) => ({
          name: "preparing",
          error,
        }), signal);
      }
      prepared = true;
      const registering = (extra: { acquiring?: boolean; error?: string }): AgentState =>
        reacquire
          ? { name: "re-acquiring", why: reacquire.why, ...extra }
          : { name: "registering", backendType: current.backendType, ...extra };
      const what = reacquire
        ? "re-acquiring the lease"
        : `registering the ${current.backendType} backend`;
      enter(registering({}));
      try {
        const registered = await registerBackend(deps, current, {
          previous: reacquire?.previous,
          listPeers: !reacquire,
          extIface: iface,
          onAcquiring: () => enter(registering({ acquiring: true })),
          clock,
          signal,
        });
        lastFailure.delete(what);
        return registered;
      } catch (e) {
        if (signal.aborted) throw signal.reason;
        const delay = failed(what, e, attempt);
        enter(registering({ error: (e as Error).message }));
        // the config is wrong: read it again, so that fixing it in the store fixes the agent
        if (e instanceof ConfigError) configStale = true;
        await clock.sleep(delay, signal);
      }
    }
  };

  const install = async (network: Network, signal: AbortSignal) => {
    const current = config!;
    enter({ name: "installing" });
    await retry(
      "installing host rules",
      async () => {
        await deps.rules?.apply(current, network.lease);
        writeSubnetEnv(
          deps.subnetFile,
          subnetEnvFor(current, network.lease, network.mtu, deps.ipMasq),
        );
      },
      (error) => ({ name: "installing", error }),
      signal,
    );
    metrics.leaseExpiry.set(expirySeconds(network.lease.expiration));
  };

  /** Become ready on an installed registration: the rules keeper, peer writes, readiness. */
  const serve = (started: Registration): void => {
    const current = config!;
    const { network } = started;
    const rules = deps.rules;
    if (rules?.run) {
      started.start("host rules keeper", (s) => rules.run!(current, network.lease, s));
    }
    sync.attach(network, started.signal);
    enter({ name: "ready", backendNotReady: network.notReadyReason?.() ?? null });
    if (network.notReadyReason) {
      const notReadyReason = network.notReadyReason.bind(network);
      // the backend may become ready later (e.g. a device coming up)
      started.start("backend readiness poll", async (s) => {
        while (await sleepQuietly(clock, BACKEND_READY_POLL_MS, s)) {
          const reason = notReadyReason();
          if (state.name === "ready" && state.backendNotReady !== reason) {
            enter({ name: "ready", backendNotReady: reason });
          }
        }
      });
    }
    const onReady = deps.onReady;
    if (onReady) {
      started.start(
        "reporting readiness",
        (s) => retry("reporting readiness to the store", () => onReady(s), null, s),
      );
    }
  };

  return {
    status() {
      const reason = reasonOf(state);
      const storeReason = deps.store.status?.() ?? null;
      return {
        ready: reason === null,
        state: state.name,
        reason: storeReason && reason !== null ? `${reason} (${storeReason})` : reason,
        config,
        lease: registration?.lease,
        peers: [...follower.peers.values()],
        peerChangedAt: follower.changedAt,
        peerStates: registration?.network.peerStates?.(),
        backendType: config?.backendType,
        extIface,
        storeName: deps.store.name,
      };
    },

    async run(outer) {
      // ends everything this run started, also when it fails
      const life = linkedController({ parents: [outer] });
      const signal = life.signal;
      let following: Promise<void> | undefined;
      try {
        signal.throwIfAborted();
        logger.info("starting", {
          store: deps.store.name,
          ...(extIface ? { iface: extIface.name, publicIP: extIface.extAddr } : {}),
        });
        let registered = await registerNetwork(signal);
        for (let first = true;; first = false) {
          const live = new Registration(registered, signal, logger);
          registration = live;
          // the datapath runs while subnet.env and the rules go in (traffic flows during retries)
          live.start("backend", (s) => live.network.run(s));
          await install(live.network, signal);
          serve(live);
          const subnet = formatSubnetPair(live.lease);
          if (first) {
            // the listing the registration took (if any) starts the peers: one list at start
            following = follower.run(signal, registered.listed);
            logger.info("ready", { subnet, mtu: live.network.mtu, subnetFile: deps.subnetFile });
          } else {
            follower.relist();
            logger.info("lease re-acquired", { subnet });
          }
          const why = await keepLease(keepOptions, {
            lease: live.lease,
            attrs: live.attrs,
            lost: live.lost,
            onRenewed: (lease) => (live.lease = lease),
          }, signal);
          if (why === null) break;
          live.markLost(why);
          metrics.reacquisitions.inc();
          enter({ name: "re-acquiring", why });
          registered = await registerNetwork(signal, { why, previous: live.lease });
          // the old network's tasks and writes end before the new one starts
          await sync.detach();
          await live.end();
          if (leaseKey(live.lease) !== leaseKey(registered.network.lease)) {
            logger.warn("this host's subnet changed", {
              from: formatSubnetPair(live.lease),
              to: formatSubnetPair(registered.network.lease),
            });
          }
        }
      } catch (e) {
        if (!outer.aborted) throw e;
      } finally {
        life.abort();
        await sync.detach();
        await registration?.end();
        await following;
        life.dispose();
        enter({ name: "stopped" });
        logger.info("stopped; lease and datapath left in place");
      }
    },
  };
}
