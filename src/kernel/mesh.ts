import type { RelayRecord } from '../contract/topology.events.ts';
import { parseEndpoint, parseIpv4 } from '../contract/topology.events.ts';
import { embedCidr6 } from './ipv6.ts';
import { formatEndpoint, resolvedHost, type Resolutions } from './endpoint-resolution.ts';
import { MAIN_TABLE, type DesiredHostState, type DesiredWgDevice, type KernelScope, type RouteState } from './host-state.ts';
import { derivedMap, type OrderedChanges } from '../lib/map-delta.ts';

/**
 * The mesh's data-path layout (docs/datapath.md), as pure functions of the topology.
 *
 * WireGuard picks the peer of an outgoing packet by destination alone, so one interface can default-
 * route to one peer only. To let each client pick its exit, every mesh link is its own point-to-point
 * WireGuard device with a single peer whose allowed-ips are 0.0.0.0/0 (and ::/0 with client IPv6): a
 * policy table per exit can then default-route into that exit's device. Names, ports and addresses all derive from the relays'
 * mesh indexes (the offset of a mesh address in 100.64.0.0/16), so both ends agree without talking.
 */

export const MESH_BASE = parseIpv4('100.64.0.0')!;
export const MESH_SIZE = 1 << 16;
export const WG_PREFIX_RE = /^[a-z]{1,3}$/;

export interface MeshOptions {
  /** 1-3 lowercase letters; distinct per relay on a machine shared by several (simulations). */
  wgPrefix: string;
  keepaliveSeconds: number;
  mtu: number;
  /** The relay's WireGuard private key file (mode 0600), handed to `wg set ... private-key`. */
  privateKeyFile: string;
  /** Each link also default-routes its table `exitTableBase + peer index`: the exit table clients are steered to. */
  exitTableBase: number;
  /**
   * The clients' IPv6 /96 (src/kernel/ipv6.ts), or null: links then carry IPv4 only. With it, each link
   * also routes the peer's IPv6 pool, and the exit table gets `::/0` when the peer exits IPv6.
   */
  clientPrefix6: string | null;
}

/** The offset of a mesh address in 100.64.0.0/16 (1 for 100.64.0.1). Throws outside the range. */
export function meshIndex(meshAddress: string): number {
  const n = parseIpv4(meshAddress);
  if (n === null || n - MESH_BASE <= 0 || n - MESH_BASE >= MESH_SIZE - 1) throw new Error(`mesh address ${meshAddress} is not a host of 100.64.0.0/16`);
  return n - MESH_BASE;
}

/** The device prefix a relay owns: every link device of relay `own` starts with it. */
export const meshDevicePrefix = (wgPrefix: string, ownIndex: number) => `${wgPrefix}${ownIndex}m`;

/** The device carrying the link from relay `ownIndex` to relay `peerIndex` (at most 15 characters). */
export const linkDevice = (wgPrefix: string, ownIndex: number, peerIndex: number) => `${meshDevicePrefix(wgPrefix, ownIndex)}${peerIndex}`;

/**
 * The UDP port relay `own` listens on for its link to `peer`: its endpoint's port plus the peer's
 * index. A relay thus uses ports base+1 .. base+N on its public address (the firewall must allow them).
 */
export function linkListenPort(ownEndpoint: string, peerIndex: number): number {
  const ep = parseEndpoint(ownEndpoint);
  if (!ep) throw new Error(`bad endpoint ${ownEndpoint}`);
  const port = ep.port + peerIndex;
  if (port > 65535) throw new Error(`link port ${ep.port}+${peerIndex} exceeds 65535: lower the endpoint port of this relay`);
  return port;
}

/**
 * Where to reach `peer` for its link to relay `ownIndex`: the peer's host at its base port plus our
 * index. A host given as a name is programmed as the address it resolved to (`resolutions`); while it
 * has none, null: WireGuard keeps the endpoint it has, answers the peer's own handshakes and learns
 * its endpoint from them (roaming). Never a name: `wg` would resolve it on every round, or fail.
 */
