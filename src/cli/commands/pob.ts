import type { MeasurementState, PobReportResponse } from '../../contract/api-pob.ts';
import { REPORT_GRACE_SECONDS } from '../../contract/pob-measure.ts';
import { inclusionProof, verifyEpoch, verifyInclusion } from '../../contract/pob-receipts.ts';
import { ControlPlaneError } from '../../daemon/control-plane-client.ts';
import { table } from '../../lib/table.ts';
import { CliError, requireStr, str, type Action, type Values } from '../args.ts';
import { connect } from './client.ts';
import { reexecInSim, simDir, withoutSim } from '../bus-options.ts';

/**
 * `relay-core pob receipts|verify|settle|measure|status`: Proof-of-Bandwidth receipts as the relays signed
 * them, settling epochs, measuring capacity, and the state of it all (docs/proof-of-bandwidth.md).
 */

/** A control-plane call whose refusal (or absence) ends the command with its message, exit 1. */
async function called<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (e) {
    if (e instanceof ControlPlaneError) throw new CliError(e.message, 1);
    throw e;
  }
}

function report(v: Values, relayId: string | undefined): Promise<PobReportResponse> {
  return called(() =>
    connect(v, 'the service-role key, or a relay token').pobReport({
      ...(typeof v.epoch === 'number' ? { epoch: v.epoch } : {}),
      ...(relayId ? { relayId } : {}),
    }),
  );
}

const out = (s: string) => process.stdout.write(`${s}\n`);

/** `--sim [DIR]`: the same command inside a running sim's network namespace, at its control plane, with its service-role key. */
const viaSim =
  (action: (v: Values) => Promise<number>): Action =>
  (v, ctx) => {
    const sim = simDir(v);
    return sim === null ? action(v) : reexecInSim(sim, 'pob', withoutSim(ctx.argv).rest, 'control-plane');
  };

export const receipts: Action = viaSim(async (v) => {
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
});

export const verify: Action = viaSim(async (v) => {
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
});

export const settle: Action = viaSim(async (v) => {
  if (typeof v.epoch !== 'number') throw new CliError('missing --epoch', 2);
  const epoch = v.epoch;
  const r = await called(() => connect(v, 'the service-role key').settleEpoch({ epoch }));
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
});

const mbit = (bytesPerSecond: number | null) => (bytesPerSecond === null ? '-' : `${((bytesPerSecond * 8) / 1e6).toFixed(1)} Mbit/s`);

function describeMeasurement(m: MeasurementState): string {
  const at = `${m.measurement.id} (${m.measurement.seconds} s from ${m.measurement.startsAt}, measurers ${m.measurement.measurerIds.join(', ')})`;
  if (m.state === 'scheduled') return `${at}: under way, reported: ${m.reported.join(', ') || 'none yet'}`;
  if (m.state === 'measured') return `${at}: measured ${mbit(m.capacity)} goodput, line rate ${mbit(m.lineRate)}`;
  return `${at}: ${m.state}: ${m.reason}`;
}

export const measure: Action = viaSim(async (v) => {
  const relayId = requireStr(v.relay, 'relay');
  const measurers = str(v.measurers)
    ?.split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  const cp = connect(v, 'the service-role key');
  const scheduled = await called(() =>
    cp.scheduleMeasurement({
      relayId,
      ...(measurers?.length ? { measurerIds: measurers } : { measurers: Number(v.count) }),
      seconds: Number(v.seconds),
      streams: Number(v.streams),
      r: Number(v.r),
      startsInSeconds: Number(v.startsIn),
    }),
  );
  const m = scheduled.measurement;
  if (!v.wait) {
    out(
      v.json
        ? JSON.stringify(scheduled)
        : `measurement ${m.id} of ${m.targetId} scheduled: ${m.seconds} s from ${m.startsAt}, measurers ${m.measurerIds.join(', ')}`,
    );
    return 0;
  }
  if (!v.json) out(`measurement ${m.id} of ${m.targetId}: ${m.seconds} s from ${m.startsAt}, measurers ${m.measurerIds.join(', ')}; waiting`);
  const until = Date.parse(m.startsAt) + (m.seconds + REPORT_GRACE_SECONDS + 30) * 1000;
  let state: MeasurementState | null = null;
  for (;;) {
    await new Promise((r) => setTimeout(r, 1000));
    try {
      state = (await cp.pobStatus({ measurementId: m.id, relayId })).measurement;
    } catch (e) {
      if (!(e instanceof ControlPlaneError) || e.kind === 'refused') throw new CliError(e instanceof Error ? e.message : String(e), 1);
    }
    if (state && state.state !== 'scheduled') break;
    if (Date.now() > until) throw new CliError(`measurement ${m.id} not concluded by ${new Date(until).toISOString()}`, 1);
  }
  out(v.json ? JSON.stringify(state) : describeMeasurement(state));
  return state.state === 'measured' ? 0 : 1;
});

export const status: Action = viaSim(async (v) => {
  const relayId = str(v.relay);
  const r = await called(() => connect(v, "the service-role key or an operator's user token").pobStatus(relayId ? { relayId } : {}));
  if (v.json) {
    out(JSON.stringify(r));
    return 0;
  }
  if (r.relays.length === 0) out('no relays');
  else
    for (const line of table(
      [{}, {}, {}, { align: 'right' }, {}, {}, { align: 'right' }, { align: 'right' }],
      [
        ['RELAY', 'CLASS', 'STATE', 'CAPACITY', 'MEASURED AT', 'LAST MEASUREMENT', 'CREDIT', 'DISPUTES'],
        ...r.relays.map((x) => [
          x.relayId,
          x.class,
          x.registered ? x.state : `${x.state} (not registered)`,
          mbit(x.capacity),
          x.measuredAt ?? '-',
          x.lastMeasurement ? (x.lastMeasurement.state === 'scheduled' ? 'under way' : x.lastMeasurement.state) : '-',
          x.lastCredit ? `${x.lastCredit.credit} B (epoch ${x.lastCredit.epoch})` : '-',
          String(x.disputes),
        ]),
      ],
    ))
      out(line);
  for (const x of r.relays) if (x.lastMeasurement && x.lastMeasurement.state !== 'measured') out(`${x.relayId}: ${describeMeasurement(x.lastMeasurement)}`);
  return 0;
});
