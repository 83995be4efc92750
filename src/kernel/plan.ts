import { portMapKey } from './focus.ts';
import type { DesiredHostState, HostState, KernelOp, RouteState, RuleState, WgDeviceState, WgPeerState } from './host-state.ts';
import { canonicalHostState, ruleText } from './host-text.ts';
import { isIpv6 } from './ip.ts';

/**
 * The planner: a pure function from (actual, desired) host state to the kernel operations that turn one
 * into the other. The canonical form both are compared in and their text are host-text.ts; addresses
 * are ip.ts.
 *
 * A desired state must be one the kernel can hold, or no plan reaches it:
 * - routes only via devices that are up (the kernel refuses others and drops them on link down);
 * - a route's `src` is an address of this host, of the same family as its `dst`;
 * - IPv6 addresses only on devices that are up (link down drops them);
 * - at most one route per (table, dst), no allowed-ip on two peers of one device, unique rules;
 * - port maps only in desired tables (whose body declares the map), one per (table, port).
 *
 * Peer endpoints: null means "not ours to set". WireGuard learns a peer's endpoint from its handshakes
 * (roaming), and `wg` cannot clear one, so a peer desired without an endpoint accepts whatever the
 * device has. A listen port of 0 likewise lets the kernel choose.
 *
 * Sysctls are only ever set, never reset: a key absent from the desired state is not touched, whatever
 * its value. An nftables table is compared by digest alone and replaced as a whole when it differs. A
 * desired table's `digest` must be `nftDigest(body)`; the planner does not recompute it and trusts the
 * digest (hashing every body on every plan would cost more than it saves), so a wrong digest either
 * makes the plan miss a changed body or replace the table on every plan. The in-memory host refuses
 * such a table as a bug.
 */

// ---------------------------------------------------------------------------------------------------
// The planner.

/** One desired device and what it is before the plan runs (as link.add leaves it, if it is new). */
interface DevicePair {
  was: WgDeviceState;
  want: WgDeviceState;
  privateKeyFile: string;
}

interface PlanInput {
  actual: HostState;
  desired: HostState;
  pairs: DevicePair[];
  /** Devices to delete: everything on them goes with them. */
  removed: string[];
  /** The body of each desired nftables table, by its key in `desired.nftTables`. */
  nftBodies: Record<string, string>;
  /** Tables the plan creates or replaces, or deletes: their port maps go with what they were. */
  nftReset: Set<string>;
}

const freshDevice = (want: WgDeviceState): WgDeviceState => ({
  name: want.name,
  publicKey: '',
  listenPort: 0,
  mtu: want.mtu,
  addresses: [],
  up: false,
  peers: [],
});
const routeKey = (r: RouteState) => `${r.table} ${r.dst}`;
const ruleKey = (r: RuleState) => ruleText(r);
const hasIpv4 = (d: WgDeviceState) => d.addresses.some((a) => !isIpv6(a));

function planInput(actualState: HostState, desiredState: DesiredHostState): PlanInput {
  const actual = canonicalHostState(actualState);
  const desired = canonicalHostState(desiredState);
  const pairs = [...desired.devices.values()].map((want) => ({
    was: actual.devices.get(want.name) ?? freshDevice(want),
    want,
    privateKeyFile: desiredState.devices.get(want.name)!.privateKeyFile,
  }));
  const nftBodies = Object.fromEntries(Object.entries(desiredState.nftTables).map(([k, t]) => [k, t.body]));
  const nftReset = new Set([
    ...Object.values(desired.nftTables)
      .filter((t) => actual.nftTables[t.name]?.digest !== t.digest)
      .map((t) => t.name),
    ...Object.keys(actual.nftTables).filter((k) => !(k in desired.nftTables)),
  ]);
  return { actual, desired, pairs, removed: [...actual.devices.keys()].filter((n) => !desired.devices.has(n)), nftBodies, nftReset };
}

const linkAdds = (p: PlanInput): KernelOp[] =>
  p.pairs.filter(({ want }) => !p.actual.devices.has(want.name)).map(({ want }) => ({ op: 'link.add', dev: want.name, mtu: want.mtu }));

const wgDevices = (p: PlanInput): KernelOp[] =>
  p.pairs
    .filter(({ was, want }) => was.publicKey !== want.publicKey || (want.listenPort !== 0 && was.listenPort !== want.listenPort))
    .map(({ want, privateKeyFile }) => ({ op: 'wg.device', dev: want.name, privateKeyFile, publicKey: want.publicKey, listenPort: want.listenPort }));

