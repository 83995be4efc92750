import { isDeepStrictEqual } from 'node:util';
import type { LogEntry } from '../events/log.ts';
import type { RelayEvent } from '../contract/relay.events.ts';
import { applyTopologyEvent, emptyTopology, membershipDigest, topologyDigest, withRelayKey, type TopologyView } from '../events/topology.fold.ts';
import { assertNever, type RelayRecord, type TopologyEvent } from '../contract/topology.events.ts';
import type { DesiredHostState, HostState, KernelOp, KernelScope } from '../kernel/host-state.ts';
import { scopeDigest, updateScopeDigest, type ScopeDigest } from '../kernel/host-text.ts';
import { focusOf, opsFocus, restrict, sameScope } from '../kernel/focus.ts';
import { MemoryKernelBackend } from '../kernel/memory-backend.ts';
import type { MeshOptions } from '../kernel/mesh.ts';
import { clientsOwner, expireSession, initialClientsState, type ClientsOwnerOptions, type ClientsOwnerState } from '../kernel/owners/clients.ts';
import { initialMeshState, meshOwner, type MeshOwnerState } from '../kernel/owners/mesh.ts';
import { takesView, type KernelOwner, type OwnerState } from '../kernel/owners/owner.ts';
import { planKernel } from '../kernel/plan.ts';

/**
 * Replay of one relay's event log: what the relay believed and did at any point, rebuilt from its own
 * stream (`relaynet.relay.<id>.>`) and the topology stream. Pure: entries in, state out; the same
 * entries always give the same result.
 *
 * - The topology view is folded from the topology stream with the relay's own `applyTopologyEvent`,
 *   at the revisions its `TopologySeeded` and `TopologyEventApplied` events name (a seed's digest is
 *   checked against the view rebuilt).
 * - Actor states (relay, links, client sessions, kernel counters) are those the actors announced.
 * - The host is an in-memory kernel (`MemoryKernelBackend`) to which every recorded `KernelReconciled`
 *   operation is applied in order.
 * - Each recorded round is also checked: the owners' states are folded with the live actors' own
 *   functions (src/kernel/owners: a view, a teardown, a session's expiry), the desired state named by
 *   the round's causation id is derived with the owner's `desire` and planned with `planKernel` against
 *   the replayed host; the operations must be those recorded. Peer endpoint names are derived with the
 *   addresses the relay recorded (`PeerEndpointResolved`), never looked up.
 */

export interface ReplayOptions {
  relayId: string;
  /** Keep the derived operations of every round (tests; costs memory on long logs). */
  keepDerivedOps?: boolean;
}

export type ReplayCut = { kind: 'seq'; seq: number } | { kind: 'time'; time: Date };

export type RelayRunState = 'not started' | 'registering' | 'serving' | 'draining' | 'stopped';

export interface LinkReplay {
  peerId: string;
  device: string;
  state: string;
  reason: string;
  latestHandshakeMs: number | null;
  rxBytes: number;
  txBytes: number;
  /** When and at which relay-stream sequence the link entered its state. */
  since: string;
  seq: number;
}

export interface SessionReplay {
  sessionId: string;
  publicKey: string;
  address: string;
  exitId: string;
  mode: 'standard' | 'private';
  /** The relay's part: the session's entry, or a private session's exit. */
  role: 'entry' | 'exit';
  confirmedExitId: string | null;
  state: string;
  reason: string;
  since: string;
  seq: number;
}

/** One recorded kernel round, checked. */
export interface RoundCheck {
  seq: number;
  owner: string;
  cause: string | null;
  verdict: 'match' | 'mismatch' | 'unchecked';
  /** Why a round could not be checked (no configuration, view unavailable, cause not in the log). */
  why: string | null;
  recorded: KernelOp[];
  /** What the relay's planner gives for the desired state the cause names (null when unchecked). */
  derived: KernelOp[] | null;
  /**
   * The digest of the owner's scope the relay recorded after the round against the replayed host's
   * after applying it: `match`, `mismatch`, or null when not recorded (before KernelReconciled v2) or
   * the round is unchecked.
   */
  reached: 'match' | 'mismatch' | null;
}

export interface SkippedEntry {
  stream: string;
  seq: number;
  reason: string;
  detail: string;
}

