import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { createActor, fromCallback, fromPromise, waitFor } from 'xstate';
import { relayMachine, type Emission, type FollowCommand } from '../../src/actors/relay.machine.ts';
import {
  initialWindow,
  MIN_WINDOW_THRESHOLD,
  nextWindow,
  RelayEventPublisher,
  type DroppedReport,
  type WindowState,
} from '../../src/bus/relay-event-publisher.ts';
import type { RegisterResponse } from '../../src/contract/api-relays.ts';
import { envelope, PUBLISH_WINDOW } from '../../src/contract/envelope.ts';
import type { RelayEvent } from '../../src/contract/relay.events.ts';
import type { TopologyEvent } from '../../src/contract/topology.events.ts';
import { busHeadOf, decideEpoch } from '../../src/control-plane/epoch.ts';
import { decidePin, readPinnedKey, savePinnedKey, TopologyKeyRefused } from '../../src/daemon/topology-pin.ts';
import type { LogEntry } from '../../src/events/log.ts';
import { SourceOrder } from '../../src/events/source-order.ts';
import { eventEpochVerdict, heartbeatEpochChanged, RETIRED_EPOCHS_KEPT, retireEpochs } from '../../src/events/epoch.ts';
import { systemDeps } from '../../src/lib/deps.ts';
import { RelayReplay } from '../../src/replay/replay.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { busDetails, ev, relay } from '../support/given.ts';

const E1 = '11111111-1111-4111-8111-111111111111';
const E2 = '22222222-2222-4222-8222-222222222222';
const E3 = '33333333-3333-4333-8333-333333333333';

describe('the control plane decides its epoch against the bus', () => {
  const head = (epoch: string | null, revision = 50) => ({ eventId: 'e-50', revision, epoch });
  it('keeps it when the bus is empty or the outbox holds the bus head', () => {
    expect(decideEpoch({ epoch: E1, past: [], holdsBusHead: false }, null)).toMatchObject({ action: 'keep', why: 'empty-stream' });
    expect(decideEpoch({ epoch: E1, past: [], holdsBusHead: true }, head(E1))).toMatchObject({ action: 'keep' });
    // Events from before epochs, still in the database: no reason to change.
    expect(decideEpoch({ epoch: E1, past: [], holdsBusHead: true }, head(null))).toMatchObject({ action: 'keep' });
  });
  it('mints a new one when the bus holds an event of its epoch that the outbox lacks (restored from a copy)', () => {
    expect(decideEpoch({ epoch: E1, past: [], holdsBusHead: false }, head(E1))).toMatchObject({ action: 'mint' });
    expect(decideEpoch({ epoch: E1, past: [], holdsBusHead: false }, head(null))).toMatchObject({ action: 'mint' });
    // A bus ahead under an epoch this database never had (restored from a copy older than a new epoch).
    expect(decideEpoch({ epoch: E1, past: [], holdsBusHead: false }, head(E2))).toMatchObject({ action: 'mint' });
  });
  it('does not mint again while the bus only has events of an earlier epoch of this database', () => {
    expect(decideEpoch({ epoch: E2, past: [E1], holdsBusHead: false }, head(E1))).toMatchObject({ action: 'keep', why: 'bus-behind-new-epoch' });
  });
  it('reads the head of a topology message, and nothing of garbage', () => {
    const e = { ...ev.admitted(7, relay(2)), epoch: E1 };
    expect(busHeadOf(new TextEncoder().encode(JSON.stringify(e)))).toEqual({ eventId: e.id, revision: 7, epoch: E1 });
    expect(busHeadOf(new TextEncoder().encode('{"x":'))).toBeNull();
    expect(busHeadOf(new TextEncoder().encode('{"id":"a"}'))).toBeNull();
  });
});

