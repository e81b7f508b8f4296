/**
 * Names and links of the GCE route provider, as pure functions: the route
 * name flannel used (`flannel-10-244-1-0-24`), the selfLinks of networks
 * and instances in every form the Compute API accepts, and which routes
 * weft may treat as its own.
 *
 * The Compute API answers with full selfLinks on `www.googleapis.com`
 * (`https://www.googleapis.com/compute/v1/projects/p/global/networks/n`)
 * whatever endpoint it was called on, and accepts partial URLs on input
 * (`projects/p/global/networks/n`, `global/networks/n`). weft keeps every
 * link in the canonical full form, so comparing two links is comparing
 * strings.
 *
 * @module
 */

import { formatIPv4Net, parseIPv4Net } from "../../../core/ip.ts";

/** Prefix of every canonical selfLink the Compute API writes. */
export const COMPUTE_BASE = "https://www.googleapis.com/compute/v1/";

/**
 * The description weft writes on its routes: the mark that makes a route
 * weft's own even without flannel's name form.
 */
export const WEFT_ROUTE_DESCRIPTION = "weft pod-subnet route";

/** Priority of the routes weft writes (flannel's, and GCE's default). */
export const ROUTE_PRIORITY = 1000;

/** What identifies a resource: its project and the path below it. */
export interface ResourcePath {
  /** Project id (or number) the resource belongs to. */
  readonly project: string;
  /** `global/networks/n`, `zones/z/instances/i`, `global/routes/r`. */
  readonly rest: string;
}

const PATH_RE =
  /^(?:[a-z][a-z0-9+.-]*:\/\/[^/]+\/(?:compute\/(?:v1|beta|alpha)\/)?)?projects\/([^/]+)\/(.+)$/;

/**
 * Split a full or partial Compute selfLink into project and path.
 *
 * @param link `https://…/compute/v1/projects/p/global/networks/n` or `projects/p/…`.
 * @returns The project and the rest, or null when the link names no project.
 * @example
 * ```ts
 * parseResourceLink("projects/p/global/networks/default"); // { project: "p", rest: "global/networks/default" }
 * ```
 */
export function parseResourceLink(link: string): ResourcePath | null {
  const m = PATH_RE.exec(link.trim());
  if (!m) return null;
  return { project: m[1], rest: m[2].replace(/\/+$/, "") };
}

/**
 * The canonical selfLink of a network.
 *
 * @param project Project id.
 * @param name Network name.
 * @returns `https://www.googleapis.com/compute/v1/projects/<project>/global/networks/<name>`.
 */
export function networkLink(project: string, name: string): string {
  return `${COMPUTE_BASE}projects/${project}/global/networks/${name}`;
}

/**
 * The canonical selfLink of an instance.
 *
 * @param project Project id.
 * @param zone Zone name, e.g. `europe-west1-b`.
 * @param name Instance name (`instance/name`, not the hostname).
 * @returns `https://www.googleapis.com/compute/v1/projects/<project>/zones/<zone>/instances/<name>`.
 */
export function instanceLink(project: string, zone: string, name: string): string {
  return `${COMPUTE_BASE}projects/${project}/zones/${zone}/instances/${name}`;
}

/**
 * Rewrite any full or partial selfLink into the canonical form; text that is
 * no Compute link comes back unchanged.
 *
 * @param link A link as the API or a user wrote it.
 * @returns The canonical link.
 */
export function canonicalLink(link: string): string {
  const p = parseResourceLink(link);
  return p ? `${COMPUTE_BASE}projects/${p.project}/${p.rest}` : link;
}

/**
 * The network a table link names: its project and network name.
 *
 * @param table A network selfLink (the seam's "table").
 * @returns Project and network name.
 * @throws {TypeError} When `table` is not a network link.
 */
export function parseNetworkLink(table: string): { project: string; network: string } {
  const p = parseResourceLink(table);
  const m = p && /^global\/networks\/([a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)$/.exec(p.rest);
  if (!p || !m) {
    throw new TypeError(
      `Cannot use ${
        JSON.stringify(table)
      } as a GCE route table: expected a network selfLink such as ${
        networkLink("my-project", "default")
      }`,
    );
  }
  return { project: p.project, network: m[1] };
}

/**
 * flannel's route name for a subnet: `flannel-` and the subnet with `.` and
 * `/` turned into `-`. Kept as is, so a cluster moving from flannel finds
 * its routes.
 *
 * @param destination IPv4 CIDR, e.g. `10.244.1.0/24`.
 * @returns e.g. `flannel-10-244-1-0-24`.
 * @throws {SyntaxError} When `destination` is no IPv4 network.
 * @example
 * ```ts
 * routeName("10.244.1.0/24"); // "flannel-10-244-1-0-24"
 * ```
 */
export function routeName(destination: string): string {
  const canonical = formatIPv4Net(parseIPv4Net(destination));
  return `flannel-${canonical.replace(/[./]/g, "-")}`;
}

/** The fields of an API route that ownership depends on. */
export interface RouteFacts {
  readonly name?: string | null;
  readonly destRange?: string | null;
  readonly description?: string | null;
  readonly nextHopInstance?: string | null;
}

/**
 * Whether weft may treat a route as its own (update and remove it): it has
 * weft's description, or flannel's name for its own destination and an
 * instance as next hop (flannel wrote no description). Everything else —
 * subnet routes, the default route, routes of other tools — is foreign.
 *
 * @param route The route as listed.
 * @param description weft's description mark.
 * @returns True when the route is weft's or flannel's.
 */
export function isOwnedRoute(route: RouteFacts, description = WEFT_ROUTE_DESCRIPTION): boolean {
  if (route.description === description) return true;
  if (!route.name || !route.destRange || !route.nextHopInstance) return false;
  try {
    return routeName(route.destRange) === route.name;
  } catch {
    return false;
  }
}

/**
 * Canonical CIDR text of a destination range, or null when it is not IPv4.
 *
 * @param destRange As the API reports it.
 * @returns e.g. `10.244.1.0/24`.
 */
export function canonicalDestination(destRange: string): string | null {
  try {
    return formatIPv4Net(parseIPv4Net(destRange));
  } catch {
    return null;
  }
}
