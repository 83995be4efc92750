import { z } from 'zod';
import type { Envelope } from './envelope.ts';

/**
 * Events a relay publishes about itself on `relaynet.relay.<relayId>.<aggregate>.<event>`.
 * Every state change of the relay's actors is one of these; later issues add aggregates.
 */
export const RelayStartedV1 = z.object({ name: z.string(), region: z.string(), publicKey: z.string() }).strict();
export const RelayRegisteredV1 = z
  .object({ revision: z.number().int().min(0), meshAddress: z.string(), clientPool: z.string(), readmitted: z.boolean() })
  .strict();
export const TopologySeededV1 = z
  .object({ revision: z.number().int().min(0), relays: z.number().int().min(0), reason: z.enum(['boot', 'resync']) })
  .strict();
export const TopologyResyncRequestedV1 = z
  .object({
    revision: z.number().int().min(0),
    reason: z.enum(['gap', 'consumer-deleted', 'stream-purged', 'behind-control-plane', 'operator']),
    detail: z.string().max(512),
  })
  .strict();
export const TopologyEventAppliedV1 = z
  .object({ revision: z.number().int().min(1), eventId: z.string(), eventType: z.string() })
  .strict();
export const TopologyEventRejectedV1 = z
  .object({
    reason: z.enum(['oversized', 'malformed', 'bad-signature', 'unsigned', 'schema', 'foreign-source', 'subject-mismatch']),
    subject: z.string().max(512),
    streamSeq: z.number().int().min(0).nullable(),
    detail: z.string().max(512),
  })
  .strict();
export const RelayDrainingV1 = z.object({ signal: z.string() }).strict();
export const RelayStoppedV1 = z.object({ deregistered: z.boolean() }).strict();

export type RelayEvent =
  | Envelope<'RelayStarted', z.infer<typeof RelayStartedV1>>
  | Envelope<'RelayRegistered', z.infer<typeof RelayRegisteredV1>>
  | Envelope<'TopologySeeded', z.infer<typeof TopologySeededV1>>
  | Envelope<'TopologyResyncRequested', z.infer<typeof TopologyResyncRequestedV1>>
  | Envelope<'TopologyEventApplied', z.infer<typeof TopologyEventAppliedV1>>
  | Envelope<'TopologyEventRejected', z.infer<typeof TopologyEventRejectedV1>>
  | Envelope<'RelayDraining', z.infer<typeof RelayDrainingV1>>
  | Envelope<'RelayStopped', z.infer<typeof RelayStoppedV1>>;
