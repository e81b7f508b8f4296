import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FakeClock } from "../../testing/fake_clock.ts";
import {
  type KubeConfigOptions,
  type KubeConnection,
  loadKubeConfig,
  SERVICE_ACCOUNT_DIR,
  TOKEN_FILE_MAX_AGE_MS,
} from "./config.ts";
import { ConfigError } from "../../core/errors.ts";

const CA = "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n";
const CERT = "-----BEGIN CERTIFICATE-----\nQ0VSVA==\n-----END CERTIFICATE-----\n";
const KEY = "-----BEGIN EC PRIVATE KEY-----\nS0VZ\n-----END EC PRIVATE KEY-----\n";
const b64 = (s: string) => btoa(s);

/** A temp dir, removed after `fn`. */
async function inDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "weft-kube-config-"));
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A kubeconfig in YAML with one cluster, one user and one context. */
function kubeconfig(cluster: string[], user: string[], currentContext = "ctx"): string {
  return [
    "apiVersion: v1",
    "kind: Config",
    "preferences: {}",
    "clusters:",
    "- name: prod",
    "  cluster:",
    ...cluster.map((l) => "    " + l),
    "users:",
    "- name: weft",
    "  user:",
    ...(user.length ? user.map((l) => "    " + l) : ["    {}"]),
    "contexts:",
    "- name: ctx",
    "  context:",
    "    cluster: prod",
    "    user: weft",
    "    namespace: kube-flannel",
    `current-context: ${currentContext}`,
    "",
  ].join("\n");
}

async function builtin(options: KubeConfigOptions): Promise<KubeConnection> {
  const r = await loadKubeConfig(options);
  assert.equal(r.kind, "builtin", r.kind === "client-node" ? r.reason : "");
  return (r as { connection: KubeConnection }).connection;
}

Deno.test("loadKubeConfig reads each kind of kubeconfig user", async (t) => {
  const table: {
    name: string;
    cluster?: string[];
    user: string[];
    files?: Record<string, string>;
    server?: string;
    headers: Record<string, string>;
    tls: Record<string, string>;
  }[] = [
    {
      name: "token",
      user: ["token: abc.def"],
      headers: { Authorization: "Bearer abc.def" },
      tls: {},
    },
    {
      name: "tokenFile relative to the kubeconfig",
      user: ["tokenFile: creds/token"],
      files: { "creds/token": "from-file\n" },
      headers: { Authorization: "Bearer from-file" },
      tls: {},
    },
    {
      name: "client certificate and key as data, CA as data",
      cluster: ["server: https://10.0.0.1:6443", `certificate-authority-data: ${b64(CA)}`],
      user: [`client-certificate-data: ${b64(CERT)}`, `client-key-data: ${b64(KEY)}`],
      server: "https://10.0.0.1:6443",
      headers: {},
      tls: { ca: CA, cert: CERT, key: KEY },
    },
    {
      name: "client certificate, key and CA as relative and absolute files",
      cluster: ["server: https://10.0.0.1:6443", "certificate-authority: pki/ca.crt"],
      user: ["client-certificate: ./pki/client.crt", "client-key: ABS/pki/client.key"],
      files: { "pki/ca.crt": CA, "pki/client.crt": CERT, "pki/client.key": KEY },
      server: "https://10.0.0.1:6443",
      headers: {},
      tls: { ca: CA, cert: CERT, key: KEY },
    },
    {
      name: "data wins over a file",
      cluster: [
        "server: https://10.0.0.1:6443",
        `certificate-authority-data: ${b64(CA)}`,
        "certificate-authority: /nonexistent/ca.crt",
      ],
      user: ["token: t"],
      server: "https://10.0.0.1:6443",
      headers: { Authorization: "Bearer t" },
      tls: { ca: CA },
    },
    {
      name: "basic auth",
      user: ["username: admin", "password: 'pa:ss wörd'"],
      headers: { Authorization: `Basic ${btoa("admin:pa:ss w\xc3\xb6rd")}` },
      tls: {},
    },
    {
      name: "client certificate with a token and impersonation",
      user: [
        "token: t",
        "as: system:node:n1",
        `client-certificate-data: ${b64(CERT)}`,
        `client-key-data: ${b64(KEY)}`,
      ],
      headers: { Authorization: "Bearer t", "Impersonate-User": "system:node:n1" },
      tls: { cert: CERT, key: KEY },
    },
    { name: "anonymous", user: [], headers: {}, tls: {} },
    {
      name: "server with a trailing slash",
      cluster: ["server: http://127.0.0.1:8080/"],
      user: [],
      server: "http://127.0.0.1:8080",
      headers: {},
      tls: {},
    },
  ];
  for (const c of table) {
    await t.step(c.name, async () => {
      await inDir(async (dir) => {
        for (const [name, text] of Object.entries(c.files ?? {})) {
          mkdirSync(join(dir, name, ".."), { recursive: true });
          writeFileSync(join(dir, name), text);
        }
        const file = join(dir, "kubeconfig");
        const user = c.user.map((l) => l.replace("ABS/", dir + "/"));
        writeFileSync(file, kubeconfig(c.cluster ?? ["server: http://127.0.0.1:8080"], user));
        const conn = await builtin({ kubeconfigFile: file });
        assert.equal(conn.server, c.server ?? "http://127.0.0.1:8080");
        assert.equal(conn.source, "kubeconfig");
        assert.equal(conn.loader, "builtin");
        assert.deepEqual(await conn.headers(), c.headers);
        assert.deepEqual(conn.tls, c.tls);
      });
    });
  }
});

