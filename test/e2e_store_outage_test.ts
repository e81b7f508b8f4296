/**
 * Store outages under running agents (issue 13, item 1): see
 * test/lab/store_outages.ts for the scenarios and what each promises.
 *
 * @module
 */
import { etcdMemberLoss, etcdOutage } from "./lab/store_outages.ts";
import { kubeOutage } from "./lab/kube_outage.ts";
import { compactionUnderLoad } from "./lab/churn.ts";

Deno.test("store outage: etcd killed for 20 s loses no ping, keeps the datapath, and a host joining on its return is routed on every peer within 2 s", async () => {
  const f = await etcdOutage({ downMs: 20_000 });
  console.log("etcd outage figures:", JSON.stringify(f));
});

Deno.test("store outage: a 3-member etcd losing the agents' member, then the leader: agents fail over, keep renewing, follow changes, no subnet twice", async () => {
  const f = await etcdMemberLoss();
  console.log("etcd member loss figures:", JSON.stringify(f));
});

Deno.test("store outage: the Kubernetes API server down 20 s loses no ping, keeps the datapath, and a node appearing on its return is routed on every peer within 2 s", async () => {
  const f = await kubeOutage({ downMs: 20_000 });
  console.log("kube outage figures:", JSON.stringify(f));
});

Deno.test("store outage: etcd compacted every 500 ms under 100 lease changes/s while hosts lose it in turn: the agents re-list and miss no change", async () => {
  const f = await compactionUnderLoad({ durationMs: 30_000 });
  console.log("compaction under load figures:", JSON.stringify(f));
});
