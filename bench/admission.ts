/**
 * Admissions per second of the local control plane (gateway -> Deno register-server -> Postgres),
 * on the embedded PGlite and on a real PostgreSQL 15 started for the run, side by side.
 *
 *   node bench/admission.ts [--relays 200] [--concurrency 8] [--heartbeats 2000] [--profile FILE]
 *
 * After the admissions, --heartbeats heartbeats of the admitted relays (service role, the same
 * concurrency): heartbeats/s and their p50 / p99 (a heartbeat takes no topology lock).
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
  options: {
    relays: { type: 'string', default: '200' },
    concurrency: { type: 'string', default: '8' },
    heartbeats: { type: 'string', default: '2000' },
    profile: { type: 'string' },
  },
});
const relays = Number(values.relays);
const concurrency = Number(values.concurrency);
const heartbeats = Number(values.heartbeats);
if (!Number.isInteger(heartbeats) || heartbeats < 1) throw new Error(`--heartbeats ${values.heartbeats}: a count of at least 1`);
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
    // Heartbeats of the admitted relays, in turn.
    const took: number[] = [];
    let sent = 0;
    const h0 = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (sent < heartbeats) {
          const i = sent++ % relays;
          const t = performance.now();
          const res = await fetch(`${cp.url}/functions/v1/heartbeat`, {
            method: 'POST',
            headers: { authorization: `Bearer ${cp.serviceRoleKey}`, 'content-type': 'application/json' },
            body: JSON.stringify({ relayId: `bench-${i}` }),
          });
          if (res.status !== 200) throw new Error(`${label}: heartbeat bench-${i}: ${res.status} ${await res.text()}`);
          await res.arrayBuffer();
          took.push(performance.now() - t);
        }
      }),
    );
    const hSecs = (performance.now() - h0) / 1000;
    took.sort((a, b) => a - b);
    const q = (p: number) => took[Math.min(took.length - 1, Math.floor(p * took.length))] ?? NaN;
    return { admissions: (relays - 1) / secs, heartbeats: heartbeats / hSecs, hbP50: q(0.5), hbP99: q(0.99) };
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
  const line = (what: string, r: Awaited<ReturnType<typeof measure>>) =>
    console.log(
      `  ${what.padEnd(16)} ${r.admissions.toFixed(1)} admissions/s; ${r.heartbeats.toFixed(1)} heartbeats/s, p50 ${r.hbP50.toFixed(1)} ms p99 ${r.hbP99.toFixed(1)} ms`,
    );
  console.log(`${relays - 1} admissions of new relays, then ${heartbeats} heartbeats of them, ${concurrency} concurrent clients, through the gateway`);
  line('embedded PGlite', embedded);
  line('PostgreSQL 15', real);
  console.log(
    `  ratio PGlite / PostgreSQL: ${(embedded.admissions / real.admissions).toFixed(2)} (admissions), ${(embedded.heartbeats / real.heartbeats).toFixed(2)} (heartbeats)`,
  );
} finally {
  await pg.stop();
  tmp.remove();
}
