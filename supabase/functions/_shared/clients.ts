// Client sessions, the pure parts (docs/control-plane.md, "Client sessions"): the choice of entry and
// exit, the client's address from the entry's pool, who may see a session, and the wg-quick
// configuration a client gets (requests: src/contract/api-clients.ts). No database, no Deno: Node's
// unit tests import it.
import type { Refusal } from './admission.ts';
import { embedIpv4In6, formatIpv4, lowestFree, parseCidr, parseIpv4 } from './addresses.ts';
import { badRequest, HttpError } from './http.ts';
import type { Principal } from './jwt.ts';
import type { ExitChoice } from '../../../src/contract/api-clients.ts';
import type { ClientSession, ClientSessionCloseReason, RelayClass, RelayState, SessionMode } from '../../../src/contract/topology.events.ts';
import { carriesClients } from './community.ts';
import { privateEntryPort, privateMtu } from '../../../src/contract/private-sessions.ts';
import { sessionRecord } from './topology-events.ts';

// ---------------------------------------------------------------------------------------------
// Settings

/** relaynet.settings as the client functions use it. */
export interface ClientSettings {
  mtu: number;
  dns: string[];
  keepaliveSeconds: number;
  sessionTtlSeconds: number;
  maxSessionTtlSeconds: number;
  confirmTimeoutSeconds: number;
  /** null: 3 x the functions' heartbeat interval. */
  relayLivenessSeconds: number | null;
  /** The clients' IPv6 /96 (client_prefix6): a client's IPv6 address embeds its IPv4 one. null: IPv4 only. */
  prefix6: string | null;
}

export const DEFAULT_CLIENT_SETTINGS: ClientSettings = {
  mtu: 1420,
  dns: ['9.9.9.9'],
  keepaliveSeconds: 25,
  sessionTtlSeconds: 86_400,
  maxSessionTtlSeconds: 2_592_000,
  confirmTimeoutSeconds: 20,
  relayLivenessSeconds: null,
  prefix6: 'fd64::/96',
};

/** A relay is live when heard from within this many seconds. */
export function livenessSeconds(s: Pick<ClientSettings, 'relayLivenessSeconds'>, heartbeatSeconds: number): number {
  return s.relayLivenessSeconds ?? 3 * heartbeatSeconds;
}

/** The lifetime of a new session: the requested one (at most the maximum) or the default. */
export function sessionTtl(requested: number | undefined, s: Pick<ClientSettings, 'sessionTtlSeconds' | 'maxSessionTtlSeconds'>): number {
  if (requested === undefined) return s.sessionTtlSeconds;
  if (requested > s.maxSessionTtlSeconds) throw badRequest('ttlSeconds', `ttlSeconds may be at most ${s.maxSessionTtlSeconds} (max_session_ttl_seconds)`);
  return requested;
}

// ---------------------------------------------------------------------------------------------
// Addresses: a client's /32 comes from its entry's pool.

/**
 * The client host range of a pool: every address but the network address, the broadcast address
 * and the first host (the entry's own address on its client device). Null for a pool too small to
 * hold any client (/31, /32) or that is not a CIDR.
 */
export function clientHostRange(pool: string): { first: number; last: number } | null {
  const c = parseCidr(pool);
  if (!c || c.prefix > 30) return null;
  const size = 2 ** (32 - c.prefix);
  return { first: c.base + 2, last: c.base + size - 2 };
}

/** The entry relay's own address on its client device: the first host of its pool. */
export function entryClientAddress(pool: string): string | null {
  const c = parseCidr(pool);
  return c && c.prefix <= 30 ? formatIpv4(c.base + 1) : null;
}

/** How many clients a pool holds. */
export function clientCapacity(pool: string): number {
  const r = clientHostRange(pool);
  return r ? r.last - r.first + 1 : 0;
}

