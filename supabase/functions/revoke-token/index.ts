// revoke-token: the operator stops one relay token by its jti (docs/security.md, "Tokens"). Service
// role only. Recorded in relaynet.revoked_tokens; from then on every function a relay calls refuses that
// token (401 token_revoked) while the relay's other tokens keep working (a ban stops them all).
// Idempotent: `changed` says whether anything happened.
import { RevokeTokenRequestSchema, type RevokeTokenResponse } from '../../../src/contract/api-relays.ts';
import { db } from '../_shared/db.ts';
import { json, parseRequest } from '../_shared/http.ts';
import { requireRole } from '../_shared/jwt.ts';
import { serveFunction } from '../_shared/serve.ts';
import * as store from '../_shared/store.ts';

const FN = 'revoke-token';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, log }) => {
      requireRole(principal, ['service_role'], FN);
      const req = parseRequest(RevokeTokenRequestSchema, body);
      log.jti = req.jti;
      const changed = await store.recordRevokedToken(db(env.dbUrl, FN), req.jti, req.reason);
      log.changed = changed;
      return json(200, { jti: req.jti, changed } satisfies RevokeTokenResponse);
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);
