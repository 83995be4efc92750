import { createHash } from 'node:crypto';
import type {
  DesiredHostState,
  HostState,
  HostStateDraft,
  NftTableState,
  PortMapState,
  RouteState,
  RuleState,
  WgDeviceState,
  WgPeerState,
} from './host-state.ts';
import { canonicalCidr, canonicalIp } from './ip.ts';
import { kept } from '../lib/kept.ts';

/**
 * Host state in the one form the planner compares and humans read: canonical (sorted, addresses in
 * canonical text), rendered as text, and the digest that names an nftables table body.
 */

// ---------------------------------------------------------------------------------------------------
// nftables digests.

/**
 * The digest of a table body: the first 16 hex digits of its SHA-256. The table carries it in its
 * comment (`relay-core:<digest>`), so reading a table back needs no parsing of its rules.
 */
export function nftDigest(body: string): string {
  let d = nftDigests.get(body);
  if (d === undefined) {
    d = createHash('sha256').update(body).digest('hex').slice(0, 16);
    // Bounded: a relay has a table or two, replay the few bodies of a log.
    if (nftDigests.size >= 64) nftDigests.clear();
    nftDigests.set(body, d);
  }
  return d;
}
/** Digests by body: the owners hand over the same body on every round. */
const nftDigests = new Map<string, string>();

// ---------------------------------------------------------------------------------------------------
// Canonical form and rendering.

const compare = (a: string | number, b: string | number): number => (a < b ? -1 : a > b ? 1 : 0);
const sortedUnique = (xs: string[]): string[] => [...new Set(xs)].sort(compare);

/**
 * Canonical forms of devices, peers, routes and rules, by object: owners and backends never change one in place
 * (they build or copy a new one), so the same object always has the same canonical form, and a plan or
 * read over a thousand unchanged peers does not build a thousand again. Callers never change a
 * canonical form either.
 */
const canonicalForms = new WeakMap<object, object>();
function byObject<T extends object>(x: T, make: (x: T) => T): T {
  return kept(canonicalForms, x, (y) => {
    const c = make(y as T);
    // A canonical form is its own canonical form.
    canonicalForms.set(c, c);
    return c;
  }) as T;
}

/** `xs` itself when it equals `ys` element by element (a canonical form then shares the owner's array). */
const sameOr = <T>(xs: readonly T[], ys: T[]): T[] => (xs.length === ys.length && xs.every((x, i) => x === ys[i]) ? (xs as T[]) : ys);
/** Whether `x`'s own keys are exactly `keys`, in that order (as its canonical form would have them). */
function hasExactly(x: object, keys: readonly string[]): boolean {
  const own = Object.keys(x);
  return own.length === keys.length && own.every((k, i) => k === keys[i]);
}
const PEER_KEYS = ['publicKey', 'endpoint', 'allowedIps', 'keepaliveSeconds'] as const;
const ROUTE_KEYS = ['dst', 'dev', 'table', 'src'] as const;

/**
 * The canonical forms below are the object itself when it already is canonical (owners build most of
 * theirs so: a mesh link's peer and routes), so that a relay does not hold a second copy of each.
 */
function makeCanonicalPeer(p: WgPeerState): WgPeerState {
  const allowedIps = sameOr(p.allowedIps, sortedUnique(p.allowedIps.map((c) => canonicalCidr(c))));
  if (allowedIps === p.allowedIps && hasExactly(p, PEER_KEYS)) return p;
  return { publicKey: p.publicKey, endpoint: p.endpoint, allowedIps, keepaliveSeconds: p.keepaliveSeconds };
}
const canonicalPeer = (p: WgPeerState): WgPeerState => byObject(p, makeCanonicalPeer);

/** Picks the fields of `WgDeviceState` only, so a desired device's key file never leaks into the result. */
const canonicalDevice = (d: WgDeviceState): WgDeviceState => byObject(d, makeCanonicalDevice);
function makeCanonicalDevice(d: WgDeviceState): WgDeviceState {
  return {
    name: d.name,
    publicKey: d.publicKey,
    listenPort: d.listenPort,
    mtu: d.mtu,
    addresses: sameOr(d.addresses, sortedUnique(d.addresses.map((c) => canonicalCidr(c, true)))),
    up: d.up,
    peers: sameOr(
      d.peers,
      d.peers.map(canonicalPeer).sort((a, b) => compare(a.publicKey, b.publicKey)),
    ),
  };
}

