// Database side of the functions (schema relaynet, supabase/migrations). Every mutating call runs in
// one transaction that first locks the topology row (lockTopology), which serialises all changes and
// keeps revisions contiguous: each event bumps the revision once and lands in the outbox with it.
import type { StoredRelay } from './admission.ts';
import type { AddressPlan } from './addresses.ts';
import type { Sql, Tx } from './db.ts';
import { importSigningKey, signPayload, type SigningKey } from './sign.ts';
import { HttpError } from './http.ts';
import type { Principal } from './jwt.ts';
import { REPORT_GRACE_SECONDS } from '../../../src/contract/pob-measure.ts';
import { buildTopologyEvent, eventData, type BuiltEvent, type EventSpec, type RelayRecord } from './topology-events.ts';

export interface Revision {
  revision: number;
  revisionTime: string;
  /** The control plane's epoch: the identity of this database's topology history (docs/control-plane.md, "Epochs"). */
  epoch: string;
}

let signingKey: { seed: string; key: Promise<SigningKey> } | null = null;

/** The control plane's Ed25519 key, imported once per function instance. */
export function topologySigningKey(seed: string): Promise<SigningKey> {
  if (signingKey?.seed !== seed) {
    const key = importSigningKey(seed);
    key.catch(() => {
      signingKey = null;
    });
    signingKey = { seed, key };
  }
  return signingKey.key;
}

/** A timestamp from the database (a Date, or its text) as an ISO string. */
export const iso = (t: unknown) => (t instanceof Date ? t : new Date(String(t))).toISOString();

/** Lock the topology row (first statement of every mutating transaction); returns the current revision. */
export async function lockTopology(tx: Tx): Promise<Revision> {
  const [row] = await tx`select revision, updated_at, epoch::text as epoch from relaynet.topology for update`;
  if (!row) throw new Error('relaynet.topology has no row; are the migrations applied?');
  return { revision: Number(row.revision), revisionTime: iso(row.updated_at), epoch: row.epoch };
}

/**
 * Take the topology lock only if no other transaction holds it; null when one does (the caller leaves
 * what needed it to that transaction's owner or a later call). Never waits.
 */
export async function tryLockTopology(tx: Tx): Promise<Revision | null> {
  const [row] = await tx`select revision, updated_at, epoch::text as epoch from relaynet.topology for update skip locked`;
  return row ? { revision: Number(row.revision), revisionTime: iso(row.updated_at), epoch: row.epoch } : null;
}

export async function currentRevision(tx: Sql | Tx): Promise<Revision> {
  const [row] = await tx`select revision, updated_at, epoch::text as epoch from relaynet.topology`;
  return { revision: Number(row!.revision), revisionTime: iso(row!.updated_at), epoch: row!.epoch };
}

export async function storedRelay(tx: Sql | Tx, id: string): Promise<StoredRelay | null> {
  const [r] = await tx`select id, name, region, public_key, endpoint, exit_ipv6, identity_key, status from relaynet.relays where id = ${id}`;
  return r
    ? {
        id: r.id,
        name: r.name,
        region: r.region,
        publicKey: r.public_key,
        endpoint: r.endpoint,
        exitIpv6: r.exit_ipv6,
        identityKey: r.identity_key ?? null,
        status: r.status,
      }
    : null;
}

/** Another active relay that uses `publicKey`, if any. */
export async function keyHolder(tx: Tx, publicKey: string, relayId: string): Promise<string | null> {
  const [r] = await tx`select id from relaynet.relays where public_key = ${publicKey} and status = 'active' and id <> ${relayId} limit 1`;
  return r ? (r.id as string) : null;
}

export async function addressPlan(tx: Tx): Promise<AddressPlan> {
  const [s] = await tx`select mesh_cidr::text as mesh_cidr, client_supernet::text as client_supernet, client_pool_prefix from relaynet.settings`;
  if (!s) throw new Error('relaynet.settings has no row; are the migrations applied?');
  return { meshCidr: s.mesh_cidr, clientSupernet: s.client_supernet, clientPoolPrefix: Number(s.client_pool_prefix) };
}

