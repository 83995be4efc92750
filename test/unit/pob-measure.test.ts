import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { lineRate } from '../../src/contract/pob-capacity.ts';
import { measurementVerdict, signReport, verifyReport, type Measurement, type SignedReport } from '../../src/contract/pob-measure.ts';
import { MeasurementScheduledV1 } from '../../src/contract/topology.events.ts';
import { emptyTopology, evolveTopology, seedTopology } from '../../src/events/topology.fold.ts';
import { generateSigningKeyPair, importPrivateKey, signBytes } from '../../src/events/signing.ts';
import { backgroundOf, EchoStream, PerSecond } from '../../src/pob/echo-check.ts';
import { nextToMeasure, nextToSettle, SETTLE_CATCH_UP_EPOCHS } from '../../src/pob/schedule.ts';
import { ev, relay } from '../support/given.ts';

const keys = generateSigningKeyPair();
const signer = (data: Uint8Array) => Buffer.from(signBytes(importPrivateKey(keys.seed), data), 'base64');
const other = generateSigningKeyPair();

const M: Measurement = {
  id: '00000000-0000-4000-8000-0000000000aa',
  targetId: 'relay-3',
  measurerIds: ['relay-1', 'relay-2'],
  startsAt: '2026-12-02T00:00:10.000Z',
  seconds: 4,
  streams: 2,
  r: 0.1,
};

const measurer = (relayId: string, echoed: number[], extra: Partial<{ checks: number; failures: number; error: string | null }> = {}) =>
  ({ measurementId: M.id, relayId, role: 'measurer', echoed, checks: 10, failures: 0, error: null, signature: '', ...extra }) as SignedReport;
const target = (background: number[]) => ({ measurementId: M.id, relayId: 'relay-3', role: 'target', background, signature: '' }) as SignedReport;

describe('measurement reports: signed by the party, verified with its identity key', () => {
  it('verifies a report with its key only, and fails on any change of a count, the party, the role or the measurement', async () => {
    const r = await signReport(
      { measurementId: M.id, relayId: 'relay-1', role: 'measurer' as const, echoed: [5, 6, 7, 8], checks: 4, failures: 0, error: null },
      signer,
    );
    expect(await verifyReport(keys.publicKey, r)).toBe(true);
    expect(await verifyReport(other.publicKey, r)).toBe(false);
    for (const changed of [
      { ...r, echoed: [5, 6, 7, 9] },
      { ...r, checks: 5 },
      { ...r, failures: 1, checks: 4 },
      { ...r, error: 'x' },
      { ...r, relayId: 'relay-2' },
      { ...r, measurementId: '00000000-0000-4000-8000-0000000000ab' },
    ])
      expect(await verifyReport(keys.publicKey, changed)).toBe(false);
    const t = await signReport({ measurementId: M.id, relayId: 'relay-3', role: 'target' as const, background: [1, 2, 3, 4] }, signer);
    expect(await verifyReport(keys.publicKey, t)).toBe(true);
    expect(await verifyReport(keys.publicKey, { ...t, background: [1, 2, 3, 5] })).toBe(false);
  });

  it('never throws on malformed keys and signatures', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string(), fc.string(), async (key, signature) => {
        expect(await verifyReport(key, { ...measurer('relay-1', [1, 2, 3, 4]), signature })).toBe(false);
      }),
      { numRuns: 200 },
    );
  });
});

