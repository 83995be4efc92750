// The relay's Proof-of-Bandwidth receipts shell (issue 17; docs/proof-of-bandwidth.md): it samples its
// mesh links' WireGuard counters (read only: `wg show`, through the kernel shell) often enough to see a
// counter restart, and at every epoch boundary, folds them into its ledger (src/pob/ledger.ts), and
// once an epoch closes signs its receipts' Merkle root with the identity key and hands them in
// (submit-receipts). The ledger and every closed epoch not yet handed in are kept in
// STATE_DIR/receipts (0600), so a restart or a control plane that is down loses nothing; an epoch the
// control plane refuses is kept there as `refused-<epoch>.json` with the reason, and not sent again.
import { sign, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SubmitReceiptsRequest, SubmitReceiptsResponse } from '../contract/api-pob.ts';
import { signEpoch } from '../contract/pob-receipts.ts';
import type { PeerObservation } from '../kernel/host-state.ts';
import type { Logger } from '../lib/logger.ts';
import { type ClosedEpoch, emptyLedger, type Ledger, observe } from '../pob/ledger.ts';
import type { ReceiptsEmission } from './bus-session.ts';
import { ControlPlaneError } from './control-plane-client.ts';

export interface ReceiptsDeps {
  relayId: string;
  stateDir: string;
  identityKey: KeyObject;
  /** The epoch length the control plane gave at the last registration; null: none (nothing is sampled). */
  epochSeconds(): number | null;
  /** The mesh links now: each peer and its device. */
  links(): { peerId: string; device: string }[];
  observe(devices: string[]): Promise<PeerObservation[]>;
  submit(req: SubmitReceiptsRequest): Promise<SubmitReceiptsResponse>;
  /** Publish a relay event (`ReceiptsSigned`, `ReceiptsRefused`). */
  emit(em: ReceiptsEmission): void;
  log: Logger;
  now(): number;
}

export interface ReceiptsSession {
  /** One sample now (and whatever it closes handed in): what the timer does. */
  sample(): Promise<void>;
  /** Closed epochs not yet handed in. */
  pending(): number[];
  stop(): void;
}

/** Samples at least this often within an epoch (a counter restart between two samples loses the bytes before it). */
const SAMPLE_EVERY_MS = 30_000;

interface PendingEpoch {
  epoch: number;
  epochSeconds: number;
  request: SubmitReceiptsRequest;
}

