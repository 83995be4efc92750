// submit-measurement: a party to a capacity measurement hands in its signed counts
// (docs/proof-of-bandwidth.md, "Measuring"): a measurer its echoed bytes per second and spot checks, the
// target its other traffic per second. Relay tokens (their own relay) or the service role. The function
// checks that the relay is a party in that role, that the measurement is over, the counts' shape (one
// per second) and the signature (by the identity key the registry holds), then keeps the report. Once
// every party has reported, the measurement is concluded (topology locked): its capacity or why none,
// and RelayMeasured. The same report again stores nothing; another one from the same party is refused
// (409): a party signs one report; a report after the conclusion is refused (409) and not kept.
import { EPOCH_CLOCK_SLACK_SECONDS, SubmitMeasurementRequestSchema, type SubmitMeasurementResponse } from '../../../src/contract/api-pob.ts';
import { verifyReport, type SignedReport, type UnsignedReport } from '../../../src/contract/pob-measure.ts';
import { db, transaction } from '../_shared/db.ts';
import { HttpError, json, parseRequest } from '../_shared/http.ts';
import { authorizeRelay } from '../_shared/jwt.ts';
import { allReported, conclude, measurementById, reportsOf, stateOf } from '../_shared/measurements.ts';
import { serveFunction } from '../_shared/serve.ts';
import * as store from '../_shared/store.ts';

const FN = 'submit-measurement';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, requestId, log }) => {
      const req = parseRequest(SubmitMeasurementRequestSchema, body);
      Object.assign(log, { relayId: req.relayId, measurementId: req.measurementId, role: req.role });
      authorizeRelay(principal, req.relayId);
      const sql = db(env.dbUrl, FN);
      await store.refuseBanned(sql, req.relayId, principal);
      const row = await measurementById(sql, req.measurementId);
      if (!row) throw new HttpError(404, 'unknown_measurement', `no measurement ${req.measurementId}`, 'measurementId');
      const m = row.measurement;
      const party = req.role === 'target' ? m.targetId === req.relayId : m.measurerIds.includes(req.relayId);
      if (!party) throw new HttpError(403, 'not_a_party', `relay ${req.relayId} is not the ${req.role} of measurement ${m.id}`, 'role');
      const report = reportOf(req, m.seconds);
      const ends = new Date(m.startsAt).getTime() + m.seconds * 1000;
      if (Date.now() + EPOCH_CLOCK_SLACK_SECONDS * 1000 < ends)
        throw new HttpError(400, 'invalid_request', `measurement ${m.id} ends at ${new Date(ends).toISOString()}: report once it is over`, 'measurementId');
      const [relay] = await sql`select identity_key from relaynet.relays where id = ${req.relayId}`;
      if (!relay?.identity_key) throw new HttpError(409, 'no_identity', `relay ${req.relayId} has no identity key on record: its report cannot be checked`);
      if (!(await verifyReport(relay.identity_key, { ...report, signature: req.signature } as SignedReport))) {
        log.refusal = 'bad-signature';
        throw new HttpError(403, 'bad_signature', `not a signature by ${req.relayId}'s identity key over its report of measurement ${m.id}`, 'signature');
      }
      const key = await store.topologySigningKey(env.signingSeed);
      const result = await transaction(sql, async (tx) => {
        // The topology lock first, as every writer of measurements takes it (schedule, sweep): a
        // measurement's reports and its conclusion are one order. Reports are few (its parties').
        await store.lockTopology(tx);
        const [held] = await tx`select signature from relaynet.pob_measurement_reports where measurement_id = ${m.id} and relay_id = ${req.relayId}`;
        if (held && held.signature !== req.signature)
          throw new HttpError(409, 'conflicting_report', `relay ${req.relayId} already handed in another report for measurement ${m.id}`, 'signature');
        let now = await measurementById(tx, m.id, true);
        if (!held) {
          // A report after the conclusion changes nothing: it is refused, not kept.
          if (now?.state !== 'scheduled')
            throw new HttpError(409, 'measurement_concluded', `measurement ${m.id} was concluded (${now?.state}) before this report came`, 'measurementId');
          await tx`insert into relaynet.pob_measurement_reports (measurement_id, relay_id, role, report, signature)
                   values (${m.id}, ${req.relayId}, ${req.role}, ${JSON.stringify(report)}::jsonb, ${req.signature})`;
        }
        const reports = await reportsOf(tx, m.id);
        if (now?.state === 'scheduled' && allReported(m, reports)) now = await conclude(tx, m.id, key, requestId);
        return { stored: !held, state: stateOf(now!, reports) };
      });
      Object.assign(log, { stored: result.stored, state: result.state.state });
      return json(200, { measurementId: m.id, relayId: req.relayId, stored: result.stored, state: result.state } satisfies SubmitMeasurementResponse);
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);

/** The report as signed and kept, from the request: the fields of its role, each there and one per second. */
function reportOf(req: ReturnType<typeof SubmitMeasurementRequestSchema.parse>, seconds: number): UnsignedReport {
  const need = (field: string, v: unknown) => {
    if (v === undefined) throw new HttpError(400, 'invalid_request', `${field} is required of a ${req.role}`, field);
  };
  const perSecond = (field: string, v: number[]) => {
    if (v.length !== seconds) throw new HttpError(400, 'invalid_request', `${field} must have ${seconds} counts, one per second`, field);
  };
  const extra = (req.role === 'measurer' ? ['background'] : ['echoed', 'checks', 'failures', 'error']).find(
    (f) => (req as Record<string, unknown>)[f] !== undefined,
  );
  if (extra) throw new HttpError(400, 'invalid_request', `${extra} is not part of a ${req.role}'s report`, extra);
  if (req.role === 'target') {
    need('background', req.background);
    perSecond('background', req.background!);
    return { measurementId: req.measurementId, relayId: req.relayId, role: 'target', background: req.background! };
  }
  need('echoed', req.echoed);
  need('checks', req.checks);
  need('failures', req.failures);
  perSecond('echoed', req.echoed!);
  if (req.failures! > req.checks!) throw new HttpError(400, 'invalid_request', 'failures cannot exceed checks', 'failures');
  return {
    measurementId: req.measurementId,
    relayId: req.relayId,
    role: 'measurer',
    echoed: req.echoed!,
    checks: req.checks!,
    failures: req.failures!,
    error: req.error ?? null,
  };
}
