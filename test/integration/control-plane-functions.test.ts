import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signJwt } from '../../src/control-plane/jwt.ts';
import { DENO_BIN, DENO_DIR, FUNCTIONS_DIR, functionNames, startFunctions, type FunctionRunner } from '../../src/control-plane/functions.ts';
import { freePort } from '../../src/lib/ports.ts';
import { rootLogger } from '../../src/lib/logger.ts';

/**
 * The function runner on real Deno processes, with a database that is not there: functions still
 * start (they connect per request), answer 503 `unavailable`, and come back after a crash.
 */
describe('Edge Function runner', () => {
  const secret = 'runner-test-secret-runner-test-secret-123';
  let fns: FunctionRunner;

  beforeAll(async () => {
    const deadDb = await freePort();
    fns = await startFunctions({
      env: {
        SUPABASE_DB_URL: `postgres://postgres@127.0.0.1:${deadDb}/postgres`,
        RELAYNET_JWT_SECRET: secret,
        RELAYNET_TOPOLOGY_SIGNING_KEY: Buffer.alloc(32, 3).toString('base64'),
        RELAYNET_NATS_SERVERS: 'nats://127.0.0.1:4222',
      },
      logger: rootLogger({ test: 'functions' }, 'silent'),
    });
  });
  afterAll(async () => {
    await fns?.stop();
  });

  const call = async (name: string) =>
    fetch(`http://127.0.0.1:${fns.port(name)}/${name}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await signJwt({ role: 'service_role' }, secret)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ relayId: 'relay-a' }),
    });

  it('runs every function directory and answers 503 while the database is unreachable', async () => {
    expect(fns.names).toEqual(functionNames());
    expect(fns.names).toEqual([
      'ban-relay',
      'client-ready',
      'connect-client',
      'deregister',
      'disconnect-client',
      'enroll-relay',
      'heartbeat',
      'list-clients',
      'pob-report',
      'pob-status',
      'register-server',
      'revoke-token',
      'schedule-measurement',
      'set-relay-state',
      'settle-epoch',
      'submit-measurement',
      'submit-receipts',
      'switch-exit',
    ]);
    const r = await call('heartbeat');
    expect(r.status).toBe(503);
    expect(await r.json()).toMatchObject({ error: 'unavailable' });
  });

  it('restarts a function whose process dies', async () => {
    const pid = fns.pid('heartbeat')!;
    process.kill(pid, 'SIGKILL');
    const deadline = Date.now() + 60_000;
    while (!(fns.pid('heartbeat') && fns.pid('heartbeat') !== pid && fns.port('heartbeat'))) {
      if (Date.now() > deadline) throw new Error('heartbeat was not restarted within 60 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    expect((await call('heartbeat')).status).toBe(503);
  });

  it('stops every process', async () => {
    const pids = fns.names.map((n) => fns.pid(n)!);
    await fns.stop();
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  });
});

describe('Edge Functions and the contract', () => {
  it('type-check with deno check: their requests and answers are those of src/contract', () => {
    const r = spawnSync(DENO_BIN, ['check', '--quiet', ...functionNames().map((n) => `${n}/index.ts`)], {
      cwd: FUNCTIONS_DIR,
      env: { ...process.env, DENO_DIR, NO_COLOR: '1', DENO_NO_UPDATE_CHECK: '1' },
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
  });
});
