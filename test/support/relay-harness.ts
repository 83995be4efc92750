import { createActor, fromCallback, fromPromise, type Actor } from 'xstate';
import { clientSessionMachine } from '../../src/actors/client-session.machine.ts';
import { clientsMachine } from '../../src/actors/clients.machine.ts';
import { peerLinkMachine, type LinkTiming } from '../../src/actors/peer-link.machine.ts';
import { relayMachine, type FollowCommand, type RelayMachineEvent, type RegisterResponse } from '../../src/actors/relay.machine.ts';
import { topologyMachine, type ResolvedEvent, type ResolverEvent } from '../../src/actors/topology.machine.ts';
import type { RelayRecord } from '../../src/contract/topology.events.ts';
import { kernelMachine, type ObserverEvent } from '../../src/kernel/kernel.machine.ts';
import { MemoryKernelBackend } from '../../src/kernel/memory-backend.ts';
import { reconcileWith } from '../../src/kernel/reconcile.ts';
import type { Deps } from '../../src/lib/deps.ts';
import { clientsInput, topologyInput } from './clients-harness.ts';

/**
 * The relay actor with all its children (topology, peer links, clients, sessions, kernel actor) on the
 * in-memory host, its control plane and bus faked: `register` answers `registration`, the follow actor
 * hands its `sendBack` to the caller (`follow()`: feed it `TOPOLOGY_EVENT`s), heartbeats do nothing.
 * Every emission of every actor goes to `emit`, in order. `resolve`: what the resolver answers a
 * target (default: nothing).
 */
export function relayOnMemoryHost(opts: {
  self: RelayRecord;
  registration: RegisterResponse;
  deps: Deps;
  emit: (e: unknown) => void;
  resolve?: (target: { peerId: string; host: string }) => Omit<ResolvedEvent, 'type' | 'peerId' | 'host'> | null;
  timing?: LinkTiming;
  deregisteredAt?: number;
}): { actor: Actor<typeof relayMachine>; backend: MemoryKernelBackend; follow: () => ((e: RelayMachineEvent) => void) | null } {
  const record = (_: unknown, e: unknown) => opts.emit(e);
  const backend = new MemoryKernelBackend();
  const reconcile = reconcileWith(backend, opts.deps.now);
  let follow: ((e: RelayMachineEvent) => void) | null = null;
  const machine = relayMachine.provide({
    actors: {
      register: fromPromise(async () => opts.registration),
      follow: fromCallback<FollowCommand, { registration: RegisterResponse }>(({ sendBack }) => {
        follow = sendBack;
        return () => {};
      }),
      heartbeat: fromCallback(() => () => {}),
      deregister: fromPromise(async () => ({ revision: opts.deregisteredAt ?? 0 })),
      kernel: kernelMachine.provide({
        actors: {
          reconcile: fromPromise(async ({ input }) => reconcile(input)),
          observer: fromCallback<ObserverEvent, Record<string, never>>(() => () => {}),
        },
        actions: {
          emit: (_, ems) => {
            for (const e of ems) opts.emit(e);
          },
        },
      }),
      topology: topologyMachine.provide({
        actions: { emit: record },
        actors: {
          peerLink: peerLinkMachine.provide({ actions: { emit: record } }),
          resolver: fromCallback<ResolverEvent, Record<string, never>>(({ sendBack, receive }) => {
            receive((e) => {
              for (const t of e.targets) {
                const r = opts.resolve?.(t);
                if (r) sendBack({ type: 'RESOLVED', peerId: t.peerId, host: t.host, ...r });
              }
            });
            return () => {};
          }),
        },
      }),
      clients: clientsMachine.provide({ actors: { clientSession: clientSessionMachine.provide({ actions: { emit: record, confirm: () => {} } }) } }),
    },
    actions: { emit: record, reportFatal: () => {} },
  });
  const { deps: _d, ...clientsOptions } = clientsInput;
  const self = opts.self;
  const actor = createActor(machine, {
    input: {
      request: { relayId: self.id, name: self.name, region: self.region, publicKey: self.publicKey, endpoint: self.endpoint },
      links: {
        mesh: topologyInput.mesh,
        timing: opts.timing ?? topologyInput.timing,
        clients: { options: clientsOptions.clients, idleAfterMs: clientsOptions.idleAfterMs, originalSysctls: clientsOptions.originalSysctls },
      },
      deps: opts.deps,
    },
  });
  return { actor, backend, follow: () => follow };
}