Deno.test("loadKubeConfig leaves exec plugins and auth-providers to client-node", async (t) => {
  const table = [
    {
      user: ["exec:", "  apiVersion: client.authentication.k8s.io/v1", "  command: aws"],
      reason: /user "weft" authenticates with an exec plugin \(aws\)/,
    },
    {
      user: ["auth-provider:", "  name: oidc", "  config:", "    idp-issuer-url: https://x"],
      reason: /user "weft" authenticates with the auth-provider oidc/,
    },
    {
      // the exec plugin decides even when a token is there too
      user: ["token: t", "exec:", "  command: gke-gcloud-auth-plugin"],
      reason: /exec plugin \(gke-gcloud-auth-plugin\)/,
    },
  ];
  for (const c of table) {
    await t.step(c.user[0], async () => {
      await inDir(async (dir) => {
        const file = join(dir, "kubeconfig");
        writeFileSync(file, kubeconfig(["server: https://10.0.0.1:6443"], c.user));
        const r = await loadKubeConfig({ kubeconfigFile: file });
        assert.equal(r.kind, "client-node");
        assert.match((r as { reason: string }).reason, c.reason);
      });
    });
  }
});

Deno.test("loadKubeConfig explains a broken kubeconfig", async (t) => {
  const table: { name: string; text: (dir: string) => string; error: RegExp }[] = [
    {
      name: "missing current-context",
      text: () => kubeconfig(["server: https://x"], ["token: t"], '""'),
      error: /has no current context with a cluster: set current-context/,
    },
    {
      name: "current-context naming no context",
      text: () => kubeconfig(["server: https://x"], ["token: t"], "other"),
      error: /has no context "other" \(its current-context\); contexts: ctx; fix current-context/,
    },
    {
      name: "context naming a missing cluster",
      text: () =>
        kubeconfig(["server: https://x"], ["token: t"]).replace("cluster: prod", "cluster: dev"),
      error: /context "ctx" names cluster "dev", which is not in clusters \(prod\)/,
    },
    {
      name: "context naming a missing user",
      text: () =>
        kubeconfig(["server: https://x"], ["token: t"]).replace("user: weft", "user: bob"),
      error: /context "ctx" names user "bob", which is not in users \(weft\)/,
    },
    {
      name: "cluster without a server",
      text: () => kubeconfig(["insecure-skip-tls-verify: false"], ["token: t"]),
      error:
        /cluster "prod" has no server; set clusters\[\]\.cluster\.server or pass --kube-api-url/,
    },
    {
      name: "certificate without a key",
      text: () => kubeconfig(["server: https://x"], [`client-certificate-data: ${b64(CERT)}`]),
      error: /user "weft" has a client certificate but no key/,
    },
    {
      name: "token and basic auth together",
      text: () => kubeconfig(["server: https://x"], ["token: t", "username: u", "password: p"]),
      error: /both a token and username\/password; only one authentication method is allowed/,
    },
    {
      name: "CA data that is not base64 PEM",
      text: () => kubeconfig(["server: https://x", "certificate-authority-data: bm9wZQ=="], []),
      error:
        /certificate-authority-data of the cluster .* is not base64-encoded PEM \(decoded it starts "nope"\)/,
    },
    {
      name: "a missing relative client-key file, resolved against the kubeconfig",
      text: () =>
        kubeconfig(["server: https://x"], [
          `client-certificate-data: ${b64(CERT)}`,
          "client-key: keys/missing.key",
        ]),
      error:
        /cannot read client-key \/.*\/keys\/missing\.key: .*; fix the path in --kubeconfig-file/,
    },
    {
      name: "not YAML",
      text: () => "clusters: [\n  - {",
      error: /cannot load --kubeconfig-file .*: it is not valid YAML/,
    },
    {
      name: "wrong types",
      text: () => "clusters: 7\n",
      error: /cannot load --kubeconfig-file .*: clusters: Invalid type/,
    },
  ];
  for (const c of table) {
    await t.step(c.name, async () => {
      await inDir(async (dir) => {
        const file = join(dir, "kubeconfig");
        writeFileSync(file, c.text(dir));
        await assert.rejects(
          () => loadKubeConfig({ kubeconfigFile: file }),
          (e: Error) => e instanceof ConfigError && c.error.test(e.message),
        );
      });
    });
  }
  await t.step("unreadable file", async () => {
    await assert.rejects(
      () => loadKubeConfig({ kubeconfigFile: "/nonexistent/kubeconfig" }),
      (e: Error) =>
        e instanceof ConfigError &&
        /cannot read kubeconfig-file \/nonexistent\/kubeconfig: .*--kubeconfig-file/.test(
          e.message,
        ),
    );
  });
});

