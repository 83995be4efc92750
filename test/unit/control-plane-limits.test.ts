import { describe, expect, it } from 'vitest';
import { mintRelayToken, mintUserToken, signJwt, TOKEN_ISSUER } from '../../src/control-plane/jwt.ts';
import { loadEnv } from '../../supabase/functions/_shared/env.ts';
import { errorResponse, HttpError, json } from '../../supabase/functions/_shared/http.ts';
import { authenticate, RELAY_TOKEN_ISSUER, type Principal } from '../../supabase/functions/_shared/jwt.ts';
import {
  bucketLevel,
  checkAnonymous,
  checkSessionCap,
  DEFAULT_LIMIT_SETTINGS,
  rateLimited,
  rateLimitSubject,
  retryAfterSeconds,
} from '../../supabase/functions/_shared/limits.ts';
import { serveFunction } from '../../supabase/functions/_shared/serve.ts';

const SECRET = 'a-test-secret-that-is-long-enough-for-hs256';
const NOW = 1_800_000_000;
const ISS = 'https://abcdefgh.supabase.co/auth/v1';
const bearer = async (claims: Record<string, unknown>) => `Bearer ${await signJwt(claims, SECRET)}`;
/** A Supabase Auth user token as the hosted project issues it. */
const supabaseUser = (extra: Record<string, unknown> = {}) => ({
  aud: 'authenticated',
  exp: NOW + 3600,
  iat: NOW,
  iss: ISS,
  sub: '5f0c3c1a-8f3e-4d5b-9a77-1c2d3e4f5a6b',
  email: 'alice@example.com',
  role: 'authenticated',
  aal: 'aal1',
  session_id: '0b7f5e8e-1111-4222-8333-444455556666',
  is_anonymous: false,
  ...extra,
});

const alice: Principal = { role: 'user', userId: 'alice', anonymous: false, operator: false };
const anon: Principal = { role: 'user', userId: 'anon-1', anonymous: true, operator: false };
const relay: Principal = { role: 'relay', relayId: 'relay-a', jti: '6f1c1e2a-4b7d-4c1e-9a51-3d2f0b8e7c11' };
const service: Principal = { role: 'service_role' };

/** The HttpError `f` throws (fails when it throws nothing or something else). */
function thrown(f: () => unknown): HttpError {
  try {
    f();
  } catch (e) {
    if (e instanceof HttpError) return e;
    throw e;
  }
  throw new Error('nothing was thrown');
}

