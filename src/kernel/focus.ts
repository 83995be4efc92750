import type { DesiredHostState, HostState, KernelOp, KernelScope, PortMapState, RouteState, RuleState, WgDeviceState } from './host-state.ts';
import { ruleText } from './host-text.ts';
import { canonicalCidr, canonicalIp, isIpv6 } from './ip.ts';
import { kept } from '../lib/kept.ts';
import { changedEntries, derivedMap } from '../lib/map-delta.ts';

/**
 * The part of an owner's scope a round looks at: the objects whose desired state changed since the
 * desired state the owner's last round reached. A round that plans only these reads only these, so its
 * cost follows the change, not the size of the scope (a join in a mesh of a thousand relays touches one
 * device and its routes). Pure.
 *
 * Objects are compared by reference first: owners keep the objects of what did not change (the mesh
 * owner builds each link once per peer record), so an unchanged object costs one comparison. An object
 * rebuilt equal is in the focus and plans nothing.
 *
 * A device in the focus brings every route via it (the kernel drops a device's routes with the device,
 * on link down and with its last IPv4 address, and the planner adds back those still desired); a
 * table brings its port maps (replaced, it comes back without them). A device whose WireGuard settings
 * alone changed (its peers: a client session, a peer's new endpoint or key) is focused for those only
 * (`wireguard`): no route can change with them, and a backend reads its WireGuard state alone, taking
 * its link's settings from what the last round reached.
 *
 * Planning a focus gives the operations a whole-scope plan would give, in the same order, as long as
 * the host outside the focus is what the last round reached (no drift): the planner's categories come
 * in a fixed order and a focus keeps the order of each. Drift outside the focus is found by the
 * whole-scope round the kernel actor runs on a slow timer and on demand.
 */
export interface Focus {
  /** Devices read whole (they come, go, or their link's settings changed), with every route via them. */
  devices: ReadonlySet<string>;
  /** Devices whose WireGuard settings alone changed (peers, key, listen port): their link is as last reached. */
  wireguard: ReadonlySet<string>;
  /** Routes by `table dst` (dst canonical). */
  routes: ReadonlySet<string>;
  /** Rules by their canonical text. */
  rules: ReadonlySet<string>;
  sysctls: ReadonlySet<string>;
  nftTables: ReadonlySet<string>;
  /** Port maps by `table port`. */
  portMaps: ReadonlySet<string>;
}

/** Keys by object (routes and rules are never changed in place: see host-text.ts, `canonicalForms`). */
const routeKeys = new WeakMap<RouteState, string>();
const ruleKeys = new WeakMap<RuleState, string>();
const makeRouteKey = (r: RouteState): string => `${r.table} ${canonicalCidr(r.dst)}`;
export const routeKey = (r: RouteState): string => kept(routeKeys, r, makeRouteKey);
export const portMapKey = (m: PortMapState): string => `${m.table} ${m.port}`;
const makeRuleKey = (r: RuleState): string => ruleText(r.from === null ? r : { ...r, from: canonicalCidr(r.from) });
const ruleKey = (r: RuleState): string => kept(ruleKeys, r, makeRuleKey);

/**
 * Objects in `a` that `b` does not hold (by reference), perhaps with a few it does (harmless: the focus
 * then holds an object that plans nothing). Owners rebuild their lists in the same order, so the two
 * usually share a long head and tail (a join appends, a leave cuts one piece out): only the middle is
 * compared through a Set, and a change costs what it changed, not the length of the list.
 */
function notIn<T>(a: readonly T[], b: readonly T[]): T[] {
  if (a === b) return [];
  const n = Math.min(a.length, b.length);
  let head = 0;
  while (head < n && a[head] === b[head]) head++;
  let endA = a.length;
  let endB = b.length;
  while (endA > head && endB > head && a[endA - 1] === b[endB - 1]) {
    endA--;
    endB--;
  }
  if (endA === head) return [];
  const held = new Set(b.slice(head, endB));
  return a.slice(head, endA).filter((x) => !held.has(x));
}

