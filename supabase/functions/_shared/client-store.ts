// Database side of the client sessions (relaynet.client_sessions, supabase/migrations). Mutations run
// inside the caller's transaction, which has locked the topology row first (store.lockTopology): that
// serialises them with every other change and keeps the revisions of their events contiguous.
import { isConfirmed, type ClientSettings, type RelayCandidate, type StoredSession } from './clients.ts';
import type { Sql, Tx } from './db.ts';
import type { SigningKey } from './sign.ts';
import { appendEvents, iso } from './store.ts';
import type { ClientSession, ClientSessionCloseReason, RelayClass, RelayState, SessionMode } from '../../../src/contract/topology.events.ts';
import { sessionRecord, type BuiltEvent } from './topology-events.ts';

type Db = Sql | Tx;

const isoOrNull = (t: unknown) => (t === null || t === undefined ? null : iso(t));

export async function clientSettings(tx: Db): Promise<ClientSettings> {
  const [s] = await tx`select client_mtu, client_dns::text[] as client_dns, client_keepalive_seconds, session_ttl_seconds,
                              max_session_ttl_seconds, confirm_timeout_seconds, relay_liveness_seconds,
                              client_prefix6::text as client_prefix6 from relaynet.settings`;
  if (!s) throw new Error('relaynet.settings has no row; are the migrations applied?');
  return {
    mtu: Number(s.client_mtu),
    dns: (s.client_dns as string[]).map(String),
    keepaliveSeconds: Number(s.client_keepalive_seconds),
    sessionTtlSeconds: Number(s.session_ttl_seconds),
    maxSessionTtlSeconds: Number(s.max_session_ttl_seconds),
    confirmTimeoutSeconds: Number(s.confirm_timeout_seconds),
    relayLivenessSeconds: s.relay_liveness_seconds === null ? null : Number(s.relay_liveness_seconds),
    prefix6: s.client_prefix6 === null ? null : String(s.client_prefix6),
  };
}

/** Every active relay with its liveness (heard from within `livenessSeconds`) and its open sessions. */
export async function relayCandidates(tx: Db, livenessSeconds: number): Promise<RelayCandidate[]> {
  const rows = await tx`
    select r.id, r.name, r.region, r.public_key, r.endpoint, r.client_pool::text as client_pool,
           r.last_seen >= clock_timestamp() - ${livenessSeconds}::int * interval '1 second' as live,
           (select count(*) from relaynet.client_sessions s where s.status = 'open' and s.entry_id = r.id)::int as entry_sessions,
           (select count(*) from relaynet.client_sessions s where s.status = 'open' and s.exit_id = r.id)::int as exit_sessions,
           coalesce(st.class, 'core') as class, coalesce(st.state, 'active') as state, c.bytes_per_second as capacity
    from relaynet.relays r
    left join relaynet.relay_standing st on st.relay_id = r.id
    left join relaynet.pob_capacity c on c.relay_id = r.id
    where r.status = 'active' order by r.id`;
  return rows.map((r) => ({
    id: r.id,
    name: r.name,
    region: r.region,
    publicKey: r.public_key,
    endpoint: r.endpoint,
    clientPool: r.client_pool,
    live: r.live === true,
    entrySessions: Number(r.entry_sessions),
    exitSessions: Number(r.exit_sessions),
    class: r.class as RelayClass,
    state: r.state as RelayState,
    capacity: r.capacity === null || r.capacity === undefined ? null : Number(r.capacity),
  }));
}

/** The addresses open sessions hold inside `pool`. */
export async function takenClientAddresses(tx: Db, pool: string): Promise<string[]> {
  const rows = await tx`select host(address) as address from relaynet.client_sessions where status = 'open' and address <<= ${pool}::cidr`;
  return rows.map((r) => r.address as string);
}

const SESSION_COLUMNS = `id::text as id, owner, entry_id, exit_id, public_key, host(address) as address, mode, community, status, opened_at, expires_at,
  confirmed_exit_id, confirmed_at, exit_confirmed_id, closed_at, close_reason, (status = 'open' and expires_at <= clock_timestamp()) as expired`;

