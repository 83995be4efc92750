import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type LinkReceipt, inclusionProof, receiptsProblem, receiptsRoot, signEpoch, verifyEpoch, verifyInclusion } from '../../src/contract/pob-receipts.ts';
import { capacityOf, lineRate, type MeasurerReport } from '../../src/contract/pob-capacity.ts';
import { settleEpoch } from '../../src/contract/pob-settle.ts';
import { generateSigningKeyPair, importPrivateKey, signBytes } from '../../src/events/signing.ts';

const keys = generateSigningKeyPair();
const priv = importPrivateKey(keys.seed);
const signer = (data: Uint8Array) => Buffer.from(signBytes(priv, data), 'base64');

const receipts = (n: number): LinkReceipt[] =>
  Array.from({ length: n }, (_, i) => ({ peerId: `relay-${String(i).padStart(4, '0')}`, txBytes: 1000 * i + 7, rxBytes: 900 * i + 3 }));

describe('traffic receipts: Merkle tree and signed root', () => {
  it('proves every receipt of trees of every shape, and no receipt changed in any field', async () => {
    for (const n of [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33]) {
      const rs = receipts(n);
      const root = await receiptsRoot('relay-a', 42, rs);
      for (let i = 0; i < n; i++) {
        const proof = await inclusionProof('relay-a', 42, rs, i);
        expect(proof.length).toBeLessThanOrEqual(Math.ceil(Math.log2(n)));
        expect(await verifyInclusion('relay-a', 42, rs[i]!, proof, root)).toBe(true);
        const r = rs[i]!;
        expect(await verifyInclusion('relay-a', 42, { ...r, txBytes: r.txBytes + 1 }, proof, root)).toBe(false);
        expect(await verifyInclusion('relay-a', 42, { ...r, rxBytes: r.rxBytes + 1 }, proof, root)).toBe(false);
        expect(await verifyInclusion('relay-a', 42, { ...r, peerId: `${r.peerId}x` }, proof, root)).toBe(false);
        // The same receipt under another relay or epoch is another leaf.
        expect(await verifyInclusion('relay-b', 42, r, proof, root)).toBe(false);
        expect(await verifyInclusion('relay-a', 43, r, proof, root)).toBe(false);
        if (proof.length > 0) {
          const flipped = proof.map((s, k) => (k === 0 ? { ...s, left: !s.left } : s));
          expect(await verifyInclusion('relay-a', 42, r, flipped, root)).toBe(false);
        }
      }
    }
  });

  it('gives different lists different roots, including a list with its last receipt repeated', async () => {
    const three = receipts(3);
    const roots = new Set([
      await receiptsRoot('relay-a', 1, three),
      await receiptsRoot('relay-a', 1, three.slice(0, 2)),
      await receiptsRoot('relay-a', 1, []),
      await receiptsRoot('relay-a', 1, [three[0]!, { ...three[1]!, rxBytes: 0 }, three[2]!]),
    ]);
    expect(roots.size).toBe(4);
    // An inner node is never a leaf: the two-leaf root is not provable as a receipt of a one-leaf tree.
    expect(await receiptsRoot('relay-a', 1, receipts(4))).not.toBe(await receiptsRoot('relay-a', 1, receipts(2)));
  });

  it('refuses malformed receipt lists with the reason', async () => {
    expect(
      receiptsProblem([
        { peerId: 'b', txBytes: 1, rxBytes: 1 },
        { peerId: 'a', txBytes: 1, rxBytes: 1 },
      ]),
    ).toMatch(/sorted/);
    expect(
      receiptsProblem([
        { peerId: 'a', txBytes: 1, rxBytes: 1 },
        { peerId: 'a', txBytes: 1, rxBytes: 1 },
      ]),
    ).toMatch(/each peer once/);
    expect(receiptsProblem([{ peerId: 'a', txBytes: -1, rxBytes: 1 }])).toMatch(/non-negative/);
    expect(receiptsProblem([{ peerId: 'a', txBytes: 1.5, rxBytes: 1 }])).toMatch(/integers/);
    expect(receiptsProblem([{ peerId: 'a', txBytes: 2 ** 53, rxBytes: 1 }])).toMatch(/safe integers/);
    expect(receiptsProblem([{ peerId: '', txBytes: 1, rxBytes: 1 }])).toMatch(/peerId/);
    await expect(receiptsRoot('relay-a', 1, [{ peerId: 'a', txBytes: Number.NaN, rxBytes: 0 }])).rejects.toThrow(/non-negative/);
    await expect(inclusionProof('relay-a', 1, receipts(3), 3)).rejects.toThrow(/no receipt 3 of 3/);
  });

  it('signs a root that verifies with the identity key, covers its receipts, and fails on any change', async () => {
    const rs = receipts(10);
    const root = await signEpoch('relay-a', 5_900_000, 300, rs, signer);
    expect(root).toMatchObject({ relayId: 'relay-a', epoch: 5_900_000, epochSeconds: 300, count: 10 });
    expect(await verifyEpoch(keys.publicKey, root)).toEqual({ ok: true });
    expect(await verifyEpoch(keys.publicKey, root, rs)).toEqual({ ok: true });
    // Another receipt list under the same signed root.
    const inflated = rs.map((r, i) => (i === 4 ? { ...r, txBytes: r.txBytes * 10 } : r));
    expect(await verifyEpoch(keys.publicKey, root, inflated)).toMatchObject({ ok: false, reason: 'root-mismatch' });
    expect(await verifyEpoch(keys.publicKey, root, rs.slice(1))).toMatchObject({ ok: false, reason: 'root-mismatch' });
    // Any signed field changed, or another key.
    for (const forged of [
      { ...root, epoch: root.epoch + 1 },
      { ...root, count: 9 },
      { ...root, relayId: 'relay-b' },
      { ...root, epochSeconds: 600 },
    ])
      expect(await verifyEpoch(keys.publicKey, forged)).toMatchObject({ ok: false, reason: 'bad-signature' });
    expect(await verifyEpoch(generateSigningKeyPair().publicKey, root)).toMatchObject({ ok: false, reason: 'bad-signature' });
    expect(await verifyEpoch('not a key', root)).toMatchObject({ ok: false, reason: 'bad-signature' });
  });

  it('never throws on malformed roots and proofs (generated)', async () => {
    const rs = receipts(5);
    const root = await signEpoch('relay-a', 1, 300, rs, signer);
    const proof = await inclusionProof('relay-a', 1, rs, 2);
    await fc.assert(
      fc.asyncProperty(fc.anything(), fc.anything(), async (junkRoot, junkProof) => {
        const v = await verifyEpoch(keys.publicKey, junkRoot as never);
        expect(v.ok).toBe(false);
        expect(await verifyInclusion('relay-a', 1, rs[2]!, junkProof as never, root.root)).toBe(false);
        expect(await verifyInclusion('relay-a', 1, junkRoot as never, proof, root.root)).toBe(false);
      }),
      { numRuns: 500 },
    );
  });
});

