/**
 * Command-line flags, flannel-compatible: Go-style (`-x v`, `-x=v`, `--x v`,
 * `--x=v`; booleans as `--x` or `--x=false`), every flag also settable as
 * `FLANNELD_<FLAG>` (`-` → `_`, upper case) when not given on the command
 * line. weft adds `--lease-ttl`, `--lease-file`, `--log-format`,
 * `--log-level`, `--exit-on-missing-podcidr`.
 *
 * klog: flanneld v0.28 takes exactly three of klog's flags, `-v`, `-vmodule`
 * and `-log_backtrace_at` (also as `FLANNELD_V`, …); so does weft: `-v` ≥ 1
 * means `--log-level=debug` unless `--log-level` is given, the other two are
 * accepted and have no effect (see {@link klogNotes}). klog's file-logging
 * flags (`-logtostderr`, `-log_dir`, …) are refused, as flanneld refuses them
 * ("flag provided but not defined"), with a hint to drop them.
 *
 * @module
 */

import * as v from "valibot";
import { isIPv4, parseIPv6 } from "../core/ip.ts";
import { quote } from "../core/quote.ts";

type Kind = "string" | "bool" | "int" | "list" | "duration";

interface FlagSpec {
  readonly kind: Kind;
  readonly def: string | boolean | number | string[];
  readonly help: string;
  /** Extra validation of the parsed value; returns an error text or null. */
  readonly check?: (value: never) => string | null;
  /** Shown in --help as the value's form. */
  readonly form?: string;
}

const ipv4 = (x: string) => (x === "" || isIPv4(x) ? null : "an IPv4 address such as 192.0.2.10");
const ipv6 = (x: string) => {
  if (x === "") return null;
  try {
    parseIPv6(x);
    return null;
  } catch {
    return "an IPv6 address";
  }
};
const ipAny = (x: string) =>
  ipv4(x) === null || ipv6(x) === null
    ? null
    : "an IPv4 or IPv6 address such as 192.0.2.10 or fd00::10";
const regex = (x: string) => {
  try {
    new RegExp(x);
    return null;
  } catch (e) {
    return `a valid regular expression (${(e as Error).message})`;
  }
};
/** An etcd endpoint: a URL, or `host:port` as etcd's Go client also takes. */
const ENDPOINT_RE = /^(?:https?:\/\/[^/\s]+|[^/\s:\[\]]+:\d+|\[[0-9a-fA-F:.]+\]:\d+)\/?$/;

const range = (lo: number, hi: number) => (x: number) =>
  x >= lo && x <= hi ? null : `an integer from ${lo} to ${hi}`;