describe('a relay and the epoch', () => {
  it('folds only events of its snapshot epoch; an unknown epoch means resync, a left one is never applied', () => {
    expect(eventEpochVerdict(E1, [], E1)).toBe('same');
    expect(eventEpochVerdict(E1, [], E2)).toBe('new');
    expect(eventEpochVerdict(E2, [E1], E1)).toBe('old');
    expect(eventEpochVerdict(E1, [], undefined)).toBe('old');
    // A control plane from before epochs: revisions alone.
    expect(eventEpochVerdict(null, [], E1)).toBe('same');
    expect(eventEpochVerdict(undefined, [], undefined)).toBe('same');
  });
  it('takes the heartbeat as the authority', () => {
    expect(heartbeatEpochChanged(E1, E2)).toBe(true);
    expect(heartbeatEpochChanged(E1, E1)).toBe(false);
    expect(heartbeatEpochChanged(null, E1)).toBe(false);
    expect(heartbeatEpochChanged(E1, undefined)).toBe(false);
  });
  it('retires the epoch it leaves and an unknown one the control plane did not confirm, never the seeded one, a bounded list', () => {
    expect(retireEpochs([], E1, undefined, E2)).toEqual([E1]);
    expect(retireEpochs([], E1, E3, E1)).toEqual([E3]);
    expect(retireEpochs([E1], E2, E1, E1)).toEqual([E2]);
    const many = Array.from({ length: 40 }, (_, i) => `${i}`);
    expect(retireEpochs(many, 'x', null, null)).toHaveLength(RETIRED_EPOCHS_KEPT);
    expect(retireEpochs(many, 'x', null, null).at(-1)).toBe('x');
  });
});

function registration(revision: number, others: number[], epoch: string | undefined): RegisterResponse {
  return {
    relay: relay(1),
    readmitted: false,
    revision,
    revisionTime: '2026-11-25T00:00:00.000Z',
    relays: others.map((n) => relay(n)),
    sessions: [],
    bus: busDetails(),
    heartbeatIntervalSeconds: 10,
    ...(epoch ? { epoch } : {}),
  };
}

function harness(regs: RegisterResponse[]) {
  const emitted: Emission[] = [];
  const machine = relayMachine.provide({
    actors: {
      register: fromPromise(async () => {
        const r = regs.shift();
        if (!r) throw new Error('no more registrations');
        return r;
      }),
      follow: fromCallback<FollowCommand, { registration: RegisterResponse }>(() => () => {}),
      heartbeat: fromCallback(() => () => {}),
      deregister: fromPromise(async () => ({ revision: 0 })),
    },
    actions: { emit: (_, p) => void emitted.push(p), reportFatal: () => {} },
    delays: { resyncRetry: 1 },
  });
  const actor = createActor(machine, {
    input: { request: { relayId: 'relay-1', name: 'Relay 1', region: 'test', publicKey: relay(1).publicKey, endpoint: relay(1).endpoint }, deps: systemDeps },
  });
  actor.start();
  return { actor, emitted };
}

const inEpoch = (e: TopologyEvent, epoch: string | undefined): TopologyEvent => (epoch ? { ...e, epoch } : e);

