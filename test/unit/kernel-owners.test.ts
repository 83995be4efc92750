import { describe, expect, it } from 'vitest';
import { seedTopology } from '../../src/events/topology.fold.ts';
import { clientDevice, releasedClientState } from '../../src/kernel/clients.ts';
import { emptyHostState, type HostState } from '../../src/kernel/host-state.ts';
import { MemoryKernelBackend } from '../../src/kernel/memory-backend.ts';
import { desiredMeshState, linkDevice } from '../../src/kernel/mesh.ts';
import { clientsOwner, expireSession, initialClientsState, type ClientsOwnerOptions } from '../../src/kernel/owners/clients.ts';
import { initialMeshState, meshOwner } from '../../src/kernel/owners/mesh.ts';
import { takesView } from '../../src/kernel/owners/owner.ts';
import { planKernel } from '../../src/kernel/plan.ts';
import { clientsInput, session, topologyInput } from '../support/clients-harness.ts';
import { key, relay, devs } from '../support/given.ts';

const r1 = relay(1);
const r2 = relay(2);
const r3 = relay(3);
const mesh = topologyInput.mesh;
const opts: ClientsOwnerOptions = { clients: clientsInput.clients, originalSysctls: clientsInput.originalSysctls };
const dev = clientDevice('rc', 1);

/** The host the owner's desire programs, applied to an in-memory kernel from nothing. */
function programmed(scope: Parameters<MemoryKernelBackend['readSync']>[0], desired: Parameters<typeof planKernel>[1]): HostState {
  const host = new MemoryKernelBackend({ recordOps: false });
  for (const op of planKernel(host.readSync(scope), desired)) host.applySync(op);
  return host.readSync(scope);
}

describe('the clients owner', () => {
  const s1 = session(1, r1, 'relay-2');
  const s2 = session(2, r1, 'relay-3');
  const view = seedTopology(5, [r1, r2, r3], [s1, s2, session(3, r2, 'relay-1')]);
  const state = clientsOwner.view(initialClientsState('relay-1'), { view, services: ['192.0.2.7/32'] });

  it('takes the sessions entering here from a view, and the registration services', () => {
    expect(Object.keys(state.sessions).sort()).toEqual([s1.id, s2.id]);
    expect(state.services).toEqual(['192.0.2.7/32']);
    // A view without services keeps the ones it had.
    expect(clientsOwner.view(state, { view }).services).toEqual(['192.0.2.7/32']);
  });

  it('desires no peer and no rule for an expired session, and keeps the others', () => {
    const d = clientsOwner.desire(expireSession(state, s1.id), opts);
    expect(d.devices.get(dev)!.peers.map((p) => p.publicKey)).toEqual([s2.publicKey]);
    expect(d.rules.some((r) => r.from === `${s1.address}/32`)).toBe(false);
    expect(d.rules.some((r) => r.from === `${s2.address}/32`)).toBe(true);
    // Expiring is idempotent; the view forgets an expiry once the session is closed.
    expect(expireSession(expireSession(state, s1.id), s1.id).expired).toEqual([s1.id]);
    const closed = seedTopology(6, [r1, r2, r3], [s2]);
    expect(clientsOwner.view(expireSession(state, s1.id), { view: closed }).expired).toEqual([]);
  });

  it('keeps clients from the registration services as from the configured ones', () => {
    const body = (services: string[]) => Object.values(clientsOwner.desire({ ...state, services }, opts).nftTables)[0]!.body;
    expect(body(['192.0.2.7/32'])).toContain('192.0.2.7/32');
    expect(body([])).not.toContain('192.0.2.7/32');
  });

  it('gives the same objects for a view that changes nothing of its own (a relay joining elsewhere), new ones when its sessions or their exits change', () => {
    const before = clientsOwner.desire(state, opts);
    const joined = clientsOwner.view(state, { view: seedTopology(6, [r1, r2, r3, relay(4)], [s1, s2, session(3, r2, 'relay-1')]) });
    const after = clientsOwner.desire(joined, opts);
    expect(after).toBe(before);
    // Equal to a fresh build: the memo hands back nothing else.
    expect(after).toEqual(clientsOwner.desire({ ...joined, services: [...joined.services] }, opts));
    // Services are compared by value: a registration without them gives a new empty list every view.
    expect(clientsOwner.desire({ ...joined, services: [...joined.services] }, opts)).toBe(before);
    expect(clientsOwner.desire({ ...joined, services: [...joined.services, '198.18.0.9/32'] }, opts)).not.toBe(before);
    // An exit whose record changed (its endpoint moved) and a new session are new inputs.
    const moved = { ...r2, endpoint: '198.51.100.99:51820' };
    expect(clientsOwner.desire(clientsOwner.view(state, { view: seedTopology(6, [r1, moved, r3], [s1, s2]) }), opts)).not.toBe(before);
    const s4 = session(4, r1, 'relay-2');
    const opened = clientsOwner.desire(clientsOwner.view(state, { view: seedTopology(6, [r1, r2, r3], [s1, s2, s4]) }), opts);
    expect(opened.devices.get(dev)!.peers.map((p) => p.publicKey)).toContain(s4.publicKey);
  });

  it('desires only the sysctls as they were once tearing down, whatever sessions it had', () => {
    const down = clientsOwner.teardown(state);
    expect(down.sessions).toEqual({});
    expect(clientsOwner.desire(down, opts)).toEqual(releasedClientState(clientsInput.originalSysctls));
    expect(takesView(down, view)).toBe(false);
  });

  it('judges each session on the reached host, and a closed session whose key a new one holds as unprogrammed', () => {
    const actual = programmed(clientsOwner.scope(state, opts), clientsOwner.desire(state, opts));
    const old = session(9, r1, 'relay-2', { publicKey: s1.publicKey });
    const r = clientsOwner.reached(state, opts, actual, [s1, s2, old]);
    expect(r.members).toEqual([
      { peer: true, exitId: 'relay-2' },
      { peer: true, exitId: 'relay-3' },
      { peer: false, exitId: null },
    ]);
    expect(r.tornDown).toBe(false);
    const down = clientsOwner.teardown(state);
    expect(clientsOwner.reached(down, opts, actual, []).tornDown).toBe(false);
    expect(clientsOwner.reached(down, opts, { ...emptyHostState(), sysctls: actual.sysctls }, []).tornDown).toBe(true);
  });
});

