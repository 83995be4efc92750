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
import { db, transaction } from '../_shared/db.ts';
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
      // The identity proof is checked before the topology lock, against the identity key stored now
      // (an Ed25519 verification is no work for the lock's holder); under the lock it is checked again
      // only if that key changed meanwhile.
      const checkProof = (existing: { identityKey?: string | null } | null) => {
        const signer = proofSigner(existing?.identityKey, req.identityKey);
        return signer === null || principal.role === 'service_role'
          ? Promise.resolve(null)
          : verifyRegistrationProof(signer, req, req.proof, Math.floor(Date.now() / 1000));
      };
      const before = await store.storedRelay(sql, req.relayId);
      const checked = { identityKey: before?.identityKey ?? null, proof: await checkProof(before) };
      // Under the lock, statements that do not wait for each other's answers go out together
      // (postgres.js pipelines them on the transaction's connection; the server runs them in order), so
      // that the lock is held for a few round trips, not one per statement (bench:admission).
      const result = await transaction(sql, async (tx) => {
        const [, , existing, holder] = await Promise.all([
          store.lockTopology(tx),
          store.refuseBanned(tx, req.relayId, principal),
          store.storedRelay(tx, req.relayId),
          store.keyHolder(tx, req.publicKey, req.relayId),
        ]);
        const proof = (existing?.identityKey ?? null) === checked.identityKey ? checked.proof : await checkProof(existing);
        log.proof = proof === null ? (proofSigner(existing?.identityKey, req.identityKey) === null ? 'none' : 'operator') : proof.ok ? 'valid' : proof.reason;
        const decision = decide(existing, req, holder, proof);
        log.action = decision.action;
        if (decision.action === 'reject') throw refused(decision.refusal);
        let recorded: Promise<void>;
        if (decision.action === 'admit') {
          const [held, plan] = await Promise.all([store.heldAddresses(tx), store.addressPlan(tx)]);
          const a = allocate(plan, held.mesh, held.pools);
          if (!a.ok) throw new HttpError(503, 'pool_exhausted', `no free ${a.exhausted} is left in the address plan (relaynet.settings)`);
          recorded = store.recordAdmission(tx, { ...req, meshAddress: a.meshAddress, clientPool: a.clientPool });
        } else {
          recorded = store.recordReadmission(tx, req, decision.keyRotated);
        }
        const [, , self] = await Promise.all([
          recorded,
          store.recordBusKey(tx, req.relayId, credential ? req.busKey! : null),
          store.relayRecord(tx, req.relayId),
        ]);
        // The snapshot is read after the event's revision is taken and before it is inserted: it reads
        // relays, sessions and measurements, which the insert does not change.
        const [events, rev, relays, sessions, receiptEpochSeconds, measurements] = await Promise.all([
          store.appendEvents(tx, decision.events, self, key, requestId),
          store.currentRevision(tx),
          store.activeRelays(tx, req.relayId),
          openSessionRecords(tx, req.relayId),
          store.receiptEpochSeconds(tx),
          openMeasurementsOf(tx, req.relayId),
        ]);
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
