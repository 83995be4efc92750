import { describe, expect, it } from 'vitest';
import { signJwt } from '../../src/control-plane/jwt.ts';
import { ConfigError, loadEnv } from '../../supabase/functions/_shared/env.ts';
import { HttpError, json } from '../../supabase/functions/_shared/http.ts';
import { serveFunction, type Handler } from '../../supabase/functions/_shared/serve.ts';
import { createBusAuthority, publicKeyOfSeed } from '../../src/contract/bus-auth.ts';

const SECRET = 'a-test-secret-that-is-long-enough-for-hs256';
const ENV: Record<string, string> = {
  SUPABASE_DB_URL: 'postgres://postgres:pw@127.0.0.1:1/postgres',
  RELAYNET_JWT_SECRET: SECRET,
  RELAYNET_TOPOLOGY_SIGNING_KEY: Buffer.alloc(32, 9).toString('base64'),
  RELAYNET_NATS_SERVERS: 'nats://127.0.0.1:4222, nats://127.0.0.1:4223',
};
const SRK = await signJwt({ role: 'service_role' }, SECRET);

function pipeline(handler: Handler, env: Record<string, string> = ENV) {
  const lines: string[] = [];
  const serve = serveFunction('heartbeat', handler, { getEnv: (n) => env[n], logLine: (l) => lines.push(l) });
  const call = async (init: RequestInit & { token?: string | null } = {}) => {
    const headers = new Headers(init.headers);
    const token = init.token === undefined ? SRK : init.token;
    if (token) headers.set('authorization', `Bearer ${token}`);
    const res = await serve(new Request('http://fn/heartbeat', { method: 'POST', body: '{"relayId":"relay-a"}', ...init, headers }));
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : null };
  };
  return { call, lines };
}

const ok: Handler = async ({ body, principal, log }) => {
  log.relayId = body.relayId;
  return json(200, { body, principal });
};

describe('the request pipeline of every function', () => {
  it('authenticates, parses the body, calls the handler and logs one line without secrets', async () => {
    const { call, lines } = pipeline(ok);
    const r = await call({ headers: { 'x-request-id': 'req-42' } });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ body: { relayId: 'relay-a' }, principal: { role: 'service_role' } });
    expect(r.headers.get('access-control-allow-origin')).toBe('*');
    expect(r.headers.get('x-request-id')).toBe('req-42');
    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0]!);
    expect(line).toMatchObject({ level: 'info', fn: 'heartbeat', requestId: 'req-42', method: 'POST', status: 200, role: 'service_role', relayId: 'relay-a' });
    expect(lines[0]).not.toContain(SRK.split('.')[2]);
    expect(lines[0]).not.toContain(SECRET);
  });

  it('replaces request ids that do not fit an event causation id', async () => {
    const { call } = pipeline(ok);
    const r = await call({ headers: { 'x-request-id': 'x'.repeat(200) } });
    expect(r.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('answers preflights without a token, and other methods with 405', async () => {
    const { call } = pipeline(ok);
    const pre = await call({ method: 'OPTIONS', token: null, body: null });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-methods')).toContain('POST');
    const get = await call({ method: 'GET', body: null });
    expect(get.status).toBe(405);
    expect(get.body.error).toBe('method_not_allowed');
    expect(get.headers.get('allow')).toBe('POST, OPTIONS');
  });

  it('checks the token before reading the body', async () => {
    let called = false;
    const { call } = pipeline(async () => {
      called = true;
      return json(200, {});
    });
    const r = await call({ token: null, body: '{' });
    expect(r).toMatchObject({ status: 401, body: { error: 'unauthorized' } });
    expect(called).toBe(false);
  });

  it('turns HttpErrors into the contract error shape', async () => {
    const { call, lines } = pipeline(async () => {
      throw new HttpError(409, 'key_mismatch', 'other key', 'publicKey');
    });
    const r = await call();
    expect(r).toMatchObject({ status: 409, body: { error: 'key_mismatch', message: 'other key', field: 'publicKey' } });
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 'warn', error: 'key_mismatch', field: 'publicKey' });
  });

  it('answers 503 when the database is unreachable and 500 with a request id for bugs', async () => {
    const down = pipeline(async () => {
      throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    });
    expect(await down.call()).toMatchObject({ status: 503, body: { error: 'unavailable' } });
    const bug = pipeline(async () => {
      throw new TypeError('x is undefined');
    });
    const r = await bug.call();
    expect(r).toMatchObject({ status: 500, body: { error: 'internal' } });
    expect(r.body.requestId).toBeTruthy();
    expect(JSON.parse(bug.lines[0]!)).toMatchObject({ level: 'error', error: 'internal' });
    expect(bug.lines[0]).toContain('x is undefined');
  });

  it('answers 500 naming a missing secret (never its value) when misconfigured', async () => {
    const { RELAYNET_JWT_SECRET: _s, ...rest } = ENV;
    const { call } = pipeline(ok, rest);
    const r = await call();
    expect(r.status).toBe(500);
    expect(r.body.message).toContain('RELAYNET_JWT_SECRET');
  });
});

