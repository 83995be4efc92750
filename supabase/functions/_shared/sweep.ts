// The topology's housekeeping, run after heartbeats: sessions past their expiry are closed, relays
// silent past relay_expire_seconds leave (RelayLeft, reason "expired"), and capacity measurements whose
// reports did not all come within the grace after their end are concluded with those that did. It
// never waits for the topology lock: a lock-free read first says whether anything is due (in steady state nothing is, and the lock is
// not taken at all), and then the lock is taken only if free; when another transaction holds it, a later
// heartbeat sweeps.
import { decideExpiry, expireSeconds } from './admission.ts';
import { closeEntrySessions, closeExpired } from './client-store.ts';
import { conclude, overdueMeasurements } from './measurements.ts';
import { transaction, type Sql } from './db.ts';
import type { SigningKey } from './sign.ts';
import * as store from './store.ts';

export interface SweepResult {
  /** false: nothing was due, or the lock was busy. */
  swept: boolean;
  sessionsExpired: number;
  relaysExpired: string[];
  /** Measurements concluded with the reports they had (their grace after the end passed). */
  measurementsConcluded: number;
}

export async function sweepTopology(sql: Sql, key: SigningKey, causationId: string | null, heartbeatSeconds: number): Promise<SweepResult> {
  const none: SweepResult = { swept: false, sessionsExpired: 0, relaysExpired: [], measurementsConcluded: 0 };
  const expireAfter = expireSeconds(await store.relayExpireSetting(sql), heartbeatSeconds);
  if (!(await store.sweepDue(sql, expireAfter))) return none;
  return transaction(sql, async (tx) => {
    if (!(await store.tryLockTopology(tx))) return none;
    const sessions = await closeExpired(tx, key, causationId);
    const relays = await store.silentRelays(tx, expireAfter);
    for (const relayId of relays) {
      // As a deregistration: its sessions closed first, then its addresses freed and RelayLeft.
      await closeEntrySessions(tx, relayId, key, causationId);
      await store.recordLeave(tx, relayId);
      await store.appendEvents(tx, decideExpiry(relayId), null, key, causationId);
    }
    const overdue = await overdueMeasurements(tx);
    for (const id of overdue) await conclude(tx, id, key, causationId);
    return { swept: true, sessionsExpired: sessions.length, relaysExpired: relays, measurementsConcluded: overdue.length };
  });
}
