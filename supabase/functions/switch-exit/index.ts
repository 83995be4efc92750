// switch-exit: steer a session to another exit (docs/control-plane.md, "switch-exit"). A standard
// client's tunnel is untouched; a private client gets a new configuration (its peer is the exit). One
// transaction with the topology locked: check the session and the new exit as connect-client does,
// set it and append ClientSessionExitChanged; then wait for the entry relay (and a private session's
// new exit) to confirm the new exit (client-ready). Without a confirmation in time the caller gets 504
// entry_not_ready, and the session keeps the new exit: the relays apply the event when they can. A
// user's call is first checked against the limits (anonymous users, the switch rate limit: 429 with
// Retry-After before any transaction).
import { SwitchExitRequestSchema, type SwitchExitResponse } from '../../../src/contract/api-clients.ts';
import { chooseNewExit, clientConfig, livenessSeconds, maySee, renderWgQuick, sessionClosed, unknownSession } from '../_shared/clients.ts';
import * as clients from '../_shared/client-store.ts';
import { db, transaction } from '../_shared/db.ts';
import { HttpError, json, parseRequest } from '../_shared/http.ts';
import { requireRole } from '../_shared/jwt.ts';
import * as limits from '../_shared/limit-store.ts';
import { checkAnonymous } from '../_shared/limits.ts';
import { refused, serveFunction } from '../_shared/serve.ts';
import * as store from '../_shared/store.ts';

const FN = 'switch-exit';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, requestId, log }) => {
      requireRole(principal, ['service_role', 'user'], FN);
      const req = parseRequest(SwitchExitRequestSchema, body);
      log.sessionId = req.sessionId;
      const key = await store.topologySigningKey(env.signingSeed);
      const sql = db(env.dbUrl, FN);
      if (principal.role === 'user') {
        const limitSettings = await limits.limitSettings(sql);
        checkAnonymous(principal, limitSettings, FN);
        await limits.enforceRateLimit(sql, principal, 'switch', limitSettings, log);
      }
      const r = await transaction(sql, async (tx) => {
        await store.lockTopology(tx);
        const s = await clients.sessionById(tx, req.sessionId);
        if (!s || !maySee(principal, s)) throw unknownSession({ sessionId: req.sessionId });
        if (s.status === 'closed') throw sessionClosed(s);
        if (s.expired) throw new HttpError(409, 'session_closed', `session ${s.id} expired at ${s.expiresAt}`, 'sessionId');
        const settings = await clients.clientSettings(tx);
        const choice = chooseNewExit(s, req, await clients.relayCandidates(tx, livenessSeconds(settings, env.heartbeatSeconds)));
        if (!choice.ok) throw refused(choice.refusal);
        if (choice.value.unchanged) return { changed: false as const, session: s, settings };
        const updated = await clients.setExit(tx, s.id, choice.value.exit!.id);
        const [e] = await store.appendEvents(
          tx,
          [{ type: 'ClientSessionExitChanged', session: clients.recordOf(updated), previousExitId: s.exitId }],
          null,
          key,
          requestId,
        );
        log.revision = e!.revision;
        return { changed: true as const, session: updated, settings };
      });
      Object.assign(log, { entry: r.session.entryId, exit: r.session.exitId, outcome: r.changed ? 'changed' : 'unchanged' });
      if (!r.changed) return json(200, { session: clients.recordOf(r.session), config: null, wgQuick: null } satisfies SwitchExitResponse);

      const { outcome: waited, by } = await clients.waitConfirmed(sql, r.session.id, r.settings.confirmTimeoutSeconds * 1000, { notify: env.dbListen });
      log.confirmedBy = by;
      if (waited.kind === 'closed') {
        throw new HttpError(
          409,
          'session_closed',
          `session ${r.session.id} was closed (${waited.session.closeReason ?? 'closed'}) before its entry relay confirmed the new exit`,
          'sessionId',
        );
      }
      if (waited.kind === 'timeout') {
        log.outcome = 'not-confirmed';
        const who = r.session.mode === 'private' ? `entry relay ${r.session.entryId} or the new exit` : `entry relay ${r.session.entryId}`;
        throw new HttpError(
          504,
          'entry_not_ready',
          `${who} did not confirm the new exit ${r.session.exitId} within ${r.settings.confirmTimeoutSeconds} s; the session keeps exit ${r.session.exitId} and the relays will still apply it`,
        );
      }
      const session = waited.session;
      if (session.mode === 'standard') return json(200, { session: clients.recordOf(session), config: null, wgQuick: null } satisfies SwitchExitResponse);
      // A private client's peer is its exit: it needs a new configuration.
      const [entry, exit] = await Promise.all([clients.relayInfo(sql, session.entryId), clients.relayInfo(sql, session.exitId)]);
      if (!entry || !exit) throw new Error(`relay ${session.entryId} or ${session.exitId} of session ${session.id} is missing`);
      const config = clientConfig(session, { entry, exit }, r.settings);
      return json(200, { session: clients.recordOf(session), config, wgQuick: renderWgQuick(config) } satisfies SwitchExitResponse);
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);
