import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type CounterSample, emptyLedger, type Ledger, observe } from '../../src/pob/ledger.ts';

const E = 300;
const at = (epoch: number, s: number) => (epoch * E + s) * 1000;

function run(samples: [number, CounterSample[]][]) {
  let ledger: Ledger = emptyLedger(E);
  const closed = [];
  for (const [ms, ss] of samples) {
    const r = observe(ledger, ms, ss);
    ledger = r.ledger;
    closed.push(...r.closed);
  }
  return { ledger, closed };
}

describe('the traffic ledger', () => {
  it('counts each peer’s bytes per epoch from cumulative counters, closing an epoch at the first sample of the next', () => {
    const { closed } = run([
      [at(10, 0), [{ peerId: 'b', txBytes: 1000, rxBytes: 500 }]],
      [
        at(10, 100),
        [
          { peerId: 'b', txBytes: 5000, rxBytes: 900 },
          { peerId: 'a', txBytes: 70, rxBytes: 80 },
        ],
      ],
      [
        at(10, 299),
        [
          { peerId: 'b', txBytes: 9000, rxBytes: 1500 },
          { peerId: 'a', txBytes: 170, rxBytes: 180 },
        ],
      ],
      [
        at(11, 0),
        [
          { peerId: 'b', txBytes: 9100, rxBytes: 1600 },
          { peerId: 'a', txBytes: 170, rxBytes: 180 },
        ],
      ],
      [at(11, 150), [{ peerId: 'b', txBytes: 9300, rxBytes: 1650 }]],
      [at(12, 0), [{ peerId: 'b', txBytes: 9400, rxBytes: 1650 }]],
    ]);
    expect(closed).toEqual([
      // The boundary sample's growth (since 299 s) belongs to epoch 10; peer a starts counting when first seen.
      {
        epoch: 10,
        receipts: [
          { peerId: 'a', txBytes: 100, rxBytes: 100 },
          { peerId: 'b', txBytes: 8100, rxBytes: 1100 },
        ],
      },
      // a left in epoch 11 with nothing more; b's bytes up to the next boundary.
      {
        epoch: 11,
        receipts: [
          { peerId: 'a', txBytes: 0, rxBytes: 0 },
          { peerId: 'b', txBytes: 300, rxBytes: 50 },
        ],
      },
    ]);
  });

  it('keeps what was counted before a counter restart (the peer set anew)', () => {
    const { closed } = run([
      [at(1, 0), [{ peerId: 'b', txBytes: 10_000, rxBytes: 10_000 }]],
      [at(1, 50), [{ peerId: 'b', txBytes: 12_000, rxBytes: 11_000 }]],
      [at(1, 60), [{ peerId: 'b', txBytes: 300, rxBytes: 200 }]], // restarted: 300 and 200 since
      [at(2, 0), [{ peerId: 'b', txBytes: 700, rxBytes: 200 }]],
    ]);
    expect(closed).toEqual([{ epoch: 1, receipts: [{ peerId: 'b', txBytes: 2000 + 300 + 400, rxBytes: 1000 + 200 }] }]);
  });

  it('gives back the same ledger for a sample that changes nothing (the shell then saves nothing), a new one for any change', () => {
    const first = observe(emptyLedger(E), at(3, 0), [{ peerId: 'b', txBytes: 10, rxBytes: 20 }]).ledger;
    const same = observe(first, at(3, 30), [{ peerId: 'b', txBytes: 10, rxBytes: 20 }]);
    expect(same.ledger).toBe(first);
    expect(same.closed).toEqual([]);
    // A counter that moved, a new peer, a new epoch: each a new ledger.
    expect(observe(first, at(3, 60), [{ peerId: 'b', txBytes: 11, rxBytes: 20 }]).ledger).not.toBe(first);
    expect(
      observe(first, at(3, 60), [
        { peerId: 'b', txBytes: 10, rxBytes: 20 },
        { peerId: 'c', txBytes: 0, rxBytes: 0 },
      ]).ledger,
    ).not.toBe(first);
    const next = observe(first, at(4, 0), [{ peerId: 'b', txBytes: 10, rxBytes: 20 }]);
    expect(next.ledger).not.toBe(first);
    expect(next.closed).toEqual([{ epoch: 3, receipts: [{ peerId: 'b', txBytes: 0, rxBytes: 0 }] }]);
  });

  it('refuses a malformed epoch length', () => {
    expect(() => emptyLedger(0)).toThrow(/positive integer/);
    expect(() => emptyLedger(1.5)).toThrow(/positive integer/);
  });

  it('accounts every byte between the first and the last sample of an epoch, however it is sampled (generated)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 1, max: 10 ** 6 }), fc.integer({ min: 1, max: 10 ** 6 })), { minLength: 1, maxLength: 40 }), (steps) => {
        // One peer within one epoch: cumulative counters growing by each step, then the next epoch.
        let tx = 5;
        let rx = 7;
        const samples: [number, CounterSample[]][] = [[at(3, 0), [{ peerId: 'p', txBytes: tx, rxBytes: rx }]]];
        steps.forEach(([dt, dr], i) => {
          tx += dt;
          rx += dr;
          samples.push([at(3, 1 + (i % 290)), [{ peerId: 'p', txBytes: tx, rxBytes: rx }]]);
        });
        samples.push([at(4, 0), [{ peerId: 'p', txBytes: tx, rxBytes: rx }]]);
        const { closed } = run(samples);
        expect(closed).toEqual([{ epoch: 3, receipts: [{ peerId: 'p', txBytes: tx - 5, rxBytes: rx - 7 }] }]);
      }),
    );
  });
});
