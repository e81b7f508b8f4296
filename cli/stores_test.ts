import assert from "node:assert/strict";
import { parseFlags } from "./flags.ts";
import { chooseStore, kubeEnvironment } from "./stores.ts";

Deno.test("chooseStore() uses etcd at flannel's default endpoints when nothing else is said", () => {
  const none = (_path: string) => false;
  const pick = (argv: string[], env: Record<string, string> = {}, exists = none) =>
    chooseStore(parseFlags(argv, env), exists).kind;
  // a flannel unit relying on the default endpoints (a local etcd member) stays in its cluster
  assert.equal(pick([]), "etcd");
  assert.match(chooseStore(parseFlags([], {}), none).why, /flannel's default endpoints/);
  assert.equal(pick(["--etcd-endpoints=http://10.0.0.1:2379"]), "etcd");
  assert.equal(pick([], { FLANNELD_ETCD_ENDPOINTS: "10.0.0.1:2379" }), "etcd");
  assert.equal(pick(["--kube-subnet-mgr", "--etcd-endpoints=http://a:1"]), "kube");
  // the embedded file store only when asked for, or when it already holds this host's lease
  assert.equal(pick(["--lease-file=/tmp/l.json"]), "file");
  assert.equal(pick([], { FLANNELD_LEASE_FILE: "/tmp/l.json" }), "file");
  assert.equal(pick([], {}, (p) => p === "/var/lib/weft/leases.json"), "file");
  assert.match(
    chooseStore(parseFlags([], {}), (p) => p === "/var/lib/weft/leases.json").why,
    /\/var\/lib\/weft\/leases\.json exists/,
  );
  assert.equal(pick(["--etcd-endpoints=http://a:1"], {}, () => true), "etcd");
});

Deno.test("kubeEnvironment() checks EVENT_QUEUE_DEPTH as flannel does and explains both variables", () => {
  assert.deepEqual(kubeEnvironment({}), { notes: [] });
  const stock = kubeEnvironment({ EVENT_QUEUE_DEPTH: "5000", CONT_WHEN_CACHE_NOT_READY: "false" });
  assert.equal(stock.error, undefined);
  assert.equal(stock.notes.length, 2);
  assert.match(stock.notes[0], /^EVENT_QUEUE_DEPTH=5000 is not needed/);
  assert.match(stock.notes[1], /^CONT_WHEN_CACHE_NOT_READY=false is not needed.*no sync timeout/);
  const bad = kubeEnvironment({ EVENT_QUEUE_DEPTH: "5k" });
  assert.match(bad.error!, /EVENT_QUEUE_DEPTH must be an integer.*"5k"/);
});