Deno.test("loadKubeConfig warns about settings it ignores, and never skips TLS verification", async (t) => {
  const table = [
    {
      cluster: ["server: https://10.0.0.1:6443", "insecure-skip-tls-verify: true"],
      user: [],
      warnings: [
        "insecure-skip-tls-verify is not supported; the server certificate of https://10.0.0.1:6443 is verified against the cluster CA",
      ],
    },
    // plain http has nothing to verify: the fake's kubeconfigs say so for client-node's sake
    {
      cluster: ["server: http://127.0.0.1:1", "insecure-skip-tls-verify: true"],
      user: [],
      warnings: [],
    },
    {
      cluster: ["server: https://x", "tls-server-name: api.internal"],
      user: ["as: admin", "as-groups: [system:masters]"],
      warnings: [
        'tls-server-name of cluster "prod" is not supported and is ignored',
        'as-groups of user "weft" is not supported and is ignored',
      ],
    },
  ];
  for (const c of table) {
    await t.step(
      c.cluster.join(", ") + (c.user.length ? ", " + c.user.join(", ") : ""),
      async () => {
        await inDir(async (dir) => {
          const file = join(dir, "kubeconfig");
          writeFileSync(file, kubeconfig(c.cluster, c.user));
          const warnings: string[] = [];
          await builtin({ kubeconfigFile: file, onWarning: (m) => warnings.push(m) });
          assert.deepEqual(warnings, c.warnings);
        });
      },
    );
  }
});

Deno.test("loadKubeConfig: --kube-api-url replaces the server, or alone means anonymous", async () => {
  await inDir(async (dir) => {
    const file = join(dir, "kubeconfig");
    writeFileSync(file, kubeconfig(["server: https://wrong:6443"], ["token: t"]));
    const over = await builtin({ kubeconfigFile: file, apiUrl: "http://127.0.0.1:8001/" });
    assert.equal(over.server, "http://127.0.0.1:8001");
    assert.deepEqual(await over.headers(), { Authorization: "Bearer t" });
    const alone = await builtin({ apiUrl: "https://api.example:6443" });
    assert.deepEqual([alone.server, alone.source], ["https://api.example:6443", "api-url"]);
    assert.deepEqual(await alone.headers(), {});
    assert.deepEqual(alone.tls, {});
  });
  await assert.rejects(
    () => loadKubeConfig({ env: {} }),
    (e: Error) =>
      e instanceof ConfigError && /KUBERNETES_SERVICE_HOST is unset/.test(e.message) &&
      /--kubeconfig-file nor --kube-api-url/.test(e.message),
  );
});

