import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RelayStatus } from '../../src/daemon/relay-status.ts';
import { fetchStatus } from '../../src/daemon/status-server.ts';
import { eventually, RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import { meshIndex } from '../../src/kernel/mesh.ts';
import { readManifest, type Manifest, type SimRelay } from '../../src/sim/manifest.ts';
import { isRunning, linkNames, netnsPids, processName, signal } from '../../src/sim/netns.ts';
import { tempDir } from '../support/temp.ts';

/**
 * The full mesh on real WireGuard (wireguard-go), in a `relay-core sim` of network namespaces: real
 * handshakes and real pings between mesh addresses, joins, a graceful stop, a crash and a return,
 * a daemon restarted in place, and the data plane riding out a control plane and NATS that are gone.
 * The sim runs relays with keepalive 1 s, stale after 5 s, down after 10 s.
 */
describe('the mesh on real WireGuard in a sim', () => {
  let tmp: ReturnType<typeof tempDir>;
  let dir: string;
  const sim = (args: string[], timeoutMs = 150_000) => execa(RELAY_CORE_BIN, ['sim', ...args, '--state-dir', dir], { reject: false, timeout: timeoutMs });
  const manifest = (): Manifest => readManifest(dir)!;
  const relayOf = (id: string): SimRelay => manifest().relays.find((r) => r.id === id)!;
  const status = (id: string): Promise<RelayStatus> => fetchStatus(join(relayOf(id).stateDir, 'relay.sock')) as Promise<RelayStatus>;
  const inNs = (id: string, argv: string[], timeoutMs = 15_000) =>
    execa('ip', ['netns', 'exec', relayOf(id).namespace, ...argv], { reject: false, timeout: timeoutMs });
  /** The relay's mesh devices in its namespace. */
  const devices = async (id: string) => (await linkNames(relayOf(id).namespace)).filter((l) => new RegExp(`^${manifest().wgPrefix}\\d+m\\d+$`).test(l)).sort();
  const wgDump = async (id: string, dev: string) =>
    (await inNs(id, ['wg', 'show', dev, 'dump'])).stdout
      .trim()
      .split('\n')
      .slice(1)
      .map((l) => l.split('\t'));
  const ping = async (from: string, to: string) => {
    const a = (await status(from)).meshAddress!;
    const b = (await status(to)).meshAddress!;
    return (await inNs(from, ['ping', '-c', '2', '-i', '0.2', '-W', '2', '-I', a, b])).exitCode === 0;
  };
  const linksOf = async (id: string) => Object.fromEntries((await status(id)).links.map((l) => [l.peerId, l.state]));
  const logLines = (id: string) => readFileSync(join(relayOf(id).stateDir, 'relay.log'), 'utf8').split('\n');

  beforeAll(() => {
    tmp = tempDir('mesh');
    dir = join(tmp.dir, 'state');
  });

  afterAll(async () => {
    const r = await sim(['down']);
    expect(r.exitCode, r.stderr).toBe(0);
    if (!process.env.KEEP_TMP) tmp.remove();
  });

  it('4 relays converge: every relay pings every other mesh address through its tunnel, wg shows exactly 3 fresh peers', async () => {
    const up = await sim(['up', '--relays', '4', '--timeout', '90']);
    expect(up.exitCode, up.stderr + up.stdout).toBe(0);
    const ids = ['relay-1', 'relay-2', 'relay-3', 'relay-4'];
    for (const id of ids) {
      const devs = await devices(id);
      expect(devs).toHaveLength(3);
      for (const dev of devs) {
        const peers = await wgDump(id, dev);
        expect(peers).toHaveLength(1);
        const handshake = Number(peers[0]![4]) * 1000;
        expect(Date.now() - handshake, `${id} ${dev}: latest handshake ${peers[0]![4]} (links ${JSON.stringify(await linksOf(id))})`).toBeLessThan(60_000);
      }
      expect(Object.values(await linksOf(id))).toEqual(['up', 'up', 'up']);
    }
    for (const a of ids) for (const b of ids) if (a !== b) expect(await ping(a, b), `${a} -> ${b}`).toBe(true);
  });

  it('a 5th relay joins: its links come up, and the existing relays apply operations on the new link only', async () => {
    const before = Object.fromEntries(['relay-1', 'relay-2', 'relay-3', 'relay-4'].map((id) => [id, logLines(id).length]));
    const add = await sim(['add', '--relay', 'relay-5', '--timeout', '90']);
    expect(add.exitCode, add.stderr + add.stdout).toBe(0);
    const five = meshIndex((await status('relay-5')).meshAddress!);
    for (const id of Object.keys(before)) {
      expect((await linksOf(id))['relay-5']).toBe('up');
      const ops = logLines(id)
        .slice(before[id])
        .filter((l) => l.includes('"KernelReconciled"'))
        .flatMap((l) => (JSON.parse(l) as { ops: { op: string; dev?: string; route?: { dev: string } }[] }).ops);
      expect(ops.length).toBeGreaterThan(0);
      expect(ops.map((o) => o.dev ?? o.route?.dev).filter((d) => !d?.endsWith(`m${five}`))).toEqual([]);
    }
    expect(await ping('relay-5', 'relay-1')).toBe(true);
  });

  it('a relay stopped gracefully: every other relay removes its link, and nothing of it remains in any namespace', async () => {
    const two = meshIndex((await status('relay-2')).meshAddress!);
    const stop = await sim(['stop', '--relay', 'relay-2']);
    expect(stop.exitCode, stop.stderr).toBe(0);
    await eventually('every relay to drop relay-2', async () => {
      for (const id of ['relay-1', 'relay-3', 'relay-4', 'relay-5']) {
        if ((await linksOf(id))['relay-2'] !== undefined) return null;
        if ((await devices(id)).some((d) => d.endsWith(`m${two}`))) return null;
      }
      return true;
    });
    expect(await devices('relay-2')).toEqual([]);
  });

  it('a killed relay: the others mark its link stale then down, keep it configured, and it comes back up on restart', async () => {
    const seen = new Set<string>();
    expect((await sim(['kill', '--relay', 'relay-3'])).exitCode).toBe(0);
    // wireguard-go outlives a crashed daemon; kill it too, as the crash of the whole host would.
    for (const pid of await netnsPids(relayOf('relay-3').namespace)) if (processName(pid) === 'wireguard-go') signal(pid, 'SIGKILL');
    await eventually('relay-3 devices gone', async () => ((await devices('relay-3')).length === 0 ? true : null));
    await eventually(
      'relay-1 to mark relay-3 down',
      async () => {
        const s = (await linksOf('relay-1'))['relay-3']!;
        seen.add(s);
        return s === 'down' ? true : null;
      },
      30_000,
      250,
    );
    expect(seen.has('stale')).toBe(true);
    const three = meshIndex(relayOf('relay-3').meshAddress!);
    expect((await devices('relay-1')).some((d) => d.endsWith(`m${three}`))).toBe(true);
    const restart = await sim(['restart', '--relay', 'relay-3', '--timeout', '90']);
    expect(restart.exitCode, restart.stderr + restart.stdout).toBe(0);
    await eventually('relay-1 to see relay-3 up again', async () => ((await linksOf('relay-1'))['relay-3'] === 'up' ? true : null), 30_000);
    expect(logLines('relay-3').filter((l) => l.includes('registration failed'))).toEqual([]);
  });

  it('a daemon restarted in place adopts its kernel state with zero mutating operations', async () => {
    const devsBefore = await devices('relay-4');
    expect((await sim(['kill', '--relay', 'relay-4'])).exitCode).toBe(0);
    const restart = await sim(['restart', '--relay', 'relay-4', '--timeout', '90']);
    expect(restart.exitCode, restart.stderr + restart.stdout).toBe(0);
    const st = await eventually('relay-4 to have reconciled', async () => {
      const s = await status('relay-4');
      return s.kernel.rounds >= 1 && s.links.every((l) => l.state === 'up') ? s : null;
    });
    expect(st.kernel.mutations).toBe(0);
    expect(await devices('relay-4')).toEqual(devsBefore);
  });

  it('the data plane does not need the control plane: with NATS and the control plane frozen for 60 s links stay up, then relays resume', async () => {
    const ids = ['relay-1', 'relay-3', 'relay-4', 'relay-5'];
    const before = Object.fromEntries(await Promise.all(ids.map(async (id) => [id, await status(id)] as const)));
    const relayPids = () =>
      manifest()
        .processes.filter((p) => p.kind === 'relay' && ids.includes(p.name))
        .map((p) => `${p.name}:${p.pid}`);
    const pidsBefore = relayPids();
    const services = manifest().processes.filter((p) => p.kind !== 'relay' && p.pid);
    // SIGSTOP on each service's process group: to the relays, a server that answers nothing.
    for (const p of services) expect(signal(-p.pid!, 'SIGSTOP'), p.name).toBe(true);
    try {
      for (const t of [20_000, 40_000, 60_000]) {
        await new Promise((r) => setTimeout(r, t - (t === 20_000 ? 0 : 20_000)));
        expect(await ping('relay-1', 'relay-4'), `ping at ${t / 1000} s`).toBe(true);
        expect(await ping('relay-5', 'relay-3'), `ping at ${t / 1000} s`).toBe(true);
        for (const id of ids)
          expect(
            Object.values(await linksOf(id)).every((s) => s === 'up'),
            `${id} links at ${t / 1000} s`,
          ).toBe(true);
      }
      expect((await status('relay-1')).bus.connected).toBe(false);
    } finally {
      for (const p of services) signal(-p.pid!, 'SIGCONT');
    }
    await eventually(
      'every relay reconnected and following again',
      async () => {
        const st = await Promise.all(ids.map(status));
        return st.every((s) => s.state === 'serving' && s.bus.connected && s.bus.follower === 'following') ? st : null;
      },
      90_000,
    );
    for (const id of ids) expect((await status(id)).kernel.mutations, `${id} kernel churn`).toBe(before[id]!.kernel.mutations);
    // The same relay processes, none restarted, all alive.
    expect(relayPids()).toEqual(pidsBefore);
    for (const p of manifest().processes.filter((p) => p.kind === 'relay' && ids.includes(p.name))) expect(isRunning(p.pid!), p.name).toBe(true);
  }, 240_000);
});