function toSession(r: Record<string, unknown>): StoredSession {
  return {
    id: r.id as string,
    entryId: r.entry_id as string,
    exitId: r.exit_id as string,
    publicKey: r.public_key as string,
    address: r.address as string,
    mode: r.mode as SessionMode,
    community: r.community === true,
    openedAt: iso(r.opened_at),
    expiresAt: iso(r.expires_at),
    owner: (r.owner as string | null) ?? null,
    status: r.status as 'open' | 'closed',
    confirmedExitId: (r.confirmed_exit_id as string | null) ?? null,
    confirmedAt: isoOrNull(r.confirmed_at),
    exitConfirmedId: (r.exit_confirmed_id as string | null) ?? null,
    closedAt: isoOrNull(r.closed_at),
    closeReason: (r.close_reason as ClientSessionCloseReason | null) ?? null,
    expired: r.expired === true,
  };
}

/** What a client's answer says about a relay: identity, and how to reach it (a private client: its port from the entry's pool). */
export interface RelayInfo {
  id: string;
  name: string;
  region: string;
  publicKey: string;
  endpoint: string;
  clientPool: string;
}

export async function relayInfo(db: Db, id: string): Promise<RelayInfo | null> {
  const [r] = await db`select id, name, region, public_key, endpoint, client_pool::text as client_pool from relaynet.relays where id = ${id}`;
  return r ? { id: r.id, name: r.name, region: r.region, publicKey: r.public_key, endpoint: r.endpoint, clientPool: r.client_pool } : null;
}

/** The record the topology carries (ClientSessionSchema). */
export const recordOf = sessionRecord;

export async function sessionById(db: Db, id: string): Promise<StoredSession | null> {
  const [r] = await db.unsafe(`select ${SESSION_COLUMNS} from relaynet.client_sessions where id = $1::uuid`, [id]);
  return r ? toSession(r) : null;
}

/** The open session of a client key, if any. */
export async function openSessionOfKey(db: Db, publicKey: string): Promise<StoredSession | null> {
  const [r] = await db.unsafe(`select ${SESSION_COLUMNS} from relaynet.client_sessions where public_key = $1 and status = 'open'`, [publicKey]);
  return r ? toSession(r) : null;
}

/** Every session of a client key, the latest first. */
export async function sessionsOfKey(db: Db, publicKey: string): Promise<StoredSession[]> {
  const rows = await db.unsafe(`select ${SESSION_COLUMNS} from relaynet.client_sessions where public_key = $1 order by opened_at desc, id`, [publicKey]);
  return rows.map(toSession);
}

/**
 * The open sessions that concern a relay, as records: those entering at it, and the private ones
 * leaving at it (what a registering relay is handed: the others do not concern it), by opening time.
 */
export async function openSessionRecords(db: Db, relayId: string): Promise<ClientSession[]> {
  const rows = await db.unsafe(
    `select ${SESSION_COLUMNS} from relaynet.client_sessions
     where status = 'open' and (entry_id = $1 or (mode = 'private' and exit_id = $1)) order by opened_at, id`,
    [relayId],
  );
  return rows.map((r) => recordOf(toSession(r)));
}

/**
 * Record a new open session. Opening and expiry times are the database clock at millisecond
 * precision, so the stored row and the event's ISO timestamps are the same instant.
 */
export async function insertSession(
  tx: Tx,
  s: {
    id: string;
    owner: string | null;
    entryId: string;
    exitId: string;
    publicKey: string;
    address: string;
    mode: SessionMode;
    community: boolean;
    ttlSeconds: number;
  },
): Promise<StoredSession> {
  const [r] = await tx.unsafe(
    `insert into relaynet.client_sessions (id, owner, entry_id, exit_id, public_key, address, mode, community, status, opened_at, expires_at)
     select $1::uuid, $2::text, $3::text, $4::text, $5::text, $6::inet, $8::text, $9::boolean, 'open', n.t, n.t + $7::int * interval '1 second'
     from (select date_trunc('milliseconds', clock_timestamp()) as t) n
     returning ${SESSION_COLUMNS}`,
    [s.id, s.owner, s.entryId, s.exitId, s.publicKey, s.address, s.ttlSeconds, s.mode, s.community],
  );
  return toSession(r!);
}