export function linkPeerEndpoint(peer: RelayRecord, ownIndex: number, resolutions: Resolutions = {}): string | null {
  const ep = parseEndpoint(peer.endpoint);
  if (!ep) throw new Error(`bad endpoint ${peer.endpoint} of relay ${peer.id}`);
  const host = resolvedHost(peer, resolutions);
  return host === null ? null : formatEndpoint(host, ep.port + ownIndex);
}

export function meshScope(wgPrefix: string, self: RelayRecord): KernelScope {
  // Mesh links own no policy rules; client steering (per-exit tables) uses its own range.
  return { devicePrefix: meshDevicePrefix(wgPrefix, meshIndex(self.meshAddress)), rulePriorities: [0, -1], sysctls: [], nftTables: [] };
}

/**
 * One link's device and routes: our mesh address on it, the peer's mesh address and client pool
 * through it, and its exit table. `resolutions`: the addresses the peers' endpoint names resolved to.
 */
export function linkState(
  self: RelayRecord,
  peer: RelayRecord,
  opts: MeshOptions,
  resolutions: Resolutions = {},
): { device: DesiredWgDevice; routes: RouteState[] } {
  const own = meshIndex(self.meshAddress);
  const peerIdx = meshIndex(peer.meshAddress);
  const dev = linkDevice(opts.wgPrefix, own, peerIdx);
  const v6 = opts.clientPrefix6;
  return {
    device: {
      name: dev,
      publicKey: self.publicKey,
      privateKeyFile: opts.privateKeyFile,
      listenPort: linkListenPort(self.endpoint, peerIdx),
      mtu: opts.mtu,
      addresses: [`${self.meshAddress}/32`],
      up: true,
      peers: [
        {
          publicKey: peer.publicKey,
          endpoint: linkPeerEndpoint(peer, own, resolutions),
          allowedIps: v6 ? ['0.0.0.0/0', '::/0'] : ['0.0.0.0/0'],
          keepaliveSeconds: opts.keepaliveSeconds,
        },
      ],
    },
    routes: [
      { dst: `${peer.meshAddress}/32`, dev, table: MAIN_TABLE, src: self.meshAddress },
      { dst: peer.clientPool, dev, table: MAIN_TABLE, src: null },
      // The exit table of this peer: client rules on the entry look it up (src/kernel/clients.ts).
      { dst: '0.0.0.0/0', dev, table: opts.exitTableBase + peerIdx, src: null },
      ...(v6 ? [{ dst: embedCidr6(v6, peer.clientPool), dev, table: MAIN_TABLE, src: null }] : []),
      // A peer that has no IPv6 to exit to gets no IPv6 route: its clients' IPv6 falls through to the
      // entry's fail-closed rule and is refused there at once (ICMPv6 unreachable).
      ...(v6 && peer.exitIpv6 === true ? [{ dst: '::/0', dev, table: opts.exitTableBase + peerIdx, src: null }] : []),
    ],
  };
}

/**
 * The links already built, per peer record: a view replaces only the records that changed, so an
 * unchanged peer keeps the very objects of its link and a round's focus (src/kernel/focus.ts) skips them.
 */
const links = new WeakMap<RelayRecord, { self: RelayRecord; opts: MeshOptions; resolution: unknown; link: ReturnType<typeof linkState> }>();

function linkOf(self: RelayRecord, p: RelayRecord, opts: MeshOptions, resolutions: Resolutions): ReturnType<typeof linkState> {
  const resolution = resolutions[p.id];
  let l = links.get(p);
  if (!l || l.self !== self || l.opts !== opts || l.resolution !== resolution) {
    l = { self, opts, resolution, link: linkState(self, p, opts, resolutions) };
    links.set(p, l);
  }
  return l.link;
}

