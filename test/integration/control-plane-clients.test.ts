import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalControlPlane, type LocalControlPlane } from '../../src/control-plane/local.ts';
import { ConnectClientResponseSchema, ListClientsResponseSchema, SwitchExitResponseSchema } from '../../src/contract/api-clients.ts';
import { RegisterResponseSchema } from '../../src/contract/api-relays.ts';
import { currentVersion, parseTopologyEvent } from '../../src/contract/catalogue.ts';
import { importPublicKey, verifyBytes } from '../../src/events/signing.ts';
import { subjectFor } from '../../src/contract/subjects.ts';
import { topologySubjectRelay, type ClientSession, type TopologyEvent } from '../../src/contract/topology.events.ts';
import { EMPTY_TOPOLOGY, evolveTopology } from '../../src/events/topology.fold.ts';
import { pino } from 'pino';
import { eventually } from '../../src/devnet/relay-process.ts';
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts';
import { tempDir } from '../support/temp.ts';

/**
 * Client sessions end to end on the real Edge Functions (Deno, behind the local gateway) and the real
 * database (embedded PGlite, and a real PostgreSQL). No relay daemon runs: a helper plays the entry
 * relays, calling client-ready with the entry's relay token when it sees a session (exit) it has not
 * confirmed. The tests of one backend run in order and build on each other's state.
 */

const relayKey = (n: number) => Buffer.alloc(32, n).toString('base64');
const clientKey = (n: number) => Buffer.alloc(32, 100 + n).toString('base64');
const HEARTBEAT = 5;
const TOKEN_TTL = 3600;

interface Answer {
  status: number;
  body: any;
  ms: number;
}

