import { describe, expect, it } from 'vitest';
import type { AnyActorRef } from 'xstate';
import type { KernelOp, KernelScope } from '../../src/kernel/host-state.ts';
import { clientNftBody, clientRulePriority, clientScope, desiredClientState, gatewayAddress } from '../../src/kernel/clients.ts';
import { relay } from '../support/given.ts';
import { clientsHarness, clientsInput, session } from '../support/clients-harness.ts';

const r1 = relay(1);
const r2 = relay(2);
const r3 = relay(3);
const byId = Object.fromEntries([r1, r2, r3].map((r) => [r.id, r]));
const SCOPE: KernelScope = clientScope(r1, clientsInput.clients);
const opNames = (ops: KernelOp[]) => ops.map((o) => o.op);

describe('client steering, pure', () => {
  it('the client device listens on the endpoint port with the pool gateway, one peer and one rule per session', () => {
    const s = desiredClientState(r1, byId, [session(1, r1, 'relay-2'), session(2, r1, 'relay-3')], clientsInput.clients);
    expect(gatewayAddress(r1)).toBe('100.96.0.1/22');
    expect(s.devices.get('rc1c')).toMatchObject({ listenPort: 51820, addresses: ['100.96.0.1/22'], mtu: 1420, up: true });
    expect(s.devices.get('rc1c')!.peers.map((p) => p.allowedIps)).toEqual([['100.96.0.2/32'], ['100.96.0.3/32']]);
    expect(s.rules).toEqual([
      { priority: 21_024, from: '100.96.0.0/22', iif: 'rc1c', table: null },
      { priority: 20_002, from: '100.96.0.2/32', iif: 'rc1c', table: 100_002 },
      { priority: 20_003, from: '100.96.0.3/32', iif: 'rc1c', table: 100_003 },
    ]);
    expect(s.sysctls).toEqual({ 'net.ipv4.ip_forward': '1', 'net.ipv4.conf.all.rp_filter': '2' });
    expect(Object.keys(s.nftTables)).toEqual(['rc1']);
  });

  it('a session whose exit is unknown gets its peer but no rule (the fail-closed rule refuses it); other entries are not ours', () => {
    const s = desiredClientState(r1, byId, [session(1, r1, 'relay-9'), session(2, r2, 'relay-3')], clientsInput.clients);
    expect(s.devices.get('rc1c')!.peers).toHaveLength(1);
    expect(s.rules).toEqual([{ priority: 21_024, from: '100.96.0.0/22', iif: 'rc1c', table: null }]);
  });

  it('rule priorities follow the host offset; the network, gateway and broadcast addresses have none', () => {
    expect(clientRulePriority(r1, '100.96.0.2', 20_000)).toBe(20_002);
    expect(clientRulePriority(r1, '100.96.3.254', 20_000)).toBe(21_022);
    for (const a of ['100.96.0.0', '100.96.0.1', '100.96.3.255', '100.96.4.2', 'nope']) expect(clientRulePriority(r1, a, 20_000)).toBeNull();
    expect(() => clientScope(relay(1, { clientPool: '100.96.0.0/16' }), clientsInput.clients)).toThrow(/past 32765/);
  });

  it('the nftables table filters clients, fails closed, clamps MSS and masquerades toward the internet', () => {
    const body = clientNftBody(r1, clientsInput.clients);
    expect(body).toContain('198.18.0.2/32 : goto refused_operator');
    expect(body).toContain('iifname "rc1c" ip daddr 100.64.0.0/10 goto refused_network');
    expect(body).toContain('iifname "rc1c" oifname != "rc1m*" counter name "fail_closed" drop');
    expect(body).toContain('iifname "rc1c" tcp flags syn tcp option maxseg size set rt mtu');
    expect(body).toContain('oifname "rc1c" ct state established,related accept');
    expect(body).toContain('ip saddr 100.96.0.0/11 masquerade');
  });
});

