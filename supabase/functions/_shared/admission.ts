// The decisions of the Edge Functions, as pure functions of the stored relay and the request
// (docs/control-plane.md, "Decision"). The database code only carries them out.
import type { ValidRegisterRequest } from '../../../src/contract/api-relays.ts';
import type { ProofVerdict } from '../../../src/contract/registration-proof.ts';
import type { EventSpec } from './topology-events.ts';

/** A relay row as the decisions need it. */
export interface StoredRelay {
  id: string;
  name: string;
  region: string;
  publicKey: string;
  endpoint: string;
  /** Absent in rows read before the column existed: false. */
  exitIpv6?: boolean;
  /** The relay's Ed25519 identity public key as last registered; null or absent: none. */
  identityKey?: string | null;
  status: 'active' | 'left';
}

export interface Refusal {
  status: number;
  error: string;
  message: string;
  field?: string;
}

export type RegisterDecision =
  /** Unknown or left relay: allocate addresses, record it, RelayAdmitted (with its identity key). */
  | { action: 'admit'; events: EventSpec[] }
  /** Active relay: record name, region, key and endpoint; an event per topology change (maybe none). */
  | { action: 'readmit'; keyRotated: boolean; events: EventSpec[] }
  | { action: 'reject'; refusal: Refusal; events: [] };

/**
 * register-server. `keyHolder` is the id of another active relay that already uses the requested
 * public key, if any (WireGuard identifies peers by key; two relays cannot share one). `proof`: the
 * check of the request's signature by the relay's identity key (registration-proof.ts), null where
 * none is needed (a relay without identity, or the operator's service role).
 */
export function decide(
  existing: StoredRelay | null,
  req: ValidRegisterRequest,
  keyHolder: string | null = null,
  proof: ProofVerdict | null = null,
): RegisterDecision {
  if (proof && !proof.ok) {
    return { action: 'reject', events: [], refusal: { status: 403, error: 'identity_proof', field: 'proof', message: proof.message } };
  }
  if (keyHolder !== null && keyHolder !== req.relayId) {
    return {
      action: 'reject',
      events: [],
      refusal: { status: 409, error: 'key_in_use', field: 'publicKey', message: `public key is already used by active relay ${keyHolder}` },
    };
  }
  const identity = req.identityKey !== undefined ? { identityKey: req.identityKey } : {};
  if (existing?.status !== 'active') return { action: 'admit', events: [{ type: 'RelayAdmitted', ...identity }] };
  const events: EventSpec[] = [];
  const keyRotated = existing.publicKey !== req.publicKey;
  if (keyRotated) {
    if (!req.rotateKey) {
      return {
        action: 'reject',
        events: [],
        refusal: {
          status: 409,
          error: 'key_mismatch',
          field: 'publicKey',
          message: `relay ${req.relayId} is active with another public key; send rotateKey: true to rotate it`,
        },
      };
    }
    events.push({ type: 'RelayKeyRotated', relayId: req.relayId, publicKey: req.publicKey, previousPublicKey: existing.publicKey });
  }
  if (existing.endpoint !== req.endpoint) {
    events.push({ type: 'RelayEndpointChanged', relayId: req.relayId, endpoint: req.endpoint, previousEndpoint: existing.endpoint });
  }
  if ((existing.exitIpv6 ?? false) !== req.exitIpv6) events.push({ type: 'RelayCapabilitiesChanged', relayId: req.relayId, exitIpv6: req.exitIpv6 });
  // Another identity key (or the first one of a relay admitted before identities): announced, with the
  // record as it now stands, so that readers verify the relay's events with it from here on. A request
  // without one keeps the recorded key. A relay token's request was signed by the recorded key (proof).
  if (req.identityKey !== undefined && req.identityKey !== (existing.identityKey ?? null)) events.push({ type: 'RelayAdmitted', identityKey: req.identityKey });
  return { action: 'readmit', keyRotated, events };
}

export type LeaveDecision = { action: 'leave'; events: EventSpec[] } | { action: 'reject'; refusal: Refusal; events: [] };

/** deregister: only an active relay can leave; anything else is 404 and changes nothing. */
export function decideDeregister(existing: StoredRelay | null, relayId: string): LeaveDecision {
  if (existing?.status !== 'active') return { action: 'reject', events: [], refusal: notRegistered(relayId, false) };
  return { action: 'leave', events: [{ type: 'RelayLeft', relayId, reason: 'deregistered' }] };
}

/** A relay silent past its expiry leaves as a deregistered one does, with reason `expired`. */
export function decideExpiry(relayId: string): EventSpec[] {
  return [{ type: 'RelayLeft', relayId, reason: 'expired' }];
}

/** How long a relay may go unheard before it is expired: the setting, else 30 heartbeat intervals and at least 5 minutes. */
export function expireSeconds(setting: number | null, heartbeatSeconds: number): number {
  return setting ?? Math.max(30 * heartbeatSeconds, 300);
}

export type HeartbeatDecision = { action: 'touch' } | { action: 'reject'; refusal: Refusal };

/**
 * heartbeat: `touched` says whether the relay was active and is touched now (one statement, no lock);
 * anything else (unknown, left, expired) must register again.
 */
export function decideHeartbeat(touched: boolean, relayId: string): HeartbeatDecision {
  if (!touched) return { action: 'reject', refusal: notRegistered(relayId, true) };
  return { action: 'touch' };
}

function notRegistered(relayId: string, reregister: boolean): Refusal {
  return { status: 404, error: 'not_registered', message: `relay ${relayId} is not active${reregister ? '; register it again' : ''}` };
}
