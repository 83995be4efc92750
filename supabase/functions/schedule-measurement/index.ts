// schedule-measurement: the operator has a relay's capacity measured (docs/proof-of-bandwidth.md,
// "Measuring"). Service role only. The measurers are the ones named, or up to `measurers` (default 2)
// other active core relays chosen at random (measurers are trusted: never community relays); the measurement starts `startsInSeconds` (default 3) from now.
// One transaction with the topology locked: the measurement is recorded and MeasurementScheduled
// appended, which the parties fold (the target opens its echo service, the measurers send at the start).
// A relay with a measurement still open (not concluded, not past its grace) is refused (409).
import { ScheduleMeasurementRequestSchema, type ScheduleMeasurementResponse } from '../../../src/contract/api-pob.ts';
import { DEFAULT_BACKGROUND_SHARE, REPORT_GRACE_SECONDS, type Measurement } from '../../../src/contract/pob-measure.ts';
import { db, transaction } from '../_shared/db.ts';
import { HttpError, json, parseRequest } from '../_shared/http.ts';
import { requireRole } from '../_shared/jwt.ts';
import { serveFunction } from '../_shared/serve.ts';
import * as store from '../_shared/store.ts';

const FN = 'schedule-measurement';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, requestId, log }) => {
      requireRole(principal, ['service_role'], FN);
      const req = parseRequest(ScheduleMeasurementRequestSchema, body);
      Object.assign(log, { relayId: req.relayId });
      const key = await store.topologySigningKey(env.signingSeed);
      const out = await transaction(db(env.dbUrl, FN), async (tx) => {
        await store.lockTopology(tx);
        const target = await store.storedRelay(tx, req.relayId);
        if (target?.status !== 'active') throw new HttpError(404, 'unknown_relay', `relay ${req.relayId} is not an active relay`, 'relayId');
        const [open] = await tx`select id from relaynet.pob_measurements where target_id = ${req.relayId} and state = 'scheduled'
                                and starts_at + make_interval(secs => seconds + ${REPORT_GRACE_SECONDS}) > clock_timestamp()`;
        if (open) throw new HttpError(409, 'measurement_open', `relay ${req.relayId} is being measured (${open.id}): wait for it to conclude`, 'relayId');
        // The trusted: active core relays (a community relay never measures another).
        const active = (
          await tx`select r.id from relaynet.relays r left join relaynet.relay_standing s on s.relay_id = r.id
                   where r.status = 'active' and r.id <> ${req.relayId} and (s.relay_id is null or (s.class = 'core' and s.state = 'active'))`
        ).map((r) => r.id as string);
        let measurerIds: string[];
        if (req.measurerIds) {
          measurerIds = req.measurerIds;
          if (new Set(measurerIds).size !== measurerIds.length) throw new HttpError(400, 'invalid_request', 'measurerIds: each relay once', 'measurerIds');
          const bad = measurerIds.find((id) => !active.includes(id));
          if (bad !== undefined)
            throw new HttpError(
              400,
              'invalid_request',
              `measurerIds: ${bad} is not an active core relay other than the target (measurers are trusted core relays)`,
              'measurerIds',
            );
        } else {
          measurerIds = shuffle(active).slice(0, req.measurers ?? 2);
          if (measurerIds.length === 0) throw new HttpError(409, 'no_measurers', 'no other active core relay can measure this one', 'relayId');
        }
        const [now] = await tx`select clock_timestamp() as t`;
        const measurement: Measurement = {
          id: crypto.randomUUID(),
          targetId: req.relayId,
          measurerIds,
          startsAt: new Date(new Date(now!.t).getTime() + (req.startsInSeconds ?? 3) * 1000).toISOString(),
          seconds: req.seconds ?? 10,
          streams: req.streams ?? 2,
          r: req.r ?? DEFAULT_BACKGROUND_SHARE,
        };
        await tx`insert into relaynet.pob_measurements (id, target_id, measurer_ids, starts_at, seconds, streams, r)
                 values (${measurement.id}, ${measurement.targetId}, ${measurerIds}, ${measurement.startsAt}, ${measurement.seconds},
                         ${measurement.streams}, ${measurement.r})`;
        await store.appendEvents(tx, [{ type: 'MeasurementScheduled', measurement }], null, key, requestId);
        return { measurement, revision: (await store.currentRevision(tx)).revision };
      });
      Object.assign(log, { measurementId: out.measurement.id, measurers: out.measurement.measurerIds, revision: out.revision });
      return json(200, out satisfies ScheduleMeasurementResponse);
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);

function shuffle<T>(xs: readonly T[]): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = crypto.getRandomValues(new Uint32Array(1))[0]! % (i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}
