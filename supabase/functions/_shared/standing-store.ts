// Reading and writing relays' standing (relaynet.relay_standing; docs/proof-of-bandwidth.md,
// "Community relays"). The decisions are community.ts.
import type { RelayStanding } from '../../../src/contract/api-community.ts';
import type { RelayClass, RelayState } from '../../../src/contract/topology.events.ts';
import type { Sql, Tx } from './db.ts';

function toStanding(r: Record<string, unknown>): RelayStanding {
  return {
    relayId: r.relay_id as string,
    class: r.class as RelayClass,
    state: r.state as RelayState,
    operatorId: (r.operator_id as string | null) ?? null,
    reason: (r.reason as string | null) ?? null,
  };
}

/** The relay's standing row; null: none (a core relay, active). */
export async function standingOf(sql: Sql | Tx, relayId: string): Promise<RelayStanding | null> {
  const [r] = await sql`select relay_id, class, state, operator_id, reason from relaynet.relay_standing where relay_id = ${relayId}`;
  return r ? toStanding(r) : null;
}

/** The standing rows of these relays (the others have none). */
export async function standingsOf(sql: Sql | Tx, relayIds: readonly string[]): Promise<Map<string, RelayStanding>> {
  if (relayIds.length === 0) return new Map();
  const rows = await sql`select relay_id, class, state, operator_id, reason from relaynet.relay_standing where relay_id = any(${relayIds as string[]})`;
  return new Map(rows.map((r) => [r.relay_id as string, toStanding(r)]));
}

/** The relays an operator enrolled, by id. */
export async function enrolledBy(sql: Sql | Tx, operatorId: string): Promise<RelayStanding[]> {
  const rows = await sql`select relay_id, class, state, operator_id, reason from relaynet.relay_standing where operator_id = ${operatorId} order by relay_id`;
  return rows.map(toStanding);
}

/** A relay of this id was ever registered (it may have left since). */
export async function relayKnown(sql: Sql | Tx, relayId: string): Promise<boolean> {
  const [r] = await sql`select 1 from relaynet.relays where id = ${relayId}`;
  return r !== undefined;
}

export async function saveStanding(tx: Tx, s: RelayStanding): Promise<void> {
  await tx`insert into relaynet.relay_standing (relay_id, class, operator_id, state, reason)
           values (${s.relayId}, ${s.class}, ${s.operatorId}, ${s.state}, ${s.reason === null ? null : s.reason.slice(0, 512)})
           on conflict (relay_id) do update set state = excluded.state, reason = excluded.reason, changed_at = clock_timestamp()`;
}

export async function communitySettings(sql: Sql | Tx): Promise<{ minCapacity: number; maxRelays: number }> {
  const [r] = await sql`select community_min_capacity, community_max_relays from relaynet.settings`;
  return { minCapacity: Number(r!.community_min_capacity), maxRelays: Number(r!.community_max_relays) };
}

/** The relay's measured capacity on record (line rate, bytes per second); null: never measured. */
export async function capacityOf(sql: Sql | Tx, relayId: string): Promise<number | null> {
  const [r] = await sql`select bytes_per_second from relaynet.pob_capacity where relay_id = ${relayId}`;
  return r ? Number(r.bytes_per_second) : null;
}
