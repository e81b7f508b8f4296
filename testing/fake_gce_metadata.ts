/**
 * The metadata server of one fake GCE VM (see `fake_gce.ts`): the handler
 * for `/computeMetadata/v1/…` as GCE serves it. It refuses requests without
 * `Metadata-Flavor: Google` or with `X-Forwarded-For` (403), and marks
 * every reply with `Metadata-Flavor: Google` unless told to play an
 * impostor. Tokens come from the shared fake, so the Compute fake accepts
 * them.
 *
 * @module
 */

/** Who the VM is. */
export interface FakeVm {
  readonly projectId: string;
  readonly projectNumber: string;
  readonly zone: string;
  readonly name: string;
  /** What `instance/hostname` says: a custom hostname, deliberately not the instance name. */
  readonly hostname: string;
  /** The network of its first NIC (a name in the project's network). */
  readonly network: string;
  /** The first NIC's address, if the test gave one. */
  readonly ip?: string;
}

/** What the metadata servers of all fake VMs share. */
export interface MetadataState {
  /** Send `Metadata-Flavor: Google` on replies. */
  flavor: boolean;
  /** VMs have a service account (else token, email and scopes answer 404). */
  serviceAccount: boolean;
  /** Scopes of the tokens issued now. */
  scopes: readonly string[];
  /** Issue a token: `{ access_token, expires_in, token_type }`. */
  issueToken(): Record<string, unknown>;
  /** Count a call, e.g. `metadata.instance/name`. */
  count(method: string): void;
}

/**
 * The request handler of one VM's metadata server.
 *
 * @param vm The VM.
 * @param state What all VMs share.
 * @returns A fetch handler.
 */
export function metadataHandler(vm: FakeVm, state: MetadataState): (req: Request) => Response {
  return (req) => {
    const path = new URL(req.url).pathname.replace(/^\/computeMetadata\/v1\//, "");
    state.count(`metadata.${path}`);
    const headers: Record<string, string> = { "Content-Type": "application/text" };
    if (state.flavor) headers["Metadata-Flavor"] = "Google";
    if (req.headers.get("metadata-flavor") !== "Google" || req.headers.has("x-forwarded-for")) {
      return new Response("Missing required header: Metadata-Flavor: Google\n", {
        status: 403,
        headers,
      });
    }
    const values: Record<string, string> = {
      "project/project-id": vm.projectId,
      "project/numeric-project-id": vm.projectNumber,
      "instance/zone": `projects/${vm.projectNumber}/zones/${vm.zone}`,
      "instance/name": vm.name,
      "instance/hostname": vm.hostname,
      "instance/network-interfaces/0/network":
        `projects/${vm.projectNumber}/networks/${vm.network}`,
    };
    if (vm.ip) values["instance/network-interfaces/0/ip"] = vm.ip;
    if (state.serviceAccount) {
      values["instance/service-accounts/default/email"] =
        `weft@${vm.projectId}.iam.gserviceaccount.com`;
      values["instance/service-accounts/default/scopes"] = state.scopes.join("\n") + "\n";
      if (path === "instance/service-accounts/default/token") {
        return Response.json(state.issueToken(), { headers });
      }
    }
    const value = values[path];
    if (value === undefined) return new Response("Not Found\n", { status: 404, headers });
    return new Response(value, { headers });
  };
}
