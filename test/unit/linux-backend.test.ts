import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { clientScope, desiredClientState, type ClientOptions } from '../../src/kernel/clients.ts';
import { applyPlan } from '../../src/kernel/execute.ts';
import { KernelOpError, type DesiredHostState, type KernelScope } from '../../src/kernel/host-state.ts';
import { canonicalHostState, scopeDigest } from '../../src/kernel/host-text.ts';
import { reconcileWith } from '../../src/kernel/reconcile.ts';
import { LinuxKernelBackend } from '../../src/kernel/linux-backend.ts';
import { desiredMeshState, meshScope } from '../../src/kernel/mesh.ts';
import { planKernel } from '../../src/kernel/plan.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { generateWgKeyPair } from '../../src/lib/wg-keys.ts';
import { FakeLinux } from '../support/fake-linux.ts';
import { session } from '../support/clients-harness.ts';
import { relay } from '../support/given.ts';
import { tempDir } from '../support/temp.ts';

/**
 * The Linux backend's own logic without root: its commands run against a fake host that interprets
 * them (test/support/fake-linux.ts). What it reads back after applying a plan must be the desired
 * state, so the next plan is empty; the real host is test/integration/kernel-linux.test.ts.
 */

const tmp = tempDir('linux-backend');
afterAll(() => tmp.remove());
const keys = generateWgKeyPair();
const keyFile = join(tmp.dir, 'wg.key');
writeFileSync(keyFile, keys.privateKey + '\n', { mode: 0o600 });
const log = rootLogger({ test: 'linux-backend' }, 'silent');

const self = relay(1, { publicKey: keys.publicKey });
const relays = { 'relay-1': self, 'relay-2': relay(2, { exitIpv6: true }), 'relay-3': relay(3) };
const clients: ClientOptions = {
  wgPrefix: 'rc',
  privateKeyFile: keyFile,
  mtu: 1420,
  exitTableBase: 100_000,
  rulePriorityBase: 20_000,
  clientSupernet: '100.96.0.0/11',
  denyCidrs: [],
  allowCidrs: ['198.18.0.0/15'],
  serviceCidrs: ['198.18.0.2/32'],
  clientPrefix6: 'fd64::/96',
  privateSessions: true,
  echoService: true,
};
const meshOpts = { wgPrefix: 'rc', keepaliveSeconds: 25, mtu: 1420, privateKeyFile: keyFile, exitTableBase: 100_000, clientPrefix6: 'fd64::/96' };

async function converge(b: LinuxKernelBackend, scope: KernelScope, desired: DesiredHostState) {
  const plan = planKernel(await b.read(scope), desired);
  const r = await applyPlan(b, plan, scope);
  return { plan, r, again: planKernel(await b.read(scope), desired) };
}

