// Topology event envelopes exactly as the relays validate them (the contract: src/contract/envelope.ts
// and src/contract/topology.events.ts): id, type, version 1, source "control-plane", time,
// causationId, correlationId null, the control plane's epoch, data with the revision the event produces;
// `version` the catalogue's current one for the type (RelayAdmitted v2 carries the relay's identity key).
// Pure: id and time come in.
import { currentVersion } from '../../../src/contract/catalogue.ts';
import { CONTROL_PLANE_SOURCE, type Envelope } from '../../../src/contract/envelope.ts';
import type { Measurement } from '../../../src/contract/pob-measure.ts';
import type { Dispute } from '../../../src/contract/pob-settle.ts';
import { topologySubject } from '../../../src/contract/subjects.ts';
import type {
  ClientSession,
  ClientSessionCloseReason,
  RelayClass,
  RelayLeaveReason,
  RelayRecord as ContractRelayRecord,
  RelayState,
  TopologyEventData,
  TopologyEventType,
} from '../../../src/contract/topology.events.ts';

/** A relay as the control plane stores it: `exitIpv6` always said (false: clients' IPv6 is refused at the entry). */
export type RelayRecord = Required<ContractRelayRecord>;

/** An event a decision calls for, before it has a revision (RelayAdmitted takes the stored record). */
export type EventSpec =
  /** `identityKey`: the relay's Ed25519 identity public key as registered (absent: none). */
  | { type: 'RelayAdmitted'; identityKey?: string | null }
  | { type: 'RelayLeft'; relayId: string; reason: RelayLeaveReason }
  | { type: 'RelayKeyRotated'; relayId: string; publicKey: string; previousPublicKey: string }
  | { type: 'RelayEndpointChanged'; relayId: string; endpoint: string; previousEndpoint: string }
  | { type: 'RelayCapabilitiesChanged'; relayId: string; exitIpv6: boolean }
  | { type: 'ClientSessionOpened'; session: ClientSession }
  /** `session`: the session after the change (its new exit takes a private one from it). */
  | { type: 'ClientSessionExitChanged'; session: ClientSession; previousExitId: string }
  | { type: 'ClientSessionClosed'; sessionId: string; entryId: string; reason: ClientSessionCloseReason }
  | { type: 'MeasurementScheduled'; measurement: Measurement }
  | {
      type: 'RelayMeasured';
      measurementId: string;
      relayId: string;
      outcome: 'measured' | 'rejected' | 'incomplete';
      capacity: number | null;
      lineRate: number | null;
      reason: string | null;
    }
  | { type: 'EpochSettled'; epoch: number; epochSeconds: number; relays: number; credited: number; disputes: number }
  | { type: 'ReceiptDisputed'; epoch: number; dispute: Dispute }
  | { type: 'RelayStateChanged'; relayId: string; class: RelayClass; state: RelayState; previousState: RelayState | null; reason: string | null };

export interface BuiltEvent {
  id: string;
  type: TopologyEventType;
  revision: number;
  subject: string;
  /** The JSON text that is signed, stored and published byte for byte. */
  payload: string;
}

/** Give a spec its revision; `relay` is the relay's stored record (used by RelayAdmitted only). */
export function eventData(spec: EventSpec, revision: number, relay: RelayRecord | null): TopologyEventData {
  switch (spec.type) {
    case 'RelayAdmitted':
      if (!relay) throw new Error('RelayAdmitted needs the relay record');
      return { type: 'RelayAdmitted', data: { revision, relay: { ...relay }, identityKey: spec.identityKey ?? null } };
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
        data: {
          revision,
          sessionId: spec.session.id,
          entryId: spec.session.entryId,
          exitId: spec.session.exitId,
          previousExitId: spec.previousExitId,
          session: sessionRecord(spec.session),
        },
      };
    case 'ClientSessionClosed':
      return { type: 'ClientSessionClosed', data: { revision, sessionId: spec.sessionId, entryId: spec.entryId, reason: spec.reason } };
    case 'MeasurementScheduled': {
      const m = spec.measurement;
      return {
        type: 'MeasurementScheduled',
        data: {
          revision,
          measurement: {
            id: m.id,
            targetId: m.targetId,
            measurerIds: [...m.measurerIds],
            startsAt: m.startsAt,
            seconds: m.seconds,
            streams: m.streams,
            r: m.r,
          },
        },
      };
    }
    case 'RelayMeasured':
      return {
        type: 'RelayMeasured',
        data: {
          revision,
          measurementId: spec.measurementId,
          relayId: spec.relayId,
          outcome: spec.outcome,
          capacity: spec.capacity,
          lineRate: spec.lineRate,
          reason: spec.reason === null ? null : spec.reason.slice(0, 512),
        },
      };
    case 'EpochSettled':
      return {
        type: 'EpochSettled',
        data: { revision, epoch: spec.epoch, epochSeconds: spec.epochSeconds, relays: spec.relays, credited: spec.credited, disputes: spec.disputes },
      };
    case 'ReceiptDisputed': {
      const d = spec.dispute;
      const dispute =
        d.kind === 'disagree'
          ? { kind: d.kind, from: d.from, to: d.to, senderTx: d.senderTx, receiverRx: d.receiverRx }
          : d.kind === 'unmatched'
            ? { kind: d.kind, from: d.from, to: d.to, claimedBy: d.claimedBy, bytes: d.bytes }
            : { kind: d.kind, relayId: d.relayId, carried: d.carried, cap: d.cap };
      return { type: 'ReceiptDisputed', data: { revision, epoch: spec.epoch, dispute } };
    }
    case 'RelayStateChanged':
      return {
        type: 'RelayStateChanged',
        data: {
          revision,
          relayId: spec.relayId,
          class: spec.class,
          state: spec.state,
          previousState: spec.previousState,
          reason: spec.reason === null ? null : spec.reason.slice(0, 512),
        },
      };
  }
}

/** A copy of a session record with exactly the fields of the schema, in its order. */
export function sessionRecord(s: ClientSession): ClientSession {
  return {
    id: s.id,
    entryId: s.entryId,
    exitId: s.exitId,
    publicKey: s.publicKey,
    address: s.address,
    openedAt: s.openedAt,
    expiresAt: s.expiresAt,
    mode: s.mode,
  };
}

/** Causation ids must fit the envelope schema (1-128 chars); anything else becomes null. */
export function causation(requestId: string | null | undefined): string | null {
  return requestId && requestId.length <= 128 ? requestId : null;
}

/** The envelope of a topology event and the exact JSON text to sign and store. */
export function buildTopologyEvent(
  e: TopologyEventData,
  opts: { id: string; time: Date | string; causationId: string | null; epoch?: string },
): BuiltEvent & { envelope: Envelope } {
  const time = typeof opts.time === 'string' ? new Date(opts.time) : opts.time;
  if (Number.isNaN(time.getTime())) throw new Error(`bad event time ${String(opts.time)}`);
  const envelope: Envelope = {
    id: opts.id,
    type: e.type,
    version: currentVersion(e.type),
    source: CONTROL_PLANE_SOURCE,
    time: time.toISOString(),
    causationId: causation(opts.causationId),
    correlationId: null,
    ...(opts.epoch ? { epoch: opts.epoch } : {}),
    data: e.data,
  };
  return { id: opts.id, type: e.type, revision: e.data.revision, subject: topologySubject(e), payload: JSON.stringify(envelope), envelope };
}
