import assert from "node:assert/strict";
import {
  effectiveLogLevel,
  etcdEndpointUrls,
  type FlagName,
  FLAGS,
  formatDuration,
  helpText,
  klogNotes,
  parseDuration,
  parseFlags,
  UsageError,
} from "./flags.ts";

/** Expect a UsageError with exactly this one-line message. */
function assertUsage(argv: string[], env: Record<string, string>, message: string): void {
  assert.throws(() => parseFlags(argv, env), (e: unknown) => {
    assert.ok(e instanceof UsageError, `${argv.join(" ")}: ${e}`);
    assert.equal(e.name, "UsageError");
    assert.equal(e.message, message, argv.join(" "));
    assert.ok(!e.message.includes("\n"), "one line");
    return true;
  });
}

Deno.test("parseFlags() accepts Go's four spellings of a flag with a value", () => {
  for (
    const argv of [
      ["-etcd-prefix", "/x"],
      ["-etcd-prefix=/x"],
      ["--etcd-prefix", "/x"],
      ["--etcd-prefix=/x"],
    ]
  ) {
    const f = parseFlags(argv, {});
    assert.equal(f.etcdPrefix, "/x", argv.join(" "));
    assert.ok(f.explicit.has("etcd-prefix"));
    assert.deepEqual(f.args, []);
  }
  // the value may contain "=" and may start with "-"
  assert.equal(parseFlags(["--etcd-password=a=b"], {}).etcdPassword, "a=b");
  assert.equal(parseFlags(["--etcd-password", "-secret"], {}).etcdPassword, "-secret");
  assert.equal(parseFlags(["--etcd-username="], {}).etcdUsername, "");
});

Deno.test("parseFlags() reads booleans as --x, --x=true and --x=false like Go's strconv.ParseBool", () => {
  const cases: [string[], boolean][] = [
    [[], false],
    [["--ip-masq"], true],
    [["-ip-masq"], true],
    [["--ip-masq=true"], true],
    [["--ip-masq=false"], false],
    [["--ip-masq=1"], true],
    [["--ip-masq=0"], false],
    [["--ip-masq=t"], true],
    [["--ip-masq=F"], false],
    [["--ip-masq=TRUE"], true],
    [["--ip-masq=False"], false],
    [["--ip-masq", "--ip-masq=false"], false],
  ];
  for (const [argv, want] of cases) {
    assert.equal(parseFlags(argv, {}).ipMasq, want, argv.join(" "));
  }
  // a bool flag never takes the next argument (Go's rule)
  const f = parseFlags(["--ip-masq", "false"], {});
  assert.equal(f.ipMasq, true);
  assert.deepEqual(f.args, ["false"]);
  // defaults that are true can be turned off
  assert.equal(parseFlags([], {}).iptablesForwardRules, true);
  assert.equal(parseFlags(["--iptables-forward-rules=false"], {}).iptablesForwardRules, false);
});

Deno.test("parseFlags() fills flannel's defaults and marks nothing explicit", () => {
  const f = parseFlags([], {});
  assert.equal(f.etcdEndpoints, "http://127.0.0.1:4001,http://127.0.0.1:2379");
  assert.equal(f.etcdPrefix, "/coreos.com/network");
  assert.equal(f.subnetFile, "/run/flannel/subnet.env");
  assert.equal(f.subnetLeaseRenewMargin, 60);
  assert.equal(f.leaseTtl, 24 * 3600_000);
  assert.equal(f.healthzIp, "127.0.0.1");
  assert.equal(f.healthzPort, 0);
  assert.equal(f.iptablesResync, 5);
  assert.equal(f.kubeAnnotationPrefix, "flannel.alpha.coreos.com");
  assert.equal(f.netConfigPath, "/etc/kube-flannel/net-conf.json");
  assert.equal(f.logFormat, "text");
  assert.equal(f.logLevel, "info");
  assert.deepEqual(f.iface, []);
  assert.deepEqual(f.ifaceRegex, []);
  assert.equal(f.explicit.size, 0);
  // defaults are copies: no two results share a list
  assert.notEqual(parseFlags([], {}).iface, f.iface);
});

