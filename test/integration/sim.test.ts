import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import { readManifest, type Manifest } from '../../src/sim/manifest.ts';
import { cmdline, isRunning, linkNames, listNetns, netnsPids, signal, tcpReachable, wgSocketNames } from '../../src/sim/netns.ts';
import { tempDir } from '../support/temp.ts';
import { simCli, simStatus as readSimStatus, statusUntil as untilStatus } from '../support/sim-cli.ts';
import { type BusAuthority, issuerFor, mintUserJwt, publicKeyOfSeed } from '../../src/contract/bus-auth.ts';
import { CONTROL_PLANE_URL, NATS_PORT, SVC_ADDRESS } from '../../src/sim/layout.ts';

const BUS_PROBE = join(import.meta.dirname, '../support/bus-probe.ts');

/**
 * `relay-core sim` end to end, through the real CLI: namespaces, bridge and veths, nats-server and the
 * control plane in the service namespace, relays in their own namespaces, membership changes, and a
 * `down` that leaves nothing behind, also after everything was killed with SIGKILL.
 */

interface SimStatus {
  simId: string;
  converged: { topology: boolean; mesh: boolean };
  missing: string[];
  relays: {
    id: string;
    pid: number | null;
    process: string;
    status: null | {
      state: string;
      publicKey: string;
      topologyDigest: string;
      relays: { id: string; endpoint: string }[];
      bus: { connected: boolean; follower: string };
      links?: { peerId: string; device: string; state: string }[];
    };
  }[];
}

const simStatus = (dir: string) => readSimStatus<SimStatus>(dir);
const statusUntil = (dir: string, what: string, ok: (s: SimStatus) => boolean, timeoutMs?: number) => untilStatus<SimStatus>(dir, what, ok, timeoutMs);

const serving = (s: SimStatus, id: string) => s.relays.find((r) => r.id === id)?.status?.state === 'serving';
const sees = (s: SimStatus, id: string) =>
  s.relays
    .find((r) => r.id === id)
    ?.status?.relays.map((r) => r.id)
    .sort() ?? [];

/** Every pid the sim recorded or that runs in one of its namespaces (before `down`). */
async function simPids(m: Manifest): Promise<number[]> {
  const pids = new Set(m.processes.flatMap((p) => (p.pid ? [p.pid] : [])));
  for (const ns of m.namespaces) for (const pid of await netnsPids(ns)) pids.add(pid);
  return [...pids];
}

/** The inode of each of the sim's namespaces that exists: it identifies the namespace even after its name is gone. */
function netnsInodes(m: Manifest): number[] {
  return m.namespaces.flatMap((ns) => (existsSync(`/run/netns/${ns}`) ? [statSync(`/run/netns/${ns}`).ino] : []));
}

/** Processes still living in one of those namespaces (a namespace deleted by name lives on while they do). */
function processesInNetns(inodes: number[]): string[] {
  const wanted = new Set(inodes.map((ino) => `net:[${ino}]`));
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p) && isRunning(Number(p)))
    .filter((p) => {
      try {
        return wanted.has(readlinkSync(`/proc/${p}/ns/net`));
      } catch {
        return false;
      }
    })
    .map((p) => `${p}: ${cmdline(Number(p))?.join(' ')}`);
}

/** Processes of the sim still running: by command line (its state dir; wireguard-go with its device prefix). */
function simProcessesLeft(m: Manifest): string[] {
  const device = new RegExp(`^${m.wgPrefix}\\d+m\\d+$`);
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p) && isRunning(Number(p)))
    .map((p) => cmdline(Number(p)) ?? [])
    .filter((c) => c.some((a) => a.includes(m.stateDir)) || (c[0]?.endsWith('wireguard-go') && device.test(c[1] ?? '')))
    .map((c) => c.join(' '));
}

/**
 * Nothing of the sim remains: namespaces (also unnamed ones kept alive by a process), processes (the ones it had, by pid: pids are handed out in
 * sequence and a test starts far fewer processes than pid_max; and wireguard-go by its device name),
 * sockets, links in the root namespace, the manifest.
 */
async function expectNothingLeft(m: Manifest, pidsBefore: number[], inodes: number[]): Promise<void> {
  expect((await listNetns()).filter((ns) => ns.startsWith(`rcs-${m.simId}-`))).toEqual([]);
  expect(processesInNetns(inodes)).toEqual([]);
  expect(pidsBefore.filter(isRunning).map((pid) => `${pid}: ${cmdline(pid)?.join(' ')}`)).toEqual([]);
  expect(simProcessesLeft(m)).toEqual([]);
  expect(wgSocketNames().filter((f) => new RegExp(`^${m.wgPrefix}\\d+m\\d+\\.sock$`).test(f))).toEqual([]);
  expect((await linkNames(null)).filter((l) => l.includes(m.simId))).toEqual([]);
  expect(existsSync(join(m.stateDir, 'manifest.json'))).toBe(false);
}

