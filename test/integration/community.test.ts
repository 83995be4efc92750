import { generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintUserToken, verifyJwt } from '../../src/control-plane/jwt.ts';
import { startLocalControlPlane, type LocalControlPlane } from '../../src/control-plane/local.ts';
import { signReport, type UnsignedReport } from '../../src/contract/pob-measure.ts';
import { RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import { signedRegistration } from '../../src/daemon/control-plane-session.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts';
import { tempDir } from '../support/temp.ts';

/**
 * Community relays (issue 17; docs/proof-of-bandwidth.md, "Community relays") on real Deno behind the
 * local gateway, on embedded PGlite and on PostgreSQL 15: an operator (a user token with the operator
 * role, no service-role key) enrolls a relay and gets its relay token; the relay registers with it and
 * is in probation (in the topology, no client traffic); its measurement makes it active (or rejects
 * it); sessions take community relays only when they allow them, and a community entry only privately;
 * the network's operator suspends and resumes relays. Every change of standing is a RelayStateChanged.
 */
describe.each(['pglite', 'postgresql'] as const)('community relays on %s', (backend) => {
  const log = rootLogger({ test: `community-${backend}` }, process.env.RELAYNET_LOG_LEVEL ?? 'warn');
  let tmp: ReturnType<typeof tempDir>;
  let pg: TestPostgres | null = null;
  let cp: LocalControlPlane;
  let sql: postgres.Sql;
  const identities: Record<string, { privateKey: ReturnType<typeof generateKeyPairSync>['privateKey']; identityKey: string }> = {};
  const identity = (relayId: string) => {
    if (!identities[relayId]) {
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      identities[relayId] = { privateKey, identityKey: Buffer.from(publicKey.export({ format: 'der', type: 'spki' }).subarray(12)).toString('base64') };
    }
    return identities[relayId]!;
  };
  const tokens: Record<string, string> = {};
  let n = 0;

  async function call(fn: string, body: unknown, bearer: string) {
    const res = await fetch(`${cp.url}/functions/v1/${fn}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  }
  async function register(relayId: string, token: string) {
    n++;
    const reg = {
      relayId,
      name: relayId,
      region: relayId.startsWith('comm') ? 'community' : 'core',
      publicKey: Buffer.alloc(32, n).toString('base64'),
      endpoint: `198.51.100.${n}:51820`,
      identityKey: identity(relayId).identityKey,
    };
    return call('register-server', await signedRegistration(reg, identity(relayId).privateKey, Math.floor(Date.now() / 1000)), token);
  }
  const stateChanges = async () =>
    (await sql`select payload from relaynet.topology_events where type = 'RelayStateChanged' order by revision`).map(
      (r) => JSON.parse(r.payload as string).data,
    );
  /** A measurement of `target` by the core relays, run (its start moved into the past) and reported by every party. */
  async function measure(target: string, echoedPerMeasurer: number, failures = 0) {
    const r = await call('schedule-measurement', { relayId: target, measurerIds: ['core-a', 'core-b'], seconds: 4, streams: 2, r: 0.1 }, cp.serviceRoleKey);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const id = r.body.measurement.id as string;
    await sql`update relaynet.pob_measurements set starts_at = clock_timestamp() - interval '5 seconds' where id = ${id}`;
    const report = async (u: UnsignedReport) => ({ ...(await signReport(u, (d) => sign(null, d, identity(u.relayId).privateKey))) });
    for (const m of ['core-a', 'core-b']) {
      const echoed = new Array(4).fill(echoedPerMeasurer);
      const s = await call(
        'submit-measurement',
        await report({ measurementId: id, relayId: m, role: 'measurer', echoed, checks: 40, failures, error: null }),
        tokens[m]!,
      );
      expect(s.status, JSON.stringify(s.body)).toBe(200);
    }
    const t = await call('submit-measurement', await report({ measurementId: id, relayId: target, role: 'target', background: [0, 0, 0, 0] }), tokens[target]!);
    expect(t.status, JSON.stringify(t.body)).toBe(200);
    return t.body.state as { state: string; lineRate: number | null };
  }
  /** Open a session as alice and play its confirmations (the entry's, and a private session's exit's). */
  async function connect(body: Record<string, unknown>) {
    const publicKey = Buffer.alloc(32, 200 + ++n).toString('base64');
    const pending = call('connect-client', { publicKey, ...body }, tokens.alice!);
    for (let i = 0; i < 200; i++) {
      const [s] = await sql`select id::text as id, entry_id, exit_id, mode from relaynet.client_sessions where public_key = ${publicKey} and status = 'open'`;
      if (s) {
        expect((await call('client-ready', { relayId: s.entry_id, sessionId: s.id, exitId: s.exit_id }, tokens[s.entry_id]!)).status).toBe(200);
        if (s.mode === 'private')
          expect((await call('client-ready', { relayId: s.exit_id, sessionId: s.id, exitId: s.exit_id }, tokens[s.exit_id]!)).status).toBe(200);
        break;
      }
      // Refused before anything was recorded.
      const done = await Promise.race([pending.then(() => true), new Promise((r) => setTimeout(() => r(false), 50))]);
      if (done) break;
    }
    return pending;
  }
  const cli = (args: string[], token: string) =>
    execa(RELAY_CORE_BIN, [...args, '--control-plane-url', cp.url, '--token', token], { reject: false, timeout: 60_000 });

  beforeAll(async () => {
    tmp = tempDir(`community-${backend}`);
    if (backend === 'postgresql') pg = await startTestPostgres();
    cp = await startLocalControlPlane({ stateDir: join(tmp.dir, 'state'), port: 0, dbUrl: pg?.url, natsToken: 'nats-secret', logger: log });
    sql = postgres(cp.dbUrl, { max: 1, prepare: false, onnotice: () => {} });
    // alice opens more sessions a minute than a user may by default.
    await sql`update relaynet.settings set connect_rate_limit = 100, max_sessions_per_user = 100`;
    for (const relayId of ['core-a', 'core-b']) {
      tokens[relayId] = await cp.mintRelayToken(relayId, 3600);
      const r = await register(relayId, tokens[relayId]!);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
    }
    tokens.alice = await cp.mintUserToken('user-alice', 3600);
    tokens.olga = await mintUserToken('user-olga', 3600, cp.jwtSecret, undefined, { operator: true });
    tokens.mallory = await mintUserToken('user-mallory', 3600, cp.jwtSecret, undefined, { operator: true });
  }, 120_000);

  afterAll(async () => {
    await sql?.end({ timeout: 2 }).catch(() => {});
    await cp?.stop();
    await pg?.stop();
    tmp?.remove();
  });

  it('lets an operator enroll a relay with its own user token: a relay token for it, the relay in probation, RelayStateChanged', async () => {
    // Neither a user without the operator role, nor the service role, nor a relay enrolls.
    for (const [who, status, error] of [
      ['alice', 403, 'not_operator'],
      ['core-a', 403, 'forbidden'],
    ] as const)
      expect(await call('enroll-relay', { relayId: 'comm-1' }, tokens[who]!)).toMatchObject({ status, body: { error } });
    expect((await call('enroll-relay', { relayId: 'comm-1' }, cp.serviceRoleKey)).status).toBe(403);
    // A core relay's id is taken.
    expect((await call('enroll-relay', { relayId: 'core-a' }, tokens.olga!)).body).toMatchObject({ error: 'relay_exists' });
    const r = await call('enroll-relay', { relayId: 'comm-1', ttlSeconds: 3600 }, tokens.olga!);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ standing: { relayId: 'comm-1', class: 'community', state: 'probation', operatorId: 'user-olga' }, reissued: false });
    const claims = await verifyJwt(r.body.token, cp.jwtSecret);
    expect(claims).toMatchObject({ ok: true, claims: { role: 'relay', relay_id: 'comm-1', jti: r.body.jti, iss: 'relay-core' } });
    tokens['comm-1'] = r.body.token;
    expect((await stateChanges()).at(-1)).toEqual(expect.objectContaining({ relayId: 'comm-1', class: 'community', state: 'probation', previousState: null }));
    // Another operator cannot take it; its own operator gets a new token, the state as it was.
    expect((await call('enroll-relay', { relayId: 'comm-1' }, tokens.mallory!)).body).toMatchObject({ error: 'relay_exists' });
    const again = await call('enroll-relay', { relayId: 'comm-1' }, tokens.olga!);
    expect(again.body).toMatchObject({ reissued: true, standing: { state: 'probation' } });
    expect(again.body.jti).not.toBe(r.body.jti);
    // The relay registers with its token: in the topology, in probation.
    const reg = await register('comm-1', tokens['comm-1']!);
    expect(reg.status, JSON.stringify(reg.body)).toBe(200);
    // The operator sees its relay (and only its relays); the service role sees it among the core ones.
    const mine = await call('pob-status', {}, tokens.olga!);
    expect(mine.body.relays).toEqual([expect.objectContaining({ relayId: 'comm-1', class: 'community', state: 'probation', registered: true })]);
    expect((await call('pob-status', { relayId: 'core-a' }, tokens.olga!)).status).toBe(404);
    expect((await call('pob-status', {}, tokens.alice!)).body.error).toBe('not_operator');
    const all = await call('pob-status', {}, cp.serviceRoleKey);
    expect(all.body.relays.map((x: { relayId: string; class: string; state: string }) => [x.relayId, x.class, x.state])).toEqual([
      ['comm-1', 'community', 'probation'],
      ['core-a', 'core', 'active'],
      ['core-b', 'core', 'active'],
    ]);
  });

  it('keeps a relay in probation out of client traffic and out of the measurers; its measurement makes it active', async () => {
    expect((await connect({ exit: 'comm-1', community: true })).body).toMatchObject({ error: 'relay_not_active', field: 'exit' });
    expect((await connect({ exit: 'core-b', entry: 'comm-1', community: true })).body).toMatchObject({ error: 'relay_not_active', field: 'entry' });
    // Measurers are trusted core relays.
    const bad = await call('schedule-measurement', { relayId: 'core-a', measurerIds: ['comm-1'] }, cp.serviceRoleKey);
    expect([bad.status, bad.body.field]).toEqual([400, 'measurerIds']);
    // 4 MB/s echoed in all: far above the 10 Mbit/s a community relay needs.
    const m = await measure('comm-1', 2_000_000);
    expect(m.state).toBe('measured');
    expect((await stateChanges()).at(-1)).toEqual(
      expect.objectContaining({ relayId: 'comm-1', state: 'active', previousState: 'probation', reason: expect.stringMatching(/^measured \d+\.\d Mbit\/s$/) }),
    );
    // The conclusion's events: RelayMeasured, then RelayStateChanged.
    const types = (await sql`select type from relaynet.topology_events order by revision desc limit 2`).map((r) => r.type);
    expect(types).toEqual(['RelayStateChanged', 'RelayMeasured']);
  });

  it('takes community relays only into sessions that allow them, and a community entry only privately', async () => {
    expect((await connect({ exit: 'comm-1' })).body).toMatchObject({ error: 'community_not_allowed', field: 'exit' });
    // A region of community relays only: refused without community, taken with it.
    expect((await connect({ exitRegion: 'community' })).body).toMatchObject({ error: 'community_not_allowed', field: 'exitRegion' });
    const viaExit = await connect({ exit: 'comm-1', entry: 'core-a', community: true });
    expect(viaExit.status, JSON.stringify(viaExit.body)).toBe(200);
    // A community exit: private unless asked otherwise.
    expect(viaExit.body.session).toMatchObject({ entryId: 'core-a', exitId: 'comm-1', mode: 'private' });
    const standard = await connect({ exit: 'comm-1', entry: 'core-b', community: true, mode: 'standard' });
    expect(standard.body.session).toMatchObject({ exitId: 'comm-1', mode: 'standard' });
    // A community entry: private only.
    expect((await connect({ exit: 'core-a', entry: 'comm-1', community: true, mode: 'standard' })).body).toMatchObject({
      error: 'private_required',
      field: 'mode',
    });
    const viaEntry = await connect({ exit: 'core-a', entry: 'comm-1', community: true });
    expect(viaEntry.body.session).toMatchObject({ entryId: 'comm-1', mode: 'private' });
    // switch-exit keeps to what the session allowed.
    const coreOnly = await connect({ exit: 'core-b', entry: 'core-a' });
    expect(coreOnly.body.session.mode).toBe('standard');
    const sw = await call('switch-exit', { sessionId: coreOnly.body.session.id, exit: 'comm-1' }, tokens.alice!);
    expect(sw.body).toMatchObject({ error: 'community_not_allowed' });
  });

  it('suspends a relay (its sessions closed, no new ones) and resumes it; the CLI does it with the service-role key', async () => {
    const open = (await sql`select count(*)::int as n from relaynet.client_sessions where status = 'open' and (entry_id = 'comm-1' or exit_id = 'comm-1')`)[0]!
      .n;
    expect(open).toBe(3);
    const r = await cli(['relay', 'suspend', '--relay', 'comm-1', '--reason', 'abuse report', '--json'], cp.serviceRoleKey);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({
      changed: true,
      previousState: 'active',
      sessionsClosed: 3,
      standing: { state: 'suspended', reason: 'abuse report' },
    });
    const reasons = await sql`select distinct close_reason from relaynet.client_sessions where entry_id = 'comm-1' or exit_id = 'comm-1'`;
    expect(reasons.map((x) => x.close_reason)).toEqual(['removed']);
    expect((await connect({ exit: 'comm-1', community: true })).body).toMatchObject({ error: 'relay_not_active' });
    expect((await stateChanges()).at(-1)).toMatchObject({ relayId: 'comm-1', state: 'suspended', previousState: 'active', reason: 'abuse report' });
    // An operator's token may not suspend; a suspended relay is not moved by a measurement.
    expect((await call('set-relay-state', { relayId: 'comm-1', state: 'active' }, tokens.olga!)).status).toBe(403);
    expect((await measure('comm-1', 2_000_000)).state).toBe('measured');
    expect((await stateChanges()).at(-1)).toMatchObject({ state: 'suspended' });
    // Resumed: measured enough, so active again.
    const back = await cli(['relay', 'resume', '--relay', 'comm-1'], cp.serviceRoleKey);
    expect(back.exitCode, back.stderr).toBe(0);
    expect(back.stdout).toBe('community relay comm-1: suspended -> active');
    expect((await cli(['relay', 'resume', '--relay', 'comm-1'], cp.serviceRoleKey)).stdout).toBe('community relay comm-1 is active already (nothing changed)');
    expect((await connect({ exit: 'comm-1', entry: 'core-a', community: true })).status).toBe(200);
  });

  it('rejects a relay whose measurement fails or falls short; `operator enroll` writes the token 0600', async () => {
    // The operator's CLI, with a user token minted by `token mint --operator`.
    const secretFile = join(tmp.dir, 'jwt-secret');
    writeFileSync(secretFile, cp.jwtSecret, { mode: 0o600 });
    const t = await execa(
      RELAY_CORE_BIN,
      ['token', 'mint', '--role', 'user', '--sub', 'user-olga', '--operator', '--ttl', '1h', '--jwt-secret-file', secretFile],
      {
        reject: false,
      },
    );
    expect(t.exitCode, t.stderr).toBe(0);
    expect(await verifyJwt(t.stdout.trim(), cp.jwtSecret)).toMatchObject({
      ok: true,
      claims: { sub: 'user-olga', app_metadata: { relaynet_role: 'operator' } },
    });
    const out = join(tmp.dir, 'comm-2.token');
    const e = await cli(['operator', 'enroll', '--relay-id', 'comm-2', '--ttl', '2h', '--token-out', out], t.stdout.trim());
    expect(e.exitCode, e.stderr).toBe(0);
    expect(e.stdout).toBe('');
    expect(e.stderr).toMatch(
      /^comm-2 enrolled: a community relay in probation; its relay token [0-9a-f-]{36} expires .* written to .*comm-2\.token \(0600\)\./,
    );
    expect(statSync(out).mode & 0o777).toBe(0o600);
    tokens['comm-2'] = readFileSync(out, 'utf8').trim();
    expect((await register('comm-2', tokens['comm-2']!)).status).toBe(200);
    // A measurement that finds 1 Mbit/s: short of the 10 a community relay needs.
    expect((await measure('comm-2', 60_000)).state).toBe('measured');
    expect((await stateChanges()).at(-1)).toMatchObject({ relayId: 'comm-2', state: 'rejected', reason: expect.stringMatching(/below the least/) });
    const st = await cli(['operator', 'status'], t.stdout.trim());
    expect(st.exitCode, st.stderr).toBe(0);
    expect(st.stdout).toMatch(/comm-1 +community +active/);
    expect(st.stdout).toMatch(/comm-2 +community +rejected/);
    // A rejected relay measured again and found enough becomes active; one whose echoes fail stays rejected.
    expect((await measure('comm-2', 2_000_000, 1)).state).toBe('rejected');
    expect((await stateChanges()).at(-1)).toMatchObject({ relayId: 'comm-2', state: 'rejected' });
    expect((await measure('comm-2', 2_000_000)).state).toBe('measured');
    expect((await stateChanges()).at(-1)).toMatchObject({ relayId: 'comm-2', state: 'active', previousState: 'rejected' });
    // The operator's limit: community_max_relays.
    await sql`update relaynet.settings set community_max_relays = 2`;
    expect((await call('enroll-relay', { relayId: 'comm-3' }, tokens.olga!)).body).toMatchObject({ error: 'operator_limit' });
  });
});
