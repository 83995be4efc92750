/**
 * What the bus's trust costs (issue 14): topology fan-out and relay event publishing with auth and
 * signatures ON against OFF, side by side in one run, rounds alternating.
 *
 * - ON: nats-server with decentralized auth (each party connects with its own user JWT and nkey; the
 *   server enforces its permissions), topology events signed by the control plane's key and verified by
 *   every relay's follower (src/daemon/topology-follower.ts), relay events signed with the relay's
 *   identity key (src/bus/relay-event-publisher.ts) and verified by the reader (src/events/log.ts).
 * - OFF: a second nats-server without auth, nothing signed, nothing verified (the same decode,
 *   schema validation and fold otherwise).
 *
 * Topology fan-out: latency from the publisher publishing an event (signed before, ON, as the functions
 * sign it at commit) to its fold in each
 * of N relay actors (durable consumer per relay, as fanout.ts). Relay events: latency from
 * `RelayEventPublisher.publish` (encode, sign, JetStream publish) to the event decoded (and verified) by
 * an ordered-consumer reader, as `events tail` reads. Percentiles over all rounds pooled.
 *
 *   node bench/auth.ts [--relays 1,10] [--events 200] [--interval-ms 20] [--rounds 3] [--split]
 *
 * `--split` also runs each half alone (auth-only: the authenticated bus, nothing signed; signed-only: the
 * bus without auth, signed and verified), to tell which half costs what.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { fromCallback } from 'xstate';
import type { FollowCommand, FollowInput } from '../src/actors/relay.machine.ts';
import { follow } from '../src/bus/event-log-reader.ts';
import { RelayEventPublisher } from '../src/bus/relay-event-publisher.ts';
import { bootstrapStreams } from '../src/bus/streams.ts';
import { topologyConsumerName } from '../src/contract/bus-auth.ts';
import { envelope } from '../src/contract/envelope.ts';
import type { RelayEvent } from '../src/contract/relay.events.ts';
import { STREAMS } from '../src/contract/subjects.ts';
import { resetTopologyConsumer, topologyFollower } from '../src/daemon/topology-follower.ts';
import { startNatsServer } from '../src/devnet/nats-server.ts';
import { RelayKeyRegistry } from '../src/events/identity.ts';
import { decodeStored } from '../src/events/log.ts';
import { generateSigningKeyPair, importPrivateKey, importPublicKey } from '../src/events/signing.ts';
import { decodeUnsignedTopologyMessage } from '../src/events/wire.ts';
import { rootLogger } from '../src/lib/logger.ts';
import { type AuthedNats, type BusParty, startAuthedNats } from '../test/support/authed-nats.ts';
import { tempDir } from '../test/support/temp.ts';
import { benchTopologyMessage, type FollowDeps, startFoldingRelays } from './folding-relays.ts';

const { values } = parseArgs({
  options: {
    relays: { type: 'string', default: '1,10' },
    events: { type: 'string', default: '200' },
    'interval-ms': { type: 'string', default: '20' },
    rounds: { type: 'string', default: '3' },
    split: { type: 'boolean', default: false },
  },
});
const relayCounts = values.relays!.split(',').filter(Boolean).map(Number);
const events = Number(values.events);
const intervalMs = Number(values['interval-ms']);
const rounds = Number(values.rounds);
const log = rootLogger({ bench: 'auth' }, 'error');

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

/** ON, OFF, and with `--split` each half alone: auth without signatures, signatures without auth. */
type Mode = 'on' | 'off' | 'auth-only' | 'signed-only';

/** How a mode reaches its bus (with auth: as a party with its own credentials; without: anonymously) and whether it signs and verifies. */
interface Bus {
  mode: Mode;
  signed: boolean;
  url: string;
  connect(party: BusParty): Promise<NatsConnection>;
}

/**
 * The OFF follower: the production follower's consumer and consume loop, with the unsigned decode in
 * place of the verified one (the production follower always verifies).
 */
function unverifiedFollower(deps: FollowDeps) {
  return fromCallback<FollowCommand, FollowInput>(({ sendBack, input }) => {
    let stop: (() => void) | null = null;
    let stopped = false;
    void (async () => {
      await resetTopologyConsumer(deps.jsm, deps.relayId, new Date(Date.parse(input.registration.revisionTime) - 1_000));
      const consumer = await deps.js.consumers.get(STREAMS.topology, topologyConsumerName(deps.relayId));
      const messages = await consumer.consume({ max_messages: 256, idle_heartbeat: 5_000, expires: 30_000 });
      stop = () => void messages.stop();
      if (stopped) return stop();
      for await (const m of messages) {
        const r = decodeUnsignedTopologyMessage(m.subject, m.data);
        if (r.ok) sendBack({ type: 'TOPOLOGY_EVENT', event: r.event, streamSeq: m.seq });
        m.ack();
      }
    })();
    return () => {
      stopped = true;
      stop?.();
    };
  });
}

