import { createHash } from 'node:crypto';
import type { DesiredHostState, HostState, NftTableState, RouteState, RuleState, WgDeviceState, WgPeerState } from './host-state.ts';
import { canonicalCidr, canonicalIp } from './ip.ts';

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
  return createHash('sha256').update(body).digest('hex').slice(0, 16);
}

// ---------------------------------------------------------------------------------------------------
// Canonical form and rendering.

const compare = (a: string | number, b: string | number): number => (a < b ? -1 : a > b ? 1 : 0);
const sortedUnique = (xs: string[]): string[] => [...new Set(xs)].sort(compare);

function canonicalPeer(p: WgPeerState): WgPeerState {
  return {
    publicKey: p.publicKey,
    endpoint: p.endpoint,
    allowedIps: sortedUnique(p.allowedIps.map((c) => canonicalCidr(c))),
    keepaliveSeconds: p.keepaliveSeconds,
  };
}

/** Picks the fields of `WgDeviceState` only, so a desired device's key file never leaks into the result. */
function canonicalDevice(d: WgDeviceState): WgDeviceState {
  return {
    name: d.name,
    publicKey: d.publicKey,
    listenPort: d.listenPort,
    mtu: d.mtu,
    addresses: sortedUnique(d.addresses.map((c) => canonicalCidr(c, true))),
    up: d.up,
    peers: d.peers.map(canonicalPeer).sort((a, b) => compare(a.publicKey, b.publicKey)),
  };
}

const canonicalRoute = (r: RouteState): RouteState => ({
  dst: canonicalCidr(r.dst),
  dev: r.dev,
  table: r.table,
  src: r.src === null ? null : canonicalIp(r.src),
});
const canonicalRule = (r: RuleState): RuleState => ({ priority: r.priority, from: r.from === null ? null : canonicalCidr(r.from), iif: r.iif, table: r.table });
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

/** A deep copy in canonical form: equal states are `toEqual` and render byte-identically. */
export function canonicalHostState(s: HostState): HostState {
  const devices: Record<string, WgDeviceState> = {};
  for (const name of Object.keys(s.devices).sort(compare)) devices[name] = canonicalDevice(s.devices[name]!);
  return {
    devices,
    routes: s.routes.map(canonicalRoute).sort(compareRoutes),
    rules: s.rules.map(canonicalRule).sort(compareRules),
    sysctls: canonicalSysctls(s.sysctls),
    nftTables: canonicalNftTables(s.nftTables),
  };
}

/** The desired state as the host would show it: without the key files and the nftables table bodies. */
export function stripDesired(d: DesiredHostState): HostState {
  const devices: Record<string, WgDeviceState> = {};
  for (const [name, { privateKeyFile: _, ...device }] of Object.entries(d.devices)) devices[name] = device;
  const nftTables: Record<string, NftTableState> = {};
  for (const [name, { body: _, ...table }] of Object.entries(d.nftTables)) nftTables[name] = table;
  return { devices, routes: d.routes, rules: d.rules, sysctls: d.sysctls, nftTables };
}

export const routeText = (r: RouteState): string => `${r.dst} dev ${r.dev} table ${r.table}${r.src === null ? '' : ` src ${r.src}`}`;
export const ruleText = (r: RuleState): string =>
  `priority ${r.priority}${r.from === null ? '' : ` from ${r.from}`}${r.iif === null ? '' : ` iif ${r.iif}`} ${r.table === null ? 'unreachable' : `lookup ${r.table}`}`;
/** A peer's settings after its key: `endpoint E allowed-ips A,B keepalive N`. */
export const peerSettingsText = (p: WgPeerState): string =>
  `endpoint ${p.endpoint ?? '(none)'} allowed-ips ${p.allowedIps.join(',') || '(none)'} keepalive ${p.keepaliveSeconds || 'off'}`;

/** One line per device, address, peer, route, rule, sysctl and nftables table, in canonical order. Public keys only, no table bodies. */
export function renderHostState(s: HostState): string {
  const c = canonicalHostState(s);
  const lines: string[] = [];
  for (const d of Object.values(c.devices)) {
    lines.push(`device ${d.name} mtu ${d.mtu} ${d.up ? 'up' : 'down'} listen-port ${d.listenPort} public-key ${d.publicKey || '(none)'}`);
    for (const a of d.addresses) lines.push(`  address ${a}`);
    for (const p of d.peers) lines.push(`  peer ${p.publicKey} ${peerSettingsText(p)}`);
  }
  for (const r of c.routes) lines.push(`route ${routeText(r)}`);
  for (const r of c.rules) lines.push(`rule ${ruleText(r)}`);
  for (const [k, v] of Object.entries(c.sysctls)) lines.push(`sysctl ${k} = ${v}`);
  for (const t of Object.values(c.nftTables)) lines.push(`nft table inet ${t.name} digest ${t.digest}`);
  return lines.map((l) => `${l}\n`).join('');
}
