import { z } from 'zod';
import type { Envelope } from './envelope.ts';
import { SESSION_MODES, WgKeySchema } from './topology.events.ts';

/**
 * Events a relay publishes about itself on `relaynet.relay.<relayId>.<aggregate>.<event>`.
 * Every state change of the relay's actors is one of these; later issues add aggregates.
 */
export const RelayStartedV1 = z.object({ name: z.string(), region: z.string(), publicKey: z.string() }).strict();
/** v2 says which build started (`relay-core 0.1.0`); a v1 event reads as `software: null` (not recorded). */
export const RelayStartedV2 = RelayStartedV1.extend({ software: z.string().max(128).nullable() }).strict();
export const upcastRelayStartedV1 = (d: z.infer<typeof RelayStartedV1>): z.infer<typeof RelayStartedV2> => ({ ...d, software: null });
/**
 * What replay needs to derive the relay's desired host state as the relay did: its mesh and client
 * settings (the key file's path, never the key), link timing, and the client sysctls (their values
 * before the relay first set them, and as the host had them at this start).
 */
export const RelayConfigV1 = z
  .object({
    wgPrefix: z.string().max(3),
    keepaliveSeconds: z.number().int().min(0),
    mtu: z.number().int().min(576).max(9000),
    privateKeyFile: z.string().max(1024),
    exitTableBase: z.number().int().min(1),
    rulePriorityBase: z.number().int().min(1),
    clientSupernet: z.string().max(64),
    denyCidrs: z.array(z.string().max(64)).max(256),
    clientIdleAfterMs: z.number().int().min(0),
    linkStaleAfterMs: z.number().int().min(0),
    linkDownAfterMs: z.number().int().min(0),
    sysctlsBefore: z.record(z.string().max(128), z.string().max(64)),
    sysctlsAtStart: z.record(z.string().max(128), z.string().max(64)),
  })
  .strict();
/** v3 records the relay's configuration (see {@link RelayConfigV1}); v2 reads as `config: null`. */
export const RelayStartedV3 = RelayStartedV2.extend({ config: RelayConfigV1.nullable() }).strict();
export const upcastRelayStartedV2 = (d: z.infer<typeof RelayStartedV2>): z.infer<typeof RelayStartedV3> => ({ ...d, config: null });
/**
 * v2 of the configuration: the egress policy's operator ranges. `denyCidrs` is `--client-deny` alone
 * (IPv4 or IPv6); `allowCidrs` is `--client-allow`; `serviceCidrs` the control plane's addresses
 * resolved at start (v1 had them inside `denyCidrs`).
 */
export const RelayConfigV2 = RelayConfigV1.extend({
  allowCidrs: z.array(z.string().max(64)).max(256),
  serviceCidrs: z.array(z.string().max(64)).max(256),
  /** The clients' IPv6 /96 this relay programs, null for none; absent (before IPv6) reads as none. */
  clientPrefix6: z.string().max(64).nullable().optional(),
  /**
   * The relay serves private sessions (its table has their port map and filters); absent (before
   * private sessions, issue 16) reads as false, so replay builds the table the relay had then.
   */
  privateSessions: z.boolean().optional(),
  /**
   * The relay's table lets its measurers reach its echo service over the mesh (Proof-of-Bandwidth);
   * absent (before measurements, issue 17) reads as false.
   */
  echoService: z.boolean().optional(),
}).strict();
/** v4 records the configuration v2 (see {@link RelayConfigV2}); a v3 configuration reads with no allowed and no service ranges. */
export const RelayStartedV4 = RelayStartedV2.extend({ config: RelayConfigV2.nullable() }).strict();
export const upcastRelayStartedV3 = (d: z.infer<typeof RelayStartedV3>): z.infer<typeof RelayStartedV4> => ({
  ...d,
  config: d.config === null ? null : { ...d.config, allowCidrs: [], serviceCidrs: [] },
});
export const RelayRegisteredV1 = z
  .object({ revision: z.number().int().min(0), meshAddress: z.string(), clientPool: z.string(), readmitted: z.boolean() })
  .strict();
/**
 * v2 adds the addresses of the NATS servers this registration handed out (resolved by the relay):
 * clients are kept from them (the egress policy's `service` reason). v1 reads as none.
 */
