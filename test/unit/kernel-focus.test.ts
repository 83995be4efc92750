import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ClientSession, RelayRecord } from '../../src/contract/topology.events.ts';
import { seedTopology } from '../../src/events/topology.fold.ts';
import { focusOf, isEmptyFocus, mayReachBeyond, mergeFocused, restrict } from '../../src/kernel/focus.ts';
import type { DesiredHostState, KernelBackend, KernelScope } from '../../src/kernel/host-state.ts';
import { canonicalHostState } from '../../src/kernel/host-text.ts';
import type { ReconcileInput } from '../../src/kernel/kernel.machine.ts';
import { MemoryKernelBackend } from '../../src/kernel/memory-backend.ts';
import { desiredMeshState } from '../../src/kernel/mesh.ts';
import { clientsOwner, initialClientsState, type ClientsOwnerOptions } from '../../src/kernel/owners/clients.ts';
import { initialMeshState, meshOwner } from '../../src/kernel/owners/mesh.ts';
import { planKernel } from '../../src/kernel/plan.ts';
import { reconcileWith } from '../../src/kernel/reconcile.ts';
import { clientsInput, session, topologyInput } from '../support/clients-harness.ts';
import { key, relay, devs } from '../support/given.ts';

const mesh = topologyInput.mesh;
const clientOpts: ClientsOwnerOptions = { clients: { ...clientsInput.clients, clientPrefix6: 'fd64::/96' }, originalSysctls: clientsInput.originalSysctls };

