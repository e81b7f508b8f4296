/**
 * `weft docker-opts` against the bytes flannel's `dist/mk-docker-opts.sh`
 * (v0.28.9) writes when dash runs it: every expected file below was produced
 * by the script itself, `env -i PATH=… sh mk-docker-opts.sh -f <env> -d out
 * <flags>`, for each subnet.env and flag combination.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  conflictingRoutes,
  DOCKER_OPTS_USAGE,
  dockerOptsCommand,
  type DockerOptsFlags,
  parseDockerOptsArgs,
  renderDockerOpts,
} from "./docker_opts.ts";
import { parseSubnetEnvVars } from "../lease/subnet_env.ts";

const ENV_FILES: Record<string, string> = {
  masq:
    "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
  noMasq:
    "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
  dualStack: "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\n" +
    "FLANNEL_IPV6_NETWORK=fd00:10:5::/48\nFLANNEL_IPV6_SUBNET=fd00:10:5:34::1/64\n" +
    "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
  ipv6Only: "FLANNEL_IPV6_NETWORK=fd00:10:5::/48\nFLANNEL_IPV6_SUBNET=fd00:10:5:34::1/64\n" +
    "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
  noIpMasqVar: "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1450\n",
  badIpMasq:
    "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=yes\n",
};

const BIP = 'DOCKER_OPT_BIP="--bip=10.5.52.1/24"\n';
const MASQ_OFF = 'DOCKER_OPT_IPMASQ="--ip-masq=false"\n';
const MASQ_ON = 'DOCKER_OPT_IPMASQ="--ip-masq=true"\n';
const MTU = 'DOCKER_OPT_MTU="--mtu=1450"\n';

/** [subnet.env, flags, the script's output file]. */
const GOLDEN: [string, string[], string][] = [
  // weft masquerades (FLANNEL_IPMASQ=true): Docker must not (--ip-masq=false)
  [
    "masq",
    [],
    BIP + MASQ_OFF + MTU + 'DOCKER_OPTS=" --bip=10.5.52.1/24 --ip-masq=false --mtu=1450"\n',
  ],
  ["masq", ["-i"], BIP + MASQ_OFF + MTU],
  ["masq", ["-c"], 'DOCKER_OPTS=" --bip=10.5.52.1/24 --ip-masq=false --mtu=1450"\n'],
  [
    "masq",
    ["-ic"],
    BIP + MASQ_OFF + MTU + 'DOCKER_OPTS=" --bip=10.5.52.1/24 --ip-masq=false --mtu=1450"\n',
  ],
  ["masq", ["-m"], BIP + MTU + 'DOCKER_OPTS=" --bip=10.5.52.1/24 --mtu=1450"\n'],
  ["masq", ["-c", "-m"], 'DOCKER_OPTS=" --bip=10.5.52.1/24 --mtu=1450"\n'],
  ["masq", ["-i", "-m"], BIP + MTU],
  [
    "masq",
    ["-k", "FOO"],
    BIP + MASQ_OFF + MTU + 'FOO=" --bip=10.5.52.1/24 --ip-masq=false --mtu=1450"\n',
  ],
  ["masq", ["-k", "FOO", "-c"], 'FOO=" --bip=10.5.52.1/24 --ip-masq=false --mtu=1450"\n'],
  // weft does not masquerade: Docker does (--ip-masq=true)
  [
    "noMasq",
    [],
    BIP + MASQ_ON + MTU + 'DOCKER_OPTS=" --bip=10.5.52.1/24 --ip-masq=true --mtu=1450"\n',
  ],
  ["noMasq", ["-c"], 'DOCKER_OPTS=" --bip=10.5.52.1/24 --ip-masq=true --mtu=1450"\n'],
  ["noMasq", ["-i"], BIP + MASQ_ON + MTU],
  ["noMasq", ["-c", "-m"], 'DOCKER_OPTS=" --bip=10.5.52.1/24 --mtu=1450"\n'],
  ["noMasq", ["-k", "FOO", "-c"], 'FOO=" --bip=10.5.52.1/24 --ip-masq=true --mtu=1450"\n'],
  // IPv6: the script reads FLANNEL_IPV6_* and gives Docker nothing for them
  [
    "dualStack",
    [],
    BIP + MASQ_OFF + MTU + 'DOCKER_OPTS=" --bip=10.5.52.1/24 --ip-masq=false --mtu=1450"\n',
  ],
  ["dualStack", ["-c", "-m"], 'DOCKER_OPTS=" --bip=10.5.52.1/24 --mtu=1450"\n'],
  ["ipv6Only", [], MASQ_ON + MTU + 'DOCKER_OPTS=" --ip-masq=true --mtu=1450"\n'],
  ["ipv6Only", ["-m"], MTU + 'DOCKER_OPTS=" --mtu=1450"\n'],
  ["ipv6Only", ["-i"], MASQ_ON + MTU],
  // no FLANNEL_IPMASQ: no --ip-masq either way; a bad one is ignored with -m
  ["noIpMasqVar", [], BIP + MTU + 'DOCKER_OPTS=" --bip=10.5.52.1/24 --mtu=1450"\n'],
  ["noIpMasqVar", ["-k", "FOO"], BIP + MTU + 'FOO=" --bip=10.5.52.1/24 --mtu=1450"\n'],
  ["badIpMasq", ["-m"], BIP + MTU + 'DOCKER_OPTS=" --bip=10.5.52.1/24 --mtu=1450"\n'],
  ["badIpMasq", ["-c", "-m"], 'DOCKER_OPTS=" --bip=10.5.52.1/24 --mtu=1450"\n'],
];

