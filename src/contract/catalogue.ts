import type { z } from 'zod';
import { EnvelopeSchema, type Envelope } from './envelope.ts';
import {
  ClientSessionClosedV1,
  ClientSessionExitChangedV1,
  ClientSessionExitChangedV2,
  ClientSessionOpenedV1,
  ClientSessionOpenedV2,
  upcastClientSessionExitChangedV1,
  upcastClientSessionOpenedV1,
  RelayAdmittedV1,
  RelayAdmittedV2,
  upcastRelayAdmittedV1,
  RelayEndpointChangedV1,
  RelayCapabilitiesChangedV1,
  RelayKeyRotatedV1,
  MeasurementScheduledV1,
  RelayMeasuredV1,
  EpochSettledV1,
  ReceiptDisputedV1,
  RelayStateChangedV1,
  RelayLeftV1,
  type TopologyEvent,
} from './topology.events.ts';
import {
  ClientSessionStateChangedV1,
  ClientSessionStateChangedV2,
  upcastClientSessionStateChangedV1,
  ClientSessionSteeredV1,
  KernelOperationFailedV1,
  KernelReconciledV1,
  KernelReconciledV2,
  upcastKernelReconciledV1,
  LinkStateChangedV1,
  PeerEndpointResolvedV1,
  RelayDrainingV1,
  RelayEventsDroppedV1,
  ReceiptsSignedV1,
  ReceiptsRefusedV1,
  WireGuardKeyStagedV1,
  MeasurementReportedV1,
  TopologyKeyRefusedV1,
  RelayRegisteredV1,
  RelayStartedV1,
  RelayStartedV2,
  RelayStartedV3,
  RelayStartedV4,
  RelayRegisteredV2,
  upcastRelayRegisteredV1,
  upcastRelayStartedV1,
  upcastRelayStartedV2,
  upcastRelayStartedV3,
  TopologySeededV2,
  TopologySeededV3,
  upcastTopologySeededV1,
  upcastTopologySeededV2,
  RelayStoppedV1,
  TopologyEventAppliedV1,
  TopologyEventRejectedV1,
  TopologyResyncRequestedV1,
  TopologyResyncRequestedV2,
  upcastTopologyResyncRequestedV1,
  TopologySeededV1,
  type RelayEvent,
} from './relay.events.ts';

/** Where an event type lives: the topology stream (signed by the control plane) or a relay's own stream. */
export type EventKind = { stream: 'topology' } | { stream: 'relay'; aggregate: string };

interface CatalogueEntry {
  kind: EventKind;
  /** Schemas by version; the highest is current. */
  versions: Record<number, z.ZodType>;
  /**
   * `upcast[n]` turns valid version-n data into version n+1 data. Every version below the current one
   * has one, so an event recorded by an older relay-core reads as the current version.
   */
  upcast?: Record<number, (data: never) => unknown>;
}

