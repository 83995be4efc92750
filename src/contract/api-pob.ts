// The Edge Functions of Proof-of-Bandwidth (issue 17; docs/proof-of-bandwidth.md): a relay hands in an
// epoch's traffic receipts with the root it signed (submit-receipts). Requests as the functions check
// them, answers as the relays check them. Pure.
import { z } from 'zod';
import { type EpochRoot, MAX_RECEIPTS } from './pob-receipts.ts';
import { MAX_BACKGROUND_SHARE, MAX_MEASUREMENT_SECONDS, MAX_MEASURERS, MAX_STREAMS } from './pob-measure.ts';
import { oneOf, relayIdField, requestObject, sessionIdField, text } from './request.ts';
import { RELAY_CLASSES, RELAY_STATES } from './topology.events.ts';

/** The most receipts one submission carries: a relay's links in the largest mesh the address plan admits, with room. */
export const MAX_SUBMITTED_RECEIPTS = 8192;
/** The largest submit-receipts body (bytes): MAX_SUBMITTED_RECEIPTS receipts of the longest ids and counts fit. */
export const MAX_RECEIPTS_BODY_BYTES = 1024 * 1024;

const count = (field: string) =>
  z
    .number({ error: `${field} must be a non-negative integer` })
    .int(`${field} must be a non-negative integer`)
    .min(0, `${field} must be a non-negative integer`)
    .max(Number.MAX_SAFE_INTEGER, `${field} must be a safe integer`);

export const SubmitReceiptsRequestSchema = requestObject({
  relayId: relayIdField(),
  epoch: count('epoch'),
  epochSeconds: count('epochSeconds'),
  /** The Merkle root of the receipts (hex SHA-256) and the relay's identity-key signature over it. */
  root: text('root').regex(/^[0-9a-f]{64}$/, 'root must be 64 lower-case hex characters (SHA-256)'),
  signature: text('signature').max(200, 'signature must be base64 of a 64-byte Ed25519 signature'),
  receipts: z
    .array(requestObject({ peerId: relayIdField('receipts[].peerId'), txBytes: count('receipts[].txBytes'), rxBytes: count('receipts[].rxBytes') }), {
      error: 'receipts must be a list of { peerId, txBytes, rxBytes }',
    })
    .max(Math.min(MAX_SUBMITTED_RECEIPTS, MAX_RECEIPTS), `receipts: at most ${MAX_SUBMITTED_RECEIPTS} in one epoch`),
});
export type SubmitReceiptsRequest = z.input<typeof SubmitReceiptsRequestSchema>;

/** The signed root a submission claims (its count: the receipts it carries). */
export function submittedRoot(req: Pick<SubmitReceiptsRequest, 'relayId' | 'epoch' | 'epochSeconds' | 'root' | 'signature' | 'receipts'>): EpochRoot {
  return { relayId: req.relayId, epoch: req.epoch, epochSeconds: req.epochSeconds, count: req.receipts.length, root: req.root, signature: req.signature };
}

/** `stored`: false when the same root had been handed in before (a retry: nothing changed). */
export const SubmitReceiptsResponseSchema = z.object({ relayId: z.string(), epoch: z.number(), receipts: z.number(), stored: z.boolean() });
export type SubmitReceiptsResponse = z.infer<typeof SubmitReceiptsResponseSchema>;

/** How long after its end an epoch's receipts are still taken (seconds): a relay down for a while hands in late. */
export const RECEIPTS_KEPT_SECONDS = 7 * 86400;
/** How far a relay's clock may run ahead of the control plane's when it closes an epoch (seconds). */
export const EPOCH_CLOCK_SLACK_SECONDS = 30;

/**
 * Why a submission's epoch is refused, or null: it must be of the configured length, over by the
 * control plane's clock (give or take EPOCH_CLOCK_SLACK_SECONDS), and not older than
 * RECEIPTS_KEPT_SECONDS. Pure.
 */
export function epochProblem(epoch: number, epochSeconds: number, configuredSeconds: number, nowSeconds: number): { field: string; message: string } | null {
  if (epochSeconds !== configuredSeconds)
    return { field: 'epochSeconds', message: `epochs are ${configuredSeconds} s long on this control plane, not ${epochSeconds}` };
  const end = (epoch + 1) * epochSeconds;
  if (end > nowSeconds + EPOCH_CLOCK_SLACK_SECONDS)
    return {
      field: 'epoch',
      message: `epoch ${epoch} ends at ${end}, after the control plane's time ${nowSeconds}: only a closed epoch is handed in (check the relay's clock)`,
    };
  if (end < nowSeconds - RECEIPTS_KEPT_SECONDS)
    return { field: 'epoch', message: `epoch ${epoch} ended more than ${RECEIPTS_KEPT_SECONDS} s ago: too old to be handed in` };
  return null;
}