export function startReceipts(d: ReceiptsDeps): ReceiptsSession {
  const dir = join(d.stateDir, 'receipts');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ledgerFile = join(dir, 'ledger.json');
  const log = d.log.child({ component: 'receipts' });
  let ledger: Ledger | null = loadLedger(ledgerFile, log);
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<void> | null = null;
  let stopped = false;

  const write = (file: string, value: unknown) => {
    const tmp = `${file}.tmp`;
    writeFileSync(tmp, JSON.stringify(value), { mode: 0o600 });
    renameSync(tmp, file);
  };
  const pendingFile = (epoch: number) => join(dir, `pending-${epoch}.json`);
  const pending = () =>
    readdirSync(dir)
      .map((f) => /^pending-(\d+)\.json$/.exec(f)?.[1])
      .filter((e): e is string => e !== undefined)
      .map(Number)
      .sort((a, b) => a - b);

  async function close(c: ClosedEpoch, epochSeconds: number): Promise<void> {
    // Signed already (a crash between signing and saving the ledger): the first root stands.
    if (existsSync(pendingFile(c.epoch))) return;
    const root = await signEpoch(d.relayId, c.epoch, epochSeconds, c.receipts, (data) => sign(null, data, d.identityKey));
    const request: SubmitReceiptsRequest = {
      relayId: d.relayId,
      epoch: c.epoch,
      epochSeconds,
      root: root.root,
      signature: root.signature,
      receipts: c.receipts,
    };
    write(pendingFile(c.epoch), { epoch: c.epoch, epochSeconds, request } satisfies PendingEpoch);
    log.info({ epoch: c.epoch, receipts: c.receipts.length, root: root.root }, 'receipts signed');
    d.emit({ type: 'ReceiptsSigned', data: { epoch: c.epoch, epochSeconds, count: c.receipts.length, root: root.root } });
  }

  async function handIn(): Promise<void> {
    for (const epoch of pending()) {
      const file = pendingFile(epoch);
      let p: PendingEpoch;
      try {
        p = JSON.parse(readFileSync(file, 'utf8')) as PendingEpoch;
      } catch (e) {
        log.error({ epoch, err: String(e) }, 'unreadable pending receipts: set aside');
        renameSync(file, join(dir, `refused-${epoch}.json`));
        continue;
      }
      try {
        const r = await d.submit(p.request);
        rmSync(file, { force: true });
        log.info({ epoch, receipts: r.receipts, stored: r.stored }, 'receipts handed in');
      } catch (e) {
        if (e instanceof ControlPlaneError && e.kind === 'refused') {
          // Not sent again: kept with the reason for the operator.
          write(join(dir, `refused-${epoch}.json`), { ...p, refused: { status: e.status, code: e.code, field: e.field, message: e.message } });
          rmSync(file, { force: true });
          log.error({ epoch, status: e.status, code: e.code, field: e.field, err: e.message }, 'receipts refused by the control plane');
          d.emit({ type: 'ReceiptsRefused', data: { epoch, status: e.status, code: e.code?.slice(0, 64) ?? null, message: e.message.slice(0, 512) } });
          continue;
        }
        // Unreachable: the next sample tries again, oldest first.
        log.warn({ epoch, err: String((e as Error).message ?? e) }, 'cannot hand in receipts now; kept for later');
        return;
      }
    }
  }

  async function sampleOnce(): Promise<void> {
    const epochSeconds = d.epochSeconds();
    if (epochSeconds === null) return;
    if (ledger?.epochSeconds !== epochSeconds) {
      if (ledger) log.warn({ was: ledger.epochSeconds, now: epochSeconds }, 'the receipt epoch changed: counting anew');
      ledger = emptyLedger(epochSeconds);
    }
    const links = d.links();
    const byDevice = new Map(links.map((l) => [l.device, l.peerId]));
    const observations = links.length ? await d.observe([...byDevice.keys()]) : [];
    const samples = observations.flatMap((o) => {
      const peerId = byDevice.get(o.dev);
      return peerId ? [{ peerId, txBytes: o.txBytes, rxBytes: o.rxBytes }] : [];
    });
    const r = observe(ledger, d.now(), samples);
    for (const c of r.closed) await close(c, epochSeconds);
    // Saved only when it changed (idle links: nothing to write every 30 s for each of a thousand peers).
    if (r.ledger !== ledger) write(ledgerFile, { epochSeconds: r.ledger.epochSeconds, epoch: r.ledger.epoch, peers: [...r.ledger.peers] });
    ledger = r.ledger;
    await handIn();
  }

  const sample = () => {
    running ??= sampleOnce()
      .catch((e) => log.warn({ err: String((e as Error).message ?? e) }, 'receipts sample failed'))
      .finally(() => (running = null));
    return running;
  };

  // Wake at every epoch boundary and at least every SAMPLE_EVERY_MS (or a tenth of an epoch) within one.
  const schedule = () => {
    if (stopped) return;
    const epochSeconds = d.epochSeconds();
    // Not registered yet: look again soon, since bytes before the first sample are not counted.
    let wait = 1_000;
    if (epochSeconds !== null) {
      const epochMs = epochSeconds * 1000;
      const now = d.now();
      const toBoundary = epochMs - (now % epochMs);
      wait = Math.max(1, Math.min(toBoundary, SAMPLE_EVERY_MS, epochMs / 10));
    }
    timer = setTimeout(() => void sample().finally(schedule), wait);
    timer.unref();
  };
  schedule();

  return {
    sample,
    pending,
    stop: () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}

/** The ledger kept in STATE_DIR, or null (none, or unreadable: counting starts anew). */
function loadLedger(file: string, log: Logger): Ledger | null {
  if (!existsSync(file)) return null;
  try {
    const j = JSON.parse(readFileSync(file, 'utf8')) as { epochSeconds: number; epoch: number | null; peers: [string, Record<string, number>][] };
    const ledger = emptyLedger(j.epochSeconds);
    const count = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
    if (!(j.epoch === null || count(j.epoch)) || !Array.isArray(j.peers)) throw new Error('not a ledger');
    for (const [peerId, p] of j.peers)
      if (typeof peerId !== 'string' || !['tx', 'rx', 'lastTx', 'lastRx'].every((k) => count(p?.[k]))) throw new Error(`bad counts for ${String(peerId)}`);
    return { ...ledger, epoch: j.epoch, peers: new Map(j.peers.map(([id, p]) => [id, { tx: p.tx!, rx: p.rx!, lastTx: p.lastTx!, lastRx: p.lastRx! }])) };
  } catch (e) {
    log.warn({ file, err: String(e) }, 'unreadable receipts ledger: counting anew');
    return null;
  }
}
