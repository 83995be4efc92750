// The control plane's Proof-of-Bandwidth schedules (docs/proof-of-bandwidth.md, "On a schedule"):
// - measurements (`relay-core control-plane --measure-every S`): on a timer it asks pob-status what each
//   registered relay's latest measurement was, and has the one due (src/pob/schedule.ts) measured by
//   two core relays through schedule-measurement, as the operator's `pob measure` does;
// - settlements (`--settle-after S`): each receipt epoch is settled S seconds after it ends (late
//   receipts count until then) through settle-epoch, as the operator's `pob settle` does, oldest first
//   after an outage.
// Errors are logged; the next tick tries again.
import { ControlPlaneClient, ControlPlaneError } from '../daemon/control-plane-client.ts';
import type { Logger } from '../lib/logger.ts';
import { nextToMeasure, nextToSettle } from '../pob/schedule.ts';

export interface PobScheduler {
  /** One measurement tick now: the relay it had measured, or null. */
  tick(): Promise<string | null>;
  /** One settlement tick now: the epoch it settled, or null. */
  settleTick(): Promise<number | null>;
  stop(): void;
}

export interface PobSchedulerOptions {
  url: string;
  serviceRoleKey: string;
  /** Measure each relay this often (s); 0: no measurement schedule. */
  everySeconds: number;
  /** Settle each epoch this long after its end (s); absent: no settlement schedule. */
  settleAfterSeconds?: number;
  logger: Logger;
  now?: () => number;
}

export function startPobScheduler(o: PobSchedulerOptions): PobScheduler {
  const log = o.logger.child({ component: 'pob-scheduler' });
  const client = new ControlPlaneClient({ url: o.url, key: o.serviceRoleKey, logger: log });
  const now = o.now ?? Date.now;
  const once = <T>(what: string, f: () => Promise<T | null>) => {
    let busy = false;
    return async (): Promise<T | null> => {
      if (busy) return null;
      busy = true;
      try {
        return await f();
      } catch (e) {
        const refused = e instanceof ControlPlaneError && e.kind === 'refused';
        log.warn({ err: (e as Error).message, refused }, `${what} schedule: nothing done this time`);
        return null;
      } finally {
        busy = false;
      }
    };
  };
  const tick = once('measurement', async () => {
    const status = await client.pobStatus({});
    // Relays enrolled but never registered cannot be measured yet.
    const relays = status.relays
      .filter((r) => r.registered)
      .map((r) => ({
        relayId: r.relayId,
        lastStartMs: r.lastMeasurement ? Date.parse(r.lastMeasurement.measurement.startsAt) : null,
        open: r.lastMeasurement?.state === 'scheduled',
      }));
    const relayId = nextToMeasure(relays, now(), o.everySeconds * 1000);
    if (relayId === null) return null;
    const { measurement } = await client.scheduleMeasurement({ relayId, measurers: 2 });
    log.info({ relayId, measurementId: measurement.id, measurers: measurement.measurerIds, startsAt: measurement.startsAt }, 'measurement scheduled');
    return relayId;
  });
  // What the settlement schedule has settled itself: never twice, even before pob-status shows it.
  let settledHere: number | null = null;
  const settleTick = once('settlement', async () => {
    if (o.settleAfterSeconds === undefined) return null;
    const status = await client.pobStatus({});
    if (status.epochSeconds === undefined) throw new Error('the control plane does not say its receipt epoch (an older pob-status)');
    const settled = Math.max(status.settledEpoch ?? -1, settledHere ?? -1);
    const epoch = nextToSettle(now(), status.epochSeconds, o.settleAfterSeconds, settled < 0 ? null : settled);
    if (epoch === null) return null;
    const r = await client.settleEpoch({ epoch });
    settledHere = epoch;
    log.info({ epoch, reports: r.reports, credits: r.credits.length, disputes: r.disputes.length }, 'epoch settled');
    return epoch;
  });
  const timers: NodeJS.Timeout[] = [];
  if (o.everySeconds > 0) {
    // Often enough to keep up with the interval, never more than every 5 s nor less than every minute.
    timers.push(setInterval(() => void tick(), Math.min(60_000, Math.max(5_000, (o.everySeconds * 1000) / 10))));
  }
  if (o.settleAfterSeconds !== undefined) timers.push(setInterval(() => void settleTick(), 2_000));
  for (const t of timers) t.unref();
  return { tick, settleTick, stop: () => timers.forEach(clearInterval) };
}
