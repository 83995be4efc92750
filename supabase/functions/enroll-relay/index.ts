// enroll-relay: an operator enrolls a community relay (docs/proof-of-bandwidth.md, "Community relays").
// Operators only: a user token whose app_metadata.relaynet_role is "operator" (no service-role key, no
// core relay token). One transaction with the topology locked: the relay id must be new (or one this
// operator enrolled before: a new token for it, its state unchanged), the operator under its limit; the
// relay is recorded as a community relay in probation and RelayStateChanged appended. The answer holds
// a relay token bound to that id (role relay, its own jti), which the relay registers with: it joins
// the mesh and is measured, and carries clients only once a measurement made it active.
import { EnrollRelayRequestSchema, type EnrollRelayResponse } from '../../../src/contract/api-community.ts';
import { signHs256 } from '../../../src/contract/jwt.ts';
import { decideEnroll } from '../_shared/community.ts';
import { db, transaction } from '../_shared/db.ts';
import { HttpError, json, parseRequest } from '../_shared/http.ts';
import { RELAY_TOKEN_ISSUER, requireRole } from '../_shared/jwt.ts';
import { refused, serveFunction } from '../_shared/serve.ts';
import * as standing from '../_shared/standing-store.ts';
import * as store from '../_shared/store.ts';

const FN = 'enroll-relay';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, requestId, log }) => {
      requireRole(principal, ['user'], FN);
      if (principal.role !== 'user' || !principal.operator)
        throw new HttpError(
          403,
          'not_operator',
          'enroll-relay takes an operator\'s user token (app_metadata.relaynet_role "operator", set by the network\'s operator)',
        );
      const req = parseRequest(EnrollRelayRequestSchema, body);
      Object.assign(log, { relayId: req.relayId, operatorId: principal.userId });
      const key = await store.topologySigningKey(env.signingSeed);
      const out = await transaction(db(env.dbUrl, FN), async (tx) => {
        await store.lockTopology(tx);
        await store.refuseBanned(tx, req.relayId, principal);
        const settings = await standing.communitySettings(tx);
        const d = decideEnroll(
          req.relayId,
          principal.userId,
          await standing.standingOf(tx, req.relayId),
          await standing.relayKnown(tx, req.relayId),
          (await standing.enrolledBy(tx, principal.userId)).length,
          settings.maxRelays,
        );
        if (d.action === 'reject') throw refused(d.refusal);
        if (d.action === 'enroll') {
          await standing.saveStanding(tx, d.standing);
          await store.appendEvents(tx, d.events, null, key, requestId);
        }
        return d;
      });
      log.action = out.action;
      const now = Math.floor(Date.now() / 1000);
      const jti = crypto.randomUUID();
      const token = await signHs256({ role: 'relay', relay_id: req.relayId, jti, iss: RELAY_TOKEN_ISSUER, iat: now, exp: now + req.ttlSeconds }, env.jwtSecret);
      log.jti = jti;
      return json(200, {
        standing: out.standing,
        token,
        jti,
        expiresAt: new Date((now + req.ttlSeconds) * 1000).toISOString(),
        reissued: out.action === 'reissue',
      } satisfies EnrollRelayResponse);
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);