/** The lowest free client address of `pool` given the addresses open sessions hold; null when full. */
export function allocateClientAddress(pool: string, taken: Iterable<string>): string | null {
  const r = clientHostRange(pool);
  if (!r) return null;
  const held: number[] = [];
  for (const a of taken) {
    const n = parseIpv4(a.replace(/\/32$/, ''));
    if (n !== null) held.push(n);
  }
  const free = lowestFree(held, r.first, r.last);
  return free === null ? null : formatIpv4(free);
}

// ---------------------------------------------------------------------------------------------
// Choosing the entry and the exit

/** An active relay as the choice sees it (relays that left are not candidates at all). */
export interface RelayCandidate {
  id: string;
  name: string;
  region: string;
  publicKey: string;
  endpoint: string;
  clientPool: string;
  /** Heard from within the liveness window. */
  live: boolean;
  /** Open sessions entering / leaving at it. */
  entrySessions: number;
  exitSessions: number;
  /** Its standing (core and active when it has none on record). */
  class: RelayClass;
  state: RelayState;
  /** Its measured capacity (line rate, bytes per second); null: never measured. */
  capacity: number | null;
}

export type Choice<T> = { ok: true; value: T } | { ok: false; refusal: Refusal };

const refuse = (status: number, error: string, message: string, field?: string): { ok: false; refusal: Refusal } => ({
  ok: false,
  refusal: { status, error, message, ...(field !== undefined ? { field } : {}) },
});

/** The candidate with the fewest `load`, ties by id. */
function leastLoaded(cs: RelayCandidate[], load: (r: RelayCandidate) => number): RelayCandidate {
  return [...cs].sort((a, b) => load(a) - load(b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))[0]!;
}

const notLive = (role: 'entry' | 'exit', id: string) =>
  refuse(
    409,
    'relay_unavailable',
    `${role} relay ${id} has not sent a heartbeat within the liveness window (relay_liveness_seconds); it is down or unreachable`,
    role,
  );
const unknownRelay = (role: 'entry' | 'exit', id: string) => refuse(404, 'unknown_relay', `${role} relay ${id} is not an active relay`, role);
const oneHop = (id: string, field: string) =>
  refuse(422, 'entry_is_exit', `relay ${id} would be both entry and exit; one-hop sessions are not supported yet: choose another exit or entry`, field);

/**
 * The exit of a region: a live relay of it that carries clients (community ones only when allowed),
 * other than the entry; the one that would have the fewest sessions leaving at it per unit of measured
 * capacity with one more (a relay never measured counts as the median of those measured, or all alike
 * when none is).
 */
function regionExit(region: string, entryId: string | null, relays: RelayCandidate[], community: boolean): Choice<RelayCandidate> {
  const inRegion = relays.filter((r) => r.region === region);
  const live = inRegion.filter((r) => r.live && carriesClients(r, community));
  const candidates = live.filter((r) => r.id !== entryId);
  if (candidates.length) {
    const weight = capacityWeights(candidates);
    return { ok: true, value: leastLoaded(candidates, (r) => (r.exitSessions + 1) / weight(r)) };
  }
  if (live.length) return oneHop(entryId!, 'exitRegion');
  if (inRegion.some((r) => r.live && r.state !== 'active'))
    return refuse(
      409,
      'relay_not_active',
      `no relay of region ${region} carries clients yet (its relays are in probation, rejected or suspended)`,
      'exitRegion',
    );
  if (inRegion.some((r) => r.live && r.class === 'community'))
    return refuse(409, 'community_not_allowed', `region ${region} has only community relays live: set community: true to allow them on the path`, 'exitRegion');
  return refuse(
    404,
    'no_relay_in_region',
    inRegion.length ? `no relay of region ${region} is live right now` : `region ${region} has no active relay`,
    'exitRegion',
  );
}

/** Each candidate's weight: its measured capacity, else the median of the measured ones, else 1 for all. */
export function capacityWeights(cs: readonly RelayCandidate[]): (r: RelayCandidate) => number {
  const known = cs
    .map((r) => r.capacity)
    .filter((c): c is number => c !== null && c > 0)
    .sort((a, b) => a - b);
  if (known.length === 0) return () => 1;
  const median = known.length % 2 ? known[(known.length - 1) / 2]! : (known[known.length / 2 - 1]! + known[known.length / 2]!) / 2;
  return (r) => (r.capacity !== null && r.capacity > 0 ? r.capacity : median);
}

