/**
 * Admissions per second of the local control plane (gateway -> Deno register-server -> Postgres),
 * on the embedded PGlite and on a real PostgreSQL 15 started for the run, side by side.
 *
 *   node bench/admission.ts [--relays 200] [--concurrency 8] [--profile FILE]
 *
 * --profile FILE: a V8 CPU profile of the register-server function's Deno process over the PostgreSQL
 * run (through Deno's inspector: RELAYNET_FUNCTIONS_INSPECT), written to FILE (.cpuprofile; sum it
 * with scripts/profile-top.ts).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { startLocalControlPlane } from '../src/control-plane/local.ts';
import { generateWgKeyPair } from '../src/lib/wg-keys.ts';
import { rootLogger } from '../src/lib/logger.ts';
import { freePort } from '../src/lib/ports.ts';
import { startTestPostgres } from '../test/support/postgres.ts';
import { tempDir } from '../test/support/temp.ts';

const { values } = parseArgs({
  options: { relays: { type: 'string', default: '200' }, concurrency: { type: 'string', default: '8' }, profile: { type: 'string' } },
});
const relays = Number(values.relays);
const concurrency = Number(values.concurrency);
const log = rootLogger({ bench: 'admission' }, 'error');

/** Deno's inspector of one function: start and stop its CPU profiler (Chrome DevTools protocol over WebSocket). */
async function inspector(address: string): Promise<{ start(): Promise<void>; stop(file: string): Promise<void>; close(): void }> {
  const targets = (await (await fetch(`http://${address}/json/list`)).json()) as { webSocketDebuggerUrl: string }[];
  const ws = new WebSocket(targets[0]!.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error(`cannot reach the inspector at ${address}`));
  });
  let seq = 0;
  const waiting = new Map<number, (r: { result?: unknown; error?: unknown }) => void>();
  ws.onmessage = (m) => {
    const msg = JSON.parse(String(m.data)) as { id?: number; result?: unknown; error?: unknown };
    if (msg.id !== undefined) waiting.get(msg.id)?.(msg);
  };
  const call = (method: string) =>
    new Promise<unknown>((resolve, reject) => {
      const id = ++seq;
      waiting.set(id, (r) => (r.error ? reject(new Error(`${method}: ${JSON.stringify(r.error)}`)) : resolve(r.result)));
      ws.send(JSON.stringify({ id, method }));
    });
  return {
    start: async () => {
      await call('Profiler.enable');
      await call('Profiler.start');
    },
    stop: async (file) => {
      const { profile } = (await call('Profiler.stop')) as { profile: unknown };
      writeFileSync(file, JSON.stringify(profile));
    },
    close: () => ws.close(),
  };
}

async function measure(label: string, dbUrl: string | undefined, dir: string, profile?: string) {
  const inspectAt = profile ? `127.0.0.1:${await freePort()}` : null;
  if (inspectAt) process.env.RELAYNET_FUNCTIONS_INSPECT = `register-server=${inspectAt}`;
  const cp = await startLocalControlPlane({ stateDir: join(dir, label), port: 0, dbUrl, logger: log }).finally(() => {
    delete process.env.RELAYNET_FUNCTIONS_INSPECT;
  });
  const prof = inspectAt ? await inspector(inspectAt) : null;
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
    await prof?.start();
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < relays) await call(next++);
      }),
    );
    const secs = (performance.now() - t0) / 1000;
    if (prof && profile) await prof.stop(profile);
    return (relays - 1) / secs;
  } finally {
    prof?.close();
    await cp.stop();
  }
}

const tmp = tempDir('bench-admission');
const pg = await startTestPostgres();
try {
  const embedded = await measure('pglite', undefined, tmp.dir);
  const real = await measure('postgresql', pg.url, tmp.dir, values.profile);
  console.log(`admissions: ${relays - 1} registrations of new relays, ${concurrency} concurrent clients, through the gateway`);
  console.log(`  embedded PGlite     ${embedded.toFixed(1)} admissions/s`);
  console.log(`  PostgreSQL 15       ${real.toFixed(1)} admissions/s`);
  console.log(`  ratio PGlite / PostgreSQL: ${(embedded / real).toFixed(2)}`);
} finally {
  await pg.stop();
  tmp.remove();
}