describe('relay-core sim: a relay network from network namespaces', () => {
  let tmp: ReturnType<typeof tempDir>;
  let dir: string;
  let sim: ReturnType<typeof simCli>;
  let m: Manifest;
  let pids: number[] = [];

  beforeAll(() => {
    tmp = tempDir('sim');
    dir = join(tmp.dir, 'state');
    sim = simCli(dir);
  });

  afterAll(async () => {
    const before = readManifest(dir);
    if (before) pids = [...new Set([...pids, ...(await simPids(before))])];
    const inodes = before ? netnsInodes(before) : [];
    const r = await sim(['down']);
    expect(r.exitCode, r.stderr).toBe(0);
    if (before) await expectNothingLeft(before, pids, inodes);
    if (!process.env.KEEP_TMP) tmp.remove();
  });

  it('refuses bad usage with exit 2', async () => {
    for (const args of [
      ['frob'],
      ['up', '--relays', '0'],
      ['status', '--relays', '3'],
      ['stop'],
      ['kill', '--relay', 'Bad_Id'],
      ['up', '--wait', 'soon'],
      ['add', '--endpoint', 'no-port'],
      ['up', '--endpoint', 'a.invalid:1'],
    ]) {
      const r = await sim(args, 30_000);
      expect(r.exitCode, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(/^relay-core sim: /);
    }
  });

  it('says it needs root, exit 1, when not run as root', async () => {
    const r = await execa('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', RELAY_CORE_BIN, 'sim', 'status', '--state-dir', dir], {
      reject: false,
      timeout: 30_000,
    });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('relay-core sim needs root (network namespaces, WireGuard devices); run it with sudo');
  });

  it('up: 3 relays in their own namespaces register with the control plane and serve one topology', async () => {
    const r = await sim(['up', '--relays', '3', '--wait', 'topology', '--timeout', '90'], 240_000);
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/converged \(topology\)/);
    m = readManifest(dir)!;
    pids = await simPids(m);

    const ns = [`rcs-${m.simId}-inet`, `rcs-${m.simId}-svc`, `rcs-${m.simId}-r1`, `rcs-${m.simId}-r2`, `rcs-${m.simId}-r3`];
    expect(m.namespaces).toEqual(ns);
    expect((await listNetns()).filter((n) => n.startsWith(`rcs-${m.simId}-`)).sort()).toEqual([...ns].sort());
    expect(m.veths.map((v) => v.name)).toEqual([`v${m.simId}s`, `v${m.simId}r1`, `v${m.simId}r2`, `v${m.simId}r3`]);
    expect(await linkNames(`rcs-${m.simId}-inet`)).toEqual(expect.arrayContaining(['br0', ...m.veths.map((v) => v.name)]));
    expect(m.relays.map((x) => [x.id, x.namespace, x.endpoint])).toEqual([1, 2, 3].map((i) => [`relay-${i}`, `rcs-${m.simId}-r${i}`, `198.18.1.${i}:51820`]));
    expect(m.processes.map((p) => [p.kind, p.namespace])).toEqual([
      ['nats', `rcs-${m.simId}-svc`],
      ['control-plane', `rcs-${m.simId}-svc`],
      ['web', `rcs-${m.simId}-inet`],
      ...[1, 2, 3].map((i) => ['relay', `rcs-${m.simId}-r${i}`]),
    ]);
    for (const p of m.processes) expect(isRunning(p.pid!), p.name).toBe(true);
    // Each relay runs inside its namespace, and the root namespace got none of the sim's links.
    for (const r of m.relays) expect(await netnsPids(r.namespace)).toContain(m.processes.find((p) => p.name === r.id)!.pid);
    expect((await linkNames(null)).filter((l) => l.includes(m.simId))).toEqual([]);

    // Every relay follows the topology stream on the sim's NATS (not only registration snapshots).
    const s = await statusUntil(dir, 'every relay to follow the topology stream', (x) => x.relays.every((y) => y.status?.bus.follower === 'following'), 30_000);
    expect(new Set(s.relays.map((x) => x.status?.topologyDigest)).size).toBe(1);
    for (const x of s.relays) {
      expect(x.status?.state).toBe('serving');
      expect(x.status?.relays.map((y) => [y.id, y.endpoint])).toEqual([1, 2, 3].map((i) => [`relay-${i}`, `198.18.1.${i}:51820`]));
      expect(x.status?.bus.connected).toBe(true);
    }
    // The manifest learnt each relay's mesh address and key.
    expect(readManifest(dir)!.relays.map((x) => x.publicKey)).toEqual(s.relays.map((x) => x.status!.publicKey));
  });

  it('relays hold scoped tokens in 0600 files, never the service-role key', async () => {
    const srk = readFileSync(m.controlPlane.serviceRoleKeyFile, 'utf8').trim();
    expect(statSync(m.controlPlane.serviceRoleKeyFile).mode & 0o777).toBe(0o600);
    for (const r of m.relays) {
      expect(statSync(r.tokenFile).mode & 0o777).toBe(0o600);
      const claims = JSON.parse(Buffer.from(readFileSync(r.tokenFile, 'utf8').split('.')[1]!, 'base64url').toString()) as { role: string; relay_id: string };
      expect(claims).toMatchObject({ role: 'relay', relay_id: r.id });
      const argv = cmdline(m.processes.find((p) => p.name === r.id)!.pid!)!;
      expect(argv).toContain('--token-file');
      expect(argv.join(' ')).not.toContain(srk);
    }
  });

  it('the control plane and NATS are reachable from a relay namespace at the service address', async () => {
    expect(await tcpReachable(`rcs-${m.simId}-r2`, '198.18.0.2', 54321)).toBe(true);
    expect(await tcpReachable(`rcs-${m.simId}-r2`, '198.18.0.2', 4222)).toBe(true);
  });

  it('the mesh converges: every relay has a link in state up to every other, on devices with the sim prefix', async () => {
    const s = await statusUntil(dir, 'every link up', (x) => x.converged.mesh);
    for (const x of s.relays) {
      expect(x.status!.links!.filter((l) => l.state === 'up').map((l) => l.peerId)).toEqual(['relay-1', 'relay-2', 'relay-3'].filter((id) => id !== x.id));
      for (const l of x.status!.links!) expect(l.device).toMatch(new RegExp(`^${m.wgPrefix}\\d+m\\d+$`));
    }
  });

  it("the bus admits each party only to its own: relay-1's credentials cannot act as relay-2 or the control plane, administer streams or read others; an expired JWT is refused", async () => {
    const r1 = m.relays.find((r) => r.id === 'relay-1')!;
    const url = `nats://${SVC_ADDRESS}:${NATS_PORT}`;
    const probe = (args: string[], env: Record<string, string> = {}) =>
      execa('ip', ['netns', 'exec', r1.namespace, process.execPath, BUS_PROBE, '--url', url, ...args], { reject: false, timeout: 60_000, env });
    const before = (await simStatus(dir)).relays.find((r) => r.id === 'relay-1')!.status!;
    const p = await probe(['--creds', join(r1.stateDir, 'nats.creds'), '--relay', 'relay-1', '--other', 'relay-2']);
    expect(p.exitCode, p.stderr).toBe(0);
    const o = JSON.parse(p.stdout) as Record<string, string>;
    expect(o.publishOwn).toBe('ok');
    expect(o.ownConsumerInfo).toBe('ok');
    for (const k of [
      'publishOther',
      'publishTopology',
      'purgeStream',
      'deleteStream',
      'addStream',
      'otherConsumerInfo',
      'otherConsumerDelete',
      'otherConsumerNext',
      'subscribeAll',
    ]) {
      expect(o[k], k).toMatch(/permissions? violation/i);
    }
    // A JWT for relay-1's own nkey that expired an hour ago is refused at connect; a current one is not.
    const authority = JSON.parse(readFileSync(join(m.controlPlane.stateDir, 'bus', 'authority.json'), 'utf8')) as BusAuthority;
    const seed = readFileSync(join(r1.stateDir, 'nats.nk'), 'utf8').trim();
    const role = { kind: 'relay', relayId: 'relay-1' } as const;
    const now = Math.floor(Date.now() / 1000);
    const jwtAt = (nowSeconds: number) => mintUserJwt(issuerFor(authority, role), role, publicKeyOfSeed(seed), { nowSeconds, ttlSeconds: 3600 });
    const expired = await probe(['--jwt', await jwtAt(now - 7200)], { BUS_PROBE_SEED: seed });
    expect(JSON.parse(expired.stdout).connect).toMatch(/authori[sz]ation|expired/i);
    const current = await probe(['--jwt', await jwtAt(now)], { BUS_PROBE_SEED: seed });
    expect(JSON.parse(current.stdout).connect).toBe('ok');
    // relay-1's own work went on: still connected, following, publishing.
    const after = await statusUntil(dir, 'relay-1 still on the bus', (s) => {
      const x = s.relays.find((r) => r.id === 'relay-1')?.status;
      return !!x?.bus.connected && x.bus.follower === 'following';
    });
    expect(after.relays.find((r) => r.id === 'relay-1')!.status!.state).toBe(before.state);
  });

  it('add: relay-4 gets namespace r4 and 198.18.1.4, and every relay sees it', async () => {
    const r = await sim(['add', '--relay', 'relay-4', '--wait', 'topology']);
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(await listNetns()).toContain(`rcs-${m.simId}-r4`);
    const s = await simStatus(dir);
    for (const x of s.relays) expect(sees(s, x.id)).toEqual(['relay-1', 'relay-2', 'relay-3', 'relay-4']);
    expect(s.relays.find((x) => x.id === 'relay-4')!.status!.relays.find((y) => y.id === 'relay-4')!.endpoint).toBe('198.18.1.4:51820');
    pids = [...new Set([...pids, ...(await simPids(readManifest(dir)!))])];
  });

  it('stop: relay-2 deregisters and exits, and the others drop it', async () => {
    const pid = readManifest(dir)!.processes.find((p) => p.name === 'relay-2')!.pid!;
    const r = await sim(['stop', '--relay', 'relay-2']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/relay-2 .* stopped: it deregistered/);
    expect(isRunning(pid)).toBe(false);
    const s = await statusUntil(dir, 'relays to drop relay-2', (x) => x.converged.topology && sees(x, 'relay-1').join() === 'relay-1,relay-3,relay-4');
    expect(s.relays.find((x) => x.id === 'relay-2')!.process).toBe('stopped');
  });

  it('kill and restart: relay-3 comes back in its namespace with the same key', async () => {
    const before = await simStatus(dir);
    const key = before.relays.find((x) => x.id === 'relay-3')!.status!.publicKey;
    const pid = before.relays.find((x) => x.id === 'relay-3')!.pid!;

    const k = await sim(['kill', '--relay', 'relay-3']);
    expect(k.exitCode, k.stderr).toBe(0);
    expect(isRunning(pid)).toBe(false);
    // A crash does not deregister: the others still serve a topology with relay-3.
    const killed = await statusUntil(dir, 'relay-1 and relay-4 to serve', (x) => serving(x, 'relay-1') && serving(x, 'relay-4'), 30_000);
    expect(killed.relays.find((x) => x.id === 'relay-3')!.process).toBe('killed');
    for (const id of ['relay-1', 'relay-4']) expect(sees(killed, id)).toContain('relay-3');

    const r = await sim(['restart', '--relay', 'relay-3', '--wait', 'topology']);
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    const after = await simStatus(dir);
    const r3 = after.relays.find((x) => x.id === 'relay-3')!;
    expect(r3.process).toBe('running');
    expect(r3.pid).not.toBe(pid);
    expect(r3.status!.publicKey).toBe(key);
    expect(await netnsPids(`rcs-${m.simId}-r3`)).toContain(r3.pid);
    expect(sees(after, 'relay-3')).toEqual(['relay-1', 'relay-3', 'relay-4']);
    pids = [...new Set([...pids, ...(await simPids(readManifest(dir)!))])];
  });

  it('ban: relay-3 is refused by the control plane and by NATS within seconds, its links gone from every other relay; unban brings it back', async () => {
    const relayCli = (args: string[]) =>
      execa(
        'ip',
        [
          'netns',
          'exec',
          `rcs-${m.simId}-inet`,
          RELAY_CORE_BIN,
          'relay',
          ...args,
          '--control-plane-url',
          CONTROL_PLANE_URL,
          '--token-file',
          m.controlPlane.serviceRoleKeyFile,
        ],
        { reject: false, timeout: 60_000 },
      );
    const r3 = m.relays.find((r) => r.id === 'relay-3')!;
    const banned = await relayCli(['ban', '--relay', 'relay-3', '--reason', 'test']);
    expect(banned.exitCode, banned.stderr).toBe(0);
    expect(banned.stdout).toMatch(/relay relay-3 banned/);
    const gone = await statusUntil(
      dir,
      'relay-1 and relay-4 to drop relay-3 and its link, and relay-3 to lose the bus',
      (s) =>
        ['relay-1', 'relay-4'].every(
          (id) => !sees(s, id).includes('relay-3') && !s.relays.find((r) => r.id === id)!.status!.links!.some((l) => l.peerId === 'relay-3'),
        ) && s.relays.find((r) => r.id === 'relay-3')?.status?.bus.connected === false,
      20_000,
    );
    expect(sees(gone, 'relay-1')).toEqual(['relay-1', 'relay-4']);
    // The control plane refuses its heartbeats (its token stopped), nats-server its reconnects.
    await eventually('relay-3 to be refused', async () => /"banned"|is banned/.test(readFileSync(join(r3.stateDir, 'relay.log'), 'utf8')), 30_000);
    const natsLog = readFileSync(join(m.stateDir, 'nats', 'nats.log'), 'utf8');
    expect(natsLog).toMatch(/revoked|Authorization Violation|authentication error/i);
    expect((await relayCli(['ban', '--relay', 'relay-3'])).stdout).toMatch(/was banned already/);

    const unbanned = await relayCli(['unban', '--relay', 'relay-3']);
    expect(unbanned.exitCode, unbanned.stderr).toBe(0);
    expect(unbanned.stdout).toMatch(/relay relay-3 unbanned/);
    const back = await statusUntil(
      dir,
      'relay-3 back: registered, on the bus, seen by all',
      (s) =>
        ['relay-1', 'relay-3', 'relay-4'].every((id) => sees(s, id).join() === 'relay-1,relay-3,relay-4') &&
        s.relays.find((r) => r.id === 'relay-3')?.status?.bus.connected === true,
      60_000,
    );
    expect(back.relays.find((r) => r.id === 'relay-3')!.status!.state).toBe('serving');
  });

  it('down removes everything and keeps the logs; a second down has nothing to do', async () => {
    const before = readManifest(dir)!;
    pids = [...new Set([...pids, ...(await simPids(before))])];
    const inodes = netnsInodes(before);
    const r = await sim(['down']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`deleted namespace rcs-${before.simId}-inet`);
    await expectNothingLeft(before, pids, inodes);
    expect(existsSync(join(dir, 'relays/relay-1/relay.log'))).toBe(true);
    expect(existsSync(join(dir, 'relays/relay-1/wg.key'))).toBe(false);
    expect(existsSync(join(dir, 'control-plane/control-plane.log'))).toBe(true);
    const again = await sim(['down']);
    expect(again.exitCode).toBe(0);
    expect(again.stdout).toMatch(/nothing to remove/);
  });
});

