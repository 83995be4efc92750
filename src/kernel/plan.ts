import { createHash } from 'node:crypto';
import type { DesiredHostState, HostState, KernelOp, NftTableState, RouteState, RuleState, WgDeviceState, WgPeerState } from './host-state.ts';

/**
 * The planner: pure functions from (actual, desired) host state to the kernel operations that turn one
 * into the other, the canonical form both are compared in, and a stable text rendering for humans.
 *
 * A desired state must be one the kernel can hold, or no plan reaches it:
 * - routes only via devices that are up (the kernel refuses others and drops them on link down);
 * - a route's `src` is an address of this host, of the same family as its `dst`;
 * - IPv6 addresses only on devices that are up (link down drops them);
 * - at most one route per (table, dst), no allowed-ip on two peers of one device, unique rules.
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
// Canonical addresses. Text forms are what iproute2 and wg print: IPv6 compressed as in RFC 5952.

export interface IpValue {
  v6: boolean;
  n: bigint;
}

export const isIpv6 = (addressOrCidr: string): boolean => addressOrCidr.includes(':');

export function parseIpv4(s: string): IpValue | null {
  const parts = s.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return null;
  return { v6: false, n: parts.reduce((acc, p) => (acc << 8n) | BigInt(p), 0n) };
}

/** Hex groups with at most one `::`. Embedded IPv4 (`::ffff:1.2.3.4`) is not supported: left as given. */
export function parseIpv6(s: string): IpValue | null {
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const groups = (h: string) => (h === '' ? [] : h.split(':'));
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const all = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...tail];
  if (!all.every((g) => /^[0-9a-f]{1,4}$/i.test(g))) return null;
  return { v6: true, n: all.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n) };
}

export function formatIp({ v6, n }: IpValue): string {
  if (!v6) return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 0xffn)).join('.');
  const groups = Array.from({ length: 8 }, (_, i) => Number((n >> BigInt(112 - 16 * i)) & 0xffffn));
  // The longest run of two or more zero groups (the first of equals) becomes `::`.
  let best = { at: -1, len: 1 };
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > best.len) best = { at: i, len: j - i };
    i = Math.max(j, i + 1);
  }
  const hex = groups.map((g) => g.toString(16));
  if (best.at < 0) return hex.join(':');
  return `${hex.slice(0, best.at).join(':')}::${hex.slice(best.at + best.len).join(':')}`;
}

/**
 * Canonical texts by input: a relay (and replay) canonicalises the same few hundred addresses on every
 * plan, and the parse goes through BigInt. Bounded: cleared when full.
 */
const canonicalCache = new Map<string, string>();
const CANONICAL_CACHE_MAX = 65_536;
function cached(key: string, compute: () => string): string {
  let v = canonicalCache.get(key);
  if (v === undefined) {
    v = compute();
    if (canonicalCache.size >= CANONICAL_CACHE_MAX) canonicalCache.clear();
    canonicalCache.set(key, v);
  }
  return v;
}

/** An IP address in canonical text; unparseable input is returned as is (the host will refuse it). */
export function canonicalIp(s: string): string {
  return cached(`i${s}`, () => {
    const ip = isIpv6(s) ? parseIpv6(s) : parseIpv4(s);
    return ip ? formatIp(ip) : s;
  });
}

/**
 * A CIDR in canonical text with an explicit prefix length. `keepHostBits` for an interface address
 * (`100.64.0.1/24` is that address), otherwise the network (`100.96.0.1/22` is `100.96.0.0/22`, as
 * WireGuard and the routing table store it).
 */
export function canonicalCidr(s: string, keepHostBits = false): string {
  return cached(`${keepHostBits ? 'h' : 'n'}${s}`, () => computeCanonicalCidr(s, keepHostBits));
}

function computeCanonicalCidr(s: string, keepHostBits: boolean): string {
  const [addr = '', len, extra] = s.split('/');
  const ip = isIpv6(addr) ? parseIpv6(addr) : parseIpv4(addr);
  const bits = ip?.v6 ? 128 : 32;
  const prefix = len === undefined ? bits : Number(len);
  if (!ip || extra !== undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > bits) return s;
  const hostMask = (1n << BigInt(bits - prefix)) - 1n;
  return `${formatIp(keepHostBits ? ip : { v6: ip.v6, n: ip.n & ~hostMask })}/${prefix}`;
}

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
  return { publicKey: p.publicKey, endpoint: p.endpoint, allowedIps: sortedUnique(p.allowedIps.map((c) => canonicalCidr(c))), keepaliveSeconds: p.keepaliveSeconds };
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