/**
 * pob-report (the service role: any relay; a relay token: its own): an epoch's signed roots, and the
 * receipts of one relay. Read-only. `epoch` absent: the latest epoch any relay handed in.
 */
export const PobReportRequestSchema = requestObject({
  epoch: count('epoch').optional(),
  relayId: relayIdField().optional(),
});
export type PobReportRequest = z.input<typeof PobReportRequestSchema>;

export const PobRootSchema = z.object({
  relayId: z.string(),
  count: z.number().int().min(0),
  root: z.string(),
  signature: z.string(),
  /** The identity key the registry holds for the relay now (null: none); `pob verify` may pin another. */
  identityKey: z.string().nullable(),
  receivedAt: z.string(),
});
export type PobRoot = z.infer<typeof PobRootSchema>;

export const PobReportResponseSchema = z.object({
  /** Null when no relay has handed in receipts yet. */
  epoch: z.number().int().min(0).nullable(),
  epochSeconds: z.number().int().positive(),
  roots: z.array(PobRootSchema),
  /** The asked relay's receipts for the epoch, sorted by peer (empty without `relayId`). */
  receipts: z.array(z.object({ peerId: z.string(), txBytes: z.number().int().min(0), rxBytes: z.number().int().min(0) })),
});
export type PobReportResponse = z.infer<typeof PobReportResponseSchema>;

/** settle-epoch (service role): settle a closed epoch from the receipts handed in (again: replaced). */
export const SettleEpochRequestSchema = requestObject({ epoch: count('epoch') });
export type SettleEpochRequest = z.input<typeof SettleEpochRequestSchema>;

export const SettleEpochResponseSchema = z.object({
  epoch: z.number().int().min(0),
  epochSeconds: z.number().int().positive(),
  /** Relays that handed in receipts for the epoch. */
  reports: z.number().int().min(0),
  credits: z.array(
    z.object({ relayId: z.string(), carried: z.number().int().min(0), cap: z.number().int().min(0).nullable(), credit: z.number().int().min(0) }),
  ),
  disputes: z.array(z.object({ kind: z.enum(['disagree', 'unmatched', 'over-capacity']) }).passthrough()),
});
export type SettleEpochResponse = z.infer<typeof SettleEpochResponseSchema>;

// ---------------------------------------------------------------------------------------------
// Capacity measurements (docs/proof-of-bandwidth.md, "Measuring").

const perSecond = (field: string) =>
  z
    .array(count(`${field}[]`), { error: `${field} must be a list of byte counts, one per second` })
    .max(MAX_MEASUREMENT_SECONDS, `${field}: at most ${MAX_MEASUREMENT_SECONDS} seconds`);

/**
 * schedule-measurement (service role): measure a relay's capacity. `measurerIds` absent: up to
 * `measurers` (default 2) other active relays, chosen at random. Starts `startsInSeconds` from now.
 */
export const ScheduleMeasurementRequestSchema = requestObject({
  relayId: relayIdField(),
  measurerIds: z
    .array(relayIdField('measurerIds[]'), { error: 'measurerIds must be a list of relay ids' })
    .min(1, 'measurerIds: at least one')
    .max(MAX_MEASURERS, `measurerIds: at most ${MAX_MEASURERS}`)
    .optional(),
  measurers: z.number({ error: 'measurers must be an integer' }).int('measurers must be an integer').min(1).max(MAX_MEASURERS).optional(),
  seconds: z
    .number({ error: 'seconds must be an integer' })
    .int('seconds must be an integer')
    .min(2, 'seconds: at least 2')
    .max(MAX_MEASUREMENT_SECONDS)
    .optional(),
  streams: z.number({ error: 'streams must be an integer' }).int('streams must be an integer').min(1).max(MAX_STREAMS).optional(),
  r: z.number({ error: 'r must be a number' }).min(0, 'r must be in [0, 0.5]').max(MAX_BACKGROUND_SHARE, 'r must be in [0, 0.5]').optional(),
  startsInSeconds: z.number({ error: 'startsInSeconds must be an integer' }).int().min(1).max(600).optional(),
});
export type ScheduleMeasurementRequest = z.input<typeof ScheduleMeasurementRequestSchema>;