/** Close sessions with `reason` and append one ClientSessionClosed each, in the order given. */
export async function closeSessions(
  tx: Tx,
  sessions: StoredSession[],
  reason: ClientSessionCloseReason,
  key: SigningKey,
  causationId: string | null,
): Promise<BuiltEvent[]> {
  for (const s of sessions) {
    await tx`update relaynet.client_sessions set status = 'closed', closed_at = greatest(clock_timestamp(), opened_at), close_reason = ${reason}
             where id = ${s.id}::uuid and status = 'open'`;
  }
  return appendEvents(
    tx,
    sessions.map((s) => ({ type: 'ClientSessionClosed' as const, sessionId: s.id, entryId: s.entryId, reason })),
    null,
    key,
    causationId,
  );
}

/** Close every open session past its expiry (reason `expired`), oldest expiry first. */
export async function closeExpired(tx: Tx, key: SigningKey, causationId: string | null): Promise<BuiltEvent[]> {
  const rows = await tx.unsafe(
    `select ${SESSION_COLUMNS} from relaynet.client_sessions where status = 'open' and expires_at <= clock_timestamp() order by expires_at, id`,
  );
  return rows.length ? closeSessions(tx, rows.map(toSession), 'expired', key, causationId) : [];
}

/** Close every open session entering at a relay that leaves (reason `entry-left`). */
export async function closeEntrySessions(tx: Tx, entryId: string, key: SigningKey, causationId: string | null): Promise<BuiltEvent[]> {
  const rows = await tx.unsafe(`select ${SESSION_COLUMNS} from relaynet.client_sessions where status = 'open' and entry_id = $1 order by opened_at, id`, [
    entryId,
  ]);
  return rows.length ? closeSessions(tx, rows.map(toSession), 'entry-left', key, causationId) : [];
}

/** The open sessions entering or leaving at a relay, oldest first. */
export async function openSessionsAt(tx: Tx, relayId: string): Promise<StoredSession[]> {
  const rows = await tx.unsafe(
    `select ${SESSION_COLUMNS} from relaynet.client_sessions where status = 'open' and (entry_id = $1 or exit_id = $1) order by opened_at, id`,
    [relayId],
  );
  return rows.map(toSession);
}

/** Steer a session to another exit; neither the entry nor (private) the new exit has confirmed it yet. */
export async function setExit(tx: Tx, id: string, exitId: string): Promise<StoredSession> {
  const [r] = await tx.unsafe(
    `update relaynet.client_sessions set exit_id = $2, confirmed_exit_id = null, confirmed_at = null, exit_confirmed_id = null
     where id = $1::uuid and status = 'open' returning ${SESSION_COLUMNS}`,
    [id, exitId],
  );
  if (!r) throw new Error(`session ${id} is not open after it was checked`);
  return toSession(r);
}

/** The entry confirmed that it steers the session to `exitId` (its current exit). */
export async function confirmExit(tx: Tx, id: string, exitId: string): Promise<void> {
  await tx`update relaynet.client_sessions
           set confirmed_at = case when confirmed_exit_id = ${exitId} then confirmed_at else clock_timestamp() end, confirmed_exit_id = ${exitId}
           where id = ${id}::uuid and status = 'open' and exit_id = ${exitId}`;
}

/** A private session's exit confirmed that it carries the session's peer (it is the session's current exit). */
export async function confirmExitSide(tx: Tx, id: string, exitId: string): Promise<void> {
  await tx`update relaynet.client_sessions set exit_confirmed_id = ${exitId}
           where id = ${id}::uuid and status = 'open' and mode = 'private' and exit_id = ${exitId}`;
}