export interface ReplayResult {
  relayId: string;
  /** The last relay-stream message replayed. */
  upTo: { seq: number; time: string } | null;
  events: { relay: number; topology: number; skipped: number };
  /** The first skipped messages (corrupt, foreign, forged), with their sequences. */
  skipped: SkippedEntry[];
  relay: {
    state: RelayRunState;
    /** Runs of the daemon in the log (RelayStarted), and how many ended without RelayStopped (killed). */
    runs: number;
    uncleanEnds: number;
    /** Relay events the relay dropped while its bus was away (RelayEventsDropped): the log has holes. */
    eventsDropped: number;
    /** Topology keys the relay refused (TopologyKeyRefused): it did not follow that control plane. */
    keyRefusals: number;
    /** The control plane's epoch of the latest seed (null: none, or from before epochs). */
    epoch: string | null;
    software: string | null;
    publicKey: string | null;
    meshAddress: string | null;
    clientPool: string | null;
    /** The configuration of the latest run (RelayStarted v3), or null. */
    config: RelayConfig | null;
  };
  topology: {
    revision: number;
    /** SHA-256 of the revision and relays of the view (what `relay-core status`'s `topologyDigest` text hashes to). */
    digest: string | null;
    /** Whether the view could be rebuilt from the topology stream (else why not). */
    view: 'rebuilt' | 'unavailable';
    viewNote: string | null;
    relays: RelayRecord[];
    sessions: number;
    applied: number;
    seeds: number;
    resyncsRequested: number;
    rejected: Record<string, number>;
    /**
     * Valid topology messages of a revision the replay already holds (JetStream re-deliveries, or
     * copies): the first verified one counts, and an unverified one never displaces a verified one.
     */
    duplicates: number;
    /** Seeds whose recorded digest differs from the view rebuilt at that revision. */
    digestMismatches: number;
  };
  links: LinkReplay[];
  sessions: SessionReplay[];
  kernel: { rounds: number; mutations: number; failures: number; lastError: string | null };
  checks: {
    rounds: number;
    matched: number;
    mismatched: number;
    /** Checked rounds with a recorded digest of the reached scope (KernelReconciled v2), and those whose digest differs from the replayed host's. */
    reachedChecked: number;
    reachedMismatched: number;
    unchecked: number;
    uncheckedWhy: Record<string, number>;
    /** The first mismatching rounds. */
    mismatches: RoundCheck[];
    /** Recorded operations the replayed host refused (it was not as the log says). */
    inconsistent: number;
    inconsistencies: { seq: number; op: KernelOp; message: string }[];
  };
  /** Every round's check with both operation lists (only with `keepDerivedOps`). */
  rounds?: RoundCheck[];
  host: HostState;
}

/** A desired state as an owner last handed it to the kernel actor, by cause: the owner's state then. */
interface Desire {
  /** Null when the view it derives from could not be rebuilt. */
  derive: { owner: 'mesh'; state: MeshOwnerState } | { owner: 'clients'; state: ClientsOwnerState } | null;
}

/** A round recorded in parts, gathered until its last part. */
interface PartialRound {
  data: Extract<RelayEvent, { type: 'KernelReconciled' }>['data'];
  cause: string | null;
  ops: KernelOp[];
  /** The part expected next. */
  next: number;
  /** The relay-stream sequence of the last part in. */
  seq: number;
}

/** What a round's check derived: the owner's scope and desired state, filled in by the planning. */
interface Derived {
  scope: KernelScope | null;
  desired: DesiredHostState | null;
}

const MAX_LISTED = 50;
/** Desires kept per owner waiting for a round that names them (older ones were coalesced away live). */
const MAX_PENDING_DESIRES = 4096;

export type RelayConfig = NonNullable<Extract<RelayEvent, { type: 'RelayStarted' }>['data']['config']>;
type Config = RelayConfig;

/** Whether a relay-stream entry lies within the cut (entries arrive in sequence order). */
export function withinCut(e: { seq: number; time: string }, cut: ReplayCut | null): boolean {
  if (!cut) return true;
  return cut.kind === 'seq' ? e.seq <= cut.seq : Date.parse(e.time) <= cut.time.getTime();
}

