/**
 * `relay-core events tail` latency: from a relay event's JetStream publish to the line the tail
 * prints, against a reference in the same run: a core-NATS subscriber printing the event's id
 * (bench/tail-reference.ts). Both are child processes reading a real nats-server with JetStream on
 * loopback; the times are taken by this process when each line arrives on its pipe, so both include
 * the same pipe and process-switch costs. Events are published one at a time, `--interval-ms` apart.
 * The bus runs with decentralized auth: relay-9 publishes with its own credentials, the tail reads with
 * the operator's reader credentials, the reference with a subscribe-only user.
 *
 *   node bench/tail.ts [--events 200] [--interval-ms 50]
 */
import { execa, type ResultPromise } from 'execa';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { bootstrapStreams } from '../src/bus/streams.ts';
import { RELAY_CORE_BIN } from '../src/devnet/relay-process.ts';
import { envelope } from '../src/contract/envelope.ts';
import { subjectFor } from '../src/contract/subjects.ts';
import { encodeEvent } from '../src/events/wire.ts';
import type { AnyEvent } from '../src/contract/catalogue.ts';
import { startAuthedNats } from '../test/support/authed-nats.ts';
import { tempDir } from '../test/support/temp.ts';

const { values } = parseArgs({ options: { events: { type: 'string', default: '200' }, 'interval-ms': { type: 'string', default: '50' } } });
const events = Number(values.events);
const intervalMs = Number(values['interval-ms']);
const RELAY = 'relay-9';

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

/** Collect, per event id, when a child printed it. */
function watch(p: ResultPromise, idOf: (line: string) => string | null, seen: Map<string, number>) {
  let ready = false;
  createInterface({ input: p.stdout! }).on('line', (line) => {
    if (line === 'ready') ready = true;
    const id = idOf(line);
    if (id && !seen.has(id)) seen.set(id, performance.now());
  });
  return () => ready;
}

const tmp = tempDir('bench-tail');
const bus = await startAuthedNats(join(tmp.dir, 'nats'), join(tmp.dir, 'cp'));
const nats = bus.server;
const children: ResultPromise[] = [];
try {
  const admin = await bus.connect({ kind: 'admin' });
  await bootstrapStreams(await jetstreamManager(admin));
  await admin.close();
  const nc = await bus.connect({ kind: 'relay', relayId: RELAY });
  const js = jetstream(nc);
  const tailSeen = new Map<string, number>();
  const refSeen = new Map<string, number>();
  const tail = execa(
    RELAY_CORE_BIN,
    ['events', 'tail', '--json', '--relay', RELAY, '--nats-url', nats.url, '--nats-creds', bus.bus.creds.reader, '--no-verify'],
    { reject: false, buffer: false },
  );
  const ref = execa(
    process.execPath,
    [
      '--disable-warning=ExperimentalWarning',
      join(import.meta.dirname, 'tail-reference.ts'),
      nats.url,
      `relaynet.relay.${RELAY}.>`,
      await bus.credsFile({ kind: 'observer', subjects: [`relaynet.relay.${RELAY}.>`] }),
    ],
    { reject: false, buffer: false },
  );
  children.push(tail, ref);
  watch(tail, (l) => (JSON.parse(l) as { event?: { id: string } }).event?.id ?? null, tailSeen);
  const refReady = watch(ref, (l) => (l.startsWith('{') ? (JSON.parse(l) as { id: string }).id : null), refSeen);

  let n = 0;
  const publish = async () => {
    const e = envelope({ source: RELAY, now: () => new Date(), newId: randomUUID }, 'RelayDraining', 1, { signal: `bench-${++n}` }) as AnyEvent;
    const t = performance.now();
    await js.publish(subjectFor('RelayDraining', RELAY), encodeEvent(e));
    return { id: e.id, t };
  };
  // Warm up until both readers print what is published (the tail starts with new events only).
  for (let i = 0; ; i++) {
    if (i > 200) throw new Error('the readers printed nothing within 20 s');
    const w = await publish();
    await sleep(100);
    if (refReady() && tailSeen.has(w.id) && refSeen.has(w.id)) break;
  }
  const sent: { id: string; t: number }[] = [];
  for (let i = 0; i < events; i++) {
    sent.push(await publish());
    await sleep(intervalMs);
  }
  await sleep(1000);
  const lat = (seen: Map<string, number>) => sent.filter((s) => seen.has(s.id)).map((s) => seen.get(s.id)! - s.t);
  const t = lat(tailSeen);
  const r = lat(refSeen);
  if (t.length !== events || r.length !== events) throw new Error(`lines missing: tail printed ${t.length}/${events}, reference ${r.length}/${events}`);
  const f = (x: number) => x.toFixed(2);
  console.log(`| reader | events | p50 ms | p99 ms | max ms |`);
  console.log('|---|---|---|---|---|');
  console.log(
    `| relay-core events tail --json (ordered JetStream consumer, decode, checks) | ${events} | ${f(pct(t, 50))} | ${f(pct(t, 99))} | ${f(Math.max(...t))} |`,
  );
  console.log(`| reference: core-NATS subscriber | ${events} | ${f(pct(r, 50))} | ${f(pct(r, 99))} | ${f(Math.max(...r))} |`);
  console.log(`| ratio p50 tail / reference | | ${(pct(t, 50) / pct(r, 50)).toFixed(2)} | | |`);
  await nc.close();
} finally {
  for (const c of children) c.kill('SIGINT');
  await Promise.allSettled(children);
  await nats.stop();
  tmp.remove();
}