/** Every flag weft accepts, with flannel's defaults (and ours where noted). */
export const FLAGS = {
  "etcd-endpoints": {
    kind: "string",
    def: "http://127.0.0.1:4001,http://127.0.0.1:2379",
    help:
      "comma-separated etcd endpoints (URLs, or host:port); etcd is the store unless --kube-subnet-mgr or --lease-file is given",
    form: "urls",
    check: (x: string) =>
      x.split(",").every((u) => ENDPOINT_RE.test(u.trim()))
        ? null
        : "comma-separated URLs such as http://10.0.0.1:2379,https://10.0.0.2:2379 (or host:port)",
  },
  "etcd-prefix": { kind: "string", def: "/coreos.com/network", help: "etcd key prefix" },
  "etcd-keyfile": { kind: "string", def: "", help: "TLS client key file for etcd", form: "path" },
  "etcd-certfile": {
    kind: "string",
    def: "",
    help: "TLS client certificate file for etcd",
    form: "path",
  },
  "etcd-cafile": {
    kind: "string",
    def: "",
    help: "TLS CA bundle that signed etcd's certificate",
    form: "path",
  },
  "etcd-username": { kind: "string", def: "", help: "etcd user name" },
  "etcd-password": { kind: "string", def: "", help: "etcd password" },
  "iface": {
    kind: "list",
    def: [],
    help: "interface (name or IP) for inter-host traffic; repeat to try several in order",
    form: "name|ip",
  },
  "iface-regex": {
    kind: "list",
    def: [],
    help:
      "regular expression matched against interface names and IPs; repeatable, tried after --iface",
    form: "regex",
    check: regex,
  },
  "iface-can-reach": {
    kind: "string",
    def: "",
    help: "use the interface the route to this IP (IPv4 or IPv6) goes through",
    form: "ip",
    check: ipAny,
  },
  "public-ip": {
    kind: "string",
    def: "",
    help: "IP peers use to reach this host",
    form: "ip",
    check: ipv4,
  },
  "public-ipv6": {
    kind: "string",
    def: "",
    help: "IPv6 peers use to reach this host",
    form: "ip",
    check: ipv6,
  },
  "subnet-file": {
    kind: "string",
    def: "/run/flannel/subnet.env",
    help: "where subnet.env is written",
    form: "path",
  },
  "subnet-lease-renew-margin": {
    kind: "int",
    def: 60,
    help: "renew the lease this many minutes before it expires",
    form: "minutes",
    check: range(1, 1439),
  },
  "lease-ttl": {
    kind: "duration",
    def: 24 * 3600_000,
    help: "lease time-to-live in etcd and the file store (weft; flannel fixes 24h)",
    form: "duration",
    check: (x: number) => (x >= 2000 ? null : "a duration of at least 2s, e.g. 24h, 90m, 30s"),
  },
  "lease-file": {
    kind: "string",
    def: "/var/lib/weft/leases.json",
    help:
      "lease file of the embedded store (weft; one machine only): giving it (or having the file) picks that store unless --kube-subnet-mgr or --etcd-endpoints is given",
    form: "path",
  },
  "ip-masq": { kind: "bool", def: false, help: "masquerade traffic leaving the overlay network" },
  "ip-masq-fully-random-disable": {
    kind: "bool",
    def: false,
    help: "do not use --random-fully for MASQUERADE",
  },
  "kube-subnet-mgr": {
    kind: "bool",
    def: false,
    help: "take the subnet from this node's podCIDR in Kubernetes",
  },
  "kube-api-url": {
    kind: "string",
    def: "",
    help: "Kubernetes API server URL (not needed in a pod)",
    form: "url",
  },
  "kubeconfig-file": {
    kind: "string",
    def: "",
    help: "kubeconfig file (not needed in a pod)",
    form: "path",
  },
  "kube-annotation-prefix": {
    kind: "string",
    def: "flannel.alpha.coreos.com",
    help: "prefix of the node annotations",
  },
  "net-config-path": {
    kind: "string",
    def: "/etc/kube-flannel/net-conf.json",
    help: "network config file (Kubernetes mode and the file store)",
    form: "path",
  },
  "set-node-network-unavailable": {
    kind: "bool",
    def: true,
    help: "set the node's NetworkUnavailable condition to False when ready (Kubernetes mode)",
  },
  "exit-on-missing-podcidr": {
    kind: "bool",
    def: false,
    help: "exit when the node has no podCIDR (flannel's behaviour) instead of waiting for it",
  },
  "healthz-ip": {
    kind: "string",
    def: "127.0.0.1",
    help: "address of the status server",
    form: "ip",
    check: ipv4,
  },
  "healthz-port": {
    kind: "int",
    def: 0,
    help: "port of the status server (/healthz, /readyz, /metrics, /v1/*); 0 = off",
    form: "port",
    check: range(0, 65535),
  },
  "iptables-resync": {
    kind: "int",
    def: 5,
    help: "re-check masquerade/forward rules every this many seconds",
    form: "seconds",
    check: range(1, 86400),
  },
  "iptables-forward-rules": {
    kind: "bool",
    def: true,
    help: "accept forwarded overlay traffic in FORWARD",
  },
  "ip-blackhole-route": {
    kind: "bool",
    def: false,
    help:
      "keep a blackhole route for this host's subnet (re-checked every --iptables-resync seconds), so pod traffic without a pod never leaves by the default route",
  },
  "log-format": {
    kind: "string",
    def: "text",
    help: "log format: text or json (weft)",
    form: "text|json",
    check: (x: string) => (x === "text" || x === "json" ? null : "text or json"),
  },
  "log-level": {
    kind: "string",
    def: "info",
    help: "least severe level logged: debug, info, warn, error (weft)",
    form: "level",
    check: (
      x: string,
    ) => (["debug", "info", "warn", "error"].includes(x) ? null : "debug, info, warn or error"),
  },
  "v": {
    kind: "int",
    def: 0,
    help: "klog verbosity (flannel); 1 or more logs debug records unless --log-level is given",
    form: "level",
  },
  "vmodule": {
    kind: "string",
    def: "",
    help: "klog per-file verbosity (flannel); accepted, no effect in weft",
    form: "pattern=N,...",
    check: (x: string) =>
      x === "" || /^[^=,]+=-?\d+(,[^=,]+=-?\d+)*$/.test(x) ? null : "pattern=N[,pattern=N…]",
  },
  "log_backtrace_at": {
    kind: "string",
    def: "",
    help: "klog: stack trace at file:line (flannel); accepted, no effect in weft",
    form: "file:N",
    check: (x: string) => x === "" || /^[^:]*\.[^:]*:\d+$/.test(x) ? null : "file.go:N",
  },
  "version": { kind: "bool", def: false, help: "print the version and exit" },
  "help": { kind: "bool", def: false, help: "print this help and exit" },
} as const satisfies Record<string, FlagSpec>;