describe('a focus: what changed between two desired states', () => {
  const r1 = relay(1);
  const peers = [relay(2), relay(3), relay(4)];
  const before = desiredMeshState(r1, peers, mesh, {});

  it('holds only what changed: an unchanged peer keeps its objects, so it is not in the focus', () => {
    expect(isEmptyFocus(focusOf(before, desiredMeshState(r1, peers, mesh, {})))).toBe(true);
    const joined = desiredMeshState(r1, [...peers, relay(5)], mesh, {});
    const f = focusOf(before, joined);
    expect([...f.devices]).toEqual(['rc1m5']);
    // The joiner's routes come with its device, not one by one.
    expect(f.routes.size).toBe(0);
    expect(f.wireguard.size).toBe(0);
    // A peer's new key or endpoint changes its link's WireGuard settings alone: no route can change with them.
    const rotated = desiredMeshState(r1, [peers[0]!, { ...peers[1]!, publicKey: key(33) }, peers[2]!], mesh, {});
    expect(focusOf(before, rotated)).toMatchObject({ devices: new Set(), wireguard: new Set(['rc1m3']) });
    const moved = desiredMeshState(r1, [peers[0]!, { ...peers[1]!, endpoint: '198.51.100.99:51820' }, peers[2]!], mesh, {});
    expect(focusOf(before, moved)).toMatchObject({ devices: new Set(), wireguard: new Set(['rc1m3']) });
    // A link that goes, or whose MTU changes, is read whole with its routes.
    const left = desiredMeshState(r1, [peers[0]!, peers[2]!], mesh, {});
    expect(focusOf(before, left)).toMatchObject({ devices: new Set(['rc1m3']), wireguard: new Set() });
    expect(focusOf(before, desiredMeshState(r1, peers, { ...mesh, mtu: 1380 }, {})).devices.size).toBe(3);
  });

  it('finds every route only one list holds, wherever it sits and however the lists are ordered', () => {
    const route = (i: number) => ({ dst: `100.64.${i >> 8}.${i & 255}/32`, dev: 'rc1m1', table: 100 + i, src: null });
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 60 }), { maxLength: 40 }), fc.array(fc.integer({ min: 0, max: 60 }), { maxLength: 40 }), (xs, ys) => {
        // The same objects for the same numbers, as owners keep them: equal lists share objects.
        const objects = new Map<number, ReturnType<typeof route>>();
        const of = (i: number) => objects.get(i) ?? objects.set(i, route(i)).get(i)!;
        const a: DesiredHostState = { devices: new Map(), routes: xs.map(of), rules: [], sysctls: {}, nftTables: {}, portMaps: [] };
        const b: DesiredHostState = { ...a, routes: ys.map(of) };
        const keys = [...focusOf(a, b).routes];
        const only = [...new Set([...xs.filter((x) => !ys.includes(x)), ...ys.filter((y) => !xs.includes(y))])];
        for (const i of only) expect(keys).toContain(`${100 + i} ${route(i).dst}`);
      }),
    );
    // A leave in the middle of a long list: just that route, not the tail after it.
    const long = Array.from({ length: 300 }, (_, i) => route(i));
    const a: DesiredHostState = { devices: new Map(), routes: long, rules: [], sysctls: {}, nftTables: {}, portMaps: [] };
    expect([...focusOf(a, { ...a, routes: long.filter((_, i) => i !== 150) }).routes]).toEqual(['250 100.64.0.150/32']);
    expect([...focusOf(a, { ...a, routes: [...long, route(400)] }).routes]).toEqual(['500 100.64.1.144/32']);
  });

  it('names routes, rules, sysctls and tables that changed on their own', () => {
    const a: DesiredHostState = {
      devices: new Map(),
      routes: [{ dst: '100.64.0.9/32', dev: 'rc1m9', table: 254, src: null }],
      rules: [{ priority: 5, from: '100.96.0.2/32', iif: 'rc1c', table: 100_002 }],
      sysctls: { 'net.ipv4.ip_forward': '1', 'net.ipv4.conf.all.rp_filter': '2' },
      nftTables: { t: { name: 't', digest: 'aa', body: 'x' } },
      portMaps: [],
    };
    const b: DesiredHostState = {
      ...a,
      routes: [{ dst: '100.64.0.9/32', dev: 'rc1m8', table: 254, src: null }],
      rules: [a.rules[0]!, { priority: 5, from: '100.96.0.3/32', iif: 'rc1c', table: 100_002 }],
      sysctls: { 'net.ipv4.ip_forward': '0', 'net.ipv4.conf.all.rp_filter': '2' },
      nftTables: { t: { name: 't', digest: 'bb', body: 'y' } },
      portMaps: [],
    };
    const f = focusOf(a, b);
    expect([...f.routes]).toEqual(['254 100.64.0.9/32']);
    expect([...f.rules]).toEqual(['priority 5 from 100.96.0.3/32 iif rc1c lookup 100002']);
    expect([...f.sysctls]).toEqual(['net.ipv4.ip_forward']);
    expect([...f.nftTables]).toEqual(['t']);
    expect(restrict(b, f).rules).toEqual([b.rules[1]]);
    expect(restrict(b, f).sysctls).toEqual({ 'net.ipv4.ip_forward': '0' });
  });

  it('names the port maps that changed, and every port map of a table that did (replaced, it comes back without them)', () => {
    const m = (port: number, to: string) => ({ table: 't', port, to });
    const a: DesiredHostState = {
      devices: new Map(),
      routes: [],
      rules: [],
      sysctls: {},
      nftTables: { t: { name: 't', digest: 'aa', body: 'x' } },
      portMaps: [m(51818, '100.64.0.2:51822'), m(51817, '100.64.0.3:51823'), m(51816, '100.64.0.2:51822')],
    };
    const moved = { ...a, portMaps: [a.portMaps[0]!, m(51817, '100.64.0.2:51822'), a.portMaps[2]!] };
    const f = focusOf(a, moved);
    expect([...f.portMaps]).toEqual(['t 51817']);
    expect(restrict(moved, f).portMaps).toEqual([m(51817, '100.64.0.2:51822')]);
    expect(mergeFocused(a, f, restrict(moved, f)).portMaps).toEqual([a.portMaps[0], a.portMaps[2], m(51817, '100.64.0.2:51822')]);
    const newTable = { ...a, nftTables: { t: { name: 't', digest: 'bb', body: 'y' } } };
    const g = focusOf(a, newTable);
    expect([...g.portMaps]).toEqual([]);
    expect(restrict(newTable, g).portMaps).toEqual(a.portMaps);
    expect(isEmptyFocus(focusOf(a, { ...a }))).toBe(true);
  });

  it('merges a focused part into a scope as the definition says: the scope without what the focus holds of it, then the part', () => {
    const dev = (i: number) => `rc1m${i % 7}`;
    const route = (i: number) => ({ dst: `100.64.${i >> 8}.${i & 255}/32`, dev: dev(i), table: 254, src: null });
    const none = new Set<string>();
    const focus = (devs: number[], routeIds: number[]) => ({
      devices: new Set(devs.map(dev)),
      wireguard: none,
      routes: new Set(routeIds.map((i) => `254 ${route(i).dst}`)),
      rules: none,
      sysctls: none,
      nftTables: none,
      portMaps: none,
    });
    const sorts = (xs: number[]) => [...new Set(xs)].map(route);
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 2000 }), { maxLength: 1500 }),
        fc.array(fc.integer({ min: 0, max: 6 }), { maxLength: 3 }),
        fc.array(fc.integer({ min: 0, max: 2000 }), { maxLength: 5 }),
        fc.array(fc.integer({ min: 0, max: 2000 }), { maxLength: 10 }),
        (xs, fd, fr, part) => {
          const base = { devices: new Map(), routes: sorts(xs), rules: [], sysctls: {}, nftTables: {}, portMaps: [] };
          const f = focus(fd, fr);
          const focused = { ...base, routes: sorts(part) };
          const inFocus = (r: { dev: string; dst: string }) => f.devices.has(r.dev) || f.routes.has(`254 ${r.dst}`);
          expect(mergeFocused(base, f, focused).routes).toEqual([...base.routes.filter((r) => !inFocus(r)), ...focused.routes]);
          expect(restrict(base, f)).toBe(restrict(base, f)); // the same round asks twice: once computed
        },
      ),
      { numRuns: 300 },
    );
    // Every other route of a long list in the focus: more pieces than one call to concat takes.
    const long = Array.from({ length: 3000 }, (_, i) => ({ dst: `100.64.${i >> 8}.${i & 255}/32`, dev: `rc1m${i % 2}`, table: 254, src: null }));
    const base = { devices: new Map(), routes: long, rules: [], sysctls: {}, nftTables: {}, portMaps: [] };
    const f = focus([], []);
    const odd = { ...f, devices: new Set(['rc1m1']) };
    expect(mergeFocused(base, odd, { ...base, routes: [] }).routes).toEqual(long.filter((_, i) => i % 2 === 0));
  });

  it('knows when removing an address reaches routes outside the focus: only when no other device keeps it', () => {
    const host = canonicalHostState({
      devices: devs({
        a: { name: 'a', publicKey: '', listenPort: 0, mtu: 1420, addresses: ['100.64.0.1/32'], up: true, peers: [] },
        b: { name: 'b', publicKey: '', listenPort: 0, mtu: 1420, addresses: ['100.64.0.1/32', '100.64.0.7/32'], up: true, peers: [] },
      }),
      routes: [],
      rules: [],
      sysctls: {},
      nftTables: {},
      portMaps: [],
    });
    expect(mayReachBeyond([{ op: 'link.del', dev: 'a' }], host)).toBe(false);
    expect(mayReachBeyond([{ op: 'addr.del', dev: 'b', cidr: '100.64.0.7/32' }], host)).toBe(true);
    expect(
      mayReachBeyond(
        [
          { op: 'link.del', dev: 'a' },
          { op: 'link.del', dev: 'b' },
        ],
        host,
      ),
    ).toBe(true);
    expect(mayReachBeyond([{ op: 'route.add', route: { dst: '100.64.0.9/32', dev: 'a', table: 254, src: null } }], host)).toBe(false);
  });
});

