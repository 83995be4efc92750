import { createHash } from 'node:crypto';
import type { z } from 'zod';
import { derivedMap } from '../lib/map-delta.ts';
import { assertNever, type ClientSession, type MeasurementSchema, type RelayRecord, type TopologyEvent } from '../contract/topology.events.ts';

/** A capacity measurement as scheduled (MeasurementScheduled). */
export type ScheduledMeasurement = z.infer<typeof MeasurementSchema>;

/**
 * The topology as one relay believes it: every active relay (itself included) and the open client
 * sessions that concern it at a revision: those that concern `entry` ({@link sessionConcerns}: entering
 * there, or private ones leaving there; a relay's own view), or every session when `entry` is null
 * (the views of relays before issue 15, which replay rebuilds for their logs). Built only by
 * {@link seedTopology} and {@link evolveTopology}; replay uses the same functions.
 */
export interface TopologyView {
  revision: number;
  /**
   * Every active relay by id. A Map, not a record: a fold replaces it on every relay event, and at a
   * thousand relays copying a Map costs a seventh of copying an object's properties (bench:relay-event).
   */
  relays: ReadonlyMap<string, RelayRecord>;
  /** Open client sessions by id: those that concern `entry`, or all of them when it is null. */
  sessions: Readonly<Record<string, ClientSession>>;
  /** Whose sessions the view keeps (a relay id: those that concern it), or null for every session. */
  entry: string | null;
  /**
   * Capacity measurements scheduled and not yet concluded, by id: those `entry` takes part in (as target
   * or measurer), or all when it is null. Absent: none. Not part of the view's digests (they pass).
   */
  measurements?: Readonly<Record<string, ScheduledMeasurement>>;
}

/** Whether a relay takes part in a measurement (its target or one of its measurers). */
export const measurementConcerns = (m: ScheduledMeasurement, relayId: string): boolean => m.targetId === relayId || m.measurerIds.includes(relayId);

export const EMPTY_TOPOLOGY: TopologyView = { revision: 0, relays: new Map(), sessions: {}, entry: null };

/** The empty view of a relay that keeps only the sessions that concern `entry` (null: all). */
export const emptyTopology = (entry: string | null): TopologyView => ({ ...EMPTY_TOPOLOGY, entry });

/**
 * Whether a session concerns a relay, which then keeps and programs it: its entry always; its exit
 * when it is private (the exit terminates the client's tunnel). A standard session's exit needs
 * nothing of it: it forwards what the entry's mesh link carries.
 */
export const sessionConcerns = (s: ClientSession, relayId: string): boolean => s.entryId === relayId || (s.mode === 'private' && s.exitId === relayId);

/**
 * The view a snapshot from `register-server` describes, keeping only the sessions that concern `entry`
 * (null: all; a control plane from before issue 15 sends every open session) and the measurements it
 * takes part in. Pure.
 */
export function seedTopology(
  revision: number,
  relays: readonly RelayRecord[],
  sessions: readonly ClientSession[] = [],
  entry: string | null = null,
  measurements: readonly ScheduledMeasurement[] = [],
): TopologyView {
  const map = new Map<string, RelayRecord>();
  for (const r of relays) map.set(r.id, r);
  const open: Record<string, ClientSession> = {};
  for (const s of sessions) if (entry === null || sessionConcerns(s, entry)) open[s.id] = s;
  const view: TopologyView = { revision, relays: map, sessions: open, entry };
  const taking = measurements.filter((m) => entry === null || measurementConcerns(m, entry));
  if (taking.length > 0) view.measurements = Object.fromEntries(taking.map((m) => [m.id, m]));
  return view;
}

