/**
 * The aws-vpc provider against moto, a second EC2 written by others: the
 * route-provider contract runs against it as steps of one test that owns
 * the moto process (started once, reset between steps, stopped in
 * `finally`); so do the cloud route target's contract (the reconcile loop
 * of aws-vpc) and the aws-vpc backend itself. What moto does not reproduce
 * is ignored with the reason —
 * and a step checks that each such gap is still there, so a moto upgrade
 * that closes one fails here and says which test to turn back on.
 */

import assert from "node:assert/strict";
import * as sdk from "@aws-sdk/client-ec2";
import { makeAwsHarness, testEc2Client } from "../../../testing/ec2_world.ts";
import { type Moto, startMoto } from "../../../testing/moto.ts";
import {
  type ProviderGap,
  runRouteProviderContract,
} from "../../../testing/route_provider_contract.ts";
import { RouteProviderError } from "../provider.ts";
import { ThrottleGate } from "../throttle.ts";
import { awsVpcBackend } from "../../routed/aws_vpc.ts";
import { runCloudTargetContract } from "../../../testing/cloud_target_contract.ts";
import { hostContext } from "../../../testing/aws_hosts.ts";
import { FakeClock } from "../../../testing/fake_clock.ts";
import { peerLease } from "../../../testing/routing.ts";

const REGION = "eu-west-3";

/** What moto 5.2.1 lacks (each checked below against the running moto). */
const MOTO_MISSING: Partial<Record<ProviderGap, string>> = {
  limit:
    "moto 5.2.1 has no route limit per table (it accepts 60 routes; EC2's default quota is 50)",
  throttle: "moto 5.2.1 never answers RequestLimitExceeded and has no way to ask it to",
  removeTarget:
    "moto 5.2.1 keeps a route to a deleted network interface 'active' (EC2 marks it 'blackhole')",
  duplicateCreate:
    "moto 5.2.1 accepts CreateRoute over an existing destination when the target is a network " +
    "interface (it skips the RouteAlreadyExists check and replaces the route)",
};

const ALLOW_EC2 = { Effect: "Allow", Action: "ec2:*", Resource: "*" };
const WRITES = ["ec2:CreateRoute", "ec2:ReplaceRoute", "ec2:DeleteRoute"];

let users = 0;

/** A fresh world in a reset moto; the provider signs as an IAM user allowed ec2:*. */
async function motoHarness(moto: Moto) {
  await moto.enforceIam(false);
  await moto.reset();
  const user = `weft-${++users}`;
  const credentials = await moto.iamUser(user, { Version: "2012-10-17", Statement: [ALLOW_EC2] });
  return makeAwsHarness({
    endpoint: moto.endpoint,
    region: REGION,
    credentials,
    faults: () => ({
      async denyWrites() {
        await moto.iam("PutUserPolicy", {
          UserName: user,
          PolicyName: "weft",
          PolicyDocument: JSON.stringify({
            Version: "2012-10-17",
            Statement: [ALLOW_EC2, { Effect: "Deny", Action: WRITES, Resource: "*" }],
          }),
        });
        await moto.enforceIam(true);
        return "ec2:CreateRoute";
      },
    }),
    missing: MOTO_MISSING,
    close: () => moto.enforceIam(false),
  });
}

