// What a measurer sends to an echo service and how it checks what comes back (docs/proof-of-bandwidth.md,
// "Measuring"). Each stream sends the keystream of AES-128-CTR under a key only the measurer knows, so
// the target cannot answer with anything but the bytes it was sent: the measurer runs a second copy of
// the keystream over what comes back and compares every byte (TCP keeps the order), a batch at a time
// (a stream over a WireGuard link delivers about one segment per read: checking each alone cost more
// CPU than the echo). Counting is per second of the measurement.
import { createCipheriv, randomBytes, type Cipheriv } from 'node:crypto';

/** The bytes a stream sends, in order: an endless keystream under a random key. */
export class EchoStream {
  readonly #send: Cipheriv;
  readonly #check: Cipheriv;
  /** Echoed bytes not yet checked (a copy: a reader may reuse its buffer), and when each part came. */
  readonly #batch = Buffer.allocUnsafe(CHECK_BATCH);
  #fill = 0;
  #parts: { atMs: number; bytes: number }[] = [];
  /** Batches (or chunks) compared, and those with a byte other than the one sent. */
  checks = 0;
  failures = 0;

  constructor(key: Buffer = randomBytes(16), iv: Buffer = randomBytes(16)) {
    this.#send = createCipheriv('aes-128-ctr', key, iv);
    this.#check = createCipheriv('aes-128-ctr', key, iv);
  }

  /** The next `n` bytes to send. */
  next(n: number): Buffer {
    return this.#send.update(n <= ZEROS.length ? ZEROS.subarray(0, n) : Buffer.alloc(n));
  }

  /** Check echoed bytes against what was sent at the same offset; true when they are the same. */
  check(echoed: Buffer): boolean {
    const expected = this.#check.update(echoed.length <= ZEROS.length ? ZEROS.subarray(0, echoed.length) : Buffer.alloc(echoed.length));
    this.checks++;
    const ok = expected.equals(echoed);
    if (!ok) this.failures++;
    return ok;
  }

  /**
   * Echoed bytes that came at `atMs`, copied (the caller may reuse `echoed`) and checked CHECK_BATCH
   * bytes at a time; `good` is told of each part of a batch that matched, with when it came (a batch
   * with a wrong byte counts none of its parts).
   */
  receive(echoed: Uint8Array, atMs: number, good: (atMs: number, bytes: number) => void): void {
    let from = 0;
    while (from < echoed.length) {
      const n = Math.min(echoed.length - from, this.#batch.length - this.#fill);
      this.#batch.set(echoed.subarray(from, from + n), this.#fill);
      this.#fill += n;
      this.#parts.push({ atMs, bytes: n });
      from += n;
      if (this.#fill === this.#batch.length) this.flush(good);
    }
  }

  /** Check what waits (at the end of the measurement). */
  flush(good: (atMs: number, bytes: number) => void): void {
    if (this.#fill === 0) return;
    const parts = this.#parts;
    const ok = this.check(this.#batch.subarray(0, this.#fill));
    this.#fill = 0;
    this.#parts = [];
    if (ok) for (const p of parts) good(p.atMs, p.bytes);
  }
}

/** How many echoed bytes a measurer checks at once. */
const CHECK_BATCH = 64 * 1024;
/** Zeros to encrypt into keystream (read only). */
const ZEROS = Buffer.alloc(64 * 1024);

/** Byte counts per second of a window that starts at `startMs` and lasts `seconds`. */
export class PerSecond {
  readonly counts: number[];
  readonly startMs: number;
  readonly seconds: number;
  constructor(startMs: number, seconds: number) {
    this.startMs = startMs;
    this.seconds = seconds;
    this.counts = new Array<number>(seconds).fill(0);
  }

  /** Count `bytes` at `nowMs`; outside the window they are not counted (false). */
  add(nowMs: number, bytes: number): boolean {
    const s = Math.floor((nowMs - this.startMs) / 1000);
    if (s < 0 || s >= this.seconds) return false;
    this.counts[s]! += bytes;
    return true;
  }
}

/**
 * The target's other traffic per second, from its links' WireGuard transmit counters as the relay's
 * observer reads them (every second in a sim, every 5 s by default): each sample's increase over the one
 * before, on every link but the measurers', spread evenly over the time between the two samples and
 * counted in the seconds of the window that time overlaps. A counter that went down (a peer set anew)
 * counts from zero. Rounded to whole bytes. Pure.
 */
export function backgroundOf(
  samples: readonly { atMs: number; tx: ReadonlyMap<string, number> }[],
  startMs: number,
  seconds: number,
  excluded: ReadonlySet<string>,
): number[] {
  const out = new Array<number>(seconds).fill(0);
  for (let i = 1; i < samples.length; i++) {
    const [a, b] = [samples[i - 1]!, samples[i]!];
    if (b.atMs <= a.atMs) continue;
    let sent = 0;
    for (const [peer, tx] of b.tx) {
      if (excluded.has(peer)) continue;
      const before = a.tx.get(peer);
      sent += before === undefined ? 0 : tx >= before ? tx - before : tx;
    }
    const first = Math.max(0, Math.floor((a.atMs - startMs) / 1000));
    const last = Math.min(seconds - 1, Math.floor((b.atMs - 1 - startMs) / 1000));
    for (let s = first; s <= last; s++) {
      const overlap = Math.min(b.atMs, startMs + (s + 1) * 1000) - Math.max(a.atMs, startMs + s * 1000);
      if (overlap > 0) out[s]! += (sent * overlap) / (b.atMs - a.atMs);
    }
  }
  return out.map(Math.round);
}
