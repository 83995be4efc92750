import type { KeyObject } from 'node:crypto';
import { AckPolicy, type ConsumerInfo, DeliverPolicy, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { fromCallback } from 'xstate';
import type { FollowCommand, FollowInput, RelayMachineEvent } from '../actors/relay.machine.ts';
import { isNotFound, isStreamNotFound } from '../bus/streams.ts';
import { topologyConsumerName } from '../contract/bus-auth.ts';
import { STREAMS, TOPOLOGY_SUBJECTS } from '../contract/subjects.ts';
import { decodeTopologyMessage, SIGNATURE_HEADER } from '../events/wire.ts';
import type { Logger } from '../lib/logger.ts';
import { sleep } from './control-plane-client.ts';

export interface FollowerDeps {
  js: JetStreamClient;
  jsm: JetStreamManager;
  relayId: string;
  controlPlaneKey: KeyObject;
  logger: Logger;
  /** Start the consumer this long before the snapshot's revision time (clock skew between Postgres and NATS). */
  startMarginMs?: number;
  /**
   * How often the follower checks that its consumer still exists (default {@link CONSUMER_PROBE_INTERVAL_MS});
   * it also checks at once when a pull finds nobody to answer it.
   */
  probeIntervalMs?: number;
  /**
   * A REPULL is left alone while the pull began, or handed a message over, less than this long ago
   * (default the registration's heartbeat interval; {@link repullDue}).
   */
  repullQuietMs?: number;
  /** Told when the follower sets up its consumer, follows the stream, or stops (for the status socket). */
  onState?: (state: FollowerState) => void;
}

export type FollowerState = 'setting-up' | 'following' | 'stopped';

/**
 * A durable consumer nobody pulls from for this long is removed by the server: a relay that crashed
 * and never came back leaves nothing behind for ever. A relay that comes back re-creates its consumer
 * on every seed anyway, so the threshold only has to outlast a restart or a long NATS outage.
 */
export const CONSUMER_INACTIVE_THRESHOLD_MS = 60 * 60_000;

/**
 * How often a follower asks the JetStream API whether its consumer still exists, when nothing else
 * suggests otherwise. A consumer deleted under an outstanding pull is told by the server (409), and a
 * pull sent to a consumer that is not there comes back unanswered (503), which starts a check at once;
 * this is for what neither catches. Every 5 s, a thousand relays' checks were 200 JetStream API requests
 * a second, the bulk of a loaded server's API work, and its timeouts stalled their followers.
 */
export const CONSUMER_PROBE_INTERVAL_MS = 60_000;

/** Name of a relay's durable topology consumer (one per relay; visible to operators with its lag; its name is its NATS permission). */
export { topologyConsumerName };

/**
 * (Re)create the relay's durable topology consumer so that it delivers from `start` on: a time (after
 * every seed: the snapshot says where the stream must be picked up), or a stream sequence (a pull started
 * again: right after the last message the follower handed over). Returns the consumer's info, from
 * which the follower pulls without asking for it again.
 */
export async function resetTopologyConsumer(jsm: JetStreamManager, relayId: string, start: Date | { seq: number }): Promise<ConsumerInfo> {
  await deleteTopologyConsumer(jsm, relayId);
  return await jsm.consumers.add(STREAMS.topology, {
    durable_name: topologyConsumerName(relayId),
    ack_policy: AckPolicy.Explicit,
    ...(start instanceof Date
      ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: start.toISOString() }
      : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: start.seq }),
    filter_subject: TOPOLOGY_SUBJECTS,
    ack_wait: 30_000_000_000,
    max_ack_pending: 1_000,
    inactive_threshold: CONSUMER_INACTIVE_THRESHOLD_MS * 1_000_000,
  });
}

/**
 * Where a message stands against the last one this pull handed over (`previous`, 0 before the first):
 * the next one, a repeat (delivered again after the ack wait), or one past messages this pull never
 * handed over. The stream holds topology subjects only, so its sequence numbers are the consumer's.
 * The first message of a pull is taken as it comes: the stream may have dropped older ones (limits),
 * which the fold sees as a gap in revisions.
 */