/** Topology fan-out to `n` relay actors: latency (ms) of every fold of every event. */
async function fanout(bus: Bus, n: number): Promise<number[]> {
  const on = bus.signed;
  const keys = generateSigningKeyPair();
  const priv = importPrivateKey(keys.seed);
  const conns: NatsConnection[] = [];
  let relays: { close(): Promise<void> } | null = null;
  try {
    const admin = await bus.connect({ kind: 'admin' });
    const pub = await bus.connect({ kind: 'publisher' });
    conns.push(admin, pub);
    await (await jetstreamManager(admin)).streams.purge(STREAMS.topology);
    const js = jetstream(pub);
    const folded = new Map<number, number[]>();
    relays = await startFoldingRelays({
      n,
      natsUrl: bus.url,
      topologySigningKey: keys.publicKey,
      connect: (relayId) => bus.connect({ kind: 'relay', relayId }),
      follower: (deps) =>
        on ? topologyFollower({ ...deps, controlPlaneKey: importPublicKey(keys.publicKey), logger: log, startMarginMs: 1_000 }) : unverifiedFollower(deps),
      folded,
    });
    await sleep(300);
    const sent = new Map<number, number>();
    for (let rev = 1; rev <= events; rev++) {
      // The control plane signs an event when it commits it (the function, into the outbox); the
      // publisher forwards the stored bytes and signature. So the clock starts at the publish.
      const m = benchTopologyMessage(rev, on ? priv : null);
      sent.set(rev, performance.now());
      await js.publish(m.subject, m.data, { headers: m.headers, msgID: m.msgID });
      await sleep(intervalMs);
    }
    const deadline = Date.now() + 30_000;
    while ((folded.get(events)?.length ?? 0) < n && Date.now() < deadline) await sleep(20);
    const out: number[] = [];
    for (let rev = 1; rev <= events; rev++) {
      const ts = folded.get(rev) ?? [];
      if (ts.length !== n) throw new Error(`${bus.mode}: revision ${rev} folded by ${ts.length}/${n} relays`);
      for (const t of ts) out.push(t - sent.get(rev)!);
    }
    return out;
  } finally {
    await relays?.close();
    for (const c of conns) await c.close();
  }
}

/** Relay events of one relay, published and read back (verified ON): latency (ms) of each. */
async function relayEvents(bus: Bus): Promise<number[]> {
  const on = bus.signed;
  const RELAY = 'relay-1';
  const identity = generateSigningKeyPair();
  const admin = await bus.connect({ kind: 'admin' });
  const relayNc = await bus.connect({ kind: 'relay', relayId: RELAY });
  const reader = await bus.connect({ kind: 'reader' });
  const abort = new AbortController();
  const pub = new RelayEventPublisher({ js: jetstream(relayNc), relayId: RELAY, logger: log, identity: on ? importPrivateKey(identity.seed) : null });
  try {
    await (await jetstreamManager(admin)).streams.purge(STREAMS.relay);
    const verify = on
      ? { verify: { controlPlaneKey: importPublicKey(generateSigningKeyPair().publicKey), relayKeys: new RelayKeyRegistry({ [RELAY]: identity.publicKey }) } }
      : {};
    const seen = new Map<string, number>();
    const reading = (async () => {
      for await (const m of follow(reader, ['relay'], { relayId: RELAY }, { kind: 'new' }, abort.signal)) {
        const e = decodeStored(m, verify);
        if (!e.ok || (on && !e.verified)) throw new Error(`${bus.mode}: relay event seq ${m.seq} not read: ${JSON.stringify(e)}`);
        seen.set(e.event.id, performance.now());
      }
    })();
    reading.catch(() => {});
    let n = 0;
    const publish = () => {
      const e = envelope({ source: RELAY, now: () => new Date(), newId: randomUUID }, 'RelayDraining', 1, { signal: `bench-${++n}` }) as RelayEvent;
      const t = performance.now();
      pub.publish(e);
      return { id: e.id, t };
    };
    // The reader's consumer starts with new messages: publish until it sees one.
    for (let i = 0; ; i++) {
      if (i > 200) throw new Error(`${bus.mode}: the reader saw nothing within 10 s`);
      const w = publish();
      await sleep(50);
      if (seen.has(w.id)) break;
    }
    const sent: { id: string; t: number }[] = [];
    for (let i = 0; i < events; i++) {
      sent.push(publish());
      await sleep(intervalMs);
    }
    const deadline = Date.now() + 30_000;
    while (!seen.has(sent.at(-1)!.id) && Date.now() < deadline) await sleep(20);
    abort.abort();
    await reading;
    const missing = sent.filter((s) => !seen.has(s.id)).length;
    if (missing) throw new Error(`${bus.mode}: ${missing}/${events} relay events not read`);
    return sent.map((s) => seen.get(s.id)! - s.t);
  } finally {
    abort.abort();
    await pub.close(1_000);
    for (const c of [reader, relayNc, admin]) await c.close();
  }
}