describe('the relay actor across an epoch change', () => {
  it('resyncs when a heartbeat shows another epoch, and never applies the old epoch afterwards', async () => {
    // Epoch 1 reached revision 6; the restored database is at 4 with a new epoch and makes another revision 5.
    const h = harness([registration(6, [2, 3], E1), registration(4, [2], E2)]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    h.actor.send({ type: 'HEARTBEAT', response: { revision: 4, revisionTime: '', status: 'active', epoch: E2 } });
    await waitFor(h.actor, (s) => s.matches('serving') && s.context.registration?.epoch === E2);
    expect(h.emitted.find((e) => e.type === 'TopologyResyncRequested')?.data).toMatchObject({ reason: 'epoch-changed', revision: 6 });
    expect(h.actor.getSnapshot().context.view.revision).toBe(4);
    // The old epoch's revisions 5 and 6, redelivered from the stream: not applied, counted.
    h.actor.send({ type: 'TOPOLOGY_EVENT', event: inEpoch(ev.admitted(5, relay(3)), E1), streamSeq: 5 });
    h.actor.send({ type: 'TOPOLOGY_EVENT', event: inEpoch(ev.admitted(6, relay(6)), E1), streamSeq: 6 });
    // The new epoch's revision 5 is applied (without epochs it would have been skipped as a duplicate).
    h.actor.send({ type: 'TOPOLOGY_EVENT', event: inEpoch(ev.admitted(5, relay(7)), E2), streamSeq: 7 });
    const s = h.actor.getSnapshot();
    expect(s.matches('serving')).toBe(true);
    expect([...s.context.view.relays.keys()].sort()).toEqual(['relay-1', 'relay-2', 'relay-7']);
    expect(s.context.counters).toMatchObject({ otherEpoch: 2, applied: 1, duplicates: 0, resyncs: 1 });
    expect(h.emitted.filter((e) => e.type === 'TopologyEventApplied')).toHaveLength(1);
  });

  it('resyncs on an event of an unknown epoch; when the snapshot does not confirm it, that epoch is retired (no loop)', async () => {
    const h = harness([registration(4, [2], E2), registration(4, [2], E2), registration(9, [], E3)]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    // A relay that booted into epoch 2 gets epoch 1's leftovers from the stream's margin.
    h.actor.send({ type: 'TOPOLOGY_EVENT', event: inEpoch(ev.admitted(3, relay(3)), E1), streamSeq: 3 });
    await waitFor(h.actor, (s) => s.matches('serving') && s.context.counters.resyncs === 1);
    expect(h.actor.getSnapshot().context.retiredEpochs).toEqual([E1]);
    h.actor.send({ type: 'TOPOLOGY_EVENT', event: inEpoch(ev.admitted(4, relay(3)), E1), streamSeq: 4 });
    expect(h.actor.getSnapshot().context.counters.resyncs).toBe(1);
    // An event of a genuinely new epoch: resync, and it is the snapshot's now.
    h.actor.send({ type: 'TOPOLOGY_EVENT', event: inEpoch(ev.admitted(10, relay(3)), E3), streamSeq: 9 });
    await waitFor(h.actor, (s) => s.matches('serving') && s.context.counters.resyncs === 2);
    const s = h.actor.getSnapshot();
    expect(s.context.registration?.epoch).toBe(E3);
    expect(s.context.retiredEpochs).toEqual([E1, E2]);
    expect(s.context.counters.applied).toBe(0);
  });

  it('works as before with a control plane without epochs', async () => {
    const h = harness([registration(4, [2], undefined)]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    h.actor.send({ type: 'TOPOLOGY_EVENT', event: ev.admitted(5, relay(5)), streamSeq: 5 });
    h.actor.send({ type: 'HEARTBEAT', response: { revision: 5, revisionTime: '', status: 'active' } });
    expect(h.actor.getSnapshot().context.counters).toMatchObject({ applied: 1, otherEpoch: 0, resyncs: 0 });
  });
});

describe('the pinned topology key', () => {
  it('trusts on first use, then only the pinned key; an explicit key wins; a re-pin replaces it', () => {
    expect(decidePin({ saved: null, explicit: null, offered: 'A', repin: false })).toEqual({ action: 'trust', key: 'A', save: true, how: 'first-use' });
    expect(decidePin({ saved: 'A', explicit: null, offered: 'A', repin: false })).toEqual({ action: 'trust', key: 'A', save: false, how: 'pinned' });
    expect(decidePin({ saved: 'A', explicit: null, offered: 'B', repin: false })).toEqual({ action: 'refuse', pinned: 'A', offered: 'B', source: 'file' });
    expect(decidePin({ saved: 'A', explicit: null, offered: 'B', repin: true })).toEqual({ action: 'trust', key: 'B', save: true, how: 'repinned' });
    expect(decidePin({ saved: 'A', explicit: 'B', offered: 'B', repin: false })).toEqual({ action: 'trust', key: 'B', save: true, how: 'explicit' });
    expect(decidePin({ saved: null, explicit: 'A', offered: 'B', repin: true })).toEqual({ action: 'refuse', pinned: 'A', offered: 'B', source: 'explicit' });
  });
  it('is saved 0600 in the state directory, and the refusal says how to re-pin', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pin-'));
    try {
      expect(readPinnedKey(dir)).toBeNull();
      savePinnedKey(dir, 'AAAA');
      expect(readPinnedKey(dir)).toBe('AAAA');
      expect(statSync(join(dir, 'topology-key.pub')).mode & 0o777).toBe(0o600);
      expect(new TopologyKeyRefused('AAAA', 'BBBB', 'file', dir).message).toMatch(/pinned AAAA.*--repin-topology-key/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the relay event queue', () => {
  it('drops the oldest beyond its capacity and reports the drops once the bus takes events again', async () => {
    const sent: string[] = [];
    const reports: DroppedReport[] = [];
    let up = false;
    const js = {
      publish: async (_subject: string, data: Uint8Array) => {
        if (!up) throw new Error('no responders');
        sent.push(JSON.parse(new TextDecoder().decode(data)).data.signal);
      },
    };
    let t = Date.parse('2026-11-30T12:00:00Z');
    const p = new RelayEventPublisher({
      js: null,
      relayId: 'relay-1',
      logger: rootLogger({ test: 'queue' }, 'silent'),
      capacity: 3,
      now: () => t++,
      onDropped: (r) => {
        reports.push(r);
        p.publish(draining('dropped'));
      },
    });
    let n = 0;
    const draining = (signal: string) =>
      envelope({ source: 'relay-1', now: () => new Date(), newId: () => `00000000-0000-4000-8000-${String(n++).padStart(12, '0')}` }, 'RelayDraining', 1, {
        signal,
      }) as RelayEvent;
    for (let i = 0; i < 5; i++) p.publish(draining(`e${i}`));
    expect(p.pending).toBe(3);
    expect(p.dropped).toBe(2);
    up = true;
    p.attach(js as never);
    await new Promise((r) => setTimeout(r, 50));
    expect(sent).toEqual(['e2', 'e3', 'e4', 'dropped']);
    expect(reports).toEqual([{ count: 2, capacity: 3, since: '2026-11-30T12:00:00.000Z', until: '2026-11-30T12:00:00.001Z' }]);
  });
});

describe('the relay event publisher', () => {
  const log = rootLogger({ test: 'publisher' }, 'silent');
  let n = 0;
  const event = (signal: string) =>
    envelope({ source: 'relay-1', now: () => new Date(), newId: () => `00000000-0000-4000-8000-${String(n++).padStart(12, '0')}` }, 'RelayDraining', 1, {
      signal,
    }) as RelayEvent;
  /**
   * A JetStream that stores messages in the order they arrive, each message id once (as the stream's
   * duplicate window does); the test says which arrived (`ack`) and which were lost (`fail`).
   */
  const fakeStream = () => {
    const out: { signal: string; event: RelayEvent; id: string; arrived: boolean; ack: () => void; fail: (e: Error) => void }[] = [];
    const js = {
      publish: (_subject: string, data: Uint8Array, opts: { msgID: string }) =>
        new Promise((resolve, reject) => {
          const event = JSON.parse(new TextDecoder().decode(data)) as RelayEvent;
          const entry = {
            signal: (event.data as { signal: string }).signal,
            event,
            id: opts.msgID,
            arrived: false,
            ack: () => {
              entry.arrived = true;
              resolve({});
            },
            fail: reject,
          };
          out.push(entry);
        }),
    };
    const storedEntries = () => {
      const ids = new Set<string>();
      return out.filter((o) => o.arrived && !ids.has(o.id) && ids.add(o.id));
    };
    const stored = () => storedEntries().map((o) => o.signal);
    /** What a reader makes of the stream: its entries put back in the relay's order (`SourceOrder`). */
    const read = () => {
      const order = new SourceOrder();
      const entries: LogEntry[] = storedEntries().map((o, i) => ({ ok: true, stream: 'relay', seq: i + 1, subject: 's', time: o.event.time, event: o.event }));
      const got = [...entries.flatMap((e) => order.push(e)), ...order.flush()];
      return got.map((e) => ((e as Extract<LogEntry, { ok: true }>).event.data as { signal: string }).signal);
    };
    return { js, out, stored, read };
  };
  const tick = () => new Promise((r) => setTimeout(r, 0));

  it(`has up to ${PUBLISH_WINDOW} events out at once, and they leave the queue acknowledged, in order`, async () => {
    const f = fakeStream();
    const p = new RelayEventPublisher({ js: f.js as never, relayId: 'relay-1', logger: log });
    for (let i = 0; i < PUBLISH_WINDOW + 10; i++) p.publish(event(`e${i}`));
    await tick();
    expect(PUBLISH_WINDOW).toBeGreaterThan(1);
    expect(f.out.map((o) => o.signal)).toEqual(Array.from({ length: PUBLISH_WINDOW }, (_, i) => `e${i}`));
    expect(p.pending).toBe(PUBLISH_WINDOW + 10);
    // Acknowledged out of order: only the head's acknowledgement lets events leave.
    f.out[1]!.ack();
    await tick();
    expect([p.pending, p.published]).toEqual([PUBLISH_WINDOW + 10, 0]);
    f.out[0]!.ack();
    await tick();
    expect([p.pending, p.published]).toEqual([PUBLISH_WINDOW + 8, 2]);
    for (let i = 2; i < PUBLISH_WINDOW; i++) f.out[i]!.ack();
    await tick();
    await tick();
    expect(f.out.slice(PUBLISH_WINDOW).map((o) => o.signal)).toEqual(Array.from({ length: 10 }, (_, i) => `e${PUBLISH_WINDOW + i}`));
    for (const o of f.out.slice(PUBLISH_WINDOW)) o.ack();
    await tick();
    expect(p.pending).toBe(0);
    expect(f.stored()).toEqual(Array.from({ length: PUBLISH_WINDOW + 10 }, (_, i) => `e${i}`));
  });

  it('sends all from the first unacknowledged again, in order, and the stream keeps each once', async () => {
    const f = fakeStream();
    const p = new RelayEventPublisher({ js: f.js as never, relayId: 'relay-1', logger: log });
    for (let i = 0; i < 5; i++) p.publish(event(`e${i}`));
    await tick();
    f.out[0]!.ack();
    f.out[1]!.fail(new Error('timeout')); // e1 lost
    f.out[2]!.ack(); // e2 stored though e1 was not: its re-send is a duplicate
    f.out[3]!.fail(new Error('timeout'));
    f.out[4]!.ack();
    await tick();
    expect(p.pending).toBe(4);
    p.publish(event('e5')); // wakes the retry
    await tick();
    await tick();
    expect(f.out.slice(5).map((o) => o.signal)).toEqual(['e1', 'e2', 'e3', 'e4', 'e5']);
    for (const o of f.out.slice(5)) o.ack();
    await tick();
    expect(p.pending).toBe(0);
    expect(p.published).toBe(6);
    expect(f.stored()).toEqual(['e0', 'e2', 'e4', 'e1', 'e3', 'e5']);
    // Numbered when first sent, sent again with the same number: a reader puts them back in order.
    expect(f.out.slice(5).map((o) => o.event.sourceSeq)).toEqual([1, 2, 3, 4, 5].map((i) => f.out[0]!.event.sourceSeq! + i));
    expect(f.read()).toEqual(['e0', 'e1', 'e2', 'e3', 'e4', 'e5']);
  });

  it('halves its window on a failure and grows it back with acknowledgements, never past the limit', () => {
    const windowAfter = (w: WindowState, ...outcomes: ('acked' | 'failed')[]) => outcomes.reduce(nextWindow, w);
    const acks = (n: number) => Array.from({ length: n }, () => 'acked' as const);
    expect(initialWindow().size).toBe(PUBLISH_WINDOW);
    expect(windowAfter(initialWindow(), ...acks(10))).toEqual(initialWindow());
    const half = windowAfter(initialWindow(), 'failed');
    expect(half).toEqual({ size: PUBLISH_WINDOW / 2, threshold: PUBLISH_WINDOW / 2, credit: 0 });
    // From the threshold on, one more per window's worth of acknowledgements.
    expect(windowAfter(half, ...acks(PUBLISH_WINDOW / 2 - 1)).size).toBe(PUBLISH_WINDOW / 2);
    expect(windowAfter(half, ...acks(PUBLISH_WINDOW / 2)).size).toBe(PUBLISH_WINDOW / 2 + 1);
    // Failures in a row take it to one; the fast growth still reaches the minimal threshold, one per acknowledgement.
    const one = windowAfter(initialWindow(), ...Array.from({ length: 10 }, () => 'failed' as const));
    expect(one).toEqual({ size: 1, threshold: MIN_WINDOW_THRESHOLD, credit: 0 });
    expect(windowAfter(one, ...acks(MIN_WINDOW_THRESHOLD - 1)).size).toBe(MIN_WINDOW_THRESHOLD);
    expect(windowAfter(one, ...acks(MIN_WINDOW_THRESHOLD - 1 + MIN_WINDOW_THRESHOLD)).size).toBe(MIN_WINDOW_THRESHOLD + 1);
    fc.assert(
      fc.property(fc.array(fc.boolean(), { maxLength: 3_000 }), (outcomes) => {
        let w = initialWindow();
        for (const ok of outcomes) {
          const next = nextWindow(w, ok ? 'acked' : 'failed');
          expect(next.size).toBeGreaterThanOrEqual(1);
          expect(next.size).toBeLessThanOrEqual(PUBLISH_WINDOW);
          expect(Number.isInteger(next.size)).toBe(true);
          if (ok) expect(next.size - w.size).toBeGreaterThanOrEqual(0);
          else expect(next.size).toBe(Math.max(1, Math.floor(w.size / 2)));
          w = next;
        }
      }),
    );
  });

  it('after a failure has fewer events out, counts what it sent again, and grows back as they are acknowledged', async () => {
    const f = fakeStream();
    const p = new RelayEventPublisher({ js: f.js as never, relayId: 'relay-1', logger: log });
    const total = 3 * PUBLISH_WINDOW;
    for (let i = 0; i < total; i++) p.publish(event(`e${i}`));
    await tick();
    expect([f.out.length, p.window]).toEqual([PUBLISH_WINDOW, PUBLISH_WINDOW]);
    f.out[0]!.fail(new Error('timeout'));
    for (const o of f.out.slice(1)) o.ack(); // stored: sent again, they are duplicates
    await tick();
    await tick();
    expect([p.failures, p.resent, p.window, p.published]).toEqual([1, PUBLISH_WINDOW, PUBLISH_WINDOW / 2, 0]);
    p.publish(event(`e${total}`)); // wakes the retry
    await tick();
    await tick();
    const again = f.out.slice(PUBLISH_WINDOW);
    expect(again.map((o) => o.signal)).toEqual(Array.from({ length: PUBLISH_WINDOW / 2 }, (_, i) => `e${i}`));
    // Acknowledged one by one, the window grows by one per window's worth.
    for (let i = 0; i < PUBLISH_WINDOW / 2; i++) {
      again[i]!.ack();
      (again[i] as { settled?: boolean }).settled = true;
      await tick();
      await tick();
    }
    expect([p.published, p.window]).toEqual([PUBLISH_WINDOW / 2, PUBLISH_WINDOW / 2 + 1]);
    for (let round = 0; round < 20 && p.pending; round++) {
      for (const o of f.out.slice(PUBLISH_WINDOW).filter((o) => !o.arrived && !(o as { settled?: boolean }).settled)) {
        (o as { settled?: boolean }).settled = true;
        o.ack();
      }
      await tick();
      await tick();
    }
    expect(p.pending).toBe(0);
    expect(p.resent).toBe(PUBLISH_WINDOW);
    expect(f.read()).toEqual(Array.from({ length: total + 1 }, (_, i) => `e${i}`));
  });

  it('whatever is lost and sent again, readers get every event once, in the order it was published', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.nat(5), { minLength: 20, maxLength: 200 }), fc.integer({ min: 20, max: 200 }), async (fates, count) => {
        const f = fakeStream();
        const p = new RelayEventPublisher({ js: f.js as never, relayId: 'relay-1', logger: log });
        for (let i = 0; i < count; i++) p.publish(event(`e${i}`));
        // Each message sent is lost where `fates` (cycled) say 0, at most twice per event, else stored;
        // until none is pending. The retry's back-off runs on fake time.
        const failures = new Map<string, number>();
        let k = 0;
        vi.useFakeTimers();
        try {
          for (let round = 0; round < 5_000; round++) {
            await vi.advanceTimersByTimeAsync(0);
            if (p.pending === 0) break;
            const open = f.out.filter((o) => !o.arrived && !(o as { settled?: boolean }).settled);
            if (!open.length) {
              await vi.advanceTimersByTimeAsync(2_000);
              continue;
            }
            for (const o of open) {
              (o as { settled?: boolean }).settled = true;
              const failed = failures.get(o.id) ?? 0;
              if (fates[k++ % fates.length] === 0 && failed < 2) {
                failures.set(o.id, failed + 1);
                o.fail(new Error('lost'));
              } else o.ack();
            }
          }
        } finally {
          vi.useRealTimers();
        }
        expect(p.pending).toBe(0);
        expect(f.read()).toEqual(Array.from({ length: count }, (_, i) => `e${i}`));
      }),
      { numRuns: 50, endOnFailure: true },
    );
  });
});

describe('replay across an epoch change', () => {
  it('folds the seed epoch’s events where the topology stream holds a revision twice, and counts dropped events', () => {
    const r = new RelayReplay({ relayId: 'relay-1' });
    const topo = [
      inEpoch(ev.admitted(1, relay(1)), E1),
      inEpoch(ev.admitted(2, relay(2)), E1),
      inEpoch(ev.admitted(3, relay(3)), E1), // lost in the restore
      inEpoch(ev.admitted(3, relay(7)), E2), // the restored database's revision 3
    ];
    for (const [i, event] of topo.entries()) r.addTopology({ ok: true, stream: 'topology', seq: i + 1, subject: 's', time: '2026-11-30T12:00:00Z', event });
    const relayEv = (type: string, data: unknown, epoch: string) =>
      ({
        ...envelope({ source: 'relay-1', now: () => new Date('2026-11-30T12:00:00Z'), newId: () => crypto.randomUUID(), epoch }, type, 1, data),
      }) as RelayEvent;
    const mine = [
      // Before the restore: revision 3 of epoch 1 (which a later event of epoch 2 must not replace).
      relayEv('TopologySeeded', { revision: 2, relays: 2, reason: 'boot', digest: null }, E1),
      relayEv('TopologyEventApplied', { revision: 3, eventId: topo[2]!.id, eventType: 'RelayAdmitted' }, E1),
      relayEv('TopologySeeded', { revision: 2, relays: 2, reason: 'resync', digest: null }, E2),
      relayEv('TopologyEventApplied', { revision: 3, eventId: topo[3]!.id, eventType: 'RelayAdmitted' }, E2),
      relayEv('RelayEventsDropped', { count: 4, capacity: 3, since: '2026-11-30T12:00:00.000Z', until: '2026-11-30T12:00:01.000Z' }, E2),
    ];
    const feed = (from: number, to: number) => {
      for (let i = from; i < to; i++) r.add({ ok: true, stream: 'relay', seq: i + 1, subject: 's', time: '2026-11-30T12:00:00Z', event: mine[i]! });
    };
    feed(0, 2);
    expect(r.result().topology).toMatchObject({ view: 'rebuilt', revision: 3 });
    expect(r.result().topology.relays.map((x) => x.id)).toEqual(['relay-1', 'relay-2', 'relay-3']);
    feed(2, mine.length);
    const out = r.result();
    expect(out.topology.view).toBe('rebuilt');
    expect(out.topology.relays.map((x) => x.id)).toEqual(['relay-1', 'relay-2', 'relay-7']);
    expect(out.relay.epoch).toBe(E2);
    expect(out.relay.eventsDropped).toBe(4);
  });
});