/** A backend that counts what it is asked to read. */
function counting(inner: MemoryKernelBackend) {
  const reads: { focused: boolean; devices: number }[] = [];
  const backend: KernelBackend = {
    kind: 'memory',
    read: async (scope, focus) => {
      const s = await inner.read(scope, focus);
      reads.push({ focused: focus !== undefined, devices: [...s.devices.keys()].length });
      return s;
    },
    apply: (op) => inner.apply(op),
    observe: (d) => inner.observe(d),
    counters: (t) => inner.counters(t),
    ipv6: () => inner.ipv6(),
  };
  return { backend, reads };
}

type Step =
  | { kind: 'join' }
  | { kind: 'leave'; i: number }
  | { kind: 'rotate'; i: number }
  | { kind: 'move'; i: number }
  | { kind: 'open'; exit: number }
  /** A private session entering here, or (`here`) entering at a peer and leaving here. */
  | { kind: 'private'; exit: number; here: boolean }
  | { kind: 'close'; i: number }
  | { kind: 'steer'; i: number; exit: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.constant<Step>({ kind: 'join' }),
  fc.nat(40).map((i): Step => ({ kind: 'leave', i })),
  fc.nat(40).map((i): Step => ({ kind: 'rotate', i })),
  fc.nat(40).map((i): Step => ({ kind: 'move', i })),
  fc.nat(40).map((exit): Step => ({ kind: 'open', exit })),
  fc.tuple(fc.nat(40), fc.boolean()).map(([exit, here]): Step => ({ kind: 'private', exit, here })),
  fc.nat(40).map((i): Step => ({ kind: 'close', i })),
  fc.tuple(fc.nat(40), fc.nat(40)).map(([i, exit]): Step => ({ kind: 'steer', i, exit })),
);