/** A relay given by name that may not carry this session: not active, or community where it is not allowed. */
function notCarrying(role: 'entry' | 'exit', r: RelayCandidate, community: boolean): Choice<never> | null {
  if (r.state !== 'active')
    return refuse(
      409,
      'relay_not_active',
      `${role} relay ${r.id} is ${r.state === 'probation' ? 'in probation (it is measured before it carries clients)' : r.state}: it carries no client traffic`,
      role,
    );
  if (!carriesClients(r, community))
    return refuse(409, 'community_not_allowed', `${role} relay ${r.id} is a community relay: set community: true to allow community relays on the path`, role);
  return null;
}

/**
 * The mode of a new session: a community entry must not see plain text, so a session entering there is
 * private (asking for standard is refused); a community exit makes private the default; otherwise the
 * mode asked for, standard by default.
 */
export function sessionMode(requested: SessionMode | undefined, entry: RelayCandidate, exit: RelayCandidate): Choice<SessionMode> {
  if (entry.class === 'community') {
    if (requested === 'standard')
      return refuse(
        422,
        'private_required',
        `entry relay ${entry.id} is a community relay: a session entering there is private (mode "private"), so that it sees only ciphertext`,
        'mode',
      );
    return { ok: true, value: 'private' };
  }
  return { ok: true, value: requested ?? (exit.class === 'community' ? 'private' : 'standard') };
}

/**
 * connect-client: the entry and the exit of a new session, from what the caller gave and the active
 * relays. Checks, in order: the given exit and entry exist (404), are not the same relay (422), may
 * carry the session (409: active, and community relays only with `community`) and are live (409); then
 * picks what was not given: an exit region's live relay that may carry it (not the entry), weighed by
 * measured capacity (regionExit), and an entry among the live relays that may carry it, other than the
 * exit, with the fewest sessions entering at it (ties by id; a core relay where the caller asked for a
 * standard session, which a community entry does not take).
 */
export function chooseRoute(
  req: { entry?: string; community?: boolean; mode?: SessionMode } & ExitChoice,
  relays: RelayCandidate[],
): Choice<{ entry: RelayCandidate; exit: RelayCandidate }> {
  const community = req.community ?? false;
  const byId = new Map(relays.map((r) => [r.id, r]));
  let exit: RelayCandidate | null = null;
  let entry: RelayCandidate | null = null;
  if (req.exit !== undefined) {
    exit = byId.get(req.exit) ?? null;
    if (!exit) return unknownRelay('exit', req.exit);
  }
  if (req.entry !== undefined) {
    entry = byId.get(req.entry) ?? null;
    if (!entry) return unknownRelay('entry', req.entry);
    if (exit && exit.id === entry.id) return oneHop(entry.id, 'entry');
  }
  const exitRefused = exit && notCarrying('exit', exit, community);
  if (exitRefused) return exitRefused;
  const entryRefused = entry && notCarrying('entry', entry, community);
  if (entryRefused) return entryRefused;
  if (exit && !exit.live) return notLive('exit', exit.id);
  if (entry && !entry.live) return notLive('entry', entry.id);
  if (!exit) {
    const x = regionExit(req.exitRegion!, entry?.id ?? null, relays, community);
    if (!x.ok) return x;
    exit = x.value;
  }
  if (!entry) {
    const chosen = exit;
    const candidates = relays.filter(
      (r) => r.live && r.id !== chosen.id && carriesClients(r, community) && !(req.mode === 'standard' && r.class === 'community'),
    );
    if (!candidates.length) return refuse(409, 'relay_unavailable', `no live relay other than the exit ${chosen.id} can be the entry`, 'entry');
    entry = leastLoaded(candidates, (r) => r.entrySessions);
  }
  return { ok: true, value: { entry, exit } };
}