/**
 * The whole mesh part of the host for `self` and its peers. Pure: same inputs, same state (the same
 * objects, too, for peers whose record, resolution and settings are the same as last time).
 */
export function desiredMeshState(self: RelayRecord, peers: Iterable<RelayRecord>, opts: MeshOptions, resolutions: Resolutions): DesiredHostState {
  const devices = new Map<string, DesiredWgDevice>();
  const state: DesiredHostState = { devices, routes: [], rules: [], sysctls: {}, nftTables: {}, portMaps: [] };
  for (const p of peers) {
    if (p.id === self.id) continue;
    const link = linkOf(self, p, opts, resolutions);
    devices.set(link.device.name, link.device);
    for (const r of link.routes) state.routes.push(r);
  }
  return state;
}

/**
 * {@link desiredMeshState} for `peers`, made from `before`, the state it gave for `peersBefore` with the
 * same self, options and resolutions, in O(changed) but for two array copies: `change` says how the
 * peers Map changed (map-delta.ts). Gives exactly what desiredMeshState would, order included (a plan's
 * order follows it, and replay re-plans every round), or null where it cannot tell (a peer whose
 * device is another than before, a device name taken twice): the caller then builds it whole. Its
 * devices Map is derived from `before`'s, so a round's focus finds the changed devices in O(changed).
 */
export function patchedMeshState(
  before: DesiredHostState,
  peersBefore: ReadonlyMap<string, RelayRecord>,
  change: OrderedChanges<string>,
  self: RelayRecord,
  peers: ReadonlyMap<string, RelayRecord>,
  opts: MeshOptions,
  resolutions: Resolutions,
): DesiredHostState | null {
  const deviceOf = (p: RelayRecord) => linkDevice(opts.wgPrefix, meshIndex(self.meshAddress), meshIndex(p.meshAddress));
  let routes = before.routes;
  const gone: string[] = [];
  const set: [string, DesiredWgDevice][] = [];
  // A device's routes are one run in the list (desiredMeshState pushes them together).
  const runOf = (dev: string): [number, number] | null => {
    const start = routes.findIndex((r) => r.dev === dev);
    if (start < 0) return null;
    let end = start;
    while (end < routes.length && routes[end]!.dev === dev) end++;
    return [start, end];
  };
  const cut = (dev: string, insert: readonly RouteState[]): boolean => {
    const run = runOf(dev);
    if (!run) return insert.length === 0;
    routes = [...routes.slice(0, run[0]), ...insert, ...routes.slice(run[1])];
    return true;
  };
  for (const id of change.removed) {
    const was = peersBefore.get(id);
    if (!was || id === self.id) continue;
    const dev = deviceOf(was);
    if (!before.devices.has(dev)) return null;
    gone.push(dev);
    cut(dev, []);
  }
  for (const id of change.replaced) {
    if (id === self.id) continue;
    const was = peersBefore.get(id);
    const now = peers.get(id);
    if (!was || !now) return null;
    const dev = deviceOf(was);
    const link = linkOf(self, now, opts, resolutions);
    if (link.device.name !== dev || !before.devices.has(dev) || gone.includes(dev)) return null;
    if (!cut(dev, link.routes)) return null;
    set.push([dev, link.device]);
  }
  const taken = new Set(set.map(([d]) => d));
  const tail: RouteState[] = [];
  for (const id of change.appended) {
    if (id === self.id) continue;
    const now = peers.get(id);
    if (!now) return null;
    const link = linkOf(self, now, opts, resolutions);
    const dev = link.device.name;
    if (taken.has(dev) || (before.devices.has(dev) && !gone.includes(dev))) return null;
    taken.add(dev);
    set.push([dev, link.device]);
    for (const r of link.routes) tail.push(r);
  }
  if (tail.length > 0) routes = [...routes, ...tail];
  return { ...before, devices: derivedMap(before.devices, set, gone), routes };
}
