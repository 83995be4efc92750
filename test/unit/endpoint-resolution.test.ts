import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createActor, createMachine, type AnyActorRef } from 'xstate';
import type { ResolvedEvent } from '../../src/actors/topology.machine.ts';
import { resolverActor } from '../../src/daemon/resolver.ts';
import { envelope } from '../../src/contract/envelope.ts';
import type { LogEntry } from '../../src/events/log.ts';
import type { RelayEvent } from '../../src/contract/relay.events.ts';
import { seedTopology } from '../../src/events/topology.fold.ts';
import type { RelayRecord, TopologyEvent } from '../../src/contract/topology.events.ts';
import {
  applyResolution,
  chooseAddress,
  patchedTargets,
  resolveTargets,
  retainResolutions,
  type ResolveTarget,
  type Resolutions,
} from '../../src/kernel/endpoint-resolution.ts';
import { desiredMeshState, linkPeerEndpoint } from '../../src/kernel/mesh.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { RelayReplay } from '../../src/replay/replay.ts';
import { relay } from '../support/given.ts';
import { meshHarness, meshHarnessInput } from '../support/mesh-harness.ts';

const opts = meshHarnessInput.mesh;
const named = (n: number, host = `relay-${n}.sim.invalid`) => relay(n, { endpoint: `${host}:51820` });
const byId = (rs: RelayRecord[]) => new Map(rs.map((p) => [p.id, p]));
const peerOf = (s: ReturnType<typeof desiredMeshState>, dev: string) => s.devices.get(dev)!.peers[0]!;

