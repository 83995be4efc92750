// connect-client: open a client session (docs/control-plane.md, "connect-client"; docs/clients.md).
// A user's call is first checked against the limits (anonymous users, the connect rate limit: 429
// with Retry-After before any transaction). One transaction with the topology locked: sweep expired
// sessions, refuse a key that already has an open session, a user at its session cap, choose entry
// and exit, allocate the client's address from the entry's pool (a private session also needs its
// port at the entry), record the session and append ClientSessionOpened. Then wait for the entry
// relay, and for a private session its exit too, to confirm it (client-ready); only then does the
// caller get the wg-quick configuration. Only active relays carry sessions, community ones only for a
// session that allows them (`community`); a community entry takes private sessions only. Without a confirmation the session is closed again (reason
// "not-confirmed") and the caller gets 504 entry_not_ready.
import { ConnectClientRequestSchema, type ConnectClientResponse } from '../../../src/contract/api-clients.ts';
import {
  allocateClientAddress,
  chooseRoute,
  clientCapacity,
  clientConfig,
  isConfirmed,
  livenessSeconds,
  maySee,
  ownerOf,
  renderWgQuick,
  sessionMode,
  sessionTtl,
  type StoredSession,
} from '../_shared/clients.ts';
import * as clients from '../_shared/client-store.ts';
import { db, transaction } from '../_shared/db.ts';
import { HttpError, json, parseRequest } from '../_shared/http.ts';
import { requireRole } from '../_shared/jwt.ts';
import * as limits from '../_shared/limit-store.ts';
import { checkAnonymous, checkSessionCap } from '../_shared/limits.ts';
import { refused, serveFunction } from '../_shared/serve.ts';
import { privateEntryPort } from '../../../src/contract/private-sessions.ts';
import * as store from '../_shared/store.ts';

