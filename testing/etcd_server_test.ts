import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { createFetch } from "../core/runtime.ts";
import { startEtcd } from "./etcd_server.ts";

Deno.test("startEtcd() gives a healthy etcd that keeps its data and ports across restart and is removed on close", async () => {
  const etcd = await startEtcd();
  const dir = etcd.dir;
  try {
    const endpoint = etcd.endpoint;
    assert.match(endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
    await etcd.etcdctl(["put", "/k", "v1"]);
    await etcd.etcdctl(["put", "/k", "v2"]);
    const rev = await etcd.revision();
    assert.ok(rev >= 3, String(rev));
    const pid = etcd.pid;
    await etcd.restart();
    assert.notEqual(etcd.pid, pid);
    assert.equal(etcd.endpoint, endpoint);
    assert.equal(await etcd.etcdctl(["get", "--print-value-only", "/k"]), "v2\n");
    await etcd.compact(rev);
    await assert.rejects(
      () => etcd.etcdctl(["get", "--rev", String(rev - 1), "/k"]),
      /required revision has been compacted/,
    );
    await etcd.stop();
    assert.equal(etcd.pid, undefined);
    await assert.rejects(() => fetch(`${endpoint}/health`).then((r) => r.text()));
  } finally {
    await etcd.close();
  }
  assert.equal(existsSync(dir), false, "temp dir removed");
  await etcd.close(); // twice is fine
});

Deno.test("startEtcd({ tls, auth }) requires the client certificate and the password", async () => {
  await using etcd = await startEtcd({ tls: true, auth: { username: "weft", password: "pw" } });
  assert.match(etcd.endpoint, /^https:/);
  assert.ok(etcd.tls && existsSync(etcd.tls.certFile) && existsSync(etcd.tls.keyFile));
  // etcdctl() passes root's credentials and the certificate
  assert.match(await etcd.etcdctl(["user", "get", "weft"]), /Roles: weft-rw/);
  const pem = (f: string) => readFileSync(f, "utf8");
  const tlsFetch = createFetch({
    ca: pem(etcd.tls.caFile),
    cert: pem(etcd.tls.certFile),
    key: pem(etcd.tls.keyFile),
  });
  const r = await tlsFetch(`${etcd.endpoint}/v3/kv/range`, {
    method: "POST",
    body: '{"key":"Lw=="}',
  });
  assert.match(await r.text(), /user name is empty/, "auth is on: no token, no answer");
  // without a client certificate the TLS handshake fails
  await assert.rejects(() => fetch(`${etcd.endpoint}/health`).then((r) => r.text()));
});
