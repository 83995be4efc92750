import type { SnapshotFrom } from 'xstate';
import type { ClientSessionState } from '../actors/client-session.machine.ts';
import type { clientsMachine } from '../actors/clients.machine.ts';
import { serviceCidrsOf } from '../kernel/owners/clients.ts';
import type { LinkState } from '../actors/peer-link.machine.ts';
import type { relayMachine } from '../actors/relay.machine.ts';
import type { topologyMachine } from '../actors/topology.machine.ts';
import { canonicalMembership } from '../events/topology.fold.ts';
import type { RelayRecord, SessionMode } from '../contract/topology.events.ts';
import { clientEgressRules, FILTER_COUNTERS, filterCounters, nftTableName, type FilterCounter } from '../kernel/clients.ts';
import { refusedCounter, type EgressRule } from '../kernel/egress.ts';
import { endpointName } from '../kernel/endpoint-resolution.ts';
import type { KernelBackend, NftCounter } from '../kernel/host-state.ts';
import { initialKernelStats, type KernelStats } from '../kernel/kernel.machine.ts';
import { meshIndex } from '../kernel/mesh.ts';
import type { Deps } from '../lib/deps.ts';
import type { Logger } from '../lib/logger.ts';
import type { BusStatus } from './bus-session.ts';

/** What `relay-core status` shows: the status socket's answer (src/daemon/status-server.ts). */
export interface RelayStatus {
  relayId: string;
  state: string;
  publicKey: string;
  meshAddress: string | null;
  clientPool: string | null;
  revision: number;
  relays: RelayRecord[];
  /** The canonical text of the revision and the relays: equal on relays that agree on the topology. */
  topologyDigest: string;
  counters: SnapshotFrom<typeof relayMachine>['context']['counters'];
  bus: BusStatus;
  links: LinkStatus[];
  clients: ClientStatus[];
  kernel: { backend: KernelBackend['kind'] } & KernelStats;
  /** The egress policy and mesh filters (docs/security.md), with their counters; null before registration. */
  policy: PolicyStatus | null;
  error: string | null;
}

export interface PolicyStatus {
  /** The nftables table (family inet) that holds them. */
  table: string;
  /** Refused destinations by reason, in evaluation order, and what each refused since the table was set. */
  egress: (EgressRule & NftCounter)[];
  /** The other filters' drops. */
  filters: ({ name: FilterCounter; description: string } & NftCounter)[];
  /** When the counters were read (ISO time), or null if not yet. */
  countersAt: string | null;
}

export interface LinkStatus {
  peerId: string;
  device: string;
  state: LinkState;
  peerMeshAddress: string;
  peerEndpoint: string;
  /**
   * For an endpoint given as a DNS name: the address it resolved to (programmed as the peer's
   * endpoint), or null with the error of the last change (null too while the first lookup runs).
   * Null for an endpoint given as an address.
   */
  endpointResolution: { host: string; address: string | null; error: string | null } | null;
  latestHandshakeMs: number | null;
  rxBytes: number;
  txBytes: number;
  /** When the link entered its state (ISO time). */
  since: string | null;
}

export interface ClientStatus {
  sessionId: string;
  publicKey: string;
  address: string;
  exitId: string;
  mode: SessionMode;
  /** This relay's part: the session's entry, or a private session's exit. */
  role: 'entry' | 'exit';
  /** The exit the control plane was last told this entry steers to. */
  confirmedExitId: string | null;
  state: ClientSessionState;
  latestHandshakeMs: number | null;
  rxBytes: number;
  txBytes: number;
}

type RelaySnapshot = SnapshotFrom<typeof relayMachine>;

/** Where the status comes from besides the relay actor's snapshot. */
export interface StatusSources {
  relayId: string;
  wgPrefix: string;
  kernel: KernelBackend['kind'];
  publicKey(): string;
  bus(): BusStatus;
  /** The named counters of an nftables table (read only). */
  counters(table: string): Promise<Record<string, NftCounter>>;
}

/**
 * The status projection: the relay's state as `relay-core status` shows it, read from the relay actor's
 * snapshot (and its children's) and from the shells. It keeps what the snapshots do not hold: when each
 * link entered its state, and the latest read of the policy table's counters (read when someone asks for
 * the status, never on a timer).
 */
export interface StatusProjection {
  /** A link's state changed now (its `LinkStateChanged` event). */
  linkChanged(peerId: string): void;
  /** Read the policy table's counters again (failures are logged; the last read stays). */
  readCounters(s: RelaySnapshot): Promise<void>;
  status(s: RelaySnapshot): RelayStatus;
}