export const MeasurementRecordSchema = z.object({
  id: z.string(),
  targetId: z.string(),
  measurerIds: z.array(z.string()),
  startsAt: z.string(),
  seconds: z.number().int(),
  streams: z.number().int(),
  r: z.number(),
});

export const ScheduleMeasurementResponseSchema = z.object({ measurement: MeasurementRecordSchema, revision: z.number().int() });
export type ScheduleMeasurementResponse = z.infer<typeof ScheduleMeasurementResponseSchema>;

/**
 * submit-measurement (a party's relay token, or the service role): a measurer's or the target's signed
 * counts. A measurer sends `echoed`, `checks`, `failures` and `error`; the target sends `background`.
 */
export const SubmitMeasurementRequestSchema = requestObject({
  measurementId: sessionIdField('measurementId'),
  relayId: relayIdField(),
  role: oneOf('role', ['measurer', 'target']),
  echoed: perSecond('echoed').optional(),
  checks: count('checks').optional(),
  failures: count('failures').optional(),
  error: z.string({ error: 'error must be a string or null' }).max(256, 'error: at most 256 characters').nullable().optional(),
  background: perSecond('background').optional(),
  signature: text('signature').max(200, 'signature must be base64 of a 64-byte Ed25519 signature'),
});
export type SubmitMeasurementRequest = z.input<typeof SubmitMeasurementRequestSchema>;

export const MeasurementStateSchema = z.object({
  measurement: MeasurementRecordSchema,
  state: z.enum(['scheduled', 'measured', 'rejected', 'incomplete']),
  capacity: z.number().nullable(),
  lineRate: z.number().nullable(),
  reason: z.string().nullable(),
  /** The parties that have reported so far. */
  reported: z.array(z.string()),
  /** Bytes the measurers reported echoed so far, summed (each crossed the target's link twice: in and back). */
  echoedBytes: z.number().int().min(0),
  concludedAt: z.string().nullable(),
});
export type MeasurementState = z.infer<typeof MeasurementStateSchema>;

/** `stored`: false for the same report again. `state`: the measurement after it (concluded once every party reported). */
export const SubmitMeasurementResponseSchema = z.object({ measurementId: z.string(), relayId: z.string(), stored: z.boolean(), state: MeasurementStateSchema });
export type SubmitMeasurementResponse = z.infer<typeof SubmitMeasurementResponseSchema>;

/**
 * pob-status: relays' standing, capacity and measurement state, and one measurement in full. The
 * service role sees every relay; an operator (docs/proof-of-bandwidth.md, "Community relays") the
 * relays it enrolled.
 */
export const PobStatusRequestSchema = requestObject({ measurementId: sessionIdField('measurementId').optional(), relayId: relayIdField().optional() });
export type PobStatusRequest = z.input<typeof PobStatusRequestSchema>;

export const PobStatusResponseSchema = z.object({
  relays: z.array(
    z.object({
      relayId: z.string(),
      /** Its class and state (docs/proof-of-bandwidth.md, "Community relays"); absent from older control planes: core, active. */
      class: z.enum(RELAY_CLASSES).default('core'),
      state: z.enum(RELAY_STATES).default('active'),
      /** The operator that enrolled it (community relays); null for core relays. */
      operatorId: z.string().nullable().default(null),
      /** In the topology now (registered and not gone); an enrolled relay that never registered is not. */
      registered: z.boolean().default(true),
      /** Line rate, bytes per second each way (null: never measured). */
      capacity: z.number().nullable(),
      measuredAt: z.string().nullable(),
      /** The latest measurement's outcome (null: none). */
      lastMeasurement: MeasurementStateSchema.nullable(),
      /** Credit of the latest settled epoch (null: none), and the disputes naming it there. */
      lastCredit: z.object({ epoch: z.number().int(), carried: z.number(), cap: z.number().nullable(), credit: z.number() }).nullable(),
      disputes: z.number().int(),
    }),
  ),
  measurement: MeasurementStateSchema.nullable(),
  /** The receipt epoch's length (s), and the latest epoch settled (null: none); absent from older control planes. */
  epochSeconds: z.number().int().positive().optional(),
  settledEpoch: z.number().int().min(0).nullable().default(null),
});
export type PobStatusResponse = z.infer<typeof PobStatusResponseSchema>;
