import { request } from 'node:http';
import { describe, expect, it } from 'vitest';
import type { RelayStatus } from '../../src/daemon/relay-status.ts';
import { metricsRefusal, relayMetrics, LINK_STATES } from '../../src/daemon/relay-metrics.ts';
import { NETWORK_SPACE } from '../../src/kernel/egress.ts';
import { initialKernelStats } from '../../src/kernel/kernel.machine.ts';
import { controlPlaneMetrics } from '../../src/control-plane/metrics.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { parseListen, startMetricsServer } from '../../src/lib/metrics-server.ts';
import { find, one, parseExposition } from '../support/prometheus.ts';
import { relay } from '../support/given.ts';

const log = rootLogger({ test: 'relay-metrics' }, 'silent');
const NOW = Date.parse('2026-12-01T12:00:00Z');

function status(over: Partial<RelayStatus> = {}): RelayStatus {
  return {
    relayId: 'relay-1',
    state: 'serving',
    publicKey: 'k',
    meshAddress: '100.64.0.1',
    clientPool: '100.96.0.0/22',
    revision: 17,
    relays: [relay(1), relay(2), relay(3)],
    topologyDigest: 'd',
    counters: {
      applied: 15,
      duplicates: 2,
      gaps: 1,
      resyncs: 1,
      rejected: { 'bad-signature': 3, stale: 1 },
      heartbeats: 9,
      heartbeatsBehind: 0,
      otherEpoch: 0,
    },
    bus: {
      connected: true,
      server: 'nats://x',
      follower: 'following',
      published: 40,
      pending: 2,
      dropped: 5,
      resent: 7,
      window: 32,
      epoch: null,
      topologyKey: null,
      topologyKeyRefused: null,
    },
    links: [link('relay-2', 'rc1m2', 'up', NOW - 30_000, 1000, 2000), link('relay-3', 'rc1m3', 'handshaking', null, 0, 148)],
    clients: [client('s1', 'active', 'entry', 'standard'), client('s2', 'active', 'entry', 'standard'), client('s3', 'idle', 'exit', 'private')],
    kernel: { backend: 'memory', ...initialKernelStats(), rounds: 12, mutations: 80, failures: 1, failing: [] },
    policy: {
      table: 'rc1',
      egress: [
        { reason: 'network', v4: ['100.64.0.0/10'], v6: [], packets: 4, bytes: 240 },
        { reason: 'private', v4: ['10.0.0.0/8'], v6: [], packets: 7, bytes: 420 },
      ],
      filters: [{ name: 'mesh_spoofed', description: 'x', packets: 3, bytes: 180 }],
      countersAt: null,
    },
    error: null,
    ...over,
  } as RelayStatus;
}

function link(peerId: string, device: string, state: RelayStatus['links'][number]['state'], hs: number | null, rx: number, tx: number) {
  return {
    peerId,
    device,
    state,
    peerMeshAddress: '',
    peerEndpoint: '',
    endpointResolution: null,
    latestHandshakeMs: hs,
    rxBytes: rx,
    txBytes: tx,
    since: null,
  };
}
function client(sessionId: string, state: string, role: 'entry' | 'exit', mode: 'standard' | 'private') {
  return {
    sessionId,
    publicKey: '',
    address: sessionId,
    exitId: 'relay-2',
    mode,
    role,
    confirmedExitId: null,
    state,
    latestHandshakeMs: null,
    rxBytes: 0,
    txBytes: 0,
  };
}

async function scrape(m: ReturnType<typeof relayMetrics>) {
  const text = await m.registry.metrics();
  return parseExposition(text);
}

