// Topology event envelopes exactly as the relays validate them (src/events/envelope.ts and
// src/events/topology.events.ts): id, type, version 1, source "control-plane", time, causationId,
// correlationId null, data with the revision the event produces. Pure: id and time come in.

export interface RelayRecord {
  id: string;
  name: string;
  region: string;
  publicKey: string;
  endpoint: string;
  meshAddress: string;
  clientPool: string;
  /** Clients' IPv6 may leave here (NAT66); false: entries refuse those clients' IPv6 at once. */
  exitIpv6: boolean;
}

export type LeaveReason = 'deregistered' | 'expired' | 'removed';

/**
 * A client session as the topology knows it (src/events/topology.events.ts, ClientSessionSchema): the
 * client's public key enters at `entryId` with `address` (a bare IPv4 from the entry's pool) and
 * leaves at `exitId`. Times are ISO 8601 with milliseconds (the database keeps them at that precision).
 */
export interface ClientSessionRecord {
  id: string;
  entryId: string;
  exitId: string;
  publicKey: string;
  address: string;
  openedAt: string;
  expiresAt: string;
}

export const CLIENT_SESSION_CLOSE_REASONS = ['disconnected', 'expired', 'entry-left', 'not-confirmed', 'removed'] as const;
export type ClientSessionCloseReason = (typeof CLIENT_SESSION_CLOSE_REASONS)[number];

export type TopologyEventData =
  | { type: 'RelayAdmitted'; data: { revision: number; relay: RelayRecord } }
  | { type: 'RelayLeft'; data: { revision: number; relayId: string; reason: LeaveReason } }
  | { type: 'RelayKeyRotated'; data: { revision: number; relayId: string; publicKey: string; previousPublicKey: string } }
  | { type: 'RelayEndpointChanged'; data: { revision: number; relayId: string; endpoint: string; previousEndpoint: string } }
  | { type: 'RelayCapabilitiesChanged'; data: { revision: number; relayId: string; exitIpv6: boolean } }
  | { type: 'ClientSessionOpened'; data: { revision: number; session: ClientSessionRecord } }
  | { type: 'ClientSessionExitChanged'; data: { revision: number; sessionId: string; entryId: string; exitId: string; previousExitId: string } }
  | { type: 'ClientSessionClosed'; data: { revision: number; sessionId: string; entryId: string; reason: ClientSessionCloseReason } };

export type TopologyEventType = TopologyEventData['type'];

/** An event a decision calls for, before it has a revision (RelayAdmitted takes the stored record). */
export type EventSpec =
  | { type: 'RelayAdmitted' }
  | { type: 'RelayLeft'; relayId: string; reason: LeaveReason }
  | { type: 'RelayKeyRotated'; relayId: string; publicKey: string; previousPublicKey: string }
  | { type: 'RelayEndpointChanged'; relayId: string; endpoint: string; previousEndpoint: string }
  | { type: 'RelayCapabilitiesChanged'; relayId: string; exitIpv6: boolean }
  | { type: 'ClientSessionOpened'; session: ClientSessionRecord }
  | { type: 'ClientSessionExitChanged'; sessionId: string; entryId: string; exitId: string; previousExitId: string }
  | { type: 'ClientSessionClosed'; sessionId: string; entryId: string; reason: ClientSessionCloseReason };

export const CONTROL_PLANE_SOURCE = 'control-plane';
export const SUBJECT_ROOT = 'relaynet';

export interface Envelope<D = unknown> {
  id: string;
  type: string;
  version: number;
  source: string;
  time: string;
  causationId: string | null;
  correlationId: string | null;
  data: D;
}

export interface BuiltEvent {
  id: string;
  type: TopologyEventType;
  revision: number;
  subject: string;
  /** The JSON text that is signed, stored and published byte for byte. */
  payload: string;
}

/** RelayAdmitted -> relay-admitted. */
export function kebab(type: string): string {
  return type.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase();
}

