import { join } from 'node:path';
import { CompactSign } from 'jose';
import fc from 'fast-check';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintUserToken, signJwt, TOKEN_ISSUER } from '../../src/control-plane/jwt.ts';
import { startLocalControlPlane, type LocalControlPlane } from '../../src/control-plane/local.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { alwaysInvalid, FUZZ_SEED, mutationOf, Tally } from '../support/fuzz.ts';
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts';
import { tempDir } from '../support/temp.ts';
import { functionNames } from '../../src/control-plane/functions.ts';
import { generateKeyPairSync, sign } from 'node:crypto';
import { signEpoch } from '../../src/contract/pob-receipts.ts';
import { signReport } from '../../src/contract/pob-measure.ts';

/**
 * Issue 14, part 7: generated malformed requests through every Edge Function, each served by the real
 * Deno runtime (the control plane's function runner) on the real database (PostgreSQL): bad JSON,
 * wrong types, missing and unknown fields, bodies over the limit, bad Authorization headers and JWTs
 * (expired, not yet valid, alg none, HS512, another secret, wrong role, issuer, audience or subject),
 * tokens of the wrong party, bad keys, CIDRs, ids, unicode and control characters, other methods, and
 * well-formed requests the state refuses (unknown and closed sessions, relays that left, keys in use).
 * Sent straight to each function's port (the gateway would refuse bad tokens before the function saw
 * them). Every answer must be a 4xx with a JSON `{ error, message }`; no 5xx, no connection error, no
 * function restarted; every table of the `relaynet` schema is the same before and after; rejections
 * are counted by function, status and error. Count: RELAYNET_FUZZ_REQUESTS per function (default
 * 10,000; scripts/fuzz.sh runs the same and records the figures), seed RELAYNET_FUZZ_SEED (default 14),
 * RELAYNET_FUZZ_CONCURRENCY requests in flight (16). The figures are in docs/security.md.
 */

const PER_FUNCTION = Number(process.env.RELAYNET_FUZZ_REQUESTS ?? 10_000);
const CONCURRENCY = Number(process.env.RELAYNET_FUZZ_CONCURRENCY ?? 16);
/** The run's time limit: the setup, and 10 ms per request at worst (about 500 requests a second were measured on 2 shared cores). */
const TIMEOUT = 180_000 + PER_FUNCTION * 8 * 10;
const FUNCTIONS = [
  'register-server',
  'heartbeat',
  'deregister',
  'client-ready',
  'connect-client',
  'switch-exit',
  'disconnect-client',
  'list-clients',
  'ban-relay',
  'revoke-token',
  'submit-receipts',
  'pob-report',
  'settle-epoch',
  'schedule-measurement',
  'submit-measurement',
  'pob-status',
  'enroll-relay',
  'set-relay-state',
] as const;
type Fn = (typeof FUNCTIONS)[number];

const relayKey = (n: number) => Buffer.alloc(32, n).toString('base64');
const clientKey = (n: number) => Buffer.alloc(32, 100 + n).toString('base64');
const b64url = (s: string) => Buffer.from(s).toString('base64url');

interface Req {
  fn: Fn;
  defect: string;
  method: string;
  authorization: string | null;
  body: Uint8Array | null;
}

const enc = new TextEncoder();
const jsonBody = (v: unknown) => enc.encode(JSON.stringify(v));