/** The event catalogue: every event type, its stream, and the schema of each version. */
export const CATALOGUE = {
  RelayAdmitted: { kind: { stream: 'topology' }, versions: { 1: RelayAdmittedV1, 2: RelayAdmittedV2 }, upcast: { 1: upcastRelayAdmittedV1 } },
  RelayLeft: { kind: { stream: 'topology' }, versions: { 1: RelayLeftV1 } },
  RelayKeyRotated: { kind: { stream: 'topology' }, versions: { 1: RelayKeyRotatedV1 } },
  MeasurementScheduled: { kind: { stream: 'topology' }, versions: { 1: MeasurementScheduledV1 } },
  RelayMeasured: { kind: { stream: 'topology' }, versions: { 1: RelayMeasuredV1 } },
  EpochSettled: { kind: { stream: 'topology' }, versions: { 1: EpochSettledV1 } },
  ReceiptDisputed: { kind: { stream: 'topology' }, versions: { 1: ReceiptDisputedV1 } },
  RelayStateChanged: { kind: { stream: 'topology' }, versions: { 1: RelayStateChangedV1 } },
  RelayEndpointChanged: { kind: { stream: 'topology' }, versions: { 1: RelayEndpointChangedV1 } },
  RelayCapabilitiesChanged: { kind: { stream: 'topology' }, versions: { 1: RelayCapabilitiesChangedV1 } },
  ClientSessionOpened: {
    kind: { stream: 'topology' },
    versions: { 1: ClientSessionOpenedV1, 2: ClientSessionOpenedV2 },
    upcast: { 1: upcastClientSessionOpenedV1 },
  },
  ClientSessionExitChanged: {
    kind: { stream: 'topology' },
    versions: { 1: ClientSessionExitChangedV1, 2: ClientSessionExitChangedV2 },
    upcast: { 1: upcastClientSessionExitChangedV1 },
  },
  ClientSessionClosed: { kind: { stream: 'topology' }, versions: { 1: ClientSessionClosedV1 } },
  RelayStarted: {
    kind: { stream: 'relay', aggregate: 'relay' },
    versions: { 1: RelayStartedV1, 2: RelayStartedV2, 3: RelayStartedV3, 4: RelayStartedV4 },
    upcast: { 1: upcastRelayStartedV1, 2: upcastRelayStartedV2, 3: upcastRelayStartedV3 },
  },
  RelayRegistered: {
    kind: { stream: 'relay', aggregate: 'relay' },
    versions: { 1: RelayRegisteredV1, 2: RelayRegisteredV2 },
    upcast: { 1: upcastRelayRegisteredV1 },
  },
  RelayDraining: { kind: { stream: 'relay', aggregate: 'relay' }, versions: { 1: RelayDrainingV1 } },
  RelayStopped: { kind: { stream: 'relay', aggregate: 'relay' }, versions: { 1: RelayStoppedV1 } },
  TopologySeeded: {
    kind: { stream: 'relay', aggregate: 'topology' },
    versions: { 1: TopologySeededV1, 2: TopologySeededV2, 3: TopologySeededV3 },
    upcast: { 1: upcastTopologySeededV1, 2: upcastTopologySeededV2 },
  },
  TopologyResyncRequested: {
    kind: { stream: 'relay', aggregate: 'topology' },
    versions: { 1: TopologyResyncRequestedV1, 2: TopologyResyncRequestedV2 },
    upcast: { 1: upcastTopologyResyncRequestedV1 },
  },
  TopologyEventApplied: { kind: { stream: 'relay', aggregate: 'topology' }, versions: { 1: TopologyEventAppliedV1 } },
  TopologyEventRejected: { kind: { stream: 'relay', aggregate: 'topology' }, versions: { 1: TopologyEventRejectedV1 } },
  TopologyKeyRefused: { kind: { stream: 'relay', aggregate: 'topology' }, versions: { 1: TopologyKeyRefusedV1 } },
  RelayEventsDropped: { kind: { stream: 'relay', aggregate: 'relay' }, versions: { 1: RelayEventsDroppedV1 } },
  ReceiptsSigned: { kind: { stream: 'relay', aggregate: 'relay' }, versions: { 1: ReceiptsSignedV1 } },
  ReceiptsRefused: { kind: { stream: 'relay', aggregate: 'relay' }, versions: { 1: ReceiptsRefusedV1 } },
  WireGuardKeyStaged: { kind: { stream: 'relay', aggregate: 'relay' }, versions: { 1: WireGuardKeyStagedV1 } },
  MeasurementReported: { kind: { stream: 'relay', aggregate: 'relay' }, versions: { 1: MeasurementReportedV1 } },
  LinkStateChanged: { kind: { stream: 'relay', aggregate: 'link' }, versions: { 1: LinkStateChangedV1 } },
  PeerEndpointResolved: { kind: { stream: 'relay', aggregate: 'link' }, versions: { 1: PeerEndpointResolvedV1 } },
  ClientSessionStateChanged: {
    kind: { stream: 'relay', aggregate: 'session' },
    versions: { 1: ClientSessionStateChangedV1, 2: ClientSessionStateChangedV2 },
    upcast: { 1: upcastClientSessionStateChangedV1 },
  },
  ClientSessionSteered: { kind: { stream: 'relay', aggregate: 'session' }, versions: { 1: ClientSessionSteeredV1 } },
  KernelReconciled: {
    kind: { stream: 'relay', aggregate: 'kernel' },
    versions: { 1: KernelReconciledV1, 2: KernelReconciledV2 },
    upcast: { 1: upcastKernelReconciledV1 },
  },
  KernelOperationFailed: { kind: { stream: 'relay', aggregate: 'kernel' }, versions: { 1: KernelOperationFailedV1 } },
} as const satisfies Record<string, CatalogueEntry>;

export type EventType = keyof typeof CATALOGUE;
export type AnyEvent = TopologyEvent | RelayEvent;

/** Current schema version of a type. */
export function currentVersion(type: EventType): number {
  return Math.max(...Object.keys(CATALOGUE[type].versions).map(Number));
}

export function isEventType(t: string): t is EventType {
  return Object.hasOwn(CATALOGUE, t);
}

export type ParseResult<E> = { ok: true; event: E } | { ok: false; error: string };

/**
 * Validate an unknown value as an event of the catalogue: envelope shape, known type and version,
 * and the payload schema of that version. An older version is then upcast step by step to the current
 * one and checked against the current schema, so callers only ever see current events (`version` is the
 * current version; the bytes on the wire are untouched). Pure; never throws.
 */
export function parseEvent(value: unknown): ParseResult<AnyEvent> {
  const env = EnvelopeSchema.safeParse(value);
  if (!env.success) return { ok: false, error: `envelope: ${formatIssues(env.error)}` };
  const { type, version } = env.data;
  if (!isEventType(type)) return { ok: false, error: `type: unknown event type ${JSON.stringify(type)}` };
  const entry: CatalogueEntry = CATALOGUE[type];
  const schema = entry.versions[version];
  if (!schema) return { ok: false, error: `version: ${type} has no schema version ${version}` };
  const data = schema.safeParse(env.data.data);
  if (!data.success) return { ok: false, error: `data: ${formatIssues(data.error)}` };
  const current = currentVersion(type);
  if (version === current) return { ok: true, event: { ...env.data, data: data.data } as AnyEvent };
  let upcast: unknown = data.data;
  for (let v = version; v < current; v++) {
    const step = entry.upcast?.[v];
    if (!step) return { ok: false, error: `version: ${type} has no upcast from version ${v}` };
    upcast = step(upcast as never);
  }
  const checked = entry.versions[current]!.safeParse(upcast);
  if (!checked.success) return { ok: false, error: `upcast: ${type} v${version} -> v${current}: ${formatIssues(checked.error)}` };
  return { ok: true, event: { ...env.data, version: current, data: checked.data } as AnyEvent };
}

/** Like {@link parseEvent}, but only topology events are accepted. */
export function parseTopologyEvent(value: unknown): ParseResult<TopologyEvent> {
  const r = parseEvent(value);
  if (!r.ok) return r;
  if (CATALOGUE[r.event.type].kind.stream !== 'topology') return { ok: false, error: `type: ${r.event.type} is not a topology event` };
  return r as ParseResult<TopologyEvent>;
}

export function formatIssues(err: z.ZodError): string {
  return err.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`)
    .join('; ');
}

export type { Envelope };
