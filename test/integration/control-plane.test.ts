import { spawnSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createClient, FunctionsHttpError } from '@supabase/supabase-js';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { signJwt } from '../../src/control-plane/jwt.ts';
import { startLocalControlPlane, type LocalControlPlane } from '../../src/control-plane/local.ts';
import { migrate, readMigrations } from '../../src/control-plane/migrate.ts';
import { ROOT } from '../../src/control-plane/paths.ts';
import { parseTopologyEvent } from '../../src/contract/catalogue.ts';
import { importPublicKey, verifyBytes } from '../../src/events/signing.ts';
import { subjectFor } from '../../src/contract/subjects.ts';
import { topologySubjectRelay, type TopologyEvent } from '../../src/contract/topology.events.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { signedRegistration } from '../../src/daemon/control-plane-session.ts';
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts';
import { tempDir } from '../support/temp.ts';

/**
 * The control plane end to end on real components: Edge Functions on Deno behind the local gateway,
 * on embedded PGlite and on a real PostgreSQL 15, called the way relays call them (supabase-js
 * functions.invoke) and with raw fetch for the malformed cases. The tests of one backend run in
 * order and build on each other's state (revisions are asserted exactly).
 */

const key = (n: number) => Buffer.alloc(32, n).toString('base64');
/** An Ed25519 identity as a relay makes one: the private key, and the raw public key in base64. */
function signingIdentity() {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privateKey, publicKey: Buffer.from(publicKey.export({ format: 'der', type: 'spki' }).subarray(12)).toString('base64') };
}
const HEARTBEAT = 7;

interface OutboxRow {
  revision: string;
  event_id: string;
  type: string;
  subject: string;
  payload: string;
  signature: string;
  created_at: Date;
}

