import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signJwt, TOKEN_ISSUER } from '../../src/control-plane/jwt.ts';
import { startLocalControlPlane, type LocalControlPlane } from '../../src/control-plane/local.ts';
import { ListClientsResponseSchema } from '../../src/contract/api-clients.ts';
import { RegisterResponseSchema } from '../../src/contract/api-relays.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts';
import { tempDir } from '../support/temp.ts';

/**
 * The limits of the client API end to end (issue 12, part 5) on the real Edge Functions behind the
 * local gateway and the real database (embedded PGlite, and a real PostgreSQL): the per-user session
 * cap, rate limits (429 with Retry-After) on connect, switch and register, anonymous users, aud/iss,
 * a client key in another user's session, and what relay tokens get to see. A helper plays the entry
 * relays (client-ready). The tests of one backend run in order and build on each other's state.
 */

const relayKey = (n: number) => Buffer.alloc(32, n).toString('base64');
const clientKey = (n: number) => Buffer.alloc(32, 100 + n).toString('base64');
const TOKEN_TTL = 3600;
/** Distinctive user ids, so that "no user id in this answer" is a plain text search. */
const USER = {
  mallory: 'user-mallory-7f3a',
  bob: 'user-bob-91c2',
  carol: 'user-carol-4e0d',
  dave: 'user-dave-22b8',
  erin: 'user-erin-c5a1',
  frank: 'user-frank-0d9e',
  anon: 'user-anon-6b7f',
};

interface Answer {
  status: number;
  body: any;
  text: string;
  retryAfter: string | null;
}

