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
