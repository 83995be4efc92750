import { jetstreamManager, type StreamInfo } from '@nats-io/jetstream';
import { join } from 'node:path';
import { createClient } from '@supabase/supabase-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalControlPlane, type LocalControlPlane } from '../../src/control-plane/local.ts';
import { STREAMS } from '../../src/contract/subjects.ts';
import type { RelayStatus } from '../../src/daemon/relay-status.ts';
import { eventually, RelayProcess } from '../../src/devnet/relay-process.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { type AuthedNats, startAuthedNats } from '../support/authed-nats.ts';
import { key } from '../support/given.ts';
import { tempDir } from '../support/temp.ts';
import { relayOptions } from '../support/relay-spawner.ts';

/**
 * relay-core on a 3-node NATS cluster (issue 15, part 5): real nats-server processes with JetStream
 * clustered and the streams at 3 replicas, the local control plane (Deno functions, PGlite) and
 * `relay-core run` processes (in-memory kernel) given every node's URL. One node is killed while relays
 * join and sessions open; no relay misses an event or applies one twice, none resyncs, and the node
 * catches up when it returns.
 */
describe('relays on a 3-node NATS cluster', () => {
  const log = rootLogger({ test: 'nats-cluster' }, 'warn');
  let tmp: ReturnType<typeof tempDir>;
  let bus: AuthedNats;
  let cp: LocalControlPlane;
  const relays = new Map<string, RelayProcess>();

  const spawnRelay = (id: string, n: number) => {
    const r = new RelayProcess(relayOptions(tmp.dir, cp, id, n));
    relays.set(id, r);
    return r.start();
  };
  const statuses = (ids: string[]) => Promise.all(ids.map((id) => relays.get(id)!.status()));
  const converged = (ids: string[]) =>
    eventually(
      `relays ${ids.join(',')} to serve one view of exactly them`,
      async () => {
        const st = await statuses(ids).catch(() => null);
        if (!st) return null;
        const ok =
          st.every((s) => s.state === 'serving' && s.relays.map((r) => r.id).join(',') === [...ids].sort().join(',')) &&
          new Set(st.map((s) => s.topologyDigest)).size === 1;
        return ok ? st : null;
      },
      90_000,
    );
  const streamInfo = async (): Promise<StreamInfo> => {
    const nc = await bus.connect({ kind: 'admin' });
    try {
      return await (await jetstreamManager(nc, { timeout: 10_000 })).streams.info(STREAMS.topology);
    } finally {
      await nc.close();
    }
  };
  /** Every replica of the topology stream is current (none lagging), with `peers` replicas besides the leader. */
  const replicasCurrent = (peers: number) =>
    eventually(
      'every replica of the topology stream to be current',
      async () => {
        const i = await streamInfo().catch(() => null);
        const rs = i?.cluster?.replicas ?? [];
        return i && rs.length === peers && rs.every((r) => r.current && !r.offline && (r.lag ?? 0) === 0) ? i : null;
      },
      60_000,
    );

  beforeAll(async () => {
    tmp = tempDir('nats-cluster');
    bus = await startAuthedNats(join(tmp.dir, 'nats'), join(tmp.dir, 'cp'), { nodes: 3 });
    cp = await startLocalControlPlane({
      stateDir: join(tmp.dir, 'cp'),
      port: 0,
      natsServers: bus.urls,
      // A relay resyncs after three heartbeats that find the control plane ahead of its view: at the
      // default 10 s that is never while JetStream elects a new leader (a few seconds).
      heartbeatSeconds: 10,
      streamReplicas: 3,
      logger: log,
    });
  });

  afterAll(async () => {
    await Promise.all([...relays.values()].map((r) => r.stop('SIGKILL')));
    await cp?.stop();
    await Promise.all((bus?.servers ?? []).map((s) => s.stop()));
    if (!process.env.KEEP_TMP) tmp?.remove();
  });

  it('hands relays every node and keeps the streams at 3 replicas', async () => {
    await Promise.all([1, 2, 3].map((n) => spawnRelay(`relay-${n}`, n)));
    await converged(['relay-1', 'relay-2', 'relay-3']);
    const info = await replicasCurrent(2);
    expect(info.config.num_replicas).toBe(3);
    expect(bus.urls).toHaveLength(3);
  });

  it("loses the stream leader's node while relays join and sessions open: every event folded once, no resync; the node catches up", async () => {
    const ids = ['relay-1', 'relay-2', 'relay-3'];
    const before = await statuses(ids);
    const leader = (await streamInfo()).cluster!.leader!;
    const node = bus.servers[Number(leader.replace('nats-', '')) - 1]!;
    await node.stop();
    const client = createClient(cp.url, cp.serviceRoleKey, { auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false } });
    try {
      await Promise.all([spawnRelay('relay-4', 4), spawnRelay('relay-5', 5)]);
      await converged([...ids, 'relay-4', 'relay-5']);
      // Two sessions entering at relay-1: it learns them from the stream and confirms them.
      for (const n of [1, 2]) {
        const r = await client.functions.invoke('connect-client', { body: { publicKey: key(500 + n), entry: 'relay-1', exit: 'relay-2' }, method: 'POST' });
        expect(r.error, String(r.error)).toBeNull();
      }
    } finally {
      await node.start();
    }
    const after = await eventually(
      'every relay at the same revision with both sessions on relay-1',
      async () => {
        const st = await statuses([...ids, 'relay-4', 'relay-5']);
        const one = st[0]!;
        return new Set(st.map((s) => s.revision)).size === 1 && one.clients.filter((c) => c.state !== 'closed').length === 2 ? st : null;
      },
      60_000,
    );
    for (const id of ids) {
      const b = before.find((s) => s.relayId === id)!;
      const a = after.find((s) => s.relayId === id)! as RelayStatus;
      // Each revision since was folded exactly once, from the stream, with no resync in between.
      expect(a.counters.resyncs, id).toBe(b.counters.resyncs);
      expect(a.counters.applied - b.counters.applied, id).toBe(a.revision - b.revision);
    }
    expect(after[0]!.revision - before[0]!.revision).toBeGreaterThanOrEqual(4);
    // The node that was away is a current replica again.
    const info = await replicasCurrent(2);
    expect([info.cluster!.leader, ...info.cluster!.replicas!.map((r) => r.name)].sort()).toEqual(['nats-1', 'nats-2', 'nats-3']);
  });
});
