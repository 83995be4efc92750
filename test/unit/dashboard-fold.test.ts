import { describe, expect, it } from 'vitest';
import { envelope } from '../../src/contract/envelope.ts';
import type { EventType } from '../../src/contract/catalogue.ts';
import { subjectFor } from '../../src/contract/subjects.ts';
import { emptyDashboard, FEED_MAX, foldDashboard, ROUNDS_MAX } from '../../src/dashboard/fold.ts';
import type { LogEntry } from '../../src/events/log.ts';

type AnyEvent = Extract<LogEntry, { ok: true }>['event'];
import { relay } from '../support/given.ts';

let seq = 0;
const T0 = Date.parse('2026-12-01T12:00:00Z');
/** A verified entry of `stream`: event `type` with `data`, published under `relayId`. */
function entry(stream: 'relay' | 'topology', relayId: string, type: string, data: Record<string, unknown>): LogEntry {
  seq++;
  const event = envelope(
    { source: stream === 'relay' ? `relay/${relayId}` : 'control-plane', now: () => new Date(T0 + seq * 1000), newId: () => `e${seq}` },
    type,
    1,
    data,
  ) as unknown as AnyEvent;
  return { ok: true, stream, seq, subject: subjectFor(type as EventType, relayId), time: new Date(T0 + seq * 1000).toISOString(), event, verified: true };
}
const link = (peerId: string, state: string, hs: number | null = null) => ({
  peerId,
  device: 'rc1m2',
  state,
  reason: 'r',
  latestHandshakeMs: hs,
  rxBytes: 0,
  txBytes: 0,
});

describe('the dashboard fold', () => {
  it('keeps membership from the topology, each relay’s state, revision and links from its own events', () => {
    const s = emptyDashboard();
    foldDashboard(s, entry('topology', 'relay-2', 'RelayAdmitted', { revision: 1, relay: relay(2), identityKey: null }));
    foldDashboard(s, entry('topology', 'relay-10', 'RelayAdmitted', { revision: 2, relay: relay(10), identityKey: null }));
    foldDashboard(s, entry('relay', 'relay-2', 'RelayStarted', { name: 'relay-2', region: 'x', publicKey: 'k', software: null, config: null }));
    expect(s.relays.find((r) => r.id === 'relay-2')!.state).toBe('starting');
    foldDashboard(s, entry('relay', 'relay-2', 'TopologySeeded', { revision: 2, relays: 2, reason: 'boot', digest: null, sessions: 'entry' }));
    foldDashboard(s, entry('relay', 'relay-2', 'LinkStateChanged', link('relay-10', 'up', T0)));
    foldDashboard(s, entry('relay', 'relay-2', 'TopologyEventApplied', { revision: 3, eventId: 'x', eventType: 'RelayAdmitted' }));
    const r2 = s.relays.find((r) => r.id === 'relay-2')!;
    expect(r2).toMatchObject({ member: true, state: 'serving', revision: 3, name: relay(2).name });
    expect(r2.links['relay-10']).toMatchObject({ state: 'up', latestHandshakeMs: T0 });
    // Sorted by id, numerically.
    expect(s.relays.map((r) => r.id)).toEqual(['relay-2', 'relay-10']);
    expect(s.topologyRevision).toBe(2);

    foldDashboard(s, entry('relay', 'relay-2', 'LinkStateChanged', link('relay-10', 'stale', T0)));
    expect(r2.links['relay-10']!.state).toBe('stale');
    foldDashboard(s, entry('topology', 'relay-10', 'RelayLeft', { revision: 4, relayId: 'relay-10', reason: 'expired' }));
    expect(s.relays.find((r) => r.id === 'relay-10')).toMatchObject({ member: false, left: 'expired' });
    foldDashboard(s, entry('relay', 'relay-2', 'RelayStopped', { reason: 'SIGTERM' }));
    expect(r2.state).toBe('stopped');
    expect(r2.links['relay-10']!.state).toBe('removed');
  });

  it('keeps the latest kernel rounds with their stream sequence, and a bounded feed, newest first; rejected messages counted', () => {
    const s = emptyDashboard();
    for (let i = 0; i < ROUNDS_MAX + 5; i++)
      foldDashboard(
        s,
        entry('relay', 'relay-1', 'KernelReconciled', {
          owner: 'mesh',
          round: i,
          part: 1,
          parts: 1,
          planned: 2,
          applied: 2,
          failed: false,
          focused: true,
          ops: [],
        }),
      );
    const r1 = s.relays[0]!;
    expect(r1.rounds).toHaveLength(ROUNDS_MAX);
    expect(r1.rounds[0]!.round).toBe(ROUNDS_MAX + 4);
    expect(r1.rounds[0]!.seq).toBe(seq);
    for (let i = 0; i < FEED_MAX; i++) foldDashboard(s, entry('relay', 'relay-1', 'RelayDraining', { signal: 'SIGTERM' }));
    foldDashboard(s, {
      ok: false,
      stream: 'relay',
      seq: ++seq,
      subject: 'relaynet.relay.relay-9.link.link-state-changed',
      time: new Date().toISOString(),
      skipped: { reason: 'bad-signature', detail: 'forged' },
    });
    expect(s.feed).toHaveLength(FEED_MAX);
    expect(s.feed[0]).toMatchObject({ type: 'REJECTED', relayId: 'relay-9', seq });
    expect(s.feed[0]!.text).toContain('REJECTED');
    expect(s.rejected).toBe(1);
    // A rejected message changes no relay.
    expect(s.relays.map((r) => r.id)).toEqual(['relay-1']);
  });
});
