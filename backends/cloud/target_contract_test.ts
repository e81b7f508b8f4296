/**
 * The cloud route target's contract against the EC2 fake, through the real
 * SDK and the aws-vpc provider (moto runs the same cases in
 * `backends/cloud/aws/provider_moto_test.ts`).
 */
import { cloudTargetContract } from "../../testing/cloud_target_contract.ts";
import { makeFakeAwsHarness } from "../../testing/ec2_world.ts";

// one attempt per call: the gate, not the SDK, is under test
cloudTargetContract(
  "cloud target on the EC2 fake",
  () => makeFakeAwsHarness("eu-west-3", { maxAttempts: 1 }),
);
