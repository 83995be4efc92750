import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyPlan } from '../../src/kernel/execute.ts';
import { MAIN_TABLE, PORT_MAP, type DesiredHostState, type KernelScope } from '../../src/kernel/host-state.ts';
import { LinuxKernelBackend } from '../../src/kernel/linux-backend.ts';
import { observation, parseDump } from '../../src/kernel/linux-parse.ts';
import { canonicalHostState, nftDigest, stripDesired } from '../../src/kernel/host-text.ts';
import { planKernel } from '../../src/kernel/plan.ts';
import { clientNftBody } from '../../src/kernel/clients.ts';
import { devs, relay } from '../support/given.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { generateWgKeyPair, type WgKeyPair } from '../../src/lib/wg-keys.ts';
import { tempDir } from '../support/temp.ts';

/**
 * The Linux backend against real devices: two network namespaces joined by a veth pair, one
 * wireguard-go device in each, built and torn down by planKernel + applyPlan alone. The sockets of
 * wireguard-go share one directory machine-wide, so every name carries a random suffix.
 */
type Side = 'a' | 'b';
const SIDES: Side[] = ['a', 'b'];
const other = (s: Side): Side => (s === 'a' ? 'b' : 'a');

const suffix = randomBytes(2).toString('hex');
const NETNS = { a: `rck-a-${suffix}`, b: `rck-b-${suffix}` };
const VETH = { a: `rkva${suffix}`, b: `rkvb${suffix}` };
const SCOPE: Record<Side, KernelScope> = {
  a: { devicePrefix: `ka${suffix}`, rulePriorities: [20000, 20099], sysctls: [], nftTables: [] },
  b: { devicePrefix: `kb${suffix}`, rulePriorities: [20000, 20099], sysctls: [], nftTables: [] },
};
const DEV = { a: `${SCOPE.a.devicePrefix}w0`, b: `${SCOPE.b.devicePrefix}w0` };
const UNDERLAY = { a: '198.18.200.1', b: '198.18.200.2' };
const TUNNEL = { a: '100.64.200.1', b: '100.64.200.2' };
const EXTRA_ADDRESS = '100.64.200.11/32';
const PORT = 51820;

const log = rootLogger({ test: 'kernel-linux' }, 'warn');
const backends = { a: new LinuxKernelBackend({ logger: log, netns: NETNS.a }), b: new LinuxKernelBackend({ logger: log, netns: NETNS.b }) };
let tmp: ReturnType<typeof tempDir>;
let keys: Record<Side, WgKeyPair>;

const sh = (...args: string[]) => execa(args[0]!, args.slice(1));
const inNs = (side: Side, ...args: string[]) => execa('ip', ['netns', 'exec', NETNS[side], ...args], { reject: false, timeout: 15_000 });

/** One side's device: its tunnel address /32, the other side as peer over the veth, a route to it. */
function desired(side: Side): DesiredHostState {
  const dev = DEV[side];
  return {
    devices: devs({
      [dev]: {
        name: dev,
        publicKey: keys[side].publicKey,
        privateKeyFile: join(tmp.dir, `${side}.key`),
        listenPort: PORT,
        mtu: 1420,
        addresses: side === 'a' ? [`${TUNNEL.a}/32`, EXTRA_ADDRESS] : [`${TUNNEL.b}/32`],
        up: true,
        peers: [
          {
            publicKey: keys[other(side)].publicKey,
            endpoint: `${UNDERLAY[other(side)]}:${PORT}`,
            allowedIps: [`${TUNNEL[other(side)]}/32`],
            keepaliveSeconds: 1,
          },
        ],
      },
    }),
    routes: [{ dst: `${TUNNEL[other(side)]}/32`, dev, table: MAIN_TABLE, src: TUNNEL[side] }],
    rules: [],
    sysctls: {},
    nftTables: {},
    portMaps: [],
  };
}

