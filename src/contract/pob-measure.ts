// Capacity measurements of Proof-of-Bandwidth (issue 17; docs/proof-of-bandwidth.md, "Measuring"): what
// the control plane schedules, what each party reports and signs, and the verdict the control plane
// draws (pob-capacity.ts). WebCrypto only, so the Deno functions share it. Pure.
import { bytesToBase64, base64ToBytes } from './base64.ts';
import { capacityOf, lineRate, type CapacityVerdict, type MeasurerReport } from './pob-capacity.ts';

/** The TCP port of a relay's echo service, on its mesh address (open only during its own measurement). */
export const ECHO_PORT = 51900;
/** The most measurers one measurement has; the longest one (s); the most streams per measurer. */
export const MAX_MEASURERS = 8;
export const MAX_MEASUREMENT_SECONDS = 120;
export const MAX_STREAMS = 8;
/** The largest background share a measurement allows (r); FlashFlow's default is 0.25, ours 0.1. */
export const MAX_BACKGROUND_SHARE = 0.5;
export const DEFAULT_BACKGROUND_SHARE = 0.1;
/** How long after its end a measurement waits for reports before it is concluded with what came (s). */
export const REPORT_GRACE_SECONDS = 60;

/** A measurement as scheduled (the MeasurementScheduled topology event). */
export interface Measurement {
  id: string;
  targetId: string;
  measurerIds: string[];
  /** When the measurers start sending (ISO time); every party counts seconds from here. */
  startsAt: string;
  seconds: number;
  /** TCP streams each measurer opens to the echo service. */
  streams: number;
  /** The background share allowed to the target (FlashFlow's r). */
  r: number;
}

export type MeasurementRole = 'measurer' | 'target';

/** What a measurer signs: its echoed bytes per second and spot checks (pob-capacity.ts's MeasurerReport). */
export interface SignedMeasurerReport extends Omit<MeasurerReport, 'measurerId'> {
  measurementId: string;
  relayId: string;
  role: 'measurer';
  signature: string;
}

/** What the target signs: its other traffic per second during the measurement (WireGuard bytes sent). */
export interface SignedTargetReport {
  measurementId: string;
  relayId: string;
  role: 'target';
  background: number[];
  signature: string;
}

export type SignedReport = SignedMeasurerReport | SignedTargetReport;
/** A report before its signature. */
export type UnsignedReport = Omit<SignedMeasurerReport, 'signature'> | Omit<SignedTargetReport, 'signature'>;

const DOMAIN = 'relaynet-pob-measurement-v1';
const enc = new TextEncoder();

/** The exact text a party signs: the domain, the measurement, the party, its role and its counts, in a fixed order. */
export function reportText(r: UnsignedReport): string {
  return r.role === 'measurer'
    ? JSON.stringify([DOMAIN, r.measurementId, r.relayId, 'measurer', r.echoed, r.checks, r.failures, r.error])
    : JSON.stringify([DOMAIN, r.measurementId, r.relayId, 'target', r.background]);
}

/** Sign a report with the party's identity key (`sign`: Ed25519 over the bytes). */
export async function signReport<R extends UnsignedReport>(
  r: R,
  sign: (data: Uint8Array) => Uint8Array | Promise<Uint8Array>,
): Promise<R & { signature: string }> {
  return { ...r, signature: bytesToBase64(await sign(enc.encode(reportText(r)))) };
}

/** Whether `r` is signed by the identity key `identityKey` (base64 of 32 bytes). Never throws. */
export async function verifyReport(identityKey: string, r: SignedReport): Promise<boolean> {
  const raw = base64ToBytes(identityKey);
  const sig = typeof r?.signature === 'string' ? base64ToBytes(r.signature) : null;
  if (raw?.length !== 32 || sig?.length !== 64) return false;
  try {
    const key = await crypto.subtle.importKey('raw', new Uint8Array(raw), { name: 'Ed25519' }, false, ['verify']);
    return await crypto.subtle.verify({ name: 'Ed25519' }, key, new Uint8Array(sig), enc.encode(reportText(r)));
  } catch {
    return false;
  }
}

export type MeasurementOutcome = 'measured' | 'rejected' | 'incomplete';

export interface MeasurementVerdict {
  outcome: MeasurementOutcome;
  /** Goodput the measurers saw echoed, with the background counted (bytes/s): the median of c(s). Null unless measured. */
  capacity: number | null;
  /** The line rate that goodput implies on the mesh MTU (bytes/s on the wire): what credit is capped by. */
  lineRate: number | null;
  /** Why it was rejected or incomplete; null when measured. */
  reason: string | null;
}

/**
 * The verdict of a measurement from the reports that came (already checked for their signatures and
 * parties). A measurer that never reported makes it incomplete (nothing is concluded of the target);
 * a target that never reported has no background counted. Pure; never throws.
 */
export function measurementVerdict(m: Measurement, reports: readonly SignedReport[], mtu: number): MeasurementVerdict {
  const measurers = reports.filter((r): r is SignedMeasurerReport => r.role === 'measurer' && m.measurerIds.includes(r.relayId));
  const missing = m.measurerIds.filter((id) => !measurers.some((r) => r.relayId === id));
  if (missing.length > 0) return { outcome: 'incomplete', capacity: null, lineRate: null, reason: `no report from measurer ${missing.join(', ')}` };
  const target = reports.find((r): r is SignedTargetReport => r.role === 'target' && r.relayId === m.targetId);
  const verdict: CapacityVerdict = capacityOf({
    seconds: m.seconds,
    r: m.r,
    background: target?.background ?? [],
    reports: measurers.map((r) => ({ measurerId: r.relayId, echoed: r.echoed, checks: r.checks, failures: r.failures, error: r.error })),
  });
  if (!verdict.ok)
    return {
      outcome: verdict.reason === 'malformed' ? 'incomplete' : 'rejected',
      capacity: null,
      lineRate: null,
      reason: `${verdict.reason}: ${verdict.message}`,
    };
  return { outcome: 'measured', capacity: Math.round(verdict.capacity), lineRate: Math.round(lineRate(verdict.capacity, mtu)), reason: null };
}