const canonicalRoute = (r: RouteState): RouteState => ({ dst: canonicalCidr(r.dst), dev: r.dev, table: r.table, src: r.src === null ? null : canonicalIp(r.src) });
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
}

const freshDevice = (want: WgDeviceState): WgDeviceState => ({ name: want.name, publicKey: '', listenPort: 0, mtu: want.mtu, addresses: [], up: false, peers: [] });
const routeKey = (r: RouteState) => `${r.table} ${r.dst}`;
const ruleKey = (r: RuleState) => ruleText(r);
const hasIpv4 = (d: WgDeviceState) => d.addresses.some((a) => !isIpv6(a));

function planInput(actualState: HostState, desiredState: DesiredHostState): PlanInput {
  const actual = canonicalHostState(actualState);
  const desired = canonicalHostState(desiredState);
  const pairs = Object.values(desired.devices).map((want) => ({
    was: actual.devices[want.name] ?? freshDevice(want),
    want,
    privateKeyFile: desiredState.devices[want.name]!.privateKeyFile,
  }));
  const nftBodies = Object.fromEntries(Object.entries(desiredState.nftTables).map(([k, t]) => [k, t.body]));
  return { actual, desired, pairs, removed: Object.keys(actual.devices).filter((n) => !(n in desired.devices)), nftBodies };
}

const linkAdds = (p: PlanInput): KernelOp[] =>
  p.pairs.filter(({ want }) => !(want.name in p.actual.devices)).map(({ want }) => ({ op: 'link.add', dev: want.name, mtu: want.mtu }));

const wgDevices = (p: PlanInput): KernelOp[] =>
  p.pairs
    .filter(({ was, want }) => was.publicKey !== want.publicKey || (want.listenPort !== 0 && was.listenPort !== want.listenPort))
    .map(({ want, privateKeyFile }) => ({ op: 'wg.device', dev: want.name, privateKeyFile, publicKey: want.publicKey, listenPort: want.listenPort }));

const mtus = (p: PlanInput): KernelOp[] => p.pairs.filter(({ was, want }) => was.mtu !== want.mtu).map(({ want }) => ({ op: 'link.mtu', dev: want.name, mtu: want.mtu }));

const addrAdds = (p: PlanInput): KernelOp[] =>
  p.pairs.flatMap(({ was, want }) => want.addresses.filter((a) => !was.addresses.includes(a)).map((cidr): KernelOp => ({ op: 'addr.add', dev: want.name, cidr })));

const linkUps = (p: PlanInput): KernelOp[] => p.pairs.filter(({ was, want }) => want.up && !was.up).map(({ want }) => ({ op: 'link.up', dev: want.name }));

function peerDiffers(was: WgPeerState, want: WgPeerState): boolean {
  return was.allowedIps.join(',') !== want.allowedIps.join(',') || was.keepaliveSeconds !== want.keepaliveSeconds || (want.endpoint !== null && want.endpoint !== was.endpoint);
}

const peerSets = (p: PlanInput): KernelOp[] =>
  p.pairs.flatMap(({ was, want }) =>
    want.peers
      .filter((peer) => {
        const old = was.peers.find((o) => o.publicKey === peer.publicKey);
        return !old || peerDiffers(old, peer);
      })
      .map((peer): KernelOp => ({ op: 'wg.peer.set', dev: want.name, peer })),
  );

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
  p.pairs.flatMap(({ was, want }) =>
    was.peers.filter((o) => !want.peers.some((n) => n.publicKey === o.publicKey)).map((o): KernelOp => ({ op: 'wg.peer.del', dev: want.name, publicKey: o.publicKey })),
  );

const addrDels = (p: PlanInput): KernelOp[] =>
  p.pairs.flatMap(({ was, want }) => was.addresses.filter((a) => !want.addresses.includes(a)).map((cidr): KernelOp => ({ op: 'addr.del', dev: want.name, cidr })));

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
 * Guards first: nftables tables, then sysctls, then policy rules, all before routes and peers; so at
 * no point of a plan is a peer programmed without the filters and the fail-closed rule of its scope
 * (a property the planner's tests check over random states and failure points). A peer is removed
 * before its rules; a table no longer desired goes last, after the rules and devices it filters.
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
    // Deletions: a peer (or a device with its peers) goes before the rules and filters that guard it.
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
