import { describe, expect, it } from 'vitest';
import { consumerCounts, pullOrder } from '../../src/daemon/topology-follower.ts';

describe('pullOrder: a message against the last one the pull handed over', () => {
  it('takes the first of a pull as it comes, the one after as next, older ones as repeats, later ones as skipped', () => {
    expect(pullOrder(0, 1)).toBe('next');
    expect(pullOrder(0, 900)).toBe('next');
    expect(pullOrder(41, 42)).toBe('next');
    expect(pullOrder(41, 41)).toBe('repeat');
    expect(pullOrder(41, 7)).toBe('repeat');
    expect(pullOrder(41, 43)).toBe('skipped');
    expect(pullOrder(41, 1_000)).toBe('skipped');
  });
});

describe("consumerCounts: a consumer's counts for the REPULL warning", () => {
  it('reads them from a whole info, and gives null for whatever an answer lacks, never throwing', () => {
    expect(
      consumerCounts({
        delivered: { stream_seq: 612, consumer_seq: 3 },
        ack_floor: { stream_seq: 600, consumer_seq: 1 },
        num_pending: 187,
        num_ack_pending: 2,
        num_waiting: 1,
        num_redelivered: 0,
      }),
    ).toEqual({ delivered: 612, ackFloor: 600, numPending: 187, numAckPending: 2, numWaiting: 1, numRedelivered: 0 });
    const none = { delivered: null, ackFloor: null, numPending: null, numAckPending: null, numWaiting: null, numRedelivered: null };
    expect(consumerCounts({ num_pending: 5 })).toEqual({ ...none, numPending: 5 });
    for (const partial of [undefined, null, {}, { delivered: null, ack_floor: 'x' }, 'not an info', 7]) expect(consumerCounts(partial)).toEqual(none);
  });
});
