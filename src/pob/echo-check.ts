// What a measurer sends to an echo service and how it checks what comes back (docs/proof-of-bandwidth.md,
// "Measuring"). Each stream sends the keystream of AES-128-CTR under a key only the measurer knows, so
// the target cannot answer with anything but the bytes it was sent: the measurer runs a second copy of
// the keystream over what comes back and compares every byte (TCP keeps the order). Counting is per
// second of the measurement.
import { createCipheriv, randomBytes, type Cipheriv } from 'node:crypto';

/** The bytes a stream sends, in order: an endless keystream under a random key. */
export class EchoStream {
  readonly #send: Cipheriv;
  readonly #check: Cipheriv;
  /** Chunks compared, and those with a byte other than the one sent. */
  checks = 0;
  failures = 0;

  constructor(key: Buffer = randomBytes(16), iv: Buffer = randomBytes(16)) {
    this.#send = createCipheriv('aes-128-ctr', key, iv);
    this.#check = createCipheriv('aes-128-ctr', key, iv);
  }

  /** The next `n` bytes to send. */
  next(n: number): Buffer {
    return this.#send.update(Buffer.alloc(n));
  }

  /** Check echoed bytes against what was sent at the same offset; true when they are the same. */
  check(echoed: Buffer): boolean {
    const expected = this.#check.update(Buffer.alloc(echoed.length));
    this.checks++;
    const ok = expected.equals(echoed);
    if (!ok) this.failures++;
    return ok;
  }
}

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
 * The target's other traffic per second, from its links' WireGuard transmit counters sampled about once
 * a second: each sample's increase over the one before, on every link but the measurers', counted in the
 * second the sample falls in. A counter that went down (a peer set anew) counts from zero. Pure.
 */
export function backgroundOf(
  samples: readonly { atMs: number; tx: ReadonlyMap<string, number> }[],
  startMs: number,
  seconds: number,
  excluded: ReadonlySet<string>,
): number[] {
  const out = new PerSecond(startMs, seconds);
  for (let i = 1; i < samples.length; i++) {
    const [a, b] = [samples[i - 1]!, samples[i]!];
    let sent = 0;
    for (const [peer, tx] of b.tx) {
      if (excluded.has(peer)) continue;
      const before = a.tx.get(peer);
      sent += before === undefined ? 0 : tx >= before ? tx - before : tx;
    }
    out.add(b.atMs - 1, sent);
  }
  return out.counts;
}
