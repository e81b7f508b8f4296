/**
 * Secrets never leave weft: real agents with debug logging, each holding a
 * secret, and every byte they print and every status API answer searched
 * for it — raw, JSON-escaped, URL-encoded, base64 and base64url, and (for
 * the client key) each line of its PEM body.
 *
 * - etcd with TLS client certificates and user/password auth (a short auth
 *   token TTL, so the agent authenticates again while it runs): one agent
 *   with the right password (from `FLANNELD_ETCD_PASSWORD`), one with a
 *   wrong one (on the command line), which fails and says so;
 * - the Kubernetes fake with a bearer token in the kubeconfig: one agent
 *   with the right token (under Bun), one with a wrong token;
 * - the file store, with the etcd password set but unused;
 * - an aws-vpc agent (on the same etcd) against the EC2 and metadata fakes,
 *   signing its EC2 calls with the AWS secret key and session token;
 * - every agent runs with those AWS credentials in its environment.
 *
 * Also: the status API listens on loopback by default — reachable at
 * 127.0.0.1, not at the host's own address.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { Buffer } from "node:buffer";
import { createLab, type Lab, type LabHost } from "./lab/lab.ts";
import { type AgentProcess, type AgentRuntime, startAgent } from "./lab/agents.ts";
import { startEtcd } from "../testing/etcd_server.ts";
import { startLabKube } from "../testing/fake_kube_main.ts";
import { type LabVpc, startLabVpc } from "../testing/aws_lab_main.ts";
import { writeKubeconfig } from "../testing/fake_kube.ts";

const PREFIX = "wsc";
const PORT = 10256;
const AWS_PREFIX = "/weft-aws/network";
const ETCD_USER = "weft";
/** Secrets with characters that URL-encoding and JSON escape differently. */
const SECRETS = {
  etcdPassword: "Wft-etcd/p@ss:w0rd+Q7&x9",
  etcdWrongPassword: "Wft-wrong/p@ss:K2m8%z",
  kubeToken: "wft-kube-token.Zq8Lr2Mx9Pk4Vn7Bt3Yc",
  kubeWrongToken: "wft-wrong-token.Hy6Ju8Ki9Lo0Pq1",
  awsSecretAccessKey: "wftAwsSecret/Key+Ex4mple0123456789abcdEF",
  awsSessionToken: "wftAwsSession//T0ken+Ex4mple/zz9==",
} as const;
const CLOUD_ENV = {
  AWS_ACCESS_KEY_ID: "AKIAWEFTSECURITYTEST",
  AWS_SECRET_ACCESS_KEY: SECRETS.awsSecretAccessKey,
  AWS_SESSION_TOKEN: SECRETS.awsSessionToken,
};
const PATHS = ["/healthz", "/readyz", "/metrics", "/v1/status", "/v1/lease", "/v1/leases", "/"];

/** The forms a secret could be written in. */
function forms(secret: string, user?: string): string[] {
  const b64 = (s: string) => Buffer.from(s).toString("base64");
  const b64url = (s: string) => Buffer.from(s).toString("base64url");
  return [
    secret,
    JSON.stringify(secret).slice(1, -1),
    encodeURIComponent(secret),
    b64(secret),
    b64url(secret),
    ...(user ? [b64(`${user}:${secret}`), b64url(`${user}:${secret}`)] : []),
  ];
}

/** The lines of a PEM's body (each 64 base64 characters of the key). */
function pemBodyLines(pem: string): string[] {
  return pem.split("\n").filter((l) => l.length >= 40 && !l.startsWith("-----"));
}

/** Where in `text` a needle occurs, with context, or null. */
function findLeak(text: string, needles: readonly string[]): string | null {
  for (const n of needles) {
    const i = text.indexOf(n);
    if (i >= 0) {
      return `${JSON.stringify(n)} at …${text.slice(Math.max(0, i - 80), i + n.length + 40)}…`;
    }
  }
  return null;
}

/** The status API's answers, fetched from inside the host. */
async function statusAnswers(lab: Lab, host: LabHost): Promise<string> {
  let out = "";
  for (const p of PATHS) {
    const r = await lab.exec(host.ns, [
      "curl",
      "-sS",
      "--max-time",
      "10",
      `http://127.0.0.1:${PORT}${p}`,
    ]);
    assert.equal(r.code, 0, `GET ${p} on ${host.ns}: ${r.stderr}`);
    out += `\n--- ${p}\n${r.stdout}`;
  }
  return out;
}

