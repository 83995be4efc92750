import { describe, expect, it } from 'vitest';
import { consumerCounts, pullOrder, repullDue } from '../../src/daemon/topology-follower.ts';

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

describe('repullDue: whether a REPULL drops the pull', () => {
  it('drops only a pull that has neither begun nor handed a message over within the quiet time', () => {
    // No pull yet (the consumer being set up): nothing to drop.
    expect(repullDue(50_000, null, null, 10_000)).toBe(false);
    // Begun 300 ms ago, nothing handed over yet: moving.
    expect(repullDue(50_000, 49_700, null, 10_000)).toBe(false);
    // Begun long ago, a message 5 s ago: moving.
    expect(repullDue(50_000, 1_000, 45_000, 10_000)).toBe(false);
    // Begun long ago, nothing for 10 s or more: stalled.
    expect(repullDue(50_000, 1_000, 40_000, 10_000)).toBe(true);
    expect(repullDue(50_000, 1_000, null, 10_000)).toBe(true);
    // A message older than the pull (handed over by the pull before): the pull's age decides.
    expect(repullDue(50_000, 45_000, 30_000, 10_000)).toBe(false);
    expect(repullDue(50_000, 39_000, 30_000, 10_000)).toBe(true);
    // No quiet time: every REPULL drops the pull.
    expect(repullDue(50_000, 50_000, 50_000, 0)).toBe(true);
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