const tmp = tempDir('bench-auth');
let authed: AuthedNats | null = null;
// OFF, deliberately: the reference bus without auth.
const plain = await startNatsServer(join(tmp.dir, 'off'));
try {
  authed = await startAuthedNats(join(tmp.dir, 'on'), join(tmp.dir, 'cp'));
  const a = authed;
  const anonymous = () => connect({ servers: plain.url });
  const buses: Record<Mode, Bus> = {
    on: { mode: 'on', signed: true, url: a.url, connect: (p) => a.connect(p) },
    off: { mode: 'off', signed: false, url: plain.url, connect: anonymous },
    'auth-only': { mode: 'auth-only', signed: false, url: a.url, connect: (p) => a.connect(p) },
    'signed-only': { mode: 'signed-only', signed: true, url: plain.url, connect: anonymous },
  };
  const modes: Mode[] = values.split ? ['on', 'off', 'auth-only', 'signed-only'] : ['on', 'off'];
  for (const b of [buses.on, buses.off]) {
    const nc = await b.connect({ kind: 'admin' });
    await bootstrapStreams(await jetstreamManager(nc));
    await nc.close();
  }
  const runs = [
    ...relayCounts.map((n) => ({ name: `topology fan-out, ${n} relay${n === 1 ? '' : 's'}`, run: (b: Bus) => fanout(b, n) })),
    { name: 'relay events, publish to verified read', run: relayEvents },
  ];
  const samples = new Map(runs.map((r) => [r.name, Object.fromEntries(modes.map((m) => [m, [] as number[]])) as Record<Mode, number[]>]));
  const roundRatios = new Map<string, number[]>(runs.map((r) => [r.name, []]));
  for (let round = 0; round < rounds; round++) {
    // Rotate which mode goes first, so that none always runs on a warmer or busier machine.
    const order = modes.map((_, k) => modes[(k + round) % modes.length]!);
    for (const r of runs) {
      const got = {} as Record<Mode, number[]>;
      for (const m of order) got[m] = await r.run(buses[m]);
      const s = samples.get(r.name)!;
      for (const m of modes) s[m].push(...got[m]);
      roundRatios.get(r.name)!.push(pct(got.on, 50) / pct(got.off, 50));
      console.error(`round ${round + 1}/${rounds}: ${r.name}: p50 ${modes.map((m) => `${m} ${pct(got[m], 50).toFixed(2)}`).join(', ')} ms`);
    }
  }
  const f = (x: number) => x.toFixed(2);
  const row = (xs: number[]) => `${f(pct(xs, 50))} / ${f(pct(xs, 90))} / ${f(pct(xs, 99))}`;
  const extra = modes.slice(2);
  console.log(`${events} events per run, one every ${intervalMs} ms, ${rounds} rounds, modes in rotating order; latency in ms`);
  console.log(
    `| what | samples per mode | ON p50 / p90 / p99 | OFF p50 / p90 / p99 | ratio p50 ON/OFF | per-round p50 ratios |${extra.map((m) => ` ${m} p50 / p90 / p99 |`).join('')}`,
  );
  console.log(`|---|---|---|---|---|---|${extra.map(() => '---|').join('')}`);
  for (const r of runs) {
    const s = samples.get(r.name)!;
    const ratios = roundRatios
      .get(r.name)!
      .map((x) => x.toFixed(2))
      .join(', ');
    console.log(
      `| ${r.name} | ${s.on.length} | ${row(s.on)} | ${row(s.off)} | **${(pct(s.on, 50) / pct(s.off, 50)).toFixed(2)}** | ${ratios} |${extra.map((m) => ` ${row(s[m])} |`).join('')}`,
    );
  }
} finally {
  await authed?.server.stop();
  await plain.stop();
  tmp.remove();
}
