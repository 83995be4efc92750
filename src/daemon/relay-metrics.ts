import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ClientSessionState } from '../actors/client-session.machine.ts';
import type { LinkState } from '../actors/peer-link.machine.ts';
import { cidrToRange } from '../kernel/egress.ts';
import type { PeerObservation } from '../kernel/host-state.ts';
import type { ReconcileOutput } from '../kernel/kernel.machine.ts';
import type { RelayStatus } from './relay-status.ts';

/** Every state a link can be in: each link has one series per state, 1 for the one it is in. */
export const LINK_STATES: readonly LinkState[] = ['desired', 'configuring', 'handshaking', 'up', 'stale', 'down', 'removing', 'removed'];
/** Every state a client session can be in: sessions are counted per state, role and mode, 0 included. */
export const SESSION_STATES: readonly ClientSessionState[] = ['requested', 'configuring', 'ready', 'active', 'idle', 'expired', 'closing', 'closed'];

/** Seconds: kernel rounds take milliseconds to a few seconds (wireguard-go, many devices). */
const ROUND_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Seconds: a heartbeat or a publish is a round trip; a dead bus or control plane makes it long. */
const TRIP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * A relay's Prometheus metrics (docs/operations.md, "Metrics"). Two kinds:
 * - what the relay's status holds (links, sessions, topology, kernel and bus counts, refused packets),
 *   set from a fresh status at each scrape (`update`), with the links' WireGuard counters read then;
 * - what only happens as it goes (kernel round durations, heartbeats, event publish lag), observed
 *   by the shells as it happens (`kernelRound`, `heartbeat`, `published`).
 * Its own registry, so a process hosting many relays (the fleet bench) keeps them apart.
 */
export interface RelayMetrics {
  readonly registry: Registry;
  /** Set the status-derived series from `status`, with the links' counters from `observations` (fresher than the status's) at `nowMs`. */
  update(status: RelayStatus, observations: readonly PeerObservation[], nowMs: number): void;
  kernelRound(durationMs: number, out: ReconcileOutput): void;
  heartbeat(durationMs: number, result: 'ok' | 'failed' | 'not_registered'): void;
  /** A relay event JetStream acknowledged, `lagMs` after it was made. */
  published(lagMs: number): void;
}