export function pullOrder(previous: number, seq: number): 'next' | 'repeat' | 'skipped' {
  if (previous === 0 || seq === previous + 1) return 'next';
  return seq <= previous ? 'repeat' : 'skipped';
}

/**
 * The counts of a consumer's info that say why a view is stuck, for a log line; a field the server's
 * answer lacks is null (a loaded nats-server answered one without `delivered`, and reading it threw
 * inside a relay process of bench:fleet, taking 500 relays down).
 */
export function consumerCounts(ci: unknown): Record<string, number | null> {
  const c = (ci ?? {}) as Partial<Record<string, unknown>>;
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  const seq = (v: unknown) => num((v as { stream_seq?: unknown } | null | undefined)?.stream_seq);
  return {
    delivered: seq(c.delivered),
    ackFloor: seq(c.ack_floor),
    numPending: num(c.num_pending),
    numAckPending: num(c.num_ack_pending),
    numWaiting: num(c.num_waiting),
    numRedelivered: num(c.num_redelivered),
  };
}

/**
 * Whether a REPULL should drop the pull: only one that has handed nothing over, and not begun, within
 * `quietMs` (a heartbeat interval). The relay actor says REPULL when a heartbeat finds its view behind
 * and unmoved since the one before; a pull begun since (a consumer set up late on a loaded bus) or still handing
 * messages over (a busy process working through them late) is moving, and dropping it only throws away
 * what it holds and asks the JetStream API to make the consumer again (bench:fleet, 300 relays in four
 * processes: a third of the REPULLs came within 2 s of the pull's start, many more 5 s after its last
 * message). A pull that stalled (what it was sent went to a connection that is gone, and waits out the
 * ack wait) has been quiet for that long.
 */
export function repullDue(now: number, pullStartedAt: number | null, lastMessageAt: number | null, quietMs: number): boolean {
  if (pullStartedAt === null) return false;
  return now - Math.max(pullStartedAt, lastMessageAt ?? pullStartedAt) >= quietMs;
}

