/** The streams' limits and their defaults, apart from the JetStream client so the CLI's help can show them cheaply. */

/** Retention of the two streams; every limit is configurable per deployment. */
export interface StreamLimits {
  topologyMaxAgeSeconds: number;
  topologyMaxBytes: number;
  relayMaxAgeSeconds: number;
  relayMaxBytes: number;
  /** JetStream deduplication window for `Nats-Msg-Id` (the publisher re-sends after a crash). */
  duplicateWindowSeconds: number;
  /** Copies of each stream in a NATS cluster (1: a single server; 3: a 3-node cluster survives one node's loss). */
  replicas: number;
}

export const DEFAULT_STREAM_LIMITS: StreamLimits = {
  topologyMaxAgeSeconds: 30 * 24 * 3600,
  topologyMaxBytes: 256 * 1024 * 1024,
  relayMaxAgeSeconds: 7 * 24 * 3600,
  relayMaxBytes: 1024 * 1024 * 1024,
  duplicateWindowSeconds: 120,
  replicas: 1,
};
