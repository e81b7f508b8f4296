/**
 * The agent's states, the transitions between them, and the reason each
 * state gives `/readyz` and `/v1/status`.
 *
 * ```
 * state           next                                   on
 * starting        reading-config                         run()
 * reading-config  picking-interface                      config read, interface to pick
 *                 preparing | registering | re-acquiring config read (and valid)
 * picking-interface preparing | registering | re-acquiring interface picked for the config
 *                 reading-config                         no interface fits (after back-off)
 * preparing       registering                            host prepared (once per run)
 * registering     installing                             backend registered, lease acquired
 *                 reading-config                         ConfigError (after back-off)
 * installing      ready                                  rules and subnet.env in place
 * ready           re-acquiring                           own lease removed, expired, taken
 * re-acquiring    installing                             registered again (old network ended)
 *                 reading-config                         ConfigError (after back-off)
 * any             stopped                                the run's signal aborted
 * ```
 *
 * A state may be entered again from itself (a retry records its error).
 *
 * @module
 */

/** What the agent is doing. */
export type AgentState =
  /** Created; `run()` not called yet. */
  | { readonly name: "starting" }
  /** Reading (or re-reading, after a ConfigError) the network config from the store. */
  | { readonly name: "reading-config"; readonly store: string; readonly error?: string }
  /** Picking the external interface with the families the config enables. */
  | { readonly name: "picking-interface"; readonly error?: string }
  /** One-time host preparation (e.g. enabling ip_forward). */
  | { readonly name: "preparing"; readonly error?: string }
  /** Registering the backend; `acquiring` while it waits for the lease. */
  | {
    readonly name: "registering";
    readonly backendType: string;
    readonly acquiring?: boolean;
    readonly error?: string;
  }
  /** Writing subnet.env and installing the host rules. */
  | { readonly name: "installing"; readonly error?: string }
  /** Serving: the lease is kept, peers are followed. `backendNotReady` while the datapath is not. */
  | { readonly name: "ready"; readonly backendNotReady: string | null }
  /** The own lease was lost (`why`); registering again, the old network still running. */
  | {
    readonly name: "re-acquiring";
    readonly why: string;
    readonly acquiring?: boolean;
    readonly error?: string;
  }
  /** `run()` returned; the lease and the datapath are left in place. */
  | { readonly name: "stopped" };

/** A state's name. */
export type AgentStateName = AgentState["name"];

/** Which states may follow each state (besides itself). */
export const TRANSITIONS: Readonly<Record<AgentStateName, readonly AgentStateName[]>> = {
  "starting": ["reading-config", "stopped"],
  "reading-config": ["picking-interface", "preparing", "registering", "re-acquiring", "stopped"],
  "picking-interface": ["reading-config", "preparing", "registering", "re-acquiring", "stopped"],
  "preparing": ["registering", "stopped"],
  "registering": ["installing", "reading-config", "stopped"],
  "installing": ["ready", "stopped"],
  "ready": ["re-acquiring", "stopped"],
  "re-acquiring": ["installing", "reading-config", "stopped"],
  "stopped": [],
};

/**
 * Check a transition against {@link TRANSITIONS}.
 *
 * @param from The current state.
 * @param to The next state.
 * @returns `to`.
 * @throws {RangeError} When `to` may not follow `from` (a bug in the agent).
 * @example
 * ```ts
 * state = transition(state, { name: "installing" });
 * ```
 */
export function transition(from: AgentState, to: AgentState): AgentState {
  if (from.name !== to.name && !TRANSITIONS[from.name].includes(to.name)) {
    throw new RangeError(
      `Cannot move the agent from state "${from.name}" to "${to.name}": allowed next states are ${
        TRANSITIONS[from.name].join(", ") || "none"
      }`,
    );
  }
  return to;
}

/**
 * Why the agent is not ready in this state, as `/readyz` says it; null
 * when it is ready.
 *
 * @param state The state.
 * @returns The reason, or null.
 * @example
 * ```ts
 * reasonOf({ name: "reading-config", store: "etcd", error: "etcd unreachable" });
 * // "reading the network config from the etcd store: etcd unreachable"
 * ```
 */
export function reasonOf(state: AgentState): string | null {
  const failed = (what: string, error: string | undefined) => error ? `${what}: ${error}` : what;
  switch (state.name) {
    case "starting":
      return "starting";
    case "reading-config":
      return failed(`reading the network config from the ${state.store} store`, state.error);
    case "picking-interface":
      return failed("picking the external interface", state.error);
    case "preparing":
      return failed("preparing the host", state.error);
    case "registering":
      if (state.error) return `registering the ${state.backendType} backend: ${state.error}`;
      return state.acquiring ? "acquiring a subnet lease" : "registering the backend";
    case "installing":
      return state.error
        ? `installing host rules: ${state.error}`
        : "installing host rules and subnet.env";
    case "ready":
      return state.backendNotReady === null ? null : `backend: ${state.backendNotReady}`;
    case "re-acquiring":
      if (state.error) return `re-acquiring the lease: ${state.error}`;
      return state.acquiring ? "acquiring a subnet lease" : "re-acquiring the lease";
    case "stopped":
      return "stopped";
  }
}
