import { jetstreamManager } from '@nats-io/jetstream';
import { headers } from '@nats-io/transport-node';
import { randomUUID } from 'node:crypto';
import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalControlPlane, type LocalControlPlane } from '../../src/control-plane/local.ts';
import type { NatsServer } from '../../src/devnet/nats-server.ts';
import { eventually, RelayProcess } from '../../src/devnet/relay-process.ts';
import type { RelayStatus } from '../../src/daemon/relay-status.ts';
import { envelope } from '../../src/contract/envelope.ts';
import { generateSigningKeyPair, importPrivateKey, signBytes } from '../../src/events/signing.ts';
import { STREAMS } from '../../src/contract/subjects.ts';
import { decodeEvent, encodeEvent, SIGNATURE_HEADER } from '../../src/events/wire.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { relay as relayRecord } from '../support/given.ts';
import { type AuthedNats, startAuthedNats } from '../support/authed-nats.ts';
import { tempDir } from '../support/temp.ts';
import { relayOptions } from '../support/relay-spawner.ts';

/**
 * End to end on real components: nats-server with JetStream, the local control plane (Edge Functions on
 * Deno, embedded Postgres) and `relay-core run` processes, observed through their status sockets.
 */
describe('relays on the real control plane and event bus', () => {
  const log = rootLogger({ test: 'relays' }, 'warn');
  let tmp: ReturnType<typeof tempDir>;
  let nats: NatsServer;
  let cp: LocalControlPlane;
  let bus: AuthedNats;
  const relays = new Map<string, RelayProcess>();

  const spawnRelay = (id: string, n: number, extra: Partial<ConstructorParameters<typeof RelayProcess>[0]> = {}) => {
    const r = new RelayProcess(relayOptions(tmp.dir, cp, id, n, extra));
    relays.set(id, r);
    return r.start();
  };
  const running = () => [...relays.values()].filter((r) => r.child);
  const statuses = () => Promise.all(running().map((r) => r.status()));
  /** Every running relay serves the same view, containing exactly `ids`. */
  const converged = (ids: string[]) =>
    eventually(
      `all relays to see exactly ${ids.join(',')}`,
      async () => {
        const st = await statuses();
        const ok =
          st.every((s) => s.state === 'serving' && s.relays.map((r) => r.id).join(',') === [...ids].sort().join(',')) &&
          new Set(st.map((s) => s.topologyDigest)).size === 1;
        return ok ? st : null;
      },
      45_000,
    );

  /** A connection with one of the control plane's own credentials (the bus admits no one else). */
  const as = (role: 'admin' | 'reader' | 'publisher') => bus.connect({ kind: role });
  const withJsm = async <T>(f: (jsm: Awaited<ReturnType<typeof jetstreamManager>>) => Promise<T>): Promise<T> => {
    const nc = await as('admin');
    try {
      return await f(await jetstreamManager(nc));
    } finally {
      await nc.close();
    }
  };
  const consumerNames = () =>
    withJsm(async (jsm) => {
      const names: string[] = [];
      for await (const c of jsm.consumers.list(STREAMS.topology)) names.push(c.name);
      return names;
    });

  /** Delete a relay's durable consumer and wait until it has resynced and serves again. */
  const deleteConsumerAndResync = async (id: string) => {
    const r = relays.get(id)!;
    const before = await r.status();
    await withJsm((jsm) => jsm.consumers.delete(STREAMS.topology, `topology-${id}`));
    const after = await eventually(`${id} to resync`, async () => {
      const s = await r.status();
      return s.counters.resyncs > before.counters.resyncs && s.state === 'serving' ? s : null;
    });
    return { before, after };
  };

  beforeAll(async () => {
    tmp = tempDir('relays');
    // NATS decentralized auth, as devnet runs it: nats-server trusts the control plane's authority.
    bus = await startAuthedNats(join(tmp.dir, 'nats'), join(tmp.dir, 'cp'));
    nats = bus.server;
    // relayExpireSeconds: the control plane's own setting at start (its expiry test below lowers it).
    cp = await startLocalControlPlane({
      stateDir: join(tmp.dir, 'cp'),
      port: 0,
      natsServers: [nats.url],
      heartbeatSeconds: 1,
      relayExpireSeconds: 600,
      logger: log,
    });
  });

  afterAll(async () => {
    await Promise.all([...relays.values()].map((r) => r.stop('SIGKILL')));
    await cp?.stop();
    await nats?.stop();
    if (!process.env.KEEP_TMP) tmp?.remove();
  });

  it('admits 5 relays registering concurrently, with distinct addresses, and they converge', async () => {
    for (let i = 1; i <= 5; i++) spawnRelay(`relay-${i}`, i);
    const st = await converged(['relay-1', 'relay-2', 'relay-3', 'relay-4', 'relay-5']);
    expect(new Set(st.map((s) => s.meshAddress)).size).toBe(5);
    expect(new Set(st.map((s) => s.clientPool)).size).toBe(5);
    for (const s of st) {
      expect(s.meshAddress).toMatch(/^100\.64\./);
      expect(s.clientPool).toMatch(/^100\.(9[6-9]|1[01]\d|12[0-7])\.\d+\.0\/23$/);
      expect(s.revision).toBe(5);
    }
  });

  it('a 6th relay joining with a scoped relay token is seen by the other five', async () => {
    const token = await cp.mintRelayToken('relay-6', 3600);
    spawnRelay('relay-6', 6, { token });
    const st = await converged(['relay-1', 'relay-2', 'relay-3', 'relay-4', 'relay-5', 'relay-6']);
    for (const s of st.filter((s) => s.relayId !== 'relay-6')) expect(s.counters.applied).toBeGreaterThanOrEqual(1);
  });

  it('a relay stopped with SIGTERM deregisters, exits 0, and every other relay drops it', async () => {
    const code = await relays.get('relay-3')!.stop('SIGTERM');
    expect(code).toBe(0);
    await converged(['relay-1', 'relay-2', 'relay-4', 'relay-5', 'relay-6']);
    // Its durable consumer went with it.
    expect(await consumerNames()).not.toContain('topology-relay-3');
  });

  it('a relay that was away (frozen) catches up from JetStream without a resync', async () => {
    const away = relays.get('relay-2')!;
    const before = await away.status();
    away.child!.kill('SIGSTOP');
    try {
      spawnRelay('relay-7', 7);
      await eventually(
        'relay-7 to serve',
        async () =>
          (
            await relays
              .get('relay-7')!
              .status()
              .catch(() => null)
          )?.state === 'serving',
      );
      await relays.get('relay-4')!.stop('SIGTERM');
    } finally {
      away.child!.kill('SIGCONT');
    }
    const st = await converged(['relay-1', 'relay-2', 'relay-5', 'relay-6', 'relay-7']);
    const after = st.find((s) => s.relayId === 'relay-2')!;
    expect(after.counters.applied - before.counters.applied).toBe(2);
    expect(after.counters.resyncs).toBe(before.counters.resyncs);
  });

  it('a relay started after all those events seeds from the snapshot and ends with the same view', async () => {
    spawnRelay('relay-8', 8);
    const st = await converged(['relay-1', 'relay-2', 'relay-5', 'relay-6', 'relay-7', 'relay-8']);
    const late = st.find((s) => s.relayId === 'relay-8')!;
    expect(late.revision).toBe(st[0]!.revision);
  });

  it('forged, unsigned, oversized and malformed topology messages are rejected and counted by every relay', async () => {
    const before = await statuses();
    // Whoever holds the publisher's credentials may put messages on the topology subjects, but cannot sign them.
    const nc = await as('publisher');
    try {
      const forger = importPrivateKey(generateSigningKeyPair().seed);
      const cpSource = { source: 'control-plane', now: () => new Date(), newId: randomUUID };
      const evil = relayRecord(66, { id: 'relay-evil' });
      const forged = encodeEvent(envelope(cpSource, 'RelayAdmitted', 2, { revision: before[0]!.revision + 1, relay: evil, identityKey: null }));
      const subject = 'relaynet.topology.relay-evil.relay-admitted';
      const h1 = headers();
      h1.set(SIGNATURE_HEADER, signBytes(forger, forged));
      nc.publish(subject, forged, { headers: h1 }); // signed with a key that is not the control plane's
      nc.publish(subject, forged); // unsigned
      const h2 = headers();
      h2.set(SIGNATURE_HEADER, 'A'.repeat(88));
      nc.publish(subject, new Uint8Array(70 * 1024), { headers: h2 }); // oversized
      nc.publish(subject, new TextEncoder().encode('{"type":'), { headers: h2 }); // malformed and unsigned by the key
      await nc.flush();
    } finally {
      await nc.close();
    }
    const st = await eventually('every relay to count 4 rejections', async () => {
      const st = await statuses();
      const sum = (s: RelayStatus) => Object.values(s.counters.rejected).reduce((a, b) => a + b, 0);
      return st.every((s) => sum(s) - sum(before.find((b) => b.relayId === s.relayId)!) === 4) ? st : null;
    });
    for (const s of st) {
      expect(s.relays.map((r) => r.id)).not.toContain('relay-evil');
      expect(s.counters.rejected['bad-signature']).toBeGreaterThanOrEqual(2);
      expect(s.counters.rejected.unsigned).toBeGreaterThanOrEqual(1);
      expect(s.counters.rejected.oversized).toBeGreaterThanOrEqual(1);
      expect(s.topologyDigest).toBe(before.find((b) => b.relayId === s.relayId)!.topologyDigest);
    }
    // Each rejection is also an event on the relay's own stream.
    const nc2 = await as('reader');
    try {
      const jsm = await jetstreamManager(nc2);
      const m = await jsm.streams.getMessage(STREAMS.relay, { last_by_subj: 'relaynet.relay.relay-1.topology.topology-event-rejected' });
      const d = decodeEvent(m!.data);
      expect(d.ok && d.event.type).toBe('TopologyEventRejected');
    } finally {
      await nc2.close();
    }
  });

  it('resyncs from a fresh snapshot when its consumer is deleted, and says so', async () => {
    const { before, after } = await deleteConsumerAndResync('relay-1');
    expect(after.topologyDigest).toBe(before.topologyDigest);
  });

  it('survives a NATS restart: events committed meanwhile arrive once, views agree', async () => {
    const before = await statuses();
    await nats.stop();
    // Admission works without the bus: the outbox keeps the event until NATS is back.
    spawnRelay('relay-9', 9);
    await eventually(
      'relay-9 registered',
      async () =>
        (
          await relays
            .get('relay-9')!
            .status()
            .catch(() => null)
        )?.meshAddress,
    );
    await new Promise((r) => setTimeout(r, 2_000));
    await nats.start();
    const st = await converged(['relay-1', 'relay-2', 'relay-5', 'relay-6', 'relay-7', 'relay-8', 'relay-9']);
    for (const s of st.filter((s) => s.relayId !== 'relay-9')) {
      const b = before.find((x) => x.relayId === s.relayId)!;
      expect(s.revision).toBe(b.revision + 1);
      // Exactly one more event folded (or one resync to the same revision), never a double application.
      expect(s.counters.applied - b.counters.applied + (s.counters.resyncs - b.counters.resyncs)).toBeGreaterThanOrEqual(1);
      expect(s.counters.applied - b.counters.applied).toBeLessThanOrEqual(1);
    }
  });

  it('after a NATS restart, follows the stream again: the next event arrives over JetStream, a deleted consumer is noticed', async () => {
    // The views above may have converged through the heartbeat fallback alone; now the bus itself.
    await eventually('every relay reconnected and following', async () => {
      const st = await statuses();
      return st.every((s) => s.bus.connected && s.bus.follower === 'following') ? st : null;
    });
    const before = await statuses();
    expect(await relays.get('relay-9')!.stop('SIGTERM')).toBe(0);
    const st = await converged(['relay-1', 'relay-2', 'relay-5', 'relay-6', 'relay-7', 'relay-8']);
    for (const s of st) {
      const b = before.find((x) => x.relayId === s.relayId)!;
      expect(s.counters.applied - b.counters.applied).toBe(1);
      expect(s.counters.resyncs).toBe(b.counters.resyncs);
    }
    const { before: b2, after } = await deleteConsumerAndResync('relay-2');
    expect(after.topologyDigest).toBe(b2.topologyDigest);
    expect(await consumerNames()).toContain('topology-relay-2');
  });

  it('refuses a relay that comes back with another key, and accepts it as a rotation with --rotate-key', async () => {
    const r5 = relays.get('relay-5')!;
    const oldKey = (await r5.status()).publicKey;
    // A crash (no deregistration) and a lost key file: the id is still registered with the old key.
    await r5.stop('SIGKILL');
    rmSync(join(tmp.dir, 'relay-5', 'wg.key'));
    const impostor = spawnRelay('relay-5', 5);
    expect(await impostor.exited()).toBe(1);
    expect(impostor.stderrTail).toMatch(/409.*key_mismatch/);
    const rotated = spawnRelay('relay-5', 5, { extraArgs: ['--rotate-key'] });
    const st = await eventually('every relay to know relay-5 by its new key', async () => {
      const me = await rotated.status().catch(() => null);
      if (me?.state !== 'serving' || me.publicKey === oldKey) return null;
      const all = await statuses();
      return all.every((s) => s.relays.find((r) => r.id === 'relay-5')?.publicKey === me.publicKey) ? all : null;
    });
    expect(new Set(st.map((s) => s.topologyDigest)).size).toBe(1);
    expect(statSync(join(tmp.dir, 'relay-5', 'wg.key')).mode & 0o777).toBe(0o600);
  });

  it('a relay silent past relay_expire_seconds is expired from every view, and comes back by registering again', async () => {
    const sql = postgres(cp.dbUrl, { max: 1, prepare: false, onnotice: () => {} });
    const silent = relays.get('relay-6')!;
    const others = [...relays.entries()].filter(([id, r]) => r.child && id !== 'relay-6').map(([id]) => id);
    try {
      expect((await sql`select relay_expire_seconds as s from relaynet.settings`)[0]!.s).toBe(600);
      await sql`update relaynet.settings set relay_expire_seconds = 3`;
      silent.child!.kill('SIGSTOP');
      try {
        // The others' heartbeats sweep it out: RelayLeft (expired), folded by every running relay.
        await eventually(
          'relay-6 expired from every other view',
          async () => {
            const st = await Promise.all(others.map((id) => relays.get(id)!.status()));
            return st.every((x) => x.state === 'serving' && !x.relays.some((r) => r.id === 'relay-6')) ? st : null;
          },
          45_000,
        );
        const [row] = await sql`select status from relaynet.relays where id = 'relay-6'`;
        expect(row!.status).toBe('left');
        const [left] = await sql`select type, payload from relaynet.topology_events where type = 'RelayLeft' order by revision desc limit 1`;
        expect(JSON.parse(left!.payload as string).data).toMatchObject({ relayId: 'relay-6', reason: 'expired' });
      } finally {
        silent.child!.kill('SIGCONT');
      }
      await sql`update relaynet.settings set relay_expire_seconds = 600`;
      // Its next heartbeat is refused (404): it registers again and every relay sees it back.
      const st = await converged([...others, 'relay-6']);
      const back = st.find((x) => x.relayId === 'relay-6')!;
      expect(back.counters.resyncs).toBeGreaterThan(0);
    } finally {
      await sql`update relaynet.settings set relay_expire_seconds = 600`.catch(() => {});
      await sql.end({ timeout: 2 });
    }
  });

  it('refuses a bad token with a clear error and exit code 1', async () => {
    const r = spawnRelay('relay-bad', 99, { token: 'not-a-jwt' });
    const code = await r.exited();
    expect(code).toBe(1);
    expect(r.stderrTail).toMatch(/401|unauthorized/i);
    relays.delete('relay-bad');
  });

  it('says clearly when the control plane is unreachable', async () => {
    const r = spawnRelay('relay-lost', 98, { controlPlaneUrl: 'http://127.0.0.1:9' });
    const code = await r.exited();
    expect(code).toBe(1);
    expect(r.stderrTail).toMatch(/unreachable/);
    relays.delete('relay-lost');
  });
});