describe('the verdict of a measurement', () => {
  it('is the median of the per-second sums, with the background counted up to r/(1-r), and its line rate', () => {
    const v = measurementVerdict(M, [measurer('relay-1', [100, 400, 500, 600]), measurer('relay-2', [100, 400, 500, 600]), target([0, 0, 0, 0])], 1420);
    // Sums 200, 800, 1000, 1200: the median is 900.
    expect(v).toEqual({ outcome: 'measured', capacity: 900, lineRate: Math.round(lineRate(900, 1420)), reason: null });
    // An over-reporting target gains at most 1/(1-r).
    const inflated = measurementVerdict(
      M,
      [measurer('relay-1', [500, 500, 500, 500]), measurer('relay-2', [500, 500, 500, 500]), target([1e9, 1e9, 1e9, 1e9])],
      1420,
    );
    expect(inflated.capacity).toBe(Math.round(1000 / 0.9));
  });

  it('is incomplete without every measurer, counts no background of a silent target, and ignores reports of others', () => {
    expect(measurementVerdict(M, [measurer('relay-1', [1, 1, 1, 1])], 1420)).toMatchObject({
      outcome: 'incomplete',
      reason: 'no report from measurer relay-2',
    });
    const noTarget = measurementVerdict(M, [measurer('relay-1', [10, 10, 10, 10]), measurer('relay-2', [10, 10, 10, 10])], 1420);
    expect(noTarget).toMatchObject({ outcome: 'measured', capacity: 20 });
    const stranger = measurementVerdict(M, [measurer('relay-1', [10, 10, 10, 10]), measurer('relay-9', [1e9, 1e9, 1e9, 1e9])], 1420);
    expect(stranger.outcome).toBe('incomplete');
  });

  it('rejects a target whose echoes failed a check, whose streams broke, or that echoed nothing', () => {
    const good = measurer('relay-2', [10, 10, 10, 10]);
    expect(measurementVerdict(M, [measurer('relay-1', [10, 10, 10, 10], { failures: 1 }), good], 1420)).toMatchObject({
      outcome: 'rejected',
      reason: expect.stringMatching(/^spot-check-failed/),
    });
    expect(measurementVerdict(M, [measurer('relay-1', [10, 10, 10, 10], { error: 'stream 0: ECONNRESET' }), good], 1420)).toMatchObject({
      outcome: 'rejected',
      reason: expect.stringMatching(/^stream-broken/),
    });
    expect(measurementVerdict(M, [measurer('relay-1', [0, 0, 0, 0]), measurer('relay-2', [0, 0, 0, 0])], 1420)).toMatchObject({
      outcome: 'rejected',
      reason: expect.stringMatching(/^nothing-echoed/),
    });
  });
});