describe('relay metrics', () => {
  it('are set from the status: links (one series per state), handshakes, bytes, sessions, topology, kernel, bus, refusals', async () => {
    const m = relayMetrics('relay-1');
    m.update(status(), [], NOW);
    const { samples, types } = await scrape(m);
    expect(samples.every((s) => s.labels.relay === 'relay-1')).toBe(true);
    expect(one(samples, 'relaycore_relay_state', { state: 'serving' })).toBe(1);
    expect(one(samples, 'relaycore_topology_revision')).toBe(17);
    expect(one(samples, 'relaycore_topology_relays')).toBe(3);
    expect(one(samples, 'relaycore_topology_events_total', { outcome: 'rejected' })).toBe(4);
    expect(one(samples, 'relaycore_topology_events_total', { outcome: 'resync' })).toBe(1);
    expect(find(samples, 'relaycore_link_state', { peer: 'relay-2' })).toHaveLength(LINK_STATES.length);
    expect(find(samples, 'relaycore_link_state', { peer: 'relay-2' }).filter((s) => s.value === 1)).toEqual([
      expect.objectContaining({ labels: expect.objectContaining({ state: 'up', device: 'rc1m2' }) }),
    ]);
    expect(one(samples, 'relaycore_link_state', { peer: 'relay-3', state: 'handshaking' })).toBe(1);
    expect(one(samples, 'relaycore_link_handshake_age_seconds', { peer: 'relay-2' })).toBe(30);
    expect(one(samples, 'relaycore_link_last_handshake_timestamp_seconds', { peer: 'relay-2' })).toBe((NOW - 30_000) / 1000);
    // No handshake yet: no age at all, rather than a made-up one.
    expect(find(samples, 'relaycore_link_handshake_age_seconds', { peer: 'relay-3' })).toEqual([]);
    expect(one(samples, 'relaycore_link_receive_bytes_total', { peer: 'relay-2' })).toBe(1000);
    expect(one(samples, 'relaycore_link_transmit_bytes_total', { peer: 'relay-3' })).toBe(148);
    expect(types.get('relaycore_link_receive_bytes_total')).toBe('counter');
    expect(one(samples, 'relaycore_sessions', { state: 'active', role: 'entry', mode: 'standard' })).toBe(2);
    expect(one(samples, 'relaycore_sessions', { state: 'idle', role: 'exit', mode: 'private' })).toBe(1);
    expect(one(samples, 'relaycore_sessions', { state: 'closed', role: 'entry', mode: 'private' })).toBe(0);
    expect(one(samples, 'relaycore_kernel_rounds_total')).toBe(12);
    expect(one(samples, 'relaycore_kernel_operations_total')).toBe(80);
    expect(one(samples, 'relaycore_kernel_operation_failures_total')).toBe(1);
    expect(one(samples, 'relaycore_events_published_total')).toBe(40);
    expect(one(samples, 'relaycore_events_pending')).toBe(2);
    expect(one(samples, 'relaycore_events_dropped_total')).toBe(5);
    expect(one(samples, 'relaycore_events_resent_total')).toBe(7);
    expect(one(samples, 'relaycore_events_publish_window')).toBe(32);
    expect(one(samples, 'relaycore_bus_connected')).toBe(1);
    expect(one(samples, 'relaycore_client_refused_packets_total', { reason: 'private' })).toBe(7);
    expect(one(samples, 'relaycore_client_refused_bytes_total', { reason: 'network' })).toBe(240);
    expect(one(samples, 'relaycore_filter_dropped_packets_total', { filter: 'mesh_spoofed' })).toBe(3);
  });

  it('take fresher WireGuard counters when given, and forget a link that is gone', async () => {
    const m = relayMetrics('relay-1');
    m.update(status(), [{ dev: 'rc1m2', publicKey: 'p', endpoint: null, latestHandshakeMs: NOW - 2_000, rxBytes: 5000, txBytes: 6000 }], NOW);
    let { samples } = await scrape(m);
    expect(one(samples, 'relaycore_link_receive_bytes_total', { peer: 'relay-2' })).toBe(5000);
    expect(one(samples, 'relaycore_link_handshake_age_seconds', { peer: 'relay-2' })).toBe(2);
    m.update(status({ links: [], state: 'draining' }), [], NOW);
    ({ samples } = await scrape(m));
    expect(find(samples, 'relaycore_link_state')).toEqual([]);
    expect(find(samples, 'relaycore_link_receive_bytes_total')).toEqual([]);
    expect(find(samples, 'relaycore_relay_state')).toEqual([expect.objectContaining({ labels: { relay: 'relay-1', state: 'draining' }, value: 1 })]);
  });

  it('observe kernel rounds, heartbeats and publish lag as they happen', async () => {
    const m = relayMetrics('relay-1');
    const outcome = (focused: boolean) => ({
      owner: 'mesh',
      cause: null,
      planned: [],
      applied: [],
      failures: [],
      skipped: [],
      reached: {} as never,
      digest: {} as never,
      focused,
    });
    m.kernelRound(30, { outcomes: [outcome(true)], nowMs: NOW });
    m.kernelRound(700, { outcomes: [outcome(true), outcome(false)], nowMs: NOW });
    m.heartbeat(12, 'ok');
    m.heartbeat(2_000, 'failed');
    m.published(40);
    const { samples, types } = await scrape(m);
    expect(types.get('relaycore_kernel_round_duration_seconds')).toBe('histogram');
    expect(one(samples, 'relaycore_kernel_round_duration_seconds_count', { focused: 'true' })).toBe(1);
    expect(one(samples, 'relaycore_kernel_round_duration_seconds_count', { focused: 'false' })).toBe(1);
    expect(one(samples, 'relaycore_kernel_round_duration_seconds_bucket', { focused: 'true', le: '0.05' })).toBe(1);
    expect(one(samples, 'relaycore_kernel_round_duration_seconds_bucket', { focused: 'false', le: '0.5' })).toBe(0);
    expect(one(samples, 'relaycore_heartbeats_total', { result: 'ok' })).toBe(1);
    expect(one(samples, 'relaycore_heartbeats_total', { result: 'failed' })).toBe(1);
    expect(one(samples, 'relaycore_heartbeats_total', { result: 'not_registered' })).toBe(0);
    expect(one(samples, 'relaycore_heartbeat_duration_seconds_sum')).toBeCloseTo(2.012, 6);
    expect(one(samples, 'relaycore_event_publish_lag_seconds_count')).toBe(1);
  });
});

