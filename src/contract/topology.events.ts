import { z } from 'zod';
import { formatIpv4, parseIpv4, parseIpv4Cidr } from '../contract/ip.ts';
import { RelayIdSchema, type Envelope } from './envelope.ts';

const BASE64_32 = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

/** A WireGuard public key: base64 of exactly 32 bytes. */
export const WgKeySchema = z.string().regex(BASE64_32, 'must be base64 of a 32-byte WireGuard key');

/** A relay's Ed25519 identity public key (signs its events): base64 of exactly 32 bytes. */
export const IdentityKeySchema = z.string().regex(BASE64_32, 'must be base64 of a 32-byte Ed25519 public key');

/** `host:port` with an IPv4 literal, `[v6]:port`, or a DNS name. */
export const EndpointSchema = z
  .string()
  .max(261)
  .refine((s) => parseEndpoint(s) !== null, 'must be host:port (IPv4, [IPv6] or DNS name, port 1-65535)');

export const Ipv4Schema = z.string().refine((s) => parseIpv4(s) !== null, 'must be a dotted-quad IPv4 address');
export const Ipv4CidrSchema = z.string().refine((s) => parseCidr(s) !== null, 'must be an IPv4 CIDR a.b.c.d/n with no host bits set');

/** One relay as the topology knows it. */
export const RelayRecordSchema = z
  .object({
    id: RelayIdSchema,
    name: z.string().min(1).max(128),
    region: z.string().min(1).max(64),
    publicKey: WgKeySchema,
    endpoint: EndpointSchema,
    meshAddress: Ipv4Schema,
    clientPool: Ipv4CidrSchema,
    /**
     * The relay has IPv6 to the internet: its clients' IPv6 leaves there (NAT66). Absent (records from
     * before IPv6) means false: an entry refuses IPv6 of that relay's clients at once.
     */
    exitIpv6: z.boolean().optional(),
  })
  .strict();
export type RelayRecord = z.infer<typeof RelayRecordSchema>;

const Revision = z.number().int().min(1);

export const RelayAdmittedV1 = z.object({ revision: Revision, relay: RelayRecordSchema }).strict();
/**
 * v2 adds `identityKey`: the relay's Ed25519 identity public key as it registered it (null: it registered
 * none). Readers verify the relay's events with it (docs/events.md). Also published at a re-registration
 * that brings another identity key (the record is then the one the relay already has).
 */
export const RelayAdmittedV2 = z.object({ revision: Revision, relay: RelayRecordSchema, identityKey: IdentityKeySchema.nullable() }).strict();
/** v1 carried no identity key. */
export const upcastRelayAdmittedV1 = (d: z.infer<typeof RelayAdmittedV1>): z.infer<typeof RelayAdmittedV2> => ({ ...d, identityKey: null });
export const RelayLeftV1 = z.object({ revision: Revision, relayId: RelayIdSchema, reason: z.enum(['deregistered', 'expired', 'removed', 'banned']) }).strict();
export const RelayKeyRotatedV1 = z.object({ revision: Revision, relayId: RelayIdSchema, publicKey: WgKeySchema, previousPublicKey: WgKeySchema }).strict();
export const RelayEndpointChangedV1 = z
  .object({ revision: Revision, relayId: RelayIdSchema, endpoint: EndpointSchema, previousEndpoint: EndpointSchema })
  .strict();
/** What a relay can carry changed at a re-registration: today whether clients' IPv6 may leave there. */
export const RelayCapabilitiesChangedV1 = z.object({ revision: Revision, relayId: RelayIdSchema, exitIpv6: z.boolean() }).strict();

/** How a session crosses the network (docs/clients.md, "Private sessions"). */
export const SESSION_MODES = ['standard', 'private'] as const;
export type SessionMode = (typeof SESSION_MODES)[number];

