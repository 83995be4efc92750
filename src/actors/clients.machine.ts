import { observationIndex } from '../kernel/observations.ts';
import { assign, enqueueActions, sendParent, sendTo, setup, type AnyActorRef } from 'xstate';
import type { TopologyView } from '../events/topology.fold.ts';
import type { ClientSession } from '../contract/topology.events.ts';
import { clientDevice, privateDevice, type ClientOptions } from '../kernel/clients.ts';
import { sessionConcerns } from '../events/topology.fold.ts';
import type { KernelNotice } from '../kernel/kernel.machine.ts';
import { meshIndex } from '../kernel/mesh.ts';
import { clientsOwner, expireSession, type ClientsOwnerState } from '../kernel/owners/clients.ts';
import { desiredEvent, takesView } from '../kernel/owners/owner.ts';
import type { Deps } from '../lib/deps.ts';
import { keptChild, providedLogic } from './kept-children.ts';
import { clientSessionMachine, type ClientSessionActor, type SessionClosed, type SessionExpired } from './client-session.machine.ts';

/**
 * The clients actor: the client side of this relay. From the relay's view it keeps one client-session
 * actor per open session that concerns it (entering here, or private ones leaving here; spawned when
 * opened, told of exit switches, closed when the session is or a private one's exit moved away), and
 * sends the kernel actor the client part of the host (src/kernel/clients.ts) as the owner `clients`:
 * the client device with one peer per standard session, the steering and fail-closed rules, the
 * private sessions' port maps (entering here) and private device (leaving here), the nftables table
 * and the sysctls. Every relay runs one, also with no sessions: forwarding, NAT and filters serve it
 * as an exit too. On teardown it leaves nothing but the sysctls as they were.
 */

export interface ClientsInput {
  selfId: string;
  clients: ClientOptions;
  /** No handshake or traffic from a client for this long: its session is idle. */
  idleAfterMs: number;
  /** The values of the client sysctls before this relay first set them: restored on teardown. */
  originalSysctls: Record<string, string>;
  /** Passed on to the session actors. */
  deps: Deps;
}

/** The clients owner's state (src/kernel/owners/clients.ts: what it desires of the kernel) and the session actors. */
export interface ClientsContext extends ClientsInput, ClientsOwnerState {
  /** The session actors by session id: kept children (src/actors/kept-children.ts), in this Map alone. */
  actors: ReadonlyMap<string, ClientSessionActor>;
  /** The id of the relay event behind the latest change of the desired state (passed to the kernel). */
  cause: string | null;
}

export type ClientsEvent =
  | { type: 'VIEW'; view: TopologyView; cause: string | null; services?: string[] }
  | { type: 'TEARDOWN'; cause: string | null }
  | SessionExpired
  | { type: `xstate.done.actor.${string}`; output: SessionClosed }
  | KernelNotice;

/** Sent to the parent once a teardown has left nothing of the client scope on the host. */
export interface ClientsTornDown {
  type: 'CLIENTS_TORN_DOWN';
}

const sessionActorId = (sessionId: string) => `session-${sessionId}`;

/** This relay's part in a session: its entry, or (a private session's) its exit. */
const roleOf = (s: ClientSession, selfId: string): 'entry' | 'exit' => (s.entryId === selfId ? 'entry' : 'exit');

/**
 * The device whose peer is the session's client: the client device at a standard session's entry, the
 * private device at a private session's exit; none at a private session's entry (it forwards
 * ciphertext and never hears the client itself).
 */
function observedDevice(s: ClientSession, selfId: string, wgPrefix: string, own: number): string | null {
  if (s.mode === 'standard') return clientDevice(wgPrefix, own);
  return s.entryId === selfId ? null : privateDevice(wgPrefix, own);
}
const kernelRef = ({ system }: { system: { get: (id: string) => AnyActorRef | undefined } }) => system.get('kernel')!;

const tellKernel = sendTo(kernelRef, ({ context, self: me }: { context: ClientsContext; self: AnyActorRef }) =>
  desiredEvent(clientsOwner, context, context, context.cause, me),
);

