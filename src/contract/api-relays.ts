// The Edge Functions a relay calls: register-server, heartbeat, deregister and client-ready
// (docs/control-plane.md). Requests as the functions check them (their refusals: request.ts), answers
// as the relays check them. Pure.
import { z } from 'zod';
import { busKeyField, endpointField, flag, identityKeyField, regionField, relayIdField, requestObject, sessionIdField, text, wgKeyField } from './request.ts';
import { ClientSessionSchema, MeasurementSchema, RelayRecordSchema } from './topology.events.ts';

// deno-lint-ignore no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f]/;

export const RegisterRequestSchema = requestObject({
  relayId: relayIdField(),
  name: text('name')
    .min(1, 'name must be 1-128 characters')
    .max(128, 'name must be 1-128 characters')
    .refine((v) => !CONTROL_RE.test(v), 'name must not contain control characters'),
  region: regionField(),
  publicKey: wgKeyField(),
  endpoint: endpointField(),
  rotateKey: flag('rotateKey').default(false),
  /** Clients' IPv6 may leave at this relay (it has IPv6 to the internet); absent: false. */
  exitIpv6: flag('exitIpv6').default(false),
  /** The relay's NATS nkey public key (U…): its NATS user JWT is issued for it. Required when the bus uses NATS decentralized auth. */
  busKey: busKeyField().optional(),
  /**
   * The relay's Ed25519 identity public key (not its WireGuard key): it signs the relay's events, and the
   * control plane announces it in `RelayAdmitted`. Absent (relays from before identities): none recorded,
   * and the relay's events cannot be verified.
   */
  identityKey: identityKeyField().optional(),
  /**
   * The relay's signature over this registration with its recorded identity key (or, at first admission,
   * the one it presents): registration-proof.ts. Required from relay tokens once an identity is known,
   * so a stolen token cannot move the relay's key, endpoint or credentials.
   */
  proof: requestObject({
    at: z.number({ error: 'proof.at must be the signing time in Unix seconds' }).int('proof.at must be the signing time in Unix seconds'),
    signature: text('proof.signature').max(200, 'proof.signature must be base64 of a 64-byte Ed25519 signature'),
  }).optional(),
});
/** What a relay sends. */
export type RegisterRequest = z.input<typeof RegisterRequestSchema>;
/** What register-server works with: `rotateKey` and `exitIpv6` said. */
export type ValidRegisterRequest = z.output<typeof RegisterRequestSchema>;

/** deregister: exactly a relay id. */
export const RelayIdRequestSchema = requestObject({ relayId: relayIdField() });

/** heartbeat: the relay id, and whether the relay wants a fresh NATS user JWT (it renews past half its lifetime). */
export const HeartbeatRequestSchema = requestObject({ relayId: relayIdField(), renewBus: flag('renewBus').default(false) });
export type HeartbeatRequest = z.input<typeof HeartbeatRequestSchema>;

/** A relay's NATS user JWT (for the nkey it registered) and when it expires (ISO time). */
export const BusCredentialSchema = z.object({ jwt: z.string().min(1), expiresAt: z.string() });
export type BusCredential = z.infer<typeof BusCredentialSchema>;

/** ban-relay (service role): ban a relay (it leaves the topology, its credentials stop) or lift the ban. */
export const BanRequestSchema = requestObject({
  relayId: relayIdField(),
  banned: flag('banned'),
  reason: text('reason')
    .max(200, 'reason must be at most 200 characters')
    .refine((v) => !CONTROL_RE.test(v), 'reason must not contain control characters')
    .default(''),
  /**
   * With `banned: false`: also forget the relay's recorded identity key, so that it is admitted again
   * with a new one (the way back for a relay that lost its identity key; it must be banned first).
   */
  forgetIdentity: flag('forgetIdentity').default(false),
}).refine((r) => !(r.banned && r.forgetIdentity), { message: 'forgetIdentity goes with banned: false (lifting the ban)', path: ['forgetIdentity'] });
export type BanRequest = z.input<typeof BanRequestSchema>;

