/**
 * The status API (hono): `/healthz`, `/readyz`, `/metrics`, `/v1/lease`,
 * `/v1/leases` and a small status page at `/`. Served only when
 * `--healthz-port` is set, on `--healthz-ip` (127.0.0.1 by default).
 *
 * @module
 */

import { Hono } from "hono";
import type { AgentStatus } from "../agent/agent.ts";
import { formatIPv4Net, formatIPv6Net } from "../core/ip.ts";
import type { Lease } from "../lease/types.ts";
import type { Registry as Metrics } from "../core/metrics.ts";

/** A lease as the API shows it (`subnet` absent for an IPv6-only lease). */
export interface LeaseView {
  subnet?: string;
  ipv6Subnet?: string;
  publicIP: string;
  publicIPv6: string | null;
  backendType: string | null;
  backendData: unknown;
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
    expiration: lease.expiration === null ? null : new Date(lease.expiration).toISOString(),
  };
}

/**
 * Peers in address order (10.5.2.0 before 10.5.10.0), as people read them;
 * by IPv4 subnet, then IPv6 subnet (IPv6-only leases after the others).
 */
const byAddress = (leases: readonly Lease[]): Lease[] => {
  const cmp = <T extends number | bigint>(x: T | undefined, y: T | undefined) =>
    x === y ? 0 : x === undefined ? 1 : y === undefined ? -1 : x < y ? -1 : 1;
  return [...leases].sort((a, b) =>
    cmp(a.subnet?.ip, b.subnet?.ip) || cmp(a.subnet?.prefixLen, b.subnet?.prefixLen) ||
    cmp(a.ipv6Subnet?.ip, b.ipv6Subnet?.ip) || cmp(a.ipv6Subnet?.prefixLen, b.ipv6Subnet?.prefixLen)
  );
};

const escape = (s: string) =>
  s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!);

/**
 * Build the status app.
 *
 * @param source Where status and metrics come from (the agent and its registry).
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
}): Hono {
  const app = new Hono();
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
      iface: s.extIface.name,
      publicIP: s.extIface.extAddr,
      network: s.config?.network ? formatIPv4Net(s.config.network) : null,
      lease: s.lease ? leaseView(s.lease) : null,
      peers: s.peers.length,
    });
  });
  app.get("/", (c) => {
    const s = source.status();
    const rows = [
      ...(s.lease ? [{ l: s.lease, self: true }] : []),
      ...byAddress(s.peers).map((l) => ({ l, self: false })),
    ].map(({ l, self }) => {
      const v = leaseView(l);
      const subnets = [v.subnet, v.ipv6Subnet].filter((x) => x !== undefined).join(" ");
      const ips = [v.publicIP, v.publicIPv6].filter((x) => x).join(" ");
      return `<tr${self ? ' class="self"' : ""}><td>${escape(subnets)}</td><td>${
        escape(ips)
      }</td><td>${escape(v.backendType ?? "")}</td><td>${
        escape(v.expiration ?? "never")
      }</td></tr>`;
    }).join("");
    return c.html(
      `<!doctype html><meta charset="utf-8"><title>weft</title>` +
        `<style>body{font:14px system-ui;margin:2em}td,th{padding:2px 10px;text-align:left}.self{font-weight:bold}</style>` +
        `<h1>weft ${escape(source.version ?? "")}</h1>` +
        `<p>${s.ready ? "ready" : `not ready: ${escape(s.reason ?? "")}`} · store ${
          escape(s.storeName)
        } · backend ${escape(s.backendType ?? "?")} · ${escape(s.extIface.name)} ${
          escape(s.extIface.extAddr)
        }</p>` +
        `<table><tr><th>subnet</th><th>public IP</th><th>backend</th><th>expires</th></tr>${rows}</table>` +
        `<p><a href="/metrics">metrics</a> · <a href="/v1/leases">/v1/leases</a></p>`,
    );
  });
  return app;
}
