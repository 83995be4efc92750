import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { type SubmitReceiptsRequest, submittedRoot } from '../../src/contract/api-pob.ts';
import { verifyEpoch } from '../../src/contract/pob-receipts.ts';
import { ControlPlaneError } from '../../src/daemon/control-plane-client.ts';
import { startReceipts, type ReceiptsSession } from '../../src/daemon/receipts-session.ts';
import { generateSigningKeyPair, importPrivateKey } from '../../src/events/signing.ts';
import type { PeerObservation } from '../../src/kernel/host-state.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { tempDir } from '../support/temp.ts';

const E = 60;
const at = (epoch: number, s: number) => (epoch * E + s) * 1000;

describe('the receipts shell', () => {
  const keys = generateSigningKeyPair();
  const sessions: ReceiptsSession[] = [];
  const tmp = tempDir('receipts-session');
  afterEach(() => {
    for (const s of sessions.splice(0)) s.stop();
  });
  afterAll(() => tmp.remove());

  function harness(stateDir: string) {
    const h = {
      nowMs: at(100, 1),
      counters: new Map<string, { tx: number; rx: number }>([
        ['wg0m2', { tx: 1000, rx: 2000 }],
        ['wg0m3', { tx: 50, rx: 60 }],
      ]),
      submitted: [] as SubmitReceiptsRequest[],
      fail: null as Error | null,
      events: [] as { type: string; data: Record<string, unknown> }[],
    };
    const session = startReceipts({
      relayId: 'relay-1',
      stateDir,
      identityKey: importPrivateKey(keys.seed),
      epochSeconds: () => E,
      links: () => [
        { peerId: 'relay-2', device: 'wg0m2' },
        { peerId: 'relay-3', device: 'wg0m3' },
      ],
      observe: async (devices) =>
        devices.flatMap((dev): PeerObservation[] => {
          const c = h.counters.get(dev);
          return c ? [{ dev, publicKey: `key-${dev}`, endpoint: null, latestHandshakeMs: null, rxBytes: c.rx, txBytes: c.tx }] : [];
        }),
      submit: async (req) => {
        if (h.fail) throw h.fail;
        h.submitted.push(req);
        return { relayId: req.relayId, epoch: req.epoch, receipts: req.receipts.length, stored: true };
      },
      emit: (e) => h.events.push(e),
      log: rootLogger({ test: 'receipts' }, 'silent'),
      now: () => h.nowMs,
    });
    sessions.push(session);
    return { h, session };
  }
  const grow = (h: ReturnType<typeof harness>['h'], dev: string, tx: number, rx: number) => {
    const c = h.counters.get(dev)!;
    h.counters.set(dev, { tx: c.tx + tx, rx: c.rx + rx });
  };

  it('hands in each closed epoch, signed with the identity key, and keeps nothing once it is taken', async () => {
    const dir = join(tmp.dir, 'a');
    const { h, session } = harness(dir);
    await session.sample();
    grow(h, 'wg0m2', 500, 700);
    h.nowMs = at(100, 30);
    await session.sample();
    grow(h, 'wg0m2', 10, 20);
    grow(h, 'wg0m3', 5, 6);
    h.nowMs = at(101, 0);
    await session.sample();
    expect(h.submitted).toHaveLength(1);
    const req = h.submitted[0]!;
    expect(req).toMatchObject({
      relayId: 'relay-1',
      epoch: 100,
      epochSeconds: E,
      receipts: [
        { peerId: 'relay-2', txBytes: 510, rxBytes: 720 },
        { peerId: 'relay-3', txBytes: 5, rxBytes: 6 },
      ],
    });
    expect(await verifyEpoch(keys.publicKey, submittedRoot(req), req.receipts)).toEqual({ ok: true });
    expect(session.pending()).toEqual([]);
    expect(statSync(join(dir, 'receipts', 'ledger.json')).mode & 0o777).toBe(0o600);
    expect(h.events).toEqual([{ type: 'ReceiptsSigned', data: { epoch: 100, epochSeconds: E, count: 2, root: req.root } }]);
  });

  it('keeps an epoch it cannot hand in and sends it at the next sample; a refused one is set aside with the reason', async () => {
    const dir = join(tmp.dir, 'b');
    const { h, session } = harness(dir);
    await session.sample();
    h.fail = new ControlPlaneError('unreachable', 'connection refused');
    h.nowMs = at(101, 0);
    await session.sample();
    expect(session.pending()).toEqual([100]);
    expect(statSync(join(dir, 'receipts', 'pending-100.json')).mode & 0o777).toBe(0o600);
    h.fail = null;
    h.nowMs = at(101, 30);
    await session.sample();
    expect(session.pending()).toEqual([]);
    expect(h.submitted.map((r) => r.epoch)).toEqual([100]);

    h.fail = new ControlPlaneError('refused', 'epochs are 300 s long on this control plane, not 60', {
      status: 400,
      code: 'invalid_request',
      field: 'epochSeconds',
    });
    h.nowMs = at(102, 0);
    await session.sample();
    h.nowMs = at(102, 30);
    await session.sample();
    expect(session.pending()).toEqual([]);
    const refused = JSON.parse(readFileSync(join(dir, 'receipts', 'refused-101.json'), 'utf8'));
    expect(refused.refused).toMatchObject({ status: 400, field: 'epochSeconds', message: expect.stringMatching(/300 s/) });
    expect(h.submitted.map((r) => r.epoch)).toEqual([100]);
    expect(h.events.filter((e) => e.type === 'ReceiptsRefused')).toEqual([
      { type: 'ReceiptsRefused', data: { epoch: 101, status: 400, code: 'invalid_request', message: expect.stringMatching(/300 s/) } },
    ]);
  });

  it('goes on counting across a restart from its state directory', async () => {
    const dir = join(tmp.dir, 'c');
    const first = harness(dir);
    await first.session.sample();
    grow(first.h, 'wg0m2', 100, 100);
    first.h.nowMs = at(100, 20);
    await first.session.sample();
    first.session.stop();
    // The relay restarts; the devices kept their counters and carried 40 more bytes meanwhile.
    const second = harness(dir);
    second.h.counters = new Map(first.h.counters);
    grow(second.h, 'wg0m2', 40, 40);
    second.h.nowMs = at(101, 0);
    await second.session.sample();
    expect(second.h.submitted[0]!.receipts[0]).toEqual({ peerId: 'relay-2', txBytes: 140, rxBytes: 140 });
    expect(existsSync(join(dir, 'receipts', 'pending-100.json'))).toBe(false);
  });
});
