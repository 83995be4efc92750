/**
 * The control plane's epoch (docs/control-plane.md, "Epochs"): the identity of its database's topology
 * history. Revisions only mean something within one epoch. A database restored from a backup goes back
 * to an older revision with the epoch it had then, so the topology publisher compares what the bus last
 * received with the outbox before it publishes anything and, when the bus holds an event this database
 * never wrote, starts a new epoch. Pure.
 */

/** The newest message of the topology stream, as far as the publisher reads it. */
export interface BusHead {
  eventId: string;
  revision: number;
  /** Absent in events published before epochs existed. */
  epoch: string | null;
}

export interface DatabaseEpochs {
  /** The current epoch. */
  epoch: string;
  /** Every earlier epoch of this database. */
  past: readonly string[];
  /** Whether the outbox holds the bus head's event (same event id). */
  holdsBusHead: boolean;
}

export type EpochDecision = { action: 'keep'; why: 'empty-stream' | 'database-holds-bus-head' | 'bus-behind-new-epoch' } | { action: 'mint'; detail: string };

/**
 * Whether the database can go on with its epoch: yes when the bus is empty, when the outbox holds the
 * bus's last event (the database is at or ahead of what relays saw), or when that event is of an earlier
 * epoch of this very database (nothing of the current epoch is published yet). Otherwise the bus has
 * seen history this database does not have (it was restored from a copy, or is another database): a
 * new epoch must begin, or relays would take its next revisions for ones they already applied.
 */
export function decideEpoch(db: DatabaseEpochs, head: BusHead | null): EpochDecision {
  if (!head) return { action: 'keep', why: 'empty-stream' };
  if (db.holdsBusHead) return { action: 'keep', why: 'database-holds-bus-head' };
  if (head.epoch !== null && head.epoch !== db.epoch && db.past.includes(head.epoch)) return { action: 'keep', why: 'bus-behind-new-epoch' };
  return {
    action: 'mint',
    detail: `the bus's last topology event (revision ${head.revision}, epoch ${head.epoch ?? 'none'}, id ${head.eventId}) is not in this database (epoch ${db.epoch}): restored from a copy?`,
  };
}

/** Read the epoch, revision and id of a topology message's JSON (null when it is not an event). */
export function busHeadOf(data: Uint8Array): BusHead | null {
  try {
    const j = JSON.parse(new TextDecoder().decode(data)) as { id?: unknown; epoch?: unknown; data?: { revision?: unknown } };
    if (typeof j.id !== 'string' || typeof j.data?.revision !== 'number') return null;
    return { eventId: j.id, revision: j.data.revision, epoch: typeof j.epoch === 'string' ? j.epoch : null };
  } catch {
    return null;
  }
}