describe('fuzzing the Edge Functions (issue 14, part 7)', () => {
  const log = rootLogger({ test: 'fuzz-functions' }, process.env.RELAYNET_LOG_LEVEL ?? 'error');
  let tmp: ReturnType<typeof tempDir>;
  let pg: TestPostgres;
  let cp: LocalControlPlane;
  let sql: postgres.Sql;
  const tokens: Record<string, string> = {};
  let sessionA = '';
  let sessionB = '';
  // relay-1's identity key: its receipts (submit-receipts) are signed with it.
  const identity = generateKeyPairSync('ed25519');
  const identityKey = Buffer.from(identity.publicKey.export({ format: 'der', type: 'spki' }).subarray(12)).toString('base64');
  const EPOCH_SECONDS = 300;
  const closedEpoch = Math.floor(Date.now() / 1000 / EPOCH_SECONDS) - 1;
  /** relay-1's signed receipts for an epoch, as submit-receipts takes them. */
  async function receiptsOf(epoch: number, txBytes: number): Promise<Record<string, unknown>> {
    const receipts = [
      { peerId: 'relay-2', txBytes, rxBytes: 2000 },
      { peerId: 'relay-3', txBytes: 3000, rxBytes: 4000 },
    ];
    const root = await signEpoch('relay-1', epoch, EPOCH_SECONDS, receipts, (d) => sign(null, d, identity.privateKey));
    return { relayId: 'relay-1', epoch, epochSeconds: EPOCH_SECONDS, root: root.root, signature: root.signature, receipts };
  }
  // Two capacity measurements: M1 over (target relay-3, measurers relay-1 and relay-2), M2 not yet
  // (target relay-2, measurer relay-1). relay-1's signed report of M1 is the valid submission.
  const M1 = '00000000-0000-4000-8000-00000000c001';
  const M2 = '00000000-0000-4000-8000-00000000c002';
  const measurerReport = async (measurementId: string, relayId: string) => {
    const r = await signReport(
      { measurementId, relayId, role: 'measurer' as const, echoed: [1000, 2000, 3000, 4000], checks: 40, failures: 0, error: null },
      (d) => sign(null, d, identity.privateKey),
    );
    return { ...r } as Record<string, unknown>;
  };
  let measurementBody: Record<string, unknown> = {};
  let receiptsBody: Record<string, unknown> = {};
  let conflictingReceipts: Record<string, unknown> = {};

  const post = async (fn: string, body: unknown, token: string) => {
    const res = await fetch(`${cp.url}/functions/v1/${fn}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  /** Every table of the relaynet schema, every row as JSON, sorted: the whole state. */
  async function snapshot(): Promise<Record<string, string[]>> {
    const tables = await sql<
      { t: string }[]
    >`select table_name as t from information_schema.tables where table_schema = 'relaynet' and table_type = 'BASE TABLE' order by 1`;
    const out: Record<string, string[]> = {};
    for (const { t } of tables) {
      const rows = await sql.unsafe(`select to_jsonb(x)::text as j from relaynet.${t} x`);
      out[t] = rows.map((r) => r.j as string).sort();
    }
    return out;
  }

  beforeAll(async () => {
    tmp = tempDir('fuzz-functions');
    pg = await startTestPostgres();
    cp = await startLocalControlPlane({ stateDir: join(tmp.dir, 'state'), port: 0, dbUrl: pg.url, heartbeatSeconds: 5, logger: log });
    sql = postgres(cp.dbUrl, { max: 2, prepare: false, onnotice: () => {} });
    // Relays stay live without heartbeats; sessions last a day.
    await sql`update relaynet.settings set relay_liveness_seconds = 3600, relay_expire_seconds = 86400`;
    for (const n of [1, 2, 3, 4, 9]) tokens[`relay-${n}`] = await cp.mintRelayToken(`relay-${n}`, 3600);
    tokens.alice = await cp.mintUserToken('user-alice', 3600);
    tokens.bob = await cp.mintUserToken('user-bob', 3600);
    // An operator (app_metadata.relaynet_role "operator"): it may enroll community relays.
    tokens.olga = await mintUserToken('user-olga', 3600, cp.jwtSecret, undefined, { operator: true });
    tokens.service = cp.serviceRoleKey;
    for (const n of [1, 2, 3, 4]) {
      const r = await post(
        'register-server',
        {
          relayId: `relay-${n}`,
          name: `Relay ${n}`,
          region: 'eu',
          publicKey: relayKey(n),
          endpoint: `198.51.100.${n}:51820`,
          ...(n === 1 ? { identityKey } : {}),
        },
        tokens.service!,
      );
      expect(r.status, JSON.stringify(r.body)).toBe(200);
    }
    // relay-4 leaves: a relay id that is known but not active.
    expect((await post('deregister', { relayId: 'relay-4' }, tokens.service!)).status).toBe(200);
    // Two sessions of alice entering at relay-1: A open, B closed. The test plays the entry (client-ready).
    const open = async (k: number) => {
      const pending = post('connect-client', { publicKey: clientKey(k), exit: 'relay-2', entry: 'relay-1', ttlSeconds: 86_400 }, tokens.alice!);
      for (let i = 0; i < 200; i++) {
        const [s] = await sql`select id::text as id from relaynet.client_sessions where public_key = ${clientKey(k)} and status = 'open'`;
        if (s) {
          const ok = await post('client-ready', { relayId: 'relay-1', sessionId: s.id, exitId: 'relay-2' }, tokens['relay-1']!);
          expect(ok.status).toBe(200);
          break;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      const r = await pending;
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      return (r.body.session as { id: string }).id;
    };
    sessionA = await open(1);
    sessionB = await open(2);
    expect((await post('disconnect-client', { sessionId: sessionB }, tokens.alice!)).status).toBe(200);
    // relay-1's receipts of the epoch before the last are in; the last epoch's are not (the valid request).
    expect((await post('submit-receipts', await receiptsOf(closedEpoch - 1, 1000), tokens['relay-1']!)).status).toBe(200);
    conflictingReceipts = await receiptsOf(closedEpoch - 1, 5000);
    await sql`insert into relaynet.pob_measurements (id, target_id, measurer_ids, starts_at, seconds, streams, r)
              values (${M1}, 'relay-3', ${['relay-1', 'relay-2']}, clock_timestamp() - interval '20 seconds', 4, 2, 0.1),
                     (${M2}, 'relay-2', ${['relay-1']}, clock_timestamp() + interval '1 day', 4, 2, 0.1)`;
    measurementBody = await measurerReport(M1, 'relay-1');
    receiptsBody = await receiptsOf(closedEpoch, 1000);
  });

  afterAll(async () => {
    await sql?.end({ timeout: 2 }).catch(() => {});
    await cp?.stop();
    await pg?.stop();
    tmp?.remove();
  });

  /** Headers that authenticate nobody, each with its label. Built once (signing is async). */
  async function badAuthorizations(): Promise<{ label: string; header: string | null }[]> {
    const secret = cp.jwtSecret;
    const now = Math.floor(Date.now() / 1000);
    const service = await signJwt({ role: 'service_role' }, secret);
    const [h, p, s] = service.split('.') as [string, string, string];
    const raw = (header: object, claims: unknown, sig = '') => `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}.${sig}`;
    const hs = (alg: 'HS384' | 'HS512', claims: object) =>
      new CompactSign(enc.encode(JSON.stringify(claims))).setProtectedHeader({ alg, typ: 'JWT' }).sign(enc.encode(secret));
    const exp = now + 3600;
    const list: [string, string | null][] = [
      ['missing', null],
      ['empty', ''],
      ['basic', `Basic ${Buffer.from('postgres:postgres').toString('base64')}`],
      ['bearer-only', 'Bearer'],
      ['bearer-blank', 'Bearer    '],
      ['two-tokens', `Bearer ${service} ${service}`],
      ['no-scheme', service],
      ['two-parts', `Bearer ${h}.${p}`],
      ['four-parts', `Bearer ${service}.${s}`],
      ['tampered-signature', `Bearer ${h}.${p}.${s.slice(0, -2)}${s.endsWith('AA') ? 'AB' : 'AA'}`],
      ['tampered-claims', `Bearer ${h}.${b64url(JSON.stringify({ role: 'service_role', x: 1 }))}.${s}`],
      ['other-secret', `Bearer ${await signJwt({ role: 'service_role' }, 'not-the-project-secret-not-the-project-secret')}`],
      ['alg-none', `Bearer ${raw({ alg: 'none', typ: 'JWT' }, { role: 'service_role' })}`],
      ['alg-none-sig', `Bearer ${raw({ alg: 'none', typ: 'JWT' }, { role: 'service_role' }, s)}`],
      ['alg-RS256', `Bearer ${raw({ alg: 'RS256', typ: 'JWT' }, { role: 'service_role' }, s)}`],
      ['alg-HS512', `Bearer ${await hs('HS512', { role: 'service_role' })}`],
      ['alg-HS384', `Bearer ${await hs('HS384', { role: 'service_role' })}`],
      ['header-not-json', `Bearer ${b64url('{alg')}.${p}.${s}`],
      ['expired', `Bearer ${await signJwt({ role: 'service_role', exp: now - 10 }, secret)}`],
      ['exp-string', `Bearer ${await signJwt({ role: 'service_role', exp: 'tomorrow' }, secret)}`],
      ['not-yet-valid', `Bearer ${await signJwt({ role: 'service_role', nbf: now + 3600 }, secret)}`],
      ['claims-array', `Bearer ${await signJwt([] as unknown as Record<string, unknown>, secret).catch(() => 'x.y.z')}`],
      ['role-anon', `Bearer ${await signJwt({ role: 'anon', exp }, secret)}`],
      ['role-admin', `Bearer ${await signJwt({ role: 'supabase_admin', exp }, secret)}`],
      ['role-missing', `Bearer ${await signJwt({ sub: 'x', exp }, secret)}`],
      ['role-number', `Bearer ${await signJwt({ role: 1, exp }, secret)}`],
      ['role-padded', `Bearer ${await signJwt({ role: 'service_role ', exp }, secret)}`],
      ['relay-no-exp', `Bearer ${await signJwt({ role: 'relay', relay_id: 'relay-1', iss: TOKEN_ISSUER }, secret)}`],
      ['relay-wrong-iss', `Bearer ${await signJwt({ role: 'relay', relay_id: 'relay-1', iss: 'someone-else', exp }, secret)}`],
      ['relay-bad-id', `Bearer ${await signJwt({ role: 'relay', relay_id: 'Relay_1', iss: TOKEN_ISSUER, exp }, secret)}`],
      ['relay-no-id', `Bearer ${await signJwt({ role: 'relay', iss: TOKEN_ISSUER, exp }, secret)}`],
      ['relay-expired', `Bearer ${await signJwt({ role: 'relay', relay_id: 'relay-1', iss: TOKEN_ISSUER, exp: now - 1 }, secret)}`],
      ['user-wrong-aud', `Bearer ${await signJwt({ role: 'authenticated', aud: 'other', sub: 'user-alice', iss: TOKEN_ISSUER, exp }, secret)}`],
      ['user-wrong-iss', `Bearer ${await signJwt({ role: 'authenticated', aud: 'authenticated', sub: 'user-alice', iss: 'evil', exp }, secret)}`],
      ['user-no-sub', `Bearer ${await signJwt({ role: 'authenticated', aud: 'authenticated', iss: TOKEN_ISSUER, exp }, secret)}`],
      ['user-control-sub', `Bearer ${await signJwt({ role: 'authenticated', aud: 'authenticated', sub: 'user-alice\n', iss: TOKEN_ISSUER, exp }, secret)}`],
      ['user-no-exp', `Bearer ${await signJwt({ role: 'authenticated', aud: 'authenticated', sub: 'user-alice', iss: TOKEN_ISSUER }, secret)}`],
      [
        'user-app-metadata-string',
        `Bearer ${await signJwt({ role: 'authenticated', aud: 'authenticated', sub: 'user-olga', iss: TOKEN_ISSUER, exp, app_metadata: 'operator' }, secret)}`,
      ],
      [
        'user-anon-flag',
        `Bearer ${await signJwt({ role: 'authenticated', aud: 'authenticated', sub: 'user-alice', iss: TOKEN_ISSUER, exp, is_anonymous: 'no' }, secret)}`,
      ],
    ];
    return list.map(([label, header]) => ({ label, header }));
  }

  it(
    `answers ${PER_FUNCTION} malformed requests per function with a 4xx and a JSON error, and changes nothing`,
    async () => {
      const bad = await badAuthorizations();
      const bearer = (t: string) => `Bearer ${t}`;
      const uuid = fc.uuid().filter((u) => u !== sessionA && u !== sessionB);
      const ghost = fc.stringMatching(/^ghost-[a-z0-9]{1,12}$/);

      // The valid request each defect spoils: what it would do if it were accepted (so a defect that
      // slipped through would change the state), the tokens that may send it, its optional fields.
      const base: Record<Fn, { body: Record<string, unknown>; good: string[]; optional?: string[] }> = {
        'register-server': {
          body: { relayId: 'relay-9', name: 'Relay 9', region: 'eu', publicKey: relayKey(9), endpoint: '198.51.100.9:51820' },
          good: ['service', 'relay-9'],
        },
        heartbeat: { body: { relayId: 'relay-1' }, good: ['service', 'relay-1'] },
        deregister: { body: { relayId: 'relay-2' }, good: ['service', 'relay-2'] },
        'client-ready': { body: { relayId: 'relay-1', sessionId: sessionA, exitId: 'relay-2' }, good: ['service', 'relay-1'] },
        'connect-client': {
          body: { publicKey: clientKey(50), exit: 'relay-3', entry: 'relay-1' },
          good: ['service', 'alice'],
          optional: ['entry', 'ttlSeconds'],
        },
        'switch-exit': { body: { sessionId: sessionA, exit: 'relay-3' }, good: ['service', 'alice'] },
        'disconnect-client': { body: { sessionId: sessionA, reason: 'disconnected' }, good: ['service', 'alice'], optional: ['reason'] },
        'list-clients': { body: { entry: 'relay-1', includeClosed: true }, good: ['service', 'alice', 'relay-1'], optional: ['entry', 'includeClosed'] },
        'ban-relay': { body: { relayId: 'relay-3', banned: true, reason: 'fuzz' }, good: ['service'], optional: ['reason'] },
        'revoke-token': { body: { jti: '00000000-0000-4000-8000-00000000f022', reason: 'fuzz' }, good: ['service'], optional: ['reason'] },
        'submit-receipts': { body: receiptsBody, good: ['service', 'relay-1'] },
        'pob-report': { body: { epoch: closedEpoch - 1, relayId: 'relay-1' }, good: ['service', 'relay-1'], optional: ['epoch', 'relayId'] },
        'settle-epoch': { body: { epoch: closedEpoch - 1 }, good: ['service'] },
        'schedule-measurement': {
          body: { relayId: 'relay-1', measurerIds: ['relay-3'], seconds: 10, streams: 2, r: 0.1, startsInSeconds: 5 },
          good: ['service'],
          optional: ['measurerIds', 'seconds', 'streams', 'r', 'startsInSeconds'],
        },
        'submit-measurement': { body: measurementBody, good: ['service', 'relay-1'], optional: ['error'] },
        'pob-status': { body: { relayId: 'relay-1' }, good: ['service'], optional: ['relayId'] },
        'enroll-relay': { body: { relayId: 'relay-c9', ttlSeconds: 3600 }, good: ['olga'], optional: ['ttlSeconds'] },
        'set-relay-state': { body: { relayId: 'relay-3', state: 'suspended', reason: 'fuzz' }, good: ['service'], optional: ['reason'] },
      };
      const schemaKeys = new Set([
        'relayId',
        'name',
        'region',
        'publicKey',
        'endpoint',
        'rotateKey',
        'exitIpv6',
        'sessionId',
        'exitId',
        'exit',
        'exitRegion',
        'entry',
        'ttlSeconds',
        'reason',
        'includeClosed',
        'busKey',
        'renewBus',
        'banned',
        'forgetIdentity',
        'identityKey',
        'proof',
        'jti',
        'epoch',
        'epochSeconds',
        'root',
        'signature',
        'receipts',
        'peerId',
        'txBytes',
        'rxBytes',
        'measurerIds',
        'measurers',
        'seconds',
        'streams',
        'r',
        'startsInSeconds',
        'measurementId',
        'role',
        'echoed',
        'checks',
        'failures',
        'error',
        'background',
        'mode',
        'community',
        'state',
      ]);

      // Tokens of the wrong party for a function (403), with the body they are refused for.
      const wrongParty: Record<Fn, { token: string; body?: Record<string, unknown> }[]> = {
        'register-server': [{ token: 'alice' }, { token: 'relay-2' }],
        heartbeat: [{ token: 'alice' }, { token: 'relay-2' }],
        deregister: [{ token: 'alice' }, { token: 'relay-1' }],
        'client-ready': [{ token: 'alice' }, { token: 'relay-2' }, { token: 'relay-2', body: { relayId: 'relay-2', sessionId: sessionA, exitId: 'relay-2' } }],
        'connect-client': [{ token: 'relay-1' }],
        'switch-exit': [{ token: 'relay-1' }],
        'disconnect-client': [{ token: 'alice', body: { sessionId: sessionA, reason: 'removed' } }, { token: 'relay-2' }, { token: 'bob' }],
        'list-clients': [{ token: 'relay-1', body: { entry: 'relay-2' } }],
        'ban-relay': [{ token: 'alice' }, { token: 'relay-3' }],
        'revoke-token': [{ token: 'alice' }, { token: 'relay-3' }],
        'submit-receipts': [{ token: 'alice' }, { token: 'relay-2' }],
        'pob-report': [{ token: 'alice' }, { token: 'relay-2' }],
        'settle-epoch': [{ token: 'alice' }, { token: 'relay-1' }],
        'schedule-measurement': [{ token: 'alice' }, { token: 'relay-1' }],
        'submit-measurement': [{ token: 'alice' }, { token: 'relay-2' }],
        'pob-status': [{ token: 'alice' }, { token: 'relay-1' }, { token: 'olga' }],
        // A user who is not an operator, a relay, the service role; the operator, for a relay id taken already.
        'enroll-relay': [{ token: 'alice' }, { token: 'relay-1' }, { token: 'service' }, { token: 'olga', body: { relayId: 'relay-1' } }],
        'set-relay-state': [{ token: 'alice' }, { token: 'olga' }, { token: 'relay-3' }],
      };

      // Well-formed requests the state refuses (the service role: no rate limit is charged).
      const refusedByState: Record<Fn, fc.Arbitrary<Record<string, unknown>>[]> = {
        'register-server': [
          fc.constant({ ...base['register-server'].body, publicKey: relayKey(2) }), // relay-2's key
          fc.constant({ relayId: 'relay-1', name: 'Relay 1', region: 'eu', publicKey: relayKey(77), endpoint: '198.51.100.1:51820' }), // a new key without rotateKey
        ],
        heartbeat: [ghost.map((relayId) => ({ relayId })), fc.constant({ relayId: 'relay-4' })],
        deregister: [ghost.map((relayId) => ({ relayId })), fc.constant({ relayId: 'relay-4' })],
        'client-ready': [
          uuid.map((sessionId) => ({ relayId: 'relay-1', sessionId, exitId: 'relay-2' })),
          fc.constant({ relayId: 'relay-1', sessionId: sessionB, exitId: 'relay-2' }),
          fc.constant({ relayId: 'relay-2', sessionId: sessionA, exitId: 'relay-2' }),
        ],
        'connect-client': [
          fc.constant({ publicKey: clientKey(1), exit: 'relay-3' }), // session A's key
          fc.constant({ publicKey: relayKey(1), exit: 'relay-3' }), // relay-1's key
          ghost.map((exit) => ({ publicKey: clientKey(50), exit })),
          ghost.map((entry) => ({ publicKey: clientKey(50), exit: 'relay-3', entry })),
          fc.constant({ publicKey: clientKey(50), exit: 'relay-4' }), // left
          fc.constant({ publicKey: clientKey(50), exitRegion: 'nowhere' }),
        ],
        'switch-exit': [
          uuid.map((sessionId) => ({ sessionId, exit: 'relay-3' })),
          fc.constant({ sessionId: sessionB, exit: 'relay-3' }),
          ghost.map((exit) => ({ sessionId: sessionA, exit })),
          fc.constant({ sessionId: sessionA, exit: 'relay-4' }),
        ],
        'disconnect-client': [
          uuid.map((sessionId) => ({ sessionId })),
          fc.constant({ sessionId: sessionB }),
          fc.constant({ publicKey: clientKey(60) }),
          fc.constant({ publicKey: clientKey(2) }), // B's key: its latest session is closed
        ],
        'list-clients': [],
        // Every well-formed ban or unban is carried out (a ban of an unknown relay id is kept for it).
        'ban-relay': [],
        // Every well-formed revocation is carried out (a jti no token carries yet is kept for it).
        'revoke-token': [],
        'submit-receipts': [
          fc.constant(conflictingReceipts), // another root for an epoch handed in
          fc.constant({ ...receiptsBody, relayId: 'relay-2' }), // a relay with no identity key
          fc.constant({ ...receiptsBody, relayId: 'relay-9' }), // not registered
        ],
        // Read-only: every well-formed request is answered.
        'pob-report': [],
        // An epoch not over yet.
        'settle-epoch': [fc.constant({ epoch: closedEpoch + 3 })],
        'schedule-measurement': [
          fc.constant({ relayId: 'relay-2' }), // M2 is open
          fc.constant({ relayId: 'relay-4' }), // left
          ghost.map((relayId) => ({ relayId })),
          fc.constant({ relayId: 'relay-1', measurerIds: ['relay-4'] }), // a measurer that left
          ghost.map((id) => ({ relayId: 'relay-1', measurerIds: [id] })),
          fc.constant({ relayId: 'relay-1', measurerIds: ['relay-1'] }), // itself
        ],
        'submit-measurement': [
          fc.constant({ ...measurementBody, measurementId: M2 }), // not over yet
          uuid.filter((u) => u !== M1 && u !== M2).map((measurementId) => ({ ...measurementBody, measurementId })), // unknown
          fc.constant({ ...measurementBody, relayId: 'relay-3' }), // the target, not a measurer
          fc.constant({ ...measurementBody, relayId: 'relay-2' }), // a measurer with no identity key
          fc.constant({ ...measurementBody, echoed: [1000, 2000, 3000, 4001] }), // not what was signed
          fc.constant({ ...measurementBody, echoed: [1000, 2000, 3000] }), // not one per second
        ],
        'pob-status': [uuid.filter((u) => u !== M1 && u !== M2).map((measurementId) => ({ measurementId }))],
        // The service role may not enroll (wrongParty has the operator's refusals).
        'enroll-relay': [],
        'set-relay-state': [ghost.map((relayId) => ({ relayId, state: 'suspended' })), ghost.map((relayId) => ({ relayId, state: 'active' }))],
      };

      const method = fc.constantFrom('PUT', 'PATCH', 'DELETE', 'GET');
      const printable = fc.stringMatching(/^[!-~]{1,300}$/);

      function requestsOf(fn: Fn): fc.Arbitrary<Req> {
        const b = base[fn];
        const good = fc.constantFrom(...b.good).map((k) => bearer(tokens[k]!));
        const mutation = mutationOf(b.body, { optional: b.optional ?? [] }).filter((m) => m.mustReject);
        const arbs: { weight: number; arbitrary: fc.Arbitrary<Req> }[] = [
          // Authorization that authenticates nobody, on the valid body.
          {
            weight: 4,
            arbitrary: fc.constantFrom(...bad).map((a) => ({ fn, defect: `auth:${a.label}`, method: 'POST', authorization: a.header, body: jsonBody(b.body) })),
          },
          {
            weight: 1,
            arbitrary: printable.map((t) => ({ fn, defect: 'auth:garbage', method: 'POST', authorization: `Bearer ${t}`, body: jsonBody(b.body) })),
          },
          // A body that is not one: not JSON, not UTF-8, truncated, not an object, too big.
          {
            weight: 3,
            arbitrary: fc
              .oneof(
                fc
                  .constantFrom('', '{', '}', 'null', '[]', '"x"', '1', 'true', '\ufeff\ufeff{}', '{"relayId":"relay-1",}', "{'relayId':'relay-1'}", 'NaN')
                  .map((s) => ({ d: 'body:not-an-object', v: enc.encode(s) })),
                fc.uint8Array({ minLength: 1, maxLength: 512 }).map((v) => ({ d: 'body:random-bytes', v: new Uint8Array([0xff, ...v]) })),
                fc
                  .integer({ min: 1, max: 200 })
                  .map((n) => ({ d: 'body:truncated', v: jsonBody(b.body).slice(0, Math.min(n, jsonBody(b.body).byteLength - 1)) })),
                fc
                  .jsonValue({ maxDepth: 2 })
                  .filter((v) => typeof v !== 'object' || v === null || Array.isArray(v))
                  .map((v) => ({ d: 'body:json-not-object', v: jsonBody(v) })),
                fc.integer({ min: 1, max: 200_000 }).map((n) => ({ d: 'body:oversized', v: jsonBody({ ...b.body, padding: 'x'.repeat(16 * 1024 + n) }) })),
                fc.constantFrom([0xc0, 0x80], [0xed, 0xa0, 0x80], [0xe2, 0x82]).map((bytes) => {
                  const j = jsonBody(b.body);
                  return { d: 'body:invalid-utf8', v: new Uint8Array([...j.slice(0, 2), ...bytes, ...j.slice(2)]) };
                }),
              )
              .chain(({ d, v }) => good.map((authorization) => ({ fn, defect: d, method: 'POST', authorization, body: v }))),
          },
          // Valid JSON objects with something wrong: a field mutated, removed, unknown fields.
          {
            weight: 8,
            arbitrary: fc
              .tuple(mutation, good)
              .map(([m, authorization]) => ({ fn, defect: `field:${m.what}`, method: 'POST', authorization, body: jsonBody(m.value) })),
          },
          {
            weight: 1,
            arbitrary: fc
              .tuple(
                fc.dictionary(
                  fc.string({ minLength: 1, maxLength: 10 }).filter((k) => !schemaKeys.has(k) && k !== '__proto__'),
                  fc.jsonValue({ maxDepth: 1 }),
                  { minKeys: 1, maxKeys: 4 },
                ),
                good,
              )
              .map(([extra, authorization]) => ({ fn, defect: 'field:unknown', method: 'POST', authorization, body: jsonBody({ ...b.body, ...extra }) })),
          },
          {
            weight: 1,
            arbitrary: fc.tuple(alwaysInvalid, good).map(([v, authorization]) => ({
              fn,
              defect: 'body:invalid-value',
              method: 'POST',
              authorization,
              body: jsonBody({ ...b.body, [Object.keys(b.body)[0]!]: v }),
            })),
          },
          // Another method.
          {
            weight: 1,
            arbitrary: fc
              .tuple(method, good)
              .map(([m, authorization]) => ({ fn, defect: `method:${m}`, method: m, authorization, body: m === 'GET' ? null : jsonBody(b.body) })),
          },
          // A token of the wrong party.
          {
            weight: 2,
            arbitrary: fc
              .constantFrom(...wrongParty[fn])
              .map((w) => ({ fn, defect: `party:${w.token}`, method: 'POST', authorization: bearer(tokens[w.token]!), body: jsonBody(w.body ?? b.body) })),
          },
        ];
        if (refusedByState[fn].length) {
          arbs.push({
            weight: 3,
            arbitrary: fc
              .oneof(...refusedByState[fn])
              .map((body) => ({ fn, defect: 'state', method: 'POST', authorization: bearer(tokens.service!), body: jsonBody(body) })),
          });
        }
        return fc.oneof(...arbs);
      }

      // Every function the control plane serves is fuzzed: a new one must be added here.
      expect([...FUNCTIONS].sort()).toEqual(functionNames());
      const ports = Object.fromEntries(FUNCTIONS.map((fn) => [fn, cp.functionUrl(fn)]));
      for (const fn of FUNCTIONS) expect(ports[fn], fn).toMatch(/^http:\/\/127\.0\.0\.1:\d+/);
      const before = await snapshot();
      expect(before.relays).toHaveLength(4);
      expect(before.client_sessions).toHaveLength(2);

      const byFunction: Record<string, Tally> = {};
      const byDefect = new Tally();
      const failures: string[] = [];
      const started = Date.now();
      const timings: Record<string, number> = {};
      for (const fn of FUNCTIONS) {
        const t0 = Date.now();
        const reqs = fc.sample(requestsOf(fn), { seed: FUZZ_SEED + FUNCTIONS.indexOf(fn), numRuns: PER_FUNCTION });
        const tally = new Tally();
        byFunction[fn] = tally;
        let next = 0;
        const worker = async () => {
          while (next < reqs.length) {
            const r = reqs[next++]!;
            const headers: Record<string, string> = { 'content-type': 'application/json' };
            if (r.authorization !== null) headers.authorization = r.authorization;
            let status = 0;
            let error = '';
            try {
              const res = await fetch(`${ports[fn]}/${fn}`, { method: r.method, headers, ...(r.body ? { body: r.body } : {}) });
              status = res.status;
              const text = await res.text();
              const j = JSON.parse(text) as { error?: unknown; message?: unknown };
              if (typeof j.error !== 'string' || typeof j.message !== 'string') throw new Error(`no JSON error in ${text.slice(0, 200)}`);
              error = j.error;
              if (!(status >= 400 && status < 500)) throw new Error(`status ${status}: ${text.slice(0, 300)}`);
            } catch (e) {
              failures.push(
                `${fn} ${r.defect} ${r.method} -> ${status} ${String((e as Error).message).slice(0, 300)} (body ${Buffer.from(r.body ?? [])
                  .toString('utf8')
                  .slice(0, 200)})`,
              );
            }
            tally.add(`${status} ${error}`);
            byDefect.add(
              r.defect
                .replace(/^field:.*/, 'field')
                .replace(/^auth:.*/, 'auth')
                .replace(/^party:.*/, 'party')
                .replace(/^method:.*/, 'method'),
            );
          }
        };
        await Promise.all(Array.from({ length: CONCURRENCY }, worker));
        timings[fn] = Date.now() - t0;
      }
      const after = await snapshot();
      console.log(
        `FUZZ-FUNCTIONS ${JSON.stringify({
          seed: FUZZ_SEED,
          perFunction: PER_FUNCTION,
          concurrency: CONCURRENCY,
          requests: Object.values(byFunction).reduce((a, t) => a + t.total, 0),
          failures: failures.length,
          ms: Date.now() - started,
          msByFunction: timings,
          byDefect: byDefect.sorted(),
          byFunction: Object.fromEntries(Object.entries(byFunction).map(([fn, t]) => [fn, t.sorted()])),
        })}`,
      );
      expect(failures.slice(0, 20)).toEqual([]);
      for (const fn of FUNCTIONS) expect(byFunction[fn]!.total, fn).toBe(PER_FUNCTION);
      // No state change: every table, every row.
      expect(after).toEqual(before);
      // No function crashed and was restarted (a restart moves it to another port), and each still works.
      for (const fn of FUNCTIONS) expect(cp.functionUrl(fn), fn).toBe(ports[fn]);
      const hb = await post('heartbeat', { relayId: 'relay-1' }, tokens['relay-1']!);
      expect(hb.status).toBe(200);
      const list = await post('list-clients', { includeClosed: true }, tokens.alice!);
      expect(list.status).toBe(200);
      expect((list.body.sessions as unknown[]).length).toBe(2);
    },
    TIMEOUT,
  );
});
