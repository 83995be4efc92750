/**
 * Topology fan-out latency: from the publisher's JetStream publish to the fold in N relay actors
 * (durable consumer, Ed25519 verification, schema validation, xstate fold), against a reference of N
 * plain core-NATS subscribers receiving the same messages in the same run. The bus runs with
 * decentralized auth, each party with its own credentials (the reference with a subscribe-only user).
 *
 *   node bench/fanout.ts [--subscribers 1,10,50] [--events 200] [--interval-ms 20]
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { bootstrapStreams } from '../src/bus/streams.ts';
import { topologyFollower } from '../src/daemon/topology-follower.ts';
import { generateSigningKeyPair, importPrivateKey, importPublicKey } from '../src/events/signing.ts';
import { STREAMS } from '../src/contract/subjects.ts';
import { rootLogger } from '../src/lib/logger.ts';
import { type AuthedNats, startAuthedNats } from '../test/support/authed-nats.ts';
import { tempDir } from '../test/support/temp.ts';
import { benchTopologyMessage, startFoldingRelays } from './folding-relays.ts';

const { values } = parseArgs({
  options: {
    subscribers: { type: 'string', default: '1,10,50' },
    events: { type: 'string', default: '200' },
    'interval-ms': { type: 'string', default: '20' },
  },
});
const counts = values.subscribers!.split(',').map(Number);
const events = Number(values.events);
const intervalMs = Number(values['interval-ms']);
const log = rootLogger({ bench: 'fanout' }, 'error');

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

async function runOnce(n: number, bus: AuthedNats) {
  const natsUrl = bus.url;
  const keys = generateSigningKeyPair();
  const priv = importPrivateKey(keys.seed);
  const conns: NatsConnection[] = [];
  const admin = await bus.connect({ kind: 'admin' });
  const pub = await bus.connect({ kind: 'publisher' });
  conns.push(admin, pub);
  const jsm = await jetstreamManager(admin);
  await bootstrapStreams(jsm);
  await jsm.streams.purge(STREAMS.topology);
  const js = jetstream(pub);

  const folded = new Map<number, number[]>(); // revision -> fold times
  const received = new Map<number, number[]>(); // revision -> reference receive times
  const relays = await startFoldingRelays({
    n,
    natsUrl,
    topologySigningKey: keys.publicKey,
    connect: (relayId) => bus.connect({ kind: 'relay', relayId }),
    follower: (deps) => topologyFollower({ ...deps, controlPlaneKey: importPublicKey(keys.publicKey), logger: log, startMarginMs: 1_000 }),
    folded,
  });
  // Reference: n plain core subscriptions, no consumer, no verification, no fold.
  for (let i = 0; i < n; i++) {
    const rc = await bus.connect({ kind: 'observer', subjects: ['relaynet.topology.>'] });
    conns.push(rc);
    rc.subscribe('relaynet.topology.>', {
      callback: (_e, m) => {
        const rev = Number(m.headers?.get('Bench-Revision'));
        (received.get(rev) ?? received.set(rev, []).get(rev)!).push(performance.now());
      },
    });
    await rc.flush();
  }
  await new Promise((r) => setTimeout(r, 300));

  const sent = new Map<number, number>();
  for (let rev = 1; rev <= events; rev++) {
    const m = benchTopologyMessage(rev, priv);
    m.headers.set('Bench-Revision', String(rev));
    sent.set(rev, performance.now());
    await js.publish(m.subject, m.data, { headers: m.headers, msgID: m.msgID });
    await new Promise((res) => setTimeout(res, intervalMs));
  }
  const deadline = Date.now() + 30_000;
  while ((folded.get(events)?.length ?? 0) < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));

  const lat = (m: Map<number, number[]>) => {
    const all: number[] = [];
    const lastOf: number[] = [];
    for (let rev = 1; rev <= events; rev++) {
      const ts = m.get(rev) ?? [];
      if (ts.length !== n) throw new Error(`revision ${rev}: ${ts.length}/${n} subscribers`);
      for (const t of ts) all.push(t - sent.get(rev)!);
      lastOf.push(Math.max(...ts) - sent.get(rev)!);
    }
    return { p50: pct(all, 50), p99: pct(all, 99), lastP50: pct(lastOf, 50), lastP99: pct(lastOf, 99) };
  };
  const fold = lat(folded);
  const ref = lat(received);
  await relays.close();
  for (const c of conns) await c.close();
  return { n, fold, ref };
}

const tmp = tempDir('bench-fanout');
const bus = await startAuthedNats(join(tmp.dir, 'nats'), join(tmp.dir, 'cp'));
try {
  console.log(`fan-out: ${events} signed topology events, one every ${intervalMs} ms; latency from publish (ms)`);
  console.log('subscribers | relay fold p50 / p99 | all-folded p50 / p99 | core-NATS ref p50 / p99 | ratio p50');
  for (const n of counts) {
    const r = await runOnce(n, bus);
    const f = (x: number) => x.toFixed(2);
    console.log(
      `${String(n).padStart(11)} | ${f(r.fold.p50)} / ${f(r.fold.p99)} | ${f(r.fold.lastP50)} / ${f(r.fold.lastP99)} | ${f(r.ref.p50)} / ${f(r.ref.p99)} | ${(r.fold.p50 / r.ref.p50).toFixed(1)}x`,
    );
  }
} finally {
  await bus.server.stop();
  tmp.remove();
}
