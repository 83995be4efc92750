// The control plane's measurement schedule (`relay-core control-plane --measure-every S`;
// docs/proof-of-bandwidth.md, "On a schedule"): on a timer it asks pob-status what each active relay's
// latest measurement was, and has the one due (src/pob/schedule.ts) measured by two others through
// schedule-measurement, as the operator's `pob measure` does. Errors are logged; the next tick tries again.
import { ControlPlaneClient, ControlPlaneError } from '../daemon/control-plane-client.ts';
import type { Logger } from '../lib/logger.ts';
import { nextToMeasure } from '../pob/schedule.ts';

export interface PobScheduler {
  /** One tick now: the relay it had measured, or null. */
  tick(): Promise<string | null>;
  stop(): void;
}

export function startPobScheduler(o: { url: string; serviceRoleKey: string; everySeconds: number; logger: Logger; now?: () => number }): PobScheduler {
  const log = o.logger.child({ component: 'pob-scheduler' });
  const client = new ControlPlaneClient({ url: o.url, key: o.serviceRoleKey, logger: log });
  const now = o.now ?? Date.now;
  let busy = false;
  const tick = async (): Promise<string | null> => {
    if (busy) return null;
    busy = true;
    try {
      const status = await client.pobStatus({});
      const relays = status.relays.map((r) => ({
        relayId: r.relayId,
        lastStartMs: r.lastMeasurement ? Date.parse(r.lastMeasurement.measurement.startsAt) : null,
        open: r.lastMeasurement?.state === 'scheduled',
      }));
      const relayId = nextToMeasure(relays, now(), o.everySeconds * 1000);
      if (relayId === null) return null;
      const { measurement } = await client.scheduleMeasurement({ relayId, measurers: 2 });
      log.info({ relayId, measurementId: measurement.id, measurers: measurement.measurerIds, startsAt: measurement.startsAt }, 'measurement scheduled');
      return relayId;
    } catch (e) {
      const refused = e instanceof ControlPlaneError && e.kind === 'refused';
      log.warn({ err: (e as Error).message, refused }, 'measurement schedule: nothing scheduled this time');
      return null;
    } finally {
      busy = false;
    }
  };
  // Often enough to keep up with the interval, never more than every 5 s nor less than every minute.
  const every = Math.min(60_000, Math.max(5_000, (o.everySeconds * 1000) / 10));
  const timer = setInterval(() => void tick(), every);
  timer.unref();
  return { tick, stop: () => clearInterval(timer) };
}
