import { DeliverPolicy, jetstream, type JsMsg, type OrderedConsumerOptions } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { filterSubject, STREAM_OF, type EventFilter, type Since, type StoredMessage, type StreamKind } from '../events/log.ts';
import { SIGNATURE_HEADER } from '../events/wire.ts';
import { kebab, SUBJECT_ROOT } from '../contract/subjects.ts';
import { isNotFound } from './streams.ts';

/**
 * Reads the event streams through ordered consumers (ephemeral, in order, no acks, nothing left on the
 * server afterwards). The only code of `events tail`, `events export` and `replay` that touches NATS;
 * decoding and filtering are pure (src/events/log.ts).
 */

function consumerOptions(stream: StreamKind, filter: EventFilter, since: Since): Partial<OrderedConsumerOptions> {
  const filter_subjects = filterSubject(stream, filter);
  switch (since.kind) {
    case 'new':
      return { filter_subjects, deliver_policy: DeliverPolicy.New };
    case 'all':
      return { filter_subjects, deliver_policy: DeliverPolicy.All };
    case 'seq':
      return { filter_subjects, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: since.seq };
    case 'time':
      return { filter_subjects, deliver_policy: DeliverPolicy.StartTime, opt_start_time: since.time.toISOString() };
  }
}

function stored(stream: StreamKind, m: JsMsg): StoredMessage {
  return {
    stream,
    seq: m.seq,
    subject: m.subject,
    time: new Date(Number(BigInt(m.info.timestampNanos) / 1_000_000n)).toISOString(),
    data: m.data,
    signature: m.headers?.get(SIGNATURE_HEADER) || null,
  };
}

async function orderedConsumer(nc: NatsConnection, stream: StreamKind, filter: EventFilter, since: Since, subject?: string) {
  const js = jetstream(nc);
  try {
    return await js.consumers.get(STREAM_OF[stream], { ...consumerOptions(stream, filter, since), ...(subject ? { filter_subjects: subject } : {}) });
  } catch (e) {
    if (isNotFound(e)) throw new Error(`stream ${STREAM_OF[stream]} does not exist on this NATS (no relay or control plane has bootstrapped it)`);
    throw e;
  }
}

/**
 * What is stored now, oldest first, then stop: one stream after the other. `upTo` stops at a stream
 * sequence (inclusive) of the relay stream.
 */
export async function* readStored(
  nc: NatsConnection,
  streams: StreamKind[],
  filter: EventFilter,
  since: Since,
  upTo?: number,
  subject?: string,
): AsyncGenerator<StoredMessage> {
  for (const stream of streams) {
    const c = await orderedConsumer(nc, stream, filter, since, subject);
    if ((await c.info()).num_pending === 0) continue;
    const messages = await c.consume({ max_messages: 1000 });
    try {
      for await (const m of messages) {
        if (upTo !== undefined && stream === 'relay' && m.seq > upTo) break;
        yield stored(stream, m);
        if (m.info.pending === 0) break;
      }
    } finally {
      await messages.close().catch(() => {});
    }
  }
}

/**
 * The stored `RelayAdmitted` messages of the topology stream from sequence `from` on (every relay's,
 * whatever the reader's filter): where a reader learns the relays' identity keys before it verifies
 * their events.
 */
export function readAdmissions(nc: NatsConnection, from = 1): AsyncGenerator<StoredMessage> {
  return readStored(nc, ['topology'], {}, { kind: 'seq', seq: from }, undefined, `${SUBJECT_ROOT}.topology.*.${kebab('RelayAdmitted')}`);
}

/**
 * Every message from `since` on (one for all streams, or one per stream), from all `streams` as they
 * arrive, until `signal` aborts. Messages of one stream come in order; the streams are interleaved as
 * the server delivers them.
 */
export async function* follow(
  nc: NatsConnection,
  streams: StreamKind[],
  filter: EventFilter,
  since: Since | ((stream: StreamKind) => Since),
  signal: AbortSignal,
): AsyncGenerator<StoredMessage> {
  const queue: StoredMessage[] = [];
  let wake: (() => void) | null = null;
  let failure: unknown = null;
  const consumers = await Promise.all(
    streams.map(async (s) => ({
      s,
      messages: await (await orderedConsumer(nc, s, filter, typeof since === 'function' ? since(s) : since)).consume({ max_messages: 1000 }),
    })),
  );
  const pumps = consumers.map(({ s, messages }) =>
    (async () => {
      for await (const m of messages) {
        queue.push(stored(s, m));
        wake?.();
      }
    })().catch((e) => {
      failure = e;
      wake?.();
    }),
  );
  const onAbort = () => wake?.();
  signal.addEventListener('abort', onAbort);
  try {
    while (!signal.aborted) {
      if (failure) throw failure;
      const next = queue.shift();
      if (next) {
        yield next;
        continue;
      }
      await new Promise<void>((r) => (wake = r));
      wake = null;
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
    for (const { messages } of consumers) await messages.close().catch(() => {});
    await Promise.allSettled(pumps);
  }
}