/** Side a, changed: the extra address gone, an IPv6 address, routes and rules added, one route replaced. */
function changedA(): DesiredHostState {
  const d = desired('a');
  const dev = d.devices.get(DEV.a)!;
  dev.addresses = [`${TUNNEL.a}/32`, '2001:db8:200::1/128'];
  dev.peers[0]!.allowedIps.push('100.64.210.0/24', '2001:db8:210::/64');
  d.routes = [
    { dst: `${TUNNEL.b}/32`, dev: DEV.a, table: MAIN_TABLE, src: null },
    { dst: '100.64.210.0/24', dev: DEV.a, table: 1210, src: null },
    { dst: '2001:db8:210::/64', dev: DEV.a, table: 1210, src: '2001:db8:200::1' },
  ];
  d.rules = [
    { priority: 20010, from: '100.64.200.0/24', iif: null, table: 1210 },
    { priority: 20011, from: '2001:db8:200::/64', iif: null, table: 1210 },
  ];
  return d;
}

async function converge(side: Side, state: DesiredHostState, scope = SCOPE[side]) {
  const plan = planKernel(await backends[side].read(scope), state);
  const result = await applyPlan(backends[side], plan, scope);
  return { plan, ...result };
}

/** Side a's client-style steering and filtering: owned sysctl, nftables table and rule range. */
const NFT_TABLE = `rk${suffix}`;
const STEERING_SCOPE: KernelScope = { ...SCOPE.a, sysctls: ['net.ipv4.ip_forward'], nftTables: [NFT_TABLE] };
const nftBody = (denied: string) =>
  [
    '  chain forward_filter {',
    '    type filter hook forward priority filter; policy accept;',
    `    iifname "${VETH.a}" ip daddr ${denied} counter drop`,
    '  }',
    '  chain postrouting_nat {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    ip saddr 100.64.220.0/24 oifname "${VETH.a}" masquerade`,
    '  }',
  ].join('\n');

function steering(denied: string): DesiredHostState {
  const body = nftBody(denied);
  return {
    devices: new Map(),
    routes: [],
    rules: [
      { priority: 20049, from: '100.64.220.2/32', iif: VETH.a, table: 1220 },
      { priority: 20050, from: '100.64.220.0/24', iif: VETH.a, table: null },
    ],
    sysctls: { 'net.ipv4.ip_forward': '1' },
    nftTables: { [NFT_TABLE]: { name: NFT_TABLE, digest: nftDigest(body), body } },
    portMaps: [],
  };
}

/** Processes running `wireguard-go <dev>` (zombies have no command line and do not count). */
function wireguardGoPids(dev: string): number[] {
  const cmdline = (pid: string) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      return '';
    }
  };
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p) && cmdline(p) === `wireguard-go\0${dev}\0`)
    .map(Number);
}

const socketOf = (dev: string) => `/var/run/wireguard/${dev}.sock`;

async function ping(from: Side, to: string) {
  return inNs(from, 'ping', '-c', '3', '-W', '2', to);
}

