/**
 * The cloud route target's contract against the EC2 fake, through the real
 * SDK and the aws-vpc provider (moto runs the same cases in
 * `backends/cloud/aws/provider_moto_test.ts`), and against the GCE fake,
 * through the real Compute client and the gce provider.
 */
import { cloudTargetContract } from "../../testing/cloud_target_contract.ts";
import { makeFakeAwsHarness } from "../../testing/ec2_world.ts";
import { makeFakeGceHarness } from "../../testing/gce_world.ts";

// one attempt per call: the gate, not the SDK, is under test
cloudTargetContract(
  "cloud target on the EC2 fake",
  () => makeFakeAwsHarness("eu-west-3", { maxAttempts: 1 }),
);

// the gce provider never retries: each throttled call reaches the gate
cloudTargetContract("cloud target on the GCE fake", () => makeFakeGceHarness());