export const clientsMachine = setup({
  types: {
    context: {} as ClientsContext,
    events: {} as ClientsEvent,
    input: {} as ClientsInput,
  },
  actors: { clientSession: clientSessionMachine },
}).createMachine({
  id: 'clients',
  context: ({ input }) => ({
    ...input,
    self: null,
    relays: new Map(),
    sessions: {},
    actors: new Map(),
    expired: [],
    tearingDown: false,
    cause: null,
    services: [],
  }),
  on: {
    VIEW: {
      // No client settings: the relay runs without a data path (unit tests of the relay actor alone).
      guard: ({ context, event }) => context.clients !== undefined && takesView(context, event.view),
      actions: [
        enqueueActions(({ context, event, enqueue }) => {
          for (const [id, a] of context.actors) {
            const now = event.view.sessions[id];
            if (!now || !sessionConcerns(now, context.selfId))
              enqueue.sendTo(a, { type: 'CLOSE', reason: now ? `exit changed to ${now.exitId}` : 'session closed' });
            else if (context.sessions[id] && now.exitId !== context.sessions[id]!.exitId) enqueue.sendTo(a, { type: 'EXIT_CHANGED', exitId: now.exitId });
          }
        }),
        // A session actor for every new session: a kept child, so that opening or closing one does not
        // copy xstate's children record, nor a topology event the actors.
        enqueueActions(({ context, event, enqueue, self }) => {
          const next = clientsOwner.view(context, event);
          const own = meshIndex(next.self!.meshAddress);
          const logic = providedLogic<typeof clientSessionMachine>(self, 'clientSession');
          let actors: Map<string, ClientSessionActor> | null = null;
          for (const s of Object.values(next.sessions)) {
            if (context.actors.has(s.id)) continue;
            actors ??= new Map(context.actors);
            const a = keptChild(self, logic, sessionActorId(s.id), {
              session: s,
              role: roleOf(s, context.selfId),
              device: observedDevice(s, context.selfId, context.clients.wgPrefix, own),
              idleAfterMs: context.idleAfterMs,
              deps: context.deps,
            });
            actors.set(s.id, a);
            enqueue(() => a.start());
          }
          enqueue.assign(() => ({ ...next, actors: actors ?? context.actors, cause: event.cause }));
        }),
        tellKernel,
      ],
    },
    SESSION_EXPIRED: {
      guard: ({ context }) => context.self !== null,
      actions: [assign(({ context, event }) => ({ ...expireSession(context, event.sessionId), cause: event.cause })), tellKernel],
    },
    TEARDOWN: {
      guard: ({ context }) => context.self !== null,
      actions: [
        enqueueActions(({ context, enqueue }) => {
          for (const a of context.actors.values()) enqueue.sendTo(a, { type: 'CLOSE', reason: 'relay stopping' });
        }),
        assign(({ context, event }) => ({ ...clientsOwner.teardown(context), cause: event.cause })),
        tellKernel,
      ],
    },
    KERNEL_APPLYING: {
      actions: enqueueActions(({ context, enqueue }) => {
        for (const a of context.actors.values()) enqueue.sendTo(a, { type: 'KERNEL_APPLYING' });
      }),
    },
    KERNEL_REACHED: {
      actions: enqueueActions(({ context, event, enqueue }) => {
        if (!context.self) return;
        const actors = [...context.actors.values()];
        const r = clientsOwner.reached(
          context,
          context,
          event.actual,
          actors.map((a) => a.getSnapshot().context.session),
        );
        for (const [i, a] of actors.entries()) enqueue.sendTo(a, { type: 'KERNEL_REACHED', ...r.members[i]!, nowMs: event.nowMs });
        if (r.tornDown) enqueue(sendParent({ type: 'CLIENTS_TORN_DOWN' } satisfies ClientsTornDown));
      }),
    },
    KERNEL_OBSERVED: {
      actions: enqueueActions(({ context, event, enqueue }) => {
        const seen = observationIndex(event.observations);
        for (const a of context.actors.values()) {
          const { device, session } = a.getSnapshot().context;
          enqueue.sendTo(a, { type: 'OBSERVED', observation: device ? (seen.get(`${device} ${session.publicKey}`) ?? null) : null, nowMs: event.nowMs });
        }
      }),
    },
    // A session actor finished (done, it has stopped itself): forget it.
    'xstate.done.actor.*': {
      actions: assign(({ context, event }) => {
        const actors = new Map(context.actors);
        actors.delete(event.output.sessionId);
        return { actors };
      }),
    },
  },
});
