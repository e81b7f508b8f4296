import assert from "node:assert/strict";
import { ApiCallError } from "./api.ts";

Deno.test("ApiCallError is unreachable when no server answered (code 0), unless told otherwise", () => {
  assert.equal(new ApiCallError("cannot reach the Kubernetes API", 0).unreachable, true);
  assert.equal(new ApiCallError("watching nodes: 503", 503).unreachable, false);
  assert.equal(new ApiCallError("watching nodes: 429", 429).unreachable, false);
  assert.equal(
    new ApiCallError("cannot produce the credentials", 0, { unreachable: false }).unreachable,
    false,
  );
});