export function statusProjection(src: StatusSources, log: Logger, deps: Deps): StatusProjection {
  const linkSince = new Map<string, string>();
  let policyCounters: { at: string; values: Record<string, NftCounter> } | null = null;
  /** The relay's nftables table, once registration gave it its mesh address. */
  const policyTable = (s: RelaySnapshot): string | null => {
    const reg = s.context.registration;
    return reg ? nftTableName(src.wgPrefix, meshIndex(reg.relay.meshAddress)) : null;
  };
  /** The policy as the clients actor programs it (configured and registered service addresses). */
  const policyStatus = (s: RelaySnapshot): PolicyStatus | null => {
    const table = policyTable(s);
    if (!table) return null;
    const clientsCtx = (s.children.clients?.getSnapshot() as SnapshotFrom<typeof clientsMachine> | undefined)?.context;
    if (!clientsCtx?.clients) return null;
    const rules = clientEgressRules({ ...clientsCtx.clients, serviceCidrs: serviceCidrsOf(clientsCtx) });
    const counter = (name: string): NftCounter => policyCounters?.values[name] ?? { packets: 0, bytes: 0 };
    return {
      table,
      egress: rules.map((r) => ({ ...r, ...counter(refusedCounter(r.reason)) })),
      filters: filterCounters(clientsCtx.clients.privateSessions).map((name) => ({ name, description: FILTER_COUNTERS[name], ...counter(name) })),
      countersAt: policyCounters?.at ?? null,
    };
  };
  return {
    linkChanged: (peerId) => void linkSince.set(peerId, new Date(deps.now()).toISOString()),
    readCounters: async (s) => {
      const table = policyTable(s);
      if (!table) return;
      try {
        policyCounters = { at: new Date(deps.now()).toISOString(), values: await src.counters(table) };
      } catch (e) {
        log.warn({ err: String(e), table }, 'cannot read the nftables counters');
      }
    },
    status: (s) => {
      const view = s.context.view;
      return {
        relayId: src.relayId,
        state: String(s.value),
        publicKey: src.publicKey(),
        meshAddress: s.context.registration?.relay.meshAddress ?? null,
        clientPool: s.context.registration?.relay.clientPool ?? null,
        revision: view.revision,
        relays: [...view.relays.values()].sort((a, b) => a.id.localeCompare(b.id)),
        topologyDigest: canonicalMembership(view),
        counters: s.context.counters,
        bus: src.bus(),
        links: linkStatuses(s, linkSince),
        clients: clientStatuses(s),
        kernel: { backend: src.kernel, ...(s.children.kernel?.getSnapshot().context.stats ?? initialKernelStats()) },
        policy: policyStatus(s),
        error: s.context.error,
      };
    },
  };
}

/** Every link actor's state, read from the topology actor's children. */
function linkStatuses(s: RelaySnapshot, since: Map<string, string>): LinkStatus[] {
  const topo = s.children.topology?.getSnapshot() as SnapshotFrom<typeof topologyMachine> | undefined;
  if (!topo?.context?.links) return [];
  const resolved = topo.context.resolved ?? {};
  return [...topo.context.links.values()]
    .map((ref) => {
      const l = ref.getSnapshot();
      const host = endpointName(l.context.peer);
      const r = resolved[l.context.peer.id];
      return {
        peerId: l.context.peer.id,
        device: l.context.device,
        state: l.value as LinkState,
        peerMeshAddress: l.context.peer.meshAddress,
        peerEndpoint: l.context.peer.endpoint,
        endpointResolution: host === null ? null : r && r.host === host ? { ...r } : { host, address: null, error: null },
        latestHandshakeMs: l.context.latestHandshakeMs,
        rxBytes: l.context.rxBytes,
        txBytes: l.context.txBytes,
        since: since.get(l.context.peer.id) ?? null,
      };
    })
    .sort((a, b) => a.peerId.localeCompare(b.peerId));
}

/** Every client session's state, read from the clients actor's children. */
function clientStatuses(s: RelaySnapshot): ClientStatus[] {
  const c = s.children.clients?.getSnapshot() as SnapshotFrom<typeof clientsMachine> | undefined;
  if (!c?.context?.actors) return [];
  return [...c.context.actors.values()]
    .map((ref) => {
      const a = ref.getSnapshot();
      return {
        sessionId: a.context.session.id,
        publicKey: a.context.session.publicKey,
        address: a.context.session.address,
        exitId: a.context.session.exitId,
        mode: a.context.session.mode,
        role: a.context.role,
        confirmedExitId: a.context.confirmedExit,
        state: a.value as ClientSessionState,
        latestHandshakeMs: a.context.latestHandshakeMs,
        rxBytes: a.context.rxBytes,
        txBytes: a.context.txBytes,
      };
    })
    .sort((a, b) => a.address.localeCompare(b.address, undefined, { numeric: true }));
}
