/**
 * Admissions per second of the local control plane (gateway -> Deno register-server -> Postgres),
 * on the embedded PGlite and on a real PostgreSQL 15 started for the run, side by side.
 *
 *   node bench/admission.ts [--relays 200] [--concurrency 8]
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { startLocalControlPlane } from '../src/control-plane/local.ts';
import { generateWgKeyPair } from '../src/lib/wg-keys.ts';
import { rootLogger } from '../src/lib/logger.ts';
import { startTestPostgres } from '../test/support/postgres.ts';
import { tempDir } from '../test/support/temp.ts';

const { values } = parseArgs({ options: { relays: { type: 'string', default: '200' }, concurrency: { type: 'string', default: '8' } } });
const relays = Number(values.relays);
const concurrency = Number(values.concurrency);
const log = rootLogger({ bench: 'admission' }, 'error');

async function measure(label: string, dbUrl: string | undefined, dir: string) {
  const cp = await startLocalControlPlane({ stateDir: join(dir, label), port: 0, dbUrl, logger: log });
  try {
    const keys = Array.from({ length: relays }, () => generateWgKeyPair().publicKey);
    const call = async (i: number) => {
      const res = await fetch(`${cp.url}/functions/v1/register-server`, {
        method: 'POST',
        headers: { authorization: `Bearer ${cp.serviceRoleKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ relayId: `bench-${i}`, name: `bench ${i}`, region: 'bench', publicKey: keys[i], endpoint: `198.18.${i >> 8}.${i & 255}:51820` }),
      });
      if (res.status !== 200) throw new Error(`${label}: register bench-${i}: ${res.status} ${await res.text()}`);
      await res.arrayBuffer();
    };
    await call(0); // warm-up: first request opens the functions' database connections
    let next = 1;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < relays) await call(next++);
      }),
    );
    const secs = (performance.now() - t0) / 1000;
    return (relays - 1) / secs;
  } finally {
    await cp.stop();
  }
}

const tmp = tempDir('bench-admission');
const pg = await startTestPostgres();
try {
  const embedded = await measure('pglite', undefined, tmp.dir);
  const real = await measure('postgresql', pg.url, tmp.dir);
  console.log(`admissions: ${relays - 1} registrations of new relays, ${concurrency} concurrent clients, through the gateway`);
  console.log(`  embedded PGlite     ${embedded.toFixed(1)} admissions/s`);
  console.log(`  PostgreSQL 15       ${real.toFixed(1)} admissions/s`);
  console.log(`  ratio PGlite / PostgreSQL: ${(embedded / real).toFixed(2)}`);
} finally {
  await pg.stop();
  tmp.remove();
}
