import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { headers } from '@nats-io/transport-node';
import postgres from 'postgres';
import { type BusAuth, connectBus } from '../bus/connection.ts';
import { bootstrapStreams, type StreamLimits } from '../bus/streams.ts';
import { SIGNATURE_HEADER } from '../events/wire.ts';
import type { Logger } from '../lib/logger.ts';

export interface TopologyPublisher {
  /** Publish everything committed so far; resolves when JetStream acknowledged it (or rejects). */
  flush(): Promise<number>;
  /** Last revision JetStream acknowledged. */
  readonly publishedRevision: number;
  stop(): Promise<void>;
}

interface OutboxRow {
  revision: string;
  event_id: string;
  subject: string;
  payload: string;
  signature: string;
}

/**
 * Copies the control plane's outbox (`relaynet.topology_events`) to JetStream in revision order.
 * It relays bytes the Edge Functions signed and holds no key, so it cannot forge topology. One
 * publisher runs per deployment; `Nats-Msg-Id` = event id makes a re-send after a crash harmless,
 * and relays skip revisions they already have. While NATS or Postgres is away it retries; nothing
 * is lost because the outbox is the source of truth and the cursor advances only after the ack.
 */
export async function startTopologyPublisher(opts: {
  dbUrl: string;
  natsServers: string[];
  /** The publisher's own credentials: it may publish topology subjects, nothing else. */
  auth: BusAuth;
  /** The administrator's credentials, used once at start to create missing streams (existing ones are left as they are). */
  adminAuth: BusAuth;
  logger: Logger;
  pollMs?: number;
  streamLimits?: StreamLimits;
}): Promise<TopologyPublisher> {
  const log = opts.logger.child({ component: 'topology-publisher' });
  const sql = postgres(opts.dbUrl, { max: 1, prepare: false, onnotice: () => {}, connect_timeout: 10 });
  const nc = await connectBus({ servers: opts.natsServers, auth: opts.auth, name: 'relay-core topology-publisher', logger: log });
  const js = jetstream(nc);
  let bootstrapped = false;
  let published = -1;
  let stopped = false;
  let running: Promise<number> | null = null;
  let failing = false;

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
    // The cursor row is read once; afterwards this (single) publisher is the only one moving it.
    if (published < 0) published = await cursor();
    let from = published;
    let n = 0;
    for (;;) {
      const rows = await sql<OutboxRow[]>`
        select revision, event_id, subject, payload, signature from relaynet.topology_events
        where revision > ${from} order by revision limit 500`;
      if (!rows.length) return n;
      for (const r of rows) {
        const h = headers();
        h.set(SIGNATURE_HEADER, r.signature);
        await js.publish(r.subject, new TextEncoder().encode(r.payload), { msgID: r.event_id, headers: h, timeout: 5_000 });
        from = Number(r.revision);
        await sql`update relaynet.publisher_cursor set published_revision = ${from} where published_revision < ${from}`;
        published = from;
        n++;
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

  const loop = async () => {
    while (!stopped) {
      try {
        await flush();
        if (failing) log.info('publishing again');
        failing = false;
      } catch (e) {
        if (!failing) log.warn({ err: String((e as Error).message ?? e) }, 'cannot publish topology events yet; retrying');
        failing = true;
      }
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 100));
    }
  };
  void loop();
  log.info({ servers: opts.natsServers }, 'topology publisher started');

  return {
    flush,
    get publishedRevision() {
      return Math.max(published, 0);
    },
    async stop() {
      stopped = true;
      await running?.catch(() => {});
      await nc.drain().catch(() => {});
      await sql.end({ timeout: 2 });
    },
  };
}
