import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RelayStatus } from '../../src/daemon/relay-status.ts';
import { fetchStatus } from '../../src/daemon/status-server.ts';
import { eventually, RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import { linkDevice, meshIndex } from '../../src/kernel/mesh.ts';
import { readManifest, type Manifest, type SimRelay } from '../../src/sim/manifest.ts';
import { NETNS_ETC } from '../../src/sim/netns.ts';
import { tempDir } from '../support/temp.ts';

/**
 * Issue 12: one relay registered with an endpoint whose name never resolves (`nowhere.invalid`, the
 * reserved TLD; a sim relay's DNS goes to its own namespace's loopback) must not cost any other relay
 * anything: every other link stays up, every kernel round succeeds, a relay joining afterwards gets all
 * its links, and the name is never handed to `wg`. Real WireGuard (wireguard-go) in a sim.
 */
describe('a sim relay registered with an unresolvable endpoint', () => {
  let tmp: ReturnType<typeof tempDir>;
  let dir: string;
  let namespaces: string[] = [];
  const sim = (args: string[], timeoutMs = 150_000) => execa(RELAY_CORE_BIN, ['sim', ...args, '--state-dir', dir], { reject: false, timeout: timeoutMs });
  const manifest = (): Manifest => readManifest(dir)!;
  const relayOf = (id: string): SimRelay => manifest().relays.find((r) => r.id === id)!;
  const status = (id: string): Promise<RelayStatus> => fetchStatus(join(relayOf(id).stateDir, 'relay.sock')) as Promise<RelayStatus>;
  const inNs = (id: string, argv: string[], timeoutMs = 15_000) =>
    execa('ip', ['netns', 'exec', relayOf(id).namespace, ...argv], { reject: false, timeout: timeoutMs });
  const indexOf = async (id: string) => meshIndex((await status(id)).meshAddress!);
  /** The one peer of `a`'s link device to `b`, as `wg show dump` has it. */
  const wgPeer = async (a: string, b: string) => {
    const dev = linkDevice(manifest().wgPrefix, await indexOf(a), await indexOf(b));
    const r = await inNs(a, ['wg', 'show', dev, 'dump']);
    expect(r.exitCode, `${a}: wg show ${dev}: ${r.stderr}`).toBe(0);
    const [, , endpoint, , handshake, rx] = r.stdout.trim().split('\n')[1]!.split('\t');
    return { dev, endpoint: endpoint!, handshakeMs: Number(handshake) * 1000, rxBytes: Number(rx) };
  };
  const ping = async (from: string, to: string) => {
    const a = (await status(from)).meshAddress!;
    const b = (await status(to)).meshAddress!;
    return (await inNs(from, ['ping', '-c', '2', '-i', '0.2', '-W', '2', '-I', a, b])).exitCode === 0;
  };
  const linksOf = async (id: string) => Object.fromEntries((await status(id)).links.map((l) => [l.peerId, l]));
  const logLines = (id: string) =>
    readFileSync(join(relayOf(id).stateDir, 'relay.log'), 'utf8')
      .split('\n')
      .filter(Boolean);

  /** Between healthy relays: link up on both ends, a handshake within WireGuard's reject window, bytes still arriving, and a ping through. */
  async function expectLinkAlive(a: string, b: string): Promise<void> {
    expect((await linksOf(a))[b]?.state, `${a} -> ${b}`).toBe('up');
    const before = await wgPeer(a, b);
    expect(Date.now() - before.handshakeMs, `${a} -> ${b}: handshake age`).toBeLessThan(180_000);
    // Keepalive 1 s: the peer is heard within a few seconds.
    await eventually(`${a} to hear ${b}`, async () => (await wgPeer(a, b)).rxBytes > before.rxBytes, 10_000, 500);
    expect(await ping(a, b), `ping ${a} -> ${b}`).toBe(true);
  }

  beforeAll(() => {
    tmp = tempDir('resolve');
    dir = join(tmp.dir, 'state');
  });

  afterAll(async () => {
    namespaces = readManifest(dir)?.namespaces ?? namespaces;
    const r = await sim(['down']);
    expect(r.exitCode, r.stderr).toBe(0);
    // The namespaces' resolver files go with them.
    for (const ns of namespaces) expect(existsSync(join(NETNS_ETC, ns)), ns).toBe(false);
    if (!process.env.KEEP_TMP) tmp.remove();
  });

  it('3 healthy relays converge', async () => {
    const up = await sim(['up', '--relays', '3', '--timeout', '90'], 240_000);
    expect(up.exitCode, up.stderr + up.stdout).toBe(0);
    namespaces = manifest().namespaces;
    // A relay's namespace resolves nothing through the host.
    expect(readFileSync(join(NETNS_ETC, relayOf('relay-1').namespace, 'resolv.conf'), 'utf8')).toMatch(/^nameserver 127\.0\.0\.1$/m);
  });

  it('relay-4 registers nowhere.invalid: the others keep every link and every kernel round, and report the name per peer, once', async () => {
    const healthy = ['relay-1', 'relay-2', 'relay-3'];
    const before = Object.fromEntries(await Promise.all(healthy.map(async (id) => [id, (await status(id)).kernel] as const)));
    const add = await sim(['add', '--relay', 'relay-4', '--endpoint', 'nowhere.invalid:51820', '--wait', 'topology', '--timeout', '90']);
    expect(add.exitCode, add.stderr + add.stdout).toBe(0);
    namespaces = manifest().namespaces;

    // Each healthy relay knows relay-4 by name, has tried it and says so on the link.
    for (const id of healthy) {
      const link = await eventually(
        `${id} to report relay-4's endpoint unresolved`,
        async () => {
          const l = (await linksOf(id))['relay-4'];
          return l?.endpointResolution?.error ? l : null;
        },
        60_000,
        500,
      );
      expect(link.peerEndpoint).toBe('nowhere.invalid:51820');
      expect(link.endpointResolution).toMatchObject({ host: 'nowhere.invalid', address: null, error: expect.stringMatching(/nowhere\.invalid/) });
    }
    // Retries meanwhile (2 s, 4 s, 8 s ...).
    await new Promise((r) => setTimeout(r, 15_000));

    for (const a of healthy) for (const b of healthy) if (a !== b) await expectLinkAlive(a, b);
    for (const id of healthy) {
      const k = (await status(id)).kernel;
      expect(k.failures, `${id}: kernel failures (last error ${k.lastError})`).toBe(before[id]!.failures);
      expect(k.rounds, `${id}: rounds for the join`).toBeGreaterThan(before[id]!.rounds);
      const lines = logLines(id);
      // The name never reached a kernel operation; the failure was recorded once despite the retries.
      expect(lines.filter((l) => l.includes('"KernelReconciled"') && l.includes('nowhere.invalid'))).toEqual([]);
      expect(lines.filter((l) => l.includes('"KernelOperationFailed"'))).toEqual([]);
      expect(
        lines.filter((l) => l.includes('"PeerEndpointResolved"') && l.includes('"relay-4"')),
        id,
      ).toHaveLength(1);
      // The device to relay-4 is there, its peer programmed without an endpoint (or with the one learned from relay-4).
      const p = await wgPeer(id, 'relay-4');
      expect(p.endpoint).toMatch(/^\(none\)$|^198\.18\.1\.4:\d+$/);
    }
  });

  it('relay-4 dials the others itself: they answer and learn its address, so even its links come up', async () => {
    for (const id of ['relay-1', 'relay-2', 'relay-3']) {
      await eventually(`${id}'s link to relay-4 up`, async () => (await linksOf(id))['relay-4']?.state === 'up', 60_000, 500);
      expect((await wgPeer(id, 'relay-4')).endpoint).toMatch(/^198\.18\.1\.4:\d+$/);
    }
  });

  it('relay-5 joins afterwards and gets all its links', async () => {
    const add = await sim(['add', '--relay', 'relay-5', '--wait', 'topology', '--timeout', '90']);
    expect(add.exitCode, add.stderr + add.stdout).toBe(0);
    namespaces = manifest().namespaces;
    const others = ['relay-1', 'relay-2', 'relay-3', 'relay-4'];
    await eventually(
      'relay-5 links up',
      async () => {
        const l = await linksOf('relay-5');
        return others.every((o) => l[o]?.state === 'up') ? l : null;
      },
      90_000,
      500,
    );
    for (const o of ['relay-1', 'relay-2', 'relay-3']) {
      await eventually(`${o}'s link to relay-5 up`, async () => (await linksOf(o))['relay-5']?.state === 'up', 30_000, 500);
      await expectLinkAlive('relay-5', o);
      await expectLinkAlive(o, 'relay-5');
    }
    expect((await status('relay-5')).kernel.failures).toBe(0);
    // And the healthy mesh is as it was.
    for (const a of ['relay-1', 'relay-2', 'relay-3'])
      for (const b of ['relay-1', 'relay-2', 'relay-3']) if (a !== b) expect((await linksOf(a))[b]?.state, `${a} -> ${b}`).toBe('up');
  });

  it('relay-6 registers a name that resolves (the sim hosts file): the others program its address, and replay re-plans their rounds with it', async () => {
    const add = await sim(['add', '--relay', 'relay-6', '--endpoint', 'relay-6.sim.test:51820', '--wait', 'topology', '--timeout', '90']);
    expect(add.exitCode, add.stderr + add.stdout).toBe(0);
    namespaces = manifest().namespaces;
    for (const id of ['relay-1', 'relay-2', 'relay-5']) {
      const link = await eventually(
        `${id}'s link to relay-6 up`,
        async () => {
          const l = (await linksOf(id))['relay-6'];
          return l?.state === 'up' ? l : null;
        },
        60_000,
        500,
      );
      expect(link.endpointResolution).toEqual({ host: 'relay-6.sim.test', address: '198.18.1.6', error: null });
      expect((await wgPeer(id, 'relay-6')).endpoint).toBe(`198.18.1.6:${51820 + (await indexOf(id))}`);
      expect(logLines(id).filter((l) => l.includes('"PeerEndpointResolved"') && l.includes('"relay-6"'))).toHaveLength(1);
    }
    await expectLinkAlive('relay-1', 'relay-6');
    for (const id of ['relay-1', 'relay-5']) {
      const r = await execa(RELAY_CORE_BIN, ['replay', '--relay', id, '--sim', dir, '--json'], { reject: false, timeout: 60_000 });
      expect(r.exitCode, r.stderr).toBe(0);
      const checks = (JSON.parse(r.stdout) as { checks: { rounds: number; matched: number; mismatched: number; unchecked: number; inconsistent: number } })
        .checks;
      expect(checks.rounds, id).toBeGreaterThan(0);
      expect(checks, id).toMatchObject({ matched: checks.rounds, mismatched: 0, unchecked: 0, inconsistent: 0 });
    }
  });
});