Deno.test("parseFlags() collects repeated --iface and --iface-regex in order", () => {
  const f = parseFlags(
    ["--iface", "eth1", "-iface=192.0.2.5", "--iface-regex", "^en", "--iface", "eth0"],
    {},
  );
  assert.deepEqual(f.iface, ["eth1", "192.0.2.5", "eth0"]);
  assert.deepEqual(f.ifaceRegex, ["^en"]);
  assert.ok(f.explicit.has("iface") && f.explicit.has("iface-regex"));
});

Deno.test("parseFlags() uses FLANNELD_* only for flags absent from the command line", () => {
  const env = {
    FLANNELD_ETCD_PREFIX: "/from-env",
    FLANNELD_IP_MASQ: "true",
    FLANNELD_HEALTHZ_PORT: "8471",
    FLANNELD_IFACE: "eth1, 192.0.2.5,,eth0",
    FLANNELD_LEASE_TTL: "1h30m",
    FLANNELD_PUBLIC_IP: "",
    FLANNELD_UNRELATED: "x",
    HOME: "/root",
  };
  const f = parseFlags(["--etcd-prefix=/from-flag"], env);
  assert.equal(f.etcdPrefix, "/from-flag");
  assert.equal(f.ipMasq, true);
  assert.equal(f.healthzPort, 8471);
  assert.deepEqual(f.iface, ["eth1", "192.0.2.5", "eth0"], "lists split on commas");
  assert.equal(f.leaseTtl, 90 * 60_000);
  assert.equal(f.publicIp, "", "an empty variable counts as absent");
  assert.deepEqual(
    [...f.explicit].sort(),
    ["etcd-prefix", "healthz-port", "iface", "ip-masq", "lease-ttl"],
  );
  // a list flag on the command line replaces the variable, it does not add to it
  assert.deepEqual(parseFlags(["--iface=eth7"], env).iface, ["eth7"]);
  // the variable selects the etcd store just like the flag
  assert.ok(
    parseFlags([], { FLANNELD_ETCD_ENDPOINTS: "http://10.0.0.1:2379" }).explicit.has(
      "etcd-endpoints",
    ),
  );
});

Deno.test("parseFlags() reads Go durations and rejects bare numbers", () => {
  const cases: [string, number][] = [
    ["24h", 24 * 3600_000],
    ["1h30m", 90 * 60_000],
    ["90s", 90_000],
    ["500ms", 500 + 0 * 1],
    ["2s", 2000],
    ["1.5h", 90 * 60_000],
    ["1m30s", 90_000],
  ];
  for (const [text, ms] of cases) {
    assert.equal(parseDuration(text), ms, text);
    if (ms >= 2000) assert.equal(parseFlags([`--lease-ttl=${text}`], {}).leaseTtl, ms, text);
  }
  for (const bad of ["", "24", "h", "1d", "1h 30m", " 1h", "-1h", "1.h", "1hh"]) {
    assert.throws(() => parseDuration(bad), SyntaxError, bad);
  }
  const round: [number, string][] = [
    [24 * 3600_000, "24h"],
    [90 * 60_000, "90m"],
    [90_000, "90s"],
    [500, "500ms"],
  ];
  for (const [ms, text] of round) {
    assert.equal(formatDuration(ms), text);
    assert.equal(parseDuration(formatDuration(ms)), ms);
  }
});

