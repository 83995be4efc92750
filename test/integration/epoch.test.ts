import { cpSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readStored } from '../../src/bus/event-log-reader.ts';
import type { AnyEvent } from '../../src/contract/catalogue.ts';
import { startLocalControlPlane, type LocalControlPlane } from '../../src/control-plane/local.ts';
import { SECRETS_FILE } from '../../src/control-plane/secrets.ts';
import type { RelayStatus } from '../../src/daemon/relay-status.ts';
import { eventually, RelayProcess } from '../../src/devnet/relay-process.ts';
import { generateSigningKeyPair } from '../../src/events/signing.ts';
import { decodeStored, type StreamKind } from '../../src/events/log.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { freePort } from '../../src/lib/ports.ts';
import { type AuthedNats, startAuthedNats } from '../support/authed-nats.ts';
import { tempDir } from '../support/temp.ts';

/**
 * Faults of trust and time (issue 14, part 5) on real components: nats-server with JetStream, the local
 * control plane (Edge Functions on Deno, PGlite) and `relay-core run` processes. The control plane's
 * database is restored from a copy (its PGlite data directory) while relays run: every relay resyncs
 * into the new epoch and none applies an event of the old one. A relay with a pinned topology key
 * refuses a control plane that signs with another key, until it is re-pinned. A relay started while
 * NATS is down keeps trying, and reports the events its bounded queue dropped. NATS runs with
 * decentralized auth: its authority lives in the control plane's state directory (STATE_DIR/bus),
 * which neither the restore (pgdata) nor the new topology key (secrets) replaces, so nats-server
 * trusts every control plane started here.
 */
