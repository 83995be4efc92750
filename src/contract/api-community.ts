// Community relays (issue 17; docs/proof-of-bandwidth.md, "Community relays"): enroll-relay (an
// operator enrolls a relay and gets its relay token) and set-relay-state (the network's operator
// suspends or resumes a relay). Requests as the functions check them, answers as the CLI checks them. Pure.
import { z } from 'zod';
import { relayIdField, requestObject, text } from './request.ts';
import { RELAY_CLASSES, RELAY_STATES } from './topology.events.ts';

// deno-lint-ignore no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f]/;

/** The longest relay token enroll-relay mints (s): a year; the default is 30 days. */
export const MAX_ENROLL_TOKEN_SECONDS = 366 * 24 * 3600;
export const DEFAULT_ENROLL_TOKEN_SECONDS = 30 * 24 * 3600;

const reason = () =>
  text('reason')
    .max(200, 'reason must be at most 200 characters')
    .refine((v) => !CONTROL_RE.test(v), 'reason must not contain control characters');

/** enroll-relay: the relay id the operator wants, and how long its relay token lives. */
export const EnrollRelayRequestSchema = requestObject({
  relayId: relayIdField(),
  ttlSeconds: z
    .number({ error: `ttlSeconds must be an integer number of seconds, 60-${MAX_ENROLL_TOKEN_SECONDS}` })
    .int(`ttlSeconds must be an integer number of seconds, 60-${MAX_ENROLL_TOKEN_SECONDS}`)
    .min(60, `ttlSeconds must be an integer number of seconds, 60-${MAX_ENROLL_TOKEN_SECONDS}`)
    .max(MAX_ENROLL_TOKEN_SECONDS, `ttlSeconds must be an integer number of seconds, 60-${MAX_ENROLL_TOKEN_SECONDS}`)
    .default(DEFAULT_ENROLL_TOKEN_SECONDS),
});
export type EnrollRelayRequest = z.input<typeof EnrollRelayRequestSchema>;

export const RelayStandingSchema = z.object({
  relayId: z.string(),
  class: z.enum(RELAY_CLASSES),
  state: z.enum(RELAY_STATES),
  /** The enrolling operator's user id; null for core relays. */
  operatorId: z.string().nullable(),
  reason: z.string().nullable(),
});
export type RelayStanding = z.infer<typeof RelayStandingSchema>;

export const EnrollRelayResponseSchema = z.object({
  standing: RelayStandingSchema,
  /** The relay's token (role relay, bound to this relay id): what `relay-core run --token-file` reads. */
  token: z.string().min(1),
  jti: z.string(),
  expiresAt: z.string(),
  /** true: the relay was enrolled before (by this operator); this is a new token for it, its state unchanged. */
  reissued: z.boolean(),
});
export type EnrollRelayResponse = z.infer<typeof EnrollRelayResponseSchema>;

/** set-relay-state: suspend a relay (no client traffic; its open sessions closed) or resume it. */
export const SetRelayStateRequestSchema = requestObject({
  relayId: relayIdField(),
  state: z.enum(['suspended', 'active'], { error: 'state must be "suspended" or "active"' }),
  reason: reason().default(''),
});
export type SetRelayStateRequest = z.input<typeof SetRelayStateRequestSchema>;

export const SetRelayStateResponseSchema = z.object({
  standing: RelayStandingSchema,
  previousState: z.enum(RELAY_STATES),
  /** false: it was in that state already. */
  changed: z.boolean(),
  /** Client sessions closed because the relay no longer carries clients. */
  sessionsClosed: z.number().int().min(0),
});
export type SetRelayStateResponse = z.infer<typeof SetRelayStateResponseSchema>;
