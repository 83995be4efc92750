import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { fromSeed, parseCreds } from '@nats-io/jwt';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectBus } from '../../src/bus/connection.ts';
import { RelayEventPublisher } from '../../src/bus/relay-event-publisher.ts';
import { bootstrapStreams, DEFAULT_STREAM_LIMITS } from '../../src/bus/streams.ts';
import { envelope } from '../../src/contract/envelope.ts';
import type { RelayEvent } from '../../src/contract/relay.events.ts';
import { STREAMS } from '../../src/contract/subjects.ts';
import { decodeEvent } from '../../src/events/wire.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { type AuthedNats, type BusParty, startAuthedNats } from '../support/authed-nats.ts';
import { tempDir } from '../support/temp.ts';
import type { FollowCommand } from '../../src/actors/relay.machine.ts';
import type { RegisterResponse } from '../../src/contract/api-relays.ts';
import { runTopologyFollower } from '../../src/daemon/topology-follower.ts';
import { inboxPrefixFor, topologyConsumerName } from '../../src/contract/bus-auth.ts';
import { eventually } from '../../src/devnet/relay-process.ts';
import { generateSigningKeyPair, importPrivateKey, importPublicKey } from '../../src/events/signing.ts';
import { benchTopologyMessage } from '../../bench/folding-relays.ts';

const log = rootLogger({ test: 'bus' }, 'warn');

