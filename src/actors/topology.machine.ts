import { assign, enqueueActions, fromCallback, sendParent, sendTo, setup, type AnyActorRef } from 'xstate';
import type { RelayRecord } from '../events/topology.events.ts';
import type { TopologyView } from '../events/topology.fold.ts';
import type { DesiredHostState, DesiredWgDevice, WgDeviceState } from '../kernel/host-state.ts';
import type { KernelNotice } from '../kernel/kernel.machine.ts';
import type { Deps } from '../lib/deps.ts';
import { applyResolution, resolveTargets, retainResolutions, type PeerResolution, type ResolveTarget, type Resolutions } from '../kernel/endpoint-resolution.ts';
import { desiredMeshState, linkDevice, meshIndex, meshScope, type MeshOptions } from '../kernel/mesh.ts';
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

export interface TopologyContext extends TopologyInput {
  self: RelayRecord | null;
  peers: Record<string, RelayRecord>;
  links: Record<string, PeerLinkActor>;
  /** The last mesh state asked of the kernel, to judge which links are programmed. */
  desired: Record<string, DesiredWgDevice>;
  /** Draining: the view no longer matters, every link goes. */
  tearingDown: boolean;
  /** What the peers' endpoint names resolved to (or why not), by peer id. */
  resolved: Resolutions;
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

/** The other relays of a view: this relay's link peers (replay derives the mesh desire the same way). */
export const meshPeers = (view: TopologyView, selfId: string): RelayRecord[] => Object.values(view.relays).filter((r) => r.id !== selfId);

/** What a tearing-down relay desires of its mesh scope: nothing. */
export const releasedMeshState = (): DesiredHostState => ({ devices: {}, routes: [], rules: [], sysctls: {}, nftTables: {} });
const peerChanged = (a: RelayRecord, b: RelayRecord) => a.publicKey !== b.publicKey || a.endpoint !== b.endpoint || a.meshAddress !== b.meshAddress;

/**
 * Whether the device on the host is exactly what was asked (ignoring the key file, which reads back as
 * its public key, and the endpoint of a peer desired without one: WireGuard's to learn).
 */
export function deviceMatches(actual: WgDeviceState | undefined, desired: DesiredWgDevice | undefined): boolean {
  if (!actual || !desired) return false;
  const { privateKeyFile: _f, ...want } = desired;
  const peers = want.peers.map((p) => (p.endpoint === null ? { ...p, endpoint: actual.peers.find((a) => a.publicKey === p.publicKey)?.endpoint ?? null } : p));
  return JSON.stringify(normal(actual)) === JSON.stringify(normal({ ...want, peers }));
}
const normal = (d: WgDeviceState) => ({
  ...d,
  addresses: [...d.addresses].sort(),
  peers: [...d.peers].sort((a, b) => a.publicKey.localeCompare(b.publicKey)).map((p) => ({ ...p, allowedIps: [...p.allowedIps].sort() })),
});

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
  context: ({ input }) => ({ ...input, self: null, peers: {}, links: {}, desired: {}, tearingDown: false, resolved: {} }),
  invoke: { id: 'resolver', src: 'resolver', input: {} },
  on: {
    VIEW: {
      // No mesh settings: the relay runs without links (unit tests of the relay actor alone).
      guard: ({ context, event }) => context.mesh !== undefined && !context.tearingDown && event.view.relays[context.selfId] !== undefined,
      actions: [
        // Existing links first, judged against the previous view: changed peers, leavers.
        enqueueActions(({ context, event, enqueue }) => {
          for (const [id, link] of Object.entries(context.links)) {
            const now = event.view.relays[id];
            const before = context.peers[id];
            if (!now) {
              if (before) enqueue.sendTo(link, { type: 'REMOVE' });
            } else if (!before || peerChanged(before, now)) {
              // Changed, or back while its link was still being removed: program it again.
              enqueue.sendTo(link, { type: 'PEER_CHANGED', peer: now });
            }
          }
        }),
        // Then the new view, with a link actor spawned for every joiner.
        assign(({ context, event, spawn }) => {
          const self = event.view.relays[context.selfId]!;
          const ownIndex = meshIndex(self.meshAddress);
          const peers = Object.fromEntries(meshPeers(event.view, self.id).map((r) => [r.id, r]));
          const links = { ...context.links };
          for (const p of Object.values(peers)) {
            if (links[p.id]) continue;
            const device = linkDevice(context.mesh.wgPrefix, ownIndex, meshIndex(p.meshAddress));
            links[p.id] = spawn('peerLink', { id: linkId(p.id), input: { peer: p, device, ...context.timing } });
          }
          const resolved = retainResolutions(context.resolved, Object.values(peers));
          return { self, peers, links, resolved, desired: desiredMeshState(self, Object.values(peers), context.mesh, resolved).devices };
        }),
        sendTo(kernelRef, ({ context, event, self: me }) => ({
          type: 'DESIRED',
          owner: 'mesh',
          scope: meshScope(context.mesh.wgPrefix, context.self!),
          state: desiredMeshState(context.self!, Object.values(context.peers), context.mesh, context.resolved),
          cause: event.cause,
          replyTo: me,
        })),
        sendTo('resolver', ({ context }) => ({ type: 'TARGETS', targets: resolveTargets(Object.values(context.peers)) }) satisfies ResolverEvent),
      ],
    },
    RESOLVED: {
      guard: ({ context }) => context.self !== null && !context.tearingDown,
      actions: enqueueActions(({ context, event, enqueue }) => {
        const { type: _t, ...result } = event;
        const r = applyResolution(context.resolved, context.peers, result);
        if (!r.recorded) return;
        const id = context.deps.newId();
        const desired = desiredMeshState(context.self!, Object.values(context.peers), context.mesh, r.resolutions);
        enqueue.assign({ resolved: r.resolutions, desired: desired.devices });
        enqueue({ type: 'emit', params: { type: 'PeerEndpointResolved', id, data: result } });
        if (r.desiredChanged) {
          enqueue.sendTo(kernelRef, ({ self: me }) => ({ type: 'DESIRED', owner: 'mesh', scope: meshScope(context.mesh.wgPrefix, context.self!), state: desired, cause: id, replyTo: me }));
        }
      }),
    },
    TEARDOWN: {
      guard: ({ context }) => context.self !== null,
      actions: enqueueActions(({ context, event, enqueue }) => {
        for (const l of Object.values(context.links)) enqueue.sendTo(l, { type: 'REMOVE' });
        enqueue.assign({ tearingDown: true, peers: {}, desired: {} });
        enqueue.sendTo('resolver', { type: 'TARGETS', targets: [] } satisfies ResolverEvent);
        enqueue.sendTo(kernelRef, ({ self: me }) => ({ type: 'DESIRED', owner: 'mesh', scope: meshScope(context.mesh.wgPrefix, context.self!), state: releasedMeshState(), cause: event.cause, replyTo: me }));
      }),
    },
    KERNEL_APPLYING: {
      actions: enqueueActions(({ context, enqueue }) => {
        for (const l of Object.values(context.links)) enqueue.sendTo(l, { type: 'KERNEL_APPLYING' });
      }),
    },
    KERNEL_REACHED: {
      actions: enqueueActions(({ context, event, enqueue }) => {
        for (const l of Object.values(context.links)) {
          const { device, peer } = l.getSnapshot().context;
          const removing = !context.peers[peer.id];
          // A leaving link is "configured" while its device still carries its peer (a relay that
          // reuses the freed mesh address gets a device of the same name, with another peer);
          // a live link when its device is exactly as desired.
          const configured = removing
            ? (event.actual.devices[device]?.peers.some((p) => p.publicKey === peer.publicKey) ?? false)
            : deviceMatches(event.actual.devices[device], context.desired[device]);
          enqueue.sendTo(l, { type: 'KERNEL_REACHED', configured, nowMs: event.nowMs });
        }
        if (context.tearingDown && Object.keys(event.actual.devices).length === 0) enqueue(sendParent({ type: 'MESH_TORN_DOWN' } satisfies MeshTornDown));
      }),
    },
    KERNEL_OBSERVED: {
      actions: enqueueActions(({ context, event, enqueue }) => {
        for (const l of Object.values(context.links)) {
          const { device, peer } = l.getSnapshot().context;
          const observation = event.observations.find((o) => o.dev === device && o.publicKey === peer.publicKey) ?? null;
          enqueue.sendTo(l, { type: 'OBSERVED', observation, nowMs: event.nowMs });
        }
      }),
    },
    // A link actor finished (its device is gone): stop it and forget it, unless its peer came back.
    'xstate.done.actor.*': {
      actions: enqueueActions(({ context, event, enqueue }) => {
        const peerId = event.output.peerId;
        enqueue.stopChild(linkId(peerId));
        const { [peerId]: _gone, ...links } = context.links;
        enqueue.assign({ links });
      }),
    },
  },
});

