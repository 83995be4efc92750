// settle-epoch: settle a closed Proof-of-Bandwidth epoch (docs/proof-of-bandwidth.md). From the receipts
// every relay handed in for it (each already checked against its signed root by submit-receipts), each
// direction of each link is credited with what both ends signed, each relay with what it sent and
// received, capped by its measured capacity (pob_capacity; a relay never measured gets none), and the
// disputes are found (src/contract/pob-settle.ts). Kept in pob_settlements, pob_credits, pob_disputes;
// settling again replaces the epoch's settlement, so late receipts count. Each settlement appends
// EpochSettled and a ReceiptDisputed per dispute (at most MAX_DISPUTE_EVENTS). Service role only.
import { SettleEpochRequestSchema, type SettleEpochResponse } from '../../../src/contract/api-pob.ts';
import type { LinkReceipt } from '../../../src/contract/pob-receipts.ts';
import { settleEpoch } from '../../../src/contract/pob-settle.ts';
import { db, transaction } from '../_shared/db.ts';
import { HttpError, json, parseRequest } from '../_shared/http.ts';
import { requireRole } from '../_shared/jwt.ts';
import { serveFunction } from '../_shared/serve.ts';
import * as store from '../_shared/store.ts';
import { MAX_DISPUTE_EVENTS } from '../../../src/contract/topology.events.ts';

const FN = 'settle-epoch';

Deno.serve(
  serveFunction(
    FN,
    async ({ env, principal, body, requestId, log }) => {
      requireRole(principal, ['service_role'], FN);
      const { epoch } = parseRequest(SettleEpochRequestSchema, body);
      log.epoch = epoch;
      const sql = db(env.dbUrl, FN);
      const epochSeconds = await store.receiptEpochSeconds(sql);
      if ((epoch + 1) * epochSeconds > Date.now() / 1000)
        throw new HttpError(409, 'epoch_open', `epoch ${epoch} ends at ${(epoch + 1) * epochSeconds}: it is not over yet`, 'epoch');
      const key = await store.topologySigningKey(env.signingSeed);
      const result = await transaction(sql, async (tx) => {
        // It appends EpochSettled (and the disputes): the topology's lock, as every writer of events.
        await store.lockTopology(tx);
        const rows = await tx`
          select r.relay_id, r.peer_id, r.tx_bytes, r.rx_bytes
          from relaynet.pob_receipts r join relaynet.pob_roots t using (relay_id, epoch)
          where r.epoch = ${epoch} and t.epoch_seconds = ${epochSeconds}
          order by r.relay_id collate "C", r.peer_id collate "C"`;
        const reports = new Map<string, LinkReceipt[]>();
        for (const row of rows) {
          const list = reports.get(row.relay_id) ?? [];
          list.push({ peerId: row.peer_id, txBytes: Number(row.tx_bytes), rxBytes: Number(row.rx_bytes) });
          reports.set(row.relay_id, list);
        }
        // Relays that handed in an empty list are reports too (they signed that they carried nothing).
        for (const r of await tx`select relay_id from relaynet.pob_roots where epoch = ${epoch} and epoch_seconds = ${epochSeconds}`)
          if (!reports.has(r.relay_id)) reports.set(r.relay_id, []);
        const capacity = new Map<string, number>(
          (await tx`select relay_id, bytes_per_second from relaynet.pob_capacity`).map((c) => [c.relay_id as string, Number(c.bytes_per_second)]),
        );
        const s = settleEpoch({ epochSeconds, reports, capacity });
        await tx`delete from relaynet.pob_settlements where epoch = ${epoch}`;
        await tx`
          insert into relaynet.pob_settlements (epoch, epoch_seconds, relays, disputes)
          values (${epoch}, ${epochSeconds}, ${reports.size}, ${s.disputes.length})`;
        if (s.relays.length) {
          const credits = s.relays.map((r) => ({ epoch, relay_id: r.relayId, carried: r.carried, cap: r.cap, credit: r.credit }));
          await tx`insert into relaynet.pob_credits ${tx(credits, 'epoch', 'relay_id', 'carried', 'cap', 'credit')}`;
        }
        if (s.disputes.length) {
          const disputes = s.disputes.map((d, seq) => ({ epoch, seq, kind: d.kind, detail: tx.json(d as never) }));
          await tx`insert into relaynet.pob_disputes ${tx(disputes, 'epoch', 'seq', 'kind', 'detail')}`;
        }
        const credited = s.relays.reduce((a, r) => a + r.credit, 0);
        await store.appendEvents(
          tx,
          [
            { type: 'EpochSettled', epoch, epochSeconds, relays: reports.size, credited, disputes: s.disputes.length },
            ...s.disputes.slice(0, MAX_DISPUTE_EVENTS).map((dispute) => ({ type: 'ReceiptDisputed' as const, epoch, dispute })),
          ],
          null,
          key,
          requestId,
        );
        return { reports: reports.size, settlement: s };
      });
      Object.assign(log, { reports: result.reports, disputes: result.settlement.disputes.length });
      return json(200, {
        epoch,
        epochSeconds,
        reports: result.reports,
        credits: result.settlement.relays.map((r) => ({ relayId: r.relayId, carried: r.carried, cap: r.cap, credit: r.credit })),
        disputes: result.settlement.disputes,
      } satisfies SettleEpochResponse);
    },
    { getEnv: (n) => Deno.env.get(n) },
  ),
);
