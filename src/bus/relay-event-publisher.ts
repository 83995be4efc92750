import type { KeyObject } from 'node:crypto';
import type { JetStreamClient } from '@nats-io/jetstream';
import { headers } from '@nats-io/transport-node';
import type { RelayEvent } from '../contract/relay.events.ts';
import { subjectFor } from '../contract/subjects.ts';
import { signBytes } from '../events/signing.ts';
import { encodeEvent, SIGNATURE_HEADER } from '../events/wire.ts';
import type { Logger } from '../lib/logger.ts';

/**
 * Publishes a relay's own events to JetStream in order. While NATS is away events wait in a bounded
 * queue (oldest dropped and counted past `capacity`); `Nats-Msg-Id` = event id makes re-sends after
 * a lost acknowledgement harmless. Each message is signed with the relay's identity key over its exact
 * bytes, the signature in the `Relaynet-Signature` header (readers verify it, docs/events.md).
 */
export class RelayEventPublisher {
  readonly #js: JetStreamClient;
  readonly #log: Logger;
  readonly #relayId: string;
  readonly #capacity: number;
  readonly #identity: KeyObject | null;
  readonly #queue: RelayEvent[] = [];
  #running = false;
  #closed = false;
  #wake: (() => void) | null = null;
  published = 0;
  dropped = 0;

  /** `identity`: the relay's Ed25519 identity key; without one (tests of old behaviour) events go unsigned. */
  constructor(opts: { js: JetStreamClient; relayId: string; logger: Logger; capacity?: number; identity?: KeyObject | null }) {
    this.#js = opts.js;
    this.#identity = opts.identity ?? null;
    this.#relayId = opts.relayId;
    this.#log = opts.logger.child({ component: 'relay-event-publisher' });
    this.#capacity = opts.capacity ?? 10_000;
  }

  get pending(): number {
    return this.#queue.length;
  }

  publish(e: RelayEvent): void {
    if (this.#closed) return;
    this.#queue.push(e);
    if (this.#queue.length > this.#capacity) {
      this.#queue.shift();
      this.dropped++;
      if (this.dropped === 1 || this.dropped % 1000 === 0) this.#log.warn({ dropped: this.dropped }, 'relay event queue full, dropping oldest');
    }
    this.#wake?.();
    if (!this.#running) void this.#run();
  }

  async #run(): Promise<void> {
    this.#running = true;
    let failures = 0;
    while (!this.#closed && this.#queue.length) {
      const e = this.#queue[0]!;
      try {
        const data = encodeEvent(e);
        const h = headers();
        if (this.#identity) h.set(SIGNATURE_HEADER, signBytes(this.#identity, data));
        await this.#js.publish(subjectFor(e.type, this.#relayId), data, { msgID: e.id, timeout: 2_000, headers: h });
        this.#queue.shift();
        this.published++;
        failures = 0;
      } catch (err) {
        failures++;
        if (failures === 1) this.#log.warn({ err: String(err), pending: this.#queue.length }, 'cannot publish relay events yet, will retry');
        await new Promise<void>((r) => {
          const t = setTimeout(r, Math.min(2_000, 100 * 2 ** failures));
          this.#wake = () => {
            clearTimeout(t);
            r();
          };
        });
        this.#wake = null;
      }
    }
    this.#running = false;
  }

  /** Try to send what is queued within `timeoutMs`, then stop. */
  async close(timeoutMs = 2_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.#queue.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    this.#closed = true;
    this.#wake?.();
  }
}