const clientSessionFields = {
  id: z.string().uuid(),
  entryId: RelayIdSchema,
  exitId: RelayIdSchema,
  publicKey: WgKeySchema,
  address: Ipv4Schema,
  openedAt: z.string().datetime({ offset: true }),
  expiresAt: z.string().datetime({ offset: true }),
};

/** A session as the topology knew it before private sessions: every one was standard. */
export const ClientSessionSchemaV1 = z.object(clientSessionFields).strict();

/**
 * A client session as the topology knows it: a stock WireGuard client (its public key) that enters the
 * network at `entryId`, with `address` from that relay's client pool, and leaves it at `exitId`.
 * `standard`: the entry terminates the client's tunnel and carries its packets over the mesh link;
 * `private`: the client's tunnel ends at the exit, and the entry forwards its ciphertext to it.
 * Sessions ride the topology log (one ordered, signed log, one snapshot): every relay folds them, the
 * relays they concern program them (docs/clients.md).
 */
export const ClientSessionSchema = z.object({ ...clientSessionFields, mode: z.enum(SESSION_MODES) }).strict();
export type ClientSession = z.infer<typeof ClientSessionSchema>;

export const CLIENT_SESSION_CLOSE_REASONS = ['disconnected', 'expired', 'entry-left', 'not-confirmed', 'removed'] as const;
export type ClientSessionCloseReason = (typeof CLIENT_SESSION_CLOSE_REASONS)[number];

export const ClientSessionOpenedV1 = z.object({ revision: Revision, session: ClientSessionSchemaV1 }).strict();
/** v2: the session says its mode; v1 sessions were standard. */
export const ClientSessionOpenedV2 = z.object({ revision: Revision, session: ClientSessionSchema }).strict();
export const upcastClientSessionOpenedV1 = (d: z.infer<typeof ClientSessionOpenedV1>): z.infer<typeof ClientSessionOpenedV2> => ({
  ...d,
  session: { ...d.session, mode: 'standard' },
});
export const ClientSessionExitChangedV1 = z
  .object({ revision: Revision, sessionId: z.string().uuid(), entryId: RelayIdSchema, exitId: RelayIdSchema, previousExitId: RelayIdSchema })
  .strict();
/**
 * v2 adds `session`, the session after the change: a private session's new exit has not kept it
 * before (it did not concern that relay), and takes it from here. v1 reads as `session: null`.
 */
export const ClientSessionExitChangedV2 = ClientSessionExitChangedV1.extend({ session: ClientSessionSchema.nullable() }).strict();
export const upcastClientSessionExitChangedV1 = (d: z.infer<typeof ClientSessionExitChangedV1>): z.infer<typeof ClientSessionExitChangedV2> => ({
  ...d,
  session: null,
});
export const ClientSessionClosedV1 = z
  .object({ revision: Revision, sessionId: z.string().uuid(), entryId: RelayIdSchema, reason: z.enum(CLIENT_SESSION_CLOSE_REASONS) })
  .strict();

/**
 * A capacity measurement the control plane scheduled (docs/proof-of-bandwidth.md, "Measuring"): from
 * `startsAt`, for `seconds`, each measurer sends `streams` TCP streams over its mesh link to the
 * target's echo service, which must send every byte back; the target may carry at most a share `r` of
 * other traffic meanwhile. The parties then sign and hand in their counts.
 */
export const MeasurementSchema = z
  .object({
    id: z.string().uuid(),
    targetId: RelayIdSchema,
    measurerIds: z.array(RelayIdSchema).min(1).max(8),
    startsAt: z.string().datetime({ offset: true }),
    seconds: z.number().int().min(2).max(120),
    streams: z.number().int().min(1).max(8),
    r: z.number().min(0).max(0.5),
  })
  .strict()
  .refine((m) => new Set(m.measurerIds).size === m.measurerIds.length && !m.measurerIds.includes(m.targetId), 'measurers are distinct relays, not the target');