describe('function environment', () => {
  it('reads the contract variables with their defaults', () => {
    expect(loadEnv((n) => ENV[n])).toEqual({
      dbUrl: ENV.SUPABASE_DB_URL,
      jwtSecret: SECRET,
      jwtIssuer: 'relay-core',
      signingSeed: ENV.RELAYNET_TOPOLOGY_SIGNING_KEY,
      natsServers: ['nats://127.0.0.1:4222', 'nats://127.0.0.1:4223'],
      natsToken: null,
      natsIssuer: null,
      heartbeatSeconds: 10,
      dbListen: false,
    });
    expect(loadEnv((n) => ({ ...ENV, RELAYNET_DB_LISTEN: '1' })[n]).dbListen).toBe(true);
    expect(loadEnv((n) => ({ ...ENV, RELAYNET_DB_LISTEN: 'false' })[n]).dbListen).toBe(false);
    const a = createBusAuthority();
    const jwtMode: Record<string, string> = {
      ...ENV,
      RELAYNET_NATS_ACCOUNT: publicKeyOfSeed(a.accountSeed),
      RELAYNET_NATS_ACCOUNT_SIGNING_KEY: a.accountSigningSeed,
    };
    expect(loadEnv((n) => jwtMode[n]).natsIssuer).toEqual({ account: publicKeyOfSeed(a.accountSeed), signingSeed: a.accountSigningSeed, ttlSeconds: 3600 });
    expect(loadEnv((n) => ({ ...jwtMode, RELAYNET_NATS_USER_TTL_SECONDS: '120' })[n]).natsIssuer?.ttlSeconds).toBe(120);
    expect(loadEnv((n) => ({ ...ENV, RELAYNET_NATS_TOKEN: 't', RELAYNET_HEARTBEAT_SECONDS: '3' })[n])).toMatchObject({ natsToken: 't', heartbeatSeconds: 3 });
  });

  it.each([
    ['missing', {}, /SUPABASE_DB_URL, RELAYNET_JWT_SECRET, RELAYNET_TOPOLOGY_SIGNING_KEY, RELAYNET_NATS_SERVERS/],
    ['short secret', { ...ENV, RELAYNET_JWT_SECRET: 'short' }, /at least 32/],
    ['bad heartbeat', { ...ENV, RELAYNET_HEARTBEAT_SECONDS: '0' }, /RELAYNET_HEARTBEAT_SECONDS/],
    ['bad NATS URL', { ...ENV, RELAYNET_NATS_SERVERS: 'http://x y' }, /RELAYNET_NATS_SERVERS/],
    ['a DB_LISTEN that is not a yes or no', { ...ENV, RELAYNET_DB_LISTEN: 'yes' }, /RELAYNET_DB_LISTEN/],
    ['a NATS account without its signing key', { ...ENV, RELAYNET_NATS_ACCOUNT: `A${'A'.repeat(55)}` }, /RELAYNET_NATS_ACCOUNT_SIGNING_KEY/],
    [
      'a NATS signing key that is not an account seed',
      { ...ENV, RELAYNET_NATS_ACCOUNT: `A${'A'.repeat(55)}`, RELAYNET_NATS_ACCOUNT_SIGNING_KEY: 'SUxyz' },
      /RELAYNET_NATS_ACCOUNT_SIGNING_KEY/,
    ],
    [
      'a NATS user TTL out of range',
      { ...ENV, RELAYNET_NATS_ACCOUNT: `A${'A'.repeat(55)}`, RELAYNET_NATS_ACCOUNT_SIGNING_KEY: `SA${'A'.repeat(56)}`, RELAYNET_NATS_USER_TTL_SECONDS: '5' },
      /RELAYNET_NATS_USER_TTL_SECONDS/,
    ],
  ])('refuses %s', (_what, env: Record<string, string>, re) => {
    expect(() => loadEnv((n) => env[n])).toThrow(ConfigError);
    expect(() => loadEnv((n) => env[n])).toThrow(re);
  });
});
