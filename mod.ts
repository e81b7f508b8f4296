/**
 * weft — a flannel-compatible overlay network agent for Deno and Bun.
 *
 * Run it: `deno run -A mod.ts [flags]` or `bun mod.ts [flags]` (see
 * `--help`). Use it as a library: the agent, the lease stores, the backends
 * and the status API are exported below, each behind a narrow seam.
 *
 * @example
 * ```ts
 * import { createAgent, createFileLeaseStore, allocBackend, Registry, createLogger } from "./mod.ts";
 * ```
 *
 * @module
 */

import process from "node:process";
import { main } from "./cli/main.ts";

export { main, VERSION } from "./cli/main.ts";
export { createStatusApp, leaseView } from "./api/app.ts";
export { parseFlags, UsageError } from "./cli/flags.ts";
export { createLogger, type Logger, nullLogger } from "./core/log.ts";
export { Registry } from "./core/metrics.ts";
export {
  type Agent,
  type AgentDeps,
  type AgentStatus,
  createAgent,
  type HostRules,
} from "./agent/agent.ts";
export type { AgentState, AgentStateName } from "./agent/state.ts";
export { allocBackend } from "./backends/alloc.ts";
export type { Backend, BackendContext, Network, PeerChange } from "./backends/types.ts";
// The plug-in seams (versioned): a route provider, or a full backend, loaded as a module
// with "Backend": {"Type": "module", "Module": "/abs/path.js", …}.
export {
  isRouteProviderError,
  type ProviderRoute,
  type ProviderSelf,
  ROUTE_PROVIDER_API_VERSION,
  type RouteProvider,
  RouteProviderError,
  type RouteProviderErrorKind,
} from "./backends/cloud/provider.ts";
export {
  BACKEND_MODULE_API_VERSION,
  type BackendModule,
  type ModuleContext,
  type RouteProviderModule,
  type StandardResult,
  type StandardSchema,
  type WeftModule,
} from "./backends/module/types.ts";
export type { ExternalInterface } from "./datapath/iface.ts";
export { pickExternalInterface } from "./datapath/iface.ts";
export type { Datapath } from "./datapath/types.ts";
export { type Clock, systemClock } from "./core/clock.ts";
export { type NetworkConfig, parseNetworkConfig } from "./lease/config.ts";
export { createFileLeaseStore } from "./lease/file_store.ts";
export { createKvLeaseStore, type LeaseRegistry } from "./lease/kv_store.ts";
export { renderSubnetEnv, writeSubnetEnv } from "./lease/subnet_env.ts";
export {
  encodeLeaseAttrs,
  type Lease,
  type LeaseAttrs,
  type LeaseEvent,
  type LeaseStore,
} from "./lease/types.ts";
export {
  ConfigError,
  LeaseConflictError,
  PoolExhaustedError,
  StoreUnavailableError,
} from "./core/errors.ts";

if (import.meta.main) {
  // main() closes what it opened (store, server, datapath, signal handlers): the process ends by itself.
  process.exitCode = await main(process.argv.slice(2));
}