/** Remove the relay's durable consumer (a clean drain: the relay is gone from the topology). */
export async function deleteTopologyConsumer(jsm: JetStreamManager, relayId: string): Promise<void> {
  try {
    await jsm.consumers.delete(STREAMS.topology, topologyConsumerName(relayId));
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
}

/**
 * The follow actor of the relay machine: consumes the topology stream from the snapshot's revision time,
 * verifies and decodes every message, and hands events or rejections to the relay actor, which folds them.
 * Stopping the actor stops the consumer; nothing is left running.
 */
export function topologyFollower(deps: FollowerDeps) {
  return fromCallback<FollowCommand, FollowInput>(({ sendBack, input, receive }) => runTopologyFollower(deps, input, sendBack, receive));
}

/**
 * The follower's body: starts consuming and returns the cleanup that stops it. `receive` registers for
 * the relay actor's commands: REPULL drops the pull in flight and starts a new one (no message is lost:
 * the durable consumer delivers again whatever was not acknowledged).
 */
export function runTopologyFollower(
  deps: FollowerDeps,
  input: FollowInput,
  sendBack: (e: RelayMachineEvent) => void,
  receive?: (listener: (e: FollowCommand) => void) => void,
): () => void {
  {
    const log = deps.logger.child({ actor: 'topology-follower' });
    const abort = new AbortController();
    let stopMessages: (() => void) | null = null;
    // Whether pulls work (the consumer set up, a pull under way), said to the relay actor on each change:
    // a view stalled while they fail is the bus's doing, and does not count toward a resync.
    let pulling: boolean | null = null;
    const pullWorks = (ok: boolean) => {
      if (pulling === ok) return;
      pulling = ok;
      sendBack({ type: 'FOLLOWER_PULL', ok });
    };
    const repullQuietMs = deps.repullQuietMs ?? (input.registration.heartbeatIntervalSeconds ?? 10) * 1_000;

    const run = async () => {
      deps.onState?.('setting-up');
      const startTime = new Date(Date.parse(input.registration.revisionTime) - (deps.startMarginMs ?? 60_000));
      let info: ConsumerInfo | null = null;
      for (let attempt = 0; !abort.signal.aborted; attempt++) {
        try {
          info = await resetTopologyConsumer(deps.jsm, deps.relayId, startTime);
          break;
        } catch (e) {
          // A view standing still meanwhile is the bus's doing: the relay actor does not count it toward a resync.
          pullWorks(false);
          log.warn({ err: String(e), attempt }, 'cannot set up the topology consumer yet, retrying');
          await sleep(Math.min(5_000, 250 * 2 ** attempt), abort.signal);
        }
      }
      if (abort.signal.aborted || info === null) return;
      log.info({ startTime: startTime.toISOString(), revision: input.registration.revision }, 'following topology');
      deps.onState?.('following');
      // A pull started again begins right after the last message handed over: the consumer is made anew
      // from there, since messages the server had sent to the pull that was dropped would come again
      // only after the ack wait, behind later ones.
      let lastSeq = 0;
      let lastMessageAt: number | null = null;
      let pullStartedAt: number | null = null;
      let repull = false;
      // A consumer deleted while no pull is outstanding produces no status from the client, so the
      // follower also looks its consumer up now and then, and whenever a pull goes unanswered: a missing
      // consumer means a resync. One check at a time.
      let checking = false;
      let lost = false;
      const check = () => {
        if (checking || lost || abort.signal.aborted) return;
        checking = true;
        deps.jsm.consumers
          .info(STREAMS.topology, topologyConsumerName(deps.relayId))
          .then(
            () => {},
            (e) => {
              // Not found while a pull starts again is the consumer being made anew.
              if (abort.signal.aborted || !isNotFound(e) || repull) return;
              lost = true;
              clearInterval(probe);
              const streamGone = isStreamNotFound(e);
              log.warn(streamGone ? 'topology stream gone' : 'topology consumer missing');
              sendBack(
                streamGone
                  ? { type: 'CONSUMER_LOST', reason: 'stream-purged', detail: 'consumer info: stream not found' }
                  : { type: 'CONSUMER_LOST', reason: 'consumer-deleted', detail: 'consumer info: not found' },
              );
            },
          )
          .finally(() => {
            checking = false;
          });
      };
      const probe = setInterval(check, deps.probeIntervalMs ?? CONSUMER_PROBE_INTERVAL_MS);
      abort.signal.addEventListener('abort', () => clearInterval(probe), { once: true });

      receive?.((e) => {
        if (e.type !== 'REPULL' || !stopMessages || abort.signal.aborted) return;
        const now = Date.now();
        const said = {
          lastSeq,
          lastMessageAgoMs: lastMessageAt === null ? null : now - lastMessageAt,
          pullAgeMs: pullStartedAt === null ? null : now - pullStartedAt,
        };
        if (!repullDue(now, pullStartedAt, lastMessageAt, repullQuietMs)) {
          log.info(said, 'the view is behind the control plane but the pull is moving: left to go on');
          return;
        }
        // What the consumer looked like (a warning: a view stuck behind is worth an operator's look, and
        // the consumer's counts say whose doing it is: nothing pending, delivered elsewhere, or not delivered).
        const msg = 'the view is behind the control plane and has not moved since the last heartbeat: pulling again';
        deps.jsm.consumers.info(STREAMS.topology, topologyConsumerName(deps.relayId)).then(
          (ci) => log.warn({ ...said, ...consumerCounts(ci) }, msg),
          (err) => log.warn({ ...said, consumer: String(err) }, msg),
        );
        repull = true;
        stopMessages();
      });

      for (let attempt = 0; !abort.signal.aborted; ) {
        let messages: Awaited<ReturnType<Awaited<ReturnType<typeof deps.js.consumers.get>>['consume']>>;
        try {
          if (repull) {
            info = await resetTopologyConsumer(deps.jsm, deps.relayId, lastSeq > 0 ? { seq: lastSeq + 1 } : startTime);
            repull = false;
          }
          // From the info its creation returned: no request to look it up again.
          const consumer = deps.js.consumers.getConsumerFromInfo(info);
          // After a reconnect or two missed idle heartbeats the client pulls again at once (`bind`): left
          // to itself it would first ask for the consumer's info, and a loaded bus that times such requests
          // out (5 s each, 4 to 12 s apart) left followers not pulling for a minute while events waited.
          // Whether the consumer still exists is the probe's question (above) and the pull's 409 status's;
          // a pull that nobody answers (a consumer electing a leader after a failover) goes unanswered for
          // two heartbeats (8 s) and is made again, under the heartbeats that would resync the relay.
          messages = await consumer.consume({ max_messages: 256, idle_heartbeat: 4_000, expires: 8_000, bind: true });
          attempt = 0;
          pullStartedAt = Date.now();
          pullWorks(true);
        } catch (e) {
          // A consumer that is gone means a resync; one that does not answer yet (electing a leader) is asked again.
          if (abort.signal.aborted || isNotFound(e)) throw e;
          pullWorks(false);
          log.warn({ err: String(e), attempt }, 'cannot pull from the topology consumer yet, retrying');
          await sleep(Math.min(2_000, 250 * 2 ** attempt++), abort.signal);
          continue;
        }
        stopMessages = () => void messages.stop();
        if (abort.signal.aborted) return stopMessages();

        // A pull outstanding when the consumer (or its stream) is deleted is told so by the server; a pull
        // nobody answers (503: the consumer gone, or electing a leader) has the consumer checked now.
        void (async () => {
          for await (const s of messages.status()) {
            if (s.type === 'no_responders') check();
            if (s.type === 'consumer_deleted') {
              log.warn({ status: s.type }, 'topology consumer lost');
              sendBack({ type: 'CONSUMER_LOST', reason: 'consumer-deleted', detail: s.type });
              return;
            }
          }
        })().catch(() => {});

        let firstOfPull = true;
        for await (const m of messages) {
          if (abort.signal.aborted) break;
          if (pullOrder(firstOfPull ? 0 : lastSeq, m.seq) === 'skipped') {
            // Messages between went to a pull that is gone (a connection dropped with them in flight):
            // they would come again only after the ack wait, behind this one, and the fold would see a
            // gap. This one is left unacknowledged; the pull starts again right after the last handed over.
            log.warn({ lastSeq, streamSeq: m.seq }, 'topology messages skipped by the pull: pulling again from the first of them');
            repull = true;
            stopMessages();
            break;
          }
          firstOfPull = false;
          const sig = m.headers?.get(SIGNATURE_HEADER) || undefined;
          const r = decodeTopologyMessage(m.subject, m.data, sig, deps.controlPlaneKey);
          lastSeq = Math.max(lastSeq, m.seq);
          lastMessageAt = Date.now();
          if (r.ok) {
            sendBack({ type: 'TOPOLOGY_EVENT', event: r.event, streamSeq: m.seq });
          } else {
            log.warn({ reason: r.rejection.reason, detail: r.rejection.detail, subject: m.subject, streamSeq: m.seq }, 'rejected topology message');
            sendBack({ type: 'TOPOLOGY_REJECTED', rejection: r.rejection, subject: m.subject, streamSeq: m.seq });
          }
          m.ack();
        }
      }
    };
    run().catch((e) => {
      if (!abort.signal.aborted) {
        log.error({ err: String(e) }, 'topology follower failed; resyncing');
        sendBack({ type: 'CONSUMER_LOST', reason: 'consumer-deleted', detail: `follower failed: ${String(e).slice(0, 200)}` });
      }
    });
    return () => {
      abort.abort();
      stopMessages?.();
      deps.onState?.('stopped');
    };
  }
}
