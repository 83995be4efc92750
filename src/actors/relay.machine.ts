import { assign, enqueueActions, fromCallback, fromPromise, sendTo, setup, type ActorRefFrom } from 'xstate';
import type { RegisterRequest, RegisterResponse as ControlPlaneRegistration, HeartbeatResponse } from '../contract/api-relays.ts';

/**
 * A registration as the relay holds it: the control plane's answer, and the addresses of the NATS
 * servers it handed out, resolved by the shell (clients are kept from them; absent in unit tests).
 */
export type RegisterResponse = ControlPlaneRegistration & { serviceCidrs?: string[] };
import type { TopologyEvent } from '../contract/topology.events.ts';
import { EMPTY_TOPOLOGY, evolveTopology, topologyEventOrder, seedTopology, topologyDigest, withRelayKey, type TopologyView } from '../events/topology.fold.ts';
import type { Rejection } from '../events/wire.ts';
import { eventEpochVerdict, heartbeatEpochChanged, retireEpochs } from '../events/epoch.ts';
import type { MeshOptions } from '../kernel/mesh.ts';
import type { LinkTiming } from './peer-link.machine.ts';
import { kernelMachine } from '../kernel/kernel.machine.ts';
import { topologyMachine, type MeshTornDown } from './topology.machine.ts';
import { clientsMachine, type ClientsTornDown } from './clients.machine.ts';
import type { ClientOptions } from '../kernel/clients.ts';
import type { Deps } from '../lib/deps.ts';

/** Counters a relay keeps about the topology stream; exposed by `relay-core status`. */
export interface TopologyCounters {
  applied: number;
  duplicates: number;
  gaps: number;
  resyncs: number;
  rejected: Record<string, number>;
  heartbeats: number;
  heartbeatsBehind: number;
  /** Topology events of an epoch the relay has left (a restored control plane's old history): never applied. */
  otherEpoch: number;
}

export interface RelayContext {
  request: RegisterRequest;
  /** Mesh settings for the topology actor; null runs the relay without links (unit tests of this machine). */
  links: RelayLinksInput | null;
  /** Set once the control plane confirmed the deregistration. */
  deregistered: boolean;
  registration: RegisterResponse | null;
  view: TopologyView;
  counters: TopologyCounters;
  /** Which parts of the host a teardown has cleared so far. */
  tornDown: { mesh: boolean; clients: boolean };
  /** Why the next registration happens: boot or a resync reason (`epoch`: the unknown epoch an event named). */
  pendingResync: { reason: ResyncReason; detail: string; epoch?: string } | null;
  /** Epochs of the control plane this relay has left: their events are never applied (src/events/epoch.ts). */
  retiredEpochs: string[];
  /** Failed registrations in a row during a resync (the retry backs off: 1 s doubling to 30 s). */
  registerFailures: number;
  /** The view's revision when the last heartbeat was answered (at registration: the snapshot's). */
  revisionAtLastHeartbeat: number;
  /** Topology events handed over (applied or duplicates, {@link followed}) when the last heartbeat was answered. */
  followedAtLastHeartbeat: number;
  /**
   * The follower's pulls fail (JetStream does not answer: a NATS node's failover, the bus down). A view
   * stalled meanwhile is the bus's doing, not its consumer's: those heartbeats do not count toward a
   * resync, which would need the same JetStream (CI, 2026-12-02: a cluster's failover kept JetStream
   * from answering for over 15 s on a loaded machine, and a relay resynced).
   */
  pullFailing: boolean;
  /**
   * The envelope id of the latest relay event that changed what the host should hold (a seed, an
   * applied topology event, the drain): the children pass it to the kernel actor as the cause.
   */
  cause: string | null;
  error: string | null;
  /** Where the ids of the events it causes kernel work with come from (passed on to its children). */
  deps: Deps;
}

export type ResyncReason = 'gap' | 'consumer-deleted' | 'stream-purged' | 'behind-control-plane' | 'operator' | 'epoch-changed';

