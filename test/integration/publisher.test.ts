import { jetstreamManager } from '@nats-io/jetstream';
import { join } from 'node:path';
import { createClient } from '@supabase/supabase-js';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalControlPlane, type LocalControlPlane } from '../../src/control-plane/local.ts';
import { STREAMS } from '../../src/contract/subjects.ts';
import { eventually } from '../../src/devnet/relay-process.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { type AuthedNats, startAuthedNats } from '../support/authed-nats.ts';
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts';
import { tempDir } from '../support/temp.ts';
import { key } from '../support/given.ts';

/**
 * The topology publisher on real components (PGlite, the Deno functions, nats-server): a burst of
 * outbox rows goes to JetStream in pipelines, in revision order, each once, and a message someone else
 * put in the stream in between does not stop it.
 */
describe('the topology publisher', () => {
  const log = rootLogger({ test: 'publisher' }, 'warn');
  let tmp: ReturnType<typeof tempDir>;
  let bus: AuthedNats;
  let cp: LocalControlPlane;

  beforeAll(async () => {
    tmp = tempDir('publisher');
    bus = await startAuthedNats(join(tmp.dir, 'nats'), join(tmp.dir, 'cp'));
    cp = await startLocalControlPlane({ stateDir: join(tmp.dir, 'cp'), port: 0, natsServers: [bus.url], heartbeatSeconds: 10, logger: log });
  });

  afterAll(async () => {
    await cp?.stop();
    await bus?.server.stop();
    tmp?.remove();
  });

  it('publishes 300 events in revision order, each once: a backlog after a NATS outage, past a foreign message in the stream', async () => {
    const N = 300;
    const client = createClient(cp.url, cp.serviceRoleKey, { auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false } });
    const register = (n: number) =>
      client.functions.invoke('register-server', {
        body: { relayId: `relay-${n}`, name: `Relay ${n}`, region: 'test', publicKey: key(n), endpoint: `198.51.100.${n % 250}:${20000 + n}` },
        method: 'POST',
      });
    const burst = async (from: number, to: number) => {
      for (let i = from; i <= to; i += 8) {
        const rs = await Promise.all(Array.from({ length: Math.min(8, to - i + 1) }, (_, k) => register(i + k)));
        for (const r of rs) expect(r.error, String(r.error)).toBeNull();
      }
    };
    // Eight registrations at a time; after the first 100, a foreign message lands in the topology stream.
    await burst(1, 100);
    await eventually('the publisher to reach revision 100', async () => (cp.publisher!.publishedRevision >= 100 ? true : null), 60_000);
    const foreign = await bus.connect({ kind: 'publisher' });
    await foreign.publish('relaynet.topology.nobody.relay-admitted', new TextEncoder().encode('{"not":"an event"}'));
    await foreign.flush();
    await foreign.close();
    // With NATS away, 200 rows pile up in the outbox; when it is back they go out in pipelines.
    await bus.server.stop();
    await burst(101, N);
    // Nothing could be acknowledged meanwhile: the publisher and its cursor in the database are at 100.
    expect(cp.publisher!.publishedRevision).toBe(100);
    const db = postgres(cp.dbUrl, { max: 1, prepare: false, onnotice: () => {} });
    try {
      expect(Number((await db`select published_revision from relaynet.publisher_cursor`)[0]!.published_revision)).toBe(100);
    } finally {
      await db.end({ timeout: 2 });
    }
    await bus.server.start();
    await eventually('the publisher to reach revision 300', async () => (cp.publisher!.publishedRevision >= N ? true : null), 60_000);

    const nc = await bus.connect({ kind: 'admin' });
    try {
      const jsm = await jetstreamManager(nc);
      const info = await jsm.streams.info(STREAMS.topology);
      const revisions: number[] = [];
      let foreignSeen = 0;
      for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
        const m = await jsm.streams.getMessage(STREAMS.topology, { seq });
        const ev = JSON.parse(new TextDecoder().decode(m!.data)) as { data?: { revision?: number } };
        if (typeof ev.data?.revision === 'number') revisions.push(ev.data.revision);
        else foreignSeen++;
      }
      expect(foreignSeen).toBe(1);
      expect(revisions).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    } finally {
      await nc.close();
    }
    // PGlite's multiplexer hands the publisher the outbox's notifications: admissions went out on them.
    expect(cp.publisher!.notifiedRounds).toBeGreaterThanOrEqual(1);
  });
});

/** On a real PostgreSQL too the publisher LISTENs: a commit that appends events wakes it (migration 20261213000001). */
describe('the topology publisher on PostgreSQL', () => {
  const log = rootLogger({ test: 'publisher-pg' }, 'warn');
  let tmp: ReturnType<typeof tempDir>;
  let bus: AuthedNats;
  let pg: TestPostgres;
  let cp: LocalControlPlane;

  beforeAll(async () => {
    tmp = tempDir('publisher-pg');
    pg = await startTestPostgres();
    bus = await startAuthedNats(join(tmp.dir, 'nats'), join(tmp.dir, 'cp'));
    cp = await startLocalControlPlane({ stateDir: join(tmp.dir, 'cp'), port: 0, dbUrl: pg.url, natsServers: [bus.url], heartbeatSeconds: 10, logger: log });
  });

  afterAll(async () => {
    await cp?.stop();
    await bus?.server.stop();
    await pg?.stop();
    tmp?.remove();
  });

  it('publishes each admission on the outbox notification, not only at its next read', async () => {
    const client = createClient(cp.url, cp.serviceRoleKey, { auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false } });
    const before = cp.publisher!.notifiedRounds;
    for (const n of [1, 2, 3]) {
      const r = await client.functions.invoke('register-server', {
        body: { relayId: `relay-${n}`, name: `Relay ${n}`, region: 'test', publicKey: key(n), endpoint: `198.51.100.${n}:51820` },
        method: 'POST',
      });
      expect(r.error, String(r.error)).toBeNull();
      await eventually(`revision ${n} on the stream`, async () => (cp.publisher!.publishedRevision >= n ? true : null), 30_000);
    }
    expect(cp.publisher!.notifiedRounds - before).toBeGreaterThanOrEqual(1);
  });
});
