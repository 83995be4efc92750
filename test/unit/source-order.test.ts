import { describe, expect, it } from 'vitest';
import { PUBLISH_WINDOW } from '../../src/contract/envelope.ts';
import type { LogEntry } from '../../src/events/log.ts';
import { SourceOrder } from '../../src/events/source-order.ts';

let streamSeq = 0;
/** A stored relay event numbered `n` by its relay (null: published before numbers existed). */
const entry = (n: number | null, tag = String(n)): LogEntry => ({
  ok: true,
  stream: 'relay',
  seq: ++streamSeq,
  subject: 'relaynet.relay.relay-1.relay.relay-draining',
  time: '2026-12-03T00:00:00.000Z',
  event: {
    id: '00000000-0000-4000-8000-000000000000',
    type: 'RelayDraining',
    version: 1,
    source: 'relay-1',
    time: '2026-12-03T00:00:00.000Z',
    causationId: null,
    correlationId: tag,
    ...(n === null ? {} : { sourceSeq: n }),
    data: { signal: 'SIGTERM' },
  },
});
const rejected = (): LogEntry => ({
  ok: false,
  stream: 'relay',
  seq: ++streamSeq,
  subject: 'relaynet.relay.relay-1.relay.relay-draining',
  time: '2026-12-03T00:00:00.000Z',
  skipped: { reason: 'bad-signature', detail: 'forged' },
});
const tagOf = (e: LogEntry) => (e.ok ? (e.event.correlationId as string) : `rejected@${e.seq}`);
const read = (entries: LogEntry[], window?: number) => {
  const o = new SourceOrder(window);
  const out = [...entries.flatMap((e) => o.push(e)), ...o.flush()];
  return { tags: out.map(tagOf), reordered: o.reordered };
};
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('SourceOrder: a relay’s events read back in the order it published them', () => {
  it(`puts an event stored after ${PUBLISH_WINDOW - 1} of its successors back in its place, and counts it`, () => {
    const base = 1_764_720_000_000_000;
    // e100 was lost and sent again: e101..e163 were stored first.
    const stored = [...range(95, 99), ...range(101, 100 + PUBLISH_WINDOW - 1), 100, ...range(100 + PUBLISH_WINDOW, 170)];
    const r = read(stored.map((n) => entry(base + n, `e${n}`)));
    expect(r.tags).toEqual(range(95, 170).map((n) => `e${n}`));
    expect(r.reordered).toBe(1);
    // In stream order that would not be so: the test can fail.
    expect(stored).not.toEqual([...stored].sort((a, b) => a - b));
  });

  it('gives every entry out once at the end, and nothing more than the window ahead of time', () => {
    const o = new SourceOrder(4);
    // The log begins mid-run: the first number expected is not known, so entries are held.
    expect(o.push(entry(12)).map(tagOf)).toEqual([]);
    expect(o.push(entry(11)).map(tagOf)).toEqual([]);
    expect(o.push(entry(13)).map(tagOf)).toEqual([]);
    expect(o.push(entry(14)).map(tagOf)).toEqual([]);
    expect(o.push(entry(10)).map(tagOf)).toEqual(['10', '11', '12', '13', '14']);
    expect(o.push(entry(16)).map(tagOf)).toEqual([]);
    expect(o.push(entry(15)).map(tagOf)).toEqual(['15', '16']);
    expect(o.flush()).toEqual([]);
  });

  it('goes past a gap (events aged out of the stream) once more than the window is held', () => {
    const r = read([entry(1), entry(2), ...range(5, 12).map((n) => entry(n))], 4);
    expect(r.tags).toEqual(['1', '2', ...range(5, 12).map(String)]);
  });

  it('gives rejected messages out where they lie, and events without numbers (older relays) after all that is held', () => {
    const r = read([entry(2), entry(1), rejected(), entry(null, 'old'), entry(3)], 4);
    // 2 waits for 1; the rejected message goes out at once; the unnumbered event flushes what is held.
    expect(r.tags[0]).toMatch(/^rejected@/);
    expect(r.tags.slice(1)).toEqual(['1', '2', 'old', '3']);
  });

  it('reads a later run numbered below the last (a clock set back) after the earlier one, in its own order', () => {
    const r = read([...range(1000, 1005).map((n) => entry(n)), entry(5), entry(7), entry(6)], 4);
    expect(r.tags).toEqual([...range(1000, 1005).map(String), '5', '6', '7']);
  });
});
