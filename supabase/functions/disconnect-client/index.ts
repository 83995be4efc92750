// disconnect-client: close a session (docs/control-plane.md, "disconnect-client"): by id or by the
// client's public key; reason "disconnected", or "removed" when the service role says so. Appends
// ClientSessionClosed; the entry relay removes the client's peer and rule.
import { DisconnectClientRequestSchema, type DisconnectClientResponse } from '../../../src/contract/api-clients.ts';
import { maySee, sessionClosed, unknownSession, type StoredSession } from '../_shared/clients.ts';
import * as clients from '../_shared/client-store.ts';
import { db, transaction } from '../_shared/db.ts';
import { HttpError, json, parseRequest } from '../_shared/http.ts';
import { serveFunction } from '../_shared/serve.ts';
import * as store from '../_shared/store.ts';

const FN = 'disconnect-client';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, requestId, log }) => {
      const req = parseRequest(DisconnectClientRequestSchema, body);
      if (req.reason === 'removed' && principal.role !== 'service_role') {
        throw new HttpError(403, 'forbidden', 'only the service role closes sessions with reason "removed"', 'reason');
      }
      const key = await store.topologySigningKey(env.signingSeed);
      const r = await transaction(db(env.dbUrl, FN), async (tx) => {
        await store.lockTopology(tx);
        if (principal.role === 'relay') await store.refuseBanned(tx, principal.relayId, principal);
        let s: StoredSession | null;
        const { sessionId, publicKey } = req;
        if (sessionId !== undefined) {
          s = await clients.sessionById(tx, sessionId);
          if (!s) throw unknownSession({ sessionId });
          if (!maySee(principal, s)) {
            if (principal.role === 'relay') throw new HttpError(403, 'forbidden', `session ${s.id} does not enter at relay ${principal.relayId}`, 'sessionId');
            throw unknownSession({ sessionId });
          }
        } else {
          // The key's open session, else its latest one (closed: 409), among those this token may see.
          const mine = (await clients.sessionsOfKey(tx, publicKey!)).filter((x) => maySee(principal, x));
          s = mine.find((x) => x.status === 'open') ?? mine[0] ?? null;
          if (!s) throw unknownSession({ publicKey: publicKey! });
        }
        if (s.status === 'closed') throw sessionClosed(s);
        const [e] = await clients.closeSessions(tx, [s], req.reason, key, requestId);
        return { sessionId: s.id, entryId: s.entryId, revision: e!.revision };
      });
      Object.assign(log, { sessionId: r.sessionId, entry: r.entryId, revision: r.revision, reason: req.reason });
      return json(200, { sessionId: r.sessionId, revision: r.revision } satisfies DisconnectClientResponse);
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);
