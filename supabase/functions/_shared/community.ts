// Community relays' standing (docs/proof-of-bandwidth.md, "Community relays"): the decisions of
// enroll-relay, set-relay-state and of a measurement's conclusion, as pure functions of what is stored.
// The database code (standing-store.ts) only carries them out.
import type { RelayStanding } from '../../../src/contract/api-community.ts';
import type { RelayState } from '../../../src/contract/topology.events.ts';
import type { Refusal } from './admission.ts';
import type { EventSpec } from './topology-events.ts';

/** A relay without a standing row: a core relay, active. */
export function standingOrCore(relayId: string, stored: RelayStanding | null): RelayStanding {
  return stored ?? { relayId, class: 'core', state: 'active', operatorId: null, reason: null };
}

export type EnrollDecision =
  | { action: 'enroll'; standing: RelayStanding; events: EventSpec[] }
  | { action: 'reissue'; standing: RelayStanding; events: [] }
  | { action: 'reject'; refusal: Refusal };

/**
 * enroll-relay. `stored`: the relay's standing row; `relayKnown`: a relay of that id was ever
 * registered; `enrolled`: how many relays the operator has enrolled; `max`: how many it may.
 */
export function decideEnroll(
  relayId: string,
  operatorId: string,
  stored: RelayStanding | null,
  relayKnown: boolean,
  enrolled: number,
  max: number,
): EnrollDecision {
  if (stored?.class === 'community' && stored.operatorId === operatorId) return { action: 'reissue', standing: stored, events: [] };
  if (stored || relayKnown)
    return {
      action: 'reject',
      refusal: {
        status: 409,
        error: 'relay_exists',
        field: 'relayId',
        message: `relay ${relayId} exists already${stored?.class === 'community' ? ', enrolled by another operator' : ''}; choose another relay id`,
      },
    };
  if (enrolled >= max)
    return {
      action: 'reject',
      refusal: { status: 409, error: 'operator_limit', message: `this operator has enrolled ${enrolled} relays, the most one may (community_max_relays)` },
    };
  const standing: RelayStanding = { relayId, class: 'community', state: 'probation', operatorId, reason: 'enrolled' };
  return {
    action: 'enroll',
    standing,
    events: [{ type: 'RelayStateChanged', relayId, class: 'community', state: 'probation', previousState: null, reason: 'enrolled' }],
  };
}

/**
 * A concluded measurement's effect on its target's standing: a relay in probation (or rejected before)
 * becomes active with a measured line rate of at least `minCapacity`, and is rejected with less, or when
 * the measurement rejected it. An incomplete measurement changes nothing; nor does any measurement of an
 * active or suspended relay. Null: no change.
 */
export function stateAfterMeasurement(
  s: RelayStanding,
  outcome: 'measured' | 'rejected' | 'incomplete',
  lineRate: number | null,
  minCapacity: number,
): { state: RelayState; reason: string } | null {
  if (s.state !== 'probation' && s.state !== 'rejected') return null;
  if (outcome === 'incomplete') return null;
  const next =
    outcome === 'rejected'
      ? { state: 'rejected' as const, reason: 'its measurement rejected it' }
      : lineRate !== null && lineRate >= minCapacity
        ? { state: 'active' as const, reason: `measured ${mbit(lineRate)} Mbit/s` }
        : {
            state: 'rejected' as const,
            reason: `measured ${mbit(lineRate ?? 0)} Mbit/s, below the least a community relay needs (${mbit(minCapacity)} Mbit/s)`,
          };
  return next.state === s.state && next.reason === s.reason ? null : next;
}

const mbit = (bytesPerSecond: number) => ((bytesPerSecond * 8) / 1e6).toFixed(1);

export type SetStateDecision =
  | { action: 'change'; standing: RelayStanding; previousState: RelayState; events: EventSpec[]; closeSessions: boolean }
  | { action: 'unchanged'; standing: RelayStanding; previousState: RelayState }
  | { action: 'reject'; refusal: Refusal };

/**
 * set-relay-state: suspend a relay (its open sessions are closed), or resume it: a core relay, or a
 * community relay measured at `minCapacity` or more (`capacity`: its line rate on record), becomes
 * active; a community relay not measured enough goes back to probation.
 */
export function decideSetState(
  relayId: string,
  want: 'suspended' | 'active',
  stored: RelayStanding | null,
  relayKnown: boolean,
  capacity: number | null,
  minCapacity: number,
  reason: string,
): SetStateDecision {
  if (!stored && !relayKnown)
    return { action: 'reject', refusal: { status: 404, error: 'unknown_relay', field: 'relayId', message: `relay ${relayId} is not known` } };
  const now = standingOrCore(relayId, stored);
  const state: RelayState =
    want === 'suspended' ? 'suspended' : now.class === 'core' || (capacity !== null && capacity >= minCapacity) ? 'active' : 'probation';
  if (want === 'active' && now.state !== 'suspended') return { action: 'unchanged', standing: now, previousState: now.state };
  if (state === now.state) return { action: 'unchanged', standing: now, previousState: now.state };
  const why = reason || (want === 'suspended' ? 'suspended' : 'resumed');
  const standing: RelayStanding = { ...now, state, reason: why };
  return {
    action: 'change',
    standing,
    previousState: now.state,
    closeSessions: state !== 'active',
    events: [{ type: 'RelayStateChanged', relayId, class: now.class, state, previousState: now.state, reason: why }],
  };
}

/** A relay may carry client sessions: active; community ones only for a session that allows them. */
export function carriesClients(s: Pick<RelayStanding, 'class' | 'state'>, allowCommunity: boolean): boolean {
  return s.state === 'active' && (s.class === 'core' || allowCommunity);
}
