// Settling an epoch of Proof-of-Bandwidth (issue 17; docs/proof-of-bandwidth.md): from the receipts
// every relay signed (pob-receipts.ts), the bytes each direction of each mesh link is credited with, each
// relay's credit, and the disputes. Pure.
//
// - A direction a → b is credited min(a's txBytes to b, b's rxBytes from a): what both ends signed. A
//   relay that inflates its own count gains nothing beyond what its peer signed.
// - The two counts disagreeing by more than the tolerance (2 % by default, and more than a floor of
//   bytes, so keepalives lost at an idle link are not a dispute) is a `disagree` dispute; a count with
//   nothing from the other end (it did not report, or reported no receipt for this link) credits 0 and
//   is an `unmatched` dispute.
// - A relay's credit is the credited bytes it sent plus those it received, capped at its measured
//   capacity (bytes per second each way) × 2 × the epoch's length; claims over the cap are an
//   `over-capacity` dispute. Two relays inflating receipts between themselves agree with each other: the
//   cap bounds what they gain, and the dispute flags them. A relay never measured has no credit.
import type { LinkReceipt } from './pob-receipts.ts';

export interface SettleInput {
  epochSeconds: number;
  /** Each relay's receipts for the epoch, already checked against its signed root. */
  reports: ReadonlyMap<string, readonly LinkReceipt[]>;
  /** Each relay's measured capacity in bytes per second (each way); absent: not measured. */
  capacity: ReadonlyMap<string, number>;
  /** The largest relative disagreement that is not a dispute (default 0.02). */
  tolerance?: number;
  /** Disagreements of fewer bytes than this are never a dispute (default 65,536). */
  floorBytes?: number;
}

export interface DirectionCredit {
  from: string;
  to: string;
  /** What the sender signed it sent (null: no such receipt). */
  senderTx: number | null;
  /** What the receiver signed it received (null: no such receipt). */
  receiverRx: number | null;
  credited: number;
}

export interface RelayCredit {
  relayId: string;
  /** Credited bytes sent plus credited bytes received, before the cap. */
  carried: number;
  /** Capacity × 2 × epoch length; null when the relay has not been measured (its credit is 0). */
  cap: number | null;
  credit: number;
}

export type Dispute =
  | { kind: 'disagree'; from: string; to: string; senderTx: number; receiverRx: number }
  | { kind: 'unmatched'; from: string; to: string; claimedBy: string; bytes: number }
  | { kind: 'over-capacity'; relayId: string; carried: number; cap: number };

export interface Settlement {
  directions: DirectionCredit[];
  relays: RelayCredit[];
  disputes: Dispute[];
}

export function settleEpoch(input: SettleInput): Settlement {
  const tolerance = input.tolerance ?? 0.02;
  const floor = input.floorBytes ?? 65_536;
  const byPeer = new Map<string, Map<string, LinkReceipt>>();
  for (const [relayId, receipts] of input.reports) byPeer.set(relayId, new Map(receipts.map((r) => [r.peerId, r])));

  // Every ordered pair either end has a receipt for, once.
  const pairs = new Map<string, { from: string; to: string }>();
  for (const [relayId, receipts] of byPeer)
    for (const peerId of receipts.keys()) {
      if (peerId === relayId) continue;
      pairs.set(`${relayId}\n${peerId}`, { from: relayId, to: peerId });
      pairs.set(`${peerId}\n${relayId}`, { from: peerId, to: relayId });
    }

  const directions: DirectionCredit[] = [];
  const disputes: Dispute[] = [];
  const carried = new Map<string, number>();
  const add = (id: string, n: number) => carried.set(id, (carried.get(id) ?? 0) + n);
  for (const { from, to } of [...pairs.values()].sort((a, b) => (a.from === b.from ? cmp(a.to, b.to) : cmp(a.from, b.from)))) {
    const senderTx = byPeer.get(from)?.get(to)?.txBytes ?? null;
    const receiverRx = byPeer.get(to)?.get(from)?.rxBytes ?? null;
    const credited = senderTx !== null && receiverRx !== null ? Math.min(senderTx, receiverRx) : 0;
    directions.push({ from, to, senderTx, receiverRx, credited });
    add(from, credited);
    add(to, credited);
    if (senderTx !== null && receiverRx !== null) {
      const diff = Math.abs(senderTx - receiverRx);
      if (diff > floor && diff > tolerance * Math.max(senderTx, receiverRx)) disputes.push({ kind: 'disagree', from, to, senderTx, receiverRx });
    } else {
      const [claimedBy, bytes] = senderTx !== null ? [from, senderTx] : [to, receiverRx ?? 0];
      if (bytes > floor) disputes.push({ kind: 'unmatched', from, to, claimedBy, bytes });
    }
  }

  const relays: RelayCredit[] = [];
  for (const relayId of [...new Set([...byPeer.keys(), ...carried.keys()])].sort(cmp)) {
    const c = carried.get(relayId) ?? 0;
    const capacity = input.capacity.get(relayId);
    const cap = capacity === undefined ? null : Math.floor(capacity * 2 * input.epochSeconds);
    relays.push({ relayId, carried: c, cap, credit: cap === null ? 0 : Math.min(c, cap) });
    if (cap !== null && c > cap) disputes.push({ kind: 'over-capacity', relayId, carried: c, cap });
  }
  return { directions, relays, disputes };
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