Deno.test("parseFlags() usage errors name the flag, the expected form and the value", () => {
  const cases: [string[], Record<string, string>, string][] = [
    [["--nope"], {}, "unknown flag --nope; run weft --help for the list"],
    [["-nope=1"], {}, "unknown flag -nope; run weft --help for the list"],
    [
      ["--ifac", "eth0"],
      {},
      "unknown flag --ifac (did you mean --iface?); run weft --help for the list",
    ],
    [
      ["--ip-masc"],
      {},
      "unknown flag --ip-masc (did you mean --ip-masq?); run weft --help for the list",
    ],
    [
      ["---iface=eth0"],
      {},
      "unknown flag ---iface (did you mean --iface?); run weft --help for the list",
    ],
    [
      ["--etcd-prefix"],
      {},
      "flag --etcd-prefix: missing value; give it as --etcd-prefix <string> or --etcd-prefix=<string>",
    ],
    [
      ["--healthz-port"],
      {},
      "flag --healthz-port: missing value; give it as --healthz-port <port> or --healthz-port=<port>",
    ],
    [
      ["--iface"],
      {},
      "flag --iface: missing value; give it as --iface <name|ip> or --iface=<name|ip>",
    ],
    [
      ["--healthz-port", "http"],
      {},
      `flag --healthz-port: expected an integer from 0 to 65535, got "http"`,
    ],
    [
      ["--healthz-port=1.5"],
      {},
      `flag --healthz-port: expected an integer from 0 to 65535, got "1.5"`,
    ],
    [
      ["--healthz-port=70000"],
      {},
      `flag --healthz-port: expected an integer from 0 to 65535, got "70000"`,
    ],
    [
      ["--healthz-port=-1"],
      {},
      `flag --healthz-port: expected an integer from 0 to 65535, got "-1"`,
    ],
    [
      ["--subnet-lease-renew-margin=0"],
      {},
      `flag --subnet-lease-renew-margin: expected an integer from 1 to 1439, got "0"`,
    ],
    [
      ["--iptables-resync="],
      {},
      `flag --iptables-resync: expected an integer from 1 to 86400, got ""`,
    ],
    [["--ip-masq=yes"], {}, `flag --ip-masq: expected true or false, got "yes"`],
    [
      ["--public-ip=10.0.0.256"],
      {},
      `flag --public-ip: expected an IPv4 address such as 192.0.2.10, got "10.0.0.256"`,
    ],
    [
      ["--public-ip", "fd00::1"],
      {},
      `flag --public-ip: expected an IPv4 address such as 192.0.2.10, got "fd00::1"`,
    ],
    [
      ["--iface-can-reach=example.com"],
      {},
      `flag --iface-can-reach: expected an IPv4 or IPv6 address such as 192.0.2.10 or fd00::10, got "example.com"`,
    ],
    [
      ["--healthz-ip=localhost"],
      {},
      `flag --healthz-ip: expected an IPv4 address such as 192.0.2.10, got "localhost"`,
    ],
    [
      ["--public-ipv6=fd00:::1"],
      {},
      `flag --public-ipv6: expected an IPv6 address, got "fd00:::1"`,
    ],
    [
      ["--etcd-endpoints=127.0.0.1"],
      {},
      `flag --etcd-endpoints: expected comma-separated URLs such as http://10.0.0.1:2379,https://10.0.0.2:2379 (or host:port), got "127.0.0.1"`,
    ],
    [
      ["-logtostderr"],
      {},
      `flag -logtostderr is klog's, and flanneld v0.28 refuses it too ("flag provided but not defined"); weft always logs to stderr: drop it (flannel takes only -v, -vmodule and -log_backtrace_at)`,
    ],
    [
      ["--log_dir=/var/log"],
      {},
      `flag --log_dir is klog's, and flanneld v0.28 refuses it too ("flag provided but not defined"); weft always logs to stderr: drop it (flannel takes only -v, -vmodule and -log_backtrace_at)`,
    ],
    [["-v=high"], {}, `flag --v: expected an integer, got "high"`],
    [["-vmodule=kube"], {}, `flag --vmodule: expected pattern=N[,pattern=N…], got "kube"`],
    [["-log_backtrace_at=kube"], {}, `flag --log_backtrace_at: expected file.go:N, got "kube"`],
    [
      ["--etcd-endpoints=http://a:2379,,http://b:2379"],
      {},
      `flag --etcd-endpoints: expected comma-separated URLs such as http://10.0.0.1:2379,https://10.0.0.2:2379 (or host:port), got "http://a:2379,,http://b:2379"`,
    ],
    [
      ["--etcd-endpoints=http://a:2379/v3/x"],
      {},
      `flag --etcd-endpoints: expected comma-separated URLs such as http://10.0.0.1:2379,https://10.0.0.2:2379 (or host:port), got "http://a:2379/v3/x"`,
    ],
    [["--log-format=xml"], {}, `flag --log-format: expected text or json, got "xml"`],
    [
      ["--log-level=trace"],
      {},
      `flag --log-level: expected debug, info, warn or error, got "trace"`,
    ],
    [
      ["--lease-ttl=24"],
      {},
      `flag --lease-ttl: expected a duration with a unit, e.g. 24h, 90m, 30s, got "24"`,
    ],
    [
      ["--lease-ttl=1d"],
      {},
      `flag --lease-ttl: expected a duration such as 24h, 1h30m, 90s or 500ms, got "1d"`,
    ],
    [
      ["--lease-ttl=500ms"],
      {},
      `flag --lease-ttl: expected a duration of at least 2s, e.g. 24h, 90m, 30s, got "500ms"`,
    ],
    [
      [],
      { FLANNELD_LEASE_TTL: "24" },
      `environment FLANNELD_LEASE_TTL (flag --lease-ttl): expected a duration with a unit, e.g. 24h, 90m, 30s, got "24"`,
    ],
    [
      [],
      { FLANNELD_HEALTHZ_PORT: "x" },
      `environment FLANNELD_HEALTHZ_PORT (flag --healthz-port): expected an integer from 0 to 65535, got "x"`,
    ],
    [
      [],
      { FLANNELD_IP_MASQ: "on" },
      `environment FLANNELD_IP_MASQ (flag --ip-masq): expected true or false, got "on"`,
    ],
    [
      [],
      { FLANNELD_ETCD_ENDPOINTS: "10.0.0.1" },
      `environment FLANNELD_ETCD_ENDPOINTS (flag --etcd-endpoints): expected comma-separated URLs such as http://10.0.0.1:2379,https://10.0.0.2:2379 (or host:port), got "10.0.0.1"`,
    ],
  ];
  for (const [argv, env, message] of cases) assertUsage(argv, env, message);
});

