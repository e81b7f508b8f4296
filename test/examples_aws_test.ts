/**
 * examples/aws/ says what the code does: the IAM policy lists exactly the
 * actions the aws-vpc provider calls, the network configs parse as the
 * backends read them, and the cloud-init file is valid cloud-config.
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import { fileURLToPath } from "node:url";
import { systemExec } from "../core/exec.ts";
import { parseNetworkConfig } from "../lease/config.ts";
import { AWS_IAM_ACTIONS, parseRouteTableIds } from "../backends/cloud/aws/provider.ts";
import { parseCloudRouteOptions } from "../backends/routed/cloud.ts";
import { parseVxlanConfig } from "../backends/routed/vxlan.ts";

const example = (name: string) =>
  fileURLToPath(new URL(`../examples/aws/${name}`, import.meta.url));
const read = (name: string) => fs.readFileSync(example(name), "utf8");

Deno.test("examples/aws/iam-policy.json allows exactly the EC2 actions aws-vpc calls", () => {
  const policy = JSON.parse(read("iam-policy.json"));
  const actions = policy.Statement.flatMap((s: { Effect: string; Action: string[] }) => {
    assert.equal(s.Effect, "Allow");
    return s.Action;
  });
  assert.deepEqual([...actions].sort(), [...AWS_IAM_ACTIONS].sort());
});

Deno.test("examples/aws/net-conf.json is an aws-vpc config the backend reads", () => {
  const config = parseNetworkConfig(read("net-conf.json"));
  assert.equal(config.backendType, "aws-vpc");
  const options = parseCloudRouteOptions(config.backend, "Backend");
  assert.deepEqual(parseRouteTableIds(options.routeTableIds), ["rtb-0123456789abcdef0"]);
});

Deno.test("examples/aws/net-conf-hybrid.json is a vxlan config with CloudRoutes", () => {
  const config = parseNetworkConfig(read("net-conf-hybrid.json"));
  assert.equal(config.backendType, "vxlan");
  const vxlan = parseVxlanConfig(config);
  assert.equal(vxlan.vni, 1);
  const cloud = vxlan.cloudRoutes as Record<string, unknown>;
  assert.equal(cloud.Type, "aws-vpc");
  const options = parseCloudRouteOptions(cloud, "Backend.CloudRoutes");
  assert.deepEqual(parseRouteTableIds(options.routeTableIds), ["rtb-0123456789abcdef0"]);
});

Deno.test("examples/aws/cloud-init.yaml is valid cloud-config (cloud-init schema)", async () => {
  const r = await systemExec("cloud-init", ["schema", "--config-file", example("cloud-init.yaml")]);
  assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /Valid cloud-config/);
  const text = read("cloud-init.yaml");
  assert.match(text, /weft --ip-masq/);
  assert.match(text, /"Type":"aws-vpc"/);
});
