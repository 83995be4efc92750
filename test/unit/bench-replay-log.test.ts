import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
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
});
