import { describe, expect, it } from 'vitest';
import { prng, type Rng } from '../support/prng.ts';
import { applyPlan, dependsOn, describeOp } from '../../src/kernel/execute.ts';
import {
  KernelOpError,
  MAIN_TABLE,
  PORT_MAP,
  type DesiredHostState,
  type DesiredWgDevice,
  type HostState,
  type KernelOp,
  type KernelScope,
  type RouteState,
  type RuleState,
  type WgPeerState,
  emptyHostState,
} from '../../src/kernel/host-state.ts';
import { focusOf, restrict, routeKey } from '../../src/kernel/focus.ts';
import { MemoryKernelBackend } from '../../src/kernel/memory-backend.ts';
import { canonicalCidr, canonicalIp } from '../../src/kernel/ip.ts';
import { canonicalHostState, nftDigest, renderHostState, stripDesired } from '../../src/kernel/host-text.ts';
import { planKernel } from '../../src/kernel/plan.ts';
import { devs } from '../support/given.ts';

const SYSCTL_KEYS = ['net.ipv4.conf.all.rp_filter', 'net.ipv4.ip_forward'];
const NFT_NAMES = ['rt_a', 'rt_b'];
const SCOPE: KernelScope = { devicePrefix: 'rt', rulePriorities: [1000, 1999], sysctls: SYSCTL_KEYS, nftTables: NFT_NAMES };
const key = (i: number) => Buffer.alloc(32, i + 1).toString('base64');
const KEYS = Array.from({ length: 6 }, (_, i) => key(i));

// ---------------------------------------------------------------------------------------------------
// Random host states the kernel can hold (see the preconditions in plan.ts).

const DEVICE_NAMES = Array.from({ length: 8 }, (_, i) => `rt${i}`);
const V4_ADDRESSES = ['100.64.0.1/32', '100.64.0.2/32', '100.64.1.1/32'];
const V6_ADDRESSES = ['2001:db8::1/128', '2001:db8::2/128'];
const ALLOWED = ['0.0.0.0/0', '100.96.0.0/22', '100.96.4.0/22', '100.64.0.9/32', '2001:db8:1::/64'];
const DESTINATIONS = ['0.0.0.0/0', '100.64.0.9/32', '100.96.0.0/22', '100.96.4.0/22', '2001:db8:1::/64', '::/0'];
const ip = (cidr: string) => cidr.split('/')[0]!;
const NFT_BODIES = [
  '  chain forward_filter {\n    type filter hook forward priority filter; policy accept;\n  }',
  '  chain forward_filter {\n    type filter hook forward priority filter; policy drop;\n  }',
  '  chain postrouting_nat {\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr 100.96.0.0/11 masquerade\n  }',
  `  map ${PORT_MAP} {\n    type inet_service : ipv4_addr . inet_service;\n  }`,
  `  map ${PORT_MAP} {\n    type inet_service : ipv4_addr . inet_service;\n  }\n  chain pre {\n    type nat hook prerouting priority dstnat; policy accept;\n  }`,
];
const PORTS = [51700, 51701, 51702];
const PORT_TARGETS = ['100.64.0.2:51822', '100.64.0.3:51823'];
const nftTable = (name: string, body: string) => ({ name, digest: nftDigest(body), body });
/** A desired state with nothing but `parts`. */
const desire = (parts: Partial<DesiredHostState> = {}): DesiredHostState => ({
  devices: new Map(),
  routes: [],
  rules: [],
  sysctls: {},
  nftTables: {},
  portMaps: [],
  ...parts,
});

/** Peers of one device: each allowed-ip on at most one of them, as WireGuard keeps it. */
function randomPeers(r: Rng): WgPeerState[] {
  const keys = r.subset(KEYS, 0.3);
  const allowed = keys.map(() => [] as string[]);
  for (const cidr of ALLOWED) if (keys.length > 0 && r.chance(0.6)) allowed[r.int(keys.length)]!.push(cidr);
  return keys.map((publicKey, i) => ({
    publicKey,
    endpoint: r.pick([null, '198.18.0.2:51820', '198.18.0.3:51821']),
    allowedIps: allowed[i]!,
    keepaliveSeconds: r.pick([0, 1, 25]),
  }));
}

function randomDevice(r: Rng, name: string, index: number): DesiredWgDevice {
  const up = r.chance(0.85);
  return {
    name,
    publicKey: r.pick(KEYS),
    privateKeyFile: `/etc/relay/${name}.key`,
    // Distinct per name, so two devices never want one port.
    listenPort: 51820 + index + 100 * r.int(2),
    mtu: r.pick([1280, 1380, 1420]),
    addresses: [...r.subset(V4_ADDRESSES, 0.4), ...(up ? r.subset(V6_ADDRESSES, 0.3) : [])],
    up,
    peers: randomPeers(r),
  };
}

function randomRoutes(r: Rng, devices: DesiredWgDevice[]): RouteState[] {
  const up = devices.filter((d) => d.up);
  const routes: RouteState[] = [];
  for (const table of [MAIN_TABLE, 1001, 1002]) {
    for (const dst of DESTINATIONS) {
      if (up.length === 0 || !r.chance(0.2)) continue;
      const sameFamily = devices.flatMap((d) => d.addresses).filter((a) => a.includes(':') === dst.includes(':'));
      const src = sameFamily.length > 0 && r.chance(0.4) ? ip(r.pick(sameFamily)) : null;
      routes.push({ dst, dev: r.pick(up).name, table, src });
    }
  }
  return routes;
}

function randomRules(r: Rng, names: string[]): RuleState[] {
  const rules = new Map<string, RuleState>();
  for (let i = r.int(4); i > 0; i--) {
    const rule = {
      priority: r.pick([1000, 1001, 1002]),
      from: r.pick([null, '100.96.0.0/22', '2001:db8:1::/64']),
      iif: r.pick([null, 'rtx', ...names]),
      table: r.pick([1001, 1002, null]),
    };
    rules.set(JSON.stringify(rule), rule);
  }
  return [...rules.values()];
}