function render(envName: string, argv: string[], env: Record<string, string> = {}): string {
  const flags = parseDockerOptsArgs(argv);
  const vars: Record<string, string> = {
    ...env,
    ...Object.fromEntries(parseSubnetEnvVars(ENV_FILES[envName])),
  };
  return renderDockerOpts(vars, flags);
}

Deno.test("renderDockerOpts() writes mk-docker-opts.sh's exact bytes for each flag combination", () => {
  for (const [envName, argv, expected] of GOLDEN) {
    assert.equal(render(envName, argv), expected, `${envName} ${argv.join(" ")}`);
  }
});

Deno.test("renderDockerOpts() starts the combined value with $KEY from the environment and adds its DOCKER_OPT_* in name order", () => {
  // the script: eval docker_opts="$DOCKER_OPTS"; a non-empty value gets a space, then " value" per option
  assert.equal(
    render("masq", [], { DOCKER_OPTS: "--foo" }),
    BIP + MASQ_OFF + MTU + 'DOCKER_OPTS="--foo  --bip=10.5.52.1/24 --ip-masq=false --mtu=1450"\n',
  );
  assert.equal(
    render("masq", ["-c", "-k", "NET"], { NET: "--dns=1.1.1.1", DOCKER_OPTS: "--ignored" }),
    'NET="--dns=1.1.1.1  --bip=10.5.52.1/24 --ip-masq=false --mtu=1450"\n',
  );
  assert.equal(
    render("masq", [], { DOCKER_OPT_ZZ: "--zz", DOCKER_OPT_AA: "--aa" }),
    'DOCKER_OPT_AA="--aa"\n' + BIP + MASQ_OFF + MTU + 'DOCKER_OPT_ZZ="--zz"\n' +
      'DOCKER_OPTS=" --aa --bip=10.5.52.1/24 --ip-masq=false --mtu=1450 --zz"\n',
  );
});

Deno.test("renderDockerOpts() rejects an FLANNEL_IPMASQ that is neither true nor false, naming -m", () => {
  for (const argv of [[], ["-i"], ["-c"], ["-k", "FOO"]]) {
    assert.throws(
      () => render("badIpMasq", argv),
      /^DockerOptsError: Invalid value of FLANNEL_IPMASQ: yes \(.*-m/,
    );
  }
});

Deno.test("parseDockerOptsArgs() reads getopts-style flags: grouped, attached or separate arguments, -- and the first operand end them", () => {
  const base: DockerOptsFlags = {
    envFile: "/run/flannel/subnet.env",
    outFile: "/run/docker_opts.env",
    individual: true,
    combined: true,
    ipMasq: true,
    combinedKey: "DOCKER_OPTS",
  };
  const cases: [string[], Partial<DockerOptsFlags>][] = [
    [[], {}],
    [["-i"], { combined: false }],
    [["-c"], { individual: false }],
    [["-ic"], {}],
    [["-cm"], { individual: false, ipMasq: false }],
    [["-f", "/x/subnet.env", "-d/y/opts"], { envFile: "/x/subnet.env", outFile: "/y/opts" }],
    [["-ckDOCKER_NETWORK_OPTIONS"], { individual: false, combinedKey: "DOCKER_NETWORK_OPTIONS" }],
    [["-k", "FOO", "extra", "-c"], { combinedKey: "FOO" }],
    [["-i", "--", "-c"], { combined: false }],
    [["-d", "-"], { outFile: "-" }],
  ];
  for (const [argv, diff] of cases) {
    assert.deepEqual(parseDockerOptsArgs(argv), { ...base, ...diff }, argv.join(" "));
  }
});

Deno.test("parseDockerOptsArgs() fails on -h, unknown options, a missing argument and a -k that is no variable name", () => {
  assert.throws(() => parseDockerOptsArgs(["-h"]), { name: "DockerOptsUsageError", message: "" });
  assert.throws(() => parseDockerOptsArgs(["-x"]), { message: "Illegal option -x" });
  assert.throws(() => parseDockerOptsArgs(["-k"]), { message: "No arg for -k option" });
  assert.throws(
    () => parseDockerOptsArgs(["-k", "A B"]),
    /shell variable name, current value is "A B"/,
  );
});

Deno.test("conflictingRoutes() finds a route via a gateway to the subnet's network, exactly", () => {
  const routes = [
    "default via 192.0.2.1 dev eth0",
    "10.5.52.0/24 via 192.0.2.9 dev eth0 onlink",
    "110.5.52.0/24 via 192.0.2.9 dev eth0",
    "10.5.53.0/24 via 10.5.53.0 dev flannel.1 onlink",
    "10.5.52.0/24 dev docker0 proto kernel scope link src 10.5.52.1",
  ].join("\n");
  assert.deepEqual(conflictingRoutes("10.5.52.1/24", routes), [
    "10.5.52.0/24 via 192.0.2.9 dev eth0 onlink",
  ]);
  assert.deepEqual(conflictingRoutes("10.5.54.1/24", routes), []);
  assert.deepEqual(conflictingRoutes("fd00::1/64", routes), []);
});

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "weft-docker-opts-"));
}

