import { describe, expect, it } from 'vitest';
import type { AnyActorRef } from 'xstate';
import { seedTopology } from '../../src/events/topology.fold.ts';
import type { KernelOp } from '../../src/kernel/host-state.ts';
import type { KernelContext } from '../../src/kernel/kernel.machine.ts';
import { MemoryKernelBackend } from '../../src/kernel/memory-backend.ts';
import { linkDevice } from '../../src/kernel/mesh.ts';
import { relay } from '../support/given.ts';
import { meshHarness as harness } from '../support/mesh-harness.ts';

const relays = (ids: number[]) => ids.map((n) => relay(n));
const devOf = (op: KernelOp) => ('dev' in op ? op.dev : 'route' in op ? op.route.dev : null);

describe('topology and kernel actors on the in-memory host', () => {
  it('programs one point-to-point device per other relay, and its links see it programmed', async () => {
    const h = harness();
    await h.view(relays([1, 2, 3, 4]));
    expect([...h.links().keys()].sort()).toEqual(['relay-2', 'relay-3', 'relay-4']);
    const state = await h.backend.read({ devicePrefix: 'rc1m', rulePriorities: [0, -1], sysctls: [], nftTables: [] });
    expect([...state.devices.keys()].sort()).toEqual(['rc1m2', 'rc1m3', 'rc1m4']);
    expect(state.devices.get('rc1m2')!.peers).toEqual([
      { publicKey: relay(2).publicKey, endpoint: '198.51.100.2:51821', allowedIps: ['0.0.0.0/0'], keepaliveSeconds: 25 },
    ]);
    expect(state.devices.get('rc1m2')!.listenPort).toBe(51822);
    expect([...h.links().values()].map((l) => l.getSnapshot().value)).toEqual(['handshaking', 'handshaking', 'handshaking']);
    h.actor.stop();
  });

  it('a view with the same relays (a session event) leaves the links and the host alone', async () => {
    const h = harness();
    const view = seedTopology(7, relays([1, 2, 3]));
    h.actor.send({ type: 'VIEW', view, cause: 'seed' });
    await h.idle();
    const links = h.links();
    const rounds = () => (h.kernelRef().getSnapshot().context as KernelContext).stats.rounds;
    const [ops, log, before] = [h.backend.ops.length, h.log.length, rounds()];
    h.actor.send({ type: 'VIEW', view: { ...view, revision: 8 }, cause: 'session' });
    await h.idle();
    expect(h.links()).toBe(links);
    expect(h.backend.ops.length).toBe(ops);
    expect(h.log.length).toBe(log);
    // The same desired mesh: the kernel actor runs no round for it.
    expect(rounds()).toBe(before);
    // A relay event after it still reaches the links.
    h.actor.send({ type: 'VIEW', view: seedTopology(9, relays([1, 2])), cause: 'left' });
    await h.idle();
    expect(h.links().get('relay-3')?.getSnapshot().value ?? 'gone').toMatch(/^(removing|removed|gone)$/);
    expect(h.backend.ops.length).toBeGreaterThan(ops);
    h.actor.stop();
  });

  it('a join costs the existing relays only the operations of the new link', async () => {
    const h = harness();
    await h.view(relays([1, 2, 3, 4]));
    const before = h.backend.ops.length;
    await h.view(relays([1, 2, 3, 4, 5]));
    const joinOps = h.backend.ops.slice(before);
    const newDev = linkDevice('rc', 1, 5);
    expect(joinOps.map(devOf).every((d) => d === newDev)).toBe(true);
    // Routes: the peer's mesh address, its client pool, and its exit table's default route.
    expect(joinOps.map((o) => o.op)).toEqual(['link.add', 'wg.device', 'addr.add', 'link.up', 'route.add', 'route.add', 'route.add', 'wg.peer.set']);
    h.actor.stop();
  });

  it('RECONCILE_FULL (`relay-core reconcile`, the slow timer) mends drift that focused rounds do not look at', async () => {
    const h = harness();
    // The same record objects from view to view, as the relay's fold keeps unchanged relays.
    const same = relays([1, 2, 3]);
    await h.view(same);
    const dev = linkDevice('rc', 1, 3);
    // Somebody deletes a link behind the relay's back; the same view again reads nothing and mends nothing.
    h.backend.applySync({ op: 'link.del', dev });
    await h.view(same);
    expect([...h.backend.readSync({ devicePrefix: 'rc1m', rulePriorities: [0, -1], sysctls: [], nftTables: [] }).devices.keys()]).not.toContain(dev);
    const before = h.emitted.length;
    h.kernelRef().send({ type: 'RECONCILE_FULL' });
    await h.idle();
    const round = h.emitted.slice(before).find((e) => e.type === 'KernelReconciled');
    expect(round?.data).toMatchObject({ owner: 'mesh', focused: false, failed: false });
    expect((round!.data as { ops: KernelOp[] }).ops.filter((o) => o.op === 'link.add')).toEqual([{ op: 'link.add', dev, mtu: 1420 }]);
    expect([...h.backend.readSync({ devicePrefix: 'rc1m', rulePriorities: [0, -1], sysctls: [], nftTables: [] }).devices.keys()]).toContain(dev);
    h.actor.stop();
  });

  it('the same view again runs no mutating operation', async () => {
    const h = harness();
    await h.view(relays([1, 2, 3]));
    const before = h.backend.ops.length;
    await h.view(relays([1, 2, 3]));
    expect(h.backend.ops.length).toBe(before);
    h.actor.stop();
  });

  it('a restarted relay adopts a host that is already right with zero operations', async () => {
    const first = harness();
    await first.view(relays([1, 2, 3, 4]));
    first.actor.stop();
    const initial = await first.backend.read({ devicePrefix: 'rc1m', rulePriorities: [0, -1], sysctls: [], nftTables: [] });
    const host = new MemoryKernelBackend({ initial });
    const second = harness(host);
    await second.view(relays([1, 2, 3, 4]));
    expect(host.ops).toEqual([]);
    expect([...second.links().values()].every((l) => l.getSnapshot().value === 'handshaking')).toBe(true);
    second.actor.stop();
  });

  it('after many joins and leaves the topology actor holds exactly the live links, every other link actor is done, and the host holds exactly their devices', async () => {
    const h = harness();
    let seed = 7;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const live = new Set([2, 3]);
    const everSeen = new Set<AnyActorRef>();
    for (let cycle = 0; cycle < 60; cycle++) {
      const n = 2 + Math.floor(rand() * 12);
      if (live.has(n)) live.delete(n);
      else live.add(n);
      await h.view(relays([1, ...live]));
      for (const l of h.links().values()) everSeen.add(l);
    }
    // One more round lets every removing link see its device gone.
    await h.view(relays([1, ...live]));
    const expected = [...live].sort((a, b) => a - b).map((n) => `relay-${n}`);
    expect([...h.links().keys()].sort()).toEqual([...expected].sort());
    const kept = new Set<AnyActorRef>(h.links().values());
    expect([...kept].map((l) => `${l.id} ${l.getSnapshot().status}`).sort()).toEqual(expected.map((id) => `link-${id} active`).sort());
    // Links left no actor behind: each one removed finished (done stops an actor), and xstate's
    // children record never held any (links are kept children, src/actors/kept-children.ts).
    const gone = [...everSeen].filter((l) => !kept.has(l));
    expect(gone.length).toBeGreaterThan(10);
    expect(gone.filter((l) => l.getSnapshot().status !== 'done').map((l) => l.id)).toEqual([]);
    expect(Object.keys((h.actor.getSnapshot().children.topology as AnyActorRef).getSnapshot().children)).toEqual(['resolver']);
    const host = await h.backend.read({ devicePrefix: 'rc1m', rulePriorities: [0, -1], sysctls: [], nftTables: [] });
    expect([...host.devices.keys()].sort()).toEqual([...live].map((n) => linkDevice('rc', 1, n)).sort());
    h.actor.stop();
  });

  it('a relay that reuses a freed mesh address gets the same device name; the old link still ends', async () => {
    const h = harness();
    await h.view(relays([1, 2, 3]));
    // relay-3 leaves and relay-4 is admitted with relay-3's freed mesh address, in one view change.
    const four = relay(4, { meshAddress: relay(3).meshAddress });
    await h.view([relay(1), relay(2), four]);
    await h.view([relay(1), relay(2), four]);
    expect([...h.links().keys()].sort()).toEqual(['relay-2', 'relay-4']);
    const host = await h.backend.read({ devicePrefix: 'rc1m', rulePriorities: [0, -1], sysctls: [], nftTables: [] });
    expect(host.devices.get('rc1m3')!.peers.map((p) => p.publicKey)).toEqual([four.publicKey]);
    expect(h.links().get('relay-4')!.getSnapshot().value).toBe('handshaking');
    h.actor.stop();
  });

  it('while a round runs, only the latest desired state is kept', async () => {
    const h = harness();
    await h.view(relays([1, 2]));
    const roundsBefore = h.kernelRef().getSnapshot().context.stats.rounds;
    // The first view starts a round; four more sent while it runs collapse into one more.
    const emittedBefore = h.emitted.length;
    const send = (ids: number[]) => h.actor.send({ type: 'VIEW', view: seedTopology(100 + ids.length, relays(ids)), cause: `cause-${ids.join('')}` });
    const sub = h.kernelRef().subscribe((snap: { value: unknown }) => {
      if (snap.value !== 'reconciling') return;
      sub.unsubscribe();
      for (const ids of [
        [1, 2, 3, 4],
        [1, 2, 4],
        [1, 4, 5],
        [1, 5, 6],
      ])
        send(ids);
    });
    send([1, 2, 3]);
    await h.idle();
    expect(h.kernelRef().getSnapshot().context.stats.rounds - roundsBefore).toBe(2);
    // Each round's event names the cause of the desired state it applied: the first view, then the last.
    expect(h.emitted.slice(emittedBefore).map((e) => [e.type, e.causationId])).toEqual([
      ['KernelReconciled', 'cause-123'],
      ['KernelReconciled', 'cause-156'],
    ]);
    const host = await h.backend.read({ devicePrefix: 'rc1m', rulePriorities: [0, -1], sysctls: [], nftTables: [] });
    expect([...host.devices.keys()].sort()).toEqual(['rc1m5', 'rc1m6']);
    h.actor.stop();
  });

  it('desired states sent in one turn of the event loop make one round, for the last of them', async () => {
    const h = harness();
    await h.view(relays([1, 2]));
    const roundsBefore = h.kernelRef().getSnapshot().context.stats.rounds;
    const emittedBefore = h.emitted.length;
    for (const ids of [
      [1, 2, 3],
      [1, 2, 3, 4],
      [1, 3, 4],
    ])
      h.actor.send({ type: 'VIEW', view: seedTopology(100 + ids.length, relays(ids)), cause: `cause-${ids.join('')}` });
    await h.idle();
    expect(h.kernelRef().getSnapshot().context.stats.rounds - roundsBefore).toBe(1);
    expect(h.emitted.slice(emittedBefore).map((e) => [e.type, e.causationId])).toEqual([['KernelReconciled', 'cause-134']]);
    h.actor.stop();
  });

  it('teardown removes every mesh device and tells the parent', async () => {
    const h = harness();
    await h.view(relays([1, 2, 3]));
    h.actor.send({ type: 'TEARDOWN', cause: 'drain-1' });
    await h.idle();
    expect(h.actor.getSnapshot().context.tornDown).toBe(true);
    expect(h.emitted.at(-1)).toMatchObject({ type: 'KernelReconciled', causationId: 'drain-1', data: { owner: 'mesh' } });
    const host = await h.backend.read({ devicePrefix: 'rc1m', rulePriorities: [0, -1], sysctls: [], nftTables: [] });
    expect(host.devices.size).toBe(0);
    expect(host.routes).toEqual([]);
    // A view arriving after the teardown does not bring links back.
    await h.view(relays([1, 2, 3]));
    expect([...h.links().keys()]).toEqual([]);
    h.actor.stop();
  });

  it('observations reach the links: a handshake brings a link up', async () => {
    const h = harness();
    await h.view(relays([1, 2]));
    h.backend.setObservation({
      dev: 'rc1m2',
      publicKey: relay(2).publicKey,
      endpoint: '198.51.100.2:51821',
      latestHandshakeMs: 1_000,
      rxBytes: 92,
      txBytes: 92,
    });
    expect(h.observers[0]!.devices).toEqual(['rc1m2']);
    h.observers[0]!.sendBack({ type: 'OBSERVED', observations: await h.backend.observe(['rc1m2']), nowMs: 1_500 });
    expect(h.links().get('relay-2')!.getSnapshot().value).toBe('up');
    h.actor.stop();
  });
});
