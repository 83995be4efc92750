import { assign, enqueueActions, sendParent, sendTo, setup, type AnyActorRef } from 'xstate';
import type { ClientSession, RelayRecord } from '../events/topology.events.ts';
import { sessionsOfEntry, type TopologyView } from '../events/topology.fold.ts';
import { clientDevice, clientScope, desiredClientState, exitTable, releasedClientState, type ClientOptions } from '../kernel/clients.ts';
import type { DesiredHostState, HostState } from '../kernel/host-state.ts';
import type { KernelNotice } from '../kernel/kernel.machine.ts';
import { meshIndex } from '../kernel/mesh.ts';
import type { Deps } from '../lib/deps.ts';
import { embed6 } from '../kernel/ipv6.ts';
import { clientSessionMachine, type ClientSessionActor, type SessionClosed, type SessionExpired } from './client-session.machine.ts';

/**
 * The clients actor: the entry side of this relay. From the relay's view it keeps one client-session
 * actor per open session entering here (spawned when opened, told of exit switches, closed when the
 * session is), and sends the kernel actor the client part of the host (src/kernel/clients.ts) as the
 * owner `clients`: the client device with one peer per session, the steering and fail-closed rules,
 * the nftables table and the sysctls. Every relay runs one, also with no sessions: forwarding, NAT and
 * filters serve it as an exit too. On teardown it leaves nothing but the sysctls as they were.
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

export interface ClientsContext extends ClientsInput {
  self: RelayRecord | null;
  relays: Readonly<Record<string, RelayRecord>>;
  /** Open sessions entering here, by id (from the view). */
  sessions: Record<string, ClientSession>;
  actors: Record<string, ClientSessionActor>;
  /** Sessions past their expiry: unprogrammed while the control plane has not closed them yet. */
  expired: string[];
  tearingDown: boolean;
  /** The id of the relay event behind the latest change of the desired state (passed to the kernel). */
  cause: string | null;
  /** NATS addresses of the latest registration: refused to clients like the configured service ranges. */
  services: string[];
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
const kernelRef = ({ system }: { system: { get: (id: string) => AnyActorRef | undefined } }) => system.get('kernel')!;

/** Which relay each exit table leads to. */
function exitsByTable(relays: Readonly<Record<string, RelayRecord>>, exitTableBase: number): Map<number, string> {
  return new Map(Object.values(relays).map((r) => [exitTable(exitTableBase, meshIndex(r.meshAddress)), r.id]));
}

/**
 * What the kernel reached for one session: its peer on the device (with the client's addresses, the
 * IPv6 one too with `clientPrefix6`), and the exit its rules steer to (null unless every family's rule
 * steers to the same exit table).
 */
export function sessionReached(
  actual: HostState,
  device: string,
  session: ClientSession,
  exits: ReadonlyMap<number, string>,
  clientPrefix6: string | null,
): { peer: boolean; exitId: string | null } {
  const cidrs = [`${session.address}/32`, ...(clientPrefix6 ? [`${embed6(clientPrefix6, session.address)}/128`] : [])];
  const peer =
    actual.devices[device]?.peers.some((p) => p.publicKey === session.publicKey && p.allowedIps.length === cidrs.length && cidrs.every((c) => p.allowedIps.includes(c))) ?? false;
  const tables = cidrs.map((c) => actual.rules.find((r) => r.from === c && r.iif === device && r.table !== null)?.table ?? null);
  const table = tables[0] ?? null;
  return { peer, exitId: table !== null && tables.every((t) => t === table) ? (exits.get(table) ?? null) : null };
}

/**
 * The client part of the host this relay desires: its open sessions but the expired ones, or, tearing
 * down, nothing but the original sysctls. Replay derives it with this same function.
 */
export function clientsDesired(
  c: Pick<ClientsContext, 'self' | 'relays' | 'sessions' | 'expired' | 'tearingDown' | 'clients' | 'originalSysctls' | 'services'>,
): DesiredHostState {
  if (c.tearingDown) return releasedClientState(c.originalSysctls);
  const live = Object.values(c.sessions).filter((s) => !c.expired.includes(s.id));
  return desiredClientState(c.self!, c.relays, live, { ...c.clients, serviceCidrs: serviceCidrsOf(c) });
}

/** The service addresses the relay keeps clients from: the configured ones and those of the latest registration. */
export const serviceCidrsOf = (c: Pick<ClientsContext, 'clients' | 'services'>): string[] => [...new Set([...c.clients.serviceCidrs, ...c.services])].sort();

const tellKernel = sendTo(kernelRef, ({ context, self: me }: { context: ClientsContext; self: AnyActorRef }) => ({
  type: 'DESIRED' as const,
  owner: 'clients',
  scope: clientScope(context.self!, context.clients),
  state: clientsDesired(context),
  cause: context.cause,
  replyTo: me,
}));