/**
 * switch-exit: the new exit of a session entering at `entryId` that leaves at `currentExitId` now.
 * `unchanged` when the choice is the current exit (a region whose live relays include the current
 * exit keeps it).
 */
export function chooseNewExit(
  session: { entryId: string; exitId: string; community?: boolean },
  want: ExitChoice,
  relays: RelayCandidate[],
): Choice<{ exit: RelayCandidate | null; unchanged: boolean }> {
  const community = session.community ?? false;
  const wantExit = want.exit;
  if (wantExit !== undefined) {
    if (wantExit === session.exitId) return { ok: true, value: { exit: relays.find((r) => r.id === wantExit) ?? null, unchanged: true } };
    const x = relays.find((r) => r.id === wantExit);
    if (!x) return unknownRelay('exit', wantExit);
    if (x.id === session.entryId) return oneHop(x.id, 'exit');
    const refused = notCarrying('exit', x, community);
    if (refused) return refused;
    if (!x.live) return notLive('exit', x.id);
    return { ok: true, value: { exit: x, unchanged: false } };
  }
  const current = relays.find((r) => r.id === session.exitId);
  if (current?.live && current.region === want.exitRegion && carriesClients(current, community)) return { ok: true, value: { exit: current, unchanged: true } };
  const x = regionExit(want.exitRegion!, session.entryId, relays, community);
  if (!x.ok) return x;
  return { ok: true, value: { exit: x.value, unchanged: false } };
}

// ---------------------------------------------------------------------------------------------
// Who may see a session

/** A session row as the functions read it. */
export interface StoredSession extends ClientSession {
  owner: string | null;
  status: 'open' | 'closed';
  confirmedExitId: string | null;
  confirmedAt: string | null;
  /** A private session's exit that confirmed it carries the session (null: none yet, or standard). */
  exitConfirmedId: string | null;
  closedAt: string | null;
  closeReason: ClientSessionCloseReason | null;
  /** Open but past its expiry (the next sweep closes it). */
  expired: boolean;
  /** It may have community relays on its path (connect-client's `community`). */
  community: boolean;
}

/** The service role sees every session, a user its own, a relay those that concern it (entering there, or private ones leaving there). */
export function maySee(p: Principal, s: Pick<StoredSession, 'owner' | 'entryId' | 'exitId' | 'mode'>): boolean {
  if (p.role === 'service_role') return true;
  if (p.role === 'user') return s.owner === p.userId;
  return s.entryId === p.relayId || (s.mode === 'private' && s.exitId === p.relayId);
}

/**
 * Whether a session is programmed where it must be for its current exit: its entry confirmed that exit
 * (client-ready), and a private session's exit confirmed that it carries the session's peer.
 */
export function isConfirmed(s: Pick<StoredSession, 'mode' | 'exitId' | 'confirmedExitId' | 'exitConfirmedId'>): boolean {
  return s.confirmedExitId === s.exitId && (s.mode === 'standard' || s.exitConfirmedId === s.exitId);
}

/** The owner recorded for a session a principal opens: a user's `sub`, else null. */
export function ownerOf(p: Principal): string | null {
  return p.role === 'user' ? p.userId : null;
}

/** 404: no such session, or not one this token may see (the two are not told apart). */
export function unknownSession(by: { sessionId: string } | { publicKey: string }): HttpError {
  return 'sessionId' in by
    ? new HttpError(404, 'unknown_session', `there is no session ${by.sessionId} (or it is not yours)`, 'sessionId')
    : new HttpError(404, 'unknown_session', 'there is no session of this public key (or it is not yours)', 'publicKey');
}

export function sessionClosed(s: Pick<StoredSession, 'id' | 'closeReason'>): HttpError {
  return new HttpError(409, 'session_closed', `session ${s.id} is closed${s.closeReason ? ` (${s.closeReason})` : ''}`, 'sessionId');
}

/**
 * A list-clients item: the session record and its bookkeeping. `owner` (a user id) only for the
 * service role and users (who see only their own): a relay token never learns who a client is.
 */