export class RelayReplay {
  private readonly relayId: string;
  private readonly keepRounds: boolean;
  /** The topology stream by revision, each event (validated and upcast) kept as its JSON text: a
   *  parsed event takes several times the memory, and replay reads each back about once. */
  private readonly topo = new Map<number, string>();
  /** Revisions whose kept copy was verified (signed by the control plane). */
  private readonly topoVerified = new Set<number>();
  /** Further events at a revision already held, of other epochs (a restored control plane), by `revision:epoch`. */
  private readonly topoOther = new Map<string, string>();
  /** The epoch of each event in `topo` (absent: none). */
  private readonly topoEpoch = new Map<number, string>();
  private epoch: string | null = null;
  private eventsDropped = 0;
  private keyRefusals = 0;
  /** Keys of `topoOther` whose kept copy was verified. */
  private readonly topoOtherVerified = new Set<string>();
  private readonly host = new MemoryKernelBackend({ recordOps: false });
  private hostSeeded = false;
  /**
   * Per owner, the digest of its scope on the replayed host as it is now: computed whole once, then
   * updated by every round's operations (any owner's) from the objects they touched, as the relay updates
   * its own; dropped when a round removes an address (the host may drop routes elsewhere).
   */
  private readonly scopeDigests = new Map<string, { scope: KernelScope; digest: ScopeDigest }>();
  /**
   * Per owner, the desired state of its last round that matched, failed nothing and applied cleanly: the
   * replayed host holds it, so the next round is planned, as the relay plans it, over what changed since
   * (src/kernel/focus.ts), which gives the operations a whole-scope plan would.
   */
  private readonly planBases = new Map<string, { scope: KernelScope; desired: DesiredHostState }>();

  private counts = { relay: 0, topology: 0, skipped: 0 };
  private readonly skipped: SkippedEntry[] = [];
  private upTo: { seq: number; time: string } | null = null;

  private relayState: RelayRunState = 'not started';
  private runs = 0;
  private uncleanEnds = 0;
  private software: string | null = null;
  private publicKey: string | null = null;
  private meshAddress: string | null = null;
  private clientPool: string | null = null;
  /** NATS addresses of the latest registration (RelayRegistered v2): refused to clients. */
  private services: string[] = [];
  private config: Config | null = null;

  private view: TopologyView | null = emptyTopology(null);
  private viewNote: string | null = null;
  private topoCounters = { applied: 0, seeds: 0, resyncsRequested: 0, rejected: {} as Record<string, number>, duplicates: 0, digestMismatches: 0 };

  private links = new Map<string, LinkReplay>();
  private sessions = new Map<string, SessionReplay>();
  private kernel = { rounds: 0, mutations: 0, failures: 0, lastError: null as string | null };

  // The owner states of the topology and clients actors of the current run, folded as they fold them.
  private mesh: MeshOwnerState;
  /** The topology actor's last view could not be rebuilt: rounds it causes are unchecked. */
  private meshViewUnavailable = false;
  private clients: ClientsOwnerState;
  private readonly desires: Record<'mesh' | 'clients', Map<string, Desire>> = { mesh: new Map(), clients: new Map() };

  private checks = {
    rounds: 0,
    matched: 0,
    mismatched: 0,
    reachedChecked: 0,
    reachedMismatched: 0,
    unchecked: 0,
    uncheckedWhy: {} as Record<string, number>,
    inconsistent: 0,
  };
  /** A round recorded in parts (KernelReconciled v2), until its last part. */
  private roundParts: PartialRound | null = null;
  private readonly mismatches: RoundCheck[] = [];
  private readonly inconsistencies: { seq: number; op: KernelOp; message: string }[] = [];
  private readonly rounds: RoundCheck[] = [];

  constructor(opts: ReplayOptions) {
    this.relayId = opts.relayId;
    this.keepRounds = opts.keepDerivedOps ?? false;
    this.mesh = initialMeshState(this.relayId);
    this.clients = initialClientsState(this.relayId);
  }

  /**
   * Offer a topology-stream entry (all of them, before the relay's entries). A rejected one (unsigned,
   * forged, invalid) is listed and skipped. Of several valid messages for one revision the first
   * verified one is kept: a later copy never replaces it, and an unverified one (read with
   * `--no-verify`) only stands in until a verified one comes.
   */
  addTopology(e: LogEntry): void {
    if (!e.ok) {
      this.skip(e);
      return;
    }
    this.counts.topology++;
    const ev = e.event as TopologyEvent;
    if (!('revision' in ev.data)) return;
    const rev = ev.data.revision;
    const held = this.topo.has(rev);
    if (held && (this.topoEpoch.get(rev) ?? '') !== (ev.epoch ?? '')) {
      // Another epoch's event at a revision already held (a restored control plane): kept beside it.
      const k = `${rev}:${ev.epoch ?? ''}`;
      if (this.topoOther.has(k) && (this.topoOtherVerified.has(k) || !e.verified)) {
        this.topoCounters.duplicates++;
        return;
      }
      this.topoOther.set(k, JSON.stringify(ev));
      if (e.verified) this.topoOtherVerified.add(k);
      return;
    }
    if (held && (this.topoVerified.has(rev) || !e.verified)) {
      this.topoCounters.duplicates++;
      return;
    }
    if (held) this.topoCounters.duplicates++;
    this.topo.set(rev, JSON.stringify(ev));
    if (e.verified) this.topoVerified.add(rev);
    if (ev.epoch) this.topoEpoch.set(rev, ev.epoch);
  }