export function relayMetrics(relayId: string, opts: { processMetrics?: boolean } = {}): RelayMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ relay: relayId });
  if (opts.processMetrics) collectDefaultMetrics({ register: registry });
  const gauge = (name: string, help: string, labelNames: string[] = []) => new Gauge({ name, help, labelNames, registers: [registry] });
  const total = (name: string, help: string, labelNames: string[] = []) => new Counter({ name, help, labelNames, registers: [registry] });
  const histogram = (name: string, help: string, buckets: number[], labelNames: string[] = []) =>
    new Histogram({ name, help, labelNames, buckets, registers: [registry] });

  const relayState = gauge('relaycore_relay_state', 'The relay actor state: 1 for the state it is in', ['state']);
  const revision = gauge('relaycore_topology_revision', 'The topology revision the relay has folded');
  const relays = gauge('relaycore_topology_relays', 'Relays in the relay’s topology view (itself included)');
  const topology = total('relaycore_topology_events_total', 'Topology messages by outcome since start', ['outcome']);
  const linkState = gauge('relaycore_link_state', 'Each mesh link’s state: 1 for the state it is in', ['peer', 'device', 'state']);
  const handshakeAt = gauge(
    'relaycore_link_last_handshake_timestamp_seconds',
    'When the link’s latest WireGuard handshake was (Unix time; absent before the first)',
    ['peer', 'device'],
  );
  const handshakeAge = gauge('relaycore_link_handshake_age_seconds', 'Seconds since the link’s latest WireGuard handshake (absent before the first)', [
    'peer',
    'device',
  ]);
  const linkRx = total('relaycore_link_receive_bytes_total', 'Bytes received on the link (WireGuard’s counter)', ['peer', 'device']);
  const linkTx = total('relaycore_link_transmit_bytes_total', 'Bytes sent on the link (WireGuard’s counter)', ['peer', 'device']);
  const rounds = total('relaycore_kernel_rounds_total', 'Kernel rounds since start');
  const mutations = total('relaycore_kernel_operations_total', 'Mutating kernel operations applied since start');
  const failures = total('relaycore_kernel_operation_failures_total', 'Kernel operations that failed since start');
  const failing = gauge('relaycore_kernel_failing_operations', 'Operations that failed in their owner’s latest round (retried)');
  const roundSeconds = histogram(
    'relaycore_kernel_round_duration_seconds',
    'How long a kernel round took (read, plan, apply, read back), by whether it looked only at what changed',
    ROUND_BUCKETS,
    ['focused'],
  );
  const published = total('relaycore_events_published_total', 'Relay events JetStream acknowledged');
  const pending = gauge('relaycore_events_pending', 'Relay events waiting for the bus');
  const dropped = total('relaycore_events_dropped_total', 'Relay events dropped because the queue was full');
  const resent = total('relaycore_events_resent_total', 'Relay events sent again because an acknowledgement did not come');
  const publishWindow = gauge('relaycore_events_publish_window', 'Relay events that may be out unacknowledged at once');
  const publishLag = histogram('relaycore_event_publish_lag_seconds', 'From a relay event’s making to JetStream’s acknowledgement', TRIP_BUCKETS);
  const busConnected = gauge('relaycore_bus_connected', '1 while the relay is connected to NATS');
  const sessions = gauge('relaycore_sessions', 'Client sessions this relay serves, by state, role (entry or exit) and mode', ['state', 'role', 'mode']);
  const refusedPackets = total('relaycore_client_refused_packets_total', 'Client packets refused by the egress policy, by reason', ['reason']);
  const refusedBytes = total('relaycore_client_refused_bytes_total', 'Client bytes refused by the egress policy, by reason', ['reason']);
  const filtered = total('relaycore_filter_dropped_packets_total', 'Packets the relay’s other filters dropped, by filter', ['filter']);
  const heartbeats = total('relaycore_heartbeats_total', 'Heartbeats by result', ['result']);
  const heartbeatSeconds = histogram(
    'relaycore_heartbeat_duration_seconds',
    'How long a heartbeat to the control plane took (answered or failed)',
    TRIP_BUCKETS,
  );
  for (const result of ['ok', 'failed', 'not_registered']) heartbeats.inc({ result }, 0);
  roundSeconds.zero({ focused: 'true' });
  roundSeconds.zero({ focused: 'false' });

  /** A counter set to an absolute value it holds elsewhere. */
  const setTotal = (c: Counter, labels: Record<string, string>, v: number) => c.inc(labels, Math.max(0, v));

  return {
    registry,
    update: (status, observations, nowMs) => {
      for (const m of [relayState, linkState, handshakeAt, handshakeAge, sessions]) m.reset();
      for (const c of [topology, linkRx, linkTx, rounds, mutations, failures, published, dropped, resent, refusedPackets, refusedBytes, filtered]) c.reset();
      relayState.set({ state: status.state }, 1);
      revision.set(status.revision);
      relays.set(status.relays.length);
      const c = status.counters;
      setTotal(topology, { outcome: 'applied' }, c.applied);
      setTotal(topology, { outcome: 'duplicate' }, c.duplicates);
      setTotal(topology, { outcome: 'gap' }, c.gaps);
      setTotal(topology, { outcome: 'other_epoch' }, c.otherEpoch);
      setTotal(
        topology,
        { outcome: 'rejected' },
        Object.values(c.rejected).reduce((a, b) => a + b, 0),
      );
      setTotal(topology, { outcome: 'resync' }, c.resyncs);

      const seen = new Map(observations.map((o) => [o.dev, o]));
      for (const l of status.links) {
        const ids = { peer: l.peerId, device: l.device };
        for (const state of LINK_STATES) linkState.set({ ...ids, state }, l.state === state ? 1 : 0);
        const o = seen.get(l.device);
        const at = o ? o.latestHandshakeMs : l.latestHandshakeMs;
        if (at !== null) {
          handshakeAt.set(ids, Math.floor(at / 1000));
          handshakeAge.set(ids, Math.max(0, (nowMs - at) / 1000));
        }
        setTotal(linkRx, ids, o ? o.rxBytes : l.rxBytes);
        setTotal(linkTx, ids, o ? o.txBytes : l.txBytes);
      }

      const k = status.kernel;
      setTotal(rounds, {}, k.rounds);
      setTotal(mutations, {}, k.mutations);
      setTotal(failures, {}, k.failures);
      failing.set(k.failing.length);

      setTotal(published, {}, status.bus.published);
      setTotal(dropped, {}, status.bus.dropped);
      setTotal(resent, {}, status.bus.resent);
      publishWindow.set(status.bus.window);
      pending.set(status.bus.pending);
      busConnected.set(status.bus.connected ? 1 : 0);

      const count = new Map<string, number>();
      for (const s of status.clients) {
        const k = `${s.state}\0${s.role}\0${s.mode}`;
        count.set(k, (count.get(k) ?? 0) + 1);
      }
      for (const state of SESSION_STATES)
        for (const role of ['entry', 'exit'])
          for (const mode of ['standard', 'private']) sessions.set({ state, role, mode }, count.get(`${state}\0${role}\0${mode}`) ?? 0);

      if (status.policy) {
        // Rules of one reason share its counter: one series per reason.
        const byReason = new Map(status.policy.egress.map((r) => [r.reason, r]));
        for (const [reason, r] of byReason) {
          setTotal(refusedPackets, { reason }, r.packets);
          setTotal(refusedBytes, { reason }, r.bytes);
        }
        for (const f of status.policy.filters) setTotal(filtered, { filter: f.name }, f.packets);
      }
    },
    kernelRound: (durationMs, out) => {
      const focused = out.outcomes.length > 0 && out.outcomes.every((o) => o.focused);
      roundSeconds.observe({ focused: String(focused) }, durationMs / 1000);
    },
    heartbeat: (durationMs, result) => {
      heartbeats.inc({ result });
      heartbeatSeconds.observe(durationMs / 1000);
    },
    published: (lagMs) => publishLag.observe(Math.max(0, lagMs) / 1000),
  };
}

/**
 * Why `remote` may not scrape a relay's metrics, or null: an address of the network (mesh addresses
 * and client pools: `NETWORK_SPACE`), of the clients' space or their IPv6 prefix. Metrics are for the
 * operator's network, whatever address they are served on. Pure.
 */
export function metricsRefusal(remote: string, networkCidrs: readonly string[]): string | null {
  const r = cidrToRange(remote);
  if (!r) return null;
  for (const cidr of networkCidrs) {
    const c = cidrToRange(cidr);
    if (c && c.v6 === r.v6 && r.range.lo >= c.range.lo && r.range.hi <= c.range.hi) return `${remote} is in the relay network's ${cidr}`;
  }
  return null;
}
