/**
 * A stand-in for a cloud module (`backends/cloud/aws/mod.ts`): it imports
 * the EC2 SDK, states the route provider API version it implements, and
 * throws a `RouteProviderError`, so the split-module mechanism can be proven
 * before the real cloud modules exist. Never imported by product code.
 *
 * @module
 */

import { EC2Client } from "@aws-sdk/client-ec2";
import { ROUTE_PROVIDER_API_VERSION, RouteProviderError } from "../../backends/cloud/provider.ts";

export { ROUTE_PROVIDER_API_VERSION };

/** The SDK's service id, from a real client object (proves the SDK is loaded and works). */
export function serviceId(): string {
  const client = new EC2Client({ region: "eu-west-1", endpoint: "http://127.0.0.1:1" });
  const id = (client.config as { serviceId?: string }).serviceId ?? "";
  client.destroy();
  return id;
}

/** Throws the provider seam's error, as a real provider does on a refused call. */
export function failDenied(): never {
  throw new RouteProviderError(
    "denied",
    "ec2:CreateRoute denied: grant it to the instance role (stand-in)",
  );
}