  /** Offer the relay's own entries, in the order it published them (`SourceOrder`). */
  add(e: LogEntry): void {
    if (!e.ok) {
      this.skip(e);
      return;
    }
    const ev = e.event as RelayEvent;
    if (ev.source !== this.relayId) return;
    this.counts.relay++;
    // Entries come in the order the relay published them, which can differ from the stream's a little.
    if (!this.upTo || e.seq > this.upTo.seq) this.upTo = { seq: e.seq, time: e.time };
    this.fold(ev, e.seq, e.time);
  }

  private skip(e: Extract<LogEntry, { ok: false }>): void {
    this.counts.skipped++;
    if (this.skipped.length < MAX_LISTED) this.skipped.push({ stream: e.stream, seq: e.seq, reason: e.skipped.reason, detail: e.skipped.detail });
  }

  private fold(ev: RelayEvent, seq: number, time: string): void {
    switch (ev.type) {
      case 'RelayStarted': {
        if (this.runs > 0 && this.relayState !== 'stopped') this.uncleanEnds++;
        this.runs++;
        this.relayState = 'registering';
        this.software = ev.data.software;
        this.publicKey = ev.data.publicKey;
        this.config = ev.data.config;
        // A new process: fresh actors (they announce themselves again); the host stays as it was.
        this.links.clear();
        this.sessions.clear();
        this.mesh = initialMeshState(this.relayId);
        this.meshViewUnavailable = false;
        this.clients = initialClientsState(this.relayId);
        this.desires.mesh.clear();
        this.desires.clients.clear();
        this.planBases.clear();
        if (ev.data.config && !this.hostSeeded) {
          // The host's sysctls before the relay touched them; the rest of the owned host starts empty.
          this.host.setSysctls(ev.data.config.sysctlsAtStart);
          this.hostSeeded = true;
          this.scopeDigests.clear();
        }
        return;
      }
      case 'RelayRegistered':
        this.meshAddress = ev.data.meshAddress;
        this.clientPool = ev.data.clientPool;
        this.services = ev.data.serviceCidrs;
        return;
      case 'TopologySeeded': {
        this.topoCounters.seeds++;
        this.epoch = ev.epoch ?? null;
        this.relayState = 'serving';
        // A relay since issue 15 keeps only the sessions that concern it (entering there; since issue 16
        // private ones leaving there too); one before kept them all.
        this.view = this.viewAt(ev.data.revision, ev.data.sessions === 'entry' ? this.relayId : null);
        if (this.view && ev.data.digest !== null && topologyDigest(this.view) !== ev.data.digest) {
          this.topoCounters.digestMismatches++;
          this.viewNote = `the view rebuilt at revision ${ev.data.revision} differs from the one the relay seeded (seq ${seq})`;
        }
        this.viewChanged(ev.id);
        return;
      }
      case 'TopologyEventApplied': {
        this.topoCounters.applied++;
        const te = this.topologyEvent(ev.data.revision);
        if (!this.view) {
          // Stays unavailable until a seed the stream can rebuild.
        } else if (!te || te.id !== ev.data.eventId) {
          this.unavailable(`topology event of revision ${ev.data.revision} (${ev.data.eventId}) is not in the topology stream`);
        } else {
          const r = applyTopologyEvent(this.view, te);
          if (r.kind === 'applied') this.view = r.state;
          else this.unavailable(`revision ${ev.data.revision} does not follow the view at ${this.view.revision}`);
        }
        this.viewChanged(ev.id);
        return;
      }
      case 'WireGuardKeyStaged':
        // The relay's own record took its new key before the registration that announced it.
        this.publicKey = ev.data.publicKey;
        if (this.view) this.view = withRelayKey(this.view, this.relayId, ev.data.publicKey);
        this.viewChanged(ev.id);
        return;
      case 'TopologyResyncRequested':
        this.topoCounters.resyncsRequested++;
        this.relayState = 'registering';
        return;
      case 'TopologyEventRejected':
        this.topoCounters.rejected[ev.data.reason] = (this.topoCounters.rejected[ev.data.reason] ?? 0) + 1;
        return;
      case 'TopologyKeyRefused':
        this.keyRefusals++;
        return;
      case 'RelayEventsDropped':
        this.eventsDropped += ev.data.count;
        return;
      // Proof-of-Bandwidth receipts change nothing of the relay's state that replay rebuilds.
      case 'ReceiptsSigned':
      case 'ReceiptsRefused':
      case 'MeasurementReported':
        return;
      case 'RelayDraining':
        this.relayState = 'draining';
        this.teardown(ev.id);
        return;
      case 'RelayStopped':
        this.relayState = 'stopped';
        return;
      case 'PeerEndpointResolved':
        this.endpointResolved(ev.data, ev.id);
        return;
      case 'LinkStateChanged': {
        const d = ev.data;
        if (d.state === 'removed') this.links.delete(d.peerId);
        else this.links.set(d.peerId, { ...d, since: time, seq });
        return;
      }
      case 'ClientSessionStateChanged': {
        const d = ev.data;
        const before = this.sessions.get(d.sessionId);
        if (d.state === 'closed') this.sessions.delete(d.sessionId);
        else
          this.sessions.set(d.sessionId, {
            sessionId: d.sessionId,
            publicKey: d.publicKey,
            address: d.address,
            exitId: d.exitId,
            mode: d.mode,
            role: d.role,
            confirmedExitId: before?.confirmedExitId ?? null,
            state: d.state,
            reason: d.reason,
            since: time,
            seq,
          });
        if (d.state === 'expired') this.sessionExpired(d.sessionId, ev.id);
        return;
      }
      case 'ClientSessionSteered': {
        const s = this.sessions.get(ev.data.sessionId);
        if (s) this.sessions.set(s.sessionId, { ...s, exitId: ev.data.exitId, confirmedExitId: ev.data.exitId });
        return;
      }
      case 'KernelReconciled':
        this.kernelPart(ev.data, ev.causationId, seq);
        return;
      case 'KernelOperationFailed':
        this.kernel.lastError = ev.data.message;
        return;
      default:
        assertNever(ev);
    }
  }

