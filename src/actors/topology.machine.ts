import { enqueueActions, fromCallback, sendParent, sendTo, setup, type AnyActorRef } from 'xstate';
import type { RelayRecord } from '../contract/topology.events.ts';
import type { TopologyView } from '../events/topology.fold.ts';
import type { KernelNotice } from '../kernel/kernel.machine.ts';
import { observationIndex } from '../kernel/observations.ts';
import { applyResolution, patchedTargets, resolveTargets, type PeerResolution, type ResolveTarget } from '../kernel/endpoint-resolution.ts';
import { linkDevice, meshIndex, type MeshOptions } from '../kernel/mesh.ts';
import { meshOwner, type MeshOwnerState } from '../kernel/owners/mesh.ts';
import { desiredEvent, takesView } from '../kernel/owners/owner.ts';
import type { Deps } from '../lib/deps.ts';
import { keysChangedBetween } from '../lib/map-delta.ts';
import { keptChild, providedLogic } from './kept-children.ts';
import { peerLinkMachine, type LinkRemoved, type LinkTiming, type PeerLinkActor } from './peer-link.machine.ts';

/**
 * The topology actor: turns the relay's view of the membership (folded by the relay actor from the
 * snapshot and the stream) into links. It keeps exactly one peer-link actor per other relay in the
 * view, spawning one on a join and removing it on a leave, and sends the kernel actor the mesh part
 * of the host that the view implies. It relays the kernel's answers to the links, each learning
 * whether its own device is programmed and what the device reports. It survives resyncs: the data
 * plane does not wait for the control plane.
 *
 * Peer endpoints given as DNS names are resolved by the `resolver` actor (the shell provides it: DNS
 * is the world). The topology actor tells it which peers have names on every view and folds what it
 * reports: a changed address is a `PeerEndpointResolved` event and a new desired mesh state caused by
 * it; an unchanged one is nothing (docs/datapath.md, "Names").
 */

export interface TopologyInput {
  selfId: string;
  mesh: MeshOptions;
  timing: LinkTiming;
  /** The source of the ids of its `PeerEndpointResolved` events. */
  deps: Deps;
}

/** The mesh owner's state (src/kernel/owners/mesh.ts: what it desires of the kernel) and the link actors. */
export interface TopologyContext extends TopologyInput, MeshOwnerState {
  /**
   * The link actors by peer id. The actor's own and changed in place (never handed out to be kept): a
   * copy of a thousand entries on every join and leave was a tenth of a relay's work per event.
   */
  links: Map<string, PeerLinkActor>;
  /**
   * The peers whose links may wait for the kernel (desired, configuring, removing): a link gets there
   * only by what this actor sends it (spawned, PEER_CHANGED, REMOVE), and leaves by the kernel's
   * answers. The kernel's rounds are told to these alone; the others are dropped from the set as the
   * rounds find them past waiting. Changed in place, like `links`.
   */
  waiting: Set<string>;
  /** What the resolver was last told to resolve: the peers whose endpoints are names. */
  targets: readonly ResolveTarget[];
}

/** What the resolver reports: one lookup's outcome for a peer's endpoint host. */
export type ResolvedEvent = { type: 'RESOLVED'; peerId: string } & PeerResolution;
/** What the resolver is told on every view: the peers whose endpoints are names (an empty list: none). */
export type ResolverEvent = { type: 'TARGETS'; targets: ResolveTarget[] };

/** A resolution that changed what the relay knows: published as a `PeerEndpointResolved` relay event. */
export interface PeerEndpointResolvedEmission {
  type: 'PeerEndpointResolved';
  id: string;
  data: { peerId: string } & PeerResolution;
}

/** `cause`: the id of the relay event that changed the view (or began the teardown), passed to the kernel. */
export type TopologyEvent =
  | { type: 'VIEW'; view: TopologyView; cause: string | null }
  | { type: 'TEARDOWN'; cause: string | null }
  | { type: `xstate.done.actor.${string}`; output: LinkRemoved }
  | ResolvedEvent
  | KernelNotice;