/** A service account directory under `dir` with the given files. */
function serviceAccount(dir: string, files: Record<string, string>): string {
  const sa = join(dir, SERVICE_ACCOUNT_DIR);
  mkdirSync(sa, { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(sa, name), text);
  return sa;
}

Deno.test("loadKubeConfig in a pod: service address, CA, namespace and token", async (t) => {
  const table = [
    { host: "10.96.0.1", port: "443", server: "https://10.96.0.1:443" },
    { host: "fd00::1", port: "6443", server: "https://[fd00::1]:6443" },
    { host: "10.96.0.1", port: "8080", server: "http://10.96.0.1:8080" },
    { host: "10.96.0.1", port: undefined, server: "https://10.96.0.1:443" },
  ];
  for (const c of table) {
    await t.step(`${c.host} port ${c.port}`, async () => {
      await inDir(async (dir) => {
        serviceAccount(dir, { token: "sa-token\n", "ca.crt": CA, namespace: "kube-flannel\n" });
        const conn = await builtin({
          inClusterPathPrefix: dir,
          env: { KUBERNETES_SERVICE_HOST: c.host, KUBERNETES_SERVICE_PORT: c.port },
        });
        assert.equal(conn.server, c.server);
        assert.equal(conn.source, "in-cluster");
        assert.equal(conn.namespace, "kube-flannel");
        assert.deepEqual(conn.tls, { ca: CA });
        assert.deepEqual(await conn.headers(), { Authorization: "Bearer sa-token" });
      });
    });
  }
  await t.step("the kubeconfig wins over the pod's service account", async () => {
    await inDir(async (dir) => {
      const file = join(dir, "kubeconfig");
      writeFileSync(file, kubeconfig(["server: https://10.0.0.1:6443"], ["token: kc"]));
      const conn = await builtin({
        kubeconfigFile: file,
        env: { KUBERNETES_SERVICE_HOST: "10.96.0.1" },
      });
      assert.equal(conn.server, "https://10.0.0.1:6443");
    });
  });
  await t.step("--kube-api-url with the service account's credentials", async () => {
    await inDir(async (dir) => {
      serviceAccount(dir, { token: "sa-token", "ca.crt": CA });
      const conn = await builtin({
        inClusterPathPrefix: dir,
        apiUrl: "https://192.0.2.10:6443",
        env: { KUBERNETES_SERVICE_HOST: "10.96.0.1" },
      });
      assert.equal(conn.server, "https://192.0.2.10:6443");
      assert.equal(conn.namespace, undefined);
      assert.deepEqual(await conn.headers(), { Authorization: "Bearer sa-token" });
    });
  });
  for (
    const [missing, files] of [
      ["token", { "ca.crt": CA }],
      ["CA", { token: "t" }],
    ] as const
  ) {
    await t.step(`missing ${missing}`, async () => {
      await inDir(async (dir) => {
        serviceAccount(dir, files);
        await assert.rejects(
          () => loadKubeConfig({ inClusterPathPrefix: dir, env: { KUBERNETES_SERVICE_HOST: "h" } }),
          (e: Error) =>
            e instanceof ConfigError &&
            new RegExp(`cannot read service account ${missing}`).test(e.message) &&
            /automountServiceAccountToken/.test(e.message),
        );
      });
    });
  }
});

Deno.test("a token file is re-read once a minute old and on refresh(), keeping the last good one", async () => {
  for (const where of ["in-cluster", "kubeconfig tokenFile"]) {
    await inDir(async (dir) => {
      const clock = new FakeClock();
      const warnings: string[] = [];
      let tokenPath: string;
      let options: KubeConfigOptions;
      if (where === "in-cluster") {
        tokenPath = join(serviceAccount(dir, { token: "t1", "ca.crt": CA }), "token");
        options = { inClusterPathPrefix: dir, env: { KUBERNETES_SERVICE_HOST: "10.96.0.1" } };
      } else {
        tokenPath = join(dir, "token");
        writeFileSync(tokenPath, "t1");
        const file = join(dir, "kubeconfig");
        writeFileSync(file, kubeconfig(["server: https://x"], ["tokenFile: token"]));
        options = { kubeconfigFile: file };
      }
      const conn = await builtin({ ...options, clock, onWarning: (m) => warnings.push(m) });
      const bearer = async () => (await conn.headers()).Authorization;
      assert.equal(await bearer(), "Bearer t1", where);
      writeFileSync(tokenPath, "t2");
      await clock.advance(TOKEN_FILE_MAX_AGE_MS - 1);
      assert.equal(await bearer(), "Bearer t1", `${where}: still fresh`);
      await clock.advance(1);
      assert.equal(await bearer(), "Bearer t2", `${where}: a minute old, re-read`);
      writeFileSync(tokenPath, "t3");
      assert.equal(await conn.refresh(), true, `${where}: a 401 re-reads at once`);
      assert.equal(await bearer(), "Bearer t3");
      assert.equal(await conn.refresh(), false, `${where}: unchanged, no retry`);
      rmSync(tokenPath);
      await clock.advance(TOKEN_FILE_MAX_AGE_MS);
      assert.equal(await bearer(), "Bearer t3", `${where}: unreadable, the last good one`);
      assert.equal(warnings.length, 1);
      assert.match(warnings[0], /cannot read .*token.*; using the token read before/);
    });
  }
});

Deno.test("the client-node loader still reads what the builtin one reads", async () => {
  const { loadKubeConfigWithClientNode } = await import("./client_node.ts");
  await inDir(async (dir) => {
    const file = join(dir, "kubeconfig");
    writeFileSync(
      file,
      kubeconfig(["server: https://10.0.0.1:6443/", `certificate-authority-data: ${b64(CA)}`], [
        "token: abc",
        `client-certificate-data: ${b64(CERT)}`,
        `client-key-data: ${b64(KEY)}`,
      ]),
    );
    const viaBuiltin = await builtin({ kubeconfigFile: file, apiUrl: "https://192.0.2.1:6443" });
    const viaClientNode = await loadKubeConfigWithClientNode({
      kubeconfigFile: file,
      apiUrl: "https://192.0.2.1:6443",
    });
    assert.equal(viaClientNode.loader, "client-node");
    assert.deepEqual(
      [viaClientNode.server, viaClientNode.tls, await viaClientNode.headers()],
      [viaBuiltin.server, viaBuiltin.tls, await viaBuiltin.headers()],
    );
  });
});
