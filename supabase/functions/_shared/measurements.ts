// Capacity measurements as the control plane keeps them (docs/proof-of-bandwidth.md, "Measuring"): read a
// measurement and its reports, conclude it (the verdict of src/contract/pob-measure.ts, the capacity kept
// in pob_capacity, RelayMeasured appended). Concluding needs the topology lock (it appends an event).
import type { MeasurementState } from '../../../src/contract/api-pob.ts';
import { measurementVerdict, REPORT_GRACE_SECONDS, type Measurement, type SignedReport } from '../../../src/contract/pob-measure.ts';
import type { Sql, Tx } from './db.ts';
import type { SigningKey } from './sign.ts';
import { stateAfterMeasurement } from './community.ts';
import * as standing from './standing-store.ts';
import * as store from './store.ts';
import type { EventSpec } from './topology-events.ts';

export interface MeasurementRow {
  measurement: Measurement;
  state: MeasurementState['state'];
  capacity: number | null;
  lineRate: number | null;
  reason: string | null;
  concludedAt: string | null;
}

const iso = (t: unknown) => (t instanceof Date ? t.toISOString() : new Date(String(t)).toISOString());
const num = (v: unknown) => (v === null || v === undefined ? null : Number(v));

/** A pob_measurements row as the driver returns it. */
interface Stored {
  id: string;
  target_id: string;
  measurer_ids: string[];
  starts_at: Date | string;
  seconds: number;
  streams: number;
  r: number | string;
  state: MeasurementState['state'];
  capacity: number | string | null;
  line_rate: number | string | null;
  reason: string | null;
  concluded_at: Date | string | null;
}

function rowOf(r: Stored): MeasurementRow {
  return {
    measurement: {
      id: r.id,
      targetId: r.target_id,
      measurerIds: r.measurer_ids,
      startsAt: iso(r.starts_at),
      seconds: Number(r.seconds),
      streams: Number(r.streams),
      r: Number(r.r),
    },
    state: r.state,
    capacity: num(r.capacity),
    lineRate: num(r.line_rate),
    reason: r.reason ?? null,
    concludedAt: r.concluded_at ? iso(r.concluded_at) : null,
  };
}

/** A measurement (locked for update with `lock`), or null. */
export async function measurementById(sql: Sql | Tx, id: string, lock = false): Promise<MeasurementRow | null> {
  const rows = (lock
    ? await sql`select * from relaynet.pob_measurements where id = ${id} for update`
    : await sql`select * from relaynet.pob_measurements where id = ${id}`) as unknown as Stored[];
  return rows[0] ? rowOf(rows[0]) : null;
}

/** The latest measurement of each relay named (by scheduling time). */
export async function latestMeasurements(sql: Sql | Tx, relayIds: readonly string[]): Promise<Map<string, MeasurementRow>> {
  if (relayIds.length === 0) return new Map();
  const rows = (await sql`select distinct on (target_id) * from relaynet.pob_measurements
                         where target_id = any(${relayIds as string[]}) order by target_id, scheduled_at desc`) as unknown as Stored[];
  return new Map(rows.map((r) => [r.target_id, rowOf(r)]));
}

/** The reports handed in for a measurement, as signed. */
export async function reportsOf(sql: Sql | Tx, id: string): Promise<SignedReport[]> {
  return (await reportsOfEach(sql, [id])).get(id) ?? [];
}

/** The reports handed in for each of some measurements, as signed, in one query (by measurement id). */
export async function reportsOfEach(sql: Sql | Tx, ids: readonly string[]): Promise<Map<string, SignedReport[]>> {
  const out = new Map<string, SignedReport[]>();
  if (ids.length === 0) return out;
  const rows = await sql`select measurement_id::text as id, report, signature from relaynet.pob_measurement_reports
                         where measurement_id = any(${ids as string[]}::uuid[]) order by measurement_id, relay_id`;
  for (const r of rows) {
    const report = { ...(typeof r.report === 'string' ? JSON.parse(r.report) : r.report), signature: r.signature } as SignedReport;
    out.set(r.id as string, [...(out.get(r.id as string) ?? []), report]);
  }
  return out;
}