Deno.test("parseFlags() accepts valid values of checked flags", () => {
  const f = parseFlags([
    "--etcd-endpoints=https://10.0.0.1:2379, http://etcd.local:2379/",
    "--public-ip=192.0.2.10",
    "--public-ipv6=fd00::10",
    "--iface-can-reach=198.51.100.1",
    "--healthz-port=65535",
    "--log-format=json",
    "--log-level=debug",
    "--subnet-lease-renew-margin=1439",
  ], {});
  assert.equal(f.etcdEndpoints, "https://10.0.0.1:2379, http://etcd.local:2379/");
  assert.equal(f.publicIp, "192.0.2.10");
  assert.equal(f.publicIpv6, "fd00::10");
  assert.equal(f.ifaceCanReach, "198.51.100.1");
  assert.equal(f.healthzPort, 65535);
  assert.equal(f.logFormat, "json");
  assert.equal(f.logLevel, "debug");
  assert.equal(f.subnetLeaseRenewMargin, 1439);
});

Deno.test("parseFlags() keeps positional arguments, also after -- and between flags", () => {
  const cases: [string[], string[], boolean][] = [
    [["attach", "pod1"], ["attach", "pod1"], false],
    [["attach", "--ip-masq", "pod1"], ["attach", "pod1"], true],
    [["--ip-masq", "--", "--not-a-flag", "-x"], ["--not-a-flag", "-x"], true],
    [["-"], ["-"], false],
  ];
  for (const [argv, args, masq] of cases) {
    const f = parseFlags(argv, {});
    assert.deepEqual(f.args, args, argv.join(" "));
    assert.equal(f.ipMasq, masq, argv.join(" "));
  }
  for (const h of ["-h", "--h", "-help", "--help"]) assert.equal(parseFlags([h], {}).help, true, h);
  assert.equal(parseFlags(["--version"], {}).version, true);
});