/** Addresses held now (by active relays; a relay that left holds none). */
export async function heldAddresses(tx: Tx): Promise<{ mesh: string[]; pools: string[] }> {
  const rows =
    await tx`select host(mesh_address) as mesh, client_pool::text as pool from relaynet.relays where mesh_address is not null or client_pool is not null`;
  return { mesh: rows.map((r) => r.mesh).filter(Boolean), pools: rows.map((r) => r.pool).filter(Boolean) };
}

const RECORD_COLUMNS = 'id, name, region, public_key, endpoint, host(mesh_address) as mesh_address, client_pool::text as client_pool, exit_ipv6';

function toRecord(r: Record<string, unknown>): RelayRecord {
  return {
    id: r.id as string,
    name: r.name as string,
    region: r.region as string,
    publicKey: r.public_key as string,
    endpoint: r.endpoint as string,
    meshAddress: r.mesh_address as string,
    clientPool: r.client_pool as string,
    exitIpv6: r.exit_ipv6 === true,
  };
}

export async function relayRecord(tx: Tx, id: string): Promise<RelayRecord> {
  const [r] = await tx.unsafe(`select ${RECORD_COLUMNS} from relaynet.relays where id = $1 and status = 'active'`, [id]);
  if (!r) throw new Error(`relay ${id} is not active after it was recorded`);
  return toRecord(r);
}

/** Every active relay but `except`, by id. */
export async function activeRelays(tx: Tx, except: string): Promise<RelayRecord[]> {
  const rows = await tx.unsafe(`select ${RECORD_COLUMNS} from relaynet.relays where status = 'active' and id <> $1 order by id`, [except]);
  return rows.map(toRecord);
}

/** Admit (or re-admit after leaving) with fresh addresses; the relay's key history gets the key. */
export async function recordAdmission(
  tx: Tx,
  r: {
    relayId: string;
    name: string;
    region: string;
    publicKey: string;
    endpoint: string;
    exitIpv6: boolean;
    meshAddress: string;
    clientPool: string;
    identityKey?: string | undefined;
  },
): Promise<void> {
  // Sent before the key history's statements (`execute`: postgres.js sends a query when it is awaited).
  const insert = tx`
    insert into relaynet.relays (id, name, region, public_key, endpoint, exit_ipv6, identity_key, status, mesh_address, client_pool, admitted_at, last_seen, left_at)
    values (${r.relayId}, ${r.name}, ${r.region}, ${r.publicKey}, ${r.endpoint}, ${r.exitIpv6}, ${r.identityKey ?? null}, 'active', ${r.meshAddress}::inet, ${r.clientPool}::cidr,
            clock_timestamp(), clock_timestamp(), null)
    on conflict (id) do update set name = excluded.name, region = excluded.region, public_key = excluded.public_key,
      endpoint = excluded.endpoint, exit_ipv6 = excluded.exit_ipv6, identity_key = coalesce(excluded.identity_key, relaynet.relays.identity_key), status = 'active', mesh_address = excluded.mesh_address, client_pool = excluded.client_pool,
      admitted_at = excluded.admitted_at, last_seen = excluded.last_seen, left_at = null`.execute();
  await Promise.all([insert, rotateKey(tx, r.relayId, r.publicKey)]);
}

/** The relay's key history: the open entry closed and one for `publicKey` opened, in one round trip (pipelined, run in order). */
async function rotateKey(tx: Tx, relayId: string, publicKey: string): Promise<void> {
  await Promise.all([
    closeKey(tx, relayId),
    tx`insert into relaynet.relay_keys (relay_id, public_key, valid_from) values (${relayId}, ${publicKey}, clock_timestamp())`,
  ]);
}

/** Re-admission of an active relay: name, region, key, endpoint and IPv6 exit as requested. */
export async function recordReadmission(
  tx: Tx,
  r: { relayId: string; name: string; region: string; publicKey: string; endpoint: string; exitIpv6: boolean; identityKey?: string | undefined },
  keyRotated: boolean,
): Promise<void> {
  const update =
    tx`update relaynet.relays set name = ${r.name}, region = ${r.region}, public_key = ${r.publicKey}, endpoint = ${r.endpoint}, exit_ipv6 = ${r.exitIpv6},
           identity_key = coalesce(${r.identityKey ?? null}, identity_key), last_seen = clock_timestamp() where id = ${r.relayId}`.execute();
  await Promise.all([update, keyRotated ? rotateKey(tx, r.relayId, r.publicKey) : null]);
}

