/**
 * The replay benchmark's reference: reads an export file with the very reader `relay-core replay
 * --file` uses (`fromFile`: two passes, topology lines then one relay's lines in stream order, every
 * message decoded), and hands the entries to a sink that only counts them: nothing folded, planned or
 * kept. What replay costs beyond this is the folding, the actors' states, the in-memory host and the
 * re-planning of every kernel round.
 *
 *   node bench/replay-reference.ts FILE RELAY_ID     (prints one JSON line: entries per stream, ok, skipped)
 */
import { fromFile } from '../src/cli/commands/replay.ts';
import type { LogEntry } from '../src/events/log.ts';

const [file, relayId] = process.argv.slice(2);
if (!file || !relayId) {
  process.stderr.write('usage: replay-reference.ts FILE RELAY_ID\n');
  process.exit(2);
}
const counts = { topology: 0, relay: 0, ok: 0, skipped: 0 };
const count = (stream: 'topology' | 'relay') => (e: LogEntry) => {
  counts[stream]++;
  if (e.ok) counts.ok++;
  else counts.skipped++;
};
await fromFile(file, relayId, null, { topology: count('topology'), relay: count('relay') });
process.stdout.write(JSON.stringify(counts) + '\n');
