/**
 * The status API (hono): `/healthz`, `/readyz`, `/metrics`, `/v1/lease`,
 * `/v1/leases`, `/v1/status` (both families: `network` and `ipv6Network`,
 * `publicIP` and `publicIPv6`, the lease's `subnet` and `ipv6Subnet`),
 * `/v1/overview` (node, peers with their kernel state, recent events) and
 * the status page at `/` (./page.ts). Served only when
 * `--healthz-port` is set, on `--healthz-ip` (127.0.0.1 by default).
 *
 * @module
 */

import { Hono } from "hono";
import type { AgentStatus } from "../agent/agent.ts";
import { formatIPv4Net, formatIPv6Net } from "../core/ip.ts";
import type { Lease } from "../lease/types.ts";
import type { Registry as Metrics } from "../core/metrics.ts";
import type { EventRing } from "../core/events.ts";
import { byAddress, overviewOf, renderLive, renderPage } from "./page.ts";

/** A lease as the API shows it (`subnet` absent for an IPv6-only lease). */
export interface LeaseView {
  subnet?: string;
  ipv6Subnet?: string;
  publicIP: string;
  publicIPv6: string | null;
  backendType: string | null;
  backendData: unknown;
  /** The IPv6 side's backend data (vxlan: the IPv6 VtepMAC), when the lease has it. */
  backendV6Data?: unknown;
  /** ISO time, or null for a lease that never expires. */
  expiration: string | null;
}

/** Render a lease for the API. */
export function leaseView(lease: Lease): LeaseView {
  return {
    ...(lease.subnet ? { subnet: formatIPv4Net(lease.subnet) } : {}),
    ...(lease.ipv6Subnet ? { ipv6Subnet: formatIPv6Net(lease.ipv6Subnet) } : {}),
    publicIP: lease.attrs.publicIP,
    publicIPv6: lease.attrs.publicIPv6 ?? null,
    backendType: lease.attrs.backendType ?? null,
    backendData: lease.attrs.backendData ?? null,
    ...(lease.attrs.backendV6Data != null ? { backendV6Data: lease.attrs.backendV6Data } : {}),
    expiration: lease.expiration === null ? null : new Date(lease.expiration).toISOString(),
  };
}

/**
 * Build the status app.
 *
 * @param source Where status and metrics come from (the agent and its
 *   registry), the recent events (`events`) and the time (`now`).
 * @returns A hono app; serve `app.fetch`, or test with `app.request("/readyz")`.
 * @example
 * ```ts
 * const app = createStatusApp({ status: () => agent.status(), metrics });
 * const res = await app.request("/healthz"); // 200
 * ```
 */
export function createStatusApp(source: {
  status(): AgentStatus;
  metrics: Metrics;
  version?: string;
  events?: EventRing;
  now?: () => number;
}): Hono {
  const app = new Hono();
  const overview = () =>
    overviewOf(
      source.status(),
      source.events?.recent() ?? [],
      source.version,
      (source.now ?? Date.now)(),
    );
  app.get("/healthz", (c) => c.text("ok\n"));
  app.get("/readyz", (c) => {
    const s = source.status();
    return s.ready ? c.text("ok\n") : c.text(`not ready: ${s.reason ?? "starting"}\n`, 503);
  });
  app.get("/metrics", (c) => {
    return c.body(source.metrics.render(), 200, {
      "content-type": "text/plain; version=0.0.4; charset=utf-8",
    });
  });
  app.get("/v1/lease", (c) => {
    const s = source.status();
    if (!s.lease) return c.json({ error: `no lease yet: ${s.reason ?? "acquiring"}` }, 503);
    return c.json(leaseView(s.lease));
  });
  app.get("/v1/leases", (c) => {
    const s = source.status();
    return c.json({
      self: s.lease ? leaseView(s.lease) : null,
      peers: byAddress(s.peers).map(leaseView),
    });
  });
  app.get("/v1/status", (c) => {
    const s = source.status();
    return c.json({
      ready: s.ready,
      state: s.state,
      reason: s.reason,
      version: source.version ?? null,
      store: s.storeName,
      backend: s.backendType ?? null,
      iface: s.extIface?.name ?? null,
      publicIP: s.extIface?.extAddr || null,
      publicIPv6: s.extIface?.extV6Addr || null,
      network: s.config?.enableIPv4 && s.config.network ? formatIPv4Net(s.config.network) : null,
      ipv6Network: s.config?.enableIPv6 && s.config.ipv6Network
        ? formatIPv6Net(s.config.ipv6Network)
        : null,
      lease: s.lease ? leaseView(s.lease) : null,
      peers: s.peers.length,
    });
  });
  app.get("/v1/overview", (c) => c.json(overview()));
  app.get("/v1/overview.html", (c) => c.html(renderLive(overview())));
  app.get("/", (c) => c.html(renderPage(overview())));
  return app;
}
