// deregister: a relay leaves. Its mesh address and client pool are freed, its key closed, and
// RelayLeft (reason "deregistered") is appended (docs/control-plane.md).
import { decideDeregister } from '../_shared/admission.ts';
import { db } from '../_shared/db.ts';
import { json } from '../_shared/http.ts';
import { authorizeRelay } from '../_shared/jwt.ts';
import { refused, serveFunction } from '../_shared/serve.ts';
import * as store from '../_shared/store.ts';
import { parseRelayIdRequest } from '../_shared/validate.ts';

const FN = 'deregister';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, requestId, log }) => {
      const { relayId } = parseRelayIdRequest(body);
      log.relayId = relayId;
      authorizeRelay(principal, relayId);
      const key = await store.topologySigningKey(env.signingSeed);
      const revision = await db(env.dbUrl, FN).begin(async (tx) => {
        await store.lockTopology(tx);
        const decision = decideDeregister(await store.storedRelay(tx, relayId), relayId);
        if (decision.action === 'reject') throw refused(decision.refusal);
        await store.recordLeave(tx, relayId);
        await store.appendEvents(tx, decision.events, null, key, requestId);
        return (await store.currentRevision(tx)).revision;
      });
      log.revision = revision;
      return json(200, { revision });
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);