function makeCanonicalRoute(r: RouteState): RouteState {
  const dst = canonicalCidr(r.dst);
  const src = r.src === null ? null : canonicalIp(r.src);
  return dst === r.dst && src === r.src && hasExactly(r, ROUTE_KEYS) ? r : { dst, dev: r.dev, table: r.table, src };
}
const canonicalRoute = (r: RouteState): RouteState => byObject(r, makeCanonicalRoute);
const makeCanonicalRule = (r: RuleState): RuleState => ({
  priority: r.priority,
  from: r.from === null ? null : canonicalCidr(r.from),
  iif: r.iif,
  table: r.table,
});
const canonicalRule = (r: RuleState): RuleState => byObject(r, makeCanonicalRule);
const compareRoutes = (a: RouteState, b: RouteState) => a.table - b.table || compare(a.dst, b.dst) || compare(a.dev, b.dev);
/** Lookups by table number, an `unreachable` rule (table null) after them. */
const compareTables = (a: number | null, b: number | null) => (a === b ? 0 : a === null ? 1 : b === null ? -1 : a - b);
const compareRules = (a: RuleState, b: RuleState) =>
  a.priority - b.priority || compare(a.from ?? '', b.from ?? '') || compare(a.iif ?? '', b.iif ?? '') || compareTables(a.table, b.table);

/** Keys sorted; for tables only the fields of `NftTableState`, so a desired table's body never leaks. */
function canonicalSysctls(s: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of Object.keys(s).sort(compare)) out[k] = s[k]!;
  return out;
}
function canonicalNftTables(s: Record<string, NftTableState>): Record<string, NftTableState> {
  const out: Record<string, NftTableState> = {};
  for (const k of Object.keys(s).sort(compare)) out[k] = { name: s[k]!.name, digest: s[k]!.digest };
  return out;
}

const canonicalPortMap = (m: PortMapState): PortMapState => ({ table: m.table, port: m.port, to: m.to });
const comparePortMaps = (a: PortMapState, b: PortMapState) => compare(a.table, b.table) || a.port - b.port;

/** A deep copy in canonical form: equal states are `toEqual` and render byte-identically. */
export function canonicalHostState(s: HostState): HostStateDraft {
  const devices = new Map<string, WgDeviceState>();
  for (const name of [...s.devices.keys()].sort(compare)) devices.set(name, canonicalDevice(s.devices.get(name)!));
  return {
    devices,
    routes: s.routes.map(canonicalRoute).sort(compareRoutes),
    rules: s.rules.map(canonicalRule).sort(compareRules),
    sysctls: canonicalSysctls(s.sysctls),
    nftTables: canonicalNftTables(s.nftTables),
    portMaps: s.portMaps.map(canonicalPortMap).sort(comparePortMaps),
  };
}

/** The desired state as the host would show it: without the key files and the nftables table bodies. */
export function stripDesired(d: DesiredHostState): HostState {
  const devices = new Map<string, WgDeviceState>();
  for (const [name, { privateKeyFile: _, ...device }] of d.devices) devices.set(name, device);
  const nftTables: Record<string, NftTableState> = {};
  for (const [name, { body: _, ...table }] of Object.entries(d.nftTables)) nftTables[name] = table;
  return { devices, routes: d.routes, rules: d.rules, sysctls: d.sysctls, nftTables, portMaps: d.portMaps };
}

export const routeText = (r: RouteState): string => `${r.dst} dev ${r.dev} table ${r.table}${r.src === null ? '' : ` src ${r.src}`}`;
export const ruleText = (r: RuleState): string =>
  `priority ${r.priority}${r.from === null ? '' : ` from ${r.from}`}${r.iif === null ? '' : ` iif ${r.iif}`} ${r.table === null ? 'unreachable' : `lookup ${r.table}`}`;
export const portMapText = (m: PortMapState): string => `${m.table} udp ${m.port} to ${m.to}`;
/** A peer's settings after its key: `endpoint E allowed-ips A,B keepalive N`. */
export const peerSettingsText = (p: WgPeerState): string =>
  `endpoint ${p.endpoint ?? '(none)'} allowed-ips ${p.allowedIps.join(',') || '(none)'} keepalive ${p.keepaliveSeconds || 'off'}`;

