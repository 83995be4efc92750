import { describe, expect, it } from 'vitest';
import { createActor, fromCallback, fromPromise, waitFor } from 'xstate';
import { behindHeartbeatsBeforeResync, relayMachine, type Emission, type FollowCommand } from '../../src/actors/relay.machine.ts';
import type { RegisterResponse } from '../../src/contract/api-relays.ts';
import { backoffDelay } from '../../src/daemon/control-plane-client.ts';
import { topologyDigest } from '../../src/events/topology.fold.ts';
import { systemDeps } from '../../src/lib/deps.ts';
import { busDetails, ev, relay } from '../support/given.ts';

function registration(revision: number, others: number[]): RegisterResponse {
  return {
    relay: relay(1),
    readmitted: false,
    revision,
    revisionTime: '2026-11-25T00:00:00.000Z',
    relays: others.map((n) => relay(n)),
    sessions: [],
    bus: busDetails(),
    heartbeatIntervalSeconds: 10,
  };
}

/** The relay actor with faked I/O: registrations answered from a queue, emissions recorded. */
function harness(regs: (RegisterResponse | Error)[]) {
  const emitted: Emission[] = [];
  const follows: number[] = [];
  /** What the relay actor told its follow actor. */
  const commands: string[] = [];
  let followStops = 0;
  let deregistered = 0;
  const registerCalls: number[] = [];
  const machine = relayMachine.provide({
    actors: {
      register: fromPromise(async () => {
        registerCalls.push(Date.now());
        const r = regs.shift();
        if (!r) throw new Error('no more registrations');
        if (r instanceof Error) throw r;
        return r;
      }),
      follow: fromCallback<FollowCommand, { registration: RegisterResponse }>(({ input, receive }) => {
        follows.push(input.registration.revision);
        receive((e) => void commands.push(e.type));
        return () => void followStops++;
      }),
      heartbeat: fromCallback(() => () => {}),
      deregister: fromPromise(async () => {
        deregistered++;
        return { revision: 0 };
      }),
    },
    actions: { emit: (_, p) => void emitted.push(p), reportFatal: () => {} },
    delays: { resyncRetry: 1 },
  });
  const actor = createActor(machine, {
    input: { request: { relayId: 'relay-1', name: 'Relay 1', region: 'test', publicKey: relay(1).publicKey, endpoint: relay(1).endpoint }, deps: systemDeps },
  });
  actor.start();
  return {
    actor,
    emitted,
    follows,
    commands,
    registerCalls,
    get followStops() {
      return followStops;
    },
    get deregistered() {
      return deregistered;
    },
  };
}