/** On a bus with decentralized auth, as deployed: the administrator bootstraps, the relay publishes its own events and follows the topology. */
describe('event bus on a real nats-server', () => {
  let bus: AuthedNats;
  let tmp: ReturnType<typeof tempDir>;
  const connectAs = async (party: BusParty) => connectBus({ servers: [bus.url], auth: await bus.auth(party), name: 'test', logger: log });
  beforeAll(async () => {
    tmp = tempDir('bus');
    bus = await startAuthedNats(join(tmp.dir, 'nats'), join(tmp.dir, 'cp'));
  });
  afterAll(async () => {
    await bus?.server.stop();
    tmp?.remove();
  });

  it('bootstraps both streams idempotently and updates changed limits', async () => {
    const nc = await connectAs({ kind: 'admin' });
    try {
      const jsm = await jetstreamManager(nc);
      expect(await bootstrapStreams(jsm)).toEqual({ [STREAMS.topology]: 'created', [STREAMS.relay]: 'created' });
      expect(await bootstrapStreams(jsm)).toEqual({ [STREAMS.topology]: 'unchanged', [STREAMS.relay]: 'unchanged' });
      const changed = { ...DEFAULT_STREAM_LIMITS, relayMaxAgeSeconds: 3600 };
      expect(await bootstrapStreams(jsm, changed)).toEqual({ [STREAMS.topology]: 'unchanged', [STREAMS.relay]: 'updated' });
      expect((await jsm.streams.info(STREAMS.relay)).config.max_age).toBe(3600 * 1e9);
      expect(await bootstrapStreams(jsm)).toMatchObject({ [STREAMS.relay]: 'updated' });
    } finally {
      await nc.close();
    }
  });

  it('publishes relay events in order across a NATS restart, none lost or duplicated', async () => {
    const nc = await connectAs({ kind: 'admin' });
    const relayNc = await connectAs({ kind: 'relay', relayId: 'relay-x' });
    try {
      const jsm = await jetstreamManager(nc);
      await bootstrapStreams(jsm);
      await jsm.streams.purge(STREAMS.relay);
      const pub = new RelayEventPublisher({ js: jetstream(relayNc), relayId: 'relay-x', logger: log });
      const mk = (i: number): RelayEvent =>
        envelope({ source: 'relay-x', now: () => new Date(), newId: randomUUID }, 'TopologyEventApplied', 1, {
          revision: i,
          eventId: `e${i}`,
          eventType: 'RelayAdmitted',
        });
      for (let i = 1; i <= 20; i++) pub.publish(mk(i));
      await waitUntil(() => pub.pending === 0);
      await bus.server.stop();
      for (let i = 21; i <= 40; i++) pub.publish(mk(i));
      expect(pub.pending).toBeGreaterThan(0);
      await bus.server.start();
      await waitUntil(() => pub.pending === 0, 30_000);
      const info = await jsm.streams.info(STREAMS.relay);
      expect(info.state.messages).toBe(40);
      const revisions: number[] = [];
      for (let seq = 1; seq <= 40; seq++) {
        const m = await jsm.streams.getMessage(STREAMS.relay, { seq });
        const d = decodeEvent(m!.data);
        expect(d.ok).toBe(true);
        if (d.ok && d.event.type === 'TopologyEventApplied') revisions.push(d.event.data.revision);
      }
      expect(revisions).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
      expect(pub.dropped).toBe(0);
      await pub.close();
    } finally {
      await relayNc.close();
      await nc.close();
    }
  });

  // The topology follower: pulled again at any moment, it loses and repeats nothing.
  it('delivers every revision once, in order, however often the relay actor says REPULL', async () => {
    const admin = await connectAs({ kind: 'admin' });
    const publisher = await connectAs({ kind: 'publisher' });
    const relayNc = await connectAs({ kind: 'relay', relayId: 'relay-f' });
    const keys = generateSigningKeyPair();
    const signer = importPrivateKey(keys.seed);
    const got: number[] = [];
    const lost: string[] = [];
    const commands: { send: ((e: FollowCommand) => void) | null } = { send: null };
    let stop: (() => void) | null = null;
    try {
      await bootstrapStreams(await jetstreamManager(admin));
      stop = runTopologyFollower(
        {
          js: jetstream(relayNc),
          jsm: await jetstreamManager(relayNc),
          relayId: 'relay-f',
          controlPlaneKey: importPublicKey(keys.publicKey),
          logger: log,
          startMarginMs: 1_000,
          // Every REPULL drops the pull, however lately it began or handed a message over.
          repullQuietMs: 0,
        },
        { registration: { revision: 0, revisionTime: new Date().toISOString() } as RegisterResponse },
        (e) => {
          if (e.type === 'TOPOLOGY_EVENT') got.push(e.event.data.revision as number);
          // Its pulls working (said once, at the first): anything else is a loss.
          else if (!(e.type === 'FOLLOWER_PULL' && e.ok)) lost.push(e.type);
        },
        (listener) => {
          commands.send = listener;
        },
      );
      const js = jetstream(publisher);
      const N = 300;
      for (let rev = 1; rev <= N; rev++) {
        const m = benchTopologyMessage(rev, signer);
        await js.publish(m.subject, m.data, { headers: m.headers, msgID: m.msgID });
        // Pull again every few events, and in bursts: whatever was delivered and not acknowledged comes again.
        if (rev % 7 === 0 || rev % 50 === 0) commands.send?.({ type: 'REPULL' });
        if (rev % 50 === 0) for (let i = 0; i < 5; i++) commands.send?.({ type: 'REPULL' });
        if (rev % 25 === 0) await new Promise((r) => setTimeout(r, 20));
      }
      await eventually('every revision folded', async () => (new Set(got).size >= N ? true : null), 30_000);
      expect(commands.send).not.toBeNull();
      expect(lost).toEqual([]);
      // In order, each once; a message delivered again after a pull was cut short would come as a repeat.
      const firstSeen = got.filter((r, i) => got.indexOf(r) === i);
      expect(firstSeen).toEqual(Array.from({ length: N }, (_, i) => i + 1));
      expect(got.length - N).toBe(0);
    } finally {
      stop?.();
      await Promise.all([admin, publisher, relayNc].map((c) => c.close()));
    }
  });

  // A relay on a loaded host may answer the server's hello late; nats-server's default (2 s) dropped it.
  it('admits a client that authenticates 3 s after the server said hello', async () => {
    const { jwt, key } = await parseCreds(readFileSync(await bus.credsFile({ kind: 'relay', relayId: 'relay-late' })));
    const sock = createConnection({ host: '127.0.0.1', port: bus.server.port });
    let said = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      said += d;
    });
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    try {
      const hello = await eventually('the server hello', async () => said.match(/^INFO (\{.*\}) *\r\n/)?.[1], 10_000);
      const nonce = (JSON.parse(hello) as { nonce: string }).nonce;
      await new Promise((r) => setTimeout(r, 3_000));
      const sig = Buffer.from(fromSeed(new TextEncoder().encode(key)).sign(new TextEncoder().encode(nonce))).toString('base64url');
      sock.write(`CONNECT ${JSON.stringify({ jwt, sig, verbose: false, pedantic: false, protocol: 1 })}\r\nPING\r\n`);
      const answer = await eventually('an answer to PING', async () => (/PONG|-ERR/.test(said) ? said : null), 10_000);
      expect(answer).not.toMatch(/-ERR/);
      expect(answer).toMatch(/PONG\r\n/);
    } finally {
      sock.destroy();
      await closed;
    }
  });

  /**
   * A follower of relay `relayId` from now on (the topology stream purged first), with a publisher of
   * signed revisions: what it hands over (`got`), anything else it says but its pulls working (`lost`),
   * and what its connection asks of the JetStream API (`asked`); `repull` says REPULL to it as the relay
   * actor does.
   */
  const followerRig = async (relayId: string, opts: { repullQuietMs?: number } = {}) => {
    const admin = await connectAs({ kind: 'admin' });
    const publisher = await connectAs({ kind: 'publisher' });
    const relayNc = await connectAs({ kind: 'relay', relayId });
    // What the relay's connection asks of the JetStream API (subjects), from the start.
    const asked: string[] = [];
    const request = relayNc.request.bind(relayNc);
    relayNc.request = (subject, ...rest) => {
      asked.push(subject);
      return request(subject, ...rest);
    };
    const keys = generateSigningKeyPair();
    const signer = importPrivateKey(keys.seed);
    const got: number[] = [];
    const lost: string[] = [];
    let command: ((e: FollowCommand) => void) | null = null;
    let stop: (() => void) | null = null;
    const close = async () => {
      stop?.();
      await Promise.all([admin, publisher, relayNc].map((c) => c.close()));
    };
    try {
      const jsm = await jetstreamManager(admin);
      await bootstrapStreams(jsm);
      await jsm.streams.purge(STREAMS.topology);
      stop = runTopologyFollower(
        {
          js: jetstream(relayNc),
          jsm: await jetstreamManager(relayNc),
          relayId,
          controlPlaneKey: importPublicKey(keys.publicKey),
          logger: log,
          startMarginMs: 1_000,
          // An hour: the probe asks nothing of the JetStream API during the test.
          probeIntervalMs: 3_600_000,
          ...opts,
        },
        { registration: { revision: 0, revisionTime: new Date().toISOString() } as RegisterResponse },
        (e) => {
          if (e.type === 'TOPOLOGY_EVENT') got.push(e.event.data.revision as number);
          else if (e.type !== 'FOLLOWER_PULL') lost.push(e.type);
        },
        (listener) => {
          command = listener;
        },
      );
    } catch (e) {
      await close();
      throw e;
    }
    const publish = async (from: number, to: number) => {
      const js = jetstream(publisher);
      for (let rev = from; rev <= to; rev++) {
        const m = benchTopologyMessage(rev, signer);
        await js.publish(m.subject, m.data, { headers: m.headers, msgID: m.msgID });
      }
    };
    const followed = (n: number, timeoutMs: number) =>
      eventually(`revisions 1 to ${n} followed`, async () => (new Set(got).size >= n ? true : null), timeoutMs);
    const repull = () => command?.({ type: 'REPULL' });
    return { admin, relayNc, publisher, got, lost, asked, publish, followed, repull, close };
  };

  // A loaded bus times JetStream API requests out; a follower that asked for its consumer's info after
  // each reconnect stopped pulling until one was answered. Its pull is bound: it pulls again at once.
  it('follows on across a NATS restart without asking for its consumer first', async () => {
    const rig = await followerRig('relay-g');
    try {
      await rig.publish(1, 10);
      await rig.followed(10, 15_000);
      const before = rig.asked.length;
      await bus.server.stop();
      await bus.server.start();
      const reconnected = () =>
        Promise.all([rig.relayNc, rig.publisher].map((c) => c.rtt())).then(
          () => true,
          () => null,
        );
      await eventually('the relay and the publisher reconnected', reconnected, 30_000);
      await rig.publish(11, 20);
      await rig.followed(20, 30_000);
      expect(rig.got).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      expect(rig.lost).toEqual([]);
      expect(rig.asked.slice(before).filter((s) => s.includes('CONSUMER.INFO'))).toEqual([]);
    } finally {
      await rig.close();
    }
  });

  // Messages delivered to a pull that is gone (in flight when a connection dropped) come again only
  // after the ack wait, behind later ones: the follower pulls again from the first it never saw.
  it('pulls again from the first message another pull took and never acknowledged', async () => {
    const rig = await followerRig('relay-h');
    try {
      await rig.publish(1, 5);
      await rig.followed(5, 15_000);
      // A second pull on the relay's consumer (its own credentials), never acknowledged, waiting beside the follower's.
      const taken: number[] = [];
      const inbox = `${inboxPrefixFor({ kind: 'relay', relayId: 'relay-h' })}.other-pull`;
      const sub = rig.relayNc.subscribe(inbox, {
        callback: (_e, m) => {
          if (m.data.length > 0) taken.push(Number(m.reply?.split('.')[5]));
        },
      });
      const next = `$JS.API.CONSUMER.MSG.NEXT.${STREAMS.topology}.${topologyConsumerName('relay-h')}`;
      rig.relayNc.publish(next, JSON.stringify({ batch: 2, expires: 20_000_000_000 }), { reply: inbox });
      await rig.relayNc.flush();
      await rig.publish(6, 20);
      await rig.followed(20, 20_000);
      sub.unsubscribe();
      // The other pull took some (by stream sequence), and the follower still handed over each revision once, in order.
      expect(taken.length).toBeGreaterThan(0);
      expect(rig.got).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      expect(rig.lost).toEqual([]);
    } finally {
      await rig.close();
    }
  });

  // A follower that cannot set its consumer up yet (here: no topology stream) says its pulls do not work,
  // so that the relay actor does not count a view standing still meanwhile toward a resync (a resync would
  // only start the same set-up again); once it can, it says they work and follows.
  it('says its pulls do not work while it cannot set its consumer up, and follows once it can', async () => {
    const admin = await connectAs({ kind: 'admin' });
    const relayNc = await connectAs({ kind: 'relay', relayId: 'relay-k' });
    const said: boolean[] = [];
    let stop: (() => void) | null = null;
    try {
      const jsm = await jetstreamManager(admin);
      await bootstrapStreams(jsm);
      await jsm.streams.delete(STREAMS.topology);
      stop = runTopologyFollower(
        {
          js: jetstream(relayNc),
          jsm: await jetstreamManager(relayNc),
          relayId: 'relay-k',
          controlPlaneKey: importPublicKey(generateSigningKeyPair().publicKey),
          logger: log,
          probeIntervalMs: 3_600_000,
        },
        { registration: { revision: 0, revisionTime: new Date().toISOString() } as RegisterResponse },
        (e) => {
          if (e.type === 'FOLLOWER_PULL') said.push(e.ok);
        },
      );
      await eventually('pulls said not to work', async () => (said.includes(false) ? true : null), 15_000);
      await bootstrapStreams(jsm);
      await eventually('pulls said to work', async () => (said.at(-1) === true ? true : null), 20_000);
      expect(said).toEqual([false, true]);
    } finally {
      stop?.();
      await Promise.all([admin, relayNc].map((c) => c.close()));
    }
  });

  // A REPULL comes from heartbeats that found the view unmoved; a pull that has just begun, or just handed
  // a message over, is moving (a busy process works through it late): dropping it would make the consumer
  // again for nothing. One quiet for the whole interval is pulled again.
  it('leaves a pull that is moving when told to pull again, and pulls again once it has been quiet', async () => {
    const rig = await followerRig('relay-j', { repullQuietMs: 1_500 });
    const made = () => rig.asked.filter((s) => s.includes('CONSUMER.DELETE')).length;
    try {
      await rig.publish(1, 3);
      await rig.followed(3, 15_000);
      expect(made()).toBe(1);
      rig.repull();
      await new Promise((r) => setTimeout(r, 300));
      expect(made()).toBe(1);
      await new Promise((r) => setTimeout(r, 1_500));
      rig.repull();
      await eventually('the consumer made again', async () => (made() === 2 ? true : null), 10_000);
      await rig.publish(4, 6);
      await rig.followed(6, 15_000);
      expect(rig.got).toEqual([1, 2, 3, 4, 5, 6]);
      expect(rig.lost).toEqual([]);
    } finally {
      await rig.close();
    }
  });

  // The follower asks the JetStream API about its consumer once a minute (a thousand relays every 5 s
  // were most of a loaded server's API work): a consumer deleted under its pull is still noticed at once.
  it('notices its consumer deleted without asking the JetStream API', async () => {
    const rig = await followerRig('relay-i');
    try {
      await rig.publish(1, 3);
      await rig.followed(3, 15_000);
      await (await jetstreamManager(rig.admin)).consumers.delete(STREAMS.topology, topologyConsumerName('relay-i'));
      await eventually('the loss told', async () => (rig.lost.includes('CONSUMER_LOST') ? true : null), 15_000);
      expect(rig.lost).toEqual(['CONSUMER_LOST']);
      expect(rig.asked.filter((s) => s.includes('CONSUMER.INFO'))).toEqual([]);
    } finally {
      await rig.close();
    }
  });
});

async function waitUntil(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