  private unavailable(note: string): void {
    this.view = null;
    this.viewNote = note;
  }

  /**
   * The topology event of `revision` in the current epoch: the one of that epoch, else (a revision from
   * before the epoch began) the only one the stream holds; undefined when there is none, or several of
   * other epochs (which history the epoch continues is not in the log).
   */
  private topologyEvent(revision: number): TopologyEvent | undefined {
    const epoch = this.epoch;
    const other = epoch ? this.topoOther.get(`${revision}:${epoch}`) : undefined;
    if (other !== undefined) return JSON.parse(other) as TopologyEvent;
    const text = this.topo.get(revision);
    if (text === undefined) return undefined;
    if (!epoch || this.topoEpoch.get(revision) === epoch || !this.topoOther.size) return JSON.parse(text) as TopologyEvent;
    for (const k of this.topoOther.keys()) if (k.startsWith(`${revision}:`)) return undefined;
    return JSON.parse(text) as TopologyEvent;
  }

  /** The view at `revision`, folded from the topology stream from the start (null if it has a hole). */
  private viewAt(revision: number, entry: string | null): TopologyView | null {
    let v = emptyTopology(entry);
    for (let r = 1; r <= revision; r++) {
      const te = this.topologyEvent(r);
      if (!te) {
        this.viewNote = `revision ${r} is not in the topology stream (retention?): the view at ${revision} cannot be rebuilt`;
        return null;
      }
      const out = applyTopologyEvent(v, te);
      if (out.kind !== 'applied') return null;
      v = out.state;
    }
    this.viewNote = null;
    return v;
  }

  private meshOptions(c: Config): MeshOptions {
    return {
      wgPrefix: c.wgPrefix,
      keepaliveSeconds: c.keepaliveSeconds,
      mtu: c.mtu,
      privateKeyFile: c.privateKeyFile,
      exitTableBase: c.exitTableBase,
      clientPrefix6: c.clientPrefix6 ?? null,
    };
  }