describe('metrics addresses', () => {
  it('parses PORT, ADDR:PORT and [IPV6]:PORT, and refuses names and nonsense', () => {
    expect(parseListen('9464')).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(parseListen('0.0.0.0:9100')).toEqual({ host: '0.0.0.0', port: 9100 });
    expect(parseListen('[::1]:9464')).toEqual({ host: '::1', port: 9464 });
    for (const bad of ['localhost:9464', '9464x', '1.2.3.4:70000', '::1:9464', '', '1.2.3:80'])
      expect(() => parseListen(bad), bad).toThrow(/metrics listen address/);
  });

  it('refuses scrapers from the relay network (mesh peers, clients, their IPv6), not others', () => {
    const network = [NETWORK_SPACE, '100.96.0.0/11', 'fd64::/96'];
    expect(metricsRefusal('100.64.0.2', network)).toMatch(/100\.64\.0\.0\/10/);
    expect(metricsRefusal('100.96.4.7', network)).not.toBeNull();
    expect(metricsRefusal('fd64::6460:407', network)).toMatch(/fd64::\/96/);
    expect(metricsRefusal('127.0.0.1', network)).toBeNull();
    expect(metricsRefusal('198.51.100.7', network)).toBeNull();
    expect(metricsRefusal('::1', network)).toBeNull();
  });
});

describe('the metrics server', () => {
  const get = (port: number, path: string) =>
    new Promise<{ status: number; type: string; body: string }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
      });
      req.on('error', reject);
      req.end();
    });

  it('serves /metrics after its `before`, 404 elsewhere, 403 to a refused address, 500 with the reason when `before` fails', async () => {
    const m = relayMetrics('relay-1');
    let fail = false;
    let refuse = false;
    const srv = await startMetricsServer({
      listen: { host: '127.0.0.1', port: 0 },
      registry: m.registry,
      logger: log,
      refuse: () => (refuse ? 'not from here' : null),
      before: async () => {
        if (fail) throw new Error('kernel unreadable');
        m.update(status(), [], NOW);
      },
    });
    try {
      const ok = await get(srv.address.port, '/metrics');
      expect(ok.status).toBe(200);
      expect(ok.type).toMatch(/^text\/plain; version=0\.0\.4/);
      expect(one(parseExposition(ok.body).samples, 'relaycore_topology_revision')).toBe(17);
      expect((await get(srv.address.port, '/status')).status).toBe(404);
      fail = true;
      expect(await get(srv.address.port, '/metrics')).toMatchObject({ status: 500, body: 'metrics failed: kernel unreadable\n' });
      refuse = true;
      expect(await get(srv.address.port, '/metrics')).toMatchObject({ status: 403, body: 'forbidden: not from here\n' });
      // A port already taken: a clear error, not a crash.
      await expect(startMetricsServer({ listen: srv.address, registry: m.registry, logger: log })).rejects.toThrow(
        /cannot serve metrics on 127\.0\.0\.1:\d+: .*EADDRINUSE/,
      );
    } finally {
      await srv.close();
    }
  });
});

describe('control-plane metrics', () => {
  it('count requests by known function (others as unknown), admissions and heartbeats on 2xx only, and the publisher’s lag', async () => {
    const m = controlPlaneMetrics(['register-server', 'heartbeat', 'connect-client']);
    m.request('register-server', 200, 40);
    m.request('register-server', 409, 5);
    m.request('heartbeat', 200, 8);
    m.request('heartbeat', 404, 3);
    m.request('../../etc', 404, 1);
    m.request(null, 404, 1);
    m.published([NOW - 50, NOW - 150, Number.NaN], 12, NOW);
    m.headRevision(14);
    m.publisherFailing(true);
    const { samples } = parseExposition(await m.registry.metrics());
    expect(one(samples, 'relaycore_cp_requests_total', { function: 'register-server', code: '200' })).toBe(1);
    expect(one(samples, 'relaycore_cp_requests_total', { function: 'register-server', code: '409' })).toBe(1);
    expect(one(samples, 'relaycore_cp_requests_total', { function: 'unknown', code: '404' })).toBe(2);
    expect(one(samples, 'relaycore_cp_admissions_total')).toBe(1);
    expect(one(samples, 'relaycore_cp_heartbeats_total')).toBe(1);
    expect(one(samples, 'relaycore_cp_request_duration_seconds_count', { function: 'connect-client' })).toBe(0);
    expect(one(samples, 'relaycore_cp_request_duration_seconds_sum', { function: 'register-server' })).toBeCloseTo(0.045, 6);
    expect(one(samples, 'relaycore_publisher_events_total')).toBe(3);
    expect(one(samples, 'relaycore_publisher_published_revision')).toBe(12);
    expect(one(samples, 'relaycore_topology_head_revision')).toBe(14);
    expect(one(samples, 'relaycore_publisher_failing')).toBe(1);
    // Two events with a readable commit time: 0.05 s and 0.15 s.
    expect(one(samples, 'relaycore_publisher_lag_seconds_count')).toBe(2);
    expect(one(samples, 'relaycore_publisher_lag_seconds_bucket', { le: '0.1' })).toBe(1);
  });
});