describe.each(['pglite', 'postgresql'] as const)('client API limits on %s', (backend) => {
  const log = rootLogger({ test: `cp-limits-${backend}` }, process.env.RELAYNET_LOG_LEVEL ?? 'warn');
  let tmp: ReturnType<typeof tempDir>;
  let pg: TestPostgres | null = null;
  let cp: LocalControlPlane;
  let sql: postgres.Sql;
  const relayTokens = new Map<string, string>();
  const users = new Map<string, string>();

  async function call(fn: string, body: unknown, token?: string): Promise<Answer> {
    const res = await fetch(`${cp.url}/functions/v1/${fn}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token ?? cp.serviceRoleKey}` },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* keep the text */
    }
    return { status: res.status, body: parsed, text, retryAfter: res.headers.get('retry-after') };
  }
  const user = (name: keyof typeof USER) => users.get(name)!;

  // The entry relays, played by the test: confirm every session (exit) not confirmed yet.
  let stopped = false;
  let loop: Promise<void> | null = null;
  async function playEntries(): Promise<void> {
    while (!stopped) {
      const pending = await sql`select id::text as id, entry_id, exit_id from relaynet.client_sessions
                                where status = 'open' and confirmed_exit_id is distinct from exit_id order by opened_at`.catch(() => []);
      for (const p of pending) {
        const token = relayTokens.get(p.entry_id);
        if (token) await call('client-ready', { relayId: p.entry_id, sessionId: p.id, exitId: p.exit_id }, token).catch(() => null);
      }
      await new Promise((r) => setTimeout(r, 40));
    }
  }

  const counts = async () => {
    const [r] = await sql`select (select count(*) from relaynet.client_sessions)::int as sessions,
                                 (select count(*) from relaynet.client_sessions where status = 'open')::int as open,
                                 (select count(*) from relaynet.topology_events)::int as events,
                                 (select revision from relaynet.topology)::int as revision`;
    return r!;
  };
  const settings = (set: string) => sql.unsafe(`update relaynet.settings set ${set}`);
  const reg = (n: number, region: string, endpoint = `198.51.100.${n}:51820`) => ({
    relayId: `relay-${n}`,
    name: `Relay ${n}`,
    region,
    publicKey: relayKey(n),
    endpoint,
  });

  beforeAll(async () => {
    tmp = tempDir(`cp-limits-${backend}`);
    if (backend === 'postgresql') pg = await startTestPostgres();
    cp = await startLocalControlPlane({ stateDir: join(tmp.dir, 'state'), port: 0, dbUrl: pg?.url, heartbeatSeconds: 5, logger: log });
    sql = postgres(cp.dbUrl, { max: 2, prepare: false, onnotice: () => {} });
    for (const n of [1, 2, 3, 4]) relayTokens.set(`relay-${n}`, await cp.mintRelayToken(`relay-${n}`, TOKEN_TTL));
    for (const [name, sub] of Object.entries(USER)) users.set(name, await cp.mintUserToken(sub, TOKEN_TTL));
    // The anonymous user: a Supabase anonymous sign-in's token.
    const now = Math.floor(Date.now() / 1000);
    users.set(
      'anon',
      await signJwt(
        { role: 'authenticated', aud: 'authenticated', iss: TOKEN_ISSUER, sub: USER.anon, is_anonymous: true, iat: now, exp: now + TOKEN_TTL },
        cp.jwtSecret,
      ),
    );
    // Five client addresses per entry; relays stay live for an hour without heartbeats.
    await settings('client_pool_prefix = 29, relay_liveness_seconds = 3600, relay_expire_seconds = 86400');
    for (const [n, region] of [
      [1, 'eu'],
      [2, 'eu'],
      [3, 'us'],
    ] as const) {
      const r = await call('register-server', reg(n, region), relayTokens.get(`relay-${n}`));
      expect(r.status, r.text).toBe(200);
    }
    loop = playEntries();
  });

  afterAll(async () => {
    stopped = true;
    await loop?.catch(() => {});
    await sql?.end({ timeout: 2 }).catch(() => {});
    await cp?.stop();
    await pg?.stop();
    tmp?.remove();
  });

  it('adds the limit settings with their defaults, and the rate-limit buckets', async () => {
    const [s] = await sql`select max_sessions_per_user, allow_anonymous_users, rate_limit_window_seconds,
                                 connect_rate_limit, switch_rate_limit, register_rate_limit, max_session_ttl_seconds from relaynet.settings`;
    expect(s).toEqual({
      max_sessions_per_user: 5,
      allow_anonymous_users: false,
      rate_limit_window_seconds: 60,
      connect_rate_limit: 10,
      switch_rate_limit: 30,
      register_rate_limit: 10,
      max_session_ttl_seconds: 2592000,
    });
    for (const [set, constraint] of [
      ['max_sessions_per_user = 0', 'settings_max_sessions_per_user'],
      ['rate_limit_window_seconds = 0', 'settings_rate_limit_window'],
      ['connect_rate_limit = 0', 'settings_rate_limits'],
      ['register_rate_limit = -1', 'settings_rate_limits'],
    ]) {
      await expect(settings(set!)).rejects.toThrow(new RegExp(constraint!));
    }
    // One bucket per relay that registered with its relay token, one token taken from each.
    const buckets = await sql`select subject, action, tokens from relaynet.rate_limits order by subject`;
    expect(buckets.map((b) => [b.subject, b.action])).toEqual([
      ['relay:relay-1', 'register'],
      ['relay:relay-2', 'register'],
      ['relay:relay-3', 'register'],
    ]);
    for (const b of buckets) expect(b.tokens).toBeCloseTo(9, 1);
  });

  let bobSession: string;

  it('stops one user at its session cap while other users still connect to the same entry (409 too_many_sessions)', async () => {
    await settings('max_sessions_per_user = 2');
    const mallory: string[] = [];
    for (const k of [1, 2]) {
      const r = await call('connect-client', { publicKey: clientKey(k), exit: 'relay-3', entry: 'relay-1' }, user('mallory'));
      expect(r.status, r.text).toBe(200);
      mallory.push(r.body.session.id);
    }
    // The third, fourth, ... are refused: mallory cannot take relay-1's pool (5 addresses).
    for (const k of [3, 4, 5]) {
      const before = await counts();
      const r = await call('connect-client', { publicKey: clientKey(k), exit: 'relay-3', entry: 'relay-1' }, user('mallory'));
      expect([r.status, r.body.error]).toEqual([409, 'too_many_sessions']);
      expect(r.body.message).toMatch(/you have 2 open sessions, the most one user may hold \(max_sessions_per_user = 2\)/);
      expect(await counts()).toEqual(before);
    }
    // Other users still get relay-1.
    const bob = await call('connect-client', { publicKey: clientKey(10), exit: 'relay-3', entry: 'relay-1' }, user('bob'));
    expect(bob.status, bob.text).toBe(200);
    bobSession = bob.body.session.id;
    const carol = await call('connect-client', { publicKey: clientKey(11), exit: 'relay-3', entry: 'relay-1' }, user('carol'));
    expect(carol.status, carol.text).toBe(200);
    // The service role has no cap.
    const service: string[] = [];
    for (const k of [13, 14, 15]) {
      const r = await call('connect-client', { publicKey: clientKey(k), exit: 'relay-1', entry: 'relay-3' });
      expect(r.status, r.text).toBe(200);
      service.push(r.body.session.id);
    }
    for (const id of service) expect((await call('disconnect-client', { sessionId: id })).status).toBe(200);
    // Only open sessions count: mallory closes one and may open another.
    expect((await call('disconnect-client', { sessionId: mallory[0] }, user('mallory'))).status).toBe(200);
    const again = await call('connect-client', { publicKey: clientKey(3), exit: 'relay-3', entry: 'relay-1' }, user('mallory'));
    expect(again.status, again.text).toBe(200);
    const held = await sql`select owner, count(*)::int as n from relaynet.client_sessions where status = 'open' group by owner order by owner`;
    expect(held.map((h) => [h.owner, h.n])).toEqual([
      [USER.bob, 1],
      [USER.carol, 1],
      [USER.mallory, 2],
    ]);
    // The lifetime a user asks for is capped too (max_session_ttl_seconds).
    const long = await call('connect-client', { publicKey: clientKey(12), exit: 'relay-3', ttlSeconds: 2592001 }, user('erin'));
    expect([long.status, long.body.field]).toEqual([400, 'ttlSeconds']);
    await settings('max_sessions_per_user = 5');
  });

  it("refuses a client key that is in another user's open session (409 duplicate_client_key), without saying whose", async () => {
    const before = await counts();
    const r = await call('connect-client', { publicKey: clientKey(10), exit: 'relay-3', entry: 'relay-2' }, user('carol'));
    expect([r.status, r.body.error, r.body.field]).toEqual([409, 'duplicate_client_key', 'publicKey']);
    expect(r.text).not.toContain(bobSession);
    expect(r.text).not.toContain(USER.bob);
    expect(await counts()).toEqual(before);
    // Once bob's session is closed, the key is free.
    expect((await call('disconnect-client', { sessionId: bobSession }, user('bob'))).status).toBe(200);
    const now = await call('connect-client', { publicKey: clientKey(10), exit: 'relay-3', entry: 'relay-2' }, user('carol'));
    expect(now.status, now.text).toBe(200);
  });

  it('refuses anonymous users (403 anonymous_not_allowed) unless the settings allow them', async () => {
    const before = await counts();
    const connect = await call('connect-client', { publicKey: clientKey(20), exit: 'relay-3' }, user('anon'));
    expect([connect.status, connect.body.error]).toEqual([403, 'anonymous_not_allowed']);
    expect(connect.body.message).toMatch(/allow_anonymous_users/);
    const sw = await call('switch-exit', { sessionId: bobSession, exit: 'relay-2' }, user('anon'));
    expect([sw.status, sw.body.error]).toEqual([403, 'anonymous_not_allowed']);
    expect(await counts()).toEqual(before);
    // A refused anonymous call takes no rate-limit token.
    expect((await sql`select count(*)::int as n from relaynet.rate_limits where subject = ${`user:${USER.anon}`}`)[0]!.n).toBe(0);

    await settings('allow_anonymous_users = true');
    const ok = await call('connect-client', { publicKey: clientKey(20), exit: 'relay-3', entry: 'relay-2' }, user('anon'));
    expect(ok.status, ok.text).toBe(200);
    expect((await sql`select owner from relaynet.client_sessions where id = ${ok.body.session.id}::uuid`)[0]!.owner).toBe(USER.anon);
    await settings('allow_anonymous_users = false');
    // Refused again for what takes resources; what it opened it may still list and close.
    const sw2 = await call('switch-exit', { sessionId: ok.body.session.id, exit: 'relay-1' }, user('anon'));
    expect([sw2.status, sw2.body.error]).toEqual([403, 'anonymous_not_allowed']);
    const list = ListClientsResponseSchema.parse((await call('list-clients', {}, user('anon'))).body);
    expect(list.sessions.map((s) => s.id)).toEqual([ok.body.session.id]);
    expect((await call('disconnect-client', { sessionId: ok.body.session.id }, user('anon'))).status).toBe(200);
  });

  it('checks aud and iss: user tokens of another audience or issuer, relay tokens not minted by relay-core (401)', async () => {
    const now = Math.floor(Date.now() / 1000);
    const userClaims = { role: 'authenticated', aud: 'authenticated', iss: TOKEN_ISSUER, sub: USER.erin, iat: now, exp: now + 600 };
    for (const [what, claims, re] of [
      ['no aud', { ...userClaims, aud: undefined }, /aud none/],
      ['aud anon', { ...userClaims, aud: 'anon' }, /aud "anon"/],
      ['another issuer', { ...userClaims, iss: 'https://elsewhere.supabase.co/auth/v1' }, /iss "https:\/\/elsewhere/],
      ['relay token without iss', { role: 'relay', relay_id: 'relay-1', iat: now, exp: now + 600 }, /relay tokens are issued by "relay-core"/],
      ['relay token of another issuer', { role: 'relay', relay_id: 'relay-1', iss: 'supabase', iat: now, exp: now + 600 }, /iss "supabase"/],
    ] as const) {
      const fn = what.startsWith('relay') ? 'heartbeat' : 'list-clients';
      const r = await call(fn, fn === 'heartbeat' ? { relayId: 'relay-1' } : {}, await signJwt(claims, cp.jwtSecret));
      expect([what, r.status, r.body.error]).toEqual([what, 401, 'unauthorized']);
      expect(r.body.message).toMatch(re);
    }
    // What relay-core mints is accepted.
    expect((await call('list-clients', {}, user('erin'))).status).toBe(200);
    expect((await call('heartbeat', { relayId: 'relay-1' }, relayTokens.get('relay-1'))).status).toBe(200);
  });

  let daveSession: string;

  it('rate limits connect and switch per user: 429 with Retry-After; other users and the service role go on', async () => {
    await settings('connect_rate_limit = 3, switch_rate_limit = 2, rate_limit_window_seconds = 3600');
    // Every call counts, refused ones too: a success, a duplicate key, an unknown exit.
    const first = await call('connect-client', { publicKey: clientKey(30), exit: 'relay-3', entry: 'relay-2' }, user('dave'));
    expect(first.status, first.text).toBe(200);
    daveSession = first.body.session.id;
    expect((await call('connect-client', { publicKey: clientKey(30), exit: 'relay-3' }, user('dave'))).status).toBe(409);
    expect((await call('connect-client', { publicKey: clientKey(31), exit: 'relay-9' }, user('dave'))).status).toBe(404);
    const before = await counts();
    const limited = await call('connect-client', { publicKey: clientKey(31), exit: 'relay-3', entry: 'relay-2' }, user('dave'));
    expect([limited.status, limited.body.error]).toEqual([429, 'rate_limited']);
    // The bucket is empty: one token comes back after window / limit = 1200 s.
    const retry = Number(limited.retryAfter);
    expect(retry).toBeGreaterThan(1190);
    expect(retry).toBeLessThanOrEqual(1200);
    expect(limited.body.retryAfterSeconds).toBe(retry);
    expect(limited.body.message).toMatch(
      /too many connect-client calls: at most 3 per 3600 s per user \(connect_rate_limit, rate_limit_window_seconds\); retry after \d+ s/,
    );
    // Refused calls take nothing more: the next refusal says the same or less.
    const twice = await call('connect-client', { publicKey: clientKey(31), exit: 'relay-3' }, user('dave'));
    expect(twice.status).toBe(429);
    expect(Number(twice.retryAfter)).toBeLessThanOrEqual(retry);
    expect(await counts()).toEqual(before);

    // Another user, and the service role (never limited), connect meanwhile.
    const erin = await call('connect-client', { publicKey: clientKey(32), exit: 'relay-3', entry: 'relay-2' }, user('erin'));
    expect(erin.status, erin.text).toBe(200);
    for (const k of [33, 34, 35, 36]) {
      const r = await call('connect-client', { publicKey: clientKey(k), exit: 'relay-1', entry: 'relay-3' });
      expect(r.status, r.text).toBe(200);
      expect((await call('disconnect-client', { sessionId: r.body.session.id })).status).toBe(200);
    }

    // Switches have their own bucket.
    for (const exit of ['relay-1', 'relay-3']) {
      const r = await call('switch-exit', { sessionId: daveSession, exit }, user('dave'));
      expect([r.status, r.body.session?.exitId], r.text).toEqual([200, exit]);
    }
    const beforeSwitch = await counts();
    const sw = await call('switch-exit', { sessionId: daveSession, exit: 'relay-1' }, user('dave'));
    expect([sw.status, sw.body.error]).toEqual([429, 'rate_limited']);
    expect(Number(sw.retryAfter)).toBeGreaterThan(1790);
    expect(Number(sw.retryAfter)).toBeLessThanOrEqual(1800);
    expect((await sql`select exit_id from relaynet.client_sessions where id = ${daveSession}::uuid`)[0]!.exit_id).toBe('relay-3');
    expect(await counts()).toEqual(beforeSwitch);

    // Time passes (the bucket's clock is moved back by 1200 s): one connect token is back, only one.
    await sql`update relaynet.rate_limits set updated_at = updated_at - interval '1200 seconds' where subject = ${`user:${USER.dave}`} and action = 'connect'`;
    const later = await call('connect-client', { publicKey: clientKey(31), exit: 'relay-3', entry: 'relay-2' }, user('dave'));
    expect(later.status, later.text).toBe(200);
    expect((await call('connect-client', { publicKey: clientKey(37), exit: 'relay-3' }, user('dave'))).status).toBe(429);
  });

  it('takes tokens atomically: of many concurrent calls exactly the limit get through', async () => {
    await settings('connect_rate_limit = 3, rate_limit_window_seconds = 3600');
    // An unknown exit: each call that gets through is refused with 404 after taking its token.
    const answers = await Promise.all(
      Array.from({ length: 10 }, (_, i) => call('connect-client', { publicKey: clientKey(40 + i), exit: 'relay-9' }, user('frank'))),
    );
    const statuses = answers.map((a) => a.status).sort();
    expect(statuses).toEqual([404, 404, 404, 429, 429, 429, 429, 429, 429, 429]);
    for (const a of answers.filter((x) => x.status === 429)) expect(Number(a.retryAfter)).toBeGreaterThan(0);
  });

  it('a relay token re-registering in a loop gets 429 and writes no outbox rows', async () => {
    await settings('register_rate_limit = 3, rate_limit_window_seconds = 3600');
    const t4 = relayTokens.get('relay-4')!;
    const answers: Answer[] = [];
    // Every attempt would write an event (admission, then a new endpoint each time) if it got through.
    for (let i = 0; i < 8; i++) {
      const before = await counts();
      const r = await call('register-server', reg(4, 'ap', `203.0.113.${10 + i}:51820`), t4);
      answers.push(r);
      const after = await counts();
      if (r.status === 200) expect(after.events).toBe(before.events + 1);
      else expect(after).toEqual(before);
    }
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 429, 429, 429, 429, 429]);
    for (const a of answers.slice(3)) {
      expect(a.body.error).toBe('rate_limited');
      expect(Number(a.retryAfter)).toBeGreaterThan(1190);
      expect(Number(a.retryAfter)).toBeLessThanOrEqual(1200);
      expect(a.body.message).toMatch(/register-server calls: at most 3 per 3600 s per relay \(register_rate_limit/);
    }
    const [r4] = await sql`select endpoint, status from relaynet.relays where id = 'relay-4'`;
    expect(r4).toEqual({ endpoint: '203.0.113.12:51820', status: 'active' });
    const [events] = await sql`select count(*)::int as n from relaynet.topology_events where payload like '%203.0.113.1%' and payload like '%relay-4%'`;
    expect(events!.n).toBe(3);
    // Its heartbeats are not limited; other relays and the service role register on.
    expect((await call('heartbeat', { relayId: 'relay-4' }, t4)).status).toBe(200);
    expect((await call('register-server', reg(1, 'eu'), relayTokens.get('relay-1'))).status).toBe(200);
    expect((await call('register-server', reg(4, 'ap', '203.0.113.12:51820'))).status).toBe(200);
  });

  it('shows relay tokens no user ids: register, heartbeat, client-ready, list-clients, disconnect-client and the events', async () => {
    const ids = Object.values(USER);
    const owned = await sql`select id::text as id, entry_id, exit_id, owner, status from relaynet.client_sessions where owner is not null order by opened_at`;
    expect(new Set(owned.map((o) => o.owner)).size).toBeGreaterThanOrEqual(5);
    const open = owned.filter((o) => o.status === 'open');
    // The service role does see owners (so the searches below would find them if they leaked).
    const all = await call('list-clients', { includeClosed: true });
    expect(ids.filter((u) => all.text.includes(u)).length).toBeGreaterThanOrEqual(5);

    const answers: [string, Answer][] = [];
    let snapshotSessions = 0;
    await settings('register_rate_limit = 1000');
    for (const n of [1, 2, 3]) {
      const t = relayTokens.get(`relay-${n}`)!;
      const r = await call('register-server', reg(n, n === 3 ? 'us' : 'eu'), t);
      expect(r.status, r.text).toBe(200);
      // The snapshot holds exactly the open sessions entering at the registering relay.
      const entering = await sql`select id::text as id from relaynet.client_sessions where status = 'open' and entry_id = ${`relay-${n}`} order by id`;
      expect(
        RegisterResponseSchema.parse(r.body)
          .sessions.map((x) => x.id)
          .sort(),
      ).toEqual(entering.map((e) => e.id));
      snapshotSessions += entering.length;
      answers.push([`register relay-${n}`, r]);
      answers.push([`heartbeat relay-${n}`, await call('heartbeat', { relayId: `relay-${n}` }, t)]);
      const list = await call('list-clients', { includeClosed: true }, t);
      expect(list.status).toBe(200);
      const parsed = ListClientsResponseSchema.parse(list.body);
      expect(parsed.sessions.length).toBeGreaterThan(0);
      for (const s of parsed.sessions) expect('owner' in s).toBe(false);
      answers.push([`list relay-${n}`, list]);
      answers.push([`list of another entry relay-${n}`, await call('list-clients', { entry: `relay-${(n % 3) + 1}` }, t)]);
    }
    // Sessions went out in the snapshots (so the search below would find their owners if they leaked).
    expect(snapshotSessions).toBeGreaterThan(0);
    const mine = open.find((o) => o.entry_id === 'relay-1')!;
    const other = open.find((o) => o.entry_id !== 'relay-1')!;
    expect([mine, other].every(Boolean)).toBe(true);
    const t1 = relayTokens.get('relay-1')!;
    answers.push(['client-ready', await call('client-ready', { relayId: 'relay-1', sessionId: mine.id, exitId: mine.exit_id }, t1)]);
    answers.push(['client-ready elsewhere', await call('client-ready', { relayId: 'relay-1', sessionId: other.id, exitId: other.exit_id }, t1)]);
    answers.push(['disconnect elsewhere', await call('disconnect-client', { sessionId: other.id }, t1)]);
    answers.push(['disconnect', await call('disconnect-client', { sessionId: mine.id }, t1)]);
    answers.push(['disconnect again', await call('disconnect-client', { sessionId: mine.id }, t1)]);
    answers.push(['connect by a relay', await call('connect-client', { publicKey: clientKey(10), exit: 'relay-3' }, t1)]);
    expect(answers.map(([w, a]) => [w, a.status])).toEqual(
      answers.map(([w]) => [w, /another entry|elsewhere|connect by/.test(w) ? 403 : w === 'disconnect again' ? 409 : 200]),
    );
    for (const [what, a] of answers) {
      for (const u of ids) expect(a.text.includes(u), `${what} shows ${u}`).toBe(false);
      expect(a.text, what).not.toMatch(/"(owner|user_?id|userId|sub)"/i);
    }
    // Relays read the topology events: no user id in any of them.
    const events = await sql`select payload from relaynet.topology_events`;
    expect(events.length).toBeGreaterThan(10);
    for (const e of events) for (const u of ids) expect(e.payload as string).not.toContain(u);
  });

  it('forgets buckets that are full again on a heartbeat', async () => {
    const before = await sql`select subject, action from relaynet.rate_limits order by subject, action`;
    expect(before.length).toBeGreaterThan(3);
    // dave's connect bucket was last touched two windows ago: full again.
    await sql`update relaynet.rate_limits set updated_at = clock_timestamp() - interval '2 hours' where subject = ${`user:${USER.dave}`} and action = 'connect'`;
    expect((await call('heartbeat', { relayId: 'relay-2' }, relayTokens.get('relay-2'))).status).toBe(200);
    const after = await sql`select subject, action from relaynet.rate_limits order by subject, action`;
    expect(after.map((b) => `${b.subject}/${b.action}`)).toEqual(
      before.map((b) => `${b.subject}/${b.action}`).filter((k) => k !== `user:${USER.dave}/connect`),
    );
    // And a full bucket lets dave connect at once again.
    const r = await call('connect-client', { publicKey: clientKey(60), exit: 'relay-1', entry: 'relay-3' }, user('dave'));
    expect(r.status, r.text).toBe(200);
  });
});