function changedKeys<T>(a: Readonly<Record<string, T>>, b: Readonly<Record<string, T>>, same: (x: T, y: T) => boolean): string[] {
  if (a === b) return [];
  const out: string[] = [];
  for (const k of Object.keys(a)) if (!(k in b) || !same(a[k]!, b[k]!)) out.push(k);
  for (const k of Object.keys(b)) if (!(k in a)) out.push(k);
  return out;
}

/** Whether two desired devices differ in their WireGuard settings at most: the same link (MTU, addresses, up). */
function sameLink(a: WgDeviceState, b: WgDeviceState): boolean {
  return a.mtu === b.mtu && a.up === b.up && a.addresses.length === b.addresses.length && a.addresses.every((x, i) => x === b.addresses[i]);
}

/** What changed between two desired states of one owner. */
export function focusOf(before: DesiredHostState, after: DesiredHostState): Focus {
  const devices = new Set<string>();
  const wireguard = new Set<string>();
  for (const k of changedEntries(before.devices, after.devices)) {
    const b = before.devices.get(k);
    const a = after.devices.get(k);
    (b && a && sameLink(b, a) ? wireguard : devices).add(k);
  }
  // Routes via a focused device are in the focus with it.
  const routes = [...notIn(before.routes, after.routes), ...notIn(after.routes, before.routes)].filter((r) => !devices.has(r.dev));
  return {
    devices,
    wireguard,
    routes: new Set(routes.map(routeKey)),
    rules: new Set([...notIn(before.rules, after.rules), ...notIn(after.rules, before.rules)].map(ruleKey)),
    sysctls: new Set(changedKeys(before.sysctls, after.sysctls, (x, y) => x === y)),
    nftTables: new Set(changedKeys(before.nftTables, after.nftTables, (x, y) => x.digest === y.digest)),
    portMaps: new Set([...notIn(before.portMaps, after.portMaps), ...notIn(after.portMaps, before.portMaps)].map(portMapKey)),
  };
}

export const isEmptyFocus = (f: Focus): boolean =>
  f.devices.size === 0 &&
  f.wireguard.size === 0 &&
  f.routes.size === 0 &&
  f.rules.size === 0 &&
  f.sysctls.size === 0 &&
  f.nftTables.size === 0 &&
  f.portMaps.size === 0;

/**
 * The objects `ops` touch, as a focus: a device's link (with the routes via it) for link and address
 * operations, its WireGuard settings for `wg` ones, and each route, rule, sysctl, table and port map
 * named. With `mayReachBeyond` false for the host they ran on, everything they changed is in it.
 */
export function opsFocus(ops: readonly KernelOp[]): Focus {
  const devices = new Set<string>();
  const wireguard = new Set<string>();
  const routes = new Set<string>();
  const rules = new Set<string>();
  const sysctls = new Set<string>();
  const nftTables = new Set<string>();
  const portMaps = new Set<string>();
  for (const op of ops) {
    switch (op.op) {
      case 'wg.device':
      case 'wg.peer.set':
      case 'wg.peer.del':
        wireguard.add(op.dev);
        break;
      case 'link.add':
      case 'link.del':
      case 'link.mtu':
      case 'link.up':
      case 'link.down':
      case 'addr.add':
      case 'addr.del':
        devices.add(op.dev);
        break;
      case 'route.add':
      case 'route.del':
      case 'route.replace':
        routes.add(routeKey(op.route));
        break;
      case 'rule.add':
      case 'rule.del':
        rules.add(ruleKey(op.rule));
        break;
      case 'sysctl.set':
        sysctls.add(op.key);
        break;
      case 'nft.table.set':
      case 'nft.table.del':
        nftTables.add(op.name);
        break;
      case 'portmap.add':
      case 'portmap.replace':
      case 'portmap.del':
        portMaps.add(portMapKey(op.map));
        break;
    }
  }
  for (const d of devices) wireguard.delete(d);
  return { devices, wireguard, routes, rules, sysctls, nftTables, portMaps };
}