describe('relay actor', () => {
  it('registers, seeds from the snapshot (self included) and serves', async () => {
    const h = harness([registration(4, [2, 3])]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    const s = h.actor.getSnapshot();
    expect(s.context.view.revision).toBe(4);
    expect([...s.context.view.relays.keys()].sort()).toEqual(['relay-1', 'relay-2', 'relay-3']);
    expect(h.emitted.map((e) => e.type)).toEqual(['RelayRegistered', 'TopologySeeded']);
    expect(h.follows).toEqual([4]);
  });

  it('seeds the open client sessions of the snapshot too (a restarted entry gets its sessions back)', async () => {
    const reg = registration(4, [2]);
    const open = {
      id: '00000000-0000-4000-8000-000000000001',
      entryId: 'relay-1',
      exitId: 'relay-2',
      publicKey: relay(9).publicKey,
      address: '100.96.0.2',
      openedAt: '2026-11-25T00:00:00.000Z',
      expiresAt: '2026-11-26T00:00:00.000Z',
      mode: 'standard' as const,
    };
    const h = harness([{ ...reg, sessions: [open] }]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    expect(h.actor.getSnapshot().context.view.sessions).toEqual({ [open.id]: open });
    h.actor.stop();
  });

  it('applies the next revision once and counts duplicates', async () => {
    const h = harness([registration(4, [2])]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    h.actor.send({ type: 'TOPOLOGY_EVENT', event: ev.admitted(4, relay(2)), streamSeq: 4 });
    h.actor.send({ type: 'TOPOLOGY_EVENT', event: ev.admitted(5, relay(5)), streamSeq: 5 });
    h.actor.send({ type: 'TOPOLOGY_EVENT', event: ev.admitted(5, relay(5)), streamSeq: 6 });
    const s = h.actor.getSnapshot();
    expect(s.context.view.revision).toBe(5);
    expect(s.context.counters).toMatchObject({ applied: 1, duplicates: 2, gaps: 0 });
    expect(h.emitted.filter((e) => e.type === 'TopologyEventApplied')).toHaveLength(1);
  });

  it('resyncs from a fresh snapshot on a gap and says so in an event', async () => {
    const h = harness([registration(4, [2]), registration(9, [2, 7])]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    h.actor.send({ type: 'TOPOLOGY_EVENT', event: ev.admitted(7, relay(7)), streamSeq: 7 });
    await waitFor(h.actor, (s) => s.matches('serving') && s.context.view.revision === 9);
    const s = h.actor.getSnapshot();
    expect(s.context.counters).toMatchObject({ gaps: 1, resyncs: 1, applied: 0 });
    expect(h.emitted.map((e) => e.type)).toContain('TopologyResyncRequested');
    expect(h.emitted.find((e) => e.type === 'TopologyResyncRequested')?.data).toMatchObject({ reason: 'gap', revision: 4 });
    expect(h.emitted.at(-1)).toMatchObject({ type: 'TopologySeeded', data: { reason: 'resync', revision: 9 } });
    // The old follower was stopped before a new one started from the new snapshot.
    expect(h.follows).toEqual([4, 9]);
    expect(h.followStops).toBe(1);
  });

  it('counts rejected messages by reason without changing the view', async () => {
    const h = harness([registration(1, [])]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    const before = h.actor.getSnapshot().context.view;
    h.actor.send({ type: 'TOPOLOGY_REJECTED', rejection: { reason: 'bad-signature', detail: 'x' }, subject: 's', streamSeq: 3 });
    h.actor.send({ type: 'TOPOLOGY_REJECTED', rejection: { reason: 'bad-signature', detail: 'x' }, subject: 's', streamSeq: 4 });
    h.actor.send({ type: 'TOPOLOGY_REJECTED', rejection: { reason: 'malformed', detail: 'x' }, subject: 's', streamSeq: 5 });
    const s = h.actor.getSnapshot();
    expect(s.context.counters.rejected).toEqual({ 'bad-signature': 2, malformed: 1 });
    expect(s.context.view).toBe(before);
  });

  it('resyncs after consecutive heartbeats show the control plane ahead, not after one or two', async () => {
    const h = harness([registration(3, []), registration(6, [])]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    h.actor.send({ type: 'HEARTBEAT', response: { revision: 6, revisionTime: '', status: 'active' } });
    h.actor.send({ type: 'HEARTBEAT', response: { revision: 6, revisionTime: '', status: 'active' } });
    expect(h.actor.getSnapshot().matches('serving')).toBe(true);
    expect(h.emitted.some((e) => e.type === 'TopologyResyncRequested')).toBe(false);
    h.actor.send({ type: 'HEARTBEAT', response: { revision: 6, revisionTime: '', status: 'active' } });
    await waitFor(h.actor, (s) => s.matches('serving') && s.context.view.revision === 6);
    expect(h.emitted.find((e) => e.type === 'TopologyResyncRequested')?.data).toMatchObject({ reason: 'behind-control-plane' });
  });

  it('with faster heartbeats waits for as many as span 20 s (past a NATS failover): five at 5 s', async () => {
    expect([10, 5, 1, 30].map(behindHeartbeatsBeforeResync)).toEqual([3, 5, 21, 3]);
    const h = harness([{ ...registration(3, []), heartbeatIntervalSeconds: 5 }, registration(6, [])]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    for (let i = 0; i < 4; i++) h.actor.send({ type: 'HEARTBEAT', response: { revision: 6, revisionTime: '', status: 'active' } });
    expect(h.emitted.some((e) => e.type === 'TopologyResyncRequested')).toBe(false);
    h.actor.send({ type: 'HEARTBEAT', response: { revision: 6, revisionTime: '', status: 'active' } });
    await waitFor(h.actor, (s) => s.matches('serving') && s.context.view.revision === 6);
    expect(h.emitted.find((e) => e.type === 'TopologyResyncRequested')?.data).toMatchObject({ reason: 'behind-control-plane' });
  });

  it('does not resync while the follower’s pulls fail (the bus’s failover, not its consumer): the count starts again once they work', async () => {
    const h = harness([registration(3, []), registration(6, [])]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    const beat = () => h.actor.send({ type: 'HEARTBEAT', response: { revision: 6, revisionTime: '', status: 'active' } });
    beat();
    beat();
    // JetStream stops answering: however many heartbeats find the view stalled meanwhile, no resync.
    h.actor.send({ type: 'FOLLOWER_PULL', ok: false });
    for (let i = 0; i < 10; i++) beat();
    expect(h.actor.getSnapshot().matches('serving')).toBe(true);
    expect(h.emitted.some((e) => e.type === 'TopologyResyncRequested')).toBe(false);
    expect(h.actor.getSnapshot().context.counters).toMatchObject({ heartbeatsBehind: 0, resyncs: 0 });
    // Pulls work again but the view stays stalled: a resync after the usual count, not at once.
    h.actor.send({ type: 'FOLLOWER_PULL', ok: true });
    beat();
    beat();
    expect(h.emitted.some((e) => e.type === 'TopologyResyncRequested')).toBe(false);
    beat();
    await waitFor(h.actor, (s) => s.matches('serving') && s.context.view.revision === 6);
    expect(h.emitted.find((e) => e.type === 'TopologyResyncRequested')?.data).toMatchObject({ reason: 'behind-control-plane' });
  });

  it('leaves a relay behind but folding to catch up: only heartbeats that find the view both behind and unmoved count', async () => {
    const h = harness([registration(3, []), registration(9, [])]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    const beat = (revision: number) => h.actor.send({ type: 'HEARTBEAT', response: { revision, revisionTime: '', status: 'active' } });
    const fold = (revision: number) => h.actor.send({ type: 'TOPOLOGY_EVENT', event: ev.admitted(revision, relay(revision)), streamSeq: revision });
    beat(9);
    fold(4);
    beat(9);
    fold(5);
    beat(9);
    // Behind at every heartbeat, but moving: no resync. Only the first heartbeat, which found the view
    // where the seed left it, had the follower pull again.
    expect(h.actor.getSnapshot().context.counters).toMatchObject({ resyncs: 0, heartbeats: 3 });
    expect(h.emitted.some((e) => e.type === 'TopologyResyncRequested')).toBe(false);
    expect(h.commands).toEqual(['REPULL']);
    // Stuck at 5: the follower pulls again at each of the first two heartbeats; at the third, a resync.
    beat(9);
    expect(h.commands).toEqual(['REPULL', 'REPULL']);
    beat(9);
    expect(h.commands).toEqual(['REPULL', 'REPULL', 'REPULL']);
    expect(h.actor.getSnapshot().context.counters.resyncs).toBe(0);
    beat(9);
    await waitFor(h.actor, (s) => s.matches('serving') && s.context.view.revision === 9);
    expect(h.actor.getSnapshot().context.counters.resyncs).toBe(1);
    expect(h.emitted.find((e) => e.type === 'TopologyResyncRequested')?.data).toMatchObject({ reason: 'behind-control-plane', revision: 5 });
  });

  it('leaves a follower working through events the view already holds: no pull again, no resync, until it hands over nothing', async () => {
    const h = harness([registration(5, []), registration(9, [])]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    const beat = () => h.actor.send({ type: 'HEARTBEAT', response: { revision: 9, revisionTime: '', status: 'active' } });
    // After the seed at 5 the follower starts a minute earlier: revisions 1..5 again, duplicates, slowly.
    for (let r = 1; r <= 5; r++) {
      h.actor.send({ type: 'TOPOLOGY_EVENT', event: ev.admitted(r, relay(r + 1)), streamSeq: r });
      beat();
    }
    expect(h.actor.getSnapshot().context.counters).toMatchObject({ duplicates: 5, heartbeats: 5, heartbeatsBehind: 0, resyncs: 0 });
    expect(h.actor.getSnapshot().context.view.revision).toBe(5);
    expect(h.commands).toEqual([]);
    // Then nothing at all: pulled again at each of two heartbeats, resynced at the third, as before.
    beat();
    beat();
    expect(h.commands).toEqual(['REPULL', 'REPULL']);
    beat();
    await waitFor(h.actor, (s) => s.matches('serving') && s.context.view.revision === 9);
    expect(h.emitted.find((e) => e.type === 'TopologyResyncRequested')?.data).toMatchObject({ reason: 'behind-control-plane', revision: 5 });
  });

  it('resyncs when the consumer is deleted', async () => {
    const h = harness([registration(3, []), registration(3, [])]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    h.actor.send({ type: 'CONSUMER_LOST', reason: 'consumer-deleted', detail: 'consumer_deleted' });
    await waitFor(h.actor, (s) => s.matches('serving') && s.context.counters.resyncs === 1);
    expect(h.follows).toEqual([3, 3]);
  });

  it('keeps its view and retries when a resync registration fails', async () => {
    const h = harness([registration(3, [2]), new Error('control plane down'), registration(5, [2])]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    h.actor.send({ type: 'RESYNC', detail: 'test' });
    await waitFor(h.actor, (s) => s.matches('serving') && s.context.view.revision === 5);
    expect(h.registerCalls).toHaveLength(3);
  });

  it('stages a new key: its own record takes it (revision unchanged), an event names it as the cause, the same key again changes nothing', async () => {
    const next = relay(8).publicKey;
    const h = harness([registration(4, [2]), { ...registration(5, [2]), relay: { ...relay(1), publicKey: next } }]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    h.actor.send({ type: 'KEY_STAGED', publicKey: next, previousPublicKey: relay(1).publicKey });
    const s = h.actor.getSnapshot();
    expect(s.context.view.revision).toBe(4);
    expect(s.context.view.relays.get('relay-1')?.publicKey).toBe(next);
    expect(s.context.view.relays.get('relay-2')).toEqual(relay(2));
    const staged = h.emitted.filter((e) => e.type === 'WireGuardKeyStaged') as Extract<Emission, { type: 'WireGuardKeyStaged' }>[];
    expect(staged.map((e) => e.data)).toEqual([{ publicKey: next, previousPublicKey: relay(1).publicKey }]);
    expect(s.context.cause).toBe(staged[0]!.id);
    h.actor.send({ type: 'KEY_STAGED', publicKey: next, previousPublicKey: relay(1).publicKey });
    expect(h.emitted.filter((e) => e.type === 'WireGuardKeyStaged')).toHaveLength(1);
    // Given up on while its registration fails (resyncWait): the old key is staged back at once.
    const back = harness([registration(4, [2]), new Error('control plane down'), registration(6, [2])]);
    await waitFor(back.actor, (x) => x.matches('serving'));
    back.actor.send({ type: 'KEY_STAGED', publicKey: next, previousPublicKey: relay(1).publicKey });
    back.actor.send({ type: 'RESYNC', detail: 'WireGuard key rotation' });
    back.actor.send({ type: 'KEY_STAGED', publicKey: relay(1).publicKey, previousPublicKey: next });
    expect(back.actor.getSnapshot().context.view.relays.get('relay-1')?.publicKey).toBe(relay(1).publicKey);
    expect(back.emitted.filter((e) => e.type === 'WireGuardKeyStaged').map((e) => e.data)).toEqual([
      { publicKey: next, previousPublicKey: relay(1).publicKey },
      { publicKey: relay(1).publicKey, previousPublicKey: next },
    ]);
    await waitFor(back.actor, (x) => x.matches('serving') && x.context.view.revision === 6);
    // The registration that announces it seeds a view that has it too.
    h.actor.send({ type: 'RESYNC', detail: 'WireGuard key rotation' });
    await waitFor(h.actor, (x) => x.matches('serving') && x.context.view.revision === 5);
    expect(h.actor.getSnapshot().context.view.relays.get('relay-1')?.publicKey).toBe(next);
  });

  it('fails at boot when registration is refused', async () => {
    const h = harness([new Error('409 key_mismatch')]);
    const s = await waitFor(h.actor, (s) => s.status === 'done');
    expect(s.value).toBe('failed');
    expect(s.context.error).toMatch(/key_mismatch/);
  });

  it('drains on STOP: deregisters, stops its children, ends', async () => {
    const h = harness([registration(1, [])]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    h.actor.send({ type: 'STOP', signal: 'SIGTERM' });
    const s = await waitFor(h.actor, (s) => s.status === 'done');
    expect(s.value).toBe('stopped');
    expect(h.deregistered).toBe(1);
    expect(h.followStops).toBe(1);
    // The root-level kernel and topology actors may stay listed, but nothing is left running.
    expect(Object.values(s.children).filter((c) => c?.getSnapshot().status === 'active')).toEqual([]);
    expect(h.emitted.slice(-2).map((e) => e.type)).toEqual(['RelayDraining', 'RelayStopped']);
  });

  it('names the events that change the desired host (seed, applied event, drain) with their own ids and passes them on as causes', async () => {
    const h = harness([registration(4, [2])]);
    await waitFor(h.actor, (s) => s.matches('serving'));
    const seeded = h.emitted.find((e) => e.type === 'TopologySeeded') as Extract<Emission, { type: 'TopologySeeded' }>;
    expect(seeded.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(seeded.data.digest).toBe(topologyDigest(h.actor.getSnapshot().context.view));
    expect(h.actor.getSnapshot().context.cause).toBe(seeded.id);
    h.actor.send({ type: 'TOPOLOGY_EVENT', event: ev.admitted(5, relay(5)), streamSeq: 5 });
    const applied = h.emitted.find((e) => e.type === 'TopologyEventApplied') as Extract<Emission, { type: 'TopologyEventApplied' }>;
    expect(applied.id).not.toBe(seeded.id);
    expect(h.actor.getSnapshot().context.cause).toBe(applied.id);
    h.actor.send({ type: 'STOP', signal: 'SIGTERM' });
    await waitFor(h.actor, (s) => s.status === 'done');
    const draining = h.emitted.find((e) => e.type === 'RelayDraining') as Extract<Emission, { type: 'RelayDraining' }>;
    expect(new Set([seeded.id, applied.id, draining.id]).size).toBe(3);
    expect(h.actor.getSnapshot().context.cause).toBe(draining.id);
  });
});

describe('backoff', () => {
  it('grows exponentially with jitter and is capped', () => {
    const p = { attempts: 10, baseMs: 100, maxMs: 1000 };
    expect(backoffDelay(0, p, () => 0)).toBe(50);
    expect(backoffDelay(0, p, () => 1)).toBe(100);
    expect(backoffDelay(2, p, () => 1)).toBe(400);
    expect(backoffDelay(10, p, () => 1)).toBe(1000);
    expect(backoffDelay(10, p, () => 0)).toBe(500);
  });
});
