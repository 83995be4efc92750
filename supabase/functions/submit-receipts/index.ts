// submit-receipts: a relay hands in an epoch's Proof-of-Bandwidth receipts (docs/proof-of-bandwidth.md):
// one per mesh link, with the Merkle root it signed with its identity key. The function checks the
// epoch (closed, of the configured length, not too old), the signature (by the identity key the
// registry holds for the relay) and that the receipts are exactly those under the root, then keeps
// both. Idempotent: the same root again stores nothing; another root for an epoch already handed in is
// refused (409), since a relay signs one root per epoch. Relay tokens (their own relay) or the service role.
import {
  epochProblem,
  MAX_RECEIPTS_BODY_BYTES,
  SubmitReceiptsRequestSchema,
  submittedRoot,
  type SubmitReceiptsResponse,
} from '../../../src/contract/api-pob.ts';
import { verifyEpoch } from '../../../src/contract/pob-receipts.ts';
import { db, transaction } from '../_shared/db.ts';
import { HttpError, json, parseRequest } from '../_shared/http.ts';
import { authorizeRelay } from '../_shared/jwt.ts';
import { serveFunction } from '../_shared/serve.ts';
import * as store from '../_shared/store.ts';

const FN = 'submit-receipts';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, log }) => {
      const req = parseRequest(SubmitReceiptsRequestSchema, body);
      Object.assign(log, { relayId: req.relayId, epoch: req.epoch, receipts: req.receipts.length });
      authorizeRelay(principal, req.relayId);
      const sql = db(env.dbUrl, FN);
      await store.refuseBanned(sql, req.relayId, principal);
      const bad = epochProblem(req.epoch, req.epochSeconds, await store.receiptEpochSeconds(sql), Math.floor(Date.now() / 1000));
      if (bad) throw new HttpError(400, 'invalid_request', bad.message, bad.field);
      const [relay] = await sql`select identity_key from relaynet.relays where id = ${req.relayId}`;
      if (!relay) throw new HttpError(404, 'unknown_relay', `relay ${req.relayId} is not registered`);
      if (!relay.identity_key)
        throw new HttpError(409, 'no_identity', `relay ${req.relayId} has no identity key on record: its receipts cannot be checked (register with one)`);
      const root = submittedRoot(req);
      const verdict = await verifyEpoch(relay.identity_key, root, req.receipts);
      if (!verdict.ok) {
        log.refusal = verdict.reason;
        if (verdict.reason === 'bad-signature') throw new HttpError(403, 'bad_signature', verdict.message, 'signature');
        throw new HttpError(400, 'invalid_request', verdict.message, verdict.reason === 'root-mismatch' ? 'root' : 'receipts');
      }
      const stored = await transaction(sql, async (tx) => {
        const [inserted] = await tx`
          insert into relaynet.pob_roots (relay_id, epoch, epoch_seconds, count, root, signature)
          values (${req.relayId}, ${req.epoch}, ${req.epochSeconds}, ${root.count}, ${req.root}, ${req.signature})
          on conflict (relay_id, epoch) do nothing
          returning relay_id`;
        if (!inserted) {
          const [held] = await tx`select root from relaynet.pob_roots where relay_id = ${req.relayId} and epoch = ${req.epoch}`;
          if (held?.root === req.root) return false;
          throw new HttpError(
            409,
            'conflicting_root',
            `relay ${req.relayId} already handed in another root for epoch ${req.epoch} (${String(held?.root).slice(0, 16)}…): a relay signs one root per epoch`,
            'root',
          );
        }
        if (req.receipts.length) {
          const rows = req.receipts.map((r) => ({ relay_id: req.relayId, epoch: req.epoch, peer_id: r.peerId, tx_bytes: r.txBytes, rx_bytes: r.rxBytes }));
          await tx`insert into relaynet.pob_receipts ${tx(rows, 'relay_id', 'epoch', 'peer_id', 'tx_bytes', 'rx_bytes')}`;
        }
        return true;
      });
      log.stored = stored;
      return json(200, { relayId: req.relayId, epoch: req.epoch, receipts: req.receipts.length, stored } satisfies SubmitReceiptsResponse);
    },
    { getEnv: (n) => Deno.env.get(n), maxBodyBytes: MAX_RECEIPTS_BODY_BYTES },
  ),
);
