import assert from "node:assert/strict";
import {
  type AgentState,
  type AgentStateName,
  reasonOf,
  transition,
  TRANSITIONS,
} from "./state.ts";

Deno.test("reasonOf() says what the agent waits for, and null only when ready", () => {
  const cases: [AgentState, string | null][] = [
    [{ name: "starting" }, "starting"],
    [{ name: "reading-config", store: "etcd" }, "reading the network config from the etcd store"],
    [
      { name: "reading-config", store: "etcd", error: "etcd unreachable" },
      "reading the network config from the etcd store: etcd unreachable",
    ],
    [{ name: "picking-interface" }, "picking the external interface"],
    [
      { name: "picking-interface", error: "eth0 has no global IPv6 address" },
      "picking the external interface: eth0 has no global IPv6 address",
    ],
    [{ name: "preparing" }, "preparing the host"],
    [{ name: "preparing", error: "EACCES" }, "preparing the host: EACCES"],
    [{ name: "registering", backendType: "vxlan" }, "registering the backend"],
    [{ name: "registering", backendType: "vxlan", acquiring: true }, "acquiring a subnet lease"],
    [
      { name: "registering", backendType: "wireguard", error: "not supported" },
      "registering the wireguard backend: not supported",
    ],
    [{ name: "installing" }, "installing host rules and subnet.env"],
    [{ name: "installing", error: "iptables: exit 4" }, "installing host rules: iptables: exit 4"],
    [{ name: "ready", backendNotReady: null }, null],
    [{ name: "ready", backendNotReady: "flannel0 is down" }, "backend: flannel0 is down"],
    [{ name: "re-acquiring", why: "removed" }, "re-acquiring the lease"],
    [{ name: "re-acquiring", why: "removed", acquiring: true }, "acquiring a subnet lease"],
    [
      { name: "re-acquiring", why: "removed", error: "pool exhausted" },
      "re-acquiring the lease: pool exhausted",
    ],
    [{ name: "stopped" }, "stopped"],
  ];
  for (const [state, want] of cases) assert.equal(reasonOf(state), want, JSON.stringify(state));
});

Deno.test("transition() allows the table's moves and a state to itself", () => {
  const example: Record<AgentStateName, AgentState> = {
    "starting": { name: "starting" },
    "reading-config": { name: "reading-config", store: "file" },
    "picking-interface": { name: "picking-interface" },
    "preparing": { name: "preparing" },
    "registering": { name: "registering", backendType: "alloc" },
    "installing": { name: "installing" },
    "ready": { name: "ready", backendNotReady: null },
    "re-acquiring": { name: "re-acquiring", why: "removed" },
    "stopped": { name: "stopped" },
  };
  const names = Object.keys(example) as AgentStateName[];
  for (const from of names) {
    for (const to of names) {
      const allowed = from === to || TRANSITIONS[from].includes(to);
      if (allowed) {
        assert.equal(transition(example[from], example[to]), example[to], `${from} → ${to}`);
      } else {
        assert.throws(
          () => transition(example[from], example[to]),
          (e: Error) =>
            e instanceof RangeError &&
            e.message.startsWith(`Cannot move the agent from state "${from}" to "${to}"`),
          `${from} → ${to}`,
        );
      }
    }
  }
  // every state but stopped can stop, and nothing leaves stopped
  for (const name of names) {
    if (name !== "stopped") assert.ok(TRANSITIONS[name].includes("stopped"), name);
  }
  assert.deepEqual(TRANSITIONS.stopped, []);
});