const FN = 'connect-client';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, requestId, log }) => {
      requireRole(principal, ['service_role', 'user'], FN);
      const req = parseRequest(ConnectClientRequestSchema, body);
      const key = await store.topologySigningKey(env.signingSeed);
      const sql = db(env.dbUrl, FN);
      // The service role is not limited (and pays no extra query).
      const limitSettings = principal.role === 'user' ? await limits.limitSettings(sql) : null;
      if (limitSettings) {
        checkAnonymous(principal, limitSettings, FN);
        await limits.enforceRateLimit(sql, principal, 'connect', limitSettings, log);
      }
      const opened = await transaction(sql, async (tx) => {
        // Reads that do not wait for each other's answers go out together (pipelined; the server runs
        // them in order): the lock is held for a few round trips, not one per statement.
        const [, settings, expired] = await Promise.all([store.lockTopology(tx), clients.clientSettings(tx), clients.closeExpired(tx, key, requestId)]);
        const ttlSeconds = sessionTtl(req.ttlSeconds, settings);
        const [holder, relayWithKey, ownerSessions, candidates] = await Promise.all([
          clients.openSessionOfKey(tx, req.publicKey),
          store.keyHolder(tx, req.publicKey, ''),
          limitSettings && principal.role === 'user' ? limits.openSessionsOfOwner(tx, principal.userId) : null,
          clients.relayCandidates(tx, livenessSeconds(settings, env.heartbeatSeconds)),
        ]);
        if (holder) {
          const which = maySee(principal, holder) ? ` (session ${holder.id}; close it first or switch its exit)` : '';
          throw new HttpError(
            409,
            'duplicate_client_key',
            `this public key already has an open session${which}; WireGuard tells clients apart by key`,
            'publicKey',
          );
        }
        if (relayWithKey)
          throw new HttpError(409, 'duplicate_client_key', `this public key is relay ${relayWithKey}'s key; a client needs a key of its own`, 'publicKey');
        if (limitSettings && ownerSessions !== null) checkSessionCap(principal, ownerSessions, limitSettings);
        const route = chooseRoute(req, candidates);
        if (!route.ok) throw refused(route.refusal);
        const { entry, exit } = route.value;
        const chosenMode = sessionMode(req.mode, entry, exit);
        if (!chosenMode.ok) throw refused(chosenMode.refusal);
        const mode = chosenMode.value;
        const address = allocateClientAddress(entry.clientPool, await clients.takenClientAddresses(tx, entry.clientPool));
        if (!address) {
          throw new HttpError(
            409,
            'pool_exhausted',
            `the client pool ${entry.clientPool} of entry relay ${entry.id} is full (${clientCapacity(entry.clientPool)} clients); choose another entry`,
            'entry',
          );
        }
        if (mode === 'private') {
          const port = privateEntryPort(entry, address);
          if ('error' in port)
            throw new HttpError(
              422,
              'private_unavailable',
              `entry relay ${entry.id} cannot take private sessions: ${port.error}; choose another entry`,
              'entry',
            );
        }
        const session = await clients.insertSession(tx, {
          id: crypto.randomUUID(),
          owner: ownerOf(principal),
          entryId: entry.id,
          exitId: exit.id,
          publicKey: req.publicKey,
          address,
          mode,
          community: req.community,
          ttlSeconds,
        });
        const events = await store.appendEvents(tx, [{ type: 'ClientSessionOpened', session: clients.recordOf(session) }], null, key, requestId);
        return { session, settings, expired: expired.length, revision: events[0]!.revision };
      });
      const { session, settings } = opened;
      Object.assign(log, { sessionId: session.id, entry: session.entryId, exit: session.exitId, mode: session.mode, revision: opened.revision });
      if (opened.expired) log.sessionsExpired = opened.expired;

      let done: StoredSession | null = null;
      const { outcome: waited, by } = await clients.waitConfirmed(sql, session.id, settings.confirmTimeoutSeconds * 1000, { notify: env.dbListen });
      log.confirmedBy = by;
      if (waited.kind === 'closed') throw closedMeanwhile(waited.session);
      if (waited.kind === 'confirmed') done = waited.session;
      else {
        // Out of time: close it, unless the confirmation came in at the last moment.
        const last = await transaction(sql, async (tx) => {
          await store.lockTopology(tx);
          const s = await clients.sessionById(tx, session.id);
          if (!s) throw new Error(`session ${session.id} vanished`);
          if (s.status === 'closed' || isConfirmed(s)) return s;
          await clients.closeSessions(tx, [s], 'not-confirmed', key, requestId);
          return null;
        });
        if (!last) {
          log.outcome = 'not-confirmed';
          throw new HttpError(
            504,
            'entry_not_ready',
            `${notConfirmedBy(session)} did not confirm the session within ${settings.confirmTimeoutSeconds} s; the session was closed and nothing was kept (no address, no key): try again, or choose another entry`,
          );
        }
        if (last.status === 'closed') throw closedMeanwhile(last);
        done = last;
      }

      const [entry, exit] = await Promise.all([clients.relayInfo(sql, done.entryId), clients.relayInfo(sql, done.exitId)]);
      if (!entry || !exit) throw new Error(`relay ${done.entryId} or ${done.exitId} of session ${done.id} is missing`);
      const config = clientConfig(done, { entry, exit }, settings);
      log.outcome = 'confirmed';
      return json(200, {
        session: clients.recordOf(done),
        entry: { id: entry.id, name: entry.name, region: entry.region, publicKey: entry.publicKey, endpoint: entry.endpoint },
        exit: { id: exit.id, name: exit.name, region: exit.region },
        config,
        wgQuick: renderWgQuick(config),
      } satisfies ConnectClientResponse);
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);

function closedMeanwhile(s: StoredSession): HttpError {
  return new HttpError(409, 'session_closed', `session ${s.id} was closed (${s.closeReason ?? 'closed'}) before it was confirmed`, 'sessionId');
}

/** Who has to confirm a session: its entry, and a private session's exit too. */
function notConfirmedBy(s: StoredSession): string {
  return s.mode === 'private' ? `entry relay ${s.entryId} or exit relay ${s.exitId}` : `entry relay ${s.entryId}`;
}
