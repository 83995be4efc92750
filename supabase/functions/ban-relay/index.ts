// ban-relay: the operator bans a relay or lifts its ban (docs/security.md, "Bans"). Service role only.
// A ban is recorded; an active relay leaves the topology at once: the sessions entering at it are closed
// (reason "entry-left"), its addresses freed, its key closed and RelayLeft (reason "banned") appended,
// which every relay folds (links and routes gone). From then on every function refuses the relay id
// (403 banned), so its tokens stop working and it cannot register again, and the control plane revokes
// its NATS nkey (the live connection is closed). Lifting the ban deletes the record: the relay registers
// again by itself; with `forgetIdentity` it may come back with a new identity key (one it lost). A
// relay's identity can only be forgotten while it is banned. Idempotent: `changed` says whether
// anything happened.
import { BanRequestSchema, type BanResponse } from '../../../src/contract/api-relays.ts';
import { closeEntrySessions } from '../_shared/client-store.ts';
import { db, transaction } from '../_shared/db.ts';
import { HttpError, json, parseRequest } from '../_shared/http.ts';
import { requireRole } from '../_shared/jwt.ts';
import { serveFunction } from '../_shared/serve.ts';
import * as store from '../_shared/store.ts';

const FN = 'ban-relay';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, requestId, log }) => {
      requireRole(principal, ['service_role'], FN);
      const req = parseRequest(BanRequestSchema, body);
      Object.assign(log, { relayId: req.relayId, banned: req.banned });
      const key = await store.topologySigningKey(env.signingSeed);
      const result = await transaction(db(env.dbUrl, FN), async (tx) => {
        await store.lockTopology(tx);
        const revision = async () => (await store.currentRevision(tx)).revision;
        if (!req.banned) {
          const lifted = await store.liftBan(tx, req.relayId);
          if (req.forgetIdentity && !lifted) {
            throw new HttpError(
              409,
              'not_banned',
              `relay ${req.relayId} is not banned: ban it first, so that it is out of the topology while its identity is forgotten`,
              'forgetIdentity',
            );
          }
          const forgot = req.forgetIdentity && (await store.forgetIdentity(tx, req.relayId));
          return { changed: lifted || forgot, left: false, revision: await revision() };
        }
        const changed = await store.recordBan(tx, req.relayId, req.reason);
        const existing = await store.storedRelay(tx, req.relayId);
        if (existing?.status !== 'active') return { changed, left: false, revision: await revision() };
        await closeEntrySessions(tx, req.relayId, key, requestId);
        await store.recordLeave(tx, req.relayId);
        await store.appendEvents(tx, [{ type: 'RelayLeft', relayId: req.relayId, reason: 'banned' }], null, key, requestId);
        return { changed: true, left: true, revision: await revision() };
      });
      Object.assign(log, { changed: result.changed, left: result.left, revision: result.revision });
      return json(200, { relayId: req.relayId, banned: req.banned, changed: result.changed, revision: result.revision } satisfies BanResponse);
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);
