import type { KeyObject } from 'node:crypto';
import { CATALOGUE, type AnyEvent } from '../contract/catalogue.ts';
import { kebab, parseSubject, STREAMS, SUBJECT_ROOT } from '../contract/subjects.ts';
import { escapeForTerminal, jsonForTerminal } from '../lib/terminal.ts';

export { jsonForTerminal };
import type { RelayKeyRegistry } from './identity.ts';
import { decodeEvent, decodeTopologyMessage, decodeUnsignedTopologyMessage, MAX_EVENT_BYTES, type Rejection } from './wire.ts';

/**
 * Reading the event log: messages as JetStream (or an exported file) stores them, decoded into entries
 * that are either an event or a reported, skipped message. Pure: the bus client and the file reader
 * hand messages in; `events tail`, `events export` and `replay` use the same functions.
 */

export type StreamKind = 'topology' | 'relay';

export const STREAM_OF: Record<StreamKind, string> = { topology: STREAMS.topology, relay: STREAMS.relay };

/** One stored message: where it is in its stream, the server's time stamp, and its bytes. */
export interface StoredMessage {
  stream: StreamKind;
  seq: number;
  subject: string;
  /** ISO time at which the server stored it. */
  time: string;
  data: Uint8Array;
  /** The `Relaynet-Signature` header: the control plane's (topology) or the relay's (relay events). */
  signature: string | null;
}

export type SkipReason = Rejection['reason'] | 'foreign-subject' | 'unknown-key';

export type LogEntry =
  /** `verified`: its signature was checked and holds (absent or false: read without checking). */
  | { ok: true; stream: StreamKind; seq: number; subject: string; time: string; event: AnyEvent; verified?: boolean }
  | { ok: false; stream: StreamKind; seq: number; subject: string; time: string; skipped: { reason: SkipReason; detail: string } };

/**
 * How a reader checks signatures: the control plane's key for the topology stream, and the relays'
 * identity keys (announced in the topology stream, or pinned) for the relay stream. Absent: messages are
 * decoded without checking any signature (`--no-verify`, and tests of the decoding itself).
 */
export interface Verification {
  controlPlaneKey: KeyObject;
  relayKeys: RelayKeyRegistry;
}

/**
 * Decode a stored message. A relay-stream message must be a relay event published under its own
 * source, aggregate and type; a topology message a control-plane event on its subject. With
 * `verify`, a topology message must carry the control plane's signature over its exact bytes, and a
 * relay message the signature of its relay's identity key (`unsigned`, `unknown-key`,
 * `bad-signature`); a verified `RelayAdmitted` teaches `verify.relayKeys` the relay's key. Anything
 * else is an entry with `skipped` (never a throw). Order: subject, size, signature, JSON, schema,
 * subject against payload; the first failure is the reason.
 */
export function decodeStored(m: StoredMessage, opts: { controlPlaneKey?: KeyObject; verify?: Verification } = {}): LogEntry {
  const at = { stream: m.stream, seq: m.seq, subject: m.subject, time: m.time };
  const skip = (reason: SkipReason, detail: string): LogEntry => ({ ok: false, ...at, skipped: { reason, detail } });
  const v = opts.verify;
  if (m.stream === 'topology') {
    const cpKey = v?.controlPlaneKey ?? opts.controlPlaneKey;
    const r = cpKey ? decodeTopologyMessage(m.subject, m.data, m.signature ?? undefined, cpKey) : decodeUnsignedTopologyMessage(m.subject, m.data);
    if (!r.ok) return skip(r.rejection.reason, r.rejection.detail);
    if (v) v.relayKeys.observe(m.seq, m.time, r.event);
    return { ok: true, ...at, event: r.event, ...(cpKey ? { verified: true } : {}) };
  }
  const s = parseSubject(m.subject);
  if (s?.stream !== 'relay') return skip('foreign-subject', `${m.subject} is not a relay event subject`);
  if (v) {
    if (m.data.byteLength > MAX_EVENT_BYTES) return skip('oversized', `${m.data.byteLength} bytes > ${MAX_EVENT_BYTES}`);
    const verdict = v.relayKeys.verify(s.relayId, m.time, m.data, m.signature);
    if (!verdict.ok) return skip(verdict.reason, verdict.detail);
  }
  const r = decodeEvent(m.data);
  if (!r.ok) return skip(r.rejection.reason, r.rejection.detail);
  const e = r.event;
  const kind = CATALOGUE[e.type].kind;
  if (kind.stream !== 'relay' || e.source !== s.relayId || kind.aggregate !== s.aggregate || kebab(e.type) !== s.event) {
    return skip('subject-mismatch', `${e.type} from ${e.source} on ${m.subject}`);
  }
  return { ok: true, ...at, event: e, ...(v ? { verified: true } : {}) };
}

