/**
 * Equality for the read-only Maps of src/lib/map-delta.ts (a view's relays, a state's devices): equal to
 * a Map, or to each other, with the same entries, as two Maps are. Without it `toEqual` compares their
 * fields, and a derived view never equals the same view built from scratch.
 */
import { expect } from 'vitest';
import { MapWithout, OverlayMap, isMapLike } from '../../src/lib/map-delta.ts';

expect.addEqualityTesters([
  function mapLikeEquality(a: unknown, b: unknown, testers) {
    const ours = (v: unknown) => v instanceof OverlayMap || v instanceof MapWithout;
    if (!(ours(a) || ours(b)) || !isMapLike(a) || !isMapLike(b)) return undefined;
    if (a.size !== b.size) return false;
    for (const [k, v] of a) if (!b.has(k) || !this.equals(v, b.get(k), testers)) return false;
    return true;
  },
]);