describe.each(['pglite', 'postgresql'] as const)('control plane on %s', (backend) => {
  const log = rootLogger({ test: `control-plane-${backend}` }, process.env.RELAYNET_LOG_LEVEL ?? 'warn');
  let tmp: ReturnType<typeof tempDir>;
  let pg: TestPostgres | null = null;
  let cp: LocalControlPlane;
  let sql: postgres.Sql;
  let stateDir: string;
  /** Addresses the concurrent admissions handed out, by relay id (their order is the lock's). */
  const addr = new Map<string, { meshAddress: string; clientPool: string }>();

  const client = (token = cp.serviceRoleKey) =>
    createClient(cp.url, token, { auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false } });

  /** functions.invoke as relays use it; resolves to status and parsed JSON (errors included). */
  async function invoke(fn: string, body: Record<string, unknown>, token?: string): Promise<{ status: number; body: any }> {
    const { data, error, response } = await client(token).functions.invoke(fn, { body, method: 'POST' });
    if (error) {
      if (!(error instanceof FunctionsHttpError)) throw error;
      const res = error.context as Response;
      return { status: res.status, body: await res.json() };
    }
    return { status: response?.status ?? 200, body: data };
  }

  /** Raw HTTP to the gateway (or any URL), for what supabase-js would not send. */
  async function raw(fn: string, init: { body?: string; token?: string | null; method?: string; headers?: Record<string, string>; url?: string } = {}) {
    const headers: Record<string, string> = { 'content-type': 'application/json', ...init.headers };
    const token = init.token === undefined ? cp.serviceRoleKey : init.token;
    if (token !== null) headers.authorization = `Bearer ${token}`;
    const res = await fetch(init.url ?? `${cp.url}/functions/v1/${fn}`, { method: init.method ?? 'POST', headers, body: init.body });
    const text = await res.text();
    let body: any = text;
    try {
      body = JSON.parse(text);
    } catch {
      /* keep text */
    }
    return { status: res.status, body, headers: res.headers };
  }

  const reg = (n: number, over: Record<string, unknown> = {}) => ({
    relayId: `relay-${n}`,
    name: `Relay ${n}`,
    region: 'test',
    publicKey: key(n),
    endpoint: `198.51.100.${n}:51820`,
    ...over,
  });

  const outbox = () =>
    sql<OutboxRow[]>`select revision, event_id, type, subject, payload, signature, created_at from relaynet.topology_events order by revision`;
  const revision = async () => Number((await sql`select revision from relaynet.topology`)[0]!.revision);
  const lastEvent = async (): Promise<TopologyEvent> => {
    const rows = await outbox();
    return JSON.parse(rows[rows.length - 1]!.payload) as TopologyEvent;
  };

  beforeAll(async () => {
    tmp = tempDir(`cp-${backend}`);
    stateDir = join(tmp.dir, 'state');
    if (backend === 'postgresql') pg = await startTestPostgres();
    cp = await startLocalControlPlane({ stateDir, port: 0, dbUrl: pg?.url, heartbeatSeconds: HEARTBEAT, natsToken: 'nats-secret', logger: log });
    sql = postgres(cp.dbUrl, { max: 1, prepare: false, onnotice: () => {} });
    // Most relays here never send a heartbeat: none is expired unless a test asks for it.
    await sql`update relaynet.settings set relay_expire_seconds = 86400`;
  });

  afterAll(async () => {
    await sql?.end({ timeout: 2 }).catch(() => {});
    await cp?.stop();
    await pg?.stop();
    tmp?.remove();
  });

  it('applies the migrations once, recorded in relaynet_migrations', async () => {
    const names = readMigrations().map((m) => m.name);
    expect(names.length).toBeGreaterThan(0);
    const recorded = await sql`select name from public.relaynet_migrations order by name`;
    expect(recorded.map((r) => r.name)).toEqual(names);
    expect(await migrate(sql)).toEqual([]);
    const tables = await sql`select table_name from information_schema.tables where table_schema = 'relaynet' order by table_name`;
    expect(tables.map((t) => t.table_name)).toEqual([
      'client_sessions',
      'epochs',
      'pob_capacity',
      'pob_credits',
      'pob_disputes',
      'pob_measurement_reports',
      'pob_measurements',
      'pob_receipts',
      'pob_roots',
      'pob_settlements',
      'publisher_cursor',
      'rate_limits',
      'relay_bans',
      'relay_keys',
      'relay_standing',
      'relays',
      'revoked_tokens',
      'settings',
      'topology',
      'topology_events',
    ]);
    expect(await revision()).toBe(0);
    // A fresh database admits 4,096 relays: /23 client pools in the /11.
    const [plan] = await sql`select mesh_cidr::text as mesh, client_supernet::text as supernet, client_pool_prefix as prefix from relaynet.settings`;
    expect(plan).toEqual({ mesh: '100.64.0.0/16', supernet: '100.96.0.0/11', prefix: 23 });
  });

  it('admits 5 relays registering concurrently, each with its own mesh address and client pool', async () => {
    const results = await Promise.all([1, 2, 3, 4, 5].map((n) => invoke('register-server', reg(n))));
    for (const r of results) expect(r.status, JSON.stringify(r.body)).toBe(200);
    const bodies = results.map((r) => r.body);
    expect(new Set(bodies.map((b) => b.relay.meshAddress))).toEqual(new Set(['100.64.0.1', '100.64.0.2', '100.64.0.3', '100.64.0.4', '100.64.0.5']));
    expect(new Set(bodies.map((b) => b.relay.clientPool))).toEqual(
      new Set(['100.96.0.0/23', '100.96.2.0/23', '100.96.4.0/23', '100.96.6.0/23', '100.96.8.0/23']),
    );
    expect(bodies.map((b) => b.revision).sort()).toEqual([1, 2, 3, 4, 5]);
    for (const b of bodies) {
      expect(b.readmitted).toBe(false);
      // Serialised admissions: the one that made revision r saw the r-1 admitted before it.
      expect(b.relays).toHaveLength(b.revision - 1);
      expect(b.relays.map((r: { id: string }) => r.id)).not.toContain(b.relay.id);
      expect(Number.isNaN(Date.parse(b.revisionTime))).toBe(false);
      expect(b.bus).toEqual({
        servers: ['nats://127.0.0.1:4222'],
        token: 'nats-secret',
        // Token mode: no NATS user JWT.
        credential: null,
        subjectRoot: 'relaynet',
        topologyStream: 'RELAYNET_TOPOLOGY',
        relayStream: 'RELAYNET_RELAY',
        topologySigningKey: cp.topologyPublicKey,
      });
      expect(b.heartbeatIntervalSeconds).toBe(HEARTBEAT);
    }
    for (const b of bodies) addr.set(b.relay.id, { meshAddress: b.relay.meshAddress, clientPool: b.relay.clientPool });
    const rows = await outbox();
    expect(rows.map((r) => r.type)).toEqual(Array(5).fill('RelayAdmitted'));
    const last = bodies.find((b) => b.revision === 5)!;
    const times = await sql`select updated_at from relaynet.topology`;
    expect(last.revisionTime).toBe((times[0]!.updated_at as Date).toISOString());
  });

  it('keeps the address plan of a database whose relays hold pools when the 4,096-relay migration runs', async () => {
    const m = readMigrations().find((x) => x.name.endsWith('_address_plan_4096.sql'))!;
    await sql`update relaynet.settings set client_pool_prefix = 22`;
    try {
      await sql.unsafe(m.sql);
      expect((await sql`select client_pool_prefix as p from relaynet.settings`)[0]!.p).toBe(22);
    } finally {
      await sql`update relaynet.settings set client_pool_prefix = 23`;
    }
  });

  it('re-admits an active relay with the same key and endpoint without a new revision', async () => {
    const before = (await outbox()).length;
    const r = await invoke('register-server', reg(1));
    expect(r.status).toBe(200);
    expect(r.body.readmitted).toBe(true);
    expect(r.body.revision).toBe(5);
    expect(r.body.relay).toMatchObject({ id: 'relay-1', ...addr.get('relay-1') });
    expect(r.body.relays.map((x: { id: string }) => x.id)).toEqual(['relay-2', 'relay-3', 'relay-4', 'relay-5']);
    // Name and region changes are recorded without an event.
    const renamed = await invoke('register-server', reg(1, { name: 'Relay One', region: 'eu-west' }));
    expect(renamed.status).toBe(200);
    expect(renamed.body.revision).toBe(5);
    expect(renamed.body.relay).toMatchObject({ name: 'Relay One', region: 'eu-west' });
    expect((await outbox()).length).toBe(before);
    expect(await revision()).toBe(5);
  });

  it('refuses another key without rotateKey (409) and rotates it with rotateKey: RelayKeyRotated', async () => {
    const refused = await invoke('register-server', reg(3, { publicKey: key(103) }));
    expect(refused.status).toBe(409);
    expect(refused.body).toMatchObject({ error: 'key_mismatch', field: 'publicKey' });
    expect(await revision()).toBe(5);

    const rotated = await invoke('register-server', reg(3, { publicKey: key(103), rotateKey: true }));
    expect(rotated.status).toBe(200);
    expect(rotated.body).toMatchObject({ readmitted: true, revision: 6 });
    expect(rotated.body.relay).toMatchObject({ publicKey: key(103), ...addr.get('relay-3') });
    const e = await lastEvent();
    expect(e.type).toBe('RelayKeyRotated');
    expect(e.data).toEqual({ revision: 6, relayId: 'relay-3', publicKey: key(103), previousPublicKey: key(3) });
    const keys = await sql`select public_key, valid_to from relaynet.relay_keys where relay_id = 'relay-3' order by valid_from`;
    expect(keys.map((k) => [k.public_key, k.valid_to === null])).toEqual([
      [key(3), false],
      [key(103), true],
    ]);
    // Sending the new key again is a plain re-admission.
    const again = await invoke('register-server', reg(3, { publicKey: key(103), rotateKey: true }));
    expect(again.body).toMatchObject({ readmitted: true, revision: 6 });
  });

  it('refuses a key another active relay uses (409 key_in_use)', async () => {
    const r = await invoke('register-server', reg(9, { publicKey: key(1) }));
    expect(r.status).toBe(409);
    expect(r.body).toMatchObject({ error: 'key_in_use', field: 'publicKey' });
    expect(await revision()).toBe(6);
  });

  it('records an endpoint change as RelayEndpointChanged, and key plus endpoint as two revisions', async () => {
    const moved = await invoke('register-server', reg(4, { endpoint: 'relay-4.example.net:51821' }));
    expect(moved.status).toBe(200);
    expect(moved.body.revision).toBe(7);
    expect(await lastEvent()).toMatchObject({
      type: 'RelayEndpointChanged',
      data: { revision: 7, relayId: 'relay-4', endpoint: 'relay-4.example.net:51821', previousEndpoint: '198.51.100.4:51820' },
    });
    const both = await invoke('register-server', reg(5, { publicKey: key(105), endpoint: '[2001:db8::5]:51820', rotateKey: true }));
    expect(both.status).toBe(200);
    expect(both.body.revision).toBe(9);
    const rows = await outbox();
    expect(rows.slice(-2).map((r) => [Number(r.revision), r.type])).toEqual([
      [8, 'RelayKeyRotated'],
      [9, 'RelayEndpointChanged'],
    ]);
  });

  it('answers heartbeats with the current revision and touches last_seen', async () => {
    const [before] = await sql`select last_seen from relaynet.relays where id = 'relay-1'`;
    const r = await invoke('heartbeat', { relayId: 'relay-1' });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ revision: 9, status: 'active' });
    expect(Number.isNaN(Date.parse(r.body.revisionTime))).toBe(false);
    const [after] = await sql`select last_seen from relaynet.relays where id = 'relay-1'`;
    expect((after!.last_seen as Date).getTime()).toBeGreaterThan((before!.last_seen as Date).getTime());
    const unknown = await invoke('heartbeat', { relayId: 'relay-77' });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error).toBe('not_registered');
  });

  it('deregisters: RelayLeft, addresses freed and handed to the next relay, 404 afterwards', async () => {
    const r = await invoke('deregister', { relayId: 'relay-2' });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ revision: 10 });
    expect(await lastEvent()).toMatchObject({ type: 'RelayLeft', data: { revision: 10, relayId: 'relay-2', reason: 'deregistered' } });
    const [row] = await sql`select status, mesh_address, client_pool, left_at from relaynet.relays where id = 'relay-2'`;
    expect(row).toMatchObject({ status: 'left', mesh_address: null, client_pool: null });
    expect(row!.left_at).not.toBeNull();
    const open = await sql`select count(*)::int as n from relaynet.relay_keys where relay_id = 'relay-2' and valid_to is null`;
    expect(open[0]!.n).toBe(0);

    expect((await invoke('heartbeat', { relayId: 'relay-2' })).status).toBe(404);
    const again = await invoke('deregister', { relayId: 'relay-2' });
    expect(again.status).toBe(404);
    expect(again.body.error).toBe('not_registered');
    expect(await revision()).toBe(10);

    const six = await invoke('register-server', reg(6));
    expect(six.status).toBe(200);
    expect(six.body).toMatchObject({ revision: 11, readmitted: false });
    // relay-2's addresses were the lowest free ones.
    expect(six.body.relay).toMatchObject(addr.get('relay-2')!);
    expect(six.body.relays.map((x: { id: string }) => x.id)).toEqual(['relay-1', 'relay-3', 'relay-4', 'relay-5']);

    // A relay that left comes back as a new admission with fresh addresses.
    const back = await invoke('register-server', reg(2));
    expect(back.status).toBe(200);
    expect(back.body).toMatchObject({ revision: 12, readmitted: false });
    expect(back.body.relay).toMatchObject({ meshAddress: '100.64.0.6', clientPool: '100.96.10.0/23' });
  });

  it('answers every malformed request with 400 invalid_request naming the field', async () => {
    const good = reg(8);
    const cases: [string, string, string | Record<string, unknown>][] = [
      ['register-server', 'publicKey', { ...good, publicKey: 'not base64!!' }],
      ['register-server', 'publicKey', { ...good, publicKey: Buffer.alloc(31, 1).toString('base64') }],
      ['register-server', 'publicKey', { ...good, publicKey: Buffer.alloc(33, 1).toString('base64') }],
      ['register-server', 'publicKey', { ...good, publicKey: 'AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQF=' }],
      ['register-server', 'endpoint', { ...good, endpoint: '198.51.100.8' }],
      ['register-server', 'endpoint', { ...good, endpoint: '198.51.100.8:0' }],
      ['register-server', 'endpoint', { ...good, endpoint: '198.51.100.300:51820' }],
      ['register-server', 'endpoint', { ...good, endpoint: '2001:db8::1:51820' }],
      ['register-server', 'endpoint', { ...good, endpoint: 'bad_host!:51820' }],
      ['register-server', 'relayId', { ...good, relayId: 'Relay_8' }],
      ['register-server', 'relayId', { ...good, relayId: '' }],
      ['register-server', 'name', { ...good, name: '' }],
      ['register-server', 'region', { ...good, region: 'EU West' }],
      ['register-server', 'rotateKey', { ...good, rotateKey: 'yes' }],
      ['register-server', 'endpoint', { relayId: 'relay-8', name: 'x', region: 'x', publicKey: key(8) }],
      ['register-server', 'extra', { ...good, extra: 1 }],
      ['register-server', 'body', '{"relayId": "relay-8",'],
      ['register-server', 'body', '[1,2]'],
      ['register-server', 'body', ''],
      ['register-server', 'body', JSON.stringify({ ...good, name: 'x'.repeat(17 * 1024) })],
      ['heartbeat', 'relayId', { relayId: 'relay 8' }],
      ['heartbeat', 'publicKey', { relayId: 'relay-8', publicKey: key(8) }],
      ['deregister', 'relayId', { relayId: 42 }],
      ['deregister', 'body', 'null'],
    ];
    for (const [fn, field, body] of cases) {
      const r = await raw(fn, { body: typeof body === 'string' ? body : JSON.stringify(body) });
      expect([fn, field, r.status, r.body.error, r.body.field], JSON.stringify(r.body)).toEqual([fn, field, 400, 'invalid_request', field]);
      expect(typeof r.body.message).toBe('string');
    }
    // The gateway caps bodies far above the functions' limit, still naming the body.
    const huge = await raw('register-server', { body: 'x'.repeat(1024 * 1024 + 10) });
    expect([huge.status, huge.body.field]).toEqual([400, 'body']);
    expect(await revision()).toBe(12);
  });

  it('answers other methods with 405 and preflights with CORS, unknown functions with 404', async () => {
    const get = await raw('heartbeat', { method: 'GET' });
    expect(get.status).toBe(405);
    expect(get.body.error).toBe('method_not_allowed');
    const pre = await raw('register-server', {
      method: 'OPTIONS',
      token: null,
      headers: { origin: 'http://example.test', 'access-control-request-method': 'POST' },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe('*');
    expect(pre.headers.get('access-control-allow-headers')).toMatch(/authorization/);
    const missing = await raw('no-such-function', { body: '{}' });
    expect(missing.status).toBe(404);
  });

  it('refuses missing, malformed, wrongly signed and expired tokens with 401', async () => {
    const body = JSON.stringify({ relayId: 'relay-1' });
    const now = Math.floor(Date.now() / 1000);
    const other = randomBytes(32).toString('base64url');
    const cases: [string, string | null][] = [
      ['missing', null],
      ['garbage', 'not-a-jwt'],
      ['three garbage parts', 'a.b.c'],
      ['wrong secret', await signJwt({ role: 'service_role', iat: now }, other)],
      ['expired', await signJwt({ role: 'service_role', iat: now - 100, exp: now - 10 }, cp.jwtSecret)],
      ['alg none', `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{"role":"service_role"}').toString('base64url')}.`],
    ];
    for (const [what, token] of cases) {
      const r = await raw('heartbeat', { body, token });
      expect([what, r.status, r.body.error]).toEqual([what, 401, 'unauthorized']);
    }
    // Signed correctly but not a role the functions serve: the gateway lets it through, the function refuses.
    const anon = await raw('heartbeat', { body, token: await signJwt({ role: 'anon', iat: now }, cp.jwtSecret) });
    expect([anon.status, anon.body.error]).toEqual([401, 'unauthorized']);
    const noExp = await raw('heartbeat', { body, token: await signJwt({ role: 'relay', relay_id: 'relay-1', iat: now }, cp.jwtSecret) });
    expect([noExp.status, noExp.body.error]).toEqual([401, 'unauthorized']);
    // The function verifies the JWT itself too (as deployed on Supabase with verify_jwt off, or behind any gateway).
    const direct = cp.functionUrl('heartbeat')!;
    for (const token of [null, await signJwt({ role: 'service_role', exp: now - 1 }, cp.jwtSecret), await signJwt({ role: 'service_role' }, other)]) {
      const r = await raw('heartbeat', { url: direct, body, token });
      expect([r.status, r.body.error]).toEqual([401, 'unauthorized']);
    }
    const ok = await raw('heartbeat', { url: direct, body });
    expect(ok.status).toBe(200);
  });

  it('binds relay tokens to their relay id (403 for another), and CLI-minted tokens work', async () => {
    const mine = await cp.mintRelayToken('relay-1', 600);
    expect((await invoke('heartbeat', { relayId: 'relay-1' }, mine)).status).toBe(200);
    for (const [fn, body] of [
      ['heartbeat', { relayId: 'relay-3' }],
      ['deregister', { relayId: 'relay-3' }],
      ['register-server', reg(3, { publicKey: key(103) })],
    ] as const) {
      const r = await invoke(fn, body, mine);
      expect([fn, r.status, r.body.error]).toEqual([fn, 403, 'forbidden']);
    }
    expect(await revision()).toBe(12);

    const cli = spawnSync(join(ROOT, 'bin/relay-core'), ['token', 'mint', '--relay-id', 'relay-7', '--ttl', '1h', '--state-dir', stateDir], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(cli.status, cli.stderr).toBe(0);
    const token = cli.stdout.trim();
    expect(token.split('.')).toHaveLength(3);
    const r = await invoke('register-server', reg(7), token);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ revision: 13, relay: { id: 'relay-7', meshAddress: '100.64.0.7', clientPool: '100.96.12.0/23' } });
    expect((await invoke('heartbeat', { relayId: 'relay-7' }, token)).status).toBe(200);
    expect((await invoke('heartbeat', { relayId: 'relay-6' }, token)).status).toBe(403);
    const left = await invoke('deregister', { relayId: 'relay-7' }, token);
    expect(left).toEqual({ status: 200, body: { revision: 14 } });
  });

  it('answers 503 pool_exhausted when the address plan is full', async () => {
    // Active: relay-1..6 on 100.64.0.1..6. A /29 has exactly those six host addresses.
    await sql`update relaynet.settings set mesh_cidr = '100.64.0.0/29'`;
    try {
      const r = await invoke('register-server', reg(10));
      expect(r.status).toBe(503);
      expect(r.body.error).toBe('pool_exhausted');
      expect(await revision()).toBe(14);
    } finally {
      await sql`update relaynet.settings set mesh_cidr = '100.64.0.0/16'`;
    }
    await sql`update relaynet.settings set client_supernet = '100.96.0.0/21'`; // four /23 pools
    try {
      const r = await invoke('register-server', reg(10));
      expect([r.status, r.body.error]).toEqual([503, 'pool_exhausted']);
    } finally {
      await sql`update relaynet.settings set client_supernet = '100.96.0.0/11'`;
    }
  });

  it('keeps a gapless outbox of signed events that parse as the catalogue says', async () => {
    const rows = await outbox();
    expect(rows.map((r) => Number(r.revision))).toEqual(Array.from({ length: 14 }, (_, i) => i + 1));
    expect(await revision()).toBe(14);
    const pub = importPublicKey(cp.topologyPublicKey);
    for (const row of rows) {
      expect(verifyBytes(pub, new TextEncoder().encode(row.payload), row.signature), `signature r${row.revision}`).toBe(true);
      const parsed = parseTopologyEvent(JSON.parse(row.payload));
      if (!parsed.ok) throw new Error(`r${row.revision}: ${parsed.error}`);
      const e = parsed.event;
      expect(e.id).toBe(row.event_id);
      expect(e.type).toBe(row.type);
      expect(e.data.revision).toBe(Number(row.revision));
      expect(e.source).toBe('control-plane');
      expect(e.version).toBe(e.type === 'RelayAdmitted' ? 2 : 1);
      expect(e.correlationId).toBeNull();
      expect(e.causationId).toMatch(/^[0-9a-f-]{36}$/);
      expect(row.subject).toBe(subjectFor(e.type, topologySubjectRelay(e)));
      expect(e.time).toBe(row.created_at.toISOString());
      // Tampering breaks the signature.
      expect(verifyBytes(pub, new TextEncoder().encode(row.payload.replace(/"version":(\d)/, '"version":9')), row.signature)).toBe(false);
    }
    // A request id sent by the caller becomes the causation id of the events it causes.
    const r = await raw('deregister', { body: JSON.stringify({ relayId: 'relay-6' }), headers: { 'x-request-id': 'req-test-1' } });
    expect(r.status).toBe(200);
    expect((await lastEvent()).causationId).toBe('req-test-1');
  });

  it("records a relay's identity key and announces it in RelayAdmitted, at admission and when it changes", async () => {
    const id1 = Buffer.alloc(32, 0x31).toString('base64');
    const id2 = Buffer.alloc(32, 0x32).toString('base64');
    const identity = async () => (await sql`select identity_key from relaynet.relays where id = 'relay-20'`)[0]!.identity_key as string | null;
    expect((await invoke('register-server', reg(20, { identityKey: id1 }))).status).toBe(200);
    expect(await lastEvent()).toMatchObject({ type: 'RelayAdmitted', version: 2, data: { relay: { id: 'relay-20' }, identityKey: id1 } });
    expect(await identity()).toBe(id1);
    const before = await revision();
    expect((await invoke('register-server', reg(20))).status).toBe(200); // none sent: the recorded one stays
    expect((await invoke('register-server', reg(20, { identityKey: id1 }))).status).toBe(200);
    expect(await revision()).toBe(before);
    expect(await identity()).toBe(id1);
    expect((await invoke('register-server', reg(20, { identityKey: id2 }))).status).toBe(200);
    expect(await revision()).toBe(before + 1);
    expect(await lastEvent()).toMatchObject({ type: 'RelayAdmitted', version: 2, data: { relay: { id: 'relay-20' }, identityKey: id2 } });
    expect(await identity()).toBe(id2);
    const bad = await invoke('register-server', reg(20, { identityKey: 'not-a-key' }));
    expect([bad.status, bad.body.field]).toEqual([400, 'identityKey']);
  });

  it("moves a relay only on its identity's word; a token alone is refused (403), a revoked one stops alone (401)", async () => {
    const a = signingIdentity();
    const b = signingIdentity();
    // This test registers relay-30 often with its own token: more than the rate limit allows.
    await sql`update relaynet.settings set register_rate_limit = 1000`;
    onTestFinished(async () => {
      await sql`update relaynet.settings set register_rate_limit = 10`;
    });
    const token = await cp.mintRelayToken('relay-30', 3600);
    const other = await cp.mintRelayToken('relay-30', 3600);
    const signed = (body: Record<string, unknown>, who = a, at = Math.floor(Date.now() / 1000)) =>
      signedRegistration(body as never, who.privateKey, at) as Promise<Record<string, unknown>>;
    const first = reg(30, { identityKey: a.publicKey });
    // First admission: proof of possession of the identity presented.
    expect((await invoke('register-server', first, token)).status).toBe(403);
    expect((await invoke('register-server', await signed(first), token)).status).toBe(200);
    const before = await revision();
    const rotation = reg(30, { identityKey: a.publicKey, publicKey: key(31), rotateKey: true });
    const moved = reg(30, { identityKey: a.publicKey, endpoint: '198.51.100.99:51820' });
    for (const body of [rotation, moved, reg(30), reg(30, { identityKey: b.publicKey })]) {
      const r = await invoke('register-server', body, token);
      expect([r.status, r.body.error, r.body.field]).toEqual([403, 'identity_proof', 'proof']);
    }
    // Signed by another key (a thief's new identity), or long ago: refused too.
    for (const body of [
      await signed(reg(30, { identityKey: b.publicKey }), b),
      await signed(rotation, b),
      await signed(rotation, a, Math.floor(Date.now() / 1000) - 3600),
    ]) {
      expect((await invoke('register-server', body, token)).status).toBe(403);
    }
    expect(await revision()).toBe(before);
    expect((await sql`select public_key, endpoint from relaynet.relays where id = 'relay-30'`)[0]).toMatchObject({
      public_key: key(30),
      endpoint: '198.51.100.30:51820',
    });
    // With the identity's signature: rotated, and a new identity accepted on the old one's word.
    expect((await invoke('register-server', await signed(rotation), token)).status).toBe(200);
    expect(await lastEvent()).toMatchObject({ type: 'RelayKeyRotated', data: { relayId: 'relay-30', publicKey: key(31), previousPublicKey: key(30) } });
    const renewed = reg(30, { identityKey: b.publicKey, publicKey: key(31) });
    expect((await invoke('register-server', await signed(renewed, a), token)).status).toBe(200);
    expect(await lastEvent()).toMatchObject({ type: 'RelayAdmitted', data: { identityKey: b.publicKey } });
    expect((await invoke('register-server', await signed(renewed, a), token)).status).toBe(403); // a's word counts no more
    // The operator's service role needs no proof (its own way to re-key a relay).
    expect((await invoke('register-server', reg(30, { publicKey: key(31) }))).status).toBe(200);

    // Revoking one token: it is refused everywhere a relay calls, the relay's other token still works.
    const jti = (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { jti: string }).jti;
    const revoke = await invoke('revoke-token', { jti, reason: 'leaked' });
    expect(revoke).toEqual({ status: 200, body: { jti, changed: true } });
    expect((await invoke('revoke-token', { jti })).body.changed).toBe(false);
    expect((await invoke('revoke-token', { jti }, other)).status).toBe(403);
    for (const [fn, body] of [
      ['heartbeat', { relayId: 'relay-30' }],
      ['register-server', await signed(renewed, b)],
      ['list-clients', {}],
      ['client-ready', { relayId: 'relay-30', sessionId: '00000000-0000-4000-8000-000000000030', exitId: 'relay-1' }],
      ['deregister', { relayId: 'relay-30' }],
    ] as const) {
      const r = await invoke(fn, body, token);
      expect([fn, r.status, r.body.error]).toEqual([fn, 401, 'token_revoked']);
      expect(r.body.message).toContain('leaked');
    }
    expect((await invoke('heartbeat', { relayId: 'relay-30' }, other)).status).toBe(200);
  });

  it("lets the operator forget a banned relay's identity, so it comes back with a new one", async () => {
    const lost = signingIdentity();
    const fresh = signingIdentity();
    const token = await cp.mintRelayToken('relay-31', 3600);
    const body = (who: ReturnType<typeof signingIdentity>) =>
      signedRegistration(reg(31, { identityKey: who.publicKey, publicKey: key(41) }) as never, who.privateKey, Math.floor(Date.now() / 1000)) as Promise<
        Record<string, unknown>
      >;
    expect((await invoke('register-server', await body(lost), token)).status).toBe(200);
    // The identity key is lost: a new one is refused.
    expect((await invoke('register-server', await body(fresh), token)).status).toBe(403);
    // Forgetting needs a ban first.
    const early = await invoke('ban-relay', { relayId: 'relay-31', banned: false, forgetIdentity: true });
    expect([early.status, early.body.error]).toEqual([409, 'not_banned']);
    expect((await invoke('ban-relay', { relayId: 'relay-31', banned: true, forgetIdentity: true })).status).toBe(400);
    expect((await invoke('ban-relay', { relayId: 'relay-31', banned: true, reason: 'identity lost' })).status).toBe(200);
    expect((await invoke('ban-relay', { relayId: 'relay-31', banned: false, forgetIdentity: true })).body).toMatchObject({ changed: true, banned: false });
    expect((await invoke('register-server', await body(fresh), token)).status).toBe(200);
    expect(await lastEvent()).toMatchObject({ type: 'RelayAdmitted', data: { relay: { id: 'relay-31' }, identityKey: fresh.publicKey } });
  });

  it("expires a relay silent past relay_expire_seconds on another relay's heartbeat; it comes back by registering again", async () => {
    const silent = 'relay-60';
    const beating = 'relay-61';
    for (const n of [60, 61]) expect((await invoke('register-server', reg(n))).status).toBe(200);
    // Nothing is due: a heartbeat changes no revision.
    const before = await revision();
    expect((await invoke('heartbeat', { relayId: beating })).body.revision).toBe(before);
    expect(await revision()).toBe(before);
    await sql`update relaynet.settings set relay_expire_seconds = 60`;
    try {
      // Every other relay of this file was heard just now; relay-60 a minute and a second ago.
      await sql`update relaynet.relays set last_seen = clock_timestamp() where status = 'active'`;
      await sql`update relaynet.relays set last_seen = clock_timestamp() - interval '61 seconds' where id = ${silent}`;
      expect((await invoke('heartbeat', { relayId: beating })).status).toBe(200);
      const [gone] = await sql`select status, mesh_address, client_pool from relaynet.relays where id = ${silent}`;
      expect(gone).toEqual({ status: 'left', mesh_address: null, client_pool: null });
      // One event: the relay left, expired (its sessions would be closed first, as at a deregistration).
      expect(await revision()).toBe(before + 1);
      expect(await lastEvent()).toMatchObject({ type: 'RelayLeft', data: { relayId: silent, reason: 'expired' } });
      // The relay is told on its next heartbeat, and comes back by registering.
      const told = await invoke('heartbeat', { relayId: silent });
      expect([told.status, told.body.error]).toEqual([404, 'not_registered']);
      const back = await invoke('register-server', reg(60));
      expect(back.status).toBe(200);
      expect(await lastEvent()).toMatchObject({ type: 'RelayAdmitted', data: { relay: { id: silent } } });
    } finally {
      await sql`update relaynet.settings set relay_expire_seconds = 86400`;
    }
  });

  it(
    backend === 'postgresql'
      ? 'answers a heartbeat while another transaction holds the topology lock; a registration waits for it'
      : 'PGlite runs one transaction at a time: a heartbeat waits for a transaction that holds the lock, as everything does',
    async () => {
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let locked!: () => void;
      const isLocked = new Promise<void>((r) => (locked = r));
      const holder = postgres(cp.dbUrl, { max: 1, prepare: false, onnotice: () => {} });
      const tx = holder.begin(async (t) => {
        await t`select revision from relaynet.topology for update`;
        locked();
        await held;
      });
      const settled = <T>(p: Promise<T>) => {
        const s = { done: false, value: undefined as T | undefined };
        const q = p.then((v) => {
          s.done = true;
          s.value = v;
          return v;
        });
        return { s, q };
      };
      try {
        await isLocked;
        const beat = settled(invoke('heartbeat', { relayId: 'relay-61' }));
        const join = settled(invoke('register-server', reg(62)));
        if (backend === 'postgresql') {
          // A heartbeat takes no lock: it is answered while the lock is still held (were it waiting, this would hang).
          expect((await beat.q).status).toBe(200);
        } else {
          // PGlite serves one connection's transaction at a time: the heartbeat waits too.
          await new Promise((r) => setTimeout(r, 500));
          expect(beat.s.done).toBe(false);
        }
        // A registration waits for the topology lock on either database.
        expect(join.s.done).toBe(false);
        release();
        await tx;
        expect((await beat.q).status).toBe(200);
        expect((await join.q).status).toBe(200);
      } finally {
        release();
        await holder.end({ timeout: 2 });
      }
    },
  );
});