function randomDesired(r: Rng): DesiredHostState {
  const nftTables = Object.fromEntries(r.subset(NFT_NAMES).map((name) => [name, nftTable(name, r.pick(NFT_BODIES))]));
  const devices = DEVICE_NAMES.map((name, i) => [name, i] as const)
    .filter(() => r.chance(0.45))
    .map(([name, i]) => randomDevice(r, name, i));
  return {
    devices: new Map(devices.map((d) => [d.name, d])),
    routes: randomRoutes(r, devices),
    rules: randomRules(
      r,
      devices.map((d) => d.name),
    ),
    sysctls: Object.fromEntries(r.subset(SYSCTL_KEYS).map((k) => [k, r.pick(['0', '1', '2'])])),
    nftTables,
    // Port maps only in tables whose body declares the map.
    portMaps: Object.values(nftTables)
      .filter((t) => t.body.includes(`map ${PORT_MAP} {`))
      .flatMap((t) => r.subset(PORTS, 0.5).map((port) => ({ table: t.name, port, to: r.pick(PORT_TARGETS) }))),
  };
}

/** What the model holds besides our scope: it must never change. */
const FOREIGN: HostState = {
  devices: devs({ up0: { name: 'up0', publicKey: '', listenPort: 0, mtu: 1500, addresses: ['198.18.0.1/24'], up: true, peers: [] } }),
  routes: [{ dst: '198.18.5.0/24', dev: 'up0', table: MAIN_TABLE, src: null }],
  rules: [
    { priority: 32000, from: null, iif: null, table: MAIN_TABLE },
    { priority: 32001, from: '198.18.0.0/15', iif: 'up0', table: null },
  ],
  sysctls: { 'net.ipv6.conf.all.forwarding': '1' },
  nftTables: { filter: { name: 'filter', digest: 'f00df00df00df00d' } },
  portMaps: [{ table: 'filter', port: 53, to: '198.18.0.9:53' }],
};
const FOREIGN_SCOPE: KernelScope = { devicePrefix: 'up', rulePriorities: [2000, 40000], sysctls: ['net.ipv6.conf.all.forwarding'], nftTables: ['filter'] };

function withForeign(s: HostState): HostState {
  return {
    devices: new Map([...s.devices, ...FOREIGN.devices]),
    routes: [...s.routes, ...FOREIGN.routes],
    rules: [...s.rules, ...FOREIGN.rules],
    sysctls: { ...s.sysctls, ...FOREIGN.sysctls },
    nftTables: { ...s.nftTables, ...FOREIGN.nftTables },
    portMaps: [...s.portMaps, ...FOREIGN.portMaps],
  };
}

/** The part of a read the desired state speaks about: sysctls it does not name are not its business. */
function desiredKeysOnly(reached: HostState, desired: DesiredHostState): HostState {
  return { ...reached, sysctls: Object.fromEntries(Object.entries(reached.sysctls).filter(([k]) => k in desired.sysctls)) };
}

/** A peer desired without an endpoint accepts the one the device learned (roaming). */
function acceptLearnedEndpoints(reached: HostState, desired: DesiredHostState): HostState {
  const c = canonicalHostState(reached);
  for (const d of [...c.devices.values()]) {
    for (const p of d.peers) {
      if (desired.devices.get(d.name)?.peers.find((q) => q.publicKey === p.publicKey)?.endpoint === null) p.endpoint = null;
    }
  }
  return c;
}

// ---------------------------------------------------------------------------------------------------