// ---------------------------------------------------------------------------------------------------
// Filters

export interface EventFilter {
  /** Only this relay: its own events and the topology events whose subject names it. */
  relayId?: string | undefined;
}

/** JetStream filter subject of one stream for a filter (types are matched client-side, see typeMatcher). */
export function filterSubject(stream: StreamKind, f: EventFilter): string {
  return `${SUBJECT_ROOT}.${stream}.${f.relayId ?? '*'}.>`;
}

/** Split comma lists, check each pattern names at least one catalogue type, and build a matcher. */
export function typeMatcher(patterns: string[]): (type: string) => boolean {
  const parts = patterns
    .flatMap((p) => p.split(','))
    .map((p) => p.trim())
    .filter(Boolean);
  if (parts.length === 0) return () => true;
  const res = parts.map((p) => {
    if (!/^[A-Za-z0-9*?]+$/.test(p)) throw new Error(`type pattern '${p}': only letters, digits, * and ? are allowed`);
    const re = new RegExp(`^${p.replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
    if (!Object.keys(CATALOGUE).some((t) => re.test(t))) throw new Error(`type pattern '${p}' matches no event type (see docs/events.md)`);
    return re;
  });
  return (type) => res.some((re) => re.test(type));
}

/** Whether an entry passes a filter; skipped entries pass the relay test on their subject and no type test. */
export function entryMatches(e: LogEntry, f: EventFilter, matchType: (t: string) => boolean): boolean {
  if (f.relayId !== undefined && parseSubject(e.subject)?.relayId !== f.relayId) return false;
  return e.ok ? matchType(e.event.type) : true;
}

// ---------------------------------------------------------------------------------------------------
// --since

export type Since = { kind: 'new' } | { kind: 'all' } | { kind: 'seq'; seq: number } | { kind: 'time'; time: Date };

const DURATION_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * `--since`: a stream sequence (`1200`), a duration back from `now` (`90s`, `15m`, `2h`, `7d`), an ISO
 * time (`2026-11-25T10:00:00Z`), or `all`. Throws with a message saying what is accepted.
 */
export function parseSince(s: string, now: Date): Since {
  if (s === 'all') return { kind: 'all' };
  if (/^\d+$/.test(s)) {
    const seq = Number(s);
    if (!Number.isSafeInteger(seq) || seq < 1) throw new Error(`--since ${s}: a sequence starts at 1`);
    return { kind: 'seq', seq };
  }
  const d = /^(\d+)(ms|s|m|h|d)$/.exec(s);
  if (d) return { kind: 'time', time: new Date(now.getTime() - Number(d[1]) * DURATION_MS[d[2]!]!) };
  if (/^\d{4}-\d\d-\d\d(T[\d:.]+(Z|[+-]\d\d:?\d\d)?)?$/.test(s)) {
    const t = Date.parse(s);
    if (!Number.isNaN(t)) return { kind: 'time', time: new Date(t) };
  }
  throw new Error(`--since ${s}: give a stream sequence (1200), a duration (90s, 15m, 2h, 7d), an ISO time (2026-11-25T10:00:00Z) or 'all'`);
}

// ---------------------------------------------------------------------------------------------------
// Output

/**
 * The JSON-lines form of an entry (`events tail --json`): position, then the event or why it was
 * rejected (`skipped`). Printed with {@link jsonForTerminal}, so no control character reaches a terminal.
 */
export function entryJson(e: LogEntry): Record<string, unknown> {
  const at = { stream: e.stream, seq: e.seq, subject: e.subject, time: e.time };
  return e.ok ? { ...at, event: e.event } : { ...at, skipped: e.skipped };
}

const COLOURS = { red: 31, green: 32, yellow: 33, blue: 34, magenta: 35, cyan: 36, grey: 90 } as const;
const paint = (on: boolean, c: keyof typeof COLOURS, s: string) => (on ? `\x1b[${COLOURS[c]}m${s}\x1b[0m` : s);

function tone(e: LogEntry): keyof typeof COLOURS {
  if (!e.ok) return 'red';
  const t = e.event.type;
  const state = (e.event.data as { state?: string }).state;
  if (/Failed|Rejected/.test(t) || (t === 'KernelReconciled' && (e.event.data as { failed: boolean }).failed)) return 'red';
  if (state === 'up' || state === 'active' || /Admitted|Opened|Registered|Started/.test(t)) return 'green';
  if (state === 'stale' || state === 'down' || state === 'expired' || /Left|Closed|Stopped|Draining|Resync/.test(t)) return 'yellow';
  return 'cyan';
}

function scalar(v: unknown): string {
  if (typeof v === 'string') return /^[\w./:@+=-]*$/.test(v) && v !== '' ? v : jsonForTerminal(v);
  if (Array.isArray(v)) return `[${v.length}]`;
  if (v !== null && typeof v === 'object') return `{${Object.keys(v).join(',')}}`;
  return String(v);
}

/**
 * One line for a person: time, stream and sequence, source, type, and the payload as key=value; a
 * rejected message as `REJECTED <reason>` with its subject and why. Every string from the stored
 * message is escaped ({@link escapeForTerminal}): only this function's own colours reach the terminal.
 */
export function formatEntry(e: LogEntry, opts: { colour: boolean; width?: number }): string {
  const when = escapeForTerminal(e.time.slice(11, 23));
  const pos = paint(opts.colour, 'grey', `${e.stream === 'relay' ? 'R' : 'T'}#${e.seq}`);
  if (!e.ok) {
    return `${when} ${pos} ${paint(opts.colour, 'red', `REJECTED ${e.skipped.reason}`)} ${escapeForTerminal(e.subject)}: ${escapeForTerminal(e.skipped.detail)}`;
  }
  const ev = e.event;
  const fields = Object.entries(ev.data as Record<string, unknown>).flatMap(([k, v]) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.entries(v as Record<string, unknown>).map(([k2, v2]) => `${escapeForTerminal(k)}.${escapeForTerminal(k2)}=${scalar(v2)}`)
      : [`${escapeForTerminal(k)}=${scalar(v)}`],
  );
  const line = `${when} ${pos} ${escapeForTerminal(ev.source)} ${paint(opts.colour, tone(e), ev.type)} ${fields.join(' ')}`;
  const width = opts.width ?? 400;
  return line.length > width ? `${line.slice(0, width - 1)}…` : line;
}

// ---------------------------------------------------------------------------------------------------
// Exported logs: one JSON object per line, the stored bytes kept as they were (corrupt ones too).

export interface ExportLine {
  stream: StreamKind;
  seq: number;
  subject: string;
  time: string;
  /** The message bytes as UTF-8 text, or `data64` (base64) when they are not valid UTF-8. */
  data?: string;
  data64?: string;
  signature?: string;
  /**
   * Why the exporting reader rejected the message (unsigned, forged, not a valid event). Information
   * only: readers of the file verify every line again and never trust this mark, nor its absence.
   */
  rejected?: { reason: string; detail: string };
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export function toExportLine(m: StoredMessage, rejected?: { reason: string; detail: string }): string {
  const line: ExportLine = { stream: m.stream, seq: m.seq, subject: m.subject, time: m.time };
  try {
    line.data = strictUtf8.decode(m.data);
  } catch {
    line.data64 = Buffer.from(m.data).toString('base64');
  }
  if (m.signature) line.signature = m.signature;
  if (rejected) line.rejected = { reason: rejected.reason, detail: rejected.detail };
  // Lossless (\uXXXX parses back to the same text) and safe when the export goes to a terminal.
  return jsonForTerminal(line);
}

/** Parse one exported line back into a stored message; an error says what is wrong with it. */
export function fromExportLine(text: string): { ok: true; message: StoredMessage } | { ok: false; error: string } {
  if (text.length > 4 * MAX_EVENT_BYTES) return { ok: false, error: `line of ${text.length} characters is longer than any stored message` };
  let j: Partial<ExportLine>;
  try {
    j = JSON.parse(text) as Partial<ExportLine>;
  } catch (e) {
    return { ok: false, error: `not JSON: ${(e as Error).message.slice(0, 120)}` };
  }
  if (j === null || typeof j !== 'object') return { ok: false, error: 'not an object' };
  if (j.stream !== 'relay' && j.stream !== 'topology') return { ok: false, error: `stream ${JSON.stringify(j.stream)} is neither relay nor topology` };
  if (!Number.isSafeInteger(j.seq) || (j.seq as number) < 1) return { ok: false, error: `seq ${JSON.stringify(j.seq)} is not a stream sequence` };
  if (typeof j.subject !== 'string' || typeof j.time !== 'string') return { ok: false, error: 'subject and time must be strings' };
  const data =
    typeof j.data === 'string' ? new TextEncoder().encode(j.data) : typeof j.data64 === 'string' ? new Uint8Array(Buffer.from(j.data64, 'base64')) : null;
  if (!data) return { ok: false, error: 'neither data nor data64' };
  return {
    ok: true,
    message: {
      stream: j.stream,
      seq: j.seq as number,
      subject: j.subject,
      time: j.time,
      data,
      signature: typeof j.signature === 'string' ? j.signature : null,
    },
  };
}