/** What the relay's child actors and the shell tell the relay actor. */
export type RelayMachineEvent =
  | { type: 'TOPOLOGY_EVENT'; event: TopologyEvent; streamSeq: number }
  | { type: 'TOPOLOGY_REJECTED'; rejection: Rejection; subject: string; streamSeq: number | null }
  | { type: 'CONSUMER_LOST'; reason: 'consumer-deleted' | 'stream-purged'; detail: string }
  /** The follower's pulls began to fail (`ok: false`) or work again (`ok: true`); said on each change. */
  | { type: 'FOLLOWER_PULL'; ok: boolean }
  | { type: 'HEARTBEAT'; response: HeartbeatResponse }
  | { type: 'HEARTBEAT_NOT_REGISTERED' }
  | { type: 'RESYNC'; detail: string }
  /**
   * The shell wrote another WireGuard key to the key file: program it on the devices (a rotation's new
   * key before it is announced, or the old one back when the rotation is given up on).
   */
  | { type: 'KEY_STAGED'; publicKey: string; previousPublicKey: string }
  | { type: 'STOP'; signal: string }
  | MeshTornDown
  | ClientsTornDown;

/**
 * A relay event the machine wants published; the shell adds the envelope. `id` is given where the
 * machine needs the envelope id: the events that cause kernel work.
 */
export type Emission =
  | { type: 'RelayRegistered'; data: { revision: number; meshAddress: string; clientPool: string; readmitted: boolean; serviceCidrs: string[] } }
  | { type: 'TopologySeeded'; id: string; data: { revision: number; relays: number; reason: 'boot' | 'resync'; digest: string } }
  | { type: 'TopologyResyncRequested'; data: { revision: number; reason: ResyncReason; detail: string } }
  | { type: 'TopologyEventApplied'; id: string; data: { revision: number; eventId: string; eventType: string } }
  | { type: 'TopologyEventRejected'; data: { reason: Rejection['reason']; subject: string; streamSeq: number | null; detail: string } }
  | { type: 'WireGuardKeyStaged'; id: string; data: { publicKey: string; previousPublicKey: string } }
  | { type: 'RelayDraining'; id: string; data: { signal: string } }
  | { type: 'RelayStopped'; data: { deregistered: boolean } };

export interface RelayLinksInput {
  mesh: MeshOptions;
  timing: LinkTiming;
  clients: {
    options: ClientOptions;
    idleAfterMs: number;
    /** The client sysctls' values before the relay first set them (restored on teardown). */
    originalSysctls: Record<string, string>;
  };
}

/** How long a draining relay waits for its mesh and client state to be removed before it stops anyway. */
export const TEARDOWN_TIMEOUT_MS = 15_000;

export interface FollowInput {
  registration: RegisterResponse;
}

/**
 * What the relay actor tells its follow actor: pull again now (drop the pull in flight and start a new
 * one, from right after the last message handed over), because a heartbeat found the control plane
 * ahead of a view that has not moved since the heartbeat before. After a NATS node's failover a pull
 * that nobody answers (the consumer electing a leader) is made again only after two missed idle
 * heartbeats, and messages lost in flight come again only after the ack wait; this does not wait.
 */
export type FollowCommand = { type: 'REPULL' };

/**
 * Consecutive heartbeats that must see the control plane ahead of a view that has not moved since the
 * heartbeat before, before a resync. A relay behind but folding (slow, catching up from the stream) is
 * left to catch up: a resync would only add a snapshot to its work (and the control plane's). Three,
 * so that a view stalled 20 to 30 s resyncs (heartbeats every 10 s): a NATS node's failover stalls a
 * follower for seconds (a reconnect, then a pull unanswered while the consumer elects a leader, made
 * again after 8 s; topology-follower.ts), and two heartbeats resynced relays of a healthy cluster once,
 * when the client also checked its consumer before each pull (up to ~17 s).
 */
