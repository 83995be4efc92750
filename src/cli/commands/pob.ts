import type { PobReportResponse } from '../../contract/api-pob.ts';
import { inclusionProof, verifyEpoch, verifyInclusion } from '../../contract/pob-receipts.ts';
import { ControlPlaneError } from '../../daemon/control-plane-client.ts';
import { table } from '../../lib/table.ts';
import { CliError, requireStr, str, type Action, type Values } from '../args.ts';
import { connect } from './client.ts';

/** `relay-core pob receipts|verify`: Proof-of-Bandwidth receipts as the relays signed them (docs/proof-of-bandwidth.md). */

async function report(v: Values, relayId: string | undefined): Promise<PobReportResponse> {
  try {
    return await connect(v, 'the service-role key, or a relay token').pobReport({
      ...(typeof v.epoch === 'number' ? { epoch: v.epoch } : {}),
      ...(relayId ? { relayId } : {}),
    });
  } catch (e) {
    if (e instanceof ControlPlaneError) throw new CliError(e.message, 1);
    throw e;
  }
}

const out = (s: string) => process.stdout.write(`${s}\n`);

export const receipts: Action = async (v) => {
  const r = await report(v, str(v.relay));
  if (v.json) {
    out(JSON.stringify(r));
    return 0;
  }
  if (r.epoch === null) {
    out('no receipts handed in yet');
    return 0;
  }
  const start = new Date(r.epoch * r.epochSeconds * 1000).toISOString();
  out(`epoch ${r.epoch} (${r.epochSeconds} s from ${start}): ${r.roots.length} relay${r.roots.length === 1 ? '' : 's'} handed in`);
  for (const line of table(
    [{}, { align: 'right' }, {}, {}],
    [['RELAY', 'RECEIPTS', 'ROOT', 'RECEIVED'], ...r.roots.map((x) => [x.relayId, String(x.count), x.root.slice(0, 16), x.receivedAt])],
  ))
    out(line);
  if (str(v.relay)) {
    out('');
    for (const line of table(
      [{}, { align: 'right' }, { align: 'right' }],
      [['PEER', 'TX BYTES', 'RX BYTES'], ...r.receipts.map((x) => [x.peerId, String(x.txBytes), String(x.rxBytes)])],
    ))
      out(line);
  }
  return 0;
};

export const verify: Action = async (v) => {
  const relayId = requireStr(v.relay, 'relay');
  const peer = str(v.peer);
  const r = await report(v, relayId);
  const root = r.roots.find((x) => x.relayId === relayId);
  if (r.epoch === null || !root) throw new CliError(`relay ${relayId} handed in no receipts${typeof v.epoch === 'number' ? ` for epoch ${v.epoch}` : ''}`, 1);
  const key = str(v.identityKey) ?? root.identityKey;
  if (!key) throw new CliError(`relay ${relayId} has no identity key on record: give --identity-key`, 1);
  const signed = { relayId, epoch: r.epoch, epochSeconds: r.epochSeconds, count: root.count, root: root.root, signature: root.signature };
  const checks: { check: string; ok: boolean; detail: string }[] = [];
  const verdict = await verifyEpoch(key, signed, r.receipts);
  checks.push({
    check: 'root',
    ok: verdict.ok,
    detail: verdict.ok ? `signed by ${key}, covering the ${r.receipts.length} receipts` : verdict.message,
  });
  let proof: { peerId: string; txBytes: number; rxBytes: number; proof: Awaited<ReturnType<typeof inclusionProof>> } | null = null;
  if (peer) {
    const index = r.receipts.findIndex((x) => x.peerId === peer);
    if (index < 0) checks.push({ check: 'inclusion', ok: false, detail: `relay ${relayId} has no receipt for ${peer} in epoch ${r.epoch}` });
    else {
      const receipt = r.receipts[index]!;
      const steps = await inclusionProof(relayId, r.epoch, r.receipts, index);
      const ok = await verifyInclusion(relayId, r.epoch, receipt, steps, root.root);
      proof = { ...receipt, proof: steps };
      checks.push({
        check: 'inclusion',
        ok,
        detail: `${peer}: tx ${receipt.txBytes}, rx ${receipt.rxBytes}; ${steps.length} step${steps.length === 1 ? '' : 's'} to the root`,
      });
    }
  }
  const ok = checks.every((c) => c.ok);
  if (v.json) out(JSON.stringify({ relayId, epoch: r.epoch, epochSeconds: r.epochSeconds, root: root.root, identityKey: key, ok, checks, receipt: proof }));
  else {
    out(`relay ${relayId}, epoch ${r.epoch}: root ${root.root}`);
    for (const line of table(
      [{}, {}, {}],
      checks.map((c) => [c.ok ? 'ok' : 'FAILED', c.check, c.detail]),
      { indent: '  ' },
    ))
      out(line);
    if (proof) for (const s of proof.proof) out(`  ${s.left ? 'left ' : 'right'} ${s.hash}`);
  }
  return ok ? 0 : 1;
};

export const settle: Action = async (v) => {
  if (typeof v.epoch !== 'number') throw new CliError('missing --epoch', 2);
  let r: Awaited<ReturnType<ReturnType<typeof connect>['settleEpoch']>>;
  try {
    r = await connect(v, 'the service-role key').settleEpoch({ epoch: v.epoch });
  } catch (e) {
    if (e instanceof ControlPlaneError) throw new CliError(e.message, 1);
    throw e;
  }
  if (v.json) {
    out(JSON.stringify(r));
    return 0;
  }
  out(
    `epoch ${r.epoch} (${r.epochSeconds} s): ${r.reports} relay${r.reports === 1 ? '' : 's'} handed in, ${r.disputes.length} dispute${r.disputes.length === 1 ? '' : 's'}`,
  );
  for (const line of table(
    [{}, { align: 'right' }, { align: 'right' }, { align: 'right' }],
    [
      ['RELAY', 'CARRIED', 'CAP', 'CREDIT'],
      ...r.credits.map((c) => [c.relayId, String(c.carried), c.cap === null ? 'not measured' : String(c.cap), String(c.credit)]),
    ],
  ))
    out(line);
  for (const d of r.disputes) out(`dispute ${JSON.stringify(d)}`);
  return 0;
};
