/**
 * Partitions (issue 13, item 2): one host cut from etcd, or from its
 * peers, for twice a short lease TTL; see test/lab/partitions.ts.
 *
 * @module
 */
import { cutFromPeers, cutFromStore } from "./lab/partitions.ts";

Deno.test("partition: a host cut from etcd past its lease TTL is dropped by its peers, then takes the same subnet again and is routed within 10 s of the heal", async () => {
  const f = await cutFromStore();
  console.log("partition from etcd figures:", JSON.stringify(f));
});

Deno.test("partition: a host cut from its peers but not from etcd keeps its lease and every route", async () => {
  const f = await cutFromPeers();
  console.log("partition from peers figures:", JSON.stringify(f));
});