export const BEHIND_HEARTBEATS_BEFORE_RESYNC = 3;
/**
 * The least time those heartbeats span (from the first that found the view stalled to the one that
 * resyncs), whatever the heartbeat interval: past a NATS node's failover. With the sim's 5 s heartbeats
 * three of them spanned 10 s, and a failover's stall resynced a relay of a healthy cluster (CI,
 * 2026-12-02: sim-nats-cluster.test.ts).
 */
export const BEHIND_STALL_BEFORE_RESYNC_SECONDS = 20;
/** Heartbeats behind before a resync at a heartbeat interval: three, or as many as span BEHIND_STALL_BEFORE_RESYNC_SECONDS. */
export const behindHeartbeatsBeforeResync = (intervalSeconds: number): number =>
  Math.max(BEHIND_HEARTBEATS_BEFORE_RESYNC, Math.ceil(BEHIND_STALL_BEFORE_RESYNC_SECONDS / intervalSeconds) + 1);

/** Topology events the follower has handed over and the fold took (applied, or duplicates of what it holds). */
const followed = (c: TopologyCounters) => c.applied + c.duplicates;

/**
 * Whether a heartbeat's answer finds the view behind the control plane, not moved since the heartbeat
 * before, and the follower handing over nothing meanwhile. A follower working through events the view
 * already holds (after a seed it starts a minute before the snapshot) is not stuck: pulling again would
 * drop what it has in flight and begin again (bench/README.md, fleet at N=500: relays of a busy process
 * pulled again and resynced while their events arrived).
 */
const behindAndStuck = (context: RelayContext, revision: number) =>
  revision > context.view.revision && context.view.revision <= context.revisionAtLastHeartbeat && followed(context.counters) <= context.followedAtLastHeartbeat;

const emptyCounters = (): TopologyCounters => ({
  applied: 0,
  duplicates: 0,
  gaps: 0,
  resyncs: 0,
  rejected: {},
  heartbeats: 0,
  heartbeatsBehind: 0,
  otherEpoch: 0,
});

/** The epoch of the relay's snapshot (null: none yet, or a control plane from before epochs). */
const snapshotEpoch = (c: RelayContext) => c.registration?.epoch ?? null;

/**
 * The root relay actor: register -> seed -> serve (follow topology, heartbeat) -> drain -> stopped.
 * Pure: every side effect is an actor or action referred to by name and provided by the daemon
 * (`relayMachine.provide(...)`); tests provide fakes.
 */
