import { PUBLISH_WINDOW } from '../contract/envelope.ts';
import type { LogEntry } from './log.ts';

/** An entry's `sourceSeq`, or null (a rejected message, a topology event, an event from before it existed). */
function sourceSeqOf(e: LogEntry): number | null {
  if (!e.ok) return null;
  const s = (e.event as { sourceSeq?: unknown }).sourceSeq;
  return typeof s === 'number' ? s : null;
}

/**
 * Puts one relay's stored events back in the order the relay published them. A relay has up to
 * {@link PUBLISH_WINDOW} events out at once; when one is not acknowledged it sends it and those after it
 * again, and those the stream had stored meanwhile stay where they are: an event can lie after up to
 * PUBLISH_WINDOW - 1 of its successors. Each carries its `sourceSeq`; entries are held, at most
 * `window` of them, until the one before has been given out.
 *
 * - Entries without a `sourceSeq` (rejected messages, events from before it existed) are given out where
 *   they lie; an accepted one first gives out all that is held, so older logs replay as stored.
 * - Where the log begins (or after a gap: events aged out of the stream), the next number is not known:
 *   entries are held until more than `window` are, then the lowest goes out.
 * - A number below the next one expected (a relay run whose clock was set back, a copy stored again after
 *   the stream's duplicate window) is given out where it lies, after what is held. Within the first
 *   `window` entries of a log nothing is expected yet: there, such a run is sorted by its numbers with
 *   the one before.
 *
 * Pure: the same entries in the same order always come out the same.
 */
export class SourceOrder {
  /** Held entries, by `sourceSeq` ascending. */
  readonly #held: { seq: number; e: LogEntry }[] = [];
  #next: number | null = null;
  /** Entries that came out ahead of entries stored before them. */
  reordered = 0;

  readonly window: number;

  constructor(window: number = PUBLISH_WINDOW) {
    this.window = window;
  }

  /** Offer the next stored entry; what can be given out now, in order. */
  push(e: LogEntry): LogEntry[] {
    const seq = sourceSeqOf(e);
    if (seq === null) return e.ok ? [...this.flush(), e] : [e];
    if (this.#next !== null && seq < this.#next) {
      const out = this.flush();
      out.push(e);
      this.#next = seq + 1;
      return out;
    }
    let i = this.#held.length;
    while (i > 0 && this.#held[i - 1]!.seq > seq) i--;
    if (i < this.#held.length) this.reordered++;
    this.#held.splice(i, 0, { seq, e });
    const out: LogEntry[] = [];
    while (this.#held.length && (this.#held[0]!.seq === this.#next || this.#held.length > this.window)) {
      const h = this.#held.shift()!;
      out.push(h.e);
      this.#next = h.seq + 1;
    }
    return out;
  }

  /** The end of the log: all that is held, in order. */
  flush(): LogEntry[] {
    const held = this.#held.splice(0);
    if (held.length) this.#next = held[held.length - 1]!.seq + 1;
    return held.map((h) => h.e);
  }
}
