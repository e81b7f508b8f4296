/**
 * Typed errors shared by every layer. Callers decide what to do by type:
 * a {@link ConfigError} means "fix the configuration" (the agent re-reads it
 * before retrying), a {@link StoreUnavailableError} means "retry later", a
 * {@link LeaseConflictError} means "someone else won the race".
 *
 * @module
 */

/** A compare-and-swap on a lease lost: another host wrote it first, or the lease is no longer ours. */
export class LeaseConflictError extends Error {
  override name = "LeaseConflictError";
}

/** No free subnet is left in the pool. */
export class PoolExhaustedError extends Error {
  override name = "PoolExhaustedError";
}

/** Options of {@link StoreUnavailableError}. */
export interface StoreUnavailableOptions extends ErrorOptions {
  /**
   * No server answered: the connection was refused or reset, or nothing came
   * back in time (as opposed to a server that answered with an error).
   */
  readonly unreachable?: boolean;
}

/**
 * The store could not be reached or answered with an error. `unreachable`
 * tells the two apart: retrying a store that did not answer at all costs it
 * nothing, so callers retry those soon (see `retryDelay` in core/clock.ts).
 */
export class StoreUnavailableError extends Error {
  override name = "StoreUnavailableError";
  /** No server answered (refused, reset, timed out). */
  readonly unreachable: boolean;
  constructor(message: string, options?: StoreUnavailableOptions) {
    super(message, options);
    this.unreachable = options?.unreachable ?? false;
  }
}

/** The network configuration is missing or invalid; `path` names the field. */
export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(message: string, readonly path?: string, options?: ErrorOptions) {
    super(message, options);
  }
}
