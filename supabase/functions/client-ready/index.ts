// client-ready: the entry relay confirms that it has programmed a session and steers it to `exitId`;
// a private session's exit (relayId = exitId) confirms that it carries the session's peer
// (docs/control-plane.md, "client-ready"). connect-client and switch-exit wait for this. A
// confirmation of an exit the session no longer has (an older one) is answered `confirmed: false`
// and changes nothing. No topology event.
import { ClientReadyRequestSchema, type ClientReadyResponse } from '../../../src/contract/api-relays.ts';
import { sessionClosed, unknownSession } from '../_shared/clients.ts';
import * as clients from '../_shared/client-store.ts';
import { db, transaction } from '../_shared/db.ts';
import { HttpError, json, parseRequest } from '../_shared/http.ts';
import { authorizeRelay, requireRole } from '../_shared/jwt.ts';
import { serveFunction } from '../_shared/serve.ts';
import * as store from '../_shared/store.ts';

const FN = 'client-ready';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, log }) => {
      requireRole(principal, ['service_role', 'relay'], FN);
      const req = parseRequest(ClientReadyRequestSchema, body);
      Object.assign(log, { relayId: req.relayId, sessionId: req.sessionId, exit: req.exitId });
      authorizeRelay(principal, req.relayId);
      const confirmed = await transaction(db(env.dbUrl, FN), async (tx) => {
        // Pipelined: one round trip for the lock and both reads (the server runs them in order).
        const [, , s] = await Promise.all([store.lockTopology(tx), store.refuseBanned(tx, req.relayId, principal), clients.sessionById(tx, req.sessionId)]);
        if (!s) throw unknownSession({ sessionId: req.sessionId });
        // A private session's current exit confirms its own side (another relay, a former exit too, may not).
        const asExit = s.entryId !== req.relayId && s.mode === 'private' && req.relayId === req.exitId && s.exitId === req.relayId;
        if (s.entryId !== req.relayId && !asExit) {
          const whose = s.mode === 'private' ? `enters at relay ${s.entryId} and leaves at ${s.exitId}` : `enters at relay ${s.entryId}`;
          throw new HttpError(403, 'forbidden', `session ${s.id} ${whose}, not ${req.relayId}`, 'relayId');
        }
        if (s.status === 'closed') throw sessionClosed(s);
        if (s.exitId !== req.exitId) return false;
        if (asExit) await clients.confirmExitSide(tx, s.id, req.exitId);
        else await clients.confirmExit(tx, s.id, req.exitId);
        return true;
      });
      log.outcome = confirmed ? 'confirmed' : 'stale';
      return json(200, { sessionId: req.sessionId, exitId: req.exitId, confirmed } satisfies ClientReadyResponse);
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);