export const RelayRegisteredV2 = RelayRegisteredV1.extend({ serviceCidrs: z.array(z.string().max(64)).max(256) }).strict();
export const upcastRelayRegisteredV1 = (d: z.infer<typeof RelayRegisteredV1>): z.infer<typeof RelayRegisteredV2> => ({ ...d, serviceCidrs: [] });
export const TopologySeededV1 = z.object({ revision: z.number().int().min(0), relays: z.number().int().min(0), reason: z.enum(['boot', 'resync']) }).strict();
/** v2 adds the digest of the seeded view (`topologyDigest`), so replay can check the view it folds; v1 reads as `digest: null`. */
export const TopologySeededV2 = TopologySeededV1.extend({
  digest: z
    .string()
    .regex(/^[0-9a-f]{64}$/)
    .nullable(),
}).strict();
export const upcastTopologySeededV1 = (d: z.infer<typeof TopologySeededV1>): z.infer<typeof TopologySeededV2> => ({ ...d, digest: null });
/**
 * v3 adds `sessions`: which client sessions the seeded view (and its digest) keeps: `entry`, those
 * entering at the relay (relays since issue 15), or `all` (before); v2 reads as `all`.
 */
export const TopologySeededV3 = TopologySeededV2.extend({ sessions: z.enum(['entry', 'all']) }).strict();
export const upcastTopologySeededV2 = (d: z.infer<typeof TopologySeededV2>): z.infer<typeof TopologySeededV3> => ({ ...d, sessions: 'all' });
export const TopologyResyncRequestedV1 = z
  .object({
    revision: z.number().int().min(0),
    reason: z.enum(['gap', 'consumer-deleted', 'stream-purged', 'behind-control-plane', 'operator']),
    detail: z.string().max(512),
  })
  .strict();
/** v2 adds the reason `epoch-changed` (the control plane began another epoch: docs/events.md, "Epochs"); v1 reads unchanged. */
export const TopologyResyncRequestedV2 = TopologyResyncRequestedV1.extend({
  reason: z.enum(['gap', 'consumer-deleted', 'stream-purged', 'behind-control-plane', 'operator', 'epoch-changed']),
}).strict();
export const upcastTopologyResyncRequestedV1 = (d: z.infer<typeof TopologyResyncRequestedV1>): z.infer<typeof TopologyResyncRequestedV2> => d;
export const TopologyEventAppliedV1 = z.object({ revision: z.number().int().min(1), eventId: z.string(), eventType: z.string() }).strict();
export const TopologyEventRejectedV1 = z
  .object({
    reason: z.enum(['oversized', 'malformed', 'bad-signature', 'unsigned', 'schema', 'foreign-source', 'subject-mismatch']),
    subject: z.string().max(512),
    streamSeq: z.number().int().min(0).nullable(),
    detail: z.string().max(512),
  })
  .strict();
/**
 * The control plane handed out a topology key other than the one this relay pinned (its state
 * directory's `topology-key.pub`, or `--topology-key`): the relay does not follow it (docs/security.md).
 */
export const TopologyKeyRefusedV1 = z.object({ pinnedKey: z.string().max(64), offeredKey: z.string().max(64), source: z.enum(['file', 'explicit']) }).strict();
/**
 * Relay events that waited for the bus beyond the queue's capacity were dropped (oldest first):
 * `count` of them, the first dropped at `since`, the last at `until`. Published once the bus takes
 * events again.
 */
export const RelayEventsDroppedV1 = z
  .object({ count: z.number().int().min(1), capacity: z.number().int().min(1), since: z.string().datetime(), until: z.string().datetime() })
  .strict();
/**
 * Proof-of-Bandwidth (docs/proof-of-bandwidth.md): the relay closed an epoch and signed its receipts'
 * Merkle root with its identity key (`count` receipts, one per mesh link); it hands them in next.
 */
export const ReceiptsSignedV1 = z
  .object({
    epoch: z.number().int().min(0),
    epochSeconds: z.number().int().min(1),
    count: z.number().int().min(0),
    root: z.string().regex(/^[0-9a-f]{64}$/),
  })
  .strict();