describe('relay-core sim down after a crash', () => {
  let tmp: ReturnType<typeof tempDir>;
  let dir: string;
  let sim: ReturnType<typeof simCli>;
  let upProcess: ResultPromise | null = null;

  beforeAll(() => {
    tmp = tempDir('sim-crash');
    dir = join(tmp.dir, 'state');
    sim = simCli(dir);
  });

  afterAll(async () => {
    upProcess?.kill('SIGKILL');
    await sim(['down']);
    if (!process.env.KEEP_TMP) tmp.remove();
  });

  it('after SIGKILL of every process of a running sim, down leaves nothing', async () => {
    const r = await sim(['up', '--relays', '2', '--wait', 'topology', '--timeout', '90'], 240_000);
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    const m = readManifest(dir)!;
    const pids = await simPids(m);
    const inodes = netnsInodes(m);
    expect(pids.length).toBeGreaterThanOrEqual(4);
    // A short-lived helper caught in the list (a relay's `wg show` or `ip` read) may be gone already.
    for (const pid of pids) signal(pid, 'SIGKILL');
    const d = await sim(['down']);
    expect(d.exitCode, d.stderr).toBe(0);
    await expectNothingLeft(m, pids, inodes);
  });

  it('after SIGKILL of `sim up` while it builds, down finds everything from the manifest', async () => {
    upProcess = sim(['up', '--relays', '2', '--wait', 'topology', '--timeout', '90'], 240_000);
    // Kill it once the control plane has been started (namespaces exist, processes run).
    await eventually(
      'sim up to start the control plane',
      async () => {
        const x = readManifest(dir);
        return x?.processes.some((p) => p.kind === 'control-plane' && p.pid) ? x : null;
      },
      60_000,
      100,
    );
    upProcess.kill('SIGKILL');
    await upProcess;
    upProcess = null;
    const latest = readManifest(dir)!;
    const pids = await simPids(latest);
    const inodes = netnsInodes(latest);
    const d = await sim(['down']);
    expect(d.exitCode, `${d.stdout}\n${d.stderr}`).toBe(0);
    await expectNothingLeft(latest, pids, inodes);
  });
});
