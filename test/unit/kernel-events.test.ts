import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { envelope } from '../../src/contract/envelope.ts';
import { MAX_OP_BYTES_PER_KERNEL_EVENT, MAX_OPS_PER_KERNEL_EVENT } from '../../src/contract/relay.events.ts';
import { decodeEvent, MAX_EVENT_BYTES } from '../../src/events/wire.ts';
import type { KernelOp } from '../../src/kernel/host-state.ts';
import { scopeDigest, updateScopeDigest } from '../../src/kernel/host-text.ts';
import { opParts, type KernelEmission } from '../../src/kernel/kernel.machine.ts';
import { meshScope } from '../../src/kernel/mesh.ts';
import { relay, devs } from '../support/given.ts';
import { meshHarness } from '../support/mesh-harness.ts';

const ctx = { source: 'relay-1', now: () => new Date('2026-11-30T00:00:00Z'), newId: randomUUID };
const bytesOf = (e: KernelEmission) => Buffer.byteLength(JSON.stringify(envelope({ ...ctx, causationId: e.causationId }, e.type, 2, e.data)));

describe('kernel events stay bounded at any fleet size', () => {
  it('splits a round into parts by count and by bytes, keeping the order', () => {
    const small = (i: number): KernelOp => ({ op: 'link.up', dev: `d${i}` });
    expect(opParts([])).toEqual([[]]);
    const many = Array.from({ length: 2 * MAX_OPS_PER_KERNEL_EVENT + 1 }, (_, i) => small(i));
    const parts = opParts(many);
    expect(parts.map((p) => p.length)).toEqual([MAX_OPS_PER_KERNEL_EVENT, MAX_OPS_PER_KERNEL_EVENT, 1]);
    expect(parts.flat()).toEqual(many);
    const big = (i: number): KernelOp => ({ op: 'nft.table.set', name: `t${i}`, digest: '0', body: 'x'.repeat(MAX_OP_BYTES_PER_KERNEL_EVENT / 3) });
    const byBytes = opParts([big(1), big(2), big(3), small(4)]);
    expect(byBytes.map((p) => p.length)).toEqual([2, 2]);
    // An operation larger than a part's budget is a part of its own.
    const huge: KernelOp = { ...(big(5) as Extract<KernelOp, { op: 'nft.table.set' }>), body: 'y'.repeat(MAX_OP_BYTES_PER_KERNEL_EVENT + 1) };
    expect(opParts([small(1), huge, small(2)]).map((p) => p.length)).toEqual([1, 1, 1]);
  });

  it('a relay joining a mesh of 2,000 records its first round in parts, each far inside the event limit, and each part a valid event', async () => {
    const records = Array.from({ length: 2001 }, (_, i) => relay(i + 1));
    const h = meshHarness();
    await h.view(records, 120_000);
    const rounds = h.emitted.filter((e): e is Extract<KernelEmission, { type: 'KernelReconciled' }> => e.type === 'KernelReconciled');
    const ops = rounds.flatMap((e) => e.data.ops);
    expect(ops.length).toBe(8 * 2000);
    expect(JSON.stringify(ops)).toBe(JSON.stringify(h.backend.ops));
    expect(rounds.length).toBeGreaterThanOrEqual(Math.ceil(ops.length / MAX_OPS_PER_KERNEL_EVENT));
    for (const e of rounds) expect(e.data.ops.length).toBeLessThanOrEqual(MAX_OPS_PER_KERNEL_EVENT);
    expect(rounds.map((e) => e.data.part)).toEqual(rounds.map((_, i) => i + 1));
    for (const e of rounds) {
      expect(e.data).toMatchObject({ owner: 'mesh', round: rounds[0]!.data.round, parts: rounds.length, planned: 16_000, applied: 16_000, focused: false });
      expect(bytesOf(e)).toBeLessThan(MAX_EVENT_BYTES / 2);
      const decoded = decodeEvent(Buffer.from(JSON.stringify(envelope({ ...ctx, causationId: e.causationId }, e.type, 2, e.data))));
      expect(decoded.ok).toBe(true);
    }
    // The digest names the scope reached, whatever its size.
    const scope = meshScope('rc', records[0]!);
    expect(rounds[0]!.data.reached).toBe(scopeDigest(h.backend.readSync(scope)));
    // The next join is one event of a few operations, with the digest moved on by what changed.
    const before = h.emitted.length;
    const joined = relay(2002);
    await h.view([...records, joined], 120_000);
    const next = h.emitted.slice(before).filter((e): e is Extract<KernelEmission, { type: 'KernelReconciled' }> => e.type === 'KernelReconciled');
    expect(next).toHaveLength(1);
    expect(next[0]!.data).toMatchObject({ part: 1, parts: 1, applied: 8, focused: true });
    expect(bytesOf(next[0]!)).toBeLessThan(4096);
    expect(next[0]!.data.reached).toBe(scopeDigest(h.backend.readSync(scope)));
    h.actor.stop();
  }, 120_000);
});

describe('the digest of a scope', () => {
  const a = { name: 'a', publicKey: 'k', listenPort: 1, mtu: 1420, addresses: ['100.64.0.1/32'], up: true, peers: [] };
  const route = { dst: '100.64.0.2/32', dev: 'a', table: 254, src: null };
  const state = { devices: devs({ a }), routes: [route], rules: [], sysctls: { x: '1' }, nftTables: {}, portMaps: [] };

  it('does not depend on order, and moves with any object it covers', () => {
    const b = { ...a, name: 'b' };
    expect(scopeDigest({ ...state, devices: devs({ a, b }) })).toBe(scopeDigest({ ...state, devices: devs({ b, a }) }));
    expect(scopeDigest(state)).not.toBe(scopeDigest({ ...state, sysctls: { x: '2' } }));
    expect(scopeDigest(state)).not.toBe(scopeDigest({ ...state, routes: [{ ...route, table: 255 }] }));
    expect(scopeDigest(state)).not.toBe(scopeDigest({ ...state, devices: devs({ a: { ...a, mtu: 1280 } }) }));
  });

  it('leaves out what the network and the kernel choose: peer endpoints and listen ports', () => {
    const peer = { publicKey: 'p', endpoint: null, allowedIps: ['0.0.0.0/0'], keepaliveSeconds: 25 };
    const withPeer = { ...state, devices: devs({ a: { ...a, peers: [peer] } }) };
    expect(scopeDigest(withPeer)).toBe(
      scopeDigest({ ...state, devices: devs({ a: { ...a, listenPort: 9, peers: [{ ...peer, endpoint: '198.51.100.9:1' }] } }) }),
    );
  });

  it('updates by taking objects out and putting objects in', () => {
    const b = { ...a, name: 'b' };
    const two = { ...state, devices: devs({ a, b }) };
    const empty = { devices: new Map(), routes: [], rules: [], sysctls: {}, nftTables: {}, portMaps: [] };
    expect(updateScopeDigest(scopeDigest(state), empty, { ...empty, devices: devs({ b }) })).toBe(scopeDigest(two));
    expect(updateScopeDigest(scopeDigest(two), { ...empty, devices: devs({ b }) }, empty)).toBe(scopeDigest(state));
  });
});
