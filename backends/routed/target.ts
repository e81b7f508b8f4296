/**
 * The kernel as a {@link RouteTarget}: a full sync ensures the backend's
 * devices (creating, recreating or correcting them) and syncs its entry
 * table; an update changes only the given peers; drift comes from the
 * datapath.
 *
 * @module
 */

import type { Logger } from "../../core/log.ts";
import type { Datapath, DeviceSpec, EntryScope, PeerEntries } from "../../datapath/types.ts";
import type { RouteTarget } from "./engine.ts";

/** Options for {@link kernelTarget}. */
export interface KernelTargetOptions {
  readonly datapath: Datapath;
  /** Devices to ensure before every full sync (none for host-gw). */
  readonly devices: readonly DeviceSpec[];
  /** What the backend owns. */
  readonly scope: EntryScope;
  readonly logger: Logger;
}

/**
 * Ensure devices, logging what had to change.
 *
 * @param dp The datapath.
 * @param devices The specs.
 * @param log Where changes are logged (a recreated device as a warning).
 */
export async function ensureDevices(
  dp: Datapath,
  devices: readonly DeviceSpec[],
  log: Logger,
): Promise<void> {
  for (const spec of devices) {
    const { device, changes } = await dp.ensureDevice(spec);
    if (changes.length === 0) continue;
    const fields = { device: spec.name, index: device.index, changes };
    if (changes.some((c) => c.startsWith("recreated"))) {
      log.warn("existing device had an incompatible configuration; recreated it", fields);
    } else {
      log.info("device set up as asked", fields);
    }
  }
}

/**
 * The kernel target of a routed backend.
 *
 * @param options Datapath, devices, scope, logger.
 * @returns The target, named after the scope.
 */
export function kernelTarget(options: KernelTargetOptions): RouteTarget<PeerEntries> {
  const { datapath: dp, devices, scope, logger } = options;
  const table = dp.entries(scope);
  return {
    name: scope.name,
    async sync(entries) {
      await ensureDevices(dp, devices, logger);
      return await table.sync(entries);
    },
    update: (changes) => table.update(changes),
    drift: (signal) => dp.drift(signal),
  };
}