  private clientsOptions(c: Config): ClientsOwnerOptions {
    return {
      clients: {
        wgPrefix: c.wgPrefix,
        privateKeyFile: c.privateKeyFile,
        mtu: c.mtu,
        exitTableBase: c.exitTableBase,
        rulePriorityBase: c.rulePriorityBase,
        clientSupernet: c.clientSupernet,
        denyCidrs: c.denyCidrs,
        allowCidrs: c.allowCidrs,
        serviceCidrs: c.serviceCidrs,
        clientPrefix6: c.clientPrefix6 ?? null,
        privateSessions: c.privateSessions ?? false,
        echoService: c.echoService ?? false,
      },
      originalSysctls: c.sysctlsBefore,
    };
  }

  private remember(owner: 'mesh' | 'clients', cause: string, d: Desire): void {
    const m = this.desires[owner];
    m.set(cause, d);
    if (m.size > MAX_PENDING_DESIRES) m.delete(m.keys().next().value!);
  }

  /** What the relay does on a view: hand it to the topology and clients actors, each folding it with its owner's function. */
  private viewChanged(cause: string): void {
    const view = this.view;
    if (this.clients.tearingDown) return;
    if (!view) {
      // The actors got a view the replay cannot rebuild: rounds that name this cause are unchecked.
      this.meshViewUnavailable = true;
      this.remember('mesh', cause, { derive: null });
      this.remember('clients', cause, { derive: null });
      return;
    }
    if (takesView(this.mesh, view)) {
      this.mesh = meshOwner.view(this.mesh, { view });
      this.meshViewUnavailable = false;
      this.rememberMesh(cause);
    }
    if (!takesView(this.clients, view)) return;
    this.clients = clientsOwner.view(this.clients, { view, services: this.services });
    // A session's exit changes in the view (the actor announces no state for it).
    for (const s of this.sessions.values()) {
      const now = this.clients.sessions[s.sessionId];
      if (now && now.exitId !== s.exitId) this.sessions.set(s.sessionId, { ...s, exitId: now.exitId });
    }
    this.rememberClients(cause);
  }

  /** The mesh state the topology actor asks for now (its state is never mutated, only replaced). */
  private rememberMesh(cause: string): void {
    this.remember('mesh', cause, { derive: this.meshViewUnavailable ? null : { owner: 'mesh', state: this.mesh } });
  }

  /**
   * The topology actor folded a resolution that changed what it knows. Recorded results are exactly
   * the ones it kept, so they are taken as they are; one that changed the address caused a mesh round.
   */
  private endpointResolved(d: { peerId: string; host: string; address: string | null; error: string | null }, cause: string): void {
    if (this.mesh.tearingDown || !this.mesh.self) return;
    this.mesh = { ...this.mesh, resolved: { ...this.mesh.resolved, [d.peerId]: { host: d.host, address: d.address, error: d.error } } };
    this.rememberMesh(cause);
  }

  private rememberClients(cause: string): void {
    this.remember('clients', cause, { derive: this.view || this.clients.tearingDown ? { owner: 'clients', state: this.clients } : null });
  }

  private sessionExpired(sessionId: string, cause: string): void {
    if (!this.clients.self) return;
    this.clients = expireSession(this.clients, sessionId);
    this.rememberClients(cause);
  }

  private teardown(cause: string): void {
    if (!this.clients.self) return;
    this.mesh = meshOwner.teardown(this.mesh);
    this.remember('mesh', cause, { derive: { owner: 'mesh', state: this.mesh } });
    this.clients = clientsOwner.teardown(this.clients);
    this.rememberClients(cause);
  }

  /**
   * One part of a recorded round: a round is checked once its last part is in. A round whose parts do
   * not follow one another (the log lost some) is unchecked; the operations it has are applied.
   */
  private kernelPart(d: PartialRound['data'], cause: string | null, seq: number): void {
    const ops = d.ops as unknown as KernelOp[];
    const p = this.roundParts;
    const continues = p !== null && d.part > 1 && p.data.owner === d.owner && p.data.round === d.round && p.next === d.part;
    if (!continues) {
      this.flushParts();
      if (d.part !== 1) {
        this.kernelRound({ ...d, ops }, cause, seq, 'parts of the round are missing from the log');
        return;
      }
      this.roundParts = { data: d, cause, ops: [...ops], next: 2, seq };
    } else {
      for (const op of ops) p.ops.push(op);
      p.next++;
      p.seq = seq;
    }
    const r = this.roundParts!;
    if (r.next > d.parts) {
      this.roundParts = null;
      this.kernelRound({ ...r.data, ops: r.ops }, r.cause, seq, null);
    }
  }

