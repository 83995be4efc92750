/**
 * The replay benchmark's reference: reads an export file exactly as `relay-core replay --file` does
 * (two passes: topology lines, then one relay's lines in stream order) and decodes every message with
 * the same decoder, but folds nothing, plans nothing and keeps nothing. What replay costs beyond this
 * is the folding, the actors' states, the in-memory host and the re-planning of every kernel round.
 *
 *   node bench/replay-reference.ts FILE RELAY_ID     (prints one JSON line: lines decoded, ok, skipped)
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { decodeStored, fromExportLine } from '../src/events/log.ts';

const [file, relayId] = process.argv.slice(2);
if (!file || !relayId) {
  process.stderr.write('usage: replay-reference.ts FILE RELAY_ID\n');
  process.exit(2);
}
const prefix = `relaynet.relay.${relayId}.`;
const counts = { topology: 0, relay: 0, ok: 0, skipped: 0, notLines: 0 };
for (const pass of ['topology', 'relay'] as const) {
  const rl = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
  for await (const text of rl) {
    if (!text.trim()) continue;
    const m = fromExportLine(text);
    if (!m.ok) {
      counts.notLines++;
      continue;
    }
    if (m.message.stream !== pass) continue;
    if (pass === 'relay' && !m.message.subject.startsWith(prefix)) continue;
    counts[pass]++;
    const e = decodeStored(m.message);
    if (e.ok) counts.ok++;
    else counts.skipped++;
  }
  rl.close();
}
process.stdout.write(JSON.stringify(counts) + '\n');