export const MeasurementScheduledV1 = z.object({ revision: Revision, measurement: MeasurementSchema }).strict();
/**
 * A measurement concluded, signed by the control plane: the target's capacity (goodput with its
 * background counted, and the line rate it implies, bytes per second), or why none was found:
 * `rejected` (echoes corrupted, streams broken, nothing echoed) or `incomplete` (a measurer did not report).
 */
export const RelayMeasuredV1 = z
  .object({
    revision: Revision,
    measurementId: z.string().uuid(),
    relayId: RelayIdSchema,
    outcome: z.enum(['measured', 'rejected', 'incomplete']),
    capacity: z.number().int().min(0).nullable(),
    lineRate: z.number().int().min(0).nullable(),
    reason: z.string().max(512).nullable(),
  })
  .strict();

/** A relay's class: core (the network's own) or community (enrolled by an operator; docs/proof-of-bandwidth.md). */
export const RELAY_CLASSES = ['core', 'community'] as const;
export type RelayClass = (typeof RELAY_CLASSES)[number];
/**
 * A relay's state: `probation` (in the mesh and measured, but no client traffic), `active` (carries
 * clients), `rejected` (its measurement refused it) or `suspended` (by the operator of the network).
 */
export const RELAY_STATES = ['probation', 'active', 'rejected', 'suspended'] as const;
export type RelayState = (typeof RELAY_STATES)[number];
/**
 * A relay's standing changed: it was enrolled (probation), a measurement made it active or rejected it,
 * or the network's operator suspended or resumed it. Only active relays carry client traffic.
 */
export const RelayStateChangedV1 = z
  .object({
    revision: Revision,
    relayId: RelayIdSchema,
    class: z.enum(RELAY_CLASSES),
    state: z.enum(RELAY_STATES),
    previousState: z.enum(RELAY_STATES).nullable(),
    reason: z.string().max(512).nullable(),
  })
  .strict();

/** The pseudo relay of the subjects of events about the whole network (EpochSettled): no relay has this id. */
export const NETWORK_SUBJECT = 'network';

/**
 * An epoch of Proof-of-Bandwidth receipts was settled (docs/proof-of-bandwidth.md): how many relays
 * reported, what was credited in all, and how many disputes were found (each also a ReceiptDisputed, up
 * to MAX_DISPUTE_EVENTS). Settling an epoch again appends it again.
 */
export const EpochSettledV1 = z
  .object({
    revision: Revision,
    epoch: z.number().int().min(0),
    epochSeconds: z.number().int().min(1),
    relays: z.number().int().min(0),
    credited: z.number().int().min(0),
    disputes: z.number().int().min(0),
  })
  .strict();
/** The most ReceiptDisputed events one settlement appends (the rest are in pob_disputes, counted by EpochSettled). */
export const MAX_DISPUTE_EVENTS = 64;
const bytes = z.number().int().min(0);
/** A dispute a settlement found (src/contract/pob-settle.ts): its kind and the relays and counts it concerns. */
export const ReceiptDisputedV1 = z
  .object({
    revision: Revision,
    epoch: z.number().int().min(0),
    dispute: z.discriminatedUnion('kind', [
      z.object({ kind: z.literal('disagree'), from: RelayIdSchema, to: RelayIdSchema, senderTx: bytes, receiverRx: bytes }).strict(),
      z.object({ kind: z.literal('unmatched'), from: RelayIdSchema, to: RelayIdSchema, claimedBy: RelayIdSchema, bytes }).strict(),
      z.object({ kind: z.literal('over-capacity'), relayId: RelayIdSchema, carried: bytes, cap: bytes }).strict(),
    ]),
  })
  .strict();

