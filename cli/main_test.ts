// These tests stop main() before it picks an interface or starts an agent:
// an agent would touch this host's network namespace.
import assert from "node:assert/strict";
import { type CliIo, main, VERSION } from "./main.ts";
import { FLAGS } from "./flags.ts";

function recordingIo(): CliIo & { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, stdout: (t) => out.push(t), stderr: (t) => err.push(t) };
}

Deno.test("main() returns 2 with one line on stderr for usage errors", async () => {
  const cases: [string[], Record<string, string>, string][] = [
    [["--nope"], {}, "weft: unknown flag --nope; run weft --help for the list"],
    [
      ["--healthz-port"],
      {},
      "weft: flag --healthz-port: missing value; give it as --healthz-port <port> or --healthz-port=<port>",
    ],
    [
      ["--healthz-port=http"],
      {},
      `weft: flag --healthz-port: expected an integer from 0 to 65535, got "http"`,
    ],
    [
      [],
      { FLANNELD_LEASE_TTL: "24" },
      `weft: environment FLANNELD_LEASE_TTL (flag --lease-ttl): expected a duration with a unit, e.g. 24h, 90m, 30s, got "24"`,
    ],
    [
      ["run"],
      {},
      `weft: unexpected argument "run" (commands: attach, detach, docker-opts, doctor, status; run weft --help)`,
    ],
    [
      ["--ip-masq", "false"],
      {},
      `weft: unexpected argument "false" (commands: attach, detach, docker-opts, doctor, status; run weft --help)`,
    ],
    [["attach"], {}, "weft: usage: weft attach <netns name or path> [--subnet-file path]"],
    [
      ["detach", "a", "b"],
      {},
      "weft: usage: weft detach <netns name or path> [--subnet-file path]",
    ],
  ];
  for (const [argv, env, line] of cases) {
    const io = recordingIo();
    const code = await main(argv, env, { io });
    assert.equal(code, 2, argv.join(" "));
    assert.deepEqual(io.err, [line], argv.join(" "));
    assert.deepEqual(io.out, []);
  }
});

Deno.test("main() prints the help and returns 0 for --help and -h, even with other flags", async () => {
  for (const argv of [["--help"], ["-h"], ["-help"], ["--ip-masq", "--help"]]) {
    const io = recordingIo();
    assert.equal(await main(argv, {}, { io }), 0, argv.join(" "));
    assert.equal(io.out.length, 1);
    assert.deepEqual(io.err, []);
    for (const name of Object.keys(FLAGS)) assert.ok(io.out[0].includes(`--${name}`), name);
  }
});

Deno.test("main() prints the version and returns 0 for --version", async () => {
  for (const [argv, env] of [[["--version"], {}], [[], { FLANNELD_VERSION: "true" }]] as const) {
    const io = recordingIo();
    assert.equal(await main(argv, env, { io }), 0);
    assert.equal(io.out.length, 1);
    assert.match(io.out[0], new RegExp(`^weft ${VERSION.replaceAll(".", "\\.")} \\(.+\\)$`));
    assert.deepEqual(io.err, []);
  }
});

Deno.test("main() runs docker-opts with mk-docker-opts.sh's flags, not weft's", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "weft-docker-opts-" });
  try {
    const env = `${dir}/subnet.env`;
    Deno.writeTextFileSync(
      env,
      "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
    );
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(["docker-opts", "-f", env, "-d", "-", "-c"], {}, {
      io: { stdout: (t) => out.push(t), stderr: (t) => err.push(t) },
    });
    assert.equal(code, 0, err.join("\n"));
    assert.equal(out.join("\n"), 'DOCKER_OPTS=" --bip=10.5.52.1/24 --ip-masq=false --mtu=1450"');
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
