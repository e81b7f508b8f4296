/**
 * The one place that loads `@google-cloud/compute`: only the routes and
 * global-operations clients' files, never the package root (which loads
 * every Compute client), on the REST transport of google-gax. `provider.ts`
 * imports this file lazily, so an agent with another backend never loads
 * the SDK; a single-file build makes it a separate entry point.
 *
 * The types come from `sdk_types.d.ts` (the packages' own declarations cost
 * every `deno check` ~15 s). With `lean: true` (the default) the clients get
 * a gax whose proto loader keeps only the types the two services use: both
 * clients otherwise build a protobuf root of the whole Compute API (2,200
 * messages, 12 MB of JSON) on construction — 1.2–2.4 s here — and again
 * after every error that carries details (a denied permission, a rate
 * limit). The pruned root serves the same requests and replies.
 *
 * @module
 */

// @ts-types="./sdk_types.d.ts"
import { RoutesClient } from "@google-cloud/compute/build/src/v1/routes_client.js";
// @ts-types="./sdk_types.d.ts"
import { GlobalOperationsClient } from "@google-cloud/compute/build/src/v1/global_operations_client.js";
// @ts-types="./sdk_types.d.ts"
import fallback from "google-gax/fallback";
import type { ClientOptions, GaxFallback, ProtoRoot } from "./sdk_types.d.ts";
import { pruneProtoJson } from "./lean_protos.ts";

export { GlobalOperationsClient, RoutesClient };
export type * from "./sdk_types.d.ts";

/** The two services weft calls. */
const SERVICES = ["google.cloud.compute.v1.Routes", "google.cloud.compute.v1.GlobalOperations"];

const leanRoots = new WeakMap<object, ProtoRoot>();

function leanRoot(json: unknown): ProtoRoot {
  const key = json as object;
  let root = leanRoots.get(key);
  if (!root) {
    root = fallback.protobuf.Root.fromJSON(pruneProtoJson(json, SERVICES));
    leanRoots.set(key, root);
  }
  return root;
}

let leanGax: { fallback: GaxFallback } | undefined;

/** google-gax's REST build with a proto loader that prunes to {@link SERVICES}. */
function leanGaxInstance(): { fallback: GaxFallback } {
  if (leanGax) return leanGax;
  class LeanGrpcClient extends fallback.GrpcClient {
    override loadProtoJSON(json: unknown): ProtoRoot {
      return leanRoot(json);
    }
  }
  const lean = Object.create(fallback) as GaxFallback;
  Object.defineProperty(lean, "GrpcClient", { value: LeanGrpcClient });
  const protobuf = Object.create(fallback.protobuf);
  Object.defineProperty(protobuf, "Root", { value: { fromJSON: leanRoot } });
  Object.defineProperty(lean, "protobuf", { value: protobuf });
  leanGax = { fallback: lean };
  return leanGax;
}

/** The two clients, sharing one auth client and endpoint. */
export interface ComputeClients {
  readonly routes: RoutesClient;
  readonly operations: GlobalOperationsClient;
  close(): Promise<void>;
}

/**
 * Make the routes and global-operations clients (REST).
 *
 * @param options Endpoint (`apiEndpoint`, `port`, `protocol`) and `authClient`.
 * @param lean Prune the proto root to the two services (default true).
 * @returns The clients.
 */
export function createComputeClients(options: ClientOptions, lean = true): ComputeClients {
  const opts = { ...options, fallback: true };
  const gax = lean ? leanGaxInstance() : undefined;
  const routes = new RoutesClient({ ...opts }, gax);
  const operations = new GlobalOperationsClient({ ...opts }, gax);
  return {
    routes,
    operations,
    async close() {
      await Promise.all([routes.close(), operations.close()]);
    },
  };
}