/** The relay leaves: addresses freed, key closed. */
export async function recordLeave(tx: Tx, relayId: string): Promise<void> {
  await tx`update relaynet.relays set status = 'left', mesh_address = null, client_pool = null, left_at = clock_timestamp()
           where id = ${relayId}`;
  await closeKey(tx, relayId);
}

/**
 * 403 `banned` when `relayId` is banned: its tokens stop working and it cannot register again; 401
 * `token_revoked` when the caller's relay token is revoked by its jti.
 */
export async function refuseBanned(sql: Sql | Tx, relayId: string, principal: Principal): Promise<void> {
  const row = (await sql<{ reason: string }[]>`select reason from relaynet.relay_bans where relay_id = ${relayId}`)[0];
  if (row)
    throw new HttpError(403, 'banned', `relay ${relayId} is banned${row.reason ? ` (${row.reason})` : ''}; an operator lifts it with 'relay-core relay unban'`);
  if (principal.role !== 'relay') return;
  // One relay token stopped on its own (`relay-core token revoke`): its relay's other tokens still work.
  const revoked = (await sql<{ reason: string }[]>`select reason from relaynet.revoked_tokens where jti = ${principal.jti}::uuid`)[0];
  if (revoked)
    throw new HttpError(
      401,
      'token_revoked',
      `this relay token (jti ${principal.jti}) is revoked${revoked.reason ? ` (${revoked.reason})` : ''}; the relay needs a new one`,
    );
}

/** Revoke one relay token by its jti; false when it was revoked already. */
export async function recordRevokedToken(tx: Sql | Tx, jti: string, reason: string): Promise<boolean> {
  const rows = await tx`insert into relaynet.revoked_tokens (jti, reason) values (${jti}::uuid, ${reason})
    on conflict (jti) do nothing returning jti`;
  return rows.length > 0;
}

/** Record a ban; false when the relay was banned already. */
export async function recordBan(tx: Tx, relayId: string, reason: string): Promise<boolean> {
  return (
    (await tx`insert into relaynet.relay_bans (relay_id, reason) values (${relayId}, ${reason}) on conflict (relay_id) do nothing returning relay_id`).length >
    0
  );
}

/** Forget a relay's recorded identity key (`relay unban --forget-identity`); false when it had none. */
export async function forgetIdentity(tx: Tx, relayId: string): Promise<boolean> {
  return (await tx`update relaynet.relays set identity_key = null where id = ${relayId} and identity_key is not null returning id`).length > 0;
}

/** Lift a ban; false when there was none. */
export async function liftBan(tx: Tx, relayId: string): Promise<boolean> {
  return (await tx`delete from relaynet.relay_bans where relay_id = ${relayId} returning relay_id`).length > 0;
}

/** The nkey the relay's NATS user JWTs are issued for (null: token mode). */
export async function recordBusKey(tx: Tx, relayId: string, busKey: string | null): Promise<void> {
  await tx`update relaynet.relays set bus_key = ${busKey} where id = ${relayId}`;
}

/** The nkey a relay registered for the bus, or null. */
export async function busKeyOf(tx: Tx, relayId: string): Promise<string | null> {
  return (await tx<{ bus_key: string | null }[]>`select bus_key from relaynet.relays where id = ${relayId}`)[0]?.bus_key ?? null;
}

/**
 * A heartbeat: last_seen of an active relay, in one statement (no topology lock). False when the relay
 * is not active (unknown, left, or expired by a sweep that got there first).
 */
export async function touchActive(sql: Sql | Tx, relayId: string): Promise<boolean> {
  const rows = await sql`update relaynet.relays set last_seen = clock_timestamp() where id = ${relayId} and status = 'active' returning id`;
  return rows.length > 0;
}

/**
 * Whether a sweep has anything to do: an open session past its expiry, an active relay silent past
 * `expireSeconds`, or a measurement past its end and grace with reports missing. Reads only.
 */