describe('echo streams: what a measurer sends and checks', () => {
  it('passes the bytes sent, in any chunking, and fails a chunk with one byte changed', () => {
    const s = new EchoStream();
    const sent = Buffer.concat([s.next(1000), s.next(3000), s.next(17)]);
    for (const [a, b] of [
      [0, 1],
      [1, 2500],
      [2500, 4017],
    ] as const)
      expect(s.check(sent.subarray(a, b))).toBe(true);
    expect([s.checks, s.failures]).toEqual([3, 0]);
    const t = new EchoStream();
    const bytes = t.next(100);
    bytes[50]! ^= 1;
    expect(t.check(bytes)).toBe(false);
    expect(t.failures).toBe(1);
    // Two streams' keystreams differ (a target cannot replay one to another).
    expect(new EchoStream().next(64).equals(new EchoStream().next(64))).toBe(false);
  });

  it('checks what comes back 64 KiB at a time: every part of a good batch counted when it came, none of a batch with a wrong byte', () => {
    const s = new EchoStream();
    const sent = Buffer.concat([s.next(70_000), s.next(70_000), s.next(10_000)]);
    const good: [number, number][] = [];
    const count = (atMs: number, n: number) => void good.push([atMs, n]);
    // The reader may reuse its buffer: what was received is a copy.
    const reused = Buffer.alloc(40_000);
    const take = (a: number, b: number, atMs: number) => {
      sent.copy(reused, 0, a, b);
      s.receive(reused.subarray(0, b - a), atMs, count);
      reused.fill(7);
    };
    take(0, 30_000, 1);
    take(30_000, 60_000, 2);
    expect([s.checks, good]).toEqual([0, []]);
    // The third fills the batch (65,536 bytes) with 5,536 of its 10,000.
    take(60_000, 70_000, 3);
    expect([s.checks, s.failures, good]).toEqual([
      1,
      0,
      [
        [1, 30_000],
        [2, 30_000],
        [3, 5_536],
      ],
    ]);
    // A batch with one byte changed counts none of its parts; the stream goes on in step after it.
    const bad = Buffer.from(sent.subarray(70_000, 100_000));
    bad[29_999]! ^= 1;
    s.receive(bad, 4, count);
    take(100_000, 140_000, 5);
    expect([s.checks, s.failures, good.length]).toEqual([2, 1, 3]);
    // What waits at the end is checked by flush.
    take(140_000, 150_000, 6);
    s.flush(count);
    expect([s.checks, s.failures]).toEqual([3, 1]);
    expect(good.slice(3)).toEqual([
      [5, 40_000 - (131_072 - 100_000)],
      [6, 10_000],
    ]);
    s.flush(count);
    expect(s.checks).toBe(3);
  });

  it('counts bytes in the second they came in, and nothing outside the window', () => {
    const c = new PerSecond(10_000, 3);
    expect([c.add(9_999, 5), c.add(10_000, 1), c.add(11_999, 2), c.add(12_500, 3), c.add(13_000, 7)]).toEqual([false, true, true, true, false]);
    expect(c.counts).toEqual([1, 2, 3]);
  });

  it("takes the target's other traffic from its links' transmit counters, the measurers' links left out, a counter restart counted from zero", () => {
    const at = (atMs: number, tx: Record<string, number>) => ({ atMs, tx: new Map(Object.entries(tx)) });
    const samples = [
      at(9_000, { 'relay-1': 100, 'relay-4': 1_000, 'relay-5': 50 }),
      at(10_000, { 'relay-1': 5_000, 'relay-4': 1_500, 'relay-5': 60 }),
      at(11_000, { 'relay-1': 9_000, 'relay-4': 1_700, 'relay-5': 10 }),
      at(12_000, { 'relay-1': 9_500, 'relay-4': 2_000, 'relay-5': 20 }),
    ];
    // The sample at 10,000 counts in the second before the window; 11,000 in second 0; 12,000 in second 1.
    expect(backgroundOf(samples, 10_000, 2, new Set(['relay-1']))).toEqual([200 + 10, 300 + 10]);
  });

  it('spreads a reading over the time since the one before (an observer reads every 5 s by default)', () => {
    const at = (atMs: number, tx: number) => ({ atMs, tx: new Map([['relay-4', tx]]) });
    // 4,000 bytes from 8,000 to 12,000 ms, 3,000 from 12,000 to 15,000: a window of 10,000-14,000 gets
    // 1,000 a second of the first, and 1,000 a second of the second.
    expect(backgroundOf([at(8_000, 0), at(12_000, 4_000), at(15_000, 7_000)], 10_000, 4, new Set())).toEqual([1_000, 1_000, 1_000, 1_000]);
    // A reading within a second splits it; no reading past the end leaves the tail uncounted.
    expect(backgroundOf([at(9_500, 0), at(10_500, 1_000), at(11_000, 1_000)], 10_000, 3, new Set())).toEqual([500, 0, 0]);
    // Readings out of order or at the same time count nothing.
    expect(backgroundOf([at(11_000, 0), at(11_000, 5_000), at(10_000, 9_000)], 10_000, 3, new Set())).toEqual([0, 0, 0]);
  });
});