Deno.test("dockerOptsCommand() reads -f and writes -d atomically (0644), as the script's defaults", async () => {
  const dir = tempDir();
  try {
    const envFile = path.join(dir, "subnet.env");
    fs.writeFileSync(envFile, ENV_FILES.noMasq);
    const out = path.join(dir, "run", "docker_opts.env");
    const code = await dockerOptsCommand(["-f", envFile, "-d", out], {
      env: {},
      listRoutes: () => Promise.resolve("default via 192.0.2.1 dev eth0\n"),
    });
    assert.equal(code, 0);
    assert.equal(
      fs.readFileSync(out, "utf8"),
      BIP + MASQ_ON + MTU + 'DOCKER_OPTS=" --bip=10.5.52.1/24 --ip-masq=true --mtu=1450"\n',
    );
    assert.equal(fs.statSync(out).mode & 0o777, 0o644);
    assert.deepEqual(fs.readdirSync(path.dirname(out)), ["docker_opts.env"]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("dockerOptsCommand() prints to stdout with -d -, and the file's values win over the environment's", async () => {
  let stdout = "";
  const code = await dockerOptsCommand(["-c", "-d", "-"], {
    env: { FLANNEL_MTU: "9000", FLANNEL_SUBNET: "10.9.9.1/24" },
    readFile: (p) => {
      assert.equal(p, "/run/flannel/subnet.env");
      return ENV_FILES.masq;
    },
    listRoutes: () => Promise.resolve(""),
    stdout: (t) => (stdout += t),
  });
  assert.equal(code, 0);
  assert.equal(stdout, 'DOCKER_OPTS=" --bip=10.5.52.1/24 --ip-masq=false --mtu=1450"\n');
});

Deno.test("dockerOptsCommand() fails with what to fix: missing subnet.env, bad FLANNEL_IPMASQ, a conflicting route, usage", async () => {
  const run = async (argv: string[], file: string | null, routes = "") => {
    let stderr = "";
    let written = false;
    const code = await dockerOptsCommand(argv, {
      env: {},
      readFile: () => {
        if (file === null) throw Object.assign(new Error("no such file"), { code: "ENOENT" });
        return file;
      },
      writeFile: () => (written = true),
      listRoutes: () => Promise.resolve(routes),
      stderr: (t) => (stderr += t),
    });
    return { code, stderr, written };
  };
  const missing = await run(["-f", "/run/flannel/subnet.env"], null);
  assert.deepEqual([missing.code, missing.written], [1, false]);
  assert.match(missing.stderr, /cannot read \/run\/flannel\/subnet\.env: ENOENT; start weft first/);

  const bad = await run([], ENV_FILES.badIpMasq);
  assert.deepEqual([bad.code, bad.written], [1, false]);
  assert.match(bad.stderr, /Invalid value of FLANNEL_IPMASQ: yes/);

  const conflict = await run([], ENV_FILES.masq, "10.5.52.0/24 via 192.0.2.9 dev eth0\n");
  assert.deepEqual([conflict.code, conflict.written], [1, false]);
  assert.match(
    conflict.stderr,
    /already contains the subnet: 10\.5\.52\.0\/24 via 192\.0\.2\.9 dev eth0/,
  );

  const usage = await run(["-x"], ENV_FILES.masq);
  assert.deepEqual([usage.code, usage.written], [1, false]);
  assert.equal(usage.stderr, `Illegal option -x\n${DOCKER_OPTS_USAGE}`);
});