export async function sweepDue(sql: Sql | Tx, expireSeconds: number): Promise<boolean> {
  const [r] = await sql`select exists (select 1 from relaynet.client_sessions where status = 'open' and expires_at <= clock_timestamp())
                            or exists (select 1 from relaynet.relays where status = 'active'
                                       and last_seen < clock_timestamp() - make_interval(secs => ${expireSeconds}))
                            or exists (select 1 from relaynet.pob_measurements where state = 'scheduled'
                                       and starts_at + make_interval(secs => seconds + ${REPORT_GRACE_SECONDS}) < clock_timestamp()) as due`;
  return r!.due === true;
}

/**
 * The active relays silent for more than `seconds`, oldest first, their rows locked (a heartbeat that
 * touched one meanwhile takes it out of the list: the condition is checked again on the locked row).
 */
export async function silentRelays(tx: Tx, seconds: number): Promise<string[]> {
  const rows = await tx<{ id: string }[]>`select id from relaynet.relays where status = 'active'
                                           and last_seen < clock_timestamp() - make_interval(secs => ${seconds})
                                           order by last_seen, id for update`;
  return rows.map((r) => r.id);
}

/** relay_expire_seconds (null: the default, 30 heartbeat intervals). */
export async function relayExpireSetting(sql: Sql | Tx): Promise<number | null> {
  const [r] = await sql<{ s: number | null }[]>`select relay_expire_seconds as s from relaynet.settings`;
  return r?.s === null || r?.s === undefined ? null : Number(r.s);
}

export async function touch(tx: Tx, relayId: string): Promise<void> {
  await tx`update relaynet.relays set last_seen = clock_timestamp() where id = ${relayId}`;
}

async function closeKey(tx: Tx, relayId: string): Promise<void> {
  await tx`update relaynet.relay_keys set valid_to = clock_timestamp() where relay_id = ${relayId} and valid_to is null`;
}

/**
 * Append events to the outbox: one statement takes their revisions (the revision moves once per event;
 * they share the revision time), each envelope is built and its JSON signed, and their rows are
 * inserted together (pipelined). `relay` is the record RelayAdmitted carries.
 */
export async function appendEvents(tx: Tx, specs: EventSpec[], relay: RelayRecord | null, key: SigningKey, causationId: string | null): Promise<BuiltEvent[]> {
  if (specs.length === 0) return [];
  for (const spec of specs) {
    if (spec.type === 'RelayAdmitted' && !relay) throw new Error('RelayAdmitted needs the relay record');
    if (spec.type === 'RelayLeft') {
      // Sessions entering at a relay end before it leaves (client-store.closeEntrySessions, reason entry-left).
      const [n] = await tx`select count(*)::int as n from relaynet.client_sessions where status = 'open' and entry_id = ${spec.relayId}`;
      if (n!.n > 0) throw new Error(`RelayLeft for ${spec.relayId} while ${n!.n} open session(s) still enter at it; close them first`);
    }
  }
  const [t] =
    await tx`update relaynet.topology set revision = revision + ${specs.length}, updated_at = clock_timestamp() returning revision, updated_at, epoch::text as epoch`;
  const first = Number(t!.revision) - specs.length + 1;
  const time = iso(t!.updated_at);
  const built = specs.map((spec, i) => buildTopologyEvent(eventData(spec, first + i, relay), { id: crypto.randomUUID(), time, causationId, epoch: t!.epoch }));
  const signatures = await Promise.all(built.map((b) => signPayload(key, b.payload)));
  await Promise.all(
    built.map(
      (b, i) => tx`insert into relaynet.topology_events (revision, event_id, type, subject, payload, signature, created_at)
                   values (${first + i}, ${b.id}::uuid, ${b.type}, ${b.subject}, ${b.payload}, ${signatures[i]!}, ${t!.updated_at})`,
    ),
  );
  return built;
}

/** The Proof-of-Bandwidth receipt epoch (relaynet.settings). */
export async function receiptEpochSeconds(tx: Sql | Tx): Promise<number> {
  const [s] = await tx`select pob_epoch_seconds from relaynet.settings`;
  return Number(s!.pob_epoch_seconds);
}