describe.each(['pglite', 'postgresql'] as const)('client sessions on %s', (backend) => {
  /** The functions' request lines (info), kept to read what a request logged; warnings and worse go to stderr too. */
  const requestLines: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'info', base: { test: `cp-clients-${backend}` } },
    pino.multistream([
      { level: (process.env.RELAYNET_LOG_LEVEL ?? 'warn') as pino.Level, stream: pino.destination(2) },
      {
        level: 'info',
        stream: {
          write: (line: string) => {
            const l = JSON.parse(line) as Record<string, unknown>;
            if (l.msg === 'function request') requestLines.push(l);
          },
        },
      },
    ]),
  );
  /** The request line a function logged for request `requestId`. */
  const requestLine = (fn: string, requestId: string) =>
    eventually(`${fn}'s line for request ${requestId}`, async () => requestLines.find((l) => l.fn === fn && l.requestId === requestId) ?? null, 10_000);
  let tmp: ReturnType<typeof tempDir>;
  let pg: TestPostgres | null = null;
  let cp: LocalControlPlane;
  let sql: postgres.Sql;
  const relayTokens = new Map<string, string>();

  /** POST a function through the gateway; resolves to status, parsed body and how long it took. */
  async function call(fn: string, body: unknown, opts: { token?: string; requestId?: string; raw?: string } = {}): Promise<Answer> {
    const headers: Record<string, string> = { 'content-type': 'application/json', authorization: `Bearer ${opts.token ?? cp.serviceRoleKey}` };
    if (opts.requestId) headers['x-request-id'] = opts.requestId;
    const t = performance.now();
    const res = await fetch(`${cp.url}/functions/v1/${fn}`, { method: 'POST', headers, body: opts.raw ?? JSON.stringify(body) });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* keep the text */
    }
    return { status: res.status, body: parsed, ms: performance.now() - t };
  }

  // --- the entry relays, played by the test -------------------------------------------------------
  const entryPlayer = {
    on: true,
    /** Whether private sessions' exits confirm too. */
    exitsOn: true,
    /** How long an entry takes to "program" a session before it confirms. */
    delayMs: 0,
    firstSeen: new Map<string, number>(),
    stopped: false,
    loop: null as Promise<void> | null,
  };
  async function playEntries(): Promise<void> {
    while (!entryPlayer.stopped) {
      if (entryPlayer.on) {
        const pending = await sql`select id::text as id, entry_id, exit_id from relaynet.client_sessions
                                  where status = 'open' and confirmed_exit_id is distinct from exit_id order by opened_at`.catch(() => []);
        for (const p of pending) {
          const k = `${p.id}:${p.exit_id}`;
          if (!entryPlayer.firstSeen.has(k)) entryPlayer.firstSeen.set(k, Date.now());
          if (Date.now() - entryPlayer.firstSeen.get(k)! < entryPlayer.delayMs || !entryPlayer.on) continue;
          const token = relayTokens.get(p.entry_id);
          if (!token) continue;
          await call('client-ready', { relayId: p.entry_id, sessionId: p.id, exitId: p.exit_id }, { token }).catch(() => null);
        }
      }
      // A private session's exit confirms that it carries the session's peer.
      if (entryPlayer.exitsOn) {
        const pending = await sql`select id::text as id, exit_id from relaynet.client_sessions
                                  where status = 'open' and mode = 'private' and exit_confirmed_id is distinct from exit_id`.catch(() => []);
        for (const p of pending) {
          const token = relayTokens.get(p.exit_id);
          if (!token) continue;
          await call('client-ready', { relayId: p.exit_id, sessionId: p.id, exitId: p.exit_id }, { token }).catch(() => null);
        }
      }
      await new Promise((r) => setTimeout(r, 40));
    }
  }

  // --- database views -------------------------------------------------------------------------------
  const counts = async () => {
    const [r] = await sql`select (select count(*) from relaynet.client_sessions)::int as sessions,
                                 (select count(*) from relaynet.client_sessions where status = 'open')::int as open,
                                 (select count(*) from relaynet.topology_events)::int as events,
                                 (select revision from relaynet.topology)::int as revision`;
    return r!;
  };
  const revision = async () => (await counts()).revision;
  const eventsAfter = async (rev: number): Promise<TopologyEvent[]> => {
    const rows = await sql`select payload from relaynet.topology_events where revision > ${rev} order by revision`;
    return rows.map((r) => JSON.parse(r.payload as string) as TopologyEvent);
  };
  const row = async (id: string) => (await sql`select *, host(address) as host from relaynet.client_sessions where id = ${id}::uuid`)[0]!;
  const setting = async (name: string, value: number | null) => {
    await sql.unsafe(`update relaynet.settings set ${name} = $1`, [value]);
  };

  const reg = (n: number, region: string) => ({
    relayId: `relay-${n}`,
    name: `Relay ${n}`,
    region,
    publicKey: relayKey(n),
    endpoint: `198.51.100.${n}:51820`,
  });

  beforeAll(async () => {
    tmp = tempDir(`cp-clients-${backend}`);
    if (backend === 'postgresql') pg = await startTestPostgres();
    cp = await startLocalControlPlane({ stateDir: join(tmp.dir, 'state'), port: 0, dbUrl: pg?.url, heartbeatSeconds: HEARTBEAT, logger: log });
    sql = postgres(cp.dbUrl, { max: 2, prepare: false, onnotice: () => {} });
    for (const n of [1, 2, 3, 4]) relayTokens.set(`relay-${n}`, await cp.mintRelayToken(`relay-${n}`, TOKEN_TTL));
    entryPlayer.loop = playEntries();
  });

  afterAll(async () => {
    entryPlayer.stopped = true;
    await entryPlayer.loop?.catch(() => {});
    await sql?.end({ timeout: 2 }).catch(() => {});
    await cp?.stop();
    await pg?.stop();
    tmp?.remove();
  });

  it('adds the client settings with their defaults and the sessions table', async () => {
    const [s] = await sql`select client_mtu, client_dns, client_keepalive_seconds, session_ttl_seconds, max_session_ttl_seconds,
                                 confirm_timeout_seconds, relay_liveness_seconds from relaynet.settings`;
    expect(s).toEqual({
      client_mtu: 1420,
      client_dns: ['9.9.9.9'],
      client_keepalive_seconds: 25,
      session_ttl_seconds: 86400,
      max_session_ttl_seconds: 2592000,
      confirm_timeout_seconds: 20,
      relay_liveness_seconds: null,
    });
    await expect(sql`update relaynet.settings set client_mtu = 100`).rejects.toThrow(/settings_client_mtu/);
    await expect(sql`update relaynet.settings set confirm_timeout_seconds = 121`).rejects.toThrow(/settings_confirm_timeout/);
    await expect(sql`update relaynet.settings set client_dns = '{not-an-address}'`).rejects.toThrow(/inet/);
    expect((await sql`select client_prefix6::text as p from relaynet.settings`)[0]!.p).toBe('fd64::/96');
    await expect(sql`update relaynet.settings set client_prefix6 = 'fd64::/64'`).rejects.toThrow(/settings_client_prefix6/);
    await expect(sql`update relaynet.settings set client_prefix6 = '100.64.0.0/10'`).rejects.toThrow(/settings_client_prefix6/);
    expect((await sql`select count(*)::int as n from relaynet.client_sessions`)[0]!.n).toBe(0);
  });

  it('registers three relays with relay tokens; register-server answers with the open sessions (none yet)', async () => {
    // Five client addresses per pool: a /29 without network, broadcast and the entry's own address.
    // No relay heartbeats here: relays stay live for an hour (the default window is tested below) and are never expired.
    await sql`update relaynet.settings set client_pool_prefix = 29, relay_liveness_seconds = 3600, relay_expire_seconds = 86400`;
    for (const [n, region] of [
      [1, 'eu'],
      [2, 'eu'],
      [3, 'us'],
    ] as const) {
      const r = await call('register-server', reg(n, region), { token: relayTokens.get(`relay-${n}`)! });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      const parsed = RegisterResponseSchema.parse(r.body);
      expect(parsed.sessions).toEqual([]);
      expect(parsed.relay.clientPool).toBe(`100.96.0.${(n - 1) * 8}/29`);
    }
    expect(await revision()).toBe(3);
  });

  let first: { id: string; key: string };

  it('connects a client: the answer comes only after the entry confirmed, with a wg-quick configuration', async () => {
    entryPlayer.delayMs = 400;
    const before = await revision();
    const r = await call('connect-client', { publicKey: clientKey(1), exit: 'relay-3', entry: 'relay-1' }, { requestId: 'connect-1' });
    entryPlayer.delayMs = 0;
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const body = ConnectClientResponseSchema.parse(r.body);
    first = { id: body.session.id, key: clientKey(1) };
    // The entry's confirmation came before the answer (the row says so: the player may not have read its own
    // answer yet), and the answer waited for it.
    expect(await row(body.session.id)).toMatchObject({ confirmed_exit_id: 'relay-3' });
    expect(r.ms).toBeGreaterThanOrEqual(400);
    // The wait ended on the entry's confirmation's notification (LISTEN: PostgreSQL, and PGlite's multiplexer).
    expect((await requestLine('connect-client', 'connect-1')).confirmedBy).toBe('notification');
    expect(body.session).toMatchObject({ entryId: 'relay-1', exitId: 'relay-3', publicKey: clientKey(1), address: '100.96.0.2' });
    expect(Date.parse(body.session.expiresAt) - Date.parse(body.session.openedAt)).toBe(86400_000);
    expect(body.entry).toEqual({ id: 'relay-1', name: 'Relay 1', region: 'eu', publicKey: relayKey(1), endpoint: '198.51.100.1:51820' });
    expect(body.exit).toEqual({ id: 'relay-3', name: 'Relay 3', region: 'us' });
    expect(body.config).toEqual({
      address: '100.96.0.2/32',
      address6: 'fd64::6460:2/128',
      dns: ['9.9.9.9'],
      mtu: 1420,
      keepaliveSeconds: 25,
      peer: { publicKey: relayKey(1), endpoint: '198.51.100.1:51820', allowedIps: ['0.0.0.0/0', '::/0'] },
    });
    expect(body.wgQuick).toBe(
      [
        '[Interface]',
        '# PrivateKey = <your private key>',
        'Address = 100.96.0.2/32, fd64::6460:2/128',
        'DNS = 9.9.9.9',
        'MTU = 1420',
        '',
        '[Peer]',
        `PublicKey = ${relayKey(1)}`,
        'Endpoint = 198.51.100.1:51820',
        'AllowedIPs = 0.0.0.0/0, ::/0',
        'PersistentKeepalive = 25',
        '',
      ].join('\n'),
    );
    const stored = await row(body.session.id);
    expect(stored).toMatchObject({ status: 'open', owner: null, entry_id: 'relay-1', exit_id: 'relay-3', confirmed_exit_id: 'relay-3', host: '100.96.0.2' });
    const events = await eventsAfter(before);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ type: 'ClientSessionOpened', causationId: 'connect-1', data: { revision: before + 1, session: body.session } });
  });

  it('picks what is not given: the exit of a region and the least loaded live entry', async () => {
    const r = await call('connect-client', { publicKey: clientKey(2), exitRegion: 'us' });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    // relay-1 has a session entering already; relay-2 has none.
    expect(r.body.session).toMatchObject({ entryId: 'relay-2', exitId: 'relay-3', address: '100.96.0.10' });
    const eu = await call('connect-client', { publicKey: clientKey(3), exitRegion: 'eu', entry: 'relay-3', ttlSeconds: 3600 });
    expect(eu.status, JSON.stringify(eu.body)).toBe(200);
    // Both eu relays are live; relay-1 and relay-2 have no session leaving at them: the tie goes to relay-1.
    expect(eu.body.session).toMatchObject({ entryId: 'relay-3', exitId: 'relay-1', address: '100.96.0.18' });
    expect(Date.parse(eu.body.session.expiresAt) - Date.parse(eu.body.session.openedAt)).toBe(3600_000);
  });

  it('closes a session its entry does not confirm in time: 504 entry_not_ready, ClientSessionOpened then ClientSessionClosed', async () => {
    await setting('confirm_timeout_seconds', 1);
    entryPlayer.on = false;
    try {
      const before = await counts();
      const r = await call('connect-client', { publicKey: clientKey(4), exit: 'relay-3', entry: 'relay-1' });
      expect(r.status).toBe(504);
      expect(r.body).toMatchObject({ error: 'entry_not_ready' });
      expect(r.body.message).toMatch(/relay-1 did not confirm .* within 1 s; .*nothing was kept/);
      expect(r.ms).toBeGreaterThanOrEqual(1000);
      const events = await eventsAfter(before.revision);
      expect(events.map((e) => e.type)).toEqual(['ClientSessionOpened', 'ClientSessionClosed']);
      const id = (events[0] as Extract<TopologyEvent, { type: 'ClientSessionOpened' }>).data.session.id;
      expect(events[1]!.data).toEqual({ revision: before.revision + 2, sessionId: id, entryId: 'relay-1', reason: 'not-confirmed' });
      expect(await row(id)).toMatchObject({ status: 'closed', close_reason: 'not-confirmed', confirmed_exit_id: null });
      // Its key and address are free again.
      expect((await counts()).open).toBe(before.open);
    } finally {
      entryPlayer.on = true;
    }
    const again = await call('connect-client', { publicKey: clientKey(4), exit: 'relay-3', entry: 'relay-1' });
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    expect(again.body.session.address).toBe('100.96.0.3');
    await setting('confirm_timeout_seconds', 20);
  });

  it('switches the exit once the entry confirms it; the same exit changes nothing', async () => {
    const before = await revision();
    const r = await call('switch-exit', { sessionId: first.id, exit: 'relay-2' });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const body = SwitchExitResponseSchema.parse(r.body);
    expect(body.session).toMatchObject({ id: first.id, entryId: 'relay-1', exitId: 'relay-2', address: '100.96.0.2' });
    expect(await row(first.id)).toMatchObject({ confirmed_exit_id: 'relay-2' });
    expect(await eventsAfter(before)).toMatchObject([
      {
        type: 'ClientSessionExitChanged',
        data: { revision: before + 1, sessionId: first.id, entryId: 'relay-1', exitId: 'relay-2', previousExitId: 'relay-3' },
      },
    ]);
    expect(await row(first.id)).toMatchObject({ exit_id: 'relay-2', confirmed_exit_id: 'relay-2' });

    const same = await call('switch-exit', { sessionId: first.id, exit: 'relay-2' });
    expect([same.status, same.body.session.exitId]).toEqual([200, 'relay-2']);
    // A region that the current exit belongs to keeps it.
    const region = await call('switch-exit', { sessionId: first.id, exitRegion: 'eu' });
    expect([region.status, region.body.session.exitId]).toEqual([200, 'relay-2']);
    expect(await revision()).toBe(before + 1);

    const oneHop = await call('switch-exit', { sessionId: first.id, exit: 'relay-1' });
    expect([oneHop.status, oneHop.body.error, oneHop.body.field]).toEqual([422, 'entry_is_exit', 'exit']);
    expect(await revision()).toBe(before + 1);
  });

  it('keeps the new exit when the entry does not confirm a switch in time (504, the entry applies it later)', async () => {
    await setting('confirm_timeout_seconds', 1);
    entryPlayer.on = false;
    let before: number;
    try {
      before = await revision();
      const r = await call('switch-exit', { sessionId: first.id, exitRegion: 'us' });
      expect(r.status).toBe(504);
      expect(r.body.error).toBe('entry_not_ready');
      expect(r.body.message).toMatch(/keeps exit relay-3 and the relays will still apply it/);
      expect(await row(first.id)).toMatchObject({ status: 'open', exit_id: 'relay-3', confirmed_exit_id: null });
      const list = ListClientsResponseSchema.parse((await call('list-clients', {})).body);
      expect(list.sessions.find((s) => s.id === first.id)).toMatchObject({ exitId: 'relay-3', confirmed: false });
    } finally {
      entryPlayer.on = true;
      await setting('confirm_timeout_seconds', 20);
    }
    const deadline = Date.now() + 10_000;
    while ((await row(first.id)).confirmed_exit_id !== 'relay-3') {
      if (Date.now() > deadline) throw new Error('the late confirmation never arrived');
      await new Promise((r) => setTimeout(r, 50));
    }
    expect((await eventsAfter(before!)).map((e) => e.type)).toEqual(['ClientSessionExitChanged']);
  });

  it('client-ready: only the entry confirms, a stale exit is harmless, unknown and closed sessions are refused', async () => {
    const t1 = relayTokens.get('relay-1')!;
    const before = await counts();
    const stale = await call('client-ready', { relayId: 'relay-1', sessionId: first.id, exitId: 'relay-2' }, { token: t1 });
    expect(stale).toMatchObject({ status: 200, body: { sessionId: first.id, exitId: 'relay-2', confirmed: false } });
    const again = await call('client-ready', { relayId: 'relay-1', sessionId: first.id, exitId: 'relay-3' }, { token: t1 });
    expect(again.body.confirmed).toBe(true);
    const other = await call('client-ready', { relayId: 'relay-2', sessionId: first.id, exitId: 'relay-3' }, { token: relayTokens.get('relay-2')! });
    expect([other.status, other.body.error]).toEqual([403, 'forbidden']);
    const borrowed = await call('client-ready', { relayId: 'relay-1', sessionId: first.id, exitId: 'relay-3' }, { token: relayTokens.get('relay-2')! });
    expect([borrowed.status, borrowed.body.error]).toEqual([403, 'forbidden']);
    const unknown = await call('client-ready', { relayId: 'relay-1', sessionId: '00000000-0000-4000-8000-000000000000', exitId: 'relay-3' }, { token: t1 });
    expect([unknown.status, unknown.body.error]).toEqual([404, 'unknown_session']);
    const [closed] = await sql`select id::text as id, exit_id from relaynet.client_sessions where status = 'closed' and entry_id = 'relay-1' limit 1`;
    const late = await call('client-ready', { relayId: 'relay-1', sessionId: closed!.id, exitId: closed!.exit_id }, { token: t1 });
    expect([late.status, late.body.error]).toEqual([409, 'session_closed']);
    const user = await call(
      'client-ready',
      { relayId: 'relay-1', sessionId: first.id, exitId: 'relay-3' },
      { token: await cp.mintUserToken('alice', TOKEN_TTL) },
    );
    expect([user.status, user.body.error]).toEqual([403, 'forbidden']);
    const bad = await call('client-ready', { relayId: 'relay-1', sessionId: 'not-a-uuid', exitId: 'relay-3' }, { token: t1 });
    expect([bad.status, bad.body.field]).toEqual([400, 'sessionId']);
    expect(await counts()).toEqual(before);
  });

  it('connects a private client once its entry and its exit confirmed: the exit is its peer, at the entry on its own port', async () => {
    const before = await revision();
    const r = await call('connect-client', { publicKey: clientKey(40), entry: 'relay-1', exit: 'relay-2', mode: 'private' });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const body = ConnectClientResponseSchema.parse(r.body);
    const id = body.session.id;
    expect(body.session).toMatchObject({ entryId: 'relay-1', exitId: 'relay-2', mode: 'private' });
    expect(await row(id)).toMatchObject({ confirmed_exit_id: 'relay-2', exit_confirmed_id: 'relay-2' });
    // Its peer is the exit's key, at the entry's address, on the entry's port less the address's host offset.
    const [{ pool }] = (await sql`select host(client_pool) as pool from relaynet.relays where id = 'relay-1'`) as unknown as [{ pool: string }];
    const asNumber = (a: string) => a.split('.').reduce((n, o) => n * 256 + Number(o), 0);
    const offset = asNumber(body.session.address) - asNumber(pool);
    expect(offset).toBeGreaterThanOrEqual(2);
    expect(body.config.peer).toMatchObject({ publicKey: relayKey(2), endpoint: `198.51.100.1:${51820 - offset}` });
    expect(body.config.mtu).toBe(1360);
    expect(body.wgQuick).toContain(`PublicKey = ${relayKey(2)}`);
    expect((await eventsAfter(before)).map((e) => [e.type, e.version, e.data])).toEqual([
      ['ClientSessionOpened', 2, { revision: before + 1, session: body.session }],
    ]);
    // The exit is handed its private sessions at registration, and may see and confirm them; a third relay may not.
    const snapshot = RegisterResponseSchema.parse((await call('register-server', reg(2, 'eu'), { token: relayTokens.get('relay-2')! })).body);
    expect(snapshot.sessions.find((s) => s.id === id)).toEqual(body.session);
    const third = await call('client-ready', { relayId: 'relay-3', sessionId: id, exitId: 'relay-3' }, { token: relayTokens.get('relay-3')! });
    expect([third.status, third.body.error]).toEqual([403, 'forbidden']);

    // A switch of exit waits for the new exit too, and answers with a new configuration: the new exit's key.
    entryPlayer.exitsOn = false;
    await setting('confirm_timeout_seconds', 1);
    try {
      const stuck = await call('switch-exit', { sessionId: id, exit: 'relay-3' });
      expect([stuck.status, stuck.body.error]).toEqual([504, 'entry_not_ready']);
      expect(stuck.body.message).toMatch(/or the new exit did not confirm/);
      expect(await row(id)).toMatchObject({ exit_id: 'relay-3', confirmed_exit_id: 'relay-3', exit_confirmed_id: null });
    } finally {
      entryPlayer.exitsOn = true;
      await setting('confirm_timeout_seconds', 20);
    }
    await eventually('the new exit confirms', async () => (await row(id)).exit_confirmed_id === 'relay-3', 10_000, 50);
    const sw = await call('switch-exit', { sessionId: id, exit: 'relay-2' });
    expect(sw.status, JSON.stringify(sw.body)).toBe(200);
    const switched = SwitchExitResponseSchema.parse(sw.body);
    expect(switched.config?.peer).toEqual({ ...body.config.peer, publicKey: relayKey(2) });
    expect(switched.wgQuick).toContain(`PublicKey = ${relayKey(2)}`);
    const changed = (await eventsAfter(before)).filter((e) => e.type === 'ClientSessionExitChanged');
    expect(changed.map((e) => e.data)).toMatchObject([
      { sessionId: id, exitId: 'relay-3', previousExitId: 'relay-2', session: { ...body.session, exitId: 'relay-3' } },
      { sessionId: id, exitId: 'relay-2', previousExitId: 'relay-3', session: body.session },
    ]);
    // A standard session's switch carries no configuration: its tunnel is untouched.
    expect((await call('switch-exit', { sessionId: first.id, exit: 'relay-2' })).body).toMatchObject({ config: null, wgQuick: null });
    const list = ListClientsResponseSchema.parse((await call('list-clients', {})).body);
    expect(list.sessions.find((s) => s.id === id)).toMatchObject({ mode: 'private', confirmed: true });
    expect(list.sessions.find((s) => s.id === first.id)).toMatchObject({ mode: 'standard' });
    expect((await call('disconnect-client', { sessionId: id })).status).toBe(200);
  });

  it('refuses a private session where the entry has no port for it, and a bad mode, changing nothing', async () => {
    const before = await counts();
    const bad = await call('connect-client', { publicKey: clientKey(41), entry: 'relay-1', exit: 'relay-2', mode: 'hidden' });
    expect([bad.status, bad.body.error, bad.body.field]).toEqual([400, 'invalid_request', 'mode']);
    // An entry whose endpoint is IPv6 cannot forward to the exit's IPv4 mesh address.
    await sql`update relaynet.relays set endpoint = '[2001:db8::3]:51820' where id = 'relay-3'`;
    try {
      const v6 = await call('connect-client', { publicKey: clientKey(41), entry: 'relay-3', exit: 'relay-2', mode: 'private' });
      expect([v6.status, v6.body.error, v6.body.field]).toEqual([422, 'private_unavailable', 'entry']);
      expect(v6.body.message).toMatch(/IPv6/);
    } finally {
      await sql`update relaynet.relays set endpoint = ${reg(3, 'us').endpoint} where id = 'relay-3'`;
    }
    expect(await counts()).toEqual(before);
  });

  let alice: string;
  let bob: string;
  let aliceSession: string;

  it('users open, see, switch and close only their own sessions', async () => {
    alice = await cp.mintUserToken('alice', TOKEN_TTL);
    bob = await cp.mintUserToken('bob', TOKEN_TTL);
    const a = await call('connect-client', { publicKey: clientKey(10), exit: 'relay-3', entry: 'relay-1' }, { token: alice });
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    aliceSession = a.body.session.id;
    expect(await row(aliceSession)).toMatchObject({ owner: 'alice' });
    const b = await call('connect-client', { publicKey: clientKey(11), exit: 'relay-1' }, { token: bob });
    expect(b.status, JSON.stringify(b.body)).toBe(200);

    const mine = ListClientsResponseSchema.parse((await call('list-clients', {}, { token: alice })).body);
    expect(mine.sessions.map((s) => s.id)).toEqual([aliceSession]);
    expect(mine.sessions[0]).toMatchObject({ owner: 'alice', status: 'open', confirmed: true, closedAt: null, closeReason: null });
    const bobs = ListClientsResponseSchema.parse((await call('list-clients', { includeClosed: true }, { token: bob })).body);
    expect(bobs.sessions.map((s) => s.owner)).toEqual(['bob']);

    const before = await counts();
    const steal = await call('switch-exit', { sessionId: aliceSession, exit: 'relay-2' }, { token: bob });
    expect([steal.status, steal.body.error]).toEqual([404, 'unknown_session']);
    const kill = await call('disconnect-client', { sessionId: aliceSession }, { token: bob });
    expect([kill.status, kill.body.error]).toEqual([404, 'unknown_session']);
    const byKey = await call('disconnect-client', { publicKey: clientKey(10) }, { token: bob });
    expect([byKey.status, byKey.body.error]).toEqual([404, 'unknown_session']);
    const removed = await call('disconnect-client', { sessionId: aliceSession, reason: 'removed' }, { token: alice });
    expect([removed.status, removed.body.error, removed.body.field]).toEqual([403, 'forbidden', 'reason']);
    // A key in someone else's session is still taken (without telling whose).
    const dup = await call('connect-client', { publicKey: clientKey(10), exit: 'relay-1' }, { token: bob });
    expect([dup.status, dup.body.error, dup.body.field]).toEqual([409, 'duplicate_client_key', 'publicKey']);
    expect(dup.body.message).not.toContain(aliceSession);
    expect(await counts()).toEqual(before);

    const sw = await call('switch-exit', { sessionId: aliceSession, exit: 'relay-2' }, { token: alice });
    expect([sw.status, sw.body.session?.exitId]).toEqual([200, 'relay-2']);

    // The service role sees everything; a relay sees the sessions entering at it.
    const all = ListClientsResponseSchema.parse((await call('list-clients', {})).body);
    const open = await sql`select id::text as id from relaynet.client_sessions where status = 'open' order by opened_at, id`;
    expect(all.sessions.map((s) => s.id)).toEqual(open.map((o) => o.id));
    const atOne = ListClientsResponseSchema.parse((await call('list-clients', { includeClosed: true }, { token: relayTokens.get('relay-1')! })).body);
    expect(atOne.sessions.length).toBeGreaterThan(0);
    expect(new Set(atOne.sessions.map((s) => s.entryId))).toEqual(new Set(['relay-1']));
    expect(atOne.sessions.some((s) => s.status === 'closed' && s.closeReason === 'not-confirmed')).toBe(true);
    const elsewhere = await call('list-clients', { entry: 'relay-2' }, { token: relayTokens.get('relay-1')! });
    expect([elsewhere.status, elsewhere.body.error]).toEqual([403, 'forbidden']);
    const filtered = ListClientsResponseSchema.parse((await call('list-clients', { entry: 'relay-2' })).body);
    expect(new Set(filtered.sessions.map((s) => s.entryId))).toEqual(new Set(['relay-2']));
  });

  it('refuses relay tokens on the client calls, and user tokens on the relay calls (403 forbidden)', async () => {
    const before = await counts();
    const t1 = relayTokens.get('relay-1')!;
    for (const [fn, body] of [
      ['connect-client', { publicKey: clientKey(20), exit: 'relay-3' }],
      ['switch-exit', { sessionId: first.id, exit: 'relay-2' }],
    ] as const) {
      const r = await call(fn, body, { token: t1 });
      expect([fn, r.status, r.body.error]).toEqual([fn, 403, 'forbidden']);
      expect(r.body.message).toMatch(/not a relay token/);
    }
    for (const [fn, body] of [
      ['register-server', reg(1, 'eu')],
      ['heartbeat', { relayId: 'relay-1' }],
      ['deregister', { relayId: 'relay-1' }],
    ] as const) {
      const r = await call(fn, body, { token: alice });
      expect([fn, r.status, r.body.error]).toEqual([fn, 403, 'forbidden']);
      expect(r.body.message).toMatch(/user token cannot act for a relay/);
    }
    expect(await counts()).toEqual(before);
    // A user token needs exp and sub (401 otherwise).
    const { signJwt } = await import('../../src/control-plane/jwt.ts');
    for (const claims of [
      { role: 'authenticated', sub: 'carol' },
      { role: 'authenticated', exp: Math.floor(Date.now() / 1000) + 60 },
    ]) {
      const r = await call('list-clients', {}, { token: await signJwt(claims, cp.jwtSecret) });
      expect([r.status, r.body.error]).toEqual([401, 'unauthorized']);
    }
  });

  /** Connects and switches that need a live relay, with relay-3 not heard from for a while. */
  async function downRelays(good: Record<string, unknown>): Promise<void> {
    await sql`update relaynet.relays set last_seen = clock_timestamp() where status = 'active'`;
    await sql`update relaynet.relays set last_seen = clock_timestamp() - interval '10 seconds' where id = 'relay-3'`;
    const stillLive = await call('connect-client', { ...good, publicKey: clientKey(51) });
    expect(stillLive.status, JSON.stringify(stillLive.body)).toBe(200);
    await call('disconnect-client', { sessionId: stillLive.body.session.id });
    await sql`update relaynet.relays set last_seen = clock_timestamp() - interval '20 seconds' where id = 'relay-3'`;
    for (const [what, body, status, error, field] of [
      ['exit down', good, 409, 'relay_unavailable', 'exit'],
      ['entry down', { ...good, entry: 'relay-3', exit: 'relay-2' }, 409, 'relay_unavailable', 'entry'],
      ['only live relay in the region is down', { publicKey: clientKey(50), exitRegion: 'us' }, 404, 'no_relay_in_region', 'exitRegion'],
      ['switch to a down exit', { sessionId: aliceSession, exit: 'relay-3' }, 409, 'relay_unavailable', 'exit'],
    ] as const) {
      const before = await counts();
      const r = await call(what.startsWith('switch') ? 'switch-exit' : 'connect-client', body, what.startsWith('switch') ? { token: alice } : {});
      expect([what, r.status, r.body.error, r.body.field]).toEqual([what, status, error, field]);
      expect([what, await counts()]).toEqual([what, before]);
    }
    // relay_liveness_seconds overrides the default.
    await setting('relay_liveness_seconds', 60);
    const live = await call('connect-client', { ...good, publicKey: clientKey(52) });
    expect(live.status, JSON.stringify(live.body)).toBe(200);
    await call('disconnect-client', { sessionId: live.body.session.id });
  }

  it('answers every bad request with a clear code and changes nothing', async () => {
    // Fill relay-1's pool: 5 client addresses (100.96.0.2-6).
    const atOne = Number((await sql`select count(*)::int as n from relaynet.client_sessions where status = 'open' and entry_id = 'relay-1'`)[0]!.n);
    for (let i = atOne; i < 5; i++) {
      const r = await call('connect-client', { publicKey: clientKey(30 + i), exit: 'relay-3', entry: 'relay-1' });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
    }
    const hosts = await sql`select host(address) as h from relaynet.client_sessions where status = 'open' and entry_id = 'relay-1' order by address`;
    expect(hosts.map((h) => h.h)).toEqual(['100.96.0.2', '100.96.0.3', '100.96.0.4', '100.96.0.5', '100.96.0.6']);

    // relay-4 registers and deregisters: a relay that left.
    expect((await call('register-server', reg(4, 'ap'), { token: relayTokens.get('relay-4')! })).status).toBe(200);
    expect((await call('deregister', { relayId: 'relay-4' }, { token: relayTokens.get('relay-4')! })).status).toBe(200);

    const good = { publicKey: clientKey(50), exit: 'relay-3', entry: 'relay-2' };
    const cases: [string, Record<string, unknown> | string, number, string, string | undefined][] = [
      ['malformed key', { ...good, publicKey: 'not base64!!' }, 400, 'invalid_request', 'publicKey'],
      ['short key', { ...good, publicKey: Buffer.alloc(31, 1).toString('base64') }, 400, 'invalid_request', 'publicKey'],
      ['no key', { exit: 'relay-3' }, 400, 'invalid_request', 'publicKey'],
      ['no exit', { publicKey: clientKey(50) }, 400, 'invalid_request', 'exit'],
      ['exit and exitRegion', { ...good, exitRegion: 'us' }, 400, 'invalid_request', 'exitRegion'],
      ['bad exit id', { ...good, exit: 'Relay 3' }, 400, 'invalid_request', 'exit'],
      ['bad region', { publicKey: clientKey(50), exitRegion: 'US East' }, 400, 'invalid_request', 'exitRegion'],
      ['ttl too short', { ...good, ttlSeconds: 5 }, 400, 'invalid_request', 'ttlSeconds'],
      ['ttl over the maximum', { ...good, ttlSeconds: 2592001 }, 400, 'invalid_request', 'ttlSeconds'],
      ['unknown field', { ...good, privateKey: 'x' }, 400, 'invalid_request', 'privateKey'],
      ['oversized body', JSON.stringify({ ...good, entry: 'x'.repeat(17 * 1024) }), 400, 'invalid_request', 'body'],
      ['not JSON', '{"publicKey":', 400, 'invalid_request', 'body'],
      ['unknown exit', { ...good, exit: 'relay-9' }, 404, 'unknown_relay', 'exit'],
      ['exit that left', { ...good, exit: 'relay-4' }, 404, 'unknown_relay', 'exit'],
      ['unknown entry', { ...good, entry: 'relay-9' }, 404, 'unknown_relay', 'entry'],
      ['entry that left', { ...good, entry: 'relay-4' }, 404, 'unknown_relay', 'entry'],
      ['region without relays', { publicKey: clientKey(50), exitRegion: 'ap' }, 404, 'no_relay_in_region', 'exitRegion'],
      ['entry is exit', { ...good, entry: 'relay-3' }, 422, 'entry_is_exit', 'entry'],
      ['region of only the entry', { publicKey: clientKey(50), exitRegion: 'us', entry: 'relay-3' }, 422, 'entry_is_exit', 'exitRegion'],
      ['duplicate client key', { ...good, publicKey: clientKey(2) }, 409, 'duplicate_client_key', 'publicKey'],
      ["a relay's key", { ...good, publicKey: relayKey(1) }, 409, 'duplicate_client_key', 'publicKey'],
      ['pool exhausted', { ...good, entry: 'relay-1' }, 409, 'pool_exhausted', 'entry'],
    ];
    for (const [what, body, status, error, field] of cases) {
      const before = await counts();
      const r = await call('connect-client', typeof body === 'string' ? null : body, typeof body === 'string' ? { raw: body } : {});
      expect([what, r.status, r.body.error, r.body.field]).toEqual([what, status, error, field]);
      expect(typeof r.body.message).toBe('string');
      expect([what, await counts()]).toEqual([what, before]);
    }

    // Down relays: not heard from within the liveness window (default: 3 x heartbeat = 15 s).
    await setting('relay_liveness_seconds', null);
    try {
      await downRelays(good);
    } finally {
      await sql`update relaynet.relays set last_seen = clock_timestamp()`;
      await setting('relay_liveness_seconds', 3600);
    }

    // The other functions refuse malformed requests the same way.
    // The other functions refuse malformed requests the same way.
    for (const [fn, body, field] of [
      ['switch-exit', { sessionId: first.id }, 'exit'],
      ['switch-exit', { sessionId: 'x', exit: 'relay-2' }, 'sessionId'],
      ['disconnect-client', {}, 'sessionId'],
      ['disconnect-client', { sessionId: first.id, publicKey: clientKey(1) }, 'publicKey'],
      ['disconnect-client', { sessionId: first.id, reason: 'bored' }, 'reason'],
      ['list-clients', { includeClosed: 'yes' }, 'includeClosed'],
      ['list-clients', { entry: 'Relay 1' }, 'entry'],
      ['client-ready', { relayId: 'relay-1', sessionId: first.id }, 'exitId'],
    ] as const) {
      const before = await counts();
      const r = await call(fn, body);
      expect([fn, r.status, r.body.error, r.body.field]).toEqual([fn, 400, 'invalid_request', field]);
      expect(await counts()).toEqual(before);
    }
  });

  it('disconnects by id or key, by the owner, the service role or the entry relay; 404 unknown, 409 closed', async () => {
    const byOwner = await call('disconnect-client', { sessionId: aliceSession }, { token: alice });
    expect(byOwner.status, JSON.stringify(byOwner.body)).toBe(200);
    expect(byOwner.body).toEqual({ sessionId: aliceSession, revision: await revision() });
    expect(await eventsAfter(byOwner.body.revision - 1)).toMatchObject([
      { type: 'ClientSessionClosed', data: { sessionId: aliceSession, entryId: expect.any(String), reason: 'disconnected' } },
    ]);
    expect(await row(aliceSession)).toMatchObject({ status: 'closed', close_reason: 'disconnected' });
    const twice = await call('disconnect-client', { sessionId: aliceSession }, { token: alice });
    expect([twice.status, twice.body.error]).toEqual([409, 'session_closed']);
    const twiceByKey = await call('disconnect-client', { publicKey: clientKey(10) }, { token: alice });
    expect([twiceByKey.status, twiceByKey.body.error]).toEqual([409, 'session_closed']);

    const byKey = await call('disconnect-client', { publicKey: clientKey(3), reason: 'removed' });
    expect(byKey.status, JSON.stringify(byKey.body)).toBe(200);
    expect((await eventsAfter(byKey.body.revision - 1))[0]).toMatchObject({ type: 'ClientSessionClosed', data: { reason: 'removed', entryId: 'relay-3' } });

    const [atOne] =
      await sql`select id::text as id from relaynet.client_sessions where status = 'open' and entry_id = 'relay-1' order by opened_at desc limit 1`;
    const wrongRelay = await call('disconnect-client', { sessionId: atOne!.id }, { token: relayTokens.get('relay-2')! });
    expect([wrongRelay.status, wrongRelay.body.error]).toEqual([403, 'forbidden']);
    const byEntry = await call('disconnect-client', { sessionId: atOne!.id }, { token: relayTokens.get('relay-1')! });
    expect(byEntry.status, JSON.stringify(byEntry.body)).toBe(200);

    for (const body of [{ sessionId: '00000000-0000-4000-8000-000000000000' }, { publicKey: clientKey(99) }]) {
      const r = await call('disconnect-client', body);
      expect([r.status, r.body.error]).toEqual([404, 'unknown_session']);
    }
  });

  it('sweeps expired sessions on heartbeats and before a connect (reason expired)', async () => {
    const [a, b] = await sql`select id::text as id, public_key from relaynet.client_sessions where status = 'open' order by opened_at limit 2`;
    await sql`update relaynet.client_sessions set opened_at = clock_timestamp() - interval '2 hours', expires_at = clock_timestamp() - interval '1 hour'
              where id = ${a!.id}::uuid`;
    let before = await revision();
    const hb = await call('heartbeat', { relayId: 'relay-2' }, { token: relayTokens.get('relay-2')! });
    expect(hb.status).toBe(200);
    // The heartbeat answers first (no topology lock) and then sweeps: the closure is the next revision.
    expect(hb.body.revision).toBe(before);
    expect(await revision()).toBe(before + 1);
    expect(await eventsAfter(before)).toMatchObject([{ type: 'ClientSessionClosed', data: { sessionId: a!.id, reason: 'expired' } }]);
    expect(await row(a!.id)).toMatchObject({ status: 'closed', close_reason: 'expired' });

    // An expired session does not hold its key: connect closes it first, then opens the new one.
    await sql`update relaynet.client_sessions set opened_at = clock_timestamp() - interval '2 hours', expires_at = clock_timestamp() - interval '1 hour'
              where id = ${b!.id}::uuid`;
    before = await revision();
    const r = await call('connect-client', { publicKey: b!.public_key, exit: 'relay-1', entry: 'relay-2' });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect((await eventsAfter(before)).map((e) => [e.type, 'reason' in e.data ? e.data.reason : null])).toEqual([
      ['ClientSessionClosed', 'expired'],
      ['ClientSessionOpened', null],
    ]);
    // A switch of an expired (not yet swept) session is refused.
    await sql`update relaynet.client_sessions set opened_at = clock_timestamp() - interval '2 hours', expires_at = clock_timestamp() - interval '1 hour'
              where id = ${r.body.session.id}::uuid`;
    const sw = await call('switch-exit', { sessionId: r.body.session.id, exit: 'relay-3' });
    expect([sw.status, sw.body.error]).toEqual([409, 'session_closed']);
    expect((await call('heartbeat', { relayId: 'relay-1' }, { token: relayTokens.get('relay-1')! })).status).toBe(200);
    expect(await row(r.body.session.id)).toMatchObject({ status: 'closed', close_reason: 'expired' });
  });

  it('hands a registering relay the open sessions entering at it (and private ones leaving there), and no other', async () => {
    const r = await call('register-server', reg(2, 'eu'), { token: relayTokens.get('relay-2')! });
    expect(r.status).toBe(200);
    const parsed = RegisterResponseSchema.parse(r.body);
    const open = await sql`select id::text as id from relaynet.client_sessions
                           where status = 'open' and (entry_id = 'relay-2' or (mode = 'private' and exit_id = 'relay-2')) order by opened_at, id`;
    expect(parsed.sessions.map((s) => s.id)).toEqual(open.map((o) => o.id));
    expect(parsed.sessions.length).toBeGreaterThan(0);
    // Sessions entering elsewhere exist, and are not in relay-2's snapshot.
    const elsewhere = await sql`select count(*)::int as n from relaynet.client_sessions where status = 'open' and entry_id <> 'relay-2'`;
    expect(elsewhere[0]!.n).toBeGreaterThan(0);
    expect(parsed.sessions.every((s) => s.entryId === 'relay-2' || (s.mode === 'private' && s.exitId === 'relay-2'))).toBe(true);
  });

  it('closes the sessions entering at a relay that leaves before RelayLeft; those leaving there stay open', async () => {
    // Make sure relay-2 is an exit of some session entering elsewhere, and an entry of others.
    const viaTwo = await call('connect-client', { publicKey: clientKey(60), exit: 'relay-2', entry: 'relay-3' });
    expect(viaTwo.status, JSON.stringify(viaTwo.body)).toBe(200);
    const entering = await sql`select id::text as id from relaynet.client_sessions where status = 'open' and entry_id = 'relay-2' order by opened_at, id`;
    expect(entering.length).toBeGreaterThan(0);
    const before = await revision();
    const r = await call('deregister', { relayId: 'relay-2' }, { token: relayTokens.get('relay-2')!, requestId: 'leave-2' });
    expect(r.status).toBe(200);
    const events = await eventsAfter(before);
    expect(events.map((e) => e.type)).toEqual([...entering.map(() => 'ClientSessionClosed'), 'RelayLeft']);
    expect(events.slice(0, -1).map((e) => (e.data as { sessionId: string }).sessionId)).toEqual(entering.map((e) => e.id));
    for (const e of events) expect(e.causationId).toBe('leave-2');
    expect(events.slice(0, -1).every((e) => e.type === 'ClientSessionClosed' && e.data.reason === 'entry-left')).toBe(true);
    expect(r.body.revision).toBe(before + entering.length + 1);
    expect(await row(viaTwo.body.session.id)).toMatchObject({ status: 'open', exit_id: 'relay-2' });
    const gone = await call('connect-client', { publicKey: clientKey(61), exit: 'relay-2' });
    expect([gone.status, gone.body.error, gone.body.field]).toEqual([404, 'unknown_relay', 'exit']);
  });

  it('keeps a signed outbox whose events parse and fold into the sessions of the table', async () => {
    const rows =
      await sql`select revision, event_id::text as event_id, type, subject, payload, signature, created_at from relaynet.topology_events order by revision`;
    expect(rows.map((r) => Number(r.revision))).toEqual(rows.map((_, i) => i + 1));
    const pub = importPublicKey(cp.topologyPublicKey);
    let view = EMPTY_TOPOLOGY;
    const types = new Set<string>();
    for (const r of rows) {
      expect(verifyBytes(pub, new TextEncoder().encode(r.payload as string), r.signature as string), `signature r${r.revision}`).toBe(true);
      const parsed = parseTopologyEvent(JSON.parse(r.payload as string));
      if (!parsed.ok) throw new Error(`r${r.revision}: ${parsed.error}`);
      const e = parsed.event;
      expect([e.id, e.type, e.data.revision, e.source, e.version, e.time]).toEqual([
        r.event_id,
        r.type,
        Number(r.revision),
        'control-plane',
        currentVersion(e.type),
        (r.created_at as Date).toISOString(),
      ]);
      expect(r.subject).toBe(subjectFor(e.type, topologySubjectRelay(e)));
      types.add(e.type);
      view = evolveTopology(view, e);
    }
    expect(types).toEqual(new Set(['RelayAdmitted', 'RelayLeft', 'ClientSessionOpened', 'ClientSessionExitChanged', 'ClientSessionClosed']));
    const open = await sql`select id::text as id, entry_id, exit_id, public_key, host(address) as address, opened_at, expires_at, mode
                           from relaynet.client_sessions where status = 'open'`;
    const table: Record<string, ClientSession> = {};
    for (const o of open) {
      table[o.id] = {
        id: o.id,
        entryId: o.entry_id,
        exitId: o.exit_id,
        publicKey: o.public_key,
        address: o.address,
        openedAt: (o.opened_at as Date).toISOString(),
        expiresAt: (o.expires_at as Date).toISOString(),
        mode: o.mode,
      };
    }
    expect(view.sessions).toEqual(table);
    expect([...view.relays.keys()].sort()).toEqual(['relay-1', 'relay-3']);
    expect(view.revision).toBe(await revision());
  });
});
