import { assign, enqueueActions, sendParent, setup, type ActorRefFrom } from 'xstate';
import type { ClientSession, SessionMode } from '../contract/topology.events.ts';
import type { PeerObservation } from '../kernel/host-state.ts';
import type { Deps } from '../lib/deps.ts';
import { foldObservation } from './peer-link.machine.ts';

/**
 * One actor per client session that concerns this relay (its `role`: the session's entry, or a private
 * session's exit). Like a peer link it never touches the host and holds no timers: the clients actor
 * tells it what the kernel programmed (is the client's peer on the client device, and which exit does
 * its rule steer to; for a private session its port map at the entry, its peer and route on the
 * private device at the exit) and what the device reports (handshakes, bytes); idleness and expiry
 * are judged on each observation, which carries the time.
 *
 *   requested -> configuring -> ready -> active <-> idle
 *   ready | active | idle -> expired (past expiresAt: the clients actor unprograms it)
 *   any -> closing -> closed (final, once the kernel no longer carries the peer)
 *
 * `ready` means programmed and confirmed to the control plane, waiting for the client's first
 * handshake. Each time the kernel reaches the session's current exit (at first, and after every exit
 * switch) the actor asks the shell to confirm that exit to the control plane (`confirm`).
 */

export type ClientSessionState = 'requested' | 'configuring' | 'ready' | 'active' | 'idle' | 'expired' | 'closing' | 'closed';

export interface ClientSessionInput {
  session: ClientSession;
  /** This relay's part: the session's entry, or (a private session) its exit. */
  role: 'entry' | 'exit';
  /** The device whose peer is the client (observed for handshakes), or null where none is (a private session's entry). */
  device: string | null;
  /** No handshake or traffic from the client for this long: idle. */
  idleAfterMs: number;
  /** The source of the id of its `expired` event. */
  deps: Deps;
}

export interface ClientSessionContext extends ClientSessionInput {
  /** The exit the kernel's rule steers this client to now (null: no rule). */
  programmedExit: string | null;
  /** The last exit confirmed to the control plane. */
  confirmedExit: string | null;
  latestHandshakeMs: number | null;
  rxBytes: number;
  txBytes: number;
  lastHeardMs: number | null;
  reason: string;
  /** The envelope id of the session's `expired` event, once expired: the cause of its unprogramming. */
  expiredEventId: string | null;
}

export type ClientSessionEvent =
  | { type: 'KERNEL_APPLYING' }
  /** What the kernel reached for this session: its peer present, and the exit its rule steers to. */
  | { type: 'KERNEL_REACHED'; peer: boolean; exitId: string | null; nowMs: number }
  | { type: 'OBSERVED'; observation: PeerObservation | null; nowMs: number }
  | { type: 'EXIT_CHANGED'; exitId: string }
  | { type: 'CLOSE'; reason: string }
  /** Internal: the kernel reached the session's current exit, not yet confirmed to the control plane. */
  | { type: 'STEERED'; exitId: string; previousExitId: string | null };

/** What a session publishes on every state change, and when its entry steers it to a (new) exit. */
export type ClientSessionEmission =
  | {
      type: 'ClientSessionStateChanged';
      /** The envelope id, when the machine must know it (an expiry is the cause of kernel work). */
      id?: string;
      data: {
        sessionId: string;
        publicKey: string;
        address: string;
        exitId: string;
        mode: SessionMode;
        role: 'entry' | 'exit';
        state: ClientSessionState;
        reason: string;
        latestHandshakeMs: number | null;
        rxBytes: number;
        txBytes: number;
      };
    }
  | { type: 'ClientSessionSteered'; data: { sessionId: string; exitId: string; previousExitId: string | null } };

/** Sent to the parent when the session passed its expiry: it is to be unprogrammed. */
export interface SessionExpired {
  type: 'SESSION_EXPIRED';
  sessionId: string;
  /** The id of the session's `expired` event: the cause of its unprogramming. */
  cause: string;
}

export interface SessionClosed {
  sessionId: string;
}

const folded = (c: ClientSessionContext, e: ClientSessionEvent): ClientSessionContext =>
  e.type === 'OBSERVED' ? { ...c, ...foldObservation(c, e.observation, e.nowMs) } : c;
const nowOf = (e: ClientSessionEvent) => (e.type === 'OBSERVED' || e.type === 'KERNEL_REACHED' ? e.nowMs : null);

const announce = (state: ClientSessionState) =>
  ({
    type: 'emit',
    params: ({ context }: { context: ClientSessionContext }): ClientSessionEmission => ({
      type: 'ClientSessionStateChanged',
      ...(state === 'expired' && context.expiredEventId ? { id: context.expiredEventId } : {}),
      data: {
        sessionId: context.session.id,
        publicKey: context.session.publicKey,
        address: context.session.address,
        exitId: context.session.exitId,
        mode: context.session.mode,
        role: context.role,
        state,
        reason: context.reason,
        latestHandshakeMs: context.latestHandshakeMs,
        rxBytes: context.rxBytes,
        txBytes: context.txBytes,
      },
    }),
  }) as const;

/**
 * The transitions of a programmed session (ready, active, idle): past its expiry it expires; otherwise a
 * kernel answer may carry a new exit to confirm, and an observation may make its one move.
 */
