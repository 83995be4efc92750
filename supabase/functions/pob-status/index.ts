// pob-status: what Proof-of-Bandwidth knows of the relays (docs/proof-of-bandwidth.md): each active
// relay's measured capacity, its latest measurement, its credit in the latest settled epoch and the
// disputes naming it there, and its standing (class, state, operator); with `measurementId`, that
// measurement in full. Read-only. The service role sees the active relays and the enrolled ones; an
// operator (a user with the operator role) the relays it enrolled, and their measurements only.
import { type MeasurementState, PobStatusRequestSchema, type PobStatusResponse } from '../../../src/contract/api-pob.ts';
import { db } from '../_shared/db.ts';
import { HttpError, json, parseRequest } from '../_shared/http.ts';
import { requireRole } from '../_shared/jwt.ts';
import { latestMeasurements, measurementById, reportsOf, reportsOfEach, stateOf } from '../_shared/measurements.ts';
import { serveFunction } from '../_shared/serve.ts';
import { standingOrCore } from '../_shared/community.ts';
import * as standing from '../_shared/standing-store.ts';
import * as store from '../_shared/store.ts';

const FN = 'pob-status';
const iso = (t: unknown) => (t instanceof Date ? t.toISOString() : new Date(String(t)).toISOString());

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, log }) => {
      requireRole(principal, ['service_role', 'user'], FN);
      const operator = principal.role === 'user' ? principal.userId : null;
      if (principal.role === 'user' && !principal.operator)
        throw new HttpError(403, 'not_operator', 'pob-status takes the service-role key or an operator\'s user token (app_metadata.relaynet_role "operator")');
      const req = parseRequest(PobStatusRequestSchema, body);
      const sql = db(env.dbUrl, FN);
      // What the caller may see: an operator its own relays; the service role the active and the enrolled ones.
      const visible =
        operator !== null
          ? (await standing.enrolledBy(sql, operator)).map((s) => s.relayId)
          : (await sql`select id from relaynet.relays where status = 'active' union select relay_id from relaynet.relay_standing order by 1`).map(
              (r) => r.id as string,
            );
      let measurement: PobStatusResponse['measurement'] = null;
      if (req.measurementId) {
        const row = await measurementById(sql, req.measurementId);
        if (!row || (operator !== null && !visible.includes(row.measurement.targetId)))
          throw new HttpError(
            404,
            'unknown_measurement',
            `no measurement ${req.measurementId}${operator !== null ? ' of a relay of yours' : ''}`,
            'measurementId',
          );
        measurement = stateOf(row, await reportsOf(sql, row.measurement.id));
      }
      if (req.relayId && operator !== null && !visible.includes(req.relayId))
        throw new HttpError(404, 'unknown_relay', `relay ${req.relayId} is not a relay you enrolled`, 'relayId');
      const ids = req.relayId ? [req.relayId] : visible;
      const standings = await standing.standingsOf(sql, ids);
      const registered = new Set((await sql`select id from relaynet.relays where status = 'active' and id = any(${ids})`).map((r) => r.id as string));
      const capacity = new Map(
        (await sql`select relay_id, bytes_per_second, measured_at from relaynet.pob_capacity where relay_id = any(${ids})`).map((r) => [
          r.relay_id as string,
          { capacity: Number(r.bytes_per_second), measuredAt: iso(r.measured_at) },
        ]),
      );
      const latest = await latestMeasurements(sql, ids);
      const states = new Map<string, MeasurementState>();
      const reports = await reportsOfEach(
        sql,
        [...latest.values()].map((row) => row.measurement.id),
      );
      for (const row of latest.values()) states.set(row.measurement.id, stateOf(row, reports.get(row.measurement.id) ?? []));
      const [epochRow] = await sql`select max(epoch) as epoch from relaynet.pob_settlements`;
      const epoch = epochRow?.epoch === null || epochRow?.epoch === undefined ? null : Number(epochRow.epoch);
      const credits = new Map<string, { epoch: number; carried: number; cap: number | null; credit: number }>();
      const disputes = new Map<string, number>();
      if (epoch !== null) {
        for (const c of await sql`select relay_id, carried, cap, credit from relaynet.pob_credits where epoch = ${epoch} and relay_id = any(${ids})`)
          credits.set(c.relay_id, { epoch, carried: Number(c.carried), cap: c.cap === null ? null : Number(c.cap), credit: Number(c.credit) });
        for (const d of await sql`select detail from relaynet.pob_disputes where epoch = ${epoch}`) {
          const detail = typeof d.detail === 'string' ? JSON.parse(d.detail) : d.detail;
          for (const id of new Set([detail?.relayId, detail?.from, detail?.to].filter((x): x is string => typeof x === 'string')))
            disputes.set(id, (disputes.get(id) ?? 0) + 1);
        }
      }
      const relays = ids.map((relayId) => {
        const last = latest.get(relayId);
        const st = standingOrCore(relayId, standings.get(relayId) ?? null);
        return {
          relayId,
          class: st.class,
          state: st.state,
          operatorId: st.operatorId,
          registered: registered.has(relayId),
          capacity: capacity.get(relayId)?.capacity ?? null,
          measuredAt: capacity.get(relayId)?.measuredAt ?? null,
          lastMeasurement: last ? (states.get(last.measurement.id) ?? null) : null,
          lastCredit: credits.get(relayId) ?? null,
          disputes: disputes.get(relayId) ?? 0,
        };
      });
      Object.assign(log, { relays: relays.length, epoch });
      return json(200, { relays, measurement, epochSeconds: await store.receiptEpochSeconds(sql), settledEpoch: epoch } satisfies PobStatusResponse);
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);