/** The topology event union: what the control plane publishes, signed, on `relaynet.topology.<relayId>.<event>`. */
export type TopologyEvent =
  | Envelope<'RelayAdmitted', z.infer<typeof RelayAdmittedV2>>
  | Envelope<'RelayLeft', z.infer<typeof RelayLeftV1>>
  | Envelope<'RelayKeyRotated', z.infer<typeof RelayKeyRotatedV1>>
  | Envelope<'RelayEndpointChanged', z.infer<typeof RelayEndpointChangedV1>>
  | Envelope<'RelayCapabilitiesChanged', z.infer<typeof RelayCapabilitiesChangedV1>>
  | Envelope<'ClientSessionOpened', z.infer<typeof ClientSessionOpenedV2>>
  | Envelope<'ClientSessionExitChanged', z.infer<typeof ClientSessionExitChangedV2>>
  | Envelope<'ClientSessionClosed', z.infer<typeof ClientSessionClosedV1>>
  | Envelope<'MeasurementScheduled', z.infer<typeof MeasurementScheduledV1>>
  | Envelope<'RelayMeasured', z.infer<typeof RelayMeasuredV1>>
  | Envelope<'EpochSettled', z.infer<typeof EpochSettledV1>>
  | Envelope<'ReceiptDisputed', z.infer<typeof ReceiptDisputedV1>>
  | Envelope<'RelayStateChanged', z.infer<typeof RelayStateChangedV1>>;

export type TopologyEventType = TopologyEvent['type'];

/** A topology event without its envelope: its type and data (what the control plane decides before it wraps it). */
export type TopologyEventData = TopologyEvent extends infer E ? (E extends TopologyEvent ? Pick<E, 'type' | 'data'> : never) : never;

/** Why a relay left the topology. */
export type RelayLeaveReason = z.infer<typeof RelayLeftV1>['reason'];

/** The relay a topology event is about (the `<relayId>` token of its subject); a session's entry relay. */
export function topologySubjectRelay(e: TopologyEventData): string {
  switch (e.type) {
    case 'RelayAdmitted':
      return e.data.relay.id;
    case 'RelayLeft':
    case 'RelayKeyRotated':
    case 'RelayEndpointChanged':
    case 'RelayCapabilitiesChanged':
      return e.data.relayId;
    case 'ClientSessionOpened':
      return e.data.session.entryId;
    case 'ClientSessionExitChanged':
    case 'ClientSessionClosed':
      return e.data.entryId;
    case 'MeasurementScheduled':
      return e.data.measurement.targetId;
    case 'RelayMeasured':
    case 'RelayStateChanged':
      return e.data.relayId;
    case 'EpochSettled':
      return NETWORK_SUBJECT;
    case 'ReceiptDisputed':
      return e.data.dispute.kind === 'over-capacity' ? e.data.dispute.relayId : e.data.dispute.from;
    default:
      return assertNever(e);
  }
}

export function assertNever(x: never): never {
  throw new Error(`unhandled variant: ${JSON.stringify(x)}`);
}

// ---------------------------------------------------------------------------------------------
// Address parsing shared by schemas and the allocation tests. Pure.

export { formatIpv4, parseIpv4 };

/** An IPv4 network `a.b.c.d/n` with no host bits set, as numbers. */
export function parseCidr(s: string): { base: number; prefix: number } | null {
  return parseIpv4Cidr(s);
}

export function parseEndpoint(s: string): { host: string; port: number } | null {
  let host: string;
  let portStr: string;
  const v6 = /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$/.exec(s);
  if (v6) {
    host = v6[1]!;
    portStr = v6[2]!;
    if (!host.includes(':')) return null;
  } else {
    const i = s.lastIndexOf(':');
    if (i <= 0) return null;
    host = s.slice(0, i);
    portStr = s.slice(i + 1);
    if (!/^\d{1,5}$/.test(portStr)) return null;
    const isV4Shape = /^[\d.]+$/.test(host);
    if (
      isV4Shape
        ? parseIpv4(host) === null
        : !/^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/.test(host)
    ) {
      return null;
    }
  }
  const port = Number(portStr);
  if (port < 1 || port > 65535) return null;
  return { host, port };
}
