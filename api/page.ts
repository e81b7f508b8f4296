/**
 * The status page at `/`: this node (lease, backend, ready or why not),
 * every peer (subnets, public IP, backend, last change, whether its kernel
 * state is in place) and the recent events. Rendered on the server only
 * (every text escaped); a few lines of script fetch the live part again
 * (`/v1/overview.html`) every second, so the page updates without a
 * framework and works, minus the updates, without script.
 *
 * @module
 */

import type { AgentStatus } from "../agent/agent.ts";
import type { PeerKernelState } from "../backends/types.ts";
import type { RecordedEvent } from "../core/events.ts";
import { formatIPv4Net, formatIPv6Net, formatSubnetPair } from "../core/ip.ts";
import type { Lease } from "../lease/types.ts";
import { type LeaseView, leaseView } from "./app.ts";

/** Events shown on the page and in `/v1/overview`. */
export const PAGE_EVENTS = 50;

/** Poll interval of the page's script, ms. */
export const PAGE_POLL_MS = 1000;

/** A peer as `/v1/overview` shows it. */
export interface PeerView extends LeaseView {
  /** When it was added or last changed (ISO), if known. */
  changedAt: string | null;
  /** Whether its kernel state is in place, if the backend tells. */
  kernel: PeerKernelState | null;
}

/** What the page shows, as `/v1/overview` returns it. */
export interface Overview {
  now: string;
  node: {
    version: string | null;
    ready: boolean;
    state: string;
    reason: string | null;
    store: string;
    backend: string | null;
    /** The external interface, "" until it is picked. */
    iface: string;
    /** This host's public address(es), IPv4 then IPv6, space-separated ("" until picked). */
    publicIP: string;
    /** The network(s), IPv4 then IPv6, space-separated, or null before the config is read. */
    network: string | null;
    lease: LeaseView | null;
  };
  peers: PeerView[];
  events: RecordedEvent[];
}

/**
 * Peers in address order (10.5.2.0 before 10.5.10.0), as people read them;
 * by IPv4 subnet, then IPv6 subnet (IPv6-only leases after the others).
 */
export function byAddress(leases: readonly Lease[]): Lease[] {
  const cmp = <T extends number | bigint>(x: T | undefined, y: T | undefined) =>
    x === y ? 0 : x === undefined ? 1 : y === undefined ? -1 : x < y ? -1 : 1;
  return [...leases].sort((a, b) =>
    cmp(a.subnet?.ip, b.subnet?.ip) || cmp(a.subnet?.prefixLen, b.subnet?.prefixLen) ||
    cmp(a.ipv6Subnet?.ip, b.ipv6Subnet?.ip) || cmp(a.ipv6Subnet?.prefixLen, b.ipv6Subnet?.prefixLen)
  );
}

/**
 * Gather the overview from the agent's status and the event ring.
 *
 * @param s The agent's status.
 * @param events The recent events, newest first.
 * @param version weft's version.
 * @param now The current time, ms since the epoch.
 * @returns The overview.
 */
export function overviewOf(
  s: AgentStatus,
  events: readonly RecordedEvent[],
  version: string | undefined,
  now: number,
): Overview {
  const iso = (ms: number | undefined) => ms === undefined ? null : new Date(ms).toISOString();
  return {
    now: new Date(now).toISOString(),
    node: {
      version: version ?? null,
      ready: s.ready,
      state: s.state,
      reason: s.reason,
      store: s.storeName,
      backend: s.backendType ?? null,
      iface: s.extIface?.name ?? "",
      publicIP: [s.extIface?.extAddr, s.extIface?.extV6Addr].filter((x) => x).join(" "),
      network: [
        s.config?.enableIPv4 !== false && s.config?.network
          ? formatIPv4Net(s.config.network)
          : undefined,
        s.config?.enableIPv6 && s.config.ipv6Network
          ? formatIPv6Net(s.config.ipv6Network)
          : undefined,
      ].filter((x) => x !== undefined).join(" ") || null,
      lease: s.lease ? leaseView(s.lease) : null,
    },
    peers: byAddress(s.peers).map((l) => {
      const key = formatSubnetPair(l);
      return {
        ...leaseView(l),
        changedAt: iso(s.peerChangedAt?.get(key)),
        kernel: s.peerStates?.get(key) ?? null,
      };
    }),
    events: events.slice(0, PAGE_EVENTS),
  };
}

const escape = (s: string) =>
  s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!);

