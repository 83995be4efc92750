// When the control plane measures whom (docs/proof-of-bandwidth.md, "Measuring", "On a schedule"). Pure.

export interface MeasuredRelay {
  relayId: string;
  /** When its latest measurement started (ms since the epoch), whatever its outcome; null: never measured. */
  lastStartMs: number | null;
  /** A measurement of it is under way. */
  open: boolean;
}

/**
 * The relay to measure next, or null: none while any measurement is under way (one at a time, so the
 * measurers' links carry one measurement); else the relay never measured, or measured longest ago, once
 * that is at least `everyMs` ago (ties by id).
 */
export function nextToMeasure(relays: readonly MeasuredRelay[], nowMs: number, everyMs: number): string | null {
  if (relays.length < 2 || relays.some((r) => r.open)) return null;
  const due = relays
    .filter((r) => r.lastStartMs === null || nowMs - r.lastStartMs >= everyMs)
    .sort((a, b) => (a.lastStartMs ?? -Infinity) - (b.lastStartMs ?? -Infinity) || (a.relayId < b.relayId ? -1 : a.relayId > b.relayId ? 1 : 0));
  return due[0]?.relayId ?? null;
}

/** How many closed epochs back the settlement schedule catches up after an outage. */
export const SETTLE_CATCH_UP_EPOCHS = 12;

/**
 * The epoch to settle next, or null. Epoch e covers [e·E, (e+1)·E) seconds since 1970; it is due once
 * `afterSeconds` have passed since its end (late receipts still count until then). The oldest due epoch
 * after the latest settled one (`settledEpoch`), looking back at most SETTLE_CATCH_UP_EPOCHS epochs;
 * with none settled yet, the latest due one only (a new network has nothing older to settle). Each
 * epoch is settled once by the schedule (the operator may settle one again, `pob settle`).
 */
export function nextToSettle(nowMs: number, epochSeconds: number, afterSeconds: number, settledEpoch: number | null): number | null {
  const due = Math.floor((nowMs / 1000 - afterSeconds) / epochSeconds) - 1;
  if (due < 0) return null;
  const from = settledEpoch === null ? due : Math.max(settledEpoch + 1, due - SETTLE_CATCH_UP_EPOCHS + 1);
  return from <= due ? from : null;
}