/** The measurement as an answer gives it: the parties that reported so far included. */
export function stateOf(row: MeasurementRow, reports: readonly SignedReport[]): MeasurementState {
  const echoedBytes = reports.reduce((a, r) => a + (r.role === 'measurer' ? r.echoed.reduce((x, y) => x + y, 0) : 0), 0);
  return { ...row, reported: reports.map((r) => r.relayId).sort(), echoedBytes };
}

/** Whether every party (each measurer and the target) has reported. */
export const allReported = (m: Measurement, reports: readonly SignedReport[]) =>
  m.measurerIds.every((id) => reports.some((r) => r.role === 'measurer' && r.relayId === id)) &&
  reports.some((r) => r.role === 'target' && r.relayId === m.targetId);

/**
 * Conclude a scheduled measurement from the reports it has: its state, the capacity in pob_capacity
 * (the line rate: what receipts' credit is capped by) when measured, and RelayMeasured. The caller
 * holds the topology lock. Does nothing to one already concluded; returns the row as it is after.
 */
export async function conclude(tx: Tx, id: string, key: SigningKey, causationId: string | null): Promise<MeasurementRow | null> {
  const row = await measurementById(tx, id, true);
  if (row?.state !== 'scheduled') return row;
  const reports = await reportsOf(tx, id);
  const [settings] = await tx`select pob_mesh_mtu from relaynet.settings`;
  const v = measurementVerdict(row.measurement, reports, Number(settings!.pob_mesh_mtu));
  await tx`update relaynet.pob_measurements set state = ${v.outcome}, capacity = ${v.capacity}, line_rate = ${v.lineRate},
             reason = ${v.reason === null ? null : v.reason.slice(0, 512)}, concluded_at = clock_timestamp() where id = ${id}`;
  const target = await store.storedRelay(tx, row.measurement.targetId);
  if (v.outcome === 'measured' && v.lineRate !== null && target) {
    await tx`insert into relaynet.pob_capacity (relay_id, bytes_per_second) values (${row.measurement.targetId}, ${v.lineRate})
             on conflict (relay_id) do update set bytes_per_second = excluded.bytes_per_second, measured_at = clock_timestamp()`;
  }
  const events: EventSpec[] = [
    {
      type: 'RelayMeasured',
      measurementId: id,
      relayId: row.measurement.targetId,
      outcome: v.outcome,
      capacity: v.capacity,
      lineRate: v.lineRate,
      reason: v.reason,
    },
  ];
  // A community relay in probation is admitted to client traffic, or rejected, by its measurement.
  const was = await standing.standingOf(tx, row.measurement.targetId);
  const next = was ? stateAfterMeasurement(was, v.outcome, v.lineRate, (await standing.communitySettings(tx)).minCapacity) : null;
  if (was && next) {
    await standing.saveStanding(tx, { ...was, ...next });
    events.push({ type: 'RelayStateChanged', relayId: was.relayId, class: was.class, state: next.state, previousState: was.state, reason: next.reason });
  }
  await store.appendEvents(tx, events, null, key, causationId);
  return measurementById(tx, id);
}

/** The measurements not over yet that a relay takes part in (as target or measurer): its registration snapshot's. */
export async function openMeasurementsOf(sql: Sql | Tx, relayId: string): Promise<Measurement[]> {
  const rows = (await sql`select * from relaynet.pob_measurements where state = 'scheduled'
                          and (target_id = ${relayId} or ${relayId} = any(measurer_ids))
                          and starts_at + make_interval(secs => seconds) > clock_timestamp()
                          order by starts_at`) as unknown as Stored[];
  return rows.map((r) => rowOf(r).measurement);
}

/** Scheduled measurements past their end and grace (their missing reports will not come), oldest first. Reads only. */
export async function overdueMeasurements(sql: Sql | Tx): Promise<string[]> {
  const rows = await sql`select id from relaynet.pob_measurements where state = 'scheduled'
                         and starts_at + make_interval(secs => seconds + ${REPORT_GRACE_SECONDS}) < clock_timestamp()
                         order by starts_at limit 16`;
  return rows.map((r) => r.id as string);
}