describe('measurements in the view', () => {
  const sched = (m: Measurement, revision: number) => ({
    ...ev.admitted(revision, relay(1)),
    type: 'MeasurementScheduled' as const,
    data: { revision, measurement: m },
  });
  const measured = (id: string, revision: number) => ({
    ...ev.admitted(revision, relay(1)),
    type: 'RelayMeasured' as const,
    data: { revision, measurementId: id, relayId: 'relay-3', outcome: 'measured' as const, capacity: 1, lineRate: 2, reason: null },
  });

  it('keeps those the relay takes part in until they are concluded; a relay view keeps all', () => {
    let v1 = emptyTopology('relay-1');
    let v9 = emptyTopology('relay-9');
    let all = emptyTopology(null);
    for (const e of [sched(M, 1)]) {
      v1 = evolveTopology(v1, e);
      v9 = evolveTopology(v9, e);
      all = evolveTopology(all, e);
    }
    expect(Object.keys(v1.measurements ?? {})).toEqual([M.id]);
    expect(Object.keys(v9.measurements ?? {})).toEqual([]);
    expect(Object.keys(all.measurements ?? {})).toEqual([M.id]);
    v1 = evolveTopology(v1, measured(M.id, 2));
    expect(v1.measurements).toEqual({});
    expect(v1.revision).toBe(2);
  });

  it('seeds, from a registration snapshot, the measurements the relay takes part in', () => {
    const other = { ...M, id: '00000000-0000-4000-8000-0000000000bb', targetId: 'relay-5', measurerIds: ['relay-6'] };
    expect(Object.keys(seedTopology(3, [relay(1)], [], 'relay-1', [M, other]).measurements ?? {})).toEqual([M.id]);
    expect(Object.keys(seedTopology(3, [relay(1)], [], null, [M, other]).measurements ?? {}).sort()).toEqual([M.id, other.id].sort());
    expect(seedTopology(3, [relay(1)], [], 'relay-9', [M]).measurements).toBeUndefined();
  });

  it('refuses a schedule whose target measures itself or names a measurer twice', () => {
    expect(MeasurementScheduledV1.safeParse({ revision: 1, measurement: M }).success).toBe(true);
    expect(MeasurementScheduledV1.safeParse({ revision: 1, measurement: { ...M, measurerIds: ['relay-1', 'relay-3'] } }).success).toBe(false);
    expect(MeasurementScheduledV1.safeParse({ revision: 1, measurement: { ...M, measurerIds: ['relay-1', 'relay-1'] } }).success).toBe(false);
  });
});

describe('the measurement schedule', () => {
  const r = (relayId: string, lastStartMs: number | null, open = false) => ({ relayId, lastStartMs, open });
  it('measures the relay never measured first, then the one measured longest ago once it is due, one at a time', () => {
    const H = 3_600_000;
    expect(nextToMeasure([r('relay-1', 5 * H), r('relay-2', null), r('relay-3', 1 * H)], 6 * H, 10 * H)).toBe('relay-2');
    expect(nextToMeasure([r('relay-1', 5 * H), r('relay-2', 2 * H), r('relay-3', 1 * H)], 12 * H, 10 * H)).toBe('relay-3');
    // Not due yet.
    expect(nextToMeasure([r('relay-1', 5 * H), r('relay-2', 4 * H)], 6 * H, 10 * H)).toBeNull();
    // One under way: nothing else.
    expect(nextToMeasure([r('relay-1', null), r('relay-2', 1 * H, true)], 20 * H, 10 * H)).toBeNull();
    // A relay alone has no one to measure it; ties go by id.
    expect(nextToMeasure([r('relay-1', null)], 0, 1)).toBeNull();
    expect(nextToMeasure([r('relay-2', null), r('relay-1', null)], 0, 1)).toBe('relay-1');
  });
});

describe('the settlement schedule', () => {
  const E = 300;
  it('settles an epoch once `after` seconds past its end, oldest first after an outage, never more than a few epochs back', () => {
    // Epoch 9 is [2700, 3000) s; with after = 60 it is due from 3060 s.
    expect(nextToSettle(3_059_000, E, 60, null)).toBe(8);
    expect(nextToSettle(3_060_000, E, 60, null)).toBe(9);
    // Settled up to 9: nothing until 10 is due.
    expect(nextToSettle(3_300_000, E, 60, 9)).toBeNull();
    expect(nextToSettle(3_360_000, E, 60, 9)).toBe(10);
    // After an outage: the oldest unsettled first, but no further back than SETTLE_CATCH_UP_EPOCHS.
    expect(nextToSettle(3_060_000 + 5 * E * 1000, E, 60, 9)).toBe(10);
    expect(nextToSettle(3_060_000 + 100 * E * 1000, E, 60, 9)).toBe(109 - SETTLE_CATCH_UP_EPOCHS + 1);
    // A fresh network settles the latest due epoch only; none is due in the first epochs of time.
    expect(nextToSettle(359_000, E, 60, null)).toBeNull();
    expect(nextToSettle(360_000, E, 60, null)).toBe(0);
    expect(nextToSettle(660_000, E, 60, null)).toBe(1);
  });
});