describe('peer endpoints given as names: the pure decisions', () => {
  it('an address literal is used as it is; a name only as the address it resolved to, never as the name', () => {
    const self = relay(1);
    const v6 = relay(3, { endpoint: '[2001:db8::3]:51820' });
    expect(linkPeerEndpoint(relay(2), 1)).toBe('198.51.100.2:51821');
    expect(linkPeerEndpoint(v6, 1)).toBe('[2001:db8::3]:51821');
    // Not (yet) resolved: no endpoint at all (WireGuard learns it from the peer's handshakes).
    expect(linkPeerEndpoint(named(2), 1)).toBeNull();
    const resolved: Resolutions = { 'relay-2': { host: 'relay-2.sim.invalid', address: '198.51.100.22', error: null } };
    expect(linkPeerEndpoint(named(2), 1, resolved)).toBe('198.51.100.22:51821');
    expect(linkPeerEndpoint(named(2), 1, { 'relay-2': { host: 'relay-2.sim.invalid', address: '2001:db8::22', error: null } })).toBe('[2001:db8::22]:51821');
    // A failed lookup, or one for the host the endpoint named before: unresolved.
    expect(linkPeerEndpoint(named(2), 1, { 'relay-2': { host: 'relay-2.sim.invalid', address: null, error: 'ENOTFOUND' } })).toBeNull();
    expect(linkPeerEndpoint(named(2, 'elsewhere.invalid'), 1, resolved)).toBeNull();
    const s = desiredMeshState(self, [self, named(2), v6, relay(4)], opts, {});
    expect(peerOf(s, 'rc1m2').endpoint).toBeNull();
    expect(peerOf(s, 'rc1m3').endpoint).toBe('[2001:db8::3]:51821');
    expect(peerOf(s, 'rc1m4').endpoint).toBe('198.51.100.4:51821');
    expect(peerOf(desiredMeshState(self, [named(2)], opts, resolved), 'rc1m2').endpoint).toBe('198.51.100.22:51821');
    // Nothing but the endpoint depends on it.
    expect({ ...s.devices.get('rc1m2'), peers: [] }).toEqual({ ...desiredMeshState(self, [named(2)], opts, resolved).devices.get('rc1m2'), peers: [] });
  });

  it('only names are resolved', () => {
    expect(resolveTargets([relay(2), named(4), relay(3, { endpoint: '[2001:db8::3]:51820' }), named(1, 'a.example')])).toEqual([
      { peerId: 'relay-1', host: 'a.example' },
      { peerId: 'relay-4', host: 'relay-4.sim.invalid' },
    ]);
  });

  it('folds results: a new address changes the desired state; the same one, a repeated failure or a stale result changes nothing', () => {
    const peerList = [named(2), relay(3)];
    const peers = new Map(peerList.map((p) => [p.id, p]));
    const ok = { peerId: 'relay-2', host: 'relay-2.sim.invalid', address: '198.51.100.22', error: null };
    const fail = { ...ok, address: null, error: 'getaddrinfo EAI_AGAIN relay-2.sim.invalid' };
    const first = applyResolution({}, peers, ok);
    expect(first).toMatchObject({ recorded: true, desiredChanged: true });
    expect(first.resolutions['relay-2']).toEqual({ host: 'relay-2.sim.invalid', address: '198.51.100.22', error: null });
    // Unchanged: the very same object back, so no new desired state is even computed.
    const again = applyResolution(first.resolutions, peers, ok);
    expect(again).toEqual({ resolutions: first.resolutions, recorded: false, desiredChanged: false });
    expect(again.resolutions).toBe(first.resolutions);
    expect(desiredMeshState(relay(1), peerList, opts, again.resolutions)).toEqual(desiredMeshState(relay(1), peerList, opts, first.resolutions));
    // A changed address.
    expect(applyResolution(first.resolutions, peers, { ...ok, address: '198.51.100.23' })).toMatchObject({ recorded: true, desiredChanged: true });
    // The first failure is recorded (reported), but without an address before there is no new desired state.
    const failed = applyResolution({}, peers, fail);
    expect(failed).toMatchObject({ recorded: true, desiredChanged: false });
    expect(applyResolution(failed.resolutions, peers, { ...fail, error: 'getaddrinfo ENOTFOUND relay-2.sim.invalid' })).toMatchObject({
      recorded: false,
      desiredChanged: false,
    });
    // Failing after an address: recorded, and the endpoint is no longer set by the relay.
    expect(applyResolution(first.resolutions, peers, fail)).toMatchObject({ recorded: true, desiredChanged: true });
    // Fixed: cleared.
    expect(applyResolution(failed.resolutions, peers, ok)).toMatchObject({ recorded: true, desiredChanged: true, resolutions: { 'relay-2': { error: null } } });
    // Stale: a peer that left, a host the endpoint no longer names, an address literal.
    expect(applyResolution({}, new Map([['relay-3', relay(3)]]), ok).recorded).toBe(false);
    expect(applyResolution({}, new Map([['relay-2', named(2, 'moved.invalid')]]), ok).recorded).toBe(false);
    expect(applyResolution({}, new Map([['relay-2', relay(2)]]), { ...ok, host: '198.51.100.2' }).recorded).toBe(false);
  });

  it('patches the resolver targets from the last ones as the full list would be, the same array when no name changed', () => {
    // Peers 2..7, each with a name, another name, or an address; a step changes a few of them.
    const endpoint = (n: number, k: number) => (k === 0 ? relay(n) : named(n, `r${n}-${k}.sim.invalid`));
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.tuple(fc.integer({ min: 2, max: 7 }), fc.integer({ min: -1, max: 2 })), { maxLength: 3 }), { maxLength: 20 }),
        (steps) => {
          let peers = new Map<string, RelayRecord>();
          let targets: readonly ResolveTarget[] = resolveTargets(peers.values());
          for (const step of steps) {
            const next = new Map(peers);
            for (const [n, k] of step) {
              if (k < 0) next.delete(`relay-${n}`);
              else next.set(`relay-${n}`, endpoint(n, k));
            }
            const patched = patchedTargets(
              targets,
              next,
              step.map(([n]) => `relay-${n}`),
            );
            expect(patched).toEqual(resolveTargets(next.values()));
            if (JSON.stringify(patched) === JSON.stringify(targets)) expect(patched).toBe(targets);
            peers = next;
            targets = patched;
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('keeps resolutions only of peers still there and for the host they still name', () => {
    const r: Resolutions = {
      'relay-2': { host: 'relay-2.sim.invalid', address: '198.51.100.22', error: null },
      'relay-3': { host: 'relay-3.sim.invalid', address: '198.51.100.33', error: null },
      'relay-4': { host: 'relay-4.sim.invalid', address: '198.51.100.44', error: null },
    };
    expect(Object.keys(retainResolutions(r, byId([named(2), named(3, 'moved.invalid')])))).toEqual(['relay-2']);
    expect(retainResolutions(r, byId([named(2), named(3), named(4)]))).toBe(r);
  });

  it('chooses the first answer of a family the relay can reach', () => {
    const answers = [
      { address: '2001:db8::5', family: 6 },
      { address: '198.51.100.5', family: 4 },
    ];
    expect(chooseAddress(answers, { v4: true, v6: true })).toBe('2001:db8::5');
    expect(chooseAddress(answers, { v4: true, v6: false })).toBe('198.51.100.5');
    expect(chooseAddress(answers, { v4: false, v6: true })).toBe('2001:db8::5');
    expect(chooseAddress([answers[0]!], { v4: true, v6: false })).toBeNull();
  });
});

describe('the topology actor with names', () => {
  it('programs an unresolved peer without an endpoint, then its address; an unchanged result costs nothing', async () => {
    const h = meshHarness();
    await h.view([relay(1), named(2), relay(3)]);
    expect(h.resolver.targets).toEqual([{ peerId: 'relay-2', host: 'relay-2.sim.invalid' }]);
    let host = await h.backend.read({ devicePrefix: 'rc1m', rulePriorities: [0, -1], sysctls: [], nftTables: [] });
    expect(host.devices.get('rc1m2')!.peers[0]!.endpoint).toBeNull();
    expect(host.devices.get('rc1m3')!.peers[0]!.endpoint).toBe('198.51.100.3:51821');
    // The link counts as programmed though the device has no endpoint: WireGuard's to learn.
    expect(h.links().get('relay-2')!.getSnapshot().value).toBe('handshaking');

    const ops = h.backend.ops.length;
    const rounds = h.emitted.length;
    await h.resolve('relay-2', 'relay-2.sim.invalid', '198.51.100.22');
    const ev = h.log.filter((e) => e.type === 'PeerEndpointResolved');
    expect(ev).toEqual([
      { type: 'PeerEndpointResolved', id: expect.any(String), data: { peerId: 'relay-2', host: 'relay-2.sim.invalid', address: '198.51.100.22', error: null } },
    ]);
    expect(h.backend.ops.slice(ops).map((o) => o.op)).toEqual(['wg.peer.set']);
    // The round names the resolution as its cause.
    expect(h.emitted.slice(rounds)).toMatchObject([{ type: 'KernelReconciled', causationId: ev[0]!.id }]);
    host = await h.backend.read({ devicePrefix: 'rc1m', rulePriorities: [0, -1], sysctls: [], nftTables: [] });
    expect(host.devices.get('rc1m2')!.peers[0]!.endpoint).toBe('198.51.100.22:51821');

    // Every later lookup with the same answer: no event, no desired state, no round.
    const logged = h.log.length;
    const rounds2 = (h.kernelRef().getSnapshot().context as { stats: { rounds: number } }).stats.rounds;
    for (let i = 0; i < 3; i++) await h.resolve('relay-2', 'relay-2.sim.invalid', '198.51.100.22');
    expect(h.log.length).toBe(logged);
    expect((h.kernelRef().getSnapshot().context as { stats: { rounds: number } }).stats.rounds).toBe(rounds2);

    // A failure is recorded once and leaves the host alone; the retry that finds the address clears it.
    await h.resolve('relay-2', 'relay-2.sim.invalid', null);
    await h.resolve('relay-2', 'relay-2.sim.invalid', null);
    expect(h.log.slice(logged).map((e) => e.type)).toEqual(['PeerEndpointResolved']);
    expect((h.actor.getSnapshot().children.topology as AnyActorRef).getSnapshot().context.resolved['relay-2']).toMatchObject({
      address: null,
      error: 'getaddrinfo ENOTFOUND relay-2.sim.invalid',
    });
    expect(h.backend.ops.length).toBe(ops + 1);
    await h.resolve('relay-2', 'relay-2.sim.invalid', '198.51.100.22');
    expect((h.actor.getSnapshot().children.topology as AnyActorRef).getSnapshot().context.resolved['relay-2']).toEqual({
      host: 'relay-2.sim.invalid',
      address: '198.51.100.22',
      error: null,
    });
    expect(h.backend.ops.length).toBe(ops + 1);

    // The peer moves to another name: unresolved again until that one answers; a late answer for the old name is ignored.
    const moved = seedTopology(9, [relay(1), named(2, 'new.sim.invalid'), relay(3)]);
    h.actor.send({ type: 'VIEW', view: moved, cause: 'moved' });
    await h.idle();
    expect(h.resolver.targets).toEqual([{ peerId: 'relay-2', host: 'new.sim.invalid' }]);
    const n = h.log.length;
    await h.resolve('relay-2', 'relay-2.sim.invalid', '198.51.100.22');
    expect(h.log.length).toBe(n);
    await h.resolve('relay-2', 'new.sim.invalid', '198.51.100.99');
    host = await h.backend.read({ devicePrefix: 'rc1m', rulePriorities: [0, -1], sysctls: [], nftTables: [] });
    expect(host.devices.get('rc1m2')!.peers[0]!.endpoint).toBe('198.51.100.99:51821');
    h.actor.stop();
  });

  it('replay re-plans the rounds with the recorded addresses, never looking anything up', async () => {
    const h = meshHarness();
    const self = relay(1);
    const topo = [self, named(2), relay(3)];
    const seedId = randomUUID();
    h.actor.send({ type: 'VIEW', view: seedTopology(3, topo), cause: seedId });
    await h.idle();
    await h.resolve('relay-2', 'relay-2.sim.invalid', null);
    await h.resolve('relay-2', 'relay-2.sim.invalid', '198.51.100.22');
    await h.resolve('relay-2', 'relay-2.sim.invalid', '198.51.100.22');
    await h.resolve('relay-2', 'relay-2.sim.invalid', '198.51.100.23');
    h.actor.stop();
    expect(h.log.filter((e) => e.type === 'KernelReconciled')).toHaveLength(3);

    const at = (seq: number) => ({ seq, time: new Date(Date.UTC(2026, 11, 1, 0, 0, seq)).toISOString() });
    const relayEv = (type: string, data: unknown, id: string = randomUUID(), causationId: string | null = null) =>
      ({
        ...envelope(
          { source: 'relay-1', now: () => new Date('2026-12-01T00:00:00Z'), newId: () => id, causationId },
          type,
          type === 'RelayStarted' ? 3 : type === 'TopologySeeded' ? 2 : 1,
          data,
        ),
      }) as RelayEvent;
    const topoEntries: LogEntry[] = topo.map((r, i) => ({
      ok: true,
      stream: 'topology',
      subject: `relaynet.topology.${r.id}.relay-admitted`,
      ...at(i + 1),
      event: envelope({ source: 'control-plane', now: () => new Date('2026-12-01T00:00:00Z'), newId: randomUUID }, 'RelayAdmitted', 1, {
        revision: i + 1,
        relay: r,
      }) as TopologyEvent,
    }));
    const config = {
      wgPrefix: opts.wgPrefix,
      keepaliveSeconds: opts.keepaliveSeconds,
      mtu: opts.mtu,
      privateKeyFile: opts.privateKeyFile,
      exitTableBase: opts.exitTableBase,
      rulePriorityBase: 20_000,
      clientSupernet: '100.96.0.0/11',
      denyCidrs: [],
      clientIdleAfterMs: 180_000,
      linkStaleAfterMs: 5_000,
      linkDownAfterMs: 10_000,
      sysctlsBefore: {},
      sysctlsAtStart: {},
    };
    const relayEvents: RelayEvent[] = [
      relayEv('RelayStarted', { name: 'r1', region: 'test', publicKey: self.publicKey, software: 'test', config }),
      relayEv('TopologySeeded', { revision: 3, relays: 3, reason: 'boot', digest: null }, seedId),
      ...h.log.map((e) => (e.type === 'PeerEndpointResolved' ? relayEv(e.type, e.data, e.id) : relayEv(e.type, e.data, randomUUID(), e.causationId))),
    ];
    const run = (events: RelayEvent[]) => {
      const r = new RelayReplay({ relayId: 'relay-1' });
      for (const e of topoEntries) r.addTopology(e);
      for (const [i, ev] of events.entries()) r.add({ ok: true, stream: 'relay', subject: 'relaynet.relay.relay-1.x.y', ...at(i + 1), event: ev });
      return r.result();
    };
    const r = run(relayEvents);
    expect(r.checks).toMatchObject({ rounds: 3, matched: 3, mismatched: 0, unchecked: 0, inconsistent: 0 });
    expect(r.host.devices.get('rc1m2')!.peers[0]!.endpoint).toBe('198.51.100.23:51821');
    // A log whose recorded address differs from what the round programmed is caught.
    const forged = relayEvents.map((e) =>
      e.type === 'PeerEndpointResolved' && e.data.address === '198.51.100.23' ? { ...e, data: { ...e.data, address: '198.51.100.77' } } : e,
    );
    expect(run(forged).checks).toMatchObject({ matched: 2, mismatched: 1 });
  });
});

describe('the resolver actor (the shell)', () => {
  const logger = rootLogger({ test: 'resolver' }).child({});
  logger.level = 'silent';

  it('looks up each name at once, again on its timer, retries failures sooner, and forgets peers that left', async () => {
    const calls: string[] = [];
    let failing = true;
    const got: ResolvedEvent[] = [];
    const actor = resolverActor({
      intervalMs: 400,
      retryBaseMs: 20,
      logger,
      lookupAll: async (host) => {
        calls.push(host);
        if (host === 'gone.invalid' || failing) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
        return [
          { address: '2001:db8::9', family: 6 },
          { address: '198.51.100.9', family: 4 },
        ];
      },
      usableFamilies: () => ({ v4: true, v6: false }),
    });
    const parent = createActor(
      createMachine({
        invoke: { id: 'resolver', src: actor, input: {} },
        on: {
          RESOLVED: { actions: ({ event }) => void got.push(event as ResolvedEvent) },
          TARGETS: { actions: ({ event, self }) => (self.getSnapshot().children.resolver as AnyActorRef).send(event) },
        },
      }),
    ).start();
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    parent.send({
      type: 'TARGETS',
      targets: [
        { peerId: 'relay-2', host: 'relay-2.invalid' },
        { peerId: 'relay-3', host: 'gone.invalid' },
      ],
    });
    await sleep(100);
    // Failures retried after 20, 40 ms ...: several tries within 100 ms.
    expect(calls.filter((c) => c === 'relay-2.invalid').length).toBeGreaterThanOrEqual(3);
    expect(got.every((e) => e.address === null && /ENOTFOUND/.test(e.error!))).toBe(true);
    failing = false;
    parent.send({ type: 'TARGETS', targets: [{ peerId: 'relay-2', host: 'relay-2.invalid' }] });
    for (let i = 0; i < 100 && got.at(-1)?.address == null; i++) await sleep(5);
    expect(got.at(-1)).toEqual({ type: 'RESOLVED', peerId: 'relay-2', host: 'relay-2.invalid', address: '198.51.100.9', error: null });
    // Resolved: the next lookup waits for the interval (400 ms), and relay-3 is not looked up any more.
    const n = calls.length;
    const gone = calls.filter((c) => c === 'gone.invalid').length;
    await sleep(200);
    expect(calls.length).toBe(n);
    await sleep(350);
    expect(calls.length).toBeGreaterThan(n);
    expect(calls.filter((c) => c === 'gone.invalid').length).toBe(gone);
    parent.stop();
  });

  it('a lookup that does not answer counts as a failure after the timeout', async () => {
    const got: ResolvedEvent[] = [];
    const actor = resolverActor({
      intervalMs: 10_000,
      retryBaseMs: 10_000,
      timeoutMs: 50,
      logger,
      lookupAll: () => new Promise(() => {}),
      usableFamilies: () => ({ v4: true, v6: true }),
    });
    const parent = createActor(
      createMachine({
        invoke: { id: 'resolver', src: actor, input: {} },
        on: {
          RESOLVED: { actions: ({ event }) => void got.push(event as ResolvedEvent) },
          TARGETS: { actions: ({ event, self }) => (self.getSnapshot().children.resolver as AnyActorRef).send(event) },
        },
      }),
    ).start();
    parent.send({ type: 'TARGETS', targets: [{ peerId: 'relay-2', host: 'slow.invalid' }] });
    await new Promise((r) => setTimeout(r, 150));
    expect(got).toEqual([{ type: 'RESOLVED', peerId: 'relay-2', host: 'slow.invalid', address: null, error: 'no answer within 50 ms' }]);
    parent.stop();
  });
});
