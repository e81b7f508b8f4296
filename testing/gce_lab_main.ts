/**
 * A GCE project for the netns lab: the GCE fake (Compute API and one
 * metadata server per VM) as a process in the lab's underlay namespace (the
 * router), which also plays the VPC router (`lab_route_mirror.ts`): each of
 * the fake's routes inside `--network` with an instance next hop becomes
 * `destRange via <that instance's underlay IP>`; a route whose instance is
 * gone becomes a blackhole; a deleted route leaves.
 *
 * The process makes one VM per `--hosts` address (`node-1`, … in
 * europe-west1-b, network `default`), prints one JSON line `{"msg":"fake gce
 * listening",…}` with the endpoints, and answers control requests on
 * `--hostname` (`POST /` with `{"op":"routes"|"mirror"|"calls"}`). It stops
 * on SIGTERM. Operation delays: `--pending-ms`, `--running-ms` (default
 * 200 and 800: GCE's route operations take seconds; the lab keeps them
 * short but not instant, so agents really wait for DONE).
 *
 * In tests use {@link startLabGce}.
 *
 * @module
 */

import process from "node:process";
import { fileURLToPath } from "node:url";
import { containsIPv4Net, parseIPv4Net } from "../core/ip.ts";
import { execPath, runtimeName, serveHttp } from "../core/runtime.ts";
import { addForeignRoutes } from "./gce_world.ts";
import { startFakeGce } from "./fake_gce.ts";
import { startRouteMirror } from "./lab_route_mirror.ts";
import type { Lab, LabHost, LabProcess } from "../test/lab/lab.ts";
import { REPO_ROOT } from "../test/lab/lab.ts";

/** What the process prints once it listens. */
export interface GceLabInfo {
  readonly msg: "fake gce listening";
  readonly compute: string;
  readonly control: string;
  readonly network: string;
  /** Per host (in `--hosts` order): its VM and metadata server. */
  readonly vms: readonly { ip: string; instanceLink: string; metadataHost: string }[];
}

/** A route as the mirror reads it from the fake. */
export interface GceRouteView {
  readonly destRange?: string;
  readonly nextHopInstance?: string;
  readonly warnings?: readonly { code?: string }[];
}

/** The underlay routes the fake's routes become (pure): `dest` → `via IP` or `blackhole`. */
export function gceMirrorOf(
  routes: readonly GceRouteView[],
  network: string,
  ipOfInstance: (link: string) => string | undefined,
): Map<string, string> {
  const net = parseIPv4Net(network);
  const out = new Map<string, string>();
  for (const r of routes) {
    if (!r.destRange || !r.nextHopInstance || r.destRange.includes(":")) continue;
    if (!containsIPv4Net(net, parseIPv4Net(r.destRange))) continue;
    const gone = (r.warnings ?? []).some((w) => w.code === "NEXT_HOP_INSTANCE_NOT_FOUND");
    const ip = ipOfInstance(r.nextHopInstance);
    out.set(r.destRange, gone || !ip ? "blackhole" : `via ${ip}`);
  }
  return out;
}

async function serverMain(argv: string[]): Promise<void> {
  const flag = (name: string, fallback?: string) => {
    const i = argv.indexOf(`--${name}`);
    if (i < 0 || i + 1 >= argv.length) {
      if (fallback !== undefined) return fallback;
      throw new TypeError(`gce_lab_main: --${name} is required`);
    }
    return argv[i + 1];
  };
  const hostname = flag("hostname");
  const network = flag("network");
  const hostIps = flag("hosts").split(",");
  const fake = await startFakeGce({
    listen: hostname,
    pendingMs: Number(flag("pending-ms", "200")),
    runningMs: Number(flag("running-ms", "800")),
  });
  addForeignRoutes(fake);
  const vms = [];
  for (const [i, ip] of hostIps.entries()) {
    const vm = await fake.addVm({ zone: "europe-west1-b", name: `node-${i + 1}`, ip });
    vms.push({ ip, instanceLink: vm.instanceLink, metadataHost: vm.metadataHost });
  }
  const mirror = startRouteMirror(() =>
    gceMirrorOf(fake.routes(), network, (link) => fake.instanceIP(link))
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
              fake.routes().map((r) => [
                r.destRange,
                r.nextHopInstance ?? r.nextHopGateway ?? r.nextHopNetwork ?? r.nextHopIp,
              ]),
            ),
          );
        case "mirror":
          return Response.json(Object.fromEntries(mirror.installed()));
        case "calls":
          return Response.json(fake.calls);
        default:
          return Response.json({ error: `unknown op ${body.op}` }, { status: 400 });
      }
    },
  });
  const info: GceLabInfo = {
    msg: "fake gce listening",
    compute: fake.computeEndpoint,
    control: `http://${hostname}:${control.port}/`,
    network: fake.networkLink,
    vms,
  };
  console.log(JSON.stringify(info));
  const stop = async () => {
    await mirror.stop();
    await Promise.all([fake.close(), control.shutdown()]).catch(() => {});
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

/** A fake GCE project running in a lab's underlay. */
export interface LabGce {
  readonly info: GceLabInfo;
  readonly process: LabProcess;
  /** The environment an agent on `host` needs (its metadata server, the Compute endpoint). */
  envFor(host: LabHost): Record<string, string>;
  /** The selfLink of `host`'s VM. */
  instanceOf(host: LabHost): string;
  /** The project's routes now: destRange → next hop. */
  routes(): Promise<Record<string, string>>;
  /** What the mirror installed in the underlay: destination → `via IP` or `blackhole`. */
  mirror(): Promise<Record<string, string>>;
  /** API and metadata calls answered so far, by method. */
  calls(): Promise<Record<string, number>>;
  stop(): Promise<number>;
}

/**
 * Start the fake GCE in the lab's underlay namespace (at
 * `lab.underlay.serviceIP`; use a `router` underlay so it can forward).
 *
 * @param lab The lab.
 * @param options The hosts that are VMs, and the cluster network.
 * @returns The running fake and its client.
 * @throws {Error} When it does not come up within 30 s.
 */
export async function startLabGce(
  lab: Lab,
  options: { hosts: readonly LabHost[]; network: string },
): Promise<LabGce> {
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
  const m = await proc.waitForOutput(/\{"msg":"fake gce listening".*\}/, 30_000);
  const info = JSON.parse(m[0]) as GceLabInfo;
  const vmOf = (host: LabHost) => {
    const found = info.vms.find((x) => x.ip === host.ip);
    if (!found) throw new Error(`host ${host.ns} (${host.ip}) is not a VM of the fake GCE`);
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
        `fake GCE control ${op} failed (curl exit ${r.code}): ${r.stderr || r.stdout}`,
      );
    }
  };
  return {
    info,
    process: proc,
    envFor: (host) => ({
      GCE_METADATA_HOST: vmOf(host).metadataHost,
      CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: info.compute,
    }),
    instanceOf: (host) => vmOf(host).instanceLink,
    routes: () => control("routes"),
    mirror: () => control("mirror"),
    calls: () => control("calls"),
    stop: () => proc.stop(),
  };
}

if (import.meta.main) await serverMain(process.argv.slice(2));
