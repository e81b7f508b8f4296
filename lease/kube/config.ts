/**
 * Where the Kubernetes API server is and how to authenticate to it, loaded
 * without `@kubernetes/client-node` (whose import alone costs ~120 MB and
 * 0.5–0.7 s under Deno) for what a DaemonSet and most kubeconfigs need:
 *
 * - in-cluster: `KUBERNETES_SERVICE_HOST`/`_PORT`, the service account's
 *   `token` (re-read when a minute old or after a 401, since bound service
 *   account tokens rotate), `ca.crt` and `namespace`;
 * - `--kubeconfig-file`: the current context's cluster (`server`,
 *   `certificate-authority`/`-data`) and user (`token`, `tokenFile`,
 *   `client-certificate`/`-data` + `client-key`/`-data`,
 *   `username`/`password`, `as`), file paths relative to the kubeconfig's
 *   directory, as client-go resolves them;
 * - `--kube-api-url`: replaces the server (with the kubeconfig's or the
 *   in-cluster credentials), or alone means anonymous access.
 *
 * A user that needs an `exec` plugin or an `auth-provider` (oidc, gcp,
 * azure) is left to `@kubernetes/client-node` ({@link loadKubeConfig}
 * answers `kind: "client-node"`; see lease/kube_client_node.ts).
 * `insecure-skip-tls-verify` is not honoured: the server certificate is
 * always verified, and a warning says so.
 *
 * @module
 */

import { load as loadYaml } from "js-yaml";
import { Buffer } from "node:buffer";
import { readFile } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";
import * as v from "valibot";
import { type Clock, systemClock } from "../../core/clock.ts";
import { ConfigError } from "../../core/errors.ts";

/** Where the service account files are mounted in a pod. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** How long a token read from a file is used before it is read again (client-go: 1 min). */
export const TOKEN_FILE_MAX_AGE_MS = 60_000;

/** PEM material for the TLS connection. */
export interface KubeTls {
  /** CA certificate(s) the server certificate must chain to; unset = system roots. */
  readonly ca?: string;
  /** Client certificate (PEM). */
  readonly cert?: string;
  /** Client key (PEM). */
  readonly key?: string;
}

/** How to reach the API server and authenticate to it. */
export interface KubeConnection {
  /** Base URL without a trailing slash, e.g. `https://10.96.0.1:443`. */
  readonly server: string;
  readonly tls: KubeTls;
  /** Where the settings came from. */
  readonly source: "in-cluster" | "kubeconfig" | "api-url";
  /** Which loader produced them. */
  readonly loader: "builtin" | "client-node";
  /** The service account's namespace (in-cluster only). */
  readonly namespace?: string;
  /**
   * Authentication headers for the next request (`Authorization`,
   * `Impersonate-User`). A token from a file is re-read when it is older
   * than a minute.
   *
   * @throws {Error} When the credentials cannot be produced (the
   *   client-node loader's exec plugin failing, say).
   */
  headers(): Promise<Record<string, string>>;
  /**
   * The server answered 401: read a token file again now.
   *
   * @returns Whether the credentials changed, so one retry is worth it.
   */
  refresh(): Promise<boolean>;
}

/** Options for {@link loadKubeConfig}. */
export interface KubeConfigOptions {
  /** `--kubeconfig-file`. */
  kubeconfigFile?: string;
  /** `--kube-api-url`. */
  apiUrl?: string;
  /** Environment for KUBERNETES_SERVICE_HOST/PORT (default: none set). */
  env?: Readonly<Record<string, string | undefined>>;
  /** Prefix of the service account directory (tests); default "". */
  inClusterPathPrefix?: string;
  /** Clock for the token file's age (default the system clock). */
  clock?: Clock;
  /** How long a token read from a file is used (default {@link TOKEN_FILE_MAX_AGE_MS}). */
  tokenMaxAgeMs?: number;
  /** Told about settings that are ignored (insecure-skip-tls-verify, as-groups, …). */
  onWarning?: (message: string) => void;
}

/** What {@link loadKubeConfig} found. */
export type KubeConfigLoad =
  | { readonly kind: "builtin"; readonly connection: KubeConnection }
  /** The kubeconfig's user needs `@kubernetes/client-node`; `reason` says why. */
  | { readonly kind: "client-node"; readonly reason: string };

const str = v.optional(v.nullable(v.string()));
const list = <T extends v.GenericSchema>(item: T) => v.optional(v.nullable(v.array(item)));

