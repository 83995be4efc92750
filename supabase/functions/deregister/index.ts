// deregister: a relay leaves. The sessions entering at it are closed (reason "entry-left"), its mesh
// address and client pool are freed, its key closed, and RelayLeft (reason "deregistered") is
// appended after the closures (docs/control-plane.md). Sessions that leave at it stay open: their
// entries fail closed until it returns.
import { RelayIdRequestSchema, type DeregisterResponse } from '../../../src/contract/api-relays.ts';
import { decideDeregister } from '../_shared/admission.ts';
import { closeEntrySessions } from '../_shared/client-store.ts';
import { db, transaction } from '../_shared/db.ts';
import { json, parseRequest } from '../_shared/http.ts';
import { authorizeRelay } from '../_shared/jwt.ts';
import { refused, serveFunction } from '../_shared/serve.ts';
import * as store from '../_shared/store.ts';

const FN = 'deregister';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, requestId, log }) => {
      const { relayId } = parseRequest(RelayIdRequestSchema, body);
      log.relayId = relayId;
      authorizeRelay(principal, relayId);
      const key = await store.topologySigningKey(env.signingSeed);
      const result = await transaction(db(env.dbUrl, FN), async (tx) => {
        await store.lockTopology(tx);
        await store.refuseBanned(tx, relayId, principal);
        const decision = decideDeregister(await store.storedRelay(tx, relayId), relayId);
        if (decision.action === 'reject') throw refused(decision.refusal);
        const closed = await closeEntrySessions(tx, relayId, key, requestId);
        await store.recordLeave(tx, relayId);
        await store.appendEvents(tx, decision.events, null, key, requestId);
        return { revision: (await store.currentRevision(tx)).revision, closed: closed.length };
      });
      log.revision = result.revision;
      if (result.closed) log.sessionsClosed = result.closed;
      return json(200, { revision: result.revision } satisfies DeregisterResponse);
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);