const programmedOn = (move: { guard: 'heard' | 'quiet'; target: 'active' | 'idle'; reason: string }) =>
  ({
    KERNEL_REACHED: [{ guard: 'pastExpiry', target: 'expired', actions: { type: 'because', params: { reason: 'past its expiry' } } }, { actions: 'steered' }],
    OBSERVED: [
      { guard: 'pastExpiry', target: 'expired', actions: ['fold', { type: 'because', params: { reason: 'past its expiry' } }] },
      { guard: move.guard, target: move.target, actions: ['fold', { type: 'because', params: { reason: move.reason } }] },
      { actions: 'fold' },
    ],
  }) as const;

export const clientSessionMachine = setup({
  types: {
    context: {} as ClientSessionContext,
    events: {} as ClientSessionEvent,
    input: {} as ClientSessionInput,
    output: {} as SessionClosed,
  },
  actions: {
    emit: (_, _params: ClientSessionEmission) => {},
    /** Provided by the shell: tell the control plane the entry steers this session to `exitId`. */
    confirm: (_, _params: { sessionId: string; exitId: string }) => {},
    fold: assign(({ context, event }) => folded(context, event)),
    because: assign((_, params: { reason: string }) => ({ reason: params.reason })),
    // The kernel reached the session's current exit and the control plane has not heard so yet.
    steered: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'KERNEL_REACHED') return;
      enqueue.assign({ programmedExit: event.exitId });
      if (!event.peer || event.exitId === null || event.exitId !== context.session.exitId || context.confirmedExit === event.exitId) return;
      enqueue.raise({ type: 'STEERED', exitId: event.exitId, previousExitId: context.confirmedExit });
    }),
  },
  guards: {
    programmed: ({ context, event }) => event.type === 'KERNEL_REACHED' && event.peer && event.exitId === context.session.exitId,
    heard: ({ context, event }) => {
      const c = folded(context, event);
      return c.lastHeardMs !== null && c.lastHeardMs !== context.lastHeardMs;
    },
    quiet: ({ context, event }) => {
      const now = nowOf(event);
      const c = folded(context, event);
      return now !== null && c.lastHeardMs !== null && now - c.lastHeardMs >= context.idleAfterMs;
    },
    pastExpiry: ({ context, event }) => {
      const now = nowOf(event);
      return now !== null && now >= Date.parse(context.session.expiresAt);
    },
    peerGone: ({ event }) => event.type === 'KERNEL_REACHED' && !event.peer,
  },
}).createMachine({
  id: 'clientSession',
  context: ({ input }) => ({
    ...input,
    programmedExit: null,
    confirmedExit: null,
    latestHandshakeMs: null,
    rxBytes: 0,
    txBytes: 0,
    lastHeardMs: null,
    reason: 'session opened',
    expiredEventId: null,
  }),
  initial: 'requested',
  on: {
    CLOSE: { target: '.closing', actions: { type: 'because', params: ({ event }) => ({ reason: event.reason }) } },
    STEERED: {
      actions: [
        assign({ confirmedExit: ({ event }) => event.exitId }),
        {
          type: 'emit',
          params: ({ context, event }) => ({
            type: 'ClientSessionSteered',
            data: { sessionId: context.session.id, exitId: event.exitId, previousExitId: event.previousExitId },
          }),
        },
        { type: 'confirm', params: ({ context, event }) => ({ sessionId: context.session.id, exitId: event.exitId }) },
      ],
    },
    EXIT_CHANGED: {
      actions: [
        assign({ session: ({ context, event }) => ({ ...context.session, exitId: event.exitId }) }),
        { type: 'because', params: ({ event }) => ({ reason: `exit changed to ${event.exitId}` }) },
      ],
    },
  },
  states: {
    requested: {
      entry: announce('requested'),
      on: {
        KERNEL_APPLYING: 'configuring',
        KERNEL_REACHED: [
          { guard: 'programmed', target: 'ready', actions: ['steered', { type: 'because', params: { reason: 'programmed' } }] },
          { target: 'configuring' },
        ],
      },
    },
    configuring: {
      entry: announce('configuring'),
      on: {
        KERNEL_REACHED: { guard: 'programmed', target: 'ready', actions: ['steered', { type: 'because', params: { reason: 'programmed' } }] },
      },
    },
    ready: { entry: announce('ready'), on: programmedOn({ guard: 'heard', target: 'active', reason: 'client handshake' }) },
    active: { entry: announce('active'), on: programmedOn({ guard: 'quiet', target: 'idle', reason: 'client not heard' }) },
    idle: { entry: announce('idle'), on: programmedOn({ guard: 'heard', target: 'active', reason: 'client heard again' }) },
    // Unprogrammed locally until the control plane closes it (its heartbeat sweep does).
    expired: {
      entry: [
        assign({ expiredEventId: ({ context }) => context.deps.newId() }),
        announce('expired'),
        sendParent(({ context }) => ({ type: 'SESSION_EXPIRED', sessionId: context.session.id, cause: context.expiredEventId! }) satisfies SessionExpired),
      ],
      on: { EXIT_CHANGED: {} },
    },
    closing: {
      entry: announce('closing'),
      on: {
        KERNEL_REACHED: { guard: 'peerGone', target: 'closed', actions: { type: 'because', params: { reason: 'unprogrammed' } } },
        EXIT_CHANGED: {},
        CLOSE: {},
      },
    },
    closed: { type: 'final', entry: announce('closed') },
  },
  output: ({ context }) => ({ sessionId: context.session.id }),
});

export type ClientSessionActor = ActorRefFrom<typeof clientSessionMachine>;