const ClusterSchema = v.looseObject({
  server: str,
  "certificate-authority": str,
  "certificate-authority-data": str,
  "insecure-skip-tls-verify": v.optional(v.nullable(v.boolean())),
  "tls-server-name": str,
  "proxy-url": str,
});

const UserSchema = v.looseObject({
  token: str,
  tokenFile: str,
  "client-certificate": str,
  "client-certificate-data": str,
  "client-key": str,
  "client-key-data": str,
  username: str,
  password: str,
  as: str,
  "as-uid": str,
  "as-groups": v.optional(v.nullable(v.array(v.string()))),
  "as-user-extra": v.optional(v.unknown()),
  exec: v.optional(v.unknown()),
  "auth-provider": v.optional(v.unknown()),
});

const ContextSchema = v.looseObject({ cluster: str, user: str, namespace: str });

/** The parts of a kubeconfig weft reads (other keys are allowed and ignored). */
export const KubeconfigSchema = v.looseObject({
  clusters: list(
    v.looseObject({ name: v.string(), cluster: v.optional(v.nullable(ClusterSchema)) }),
  ),
  users: list(v.looseObject({ name: v.string(), user: v.optional(v.nullable(UserSchema)) })),
  contexts: list(
    v.looseObject({ name: v.string(), context: v.optional(v.nullable(ContextSchema)) }),
  ),
  "current-context": str,
});

type Cluster = v.InferOutput<typeof ClusterSchema>;
type User = v.InferOutput<typeof UserSchema>;