/** The control plane refused an epoch's receipts: kept aside in the state directory, not sent again. */
export const ReceiptsRefusedV1 = z
  .object({
    epoch: z.number().int().min(0),
    status: z.number().int().nullable(),
    code: z.string().max(64).nullable(),
    message: z.string().max(512),
  })
  .strict();
/**
 * The relay put a new WireGuard key on its devices before announcing it (a rotation: `relay-core
 * rotate-key`; docs/security.md, "Rotation"). Its view holds its own record with this key from here, so
 * its kernel rounds program it; the registration that follows announces it to the other relays.
 */
export const WireGuardKeyStagedV1 = z.object({ publicKey: WgKeySchema, previousPublicKey: WgKeySchema }).strict();
/**
 * The relay took part in a capacity measurement and handed in (or tried to) its signed report
 * (docs/proof-of-bandwidth.md, "Measuring"): as a measurer the bytes that came back intact, its checks
 * and failures and why a stream broke; as the target its other traffic. `outcome`: the measurement's
 * state in the control plane's answer (null: the report was not taken, `refused` says why).
 */
export const MeasurementReportedV1 = z
  .object({
    measurementId: z.string().uuid(),
    role: z.enum(['measurer', 'target']),
    targetId: z.string().max(63),
    bytes: z.number().int().min(0),
    checks: z.number().int().min(0).nullable(),
    failures: z.number().int().min(0).nullable(),
    error: z.string().max(256).nullable(),
    outcome: z.enum(['scheduled', 'measured', 'rejected', 'incomplete']).nullable(),
    refused: z.string().max(512).nullable(),
  })
  .strict();
export const RelayDrainingV1 = z.object({ signal: z.string() }).strict();
export const RelayStoppedV1 = z.object({ deregistered: z.boolean() }).strict();

export const LinkStateChangedV1 = z
  .object({
    peerId: z.string(),
    device: z.string().max(15),
    state: z.enum(['desired', 'configuring', 'handshaking', 'up', 'stale', 'down', 'removing', 'removed']),
    reason: z.string().max(256),
    latestHandshakeMs: z.number().int().min(0).nullable(),
    rxBytes: z.number().int().min(0),
    txBytes: z.number().int().min(0),
  })
  .strict();

export const ClientSessionStateChangedV1 = z
  .object({
    sessionId: z.string().uuid(),
    publicKey: z.string(),
    address: z.string(),
    exitId: z.string(),
    state: z.enum(['requested', 'configuring', 'ready', 'active', 'idle', 'expired', 'closing', 'closed']),
    reason: z.string().max(256),
    latestHandshakeMs: z.number().int().min(0).nullable(),
    rxBytes: z.number().int().min(0),
    txBytes: z.number().int().min(0),
  })
  .strict();
/**
 * v2 says the session's mode and this relay's part in it (`entry`, or a private session's `exit`: both
 * relays run an actor for it); v1 sessions were standard, seen at their entry.
 */
export const ClientSessionStateChangedV2 = ClientSessionStateChangedV1.extend({ mode: z.enum(SESSION_MODES), role: z.enum(['entry', 'exit']) }).strict();
export const upcastClientSessionStateChangedV1 = (d: z.infer<typeof ClientSessionStateChangedV1>): z.infer<typeof ClientSessionStateChangedV2> => ({
  ...d,
  mode: 'standard',
  role: 'entry',
});
export const ClientSessionSteeredV1 = z.object({ sessionId: z.string().uuid(), exitId: z.string(), previousExitId: z.string().nullable() }).strict();

/**
 * The relay resolved the DNS name of a peer's endpoint (`address`), or could not (`address` null,
 * `error` says why: the lookup's code, or `no usable address` when it gave only families this relay
 * cannot reach). Recorded on change only: a new address, or the first failure; retries that find the
 * same are not. The mesh programs the peer's endpoint with this address (null: none; WireGuard learns
 * it from the peer's handshakes), so replay derives rounds with the same addresses. The event's id is
 * the cause of the mesh round an address change produces.
 */
export const PeerEndpointResolvedV1 = z
  .object({
    peerId: z.string().max(63),
    host: z.string().max(253),
    address: z.string().max(64).nullable(),
    error: z.string().max(512).nullable(),
  })
  .strict();

