/**
 * A VPC for the netns lab: the EC2 fake and the IMDS fake as a process in
 * the lab's underlay namespace (the router), plus a test-only loop that
 * makes the underlay play the VPC router (`lab_route_mirror.ts`) — it mirrors
 * the fake's route table into the underlay's routing table: a route
 * `subnet → ENI` becomes `ip route replace subnet via <that host's underlay
 * IP> proto 99`, a blackhole becomes `blackhole subnet`, and a route that is
 * gone is deleted. Only routes inside `--network` and only its own
 * (`proto 99`) are touched.
 *
 * The process builds the world (a VPC, a subnet with its own route table,
 * one network interface per host, each host an instance in the metadata
 * fake), prints one JSON line `{"msg":"fake vpc listening",…}` with the
 * endpoints and ids, and answers control requests on `--hostname`:`port`
 * (`POST /` with `{"op":"routes"|"mirror"|"calls"}`). It stops on SIGTERM.
 *
 * Run: `deno run -A testing/aws_lab_main.ts --hostname 192.0.2.1 --network
 * 10.5.0.0/16 --hosts 192.0.2.11,198.51.100.12,…`. In tests use
 * {@link startLabVpc}: the test process lives in the machine's own
 * namespace, so control requests go through `curl` inside the underlay.
 *
 * @module
 */

import process from "node:process";
import { fileURLToPath } from "node:url";
import * as sdk from "@aws-sdk/client-ec2";
import { containsIPv4Net, parseIPv4Net } from "../core/ip.ts";
import { execPath, runtimeName, serveHttp } from "../core/runtime.ts";
import { buildEc2World, TEST_CREDENTIALS, testEc2Client } from "./ec2_world.ts";
import { createFakeEc2 } from "./fake_ec2.ts";
import { createFakeImds } from "./fake_imds.ts";
import { startRouteMirror } from "./lab_route_mirror.ts";
import type { Lab, LabHost, LabProcess } from "../test/lab/lab.ts";
import { REPO_ROOT } from "../test/lab/lab.ts";

export { MIRROR_PROTO } from "./lab_route_mirror.ts";
const REGION = "eu-west-3";

/** What the process prints once it listens. */
export interface VpcInfo {
  readonly msg: "fake vpc listening";
  readonly region: string;
  readonly ec2: string;
  readonly imds: string;
  readonly control: string;
  readonly vpcId: string;
  readonly table: string;
  /** Per host (in `--hosts` order): its instance and network interface. */
  readonly instances: readonly { ip: string; instanceId: string; eni: string }[];
}

/** The underlay routes a table's routes become (pure): `dest` → `via IP` or `blackhole`. */
export function mirrorOf(
  routes: readonly { destination: string; networkInterfaceId?: string; state: string }[],
  network: string,
  ipOfEni: ReadonlyMap<string, string>,
): Map<string, string> {
  const net = parseIPv4Net(network);
  const out = new Map<string, string>();
  for (const r of routes) {
    if (r.destination.includes(":") || !r.networkInterfaceId) continue;
    if (!containsIPv4Net(net, parseIPv4Net(r.destination))) continue;
    const ip = ipOfEni.get(r.networkInterfaceId);
    out.set(r.destination, r.state === "blackhole" || !ip ? "blackhole" : `via ${ip}`);
  }
  return out;
}