describe('planKernel on the in-memory host', () => {
  it('converges from random states to 200 random desired states, and then plans nothing', async () => {
    const kinds = new Set<string>();
    let states = 0;
    for (let seq = 0; seq < 20; seq++) {
      const r = prng(0xc0ffee + seq);
      const host = new MemoryKernelBackend({ initial: withForeign(stripDesired(randomDesired(r))) });
      const picks = prng(0xf0c5 + seq); // the focus of a read (its own, so the states stay those of `r`)
      for (let step = 0; step < 10; step++, states++) {
        const desired = randomDesired(r);
        const before = await host.read(SCOPE);
        const plan = planKernel(before, desired);
        const result = await applyPlan(host, plan, SCOPE);
        const context = `sequence ${seq} step ${step}\n${result.failures.map((f) => describeOp(f.op) + ': ' + f.error.message).join('\n')}\n${host.render()}`;
        expect(result.failures, context).toEqual([]);
        expect(desiredKeysOnly(acceptLearnedEndpoints(result.reached, desired), desired), context).toEqual(canonicalHostState(stripDesired(desired)));
        // A sysctl the desired state does not name keeps its value.
        for (const k of SYSCTL_KEYS.filter((k) => !(k in desired.sysctls))) expect(result.reached.sysctls[k], context).toBe(before.sysctls[k]);
        expect(planKernel(result.reached, desired), context).toEqual([]);
        expect(await host.read(FOREIGN_SCOPE)).toEqual(canonicalHostState(FOREIGN));
        // A focused read holds what the whole read holds of the focus.
        const whole = await host.read(SCOPE);
        const focus = {
          ...focusOf(desired, desired),
          devices: new Set(picks.subset([...whole.devices.keys(), 'rt9'], 0.3)),
          routes: new Set(picks.subset([...whole.routes, ...before.routes], 0.3).map(routeKey)),
        };
        expect(await host.read(SCOPE, focus), context).toEqual(canonicalHostState(restrict(whole, focus)));
        for (const op of result.applied) kinds.add(op.op);
      }
    }
    expect(states).toBe(200);
    // The random states exercised every kind of operation, the kernel's own route flushes included.
    expect([...kinds].sort()).toEqual(
      [
        'addr.add',
        'addr.del',
        'link.add',
        'link.del',
        'link.down',
        'link.mtu',
        'link.up',
        'nft.table.del',
        'nft.table.set',
        'portmap.add',
        'portmap.del',
        'portmap.replace',
        'route.add',
        'route.del',
        'route.replace',
        'rule.add',
        'rule.del',
        'sysctl.set',
        'wg.device',
        'wg.peer.del',
        'wg.peer.set',
      ].sort(),
    );
  });

  it('adds and changes before it deletes, guards (rules) before routes and peers; a route on a new device comes after its link.add', () => {
    const peer = (k: number): WgPeerState => ({ publicKey: key(k), endpoint: '198.18.0.2:51820', allowedIps: ['0.0.0.0/0'], keepaliveSeconds: 25 });
    const rt1 = { name: 'rt1', publicKey: key(0), listenPort: 51821, mtu: 1420, up: true };
    const actual: HostState = {
      devices: devs({ rt1: { ...rt1, addresses: ['100.64.0.1/32'], peers: [peer(1)] } }),
      routes: [{ dst: '100.96.0.0/22', dev: 'rt1', table: MAIN_TABLE, src: null }],
      rules: [{ priority: 1000, from: '100.96.0.0/22', iif: null, table: 1001 }],
      sysctls: {},
      nftTables: {},
      portMaps: [],
    };
    const desired: DesiredHostState = {
      devices: devs({
        rt1: { ...rt1, privateKeyFile: '/k/rt1', addresses: ['100.64.0.2/32'], peers: [peer(2)] },
        rt2: { ...rt1, name: 'rt2', listenPort: 51822, privateKeyFile: '/k/rt2', addresses: ['100.64.0.2/32'], peers: [peer(3)] },
      }),
      routes: [{ dst: '100.96.4.0/22', dev: 'rt2', table: MAIN_TABLE, src: '100.64.0.2' }],
      rules: [{ priority: 1000, from: '100.96.4.0/22', iif: null, table: 1001 }],
      sysctls: {},
      nftTables: {},
      portMaps: [],
    };
    expect(planKernel(actual, desired).map(describeOp)).toEqual([
      'link.add rt2 mtu 1420',
      `wg.device rt2 listen-port 51822 public-key ${key(0).slice(0, 8)}…`,
      'addr.add 100.64.0.2/32 dev rt1',
      'addr.add 100.64.0.2/32 dev rt2',
      'link.up rt2',
      'rule.add priority 1000 from 100.96.4.0/22 lookup 1001',
      'route.add 100.96.4.0/22 dev rt2 table 254 src 100.64.0.2',
      `wg.peer.set rt1 peer ${key(2).slice(0, 8)}… endpoint 198.18.0.2:51820 allowed-ips 0.0.0.0/0 keepalive 25`,
      `wg.peer.set rt2 peer ${key(3).slice(0, 8)}… endpoint 198.18.0.2:51820 allowed-ips 0.0.0.0/0 keepalive 25`,
      `wg.peer.del rt1 peer ${key(1).slice(0, 8)}…`,
      'route.del 100.96.0.0/22 dev rt1 table 254',
      'rule.del priority 1000 from 100.96.0.0/22 lookup 1001',
      'addr.del 100.64.0.1/32 dev rt1',
    ]);
  });

  it('deletes a device with one link.del: its addresses, peers and routes go with it', async () => {
    const actual: HostState = {
      devices: devs({
        rt1: {
          name: 'rt1',
          publicKey: key(0),
          listenPort: 51821,
          mtu: 1420,
          addresses: ['100.64.0.1/32', '2001:db8::1/128'],
          up: true,
          peers: [{ publicKey: key(1), endpoint: null, allowedIps: ['0.0.0.0/0'], keepaliveSeconds: 0 }],
        },
      }),
      routes: [
        { dst: '100.96.0.0/22', dev: 'rt1', table: MAIN_TABLE, src: '100.64.0.1' },
        { dst: '0.0.0.0/0', dev: 'rt1', table: 1001, src: null },
      ],
      rules: [],
      sysctls: {},
      nftTables: {},
      portMaps: [],
    };
    const plan = planKernel(actual, desire());
    expect(plan).toEqual([{ op: 'link.del', dev: 'rt1' }]);
    const host = new MemoryKernelBackend({ initial: actual });
    expect((await applyPlan(host, plan, SCOPE)).reached).toEqual({
      ...emptyHostState(),
      sysctls: { 'net.ipv4.conf.all.rp_filter': '0', 'net.ipv4.ip_forward': '0' },
    });
  });

  it('changes a peer with one wg.peer.set, and leaves an endpoint the device learned alone', () => {
    const was: WgPeerState = { publicKey: key(1), endpoint: '198.18.0.2:51820', allowedIps: ['100.96.0.0/22'], keepaliveSeconds: 25 };
    const device = (peer: WgPeerState) => ({ name: 'rt1', publicKey: key(0), listenPort: 51821, mtu: 1420, addresses: [], up: true, peers: [peer] });
    const actual: HostState = { devices: devs({ rt1: device(was) }), routes: [], rules: [], sysctls: {}, nftTables: {}, portMaps: [] };
    const desire = (peer: WgPeerState): DesiredHostState => ({
      devices: devs({ rt1: { ...device(peer), privateKeyFile: '/k' } }),
      routes: [],
      rules: [],
      sysctls: {},
      nftTables: {},
      portMaps: [],
    });

    const changed = { ...was, endpoint: '198.18.0.3:51820', allowedIps: ['0.0.0.0/0', '100.96.0.0/22'], keepaliveSeconds: 0 };
    expect(planKernel(actual, desire(changed))).toEqual([{ op: 'wg.peer.set', dev: 'rt1', peer: changed }]);
    expect(planKernel(actual, desire({ ...was, endpoint: null }))).toEqual([]);
    expect(planKernel(actual, desire({ ...was, allowedIps: [] }))).toEqual([{ op: 'wg.peer.set', dev: 'rt1', peer: { ...was, allowedIps: [] } }]);
  });

  it('sets again every peer with a keepalive of a device whose key changed, so each starts its handshake at once', () => {
    const linked: WgPeerState = { publicKey: key(1), endpoint: '198.18.0.2:51820', allowedIps: ['0.0.0.0/0'], keepaliveSeconds: 25 };
    const quiet: WgPeerState = { publicKey: key(2), endpoint: null, allowedIps: ['100.96.0.2/32'], keepaliveSeconds: 0 };
    const device = (publicKey: string) => ({ name: 'rt1', publicKey, listenPort: 51821, mtu: 1420, addresses: [], up: true, peers: [linked, quiet] });
    const actual: HostState = { devices: devs({ rt1: device(key(0)) }), routes: [], rules: [], sysctls: {}, nftTables: {}, portMaps: [] };
    const desired = (publicKey: string): DesiredHostState => ({ ...desire(), devices: devs({ rt1: { ...device(publicKey), privateKeyFile: '/k' } }) });

    expect(planKernel(actual, desired(key(3)))).toEqual([
      { op: 'wg.device', dev: 'rt1', privateKeyFile: '/k', publicKey: key(3), listenPort: 51821 },
      { op: 'wg.peer.set', dev: 'rt1', peer: linked },
    ]);
    // The same key: nothing to do.
    expect(planKernel(actual, desired(key(0)))).toEqual([]);
  });

  it('moves a route to another device with one atomic route.replace', () => {
    const dev = (name: string) => ({ name, publicKey: key(0), listenPort: 0, mtu: 1420, addresses: [], up: true, peers: [] });
    const exitRoute = (d: string): RouteState => ({ dst: '0.0.0.0/0', dev: d, table: 1001, src: null });
    const actual: HostState = {
      devices: devs({ rt1: dev('rt1'), rt2: dev('rt2') }),
      routes: [exitRoute('rt1')],
      rules: [],
      sysctls: {},
      nftTables: {},
      portMaps: [],
    };
    const desired: DesiredHostState = {
      devices: devs({ rt1: { ...dev('rt1'), privateKeyFile: '/k' }, rt2: { ...dev('rt2'), privateKeyFile: '/k' } }),
      routes: [exitRoute('rt2')],
      rules: [],
      sysctls: {},
      nftTables: {},
      portMaps: [],
    };
    expect(planKernel(actual, desired)).toEqual([{ op: 'route.replace', route: exitRoute('rt2') }]);
  });

  it('adds back the routes the kernel drops with a device’s last IPv4 address', async () => {
    const rt1 = { name: 'rt1', publicKey: key(0), listenPort: 51821, mtu: 1420, up: true, peers: [] };
    const route: RouteState = { dst: '100.96.0.0/22', dev: 'rt1', table: MAIN_TABLE, src: null };
    const host = new MemoryKernelBackend({
      initial: { devices: devs({ rt1: { ...rt1, addresses: ['100.64.0.1/32'] } }), routes: [route], rules: [], sysctls: {}, nftTables: {}, portMaps: [] },
    });
    const desired: DesiredHostState = {
      devices: devs({ rt1: { ...rt1, privateKeyFile: '/k', addresses: [] } }),
      routes: [route],
      rules: [],
      sysctls: {},
      nftTables: {},
      portMaps: [],
    };
    const plan = planKernel(await host.read(SCOPE), desired);
    expect(plan).toEqual([
      { op: 'addr.del', dev: 'rt1', cidr: '100.64.0.1/32' },
      { op: 'route.add', route },
    ]);
    expect((await applyPlan(host, plan, SCOPE)).reached.routes).toEqual([route]);
  });

  it('is idempotent: the desired state plus key files against itself plans nothing', () => {
    const r = prng(7);
    for (let i = 0; i < 50; i++) {
      const desired = randomDesired(r);
      expect(planKernel(stripDesired(desired), desired)).toEqual([]);
    }
  });

  it('sets a sysctl only where its value differs, and never resets one it is no longer told about', async () => {
    const actual: HostState = { ...emptyHostState(), sysctls: { 'net.ipv4.conf.all.rp_filter': '1', 'net.ipv4.ip_forward': '0' } };
    expect(planKernel(actual, desire({ sysctls: { 'net.ipv4.conf.all.rp_filter': '1' } }))).toEqual([]);
    expect(planKernel(actual, desire({ sysctls: { 'net.ipv4.ip_forward': '1', 'net.ipv4.conf.all.rp_filter': '2' } })).map(describeOp)).toEqual([
      'sysctl.set net.ipv4.conf.all.rp_filter=2',
      'sysctl.set net.ipv4.ip_forward=1',
    ]);
    expect(planKernel(actual, desire())).toEqual([]);
    // Absent from the read (not owned before): set.
    expect(planKernel(emptyHostState(), desire({ sysctls: { 'net.ipv4.ip_forward': '0' } }))).toEqual([
      { op: 'sysctl.set', key: 'net.ipv4.ip_forward', value: '0' },
    ]);

    // The model: a key never set reads as its initial value, or '0'; reading sees only the scope's keys.
    const host = new MemoryKernelBackend({ initial: { ...emptyHostState(), sysctls: { 'net.ipv4.conf.all.rp_filter': '1', 'net.core.somaxconn': '4096' } } });
    expect((await host.read(SCOPE)).sysctls).toEqual({ 'net.ipv4.conf.all.rp_filter': '1', 'net.ipv4.ip_forward': '0' });
    const result = await applyPlan(host, planKernel(await host.read(SCOPE), desire({ sysctls: { 'net.ipv4.ip_forward': '1' } })), SCOPE);
    expect(result.applied.map(describeOp)).toEqual(['sysctl.set net.ipv4.ip_forward=1']);
    expect(result.reached.sysctls).toEqual({ 'net.ipv4.conf.all.rp_filter': '1', 'net.ipv4.ip_forward': '1' });
    expect(host.render()).toContain('sysctl net.core.somaxconn = 4096\n');
  });

  it('replaces an nftables table whose digest changed, and deletes an undesired one after the rules steering into it', async () => {
    const [body1, body2, body3] = NFT_BODIES as [string, string, string];
    const rt1 = { name: 'rt1', publicKey: key(0), listenPort: 51821, mtu: 1420, addresses: ['100.96.0.1/22'], up: true, peers: [] };
    const rules: RuleState[] = [
      { priority: 1000, from: '100.96.0.2/32', iif: 'rt1', table: 1001 },
      { priority: 1999, from: '100.96.0.0/22', iif: 'rt1', table: null },
    ];
    const initial: HostState = {
      devices: devs({ rt1 }),
      routes: [],
      rules,
      sysctls: {},
      nftTables: { rt_a: { name: 'rt_a', digest: nftDigest(body1) }, rt_b: { name: 'rt_b', digest: nftDigest(body3) } },
      portMaps: [],
    };
    const host = new MemoryKernelBackend({ initial });
    const actual = await host.read(SCOPE);
    expect(
      planKernel(
        actual,
        desire({
          devices: devs({ rt1: { ...rt1, privateKeyFile: '/k' } }),
          rules,
          nftTables: { rt_a: nftTable('rt_a', body1), rt_b: nftTable('rt_b', body3) },
        }),
      ),
    ).toEqual([]);

    const desired = desire({ nftTables: { rt_a: nftTable('rt_a', body2) } });
    const plan = planKernel(actual, desired);
    expect(plan.map(describeOp)).toEqual([
      `nft.table.set inet rt_a digest ${nftDigest(body2)}`,
      'link.del rt1',
      'rule.del priority 1000 from 100.96.0.2/32 iif rt1 lookup 1001',
      'rule.del priority 1999 from 100.96.0.0/22 iif rt1 unreachable',
      'nft.table.del inet rt_b',
    ]);
    expect(plan[0]).toEqual({ op: 'nft.table.set', name: 'rt_a', digest: nftDigest(body2), body: body2 });
    expect(plan.map(describeOp).join('\n')).not.toContain('policy');
    const result = await applyPlan(host, plan, SCOPE);
    expect(result.failures).toEqual([]);
    expect(result.reached.nftTables).toEqual({ rt_a: { name: 'rt_a', digest: nftDigest(body2) } });
    expect(planKernel(result.reached, desired)).toEqual([]);
    expect(host.render()).toContain(`nft table inet rt_a digest ${nftDigest(body2)}\n`);

    // A table whose digest was not read back (no comment on the host) is replaced.
    expect(planKernel({ ...emptyHostState(), nftTables: { rt_a: { name: 'rt_a', digest: '' } } }, desired)).toEqual([plan[0]]);
  });

  it('adds and deletes unreachable rules, told apart from lookups with the same selectors', async () => {
    const lookup: RuleState = { priority: 1999, from: '100.96.0.0/22', iif: 'rtc', table: 1001 };
    const unreachable: RuleState = { ...lookup, table: null };
    const host = new MemoryKernelBackend({ initial: { ...emptyHostState(), rules: [lookup] } });
    const desired = desire({ rules: [unreachable] });
    const plan = planKernel(await host.read(SCOPE), desired);
    expect(plan.map(describeOp)).toEqual([
      'rule.add priority 1999 from 100.96.0.0/22 iif rtc unreachable',
      'rule.del priority 1999 from 100.96.0.0/22 iif rtc lookup 1001',
    ]);
    const result = await applyPlan(host, plan, SCOPE);
    expect(result.failures).toEqual([]);
    expect(result.reached.rules).toEqual([unreachable]);
    await expect(host.apply({ op: 'rule.add', rule: unreachable })).rejects.toThrow(KernelOpError);

    const back = planKernel(result.reached, desire());
    expect(back).toEqual([{ op: 'rule.del', rule: unreachable }]);
    expect((await applyPlan(host, back, SCOPE)).reached.rules).toEqual([]);
    // Both at one priority: the lookup sorts first.
    expect(canonicalHostState({ ...emptyHostState(), rules: [unreachable, lookup] }).rules).toEqual([lookup, unreachable]);
  });

  it('takes a peer, route or address list that is already canonical as its own canonical form, and copies one that is not', () => {
    const peer = { publicKey: 'k1', endpoint: '198.51.100.2:51822', allowedIps: ['0.0.0.0/0', '::/0'], keepaliveSeconds: 25 };
    const route = { dst: '100.64.0.2/32', dev: 'rc1m2', table: 254, src: '100.64.0.1' };
    const device = { name: 'rc1m2', publicKey: 'k0', listenPort: 51822, mtu: 1420, addresses: ['100.64.0.1/32'], up: true, peers: [peer] };
    const c = canonicalHostState({ ...emptyHostState(), devices: new Map([[device.name, device]]), routes: [route] });
    expect(c.routes[0]).toBe(route);
    expect(c.devices.get('rc1m2')!.peers[0]).toBe(peer);
    expect(c.devices.get('rc1m2')!.addresses).toBe(device.addresses);
    // Not canonical: out of order, not in canonical text, or with keys of its own (or in another order).
    const unsorted = { ...peer, allowedIps: ['::/0', '0.0.0.0/0'] };
    const loose = { dst: '100.96.0.1/22', dev: 'rc1m2', table: 254, src: null };
    const extra = { ...route, dst: '100.64.0.3/32', note: 'x' } as typeof route;
    const reordered = { dev: 'rc1m2', dst: '100.64.0.4/32', table: 254, src: null };
    const d = canonicalHostState({
      ...emptyHostState(),
      devices: new Map([[device.name, { ...device, peers: [unsorted] }]]),
      routes: [loose, extra, reordered],
    });
    const p = d.devices.get('rc1m2')!.peers[0]!;
    expect(p).not.toBe(unsorted);
    expect(p.allowedIps).toEqual(['0.0.0.0/0', '::/0']);
    const byDst = new Map(d.routes.map((r) => [r.dst, r]));
    expect(byDst.get('100.96.0.0/22')).toEqual({ dst: '100.96.0.0/22', dev: 'rc1m2', table: 254, src: null });
    expect(byDst.get('100.64.0.3/32')).not.toBe(extra);
    expect(Object.keys(byDst.get('100.64.0.3/32')!)).toEqual(['dst', 'dev', 'table', 'src']);
    expect(byDst.get('100.64.0.4/32')).not.toBe(reordered);
    expect(Object.keys(byDst.get('100.64.0.4/32')!)).toEqual(['dst', 'dev', 'table', 'src']);
  });
});

