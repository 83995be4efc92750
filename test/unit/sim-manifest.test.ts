import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { parseManifest, readManifest, withStateDirLock, writeManifest, type Manifest } from '../../src/sim/manifest.ts';
import { tempDir } from '../support/temp.ts';

let tmp: ReturnType<typeof tempDir> | null = null;
afterEach(() => {
  tmp?.remove();
  tmp = null;
});

function manifest(dir: string): Manifest {
  return {
    version: 1,
    simId: 'ab12',
    wgPrefix: 'xyz',
    stateDir: dir,
    createdAt: '2026-01-01T00:00:00.000Z',
    settings: {
      keepaliveSeconds: 1,
      linkStaleAfterMs: 5000,
      linkDownAfterMs: 10000,
      observeIntervalMs: 1000,
      heartbeatSeconds: 5,
      logLevel: 'info',
      natsNodes: 1,
    },
    namespaces: ['rcs-ab12-inet', 'rcs-ab12-svc', 'rcs-ab12-r1'],
    veths: [{ name: 'vab12r1', namespace: 'rcs-ab12-inet', peer: 'pub0', peerNamespace: 'rcs-ab12-r1' }],
    processes: [
      {
        kind: 'relay',
        name: 'relay-1',
        namespace: 'rcs-ab12-r1',
        command: ['ip', 'netns', 'exec', 'rcs-ab12-r1', 'relay-core', 'run'],
        pid: 1234,
        log: `${dir}/relays/relay-1/relay.log`,
        startedAt: '2026-01-01T00:00:01.000Z',
        stoppedBy: null,
      },
      { kind: 'nats', name: 'nats', namespace: 'rcs-ab12-svc', command: ['ip'], pid: null, log: `${dir}/nats/nats.log`, startedAt: null, stoppedBy: null },
    ],
    relays: [
      {
        id: 'relay-1',
        index: 1,
        namespace: 'rcs-ab12-r1',
        publicAddress: '198.18.1.1',
        publicAddress6: '2001:db8:18::1:1',
        endpoint: '198.18.1.1:51820',
        meshAddress: null,
        publicKey: null,
        stateDir: `${dir}/relays/relay-1`,
        tokenFile: `${dir}/relays/relay-1/token`,
      },
    ],
    clients: [],
    controlPlane: {
      url: 'http://198.18.0.2:54321',
      natsUrl: 'nats://198.18.0.2:4222',
      stateDir: `${dir}/control-plane`,
      serviceRoleKeyFile: `${dir}/service-role.key`,
      topologyPublicKey: 'k',
    },
  };
}

describe('sim manifest', () => {
  it('round-trips through an atomic write, mode 0600, leaving no temp file', () => {
    tmp = tempDir('sim-manifest');
    const m = manifest(tmp.dir);
    writeManifest(m);
    expect(readManifest(tmp.dir)).toEqual(m);
    expect(statSync(`${tmp.dir}/manifest.json`).mode & 0o777).toBe(0o600);
    expect(readdirSync(tmp.dir)).toEqual(['manifest.json']);
  });

  it('is null when absent, and an error naming the field when malformed', () => {
    tmp = tempDir('sim-manifest');
    expect(readManifest(tmp.dir)).toBeNull();
    writeFileSync(`${tmp.dir}/manifest.json`, '{"version":1');
    expect(() => readManifest(tmp!.dir)).toThrow(/not JSON/);
    expect(() => parseManifest(JSON.stringify({ ...manifest('/x'), wgPrefix: 'ABCD' }))).toThrow(/wgPrefix/);
    expect(() => parseManifest(JSON.stringify({ ...manifest('/x'), simId: 'toolong' }))).toThrow(/simId/);
    const bad = manifest('/x');
    bad.processes[0]!.kind = 'shell' as 'relay';
    expect(() => parseManifest(JSON.stringify(bad))).toThrow(/processes\.0\.kind/);
  });

  it('refuses to write a manifest that does not match the schema', () => {
    tmp = tempDir('sim-manifest');
    expect(() => writeManifest({ ...manifest(tmp!.dir), relays: [{ ...manifest(tmp!.dir).relays[0]!, index: 0 }] })).toThrow();
    expect(existsSync(`${tmp.dir}/manifest.json`)).toBe(false);
  });

  it('the state-dir lock excludes a second holder and is taken over from a dead one', async () => {
    tmp = tempDir('sim-manifest');
    const dir = tmp.dir;
    await withStateDirLock(dir, async () => {
      await expect(withStateDirLock(dir, async () => 1)).rejects.toThrow(/another sim command \(pid \d+\)/);
    });
    expect(existsSync(`${dir}/sim.lock`)).toBe(false);
    writeFileSync(`${dir}/sim.lock`, '999999999');
    await expect(withStateDirLock(dir, async () => 'taken over')).resolves.toBe('taken over');
    await expect(withStateDirLock(`${dir}/missing`, async () => 1)).rejects.toThrow(/no sim in/);
  });
});
