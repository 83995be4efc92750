import type { KeyObject } from 'node:crypto';
import type { JetStreamClient } from '@nats-io/jetstream';
import { headers } from '@nats-io/transport-node';
import { PUBLISH_WINDOW } from '../contract/envelope.ts';
import type { RelayEvent } from '../contract/relay.events.ts';
import { subjectFor } from '../contract/subjects.ts';
import { signBytes } from '../events/signing.ts';
import { encodeEvent, SIGNATURE_HEADER } from '../events/wire.ts';
import type { Logger } from '../lib/logger.ts';

/**
 * How long a relay waits for JetStream to acknowledge an event before it sends it (and all after it)
 * again. Long enough for a busy server, or a busy process whose timers run before the acknowledgement
 * it has already received is read (Node runs expired timers before it polls sockets): a short one
 * turns a slow moment into a window of duplicates (fleet run 8 had 2 s). A lost connection is seen by
 * its own pings, and a stream without a leader answers at once (503).
 */
export const ACK_TIMEOUT_MS = 10_000;
/** The fast growth never starts below this: after an outage a relay is back to a useful window within a few round trips. */
export const MIN_WINDOW_THRESHOLD = 8;

export interface WindowState {
  /** Events that may be out at once. */
  size: number;
  /** Below it, each acknowledgement adds one (the window doubles per round trip); from it on, one per window. */
  threshold: number;
  /** Acknowledgements towards the next one added, from the threshold on. */
  credit: number;
}

export const initialWindow = (): WindowState => ({ size: PUBLISH_WINDOW, threshold: PUBLISH_WINDOW, credit: 0 });

/**
 * The publish window after an acknowledgement or a failure (additive increase, multiplicative decrease,
 * the shape of TCP's congestion window). Pure; between 1 and {@link PUBLISH_WINDOW}.
 */
export function nextWindow(w: WindowState, outcome: 'acked' | 'failed'): WindowState {
  if (outcome === 'failed') {
    const size = Math.max(1, Math.floor(w.size / 2));
    return { size, threshold: Math.max(MIN_WINDOW_THRESHOLD, size), credit: 0 };
  }
  if (w.size >= PUBLISH_WINDOW) return w;
  if (w.size < w.threshold) return { ...w, size: w.size + 1 };
  return w.credit + 1 >= w.size ? { ...w, size: w.size + 1, credit: 0 } : { ...w, credit: w.credit + 1 };
}

/** What was dropped since the last report: how many, and when the first and the last were. */
export interface DroppedReport {
  count: number;
  capacity: number;
  since: string;
  until: string;
}

/**
 * Publishes a relay's own events to JetStream in order. Until the bus is first up (`attach`) and while
 * NATS is away, events wait in a bounded queue (oldest dropped and counted past `capacity`); once an
 * event goes out again, the drops since the last report are handed to `onDropped` (the relay publishes
 * them as a `RelayEventsDropped` event). `Nats-Msg-Id` = event id makes re-sends after a lost
 * acknowledgement harmless.
 * Each message is signed with the relay's identity key over its exact bytes, the signature in the
 * `Relaynet-Signature` header (readers verify it, docs/events.md).
 *
 * Up to `window` events are out at once (never more than {@link PUBLISH_WINDOW}), sent in order on the
 * one connection (which keeps their order), each leaving the queue when acknowledged, in order. When one
 * is not acknowledged, the rest of its window is let settle and all from it on are sent again, in order:
 * those the stream stored meanwhile are duplicates it drops by their id. Events out are never dropped
 * for capacity (the oldest waiting one is). So the stream can hold an event after up to
 * PUBLISH_WINDOW - 1 of its successors: each event carries its `sourceSeq` (numbered when first sent),
 * by which readers put them back in order (`SourceOrder`).
 *
 * The window adapts (`nextWindow`): a failure halves it, acknowledgements grow it back, one each below
 * {@link MIN_WINDOW_THRESHOLD} and one per window's worth from there. A server (or a client's event
 * loop) too busy to acknowledge within the timeout then gets fewer events out and fewer sent again,
 * instead of a whole window of duplicates on each timeout (bench/README.md, fleet run 8).
 */
export class RelayEventPublisher {
  #js: JetStreamClient | null;
  readonly #log: Logger;
  readonly #relayId: string;
  readonly #capacity: number;
  readonly #identity: KeyObject | null;
  /** Events waiting to be sent. */
  readonly #queue: RelayEvent[] = [];
  /** Events sent and not acknowledged yet, in the order sent (taken from the queue's head). */
  #out: { e: RelayEvent; ack: Promise<unknown> }[] = [];
  /** Sending is held: an event was not acknowledged, and those out settle before all are sent again. */
  #held = false;
  #running = false;
  #closed = false;
  #wake: (() => void) | null = null;
  readonly #onDropped: ((r: DroppedReport) => void) | null;
  readonly #onPublished: ((e: RelayEvent, ackedAtMs: number) => void) | null;
  readonly #now: () => number;
  /** Drops not reported yet. */
  #unreported: { count: number; since: number; until: number } | null = null;
  /** How many events may be out at once now, and how it grows back (see `nextWindow`). */
  #window: WindowState = initialWindow();
  /** The next event's `sourceSeq`: the time of the first send in ms × 1,000, then one more per event sent. */
  #nextSeq: number | null = null;
  published = 0;
  dropped = 0;
  /** Events sent again because one before them (or they) went unacknowledged. */
  resent = 0;
  /** Rounds in which the head of the window went unacknowledged (a timeout, or the bus refusing). */
  failures = 0;

