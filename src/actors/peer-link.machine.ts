import { assign, setup, type ActorRefFrom } from 'xstate';
import type { RelayRecord } from '../contract/topology.events.ts';
import type { PeerObservation } from '../kernel/host-state.ts';

/**
 * One actor per mesh link (this relay to one other relay). It never touches the host: the topology
 * actor tells it what the kernel actor programmed and what the device reports (handshake time, byte
 * counters), and it decides the link's state from that alone. It holds no timers: staleness is judged
 * on each observation (which carries the time), so a stopped link actor leaves nothing running.
 *
 *   desired -> configuring -> handshaking -> up <-> stale -> down -> (heard again) up
 *   any -> removing -> removed (final, once the kernel has removed the device)
 *
 * "Heard" means a handshake or received bytes: with a persistent keepalive the peer sends something
 * every few seconds even when WireGuard does not re-handshake (it does so only every 2 minutes).
 * A link is up only once this side has completed a handshake: a responder's received bytes grow
 * with the peer's handshake initiation already, before there is a session to carry anything (the
 * responder's handshake completes when the initiator's first packet confirms the keys).
 */

export type LinkState = 'desired' | 'configuring' | 'handshaking' | 'up' | 'stale' | 'down' | 'removing' | 'removed';

export interface LinkTiming {
  /** No handshake or traffic from the peer for this long: stale (WireGuard's reject window: 180 s). */
  staleAfterMs: number;
  /** ... and for this long: down (also when a configured link never handshakes). */
  downAfterMs: number;
}

export interface PeerLinkInput extends LinkTiming {
  peer: RelayRecord;
  device: string;
}

export interface PeerLinkContext extends PeerLinkInput {
  /** When the kernel first reported the link configured (ms), the base for a link never heard. */
  configuredAtMs: number | null;
  latestHandshakeMs: number | null;
  rxBytes: number;
  txBytes: number;
  lastHeardMs: number | null;
  /** Why the link is in its current state (goes into the LinkStateChanged event). */
  reason: string;
}

export type PeerLinkEvent =
  | { type: 'KERNEL_APPLYING' }
  /** What the kernel reached: whether this link's device and peer are programmed as desired. */
  | { type: 'KERNEL_REACHED'; configured: boolean; nowMs: number }
  | { type: 'OBSERVED'; observation: PeerObservation | null; nowMs: number }
  /** The peer's record changed (key rotation, new endpoint): the link is reprogrammed. */
  | { type: 'PEER_CHANGED'; peer: RelayRecord }
  | { type: 'REMOVE' };

/** The event a link publishes on every state change. */
export interface LinkStateChanged {
  type: 'LinkStateChanged';
  data: { peerId: string; device: string; state: LinkState; reason: string; latestHandshakeMs: number | null; rxBytes: number; txBytes: number };
}

/** The output of a finished link actor (its device is gone). */
export interface LinkRemoved {
  peerId: string;
}

const heardAgeMs = (c: PeerLinkContext, nowMs: number) => nowMs - (c.lastHeardMs ?? c.configuredAtMs ?? nowMs);

/** What a peer's observations fold into (a link's peer, a session's client). */
export interface Heard {
  latestHandshakeMs: number | null;
  rxBytes: number;
  txBytes: number;
  lastHeardMs: number | null;
}

/**
 * Fold an observation into the counters. The peer was heard at the handshake time when the
 * handshake moved, and at the observation time when received bytes grew.
 */
export function foldObservation(c: Heard, o: PeerObservation | null, nowMs: number): Partial<Heard> {
  if (!o) return {};
  let heard = c.lastHeardMs;
  if (o.latestHandshakeMs !== null && o.latestHandshakeMs !== c.latestHandshakeMs) heard = Math.max(heard ?? 0, o.latestHandshakeMs);
  if (o.rxBytes > c.rxBytes) heard = nowMs;
  return { latestHandshakeMs: o.latestHandshakeMs, rxBytes: o.rxBytes, txBytes: o.txBytes, lastHeardMs: heard };
}

/** The entry action of every state: publish the change. */
const announce = (state: LinkState) =>
  ({
    type: 'emit',
    params: ({ context }: { context: PeerLinkContext }): LinkStateChanged => ({
      type: 'LinkStateChanged',
      data: {
        peerId: context.peer.id,
        device: context.device,
        state,
        reason: context.reason,
        latestHandshakeMs: context.latestHandshakeMs,
        rxBytes: context.rxBytes,
        txBytes: context.txBytes,
      },
    }),
  }) as const;

/** The link's context with an OBSERVED event folded in: what the guards judge. */
const folded = (context: PeerLinkContext, event: PeerLinkEvent): PeerLinkContext =>
  event.type === 'OBSERVED' ? { ...context, ...foldObservation(context, event.observation, event.nowMs) } : context;