Deno.test({
  name:
    "secrets (etcd password, client key, Kubernetes token, cloud credentials) never appear in debug logs, /metrics or the status API; the status API listens on loopback",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const lab = await createLab({ prefix: PREFIX, hosts: 6 });
    const agents: { name: string; agent: AgentProcess; host: LabHost; answers?: string }[] = [];
    try {
      const [h1, h2, h3, h4, h5, h6] = lab.hosts;
      let vpc: LabVpc | undefined;
      const etcd = await startEtcd({
        tls: true,
        auth: { username: ETCD_USER, password: SECRETS.etcdPassword },
        netns: lab.underlay.ns,
        host: lab.underlay.serviceIP,
        extraArgs: ["--auth-token-ttl", "1"], // the agent must authenticate again as it runs
      });
      try {
        await etcd.etcdctl([
          "put",
          "/coreos.com/network/config",
          '{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}',
        ]);
        const keyPem = fs.readFileSync(etcd.tls!.keyFile, "utf8");
        const kube = await startLabKube(lab, { token: SECRETS.kubeToken });
        await kube.control([h3, h4].map((h) => ({
          op: "addNode",
          args: [h.ns, { podCIDRs: [`10.244.${h.index}.0/24`], internalIP: h.ip }],
        })));
        const wrongDir = fs.mkdtempSync(path.join(lab.dir, "wrong-"));
        const wrongKubeconfig = writeKubeconfig(wrongDir, { url: kube.url }, {
          token: SECRETS.kubeWrongToken,
          ca: fs.readFileSync(kube.caFile, "utf8"),
        });
        const kubeConf = path.join(lab.dir, "kube-net-conf.json");
        fs.writeFileSync(kubeConf, '{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}');
        const fileConf = path.join(lab.dir, "file-net-conf.json");
        fs.writeFileSync(fileConf, '{"Network":"10.6.0.0/16","Backend":{"Type":"host-gw"}}');

        const common = ["--iface", "eth0", "--log-level", "debug", "--healthz-port", String(PORT)];
        const etcdArgs = [
          "--etcd-endpoints",
          `https://${lab.underlay.serviceIP}:2379`,
          "--etcd-cafile",
          etcd.tls!.caFile,
          "--etcd-certfile",
          etcd.tls!.certFile,
          "--etcd-keyfile",
          etcd.tls!.keyFile,
          "--etcd-username",
          ETCD_USER,
        ];
        const start = (
          name: string,
          host: LabHost,
          args: string[],
          env: Record<string, string> = {},
          runtime: AgentRuntime = "deno",
        ) => {
          const agent = startAgent(lab, host, {
            runtime,
            args: [...common, ...args],
            env: { ...CLOUD_ENV, ...env },
          });
          agents.push({ name, agent, host });
          return agent;
        };
        const etcdGood = start("etcd, right password", h1, etcdArgs, {
          FLANNELD_ETCD_PASSWORD: SECRETS.etcdPassword,
        });
        const etcdWrong = start("etcd, wrong password", h2, [
          ...etcdArgs,
          "--etcd-password",
          SECRETS.etcdWrongPassword,
        ]);
        const kubeArgs = (kubeconfig: string) => [
          "--kube-subnet-mgr",
          "--kubeconfig-file",
          kubeconfig,
          "--net-config-path",
          kubeConf,
        ];
        const kubeGood = start("kube, right token", h3, kubeArgs(kube.kubeconfig), {
          NODE_NAME: h3.ns,
        }, "bun");
        const kubeWrong = start("kube, wrong token", h4, kubeArgs(wrongKubeconfig), {
          NODE_NAME: h4.ns,
        });
        const file = start("file store", h5, [
          "--net-config-path",
          fileConf,
          "--lease-file",
          path.join(lab.dir, "leases.json"),
        ], { FLANNELD_ETCD_PASSWORD: SECRETS.etcdPassword });

        // aws-vpc against the EC2 and metadata fakes: the AWS credentials sign real requests
        await etcd.etcdctl([
          "put",
          `${AWS_PREFIX}/config`,
          '{"Network":"10.7.0.0/16","Backend":{"Type":"aws-vpc"}}',
        ]);
        vpc = await startLabVpc(lab, { hosts: [h6], network: "10.7.0.0/16" });
        const aws = start("aws-vpc on etcd", h6, [...etcdArgs, "--etcd-prefix", AWS_PREFIX], {
          ...vpc.envFor(h6),
          ...CLOUD_ENV,
          FLANNELD_ETCD_PASSWORD: SECRETS.etcdPassword,
        });

        await Promise.all([etcdGood, kubeGood, file, aws].map((a) => a.waitReady(60_000)));
        const ec2Calls = await vpc.calls();
        assert.ok(
          Object.values(ec2Calls).reduce((a, b) => a + b, 0) > 0,
          `the aws-vpc agent made no EC2 calls: ${JSON.stringify(ec2Calls)}`,
        );
        // the refused ones fail, say why, and keep trying
        const refused = await etcdWrong.waitLog(
          (r) => r.level !== "debug" && /auth|password|denied|refused/i.test(JSON.stringify(r)),
          60_000,
        );
        assert.ok(refused, "the wrong etcd password is refused");
        await kubeWrong.waitLog(
          (r) =>
            r.level !== "debug" && /401|Unauthorized|token|credentials/i.test(JSON.stringify(r)),
          60_000,
        );
        // etcd restarts (its simple auth tokens are gone): the right one authenticates
        // again, and sees a new peer
        await etcdGood.waitLog((r) => r.msg === "peers listed", 30_000);
        const firstAuth = etcdGood.logs().findIndex((r) => /authenticat/i.test(r.msg));
        const beforeRestart = etcdGood.logs().length;
        assert.ok(firstAuth >= 0, "the etcd agent logged its authentication");
        await etcd.restart();
        await etcd.etcdctl([
          "put",
          "/coreos.com/network/subnets/10.5.200.0-24",
          '{"PublicIP":"192.0.2.200","BackendType":"host-gw"}',
        ]);
        await etcdGood.waitLog((r) => /authenticat/i.test(r.msg), 60_000, firstAuth + 1);
        // (as a watch event, or in a re-list if the watch was re-listing when it came)
        await etcdGood.waitLog(
          (r) =>
            (r.msg === "peer added" && r.subnet === "10.5.200.0/24") ||
            (r.msg === "peers listed" && r.peers === 1),
          60_000,
          beforeRestart,
        );

        for (const a of agents) a.answers = await statusAnswers(lab, a.host);

        // loopback only: not at the host's own address, and bound to 127.0.0.1
        const outside = await lab.exec(h1.ns, [
          "curl",
          "-sS",
          "--max-time",
          "3",
          `http://${h1.ip}:${PORT}/healthz`,
        ]);
        assert.notEqual(outside.code, 0, `the status API answered on ${h1.ip}: ${outside.stdout}`);
        const listening = await lab.run(h1.ns, ["ss", "-ltnH", `sport = :${PORT}`]);
        // ss's columns: State Recv-Q Send-Q Local-Address:Port Peer-Address:Port
        const locals = listening.trim().split("\n").map((l) => l.trim().split(/\s+/)[3]);
        assert.deepEqual(
          locals,
          [`127.0.0.1:${PORT}`],
          `listening sockets on :${PORT}:\n${listening}`,
        );

        await Promise.all(agents.map((a) => a.agent.stop()));

        const needles = [
          ...forms(SECRETS.etcdPassword, ETCD_USER),
          ...forms(SECRETS.etcdWrongPassword, ETCD_USER),
          ...forms(SECRETS.kubeToken),
          ...forms(SECRETS.kubeWrongToken),
          ...forms(SECRETS.awsSecretAccessKey),
          ...forms(SECRETS.awsSessionToken),
          ...pemBodyLines(keyPem),
        ];
        const leaks: string[] = [];
        let searched = 0;
        for (const a of agents) {
          const output = a.agent.process.stdout() + a.agent.process.stderr();
          searched += output.length + (a.answers?.length ?? 0);
          const inLogs = findLeak(output, needles);
          if (inLogs) leaks.push(`${a.name}, logs: ${inLogs}`);
          const inApi = findLeak(a.answers ?? "", needles);
          if (inApi) leaks.push(`${a.name}, status API: ${inApi}`);
          // the search was over real output: debug logging was on and the API answered
          assert.ok(
            a.agent.logs().some((r) => r.level === "debug"),
            `${a.name} logged nothing at debug level`,
          );
          assert.match(a.answers ?? "", /weft_/, `${a.name}: /metrics answered`);
        }
        assert.deepEqual(leaks, [], `secrets leaked:\n${leaks.join("\n")}`);
        // what was searched: the records near the secrets were there (the etcd user, the
        // refusals above), so a leak in them would have been seen
        assert.ok(
          etcdGood.logs().some((r) => r.user === ETCD_USER),
          "the etcd agent named its user",
        );
        console.log(
          `searched ${searched} characters of logs and status API answers for ${needles.length} forms of the secrets`,
        );
      } finally {
        await vpc?.stop();
        await etcd.close();
      }
    } finally {
      await Promise.all(agents.map((a) => a.agent.stop().catch(() => 0)));
      await lab.teardown();
    }
  },
});