describe('user tokens: audience, issuer and anonymous users', () => {
  it('accepts a Supabase Auth user token of the configured issuer', async () => {
    expect(await authenticate(await bearer(supabaseUser()), SECRET, NOW, ISS)).toEqual({
      role: 'user',
      userId: supabaseUser().sub,
      anonymous: false,
      operator: false,
    });
    // aud may be an array holding "authenticated"; is_anonymous may be absent.
    const { is_anonymous: _a, ...noFlag } = supabaseUser({ aud: ['authenticated', 'other'] });
    expect(await authenticate(await bearer(noFlag), SECRET, NOW, ISS)).toMatchObject({ role: 'user', anonymous: false, operator: false });
  });

  it('marks anonymous sign-ins (is_anonymous: true)', async () => {
    expect(await authenticate(await bearer(supabaseUser({ is_anonymous: true, operator: false })), SECRET, NOW, ISS)).toMatchObject({
      role: 'user',
      anonymous: true,
      operator: false,
    });
  });

  it.each<[string, Record<string, unknown>, RegExp]>([
    ['no aud', supabaseUser({ aud: undefined }), /aud none; user tokens must be for audience "authenticated"/],
    ['aud anon', supabaseUser({ aud: 'anon' }), /aud "anon"/],
    ['aud array without authenticated', supabaseUser({ aud: ['anon'] }), /aud not holding "authenticated"/],
    [
      'no iss',
      supabaseUser({ iss: undefined }),
      /iss none; .*accepts user tokens of issuer "https:\/\/abcdefgh\.supabase\.co\/auth\/v1" \(RELAYNET_JWT_ISSUER\)/,
    ],
    ['another project', supabaseUser({ iss: 'https://other.supabase.co/auth/v1' }), /iss "https:\/\/other\.supabase\.co\/auth\/v1"/],
    ['relay-core minted, elsewhere', supabaseUser({ iss: 'relay-core' }), /iss "relay-core"/],
    ['is_anonymous not a boolean', supabaseUser({ is_anonymous: 'yes' }), /malformed is_anonymous/],
  ])('401 for a user token with %s', async (_what, claims, message) => {
    const e = await authenticate(await bearer(claims), SECRET, NOW, ISS).then(
      () => null,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(HttpError);
    expect(e).toMatchObject({ status: 401, code: 'unauthorized', message: expect.stringMatching(message) });
  });

  it('takes relay tokens of relay-core only, whatever the user issuer', async () => {
    expect(RELAY_TOKEN_ISSUER).toBe(TOKEN_ISSUER);
    expect(await authenticate(`Bearer ${await mintRelayToken('relay-a', 60, SECRET, NOW, relay.role === 'relay' ? relay.jti : '')}`, SECRET, NOW, ISS)).toEqual(
      relay,
    );
    for (const iss of [undefined, ISS, 'supabase']) {
      await expect(authenticate(await bearer({ role: 'relay', relay_id: 'relay-a', exp: NOW + 60, iss }), SECRET, NOW, ISS)).rejects.toMatchObject({
        status: 401,
        message: expect.stringMatching(/relay tokens are issued by "relay-core"/),
      });
    }
  });

  it('accepts the user tokens relay-core mints where the issuer is relay-core (a local control plane)', async () => {
    const t = `Bearer ${await mintUserToken('alice', 60, SECRET, NOW)}`;
    expect(await authenticate(t, SECRET, NOW, TOKEN_ISSUER)).toEqual(alice);
    await expect(authenticate(t, SECRET, NOW, ISS)).rejects.toMatchObject({ status: 401 });
  });

  it('configures the issuer: RELAYNET_JWT_ISSUER, else the Supabase project URL, else relay-core', () => {
    const base = {
      SUPABASE_DB_URL: 'postgres://postgres:pw@127.0.0.1:1/postgres',
      RELAYNET_JWT_SECRET: SECRET,
      RELAYNET_TOPOLOGY_SIGNING_KEY: Buffer.alloc(32, 9).toString('base64'),
      RELAYNET_NATS_SERVERS: 'nats://127.0.0.1:4222',
    } as Record<string, string>;
    const issuer = (extra: Record<string, string>) => loadEnv((n) => ({ ...base, ...extra })[n]).jwtIssuer;
    expect(issuer({})).toBe('relay-core');
    expect(issuer({ SUPABASE_URL: 'https://abcdefgh.supabase.co/' })).toBe(ISS);
    expect(issuer({ SUPABASE_URL: 'https://abcdefgh.supabase.co', RELAYNET_JWT_ISSUER: 'http://127.0.0.1:54321/auth/v1' })).toBe(
      'http://127.0.0.1:54321/auth/v1',
    );
    expect(() => issuer({ RELAYNET_JWT_ISSUER: 'two words' })).toThrow(/RELAYNET_JWT_ISSUER/);
  });
});

describe('anonymous users and the per-user session cap', () => {
  it('refuses anonymous users (403 anonymous_not_allowed) unless the settings allow them', () => {
    const e = thrown(() => checkAnonymous(anon, DEFAULT_LIMIT_SETTINGS, 'connect-client'));
    expect([e.status, e.code]).toEqual([403, 'anonymous_not_allowed']);
    expect(e.message).toMatch(/connect-client does not take anonymous users .*allow_anonymous_users/);
    expect(() => checkAnonymous(anon, { allowAnonymousUsers: true }, 'connect-client')).not.toThrow();
    for (const p of [alice, relay, service]) expect(() => checkAnonymous(p, DEFAULT_LIMIT_SETTINGS, 'connect-client')).not.toThrow();
  });

  it('stops a user at max_sessions_per_user (409 too_many_sessions); the service role has no cap', () => {
    const cap = { maxSessionsPerUser: 2 };
    expect(() => checkSessionCap(alice, 0, cap)).not.toThrow();
    expect(() => checkSessionCap(alice, 1, cap)).not.toThrow();
    for (const open of [2, 3]) {
      const e = thrown(() => checkSessionCap(alice, open, cap));
      expect([e.status, e.code, e.field]).toEqual([409, 'too_many_sessions', undefined]);
      expect(e.message).toContain(`you have ${open} open sessions, the most one user may hold (max_sessions_per_user = 2)`);
    }
    expect(() => checkSessionCap(service, 1000, cap)).not.toThrow();
    expect(DEFAULT_LIMIT_SETTINGS.maxSessionsPerUser).toBe(5);
  });
});

describe('rate limits', () => {
  it('charge users on connect and switch, relays on register, never the service role', () => {
    expect(rateLimitSubject(alice, 'connect')).toBe('user:alice');
    expect(rateLimitSubject(alice, 'switch')).toBe('user:alice');
    expect(rateLimitSubject(relay, 'register')).toBe('relay:relay-a');
    expect(rateLimitSubject(alice, 'register')).toBeNull();
    expect(rateLimitSubject(relay, 'connect')).toBeNull();
    for (const a of ['connect', 'switch', 'register'] as const) expect(rateLimitSubject(service, a)).toBeNull();
  });

  it('refill a bucket at limit per window, never above the limit', () => {
    expect(bucketLevel(0, 0, 10, 60)).toBe(0);
    expect(bucketLevel(0, 6, 10, 60)).toBeCloseTo(1);
    expect(bucketLevel(3.5, 30, 10, 60)).toBeCloseTo(8.5);
    expect(bucketLevel(9, 3600, 10, 60)).toBe(10);
    expect(bucketLevel(2, -5, 10, 60)).toBe(2);
  });

  it('tell a refused caller when a token is back, in whole seconds, at least 1', () => {
    expect(retryAfterSeconds(0, 10, 60)).toBe(6);
    expect(retryAfterSeconds(0.5, 10, 60)).toBe(3);
    expect(retryAfterSeconds(0.99, 10, 60)).toBe(1);
    expect(retryAfterSeconds(0, 2, 3600)).toBe(1800);
    expect(retryAfterSeconds(0.9999999999, 1, 1)).toBe(1);
    expect(retryAfterSeconds(0, 1000, 1)).toBe(1);
    // Following the advice gets a token: the bucket holds one again after Retry-After seconds.
    for (const [level, limit, win] of [
      [0, 10, 60],
      [0.3, 7, 45],
      [0.01, 3, 3600],
    ] as const) {
      expect(bucketLevel(level, retryAfterSeconds(level, limit, win), limit, win)).toBeGreaterThanOrEqual(1 - 1e-9);
    }
  });

  it('answer 429 rate_limited with Retry-After, through the request pipeline', async () => {
    const e = rateLimited('register', 'relay:relay-a', 7, 10, 60);
    const direct = errorResponse(e);
    expect(direct.status).toBe(429);
    expect(direct.headers.get('retry-after')).toBe('7');
    expect(await direct.json()).toEqual({
      error: 'rate_limited',
      message: 'too many register-server calls: at most 10 per 60 s per relay (register_rate_limit, rate_limit_window_seconds); retry after 7 s',
      retryAfterSeconds: 7,
    });
    expect(rateLimited('connect', 'user:alice', 3, 10, 60).message).toMatch(/connect-client calls: at most 10 per 60 s per user \(connect_rate_limit/);

    const env: Record<string, string> = {
      SUPABASE_DB_URL: 'postgres://postgres:pw@127.0.0.1:1/postgres',
      RELAYNET_JWT_SECRET: SECRET,
      RELAYNET_TOPOLOGY_SIGNING_KEY: Buffer.alloc(32, 9).toString('base64'),
      RELAYNET_NATS_SERVERS: 'nats://127.0.0.1:4222',
    };
    const lines: string[] = [];
    const serve = serveFunction(
      'register-server',
      async ({ log }) => {
        log.retryAfter = 7;
        throw e;
      },
      { getEnv: (n) => env[n], logLine: (l) => lines.push(l) },
    );
    const res = await serve(
      new Request('http://fn/register-server', {
        method: 'POST',
        body: '{}',
        headers: { authorization: `Bearer ${await mintRelayToken('relay-a', 60, SECRET)}` },
      }),
    );
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('7');
    expect(res.headers.get('access-control-expose-headers')).toContain('retry-after');
    expect(((await res.json()) as { retryAfterSeconds: number }).retryAfterSeconds).toBe(7);
    expect(JSON.parse(lines[0]!)).toMatchObject({ status: 429, error: 'rate_limited', retryAfter: 7, role: 'relay' });
    // Other errors carry no extra headers or fields.
    const plain = errorResponse(new HttpError(409, 'x', 'y', 'f'));
    expect([plain.headers.get('retry-after'), await plain.json()]).toEqual([null, { error: 'x', message: 'y', field: 'f' }]);
    expect(json(200, {}).headers.get('retry-after')).toBeNull();
  });
});