/** Flag names. */
export type FlagName = keyof typeof FLAGS;

type ValueOf<K extends Kind> = K extends "bool" ? boolean
  : K extends "int" | "duration" ? number
  : K extends "list" ? string[]
  : string;

/** Parsed flags, camel-cased (`etcd-endpoints` → `etcdEndpoints`). */
export type Flags =
  & { [K in FlagName as CamelCase<K>]: ValueOf<(typeof FLAGS)[K]["kind"]> }
  & {
    /** Flags given on the command line or in the environment (not defaulted). */
    readonly explicit: ReadonlySet<FlagName>;
    /** Positional arguments. */
    readonly args: string[];
  };

type CamelCase<S extends string> = S extends `${infer H}-${infer T}`
  ? `${H}${Capitalize<CamelCase<T>>}`
  : S;

/** A usage error: exit code 2, one line. */
export class UsageError extends Error {
  override name = "UsageError";
}

const camel = (s: string) => s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/**
 * Parse a Go-style duration (`24h`, `90m`, `30s`, `1h30m`, `500ms`, `1.5h`);
 * every number needs a unit.
 *
 * @param text The duration text.
 * @returns Milliseconds.
 * @throws {SyntaxError} When malformed.
 * @example
 * ```ts
 * parseDuration("1h30m"); // 5400000
 * ```
 */
export function parseDuration(text: string): number {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3600_000 };
  let rest = text;
  let total = 0;
  if (rest === "") throw new SyntaxError(`Cannot parse duration: current value is ""`);
  while (rest) {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)/.exec(rest);
    if (!m) {
      throw new SyntaxError(`Cannot parse duration: current value is ${quote(text)}`);
    }
    total += Number(m[1]) * units[m[2]];
    rest = rest.slice(m[0].length);
  }
  return Math.round(total);
}

/** An integer as Go's flag package takes one: digits, within range (not 1e400 → Infinity). */
const IntSchema = v.pipe(
  v.string(),
  v.regex(/^-?\d+$/),
  v.transform(Number),
  v.check((n: number) => Number.isSafeInteger(n)),
);

/**
 * Where a value came from, as error messages name it: `flag --lease-ttl` or
 * `environment FLANNELD_LEASE_TTL (flag --lease-ttl)`.
 */
function origin(name: FlagName, envName?: string): string {
  return envName ? `environment ${envName} (flag --${name})` : `flag --${name}`;
}

function convert(name: FlagName, raw: string, envName?: string): string | boolean | number {
  const spec: FlagSpec = FLAGS[name];
  const bad = (expected: string): never => {
    throw new UsageError(
      `${origin(name, envName)}: expected ${expected}, got ${quote(raw)}`,
    );
  };
  let value: string | boolean | number = raw;
  if (spec.kind === "bool") {
    if (["true", "1", "t", "T", "TRUE", "True"].includes(raw)) value = true;
    else if (["false", "0", "f", "F", "FALSE", "False"].includes(raw)) value = false;
    else bad("true or false");
  } else if (spec.kind === "int") {
    const r = v.safeParse(IntSchema, raw);
    if (!r.success) bad(spec.check ? (spec.check as (x: number) => string)(NaN) : "an integer");
    value = (r as { output: number }).output;
  } else if (spec.kind === "duration") {
    if (/^\d+$/.test(raw)) bad("a duration with a unit, e.g. 24h, 90m, 30s");
    try {
      value = parseDuration(raw);
    } catch {
      bad("a duration such as 24h, 1h30m, 90s or 500ms");
    }
  }
  const err = spec.check ? (spec.check as (x: unknown) => string | null)(value) : null;
  if (err) bad(err);
  return value;
}

