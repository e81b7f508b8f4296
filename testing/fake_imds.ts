/**
 * A fake EC2 instance metadata service, IMDSv2 only (`HttpTokens=required`,
 * as new instances default to):
 *
 * - `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`
 *   (1..21600, else 400) answers a token that expires after that many
 *   seconds on the injected clock;
 * - `GET /latest/meta-data/<path>` needs a live `X-aws-ec2-metadata-token`:
 *   none, unknown or expired → 401 (so a client must re-token);
 *   an unknown path → 404, with EC2's HTML body;
 * - paths: `instance-id`, `mac`, `local-ipv4`, `placement/region`,
 *   `placement/availability-zone`, `network/interfaces/macs/` (one `mac/` per
 *   line), and under `network/interfaces/macs/<mac>/`: `interface-id`,
 *   `subnet-id`, `vpc-id`, `vpc-ipv4-cidr-block`, `vpc-ipv4-cidr-blocks`
 *   (one per line), `local-ipv4s`.
 *
 * One fake can play many instances: the first is served at the root, and
 * every instance also under `/<instance-id>/` ({@link FakeImds.endpointFor}),
 * so a simulation of many hosts needs one server, not one per host.
 *
 * Faults: {@link FakeImds.expireTokens} (the next GET gets a 401),
 * {@link FakeImds.hang} (accept and never answer, like a firewalled
 * 169.254.169.254), {@link FakeImds.override} (garbage for one path).
 *
 * @module
 */

import type { Clock } from "../core/clock.ts";
import { systemClock } from "../core/clock.ts";
import { type HttpServer, serveHttp } from "../core/runtime.ts";

/** One network interface of an instance, as metadata tells it. */
export interface ImdsInterface {
  readonly mac: string;
  readonly interfaceId: string;
  readonly subnetId: string;
  readonly vpcId: string;
  readonly vpcCidrs: readonly string[];
  readonly privateIp?: string;
}

/** One instance the fake plays. */
export interface ImdsInstance {
  readonly instanceId: string;
  readonly region: string;
  /** The primary interface first. */
  readonly interfaces: readonly ImdsInterface[];
}

/** One request the fake answered. */
export interface ImdsRequest {
  readonly method: string;
  readonly path: string;
  readonly status: number;
}

/** A running fake metadata service. */
export interface FakeImds {
  /** `http://127.0.0.1:<port>`: the first instance's metadata service. */
  readonly endpoint: string;
  /** The endpoint that serves `instanceId` (`<endpoint>/<instance-id>`). */
  endpointFor(instanceId: string): string;
  /** Add (or replace) an instance. */
  addInstance(instance: ImdsInstance): void;
  /** Invalidate every token handed out so far. */
  expireTokens(): void;
  /** From now on accept requests and never answer them (until {@link FakeImds.close}). */
  hang(): void;
  /** Answer `path` (e.g. `instance-id`) with `body` and `status` instead of the truth. */
  override(path: string, body: string, status?: number): void;
  /** Every request in order. */
  readonly requests: readonly ImdsRequest[];
  /** Answer a request without a socket. */
  handle(request: Request): Promise<Response>;
  close(): Promise<void>;
}

/** IMDS's own limit on a token's lifetime (6 hours). */
const MAX_TTL_SECONDS = 21600;

const NOT_FOUND_HTML = `<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
	"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>404 - Not Found</title>
 </head>
 <body>
  <h1>404 - Not Found</h1>
 </body>
</html>
`;

/**
 * Start a fake metadata service on 127.0.0.1 (a free port).
 *
 * @param options The instances (the first is served at the root) and the clock tokens expire on.
 * @returns The running fake.
 * @example
 * ```ts
 * const imds = await createFakeImds({ instances: [instance] });
 * // AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.endpoint
 * await imds.close();
 * ```
 */