describe('clients actor with the kernel and topology actors on the in-memory host', () => {
  it('programs sessions, confirms each to the control plane once programmed, and reports them ready', async () => {
    const h = clientsHarness();
    const a = session(1, r1, 'relay-2');
    const b = session(2, r1, 'relay-3');
    await h.view([r1, r2, r3], [a, b]);
    const host = await h.backend.read(SCOPE);
    expect(
      host.devices
        .get('rc1c')!
        .peers.map((p) => p.publicKey)
        .sort(),
    ).toEqual([a.publicKey, b.publicKey].sort());
    expect(host.rules.filter((r) => r.table !== null).map((r) => [r.from, r.table])).toEqual([
      ['100.96.0.2/32', 100_002],
      ['100.96.0.3/32', 100_003],
    ]);
    expect(host.sysctls).toEqual({ 'net.ipv4.ip_forward': '1', 'net.ipv4.conf.all.rp_filter': '2' });
    expect(h.confirms).toEqual(
      expect.arrayContaining([
        { sessionId: a.id, exitId: 'relay-2' },
        { sessionId: b.id, exitId: 'relay-3' },
      ]),
    );
    expect(h.confirms).toHaveLength(2);
    expect([h.stateOf(a.id), h.stateOf(b.id)]).toEqual(['ready', 'ready']);
    h.actor.stop();
  });

  it('switching the exit replaces one rule, leaves the peer alone and confirms the new exit', async () => {
    const h = clientsHarness();
    const a = session(1, r1, 'relay-2');
    await h.view([r1, r2, r3], [a]);
    const before = h.backend.ops.length;
    await h.view([r1, r2, r3], [{ ...a, exitId: 'relay-3' }]);
    expect(opNames(h.backend.ops.slice(before))).toEqual(['rule.add', 'rule.del']);
    expect(h.confirms.at(-1)).toEqual({ sessionId: a.id, exitId: 'relay-3' });
    expect(h.events.filter((e) => e.type === 'ClientSessionSteered').map((e) => e.data)).toEqual([
      { sessionId: a.id, exitId: 'relay-2', previousExitId: null },
      { sessionId: a.id, exitId: 'relay-3', previousExitId: 'relay-2' },
    ]);
    h.actor.stop();
  });

  it('200 sessions opened and closed leave the host exactly as before', async () => {
    const h = clientsHarness();
    await h.view([r1, r2, r3]);
    const before = h.backend.render();
    const actors: AnyActorRef[] = [];
    for (let i = 1; i <= 200; i++) {
      const s = session(i, r1, i % 2 ? 'relay-2' : 'relay-3');
      await h.view([r1, r2, r3], [s]);
      expect(h.stateOf(s.id)).toBe('ready');
      actors.push(h.sessions()[s.id]!);
      await h.view([r1, r2, r3], []);
      expect(h.stateOf(s.id)).toBeNull();
    }
    expect(h.backend.render()).toBe(before);
    expect(Object.keys(h.sessions())).toEqual([]);
    // No actor left behind: each finished (done stops it), and xstate's children record never held one
    // (session actors are kept children, src/actors/kept-children.ts).
    expect(actors.filter((a) => a.getSnapshot().status !== 'done').map((a) => a.id)).toEqual([]);
    expect(Object.keys((h.actor.getSnapshot().children.clients as AnyActorRef).getSnapshot().children)).toEqual([]);
    h.actor.stop();
  });

  it('private sessions: a port map at their entry, a peer and a route on the private device at their exit; confirmed, switched, closed without a trace', async () => {
    const h = clientsHarness();
    await h.view([r1, r2, r3]);
    const before = h.backend.render();
    // Entering here, leaving at relay-2: the session's port (51820 - host offset 2) maps to relay-2's private port (51820 + 2).
    const out = session(1, r1, 'relay-2', { mode: 'private' });
    // Entering at relay-2, leaving here: the client's tunnel ends on rc1cp.
    const inn = session(5, r2, 'relay-1', { mode: 'private' });
    await h.view([r1, r2, r3], [out, inn]);
    const host = await h.backend.read(SCOPE);
    expect(host.portMaps).toEqual([{ table: 'rc1', port: 51818, to: '100.64.0.2:51822' }]);
    expect(host.devices.get('rc1cp')).toMatchObject({ listenPort: 51821, mtu: 1360, addresses: [], up: true, publicKey: r1.publicKey });
    expect(host.devices.get('rc1cp')!.peers).toEqual([{ publicKey: inn.publicKey, endpoint: null, allowedIps: [`${inn.address}/32`], keepaliveSeconds: 0 }]);
    expect(host.routes).toEqual([{ dst: `${inn.address}/32`, dev: 'rc1cp', table: 254, src: null }]);
    // Neither is a peer of the client device, nor has a steering rule.
    expect(host.devices.get('rc1c')!.peers).toEqual([]);
    expect(host.rules.filter((r) => r.table !== null)).toEqual([]);
    expect(h.confirms).toEqual(
      expect.arrayContaining([
        { sessionId: out.id, exitId: 'relay-2' },
        { sessionId: inn.id, exitId: 'relay-1' },
      ]),
    );
    expect([h.stateOf(out.id), h.stateOf(inn.id)]).toEqual(['ready', 'ready']);
    const announced = h.events
      .filter((e) => e.type === 'ClientSessionStateChanged' && e.data.state === 'ready')
      .map((e) => e.type === 'ClientSessionStateChanged' && [e.data.sessionId, e.data.mode, e.data.role]);
    expect(announced).toEqual(
      expect.arrayContaining([
        [out.id, 'private', 'entry'],
        [inn.id, 'private', 'exit'],
      ]),
    );
    // The client heard at the exit makes the session active there.
    h.backend.setObservation({ dev: 'rc1cp', publicKey: inn.publicKey, endpoint: '100.64.0.2:40000', latestHandshakeMs: 1_000, rxBytes: 148, txBytes: 92 });
    await h.observe(2_000);
    expect(h.stateOf(inn.id)).toBe('active');
    // A switch points the port elsewhere in one step; the session that left here for relay-3 closes here.
    const ops = h.backend.ops.length;
    await h.view(
      [r1, r2, r3],
      [
        { ...out, exitId: 'relay-3' },
        { ...inn, exitId: 'relay-3' },
      ],
    );
    // The private device goes with its last peer, and its routes with it.
    expect(opNames(h.backend.ops.slice(ops))).toEqual(['portmap.replace', 'link.del']);
    expect((await h.backend.read(SCOPE)).portMaps).toEqual([{ table: 'rc1', port: 51818, to: '100.64.0.3:51823' }]);
    expect(h.confirms.at(-1)).toEqual({ sessionId: out.id, exitId: 'relay-3' });
    expect(h.stateOf(inn.id)).toBeNull();
    // An exit whose private port would pass 65535 gets no port map (and breaks nothing else).
    const high = relay(3, { endpoint: '198.51.100.3:65534' });
    expect(desiredClientState(r1, { ...byId, 'relay-3': high }, [{ ...out, exitId: 'relay-3' }], clientsInput.clients).portMaps).toEqual([]);
    // Its exit gone, the session keeps no port map: the table drops and counts what arrives.
    await h.view([r1, r2], [{ ...out, exitId: 'relay-3' }]);
    expect((await h.backend.read(SCOPE)).portMaps).toEqual([]);
    await h.view([r1, r2, r3], []);
    expect(h.backend.render()).toBe(before);
    expect(Object.keys(h.sessions())).toEqual([]);
    h.actor.stop();
  });

  it('an exit that leaves takes its table route with it: the client falls to the fail-closed rule', async () => {
    const h = clientsHarness();
    const a = session(1, r1, 'relay-2');
    await h.view([r1, r2, r3], [a]);
    await h.view([r1, r3], [a]);
    const host = await h.backend.read(SCOPE);
    expect(host.rules).toEqual([{ priority: 21_024, from: '100.96.0.0/22', iif: 'rc1c', table: null }]);
    expect(h.backend.render()).not.toMatch(/table 100002/);
    expect(host.devices.get('rc1c')!.peers).toHaveLength(1);
    h.actor.stop();
  });

  it('a client heard is active, quiet for idle-after is idle, and past its expiry it is unprogrammed', async () => {
    const h = clientsHarness();
    const a = session(1, r1, 'relay-2', { expiresAt: new Date(1_000_000).toISOString() });
    await h.view([r1, r2], [a]);
    h.backend.setObservation({ dev: 'rc1c', publicKey: a.publicKey, endpoint: '198.51.100.50:40000', latestHandshakeMs: 100_000, rxBytes: 500, txBytes: 300 });
    await h.observe(100_500);
    expect(h.stateOf(a.id)).toBe('active');
    await h.observe(100_500 + clientsInput.idleAfterMs);
    expect(h.stateOf(a.id)).toBe('idle');
    await h.observe(1_000_000);
    expect(h.stateOf(a.id)).toBe('expired');
    expect((await h.backend.read(SCOPE)).devices.get('rc1c')!.peers).toEqual([]);
    // The round that unprogrammed it names the session's expired event as its cause.
    const expired = h.events.find((e) => e.type === 'ClientSessionStateChanged' && e.data.state === 'expired')!;
    expect(expired.type === 'ClientSessionStateChanged' && expired.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(h.kernelEvents.at(-1)).toMatchObject({ type: 'KernelReconciled', causationId: (expired as { id: string }).id, data: { owner: 'clients' } });
    h.actor.stop();
  });

  it('teardown leaves no client device, rule or nftables table, and puts the sysctls back', async () => {
    const h = clientsHarness();
    await h.view([r1, r2, r3], [session(1, r1, 'relay-2')]);
    await h.teardown();
    const host = await h.backend.read(SCOPE);
    expect(host).toEqual({ devices: new Map(), routes: [], rules: [], sysctls: clientsInput.originalSysctls, nftTables: {}, portMaps: [] });
    expect(h.tornDown()).toBe(true);
    h.actor.stop();
  });
});