/** Sent to the parent once a teardown has left no mesh device on the host. */
export interface MeshTornDown {
  type: 'MESH_TORN_DOWN';
}

const linkId = (peerId: string) => `link-${peerId}`;

/** The link states a kernel round can move (peer-link.machine.ts): programming, or removing. */
const WAITING_FOR_KERNEL = new Set<unknown>(['desired', 'configuring', 'removing']);

const peerChanged = (a: RelayRecord, b: RelayRecord) => a.publicKey !== b.publicKey || a.endpoint !== b.endpoint || a.meshAddress !== b.meshAddress;

/** The kernel actor, found by its system id. */
const kernelRef = ({ system }: { system: { get: (id: string) => AnyActorRef | undefined } }) => system.get('kernel')!;

export const topologyMachine = setup({
  types: {
    context: {} as TopologyContext,
    events: {} as TopologyEvent,
    input: {} as TopologyInput,
  },
  actors: {
    peerLink: peerLinkMachine,
    // Provided by the shell (DNS lookups on a timer); without it names stay unresolved.
    resolver: fromCallback<ResolverEvent, Record<string, never>>(() => () => {}),
  },
  actions: {
    /** Provided by the shell: publish the event. */
    emit: (_, _params: PeerEndpointResolvedEmission) => {},
  },
}).createMachine({
  id: 'topology',
  context: ({ input }) => ({ ...input, self: null, peers: new Map(), links: new Map(), waiting: new Set(), targets: [], tearingDown: false, resolved: {} }),
  invoke: { id: 'resolver', src: 'resolver', input: {} },
  on: {
    VIEW: {
      // No mesh settings: the relay runs without links (unit tests of the relay actor alone).
      guard: ({ context, event }) => context.mesh !== undefined && takesView(context, event.view),
      actions: [
        // The links, judged against the previous view: changed peers, leavers, joiners (a link actor
        // each: a kept child, kept-children.ts, in the links Map alone, so that a join or leave does not
        // copy xstate's children record). Only the peers that changed are looked at (map-delta.ts). A
        // view with the same relays (a session's event) changes no link.
        enqueueActions(({ context, event, enqueue, self }) => {
          const next = meshOwner.view(context, event);
          let targets = context.targets;
          if (next.peers !== context.peers) {
            const known = keysChangedBetween(context.peers, next.peers);
            const ids = known ?? new Set([...context.links.keys(), ...next.peers.keys()]);
            targets = known ? patchedTargets(context.targets, next.peers, known) : resolveTargets(next.peers.values());
            const ownIndex = meshIndex(next.self!.meshAddress);
            const logic = providedLogic<typeof peerLinkMachine>(self, 'peerLink');
            for (const id of ids) {
              const link = context.links.get(id);
              const now = next.peers.get(id);
              const before = context.peers.get(id);
              if (link) {
                if (!now) {
                  if (!before) continue;
                  enqueue.sendTo(link, { type: 'REMOVE' });
                } else if (!before || peerChanged(before, now)) {
                  // Changed, or back while its link was still being removed: program it again.
                  enqueue.sendTo(link, { type: 'PEER_CHANGED', peer: now });
                } else continue;
                context.waiting.add(id);
              } else if (now) {
                const device = linkDevice(context.mesh.wgPrefix, ownIndex, meshIndex(now.meshAddress));
                const created = keptChild(self, logic, linkId(now.id), { peer: now, device, ...context.timing });
                context.links.set(now.id, created);
                context.waiting.add(now.id);
                enqueue(() => created.start());
              }
            }
          }
          enqueue.assign(() => ({ ...next, targets }));
          // The resolver hears of a change of its targets only (a join of a peer with an address changes none).
          if (targets !== context.targets) enqueue.sendTo('resolver', { type: 'TARGETS', targets: [...targets] } satisfies ResolverEvent);
        }),
        sendTo(kernelRef, ({ context, event, self: me }) => desiredEvent(meshOwner, context, context.mesh, event.cause, me)),
      ],
    },
    RESOLVED: {
      guard: ({ context }) => context.self !== null && !context.tearingDown,
      actions: enqueueActions(({ context, event, enqueue }) => {
        const { type: _t, ...result } = event;
        const r = applyResolution(context.resolved, context.peers, result);
        if (!r.recorded) return;
        const id = context.deps.newId();
        const next = { ...context, resolved: r.resolutions };
        enqueue.assign({ resolved: r.resolutions });
        enqueue({ type: 'emit', params: { type: 'PeerEndpointResolved', id, data: result } });
        if (r.desiredChanged) enqueue.sendTo(kernelRef, ({ self: me }) => desiredEvent(meshOwner, next, context.mesh, id, me));
      }),
    },
    TEARDOWN: {
      guard: ({ context }) => context.self !== null,
      actions: enqueueActions(({ context, event, enqueue }) => {
        for (const [id, l] of context.links) {
          enqueue.sendTo(l, { type: 'REMOVE' });
          context.waiting.add(id);
        }
        const next = meshOwner.teardown(context);
        enqueue.assign({ tearingDown: next.tearingDown, peers: next.peers, targets: [] });
        enqueue.sendTo('resolver', { type: 'TARGETS', targets: [] } satisfies ResolverEvent);
        enqueue.sendTo(kernelRef, ({ self: me }) => desiredEvent(meshOwner, next, context.mesh, event.cause, me));
      }),
    },
    // Only links that wait for the kernel hear of its rounds: a configured link's state follows its
    // observations alone, so a round costs messages for what it changed, not for every link.
    KERNEL_APPLYING: {
      actions: enqueueActions(({ context, enqueue }) => {
        for (const id of context.waiting) {
          const l = context.links.get(id);
          if (l?.getSnapshot().value === 'desired') enqueue.sendTo(l, { type: 'KERNEL_APPLYING' });
        }
      }),
    },
    KERNEL_REACHED: {
      actions: enqueueActions(({ context, event, enqueue }) => {
        const links: PeerLinkActor[] = [];
        for (const id of context.waiting) {
          const l = context.links.get(id);
          if (l && WAITING_FOR_KERNEL.has(l.getSnapshot().value)) links.push(l);
          else context.waiting.delete(id);
        }
        const r = meshOwner.reached(
          context,
          context.mesh,
          event.actual,
          links.map((l) => l.getSnapshot().context),
        );
        for (const [i, l] of links.entries()) enqueue.sendTo(l, { type: 'KERNEL_REACHED', configured: r.members[i]!, nowMs: event.nowMs });
        if (r.tornDown) enqueue(sendParent({ type: 'MESH_TORN_DOWN' } satisfies MeshTornDown));
      }),
    },
    KERNEL_OBSERVED: {
      actions: enqueueActions(({ context, event, enqueue }) => {
        const seen = observationIndex(event.observations);
        for (const [id, l] of context.links) {
          const snap = l.getSnapshot();
          // A belt to the braces of `waiting`: the observer's walk over every link finds one that waits.
          if (WAITING_FOR_KERNEL.has(snap.value)) context.waiting.add(id);
          const { device, peer } = snap.context;
          enqueue.sendTo(l, { type: 'OBSERVED', observation: seen.get(`${device} ${peer.publicKey}`) ?? null, nowMs: event.nowMs });
        }
      }),
    },
    // A link actor finished (its device is gone; done, it has stopped itself): forget it.
    'xstate.done.actor.*': {
      actions: enqueueActions(({ context, event }) => {
        context.links.delete(event.output.peerId);
        context.waiting.delete(event.output.peerId);
      }),
    },
  },
});