Deno.test("helpText() lists every flag with its form and default", () => {
  const text = helpText();
  for (const name of Object.keys(FLAGS) as FlagName[]) {
    assert.match(text, new RegExp(`^  --${name}( <[^>]+>)?$`, "m"), name);
  }
  assert.match(text, /^ {2}--lease-ttl <duration>$/m);
  assert.match(text, /\(default 24h\)/);
  assert.match(text, /\(default http:\/\/127\.0\.0\.1:4001,http:\/\/127\.0\.0\.1:2379\)/);
  assert.match(text, /^ {2}--ip-masq$/m);
  assert.match(text, /FLANNELD_<FLAG>/);
});

Deno.test("parseFlags() takes --iface-can-reach of either family and refuses a malformed --iface-regex", () => {
  assert.equal(parseFlags(["--iface-can-reach", "fd00::12"], {}).ifaceCanReach, "fd00::12");
  assert.equal(parseFlags(["--iface-can-reach=192.0.2.12"], {}).ifaceCanReach, "192.0.2.12");
  assert.throws(
    () => parseFlags(["--iface-regex", "^eth[0-9+$"], {}),
    (e: Error) =>
      e instanceof UsageError &&
      /^flag --iface-regex: expected a valid regular expression \(.*\), got "\^eth\[0-9\+\$"$/.test(
        e.message,
      ),
  );
});

// Found by cli/flags_fuzz_test.ts (counterexample: FLANNELD_IFACE_REGEX="\n"): a list
// variable of only blanks and commas left the flag undefined instead of its default, so
// the agent crashed reading `flags.ifaceRegex.length`.
Deno.test("parseFlags() treats a list variable of blanks and commas as unset", () => {
  for (const raw of ["\n", " ", ",", " , ,"]) {
    const f = parseFlags([], { FLANNELD_IFACE_REGEX: raw, FLANNELD_IFACE: raw });
    assert.deepEqual(f.ifaceRegex, []);
    assert.deepEqual(f.iface, []);
    assert.ok(!f.explicit.has("iface"));
  }
});

// Found by the same fuzz test: usage errors quoted whole values (a 70 000-character one
// made a 70 000-character line), an unknown flag with a newline broke the one-line rule,
// and suggesting a near flag for a 70 000-character typo took seconds.
Deno.test("parseFlags() usage errors stay one short line whatever was typed", () => {
  const cases: [string[], Record<string, string>][] = [
    [["--etcd-endpoints", "a".repeat(70_000)], {}],
    [[], { FLANNELD_ETCD_ENDPOINTS: "a".repeat(70_000) }],
    [["-\t\r\n"], {}],
    [["--" + "x".repeat(70_000)], {}],
  ];
  for (const [argv, env] of cases) {
    assert.throws(() => parseFlags(argv, env), (e: unknown) => {
      assert.ok(e instanceof UsageError);
      assert.ok(!e.message.includes("\n") && e.message.length < 400, e.message.slice(0, 500));
      return true;
    });
  }
});

