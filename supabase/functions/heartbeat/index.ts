// heartbeat: a relay says it is alive; the answer carries the current topology revision so a relay
// whose view fell behind can resync (docs/control-plane.md). It never waits for the topology lock. After
// it, the topology is swept when something is due (_shared/sweep.ts: client sessions past their expiry,
// relays silent past relay_expire_seconds), and the rate-limit buckets that are full again are forgotten.
import { HeartbeatRequestSchema, type HeartbeatResponse } from '../../../src/contract/api-relays.ts';
import { relayBusCredential } from '../_shared/bus.ts';
import { decideHeartbeat } from '../_shared/admission.ts';
import { db, transaction } from '../_shared/db.ts';
import { json, parseRequest } from '../_shared/http.ts';
import { authorizeRelay } from '../_shared/jwt.ts';
import { sweepRateLimits } from '../_shared/limit-store.ts';
import { refused, serveFunction } from '../_shared/serve.ts';
import * as store from '../_shared/store.ts';
import { sweepTopology } from '../_shared/sweep.ts';

const FN = 'heartbeat';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, requestId, log }) => {
      const { relayId, renewBus } = parseRequest(HeartbeatRequestSchema, body);
      log.relayId = relayId;
      authorizeRelay(principal, relayId);
      const sql = db(env.dbUrl, FN);
      // No topology lock: a heartbeat only reads and touches its own row.
      const result = await transaction(sql, async (tx) => {
        await store.refuseBanned(tx, relayId, principal);
        const decision = decideHeartbeat(await store.touchActive(tx, relayId), relayId);
        if (decision.action === 'reject') throw refused(decision.refusal);
        const busKey = renewBus ? await store.busKeyOf(tx, relayId) : null;
        return { ...(await store.currentRevision(tx)), busKey };
      });
      log.revision = result.revision;
      try {
        const s = await sweepTopology(sql, await store.topologySigningKey(env.signingSeed), requestId, env.heartbeatSeconds);
        if (s.sessionsExpired) log.sessionsExpired = s.sessionsExpired;
        if (s.relaysExpired.length) log.relaysExpired = s.relaysExpired;
        if (s.measurementsConcluded) log.measurementsConcluded = s.measurementsConcluded;
      } catch (e) {
        // The heartbeat itself succeeded; the next one sweeps again.
        log.sweepError = e instanceof Error ? e.message : String(e);
      }
      const swept = await sweepRateLimits(sql);
      if (swept) log.rateLimitsSwept = swept;
      // A renewal only for the nkey the relay registered (a token alone cannot get credentials for another key).
      const bus = result.busKey ? await relayBusCredential(env, relayId, result.busKey) : null;
      if (bus) log.busRenewed = true;
      return json(200, {
        revision: result.revision,
        revisionTime: result.revisionTime,
        status: 'active',
        epoch: result.epoch,
        ...(bus ? { bus } : {}),
      } satisfies HeartbeatResponse);
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);