const mtus = (p: PlanInput): KernelOp[] =>
  p.pairs.filter(({ was, want }) => was.mtu !== want.mtu).map(({ want }) => ({ op: 'link.mtu', dev: want.name, mtu: want.mtu }));

const addrAdds = (p: PlanInput): KernelOp[] =>
  p.pairs.flatMap(({ was, want }) =>
    want.addresses.filter((a) => !was.addresses.includes(a)).map((cidr): KernelOp => ({ op: 'addr.add', dev: want.name, cidr })),
  );

const linkUps = (p: PlanInput): KernelOp[] => p.pairs.filter(({ was, want }) => want.up && !was.up).map(({ want }) => ({ op: 'link.up', dev: want.name }));

function peerDiffers(was: WgPeerState, want: WgPeerState): boolean {
  return (
    was.allowedIps.join(',') !== want.allowedIps.join(',') ||
    was.keepaliveSeconds !== want.keepaliveSeconds ||
    (want.endpoint !== null && want.endpoint !== was.endpoint)
  );
}

/**
 * Peers that are new or differ. On a device whose key changed, also every peer with a keepalive: its
 * sessions died with the old key, and setting it again starts a handshake at once (linux-commands'
 * peerSetArgs). A peer that re-keyed before this device had its new key has had its handshake dropped,
 * and would otherwise wait 5 s for its retry.
 */
const peerSets = (p: PlanInput): KernelOp[] =>
  p.pairs.flatMap(({ was, want }) => {
    const had = new Map(was.peers.map((o) => [o.publicKey, o]));
    const rekeyed = was.publicKey !== '' && was.publicKey !== want.publicKey;
    return want.peers
      .filter((peer) => {
        const old = had.get(peer.publicKey);
        return !old || peerDiffers(old, peer) || (rekeyed && peer.keepaliveSeconds > 0);
      })
      .map((peer): KernelOp => ({ op: 'wg.peer.set', dev: want.name, peer }));
  });

/** New routes are added; a route whose (table, dst) exists with another device or source is replaced. */
function routeSets(p: PlanInput): KernelOp[] {
  const actual = new Map(p.actual.routes.map((r) => [routeKey(r), r]));
  return p.desired.routes.flatMap((route): KernelOp[] => {
    const old = actual.get(routeKey(route));
    if (!old) return [{ op: 'route.add', route }];
    return old.dev === route.dev && old.src === route.src ? [] : [{ op: 'route.replace', route }];
  });
}

/** Only desired keys are set, and only where the value differs; other keys are never touched. */
const sysctlSets = (p: PlanInput): KernelOp[] =>
  Object.entries(p.desired.sysctls)
    .filter(([key, value]) => p.actual.sysctls[key] !== value)
    .map(([key, value]) => ({ op: 'sysctl.set', key, value }));

/** A table that is absent or has another digest is replaced as a whole (the desired digest is trusted). */
const nftSets = (p: PlanInput): KernelOp[] =>
  Object.entries(p.desired.nftTables)
    .filter(([key, t]) => p.actual.nftTables[key]?.digest !== t.digest)
    .map(([key, t]) => ({ op: 'nft.table.set', name: t.name, digest: t.digest, body: p.nftBodies[key]! }));

const nftDels = (p: PlanInput): KernelOp[] =>
  Object.entries(p.actual.nftTables)
    .filter(([key]) => !(key in p.desired.nftTables))
    .map(([, t]) => ({ op: 'nft.table.del', name: t.name }));

/**
 * New port maps are added, one pointing elsewhere is replaced (no gap). A table the plan creates or
 * replaces comes without elements: every desired port map of it is added after it.
 */
function portMapSets(p: PlanInput): KernelOp[] {
  const actual = new Map(p.actual.portMaps.filter((m) => !p.nftReset.has(m.table)).map((m) => [portMapKey(m), m]));
  return p.desired.portMaps.flatMap((map): KernelOp[] => {
    const old = actual.get(portMapKey(map));
    if (!old) return [{ op: 'portmap.add', map }];
    return old.to === map.to ? [] : [{ op: 'portmap.replace', map }];
  });
}