const ageOf = (context: PeerLinkContext, event: PeerLinkEvent) => (event.type === 'OBSERVED' ? heardAgeMs(folded(context, event), event.nowMs) : 0);

/** OBSERVED transitions of a state: the first whose guard holds wins, else the counters are just folded. */
const onObserved = (...transitions: { guard: 'fresh' | 'pastStale' | 'pastDown'; target: LinkState; reason: string }[]) => [
  ...transitions.map((t) => ({ guard: t.guard, target: t.target, actions: ['fold' as const, { type: 'because' as const, params: { reason: t.reason } }] })),
  { actions: 'fold' as const },
];

export const peerLinkMachine = setup({
  types: {
    context: {} as PeerLinkContext,
    events: {} as PeerLinkEvent,
    input: {} as PeerLinkInput,
  },
  actions: {
    emit: (_, _params: LinkStateChanged) => {},
    fold: assign(({ context, event }) => folded(context, event)),
    because: assign((_, params: { reason: string }) => ({ reason: params.reason })),
  },
  guards: {
    configured: ({ event }) => event.type === 'KERNEL_REACHED' && event.configured,
    unconfigured: ({ event }) => event.type === 'KERNEL_REACHED' && !event.configured,
    fresh: ({ context, event }) => {
      const f = folded(context, event);
      return f.latestHandshakeMs !== null && f.lastHeardMs !== null && ageOf(context, event) < context.staleAfterMs;
    },
    pastStale: ({ context, event }) => ageOf(context, event) >= context.staleAfterMs,
    pastDown: ({ context, event }) => ageOf(context, event) >= context.downAfterMs,
  },
}).createMachine({
  id: 'peerLink',
  context: ({ input }) => ({ ...input, configuredAtMs: null, latestHandshakeMs: null, rxBytes: 0, txBytes: 0, lastHeardMs: null, reason: 'in topology' }),
  initial: 'desired',
  on: {
    REMOVE: { target: '.removing', actions: assign({ reason: 'left the topology' }) },
    // A new key or endpoint: the device gets a new peer, whose handshake starts from nothing.
    PEER_CHANGED: {
      target: '.configuring',
      actions: assign(({ event }) => ({
        peer: event.peer,
        configuredAtMs: null,
        latestHandshakeMs: null,
        rxBytes: 0,
        txBytes: 0,
        lastHeardMs: null,
        reason: 'peer changed',
      })),
    },
    OBSERVED: { actions: 'fold' },
  },
  states: {
    desired: {
      entry: announce('desired'),
      on: {
        KERNEL_APPLYING: { target: 'configuring', actions: assign({ reason: 'kernel applying' }) },
        // Adopted: the device was already programmed (a restarted relay).
        KERNEL_REACHED: {
          guard: 'configured',
          target: 'handshaking',
          actions: assign({ configuredAtMs: ({ event }) => event.nowMs, reason: 'already programmed' }),
        },
      },
    },
    configuring: {
      entry: announce('configuring'),
      on: {
        KERNEL_REACHED: { guard: 'configured', target: 'handshaking', actions: assign({ configuredAtMs: ({ event }) => event.nowMs, reason: 'programmed' }) },
      },
    },
    handshaking: {
      entry: announce('handshaking'),
      on: {
        OBSERVED: onObserved(
          { guard: 'fresh', target: 'up', reason: 'handshake' },
          { guard: 'pastDown', target: 'down', reason: 'no handshake since configured' },
        ),
      },
    },
    up: {
      entry: announce('up'),
      on: {
        OBSERVED: onObserved(
          { guard: 'pastDown', target: 'down', reason: 'peer silent past the down window' },
          { guard: 'pastStale', target: 'stale', reason: 'peer silent past the stale window' },
        ),
      },
    },
    stale: {
      entry: announce('stale'),
      on: {
        OBSERVED: onObserved(
          { guard: 'fresh', target: 'up', reason: 'heard again' },
          { guard: 'pastDown', target: 'down', reason: 'peer silent past the down window' },
        ),
      },
    },
    down: {
      entry: announce('down'),
      on: { OBSERVED: onObserved({ guard: 'fresh', target: 'up', reason: 'heard again' }) },
    },
    removing: {
      entry: announce('removing'),
      on: {
        KERNEL_REACHED: { guard: 'unconfigured', target: 'removed', actions: assign({ reason: 'device removed' }) },
      },
    },
    removed: {
      type: 'final',
      entry: announce('removed'),
    },
  },
  // The parent learns of the end from the done event (xstate.done.actor.<id>) and stops the actor.
  output: ({ context }): LinkRemoved => ({ peerId: context.peer.id }),
});

export type PeerLinkActor = ActorRefFrom<typeof peerLinkMachine>;