describe('settling an epoch', () => {
  const MB = 1_000_000;
  const settle = (reports: Record<string, LinkReceipt[]>, capacity: Record<string, number>) =>
    settleEpoch({ epochSeconds: 300, reports: new Map(Object.entries(reports)), capacity: new Map(Object.entries(capacity)) });

  it('credits each direction with what both ends signed, and each relay with what it sent and received', () => {
    const s = settle(
      {
        a: [{ peerId: 'b', txBytes: 100 * MB, rxBytes: 50 * MB }],
        b: [{ peerId: 'a', txBytes: 50 * MB + 1000, rxBytes: 99.5 * MB }],
      },
      { a: 10 * MB, b: 10 * MB },
    );
    expect(s.directions).toEqual([
      { from: 'a', to: 'b', senderTx: 100 * MB, receiverRx: 99.5 * MB, credited: 99.5 * MB },
      { from: 'b', to: 'a', senderTx: 50 * MB + 1000, receiverRx: 50 * MB, credited: 50 * MB },
    ]);
    // 0.5 % and 0.002 % apart: within the tolerance.
    expect(s.disputes).toEqual([]);
    expect(s.relays).toEqual([
      { relayId: 'a', carried: 149.5 * MB, cap: 6000 * MB, credit: 149.5 * MB },
      { relayId: 'b', carried: 149.5 * MB, cap: 6000 * MB, credit: 149.5 * MB },
    ]);
  });

  it('gives a relay that inflates its receipts nothing beyond what its honest peer signed, and flags it', () => {
    const honest = settle(
      { a: [{ peerId: 'b', txBytes: 10 * MB, rxBytes: 20 * MB }], b: [{ peerId: 'a', txBytes: 20 * MB, rxBytes: 10 * MB }] },
      { a: MB, b: MB },
    );
    const cheat = settle(
      { a: [{ peerId: 'b', txBytes: 90 * MB, rxBytes: 200 * MB }], b: [{ peerId: 'a', txBytes: 20 * MB, rxBytes: 10 * MB }] },
      { a: MB, b: MB },
    );
    const credit = (s: typeof honest, id: string) => s.relays.find((r) => r.relayId === id)!.credit;
    expect(credit(cheat, 'a')).toBe(credit(honest, 'a'));
    expect(credit(cheat, 'b')).toBe(credit(honest, 'b'));
    expect(cheat.disputes).toEqual([
      { kind: 'disagree', from: 'a', to: 'b', senderTx: 90 * MB, receiverRx: 10 * MB },
      { kind: 'disagree', from: 'b', to: 'a', senderTx: 20 * MB, receiverRx: 200 * MB },
    ]);
  });

  it('credits nothing one end alone signed, and flags it unless it is keepalive-sized', () => {
    const s = settle({ a: [{ peerId: 'b', txBytes: 5 * MB, rxBytes: 2000 }], b: [] }, { a: MB, b: MB });
    expect(s.directions.every((d) => d.credited === 0)).toBe(true);
    expect(s.disputes).toEqual([{ kind: 'unmatched', from: 'a', to: 'b', claimedBy: 'a', bytes: 5 * MB }]);
    expect(s.relays.map((r) => r.credit)).toEqual([0, 0]);
  });

  it('caps colluding relays at their measured capacities and flags them', () => {
    // Two relays measured at 1 MB/s each claim 10 GB to each other in a 300 s epoch (33 MB/s).
    const s = settle(
      { c1: [{ peerId: 'c2', txBytes: 10_000 * MB, rxBytes: 10_000 * MB }], c2: [{ peerId: 'c1', txBytes: 10_000 * MB, rxBytes: 10_000 * MB }] },
      { c1: MB, c2: MB },
    );
    expect(s.relays).toEqual([
      { relayId: 'c1', carried: 20_000 * MB, cap: 600 * MB, credit: 600 * MB },
      { relayId: 'c2', carried: 20_000 * MB, cap: 600 * MB, credit: 600 * MB },
    ]);
    expect(s.disputes).toEqual([
      { kind: 'over-capacity', relayId: 'c1', carried: 20_000 * MB, cap: 600 * MB },
      { kind: 'over-capacity', relayId: 'c2', carried: 20_000 * MB, cap: 600 * MB },
    ]);
  });

  it('gives a relay never measured no credit', () => {
    const s = settle({ a: [{ peerId: 'b', txBytes: MB, rxBytes: MB }], b: [{ peerId: 'a', txBytes: MB, rxBytes: MB }] }, { b: MB });
    expect(s.relays).toEqual([
      { relayId: 'a', carried: 2 * MB, cap: null, credit: 0 },
      { relayId: 'b', carried: 2 * MB, cap: 600 * MB, credit: 2 * MB },
    ]);
  });

  it('never credits a relay more than both ends signed, whatever the reports (generated)', () => {
    const ids = ['a', 'b', 'c', 'd'];
    const count = fc.nat({ max: 10 ** 12 });
    const report = fc.subarray(ids).chain((peers) => fc.tuple(...peers.map((p) => fc.record({ peerId: fc.constant(p), txBytes: count, rxBytes: count }))));
    fc.assert(
      fc.property(
        fc.record({ a: report, b: report, c: report, d: report }),
        fc.dictionary(fc.constantFrom(...ids), fc.nat({ max: 10 ** 8 })),
        (reports, capacity) => {
          const own = Object.fromEntries(Object.entries(reports).map(([id, rs]) => [id, rs.filter((r) => r.peerId !== id)]));
          const s = settle(own, capacity);
          for (const d of s.directions) {
            expect(d.credited).toBeLessThanOrEqual(Math.min(d.senderTx ?? 0, d.receiverRx ?? 0));
            expect(d.credited).toBeGreaterThanOrEqual(0);
          }
          for (const r of s.relays) {
            const mine = s.directions.filter((d) => d.from === r.relayId || d.to === r.relayId).reduce((a, d) => a + d.credited, 0);
            expect(r.carried).toBe(mine);
            expect(r.credit).toBeLessThanOrEqual(r.cap ?? 0);
            expect(r.credit).toBeLessThanOrEqual(mine);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe('capacity from a measurement', () => {
  const rep = (measurerId: string, echoed: number[], over: Partial<MeasurerReport> = {}): MeasurerReport => ({
    measurerId,
    echoed,
    checks: 20,
    failures: 0,
    error: null,
    ...over,
  });
  const flat = (n: number, v: number) => Array.from({ length: n }, () => v);

  it('is the median of the per-second sums over measurers, plus background up to r of the total', () => {
    const v = capacityOf({ seconds: 5, reports: [rep('m1', [10, 11, 12, 13, 100]), rep('m2', [10, 10, 10, 10, 10])], background: [0, 0, 0, 0, 0] });
    expect(v).toMatchObject({ ok: true, capacity: 22, measured: 22, perSecond: [20, 21, 22, 23, 110] });
    // Honest background traffic under r: counted in full.
    const bg = capacityOf({ seconds: 2, reports: [rep('m1', [900, 900])], background: [50, 100], r: 0.1 });
    expect(bg).toMatchObject({ ok: true, perSecond: [950, 1000] });
  });

  it('bounds a target that inflates its background (or carries extra traffic) at 1 / (1 - r) of what it echoed', () => {
    for (const r of [0, 0.1, 0.25]) {
      const v = capacityOf({ seconds: 10, reports: [rep('m1', flat(10, 6000)), rep('m2', flat(10, 4000))], background: flat(10, 10 ** 12), r });
      if (!v.ok) throw new Error(v.message);
      expect(v.capacity).toBeCloseTo(10_000 / (1 - r), 6);
      expect(v.capacity / v.measured).toBeCloseTo(v.inflationBound, 9);
    }
  });

  it('rejects a target whose echo failed a spot check or broke a stream, and says which measurer', () => {
    expect(capacityOf({ seconds: 2, reports: [rep('m1', [5, 5]), rep('m2', [5, 5], { failures: 1 })], background: [] })).toMatchObject({
      ok: false,
      reason: 'spot-check-failed',
      message: expect.stringMatching(/m2: 1 of 20/),
    });
    expect(capacityOf({ seconds: 2, reports: [rep('m1', [5, 0], { error: 'stream stalled for 5 s' })], background: [] })).toMatchObject({
      ok: false,
      reason: 'stream-broken',
      message: expect.stringMatching(/m1: stream stalled/),
    });
    expect(capacityOf({ seconds: 2, reports: [rep('m1', [0, 0])], background: [] })).toMatchObject({ ok: false, reason: 'nothing-echoed' });
    expect(capacityOf({ seconds: 2, reports: [], background: [] })).toMatchObject({ ok: false, reason: 'no-measurers' });
  });

  it('refuses malformed reports without throwing (generated)', () => {
    fc.assert(
      fc.property(fc.anything(), fc.anything(), fc.anything(), (reports, background, r) => {
        const v = capacityOf({ seconds: 3, reports: reports as never, background: background as never, r: r as never });
        if (v.ok) expect(Number.isFinite(v.capacity)).toBe(true);
      }),
      { numRuns: 2000 },
    );
    // Valid reports with any background: what the target says never breaks the computation.
    fc.assert(
      fc.property(fc.anything(), (background) => {
        const v = capacityOf({ seconds: 2, reports: [rep('m1', [100, 100])], background: background as never, r: 0.1 });
        expect(v.ok && v.capacity >= 100 && v.capacity <= 100 / 0.9 + 1e-9).toBe(true);
      }),
      { numRuns: 1000 },
    );
    expect(capacityOf({ seconds: 2, reports: [rep('m1', [1])], background: [] })).toMatchObject({ ok: false, reason: 'malformed' });
    expect(capacityOf({ seconds: 2, reports: [rep('m1', [1, -1])], background: [] })).toMatchObject({ ok: false, reason: 'malformed' });
    expect(capacityOf({ seconds: 2, reports: [rep('m1', [1, 1], { failures: 30 })], background: [] })).toMatchObject({ ok: false, reason: 'malformed' });
    expect(capacityOf({ seconds: 2, reports: [rep('m1', [1, 1])], background: [], r: 1 })).toMatchObject({ ok: false, reason: 'malformed' });
  });

  it('states the line rate a goodput needs: the overhead the tbf measurement saw (0.91-0.92 of the cap)', () => {
    // A 1420-byte mesh MTU: 1368 bytes of payload per segment, 1494 on the wire.
    expect(1 / lineRate(1, 1420)).toBeCloseTo(1368 / 1494, 9);
    expect(1 / lineRate(1, 1420)).toBeGreaterThan(0.91);
    expect(1 / lineRate(1, 1420)).toBeLessThan(0.92);
  });
});