export const relayMachine = setup({
  types: {
    context: {} as RelayContext,
    events: {} as RelayMachineEvent,
    input: {} as { request: RegisterRequest; links?: RelayLinksInput | null; deps: Deps },
  },
  actors: {
    register: fromPromise<RegisterResponse, { request: RegisterRequest }>(async () => {
      throw new Error('register not provided');
    }),
    follow: fromCallback<FollowCommand, FollowInput>(() => () => {}),
    heartbeat: fromCallback<RelayMachineEvent, { relayId: string; intervalSeconds: number }>(() => () => {}),
    deregister: fromPromise<{ revision: number }, { relayId: string }>(async () => {
      throw new Error('deregister not provided');
    }),
    // The daemon provides these with their world-touching parts (backend, event emission).
    topology: topologyMachine,
    clients: clientsMachine,
    kernel: kernelMachine,
  },
  actions: {
    emit: (_, _params: Emission) => {},
    viewChanged: enqueueActions(({ context, enqueue }) => {
      enqueue.sendTo('topology', { type: 'VIEW' as const, view: context.view, cause: context.cause });
      enqueue.sendTo('clients', { type: 'VIEW' as const, view: context.view, cause: context.cause, services: context.registration?.serviceCidrs ?? [] });
    }),
    reportFatal: (_, _params: { error: string }) => {},
  },
  delays: {
    resyncRetry: ({ context }) => Math.min(30_000, 1_000 * 2 ** Math.max(0, context.registerFailures - 1)),
    teardownTimeout: TEARDOWN_TIMEOUT_MS,
  },
  guards: {
    wasBoot: ({ context }) => context.pendingResync === null,
  },
}).createMachine({
  id: 'relay',
  context: ({ input }) => ({
    request: input.request,
    links: input.links ?? null,
    deregistered: false,
    registration: null,
    view: EMPTY_TOPOLOGY,
    counters: emptyCounters(),
    tornDown: { mesh: false, clients: false },
    pendingResync: null,
    retiredEpochs: [],
    registerFailures: 0,
    revisionAtLastHeartbeat: 0,
    followedAtLastHeartbeat: 0,
    pullFailing: false,
    cause: null,
    error: null,
    deps: input.deps,
  }),
  initial: 'registering',
  // Links outlive registrations and resyncs: the topology and kernel actors run until the relay stops.
  invoke: [
    { id: 'kernel', systemId: 'kernel', src: 'kernel' },
    {
      id: 'topology',
      src: 'topology',
      input: ({ context }) => ({
        selfId: context.request.relayId,
        mesh: context.links?.mesh as MeshOptions,
        timing: context.links?.timing as LinkTiming,
        deps: context.deps,
      }),
    },
    {
      id: 'clients',
      src: 'clients',
      input: ({ context }) => ({
        selfId: context.request.relayId,
        clients: context.links?.clients.options as ClientOptions,
        idleAfterMs: context.links?.clients.idleAfterMs ?? 0,
        originalSysctls: context.links?.clients.originalSysctls ?? {},
        deps: context.deps,
      }),
    },
  ],
  on: {
    STOP: { target: '.draining' },
    // A key rotation's first step (docs/security.md, "Rotation"): the relay's own record takes the new
    // key, so the kernel puts it on every device; only then does the shell register it (a RESYNC), and
    // the other relays re-key after the devices already hold it. Also the way back: a rotation given up
    // on during the registration that announced it (refused, or not answered) stages the old key again.
    // In any state with a view of the relay itself; draining ignores it.
    KEY_STAGED: {
      guard: ({ context, event }) => {
        const self = context.view.relays.get(context.request.relayId);
        return self !== undefined && self.publicKey !== event.publicKey;
      },
      actions: [
        assign(({ context, event }) => ({ view: withRelayKey(context.view, context.request.relayId, event.publicKey), cause: context.deps.newId() })),
        'viewChanged',
        {
          type: 'emit',
          params: ({ context, event }) => ({
            type: 'WireGuardKeyStaged',
            id: context.cause!,
            data: { publicKey: event.publicKey, previousPublicKey: event.previousPublicKey },
          }),
        },
      ],
    },
  },
  states: {
    registering: {
      invoke: {
        src: 'register',
        input: ({ context }) => ({ request: context.request }),
        onDone: {
          target: 'serving',
          actions: [
            assign(({ context, event }) => ({
              registration: event.output,
              retiredEpochs: retireEpochs(context.retiredEpochs, snapshotEpoch(context), context.pendingResync?.epoch, event.output.epoch),
              registerFailures: 0,
              error: null,
              cause: context.deps.newId(),
              view: seedTopology(
                event.output.revision,
                [event.output.relay, ...event.output.relays],
                event.output.sessions,
                context.request.relayId,
                event.output.measurements,
              ),
              revisionAtLastHeartbeat: event.output.revision,
              followedAtLastHeartbeat: followed(context.counters),
              pullFailing: false,
              counters: context.pendingResync ? { ...context.counters, resyncs: context.counters.resyncs + 1, heartbeatsBehind: 0 } : context.counters,
            })),
            {
              type: 'emit',
              params: ({ event }) => ({
                type: 'RelayRegistered',
                data: {
                  revision: event.output.revision,
                  meshAddress: event.output.relay.meshAddress,
                  clientPool: event.output.relay.clientPool,
                  readmitted: event.output.readmitted,
                  serviceCidrs: event.output.serviceCidrs ?? [],
                },
              }),
            },
            {
              type: 'emit',
              params: ({ context, event }) => ({
                type: 'TopologySeeded',
                id: context.cause!,
                data: {
                  revision: event.output.revision,
                  relays: event.output.relays.length + 1,
                  reason: context.pendingResync ? 'resync' : 'boot',
                  digest: topologyDigest(context.view),
                  sessions: 'entry',
                },
              }),
            },
            assign({ pendingResync: null }),
            'viewChanged',
          ],
        },
        onError: [
          // At boot a refusal or an exhausted retry is fatal: the operator must see it.
          {
            guard: 'wasBoot',
            target: 'failed',
            actions: [
              assign({ error: ({ event }) => String((event.error as Error)?.message ?? event.error) }),
              { type: 'reportFatal', params: ({ event }) => ({ error: String((event.error as Error)?.message ?? event.error) }) },
            ],
          },
          // During a resync the relay keeps its last view and tries again (a refused topology key too:
          // it does not follow that control plane until the operator re-pins).
          {
            target: 'resyncWait',
            actions: assign({
              registerFailures: ({ context }) => context.registerFailures + 1,
              error: ({ event }) => String((event.error as Error)?.message ?? event.error),
            }),
          },
        ],
      },
    },
    resyncWait: {
      after: { resyncRetry: 'registering' },
    },
    serving: {
      invoke: [
        { id: 'follow', src: 'follow', input: ({ context }) => ({ registration: context.registration! }) },
        {
          id: 'heartbeat',
          src: 'heartbeat',
          input: ({ context }) => ({ relayId: context.request.relayId, intervalSeconds: context.registration!.heartbeatIntervalSeconds }),
        },
      ],
      on: {
        TOPOLOGY_EVENT: [
          // Revisions compare only within an epoch: an event of an epoch the relay left is never applied,
          // one of an unknown epoch means the control plane began a new one (a restored database).
          {
            guard: ({ context, event }) => eventEpochVerdict(snapshotEpoch(context), context.retiredEpochs, event.event.epoch) === 'old',
            actions: assign({ counters: ({ context }) => ({ ...context.counters, otherEpoch: context.counters.otherEpoch + 1 }) }),
          },
          {
            guard: ({ context, event }) => eventEpochVerdict(snapshotEpoch(context), context.retiredEpochs, event.event.epoch) === 'new',
            target: 'registering',
            actions: [
              assign(({ context, event }) => ({
                counters: { ...context.counters, otherEpoch: context.counters.otherEpoch + 1 },
                pendingResync: {
                  reason: 'epoch-changed' as const,
                  detail: `topology event of epoch ${event.event.epoch}, snapshot of epoch ${snapshotEpoch(context)}`,
                  epoch: event.event.epoch,
                },
              })),
              {
                type: 'emit',
                params: ({ context, event }) => ({
                  type: 'TopologyResyncRequested',
                  data: {
                    revision: context.view.revision,
                    reason: 'epoch-changed',
                    detail: `topology event of epoch ${event.event.epoch}, snapshot of epoch ${snapshotEpoch(context)}`,
                  },
                }),
              },
            ],
          },
          {
            guard: ({ context, event }) => topologyEventOrder(context.view, event.event) === 'applied',
            actions: [
              assign(({ context, event }) => {
                return {
                  view: evolveTopology(context.view, event.event),
                  cause: context.deps.newId(),
                  counters: { ...context.counters, applied: context.counters.applied + 1 },
                };
              }),
              'viewChanged',
              {
                type: 'emit',
                params: ({ context, event }) => ({
                  type: 'TopologyEventApplied',
                  id: context.cause!,
                  data: { revision: event.event.data.revision, eventId: event.event.id, eventType: event.event.type },
                }),
              },
            ],
          },
          {
            guard: ({ context, event }) => topologyEventOrder(context.view, event.event) === 'duplicate',
            actions: assign({ counters: ({ context }) => ({ ...context.counters, duplicates: context.counters.duplicates + 1 }) }),
          },
          {
            target: 'registering',
            actions: [
              assign(({ context, event }) => ({
                counters: { ...context.counters, gaps: context.counters.gaps + 1 },
                pendingResync: { reason: 'gap' as const, detail: `expected revision ${context.view.revision + 1}, got ${event.event.data.revision}` },
              })),
              {
                type: 'emit',
                params: ({ context, event }) => ({
                  type: 'TopologyResyncRequested',
                  data: {
                    revision: context.view.revision,
                    reason: 'gap',
                    detail: `expected revision ${context.view.revision + 1}, got ${event.event.data.revision}`,
                  },
                }),
              },
            ],
          },
        ],
        TOPOLOGY_REJECTED: {
          actions: [
            assign({
              counters: ({ context, event }) => ({
                ...context.counters,
                rejected: { ...context.counters.rejected, [event.rejection.reason]: (context.counters.rejected[event.rejection.reason] ?? 0) + 1 },
              }),
            }),
            {
              type: 'emit',
              params: ({ event }) => ({
                type: 'TopologyEventRejected',
                data: {
                  reason: event.rejection.reason,
                  subject: event.subject.slice(0, 512),
                  streamSeq: event.streamSeq,
                  detail: event.rejection.detail.slice(0, 512),
                },
              }),
            },
          ],
        },
        FOLLOWER_PULL: {
          actions: assign({
            pullFailing: ({ event }) => !event.ok,
            // A bus outage starts the count of stalled heartbeats again once it is over.
            counters: ({ context, event }) => (event.ok ? context.counters : { ...context.counters, heartbeatsBehind: 0 }),
          }),
        },
        CONSUMER_LOST: {
          target: 'registering',
          actions: [
            assign({ pendingResync: ({ event }) => ({ reason: event.reason, detail: event.detail }) }),
            {
              type: 'emit',
              params: ({ context, event }) => ({
                type: 'TopologyResyncRequested',
                data: { revision: context.view.revision, reason: event.reason, detail: event.detail },
              }),
            },
          ],
        },
        RESYNC: {
          target: 'registering',
          actions: [
            assign({ pendingResync: ({ event }) => ({ reason: 'operator' as const, detail: event.detail }) }),
            {
              type: 'emit',
              params: ({ context, event }) => ({
                type: 'TopologyResyncRequested',
                data: { revision: context.view.revision, reason: 'operator', detail: event.detail },
              }),
            },
          ],
        },
        HEARTBEAT: [
          {
            guard: ({ context, event }) => heartbeatEpochChanged(snapshotEpoch(context), event.response.epoch),
            target: 'registering',
            actions: [
              assign(({ context, event }) => ({
                counters: { ...context.counters, heartbeats: context.counters.heartbeats + 1 },
                pendingResync: {
                  reason: 'epoch-changed' as const,
                  detail: `control plane at epoch ${event.response.epoch}, snapshot of epoch ${snapshotEpoch(context)}`,
                },
              })),
              {
                type: 'emit',
                params: ({ context, event }) => ({
                  type: 'TopologyResyncRequested',
                  data: {
                    revision: context.view.revision,
                    reason: 'epoch-changed',
                    detail: `control plane at epoch ${event.response.epoch}, snapshot of epoch ${snapshotEpoch(context)}`,
                  },
                }),
              },
            ],
          },
          {
            guard: ({ context, event }) =>
              !context.pullFailing &&
              behindAndStuck(context, event.response.revision) &&
              context.counters.heartbeatsBehind + 1 >= behindHeartbeatsBeforeResync(context.registration!.heartbeatIntervalSeconds),
            target: 'registering',
            actions: [
              assign(({ context, event }) => ({
                counters: { ...context.counters, heartbeats: context.counters.heartbeats + 1, heartbeatsBehind: context.counters.heartbeatsBehind + 1 },
                pendingResync: {
                  reason: 'behind-control-plane' as const,
                  detail: `view at ${context.view.revision}, control plane at ${event.response.revision}`,
                },
              })),
              {
                type: 'emit',
                params: ({ context, event }) => ({
                  type: 'TopologyResyncRequested',
                  data: {
                    revision: context.view.revision,
                    reason: 'behind-control-plane',
                    detail: `view at ${context.view.revision}, control plane at ${event.response.revision}`,
                  },
                }),
              },
            ],
          },
          {
            // Behind and stuck, not yet for long enough to resync (or its pulls fail: the bus's doing, not
            // counted): the follower pulls again at once.
            guard: ({ context, event }) => behindAndStuck(context, event.response.revision),
            actions: [
              assign({
                counters: ({ context }) => ({
                  ...context.counters,
                  heartbeats: context.counters.heartbeats + 1,
                  heartbeatsBehind: context.pullFailing ? 0 : context.counters.heartbeatsBehind + 1,
                }),
                revisionAtLastHeartbeat: ({ context }) => context.view.revision,
                followedAtLastHeartbeat: ({ context }) => followed(context.counters),
              }),
              sendTo('follow', { type: 'REPULL' } satisfies FollowCommand),
            ],
          },
          {
            actions: assign({
              counters: ({ context }) => ({ ...context.counters, heartbeats: context.counters.heartbeats + 1, heartbeatsBehind: 0 }),
              revisionAtLastHeartbeat: ({ context }) => context.view.revision,
              followedAtLastHeartbeat: ({ context }) => followed(context.counters),
            }),
          },
        ],
        HEARTBEAT_NOT_REGISTERED: {
          target: 'registering',
          actions: [
            assign({ pendingResync: { reason: 'behind-control-plane', detail: 'control plane no longer knows this relay; re-registering' } }),
            {
              type: 'emit',
              params: ({ context }) => ({
                type: 'TopologyResyncRequested',
                data: { revision: context.view.revision, reason: 'behind-control-plane', detail: 'heartbeat: not registered; re-registering' },
              }),
            },
          ],
        },
      },
    },
    draining: {
      entry: [
        assign({ cause: ({ context }) => context.deps.newId() }),
        {
          type: 'emit',
          params: ({ context, event }) => ({ type: 'RelayDraining', id: context.cause!, data: { signal: event.type === 'STOP' ? event.signal : 'unknown' } }),
        },
      ],
      invoke: {
        src: 'deregister',
        input: ({ context }) => ({ relayId: context.request.relayId }),
        onDone: { target: 'teardown', actions: assign({ deregistered: true }) },
        onError: {
          target: 'teardown',
          actions: assign({ error: ({ event }) => `deregister failed: ${String((event.error as Error)?.message ?? event.error)}` }),
        },
      },
      on: { STOP: {}, KEY_STAGED: {} },
    },
    // Leaving the network: every mesh device and all client state of this relay go (the others remove
    // theirs on the leave event); the sysctls get their old values back.
    teardown: {
      always: {
        guard: ({ context }) => context.links === null || context.registration === null || (context.tornDown.mesh && context.tornDown.clients),
        target: 'stopped',
      },
      entry: [
        sendTo('topology', ({ context }) => ({ type: 'TEARDOWN' as const, cause: context.cause })),
        sendTo('clients', ({ context }) => ({ type: 'TEARDOWN' as const, cause: context.cause })),
      ],
      on: {
        MESH_TORN_DOWN: { actions: assign({ tornDown: ({ context }) => ({ ...context.tornDown, mesh: true }) }) },
        CLIENTS_TORN_DOWN: { actions: assign({ tornDown: ({ context }) => ({ ...context.tornDown, clients: true }) }) },
        STOP: {},
        KEY_STAGED: {},
      },
      after: {
        teardownTimeout: {
          target: 'stopped',
          actions: assign({
            error: ({ context }) =>
              `teardown timed out (mesh ${context.tornDown.mesh ? 'done' : 'not done'}, clients ${context.tornDown.clients ? 'done' : 'not done'})`,
          }),
        },
      },
      exit: { type: 'emit', params: ({ context }) => ({ type: 'RelayStopped', data: { deregistered: context.deregistered } }) },
    },
    stopped: { type: 'final' },
    failed: { type: 'final', on: { STOP: {} } },
  },
});

export type RelayActor = ActorRefFrom<typeof relayMachine>;