  /** A round whose last parts never came (another round began, or the log ends): its operations still count. */
  private flushParts(): void {
    const r = this.roundParts;
    if (!r) return;
    this.roundParts = null;
    this.kernelRound({ ...r.data, ops: r.ops }, r.cause, r.seq, 'parts of the round are missing from the log');
  }

  private kernelRound(d: Omit<PartialRound['data'], 'ops'> & { ops: KernelOp[] }, cause: string | null, seq: number, incomplete: string | null): void {
    const { owner, ops: recorded, planned, failed } = d;
    this.kernel.rounds++;
    this.kernel.mutations += recorded.length;
    if (failed) this.kernel.failures++;
    // What the check derived: the owner's scope and desired state (null when unchecked).
    const from: Derived = { scope: null, desired: null };
    const check = incomplete ? this.uncheckedRound(owner, cause, recorded, seq, incomplete) : this.check(owner, cause, recorded, planned, failed, seq, from);
    const inconsistentBefore = this.checks.inconsistent;
    this.checks.rounds++;
    if (check.verdict === 'match') this.checks.matched++;
    else if (check.verdict === 'mismatch') {
      this.checks.mismatched++;
      if (this.mismatches.length < MAX_LISTED) this.mismatches.push(check);
    } else {
      this.checks.unchecked++;
      const why = check.why ?? 'unknown';
      this.checks.uncheckedWhy[why] = (this.checks.uncheckedWhy[why] ?? 0) + 1;
    }
    this.applyRecorded(recorded, seq);
    // What the relay recorded of its scope after the round, against the host replayed.
    if (check.verdict !== 'unchecked' && d.reached !== null && from.scope) {
      check.reached = this.digestOf(owner, from.scope) === d.reached ? 'match' : 'mismatch';
      this.checks.reachedChecked++;
      if (check.reached === 'mismatch') {
        this.checks.reachedMismatched++;
        if (check.verdict === 'match' && this.mismatches.length < MAX_LISTED) this.mismatches.push(check);
      }
    }
    if (check.verdict === 'match' && !failed && check.reached !== 'mismatch' && this.checks.inconsistent === inconsistentBefore && from.desired && from.scope)
      this.planBases.set(owner, { scope: from.scope, desired: from.desired });
    else this.planBases.delete(owner);
    if (this.keepRounds) this.rounds.push(check);
  }

  /** Apply a round's recorded operations to the replayed host, keeping the owners' scope digests up to date. */
  private applyRecorded(recorded: readonly KernelOp[], seq: number): void {
    if (recorded.length === 0) return;
    const removesAddress = recorded.some((op) => op.op === 'addr.del' || op.op === 'link.del' || op.op === 'link.down');
    if (removesAddress) this.scopeDigests.clear();
    const touched = opsFocus(recorded);
    const before = [...this.scopeDigests].map(([owner, d]) => ({ owner, d, objects: this.host.readSync(d.scope, touched) }));
    for (const op of recorded) {
      try {
        this.host.applySync(op);
      } catch (e) {
        this.checks.inconsistent++;
        if (this.inconsistencies.length < MAX_LISTED) this.inconsistencies.push({ seq, op, message: (e as Error).message });
      }
    }
    for (const { owner, d, objects } of before)
      this.scopeDigests.set(owner, { scope: d.scope, digest: updateScopeDigest(d.digest, objects, this.host.readSync(d.scope, touched)) });
  }

  /** The digest of `scope` on the replayed host now (the owner's kept one while its scope is the same). */
  private digestOf(owner: string, scope: KernelScope): ScopeDigest {
    const kept = this.scopeDigests.get(owner);
    if (kept && sameScope(kept.scope, scope)) return kept.digest;
    const digest = scopeDigest(this.host.readSync(scope));
    this.scopeDigests.set(owner, { scope, digest });
    return digest;
  }

  private uncheckedRound(owner: string, cause: string | null, recorded: KernelOp[], seq: number, why: string): RoundCheck {
    return { seq, owner, cause, recorded, verdict: 'unchecked', why, derived: null, reached: null };
  }