/** Sessions as list-clients shows them: all, or those of an owner and/or an entry; open only unless asked. */
export async function listSessions(db: Db, f: { owner?: string; entry?: string; includeClosed: boolean }): Promise<StoredSession[]> {
  const where: string[] = [];
  const params: string[] = [];
  if (f.owner !== undefined) {
    params.push(f.owner);
    where.push(`owner = $${params.length}`);
  }
  if (f.entry !== undefined) {
    params.push(f.entry);
    where.push(`entry_id = $${params.length}`);
  }
  if (!f.includeClosed) where.push(`status = 'open'`);
  const rows = await db.unsafe(
    `select ${SESSION_COLUMNS} from relaynet.client_sessions ${where.length ? `where ${where.join(' and ')}` : ''} order by opened_at, id`,
    params,
  );
  return rows.map(toSession);
}

export type WaitOutcome = { kind: 'confirmed'; session: StoredSession } | { kind: 'closed'; session: StoredSession } | { kind: 'timeout' };

/** How a wait learnt its outcome: the first read, a notification (LISTEN), or a later read of the row (poll). */
export type WokenBy = 'first-read' | 'notification' | 'poll';

/** The channel the trigger of migration 20261213000000 notifies on, with the session id. */
const SESSION_CHANNEL = 'relaynet_client_session';
/** Waits of this function instance by session id, woken by a notification. */
const waiters = new Map<string, Set<() => void>>();
let listening: Promise<boolean> | null = null;

/** LISTEN once per function instance (postgres.js keeps a connection of its own for it); false if it cannot. */
function listen(sql: Sql): Promise<boolean> {
  listening ??= sql
    .listen(SESSION_CHANNEL, (id) => {
      for (const wake of waiters.get(id) ?? []) wake();
    })
    .then(
      () => true,
      (e: unknown) => {
        console.error(JSON.stringify({ level: 50, msg: 'cannot LISTEN for session confirmations; reading the rows instead', err: String(e) }));
        listening = null;
        return false;
      },
    );
  return listening;
}

/**
 * Wait until the session is confirmed ({@link isConfirmed}: its entry, and a private one's exit, confirmed
 * its current exit) or it closed, for at most `timeoutMs`; outside any transaction. With `notify` (RELAYNET_DB_LISTEN) a
 * notification wakes the wait at once and the row is read again only every second, as a safety net
 * (a notification lost with a dropped connection); without, the row is read every `pollMs`.
 */
export async function waitConfirmed(
  sql: Sql,
  id: string,
  timeoutMs: number,
  o: { notify: boolean; pollMs?: number },
): Promise<{ outcome: WaitOutcome; by: WokenBy }> {
  const deadline = Date.now() + timeoutMs;
  let wake: (() => void) | null = null;
  let notified = false;
  const onNotify = () => {
    notified = true;
    wake?.();
  };
  const mine = waiters.get(id) ?? new Set();
  mine.add(onNotify);
  waiters.set(id, mine);
  try {
    // Listening before the first read: a confirmation committed in between is not missed.
    const pollMs = o.notify && (await listen(sql)) ? 1_000 : (o.pollMs ?? 100);
    for (let read = 0; ; read++) {
      const woken = notified;
      notified = false;
      const s = await sessionById(sql, id);
      if (!s) throw new Error(`session ${id} vanished`);
      const by: WokenBy = read === 0 ? 'first-read' : woken ? 'notification' : 'poll';
      if (s.status === 'closed') return { outcome: { kind: 'closed', session: s }, by };
      if (isConfirmed(s)) return { outcome: { kind: 'confirmed', session: s }, by };
      const left = deadline - Date.now();
      if (left <= 0) return { outcome: { kind: 'timeout' }, by };
      if (notified) continue;
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(pollMs, left));
        wake = () => {
          clearTimeout(t);
          r();
        };
      });
      wake = null;
    }
  } finally {
    mine.delete(onNotify);
    if (mine.size === 0) waiters.delete(id);
  }
}
