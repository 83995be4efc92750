// register-server: admit or re-admit a relay (docs/control-plane.md). One transaction: lock the
// topology, decide, allocate, record, append signed events, read the snapshot of the other relays
// and of every open client session (each relay folds them all; the entry programs its own). A relay
// token's call is first charged to its relay's rate limit (429 with Retry-After before the
// transaction: a refused register writes nothing).
import { RegisterRequestSchema, type RegisterResponse } from '../../../src/contract/api-relays.ts';
import { STREAMS, SUBJECT_ROOT } from '../../../src/contract/subjects.ts';
import { proofSigner, verifyRegistrationProof } from '../../../src/contract/registration-proof.ts';
import { decide } from '../_shared/admission.ts';
import { relayBusCredential } from '../_shared/bus.ts';
import { allocate } from '../_shared/addresses.ts';
import { openSessionRecords } from '../_shared/client-store.ts';
import { db } from '../_shared/db.ts';
import { openMeasurementsOf } from '../_shared/measurements.ts';
import { HttpError, json, parseRequest } from '../_shared/http.ts';
import { authorizeRelay } from '../_shared/jwt.ts';
import * as limits from '../_shared/limit-store.ts';
import { refused, serveFunction } from '../_shared/serve.ts';
import * as store from '../_shared/store.ts';

const FN = 'register-server';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, requestId, log }) => {
      const req = parseRequest(RegisterRequestSchema, body);
      log.relayId = req.relayId;
      authorizeRelay(principal, req.relayId);
      const key = await store.topologySigningKey(env.signingSeed);
      // Before anything is written: a relay without an nkey cannot join a bus with NATS auth.
      const credential = await relayBusCredential(env, req.relayId, req.busKey);
      const sql = db(env.dbUrl, FN);
      if (principal.role === 'relay') await limits.enforceRateLimit(sql, principal, 'register', await limits.limitSettings(sql), log);
      const result = await sql.begin(async (tx) => {
        await store.lockTopology(tx);
        await store.refuseBanned(tx, req.relayId, principal);
        const existing = await store.storedRelay(tx, req.relayId);
        // A relay's own token must carry its identity's signature; the operator (service role) need not.
        const signer = proofSigner(existing?.identityKey, req.identityKey);
        const proof =
          signer === null || principal.role === 'service_role' ? null : await verifyRegistrationProof(signer, req, req.proof, Math.floor(Date.now() / 1000));
        log.proof = proof === null ? (signer === null ? 'none' : 'operator') : proof.ok ? 'valid' : proof.reason;
        const decision = decide(existing, req, await store.keyHolder(tx, req.publicKey, req.relayId), proof);
        log.action = decision.action;
        if (decision.action === 'reject') throw refused(decision.refusal);
        if (decision.action === 'admit') {
          const held = await store.heldAddresses(tx);
          const a = allocate(await store.addressPlan(tx), held.mesh, held.pools);
          if (!a.ok) throw new HttpError(503, 'pool_exhausted', `no free ${a.exhausted} is left in the address plan (relaynet.settings)`);
          await store.recordAdmission(tx, { ...req, meshAddress: a.meshAddress, clientPool: a.clientPool });
        } else {
          await store.recordReadmission(tx, req, decision.keyRotated);
        }
        await store.recordBusKey(tx, req.relayId, credential ? req.busKey! : null);
        const self = await store.relayRecord(tx, req.relayId);
        const events = await store.appendEvents(tx, decision.events, self, key, requestId);
        const rev = await store.currentRevision(tx);
        const relays = await store.activeRelays(tx, req.relayId);
        const sessions = await openSessionRecords(tx, req.relayId);
        const [settings] = await tx`select pob_epoch_seconds from relaynet.settings`;
        const receiptEpochSeconds = Number(settings!.pob_epoch_seconds);
        const measurements = await openMeasurementsOf(tx, req.relayId);
        return { self, relays, sessions, measurements, events, readmitted: decision.action === 'readmit', receiptEpochSeconds, ...rev };
      });
      log.events = result.events.map((e) => e.type);
      log.revision = result.revision;
      return json(200, {
        relay: result.self,
        readmitted: result.readmitted,
        revision: result.revision,
        revisionTime: result.revisionTime,
        relays: result.relays,
        sessions: result.sessions,
        bus: {
          servers: env.natsServers,
          token: env.natsToken,
          credential,
          subjectRoot: SUBJECT_ROOT,
          topologyStream: STREAMS.topology,
          relayStream: STREAMS.relay,
          topologySigningKey: key.publicKey,
        },
        heartbeatIntervalSeconds: env.heartbeatSeconds,
        epoch: result.epoch,
        receiptEpochSeconds: result.receiptEpochSeconds,
        ...(result.measurements.length ? { measurements: result.measurements } : {}),
      } satisfies RegisterResponse);
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);