describe('epochs, pinned topology keys and a late bus', () => {
  const log = rootLogger({ test: 'epoch' }, 'warn');
  let tmp: ReturnType<typeof tempDir>;
  let bus: AuthedNats;
  let cp: LocalControlPlane;
  let port: number;
  const relays = new Map<string, RelayProcess>();
  const cpDir = () => join(tmp.dir, 'cp');

  const startCp = async () => {
    cp = await startLocalControlPlane({ stateDir: cpDir(), port, natsServers: [bus.url], heartbeatSeconds: 1, logger: log });
  };
  const spawnRelay = (id: string, n: number, extraArgs: string[] = []) => {
    const r = new RelayProcess({
      relayId: id,
      stateDir: join(tmp.dir, id),
      endpoint: `198.51.100.${n}:51820`,
      controlPlaneUrl: `http://127.0.0.1:${port}`,
      token: cp.serviceRoleKey,
      region: 'test',
      extraArgs,
    });
    relays.set(id, r);
    return r.start();
  };
  const running = () => [...relays.values()].filter((r) => r.child);
  const statuses = () => Promise.all(running().map((r) => r.status()));
  /** Every running relay serves the same view, containing exactly `ids`. */
  const converged = (ids: string[], extra: (s: RelayStatus) => boolean = () => true) =>
    eventually(
      `all relays to see exactly ${ids.join(',')}`,
      async () => {
        const st = await statuses().catch(() => null);
        if (!st) return null;
        const ok =
          st.every((s) => s.state === 'serving' && s.relays.map((r) => r.id).join(',') === [...ids].sort().join(',') && extra(s)) &&
          new Set(st.map((s) => s.topologyDigest)).size === 1;
        return ok ? st : null;
      },
      60_000,
    );
  /** Every stored event of a stream (decoded without a key: the test reads what the bus holds). */
  const stored = async (stream: StreamKind): Promise<{ seq: number; event: AnyEvent }[]> => {
    const nc = await bus.connect({ kind: 'reader' });
    try {
      const out: { seq: number; event: AnyEvent }[] = [];
      for await (const m of readStored(nc, [stream], {}, { kind: 'all' })) {
        const e = decodeStored(m);
        if (e.ok) out.push({ seq: e.seq, event: e.event });
      }
      return out;
    } finally {
      await nc.close();
    }
  };

  beforeAll(async () => {
    tmp = tempDir('epoch');
    port = await freePort();
    bus = await startAuthedNats(join(tmp.dir, 'nats'), cpDir());
    await startCp();
  });

  afterAll(async () => {
    await Promise.all([...relays.values()].map((r) => r.stop('SIGKILL')));
    await cp?.stop();
    await bus?.server.stop();
    if (!process.env.KEEP_TMP) tmp?.remove();
  });

  it('every topology event, registration and heartbeat carries the epoch; relays pin the topology key (0600)', async () => {
    for (let i = 1; i <= 3; i++) spawnRelay(`relay-${i}`, i);
    const st = await converged(['relay-1', 'relay-2', 'relay-3'], (s) => s.bus.connected && s.counters.heartbeats > 0);
    const epoch = cp.publisher?.epoch;
    expect(epoch).toMatch(/^[0-9a-f-]{36}$/);
    for (const s of st) {
      expect(s.bus.epoch).toBe(epoch);
      expect(s.bus.topologyKey).toBe(cp.topologyPublicKey);
      const f = join(tmp.dir, s.relayId, 'topology-key.pub');
      expect(readFileSync(f, 'utf8').trim()).toBe(cp.topologyPublicKey);
      expect(statSync(f).mode & 0o777).toBe(0o600);
    }
    const topo = await stored('topology');
    expect(topo.length).toBe(3);
    for (const { event } of topo) expect(event.epoch).toBe(epoch);
    // The relays' own events carry the epoch of their snapshot once seeded.
    const seeded = (await stored('relay')).filter((e) => e.event.type === 'TopologySeeded');
    expect(seeded.length).toBe(3);
    for (const { event } of seeded) expect(event.epoch).toBe(epoch);
  });

  it('restore the control plane database from a copy: every relay resyncs into a new epoch, none applies an old-epoch event', async () => {
    const oldEpoch = cp.publisher!.epoch!;
    // A copy of the database (PGlite's data directory, taken with the control plane stopped).
    await cp.stop();
    cpSync(join(cpDir(), 'pgdata'), join(tmp.dir, 'pgdata-copy'), { recursive: true });
    await startCp();
    expect(cp.publisher?.epoch).toBe(oldEpoch); // a restart is not a restore
    const before = await converged(['relay-1', 'relay-2', 'relay-3']);
    const copyRevision = before[0]!.revision;

    // Life goes on after the copy: relay-4 joins, relay-3 leaves (two more revisions of the old epoch).
    spawnRelay('relay-4', 4);
    await converged(['relay-1', 'relay-2', 'relay-3', 'relay-4']);
    expect(await relays.get('relay-3')!.stop('SIGTERM')).toBe(0);
    const ahead = await converged(['relay-1', 'relay-2', 'relay-4']);
    expect(ahead[0]!.revision).toBe(copyRevision + 2);
    const relaySeqBefore = Math.max(...(await stored('relay')).map((e) => e.seq));

    // Restore: stop, put the copy back, start again.
    await cp.stop();
    rmSync(join(cpDir(), 'pgdata'), { recursive: true, force: true });
    cpSync(join(tmp.dir, 'pgdata-copy'), join(cpDir(), 'pgdata'), { recursive: true });
    await startCp();
    const newEpoch = await eventually('a new epoch', async () => {
      const e = cp.publisher?.epoch;
      return e && e !== oldEpoch ? e : null;
    });

    // The restored database says relay-3 is active and knows nothing of relay-4 (which re-registers).
    // A new revision of the new epoch: relay-5 joins. Without epochs, relays at the old head would take
    // the restored history's revisions for ones they already applied.
    spawnRelay('relay-5', 5);
    const after = await converged(['relay-1', 'relay-2', 'relay-3', 'relay-4', 'relay-5'], (s) => s.bus.epoch === newEpoch);
    const st = Object.fromEntries(after.map((s) => [s.relayId, s]));
    for (const id of ['relay-1', 'relay-2']) expect(st[id]!.counters.resyncs).toBeGreaterThan(before.find((b) => b.relayId === id)!.counters.resyncs);

    const topo = await stored('topology');
    const epochOf = new Map(topo.map(({ event }) => [event.id, event.epoch]));
    const newEvents = topo.filter(({ event }) => event.epoch === newEpoch);
    expect(newEvents.length).toBeGreaterThanOrEqual(2); // relay-4 admitted again, relay-5 admitted
    // The new epoch starts at the copy's revision: revisions copyRevision+1.. exist in both epochs.
    expect(Math.min(...newEvents.map(({ event }) => (event.data as { revision: number }).revision))).toBe(copyRevision + 1);

    const since = (await stored('relay')).filter((e) => e.seq > relaySeqBefore).map((e) => e.event);
    for (const id of ['relay-1', 'relay-2', 'relay-4']) {
      const mine = since.filter((e) => e.source === id);
      // Every relay resynced: a resync request, then a seed of the new epoch.
      expect(
        mine.some((e) => e.type === 'TopologyResyncRequested'),
        id,
      ).toBe(true);
      const seed = mine.findIndex((e) => e.type === 'TopologySeeded' && e.epoch === newEpoch);
      expect(seed, id).toBeGreaterThanOrEqual(0);
      // No topology event of the old epoch applied from the restore on; the new epoch's were.
      const applied = mine.filter((e) => e.type === 'TopologyEventApplied');
      for (const a of applied) expect(epochOf.get((a.data as { eventId: string }).eventId), `${id} applied ${JSON.stringify(a.data)}`).toBe(newEpoch);
    }
    for (const id of ['relay-1', 'relay-2']) {
      const reason = since.find((e) => e.source === id && e.type === 'TopologyResyncRequested')!.data as { reason: string };
      expect(reason.reason).toBe('epoch-changed');
    }
    // Every relay holds the control plane's view: the revision of the new epoch's head.
    const head = Math.max(...newEvents.map(({ event }) => (event.data as { revision: number }).revision));
    for (const s of after) expect(s.revision).toBe(head);
  });

  it('a relay with a pinned topology key refuses a control plane that signs with another key, until re-pinned', async () => {
    const pinned = cp.topologyPublicKey;
    // The control plane comes back signing with another key (a replaced or impostor control plane).
    await cp.stop();
    const secrets = JSON.parse(readFileSync(join(cpDir(), SECRETS_FILE), 'utf8'));
    writeFileSync(join(cpDir(), SECRETS_FILE), JSON.stringify({ ...secrets, topologySigningSeed: generateSigningKeyPair().seed }), { mode: 0o600 });
    await startCp();
    expect(cp.topologyPublicKey).not.toBe(pinned);

    // relay-1 restarts: it refuses at boot, with a clear error and exit code 1.
    const r1 = relays.get('relay-1')!;
    await r1.stop('SIGKILL');
    r1.start();
    expect(await r1.exited()).toBe(1);
    expect(r1.stderrTail + readFileSync(join(tmp.dir, 'relay-1', 'relay.log'), 'utf8')).toMatch(/pinned .*--repin-topology-key/);

    // relay-2 keeps running; at its next registration (a resync) it stops following and says so.
    const nc = await bus.connect({ kind: 'admin' });
    const { jetstreamManager } = await import('@nats-io/jetstream');
    await (await jetstreamManager(nc)).consumers.delete('RELAYNET_TOPOLOGY', 'topology-relay-2');
    await nc.close();
    const r2 = relays.get('relay-2')!;
    const refused = await eventually('relay-2 to refuse the key', async () => {
      const s = await r2.status();
      return s.bus.topologyKeyRefused === cp.topologyPublicKey && s.state !== 'serving' ? s : null;
    });
    expect(refused.bus.topologyKey).toBe(pinned);
    expect(refused.error).toMatch(/pinned/);
    const ev = await eventually('TopologyKeyRefused on the bus', async () =>
      (await stored('relay')).find((e) => e.event.source === 'relay-2' && e.event.type === 'TopologyKeyRefused'),
    );
    expect(ev.event.data).toEqual({ pinnedKey: pinned, offeredKey: cp.topologyPublicKey, source: 'file' });
    // A change signed with the new key does not reach it.
    spawnRelay('relay-6', 6);
    await eventually('relay-6 serving', async () =>
      (
        await relays
          .get('relay-6')!
          .status()
          .catch(() => null)
      )?.state === 'serving'
        ? true
        : null,
    );
    await new Promise((r) => setTimeout(r, 2_000));
    expect((await r2.status()).relays.map((r) => r.id)).not.toContain('relay-6');

    // The operator re-pins: both follow the new key.
    await r2.stop('SIGKILL');
    r1.opts.extraArgs = ['--repin-topology-key'];
    r2.opts.extraArgs = ['--repin-topology-key'];
    r1.start();
    r2.start();
    await eventually('relay-1 and relay-2 follow again', async () => {
      const s = await Promise.all([r1.status(), r2.status()]).catch(() => null);
      return s?.every((x) => x.state === 'serving' && x.relays.some((r) => r.id === 'relay-6') && x.bus.topologyKey === cp.topologyPublicKey) ? s : null;
    });
    expect(readFileSync(join(tmp.dir, 'relay-1', 'topology-key.pub'), 'utf8').trim()).toBe(cp.topologyPublicKey);
  });

  it('a relay whose first bus connection fails keeps retrying; its queue drops the oldest and reports the drops', async () => {
    await bus.server.stop();
    spawnRelay('relay-7', 7, ['--event-queue', '3']);
    const r7 = relays.get('relay-7')!;
    const waiting = await eventually('relay-7 registered without the bus', async () => {
      const s = await r7.status().catch(() => null);
      return s?.meshAddress && s.bus.dropped > 0 ? s : null;
    });
    expect(waiting.bus.connected).toBe(false);
    expect(waiting.bus.pending).toBe(3);
    await new Promise((r) => setTimeout(r, 3_000));
    await bus.server.start();
    const s = await eventually('relay-7 on the bus', async () => {
      const x = await r7.status();
      return x.bus.connected && x.bus.follower === 'following' && x.bus.pending === 0 ? x : null;
    });
    expect(s.bus.dropped).toBeGreaterThan(0);
    // Every drop is reported (a burst after the reconnect may overflow the tiny queue again: more reports).
    const reports = await eventually('every drop reported on the bus', async () => {
      const r = (await stored('relay')).filter((e) => e.event.source === 'relay-7' && e.event.type === 'RelayEventsDropped');
      const total = r.reduce((n, e) => n + (e.event.data as { count: number }).count, 0);
      return r.length && total === (await r7.status()).bus.dropped ? r : null;
    });
    expect((reports[0]!.event.data as { capacity: number }).capacity).toBe(3);
    expect((reports[0]!.event.data as { count: number }).count).toBeGreaterThanOrEqual(waiting.bus.dropped);
  });
});