export async function createFakeImds(
  options: { instances?: readonly ImdsInstance[]; clock?: Clock; hostname?: string } = {},
): Promise<FakeImds> {
  const clock = options.clock ?? systemClock;
  const hostname = options.hostname ?? "127.0.0.1";
  const instances = new Map<string, ImdsInstance>();
  let first: string | undefined;
  const tokens = new Map<string, number>();
  const overrides = new Map<string, { body: string; status: number }>();
  const requests: ImdsRequest[] = [];
  const hanging = new Set<() => void>();
  let hang = false;

  const add = (instance: ImdsInstance) => {
    instances.set(instance.instanceId, instance);
    first ??= instance.instanceId;
  };
  for (const i of options.instances ?? []) add(i);

  const answer = (instance: ImdsInstance, path: string): string | undefined => {
    const primary = instance.interfaces[0];
    const fixed: Record<string, string | undefined> = {
      "instance-id": instance.instanceId,
      "mac": primary?.mac,
      "local-ipv4": primary?.privateIp,
      "placement/region": instance.region,
      "placement/availability-zone": `${instance.region}a`,
      "network/interfaces/macs/": instance.interfaces.map((i) => `${i.mac}/`).join("\n"),
    };
    if (path in fixed) return fixed[path];
    const m = /^network\/interfaces\/macs\/([0-9a-f:]+)\/(.+)$/.exec(path);
    const nic = m && instance.interfaces.find((i) => i.mac === m[1]);
    if (!nic) return undefined;
    const perMac: Record<string, string | undefined> = {
      "interface-id": nic.interfaceId,
      "subnet-id": nic.subnetId,
      "vpc-id": nic.vpcId,
      "vpc-ipv4-cidr-block": nic.vpcCidrs[0],
      "vpc-ipv4-cidr-blocks": nic.vpcCidrs.join("\n"),
      "local-ipv4s": nic.privateIp,
    };
    return perMac[m[2]];
  };

  const respond = (request: Request): Response => {
    const url = new URL(request.url);
    let path = url.pathname;
    let instanceId = first;
    const prefixed = /^\/(i-[0-9a-f]+)(\/.*)$/.exec(path);
    if (prefixed) [, instanceId, path] = prefixed;
    const instance = instanceId === undefined ? undefined : instances.get(instanceId);
    if (path === "/latest/api/token") {
      if (request.method !== "PUT") return new Response(null, { status: 405 });
      if (request.headers.has("x-forwarded-for")) return new Response(null, { status: 403 });
      const ttl = Number(request.headers.get("x-aws-ec2-metadata-token-ttl-seconds"));
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TTL_SECONDS) {
        return new Response(null, { status: 400 });
      }
      const token = btoa(crypto.randomUUID());
      tokens.set(token, clock.now() + ttl * 1000);
      return new Response(token, {
        headers: { "x-aws-ec2-metadata-token-ttl-seconds": String(ttl) },
      });
    }
    if (request.method !== "GET") return new Response(null, { status: 405 });
    const token = request.headers.get("x-aws-ec2-metadata-token");
    const expires = token === null ? undefined : tokens.get(token);
    if (expires === undefined || expires <= clock.now()) return new Response(null, { status: 401 });
    const meta = /^\/latest\/meta-data\/(.*)$/.exec(path);
    if (!meta || !instance) return notFound();
    const forced = overrides.get(meta[1]);
    if (forced) return new Response(forced.body, { status: forced.status });
    const body = answer(instance, meta[1]);
    return body === undefined ? notFound() : new Response(body, {
      headers: { "content-type": "text/plain" },
    });
  };

  const handle = async (request: Request): Promise<Response> => {
    if (hang) {
      await new Promise<void>((resolve) => hanging.add(resolve));
      return new Response(null, { status: 504 });
    }
    const response = respond(request);
    requests.push({
      method: request.method,
      path: new URL(request.url).pathname,
      status: response.status,
    });
    return response;
  };

  const server: HttpServer = await serveHttp({ hostname, port: 0, fetch: handle });
  const endpoint = `http://${hostname}:${server.port}`;
  return {
    endpoint,
    endpointFor: (instanceId) => `${endpoint}/${instanceId}`,
    addInstance: add,
    expireTokens: () => tokens.clear(),
    hang: () => void (hang = true),
    override: (path, body, status = 200) => void overrides.set(path, { body, status }),
    requests,
    handle,
    async close() {
      hang = false;
      for (const resolve of hanging) resolve();
      hanging.clear();
      await server.shutdown();
    },
  };
}

function notFound(): Response {
  return new Response(NOT_FOUND_HTML, { status: 404, headers: { "content-type": "text/html" } });
}