  private check(owner: string, cause: string | null, recorded: KernelOp[], planned: number, failed: boolean, seq: number, from: Derived): RoundCheck {
    const base = { seq, owner, cause, recorded, reached: null };
    const unchecked = (why: string): RoundCheck => ({ ...base, verdict: 'unchecked', why, derived: null });
    if (!this.config) return unchecked('no configuration recorded (RelayStarted before v3)');
    if (owner !== 'mesh' && owner !== 'clients') return unchecked(`unknown owner ${owner}`);
    if (cause === null) return unchecked('no causation id (recorded before causation)');
    const pending = this.desires[owner];
    const desire = pending.get(cause);
    if (!desire) return unchecked('cause not in the log');
    // Later rounds apply this desire or a newer one: older ones are spent.
    for (const k of pending.keys()) {
      if (k === cause) break;
      pending.delete(k);
    }
    if (!desire.derive) return unchecked('view unavailable');
    const derived = JSON.parse(JSON.stringify(this.plan(desire.derive, this.config, from))) as KernelOp[];
    // After a failure the applied ops are the plan less the failed ones and those that depend on them.
    const ok = failed ? planned === derived.length && isSubsequence(recorded, derived) : isDeepStrictEqual(derived, recorded);
    return { ...base, verdict: ok ? 'match' : 'mismatch', why: null, derived };
  }

  /** The operations the owner's actor would have had the kernel run for its desire, on the replayed host. */
  private plan(d: NonNullable<Desire['derive']>, c: Config, from: Derived): KernelOp[] {
    return d.owner === 'mesh' ? this.planOf(meshOwner, d.state, this.meshOptions(c), from) : this.planOf(clientsOwner, d.state, this.clientsOptions(c), from);
  }

  private planOf<S extends OwnerState, O>(owner: KernelOwner<S, O, unknown, unknown>, s: S, o: O, from: Derived): KernelOp[] {
    const sc = owner.scope(s, o);
    from.scope = sc;
    const desired = owner.desire(s, o);
    from.desired = desired;
    const basis = this.planBases.get(owner.owner);
    if (!basis || !sameScope(basis.scope, sc)) return planKernel(this.host.readSync(sc), desired);
    const focus = focusOf(basis.desired, desired);
    return planKernel(this.host.readSync(sc, focus), restrict(desired, focus));
  }

  result(): ReplayResult {
    // A log that ends inside a round recorded in parts: what it has of the round was applied.
    this.flushParts();
    const view = this.view;
    const out: ReplayResult = {
      relayId: this.relayId,
      upTo: this.upTo,
      events: { ...this.counts },
      skipped: [...this.skipped],
      relay: {
        state: this.relayState,
        runs: this.runs,
        uncleanEnds: this.uncleanEnds,
        eventsDropped: this.eventsDropped,
        keyRefusals: this.keyRefusals,
        epoch: this.epoch,
        software: this.software,
        publicKey: this.publicKey,
        meshAddress: this.meshAddress,
        clientPool: this.clientPool,
        config: this.config,
      },
      topology: {
        revision: view?.revision ?? -1,
        digest: view ? membershipDigest(view) : null,
        view: view ? 'rebuilt' : 'unavailable',
        viewNote: this.viewNote,
        relays: view ? [...view.relays.values()].sort((a, b) => a.id.localeCompare(b.id)) : [],
        sessions: view ? Object.keys(view.sessions).length : 0,
        ...this.topoCounters,
        rejected: { ...this.topoCounters.rejected },
      },
      links: [...this.links.values()].sort((a, b) => a.peerId.localeCompare(b.peerId)),
      sessions: [...this.sessions.values()].sort((a, b) => a.address.localeCompare(b.address, undefined, { numeric: true })),
      kernel: { ...this.kernel },
      checks: { ...this.checks, uncheckedWhy: { ...this.checks.uncheckedWhy }, mismatches: [...this.mismatches], inconsistencies: [...this.inconsistencies] },
      host: this.host.snapshot(),
    };
    if (this.keepRounds) out.rounds = [...this.rounds];
    return out;
  }
}

/** Whether `sub` is `all` with some elements left out, in the same order. */
function isSubsequence(sub: readonly KernelOp[], all: readonly KernelOp[]): boolean {
  let i = 0;
  for (const op of all) if (i < sub.length && isDeepStrictEqual(op, sub[i])) i++;
  return i === sub.length;
}