/** One line per device, address, peer, route, rule, sysctl, nftables table and port map, in canonical order. Public keys only, no table bodies. */
export function renderHostState(s: HostState): string {
  const c = canonicalHostState(s);
  const lines: string[] = [];
  for (const d of c.devices.values()) {
    lines.push(`device ${d.name} mtu ${d.mtu} ${d.up ? 'up' : 'down'} listen-port ${d.listenPort} public-key ${d.publicKey || '(none)'}`);
    for (const a of d.addresses) lines.push(`  address ${a}`);
    for (const p of d.peers) lines.push(`  peer ${p.publicKey} ${peerSettingsText(p)}`);
  }
  for (const r of c.routes) lines.push(`route ${routeText(r)}`);
  for (const r of c.rules) lines.push(`rule ${ruleText(r)}`);
  for (const [k, v] of Object.entries(c.sysctls)) lines.push(`sysctl ${k} = ${v}`);
  for (const t of Object.values(c.nftTables)) lines.push(`nft table inet ${t.name} digest ${t.digest}`);
  for (const m of c.portMaps) lines.push(`port-map ${portMapText(m)}`);
  return lines.map((l) => `${l}\n`).join('');
}

// ---------------------------------------------------------------------------------------------------
// The digest of a scope.

/**
 * The SHA-256 of the text of each object of a state as the digest of a scope sees it: what the relay programs and
 * reads back, without what the network decides (a peer's endpoint, learned by roaming) or the kernel
 * chooses (a listen port). One string per device (with its addresses and peers), route, rule, sysctl,
 * table and port map; objects canonical (as read from a backend).
 */
function* objectHashes(s: HostState): Generator<bigint> {
  for (const d of s.devices.values()) yield hashOf(d, deviceText);
  for (const r of s.routes) yield hashOf(r, (x) => `route ${routeText(x)}`);
  for (const r of s.rules) yield hashOf(r, (x) => `rule ${ruleText(x)}`);
  for (const [k, v] of Object.entries(s.sysctls)) yield sha256(`sysctl ${k}=${v}`);
  for (const t of Object.values(s.nftTables)) yield sha256(`nft ${t.name} ${t.digest}`);
  for (const m of s.portMaps) yield hashOf(m, (x) => `port-map ${portMapText(x)}`);
}

function deviceText(d: WgDeviceState): string {
  const peers = d.peers.map((p) => `${p.publicKey} ${p.allowedIps.join(',')} ${p.keepaliveSeconds}`).join(';');
  return `device ${d.name} ${d.publicKey} ${d.mtu} ${d.up} ${d.addresses.join(',')} ${peers}`;
}

/** The first 8 bytes of the text's SHA-256, as a 64-bit integer (what the digest XORs). */
const sha256 = (text: string): bigint => createHash('sha256').update(text).digest().readBigUInt64BE(0);

/**
 * Each object's hash, by object: canonical objects are kept by object (`canonicalForms`) and never
 * changed. A bigint, not the digest's Buffer: a relay holds one per object of its scope (several per
 * peer), and a Buffer costs some 200 bytes of heap where a bigint takes about 24.
 */
const hashes = new WeakMap<object, bigint>();
const hashOf = <T extends object>(x: T, text: (x: T) => string): bigint => kept(hashes, x, (y) => sha256(text(y as T)));

/** A digest as 16 hex digits: the XOR of the first 8 bytes of each object's SHA-256. */
export type ScopeDigest = string;
export const EMPTY_SCOPE_DIGEST: ScopeDigest = '0000000000000000';

/**
 * The digest of a reached scope: order-free (the XOR over its objects), so a round that changed a few
 * objects updates it from the last one in time proportional to the change ({@link updateScopeDigest})
 * and replay checks it against the host it rebuilt.
 */
export function scopeDigest(s: HostState): ScopeDigest {
  return updateScopeDigest(EMPTY_SCOPE_DIGEST, emptyState, s);
}

const emptyState: HostState = { devices: new Map(), routes: [], rules: [], sysctls: {}, nftTables: {}, portMaps: [] };

/** `digest` with the objects of `removed` taken out and those of `added` put in (both canonical). */
export function updateScopeDigest(digest: ScopeDigest, removed: HostState, added: HostState): ScopeDigest {
  let acc = BigInt(`0x${digest}`);
  for (const h of objectHashes(removed)) acc ^= h;
  for (const h of objectHashes(added)) acc ^= h;
  return acc.toString(16).padStart(16, '0');
}
