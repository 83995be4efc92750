import type { PeerObservation } from './host-state.ts';

/** Observations by `device publicKey`: the owners look each member's up once, so a cycle is O(N), not O(N²). */
export function observationIndex(observations: readonly PeerObservation[]): Map<string, PeerObservation> {
  const m = new Map<string, PeerObservation>();
  for (const o of observations) if (!m.has(`${o.dev} ${o.publicKey}`)) m.set(`${o.dev} ${o.publicKey}`, o);
  return m;
}
