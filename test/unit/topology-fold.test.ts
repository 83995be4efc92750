import { describe, expect, it } from 'vitest';
import { canonicalMembership, canonicalTopology, evolveTopology, seedTopology, EMPTY_TOPOLOGY } from '../../src/events/topology.fold.ts';
import { session } from '../support/clients-harness.ts';
import { ev, given, key, relay } from '../support/given.ts';

describe('topology fold', () => {
  it('admits a relay at the next revision', () => {
    const out = given([ev.admitted(1, relay(1))]).when(ev.admitted(2, relay(2)));
    expect(out.kind).toBe('applied');
    if (out.kind !== 'applied') return;
    expect(out.state.revision).toBe(2);
    expect([...out.state.relays.keys()].sort()).toEqual(['relay-1', 'relay-2']);
  });

  it('drops a relay that left', () => {
    const out = given([ev.admitted(1, relay(1)), ev.admitted(2, relay(2))]).when(ev.left(3, 'relay-1'));
    expect(out.kind === 'applied' && [...out.state.relays.keys()]).toEqual(['relay-2']);
  });

  it('rotates a key and changes an endpoint in place', () => {
    const g = given([ev.admitted(1, relay(1)), ev.rotated(2, 'relay-1', key(99), key(1))]);
    expect(g.state.relays.get('relay-1')?.publicKey).toBe(key(99));
    const out = g.when(ev.moved(3, 'relay-1', '203.0.113.7:51820', '198.51.100.1:51820'));
    expect(out.kind === 'applied' && out.state.relays.get('relay-1')?.endpoint).toBe('203.0.113.7:51820');
    expect(out.kind === 'applied' && out.state.relays.get('relay-1')?.publicKey).toBe(key(99));
  });

  it('treats revisions at or below the view as duplicates (exactly once)', () => {
    const g = given([ev.admitted(1, relay(1)), ev.admitted(2, relay(2))]);
    expect(g.when(ev.admitted(2, relay(2)))).toEqual({ kind: 'duplicate', revision: 2 });
    expect(g.when(ev.left(1, 'relay-1'))).toEqual({ kind: 'duplicate', revision: 1 });
  });

  it('reports a skipped revision as a gap instead of applying it', () => {
    expect(given([ev.admitted(1, relay(1))]).when(ev.admitted(3, relay(3)))).toEqual({ kind: 'gap', expected: 2, got: 3 });
  });

  it('continues a snapshot seed: events after R apply, R and before are duplicates', () => {
    const seeded = seedTopology(5, [relay(1), relay(2)]);
    expect(given([], seeded).when(ev.admitted(5, relay(2))).kind).toBe('duplicate');
    const out = given([], seeded).when(ev.admitted(6, relay(3)));
    expect(out.kind === 'applied' && out.state.revision).toBe(6);
  });

  it('seed + stream equals a full replay of the stream', () => {
    const log = [ev.admitted(1, relay(1)), ev.admitted(2, relay(2)), ev.admitted(3, relay(3)), ev.left(4, 'relay-2'), ev.rotated(5, 'relay-3', key(7), key(3))];
    const full = log.reduce(evolveTopology, EMPTY_TOPOLOGY);
    const atThree = log.slice(0, 3).reduce(evolveTopology, EMPTY_TOPOLOGY);
    const seeded = seedTopology(3, [...atThree.relays.values()]);
    const resumed = log.slice(3).reduce(evolveTopology, seeded);
    expect(canonicalTopology(resumed)).toBe(canonicalTopology(full));
  });

  it('replaces the relays only when a relay event changes them: a session event keeps the very same map', () => {
    const [r1, r2] = [relay(1), relay(2)];
    const seeded = seedTopology(2, [r1, r2], [], 'relay-1');
    const opened = given([ev.opened(3, session(1, r1, 'relay-2'))], seeded).state;
    expect(opened.relays).toBe(seeded.relays);
    const left = given([ev.left(3, 'relay-3')], seeded).state;
    expect(left.relays).toBe(seeded.relays);
    const joined = given([ev.admitted(3, relay(3))], seeded).state;
    expect(joined.relays).not.toBe(seeded.relays);
    expect([...seeded.relays.keys()]).toEqual(['relay-1', 'relay-2']);
    expect(joined.relays.get('relay-1')).toBe(r1);
  });

  it('is pure: the input view is not modified', () => {
    const g = given([ev.admitted(1, relay(1))]);
    const before = canonicalTopology(g.state);
    g.when(ev.left(2, 'relay-1'));
    expect(canonicalTopology(g.state)).toBe(before);
  });

  it("a relay's view keeps only the sessions entering at it; the revision moves with every event", () => {
    const [r1, r2] = [relay(1), relay(2)];
    const mine = session(1, r1, 'relay-2');
    const theirs = session(2, r2, 'relay-1');
    const seeded = seedTopology(2, [r1, r2], [mine, theirs], 'relay-1');
    expect(Object.keys(seeded.sessions)).toEqual([mine.id]);
    const other = session(3, r2, 'relay-1');
    const g = given([ev.opened(3, other), ev.steered(4, theirs, 'relay-2'), ev.closed(5, theirs), ev.opened(6, session(4, r1, 'relay-2'))], seeded);
    expect(g.state.revision).toBe(6);
    expect(Object.keys(g.state.sessions).sort()).toEqual([mine.id, session(4, r1, 'relay-2').id].sort());
    expect(g.state.entry).toBe('relay-1');
    // The same events on a view of every session (entry null) keep them all.
    const all = given([ev.opened(3, other)], seedTopology(2, [r1, r2], [mine, theirs]));
    expect(Object.keys(all.state.sessions).sort()).toEqual([mine.id, theirs.id, other.id].sort());
    // Others' sessions do not change what the relays share.
    expect(canonicalMembership(g.state)).toBe(canonicalMembership({ ...g.state, sessions: {} }));
    expect(canonicalTopology(g.state)).not.toBe(canonicalMembership(g.state));
  });

  it('a private session concerns its entry and its exit: a switch of exit moves it from the old exit to the new one', () => {
    const [r1, r2, r3] = [relay(1), relay(2), relay(3)];
    const hidden = session(1, r1, 'relay-2', { mode: 'private' });
    const plain = session(2, r1, 'relay-2');
    const views = ['relay-1', 'relay-2', 'relay-3'].map((id) => seedTopology(2, [r1, r2, r3], [hidden, plain], id));
    expect(views.map((v) => Object.keys(v.sessions).sort())).toEqual([[hidden.id, plain.id].sort(), [hidden.id], []]);
    const moved = views.map((v) => given([ev.steered(3, hidden, 'relay-3')], v).state);
    expect(moved.map((v) => Object.keys(v.sessions).sort())).toEqual([[hidden.id, plain.id].sort(), [], [hidden.id]]);
    expect(moved[2]!.sessions[hidden.id]).toEqual({ ...hidden, exitId: 'relay-3' });
    expect(moved[0]!.sessions[hidden.id]).toEqual({ ...hidden, exitId: 'relay-3' });
    // Opened and closed, it comes and goes at its exit too.
    const other = session(3, r2, 'relay-3', { mode: 'private' });
    const exit = given([ev.opened(3, other)], views[2]!).state;
    expect(Object.keys(exit.sessions)).toEqual([other.id]);
    expect(given([ev.closed(4, other)], exit).state.sessions).toEqual({});
    // Only a private session adds its mode to the canonical text: the digests of older views stay.
    expect(canonicalTopology(views[0]!)).toContain('"private"]');
    expect(canonicalTopology({ ...views[0]!, sessions: { [plain.id]: plain } })).not.toContain('standard');
  });

  it('canonical text does not depend on insertion order', () => {
    expect(canonicalTopology(seedTopology(2, [relay(2), relay(1)]))).toBe(canonicalTopology(seedTopology(2, [relay(1), relay(2)])));
  });
});
