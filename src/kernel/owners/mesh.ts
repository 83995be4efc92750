import type { RelayRecord } from '../../contract/topology.events.ts';
import type { TopologyView } from '../../events/topology.fold.ts';
import { retainResolutions, type Resolutions } from '../endpoint-resolution.ts';
import type { DesiredHostState, DesiredWgDevice, WgDeviceState } from '../host-state.ts';
import { desiredMeshState, meshScope, patchedMeshState, type MeshOptions } from '../mesh.ts';
import type { KernelOwner, OwnerState } from './owner.ts';
import { MapWithout, orderedChangesBetween } from '../../lib/map-delta.ts';

/**
 * The mesh owner (the topology actor, src/actors/topology.machine.ts): one link device per other
 * relay of the view (src/kernel/mesh.ts), or nothing once tearing down.
 */

export interface MeshOwnerState extends OwnerState {
  self: RelayRecord | null;
  /** The other relays of the view, by id: this relay's link peers (a Map: see TopologyView.relays). */
  peers: ReadonlyMap<string, RelayRecord>;
  /** What the peers' endpoint names resolved to (or why not), by peer id. */
  resolved: Resolutions;
}

/** A link as the owner judges it: its device and the peer it carries. */
export interface MeshMember {
  device: string;
  peer: RelayRecord;
}

export const initialMeshState = (selfId: string): MeshOwnerState => ({ selfId, tearingDown: false, self: null, peers: new Map(), resolved: {} });

/**
 * The other relays of a view: this relay's link peers, by id. A view of the relays Map without this
 * relay (no copy: map-delta.ts), the same object for the same relays.
 */
export function meshPeers(view: TopologyView, selfId: string): ReadonlyMap<string, RelayRecord> {
  return MapWithout.of(view.relays, selfId);
}

/** What a tearing-down relay desires of its mesh scope: nothing. */
export const releasedMeshState = (): DesiredHostState => ({ devices: new Map(), routes: [], rules: [], sysctls: {}, nftTables: {}, portMaps: [] });

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

/**
 * The desired mesh of a state, remembered per peers Map for the last (self, resolutions, options) seen
 * with it: the actor asks for it when it sends DESIRED and again for each kernel answer, and a state's
 * parts are replaced, never changed in place, so the same objects mean the same mesh (O(N) once, not
 * per answer). Keyed by the peers Map, not one slot for the module: the relays of a fleet hosted in
 * one process (bench:fleet) would otherwise take the slot from each other and build it again.
 *
 * A new peers Map is patched from the last mesh built for the same self record (`lastOfSelf`), in
 * O(changed): a join or a leave does not rebuild a thousand links (src/kernel/mesh.ts, patchedMeshState).
 */
interface BuiltMesh {
  peers: MeshOwnerState['peers'];
  self: RelayRecord;
  resolved: Resolutions;
  o: MeshOptions;
  state: DesiredHostState;
}
const lastMesh = new WeakMap<MeshOwnerState['peers'], BuiltMesh>();
const lastOfSelf = new WeakMap<RelayRecord, BuiltMesh>();
function desiredMesh(s: MeshOwnerState, o: MeshOptions): DesiredHostState {
  const self = s.self!;
  const last = lastMesh.get(s.peers);
  if (last && last.self === self && last.resolved === s.resolved && last.o === o) return last.state;
  const prev = lastOfSelf.get(self);
  const change = prev && prev.resolved === s.resolved && prev.o === o ? orderedChangesBetween(prev.peers, s.peers) : null;
  const state =
    (prev && change && patchedMeshState(prev.state, prev.peers, change, self, s.peers, o, s.resolved)) ??
    desiredMeshState(self, s.peers.values(), o, s.resolved);
  const built = { peers: s.peers, self, resolved: s.resolved, o, state };
  lastMesh.set(s.peers, built);
  lastOfSelf.set(self, built);
  return state;
}

/**
 * The mesh owner. `reached` gives, per link, whether it is configured: a live link when its device is
 * exactly as desired; a leaving one (its peer no longer in the state) while its device still carries
 * its peer (a relay that reuses the freed mesh address gets a device of the same name, with another peer).
 */
export const meshOwner: KernelOwner<MeshOwnerState, MeshOptions, MeshMember, boolean> = {
  owner: 'mesh',
  view: (s, { view }) => {
    const self = view.relays.get(s.selfId)!;
    const peers = meshPeers(view, self.id);
    return { ...s, self, peers, resolved: retainResolutions(s.resolved, peers) };
  },
  teardown: (s) => ({ ...s, tearingDown: true, peers: new Map() }),
  scope: (s, o) => meshScope(o.wgPrefix, s.self!),
  desire: (s, o) => (s.tearingDown ? releasedMeshState() : desiredMesh(s, o)),
  reached: (s, o, actual, links) => {
    const desired = s.self ? meshOwner.desire(s, o).devices : new Map<string, DesiredWgDevice>();
    return {
      members: links.map(({ device, peer }) =>
        s.peers.has(peer.id)
          ? deviceMatches(actual.devices.get(device), desired.get(device))
          : (actual.devices.get(device)?.peers.some((p) => p.publicKey === peer.publicKey) ?? false),
      ),
      tornDown: s.tearingDown && actual.devices.size === 0,
    };
  },
};
