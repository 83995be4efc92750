// The Edge Functions a relay calls: register-server, heartbeat, deregister and client-ready
// (docs/control-plane.md). Requests as the functions check them (their refusals: request.ts), answers
// as the relays check them. Pure.
import { z } from 'zod';
import { endpointField, flag, regionField, relayIdField, requestObject, sessionIdField, text, wgKeyField } from './request.ts';
import { ClientSessionSchema, RelayRecordSchema } from './topology.events.ts';

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
});
/** What a relay sends. */
export type RegisterRequest = z.input<typeof RegisterRequestSchema>;
/** What register-server works with: `rotateKey` and `exitIpv6` said. */
export type ValidRegisterRequest = z.output<typeof RegisterRequestSchema>;

/** heartbeat and deregister: exactly a relay id. */
export const RelayIdRequestSchema = requestObject({ relayId: relayIdField() });

/** The entry relay confirms it programmed a session and steers it to `exitId`. */
export const ClientReadyRequestSchema = requestObject({ relayId: relayIdField(), sessionId: sessionIdField(), exitId: relayIdField('exitId') });

/** The bus details `register-server` hands a relay. */
export const BusDetailsSchema = z.object({
  servers: z.array(z.string().min(1)).min(1),
  token: z.string().nullable(),
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
});
export type RegisterResponse = z.infer<typeof RegisterResponseSchema>;

export const HeartbeatResponseSchema = z.object({
  revision: z.number().int().min(0),
  revisionTime: z.string(),
  status: z.literal('active'),
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
