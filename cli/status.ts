/**
 * `weft status [weft's flags]`: the lease table (as the demo prints it) —
 * from a running agent's status API when `--healthz-port` is given (with
 * each peer's kernel state and last change), else straight from the store
 * the flags name.
 *
 * @module
 */

import { formatSubnetPair } from "../core/ip.ts";
import type { Logger } from "../core/log.ts";
import { Registry } from "../core/metrics.ts";
import type { Lease } from "../lease/types.ts";
import { leaseView } from "../api/app.ts";
import { ago, byAddress, type Overview } from "../api/page.ts";
import type { Flags } from "./flags.ts";
import type { CliIo } from "./io.ts";
import { chooseStore, openStore } from "./stores.ts";

/** How long the API or the store may take, ms. */
export const STATUS_TIMEOUT_MS = 5000;

const pad = (s: string, n: number) => s + " ".repeat(Math.max(0, n - [...s].length));

/**
 * Rows as an aligned table (two spaces between columns).
 *
 * @param rows Header first.
 * @returns The text.
 */
export function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => [...r[i]].length)));
  return rows.map((r) => r.map((c, i) => pad(c, widths[i])).join("  ").trimEnd()).join("\n");
}

/** `2030-01-02T03:04:05Z (in 23h59m)`, or `never`. */
export function expiresIn(iso: string | null, now: number): string {
  if (iso === null) return "never";
  const left = Math.max(0, Date.parse(iso) - now);
  const h = Math.floor(left / 3600_000);
  const m = Math.floor((left % 3600_000) / 60_000);
  return `${iso.replace(/\.\d+Z$/, "Z")} (in ${h}h${String(m).padStart(2, "0")}m)`;
}

const vtepMac = (data: unknown) =>
  typeof data === "object" && data !== null &&
    typeof (data as { VtepMAC?: unknown }).VtepMAC === "string"
    ? (data as { VtepMAC: string }).VtepMAC
    : "";

/**
 * The table of a running agent's overview: this node first.
 *
 * @param o `/v1/overview`.
 * @returns The text.
 */
export function overviewTable(o: Overview): string {
  const now = Date.parse(o.now);
  const n = o.node;
  const head = `${
    n.ready ? "ready" : `not ready: ${n.reason ?? ""}`
  } · store ${n.store} · backend ${n.backend ?? "?"} · ${n.iface} ${n.publicIP}${
    n.network ? ` · network ${n.network}` : ""
  }`;
  const row = (
    v: Overview["peers"][number] | NonNullable<Overview["node"]["lease"]>,
    self: boolean,
  ) => {
    const peer = "kernel" in v ? v : null;
    return [
      [v.subnet, v.ipv6Subnet].filter(Boolean).join(" "),
      [v.publicIP, v.publicIPv6].filter(Boolean).join(" "),
      v.backendType ?? "",
      vtepMac(v.backendData),
      expiresIn(v.expiration, now),
      self
        ? "this node"
        : peer?.kernel
        ? `${peer.kernel.state}${peer.kernel.detail ? `: ${peer.kernel.detail}` : ""}`
        : "",
      self ? "" : ago(peer?.changedAt ?? null, o.now),
    ];
  };
  return `${head}\n${
    table([
      ["SUBNET", "PUBLIC IP", "BACKEND", "VTEP MAC", "EXPIRES", "KERNEL", "CHANGED"],
      ...(n.lease ? [row(n.lease, true)] : []),
      ...o.peers.map((p) => row(p, false)),
    ])
  }`;
}

/**
 * The table of the leases in a store.
 *
 * @param leases The leases.
 * @param now The current time, ms.
 * @returns The text.
 */
export function leaseTable(leases: readonly Lease[], now: number): string {
  return table([
    ["SUBNET", "PUBLIC IP", "BACKEND", "VTEP MAC", "EXPIRES"],
    ...byAddress(leases).map((l) => {
      const v = leaseView(l);
      return [
        formatSubnetPair(l),
        [v.publicIP, v.publicIPv6].filter(Boolean).join(" "),
        v.backendType ?? "",
        vtepMac(v.backendData),
        expiresIn(v.expiration, now),
      ];
    }),
  ]);
}

/**
 * The `status` command.
 *
 * @param flags weft's flags (`--healthz-port`/`--healthz-ip`, or the store's).
 * @param env The environment.
 * @param io Output.
 * @param logger For the store.
 * @returns 0, or 1 when neither the API nor the store answered.
 */
export async function statusCommand(
  flags: Flags,
  env: Record<string, string | undefined>,
  io: CliIo,
  logger: Logger,
): Promise<number> {
  if (flags.healthzPort > 0) {
    const host = flags.healthzIp.includes(":") ? `[${flags.healthzIp}]` : flags.healthzIp;
    const url = `http://${host}:${flags.healthzPort}/v1/overview`;
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(STATUS_TIMEOUT_MS) });
      if (!res.ok) throw new Error(`HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`);
      io.stdout(overviewTable(await res.json() as Overview));
      return 0;
    } catch (e) {
      io.stderr(
        `weft status: cannot read ${url}: ${
          (e as Error).message
        }; is weft running with --healthz-port ${flags.healthzPort}? (without --healthz-port, weft status reads the store)`,
      );
      return 1;
    }
  }
  const kind = chooseStore(flags).kind;
  try {
    const signal = AbortSignal.timeout(STATUS_TIMEOUT_MS);
    const opened = await openStore(flags, env, logger, new Registry(), signal);
    try {
      const { leases } = await opened.store.list(signal, { exactExpiry: true });
      io.stdout(`leases in the ${kind} store:\n${leaseTable(leases, Date.now())}`);
      return 0;
    } finally {
      await opened.store.close().catch(() => {});
    }
  } catch (e) {
    io.stderr(`weft status: cannot list the leases in the ${kind} store: ${(e as Error).message}`);
    return 1;
  }
}
