import { randomUUID } from 'node:crypto';
import { envelope } from '../../src/contract/envelope.ts';
import { formatIpv4, parseIpv4, type ClientSession, type RelayRecord, type TopologyEvent } from '../../src/contract/topology.events.ts';
import { applyTopologyEvent, EMPTY_TOPOLOGY, type ApplyOutcome, type TopologyView } from '../../src/events/topology.fold.ts';
import type { BusDetails } from '../../src/contract/api-relays.ts';
import type { RelayCandidate } from '../../supabase/functions/_shared/clients.ts';

const cp = { source: 'control-plane', now: () => new Date('2026-11-25T00:00:00Z'), newId: randomUUID };

/** A syntactically valid WireGuard key derived from a small number (tests only). */
export function key(n: number): string {
  const b = Buffer.alloc(32, 0);
  b.writeUInt32BE(n, 0);
  return b.toString('base64');
}

export function relay(n: number, over: Partial<RelayRecord> = {}): RelayRecord {
  return {
    id: `relay-${n}`,
    name: `Relay ${n}`,
    region: 'test',
    publicKey: key(n),
    endpoint: `198.51.100.${n % 255}:51820`,
    meshAddress: formatIpv4(parseIpv4('100.64.0.0')! + n),
    clientPool: `${formatIpv4(parseIpv4('100.96.0.0')! + (n - 1) * 1024)}/22`,
    ...over,
  };
}

export const ev = {
  admitted: (revision: number, r: RelayRecord): TopologyEvent => envelope(cp, 'RelayAdmitted', 2, { revision, relay: r, identityKey: null }),
  left: (revision: number, relayId: string): TopologyEvent => envelope(cp, 'RelayLeft', 1, { revision, relayId, reason: 'deregistered' as const }),
  rotated: (revision: number, relayId: string, publicKey: string, previousPublicKey: string): TopologyEvent =>
    envelope(cp, 'RelayKeyRotated', 1, { revision, relayId, publicKey, previousPublicKey }),
  moved: (revision: number, relayId: string, endpoint: string, previousEndpoint: string): TopologyEvent =>
    envelope(cp, 'RelayEndpointChanged', 1, { revision, relayId, endpoint, previousEndpoint }),
  opened: (revision: number, session: ClientSession): TopologyEvent => envelope(cp, 'ClientSessionOpened', 2, { revision, session }),
  steered: (revision: number, s: ClientSession, exitId: string): TopologyEvent =>
    envelope(cp, 'ClientSessionExitChanged', 2, {
      revision,
      sessionId: s.id,
      entryId: s.entryId,
      exitId,
      previousExitId: s.exitId,
      session: { ...s, exitId },
    }),
  closed: (revision: number, s: ClientSession): TopologyEvent =>
    envelope(cp, 'ClientSessionClosed', 1, { revision, sessionId: s.id, entryId: s.entryId, reason: 'disconnected' as const }),
};

/**
 * given(events).when(event) -> the outcome; given/when/then in one line per case.
 * The given events must apply cleanly in order, starting from the empty view.
 */
export function given(events: TopologyEvent[], start: TopologyView = EMPTY_TOPOLOGY) {
  let state = start;
  for (const e of events) {
    const r = applyTopologyEvent(state, e);
    if (r.kind !== 'applied') throw new Error(`given: event r${e.data.revision} did not apply: ${r.kind}`);
    state = r.state;
  }
  return {
    state,
    when: (e: TopologyEvent): ApplyOutcome => applyTopologyEvent(state, e),
  };
}

/** The bus details of a registration answer in tests (token mode, no credential). */
export function busDetails(topologySigningKey = 'k'): BusDetails {
  return {
    servers: ['nats://127.0.0.1:4222'],
    token: null,
    credential: null,
    subjectRoot: 'relaynet',
    topologyStream: 'T',
    relayStream: 'R',
    topologySigningKey,
  };
}

/** A state's devices, written as an object literal in tests: `devs({ rc1m2: ... })`. */
export const devs = <T>(o: Record<string, T>): Map<string, T> => new Map(Object.entries(o));

/** A relay as connect-client's choice sees it: live, core, active, never measured, no sessions (tests only). */
export function candidate(id: string, over: Partial<RelayCandidate> = {}): RelayCandidate {
  return {
    id,
    name: id,
    region: 'eu',
    publicKey: Buffer.alloc(32, id.length).toString('base64'),
    endpoint: '198.51.100.1:51820',
    clientPool: '100.96.0.0/29',
    live: true,
    entrySessions: 0,
    exitSessions: 0,
    class: 'core',
    state: 'active',
    capacity: null,
    ...over,
  };
}
