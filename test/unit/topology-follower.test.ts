import { describe, expect, it } from 'vitest';
import { pullOrder } from '../../src/daemon/topology-follower.ts';

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
