/**
 * Fuzzing etcd's watch stream as the client reads it: each request is
 * answered by a stream of real watch messages (created, puts, deletes,
 * progress, compaction, cancels), some mutated, some lines cut or garbled,
 * the text split into chunks anywhere, the stream ended or broken — or by
 * a refused connection or an HTTP error. Property: every message handed
 * over is well-formed, resumes never go back in revision, the watch ends
 * only when aborted or with an EtcdError etcd decided on, and nothing else
 * is thrown or left unhandled.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { EtcdClient, EtcdError, type EtcdWatchResponse } from "./client.ts";
import { b64, fakeFetch, header } from "../../testing/fake_etcd_gateway.ts";
import { quickClock } from "../../testing/fake_node_api.ts";
import { memoryLogger } from "../../testing/memory_logger.ts";
import {
  assertCleanLog,
  fuzzParameters,
  mutatedJson,
  mutatedText,
  nastyString,
  unclearError,
} from "../../testing/fuzz.ts";

const kv = (key: string, rev: number) => ({
  key: b64(key),
  value: b64('{"PublicIP":"192.0.2.1","PublicIPv6":null}'),
  create_revision: String(rev),
  mod_revision: String(rev),
  version: "1",
  lease: "7587876543210987654",
});
const MESSAGES = [
  { result: { header: header(10), created: true } },
  { result: { header: header(11), events: [{ kv: kv("/p/10.5.1.0-24", 11) }] } },
  {
    result: {
      header: header(13),
      events: [{ kv: kv("/p/10.5.2.0-24", 12) }, {
        type: "DELETE",
        kv: { key: b64("/p/10.5.1.0-24"), mod_revision: "13" },
      }],
    },
  },
  { result: { header: header(20) } },
  { result: { header: header(20), canceled: true, compact_revision: "15" } },
  {
    result: { header: header(20), canceled: true, cancel_reason: "etcdserver: permission denied" },
  },
  { error: { grpc_code: 14, http_code: 503, message: "etcdserver: no leader" } },
];
const LINES = MESSAGES.map((m) => JSON.stringify(m));

/** One answer to a watch request. */
const answer = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("stream" as const),
      lines: fc.array(
        fc.oneof(
          { weight: 4, arbitrary: fc.constantFrom(...LINES.slice(0, 4)) },
          { weight: 3, arbitrary: mutatedJson(MESSAGES, 2).map((m) => JSON.stringify(m) ?? "") },
          { weight: 1, arbitrary: fc.constantFrom(...LINES.slice(4)) },
          { weight: 1, arbitrary: mutatedText(LINES, 2) },
          { weight: 1, arbitrary: nastyString() },
        ),
        { maxLength: 6 },
      ),
      /** Where the text is split into chunks (fractions of its length). */
      cuts: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 5 }),
      /** `end`: the stream ends; `break`: it errors; `cut`: it ends mid-line. */
      ending: fc.constantFrom("end", "break", "cut"),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "refused" as const }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("http" as const),
      status: fc.constantFrom(400, 401, 404, 500, 503),
      body: fc.oneof(
        fc.constant('{"error":"etcdserver: request timed out","code":14}'),
        fc.constant('{"error":"etcdserver: permission denied","code":7}'),
        nastyString(),
      ),
    }),
  },
);
type Answer = typeof answer extends fc.Arbitrary<infer T> ? T : never;

function respond(a: Answer): Response {
  if (a.kind === "refused") throw new TypeError("error sending request: Connection refused");
  if (a.kind === "http") return new Response(a.body, { status: a.status });
  let text = a.lines.map((l) => l + "\n").join("");
  if (a.ending === "cut" && text.length > 1) text = text.slice(0, -Math.ceil(text.length / 3));
  const bytes = new TextEncoder().encode(text);
  const cuts = [...new Set(a.cuts.map((c) => Math.floor(c * bytes.length)))].sort((x, y) => x - y);
  const chunks: Uint8Array[] = [];
  let at = 0;
  for (const c of [...cuts, bytes.length]) {
    if (c > at) chunks.push(bytes.subarray(at, c));
    at = c;
  }
  return new Response(
    new ReadableStream<Uint8Array>({
      start(controller) {
        for (const ch of chunks) controller.enqueue(ch);
        if (a.ending === "break") controller.error(new TypeError("connection reset by peer"));
        else controller.close();
      },
    }),
  );
}

function checkMessage(r: EtcdWatchResponse): void {
  assert.ok(Number.isFinite(r.revision), `revision ${r.revision}`);
  assert.equal(typeof r.created, "boolean");
  for (const e of r.events) {
    assert.ok(e.type === "put" || e.type === "delete");
    assert.equal(typeof e.kv.key, "string");
    assert.equal(typeof e.kv.value, "string");
    assert.ok(Number.isFinite(e.kv.modRevision));
  }
}

Deno.test("fuzz the etcd watch: mutated, cut, split, broken and refused streams (1 000 sequences)", async () => {
  let messages = 0, fatal = 0, streams = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(answer, { minLength: 1, maxLength: 6 }),
      fc.option(fc.integer({ min: 1, max: 100 })),
      async (answers, startRevision) => {
        const script = [...answers];
        let exhausted!: () => void;
        const usedUp = new Promise<void>((resolve) => (exhausted = resolve));
        const { fetch, calls } = fakeFetch(() => {
          const next = script.shift();
          streams++;
          if (next) return respond(next);
          // after the script: a stream that stays open and silent
          exhausted();
          return new Response(new ReadableStream());
        });
        const log = memoryLogger("debug");
        const client = new EtcdClient({
          endpoints: ["http://192.0.2.2:2379"],
          fetch,
          clock: quickClock,
          logger: log,
        });
        const ac = new AbortController();
        const resumes: (number | undefined)[] = [];
        const got: EtcdWatchResponse[] = [];
        let ended: unknown = "not yet";
        const watching = (async () => {
          try {
            for await (
              const r of client.watch("/p/", {
                prefix: true,
                startRevision: startRevision ?? undefined,
                random: () => 0.5,
                onResume: (_e, r) => resumes.push(r.fromRevision),
              }, ac.signal)
            ) {
              checkMessage(r);
              got.push(r);
            }
            ended = null;
          } catch (e) {
            ended = e;
          }
        })();
        // wait until the script is used up (the watch sits on the silent stream) or it ended
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          usedUp,
          watching,
          new Promise((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`the watch stalled after ${calls.length} requests`)),
              10_000,
            );
          }),
        ]).finally(() => clearTimeout(timer));
        ac.abort();
        await watching;
        await client.close();
        messages += got.length;
        if (ended !== null) {
          fatal++;
          const why = unclearError(ended, [EtcdError]);
          assert.equal(why, null, why ?? "");
          assert.ok(
            (ended as EtcdError).code !== undefined,
            "only a failure etcd decided on ends the watch",
          );
        }
        const starts = calls.map((c) =>
          (c.body.create_request as { start_revision?: string }).start_revision
        ).filter((x) => x !== undefined).map(Number);
        for (let i = 1; i < starts.length; i++) {
          assert.ok(starts[i] >= starts[i - 1], `resumed backwards: ${starts.join(", ")}`);
        }
        assertCleanLog(log.lines);
      },
    ),
    fuzzParameters(1_000),
  );
  const runs = fuzzParameters(1_000).numRuns!;
  assert.ok(
    messages > runs / 2 && fatal > 0 && streams > runs,
    `${messages} messages, ${fatal} fatal, ${streams} streams`,
  );
});
