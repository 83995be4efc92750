// set-relay-state: the network's operator suspends a relay or resumes it (docs/proof-of-bandwidth.md,
// "Community relays"). Service role only. One transaction with the topology locked: the decision
// (community.ts), the standing recorded, RelayStateChanged appended, and the open client sessions
// entering or leaving at a relay that no longer carries clients closed (reason "removed"). Resuming
// makes a core relay, or a community relay measured at community_min_capacity or more, active; any
// other community relay goes back to probation. Idempotent: `changed` says whether anything happened.
import { SetRelayStateRequestSchema, type SetRelayStateResponse } from '../../../src/contract/api-community.ts';
import * as clients from '../_shared/client-store.ts';
import { decideSetState } from '../_shared/community.ts';
import { db, transaction } from '../_shared/db.ts';
import { json, parseRequest } from '../_shared/http.ts';
import { requireRole } from '../_shared/jwt.ts';
import { refused, serveFunction } from '../_shared/serve.ts';
import * as standing from '../_shared/standing-store.ts';
import * as store from '../_shared/store.ts';

const FN = 'set-relay-state';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, requestId, log }) => {
      requireRole(principal, ['service_role'], FN);
      const req = parseRequest(SetRelayStateRequestSchema, body);
      Object.assign(log, { relayId: req.relayId, want: req.state });
      const key = await store.topologySigningKey(env.signingSeed);
      const out = await transaction(db(env.dbUrl, FN), async (tx) => {
        await store.lockTopology(tx);
        const d = decideSetState(
          req.relayId,
          req.state,
          await standing.standingOf(tx, req.relayId),
          await standing.relayKnown(tx, req.relayId),
          await standing.capacityOf(tx, req.relayId),
          (await standing.communitySettings(tx)).minCapacity,
          req.reason,
        );
        if (d.action === 'reject') throw refused(d.refusal);
        if (d.action === 'unchanged') return { standing: d.standing, previousState: d.previousState, changed: false, sessionsClosed: 0 };
        await standing.saveStanding(tx, d.standing);
        await store.appendEvents(tx, d.events, null, key, requestId);
        const open = d.closeSessions ? await clients.openSessionsAt(tx, req.relayId) : [];
        if (open.length) await clients.closeSessions(tx, open, 'removed', key, requestId);
        return { standing: d.standing, previousState: d.previousState, changed: true, sessionsClosed: open.length };
      });
      Object.assign(log, { changed: out.changed, state: out.standing.state, sessionsClosed: out.sessionsClosed });
      return json(200, out satisfies SetRelayStateResponse);
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);
