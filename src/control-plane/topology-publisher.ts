import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { headers } from '@nats-io/transport-node';
import postgres from 'postgres';
import { type BusAuth, connectBus } from '../bus/connection.ts';
import { bootstrapStreams, type StreamLimits } from '../bus/streams.ts';
import { isNotFound } from '../bus/streams.ts';
import { STREAMS } from '../contract/subjects.ts';
import { importPublicKey, verifyBytes } from '../events/signing.ts';
import { SIGNATURE_HEADER } from '../events/wire.ts';
import type { Logger } from '../lib/logger.ts';
import { busHeadOf, decideEpoch, type BusHead } from './epoch.ts';
import type { ControlPlaneMetrics } from './metrics.ts';

export interface TopologyPublisher {
  /** Publish everything committed so far; resolves when JetStream acknowledged it (or rejects). */
  flush(): Promise<number>;
  /** Last revision JetStream acknowledged. */
  readonly publishedRevision: number;
  /** The epoch the publisher checked the database against the bus for (null before its first round). */
  readonly epoch: string | null;
  /** Rounds started by an outbox notification (with `listen`), not by the poll. */
  readonly notifiedRounds: number;
  /** The database's newest topology revision (read now; the backlog is this minus `publishedRevision`). */
  headRevision(): Promise<number>;
  stop(): Promise<void>;
}

interface OutboxRow {
  revision: string;
  event_id: string;
  subject: string;
  payload: string;
  signature: string;
}

/** When the function that wrote a row made its event (its envelope's `time`), in ms; NaN if unreadable. */
function committedAt(r: OutboxRow): number {
  try {
    return Date.parse((JSON.parse(r.payload) as { time?: string }).time ?? '');
  } catch {
    return Number.NaN;
  }
}

/** What a commit that appends topology events notifies (migration 20261213000001). */
const OUTBOX_CHANNEL = 'relaynet_outbox';

/** Outbox rows sent before the first acknowledgement is awaited. */
const PIPELINE = 128;

/**
 * One outbox row to JetStream: its bytes and signature as the functions wrote them, `Nats-Msg-Id` = its
 * event id (a re-send is a duplicate the stream drops), and, inside a pipeline, the expectation that
 * the stream's last message is the row before it: a row whose predecessor was not stored fails instead
 * of being stored out of order. (JetStream checks the duplicate before the expectation, so a re-sent
 * row that was stored is acknowledged as a duplicate, not refused.)
 */
function publishRow(js: JetStreamClient, r: OutboxRow, after: string | null) {
  const h = headers();
  h.set(SIGNATURE_HEADER, r.signature);
  return js.publish(r.subject, new TextEncoder().encode(r.payload), {
    msgID: r.event_id,
    headers: h,
    timeout: 5_000,
    ...(after === null ? {} : { expect: { lastMsgID: after } }),
  });
}

/**
 * Copies the control plane's outbox (`relaynet.topology_events`) to JetStream in revision order.
 * It relays bytes the Edge Functions signed and holds no key, so it cannot forge topology. One
 * publisher runs per deployment; `Nats-Msg-Id` = event id makes a re-send after a crash harmless,
 * and relays skip revisions they already have. While NATS or Postgres is away it retries; nothing
 * is lost because the outbox is the source of truth and the cursor advances only after the ack.
 * Rows go out in pipelines of {@link PIPELINE}, each expecting its predecessor as the stream's last
 * message ({@link publishRow}); the first of a pipeline expects nothing, so a message someone else put
 * in the stream never stops the publisher. The cursor moves once per pipeline.
 */
