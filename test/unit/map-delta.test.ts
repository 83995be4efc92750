import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { evolveTopology, seedTopology, type TopologyView } from '../../src/events/topology.fold.ts';
import { desiredMeshState, type MeshOptions } from '../../src/kernel/mesh.ts';
import { initialMeshState, meshOwner, meshPeers, type MeshOwnerState } from '../../src/kernel/owners/mesh.ts';
import { changedEntries, derivedMap, keysChangedSince, MapWithout, orderedChangesBetween, orderedChangesSince } from '../../src/lib/map-delta.ts';
import { ev, relay } from '../support/given.ts';

/** A change to a Map of small integers by key: set (new or replaced) or delete. */
const K = 100; // keys 0..K: enough for an overlay to pass its 64 changes and be copied
const stepArb = fc.record({
  set: fc.array(fc.tuple(fc.integer({ min: 0, max: K }), fc.integer()), { maxLength: 6 }),
  del: fc.array(fc.integer({ min: 0, max: K }), { maxLength: 3 }),
});

function bruteChanged(a: ReadonlyMap<number, { v: number }>, b: ReadonlyMap<number, { v: number }>): number[] {
  const out = new Set<number>();
  for (const [k, v] of a) if (b.get(k) !== v) out.add(k);
  for (const k of b.keys()) if (!a.has(k)) out.add(k);
  return [...out].sort((x, y) => x - y);
}

describe('maps derived by a few changes (map-delta.ts)', () => {
  it('know the keys and the order that changed, over chains of steps, as a walk over both Maps finds', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: K }), fc.integer()), { maxLength: 30 }),
        fc.array(stepArb, { minLength: 20, maxLength: 120, size: 'max' }),
        fc.nat(),
        (seed, steps, pick) => {
          const start = new Map(seed.map(([k, v]) => [k, { v }]));
          const maps: ReadonlyMap<number, { v: number }>[] = [start];
          const model = new Map(start);
          for (const st of steps) {
            const set = st.set.map(([k, v]) => [k, { v }] as const);
            const m = derivedMap(maps.at(-1)!, set, st.del);
            // Reads, iterates and sizes as a Map changed the same way would (an overlay past 64 changes is copied).
            for (const k of st.del) model.delete(k);
            for (const [k, v] of set) model.set(k, v);
            expect([...m]).toEqual([...model]);
            expect([...m.keys()]).toEqual([...model.keys()]);
            expect([...m.values()]).toEqual([...model.values()]);
            expect(m.size).toBe(model.size);
            const keys = Array.from({ length: K + 1 }, (_, k) => k);
            expect(keys.map((k) => [m.get(k), m.has(k)])).toEqual(keys.map((k) => [model.get(k), model.has(k)]));
            maps.push(m);
          }
          const to = maps.at(-1)!;
          const from = maps[pick % maps.length]!;
          const back = maps.length - 1 - (pick % maps.length);
          const changed = keysChangedSince(to, from);
          const order = orderedChangesSince(to, from);
          if (back > 32) return; // beyond the steps remembered: null is allowed
          if (steps.length === 0 && changed) expect(changed.size).toBe(0);
          expect(changed).not.toBeNull();
          for (const k of bruteChanged(from, to)) expect(changed!.has(k)).toBe(true);
          expect(changedEntries(from, to).sort((x, y) => x - y)).toEqual(bruteChanged(from, to));
          expect(changedEntries(to, from).sort((x, y) => x - y)).toEqual(bruteChanged(from, to));
          // The order: from's keys less the removed, then the appended.
          expect([...[...from.keys()].filter((k) => !order!.removed.has(k)), ...order!.appended]).toEqual([...to.keys()]);
          // Replaced ones kept their place and are the only kept keys whose value changed.
          for (const k of from.keys()) if (!order!.removed.has(k) && from.get(k) !== to.get(k)) expect(order!.replaced.has(k)).toBe(true);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('give a new Map for every change, even one that cancels the last (a join, then a leave), each knowing its way back', () => {
    const d0 = new Map([[1, { v: 1 }]]);
    const x = { v: 2 };
    const d1 = derivedMap(d0, [[2, x]]);
    const d2 = derivedMap(d1, [], [2]);
    const d3 = derivedMap(d2, [[2, x]]);
    const d4 = derivedMap(d3, [], [2]);
    expect(new Set([d0, d1, d2, d3, d4]).size).toBe(5);
    expect([...keysChangedSince(d2, d1)!]).toEqual([2]);
    expect([...keysChangedSince(d4, d1)!]).toEqual([2]);
    expect([...keysChangedSince(d3, d0)!]).toEqual([2]);
    expect([...d4]).toEqual([...d0]);
  });

  it('answer null for Maps not derived from each other, and changedEntries then walks both', () => {
    const a = new Map([[1, { v: 1 }]]);
    const b = new Map([[1, { v: 1 }]]);
    expect(keysChangedSince(b, a)).toBeNull();
    expect(orderedChangesSince(b, a)).toBeNull();
    expect(changedEntries(a, b)).toEqual([1]);
    // A derived Map does not know of its successors.
    const c = derivedMap(a, [[2, { v: 2 }]]);
    expect(keysChangedSince(a, c)).toBeNull();
    expect([...keysChangedSince(c, a)!]).toEqual([2]);
  });

  it('views a Map without one key: reads, iterates and diffs as the copy would', () => {
    const base = new Map([
      ['a', 1],
      ['self', 2],
      ['b', 3],
    ]);
    const w = MapWithout.of(base, 'self');
    expect(MapWithout.of(base, 'self')).toBe(w);
    expect(w.size).toBe(2);
    expect(w.get('self')).toBeUndefined();
    expect(w.has('self')).toBe(false);
    expect([...w]).toEqual([
      ['a', 1],
      ['b', 3],
    ]);
    expect([...w.keys()]).toEqual(['a', 'b']);
    expect([...w.values()]).toEqual([1, 3]);
    const next = derivedMap(base, [
      ['self', 9],
      ['c', 4],
    ]);
    const change = orderedChangesBetween(w, MapWithout.of(next, 'self'))!;
    expect(change.appended).toEqual(['c']);
    expect(change.replaced.has('self')).toBe(false);
  });
});

