import { assign, createActor, fromCallback, fromPromise, sendTo, setup, type AnyActorRef } from 'xstate';
import type { PeerLinkActor } from '../../src/actors/peer-link.machine.ts';
import {
  topologyMachine,
  type PeerEndpointResolvedEmission,
  type ResolvedEvent,
  type ResolverEvent,
  type TopologyInput,
} from '../../src/actors/topology.machine.ts';
import type { ResolveTarget } from '../../src/kernel/endpoint-resolution.ts';
import { seedTopology, type TopologyView } from '../../src/events/topology.fold.ts';
import type { RelayRecord } from '../../src/contract/topology.events.ts';
import { kernelMachine, observedDevices, type KernelEmission, type ObserverEvent } from '../../src/kernel/kernel.machine.ts';
import { MemoryKernelBackend } from '../../src/kernel/memory-backend.ts';
import { reconcileWith } from '../../src/kernel/reconcile.ts';
import { systemDeps } from '../../src/lib/deps.ts';

export const meshHarnessInput: TopologyInput = {
  selfId: 'relay-1',
  mesh: { wgPrefix: 'rc', keepaliveSeconds: 25, mtu: 1420, privateKeyFile: '/state/wg.key', exitTableBase: 100_000, clientPrefix6: null },
  timing: { staleAfterMs: 5_000, downAfterMs: 10_000 },
  deps: systemDeps,
};

/**
 * The topology and kernel actors of relay-1 as the relay actor runs them, on the in-memory host (tests,
 * benchmarks). The resolver is a fake: `resolver.targets` is what it was last told to resolve, and
 * `resolve(...)` reports a lookup's outcome as the real one would. `log` has every event the actors
 * emitted, in order.
 */
export function meshHarness(backend = new MemoryKernelBackend()) {
  const observers: { sendBack: (e: { type: string; [k: string]: unknown }) => void; devices: string[] }[] = [];
  const emitted: KernelEmission[] = [];
  const log: (KernelEmission | PeerEndpointResolvedEmission)[] = [];
  const resolver = { targets: [] as ResolveTarget[], sendBack: null as ((e: ResolvedEvent) => void) | null };
  const reconcile = reconcileWith(backend);
  const kernel = kernelMachine.provide({
    actions: {
      emit: (_, ems) => {
        emitted.push(...ems);
        log.push(...ems);
      },
    },
    actors: {
      reconcile: fromPromise(async ({ input: i }) => reconcile(i)),
      observer: fromCallback<ObserverEvent, Record<string, never>>(({ sendBack, receive }) => {
        const o = { sendBack, devices: [] as string[] };
        receive((e) => (o.devices = observedDevices(e)));
        observers.push(o);
        return () => {};
      }),
    },
  });
  const root = setup({
    types: {
      context: {} as { tornDown: boolean },
      events: {} as { type: 'VIEW'; view: TopologyView; cause: string | null } | { type: 'TEARDOWN'; cause: string | null } | { type: 'MESH_TORN_DOWN' },
    },
    actors: {
      kernel,
      topology: topologyMachine.provide({
        actions: { emit: (_, e) => void log.push(e) },
        actors: {
          resolver: fromCallback<ResolverEvent, Record<string, never>>(({ sendBack, receive }) => {
            resolver.sendBack = sendBack as (e: ResolvedEvent) => void;
            receive((e) => (resolver.targets = e.targets));
            return () => {};
          }),
        },
      }),
    },
  }).createMachine({
    context: { tornDown: false },
    invoke: [
      { id: 'kernel', systemId: 'kernel', src: 'kernel' },
      { id: 'topology', src: 'topology', input: meshHarnessInput },
    ],
    on: {
      VIEW: { actions: sendTo('topology', ({ event }) => event) },
      TEARDOWN: { actions: sendTo('topology', ({ event }) => event) },
      MESH_TORN_DOWN: { actions: assign({ tornDown: true }) },
    },
  });
  const actor = createActor(root).start();
  const topology = () => actor.getSnapshot().children.topology as AnyActorRef;
  const kernelRef = () => actor.getSnapshot().children.kernel as AnyActorRef;
  const links = () => topology().getSnapshot().context.links as ReadonlyMap<string, PeerLinkActor>;
  /** Wait (bounded) until the kernel actor has finished its rounds. */
  const idle = async (withinMs = 5_000) => {
    const deadline = Date.now() + withinMs;
    while (Date.now() < deadline) {
      await new Promise((r) => setImmediate(r));
      if (kernelRef().getSnapshot().value === 'idle') return;
    }
    throw new Error(`kernel not idle: ${JSON.stringify(kernelRef().getSnapshot().value)}`);
  };
  let revision = 0;
  const view = async (relays: RelayRecord[], withinMs?: number) => {
    actor.send({ type: 'VIEW', view: seedTopology(++revision, relays), cause: `view-${revision}` });
    await idle(withinMs);
  };
  const observe = (nowMs: number) => {
    for (const o of observers) o.sendBack({ type: 'OBSERVED', observations: [], nowMs });
  };
  /** The resolver reports an outcome for a peer's host (an address, or an error); then the kernel settles. */
  const resolve = async (peerId: string, host: string, address: string | null, error: string | null = address ? null : 'getaddrinfo ENOTFOUND ' + host) => {
    resolver.sendBack!({ type: 'RESOLVED', peerId, host, address, error });
    await idle();
  };
  return { actor, backend, view, links, idle, observe, observers, kernelRef, emitted, log, resolver, resolve };
}
