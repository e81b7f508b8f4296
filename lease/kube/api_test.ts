import assert from "node:assert/strict";
import http2 from "node:http2";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ApiCallError, createKubeApi } from "./api.ts";
import { nullLogger } from "../../core/log.ts";
import { makeTestCerts, writeKubeconfig } from "../../testing/fake_kube.ts";

Deno.test("ApiCallError is unreachable when no server answered (code 0), unless told otherwise", () => {
  assert.equal(new ApiCallError("cannot reach the Kubernetes API", 0).unreachable, true);
  assert.equal(new ApiCallError("watching nodes: 503", 503).unreachable, false);
  assert.equal(new ApiCallError("watching nodes: 429", 429).unreachable, false);
  assert.equal(
    new ApiCallError("cannot produce the credentials", 0, { unreachable: false }).unreachable,
    false,
  );
});

Deno.test("the Kubernetes client speaks HTTP/1.1 over TLS even when the server offers HTTP/2", async () => {
  // over HTTP/2 Deno's fetch stalls on Nagle between the pages of a list (see api.ts)
  const certs = makeTestCerts("127.0.0.1");
  const versions: string[] = [];
  const server = http2.createSecureServer(
    { cert: certs.cert, key: certs.key, allowHTTP1: true },
    (req, res) => {
      versions.push(req.httpVersion);
      res.setHeader("content-type", "application/json");
      res.end('{"kind":"NodeList","apiVersion":"v1","metadata":{},"items":[]}');
    },
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const dir = mkdtempSync(join(tmpdir(), "weft-kube-api-"));
  try {
    const port = (server.address() as { port: number }).port;
    const kubeconfig = writeKubeconfig(dir, { url: `https://127.0.0.1:${port}` }, {
      token: "t",
      ca: certs.ca,
    });
    const api = createKubeApi({ kubeconfigFile: kubeconfig, env: {}, logger: nullLogger });
    const c = await api.client();
    const list = await api.request(c, "GET", "/api/v1/nodes?limit=500", "listing nodes");
    assert.equal((list as { kind: string }).kind, "NodeList");
    assert.deepEqual(versions, ["1.1"], "the HTTP versions the server saw");
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
    rmSync(dir, { recursive: true, force: true });
  }
});
