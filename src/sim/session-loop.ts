/**
 * Open and close client sessions in a loop against a control plane, timing each open (request to
 * "entry ready": the control plane answers connect-client only once the entry has programmed the
 * session and confirmed it). Used by the clients test (200 sessions on one entry leave its host as
 * before) and the session benchmark. Run it where the control plane is reachable (in a sim: inside
 * the service namespace).
 *
 *   node src/sim/session-loop.ts --url URL --token-file FILE --entry ID --exit ID[,ID...] --count N [--private]
 *
 * With --private the sessions are private (docs/clients.md): connect-client then answers once the
 * entry and the exit both confirmed.
 * Prints one JSON line: { count, openMs: [...], closeMs: [...], openedAt: [...] } (openedAt: when each open
 * began, ms since the epoch). Exits 1 on the first failure.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ControlPlaneClient } from '../daemon/control-plane-client.ts';
import { rootLogger } from '../lib/logger.ts';
import { generateWgKeyPair } from '../lib/wg-keys.ts';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    'token-file': { type: 'string' },
    entry: { type: 'string' },
    exit: { type: 'string' },
    count: { type: 'string' },
    private: { type: 'boolean' },
  },
});
const count = Number(values.count ?? '1');
if (!values.url || !values['token-file'] || !values.entry || !values.exit || !Number.isInteger(count) || count < 1 || count > 100_000) {
  process.stderr.write('usage: session-loop.ts --url URL --token-file FILE --entry ID --exit ID[,ID...] --count N [--private]\n');
  process.exit(2);
}
const exits = values.exit.split(',');
const cp = new ControlPlaneClient({
  url: values.url,
  key: readFileSync(values['token-file'], 'utf8').trim(),
  logger: rootLogger({ component: 'session-loop' }, 'warn'),
});
const openMs: number[] = [];
const openedAt: number[] = [];
const closeMs: number[] = [];
try {
  for (let i = 0; i < count; i++) {
    const { publicKey } = generateWgKeyPair();
    let t = performance.now();
    openedAt.push(Date.now());
    const r = await cp.connectClient({ publicKey, entry: values.entry, exit: exits[i % exits.length]!, mode: values.private ? 'private' : 'standard' });
    openMs.push(performance.now() - t);
    t = performance.now();
    await cp.disconnectClient({ sessionId: r.session.id });
    closeMs.push(performance.now() - t);
  }
} catch (e) {
  process.stderr.write(`session ${openMs.length + 1}: ${(e as Error).message}\n`);
  process.stdout.write(JSON.stringify({ count: openMs.length, openMs, closeMs, openedAt, error: (e as Error).message }) + '\n');
  process.exit(1);
}
process.stdout.write(JSON.stringify({ count, openMs, closeMs, openedAt }) + '\n');
process.exit(0);