Deno.test("parseFlags() takes flannel's three klog flags, also from FLANNELD_V and friends", () => {
  const f = parseFlags(["-v=2", "--vmodule=kube=4,main=1", "-log_backtrace_at", "kube.go:100"], {});
  assert.deepEqual([f.v, f.vmodule, f.log_backtrace_at], [2, "kube=4,main=1", "kube.go:100"]);
  const e = parseFlags([], {
    FLANNELD_V: "3",
    FLANNELD_VMODULE: "x=1",
    FLANNELD_LOG_BACKTRACE_AT: "a.go:1",
  });
  assert.deepEqual([e.v, e.vmodule, e.log_backtrace_at], [3, "x=1", "a.go:1"]);
  assert.deepEqual([parseFlags([], {}).v, parseFlags([], {}).vmodule], [0, ""]);
});

Deno.test("effectiveLogLevel() turns -v ≥ 1 into debug unless --log-level is given", () => {
  const level = (argv: string[]) => effectiveLogLevel(parseFlags(argv, {}));
  assert.equal(level([]), "info");
  assert.equal(level(["-v=0"]), "info");
  assert.equal(level(["-v=1"]), "debug");
  assert.equal(level(["-v", "4"]), "debug");
  assert.equal(level(["-v=4", "--log-level=warn"]), "warn");
  assert.equal(level(["--log-level=error"]), "error");
  assert.equal(effectiveLogLevel(parseFlags([], { FLANNELD_V: "2" })), "debug");
});

Deno.test("klogNotes() says which accepted klog flags have no effect", () => {
  assert.deepEqual(klogNotes(parseFlags(["-v=3"], {})), []);
  const notes = klogNotes(parseFlags(["-vmodule=kube=4", "-log_backtrace_at=kube.go:1"], {}));
  assert.equal(notes.length, 2);
  assert.match(notes[0], /^-vmodule=kube=4 has no effect: .*--log-level=debug/);
  assert.match(notes[1], /^-log_backtrace_at=kube\.go:1 has no effect/);
});

Deno.test("parseFlags() takes --ip-blackhole-route (flannel's, default off)", () => {
  assert.equal(parseFlags([], {}).ipBlackholeRoute, false);
  assert.equal(parseFlags(["--ip-blackhole-route"], {}).ipBlackholeRoute, true);
  assert.equal(parseFlags([], { FLANNELD_IP_BLACKHOLE_ROUTE: "true" }).ipBlackholeRoute, true);
});

Deno.test("etcdEndpointUrls() gives host:port endpoints the scheme etcd's Go client would use", () => {
  assert.deepEqual(etcdEndpointUrls("10.0.0.1:2379, http://10.0.0.2:2379/,", false), [
    "http://10.0.0.1:2379",
    "http://10.0.0.2:2379/",
  ]);
  assert.deepEqual(etcdEndpointUrls("10.0.0.1:2379,[fd00::1]:2379,http://x:1", true), [
    "https://10.0.0.1:2379",
    "https://[fd00::1]:2379",
    "http://x:1",
  ]);
  // and the flag takes them
  assert.equal(
    parseFlags(["--etcd-endpoints=10.0.0.1:2379,[fd00::1]:2379"], {}).etcdEndpoints,
    "10.0.0.1:2379,[fd00::1]:2379",
  );
});

// Found by cli/flags_fuzz_test.ts after main's klog flags came in (seed 44682845):
// FLANNELD_V="9999…9" (400 digits) was taken as -v=Infinity.
Deno.test("parseFlags() refuses an integer out of range instead of taking Infinity", () => {
  for (
    const [argv, env] of [[["-v", "9".repeat(400)], {}], [[], {
      FLANNELD_V: "9".repeat(400),
    }]] as const
  ) {
    assert.throws(() => parseFlags([...argv], { ...env }), (e: unknown) => {
      assert.ok(e instanceof UsageError, String(e));
      assert.match(e.message, /an integer/);
      assert.ok(!e.message.includes("\n") && e.message.length < 400, e.message);
      return true;
    });
  }
  assert.equal(parseFlags(["-v", "9007199254740991"], {}).v, 9007199254740991);
});
