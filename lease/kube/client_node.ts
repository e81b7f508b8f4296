/**
 * The fallback loader of the API server's address and credentials, through
 * `@kubernetes/client-node`: for kubeconfig users that authenticate with an
 * `exec` plugin or an `auth-provider` (oidc, gcp, azure), which the builtin
 * loader (lease/kube/config.ts) leaves alone. client-node only loads the
 * config and produces the headers; the requests themselves go through the
 * runtime's fetch, like the builtin path's.
 *
 * This module imports client-node statically: import it dynamically, and
 * only when needed (client-node costs ~120 MB and 0.5–0.7 s under Deno).
 *
 * @module
 */

import { HttpMethod, KubeConfig, RequestContext } from "@kubernetes/client-node";
import type { KubeConfigOptions, KubeConnection } from "./config.ts";
import { ConfigError } from "../../core/errors.ts";

const pem = (b: unknown) => (b ? String(b) : undefined);

/**
 * Load the API server's address and credentials with client-node, with the
 * same precedence as {@link import("./config.ts").loadKubeConfig}:
 * `--kubeconfig-file`, else in-cluster, else `--kube-api-url` alone;
 * `--kube-api-url` replaces the server.
 *
 * @param options Files, flags, environment and warning sink (clock and
 *   token age are client-node's own here).
 * @returns The connection; `headers()` runs client-node's authenticators
 *   (exec plugins are run again when their credential expires).
 * @throws {ConfigError} When nothing says where the API is, the kubeconfig
 *   cannot be loaded or has no current cluster, or the credentials cannot
 *   be applied.
 * @example
 * ```ts
 * const { loadKubeConfigWithClientNode } = await import("./client_node.ts");
 * const conn = await loadKubeConfigWithClientNode({ kubeconfigFile: "/root/.kube/config" });
 * ```
 */
export async function loadKubeConfigWithClientNode(
  options: KubeConfigOptions = {},
): Promise<KubeConnection> {
  const env = options.env ?? {};
  const warn = options.onWarning ?? (() => {});
  const kc = new KubeConfig();
  let source: KubeConnection["source"];
  if (options.kubeconfigFile) {
    source = "kubeconfig";
    try {
      kc.loadFromFile(options.kubeconfigFile);
    } catch (e) {
      throw new ConfigError(
        `cannot load --kubeconfig-file ${options.kubeconfigFile}: ${(e as Error).message}`,
        "kubeconfig-file",
        { cause: e },
      );
    }
    if (!kc.getCurrentCluster()) {
      throw new ConfigError(
        `--kubeconfig-file ${options.kubeconfigFile} has no current context with a cluster: set current-context`,
        "current-context",
      );
    }
  } else if (env.KUBERNETES_SERVICE_HOST) {
    source = "in-cluster";
    kc.loadFromCluster(options.inClusterPathPrefix ?? "");
    // client-node reads process.env; use the injected environment instead
    const host = env.KUBERNETES_SERVICE_HOST;
    const port = env.KUBERNETES_SERVICE_PORT ?? "443";
    const scheme = ["80", "8080", "8001"].includes(port) ? "http" : "https";
    kc.loadFromOptions({
      clusters: [{
        ...kc.clusters[0],
        server: `${scheme}://${host.includes(":") ? `[${host}]` : host}:${port}`,
      }],
      users: kc.users,
      contexts: kc.contexts,
      currentContext: kc.currentContext,
    });
  } else if (options.apiUrl) {
    source = "api-url";
    kc.loadFromClusterAndUser(
      { name: "api", server: options.apiUrl, skipTLSVerify: false },
      { name: "anonymous" },
    );
  } else {
    throw new ConfigError(
      "cannot find the Kubernetes API: not running in a pod (KUBERNETES_SERVICE_HOST is unset) and neither --kubeconfig-file nor --kube-api-url was given; pass one of them",
      "kubeconfig-file",
    );
  }
  // --kube-api-url replaces the server; http:// needs no TLS settings
  // (client-node refuses http unless skipTLSVerify is set).
  const currentName = kc.getCurrentCluster()?.name;
  kc.loadFromOptions({
    clusters: kc.clusters.map((c) => {
      const server = options.apiUrl && c.name === currentName ? options.apiUrl : c.server;
      return { ...c, server, skipTLSVerify: server.startsWith("http:") ? true : c.skipTLSVerify };
    }),
    users: kc.users,
    contexts: kc.contexts,
    currentContext: kc.currentContext,
  });
  const server = kc.getCurrentCluster()!.server.replace(/\/+$/, "");
  // deno-lint-ignore no-explicit-any
  const tlsOpts: any = {};
  try {
    await kc.applyToHTTPSOptions(tlsOpts);
  } catch (e) {
    throw new ConfigError(
      `cannot use the Kubernetes credentials for ${server}: ${(e as Error).message}`,
      "kubeconfig-file",
      { cause: e },
    );
  }
  if (tlsOpts.rejectUnauthorized === false && server.startsWith("https:")) {
    warn(
      `insecure-skip-tls-verify is not supported; the server certificate of ${server} is verified against the cluster CA`,
    );
  }
  const namespace = source === "in-cluster"
    ? kc.getContextObject(kc.currentContext)?.namespace?.trim()
    : undefined;
  const ca = pem(tlsOpts.ca), cert = pem(tlsOpts.cert), key = pem(tlsOpts.key);
  return {
    server,
    tls: { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) },
    source,
    loader: "client-node",
    ...(namespace ? { namespace } : {}),
    async headers() {
      const ctx = new RequestContext(server, HttpMethod.GET);
      await kc.applySecurityAuthentication(ctx);
      return ctx.getHeaders() as Record<string, string>;
    },
    refresh: () => Promise.resolve(false),
  };
}