export async function startTopologyPublisher(opts: {
  dbUrl: string;
  natsServers: string[];
  /** The publisher's own credentials: it may publish topology subjects, nothing else. */
  auth: BusAuth;
  /** The administrator's credentials, used once at start to create missing streams (existing ones are left as they are). */
  adminAuth: BusAuth;
  logger: Logger;
  /** How often the outbox is read: 100 ms by default, 1 s with `listen` (a safety net then). */
  pollMs?: number;
  /**
   * LISTEN for the outbox's notification (migration 20261213000001: a commit that appends topology
   * events notifies), so an event goes out as soon as it is committed instead of at the next poll. Only
   * where the database connection takes LISTEN (PostgreSQL directly, or the local PGlite multiplexer; not a
   * transaction pooler).
   */
  listen?: boolean;
  streamLimits?: StreamLimits;
  /**
   * The control plane's topology public key (base64): only a message it signed counts as the bus's
   * head when the publisher checks for a restored database. Without it the newest message counts.
   */
  topologyPublicKey?: string;
  /** What it published and when, and whether it is failing (control-plane metrics). */
  metrics?: Pick<ControlPlaneMetrics, 'published' | 'publisherFailing'> | null;
}): Promise<TopologyPublisher> {
  const log = opts.logger.child({ component: 'topology-publisher' });
  const sql = postgres(opts.dbUrl, { max: 1, prepare: false, onnotice: () => {}, connect_timeout: 10 });
  const nc = await connectBus({ servers: opts.natsServers, auth: opts.auth, name: 'relay-core topology-publisher', logger: log });
  const js = jetstream(nc);
  let bootstrapped = false;
  /** The last revision JetStream acknowledged (the cursor row, read again after each check of the epoch). */
  let published = 0;
  /** Whether the database was checked against the bus since the start or the last failure (a restore implies one). */
  let checked = false;
  let stopped = false;
  let running: Promise<number> | null = null;
  let failing = false;
  let epoch: string | null = null;
  const verifyKey = opts.topologyPublicKey ? importPublicKey(opts.topologyPublicKey) : null;

  /** The newest topology event the bus holds that the control plane signed (looking back at most 100 messages). */
  const busHead = async (jsm: JetStreamManager): Promise<BusHead | null> => {
    let last: number;
    try {
      const info = await jsm.streams.info(STREAMS.topology);
      if (!info.state.messages) return null;
      last = info.state.last_seq;
    } catch (e) {
      if (isNotFound(e)) return null;
      throw e;
    }
    for (let seq = last; seq > 0 && seq > last - 100; seq--) {
      let m: Awaited<ReturnType<JetStreamManager['streams']['getMessage']>>;
      try {
        m = await jsm.streams.getMessage(STREAMS.topology, { seq });
      } catch (e) {
        if (isNotFound(e)) continue; // deleted or purged
        throw e;
      }
      if (!m) continue;
      const sig = m.header?.get(SIGNATURE_HEADER);
      if (verifyKey && (!sig || !verifyBytes(verifyKey, m.data, sig))) continue;
      const head = busHeadOf(m.data);
      if (head) return head;
    }
    return null;
  };

  /**
   * Before publishing from a database it has not checked yet (at start, and after any failure, which a
   * restore implies): compare the bus's last event with the outbox, and begin a new epoch when the bus
   * is ahead of the database (src/control-plane/epoch.ts). A new epoch starts at the database's
   * revision; what the outbox holds up to it is covered by the new epoch's snapshots and is not
   * published (the cursor moves to it), so no relay ever gets a restored revision under the old epoch.
   */
  const checkEpoch = async (jsm: JetStreamManager): Promise<void> => {
    const head = await busHead(jsm);
    const [t] = await sql<{ epoch: string }[]>`select epoch::text as epoch from relaynet.topology`;
    const past = await sql<{ epoch: string }[]>`select epoch::text as epoch from relaynet.epochs where epoch <> ${t!.epoch}::uuid`;
    const holds = head
      ? (await sql`select 1 from relaynet.topology_events where event_id = ${head.eventId}::uuid and revision = ${head.revision}`).length > 0
      : false;
    const d = decideEpoch({ epoch: t!.epoch, past: past.map((r) => r.epoch), holdsBusHead: holds }, head);
    if (d.action === 'keep') {
      epoch = t!.epoch;
      return;
    }
    const minted = await sql.begin(async (tx) => {
      await tx`select revision from relaynet.topology for update`;
      const [r] = await tx<{ epoch: string; revision: string }[]>`
        update relaynet.topology set epoch = gen_random_uuid(), epoch_started_at = clock_timestamp(), epoch_reason = 'restored',
          updated_at = clock_timestamp()
        returning epoch::text as epoch, revision`;
      await tx`insert into relaynet.epochs (epoch, reason, revision) values (${r!.epoch}::uuid, 'restored', ${r!.revision})`;
      await tx`update relaynet.publisher_cursor set published_revision = ${r!.revision}`;
      return { epoch: r!.epoch, revision: Number(r!.revision) };
    });
    epoch = minted.epoch;
    log.warn(
      { previousEpoch: t!.epoch, epoch: minted.epoch, revision: minted.revision, detail: d.detail },
      'new control-plane epoch: the bus is ahead of the database',
    );
  };

  const cursor = async () =>
    Number((await sql<{ published_revision: string }[]>`select published_revision from relaynet.publisher_cursor`)[0]?.published_revision ?? 0);

  const once = async (): Promise<number> => {
    if (!bootstrapped) {
      // Streams are created by the control plane (here) or `bus bootstrap`, never by relays; an
      // operator's limits on an existing stream stay as they are.
      const admin = await connectBus({
        servers: opts.natsServers,
        auth: opts.adminAuth,
        name: 'relay-core control-plane admin',
        logger: log,
        waitOnFirstConnect: false,
      });
      try {
        const r = await bootstrapStreams(await jetstreamManager(admin), opts.streamLimits, { update: false });
        log.info({ streams: r }, 'streams ready');
      } finally {
        await admin.close().catch(() => {});
      }
      bootstrapped = true;
    }
    // The cursor row is read once (after the epoch check, which may move it); afterwards this (single) publisher is the only one moving it.
    if (!checked) {
      await checkEpoch(await jetstreamManager(nc));
      published = await cursor();
      checked = true;
    }
    let from = published;
    let n = 0;
    for (;;) {
      const rows = await sql<OutboxRow[]>`
        select revision, event_id, subject, payload, signature from relaynet.topology_events
        where revision > ${from} order by revision limit 500`;
      if (!rows.length) return n;
      for (let i = 0; i < rows.length; i += PIPELINE) {
        const chunk = rows.slice(i, i + PIPELINE);
        const acks = await Promise.allSettled(chunk.map((r, j) => publishRow(js, r, j > 0 ? chunk[j - 1]!.event_id : null)));
        const failed = acks.findIndex((a) => a.status === 'rejected');
        const done = failed < 0 ? chunk.length : failed;
        if (done > 0) {
          // One cursor write for the acknowledged prefix of the chunk.
          from = Number(chunk[done - 1]!.revision);
          await sql`update relaynet.publisher_cursor set published_revision = ${from} where published_revision < ${from}`;
          published = from;
          n += done;
          opts.metrics?.published(chunk.slice(0, done).map(committedAt), from, Date.now());
        }
        if (failed >= 0) throw (acks[failed] as PromiseRejectedResult).reason;
      }
      log.debug({ revision: from, count: rows.length }, 'published topology events');
    }
  };

  const flush = (): Promise<number> => {
    if (!running) {
      running = once().finally(() => {
        running = null;
      });
    }
    return running;
  };

  let wake: (() => void) | null = null;
  let notified = false;
  let notifiedRounds = 0;
  let unlisten: (() => Promise<void>) | null = null;
  if (opts.listen) {
    try {
      const l = await sql.listen(OUTBOX_CHANNEL, () => {
        notified = true;
        wake?.();
      });
      unlisten = () => l.unlisten();
    } catch (e) {
      log.warn({ err: String((e as Error).message ?? e) }, 'cannot LISTEN for the outbox; polling it');
    }
  }
  const pollMs = opts.pollMs ?? (unlisten ? 1_000 : 100);

  const loop = async () => {
    while (!stopped) {
      if (notified) notifiedRounds++;
      notified = false;
      try {
        await flush();
        if (failing) log.info('publishing again');
        failing = false;
        opts.metrics?.publisherFailing(false);
      } catch (e) {
        if (!failing) log.warn({ err: String((e as Error).message ?? e) }, 'cannot publish topology events yet; retrying');
        failing = true;
        opts.metrics?.publisherFailing(true);
        // The database may come back as another one (a restore): read the cursor and check the epoch again.
        checked = false;
      }
      // A notification during the round: go again at once; while failing, the retry waits its interval.
      if (stopped || (notified && !failing)) continue;
      await new Promise<void>((r) => {
        const t = setTimeout(r, pollMs);
        wake = () => {
          clearTimeout(t);
          r();
        };
      });
      wake = null;
    }
  };
  // The first round (the epoch check, then whatever waits) before returning, so that a caller that starts
  // the publisher before the functions has the epoch settled before any function writes an event.
  await flush().catch((e) => {
    failing = true;
    opts.metrics?.publisherFailing(true);
    checked = false;
    log.warn({ err: String((e as Error).message ?? e) }, 'cannot publish topology events yet; retrying');
  });
  void loop();
  log.info({ servers: opts.natsServers, epoch }, 'topology publisher started');

  return {
    flush,
    get publishedRevision() {
      return published;
    },
    get epoch() {
      return epoch;
    },
    get notifiedRounds() {
      return notifiedRounds;
    },
    headRevision: async () => Number((await sql<{ revision: string }[]>`select revision from relaynet.topology`)[0]?.revision ?? 0),
    async stop() {
      stopped = true;
      wake?.();
      await unlisten?.().catch(() => {});
      await running?.catch(() => {});
      await nc.drain().catch(() => {});
      await sql.end({ timeout: 2 });
    },
  };
}