describe('the mesh owner', () => {
  const view = seedTopology(3, [r1, r2, r3]);
  const state = meshOwner.view(initialMeshState('relay-1'), { view });

  it('desires one link per other relay of the view, as the mesh layout says', () => {
    expect([...state.peers.keys()].sort()).toEqual(['relay-2', 'relay-3']);
    expect(meshOwner.desire(state, mesh)).toEqual(desiredMeshState(r1, [r2, r3], mesh, {}));
    expect(takesView(state, seedTopology(4, [r2, r3]))).toBe(false);
  });

  it('forgets resolutions of peers that left or whose endpoint names another host', () => {
    const named = { ...state, resolved: { 'relay-2': { host: 'r2.example', address: '192.0.2.2', error: null } } };
    expect(meshOwner.view(named, { view }).resolved).toEqual({});
  });

  it('desires nothing once tearing down, in the same scope', () => {
    const down = meshOwner.teardown(state);
    expect(meshOwner.desire(down, mesh).devices.size).toBe(0);
    expect(meshOwner.scope(down, mesh)).toEqual(meshOwner.scope(state, mesh));
  });

  it('judges a live link configured when its device is exactly as desired, a leaving one while its device still carries its peer', () => {
    const actual = programmed(meshOwner.scope(state, mesh), meshOwner.desire(state, mesh));
    const d2 = linkDevice('rc', 1, 2);
    const d3 = linkDevice('rc', 1, 3);
    const links = [
      { device: d2, peer: r2 },
      { device: d3, peer: r3 },
    ];
    expect(meshOwner.reached(state, mesh, actual, links).members).toEqual([true, true]);
    // relay-2 rotated its key: the device no longer matches until reprogrammed.
    const rotated = meshOwner.view(state, { view: seedTopology(4, [r1, { ...r2, publicKey: key(42) }, r3]) });
    expect(meshOwner.reached(rotated, mesh, actual, links).members).toEqual([false, true]);
    // relay-3 left: its link stays "configured" while its device carries it.
    const left = meshOwner.view(state, { view: seedTopology(4, [r1, r2]) });
    expect(meshOwner.reached(left, mesh, actual, links).members).toEqual([true, true]);
    const gone = { ...actual, devices: devs({ [d2]: actual.devices.get(d2)! }) };
    expect(meshOwner.reached(left, mesh, gone, links).members).toEqual([true, false]);
    expect(meshOwner.reached(meshOwner.teardown(state), mesh, gone, links).tornDown).toBe(false);
    expect(meshOwner.reached(meshOwner.teardown(state), mesh, emptyHostState(), links).tornDown).toBe(true);
  });
});