describe('MemoryKernelBackend', () => {
  const device = {
    name: 'rt1',
    publicKey: key(0),
    listenPort: 51821,
    mtu: 1420,
    addresses: ['100.64.0.1/32'],
    up: true,
    peers: [{ publicKey: key(1), endpoint: null, allowedIps: ['0.0.0.0/0'], keepaliveSeconds: 0 }],
  };
  const route: RouteState = { dst: '100.96.0.0/22', dev: 'rt1', table: MAIN_TABLE, src: null };
  const rule: RuleState = { priority: 1000, from: null, iif: null, table: 1001 };
  const failClosed: RuleState = { priority: 1999, from: '100.96.0.0/22', iif: 'rt1', table: null };
  const body = NFT_BODIES[0]!;
  const start = (): HostState => ({
    devices: devs({ rt1: structuredClone(device) }),
    routes: [route],
    rules: [rule, failClosed],
    sysctls: { 'net.ipv4.ip_forward': '1' },
    nftTables: { rt_a: { name: 'rt_a', digest: nftDigest(body) } },
    portMaps: [],
  });

  it.each<[string, KernelOp]>([
    ['link.add of an existing device', { op: 'link.add', dev: 'rt1', mtu: 1420 }],
    ['link.add of a name longer than 15 characters', { op: 'link.add', dev: 'rt1234567890abcd', mtu: 1420 }],
    ['an op on a missing device', { op: 'link.up', dev: 'rt9' }],
    ['addr.add of an address already there', { op: 'addr.add', dev: 'rt1', cidr: '100.64.0.1/32' }],
    ['addr.del of an absent address', { op: 'addr.del', dev: 'rt1', cidr: '100.64.0.2/32' }],
    ['wg.peer.del of an absent peer', { op: 'wg.peer.del', dev: 'rt1', publicKey: key(5) }],
    ['route.add of a route already there', { op: 'route.add', route }],
    ['route.add of another route to the same (table, dst)', { op: 'route.add', route: { ...route, src: '100.64.0.1' } }],
    ['route.add on a missing device', { op: 'route.add', route: { ...route, dst: '100.96.4.0/22', dev: 'rt9' } }],
    ['route.add with a source the host does not have', { op: 'route.add', route: { ...route, dst: '100.96.4.0/22', src: '100.64.0.7' } }],
    ['route.del of an absent route', { op: 'route.del', route: { ...route, table: 1001 } }],
    ['rule.add of a rule already there', { op: 'rule.add', rule }],
    ['rule.del of an absent rule', { op: 'rule.del', rule: { ...rule, table: 1002 } }],
    ['rule.add of an unreachable rule already there', { op: 'rule.add', rule: failClosed }],
    ['rule.del of an absent unreachable rule', { op: 'rule.del', rule: { ...rule, table: null } }],
    ['nft.table.set with a digest that is not its body’s', { op: 'nft.table.set', name: 'rt_b', digest: nftDigest(body), body: NFT_BODIES[1]! }],
    ['nft.table.set that changes the body but keeps the old digest', { op: 'nft.table.set', name: 'rt_a', digest: nftDigest(body), body: `${body}\n` }],
    ['nft.table.del of an absent table', { op: 'nft.table.del', name: 'rt_b' }],
    ['an unknown op', { op: 'link.frobnicate', dev: 'rt1' } as unknown as KernelOp],
  ])('rejects %s with a KernelOpError and changes nothing', async (_, op) => {
    const host = new MemoryKernelBackend({ initial: start() });
    const before = host.render();
    const error = await host.apply(op).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(KernelOpError);
    expect((error as KernelOpError).op).toBe(op);
    expect(host.render()).toBe(before);
    expect(host.ops).toEqual([]);
    expect(host.mutations).toBe(0);
  });

  it('does what the kernel does by itself: link down drops routes, an allowed-ip has one peer, a route needs its device up', async () => {
    const host = new MemoryKernelBackend({ initial: start() });
    await host.apply({ op: 'wg.peer.set', dev: 'rt1', peer: { publicKey: key(2), endpoint: null, allowedIps: ['0.0.0.0/0'], keepaliveSeconds: 0 } });
    await host.apply({ op: 'link.down', dev: 'rt1' });
    const s = await host.read(SCOPE);
    expect(s.devices.get('rt1')!.peers.map((p) => [p.publicKey, p.allowedIps])).toEqual([
      [key(1), []],
      [key(2), ['0.0.0.0/0']],
    ]);
    expect(s.routes).toEqual([]);
    await expect(host.apply({ op: 'route.add', route })).rejects.toThrow(/not up/);
    expect(host.mutations).toBe(2);
  });

  it('takes an address as a route source while any device holds it, and not once the last one lost it', async () => {
    const host = new MemoryKernelBackend({ initial: start() });
    const via = (dst: string): KernelOp => ({ op: 'route.add', route: { dst, dev: 'rt1', table: MAIN_TABLE, src: '100.64.0.1' } });
    await host.apply(via('100.96.8.0/22'));
    // A second device with the same address, then the first one gone: still local.
    await host.apply({ op: 'link.add', dev: 'rt2', mtu: 1420 });
    await host.apply({ op: 'addr.add', dev: 'rt2', cidr: '100.64.0.1/32' });
    await host.apply({ op: 'addr.del', dev: 'rt1', cidr: '100.64.0.1/32' });
    await host.apply({ op: 'addr.add', dev: 'rt1', cidr: '100.64.0.9/32' });
    await host.apply(via('100.96.12.0/22'));
    // The last device holding it deleted: no longer a source.
    await host.apply({ op: 'link.del', dev: 'rt2' });
    await expect(host.apply(via('100.96.16.0/22'))).rejects.toThrow(/invalid source address 100.64.0.1/);
    await host.apply({ op: 'addr.add', dev: 'rt1', cidr: '100.64.0.1/32' });
    await host.apply(via('100.96.16.0/22'));
  });

  it('keeps an IPv6 route whose source left the host, without the source, and reads and deletes it as such', async () => {
    const host = new MemoryKernelBackend({ initial: start() });
    const v6 = { dst: 'fd64::/96', dev: 'rt1', table: MAIN_TABLE, src: 'fd64::1' };
    await host.apply({ op: 'addr.add', dev: 'rt1', cidr: 'fd64::1/128' });
    await host.apply({ op: 'route.add', route: v6 });
    await host.apply({ op: 'addr.del', dev: 'rt1', cidr: 'fd64::1/128' });
    const none = new Set<string>();
    const focus = { devices: new Set(['rt1']), wireguard: none, routes: none, rules: none, sysctls: none, nftTables: none, portMaps: none };
    const sourceless = { ...v6, src: null };
    expect((await host.read(SCOPE, focus)).routes).toEqual([route, sourceless].sort((a, b) => a.dst.localeCompare(b.dst)));
    await expect(host.apply({ op: 'route.del', route: v6 })).rejects.toThrow(/no route/);
    await host.apply({ op: 'route.del', route: sourceless });
    expect((await host.read(SCOPE, { ...focus, devices: none, routes: new Set([routeKey(v6)]) })).routes).toEqual([]);
  });

  it('reads only its scope, and reports observations of configured peers', async () => {
    const host = new MemoryKernelBackend({ initial: withForeign(start()) });
    expect([...(await host.read(SCOPE)).devices.keys()]).toEqual(['rt1']);
    expect((await host.read({ devicePrefix: 'rt', rulePriorities: [1001, 1998], sysctls: [], nftTables: [] })).rules).toEqual([]);
    const own = await host.read({ devicePrefix: 'rt', rulePriorities: [1000, 1999], sysctls: ['net.ipv4.ip_forward'], nftTables: ['rt_a', 'rt_b'] });
    expect([own.rules, own.sysctls, own.nftTables]).toEqual([
      [rule, failClosed],
      { 'net.ipv4.ip_forward': '1' },
      { rt_a: { name: 'rt_a', digest: nftDigest(body) } },
    ]);
    const none = await host.read({ devicePrefix: 'rt', rulePriorities: [1000, 1999], sysctls: [], nftTables: [] });
    expect([none.sysctls, none.nftTables]).toEqual([{}, {}]);
    expect(await host.observe(['rt1', 'up0', 'rt9'])).toEqual([
      { dev: 'rt1', publicKey: key(1), endpoint: null, latestHandshakeMs: null, rxBytes: 0, txBytes: 0 },
    ]);
    const seen = { dev: 'rt1', publicKey: key(1), endpoint: '198.18.0.2:51820', latestHandshakeMs: 5_000, rxBytes: 92, txBytes: 148 };
    host.setObservation(seen);
    host.setObservation({ ...seen, publicKey: key(4) }); // not configured: never reported
    expect(await host.observe(['rt1'])).toEqual([seen]);
  });
});

