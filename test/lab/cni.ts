/**
 * Wire lab pods with the real CNI `bridge` + `host-local` plugins
 * (Debian's containernetworking-plugins in /usr/lib/cni), configured from
 * weft's subnet.env exactly the way flannel's CNI plugin (`type: flannel`)
 * maps it for its delegate:
 *
 * | delegate key  | value (unless the conf's `delegate` sets it)          |
 * |---------------|-------------------------------------------------------|
 * | `name`        | the network name (kube-flannel: `cbr0`)               |
 * | `type`        | `bridge`                                              |
 * | `ipMasq`      | `!FLANNEL_IPMASQ` (masquerade here only if weft does not) |
 * | `mtu`         | `FLANNEL_MTU`                                         |
 * | `isGateway`   | `true` (for `bridge`)                                 |
 * | `cniVersion`  | the conf's `cniVersion`                               |
 * | `ipam.type`   | `host-local`                                          |
 * | `ipam.ranges` | `[[{subnet: FLANNEL_SUBNET's network}]]` (+ IPv6 range) |
 * | `ipam.routes` | conf routes + `{dst: FLANNEL_NETWORK}` (+ IPv6 network) |
 *
 * The default delegate extras are kube-flannel.yml's
 * (`hairpinMode: true, isDefaultGateway: true`); the bridge is the
 * plugin's default `cni0`, the same bridge `weft attach` uses — do not mix
 * both on one host, their address books are separate.
 *
 * @module
 */

import { formatIPv4Net, formatIPv6Net } from "../../core/ip.ts";
import { parseSubnetEnv, type SubnetEnv } from "../../lease/subnet_env.ts";
import { CommandError, netnsExec } from "../../core/exec.ts";
import * as fs from "node:fs";

/** Debian's plugin directory. */
export const CNI_PATH = "/usr/lib/cni";

/** kube-flannel.yml's delegate settings. */
export const KUBE_FLANNEL_DELEGATE: Readonly<Record<string, unknown>> = {
  hairpinMode: true,
  isDefaultGateway: true,
};

/** Options of {@link flannelDelegateConfig}. */
export interface DelegateOptions {
  /** Network name (default `cbr0`). */
  readonly name?: string;
  /** CNI version (default `0.3.1`, kube-flannel's). */
  readonly cniVersion?: string;
  /** The conf's `delegate` object (default {@link KUBE_FLANNEL_DELEGATE}). */
  readonly delegate?: Readonly<Record<string, unknown>>;
  /** The conf's `ipam` object (e.g. `{ dataDir }`); its routes are kept. */
  readonly ipam?: Readonly<Record<string, unknown>>;
}

/**
 * The delegate network configuration flannel's CNI plugin builds from
 * subnet.env (see the module note).
 *
 * @param env Parsed subnet.env.
 * @param options Name, version, delegate and ipam from the flannel conf.
 * @returns The JSON object handed to the `bridge` plugin.
 */
export function flannelDelegateConfig(
  env: Partial<SubnetEnv>,
  options: DelegateOptions = {},
): Record<string, unknown> {
  const d: Record<string, unknown> = { ...(options.delegate ?? KUBE_FLANNEL_DELEGATE) };
  const name = options.name ?? "cbr0";
  d.name = name;
  if (!("type" in d)) d.type = "bridge";
  if (!("ipMasq" in d)) d.ipMasq = !env.ipMasq;
  if (!("mtu" in d) && env.mtu !== undefined) d.mtu = env.mtu;
  if (d.type === "bridge" && !("isGateway" in d)) d.isGateway = true;
  d.cniVersion = options.cniVersion ?? "0.3.1";
  const ipam: Record<string, unknown> = { ...(options.ipam ?? {}) };
  if (!("type" in ipam)) ipam.type = "host-local";
  const ranges: { subnet: string }[][] = [];
  if (env.subnet) ranges.push([{ subnet: formatIPv4Net(env.subnet) }]);
  if (env.ipv6Subnet) ranges.push([{ subnet: formatIPv6Net(env.ipv6Subnet) }]);
  ipam.ranges = ranges;
  const routes = [...((options.ipam?.routes as { dst: string }[] | undefined) ?? [])];
  if (env.network) routes.push({ dst: formatIPv4Net(env.network) });
  if (env.ipv6Network) routes.push({ dst: formatIPv6Net(env.ipv6Network) });
  ipam.routes = routes;
  d.ipam = ipam;
  return d;
}

/** Options of {@link cniAdd} and {@link cniDel}. */
export interface CniOptions extends DelegateOptions {
  /** Namespace the plugins run in (the host). */
  readonly hostNs: string;
  /** Pod namespace name (in /run/netns) or path. */
  readonly podNs: string;
  /** subnet.env to map. */
  readonly subnetFile: string;
  /** host-local's state directory (put it in the lab's dir). */
  readonly dataDir: string;
  /** Container id (default: the pod namespace's name). */
  readonly containerId?: string;
  /** Interface name in the pod (default `eth0`). */
  readonly ifname?: string;
  /** Plugin directory (default `/usr/lib/cni`). */
  readonly cniPath?: string;
}

/** The parts of a CNI result the tests look at. */
export interface CniResult {
  readonly cniVersion: string;
  readonly interfaces?: { name: string; mac?: string; sandbox?: string }[];
  readonly ips: { address: string; gateway?: string; version?: string; interface?: number }[];
  readonly routes?: { dst: string; gw?: string }[];
}

async function invoke(command: "ADD" | "DEL", o: CniOptions): Promise<string> {
  const env = parseSubnetEnv(fs.readFileSync(o.subnetFile, "utf8"));
  const conf = flannelDelegateConfig(env, {
    ...o,
    ipam: { ...(o.ipam ?? {}), dataDir: o.dataDir },
  });
  const netns = o.podNs.includes("/") ? o.podNs : `/run/netns/${o.podNs}`;
  const plugin = `${o.cniPath ?? CNI_PATH}/${conf.type}`;
  const r = await netnsExec(o.hostNs)(plugin, [], {
    input: JSON.stringify(conf),
    env: {
      CNI_COMMAND: command,
      CNI_CONTAINERID: o.containerId ?? netns.split("/").pop()!,
      CNI_NETNS: netns,
      CNI_IFNAME: o.ifname ?? "eth0",
      CNI_PATH: o.cniPath ?? CNI_PATH,
    },
  });
  if (r.code !== 0) {
    throw new CommandError(
      [`CNI_COMMAND=${command}`, plugin],
      r,
      `config: ${JSON.stringify(conf)}`,
    );
  }
  return r.stdout;
}

/**
 * `CNI_COMMAND=ADD`: wire a pod with bridge + host-local from subnet.env.
 *
 * @param options Host and pod namespaces, subnet.env, host-local data dir.
 * @returns The plugin's result.
 * @throws {CommandError} With the plugin's error message and the config used.
 */
export async function cniAdd(options: CniOptions): Promise<CniResult> {
  return JSON.parse(await invoke("ADD", options)) as CniResult;
}

/**
 * `CNI_COMMAND=DEL`: unwire a pod and release its address.
 *
 * @param options The same options as for {@link cniAdd}.
 * @throws {CommandError} When the plugin fails.
 */
export async function cniDel(options: CniOptions): Promise<void> {
  await invoke("DEL", options);
}
