// heartbeat: a relay says it is alive; the answer carries the current topology revision so a relay
// whose view fell behind can resync (docs/control-plane.md). Every heartbeat also sweeps the client
// sessions past their expiry (ClientSessionClosed, reason "expired"), and forgets the rate-limit
// buckets that are full again.
import { HeartbeatRequestSchema, type HeartbeatResponse } from '../../../src/contract/api-relays.ts';
import { relayBusCredential } from '../_shared/bus.ts';
import { decideHeartbeat } from '../_shared/admission.ts';
import { closeExpired } from '../_shared/client-store.ts';
import { db } from '../_shared/db.ts';
import { json, parseRequest } from '../_shared/http.ts';
import { authorizeRelay } from '../_shared/jwt.ts';
import { sweepRateLimits } from '../_shared/limit-store.ts';
import { refused, serveFunction } from '../_shared/serve.ts';
import * as store from '../_shared/store.ts';

const FN = 'heartbeat';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, requestId, log }) => {
      const { relayId, renewBus } = parseRequest(HeartbeatRequestSchema, body);
      log.relayId = relayId;
      authorizeRelay(principal, relayId);
      const key = await store.topologySigningKey(env.signingSeed);
      const sql = db(env.dbUrl, FN);
      const result = await sql.begin(async (tx) => {
        await store.lockTopology(tx);
        await store.refuseBanned(tx, relayId, principal);
        const decision = decideHeartbeat(await store.storedRelay(tx, relayId), relayId);
        if (decision.action === 'reject') throw refused(decision.refusal);
        await store.touch(tx, relayId);
        const busKey = renewBus ? await store.busKeyOf(tx, relayId) : null;
        const expired = await closeExpired(tx, key, requestId);
        return { ...(await store.currentRevision(tx)), expired: expired.length, busKey };
      });
      log.revision = result.revision;
      if (result.expired) log.sessionsExpired = result.expired;
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