describe('applyPlan', () => {
  it('a failed op fails alone with what depends on it; every other op runs, and the next round finishes the job', async () => {
    for (let seed = 0; seed < 40; seed++) {
      const desired = randomDesiredWithOps(12, seed);
      const plan = planKernel(emptyHostState(), desired);
      const failing = plan[seed % plan.length]!;
      const host = new MemoryKernelBackend({ failOn: (op) => op === failing });
      const result = await applyPlan(host, plan, SCOPE);
      const context = `seed ${seed}: ${describeOp(failing)}`;

      expect(
        result.failures.map((f) => f.op),
        context,
      ).toEqual([failing]);
      expect(result.failures[0]!.error, context).toBeInstanceOf(KernelOpError);
      // Every op ran, failed or was skipped, in plan order; skipped ones depend on the failure.
      expect([...result.applied, failing, ...result.skipped].length, context).toBe(plan.length);
      expect(result.applied, context).toEqual(plan.filter((op) => op !== failing && !result.skipped.includes(op)));
      for (const op of result.skipped) expect(plan.indexOf(op), context).toBeGreaterThan(plan.indexOf(failing));
      const replay = new MemoryKernelBackend();
      for (const op of result.applied) await replay.apply(op);
      expect(result.reached, context).toEqual(await replay.read(SCOPE));

      // The next round starts from what was reached and finishes the job.
      const healed = new MemoryKernelBackend({ initial: result.reached });
      const rest = await applyPlan(healed, planKernel(result.reached, desired), SCOPE);
      expect(rest.failures, context).toEqual([]);
      expect(desiredKeysOnly(acceptLearnedEndpoints(rest.reached, desired), desired), context).toEqual(canonicalHostState(stripDesired(desired)));
    }
  });

  it('what depends on what: a device that could not be built holds back what is on it; a failed guard holds back peers and sysctls; nothing else', () => {
    const peer: KernelOp = {
      op: 'wg.peer.set',
      dev: 'rt1',
      peer: { publicKey: key(1), endpoint: 'nowhere.invalid:51820', allowedIps: ['0.0.0.0/0'], keepaliveSeconds: 25 },
    };
    const otherPeer: KernelOp = {
      op: 'wg.peer.set',
      dev: 'rt2',
      peer: { publicKey: key(2), endpoint: null, allowedIps: ['100.96.0.2/32'], keepaliveSeconds: 0 },
    };
    const route: KernelOp = { op: 'route.add', route: { dst: '100.96.4.0/22', dev: 'rt1', table: MAIN_TABLE, src: null } };
    const otherRoute: KernelOp = { op: 'route.add', route: { dst: '100.96.8.0/22', dev: 'rt2', table: MAIN_TABLE, src: null } };
    const sysctl: KernelOp = { op: 'sysctl.set', key: 'net.ipv4.ip_forward', value: '1' };
    const nft: KernelOp = { op: 'nft.table.set', name: 'rt_a', digest: nftDigest(NFT_BODIES[0]!), body: NFT_BODIES[0]! };
    const failClosed: KernelOp = { op: 'rule.add', rule: { priority: 1999, from: '100.96.0.0/22', iif: 'rt2', table: null } };
    const steering: KernelOp = { op: 'rule.add', rule: { priority: 1002, from: '100.96.0.2/32', iif: 'rt2', table: 1001 } };
    const linkAdd: KernelOp = { op: 'link.add', dev: 'rt1', mtu: 1420 };

    expect([peer, route, otherPeer, otherRoute, sysctl].map((op) => dependsOn(op, linkAdd))).toEqual([true, true, false, false, false]);
    expect([peer, otherPeer, sysctl, route, steering].map((op) => dependsOn(op, nft))).toEqual([true, true, true, false, false]);
    expect([peer, otherPeer, sysctl, route].map((op) => dependsOn(op, failClosed))).toEqual([true, true, true, false]);
    // A refused endpoint, a steering rule, a route: each fails alone.
    for (const failed of [peer, steering, route, sysctl])
      expect([otherPeer, otherRoute, steering, nft].filter((op) => op !== failed).some((op) => dependsOn(op, failed))).toBe(false);
  });

  it('wraps a backend’s non-KernelOpError into a KernelOpError', async () => {
    const backend = new MemoryKernelBackend();
    backend.apply = async () => {
      throw new Error('boom');
    };
    const op: KernelOp = { op: 'link.add', dev: 'rt1', mtu: 1420 };
    const result = await applyPlan(backend, [op], SCOPE);
    expect(result.failures[0]?.error).toBeInstanceOf(KernelOpError);
    expect(result.failures[0]?.error.message).toMatch(/boom/);
  });
});

