import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { decode } from '@nats-io/jwt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalControlPlane, type LocalControlPlane } from '../../src/control-plane/local.ts';
import type { NatsServer } from '../../src/devnet/nats-server.ts';
import { eventually, RelayProcess } from '../../src/devnet/relay-process.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { startAuthedNats } from '../support/authed-nats.ts';
import { tempDir } from '../support/temp.ts';
import { relayOptions } from '../support/relay-spawner.ts';

/**
 * A relay's NATS user JWT expires and is renewed through the heartbeat (docs/security.md, "The bus"):
 * with a 60 s lifetime, each relay fetches a new JWT past half-life and moves its connection onto it (a
 * reconnect of its own) before the first one expires, so nats-server never has to close it for an
 * expired JWT; it goes on following the topology.
 */
describe('NATS credentials renewed through the heartbeat', () => {
  const log = rootLogger({ test: 'bus-renewal' }, 'warn');
  const TTL = 60;
  let tmp: ReturnType<typeof tempDir>;
  let nats: NatsServer;
  let cp: LocalControlPlane;
  const natsLog: string[] = [];
  const relays: RelayProcess[] = [];
  const expOf = (id: string) => {
    const creds = readFileSync(join(tmp.dir, id, 'nats.creds'), 'utf8');
    const jwt = /-----BEGIN NATS USER JWT-----\s+(\S+)\s+------END NATS USER JWT------/.exec(creds)?.[1];
    if (!jwt) throw new Error(`${id}: no JWT in nats.creds`);
    return decode(jwt).exp!;
  };

  beforeAll(async () => {
    tmp = tempDir('bus-renewal');
    nats = (await startAuthedNats(join(tmp.dir, 'nats'), join(tmp.dir, 'cp'), { onLog: (l) => natsLog.push(l) })).server;
    cp = await startLocalControlPlane({
      stateDir: join(tmp.dir, 'cp'),
      port: 0,
      natsServers: [nats.url],
      natsUserTtlSeconds: TTL,
      heartbeatSeconds: 1,
      logger: log,
    });
  });

  afterAll(async () => {
    await Promise.all(relays.map((r) => r.stop('SIGKILL')));
    await cp?.stop();
    await nats?.stop();
    if (!process.env.KEEP_TMP) tmp?.remove();
  });

  it('each relay renews past half-life, moves its connection onto the new JWT before the first expires, and keeps following', async () => {
    const start = (id: string, n: number) => {
      const r = new RelayProcess(relayOptions(tmp.dir, cp, id, n)).start();
      relays.push(r);
      return r;
    };
    const [r1, r2] = [start('relay-1', 1), start('relay-2', 2)];
    await eventually('both relays following', async () => {
      const s = await Promise.all([r1.status(), r2.status()]);
      return s.every((x) => x.bus.connected && x.bus.follower === 'following' && x.relays.length === 2);
    });
    const first = { 'relay-1': expOf('relay-1'), 'relay-2': expOf('relay-2') };
    // Past the first JWTs' expiry (and a little more for the reconnect), each relay holding a later one.
    await eventually(
      'both relays renewed and past their first JWT',
      async () =>
        Date.now() / 1000 > Math.max(first['relay-1'], first['relay-2']) + 5 && expOf('relay-1') > first['relay-1'] && expOf('relay-2') > first['relay-2'],
      (TTL + 30) * 1000,
      1000,
    );
    // Each relay moved onto its renewed JWT itself: nats-server closed no connection for an expired one.
    for (const id of ['relay-1', 'relay-2']) {
      const text = readFileSync(join(tmp.dir, id, 'relay.log'), 'utf8');
      expect(text, id).toMatch(/NATS credential renewed/);
      expect(text, id).toMatch(/moving the bus connection onto the renewed NATS credential/);
      expect(text, id).toMatch(/"forced":true[^\n]*NATS reconnect/);
      expect(text, id).not.toMatch(/authentication expired/i);
    }
    expect(natsLog.join('')).not.toMatch(/authentication expired/i);
    await eventually('both relays on the bus again', async () => {
      const s = await Promise.all([r1.status(), r2.status()]);
      return s.every((x) => x.bus.connected && x.bus.follower === 'following');
    });
    // And they still follow the stream: a relay joining now is seen by both.
    start('relay-3', 3);
    await eventually('relay-3 seen by relay-1 and relay-2', async () => {
      const s = await Promise.all([r1.status(), r2.status()]);
      return s.every((x) => x.relays.some((r) => r.id === 'relay-3'));
    });
  }, 180_000);
});
