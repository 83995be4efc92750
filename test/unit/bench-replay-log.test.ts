import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { PUBLISH_WINDOW } from '../../src/contract/envelope.ts';
import { RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import { tempDir } from '../support/temp.ts';

// bench:replay measures replay on a log bench/replay-log.ts writes: a log that fell behind the event
// schemas would be skipped, not replayed, and the benchmark would measure nothing.
describe('the replay benchmark log', () => {
  it('replays clean with the current schemas: no line skipped, every kernel round and reached digest matched', async () => {
    const tmp = tempDir('bench-replay-log');
    try {
      const log = join(tmp.dir, 'relay-1.jsonl');
      const gen = await execa(process.execPath, [join(import.meta.dirname, '../../bench/replay-log.ts'), '--out', log, '--events', '3000']);
      expect(JSON.parse(gen.stdout)).toMatchObject({ lines: expect.any(Number) });
      const r = await execa(RELAY_CORE_BIN, ['replay', '--relay', 'relay-1', '--file', log, '--json', '--no-verify'], { reject: false });
      expect(r.exitCode, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout) as {
        events: { skipped: number; topology: number };
        checks: { rounds: number; matched: number; reachedChecked: number; reachedMismatched: number };
      };
      expect(out.events.skipped).toBe(0);
      expect(out.events.topology).toBeGreaterThan(100);
      expect(out.checks.rounds).toBeGreaterThan(100);
      expect(out.checks.matched).toBe(out.checks.rounds);
      expect(out.checks.reachedChecked).toBe(out.checks.rounds);
      expect(out.checks.reachedMismatched).toBe(0);
    } finally {
      tmp.remove();
    }
  }, 60_000);

  // A relay has up to PUBLISH_WINDOW events out at once; one lost and sent again lies in the stream after
  // up to PUBLISH_WINDOW - 1 of its successors. Replay puts them back by their sourceSeq.
  it('replays a log whose events lie after their successors as the publisher can leave them: every round matched', async () => {
    const tmp = tempDir('bench-replay-log-order');
    try {
      const log = join(tmp.dir, 'relay-1.jsonl');
      await execa(process.execPath, [join(import.meta.dirname, '../../bench/replay-log.ts'), '--out', log, '--events', '3000']);
      type Line = { stream: string; seq: number; subject: string; time: string; data: string };
      const lines = readFileSync(log, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Line);
      const others = lines.filter((l) => l.stream !== 'relay');
      const relayLines = lines.filter((l) => l.stream === 'relay');
      /** The relay's lines numbered in order (or not), each applied event moved after its next 63. */
      const displaced = (numbered: boolean) => {
        const rs = relayLines.map((l, i) => {
          const e = JSON.parse(l.data) as Record<string, unknown>;
          if (numbered) e.sourceSeq = 1_764_720_000_000_000 + i;
          return { ...l, data: JSON.stringify(e) };
        });
        let moved = 0;
        for (let i = 0; i + PUBLISH_WINDOW < rs.length; i++) {
          if (!rs[i]!.subject.endsWith('.topology-event-applied') || i % 7 !== 0) continue;
          const [l] = rs.splice(i, 1);
          rs.splice(i + PUBLISH_WINDOW - 1, 0, l!);
          moved++;
          i += PUBLISH_WINDOW;
        }
        // Stored in this order: the stream's sequence numbers follow it.
        const seqs = relayLines.map((l) => l.seq);
        const out = join(tmp.dir, `displaced-${numbered}.jsonl`);
        writeFileSync(out, [...others, ...rs.map((l, i) => ({ ...l, seq: seqs[i]! }))].map((l) => JSON.stringify(l)).join('\n') + '\n');
        return { out, moved };
      };
      const replayOf = async (file: string) => {
        const r = await execa(RELAY_CORE_BIN, ['replay', '--relay', 'relay-1', '--file', file, '--json', '--no-verify'], { reject: false });
        expect(r.exitCode, r.stderr).toBe(0);
        return {
          stderr: r.stderr,
          ...(JSON.parse(r.stdout) as { events: { skipped: number }; checks: { rounds: number; matched: number; reachedMismatched: number } }),
        };
      };
      const numbered = displaced(true);
      expect(numbered.moved).toBeGreaterThan(5);
      const ok = await replayOf(numbered.out);
      expect(ok.events.skipped).toBe(0);
      expect(ok.checks.rounds).toBeGreaterThan(100);
      expect(ok.checks.matched).toBe(ok.checks.rounds);
      expect(ok.checks.reachedMismatched).toBe(0);
      expect(ok.stderr).toContain(`note: ${numbered.moved} of relay-1's events lay in the stream after some of their successors`);
      // The same displacement without numbers (events from before sourceSeq) replays as stored, and does not match.
      const bare = await replayOf(displaced(false).out);
      expect(bare.checks.matched).toBeLessThan(bare.checks.rounds);
    } finally {
      tmp.remove();
    }
  }, 60_000);
});