export function listItem(
  s: StoredSession,
  p: Principal,
): ClientSession & {
  status: 'open' | 'closed';
  confirmed: boolean;
  owner?: string | null;
  closedAt: string | null;
  closeReason: ClientSessionCloseReason | null;
} {
  return {
    ...sessionRecord(s),
    status: s.status,
    confirmed: isConfirmed(s),
    ...(p.role === 'relay' ? {} : { owner: s.owner }),
    closedAt: s.closedAt,
    closeReason: s.closeReason,
  };
}

// ---------------------------------------------------------------------------------------------
// What the client gets

export interface ClientConfig {
  /** The client's address with its prefix, `a.b.c.d/32`. */
  address: string;
  /** Its IPv6 address, `<client_prefix6 with the IPv4 address>/128`; null when the network has no client IPv6. */
  address6: string | null;
  dns: string[];
  mtu: number;
  keepaliveSeconds: number;
  peer: { publicKey: string; endpoint: string; allowedIps: string[] };
}

/**
 * The client's tunnel: its /32 (and /128), the settings, and its only peer. All of IPv4 and IPv6 goes
 * through it (`::/0` even without client IPv6: the tunnel then drops it, so a client's IPv6 never
 * leaves by its own link around the tunnel).
 *
 * Standard: the peer is the entry relay, at its endpoint. Private: the peer is the exit relay (its
 * key), reached at the entry's address on the session's port there (src/contract/private-sessions.ts),
 * and the MTU leaves room for the client's datagrams inside the mesh link (`client_mtu - 60`).
 */
export function clientConfig(
  session: { address: string; mode: SessionMode },
  relays: { entry: { publicKey: string; endpoint: string; clientPool: string }; exit: { publicKey: string } },
  s: Pick<ClientSettings, 'dns' | 'mtu' | 'keepaliveSeconds' | 'prefix6'>,
): ClientConfig {
  const { address, mode } = session;
  const peer = mode === 'private' ? { publicKey: relays.exit.publicKey, endpoint: privateEndpoint(relays.entry, address) } : relays.entry;
  return {
    address: `${address}/32`,
    address6: s.prefix6 ? `${embedIpv4In6(s.prefix6, address)}/128` : null,
    dns: [...s.dns],
    mtu: mode === 'private' ? privateMtu(s.mtu) : s.mtu,
    keepaliveSeconds: s.keepaliveSeconds,
    peer: { publicKey: peer.publicKey, endpoint: peer.endpoint, allowedIps: ['0.0.0.0/0', '::/0'] },
  };
}

/** Where a private client sends its datagrams: the entry's host, on the session's port there. Throws when there is none (checked before the session is opened). */
function privateEndpoint(entry: { endpoint: string; clientPool: string }, address: string): string {
  const p = privateEntryPort(entry, address);
  if ('error' in p) throw new Error(`no private port for ${address} at entry ${entry.endpoint}: ${p.error}`);
  return `${entry.endpoint.slice(0, entry.endpoint.lastIndexOf(':'))}:${p.port}`;
}

/** The line the client's private key goes into; the control plane never sees client private keys. */
export const PRIVATE_KEY_PLACEHOLDER = '# PrivateKey = <your private key>';

/** A wg-quick file of the configuration (PersistentKeepalive only when it is on). */
export function renderWgQuick(c: ClientConfig): string {
  const lines = ['[Interface]', PRIVATE_KEY_PLACEHOLDER, `Address = ${c.address6 ? `${c.address}, ${c.address6}` : c.address}`];
  if (c.dns.length) lines.push(`DNS = ${c.dns.join(', ')}`);
  lines.push(
    `MTU = ${c.mtu}`,
    '',
    '[Peer]',
    `PublicKey = ${c.peer.publicKey}`,
    `Endpoint = ${c.peer.endpoint}`,
    `AllowedIPs = ${c.peer.allowedIps.join(', ')}`,
  );
  if (c.keepaliveSeconds > 0) lines.push(`PersistentKeepalive = ${c.keepaliveSeconds}`);
  return lines.join('\n') + '\n';
}
