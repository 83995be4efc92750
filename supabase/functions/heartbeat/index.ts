// heartbeat: a relay says it is alive; the answer carries the current topology revision so a relay
// whose view fell behind can resync (docs/control-plane.md).
import { decideHeartbeat } from '../_shared/admission.ts';
import { db } from '../_shared/db.ts';
import { json } from '../_shared/http.ts';
import { authorizeRelay } from '../_shared/jwt.ts';
import { refused, serveFunction } from '../_shared/serve.ts';
import * as store from '../_shared/store.ts';
import { parseRelayIdRequest } from '../_shared/validate.ts';

const FN = 'heartbeat';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, log }) => {
      const { relayId } = parseRelayIdRequest(body);
      log.relayId = relayId;
      authorizeRelay(principal, relayId);
      const rev = await db(env.dbUrl, FN).begin(async (tx) => {
        const rev = await store.lockTopology(tx);
        const decision = decideHeartbeat(await store.storedRelay(tx, relayId), relayId);
        if (decision.action === 'reject') throw refused(decision.refusal);
        await store.touch(tx, relayId);
        return rev;
      });
      log.revision = rev.revision;
      return json(200, { revision: rev.revision, revisionTime: rev.revisionTime, status: 'active' });
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);
