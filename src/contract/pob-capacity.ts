// Capacity measurement of Proof-of-Bandwidth, FlashFlow-style (Traudt, Jansen, Johnson, ICDCS 2021;
// issue 17; docs/proof-of-bandwidth.md). For T seconds k trusted measurers (core relays) send traffic
// over their mesh links to the target's echo service, which must send it back; each measurer counts,
// second by second, the bytes that came back intact (spot-checking their content) and signs its counts.
// Meanwhile the target may carry other traffic, at most a fraction r of its total, and reports it. Pure.
//
// Per second s: m(s) = the measurers' echoed bytes summed; b(s) = the target's reported other traffic,
// counted up to r / (1 − r) × m(s) (so it is at most a fraction r of the total); c(s) = m(s) + b(s).
// The capacity is the median of c(s). A target cannot echo more than it carries, so m(s) ≤ its true
// capacity, and whatever it reports, c(s) ≤ m(s) / (1 − r): the inflation is bounded by 1 / (1 − r)
// (1.11× at r = 0.1). A measurer whose spot checks failed, or whose stream broke, rejects the target.
//
// What the measurers count is TCP payload (goodput). The capacity is stated as that goodput and also as
// the line rate it implies (`lineRate`): each full segment of payload costs WireGuard, IP and transport
// headers on the wire, which is what a link's rate (and `tc tbf`) counts.

/** One measurer's signed account of one measurement. */
export interface MeasurerReport {
  measurerId: string;
  /** Payload bytes echoed back intact in each second of the measurement (index 0 = first second). */
  echoed: number[];
  /** Spot checks of echoed content made, and how many found bytes other than those sent. */
  checks: number;
  failures: number;
  /** Null when the measurer's streams ran to the end; else why they did not (reset, stalled, refused). */
  error: string | null;
}

export interface CapacityInput {
  /** The measurement's length in seconds (every report has this many per-second counts). */
  seconds: number;
  reports: readonly MeasurerReport[];
  /** The target's own account of its other traffic, bytes per second (missing seconds count as 0). */
  background: readonly number[];
  /** The background fraction allowed, 0 ≤ r < 1 (default 0.1). */
  r?: number;
}

export type CapacityVerdict =
  | { ok: true; capacity: number; measured: number; perSecond: number[]; inflationBound: number }
  | { ok: false; reason: 'no-measurers' | 'malformed' | 'spot-check-failed' | 'stream-broken' | 'nothing-echoed'; message: string };

const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** The capacity (bytes per second) the reports show, or why the target is rejected. Never throws. */
export function capacityOf(input: CapacityInput): CapacityVerdict {
  const r = input.r ?? 0.1;
  if (typeof r !== 'number' || !(r >= 0 && r < 1)) return { ok: false, reason: 'malformed', message: 'r must be a number in [0, 1)' };
  if (!Number.isSafeInteger(input.seconds) || input.seconds < 1 || input.seconds > 3600)
    return { ok: false, reason: 'malformed', message: 'a measurement lasts 1-3600 s' };
  if (!Array.isArray(input.reports) || input.reports.length === 0) return { ok: false, reason: 'no-measurers', message: 'no measurer reported' };
  for (const rep of input.reports) {
    if (
      typeof rep?.measurerId !== 'string' ||
      !Array.isArray(rep.echoed) ||
      rep.echoed.length !== input.seconds ||
      !rep.echoed.every(isCount) ||
      !isCount(rep.checks) ||
      !isCount(rep.failures) ||
      rep.failures > rep.checks ||
      (rep.error !== null && typeof rep.error !== 'string')
    )
      return { ok: false, reason: 'malformed', message: `a report must give ${input.seconds} per-second byte counts and its spot checks` };
    if (rep.failures > 0)
      return {
        ok: false,
        reason: 'spot-check-failed',
        message: `measurer ${rep.measurerId}: ${rep.failures} of ${rep.checks} spot checks found echoed bytes other than those sent`,
      };
    if (rep.error !== null) return { ok: false, reason: 'stream-broken', message: `measurer ${rep.measurerId}: ${rep.error}` };
  }
  const measuredPerSecond = Array.from({ length: input.seconds }, (_, s) => input.reports.reduce((a, rep) => a + rep.echoed[s]!, 0));
  if (measuredPerSecond.every((m) => m === 0)) return { ok: false, reason: 'nothing-echoed', message: 'the target echoed nothing' };
  const share = r / (1 - r);
  const background = Array.isArray(input.background) ? input.background : [];
  const perSecond = measuredPerSecond.map((m, s) => {
    const b = background[s];
    return m + Math.min(isCount(b) ? b : 0, share * m);
  });
  return { ok: true, capacity: median(perSecond), measured: median(measuredPerSecond), perSecond, inflationBound: 1 / (1 - r) };
}

/** Headers on the wire per full TCP segment sent over a WireGuard link, besides the inner IP packet itself. */
const WIREGUARD_OUTER = 32 + 8 + 20; // WireGuard data header and tag, UDP, outer IPv4
const ETHERNET = 14;
const INNER_HEADERS = 20 + 20 + 12; // inner IPv4, TCP, TCP timestamps option

/**
 * The line rate (bytes per second on an Ethernet link, what `tc tbf` counts) that carries `goodput`
 * bytes per second of TCP payload in full segments through a WireGuard link of MTU `mtu` over IPv4.
 */
export function lineRate(goodput: number, mtu: number): number {
  const payload = mtu - INNER_HEADERS;
  return (goodput * (mtu + WIREGUARD_OUTER + ETHERNET)) / payload;
}