const opts: MeshOptions = {
  wgPrefix: 'rc',
  keepaliveSeconds: 25,
  mtu: 1420,
  privateKeyFile: '/s/wg.key',
  exitTableBase: 100_000,
  clientPrefix6: 'fd00:64::/96',
};

describe('the desired mesh patched from the last one (patchedMeshState)', () => {
  it('is exactly the mesh built whole, devices and routes in the same order, over random joins, leaves, rejoins and changes', () => {
    // Events on relays 2..9 of a network whose self is relay-1, seen by the owner every few events.
    const op = fc.oneof(
      fc.record({ k: fc.constant('join' as const), n: fc.integer({ min: 2, max: 9 }), v6: fc.boolean() }),
      // Admitted again with another mesh address (its link is another device), none taken by another relay.
      fc.record({ k: fc.constant('readmit' as const), n: fc.integer({ min: 2, max: 9 }), shift: fc.constantFrom(0, 20, 30) }),
      fc.record({ k: fc.constant('leave' as const), n: fc.integer({ min: 2, max: 9 }) }),
      fc.record({ k: fc.constant('rotate' as const), n: fc.integer({ min: 2, max: 9 }), key: fc.integer({ min: 100, max: 120 }) }),
      fc.record({ k: fc.constant('move' as const), n: fc.integer({ min: 2, max: 9 }), port: fc.integer({ min: 40_000, max: 40_010 }) }),
      fc.record({ k: fc.constant('look' as const) }),
    );
    let patched = 0;
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const self = relay(1);
        let view: TopologyView = seedTopology(1, [self, relay(2), relay(3)]);
        let s: MeshOwnerState = meshOwner.view(initialMeshState(self.id), { view });
        let last: ReturnType<typeof meshOwner.desire> | null = null;
        const look = () => {
          s = meshOwner.view(s, { view });
          const got = meshOwner.desire(s, opts);
          // Patched from the last one (a whole build knows no predecessor).
          if (last && got !== last && keysChangedSince(got.devices, last.devices) !== null) patched++;
          last = got;
          const whole = desiredMeshState(s.self!, meshPeers(view, self.id).values(), opts, s.resolved);
          expect([...got.devices.entries()]).toEqual([...whole.devices.entries()]);
          expect(got.routes).toEqual(whole.routes);
        };
        look();
        for (const o of ops) {
          const rev = view.revision + 1;
          const id = `relay-${'n' in o ? o.n : 0}`;
          const known = view.relays.get(id);
          if (o.k === 'join') view = evolveTopology(view, ev.admitted(rev, relay(o.n, o.v6 ? { exitIpv6: true } : {})));
          else if (o.k === 'readmit') view = evolveTopology(view, ev.admitted(rev, relay(o.n, { meshAddress: relay(o.n + o.shift).meshAddress })));
          else if (o.k === 'leave') view = evolveTopology(view, ev.left(rev, id));
          else if (o.k === 'rotate' && known) view = evolveTopology(view, ev.rotated(rev, id, relay(o.key).publicKey, known.publicKey));
          else if (o.k === 'move' && known) view = evolveTopology(view, ev.moved(rev, id, `198.51.100.${o.n}:${o.port}`, known.endpoint));
          else look();
        }
        look();
      }),
      { numRuns: 300 },
    );
    // The runs did take the patching path (most looks follow a change).
    expect(patched).toBeGreaterThan(300);
  });

  it('is patched, not built whole, for a join and a leave in a mesh that was built before', () => {
    const self = relay(1);
    let view = seedTopology(1, [self, ...Array.from({ length: 50 }, (_, i) => relay(i + 2))]);
    const s0 = meshOwner.view(initialMeshState(self.id), { view });
    const d0 = meshOwner.desire(s0, opts);
    view = evolveTopology(view, ev.admitted(2, relay(60)));
    const s1 = meshOwner.view(s0, { view });
    const d1 = meshOwner.desire(s1, opts);
    // Patched: the unchanged devices are the very objects of before, and the devices Map knows its change.
    expect(d1.devices.get('rc1m2')).toBe(d0.devices.get('rc1m2'));
    expect([...keysChangedSince(d1.devices, d0.devices)!]).toEqual(['rc1m60']);
    view = evolveTopology(view, ev.left(3, 'relay-7'));
    const d2 = meshOwner.desire(meshOwner.view(s1, { view }), opts);
    expect([...keysChangedSince(d2.devices, d1.devices)!]).toEqual(['rc1m7']);
    expect(d2.routes.some((r) => r.dev === 'rc1m7')).toBe(false);
    expect(d2.routes).toEqual(d1.routes.filter((r) => r.dev !== 'rc1m7'));
  });
});