export const clientsMachine = setup({
  types: {
    context: {} as ClientsContext,
    events: {} as ClientsEvent,
    input: {} as ClientsInput,
  },
  actors: { clientSession: clientSessionMachine },
}).createMachine({
  id: 'clients',
  context: ({ input }) => ({ ...input, self: null, relays: {}, sessions: {}, actors: {}, expired: [], tearingDown: false, cause: null, services: [] }),
  on: {
    VIEW: {
      // No client settings: the relay runs without a data path (unit tests of the relay actor alone).
      guard: ({ context, event }) => context.clients !== undefined && !context.tearingDown && event.view.relays[context.selfId] !== undefined,
      actions: [
        enqueueActions(({ context, event, enqueue }) => {
          for (const [id, a] of Object.entries(context.actors)) {
            const now = event.view.sessions[id];
            if (!now || now.entryId !== context.selfId) enqueue.sendTo(a, { type: 'CLOSE', reason: 'session closed' });
            else if (context.sessions[id] && now.exitId !== context.sessions[id]!.exitId) enqueue.sendTo(a, { type: 'EXIT_CHANGED', exitId: now.exitId });
          }
        }),
        assign(({ context, event, spawn }) => {
          const self = event.view.relays[context.selfId]!;
          const device = clientDevice(context.clients.wgPrefix, meshIndex(self.meshAddress));
          const sessions = Object.fromEntries(sessionsOfEntry(event.view, context.selfId).map((s) => [s.id, s]));
          const actors = { ...context.actors };
          for (const s of Object.values(sessions)) {
            if (!actors[s.id]) actors[s.id] = spawn('clientSession', { id: sessionActorId(s.id), input: { session: s, device, idleAfterMs: context.idleAfterMs, deps: context.deps } });
          }
          return { self, relays: event.view.relays, sessions, actors, expired: context.expired.filter((id) => sessions[id]), cause: event.cause, services: event.services ?? context.services };
        }),
        tellKernel,
      ],
    },
    SESSION_EXPIRED: {
      guard: ({ context }) => context.self !== null,
      actions: [assign({ expired: ({ context, event }) => [...new Set([...context.expired, event.sessionId])], cause: ({ event }) => event.cause }), tellKernel],
    },
    TEARDOWN: {
      guard: ({ context }) => context.self !== null,
      actions: [
        enqueueActions(({ context, enqueue }) => {
          for (const a of Object.values(context.actors)) enqueue.sendTo(a, { type: 'CLOSE', reason: 'relay stopping' });
        }),
        assign({ tearingDown: true, sessions: {}, cause: ({ event }) => event.cause }),
        tellKernel,
      ],
    },
    KERNEL_APPLYING: {
      actions: enqueueActions(({ context, enqueue }) => {
        for (const a of Object.values(context.actors)) enqueue.sendTo(a, { type: 'KERNEL_APPLYING' });
      }),
    },
    KERNEL_REACHED: {
      actions: enqueueActions(({ context, event, enqueue }) => {
        if (!context.self) return;
        const device = clientDevice(context.clients.wgPrefix, meshIndex(context.self.meshAddress));
        const exits = exitsByTable(context.relays, context.clients.exitTableBase);
        const openKeys = new Set(Object.values(context.sessions).map((s) => s.publicKey));
        for (const a of Object.values(context.actors)) {
          const { session } = a.getSnapshot().context;
          const r = sessionReached(event.actual, device, session, exits, context.clients.clientPrefix6);
          // A closed session's key may already belong to a new session of the same client: then its peer is that one's.
          const takenByOpen = !context.sessions[session.id] && openKeys.has(session.publicKey);
          enqueue.sendTo(a, { type: 'KERNEL_REACHED', peer: r.peer && !takenByOpen, exitId: r.exitId, nowMs: event.nowMs });
        }
        const a = event.actual;
        if (context.tearingDown && Object.keys(a.devices).length === 0 && a.rules.length === 0 && Object.keys(a.nftTables).length === 0) {
          enqueue(sendParent({ type: 'CLIENTS_TORN_DOWN' } satisfies ClientsTornDown));
        }
      }),
    },
    KERNEL_OBSERVED: {
      actions: enqueueActions(({ context, event, enqueue }) => {
        for (const a of Object.values(context.actors)) {
          const { device, session } = a.getSnapshot().context;
          const observation = event.observations.find((o) => o.dev === device && o.publicKey === session.publicKey) ?? null;
          enqueue.sendTo(a, { type: 'OBSERVED', observation, nowMs: event.nowMs });
        }
      }),
    },
    'xstate.done.actor.*': {
      actions: enqueueActions(({ context, event, enqueue }) => {
        const id = event.output.sessionId;
        enqueue.stopChild(sessionActorId(id));
        const { [id]: _gone, ...actors } = context.actors;
        enqueue.assign({ actors });
      }),
    },
  },
});