Deno.test({
  name: "aws-vpc on moto 5.2.1 (a second, independent EC2)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const moto = await startMoto();
    try {
      await t.step("moto's gaps are still gaps (else turn the ignored test back on)", async () => {
        await moto.reset();
        const h = await makeAwsHarness({
          endpoint: moto.endpoint,
          region: REGION,
          faults: () => ({}),
          missing: {},
        });
        try {
          const ec2 = testEc2Client(moto.endpoint, REGION);
          const [mine, peer] = h.targets;
          const route = (dest: string) =>
            ec2.send(new sdk.DescribeRouteTablesCommand({ RouteTableIds: [h.table] }))
              .then((r) => r.RouteTables![0].Routes!.find((x) => x.DestinationCidrBlock === dest));
          // duplicateCreate
          await h.provider.create(h.table, "10.244.1.0/24", mine);
          await h.provider.create(h.table, "10.244.1.0/24", peer);
          assert.equal((await route("10.244.1.0/24"))?.NetworkInterfaceId, peer, "moto replaced");
          // limit: EC2 stops at 50 routes by default
          for (let i = 0; i < 60; i++) {
            await h.provider.create(h.table, `10.245.${i}.0/24`, mine);
          }
          assert.ok((await h.provider.list(h.table)).length > 60, "moto has no route limit");
          // removeTarget
          await ec2.send(new sdk.DeleteNetworkInterfaceCommand({ NetworkInterfaceId: peer }));
          assert.equal((await route("10.244.1.0/24"))?.State, "active", "no blackhole in moto");
          // and why list() filters routes itself: moto's route.state filter is an HTTP 500
          await assert.rejects(
            ec2.send(
              new sdk.DescribeRouteTablesCommand({
                Filters: [{ Name: "route.state", Values: ["blackhole"] }],
              }),
            ),
            (e: { $metadata?: { httpStatusCode?: number } }) => e.$metadata?.httpStatusCode === 500,
          );
        } finally {
          await h.close();
        }
      });

      await runRouteProviderContract(t, () => motoHarness(moto), MOTO_MISSING);
      await runCloudTargetContract(t, () => motoHarness(moto), MOTO_MISSING);

      await t.step(
        "the aws-vpc backend on moto: registers, writes its route, keeps peers'",
        async () => {
          const h = await motoHarness(moto);
          try {
            const clock = new FakeClock();
            const ctx = hostContext({ backend: { Type: "aws-vpc" }, index: 0, clock });
            const backend = awsVpcBackend({
              aws: h.awsOptions,
              gate: new ThrottleGate({ clock }),
              random: () => 0.5,
            });
            await h.provider.create(h.table, "10.5.2.0/24", h.targets[1]); // a peer's
            await h.provider.create(h.table, "10.5.9.0/24", h.targets[1]); // a gone lease's
            const network = await backend.register(ctx);
            assert.deepEqual(ctx.acquired, [{ publicIP: "192.0.2.10" }]);
            assert.equal(network.notReadyReason?.(), null);
            await network.syncPeers([peerLease("10.5.2.0/24", "192.0.2.11")]);
            await clock.advance(200_000); // past the listing period
            await network.syncPeers([peerLease("10.5.2.0/24", "192.0.2.11")]);
            const routes = (await h.provider.list(h.table))
              .filter((r) => r.destination.startsWith("10.5."))
              .map((r) => `${r.destination} ${r.target}`)
              .sort();
            assert.deepEqual(routes, [
              `10.5.1.0/24 ${h.targets[0]}`,
              `10.5.2.0/24 ${h.targets[1]}`,
            ]);
          } finally {
            await h.close();
          }
        },
      );

      await t.step(
        "discover() on moto: subnet table, SourceDestCheck off, another VPC's table refused",
        async () => {
          const h = await motoHarness(moto);
          try {
            const self = await h.provider.discover();
            assert.deepEqual(self.tables, [h.world.table]);
            const ec2 = testEc2Client(moto.endpoint, REGION);
            const eni = await ec2.send(
              new sdk.DescribeNetworkInterfacesCommand({ NetworkInterfaceIds: [self.target] }),
            );
            assert.equal(eni.NetworkInterfaces![0].SourceDestCheck, false);
            const other = h.withOptions({ routeTableIds: h.world.otherVpc.mainTable });
            await assert.rejects(
              other.discover(),
              (e) =>
                e instanceof RouteProviderError && e.kind === "invalid" &&
                e.message.includes(`belongs to VPC ${h.world.otherVpc.vpcId}`),
            );
            const unknown = await h.provider.list("rtb-0000000000000dead").catch((e) => e);
            assert.ok(
              unknown instanceof RouteProviderError && unknown.kind === "invalid",
              `${unknown}`,
            );
          } finally {
            await h.close();
          }
        },
      );

      await t.step("moto's IAM denial (AccessDenied) names the action too", async () => {
        const h = await motoHarness(moto);
        try {
          await h.faults.denyWrites!();
          const e = await h.provider.remove(h.table, "10.244.9.0/24").catch((x) => x);
          assert.ok(e instanceof RouteProviderError, `${e}`);
          assert.equal(e.kind, "denied");
          assert.match(e.message, /^ec2:DeleteRoute was denied on rtb-[0-9a-f]+ \(AccessDenied\)/);
        } finally {
          await h.close();
        }
      });
    } finally {
      await moto.stop();
    }
  },
});