/** The open sessions that concern `relayId` (entering there, or private ones leaving there), by id. */
export function sessionsOfRelay(view: TopologyView, relayId: string): ClientSession[] {
  return Object.values(view.sessions)
    .filter((s) => sessionConcerns(s, relayId))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * Fold one topology event into the view. Pure and total: it trusts the caller to have checked
 * ordering (see {@link applyTopologyEvent}); the view's revision becomes the event's.
 */
export function evolveTopology(state: TopologyView, event: TopologyEvent): TopologyView {
  let relays = state.relays;
  let sessions = state.sessions;
  let measurements = state.measurements;
  // The relays map is copied only by the events that change it (a session's events leave it as it is).
  // Derived Maps remember the relay that changed (map-delta.ts): readers follow a join in O(1).
  const withRelay = (r: RelayRecord) => {
    relays = derivedMap(relays, [[r.id, r]]);
  };
  switch (event.type) {
    case 'RelayAdmitted':
      withRelay(event.data.relay);
      break;
    case 'RelayLeft':
      if (relays.has(event.data.relayId)) relays = derivedMap(relays, [], [event.data.relayId]);
      break;
    case 'RelayKeyRotated': {
      const r = relays.get(event.data.relayId);
      if (r) withRelay({ ...r, publicKey: event.data.publicKey });
      break;
    }
    case 'RelayEndpointChanged': {
      const r = relays.get(event.data.relayId);
      if (r) withRelay({ ...r, endpoint: event.data.endpoint });
      break;
    }
    case 'RelayCapabilitiesChanged': {
      const r = relays.get(event.data.relayId);
      if (r) withRelay({ ...r, exitIpv6: event.data.exitIpv6 });
      break;
    }
    case 'ClientSessionOpened':
      // A session that does not concern this relay: only the revision moves.
      if (state.entry === null || sessionConcerns(event.data.session, state.entry)) sessions = { ...sessions, [event.data.session.id]: event.data.session };
      break;
    case 'ClientSessionExitChanged': {
      const known = sessions[event.data.sessionId];
      // The session as it is now: the one kept with its new exit, else the event's (a private
      // session's new exit learns it here).
      const now = known ? { ...known, exitId: event.data.exitId } : event.data.session;
      if (now && (state.entry === null || sessionConcerns(now, state.entry))) sessions = { ...sessions, [now.id]: now };
      else if (known) {
        // A private session's old exit: it concerns this relay no more.
        const { [known.id]: _gone, ...rest } = sessions;
        sessions = rest;
      }
      break;
    }
    case 'ClientSessionClosed': {
      if (event.data.sessionId in sessions) {
        const { [event.data.sessionId]: _closed, ...rest } = sessions;
        sessions = rest;
      }
      break;
    }
    case 'MeasurementScheduled': {
      const m = event.data.measurement;
      if (state.entry === null || measurementConcerns(m, state.entry)) measurements = { ...measurements, [m.id]: m };
      break;
    }
    // Settlements and standings change nothing a relay holds (the control plane alone keeps a relay
    // that is not active out of client sessions): only the revision moves.
    case 'EpochSettled':
    case 'ReceiptDisputed':
    case 'RelayStateChanged':
      break;
    case 'RelayMeasured': {
      if (measurements && event.data.measurementId in measurements) {
        const { [event.data.measurementId]: _done, ...rest } = measurements;
        measurements = rest;
      }
      break;
    }
    default:
      assertNever(event);
  }
  return { revision: event.data.revision, relays, sessions, entry: state.entry, ...(measurements ? { measurements } : {}) };
}

/**
 * The view with a relay's record holding another WireGuard key, its revision unchanged: a relay stages
 * its own new key this way before it announces it (WireGuardKeyStaged), so that its kernel rounds put
 * it on its devices first. The same view when the relay is unknown or already has the key. Pure.
 */
export function withRelayKey(view: TopologyView, relayId: string, publicKey: string): TopologyView {
  const r = view.relays.get(relayId);
  if (!r || r.publicKey === publicKey) return view;
  return { ...view, relays: derivedMap(view.relays, [[relayId, { ...r, publicKey }]]) };
}

/** Outcome of offering a stream event to a view. */
export type ApplyOutcome = { kind: 'applied'; state: TopologyView } | { kind: 'duplicate'; revision: number } | { kind: 'gap'; expected: number; got: number };

/**
 * Apply a stream event exactly once: revisions at or below the view's are duplicates (already in
 * the snapshot or applied before), the next revision is applied, anything later is a gap that the
 * caller must resolve with a fresh snapshot rather than guess. Pure.
 */
export function applyTopologyEvent(state: TopologyView, event: TopologyEvent): ApplyOutcome {
  const kind = topologyEventOrder(state, event);
  if (kind === 'duplicate') return { kind, revision: event.data.revision };
  if (kind === 'gap') return { kind, expected: state.revision + 1, got: event.data.revision };
  return { kind: 'applied', state: evolveTopology(state, event) };
}

/** What {@link applyTopologyEvent} would do with the event, without folding it (a guard's question). Pure. */
export function topologyEventOrder(state: TopologyView, event: TopologyEvent): ApplyOutcome['kind'] {
  const rev = event.data.revision;
  if (rev <= state.revision) return 'duplicate';
  return rev === state.revision + 1 ? 'applied' : 'gap';
}

/** Canonical text of a view (sorted keys) so views of different relays compare byte for byte. */
export function canonicalTopology(view: TopologyView): string {
  const ids = [...view.relays.keys()].sort();
  return JSON.stringify({
    revision: view.revision,
    relays: ids.map((id) => {
      const r = view.relays.get(id)!;
      return [r.id, r.name, r.region, r.publicKey, r.endpoint, r.meshAddress, r.clientPool];
    }),
    sessions: Object.keys(view.sessions)
      .sort()
      .map((id) => {
        const s = view.sessions[id]!;
        // The mode only when private: the digests of views from before private sessions stay as they were.
        return [s.id, s.entryId, s.exitId, s.publicKey, s.address, s.openedAt, s.expiresAt, ...(s.mode === 'private' ? ['private'] : [])];
      }),
  });
}

/**
 * Canonical text of the part of a view every relay shares: the revision and the relays (sessions are
 * each entry's own). Relays that agree on the topology have the same text.
 */
export function canonicalMembership(view: TopologyView): string {
  return canonicalTopology({ ...view, sessions: {} });
}

/** SHA-256 (hex) of {@link canonicalTopology}: short enough to record in an event. */
export function topologyDigest(view: TopologyView): string {
  return createHash('sha256').update(canonicalTopology(view)).digest('hex');
}

/** SHA-256 (hex) of {@link canonicalMembership}: what `relay-core status`'s `topologyDigest` text hashes to. */
export function membershipDigest(view: TopologyView): string {
  return createHash('sha256').update(canonicalMembership(view)).digest('hex');
}
