import { parseSubject } from '../contract/subjects.ts';
import { formatEntry, type LogEntry } from '../events/log.ts';

/** What the operator's page shows (docs/operations.md, "Dashboard"): folded from the streams, pure. */
export interface DashboardState {
  /** The topology's newest revision seen. */
  topologyRevision: number;
  /** Every relay the streams named (admitted, or publishing), by id, sorted. */
  relays: DashboardRelay[];
  /** The newest entries first, at most `FEED_MAX`. */
  feed: FeedItem[];
  /** Messages refused (unsigned, forged, malformed): counted, shown in the feed. */
  rejected: number;
}

export interface DashboardRelay {
  id: string;
  name: string | null;
  region: string | null;
  /** In the topology now (admitted, not left). */
  member: boolean;
  /** Why it left the topology, if it did. */
  left: string | null;
  /** What its own events last said: starting, registered, serving, resyncing, draining, stopped (null: nothing heard). */
  state: string | null;
  /** The topology revision it has folded (its own events). */
  revision: number;
  /** When it last published anything (ISO time), or null. */
  lastHeard: string | null;
  /** Its links, by peer id, as its own LinkStateChanged events said. */
  links: Record<string, DashboardLink>;
  /** Its latest kernel rounds, newest first, at most `ROUNDS_MAX`. */
  rounds: DashboardRound[];
}

export interface DashboardLink {
  state: string;
  /** When the link entered the state (the event's time). */
  since: string;
  latestHandshakeMs: number | null;
  reason: string;
}

export interface DashboardRound {
  /** The relay stream's sequence of its KernelReconciled: `replay --to SEQ` stops right after it. */
  seq: number;
  time: string;
  owner: string;
  round: number;
  planned: number;
  applied: number;
  failed: boolean;
  focused: boolean;
}

export interface FeedItem {
  stream: 'relay' | 'topology';
  seq: number;
  time: string;
  /** The event type, or `REJECTED`. */
  type: string;
  relayId: string | null;
  /** One line of text, as `events tail` prints it (no colour). */
  text: string;
}

export const FEED_MAX = 300;
export const ROUNDS_MAX = 20;

export const emptyDashboard = (): DashboardState => ({ topologyRevision: 0, relays: [], feed: [], rejected: 0 });

/** The relay state each of a relay's own events says it is in (events that say nothing of it are absent). */
const STATE_OF: Record<string, string> = {
  RelayStarted: 'starting',
  RelayRegistered: 'registered',
  TopologySeeded: 'serving',
  TopologyResyncRequested: 'resyncing',
  RelayDraining: 'draining',
  RelayStopped: 'stopped',
};

/**
 * Fold one entry of the streams into the state, in place (the caller owns the state; the fold never
 * keeps a reference to the entry). Entries of one stream come in order; the two streams interleave.
 */
export function foldDashboard(s: DashboardState, e: LogEntry): void {
  const subjectRelay = parseSubject(e.subject)?.relayId ?? null;
  const text = formatEntry(e, { colour: false });
  s.feed.unshift({ stream: e.stream, seq: e.seq, time: e.time, type: e.ok ? e.event.type : 'REJECTED', relayId: subjectRelay, text });
  if (s.feed.length > FEED_MAX) s.feed.length = FEED_MAX;
  if (!e.ok) {
    s.rejected++;
    return;
  }
  const ev = e.event as { type: string; data: Record<string, unknown> };
  const d = ev.data;
  if (e.stream === 'topology') {
    if (typeof d.revision === 'number') s.topologyRevision = Math.max(s.topologyRevision, d.revision);
    if (ev.type === 'RelayAdmitted') {
      const rec = d.relay as { id: string; name: string; region: string };
      const r = relayOf(s, rec.id);
      r.member = true;
      r.left = null;
      r.name = rec.name;
      r.region = rec.region;
    } else if (ev.type === 'RelayLeft') {
      const r = relayOf(s, d.relayId as string);
      r.member = false;
      r.left = d.reason as string;
    }
    return;
  }
  if (subjectRelay === null) return;
  const r = relayOf(s, subjectRelay);
  r.lastHeard = e.time;
  const state = STATE_OF[ev.type];
  if (state) r.state = state;
  if (ev.type === 'TopologySeeded' || ev.type === 'TopologyEventApplied' || ev.type === 'TopologyResyncRequested') r.revision = d.revision as number;
  if (ev.type === 'RelayStopped') {
    // A stopped relay's links are gone with it.
    for (const l of Object.values(r.links)) {
      l.state = 'removed';
      l.since = e.time;
    }
  }
  if (ev.type === 'LinkStateChanged') {
    r.links[d.peerId as string] = {
      state: d.state as string,
      since: e.time,
      latestHandshakeMs: (d.latestHandshakeMs as number | null) ?? null,
      reason: d.reason as string,
    };
  }
  if (ev.type === 'KernelReconciled') {
    r.rounds.unshift({
      seq: e.seq,
      time: e.time,
      owner: d.owner as string,
      round: d.round as number,
      planned: d.planned as number,
      applied: d.applied as number,
      failed: d.failed as boolean,
      focused: d.focused as boolean,
    });
    if (r.rounds.length > ROUNDS_MAX) r.rounds.length = ROUNDS_MAX;
  }
}

function relayOf(s: DashboardState, id: string): DashboardRelay {
  let r = s.relays.find((x) => x.id === id);
  if (!r) {
    r = { id, name: null, region: null, member: false, left: null, state: null, revision: 0, lastHeard: null, links: {}, rounds: [] };
    s.relays.push(r);
    s.relays.sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
  }
  return r;
}