export const BanResponseSchema = z.object({
  relayId: z.string(),
  banned: z.boolean(),
  /** Whether this call changed anything (banning a banned relay, or unbanning one that is not, does not). */
  changed: z.boolean(),
  /** The topology revision after the call (a ban of an active relay appends RelayLeft, reason "banned"). */
  revision: z.number().int().min(0),
});
export type BanResponse = z.infer<typeof BanResponseSchema>;

/** revoke-token (service role): stop one relay token by its jti (`relay-core token mint` prints it). */
export const RevokeTokenRequestSchema = requestObject({
  jti: sessionIdField('jti'),
  reason: text('reason')
    .max(200, 'reason must be at most 200 characters')
    .refine((v) => !CONTROL_RE.test(v), 'reason must not contain control characters')
    .default(''),
});
export type RevokeTokenRequest = z.input<typeof RevokeTokenRequestSchema>;

export const RevokeTokenResponseSchema = z.object({
  jti: z.string(),
  /** false: it was revoked already. */
  changed: z.boolean(),
});
export type RevokeTokenResponse = z.infer<typeof RevokeTokenResponseSchema>;

/** The entry relay confirms it programmed a session and steers it to `exitId`. */
export const ClientReadyRequestSchema = requestObject({ relayId: relayIdField(), sessionId: sessionIdField(), exitId: relayIdField('exitId') });

/** The bus details `register-server` hands a relay. */
export const BusDetailsSchema = z.object({
  servers: z.array(z.string().min(1)).min(1),
  token: z.string().nullable(),
  /** NATS decentralized auth: the relay's user JWT; null in token mode. */
  credential: BusCredentialSchema.nullable().default(null),
  subjectRoot: z.string(),
  topologyStream: z.string(),
  relayStream: z.string(),
  topologySigningKey: z.string(),
});
export type BusDetails = z.infer<typeof BusDetailsSchema>;

export const RegisterResponseSchema = z.object({
  relay: RelayRecordSchema,
  readmitted: z.boolean(),
  revision: z.number().int().min(0),
  revisionTime: z.string(),
  relays: z.array(RelayRecordSchema),
  /** Every open client session (each relay folds them all; the entry programs its own). */
  sessions: z.array(ClientSessionSchema),
  bus: BusDetailsSchema,
  heartbeatIntervalSeconds: z.number().positive(),
  /** The control plane's epoch the snapshot belongs to (absent from control planes before epochs). */
  epoch: z.string().uuid().optional(),
  /**
   * The length of a Proof-of-Bandwidth receipt epoch (docs/proof-of-bandwidth.md): the relay hands in
   * its receipts once per epoch of this many seconds. Absent (control planes before receipts): none.
   */
  receiptEpochSeconds: z.number().int().positive().optional(),
  /**
   * The capacity measurements under way that the relay takes part in (docs/proof-of-bandwidth.md,
   * "Measuring"): a relay that resyncs over a MeasurementScheduled still learns of it. Absent: none.
   */
  measurements: z.array(MeasurementSchema).optional(),
});
export type RegisterResponse = z.infer<typeof RegisterResponseSchema>;

export const HeartbeatResponseSchema = z.object({
  revision: z.number().int().min(0),
  revisionTime: z.string(),
  status: z.literal('active'),
  /** A fresh NATS user JWT, when the relay asked (`renewBus`) and the bus uses decentralized auth. */
  bus: BusCredentialSchema.optional(),
  /** The control plane's epoch now: another than the relay's snapshot means a resync. */
  epoch: z.string().uuid().optional(),
});
export type HeartbeatResponse = z.infer<typeof HeartbeatResponseSchema>;

export const DeregisterResponseSchema = z.object({ revision: z.number().int().min(0) });
export type DeregisterResponse = z.infer<typeof DeregisterResponseSchema>;

export const ClientReadyResponseSchema = z.object({
  sessionId: z.string().optional(),
  exitId: z.string().optional(),
  /** false: the session has another exit by now (a stale confirmation; harmless). */
  confirmed: z.boolean(),
});
export type ClientReadyResponse = z.infer<typeof ClientReadyResponseSchema>;
