/**
 * What a relay makes of the control plane's epoch (docs/events.md, "Epochs"). Revisions only compare
 * within one epoch: a relay folds only events of its snapshot's epoch, and resyncs from a fresh snapshot
 * when the control plane shows another one. Pure.
 */

/** How many epochs a relay remembers having left (older ones are as unknown as new ones). */
export const RETIRED_EPOCHS_KEPT = 16;

/**
 * A topology event's epoch against the relay's snapshot:
 * - `same`: fold it by revision (also when either side has no epoch: a control plane from before epochs);
 * - `old`: an epoch the relay has left (or an event from before epochs under a snapshot that has one):
 *   never applied, counted;
 * - `new`: an epoch the relay has not seen: the control plane began another one; resync.
 */
export function eventEpochVerdict(
  snapshotEpoch: string | null | undefined,
  retired: readonly string[],
  eventEpoch: string | undefined,
): 'same' | 'old' | 'new' {
  if (!snapshotEpoch) return 'same';
  if (eventEpoch === undefined) return 'old';
  if (eventEpoch === snapshotEpoch) return 'same';
  return retired.includes(eventEpoch) ? 'old' : 'new';
}

/** Whether a heartbeat answer shows an epoch other than the snapshot's (the heartbeat is the authority). */
export function heartbeatEpochChanged(snapshotEpoch: string | null | undefined, heartbeatEpoch: string | undefined): boolean {
  return !!snapshotEpoch && !!heartbeatEpoch && snapshotEpoch !== heartbeatEpoch;
}

/**
 * The epochs a relay has left, after it seeds from a snapshot of `seeded`: the epoch it was in, and the
 * one an unknown event named when that event's epoch did not turn out to be the control plane's
 * (`suspected`), are retired; the seeded epoch never is. The newest {@link RETIRED_EPOCHS_KEPT} are kept.
 */
export function retireEpochs(
  retired: readonly string[],
  previous: string | null | undefined,
  suspected: string | null | undefined,
  seeded: string | null | undefined,
): string[] {
  const out = [...retired];
  for (const e of [previous, suspected]) if (e && !out.includes(e)) out.push(e);
  return out.filter((e) => e !== seeded).slice(-RETIRED_EPOCHS_KEPT);
}
