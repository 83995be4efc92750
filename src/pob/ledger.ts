// A relay's traffic ledger for Proof-of-Bandwidth receipts (issue 17; docs/proof-of-bandwidth.md). It
// folds samples of its mesh links' WireGuard counters (`wg show` transfer_rx / transfer_tx, cumulative
// since the peer was set) into bytes per peer per epoch, and closes an epoch once a sample from a later
// one arrives, handing back the epoch's receipts. Pure.
//
// WireGuard's counters restart at 0 when a peer is set anew (its device recreated, its key rotated):
// a sample below the one before is such a restart, and what was counted before it is kept. A sample's
// bytes since the previous sample belong to the epoch the previous sample was in, so the shell samples
// right at each epoch boundary (both ends of a link then split the link's bytes at the same instant).
import type { LinkReceipt } from '../contract/pob-receipts.ts';

export interface CounterSample {
  peerId: string;
  txBytes: number;
  rxBytes: number;
}

interface PeerCount {
  /** Bytes counted so far in the open epoch. */
  tx: number;
  rx: number;
  /** The last sample's counters. */
  lastTx: number;
  lastRx: number;
}

export interface Ledger {
  epochSeconds: number;
  /** The open epoch (Unix seconds / epochSeconds, rounded down), null before the first sample. */
  epoch: number | null;
  peers: ReadonlyMap<string, Readonly<PeerCount>>;
}

export interface ClosedEpoch {
  epoch: number;
  /** One receipt per peer sampled in the epoch, sorted by peerId (what pob-receipts signs). */
  receipts: LinkReceipt[];
}

export const emptyLedger = (epochSeconds: number): Ledger => {
  if (!Number.isSafeInteger(epochSeconds) || epochSeconds < 1) throw new Error(`epochSeconds must be a positive integer, not ${epochSeconds}`);
  return { epochSeconds, epoch: null, peers: new Map() };
};

export const epochOf = (epochSeconds: number, nowMs: number) => Math.floor(nowMs / 1000 / epochSeconds);

const growth = (last: number, now: number) => (now >= last ? now - last : now);

/** Whether a sample changes nothing: the same epoch, every peer known, no counter moved. */
function unchanged(ledger: Ledger, epoch: number, samples: readonly CounterSample[]): boolean {
  if (ledger.epoch === null || epoch !== ledger.epoch) return false;
  for (const s of samples) {
    const p = ledger.peers.get(s.peerId);
    if (!p || p.lastTx !== s.txBytes || p.lastRx !== s.rxBytes) return false;
  }
  return true;
}

/**
 * Fold one sample of every link's counters taken at `nowMs`. A peer missing from the sample is gone
 * (its link removed): its bytes stay in the open epoch. Returns the next ledger and the epochs the
 * sample closed (at most one with data: epochs with no sample in between are not reported). A sample
 * that changes nothing gives back `ledger` itself (the shell then has nothing to save).
 */
export function observe(ledger: Ledger, nowMs: number, samples: readonly CounterSample[]): { ledger: Ledger; closed: ClosedEpoch[] } {
  const epoch = epochOf(ledger.epochSeconds, nowMs);
  if (unchanged(ledger, epoch, samples)) return { ledger, closed: [] };
  const peers = new Map(ledger.peers);
  // The bytes since the last sample belong to the epoch that sample was in.
  for (const s of samples) {
    const p = peers.get(s.peerId);
    if (!p) continue;
    peers.set(s.peerId, { tx: p.tx + growth(p.lastTx, s.txBytes), rx: p.rx + growth(p.lastRx, s.rxBytes), lastTx: s.txBytes, lastRx: s.rxBytes });
  }
  const closed: ClosedEpoch[] = [];
  if (ledger.epoch !== null && epoch > ledger.epoch) {
    const receipts = [...peers]
      .map(([peerId, p]) => ({ peerId, txBytes: p.tx, rxBytes: p.rx }))
      .sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0));
    if (receipts.length) closed.push({ epoch: ledger.epoch, receipts });
    // A new epoch: the peers of this sample, from its counters.
    const next = new Map<string, PeerCount>();
    for (const s of samples) next.set(s.peerId, { tx: 0, rx: 0, lastTx: s.txBytes, lastRx: s.rxBytes });
    return { ledger: { ...ledger, epoch, peers: next }, closed };
  }
  // Same epoch (or the first sample, or a clock that went back: kept in the open epoch): new peers start here.
  for (const s of samples) if (!peers.has(s.peerId)) peers.set(s.peerId, { tx: 0, rx: 0, lastTx: s.txBytes, lastRx: s.rxBytes });
  return { ledger: { ...ledger, epoch: ledger.epoch === null ? epoch : Math.max(ledger.epoch, epoch), peers }, closed };
}
