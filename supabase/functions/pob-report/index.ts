// pob-report: an epoch's Proof-of-Bandwidth roots (every relay's, or one relay's) and one relay's
// receipts, as the relays signed and handed them in (docs/proof-of-bandwidth.md). Read-only. The
// service role sees any relay; a relay token only its own. `relay-core pob receipts` and `pob verify`
// read it; verify checks the signature and the receipts against the root itself.
import { PobReportRequestSchema, type PobReportResponse } from '../../../src/contract/api-pob.ts';
import { db } from '../_shared/db.ts';
import { HttpError, json, parseRequest } from '../_shared/http.ts';
import { serveFunction } from '../_shared/serve.ts';
import * as store from '../_shared/store.ts';

const FN = 'pob-report';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, log }) => {
      const req = parseRequest(PobReportRequestSchema, body);
      if (principal.role === 'user') throw new HttpError(403, 'forbidden', 'a user token cannot read receipts; use the service-role key or a relay token');
      let relayId = req.relayId;
      if (principal.role === 'relay') {
        if (relayId !== undefined && relayId !== principal.relayId)
          throw new HttpError(403, 'forbidden', `this token is bound to relay ${principal.relayId}; it reads only that relay's receipts`, 'relayId');
        relayId = principal.relayId;
      }
      const sql = db(env.dbUrl, FN);
      if (principal.role === 'relay') await store.refuseBanned(sql, principal.relayId, principal);
      const epochSeconds = await store.receiptEpochSeconds(sql);
      let epoch = req.epoch ?? null;
      if (epoch === null) {
        const [latest] = relayId
          ? await sql`select max(epoch)::text as e from relaynet.pob_roots where relay_id = ${relayId}`
          : await sql`select max(epoch)::text as e from relaynet.pob_roots`;
        epoch = latest?.e == null ? null : Number(latest.e);
      }
      Object.assign(log, { epoch, relayId });
      if (epoch === null) return json(200, { epoch: null, epochSeconds, roots: [], receipts: [] } satisfies PobReportResponse);
      const roots = await sql`
        select r.relay_id, r.count, r.root, r.signature, r.received_at, x.identity_key
        from relaynet.pob_roots r left join relaynet.relays x on x.id = r.relay_id
        where r.epoch = ${epoch} ${relayId ? sql`and r.relay_id = ${relayId}` : sql``}
        order by r.relay_id collate "C"`;
      const receipts = relayId
        ? await sql`select peer_id, tx_bytes, rx_bytes from relaynet.pob_receipts where relay_id = ${relayId} and epoch = ${epoch} order by peer_id collate "C"`
        : [];
      log.roots = roots.length;
      return json(200, {
        epoch,
        epochSeconds,
        roots: roots.map((r) => ({
          relayId: r.relay_id,
          count: Number(r.count),
          root: r.root,
          signature: r.signature,
          identityKey: r.identity_key ?? null,
          receivedAt: store.iso(r.received_at),
        })),
        receipts: receipts.map((r) => ({ peerId: r.peer_id, txBytes: Number(r.tx_bytes), rxBytes: Number(r.rx_bytes) })),
      } satisfies PobReportResponse);
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);