async function serverMain(argv: string[]): Promise<void> {
  const flag = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    if (i < 0 || i + 1 >= argv.length) throw new TypeError(`aws_lab_main: --${name} is required`);
    return argv[i + 1];
  };
  const hostname = flag("hostname");
  const network = flag("network");
  const hostIps = flag("hosts").split(",");
  const ec2 = await createFakeEc2({ region: REGION, hostname });
  const client = testEc2Client(ec2.endpoint, REGION);
  const world = await buildEc2World(client);
  const instances: { ip: string; instanceId: string; eni: string; mac: string }[] = [];
  for (const [i, ip] of hostIps.entries()) {
    const r = await client.send(
      new sdk.CreateNetworkInterfaceCommand({ SubnetId: world.subnetId }),
    );
    const nic = r.NetworkInterface!;
    instances.push({
      ip,
      instanceId: `i-${(i + 1).toString(16).padStart(17, "0")}`,
      eni: nic.NetworkInterfaceId!,
      mac: nic.MacAddress!,
    });
  }
  const imds = await createFakeImds({
    hostname,
    instances: instances.map((x) => ({
      instanceId: x.instanceId,
      region: REGION,
      interfaces: [{
        mac: x.mac,
        interfaceId: x.eni,
        subnetId: world.subnetId,
        vpcId: world.vpcId,
        vpcCidrs: [world.vpcCidr],
        privateIp: x.ip,
      }],
    })),
  });
  const ipOfEni = new Map(instances.map((x) => [x.eni, x.ip]));

  // the VPC router: mirror the table into this namespace's routing table
  const mirror = startRouteMirror(() =>
    mirrorOf(ec2.routeTable(world.table)!.routes, network, ipOfEni)
  );

  const control = await serveHttp({
    hostname,
    port: 0,
    fetch: async (req) => {
      const body = await req.json().catch(() => ({})) as { op?: string };
      switch (body.op) {
        case "routes":
          return Response.json(
            Object.fromEntries(
              ec2.routeTable(world.table)!.routes.map((r) => [
                r.destination,
                r.state === "blackhole" ? "blackhole" : (r.networkInterfaceId ?? r.gatewayId),
              ]),
            ),
          );
        case "mirror":
          return Response.json(Object.fromEntries(mirror.installed()));
        case "calls":
          return Response.json(
            Object.fromEntries(
              ["DescribeRouteTables", "CreateRoute", "ReplaceRoute", "DeleteRoute"]
                .map((a) => [a, ec2.calls(a)]),
            ),
          );
        default:
          return Response.json({ error: `unknown op ${body.op}` }, { status: 400 });
      }
    },
  });
  const info: VpcInfo = {
    msg: "fake vpc listening",
    region: REGION,
    ec2: ec2.endpoint,
    imds: imds.endpoint,
    control: `http://${hostname}:${control.port}/`,
    vpcId: world.vpcId,
    table: world.table,
    instances: instances.map(({ ip, instanceId, eni }) => ({ ip, instanceId, eni })),
  };
  console.log(JSON.stringify(info));
  const stop = async () => {
    await mirror.stop();
    await Promise.all([ec2.close(), imds.close(), control.shutdown()]).catch(() => {});
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

/** A fake VPC running in a lab's underlay. */
export interface LabVpc {
  readonly info: VpcInfo;
  readonly process: LabProcess;
  /** The environment an agent on `host` needs (endpoints, its instance, credentials). */
  envFor(host: LabHost): Record<string, string>;
  /** The network interface of `host`. */
  eniOf(host: LabHost): string;
  /** The route table now: destination → ENI, gateway or `blackhole`. */
  routes(): Promise<Record<string, string>>;
  /** What the mirror installed in the underlay: destination → `via IP` or `blackhole`. */
  mirror(): Promise<Record<string, string>>;
  /** Route-table calls answered so far, by action. */
  calls(): Promise<Record<string, number>>;
  stop(): Promise<number>;
}

/**
 * Start the fake VPC in the lab's underlay namespace (at
 * `lab.underlay.serviceIP`; use a `router` underlay so it can forward).
 *
 * @param lab The lab.
 * @param options The hosts that are EC2 instances, and the cluster network.
 * @returns The running VPC and its client.
 * @throws {Error} When it does not come up within 30 s.
 */
export async function startLabVpc(
  lab: Lab,
  options: { hosts: readonly LabHost[]; network: string },
): Promise<LabVpc> {
  const self = fileURLToPath(import.meta.url);
  const args = [
    self,
    "--hostname",
    lab.underlay.serviceIP,
    "--network",
    options.network,
    "--hosts",
    options.hosts.map((h) => h.ip).join(","),
  ];
  const proc = lab.spawn(
    lab.underlay.ns,
    execPath(),
    runtimeName === "deno" ? ["run", "-A", ...args] : args,
    { cwd: REPO_ROOT },
  );
  const m = await proc.waitForOutput(/\{"msg":"fake vpc listening".*\}/, 30_000);
  const info = JSON.parse(m[0]) as VpcInfo;
  const instanceOf = (host: LabHost) => {
    const found = info.instances.find((x) => x.ip === host.ip);
    if (!found) throw new Error(`host ${host.ns} (${host.ip}) is not an instance of the fake VPC`);
    return found;
  };
  const control = async (op: string) => {
    const r = await lab.exec(lab.underlay.ns, [
      "curl",
      "-sS",
      "--max-time",
      "10",
      "--data-binary",
      JSON.stringify({ op }),
      info.control,
    ]);
    try {
      return JSON.parse(r.stdout);
    } catch {
      throw new Error(
        `fake VPC control ${op} failed (curl exit ${r.code}): ${r.stderr || r.stdout}`,
      );
    }
  };
  return {
    info,
    process: proc,
    envFor: (host) => ({
      AWS_ENDPOINT_URL_EC2: info.ec2,
      AWS_EC2_METADATA_SERVICE_ENDPOINT: `${info.imds}/${instanceOf(host).instanceId}`,
      AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
    }),
    eniOf: (host) => instanceOf(host).eni,
    routes: () => control("routes"),
    mirror: () => control("mirror"),
    calls: () => control("calls"),
    stop: () => proc.stop(),
  };
}

if (import.meta.main) await serverMain(process.argv.slice(2));