/** A kernel operation as recorded: the op itself (public keys, key-file paths, never key material). */
const KernelOpRecord = z.object({ op: z.string() }).passthrough();
export const KernelReconciledV1 = z
  .object({ owner: z.string(), planned: z.number().int().min(0), applied: z.number().int().min(0), failed: z.boolean(), ops: z.array(KernelOpRecord) })
  .strict();
/** At most this many operations in one KernelReconciled event: a larger round is recorded in parts. */
export const MAX_OPS_PER_KERNEL_EVENT = 200;
/** ... and at most this many bytes of them (JSON), well inside the envelope's limit. */
export const MAX_OP_BYTES_PER_KERNEL_EVENT = 24 * 1024;

/**
 * v2: bounded at any fleet size. A round whose operations do not fit in one event is recorded in
 * `parts` consecutive events (`part` 1..parts, the same `round`), each with its share of the applied
 * operations in order; `planned`, `applied` and `failed` are the whole round's. `reached` is the
 * digest of the owner's scope after the round (src/kernel/host-text.ts, `scopeDigest`), never the
 * state itself; `focused`: the round read and planned only what changed (false: the whole scope).
 * v1 (one event per round, no digest) reads as one part with `round` 0 and `reached` null.
 */
export const KernelReconciledV2 = z
  .object({
    owner: z.string(),
    round: z.number().int().min(0),
    part: z.number().int().min(1),
    parts: z.number().int().min(1),
    planned: z.number().int().min(0),
    applied: z.number().int().min(0),
    failed: z.boolean(),
    focused: z.boolean(),
    ops: z.array(KernelOpRecord),
    reached: z
      .string()
      .regex(/^[0-9a-f]{16}$/)
      .nullable(),
  })
  .strict();
export const upcastKernelReconciledV1 = (d: z.infer<typeof KernelReconciledV1>): z.infer<typeof KernelReconciledV2> => ({
  ...d,
  round: 0,
  part: 1,
  parts: 1,
  focused: false,
  reached: null,
});
export const KernelOperationFailedV1 = z
  .object({
    owner: z.string(),
    op: KernelOpRecord,
    message: z.string().max(2048),
    command: z.array(z.string()).nullable(),
    exitCode: z.number().int().nullable(),
    stderr: z.string().max(4096),
  })
  .strict();

export type RelayEvent =
  | Envelope<'RelayStarted', z.infer<typeof RelayStartedV4>>
  | Envelope<'RelayRegistered', z.infer<typeof RelayRegisteredV2>>
  | Envelope<'TopologySeeded', z.infer<typeof TopologySeededV3>>
  | Envelope<'TopologyResyncRequested', z.infer<typeof TopologyResyncRequestedV2>>
  | Envelope<'TopologyEventApplied', z.infer<typeof TopologyEventAppliedV1>>
  | Envelope<'TopologyEventRejected', z.infer<typeof TopologyEventRejectedV1>>
  | Envelope<'TopologyKeyRefused', z.infer<typeof TopologyKeyRefusedV1>>
  | Envelope<'RelayEventsDropped', z.infer<typeof RelayEventsDroppedV1>>
  | Envelope<'ReceiptsSigned', z.infer<typeof ReceiptsSignedV1>>
  | Envelope<'ReceiptsRefused', z.infer<typeof ReceiptsRefusedV1>>
  | Envelope<'WireGuardKeyStaged', z.infer<typeof WireGuardKeyStagedV1>>
  | Envelope<'MeasurementReported', z.infer<typeof MeasurementReportedV1>>
  | Envelope<'RelayDraining', z.infer<typeof RelayDrainingV1>>
  | Envelope<'RelayStopped', z.infer<typeof RelayStoppedV1>>
  | Envelope<'LinkStateChanged', z.infer<typeof LinkStateChangedV1>>
  | Envelope<'PeerEndpointResolved', z.infer<typeof PeerEndpointResolvedV1>>
  | Envelope<'ClientSessionStateChanged', z.infer<typeof ClientSessionStateChangedV2>>
  | Envelope<'ClientSessionSteered', z.infer<typeof ClientSessionSteeredV1>>
  | Envelope<'KernelReconciled', z.infer<typeof KernelReconciledV2>>
  | Envelope<'KernelOperationFailed', z.infer<typeof KernelOperationFailedV1>>;
