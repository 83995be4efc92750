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
}

export type LeaveReason = 'deregistered' | 'expired' | 'removed';

export type TopologyEventData =
  | { type: 'RelayAdmitted'; data: { revision: number; relay: RelayRecord } }
  | { type: 'RelayLeft'; data: { revision: number; relayId: string; reason: LeaveReason } }
  | { type: 'RelayKeyRotated'; data: { revision: number; relayId: string; publicKey: string; previousPublicKey: string } }
  | { type: 'RelayEndpointChanged'; data: { revision: number; relayId: string; endpoint: string; previousEndpoint: string } };

export type TopologyEventType = TopologyEventData['type'];

/** An event a decision calls for, before it has a revision (RelayAdmitted takes the stored record). */
export type EventSpec =
  | { type: 'RelayAdmitted' }
  | { type: 'RelayLeft'; relayId: string; reason: LeaveReason }
  | { type: 'RelayKeyRotated'; relayId: string; publicKey: string; previousPublicKey: string }
  | { type: 'RelayEndpointChanged'; relayId: string; endpoint: string; previousEndpoint: string };

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

/** The relay an event is about (the `<relayId>` token of its subject). */
export function eventRelayId(e: TopologyEventData): string {
  return e.type === 'RelayAdmitted' ? e.data.relay.id : e.data.relayId;
}

/** `relaynet.topology.<relayId>.<kebab-type>`. */
export function topologySubject(e: TopologyEventData): string {
  return `${SUBJECT_ROOT}.topology.${eventRelayId(e)}.${kebab(e.type)}`;
}

/** Give a spec its revision; `relay` is the relay's stored record (used by RelayAdmitted). */
export function eventData(spec: EventSpec, revision: number, relay: RelayRecord): TopologyEventData {
  switch (spec.type) {
    case 'RelayAdmitted':
      return { type: 'RelayAdmitted', data: { revision, relay: { ...relay } } };
    case 'RelayLeft':
      return { type: 'RelayLeft', data: { revision, relayId: spec.relayId, reason: spec.reason } };
    case 'RelayKeyRotated':
      return { type: 'RelayKeyRotated', data: { revision, relayId: spec.relayId, publicKey: spec.publicKey, previousPublicKey: spec.previousPublicKey } };
    case 'RelayEndpointChanged':
      return { type: 'RelayEndpointChanged', data: { revision, relayId: spec.relayId, endpoint: spec.endpoint, previousEndpoint: spec.previousEndpoint } };
  }
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
