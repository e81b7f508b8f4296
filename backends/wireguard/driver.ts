/**
 * How weft drives a WireGuard device: {@link WireguardDriver} is the seam,
 * with two implementations:
 * - userspace ({@link userspaceDriver}): `wireguard-go <dev>`, started by
 *   weft when its UAPI socket (`/var/run/wireguard/<dev>.sock`) does not
 *   answer, or one already running; configured over the UAPI socket. It
 *   daemonizes, so it outlives the agent: a restarted agent finds it
 *   running with its peers, and traffic never stops.
 * - kernel (`kernel_driver.ts`): the `wireguard` link type and generic
 *   netlink family `wireguard`.
 *
 * {@link chooseDriver} picks one: `kernel` when the genl family resolves,
 * else `userspace`; the config's `Driver` or `WEFT_WIREGUARD_DRIVER` forces
 * one.
 *
 * @module
 */

import * as fs from "node:fs";
import { type Exec, systemExec } from "../../core/exec.ts";
import { sleepQuietly } from "../../core/abort.ts";
import { type Clock, systemClock } from "../../core/clock.ts";
import {
  answerErrno,
  type DeviceConfig,
  type DeviceState,
  encodeSet,
  parseGet,
  UAPI_DIR,
  UapiError,
  uapiRequest,
} from "./uapi.ts";

/** A way to create and configure WireGuard devices. */
export interface WireguardDriver {
  /** `kernel` (generic netlink) or `userspace` (wireguard-go over UAPI). */
  readonly kind: "kernel" | "userspace";
  /**
   * Make the device exist (start wireguard-go / create the link).
   *
   * @returns What was done, for logs; empty when it was there.
   */
  ensure(device: string, signal: AbortSignal): Promise<string[]>;
  /** The device's key, port and peers. */
  get(device: string): Promise<DeviceState>;
  /** Apply a configuration change. */
  set(device: string, config: DeviceConfig): Promise<void>;
}

/** Options for {@link userspaceDriver}. */
export interface UserspaceDriverOptions {
  /** The wireguard-go program (default `wireguard-go`, from PATH). */
  readonly program?: string;
  /** Where UAPI sockets live (default `/var/run/wireguard`). */
  readonly socketDir?: string;
  /** Runs wireguard-go (default: the system's). */
  readonly exec?: Exec;
  /** How long to wait for a started wireguard-go's socket (default 5000 ms). */
  readonly startTimeoutMs?: number;
  /** For the wait (default: the system clock). */
  readonly clock?: Clock;
}

/**
 * The wireguard-go driver.
 *
 * @param options Program, socket directory, exec.
 * @returns The driver.
 * @example
 * ```ts
 * const driver = userspaceDriver();
 * await driver.ensure("flannel-wg", signal);
 * await driver.set("flannel-wg", { listenPort: 51820, peers: [] });
 * ```
 */
export function userspaceDriver(options: UserspaceDriverOptions = {}): WireguardDriver {
  const dir = options.socketDir ?? UAPI_DIR;
  const program = options.program ?? "wireguard-go";
  const exec = options.exec ?? systemExec;
  const clock = options.clock ?? systemClock;
  const socketOf = (device: string) => `${dir}/${device}.sock`;

  const get = async (device: string): Promise<DeviceState> => {
    const answer = await uapiRequest(socketOf(device), "get=1\n\n");
    const errno = answerErrno(answer);
    if (errno !== 0) throw new UapiError(device, errno, "get=1");
    return parseGet(answer);
  };

  const answers = async (device: string): Promise<boolean> => {
    try {
      await get(device);
      return true;
    } catch {
      return false;
    }
  };

  return {
    kind: "userspace",
    async ensure(device, signal) {
      if (await answers(device)) return [];
      const sock = socketOf(device);
      const stale = fs.existsSync(sock);
      // a socket file nobody answers on is left from a dead wireguard-go
      if (stale) fs.rmSync(sock, { force: true });
      // LOG_LEVEL empty: the daemon's output goes to /dev/null, so it holds no pipe of ours.
      // (Never pass WG_PROCESS_FOREGROUND: wireguard-go appends its own to the daemon's
      // environment, and Go reads the first of duplicate variables.)
      const r = await exec(program, [device], {
        env: { LOG_LEVEL: "" },
        signal,
        // its own session: the daemon must outlive a kill of the agent's process group
        detached: true,
      });
      if (r.code !== 0) {
        throw new Error(
          `Cannot start \`${program} ${device}\` (exit status ${r.code}): ${
            // without wireguard-go's banner (a box drawn with │ ┌ └)
            (r.stderr + r.stdout).split("\n").filter((l) => l.trim() && !/[│┌└]/.test(l))
              .slice(-3).join(
                " ",
              )}; install wireguard-go (Debian: apt-get install wireguard-go) or set "Driver": "kernel" where the WireGuard module exists`,
        );
      }
      const deadline = clock.now() + (options.startTimeoutMs ?? 5000);
      while (!(await answers(device))) {
        if (clock.now() > deadline || signal.aborted) {
          throw new Error(
            `wireguard-go ${device} started but its UAPI socket ${sock} does not answer after ${
              options.startTimeoutMs ?? 5000
            } ms; check that ${dir} is writable and not shared with another host's wireguard-go`,
          );
        }
        await sleepQuietly(clock, 50, signal);
      }
      return [
        `started wireguard-go ${device}${stale ? " (removed a stale socket)" : ""}`,
      ];
    },
    get,
    async set(device, config) {
      const answer = await uapiRequest(socketOf(device), encodeSet(config));
      const errno = answerErrno(answer);
      if (errno !== 0) {
        throw new UapiError(device, errno, `set=1 (${config.peers.length} peer changes)`);
      }
    },
  };
}
