/**
 * examples/gce/ says what the code does: the IAM role lists exactly the
 * permissions the gce provider needs, the network configs parse as the
 * backends read them, and the cloud-init file is valid cloud-config.
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import { fileURLToPath } from "node:url";
import { load as loadYaml } from "js-yaml";
import { systemExec } from "../core/exec.ts";
import { parseNetworkConfig } from "../lease/config.ts";
import { COMPUTE_SCOPE, REQUIRED_PERMISSIONS } from "../backends/cloud/gce/errors.ts";
import { parseCloudRouteOptions } from "../backends/routed/cloud.ts";
import { parseVxlanConfig } from "../backends/routed/vxlan.ts";

const example = (name: string) =>
  fileURLToPath(new URL(`../examples/gce/${name}`, import.meta.url));
const read = (name: string) => fs.readFileSync(example(name), "utf8");

Deno.test("examples/gce/iam-role.yaml grants exactly the permissions gce needs; the scope is compute", () => {
  const role = loadYaml(read("iam-role.yaml")) as { includedPermissions: string[]; stage: string };
  assert.deepEqual([...role.includedPermissions].sort(), [...REQUIRED_PERMISSIONS].sort());
  assert.equal(role.stage, "GA");
  assert.equal(COMPUTE_SCOPE, "https://www.googleapis.com/auth/compute");
  assert.match(read("iam-role.yaml"), /--scopes=compute-rw/);
  assert.match(read("iam-role.yaml"), /--can-ip-forward/);
});

Deno.test("examples/gce/net-conf.json is a gce config the backend reads", () => {
  const config = parseNetworkConfig(read("net-conf.json"));
  assert.equal(config.backendType, "gce");
  const options = parseCloudRouteOptions(config.backend, "Backend");
  assert.equal(options.routeTableIds, undefined, "gce takes no RouteTableID");
  assert.equal(options.listIntervalMs, 120_000);
});

Deno.test("examples/gce/net-conf-hybrid.json is a vxlan config with CloudRoutes gce", () => {
  const config = parseNetworkConfig(read("net-conf-hybrid.json"));
  assert.equal(config.backendType, "vxlan");
  const vxlan = parseVxlanConfig(config);
  assert.equal(vxlan.vni, 1);
  const cloud = vxlan.cloudRoutes as Record<string, unknown>;
  assert.equal(cloud.Type, "gce");
  assert.equal(parseCloudRouteOptions(cloud, "Backend.CloudRoutes").routeTableIds, undefined);
});

Deno.test("examples/gce/cloud-init.yaml is valid cloud-config (cloud-init schema)", async () => {
  const r = await systemExec("cloud-init", ["schema", "--config-file", example("cloud-init.yaml")]);
  assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /Valid cloud-config/);
  const text = read("cloud-init.yaml");
  assert.match(text, /weft --ip-masq/);
  assert.match(text, /"Type":"gce"/);
  assert.match(text, /--can-ip-forward/);
});