/**
 * Parse the command line and the FLANNELD_* environment.
 *
 * @param argv Arguments after the program name.
 * @param env Environment (FLANNELD_* variables are read).
 * @returns The flags.
 * @throws {UsageError} For an unknown flag, a missing value or a bad value;
 *   the message names the flag and the expected form.
 * @example
 * ```ts
 * const f = parseFlags(["--ip-masq", "-etcd-endpoints=http://10.0.0.1:2379"], {});
 * f.ipMasq; // true
 * ```
 */
export function parseFlags(
  argv: readonly string[],
  env: Record<string, string | undefined>,
): Flags {
  const values: Record<string, unknown> = {};
  const explicit = new Set<FlagName>();
  const args: string[] = [];
  const set = (name: FlagName, raw: string, envName?: string) => {
    const spec: FlagSpec = FLAGS[name];
    if (spec.kind === "list") {
      const list = (values[camel(name)] as string[] | undefined) ?? [];
      if (!explicit.has(name)) values[camel(name)] = list;
      list.push(convert(name, raw, envName) as string);
    } else {
      values[camel(name)] = convert(name, raw, envName);
    }
    explicit.add(name);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--") {
      args.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith("-") || a === "-") {
      args.push(a);
      continue;
    }
    const body = a.replace(/^--?/, "");
    const eq = body.indexOf("=");
    const name = (eq >= 0 ? body.slice(0, eq) : body) as FlagName;
    if (name === ("h" as FlagName)) {
      values.help = true;
      explicit.add("help");
      continue;
    }
    if (KLOG_FILE_FLAGS.includes(name)) {
      throw new UsageError(
        `flag ${
          a.split("=")[0]
        } is klog's, and flanneld v0.28 refuses it too ("flag provided but not defined"); weft always logs to stderr: drop it (flannel takes only -v, -vmodule and -log_backtrace_at)`,
      );
    }
    if (!Object.hasOwn(FLAGS, name)) {
      const near = closestFlag(name);
      throw new UsageError(
        `unknown flag ${printable(a.split("=")[0])}${
          near ? ` (did you mean --${near}?)` : ""
        }; run weft --help for the list`,
      );
    }
    const spec: FlagSpec = FLAGS[name];
    if (eq >= 0) {
      set(name, body.slice(eq + 1));
    } else if (spec.kind === "bool") {
      set(name, "true");
    } else {
      if (i + 1 >= argv.length) {
        const form = `<${spec.form ?? spec.kind}>`;
        throw new UsageError(
          `flag --${name}: missing value; give it as --${name} ${form} or --${name}=${form}`,
        );
      }
      set(name, argv[++i]);
    }
  }
  for (const name of Object.keys(FLAGS) as FlagName[]) {
    if (explicit.has(name)) continue;
    const envName = `FLANNELD_${name.toUpperCase().replace(/-/g, "_")}`;
    const raw = env[envName];
    if (raw !== undefined && raw !== "") {
      const spec: FlagSpec = FLAGS[name];
      if (spec.kind === "list") {
        for (const part of raw.split(",")) {
          if (part.trim()) set(name, part.trim(), envName);
        }
        // only blanks and commas: as if unset (the list was left undefined)
        if (explicit.has(name)) continue;
      } else {
        set(name, raw, envName);
        continue;
      }
    }
    const def = FLAGS[name].def;
    values[camel(name)] = Array.isArray(def) ? [...def] : def;
  }
  return { ...values, explicit, args } as unknown as Flags;
}

/** A flag as typed, quoted when it is long or has spaces or control characters (a usage error is one line). */
function printable(text: string): string {
  return /^[\x21-\x7e]{1,100}$/.test(text) ? text : quote(text, 100);
}

/** klog's flags that flanneld v0.28 does not take (it sets them itself). */
const KLOG_FILE_FLAGS: readonly string[] = [
  "logtostderr",
  "alsologtostderr",
  "stderrthreshold",
  "log_dir",
  "log_file",
  "log_file_max_size",
  "skip_headers",
  "skip_log_headers",
  "add_dir_header",
  "one_output",
  "legacy_stderr_threshold_behavior",
];

/**
 * The log level the flags ask for: `--log-level` when given, else debug for
 * klog's `-v` ≥ 1, else info.
 *
 * @param flags Parsed flags.
 * @returns The level.
 * @example
 * ```ts
 * effectiveLogLevel(parseFlags(["-v=2"], {})); // "debug"
 * ```
 */