/** Port maps no longer desired, but those of a table the plan replaces or deletes (they go with it). */
function portMapDels(p: PlanInput): KernelOp[] {
  const desired = new Set(p.desired.portMaps.map(portMapKey));
  return p.actual.portMaps.filter((m) => !desired.has(portMapKey(m)) && !p.nftReset.has(m.table)).map((map) => ({ op: 'portmap.del', map }));
}

function ruleAdds(p: PlanInput): KernelOp[] {
  const actual = new Set(p.actual.rules.map(ruleKey));
  return p.desired.rules.filter((r) => !actual.has(ruleKey(r))).map((rule) => ({ op: 'rule.add', rule }));
}

function ruleDels(p: PlanInput): KernelOp[] {
  const desired = new Set(p.desired.rules.map(ruleKey));
  return p.actual.rules.filter((r) => !desired.has(ruleKey(r))).map((rule) => ({ op: 'rule.del', rule }));
}

function routeDels(p: PlanInput): KernelOp[] {
  const desired = new Set(p.desired.routes.map(routeKey));
  return p.actual.routes.filter((r) => !desired.has(routeKey(r)) && !p.removed.includes(r.dev)).map((route) => ({ op: 'route.del', route }));
}

const peerDels = (p: PlanInput): KernelOp[] =>
  p.pairs.flatMap(({ was, want }) => {
    if (was.peers.length === 0) return [];
    const wanted = new Set(want.peers.map((n) => n.publicKey));
    return was.peers.filter((o) => !wanted.has(o.publicKey)).map((o): KernelOp => ({ op: 'wg.peer.del', dev: want.name, publicKey: o.publicKey }));
  });

const addrDels = (p: PlanInput): KernelOp[] =>
  p.pairs.flatMap(({ was, want }) =>
    was.addresses.filter((a) => !want.addresses.includes(a)).map((cidr): KernelOp => ({ op: 'addr.del', dev: want.name, cidr })),
  );

const linkDowns = (p: PlanInput): KernelOp[] => p.pairs.filter(({ was, want }) => was.up && !want.up).map(({ want }) => ({ op: 'link.down', dev: want.name }));

const linkDels = (p: PlanInput): KernelOp[] => p.removed.map((dev) => ({ op: 'link.del', dev }));

/**
 * When a device loses its last IPv4 address the kernel drops every IPv4 route via it, also routes that
 * did not need the address. Those still desired are added back once the addresses are gone.
 */
function routesFlushedWithLastIpv4(p: PlanInput): KernelOp[] {
  const flushed = new Set(p.pairs.filter(({ was, want }) => hasIpv4(was) && !hasIpv4(want)).map(({ want }) => want.name));
  return p.desired.routes.filter((r) => flushed.has(r.dev) && !isIpv6(r.dst)).map((route) => ({ op: 'route.add', route }));
}

/**
 * The operations that turn `actual` (already limited to what the caller owns) into `desired`:
 * additions and changes first, then deletions, so nothing desired is missing while the plan runs.
 * Deleting a device takes its addresses, peers and routes with it: no separate operations for them.
 * Guards first: nftables tables, then sysctls, then policy rules, all before routes, peers and port
 * maps; so at no point of a plan is a peer or a port map programmed without the filters and the
 * fail-closed rule of its scope
 * (a property the planner's tests check over random states and failure points). A port map and a
 * peer are removed before their rules; a table no longer desired goes last, after the rules and devices it filters.
 * `planKernel(x, x with key files and table bodies)` is `[]`.
 */
export function planKernel(actual: HostState, desired: DesiredHostState): KernelOp[] {
  const p = planInput(actual, desired);
  return [
    ...linkAdds(p),
    ...wgDevices(p),
    ...mtus(p),
    ...addrAdds(p),
    ...linkUps(p),
    // The guards come before anything that lets traffic in: the filters before forwarding is switched
    // on, and filters and rules (the fail-closed one among them) before any peer is programmed.
    ...nftSets(p),
    ...sysctlSets(p),
    ...ruleAdds(p),
    ...routeSets(p),
    ...peerSets(p),
    ...portMapSets(p),
    // Deletions: a port map or a peer (or a device with its peers) goes before the rules and filters
    // that guard it.
    ...portMapDels(p),
    // Routes go before the devices (deleting an address flushes routes that take it as their source).
    ...peerDels(p),
    ...routeDels(p),
    ...linkDels(p),
    ...ruleDels(p),
    ...addrDels(p),
    ...linkDowns(p),
    ...routesFlushedWithLastIpv4(p),
    ...nftDels(p),
  ];
}
