import { createActor, fromCallback, fromPromise, sendTo, setup, type AnyActorRef } from 'xstate';
import { clientSessionMachine, type ClientSessionActor, type ClientSessionEmission } from '../../src/actors/client-session.machine.ts';
import { clientsMachine, type ClientsInput } from '../../src/actors/clients.machine.ts';
import { topologyMachine, type TopologyInput } from '../../src/actors/topology.machine.ts';
import { seedTopology, type TopologyView } from '../../src/events/topology.fold.ts';
import { formatIpv4, parseCidr, type ClientSession, type RelayRecord } from '../../src/contract/topology.events.ts';
import { kernelMachine, type KernelEmission, type ObserverEvent } from '../../src/kernel/kernel.machine.ts';
import { MemoryKernelBackend } from '../../src/kernel/memory-backend.ts';
import { emptyHostState, type HostState } from '../../src/kernel/host-state.ts';
import { reconcileWith } from '../../src/kernel/reconcile.ts';
import { systemDeps } from '../../src/lib/deps.ts';
import { key } from './given.ts';

export const topologyInput: TopologyInput = {
  selfId: 'relay-1',
  mesh: { wgPrefix: 'rc', keepaliveSeconds: 25, mtu: 1420, privateKeyFile: '/state/wg.key', exitTableBase: 100_000, clientPrefix6: null },
  timing: { staleAfterMs: 5_000, downAfterMs: 10_000 },
  deps: systemDeps,
};

export const clientsInput: ClientsInput = {
  selfId: 'relay-1',
  clients: {
    wgPrefix: 'rc',
    privateKeyFile: '/state/wg.key',
    mtu: 1420,
    exitTableBase: 100_000,
    rulePriorityBase: 20_000,
    clientSupernet: '100.96.0.0/11',
    denyCidrs: ['198.18.0.2/32'],
    allowCidrs: [],
    serviceCidrs: [],
    clientPrefix6: null,
    privateSessions: true,
    echoService: true,
  },
  idleAfterMs: 30_000,
  originalSysctls: { 'net.ipv4.ip_forward': '0', 'net.ipv4.conf.all.rp_filter': '1' },
  deps: systemDeps,
};

/** Session n of a client entering at `entry` (its pool's host n + 1) and leaving at `exit`. */
export function session(n: number, entry: RelayRecord, exitId: string, over: Partial<ClientSession> = {}): ClientSession {
  const pool = parseCidr(entry.clientPool)!;
  return {
    id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
    entryId: entry.id,
    exitId,
    publicKey: key(10_000 + n),
    address: formatIpv4(pool.base + 1 + n),
    openedAt: '2026-11-25T00:00:00.000Z',
    expiresAt: '2100-01-01T00:00:00.000Z',
    mode: 'standard',
    ...over,
  };
}

/** A host before any relay ran on it: nothing owned, forwarding off, strict reverse-path filtering. */
export const hostBeforeRelay = (): HostState => ({ ...emptyHostState(), sysctls: { 'net.ipv4.ip_forward': '0', 'net.ipv4.conf.all.rp_filter': '1' } });

/**
 * The kernel, topology and clients actors of relay-1 as the relay actor composes them, on the
 * in-memory host. `confirms` records what the sessions confirmed to the control plane, `events`
 * every session event.
 */
export function clientsHarness(backend = new MemoryKernelBackend({ initial: hostBeforeRelay() })) {
  const confirms: { sessionId: string; exitId: string }[] = [];
  const events: ClientSessionEmission[] = [];
  const kernelEvents: KernelEmission[] = [];
  const observers: { sendBack: (e: { type: string; [k: string]: unknown }) => void }[] = [];
  let tornDown = false;
  const reconcile = reconcileWith(backend);
  const kernel = kernelMachine.provide({
    actions: { emit: (_, ems) => void kernelEvents.push(...ems) },
    actors: {
      reconcile: fromPromise(async ({ input: i }) => reconcile(i)),
      observer: fromCallback<ObserverEvent, Record<string, never>>(({ sendBack }) => {
        observers.push({ sendBack });
        return () => {};
      }),
    },
  });
  const clients = clientsMachine.provide({
    actors: {
      clientSession: clientSessionMachine.provide({
        actions: {
          emit: (_, e) => void events.push(e),
          confirm: (_, p) => void confirms.push(p),
        },
      }),
    },
  });
  const root = setup({
    types: {
      events: {} as
        | { type: 'VIEW'; view: TopologyView; cause: string | null }
        | { type: 'TEARDOWN'; cause: string | null }
        | { type: 'MESH_TORN_DOWN' }
        | { type: 'CLIENTS_TORN_DOWN' },
    },
    actors: { kernel, topology: topologyMachine, clients },
  }).createMachine({
    invoke: [
      { id: 'kernel', systemId: 'kernel', src: 'kernel' },
      { id: 'topology', src: 'topology', input: topologyInput },
      { id: 'clients', src: 'clients', input: clientsInput },
    ],
    on: {
      VIEW: { actions: [sendTo('topology', ({ event }) => event), sendTo('clients', ({ event }) => event)] },
      TEARDOWN: { actions: [sendTo('topology', ({ event }) => event), sendTo('clients', ({ event }) => event)] },
      CLIENTS_TORN_DOWN: {
        actions: () => {
          tornDown = true;
        },
      },
    },
  });
  const actor = createActor(root).start();
  const kernelRef = () => actor.getSnapshot().children.kernel as AnyActorRef;
  const clientsRef = () => actor.getSnapshot().children.clients as AnyActorRef;
  const sessions = (): Record<string, ClientSessionActor> =>
    Object.fromEntries(clientsRef().getSnapshot().context.actors as ReadonlyMap<string, ClientSessionActor>);
  const stateOf = (id: string) => sessions()[id]?.getSnapshot().value ?? null;
  /** Let the actors settle: the kernel idle and no message pending (bounded). */
  const idle = async (withinMs = 5_000) => {
    const deadline = Date.now() + withinMs;
    let quiet = 0;
    while (Date.now() < deadline) {
      await new Promise((r) => setImmediate(r));
      quiet = kernelRef().getSnapshot().value === 'idle' ? quiet + 1 : 0;
      if (quiet >= 3) return;
    }
    throw new Error(`kernel not idle: ${JSON.stringify(kernelRef().getSnapshot().value)}`);
  };
  let revision = 0;
  const view = async (relays: RelayRecord[], open: ClientSession[] = []) => {
    actor.send({ type: 'VIEW', view: seedTopology(++revision, relays, open), cause: `view-${revision}` });
    await idle();
  };
  const observe = async (nowMs: number) => {
    const observations = await backend.observe(['rc1c', 'rc1cp']);
    for (const o of observers) o.sendBack({ type: 'OBSERVED', observations, nowMs });
    await idle();
  };
  const teardown = async () => {
    actor.send({ type: 'TEARDOWN', cause: 'drain' });
    await idle();
  };
  return { actor, backend, view, observe, teardown, sessions, stateOf, confirms, events, kernelEvents, tornDown: () => tornDown };
}