/** "12 s ago", "3 min ago", "2 h ago", "4 d ago". */
export function ago(thenIso: string | null, nowIso: string): string {
  if (thenIso === null) return "";
  const s = Math.max(0, Math.round((Date.parse(nowIso) - Date.parse(thenIso)) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

const subnetsOf = (v: LeaseView) =>
  [v.subnet, v.ipv6Subnet].filter((x) => x !== undefined).join(" ");
const ipsOf = (v: LeaseView) => [v.publicIP, v.publicIPv6].filter((x) => x).join(" ");

function kernelCell(k: PeerKernelState | null): string {
  if (k === null) return `<td class="muted">not reported</td>`;
  const label = { applied: "✓ in place", failed: "✗ failed", skipped: "– skipped" }[k.state];
  const detail = k.detail ? `<div class="detail">${escape(k.detail)}</div>` : "";
  return `<td class="k-${k.state}">${label}${detail}</td>`;
}

/**
 * The live part of the page: node, peers, events (escaped HTML).
 *
 * @param o The overview.
 * @returns The HTML fragment.
 */
export function renderLive(o: Overview): string {
  const n = o.node;
  const state = n.ready
    ? `<span class="pill ok" id="ready">ready</span>`
    : `<span class="pill bad" id="ready">not ready</span> <span class="reason">not ready: ${
      escape(n.reason ?? "")
    }</span>`;
  const own = n.lease;
  const node = `<section class="node"><div>${state}</div><dl>` +
    `<dt>lease</dt><dd>${own ? escape(subnetsOf(own)) : "none yet"}</dd>` +
    `<dt>backend</dt><dd>${escape(n.backend ?? "?")}</dd>` +
    `<dt>network</dt><dd>${escape(n.network ?? "?")}</dd>` +
    `<dt>store</dt><dd>${escape(n.store)}</dd>` +
    `<dt>interface</dt><dd>${escape(n.iface)} ${escape(n.publicIP)}</dd>` +
    `<dt>lease expires</dt><dd>${
      escape(own ? own.expiration?.replace(/\.\d+Z$/, "Z") ?? "never" : "")
    }</dd>` +
    `</dl></section>`;
  const ownRow = own
    ? `<tr class="self"><td>${escape(subnetsOf(own))}</td><td>${escape(ipsOf(own))}</td><td>${
      escape(own.backendType ?? "")
    }</td><td>this node</td><td></td></tr>`
    : "";
  const rows = o.peers.map((p) =>
    `<tr class="peer"><td>${escape(subnetsOf(p))}</td><td>${escape(ipsOf(p))}</td><td>${
      escape(p.backendType ?? "")
    }</td><td title="${escape(p.changedAt ?? "")}">${escape(ago(p.changedAt, o.now))}</td>${
      kernelCell(p.kernel)
    }</tr>`
  ).join("");
  const peers =
    `<section><h2>Peers <span class="count" id="peer-count">${o.peers.length}</span></h2>` +
    `<table id="peers"><thead><tr><th>subnet</th><th>public IP</th><th>backend</th>` +
    `<th>last change</th><th>kernel state</th></tr></thead><tbody>${ownRow}${rows}</tbody></table>` +
    `</section>`;
  const events = o.events.map((e) => {
    const fields = Object.entries(e.fields).map(([k, v]) =>
      `<span class="f">${escape(k)}=${escape(v)}</span>`
    ).join(" ");
    return `<li class="ev ${e.level}"><time title="${new Date(e.at).toISOString()}">${
      new Date(e.at).toISOString().slice(11, 19)
    }</time> <strong>${escape(e.msg)}</strong> ${fields}</li>`;
  }).join("");
  return `${node}${peers}<section><h2>Recent events</h2><ul id="events">${
    events || `<li class="muted">none yet</li>`
  }</ul></section>`;
}

const STYLE = `
body{font:14px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 28px;display:flex;gap:16px;align-items:baseline}
header h1{font-size:20px;margin:0}header .live{margin-left:auto;font-size:12px;opacity:.8}
main{padding:18px 28px;max-width:1100px}
section{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:12px 18px;margin-bottom:16px}
h2{font-size:15px;margin:4px 0 10px}.count{background:#e7ebf3;border-radius:10px;padding:0 8px;font-weight:normal}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 18px;margin:10px 0 0}dt{color:#667}dd{margin:0}
table{border-collapse:collapse;width:100%}th{color:#667;font-weight:600;text-align:left;border-bottom:1px solid #dde1e8}
td,th{padding:5px 12px 5px 0;vertical-align:top}tr.self td{font-weight:600}
.pill{border-radius:12px;padding:2px 12px;font-weight:600;color:#fff}.ok{background:#1f9d55}.bad{background:#cc3b3b}
.reason{color:#a33}.k-applied{color:#1f7a45}.k-failed{color:#b42d2d}.k-skipped,.muted{color:#888}
.detail{font-size:12px;color:#777}ul{list-style:none;padding:0;margin:0;font:12.5px ui-monospace,monospace}
li.ev{padding:2px 0;border-bottom:1px dotted #e4e7ec}li.warn strong{color:#a66300}li.error strong{color:#b42d2d}
time{color:#888}.f{color:#556}footer{color:#888;font-size:12px;padding:0 28px 20px}`;

const SCRIPT = `
const live = document.getElementById("live"), mark = document.getElementById("updated");
async function tick() {
  try {
    const res = await fetch("/v1/overview.html", { cache: "no-store" });
    if (res.ok) { live.innerHTML = await res.text(); mark.textContent = "live · " + new Date().toLocaleTimeString(); }
    else mark.textContent = "update failed: HTTP " + res.status;
  } catch (e) { mark.textContent = "cannot reach weft: " + e.message; }
  setTimeout(tick, ${PAGE_POLL_MS});
}
setTimeout(tick, ${PAGE_POLL_MS});`;

/**
 * The whole page.
 *
 * @param o The overview.
 * @returns The HTML document.
 */
export function renderPage(o: Overview): string {
  return `<!doctype html><html lang="en"><meta charset="utf-8"><title>weft ${
    escape(o.node.publicIP)
  }</title><meta name="viewport" content="width=device-width"><style>${STYLE}</style>` +
    `<header><h1>weft ${escape(o.node.version ?? "")}</h1><span>${escape(o.node.iface)} ${
      escape(o.node.publicIP)
    }</span><span class="live" id="updated">static</span></header>` +
    `<main id="live">${renderLive(o)}</main>` +
    `<footer><a href="/metrics">metrics</a> · <a href="/v1/overview">/v1/overview</a> · ` +
    `<a href="/v1/leases">/v1/leases</a> · <a href="/readyz">/readyz</a></footer>` +
    `<script>${SCRIPT}</script></html>`;
}