/** The relay an event is about (the `<relayId>` token of its subject); a session's entry relay. */
export function eventRelayId(e: TopologyEventData): string {
  switch (e.type) {
    case 'RelayAdmitted':
      return e.data.relay.id;
    case 'ClientSessionOpened':
      return e.data.session.entryId;
    case 'ClientSessionExitChanged':
    case 'ClientSessionClosed':
      return e.data.entryId;
    default:
      return e.data.relayId;
  }
}

/** `relaynet.topology.<relayId>.<kebab-type>`. */
export function topologySubject(e: TopologyEventData): string {
  return `${SUBJECT_ROOT}.topology.${eventRelayId(e)}.${kebab(e.type)}`;
}

/** Give a spec its revision; `relay` is the relay's stored record (used by RelayAdmitted only). */
export function eventData(spec: EventSpec, revision: number, relay: RelayRecord | null): TopologyEventData {
  switch (spec.type) {
    case 'RelayAdmitted':
      if (!relay) throw new Error('RelayAdmitted needs the relay record');
      return { type: 'RelayAdmitted', data: { revision, relay: { ...relay } } };
    case 'RelayLeft':
      return { type: 'RelayLeft', data: { revision, relayId: spec.relayId, reason: spec.reason } };
    case 'RelayKeyRotated':
      return { type: 'RelayKeyRotated', data: { revision, relayId: spec.relayId, publicKey: spec.publicKey, previousPublicKey: spec.previousPublicKey } };
    case 'RelayEndpointChanged':
      return { type: 'RelayEndpointChanged', data: { revision, relayId: spec.relayId, endpoint: spec.endpoint, previousEndpoint: spec.previousEndpoint } };
    case 'RelayCapabilitiesChanged':
      return { type: 'RelayCapabilitiesChanged', data: { revision, relayId: spec.relayId, exitIpv6: spec.exitIpv6 } };
    case 'ClientSessionOpened':
      return { type: 'ClientSessionOpened', data: { revision, session: sessionRecord(spec.session) } };
    case 'ClientSessionExitChanged':
      return {
        type: 'ClientSessionExitChanged',
        data: { revision, sessionId: spec.sessionId, entryId: spec.entryId, exitId: spec.exitId, previousExitId: spec.previousExitId },
      };
    case 'ClientSessionClosed':
      return { type: 'ClientSessionClosed', data: { revision, sessionId: spec.sessionId, entryId: spec.entryId, reason: spec.reason } };
  }
}

/** A copy of a session record with exactly the fields of the schema, in its order. */
export function sessionRecord(s: ClientSessionRecord): ClientSessionRecord {
  return { id: s.id, entryId: s.entryId, exitId: s.exitId, publicKey: s.publicKey, address: s.address, openedAt: s.openedAt, expiresAt: s.expiresAt };
}

/** Causation ids must fit the envelope schema (1-128 chars); anything else becomes null. */
export function causation(requestId: string | null | undefined): string | null {
  return requestId && requestId.length <= 128 ? requestId : null;
}

/** The envelope of a topology event and the exact JSON text to sign and store. */
export function buildTopologyEvent(e: TopologyEventData, opts: { id: string; time: Date | string; causationId: string | null }): BuiltEvent & { envelope: Envelope } {
  const time = typeof opts.time === 'string' ? new Date(opts.time) : opts.time;
  if (Number.isNaN(time.getTime())) throw new Error(`bad event time ${String(opts.time)}`);
  const envelope: Envelope = {
    id: opts.id,
    type: e.type,
    version: 1,
    source: CONTROL_PLANE_SOURCE,
    time: time.toISOString(),
    causationId: causation(opts.causationId),
    correlationId: null,
    data: e.data,
  };
  return { id: opts.id, type: e.type, revision: e.data.revision, subject: topologySubject(e), payload: JSON.stringify(envelope), envelope };
}
