/**
 * One registration of the backend, from `register()` to its end: the
 * backend picked by `Backend.Type`, the lease acquired with the best hint
 * (this host's lease in the store, else the subnet from subnet.env), and the
 * background tasks of the registered network (its `run`, the host rules
 * keeper, the readiness poll) — all owned by the {@link Registration} and
 * ended together by {@link Registration.end} before the next registration
 * starts.
 *
 * @module
 */

import { linkedController } from "../core/abort.ts";
import type { Clock } from "../core/clock.ts";
import { ConfigError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";
import type { NetworkConfig } from "../lease/config.ts";
import { leaseKey } from "../lease/kv_store.ts";
import { readSubnetEnv } from "../lease/subnet_env.ts";
import {
  type Lease,
  type LeaseAttrs,
  type LeaseSnapshot,
  type LeaseSubnets,
  sameHost,
} from "../lease/types.ts";
import type { ExternalInterface, Network } from "../backends/types.ts";
import type { AgentDeps } from "./types.ts";

/** A registered network and the attributes its lease was acquired with. */
export interface Registered {
  readonly network: Network;
  /** What the backend published; renewals publish the same. */
  readonly attrs: LeaseAttrs;
  /**
   * All leases as listed while registering (always for a store whose
   * own-lease hint needs a list, else with `listPeers`), with this host's
   * lease as acquired: the peers can start from them, watching from their
   * revision, instead of listing again.
   */
  readonly listed?: LeaseSnapshot;
}

/** Options of {@link registerBackend}. */
export interface RegisterOptions {
  /** The subnets this host had (a re-acquisition), tried before subnet.env's. */
  readonly previous?: LeaseSubnets;
  /**
   * List all leases while registering, for the peers to start from (the
   * first registration; a re-acquisition lists its peers afresh). A store
   * whose own-lease hint is a list of all leases lists in any case.
   */
  readonly listPeers?: boolean;
  /** Called when the backend asks for the lease. */
  readonly onAcquiring?: () => void;
  /** The external interface picked for this config. */
  readonly extIface: ExternalInterface;
  /** The agent's clock, handed to the backend. */
  readonly clock: Clock;
  readonly signal: AbortSignal;
}

/**
 * Register the backend `config` names.
 *
 * @param deps The agent's dependencies (store, backends, interface, subnet file…).
 * @param config The network config.
 * @param options Previous subnet, the external interface, acquiring callback, clock, signal.
 * @returns The network and its lease attributes.
 * @throws {ConfigError} When `Backend.Type` names no known backend, or the backend rejects its options.
 * @example
 * ```ts
 * const { network, attrs } = await registerBackend(deps, config, { extIface, clock, signal });
 * ```
 */
export async function registerBackend(
  deps: AgentDeps,
  config: NetworkConfig,
  options: RegisterOptions,
): Promise<Registered> {
  const { signal } = options;
  const factory = deps.backends[config.backendType];
  if (!factory) {
    throw new ConfigError(
      `Backend.Type "${config.backendType}" is not supported: use one of ${
        Object.keys(deps.backends).join(", ")
      }`,
      "Backend.Type",
    );
  }
  // the hint is read while the backend loads (its module, its datapath)
  const reading = readHint(deps, options).catch((): Hint => ({}));
  const backend = await factory();
  /** All leases, when the hint came from them: acquire and the peer list start from it. */
  const { previousLease, listed } = await reading;
  const env = readSubnetEnv(deps.subnetFile);
  // a re-acquisition's subnets first, else subnet.env's; only when they fit the config
  const hint = options.previous ?? env;
  const previousSubnet = hint?.subnet && hint.subnet.prefixLen === config.subnetLen
    ? { ip: hint.subnet.ip, prefixLen: hint.subnet.prefixLen }
    : undefined;
  const previousIPv6Subnet = hint?.ipv6Subnet?.prefixLen === config.ipv6SubnetLen
    ? hint.ipv6Subnet
    : undefined;
  let attrs: LeaseAttrs | undefined;
  const network = await backend.register({
    config,
    extIface: options.extIface,
    previousLease,
    logger: deps.logger.with({ backend: backend.type }),
    metrics: deps.metrics,
    clock: options.clock,
    signal,
    acquire: async (requested, acquireSignal) => {
      attrs = requested;
      options.onAcquiring?.();
      return await deps.store.acquire(config, {
        attrs: requested,
        previousSubnet,
        previousIPv6Subnet,
        listed,
      }, acquireSignal ?? signal);
    },
  });
  const own = network.lease;
  return {
    network,
    attrs: attrs ?? own.attrs,
    // the listing predates the acquisition: it holds this host's lease as acquired
    listed: listed && {
      revision: listed.revision,
      leases: [...listed.leases.filter((l) => leaseKey(l) !== leaseKey(own)), own],
    },
  };
}

type Hint = { readonly previousLease?: Lease; readonly listed?: LeaseSnapshot };

/**
 * This host's lease in the store, a hint (e.g. to keep a VTEP MAC): from
 * `deps.previousLease` (and, with `listPeers`, a list of all leases beside
 * it), else from a list of all leases (returned too, so that acquire and the
 * peers start from it). A store error is left for acquire to surface.
 */
async function readHint(deps: AgentDeps, options: RegisterOptions): Promise<Hint> {
  const { signal, extIface } = options;
  const list = () => deps.store.list(signal, { exactExpiry: false });
  if (deps.previousLease) {
    // the peers' list runs beside the hint, acquire and the device set-up
    const [previousLease, listed] = await Promise.all([
      deps.previousLease(signal),
      options.listPeers ? list().catch(() => undefined) : undefined,
    ]);
    return { previousLease, listed };
  }
  const listed = await list();
  const me = { publicIP: extIface.extAddr, publicIPv6: extIface.extV6Addr };
  return { previousLease: listed.leases.find((l) => sameHost(l.attrs, me)), listed };
}

/**
 * A registered network's lifetime: its lease as last renewed, whether it
 * was lost, and the background tasks that end with it.
 *
 * @example
 * ```ts
 * const registration = new Registration(registered, signal, logger);
 * registration.start("backend", (s) => registered.network.run(s));
 * // … the lease is lost …
 * await registration.end();
 * ```
 */
export class Registration {
  readonly network: Network;
  readonly attrs: LeaseAttrs;
  /** The own lease as last renewed (the network keeps the one it registered with). */
  lease: Lease;
  readonly #logger: Logger;
  readonly #life;
  readonly #lost = new AbortController();
  readonly #tasks: Promise<void>[] = [];

  /**
   * @param registered The network and attributes from {@link registerBackend}.
   * @param parent The agent's signal; aborting it ends the registration too.
   * @param logger Where task failures go.
   */
  constructor(registered: Registered, parent: AbortSignal, logger: Logger) {
    this.network = registered.network;
    this.attrs = registered.attrs;
    this.lease = registered.network.lease;
    this.#logger = logger;
    this.#life = linkedController({ parents: [parent] });
  }

  /** Aborts when the registration ends (for writes into its network). */
  get signal(): AbortSignal {
    return this.#life.signal;
  }

  /** Aborts, with why, when the lease is lost. */
  get lost(): AbortSignal {
    return this.#lost.signal;
  }

  /**
   * The lease is gone (removed, expired, taken): say so once.
   *
   * @param why What happened.
   */
  markLost(why: string): void {
    if (this.#lost.signal.aborted) return;
    this.#logger.warn("this host's lease is gone; acquiring again", { why });
    this.#lost.abort(why);
  }

  /**
   * Run a background task until the registration ends; a failure before
   * that is logged once.
   *
   * @param what Named in the log, e.g. `backend`.
   * @param task The task; it must resolve when its signal aborts.
   */
  start(what: string, task: (signal: AbortSignal) => Promise<void>): void {
    const signal = this.#life.signal;
    this.#tasks.push(
      task(signal).catch((e) => {
        if (!signal.aborted) this.#logger.error(`${what} stopped with an error`, { error: e });
      }),
    );
  }

  /**
   * End every task of this registration and wait for them; the datapath
   * and the lease stay in place.
   *
   * @returns When all tasks have returned.
   */
  async end(): Promise<void> {
    this.#life.abort();
    await Promise.all(this.#tasks);
    this.#life.dispose();
  }
}