/** A random desired state whose plan from an empty host has at least `n` operations. */
function randomDesiredWithOps(n: number, seed = 42): DesiredHostState {
  const r = prng(seed);
  for (;;) {
    const d = randomDesired(r);
    if (planKernel(emptyHostState(), d).length >= n) return d;
  }
}

describe('canonical form and rendering', () => {
  const desired: DesiredHostState = {
    devices: devs({
      rt2: {
        name: 'rt2',
        publicKey: key(1),
        privateKeyFile: '/secret/rt2.key',
        listenPort: 51822,
        mtu: 1420,
        addresses: ['100.64.0.1/32'],
        up: false,
        peers: [],
      },
      rt1: {
        name: 'rt1',
        publicKey: key(0),
        privateKeyFile: '/secret/rt1.key',
        listenPort: 51821,
        mtu: 1420,
        addresses: ['2001:db8::1/128', '100.64.0.1'],
        up: true,
        peers: [
          { publicKey: key(3), endpoint: null, allowedIps: [], keepaliveSeconds: 0 },
          { publicKey: key(2), endpoint: '198.18.0.2:51821', allowedIps: ['100.96.0.1/22', '0.0.0.0/0'], keepaliveSeconds: 25 },
        ],
      },
    }),
    routes: [
      { dst: '100.96.0.0/22', dev: 'rt1', table: MAIN_TABLE, src: null },
      { dst: '0.0.0.0/0', dev: 'rt1', table: 1001, src: null },
      { dst: '100.64.0.2/32', dev: 'rt1', table: MAIN_TABLE, src: '100.64.0.1' },
    ],
    rules: [
      { priority: 1001, from: null, iif: 'rt1', table: 1001 },
      { priority: 1002, from: '100.96.0.0/22', iif: 'rt1', table: null },
      { priority: 1000, from: '100.96.0.0/22', iif: null, table: 1001 },
    ],
    sysctls: { 'net.ipv4.ip_forward': '1', 'net.ipv4.conf.all.rp_filter': '2' },
    nftTables: { rt_b: nftTable('rt_b', NFT_BODIES[2]!), rt_a: nftTable('rt_a', 'chain secret_body {}') },
    portMaps: [],
  };

  it('renders one line per item in canonical order, with public keys and without key files', () => {
    expect(renderHostState(desired)).toBe(
      [
        `device rt1 mtu 1420 up listen-port 51821 public-key ${key(0)}`,
        '  address 100.64.0.1/32',
        '  address 2001:db8::1/128',
        `  peer ${key(2)} endpoint 198.18.0.2:51821 allowed-ips 0.0.0.0/0,100.96.0.0/22 keepalive 25`,
        `  peer ${key(3)} endpoint (none) allowed-ips (none) keepalive off`,
        `device rt2 mtu 1420 down listen-port 51822 public-key ${key(1)}`,
        '  address 100.64.0.1/32',
        'route 100.64.0.2/32 dev rt1 table 254 src 100.64.0.1',
        'route 100.96.0.0/22 dev rt1 table 254',
        'route 0.0.0.0/0 dev rt1 table 1001',
        'rule priority 1000 from 100.96.0.0/22 lookup 1001',
        'rule priority 1001 iif rt1 lookup 1001',
        'rule priority 1002 from 100.96.0.0/22 iif rt1 unreachable',
        'sysctl net.ipv4.conf.all.rp_filter = 2',
        'sysctl net.ipv4.ip_forward = 1',
        `nft table inet rt_a digest ${nftDigest('chain secret_body {}')}`,
        `nft table inet rt_b digest ${nftDigest(NFT_BODIES[2]!)}`,
        '',
      ].join('\n'),
    );
    expect(renderHostState(desired)).not.toContain('/secret');
    expect(renderHostState(desired)).not.toContain('secret_body');
    // Maps written out as objects, so the devices are in the text.
    const text = JSON.stringify(canonicalHostState(desired), (_, v) => (v instanceof Map ? Object.fromEntries(v) : v));
    expect(text).toContain('rt1');
    expect(text).not.toContain('/secret');
    expect(text).not.toContain('secret_body');
    expect(JSON.stringify(stripDesired(desired))).not.toContain('secret_body');
    expect(nftDigest('chain secret_body {}')).toMatch(/^[0-9a-f]{16}$/);
    expect(describeOp({ op: 'nft.table.set', name: 'rt_a', digest: nftDigest('chain secret_body {}'), body: 'chain secret_body {}' })).not.toContain(
      'secret_body',
    );
    expect(describeOp({ op: 'wg.device', dev: 'rt1', privateKeyFile: '/secret/rt1.key', publicKey: key(0), listenPort: 51821 })).not.toContain('/secret');
  });

  it('is stable: the same state in any order renders byte-identically', () => {
    const r = prng(3);
    const shuffled = (s: DesiredHostState): HostState => ({
      devices: new Map(
        r
          .shuffle([...s.devices.values()])
          .map((d) => [
            d.name,
            { ...d, addresses: r.shuffle(d.addresses), peers: r.shuffle(d.peers).map((p) => ({ ...p, allowedIps: r.shuffle(p.allowedIps) })) },
          ]),
      ),
      routes: r.shuffle(s.routes),
      rules: r.shuffle(s.rules),
      sysctls: Object.fromEntries(r.shuffle(Object.entries(s.sysctls))),
      nftTables: Object.fromEntries(r.shuffle(Object.entries(s.nftTables))),
      portMaps: [],
    });
    const text = renderHostState(desired);
    for (let i = 0; i < 20; i++) expect(renderHostState(shuffled(desired))).toBe(text);
    expect(renderHostState(stripDesired(desired))).toBe(text);
  });

  it('writes addresses the way iproute2 and wg print them', () => {
    expect(canonicalCidr('100.96.0.1/22')).toBe('100.96.0.0/22');
    expect(canonicalCidr('100.64.0.1/24', true)).toBe('100.64.0.1/24');
    expect(canonicalCidr('100.64.0.1')).toBe('100.64.0.1/32');
    expect(canonicalCidr('2001:DB8:0:0:0:0:0:1/64')).toBe('2001:db8::/64');
    expect(canonicalCidr('2001:0db8:0:0:1:0:0:1', true)).toBe('2001:db8::1:0:0:1/128');
    expect(canonicalCidr('0::0/0')).toBe('::/0');
    expect(canonicalIp('fe80:0:0:0:0:0:0:0')).toBe('fe80::');
    expect(canonicalCidr('not-an-address/8')).toBe('not-an-address/8');
  });
});
