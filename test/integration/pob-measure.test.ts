import { generateKeyPairSync, sign } from 'node:crypto';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lineRate } from '../../src/contract/pob-capacity.ts';
import { signReport, type UnsignedReport } from '../../src/contract/pob-measure.ts';
import { startLocalControlPlane, type LocalControlPlane } from '../../src/control-plane/local.ts';
import { signedRegistration } from '../../src/daemon/control-plane-session.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { startPobScheduler } from '../../src/control-plane/pob-scheduler.ts';
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts';
import { tempDir } from '../support/temp.ts';

/**
 * schedule-measurement, submit-measurement and pob-status on real Deno behind the local gateway, on
 * embedded PGlite and on PostgreSQL 15 (docs/proof-of-bandwidth.md, "Measuring"): a measurement is
 * scheduled (MeasurementScheduled appended), its parties hand in signed reports, and once all have the
 * control plane concludes it (capacity kept, RelayMeasured appended); forged, early, misshapen and
 * foreign reports are refused and change nothing; a measurement whose reports did not all come is
 * concluded by the heartbeat's sweep after its grace.
 */
describe.each(['pglite', 'postgresql'] as const)('Proof-of-Bandwidth measurements on %s', (backend) => {
  const log = rootLogger({ test: `pob-measure-${backend}` }, process.env.RELAYNET_LOG_LEVEL ?? 'warn');
  let tmp: ReturnType<typeof tempDir>;
  let pg: TestPostgres | null = null;
  let cp: LocalControlPlane;
  let sql: postgres.Sql;
  const RELAYS = ['relay-a', 'relay-b', 'relay-c'] as const;
  const ids = Object.fromEntries(
    RELAYS.map((r) => {
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      return [r, { privateKey, identityKey: Buffer.from(publicKey.export({ format: 'der', type: 'spki' }).subarray(12)).toString('base64') }];
    }),
  );
  const tokens: Record<string, string> = {};

  async function call(fn: string, body: unknown, bearer: string) {
    const res = await fetch(`${cp.url}/functions/v1/${fn}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  }
  /** A party's report as submit-measurement takes it, signed by `by` (the party's own identity unless given). */
  async function report(r: UnsignedReport, by = r.relayId) {
    return { ...(await signReport(r, (d) => sign(null, d, ids[by]!.privateKey))) };
  }
  const measurer = (
    measurementId: string,
    relayId: string,
    echoed: number[],
    extra: Partial<{ checks: number; failures: number; error: string | null }> = {},
  ) => ({ measurementId, relayId, role: 'measurer' as const, echoed, checks: 100, failures: 0, error: null, ...extra }) as UnsignedReport;
  const target = (measurementId: string, background: number[]) =>
    ({ measurementId, relayId: 'relay-c', role: 'target' as const, background }) as UnsignedReport;
  const topologyTypes = async () => (await sql`select type from relaynet.topology_events order by revision`).map((r) => r.type as string);
  /** Schedule a measurement of relay-c by relay-a and relay-b, and move its start into the past (as if it had run). */
  async function ranMeasurement(seconds = 4, startedSecondsAgo = seconds + 1): Promise<string> {
    const r = await call('schedule-measurement', { relayId: 'relay-c', measurerIds: ['relay-a', 'relay-b'], seconds, streams: 2, r: 0.1 }, cp.serviceRoleKey);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const id = r.body.measurement.id as string;
    await sql`update relaynet.pob_measurements set starts_at = clock_timestamp() - make_interval(secs => ${startedSecondsAgo}) where id = ${id}`;
    return id;
  }

  beforeAll(async () => {
    tmp = tempDir(`pob-measure-${backend}`);
    if (backend === 'postgresql') pg = await startTestPostgres();
    cp = await startLocalControlPlane({ stateDir: join(tmp.dir, 'state'), port: 0, dbUrl: pg?.url, natsToken: 'nats-secret', logger: log });
    sql = postgres(cp.dbUrl, { max: 1, prepare: false, onnotice: () => {} });
    for (const [n, relayId] of RELAYS.entries()) {
      tokens[relayId] = await cp.mintRelayToken(relayId, 3600);
      const reg = {
        relayId,
        name: relayId,
        region: 'test',
        publicKey: Buffer.alloc(32, n + 1).toString('base64'),
        endpoint: `198.51.100.${n + 1}:51820`,
        identityKey: ids[relayId]!.identityKey,
      };
      const r = await call('register-server', await signedRegistration(reg, ids[relayId]!.privateKey, Math.floor(Date.now() / 1000)), tokens[relayId]!);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
    }
  }, 120_000);

  afterAll(async () => {
    await sql?.end({ timeout: 2 }).catch(() => {});
    await cp?.stop();
    await pg?.stop();
    tmp?.remove();
  });

  it('schedules (MeasurementScheduled), takes every party’s signed report, concludes: capacity kept, RelayMeasured', async () => {
    const id = await ranMeasurement();
    expect((await topologyTypes()).at(-1)).toBe('MeasurementScheduled');
    const a = await call('submit-measurement', await report(measurer(id, 'relay-a', [100_000, 500_000, 600_000, 700_000])), tokens['relay-a']!);
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    expect(a.body).toMatchObject({ stored: true, state: { state: 'scheduled', reported: ['relay-a'] } });
    // The same report again: nothing more.
    expect(
      (await call('submit-measurement', await report(measurer(id, 'relay-a', [100_000, 500_000, 600_000, 700_000])), tokens['relay-a']!)).body.stored,
    ).toBe(false);
    await call('submit-measurement', await report(measurer(id, 'relay-b', [100_000, 500_000, 600_000, 700_000])), tokens['relay-b']!);
    // The target over-reports its other traffic: it counts only up to r/(1-r) of what was echoed.
    const c = await call('submit-measurement', await report(target(id, [1e9, 1e9, 1e9, 1e9])), tokens['relay-c']!);
    expect(c.status, JSON.stringify(c.body)).toBe(200);
    // Sums 200k, 1M, 1.2M, 1.4M: the median 1.1M, with the background 1.1M / 0.9.
    const capacity = Math.round(1_100_000 / 0.9);
    expect(c.body.state).toMatchObject({
      state: 'measured',
      capacity,
      lineRate: Math.round(lineRate(capacity, 1420)),
      reported: ['relay-a', 'relay-b', 'relay-c'],
    });
    const [kept] = await sql`select bytes_per_second from relaynet.pob_capacity where relay_id = 'relay-c'`;
    expect(Number(kept!.bytes_per_second)).toBe(Math.round(lineRate(capacity, 1420)));
    const [ev] = await sql`select payload from relaynet.topology_events where type = 'RelayMeasured' order by revision desc limit 1`;
    expect(JSON.parse(ev!.payload as string).data).toMatchObject({ measurementId: id, relayId: 'relay-c', outcome: 'measured', capacity });
    // pob-status shows it.
    const st = await call('pob-status', { relayId: 'relay-c' }, cp.serviceRoleKey);
    expect(st.body.relays[0]).toMatchObject({ relayId: 'relay-c', capacity: Math.round(lineRate(capacity, 1420)), lastMeasurement: { state: 'measured' } });
    // A late report after the conclusion: kept apart, nothing changes.
    expect((await call('submit-measurement', await report(target(id, [0, 0, 0, 0])), tokens['relay-c']!)).status).toBe(409);
  });

  it('rejects a target whose echoes failed the measurers’ checks, keeps the capacity it had', async () => {
    const id = await ranMeasurement();
    await call('submit-measurement', await report(measurer(id, 'relay-a', [1, 1, 1, 1], { failures: 3 })), tokens['relay-a']!);
    await call('submit-measurement', await report(measurer(id, 'relay-b', [1, 1, 1, 1])), tokens['relay-b']!);
    const c = await call('submit-measurement', await report(target(id, [0, 0, 0, 0])), tokens['relay-c']!);
    expect(c.body.state).toMatchObject({ state: 'rejected', capacity: null, reason: expect.stringMatching(/^spot-check-failed: measurer relay-a/) });
    const [ev] = await sql`select payload from relaynet.topology_events where type = 'RelayMeasured' order by revision desc limit 1`;
    expect(JSON.parse(ev!.payload as string).data).toMatchObject({ measurementId: id, outcome: 'rejected' });
    expect((await sql`select count(*)::int as n from relaynet.pob_capacity where relay_id = 'relay-c'`)[0]!.n).toBe(1);
  });

  it('refuses forged, foreign, early and misshapen reports, and a second schedule while one is open; none changes anything', async () => {
    const id = await ranMeasurement();
    const before = JSON.stringify(await sql`select * from relaynet.pob_measurement_reports order by measurement_id, relay_id`);
    const revision = Number((await sql`select revision from relaynet.topology`)[0]!.revision);
    const good = measurer(id, 'relay-a', [5, 5, 5, 5]);
    const cases: [string, unknown, string, number, string][] = [
      ['signed by another relay', await report(good, 'relay-b'), 'relay-a', 403, 'bad_signature'],
      ['counts changed after signing', { ...(await report(good)), echoed: [5, 5, 5, 6] }, 'relay-a', 403, 'bad_signature'],
      ['another relay’s token', await report(good), 'relay-b', 403, 'forbidden'],
      ['not a measurer', await report(measurer(id, 'relay-c', [5, 5, 5, 5])), 'relay-c', 403, 'not_a_party'],
      ['not the target', await report({ measurementId: id, relayId: 'relay-a', role: 'target', background: [0, 0, 0, 0] }), 'relay-a', 403, 'not_a_party'],
      ['not one count per second', await report(measurer(id, 'relay-a', [5, 5, 5])), 'relay-a', 400, 'invalid_request'],
      ['failures over checks', await report(measurer(id, 'relay-a', [5, 5, 5, 5], { checks: 1, failures: 2 })), 'relay-a', 400, 'invalid_request'],
      ['unknown measurement', await report(measurer('00000000-0000-4000-8000-000000000999', 'relay-a', [5, 5, 5, 5])), 'relay-a', 404, 'unknown_measurement'],
    ];
    for (const [what, body, as, status, error] of cases) {
      const r = await call('submit-measurement', body, tokens[as]!);
      expect([what, r.status, r.body.error], JSON.stringify(r.body)).toEqual([what, status, error]);
    }
    // A measurement not over yet takes no report.
    const future = await call('schedule-measurement', { relayId: 'relay-a', measurerIds: ['relay-b'], startsInSeconds: 600 }, cp.serviceRoleKey);
    expect(future.status).toBe(200);
    const early = await call('submit-measurement', await report(measurer(future.body.measurement.id, 'relay-b', new Array(10).fill(1))), tokens['relay-b']!);
    expect([early.status, early.body.field]).toEqual([400, 'measurementId']);
    // A party that registers again (a resync, a restart) learns of the measurement from its snapshot; others do not.
    const again = async (relayId: string, n: number) => {
      const reg = {
        relayId,
        name: relayId,
        region: 'test',
        publicKey: Buffer.alloc(32, n).toString('base64'),
        endpoint: `198.51.100.${n}:51820`,
        identityKey: ids[relayId]!.identityKey,
      };
      return call('register-server', await signedRegistration(reg, ids[relayId]!.privateKey, Math.floor(Date.now() / 1000)), tokens[relayId]!);
    };
    expect((await again('relay-b', 2)).body.measurements?.map((x: { id: string }) => x.id)).toEqual([future.body.measurement.id]);
    expect((await again('relay-a', 1)).body.measurements?.map((x: { id: string }) => x.id)).toEqual([future.body.measurement.id]);
    // relay-c's measurement of this test is over (it ended a second ago): not in its snapshot.
    expect((await again('relay-c', 3)).body.measurements).toBeUndefined();
    // One measurement of a relay at a time; measurers must be other active relays; only the service role schedules.
    expect((await call('schedule-measurement', { relayId: 'relay-c' }, cp.serviceRoleKey)).body.error).toBe('measurement_open');
    expect((await call('schedule-measurement', { relayId: 'relay-b', measurerIds: ['relay-b'] }, cp.serviceRoleKey)).status).toBe(400);
    expect((await call('schedule-measurement', { relayId: 'relay-b', measurerIds: ['ghost'] }, cp.serviceRoleKey)).status).toBe(400);
    expect((await call('schedule-measurement', { relayId: 'relay-b' }, tokens['relay-b']!)).status).toBe(403);
    expect(JSON.stringify(await sql`select * from relaynet.pob_measurement_reports order by measurement_id, relay_id`)).toBe(before);
    // Only the future measurement's schedule was appended.
    expect(Number((await sql`select revision from relaynet.topology`)[0]!.revision)).toBe(revision + 1);
    await sql`delete from relaynet.pob_measurements where id = ${future.body.measurement.id}`;
  });

  it('concludes a measurement whose reports did not all come, once its grace is over (the heartbeat’s sweep)', async () => {
    // The open one from the test before is past its grace (started 2 minutes ago), with no report.
    await sql`update relaynet.pob_measurements set starts_at = clock_timestamp() - interval '2 minutes' where state = 'scheduled'`;
    const open = (await sql`select id from relaynet.pob_measurements where state = 'scheduled'`).map((r) => r.id as string);
    expect(open).toHaveLength(1);
    const hb = await call('heartbeat', { relayId: 'relay-a' }, tokens['relay-a']!);
    expect(hb.status).toBe(200);
    const [row] = await sql`select state, reason from relaynet.pob_measurements where id = ${open[0]!}`;
    expect(row).toMatchObject({ state: 'incomplete', reason: 'no report from measurer relay-a, relay-b' });
    expect((await topologyTypes()).at(-1)).toBe('RelayMeasured');
  });
  it('on a schedule, measures the relay never measured first, one measurement at a time', async () => {
    const s = startPobScheduler({ url: cp.url, serviceRoleKey: cp.serviceRoleKey, everySeconds: 3600, logger: log });
    try {
      // relay-c was measured above; relay-a and relay-b never were: relay-a first (by id).
      expect(await s.tick()).toBe('relay-a');
      const [m] = await sql`select target_id, cardinality(measurer_ids) as k from relaynet.pob_measurements where state = 'scheduled'`;
      expect(m).toMatchObject({ target_id: 'relay-a', k: 2 });
      // Under way: nothing more.
      expect(await s.tick()).toBeNull();
    } finally {
      s.stop();
    }
  });

  it('on a schedule, settles each epoch once after it ends (EpochSettled), oldest first after an outage', async () => {
    const epochSeconds = Number((await sql`select pob_epoch_seconds from relaynet.settings`)[0]!.pob_epoch_seconds);
    // Not within 10 s of an epoch's end: the epochs due must not change under the test.
    const toNext = epochSeconds * 1000 - (Date.now() % (epochSeconds * 1000));
    if (toNext < 10_000) await new Promise((r) => setTimeout(r, toNext + 500));
    const latest = Math.floor(Date.now() / 1000 / epochSeconds) - 1;
    const settled = async () => (await sql`select epoch from relaynet.pob_settlements order by epoch`).map((r) => Number(r.epoch));
    const events = async () =>
      (await sql`select payload from relaynet.topology_events where type = 'EpochSettled' order by revision`).map(
        (r) => JSON.parse(r.payload as string).data.epoch,
      );
    // The operator settled an epoch three before the latest by hand; then the schedule was down.
    expect((await call('settle-epoch', { epoch: latest - 3 }, cp.serviceRoleKey)).status).toBe(200);
    const before = await settled();
    const s = startPobScheduler({ url: cp.url, serviceRoleKey: cp.serviceRoleKey, everySeconds: 0, settleAfterSeconds: 0, logger: log });
    try {
      expect([await s.settleTick(), await s.settleTick(), await s.settleTick(), await s.settleTick()]).toEqual([latest - 2, latest - 1, latest, null]);
      expect(await settled()).toEqual([...before, latest - 2, latest - 1, latest].sort((a, b) => a - b));
      expect((await events()).slice(-4)).toEqual([latest - 3, latest - 2, latest - 1, latest]);
    } finally {
      s.stop();
    }
    // A schedule whose clock runs ahead: the control plane refuses epochs not over by its own (409
    // epoch_open), and nothing is settled.
    const ahead = startPobScheduler({
      url: cp.url,
      serviceRoleKey: cp.serviceRoleKey,
      everySeconds: 0,
      settleAfterSeconds: 0,
      logger: log,
      now: () => Date.now() + 3 * epochSeconds * 1000,
    });
    try {
      expect(await ahead.settleTick()).toBeNull();
      expect((await settled()).at(-1)).toBe(latest);
    } finally {
      ahead.stop();
    }
  });
});