/** Whether a route is in the focus: its key is, or the device it goes via. */
export const routeInFocus = (f: Focus, r: RouteState): boolean => f.devices.has(r.dev) || (f.routes.size > 0 && f.routes.has(routeKey(r)));
export const ruleInFocus = (f: Focus, r: RuleState): boolean => f.rules.size > 0 && f.rules.has(ruleKey(r));
/** Whether a port map is in the focus: its key is, or its table (replacing a table takes its elements). */
export const portMapInFocus = (f: Focus, m: PortMapState): boolean => f.nftTables.has(m.table) || (f.portMaps.size > 0 && f.portMaps.has(portMapKey(m)));
const noPortMaps = (f: Focus): boolean => f.nftTables.size === 0 && f.portMaps.size === 0;

function pick<T>(rec: Readonly<Record<string, T>>, keys: ReadonlySet<string>): Record<string, T> {
  const out: Record<string, T> = {};
  for (const k of keys) if (k in rec) out[k] = rec[k]!;
  return out;
}

function pickEntries<T>(map: ReadonlyMap<string, T>, ...keySets: ReadonlySet<string>[]): Map<string, T> {
  const out = new Map<string, T>();
  for (const keys of keySets)
    for (const k of keys) {
      const v = map.get(k);
      if (v !== undefined) out.set(k, v);
    }
  return out;
}

/** The devices a focus looks at: whole, or for their WireGuard settings. */
export function focusedDevices(f: Focus): string[] {
  return f.wireguard.size === 0 ? [...f.devices] : [...f.devices, ...f.wireguard];
}

/**
 * The focus to read back after `ops` ran: a device focused for its WireGuard settings that got any other
 * operation (the host was not as the last round reached: it was built again, its MTU set) is read whole.
 */
export function readBackFocus(f: Focus, ops: readonly KernelOp[]): Focus {
  if (f.wireguard.size === 0) return f;
  const linkOps = new Set(ops.filter((op) => 'dev' in op && f.wireguard.has(op.dev) && !op.op.startsWith('wg.')).map((op) => (op as { dev: string }).dev));
  if (linkOps.size === 0) return f;
  return { ...f, devices: new Set([...f.devices, ...linkOps]), wireguard: new Set([...f.wireguard].filter((d) => !linkOps.has(d))) };
}

/** The last `restrict` of each state, by focus: a round restricts the same state to the same focus more than once. */
const restricted = new WeakMap<HostState, { f: Focus; out: HostState }>();

/** The focused part of a state (order kept). Do not change what it returns (it may be handed out again). */
export function restrict<S extends HostState>(s: S, f: Focus): S {
  const last = restricted.get(s);
  if (last?.f === f) return last.out as S;
  const out = restrictOnce(s, f);
  restricted.set(s, { f, out });
  return out;
}

function restrictOnce<S extends HostState>(s: S, f: Focus): S {
  return {
    ...s,
    devices: pickEntries(s.devices, f.devices, f.wireguard) as S['devices'],
    routes: f.devices.size === 0 && f.routes.size === 0 ? [] : s.routes.filter((r) => routeInFocus(f, r)),
    rules: f.rules.size === 0 ? [] : s.rules.filter((r) => ruleInFocus(f, r)),
    sysctls: pick(s.sysctls, f.sysctls),
    nftTables: pick(s.nftTables, f.nftTables),
    portMaps: noPortMaps(f) ? [] : s.portMaps.filter((m) => portMapInFocus(f, m)),
  };
}

/**
 * `list` without the objects of `sub`, an ordered part of it (what `restrict` took): slices between
 * them, found by identity, instead of a test of every entry against the focus. `list` itself when `sub` is empty.
 */
