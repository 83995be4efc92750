import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createActor, toPromise } from 'xstate';
import type { RegisterRequest } from '../../src/contract/api-relays.ts';
import { controlPlaneSession } from '../../src/daemon/control-plane-session.ts';
import { generateSigningKeyPair, importPrivateKey } from '../../src/events/signing.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { generateWgKeyPair, wgPublicKey } from '../../src/lib/wg-keys.ts';
import { busDetails, relay } from '../support/given.ts';
import { inMemoryRelayConfig } from '../support/relay-config.ts';
import { tempDir } from '../support/temp.ts';

/**
 * A running relay's key rotation, on the relay's side (docs/security.md, "Rotation"): the new key is
 * staged in the key file (the old one kept in wg.key.previous, 0600), and the registration that follows
 * announces it. A refusal puts the old key back for good; no answer puts it back and has the next
 * registration announce it again (the control plane may hold either); a staged key found at start is
 * announced, and kept through a control plane that does not answer. Against a stand-in gateway.
 */
describe('staging a WireGuard key', () => {
  const tmp = tempDir('key-staging');
  afterAll(() => tmp.remove());
  const servers: Server[] = [];
  afterEach(() => {
    for (const s of servers.splice(0)) s.close();
  });
  const identity = importPrivateKey(generateSigningKeyPair().seed);
  let n = 0;

  /** A gateway answering register-server from a script: a status, and the key it holds for the relay. */
  async function gateway(script: ('ok' | 'refuse' | 'down')[]) {
    const seen: RegisterRequest[] = [];
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        const r = JSON.parse(body) as RegisterRequest;
        seen.push(r);
        const step = script[Math.min(seen.length - 1, script.length - 1)]!;
        if (step === 'down') {
          res.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'unavailable', message: 'down' }));
          return;
        }
        if (step === 'refuse') {
          res.writeHead(409, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'key_in_use', message: 'no', field: 'publicKey' }));
          return;
        }
        const answer = {
          relay: { ...relay(1), publicKey: r.publicKey },
          readmitted: true,
          revision: 3,
          revisionTime: '2026-12-02T00:00:00.000Z',
          relays: [],
          sessions: [],
          bus: busDetails(),
          heartbeatIntervalSeconds: 10,
        };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    servers.push(server);
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
  }

  function session(url: string, stateDir: string) {
    const cfg = inMemoryRelayConfig({
      relayId: 'relay-1',
      name: 'relay-1',
      region: 'test',
      endpoint: '198.51.100.1:51820',
      stateDir,
      controlPlaneUrl: url,
      token: 'tok',
      topologyKey: null,
      natsServers: ['nats://127.0.0.1:4222'],
    });
    const bus = { connect: () => {}, deleteConsumer: async () => {}, credentialReplaced: () => {} };
    return controlPlaneSession(cfg, rootLogger({ test: 'key-staging' }, 'silent'), bus, identity, null, { attempts: 2, baseMs: 5, maxMs: 10 });
  }
  const request = (publicKey: string): { request: RegisterRequest } => ({
    request: { relayId: 'relay-1', name: 'relay-1', region: 'test', publicKey, endpoint: '198.51.100.1:51820' } as RegisterRequest,
  });
  const register = (s: ReturnType<typeof session>) => toPromise(createActor(s.register, { input: request(s.publicKey()) }).start());
  const keyOf = (dir: string) => wgPublicKey(readFileSync(join(dir, 'wg.key'), 'utf8').trim());

  it('stages the new key (the old one kept, 0600) and forgets the old one once the control plane holds the new', async () => {
    const dir = join(tmp.dir, `r${n++}`);
    const g = await gateway(['ok']);
    const s = session(g.url, dir);
    const old = s.publicKey();
    const staged = s.stageKey()!;
    expect(staged.previousPublicKey).toBe(old);
    expect(keyOf(dir)).toBe(staged.publicKey);
    expect(wgPublicKey(readFileSync(join(dir, 'wg.key.previous'), 'utf8').trim())).toBe(old);
    expect(statSync(join(dir, 'wg.key.previous')).mode & 0o777).toBe(0o600);
    // One rotation at a time.
    expect(s.stageKey()).toBeNull();
    await register(s);
    expect(g.seen.map((r) => [r.publicKey, r.rotateKey])).toEqual([[staged.publicKey, true]]);
    expect(existsSync(join(dir, 'wg.key.previous'))).toBe(false);
    expect(s.publicKey()).toBe(staged.publicKey);
  });

  it('a refusal puts the old key back, and the next registration is an ordinary one', async () => {
    const dir = join(tmp.dir, `r${n++}`);
    const g = await gateway(['refuse', 'ok']);
    const s = session(g.url, dir);
    const restored: unknown[] = [];
    s.onKeyRestored((k) => restored.push(k));
    const old = s.publicKey();
    const staged = s.stageKey()!;
    await expect(register(s)).rejects.toThrow(/key_in_use/);
    expect([keyOf(dir), s.publicKey(), existsSync(join(dir, 'wg.key.previous'))]).toEqual([old, old, false]);
    // The relay stages the old key on its devices again at once.
    expect(restored).toEqual([{ publicKey: old, previousPublicKey: staged.publicKey }]);
    await register(s);
    expect(g.seen.at(-1)).toMatchObject({ publicKey: old, rotateKey: false });
  });

  it('no answer puts the old key back too (the links are down meanwhile), and the next registration announces it again', async () => {
    const dir = join(tmp.dir, `r${n++}`);
    const g = await gateway(['down', 'down', 'ok']);
    const s = session(g.url, dir);
    const restored: unknown[] = [];
    s.onKeyRestored((k) => restored.push(k));
    const old = s.publicKey();
    s.stageKey();
    await expect(register(s)).rejects.toThrow(/503/);
    expect([keyOf(dir), existsSync(join(dir, 'wg.key.previous'))]).toEqual([old, false]);
    expect(restored).toHaveLength(1);
    await register(s);
    // The control plane may have taken the new key before its answer was lost: rotateKey brings it back.
    expect(g.seen.at(-1)).toMatchObject({ publicKey: old, rotateKey: true });
  });

  it('a staged key found at start is announced, and kept through a control plane that does not answer', async () => {
    const dir = join(tmp.dir, `r${n++}`);
    const first = session('http://127.0.0.1:9', dir);
    const old = first.publicKey();
    const next = generateWgKeyPair();
    // What a relay stopped between staging and announcing leaves behind.
    writeFileSync(join(dir, 'wg.key.previous'), readFileSync(join(dir, 'wg.key')), { mode: 0o600 });
    writeFileSync(join(dir, 'wg.key'), `${next.privateKey}\n`, { mode: 0o600 });
    const g = await gateway(['down', 'down', 'ok']);
    const s = session(g.url, dir);
    const restored: unknown[] = [];
    s.onKeyRestored((k) => restored.push(k));
    expect(s.publicKey()).toBe(next.publicKey);
    await expect(register(s)).rejects.toThrow(/503/);
    expect(restored).toEqual([]);
    expect([keyOf(dir), existsSync(join(dir, 'wg.key.previous'))]).toEqual([next.publicKey, true]);
    await register(s);
    expect(g.seen.at(-1)).toMatchObject({ publicKey: next.publicKey, rotateKey: true });
    expect(existsSync(join(dir, 'wg.key.previous'))).toBe(false);
    expect(old).not.toBe(next.publicKey);
  });
});
