import { describe, expect, it } from 'vitest';
import { createActor } from 'xstate';
import { foldObservation, peerLinkMachine, type LinkStateChanged } from '../../src/actors/peer-link.machine.ts';
import type { PeerObservation } from '../../src/kernel/host-state.ts';
import { relay } from '../support/given.ts';

const peer = relay(2);
const obs = (o: Partial<PeerObservation>): PeerObservation => ({
  dev: 'rc1m2',
  publicKey: peer.publicKey,
  endpoint: null,
  latestHandshakeMs: null,
  rxBytes: 0,
  txBytes: 0,
  ...o,
});

function start(timing = { staleAfterMs: 5_000, downAfterMs: 10_000 }) {
  const emitted: LinkStateChanged[] = [];
  const actor = createActor(peerLinkMachine.provide({ actions: { emit: (_, e) => void emitted.push(e) } }), {
    input: { peer, device: 'rc1m2', ...timing },
  });
  actor.start();
  return { actor, emitted, state: () => actor.getSnapshot().value };
}

describe('peer-link actor', () => {
  it('goes desired -> configuring -> handshaking -> up, announcing every state', () => {
    const l = start();
    l.actor.send({ type: 'KERNEL_APPLYING' });
    expect(l.state()).toBe('configuring');
    l.actor.send({ type: 'KERNEL_REACHED', configured: true, nowMs: 1_000 });
    expect(l.state()).toBe('handshaking');
    // A device with no handshake yet stays handshaking.
    l.actor.send({ type: 'OBSERVED', observation: obs({}), nowMs: 2_000 });
    expect(l.state()).toBe('handshaking');
    // The peer's handshake initiation counts in rx before this side's handshake completes: not up yet.
    l.actor.send({ type: 'OBSERVED', observation: obs({ rxBytes: 148 }), nowMs: 2_200 });
    expect(l.state()).toBe('handshaking');
    l.actor.send({ type: 'OBSERVED', observation: obs({ latestHandshakeMs: 2_500, rxBytes: 92, txBytes: 148 }), nowMs: 3_000 });
    expect(l.state()).toBe('up');
    expect(l.actor.getSnapshot().context).toMatchObject({ latestHandshakeMs: 2_500, rxBytes: 92, txBytes: 148 });
    expect(l.emitted.map((e) => e.data.state)).toEqual(['desired', 'configuring', 'handshaking', 'up']);
    expect(l.emitted.at(-1)!.data).toMatchObject({ peerId: peer.id, device: 'rc1m2', reason: 'handshake', rxBytes: 92 });
  });

  it('a silent peer makes the link stale, then down; hearing it again brings it up', () => {
    const l = start();
    l.actor.send({ type: 'KERNEL_REACHED', configured: true, nowMs: 0 });
    l.actor.send({ type: 'OBSERVED', observation: obs({ latestHandshakeMs: 100, rxBytes: 100 }), nowMs: 100 });
    expect(l.state()).toBe('up');
    // Keepalives keep it up even without a new handshake.
    l.actor.send({ type: 'OBSERVED', observation: obs({ latestHandshakeMs: 100, rxBytes: 132 }), nowMs: 4_000 });
    l.actor.send({ type: 'OBSERVED', observation: obs({ latestHandshakeMs: 100, rxBytes: 164 }), nowMs: 8_000 });
    expect(l.state()).toBe('up');
    l.actor.send({ type: 'OBSERVED', observation: obs({ latestHandshakeMs: 100, rxBytes: 164 }), nowMs: 12_999 });
    expect(l.state()).toBe('up');
    l.actor.send({ type: 'OBSERVED', observation: obs({ latestHandshakeMs: 100, rxBytes: 164 }), nowMs: 13_000 });
    expect(l.state()).toBe('stale');
    l.actor.send({ type: 'OBSERVED', observation: obs({ latestHandshakeMs: 100, rxBytes: 164 }), nowMs: 18_000 });
    expect(l.state()).toBe('down');
    l.actor.send({ type: 'OBSERVED', observation: obs({ latestHandshakeMs: 19_000, rxBytes: 256 }), nowMs: 19_500 });
    expect(l.state()).toBe('up');
    expect(l.emitted.map((e) => e.data.state)).toEqual(['desired', 'handshaking', 'up', 'stale', 'down', 'up']);
  });

  it('a link that never handshakes goes down after the down window', () => {
    const l = start();
    l.actor.send({ type: 'KERNEL_REACHED', configured: true, nowMs: 1_000 });
    l.actor.send({ type: 'OBSERVED', observation: obs({}), nowMs: 10_999 });
    expect(l.state()).toBe('handshaking');
    l.actor.send({ type: 'OBSERVED', observation: obs({}), nowMs: 11_000 });
    expect(l.state()).toBe('down');
  });

  it('a changed peer is programmed again from scratch', () => {
    const l = start();
    l.actor.send({ type: 'KERNEL_REACHED', configured: true, nowMs: 0 });
    l.actor.send({ type: 'OBSERVED', observation: obs({ latestHandshakeMs: 100, rxBytes: 100 }), nowMs: 100 });
    const rotated = { ...peer, publicKey: relay(3).publicKey };
    l.actor.send({ type: 'PEER_CHANGED', peer: rotated });
    expect(l.state()).toBe('configuring');
    expect(l.actor.getSnapshot().context).toMatchObject({ peer: rotated, latestHandshakeMs: null, rxBytes: 0, lastHeardMs: null });
    // The kernel still has the old peer: not configured yet.
    l.actor.send({ type: 'KERNEL_REACHED', configured: false, nowMs: 200 });
    expect(l.state()).toBe('configuring');
  });

  it('removing ends only once the kernel has removed the device', () => {
    const l = start();
    l.actor.send({ type: 'KERNEL_REACHED', configured: true, nowMs: 0 });
    l.actor.send({ type: 'REMOVE' });
    expect(l.state()).toBe('removing');
    l.actor.send({ type: 'OBSERVED', observation: obs({ rxBytes: 10 }), nowMs: 50 });
    l.actor.send({ type: 'KERNEL_REACHED', configured: true, nowMs: 100 });
    expect(l.state()).toBe('removing');
    l.actor.send({ type: 'KERNEL_REACHED', configured: false, nowMs: 200 });
    expect(l.actor.getSnapshot().status).toBe('done');
    expect(l.emitted.map((e) => e.data.state).slice(-2)).toEqual(['removing', 'removed']);
  });

  it('folds observations: heard at a new handshake, or now when rx grew; never from tx alone', () => {
    const ctx = start().actor.getSnapshot().context;
    expect(foldObservation(ctx, obs({ txBytes: 500 }), 1_000).lastHeardMs).toBeNull();
    expect(foldObservation(ctx, obs({ latestHandshakeMs: 700 }), 1_000).lastHeardMs).toBe(700);
    expect(foldObservation(ctx, obs({ latestHandshakeMs: 700, rxBytes: 1 }), 1_000).lastHeardMs).toBe(1_000);
    expect(foldObservation(ctx, null, 1_000)).toEqual({});
  });
});
