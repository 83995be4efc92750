// list-clients: the sessions a token may see (docs/control-plane.md, "list-clients"): the service
// role all of them, a user its own, a relay those entering at it. Open ones unless includeClosed;
// by opening time. Read-only. A relay's list carries no owners (user ids).
import { ListClientsRequestSchema, type ListClientsResponse } from '../../../src/contract/api-clients.ts';
import { listItem } from '../_shared/clients.ts';
import { listSessions } from '../_shared/client-store.ts';
import { db } from '../_shared/db.ts';
import * as store from '../_shared/store.ts';
import { HttpError, json, parseRequest } from '../_shared/http.ts';
import { serveFunction } from '../_shared/serve.ts';

const FN = 'list-clients';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, log }) => {
      const req = parseRequest(ListClientsRequestSchema, body);
      let entry = req.entry;
      if (principal.role === 'relay') {
        if (entry !== undefined && entry !== principal.relayId)
          throw new HttpError(403, 'forbidden', `this token is bound to relay ${principal.relayId}; it lists only the sessions entering there`, 'entry');
        entry = principal.relayId;
      }
      const sql = db(env.dbUrl, FN);
      // A banned relay, or a revoked token, sees nothing.
      if (principal.role === 'relay') await store.refuseBanned(sql, principal.relayId, principal);
      const sessions = await listSessions(sql, {
        ...(principal.role === 'user' ? { owner: principal.userId } : {}),
        ...(entry !== undefined ? { entry } : {}),
        includeClosed: req.includeClosed,
      });
      log.count = sessions.length;
      return json(200, { sessions: sessions.map((s) => listItem(s, principal)) } satisfies ListClientsResponse);
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);