describe('LinuxKernelBackend with wireguard-go in two network namespaces', () => {
  beforeAll(async () => {
    const wgGo = await execa('wireguard-go', ['--version'], { reject: false });
    if (wgGo.failed)
      throw new Error('wireguard-go is not installed: this test needs it for userspace WireGuard devices (scripts/setup.sh installs it with apt)');
    tmp = tempDir('kernel-linux');
    keys = { a: generateWgKeyPair(), b: generateWgKeyPair() };
    for (const s of SIDES) writeFileSync(join(tmp.dir, `${s}.key`), keys[s].privateKey + '\n', { mode: 0o600 });

    for (const s of SIDES) await sh('ip', 'netns', 'add', NETNS[s]);
    await sh('ip', 'link', 'add', VETH.a, 'type', 'veth', 'peer', 'name', VETH.b);
    for (const s of SIDES) {
      await sh('ip', 'link', 'set', VETH[s], 'netns', NETNS[s]);
      await sh('ip', 'netns', 'exec', NETNS[s], 'ip', 'addr', 'add', `${UNDERLAY[s]}/24`, 'dev', VETH[s]);
      await sh('ip', 'netns', 'exec', NETNS[s], 'ip', 'link', 'set', VETH[s], 'up');
      await sh('ip', 'netns', 'exec', NETNS[s], 'ip', 'link', 'set', 'lo', 'up');
    }
  });

  afterAll(async () => {
    for (const s of SIDES) {
      await inNs(s, 'ip', 'link', 'del', DEV[s]);
      for (const pid of wireguardGoPids(DEV[s])) process.kill(pid, 'SIGTERM');
    }
    await sleep(200);
    for (const s of SIDES) {
      for (const pid of wireguardGoPids(DEV[s])) process.kill(pid, 'SIGKILL');
      rmSync(socketOf(DEV[s]), { force: true });
      // Deleting a namespace also deletes the veth end in it, and with it the other end.
      await execa('ip', ['netns', 'del', NETNS[s]], { reject: false });
    }
    tmp?.remove();
  });

  it('builds one WireGuard device per side from an empty namespace', async () => {
    for (const s of SIDES) {
      const r = await converge(s, desired(s));
      expect(r.failures.map((f) => f.error.message)).toEqual([]);
      const addrAdds = desired(s)
        .devices.get(DEV[s])!
        .addresses.map(() => 'addr.add');
      expect(r.plan.map((op) => op.op)).toEqual(['link.add', 'wg.device', ...addrAdds, 'link.up', 'route.add', 'wg.peer.set']);
      expect(r.reached).toEqual(canonicalHostState(stripDesired(desired(s))));
      expect(existsSync(socketOf(DEV[s]))).toBe(true);
      expect(wireguardGoPids(DEV[s])).toHaveLength(1);
    }
  });

  it('carries a ping through the tunnel, and observe() sees the handshake and growing counters', async () => {
    const started = Date.now();
    const p = await ping('a', TUNNEL.b);
    expect(p.exitCode, p.stdout + p.stderr).toBe(0);
    expect(p.stdout).toContain(`bytes from ${TUNNEL.b}`);

    const [first] = await backends.a.observe([DEV.a]);
    expect(first).toMatchObject({ dev: DEV.a, publicKey: keys.b.publicKey, endpoint: `${UNDERLAY.b}:${PORT}` });
    expect(first!.latestHandshakeMs).not.toBeNull();
    // Handshake times have second resolution.
    expect(first!.latestHandshakeMs!).toBeGreaterThanOrEqual(Math.floor(started / 1000) * 1000 - 1000);
    expect(first!.latestHandshakeMs!).toBeLessThanOrEqual(Date.now());
    expect(first!.rxBytes).toBeGreaterThan(0);

    // The other side's keepalive (1 s) alone makes the counter grow.
    let rx = first!.rxBytes;
    for (let i = 0; i < 20 && rx <= first!.rxBytes; i++) {
      await sleep(250);
      rx = (await backends.a.observe([DEV.a]))[0]!.rxBytes;
    }
    expect(rx).toBeGreaterThan(first!.rxBytes);
  });

  it('observes a wireguard-go device from its control socket, as `wg show` lists it, without a process', async () => {
    const commands = backends.a.commands;
    const [viaSocket] = await backends.a.observe([DEV.a]);
    expect(backends.a.commands).toBe(commands);
    const dump = await inNs('a', 'wg', 'show', DEV.a, 'dump');
    expect(dump.exitCode, dump.stderr).toBe(0);
    const [viaWg] = parseDump(dump.stdout).peers.map((p) => observation(DEV.a, p));
    // The counters move between the two readings (keepalives): the rest is the same.
    expect({ ...viaSocket, rxBytes: 0, txBytes: 0 }).toEqual({ ...viaWg, rxBytes: 0, txBytes: 0 });
    expect(viaSocket!.rxBytes).toBeLessThanOrEqual(viaWg!.rxBytes);
    expect(viaSocket!.rxBytes).toBeGreaterThan(0);
    // A device without a socket is looked for with `ip` (and is not there).
    expect(await backends.a.observe([`${SCOPE.a.devicePrefix}gone`])).toEqual([]);
    expect(backends.a.commands).toBeGreaterThan(commands);
  });

  it('reads back exactly the desired state, so a second plan is empty', async () => {
    for (const s of SIDES) {
      const actual = await backends[s].read(SCOPE[s]);
      expect(actual).toEqual(canonicalHostState(stripDesired(desired(s))));
      expect(planKernel(actual, desired(s))).toEqual([]);
    }
  });

  it('a key rotation loses no handshake: the peer re-keyed first (its initiation dropped), and the rotating side starts one at once', async () => {
    // Keepalives every 25 s, as on the mesh, so only a handshake started by the round itself answers in time.
    const slow = (side: Side) => {
      const d = desired(side);
      for (const p of d.devices.get(DEV[side])!.peers) p.keepaliveSeconds = 25;
      return d;
    };
    for (const s of SIDES) expect((await converge(s, slow(s))).failures).toEqual([]);
    expect((await ping('b', TUNNEL.a)).exitCode).toBe(0);

    keys.a = generateWgKeyPair();
    writeFileSync(join(tmp.dir, 'a.key'), keys.a.privateKey + '\n', { mode: 0o600 });
    // b first: its new peer's keepalive starts a handshake sealed to a's new key, which a (old key) drops.
    expect((await converge('b', slow('b'))).plan.map((op) => op.op)).toEqual(['wg.peer.set', 'wg.peer.del']);
    await sleep(200);
    const rotation = await converge('a', slow('a'));
    expect(rotation.failures).toEqual([]);
    expect(rotation.plan.map((op) => op.op)).toEqual(['wg.device', 'wg.peer.set']);
    // WireGuard retries a lost handshake after 5 s (REKEY_TIMEOUT); one ping of b with a 3 s deadline
    // is answered only if a's round started a handshake itself.
    const p = await inNs('b', 'ping', '-c', '1', '-W', '3', TUNNEL.a);
    expect(p.exitCode, p.stdout + p.stderr).toBe(0);
    for (const s of SIDES) expect((await converge(s, desired(s))).failures).toEqual([]);
  });

  it('converges to a changed state: address removed, routes and rules added, a route replaced, IPv6 too', async () => {
    const r = await converge('a', changedA());
    expect(r.failures.map((f) => f.error.message)).toEqual([]);
    expect(r.plan.map((op) => op.op).sort()).toEqual([
      'addr.add',
      'addr.del',
      'route.add',
      'route.add',
      'route.replace',
      'rule.add',
      'rule.add',
      'wg.peer.set',
    ]);
    expect(r.reached).toEqual(canonicalHostState(stripDesired(changedA())));
    expect(planKernel(await backends.a.read(SCOPE.a), changedA())).toEqual([]);
    const p = await ping('a', TUNNEL.b);
    expect(p.exitCode, p.stdout + p.stderr).toBe(0);
  });

  it('deletes everything it owns: no device, no wireguard-go process, no socket', async () => {
    const empty: DesiredHostState = { devices: new Map(), routes: [], rules: [], sysctls: {}, nftTables: {}, portMaps: [] };
    for (const s of SIDES) {
      const r = await converge(s, empty);
      expect(r.failures.map((f) => f.error.message)).toEqual([]);
      expect(r.plan.filter((op) => op.op !== 'rule.del')).toEqual([{ op: 'link.del', dev: DEV[s] }]);
      expect(r.reached).toEqual(empty);
      const links = JSON.parse((await inNs(s, 'ip', '-j', 'link', 'show')).stdout) as { ifname: string }[];
      expect(links.map((l) => l.ifname)).not.toContain(DEV[s]);
      expect(wireguardGoPids(DEV[s])).toEqual([]);
      expect(existsSync(socketOf(DEV[s]))).toBe(false);
      const rules = (await inNs(s, 'ip', 'rule', 'show')).stdout + (await inNs(s, 'ip', '-6', 'rule', 'show')).stdout;
      expect(rules).not.toContain('lookup 1210');
    }
  });
  it('sets a sysctl, an nftables table and an unreachable rule, replaces the table in one op, and removes them again', async () => {
    // A table of that name without our comment reads with digest '' and is replaced.
    await sh('ip', 'netns', 'exec', NETNS.a, 'nft', 'add', 'table', 'inet', NFT_TABLE);
    const before = await backends.a.read(STEERING_SCOPE);
    expect(before.nftTables).toEqual({ [NFT_TABLE]: { name: NFT_TABLE, digest: '' } });
    expect(before.sysctls).toEqual({ 'net.ipv4.ip_forward': '0' });

    const first = await converge('a', steering('192.0.2.0/24'), STEERING_SCOPE);
    expect(first.failures.map((f) => f.error.message)).toEqual([]);
    expect(first.plan.map((op) => op.op)).toEqual(['nft.table.set', 'sysctl.set', 'rule.add', 'rule.add']);
    expect(first.reached).toEqual(canonicalHostState(stripDesired(steering('192.0.2.0/24'))));
    expect(planKernel(await backends.a.read(STEERING_SCOPE), steering('192.0.2.0/24'))).toEqual([]);
    const listed = (await inNs('a', 'nft', 'list', 'table', 'inet', NFT_TABLE)).stdout;
    expect(listed).toContain(`comment "relay-core:${nftDigest(nftBody('192.0.2.0/24'))}"`);
    expect(listed).toContain('masquerade');
    expect((await inNs('a', 'ip', 'rule', 'show')).stdout).toMatch(/^20050:\s+from 100\.64\.220\.0\/24 iif \S+ unreachable$/m);
    expect((await inNs('a', 'sysctl', '-n', 'net.ipv4.ip_forward')).stdout.trim()).toBe('1');

    const second = await converge('a', steering('198.51.100.0/24'), STEERING_SCOPE);
    expect(second.failures.map((f) => f.error.message)).toEqual([]);
    const body = nftBody('198.51.100.0/24');
    expect(second.plan).toEqual([{ op: 'nft.table.set', name: NFT_TABLE, digest: nftDigest(body), body }]);
    expect(second.reached).toEqual(canonicalHostState(stripDesired(steering('198.51.100.0/24'))));
    const relisted = (await inNs('a', 'nft', 'list', 'table', 'inet', NFT_TABLE)).stdout;
    expect(relisted).toContain('198.51.100.0/24');
    expect(relisted).not.toContain('192.0.2.0/24');

    const gone = await converge('a', { devices: new Map(), routes: [], rules: [], sysctls: {}, nftTables: {}, portMaps: [] }, STEERING_SCOPE);
    expect(gone.failures.map((f) => f.error.message)).toEqual([]);
    expect(gone.plan.map((op) => op.op)).toEqual(['rule.del', 'rule.del', 'nft.table.del']);
    // Sysctls are never reset: the value stays.
    expect(gone.reached).toEqual({ devices: new Map(), routes: [], rules: [], sysctls: { 'net.ipv4.ip_forward': '1' }, nftTables: {}, portMaps: [] });
    expect((await inNs('a', 'nft', 'list', 'tables')).stdout).not.toContain(NFT_TABLE);
    const rules = (await inNs('a', 'ip', 'rule', 'show')).stdout;
    expect(rules).not.toContain('unreachable');
    expect(rules).not.toContain('lookup 1220');
  });

  it('keeps port maps as elements of the table’s map: added, pointed elsewhere, removed, and put back after the table is replaced', async () => {
    const body = (policy: string) =>
      [
        `  map ${PORT_MAP} {`,
        '    type inet_service : ipv4_addr . inet_service;',
        '  }',
        '  chain private_dnat {',
        `    type nat hook prerouting priority dstnat; policy ${policy};`,
        `    dnat ip to udp dport map @${PORT_MAP}`,
        '  }',
      ].join('\n');
    const state = (policyBody: string, maps: [number, string][]): DesiredHostState => ({
      devices: new Map(),
      routes: [],
      rules: [],
      sysctls: {},
      nftTables: { [NFT_TABLE]: { name: NFT_TABLE, digest: nftDigest(policyBody), body: policyBody } },
      portMaps: maps.map(([port, to]) => ({ table: NFT_TABLE, port, to })),
    });
    const steps: [string, [number, string][], string[]][] = [
      [
        body('accept'),
        [
          [51818, '100.64.0.2:51822'],
          [51817, '100.64.0.3:51823'],
        ],
        ['nft.table.set', 'portmap.add', 'portmap.add'],
      ],
      [
        body('accept'),
        [
          [51818, '100.64.0.3:51823'],
          [51817, '100.64.0.3:51823'],
        ],
        ['portmap.replace'],
      ],
      [body('accept'), [[51817, '100.64.0.3:51823']], ['portmap.del']],
      // A new body: the table is replaced and its element added back.
      [body('accept') + '\n', [[51817, '100.64.0.3:51823']], ['nft.table.set', 'portmap.add']],
    ];
    for (const [b, maps, ops] of steps) {
      const r = await converge('a', state(b, maps), STEERING_SCOPE);
      expect(r.failures.map((f) => f.error.message)).toEqual([]);
      expect(r.plan.map((op) => op.op)).toEqual(ops);
      expect(r.reached.portMaps).toEqual(canonicalHostState(state(b, maps)).portMaps);
      expect(planKernel(await backends.a.read(STEERING_SCOPE), state(b, maps))).toEqual([]);
    }
    const listed = (await inNs('a', 'nft', 'list', 'map', 'inet', NFT_TABLE, PORT_MAP)).stdout;
    expect(listed).toMatch(/51817 : 100\.64\.0\.3 \. 51823/);
    expect(listed).not.toContain('51818');
    const gone = await converge('a', { devices: new Map(), routes: [], rules: [], sysctls: {}, nftTables: {}, portMaps: [] }, STEERING_SCOPE);
    expect(gone.plan.map((op) => op.op)).toEqual(['nft.table.del']);
    expect(gone.reached.portMaps).toEqual([]);
  });

  it('keeps the MTU it sets on new wireguard-go devices (their daemon sets its default when it takes the device over)', async () => {
    // The daemon wireguard-go starts sets MTU 1420 when it takes the device over, after the command that
    // started it returned; an MTU set before then was lost about one time in fifteen.
    const names = Array.from({ length: 15 }, (_, i) => `${SCOPE.a.devicePrefix}u${i}`);
    const want = (up: boolean): DesiredHostState => ({
      devices: new Map(
        up
          ? names.map((name, i) => [
              name,
              {
                name,
                publicKey: keys.a.publicKey,
                privateKeyFile: join(tmp.dir, 'a.key'),
                listenPort: 52_000 + i,
                mtu: 1360,
                addresses: [],
                up: true,
                peers: [],
              },
            ])
          : [],
      ),
      routes: [],
      rules: [],
      sysctls: {},
      nftTables: {},
      portMaps: [],
    });
    const scope = { ...SCOPE.a, devicePrefix: `${SCOPE.a.devicePrefix}u` };
    try {
      const r = await converge('a', want(true), scope);
      expect(r.failures.map((f) => f.error.message)).toEqual([]);
      await sleep(1_000);
      const mtus = (await inNs('a', 'ip', '-j', 'link', 'show')).stdout;
      const found = (JSON.parse(mtus) as { ifname: string; mtu: number }[]).filter((l) => names.includes(l.ifname)).map((l) => l.mtu);
      expect(found).toEqual(names.map(() => 1360));
    } finally {
      const gone = await converge('a', want(false), scope);
      expect(gone.failures.map((f) => f.error.message)).toEqual([]);
    }
  });

  it('loads the relay table (egress policy, mesh filters) in one transaction and reads its counters by name', async () => {
    const body = clientNftBody(relay(1), {
      wgPrefix: 'rc',
      clientSupernet: '100.96.0.0/11',
      denyCidrs: ['2001:db8:5::/48'],
      allowCidrs: ['198.18.0.0/15'],
      serviceCidrs: ['198.18.0.2/32'],
      clientPrefix6: 'fd64::/96',
      privateSessions: true,
      echoService: true,
    });
    const desired: DesiredHostState = {
      devices: new Map(),
      routes: [],
      rules: [],
      sysctls: {},
      nftTables: { [NFT_TABLE]: { name: NFT_TABLE, digest: nftDigest(body), body } },
      portMaps: [],
    };
    const r = await converge('a', desired, STEERING_SCOPE);
    expect(r.failures.map((f) => f.error.message)).toEqual([]);
    const counters = await backends.a.counters(NFT_TABLE);
    for (const name of [
      'refused_network',
      'refused_service',
      'refused_operator',
      'refused_link_local',
      'refused_private',
      'mesh_spoofed',
      'mesh_foreign',
      'mesh_input',
      'client_input',
      'fail_closed',
    ]) {
      expect(counters[name], name).toEqual({ packets: 0, bytes: 0 });
    }
    // The sim's internet was allowed: no benchmark set or counter.
    expect(counters.refused_benchmark).toBeUndefined();
    const listed = (await inNs('a', 'nft', 'list', 'table', 'inet', NFT_TABLE)).stdout;
    expect(listed).toContain('169.254.0.0/16');
    expect(listed).toContain('fib saddr . iif oif missing');

    const gone = await converge('a', { devices: new Map(), routes: [], rules: [], sysctls: {}, nftTables: {}, portMaps: [] }, STEERING_SCOPE);
    expect(gone.failures.map((f) => f.error.message)).toEqual([]);
    expect(await backends.a.counters(NFT_TABLE)).toEqual({});
  });
});
