/**
 * The gce provider never lets its access token out: the metadata server's
 * tokens ride in every Compute call's `Authorization` header, and no error
 * the provider throws — through every failure the fake can produce — nor
 * what the agent's logger writes of it (text and JSON, debug level, causes
 * included) holds a token, raw, URL-encoded or base64. (An agent on the gce
 * backend is not wired yet, so this is the provider-level half of
 * test/e2e_security_test.ts.)
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { inspect } from "node:util";
import { startFakeGce } from "../../../testing/fake_gce.ts";
import { createLogger } from "../../../core/log.ts";
import { type Clock, systemClock } from "../../../core/clock.ts";
import { createGceMetadata } from "./metadata.ts";
import { createGceRouteProvider } from "./provider.ts";

Deno.test({
  name:
    "gce: no error the provider throws, nor its log lines, holds an access token (throttled, denied, read-only scope, unauthenticated, server errors, lost service account)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const fake = await startFakeGce();
    // the metadata client's clock runs ahead on demand: its cached token expires at once
    let ahead = 0;
    const clock: Clock = { now: () => systemClock.now() + ahead, sleep: systemClock.sleep };
    const expireToken = () => ahead += 3600_000;
    const lines: string[] = [];
    const logs = [
      createLogger({ level: "debug", format: "text", write: (l) => lines.push(l) }),
      createLogger({ level: "debug", format: "json", write: (l) => lines.push(l) }),
    ];
    const provider = createGceRouteProvider({
      env: fake.env,
      metadata: createGceMetadata({ env: fake.env, clock }),
      operationPollMs: 1,
    });
    const errors: unknown[] = [];
    const attempt = async (what: string, call: () => Promise<unknown>) => {
      try {
        const r = await call();
        for (const log of logs) log.debug(what, { result: r });
      } catch (e) {
        errors.push(e);
        for (const log of logs) {
          log.warn(`${what} failed`, { error: e });
          log.debug(`${what} failed`, { error: e, cause: (e as Error).cause });
        }
      }
    };
    try {
      const table = fake.networkLink;
      const target = fake.instanceLink;
      const dest = "10.244.1.0/24";
      const round = async (tag: string) => {
        await attempt(`${tag} discover`, () => provider.discover());
        await attempt(`${tag} list`, () => provider.list(table));
        await attempt(`${tag} create`, () => provider.create(table, dest, target));
        await attempt(`${tag} replace`, () => provider.replace(table, dest, target));
        await attempt(`${tag} remove`, () => provider.remove(table, dest));
      };
      await round("plain");
      fake.throttle(3);
      await round("throttled");
      fake.throttle(1, 429);
      await round("429");
      for (const p of ["compute.routes.list", "compute.routes.create", "compute.routes.delete"]) {
        fake.deny(p);
        await round(`denied ${p}`);
        fake.allow(p);
      }
      fake.setScopes(["https://www.googleapis.com/auth/compute.readonly"]);
      expireToken(); // a new, read-only token
      await round("read-only scope");
      fake.setScopes(["https://www.googleapis.com/auth/cloud-platform"]);
      for (const [status, reason] of [[401, "authError"], [500, "backendError"], [503, "x"]]) {
        fake.failNext({
          status: status as number,
          body: { error: { code: status, message: `fake ${reason}`, errors: [{ reason }] } },
        });
        await round(`HTTP ${status}`);
      }
      fake.setMetadataFlavor(false);
      expireToken();
      await round("metadata without flavor");
      fake.setMetadataFlavor(true);
      fake.removeServiceAccount();
      expireToken();
      await round("no service account");

      const tokens = fake.issuedTokens;
      assert.ok(tokens.length >= 2, `only ${tokens.length} token(s) issued`);
      assert.ok(errors.length >= 20, `only ${errors.length} errors were thrown`);
      const needles = tokens.flatMap((t) => [
        t,
        encodeURIComponent(t),
        Buffer.from(t).toString("base64"),
        Buffer.from(`Bearer ${t}`).toString("base64"),
      ]);
      const texts = [
        ...lines,
        ...errors.map((e) => `${e}`),
        ...errors.map((e) => JSON.stringify(e)),
      ];
      for (const text of texts) {
        for (const n of needles) {
          assert.ok(!text.includes(n), `an access token leaked: …${text.slice(0, 400)}…`);
        }
      }
      // deeper than the logger goes: the whole error object graph
      const deep = errors.map((e) => inspect(e, { depth: 8, showHidden: false })).join("\n");
      const deepLeak = needles.find((n) => deep.includes(n));
      assert.equal(deepLeak, undefined, "an access token is held in a thrown error's properties");
      console.log(
        `${tokens.length} tokens, ${errors.length} errors, ${lines.length} log lines searched`,
      );
    } finally {
      await provider.close();
      await fake.close();
    }
  },
});
