import { z } from 'zod';

/** Relay ids are operator-chosen slugs; they appear in NATS subjects, so only `[a-z0-9-]`. */
export const RELAY_ID_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const RelayIdSchema = z.string().regex(RELAY_ID_RE, 'relay id must be 1-63 chars of a-z, 0-9 and -, starting with a letter or digit');
export type RelayId = z.infer<typeof RelayIdSchema>;

/** The `source` of events the control plane emits. */
export const CONTROL_PLANE_SOURCE = 'control-plane';

/**
 * The envelope every event travels in, on NATS, in the control plane's outbox and in exported logs.
 * `type` is past-tense PascalCase; `version` is the schema version of `data` for that type.
 * `causationId` names the event (or request) that caused this one; `correlationId` ties a whole flow together.
 */
export interface Envelope<T extends string = string, D = unknown> {
  id: string;
  type: T;
  version: number;
  source: string;
  time: string;
  causationId: string | null;
  correlationId: string | null;
  /**
   * The control plane's epoch (the identity of its database's topology history): on every topology
   * event, and on a relay's events once it has seeded (the epoch of its snapshot). Absent in events
   * recorded before epochs existed.
   */
  epoch?: string;
  /**
   * A relay event's place among those its relay published (set by the relay's publisher when it first
   * sends the event): consecutive within a run, and above every number of the relay's earlier runs (a
   * run numbers from the time of its first send in ms × 1,000). The stream can hold a relay's events slightly out of
   * this order (up to 63 places, after a lost publish was sent again); readers put them back
   * (`SourceOrder`, docs/events.md). Absent on topology events and on relay events published before it
   * existed.
   */
  sourceSeq?: number;
  data: D;
}

/**
 * How many events a relay has out to JetStream at once, unacknowledged. One at a time, a relay published
 * an event per round trip: in a fleet of 1,000 relays (each join gives every relay some five events)
 * 3.3 million waited after the growth to 1,000, drained at ~1,000 events/s (bench/README.md, run 7).
 */
export const PUBLISH_WINDOW = 64;

export const EnvelopeSchema = z
  .object({
    id: z.string().uuid(),
    type: z.string().regex(/^[A-Z][A-Za-z0-9]{1,63}$/),
    version: z.number().int().min(1).max(1000),
    source: z.union([RelayIdSchema, z.literal(CONTROL_PLANE_SOURCE)]),
    time: z.string().datetime({ offset: true }),
    causationId: z.string().min(1).max(128).nullable(),
    correlationId: z.string().min(1).max(128).nullable(),
    epoch: z.string().uuid().optional(),
    sourceSeq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
    data: z.unknown(),
  })
  .strict();

/** What the caller supplies to build an envelope; clock and id generator are injected so builders stay pure. */
export interface EnvelopeContext {
  source: string;
  now: () => Date;
  newId: () => string;
  causationId?: string | null;
  correlationId?: string | null;
  /** The control plane's epoch to stamp on the event, if known. */
  epoch?: string | null;
}

/** Build an envelope. Pure given `ctx.now` and `ctx.newId`. */
export function envelope<T extends string, D>(ctx: EnvelopeContext, type: T, version: number, data: D): Envelope<T, D> {
  return {
    id: ctx.newId(),
    type,
    version,
    source: ctx.source,
    time: ctx.now().toISOString(),
    causationId: ctx.causationId ?? null,
    correlationId: ctx.correlationId ?? null,
    ...(ctx.epoch ? { epoch: ctx.epoch } : {}),
    data,
  };
}
