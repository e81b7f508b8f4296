/**
 * Lease churn (issue 13, item 3): 100 lease changes per second for 2
 * minutes against three agents, per backend; see test/lab/churn.ts.
 * `deno task bench churn` runs the same for 5 minutes.
 *
 * @module
 */
import { churn } from "./lab/churn.ts";

/** CI's share of the 5 minutes (CI has 90 minutes for everything). */
const CI_CHURN_MS = 120_000;

for (const backend of ["vxlan", "host-gw"] as const) {
  Deno.test(`churn: 100 lease changes/s for 2 min against three ${backend} agents end with the kernel equal to etcd, no event lost, no ping lost`, async () => {
    const f = await churn({ backend, durationMs: CI_CHURN_MS, rate: 100 });
    console.log(`churn figures (${backend}):`, JSON.stringify(f));
  });
}