/** `http(s)://host:port` for the in-cluster service, as client-node builds it. */
function inClusterServer(host: string, port: string): string {
  const scheme = ["80", "8080", "8001"].includes(port) ? "http" : "https";
  return `${scheme}://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** Read a text file for a setting, or throw a ConfigError naming the setting and the fix. */
async function readSetting(path: string, what: string, fix: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (e) {
    throw new ConfigError(
      `cannot read ${what} ${path}: ${(e as Error).message}; ${fix}`,
      what,
      { cause: e },
    );
  }
}

/**
 * A bearer token read from a file, cached for `maxAgeMs` and re-read on
 * demand; a failed re-read keeps the last good token (the kubelet swaps the
 * file atomically, so a failure is transient) and warns.
 */
function fileToken(
  path: string,
  what: string,
  fix: string,
  clock: Clock,
  maxAgeMs: number,
  warn: (m: string) => void,
) {
  let cached: { token: string; at: number } | undefined;
  const read = async (): Promise<string> => {
    const token = (await readSetting(path, what, fix)).trim();
    if (!token) throw new ConfigError(`${what} ${path} is empty; ${fix}`, what);
    cached = { token, at: clock.now() };
    return token;
  };
  const get = async (): Promise<string> => {
    if (cached && clock.now() - cached.at < maxAgeMs) return cached.token;
    if (!cached) return await read();
    try {
      return await read();
    } catch (e) {
      warn(`${(e as Error).message}; using the token read before`);
      cached = { token: cached.token, at: clock.now() };
      return cached.token;
    }
  };
  const refresh = async (): Promise<boolean> => {
    const before = cached?.token;
    cached = cached && { token: cached.token, at: -Infinity };
    return (await get()) !== before;
  };
  return { get, refresh };
}

/** Decode a `*-data` field (base64 of PEM), or throw naming the field. */
function pemData(b64: string, field: string, owner: string, file: string): string {
  const text = Buffer.from(b64.replace(/\s+/g, ""), "base64").toString("utf8");
  if (!text.includes("-----BEGIN ")) {
    throw new ConfigError(
      `${field} of ${owner} in --kubeconfig-file ${file} is not base64-encoded PEM (decoded it starts ${
        JSON.stringify(text.slice(0, 20))
      }); encode the PEM file with base64 -w0`,
      field,
    );
  }
  return text;
}

const noRefresh = () => Promise.resolve(false);

/**
 * Load the API server's address and credentials: `--kubeconfig-file` if
 * given, else the in-cluster service account when KUBERNETES_SERVICE_HOST is
 * set, else `--kube-api-url` alone (anonymous). `--kube-api-url` replaces the
 * server in the first two cases.
 *
 * @param options Files, flags, environment, clock and warning sink.
 * @returns The connection, or `kind: "client-node"` with the reason when the
 *   kubeconfig's user needs an exec plugin or auth-provider.
 * @throws {ConfigError} When nothing says where the API is, a file cannot be
 *   read, the kubeconfig is not valid YAML or lacks the current context, its
 *   cluster or its user, or the user mixes authentication methods.
 * @example
 * ```ts
 * const r = await loadKubeConfig({ kubeconfigFile: "/etc/kubernetes/kubelet.conf" });
 * if (r.kind === "builtin") console.log(r.connection.server, await r.connection.headers());
 * ```
 */
export async function loadKubeConfig(options: KubeConfigOptions = {}): Promise<KubeConfigLoad> {
  const env = options.env ?? {};
  const clock = options.clock ?? systemClock;
  const maxAge = options.tokenMaxAgeMs ?? TOKEN_FILE_MAX_AGE_MS;
  const warn = options.onWarning ?? (() => {});
  const apiUrl = options.apiUrl?.replace(/\/+$/, "");
  const skipWarning = (server: string) => {
    if (server.startsWith("https:")) {
      warn(
        `insecure-skip-tls-verify is not supported; the server certificate of ${server} is verified against the cluster CA`,
      );
    }
  };

  if (options.kubeconfigFile) {
    return await fromKubeconfig(options.kubeconfigFile, apiUrl, clock, maxAge, warn, skipWarning);
  }
  if (env.KUBERNETES_SERVICE_HOST) {
    const dir = (options.inClusterPathPrefix ?? "") + SERVICE_ACCOUNT_DIR;
    const fix =
      "is the service account token mounted (automountServiceAccountToken: true in the DaemonSet)?";
    const ca = await readSetting(`${dir}/ca.crt`, "service account CA", fix);
    let namespace: string | undefined;
    try {
      namespace = (await readFile(`${dir}/namespace`, "utf8")).trim() || undefined;
    } catch { /* optional, as in client-go */ }
    const token = fileToken(`${dir}/token`, "service account token", fix, clock, maxAge, warn);
    await token.get();
    const server = apiUrl ??
      inClusterServer(env.KUBERNETES_SERVICE_HOST, env.KUBERNETES_SERVICE_PORT ?? "443");
    return {
      kind: "builtin",
      connection: {
        server,
        tls: { ca },
        source: "in-cluster",
        loader: "builtin",
        ...(namespace ? { namespace } : {}),
        headers: async () => ({ Authorization: `Bearer ${await token.get()}` }),
        refresh: token.refresh,
      },
    };
  }
  if (apiUrl) {
    return {
      kind: "builtin",
      connection: {
        server: apiUrl,
        tls: {},
        source: "api-url",
        loader: "builtin",
        headers: () => Promise.resolve({}),
        refresh: noRefresh,
      },
    };
  }
  throw new ConfigError(
    "cannot find the Kubernetes API: not running in a pod (KUBERNETES_SERVICE_HOST is unset) and neither --kubeconfig-file nor --kube-api-url was given; pass one of them",
    "kubeconfig-file",
  );
}

async function fromKubeconfig(
  file: string,
  apiUrl: string | undefined,
  clock: Clock,
  maxAge: number,
  warn: (m: string) => void,
  skipWarning: (server: string) => void,
): Promise<KubeConfigLoad> {
  const text = await readSetting(
    file,
    "kubeconfig-file",
    "pass the path of a readable kubeconfig with --kubeconfig-file",
  );
  let raw: unknown;
  try {
    raw = loadYaml(text);
  } catch (e) {
    throw new ConfigError(
      `cannot load --kubeconfig-file ${file}: it is not valid YAML: ${(e as Error).message}`,
      "kubeconfig-file",
      { cause: e },
    );
  }
  const parsed = v.safeParse(KubeconfigSchema, raw ?? {});
  if (!parsed.success) {
    const issue = parsed.issues[0];
    const at = issue.path?.map((p) => String(p.key)).join(".") ?? "";
    throw new ConfigError(
      `cannot load --kubeconfig-file ${file}: ${at ? at + ": " : ""}${issue.message}`,
      at || "kubeconfig-file",
    );
  }
  const kc = parsed.output;
  const current = kc["current-context"];
  if (!current) {
    throw new ConfigError(
      `--kubeconfig-file ${file} has no current context with a cluster: set current-context`,
      "current-context",
    );
  }
  const names = (xs: { name: string }[] | null | undefined) =>
    (xs ?? []).map((x) => x.name).join(", ") || "none";
  const context = (kc.contexts ?? []).find((c) => c.name === current)?.context;
  if (!context) {
    throw new ConfigError(
      `--kubeconfig-file ${file} has no context "${current}" (its current-context); contexts: ${
        names(kc.contexts)
      }; fix current-context`,
      "current-context",
    );
  }
  const entry = (kc.clusters ?? []).find((c) => c.name === context.cluster);
  if (!entry) {
    throw new ConfigError(
      `--kubeconfig-file ${file}: context "${current}" names cluster "${
        context.cluster ?? ""
      }", which is not in clusters (${names(kc.clusters)}); fix the context's cluster`,
      "contexts.context.cluster",
    );
  }
  const cluster: Cluster = entry.cluster ?? {};
  let user: User = {};
  if (context.user) {
    const u = (kc.users ?? []).find((x) => x.name === context.user);
    if (!u) {
      throw new ConfigError(
        `--kubeconfig-file ${file}: context "${current}" names user "${context.user}", which is not in users (${
          names(kc.users)
        }); fix the context's user`,
        "contexts.context.user",
      );
    }
    user = u.user ?? {};
  }
  const userName = `user "${context.user ?? ""}"`;
  if (user.exec) {
    const cmd = (user.exec as { command?: unknown })?.command;
    return {
      kind: "client-node",
      reason: `${userName} authenticates with an exec plugin (${String(cmd ?? "?")})`,
    };
  }
  if (user["auth-provider"]) {
    const name = (user["auth-provider"] as { name?: unknown })?.name;
    return {
      kind: "client-node",
      reason: `${userName} authenticates with the auth-provider ${String(name ?? "?")}`,
    };
  }

  const server = (apiUrl ?? cluster.server ?? "").replace(/\/+$/, "");
  if (!server) {
    throw new ConfigError(
      `--kubeconfig-file ${file}: cluster "${entry.name}" has no server; set clusters[].cluster.server or pass --kube-api-url`,
      "clusters.cluster.server",
    );
  }
  const base = dirname(file);
  const path = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const fix =
    `fix the path in --kubeconfig-file ${file} (relative paths are resolved against its directory)`;
  const pem = async (data: string | null | undefined, p: string | null | undefined, f: string) =>
    data
      ? pemData(
        data,
        `${f}-data`,
        f.startsWith("certificate-authority") ? "the cluster" : userName,
        file,
      )
      : p
      ? await readSetting(path(p), f, fix)
      : undefined;

  if (cluster["insecure-skip-tls-verify"]) skipWarning(server);
  for (const k of ["tls-server-name", "proxy-url"] as const) {
    if (cluster[k]) warn(`${k} of cluster "${entry.name}" is not supported and is ignored`);
  }
  for (const k of ["as-uid", "as-groups", "as-user-extra"] as const) {
    if (user[k]) warn(`${k} of ${userName} is not supported and is ignored`);
  }
  const ca = await pem(
    cluster["certificate-authority-data"],
    cluster["certificate-authority"],
    "certificate-authority",
  );
  const cert = await pem(
    user["client-certificate-data"],
    user["client-certificate"],
    "client-certificate",
  );
  const key = await pem(user["client-key-data"], user["client-key"], "client-key");
  if (Boolean(cert) !== Boolean(key)) {
    throw new ConfigError(
      `--kubeconfig-file ${file}: ${userName} has a client ${
        cert ? "certificate but no key" : "key but no certificate"
      }; set both client-certificate(-data) and client-key(-data)`,
      cert ? "client-key" : "client-certificate",
    );
  }
  const hasToken = Boolean(user.token || user.tokenFile);
  const hasBasic = Boolean(user.username || user.password);
  if (hasToken && hasBasic) {
    throw new ConfigError(
      `--kubeconfig-file ${file}: ${userName} has both a token and username/password; only one authentication method is allowed`,
      "users.user",
    );
  }
  const extra: Record<string, string> = user.as ? { "Impersonate-User": user.as } : {};
  let headers: () => Promise<Record<string, string>> = () => Promise.resolve({ ...extra });
  let refresh = noRefresh;
  if (user.token) {
    const h = { ...extra, Authorization: `Bearer ${user.token}` };
    headers = () => Promise.resolve(h);
  } else if (user.tokenFile) {
    const token = fileToken(path(user.tokenFile), "tokenFile", fix, clock, maxAge, warn);
    await token.get();
    headers = async () => ({ ...extra, Authorization: `Bearer ${await token.get()}` });
    refresh = token.refresh;
  } else if (hasBasic) {
    const basic = Buffer.from(`${user.username ?? ""}:${user.password ?? ""}`, "utf8")
      .toString("base64");
    const h = { ...extra, Authorization: `Basic ${basic}` };
    headers = () => Promise.resolve(h);
  }
  return {
    kind: "builtin",
    connection: {
      server,
      tls: { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) },
      source: "kubeconfig",
      loader: "builtin",
      headers,
      refresh,
    },
  };
}
