import assert from "node:assert/strict";
import { type Ec2CallContext, toProviderError } from "./errors.ts";

const ctx: Ec2CallContext = {
  action: "CreateRoute",
  region: "eu-west-3",
  endpoint: "https://ec2.eu-west-3.amazonaws.com",
  table: "rtb-0123456789abcdef0",
  destination: "10.244.1.0/24",
  target: "eni-0123456789abcdef0",
};

/** An error shaped like the SDK's ServiceException. */
const service = (name: string, status: number, message = "x", attempts = 1) =>
  Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status, attempts } });

Deno.test("toProviderError() maps what the SDK throws to a kind and a message naming the fix", () => {
  const cases: [unknown, string, RegExp][] = [
    [service("RouteAlreadyExists", 400), "exists", /has a route for 10\.244\.1\.0\/24 already/],
    [service("InvalidRoute.NotFound", 400), "not-found", /has no route for 10\.244\.1\.0\/24/],
    [
      service(
        "InvalidParameterValue",
        400,
        "There is no route defined for '10.244.1.0/24' in the route table.",
      ),
      "not-found",
      /\(InvalidParameterValue\); create it instead/,
    ],
    [service("RouteLimitExceeded", 400), "limit", /the table is full \(RouteLimitExceeded\)/],
    [service("RequestLimitExceeded", 503, "x", 3), "throttled", /HTTP 503\) after 3 attempt/],
    [service("ServiceUnavailable", 503), "throttled", /throttled ec2:CreateRoute/],
    [service("UnauthorizedOperation", 403), "denied", /allow the IAM action ec2:CreateRoute/],
    [service("AccessDenied", 403), "denied", /ec2:CreateRoute was denied on rtb-/],
    [
      service("AuthFailure", 401, "AWS was not able to validate the provided access credentials"),
      "denied",
      /refused the credentials .*AuthFailure: AWS was not able/,
    ],
    [
      service("RequestExpired", 400, "Request has expired."),
      "denied",
      /this host's clock is right/,
    ],
    [
      Object.assign(new Error("Could not load credentials from any providers"), {
        name: "CredentialsProviderError",
      }),
      "denied",
      /No AWS credentials .*attach an instance profile/,
    ],
    [
      Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), {
        code: "ECONNREFUSED",
        $metadata: { attempts: 1 },
      }),
      "unavailable",
      /Cannot reach EC2 at https:\/\/ec2\.eu-west-3\.amazonaws\.com for ec2:CreateRoute on rtb-0123456789abcdef0 \(ECONNREFUSED\)/,
    ],
    [
      Object.assign(new TypeError("fetch failed"), { cause: { code: "ENOTFOUND" } }),
      "unavailable",
      /\(ENOTFOUND\)/,
    ],
    [
      service("InternalError", 500, "An internal error has occurred."),
      "unavailable",
      /HTTP 500\): An internal error/,
    ],
    [
      service("InvalidRouteTableID.NotFound", 400),
      "invalid",
      /Route table rtb-0123456789abcdef0 does not exist in eu-west-3/,
    ],
    [
      service("InvalidNetworkInterfaceID.NotFound", 400),
      "invalid",
      /Network interface eni-0123456789abcdef0 does not exist/,
    ],
    [
      service("InvalidParameterValue", 400, "Value (x) is invalid. More."),
      "invalid",
      /EC2 rejected ec2:CreateRoute on rtb-0123456789abcdef0 for 10\.244\.1\.0\/24 \(InvalidParameterValue, HTTP 400\): Value \(x\) is invalid\.$/,
    ],
  ];
  for (const [error, kind, message] of cases) {
    const e = toProviderError(error, ctx);
    assert.equal(e.kind, kind, `${(error as Error).name}: ${e.message}`);
    assert.match(e.message, message);
    assert.equal(e.cause, error, "the SDK's error stays as the cause");
  }
});

Deno.test("toProviderError() keeps UnauthorizedOperation's encoded blob out of the message", () => {
  const e = toProviderError(
    service(
      "UnauthorizedOperation",
      403,
      "You are not authorized to perform this operation. Encoded authorization failure message: " +
        "A".repeat(2000),
    ),
    { ...ctx, action: "ModifyNetworkInterfaceAttribute", table: undefined },
  );
  assert.equal(e.kind, "denied");
  assert.ok(e.message.length < 400, e.message);
  assert.match(
    e.message,
    /^ec2:ModifyNetworkInterfaceAttribute was denied \(UnauthorizedOperation\)/,
  );
});