describe('the Linux backend on a fake host', () => {
  it('programs a relay (mesh links, clients with IPv6, the table, sysctls) and reads back exactly what it planned', async () => {
    const host = new FakeLinux();
    const b = new LinuxKernelBackend({ logger: log, runner: host });
    const mesh = await converge(b, meshScope('rc', self), desiredMeshState(self, Object.values(relays), meshOpts, {}));
    expect(mesh.r.failures).toEqual([]);
    expect(mesh.plan.length).toBeGreaterThan(10);
    expect(mesh.again).toEqual([]);
    // It counts every command it ran, reads and writes alike (bench:fleet reads it as the kernel's cost).
    expect(b.commands).toBe(host.log.length);
    const desired = desiredClientState(self, relays, [session(1, self, 'relay-2'), session(2, self, 'relay-3')], clients);
    const cl = await converge(b, clientScope(self, clients), desired);
    expect(cl.r.failures).toEqual([]);
    expect(cl.again).toEqual([]);
    expect(cl.r.reached.rules.filter((r) => r.from?.includes(':'))).toHaveLength(3);
    expect(cl.r.reached.sysctls).toEqual({ 'net.ipv4.ip_forward': '1', 'net.ipv4.conf.all.rp_filter': '2', 'net.ipv6.conf.all.forwarding': '1' });
    expect(Object.keys(cl.r.reached.nftTables)).toEqual(['rc1']);
    // No WireGuard module here: every device came from wireguard-go after the kernel said no.
    expect(host.log.filter((c) => c.startsWith('wireguard-go '))).toHaveLength(3);
    expect(await b.counters('rc1')).toMatchObject({ mesh_spoofed: { packets: 0, bytes: 0 }, refused_link_local: { packets: 0, bytes: 0 } });
    expect(await b.counters('absent')).toEqual({});
    expect(await b.ipv6()).toEqual({ enabled: true, defaultRoute: false });
    // Tearing down: the same backend removes what it made.
    const gone = await converge(b, clientScope(self, clients), { devices: new Map(), routes: [], rules: [], sysctls: {}, nftTables: {}, portMaps: [] });
    expect(gone.r.failures).toEqual([]);
    expect(host.rules).toEqual([]);
    expect(host.nft.size).toBe(0);
  });

  it('reads the WireGuard state of three devices or more in one process, of fewer one each, and the same either way', async () => {
    const host = new FakeLinux();
    const b = new LinuxKernelBackend({ logger: log, runner: host });
    const five = [self, relay(2), relay(3), relay(4), relay(5)];
    const scope = meshScope('rc', self);
    const mesh = await converge(b, scope, desiredMeshState(self, five, meshOpts, {}));
    expect(mesh.r.failures).toEqual([]);
    expect(mesh.again).toEqual([]);
    const dumps = () => host.log.filter((c) => c.startsWith('wg show '));
    // 4 devices built: the addresses, links and routes went in a few `ip -batch` processes, not one each.
    const ipProcs = host.log.filter((c) => c.startsWith('ip ') && !c.includes(' show'));
    const ipOps = mesh.r.applied.filter((op) => /^(addr|route|rule)\.|^link\.(up|mtu)$/.test(op.op)).length;
    expect(ipOps).toBeGreaterThan(16);
    expect(ipProcs.length).toBeLessThan(ipOps / 2);
    host.log.length = 0;
    const whole = await b.read(scope);
    expect([...whole.devices.keys()]).toHaveLength(4);
    expect(dumps()).toEqual(['wg show all dump']);
    host.log.length = 0;
    const [dev] = [...whole.devices.keys()];
    const focus = {
      devices: new Set([dev!]),
      wireguard: new Set<string>(),
      routes: new Set<string>(),
      rules: new Set<string>(),
      sysctls: new Set<string>(),
      nftTables: new Set<string>(),
      portMaps: new Set<string>(),
    };
    const one = await b.read(scope, focus);
    expect(dumps()).toEqual([`wg show ${dev} dump`]);
    expect(one.devices.get(dev!)).toEqual(whole.devices.get(dev!));
    host.log.length = 0;
    const seen = await b.observe([...whole.devices.keys()]);
    expect(dumps()).toEqual(['wg show all dump']);
    expect(seen.map((o) => o.dev).sort()).toEqual([...whole.devices.keys()].sort());
  });

  it('after a key rotation, every link sends a keepalive at once (its handshake), and only then', async () => {
    const host = new FakeLinux();
    const b = new LinuxKernelBackend({ logger: log, runner: host });
    const peers = [relay(2), relay(3), relay(4)];
    const scope = meshScope('rc', self);
    expect((await converge(b, scope, desiredMeshState(self, [self, ...peers], meshOpts, {}))).again).toEqual([]);
    // Each new peer sent its first keepalive when it was set; nothing since.
    expect(host.keepalivesSent).toHaveLength(3);
    host.keepalivesSent.length = 0;
    expect((await converge(b, scope, desiredMeshState(self, [self, ...peers], meshOpts, {}))).plan).toEqual([]);
    expect(host.keepalivesSent).toEqual([]);

    const rotated = generateWgKeyPair();
    const rotatedFile = join(tmp.dir, 'wg-rotated.key');
    writeFileSync(rotatedFile, rotated.privateKey + '\n', { mode: 0o600 });
    const me = { ...self, publicKey: rotated.publicKey };
    const r = await converge(b, scope, desiredMeshState(me, [me, ...peers], { ...meshOpts, privateKeyFile: rotatedFile }, {}));
    expect(r.r.failures).toEqual([]);
    expect(r.again).toEqual([]);
    expect(r.plan.map((op) => op.op)).toEqual(['wg.device', 'wg.device', 'wg.device', 'wg.peer.set', 'wg.peer.set', 'wg.peer.set']);
    expect(host.keepalivesSent.map((k) => k.peer).sort()).toEqual(peers.map((p) => p.publicKey).sort());
    expect([...host.links.values()].filter((l) => l.wg.publicKey !== '').every((l) => l.wg.publicKey === rotated.publicKey)).toBe(true);
  });

  it("reads a session's round as the change needs: the client device's WireGuard state and the rules, not its link or routes", async () => {
    const host = new FakeLinux();
    const b = new LinuxKernelBackend({ logger: log, runner: host });
    const reconcile = reconcileWith(b, () => 0);
    const scope = clientScope(self, clients);
    const round = async (n: number) => {
      const sessions = Array.from({ length: n }, (_, i) => session(i + 1, self, 'relay-2'));
      const out = await reconcile({
        owners: [{ owner: 'clients', scope, state: desiredClientState(self, relays, sessions, clients), cause: null }],
        full: false,
      });
      return out.outcomes[0]!;
    };
    expect((await round(1)).failures).toEqual([]);
    host.log.length = 0;
    const opened = await round(2);
    expect(opened.focused).toBe(true);
    expect(opened.failures).toEqual([]);
    expect(opened.planned.map((op) => op.op)).toEqual(['rule.add', 'rule.add', 'wg.peer.set']);
    // Planned from what the last round reached; read back: `wg show rc1c dump` and the rules of both families, nothing else.
    const reads = host.log.filter((c) => c.includes(' show') || c.startsWith('sysctl') || c.startsWith('nft'));
    expect(reads.sort()).toEqual(['ip -4 -N -j rule show', 'ip -6 -N -j rule show', 'wg show rc1c dump']);
    // What the round says it reached is the host as a whole-scope read gives it.
    const whole = await b.read(scope);
    expect(canonicalHostState(opened.reached)).toEqual(whole);
    expect(opened.digest).toBe(scopeDigest(whole));

    // The client device goes behind the relay's back: the next session's peer cannot be set, so the same
    // round goes on with the whole scope, which builds the device again.
    expect((await host.run(['ip', 'link', 'del', 'dev', 'rc1c'], {})).exitCode).toBe(0);
    host.log.length = 0;
    const rebuilt = await round(3);
    expect(rebuilt.failures).toEqual([]);
    expect(rebuilt.focused).toBe(false);
    expect(rebuilt.planned.map((op) => op.op).slice(0, 4)).toEqual(['rule.add', 'rule.add', 'wg.peer.set', 'link.add']);
    expect(rebuilt.applied.map((op) => op.op)).toContain('link.add');
    expect(canonicalHostState(rebuilt.reached)).toEqual(await b.read(scope));
    expect(
      planKernel(
        await b.read(scope),
        desiredClientState(
          self,
          relays,
          [1, 2, 3].map((i) => session(i, self, 'relay-2')),
          clients,
        ),
      ),
    ).toEqual([]);
  });

  it('uses the kernel module where there is one, and wireguard-go only where the kernel has no WireGuard', async () => {
    const host = new FakeLinux({ kernelWireGuard: true });
    const b = new LinuxKernelBackend({ logger: log, runner: host });
    const r = await converge(b, meshScope('rc', self), desiredMeshState(self, Object.values(relays), meshOpts, {}));
    expect(r.again).toEqual([]);
    expect(host.log.filter((c) => c.startsWith('wireguard-go'))).toEqual([]);
    expect(host.log.filter((c) => c.endsWith('type wireguard'))).toHaveLength(2);
  });

  it('a wireguard-go device keeps its MTU: the daemon takes the device over (and sets its default) before the MTU is set', async () => {
    const host = new FakeLinux();
    const b = new LinuxKernelBackend({ logger: log, runner: host });
    // A private session leaving here: the private device has the mesh MTU - 60.
    const desired = desiredClientState(self, relays, [session(5, relays['relay-2'], 'relay-1', { mode: 'private' })], clients);
    const r = await converge(b, clientScope(self, clients), desired);
    expect(r.r.failures).toEqual([]);
    expect((await b.read(clientScope(self, clients))).devices.get('rc1cp')?.mtu).toBe(1360);
    expect(r.again).toEqual([]);
    // The daemon was asked (and answered) before the MTU was set.
    const asked = host.log.indexOf('wg show rc1cp listen-port');
    expect(asked).toBeGreaterThan(host.log.indexOf('wireguard-go rc1cp'));
    expect(asked).toBeLessThan(host.log.findIndex((c) => c.includes('rc1cp mtu 1360')));
  });

  it('a failing command fails its operation alone, with the command and what it said; a read that fails throws', async () => {
    const host = new FakeLinux({ fail: (argv) => (argv.join(' ').startsWith('ip -4 route add 100.64.0.3/32') ? 'RTNETLINK answers: Invalid argument' : null) });
    const b = new LinuxKernelBackend({ logger: log, runner: host });
    const { r } = await converge(b, meshScope('rc', self), desiredMeshState(self, Object.values(relays), meshOpts, {}));
    expect(r.failures).toHaveLength(1);
    const f = r.failures[0]!;
    expect(f.error).toBeInstanceOf(KernelOpError);
    expect(f.error.command).toEqual(['ip', '-4', 'route', 'add', '100.64.0.3/32', 'dev', 'rc1m3', 'table', '254', 'src', '100.64.0.1']);
    expect(f.error.stderr).toBe('RTNETLINK answers: Invalid argument');
    expect(r.reached.devices.get('rc1m2')).toBeDefined();
    // It failed inside an `ip -batch` of routes: the routes before it and after it are on the host.
    const routeBatches = host.log.filter((c) => c.startsWith('ip -4 -batch'));
    expect(routeBatches.length).toBeGreaterThanOrEqual(2);
    const routes = r.applied.filter((op) => op.op === 'route.add');
    expect(routes.length).toBeGreaterThan(2);
    for (const op of routes)
      expect(host.routes.some((x) => op.op === 'route.add' && x.dst === op.route.dst && String(x.table) === String(op.route.table))).toBe(true);
    const broken = new LinuxKernelBackend({
      logger: log,
      runner: new FakeLinux({ fail: (argv) => (argv[0] === 'nft' ? 'Error: Could not process rule: Operation not permitted' : null) }),
    });
    await expect(broken.read(clientScope(self, clients))).rejects.toThrow(/nft -j list tables failed \(exit 2\): Error: Could not process rule/);
  });

  it('says IPv6 is off where the host disables it', async () => {
    const host = new FakeLinux();
    host.sysctls.set('net.ipv6.conf.all.disable_ipv6', '1');
    expect(await new LinuxKernelBackend({ logger: log, runner: host }).ipv6()).toEqual({ enabled: false, defaultRoute: false });
  });
});