function without<T>(list: readonly T[], sub: readonly T[]): T[] {
  if (sub.length === 0) return list as T[];
  const pieces: T[][] = [];
  let from = 0;
  for (const x of sub) {
    const at = list.indexOf(x, from);
    if (at < 0) throw new Error('without: not an ordered part of the list');
    if (at > from) pieces.push(list.slice(from, at));
    from = at + 1;
  }
  pieces.push(list.slice(from));
  if (pieces.length === 1) return pieces[0]!;
  // concat copies natively; its arguments are bounded (a focus of thousands of objects is rare: a loop then).
  if (pieces.length <= 1024) return ([] as T[]).concat(...pieces);
  const out: T[] = [];
  for (const p of pieces) for (const x of p) out.push(x);
  return out;
}

/** `base` (a whole scope) with the focused objects replaced by what `focused` holds of them. Routes, rules and port maps are not re-sorted. */
export function mergeFocused(base: HostState, f: Focus, focused: HostState): HostState {
  // The focused part of `base` (a round has restricted it already: the memo hands the same one back).
  const inBase = restrict(base, f);
  // Derived (map-delta.ts): what reads the reached devices next follows the change.
  const devices = derivedMap(base.devices, [...focused.devices], [...f.devices, ...f.wireguard]);
  const sysctls = { ...base.sysctls };
  for (const k of f.sysctls) delete sysctls[k];
  const nftTables = { ...base.nftTables };
  for (const k of f.nftTables) delete nftTables[k];
  return {
    devices,
    routes: joined(without(base.routes, inBase.routes), focused.routes),
    rules: joined(without(base.rules, inBase.rules), focused.rules),
    sysctls: Object.assign(sysctls, focused.sysctls),
    nftTables: Object.assign(nftTables, focused.nftTables),
    portMaps: joined(without(base.portMaps, inBase.portMaps), focused.portMaps),
  };
}

const joined = <T>(a: T[], b: readonly T[]): T[] => (b.length === 0 ? a : a.concat(b));

/**
 * Whether applying `ops` may have changed something outside the focus: an address removed (deleted, or
 * with its device, or an IPv6 one on link down) that no other device of `host` (the scope before the
 * round) still has. The kernel then drops every route preferring it as source, on any device.
 */
export function mayReachBeyond(ops: readonly KernelOp[], host: HostState): boolean {
  const removed: { dev: string; cidr: string }[] = [];
  for (const op of ops) {
    if (op.op === 'addr.del') removed.push({ dev: op.dev, cidr: op.cidr });
    else if (op.op === 'link.del') removed.push(...(host.devices.get(op.dev)?.addresses ?? []).map((cidr) => ({ dev: op.dev, cidr })));
    else if (op.op === 'link.down') removed.push(...(host.devices.get(op.dev)?.addresses.filter(isIpv6) ?? []).map((cidr) => ({ dev: op.dev, cidr })));
  }
  if (removed.length === 0) return false;
  const gone = new Set(ops.flatMap((op) => (op.op === 'link.del' ? [op.dev] : [])));
  const ipOf = (cidr: string) => canonicalIp(cidr.split('/')[0]!);
  const heldElsewhere = (dev: string, ip: string): boolean => {
    // Stops at the first device that holds it (every mesh link holds the relay's mesh address).
    for (const d of host.devices.values()) if (d.name !== dev && !gone.has(d.name) && d.addresses.some((a) => ipOf(a) === ip)) return true;
    return false;
  };
  return removed.some(({ dev, cidr }) => !heldElsewhere(dev, ipOf(cidr)));
}

/** The scope's owner is another (a new device prefix, rule range, sysctls or tables): whole-scope rounds only. */
export const sameScope = (a: KernelScope, b: KernelScope): boolean =>
  a.devicePrefix === b.devicePrefix &&
  a.rulePriorities[0] === b.rulePriorities[0] &&
  a.rulePriorities[1] === b.rulePriorities[1] &&
  a.sysctls.join('\n') === b.sysctls.join('\n') &&
  a.nftTables.join('\n') === b.nftTables.join('\n');