export function effectiveLogLevel(
  flags: Pick<Flags, "logLevel" | "v" | "explicit">,
): "debug" | "info" | "warn" | "error" {
  if (!flags.explicit.has("log-level") && flags.v >= 1) return "debug";
  return flags.logLevel as "debug" | "info" | "warn" | "error";
}

/**
 * What weft says about klog flags it accepts but does not act on, one line
 * each (for the log at start).
 *
 * @param flags Parsed flags.
 * @returns The notes, empty when none of them was given.
 */
export function klogNotes(flags: Pick<Flags, "vmodule" | "log_backtrace_at">): string[] {
  const notes: string[] = [];
  if (flags.vmodule) {
    notes.push(
      `-vmodule=${flags.vmodule} has no effect: weft has no per-file verbosity; use --log-level=debug (or -v=1) for everything`,
    );
  }
  if (flags.log_backtrace_at) {
    notes.push(
      `-log_backtrace_at=${flags.log_backtrace_at} has no effect: weft's log records carry the error, not a stack trace of the call site`,
    );
  }
  return notes;
}

/**
 * The etcd endpoints as URLs: `host:port` (which etcd's Go client, and so
 * flannel, takes) becomes `http://host:port`, or `https://` when a client
 * certificate and key are given (flannel then speaks TLS).
 *
 * @param text The `--etcd-endpoints` value.
 * @param tls Whether a client certificate and key are configured.
 * @returns The endpoints, trimmed, without empty entries.
 * @example
 * ```ts
 * etcdEndpointUrls("10.0.0.1:2379, http://10.0.0.2:2379", false);
 * // ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
 * ```
 */
export function etcdEndpointUrls(text: string, tls: boolean): string[] {
  return text.split(",").map((s) => s.trim()).filter(Boolean).map((e) =>
    /^https?:\/\//.test(e) ? e : `${tls ? "https" : "http"}://${e}`
  );
}

/** The known flag nearest to a mistyped one (edit distance ≤ 2), if any. */
function closestFlag(name: string): string | undefined {
  let best: string | undefined;
  let bestDist = 3;
  for (const flag of Object.keys(FLAGS)) {
    // the distance is at least the difference in length: skip the O(n·m) table (a 70 000-character typo took seconds)
    if (Math.abs(name.length - flag.length) >= bestDist) continue;
    const d = editDistance(name, flag);
    if (d < bestDist) {
      best = flag;
      bestDist = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/**
 * The --help text: usage, how the store is chosen, and every flag with its
 * value form and default.
 *
 * @returns The text, without a trailing newline.
 */
export function helpText(): string {
  const lines = [
    "weft — flannel-compatible overlay network agent",
    "",
    "usage: weft [flags]            run the agent",
    "       weft attach <netns>     wire a network namespace into this host's subnet (bridge cni0)",
    "       weft detach <netns>     undo attach",
    "       weft docker-opts [-d file] [-k key] [-c] [-m] [-i]",
    "                               docker options from subnet.env (flannel's mk-docker-opts.sh)",
    "       weft doctor [flags]     check this host (sysctls, MTU, ports, routes, store, clock, peers)",
    "       weft status [flags]     the lease table: from --healthz-port's API, else from the store",
    "",
    "Every flag can also be set as FLANNELD_<FLAG> (e.g. FLANNELD_ETCD_ENDPOINTS) when not given.",
    "Store: --kube-subnet-mgr → Kubernetes; --etcd-endpoints given → etcd; --lease-file given (or that",
    "file exists) → the embedded file store (one machine only, with --net-config-path); else etcd at",
    "flannel's default endpoints.",
    "",
    "flags:",
  ];
  for (const [name, spec] of Object.entries(FLAGS) as [string, FlagSpec][]) {
    const form = spec.kind === "bool" ? "" : ` <${spec.form ?? spec.kind}>`;
    const def = spec.kind === "duration"
      ? formatDuration(spec.def as number)
      : Array.isArray(spec.def)
      ? ""
      : String(spec.def);
    lines.push(`  --${name}${form}`);
    lines.push(`        ${spec.help}${def !== "" && def !== "false" ? ` (default ${def})` : ""}`);
  }
  return lines.join("\n");
}

/** Format milliseconds as a Go-style duration (`24h`, `90s`). */
export function formatDuration(ms: number): string {
  if (ms % 3600_000 === 0) return `${ms / 3600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