describe('rounds proportional to the change', () => {
  it('plan exactly what a whole-scope plan would, over random joins, leaves, rotations, moves and sessions (private ones too)', async () => {
    const seen = { portMaps: 0, privateDevice: 0 };
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 25 }), async (steps) => {
        const self = relay(1);
        let peers: RelayRecord[] = [relay(2), relay(3)];
        let sessions: ClientSession[] = [];
        let next = 4;
        let nextSession = 1;
        const focused = new MemoryKernelBackend({ recordOps: false });
        const whole = new MemoryKernelBackend({ recordOps: false });
        const reconcile = reconcileWith(focused, () => 0);
        let meshState = initialMeshState('relay-1');
        let clientsState = initialClientsState('relay-1');
        const round = async (): Promise<void> => {
          const view = seedTopology(1, [self, ...peers], sessions);
          meshState = meshOwner.view(meshState, { view });
          clientsState = clientsOwner.view(clientsState, { view });
          const owners: ReconcileInput['owners'] = [
            { owner: 'mesh', scope: meshOwner.scope(meshState, mesh), state: meshOwner.desire(meshState, mesh), cause: null },
            { owner: 'clients', scope: clientsOwner.scope(clientsState, clientOpts), state: clientsOwner.desire(clientsState, clientOpts), cause: null },
          ];
          const out = await reconcile({ owners, full: false });
          for (const [i, o] of owners.entries()) {
            const plan = planKernel(whole.readSync(o.scope), o.state);
            for (const op of plan) whole.applySync(op);
            const outcome = out.outcomes[i]!;
            expect(outcome.failures).toEqual([]);
            expect(outcome.planned).toEqual(plan);
            // What the owner is told it reached is the whole scope, as a full read gives it.
            expect(canonicalHostState(outcome.reached)).toEqual(focused.readSync(o.scope));
          }
          expect(focused.render()).toBe(whole.render());
          const text = focused.render();
          if (text.includes('port-map ')) seen.portMaps++;
          if (/device \S+cp /.test(text)) seen.privateDevice++;
        };
        await round();
        for (const s of steps) {
          const pick = (i: number) => peers[i % Math.max(1, peers.length)];
          if (s.kind === 'join') peers = [...peers, relay(next++)];
          else if (s.kind === 'leave' && peers.length > 0) peers = peers.filter((p) => p !== pick(s.i));
          else if (s.kind === 'rotate' && peers.length > 0) peers = peers.map((p) => (p === pick(s.i) ? { ...p, publicKey: key(1000 + next++) } : p));
          else if (s.kind === 'move' && peers.length > 0)
            peers = peers.map((p) => (p === pick(s.i) ? { ...p, endpoint: `198.51.100.${100 + (next++ % 100)}:51820` } : p));
          else if (s.kind === 'open' && peers.length > 0) sessions = [...sessions, session(nextSession++, self, pick(s.exit)!.id)];
          else if (s.kind === 'private' && peers.length > 0)
            sessions = [
              ...sessions,
              s.here
                ? session(nextSession++, pick(s.exit)!, self.id, { mode: 'private' })
                : session(nextSession++, self, pick(s.exit)!.id, { mode: 'private' }),
            ];
          else if (s.kind === 'close' && sessions.length > 0) sessions = sessions.filter((_, j) => j !== s.i % sessions.length);
          else if (s.kind === 'steer' && sessions.length > 0 && peers.length > 0)
            sessions = sessions.map((x, j) => (j === s.i % sessions.length ? { ...x, exitId: pick(s.exit)!.id } : x));
          await round();
        }
      }),
      { numRuns: 60 },
    );
    // The random steps did program private sessions, at their entry and at their exit.
    expect(seen.portMaps).toBeGreaterThan(0);
    expect(seen.privateDevice).toBeGreaterThan(0);
  });

  it('read nothing for a desired state already reached, and only the changed device, once, for a join', async () => {
    const host = new MemoryKernelBackend({ recordOps: false });
    const { backend, reads } = counting(host);
    const reconcile = reconcileWith(backend, () => 0);
    const self = relay(1);
    const records = Array.from({ length: 50 }, (_, i) => relay(i + 2));
    const scope: KernelScope = { devicePrefix: 'rc1m', rulePriorities: [0, -1], sysctls: [], nftTables: [] };
    const owners = (peers: RelayRecord[]) => [{ owner: 'mesh', scope, state: desiredMeshState(self, peers, mesh, {}), cause: null }];
    await reconcile({ owners: owners(records.slice(0, 49)), full: false });
    // The first round reads the whole scope (twice: before and after applying).
    expect(reads).toEqual([
      { focused: false, devices: 0 },
      { focused: false, devices: 49 },
    ]);
    reads.length = 0;
    const again = await reconcile({ owners: owners(records.slice(0, 49)), full: false });
    expect(reads).toEqual([]);
    expect(again.outcomes[0]!.planned).toEqual([]);
    expect([...again.outcomes[0]!.reached.devices.keys()]).toHaveLength(49);
    const join = await reconcile({ owners: owners(records), full: false });
    // A join plans from what the last round reached (no read before) and reads back the joiner's device.
    expect(reads).toEqual([{ focused: true, devices: 1 }]);
    expect(join.outcomes[0]!.focused).toBe(true);
    expect(join.outcomes[0]!.planned.map((o) => o.op)).toEqual([
      'link.add',
      'wg.device',
      'addr.add',
      'link.up',
      'route.add',
      'route.add',
      'route.add',
      'wg.peer.set',
    ]);
    expect([...join.outcomes[0]!.reached.devices.keys()]).toHaveLength(50);
  });

  it('leaves drift outside the focus to the whole-scope round, which mends it', async () => {
    const host = new MemoryKernelBackend({ recordOps: false });
    const reconcile = reconcileWith(host, () => 0);
    const self = relay(1);
    const peers = [relay(2), relay(3)];
    const scope: KernelScope = { devicePrefix: 'rc1m', rulePriorities: [0, -1], sysctls: [], nftTables: [] };
    const state = desiredMeshState(self, peers, mesh, {});
    await reconcile({ owners: [{ owner: 'mesh', scope, state, cause: null }], full: false });
    // Somebody deletes a link behind the relay's back.
    host.applySync({ op: 'link.del', dev: 'rc1m2' });
    const focusedRound = await reconcile({ owners: [{ owner: 'mesh', scope, state, cause: null }], full: false });
    expect(focusedRound.outcomes[0]!.planned).toEqual([]);
    const fullRound = await reconcile({ owners: [{ owner: 'mesh', scope, state, cause: null }], full: true });
    expect(fullRound.outcomes[0]!.focused).toBe(false);
    expect(fullRound.outcomes[0]!.planned.filter((o) => o.op === 'link.add')).toEqual([{ op: 'link.add', dev: 'rc1m2', mtu: 1420 }]);
    expect(planKernel(host.readSync(scope), state)).toEqual([]);
  });

  it('goes on with the whole scope in the same round when what it reads back is not what it planned from', async () => {
    const host = new MemoryKernelBackend({ recordOps: false });
    const reconcile = reconcileWith(host, () => 0);
    const self = relay(1);
    const scope: KernelScope = { devicePrefix: 'rc1m', rulePriorities: [0, -1], sysctls: [], nftTables: [] };
    const peers = [relay(2), relay(3)];
    await reconcile({ owners: [{ owner: 'mesh', scope, state: desiredMeshState(self, peers, mesh, {}), cause: null }], full: false });
    // Somebody changes a link's MTU behind the relay's back; then its peer moves (a WireGuard-only change).
    host.applySync({ op: 'link.mtu', dev: 'rc1m2', mtu: 1300 });
    const moved = desiredMeshState(self, [{ ...peers[0]!, endpoint: '198.51.100.77:51820' }, peers[1]!], mesh, {});
    const o = (await reconcile({ owners: [{ owner: 'mesh', scope, state: moved, cause: null }], full: false })).outcomes[0]!;
    expect(o.failures).toEqual([]);
    // The focused pass set the new endpoint, planned from what the last round reached; the device it read
    // back was not the desired one, so the whole-scope pass followed and put the MTU back.
    expect(o.focused).toBe(false);
    expect(o.planned.map((op) => op.op)).toEqual(['wg.peer.set', 'link.mtu']);
    expect(planKernel(host.readSync(scope), moved)).toEqual([]);
    expect(canonicalHostState(o.reached)).toEqual(host.readSync(scope));
    // And the next change is focused again.
    const back = desiredMeshState(self, peers, mesh, {});
    expect((await reconcile({ owners: [{ owner: 'mesh', scope, state: back, cause: null }], full: false })).outcomes[0]!.focused).toBe(true);
  });

  it('starts from the whole scope again after a failed round', async () => {
    let fail = true;
    const host = new MemoryKernelBackend({ recordOps: false, failOn: (op) => fail && op.op === 'route.add' && op.route.dev === 'rc1m3' });
    const { backend, reads } = counting(host);
    const reconcile = reconcileWith(backend, () => 0);
    const scope: KernelScope = { devicePrefix: 'rc1m', rulePriorities: [0, -1], sysctls: [], nftTables: [] };
    const state = desiredMeshState(relay(1), [relay(2), relay(3)], mesh, {});
    const first = await reconcile({ owners: [{ owner: 'mesh', scope, state, cause: null }], full: false });
    expect(first.outcomes[0]!.failures.length).toBeGreaterThan(0);
    fail = false;
    reads.length = 0;
    const retry = await reconcile({ owners: [{ owner: 'mesh', scope, state, cause: null }], full: false });
    expect(reads[0]).toEqual({ focused: false, devices: 2 });
    expect(retry.outcomes[0]!.failures).toEqual([]);
    expect(planKernel(host.readSync(scope), state)).toEqual([]);
  });
});