  constructor(opts: {
    /** The JetStream client; null until the bus is first up (see `attach`). */
    js: JetStreamClient | null;
    relayId: string;
    logger: Logger;
    capacity?: number;
    /** The relay's Ed25519 identity key; without one (tests of old behaviour) events go unsigned. */
    identity?: KeyObject | null;
    onDropped?: (r: DroppedReport) => void;
    /** Each event JetStream acknowledged, and when (metrics: the publish lag). */
    onPublished?: (e: RelayEvent, ackedAtMs: number) => void;
    now?: () => number;
  }) {
    this.#js = opts.js;
    this.#identity = opts.identity ?? null;
    this.#relayId = opts.relayId;
    this.#log = opts.logger.child({ component: 'relay-event-publisher' });
    this.#capacity = opts.capacity ?? 10_000;
    this.#onDropped = opts.onDropped ?? null;
    this.#onPublished = opts.onPublished ?? null;
    this.#now = opts.now ?? Date.now;
  }

  /** How many events may be out at once now. */
  get window(): number {
    return this.#window.size;
  }

  /** The bus is up: start sending what waits. */
  attach(js: JetStreamClient): void {
    this.#js = js;
    if (this.#queue.length && !this.#running) void this.#run();
  }

  /** Events not acknowledged yet: waiting, and out. */
  get pending(): number {
    return this.#queue.length + this.#out.length;
  }

  publish(e: RelayEvent): void {
    if (this.#closed) return;
    this.#queue.push(e);
    if (this.pending > this.#capacity && this.#queue.length > 0) {
      this.#queue.shift();
      this.dropped++;
      const t = this.#now();
      this.#unreported = this.#unreported ? { ...this.#unreported, count: this.#unreported.count + 1, until: t } : { count: 1, since: t, until: t };
      if (this.dropped === 1 || this.dropped % 1000 === 0) this.#log.warn({ dropped: this.dropped }, 'relay event queue full, dropping oldest');
    }
    this.#wake?.();
    if (!this.#running && this.#js) void this.#run();
    else this.#fill();
  }

  async #run(): Promise<void> {
    if (!this.#js) return;
    this.#running = true;
    let streak = 0;
    while (!this.#closed && this.pending) {
      this.#fill();
      const head = this.#out[0]!;
      try {
        await head.ack;
      } catch (err) {
        // Not acknowledged: the others out settle, then all of them go back to the head of the queue, in order.
        this.#held = true;
        await Promise.allSettled(this.#out.map((o) => o.ack));
        const out = this.#out.length;
        this.#queue.unshift(...this.#out.map((o) => o.e));
        this.#out = [];
        this.resent += out;
        this.failures++;
        streak++;
        const was = this.window;
        this.#window = nextWindow(this.#window, 'failed');
        if (streak === 1)
          this.#log.warn(
            { err: String(err), pending: this.pending, resending: out, window: this.window, was, failures: this.failures },
            'relay events not acknowledged, will send again',
          );
        await new Promise<void>((r) => {
          const t = setTimeout(r, Math.min(2_000, 100 * 2 ** streak));
          this.#wake = () => {
            clearTimeout(t);
            r();
          };
        });
        this.#wake = null;
        this.#held = false;
        continue;
      }
      this.#out.shift();
      this.#window = nextWindow(this.#window, 'acked');
      this.published++;
      this.#onPublished?.(head.e, this.#now());
      streak = 0;
      this.#reportDrops();
    }
    this.#running = false;
  }

  /** Send what waits, in order, while fewer than the window are out. */
  #fill(): void {
    const js = this.#js;
    if (!js || this.#held || this.#closed) return;
    while (this.#out.length < this.window && this.#queue.length) {
      const waiting = this.#queue.shift()!;
      // Numbered once, when first sent: sent again, it is the same bytes (and the same message id).
      this.#nextSeq ??= Math.max(0, Math.floor(this.#now())) * 1_000;
      const e = waiting.sourceSeq === undefined ? { ...waiting, sourceSeq: this.#nextSeq++ } : waiting;
      const ack = this.#send(js, e);
      ack.catch(() => {}); // handled in order by #run; never an unhandled rejection meanwhile
      this.#out.push({ e, ack });
    }
  }

  /** Sign and send one event: its acknowledgement. */
  #send(js: JetStreamClient, e: RelayEvent): Promise<unknown> {
    try {
      const data = encodeEvent(e);
      const h = headers();
      if (this.#identity) h.set(SIGNATURE_HEADER, signBytes(this.#identity, data));
      return js.publish(subjectFor(e.type, this.#relayId), data, { msgID: e.id, timeout: ACK_TIMEOUT_MS, headers: h });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** The bus takes events again: say what was lost meanwhile (queued behind what waits). */
  #reportDrops(): void {
    const lost = this.#unreported;
    if (!lost || !this.#onDropped) return;
    this.#unreported = null;
    this.#log.warn({ dropped: lost.count }, 'relay events were dropped while the bus was away; reporting');
    this.#onDropped({
      count: lost.count,
      capacity: this.#capacity,
      since: new Date(lost.since).toISOString(),
      until: new Date(lost.until).toISOString(),
    });
  }

  /** Try to send what is queued within `timeoutMs`, then stop. */
  async close(timeoutMs = 2_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.pending && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    this.#closed = true;
    this.#wake?.();
  }
}
