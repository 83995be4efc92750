import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Seconds: a function answers in milliseconds; a slow database or a cold function takes seconds. */
const REQUEST_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * The control plane's Prometheus metrics (docs/operations.md, "Metrics"): every request the gateway
 * passes or refuses, by function and status code, and how long it took; admissions and heartbeats
 * counted apart (what the registration and heartbeat functions answered with 2xx); the topology
 * publisher's progress and lag (from an event's commit to JetStream's acknowledgement).
 */
export interface ControlPlaneMetrics {
  readonly registry: Registry;
  /** A request the gateway answered: its function (null: no such function), status code and duration. */
  request(fn: string | null, code: number, durationMs: number): void;
  /** Topology events JetStream acknowledged: their commit times (ms), and when they were acknowledged. */
  published(committedAtMs: readonly number[], revision: number, ackedAtMs: number): void;
  /** The publisher failed a round (it retries) or published again. */
  publisherFailing(failing: boolean): void;
  /** The database's head revision, read at each scrape: the publisher's backlog is head − published. */
  headRevision(revision: number): void;
}

/** The functions whose requests are counted by name; any other path is `unknown` (bounded label values). */
export function controlPlaneMetrics(functions: readonly string[], opts: { processMetrics?: boolean } = {}): ControlPlaneMetrics {
  const registry = new Registry();
  if (opts.processMetrics) collectDefaultMetrics({ register: registry });
  const known = new Set(functions);
  const requests = new Counter({
    name: 'relaycore_cp_requests_total',
    help: 'Requests the gateway answered, by function and HTTP status code',
    labelNames: ['function', 'code'],
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'relaycore_cp_request_duration_seconds',
    help: 'How long the gateway took to answer a request, by function (the token check included)',
    labelNames: ['function'],
    buckets: REQUEST_BUCKETS,
    registers: [registry],
  });
  const admissions = new Counter({
    name: 'relaycore_cp_admissions_total',
    help: 'Relay registrations admitted (register-server answered 2xx)',
    registers: [registry],
  });
  const heartbeats = new Counter({ name: 'relaycore_cp_heartbeats_total', help: 'Relay heartbeats answered with 2xx', registers: [registry] });
  const published = new Counter({ name: 'relaycore_publisher_events_total', help: 'Topology events the publisher put on JetStream', registers: [registry] });
  const publishedRevision = new Gauge({
    name: 'relaycore_publisher_published_revision',
    help: 'The last topology revision JetStream acknowledged',
    registers: [registry],
  });
  const head = new Gauge({ name: 'relaycore_topology_head_revision', help: 'The newest topology revision in the database', registers: [registry] });
  const lag = new Histogram({
    name: 'relaycore_publisher_lag_seconds',
    help: 'From a topology event’s commit to JetStream’s acknowledgement',
    buckets: REQUEST_BUCKETS,
    registers: [registry],
  });
  const failing = new Gauge({ name: 'relaycore_publisher_failing', help: '1 while the publisher cannot publish (it retries)', registers: [registry] });
  for (const fn of functions) duration.zero({ function: fn });
  return {
    registry,
    request: (fn, code, durationMs) => {
      const name = fn !== null && known.has(fn) ? fn : 'unknown';
      requests.inc({ function: name, code: String(code) });
      duration.observe({ function: name }, durationMs / 1000);
      if (code >= 200 && code < 300 && name === 'register-server') admissions.inc();
      if (code >= 200 && code < 300 && name === 'heartbeat') heartbeats.inc();
    },
    published: (committedAtMs, revision, ackedAtMs) => {
      published.inc(committedAtMs.length);
      publishedRevision.set(revision);
      for (const t of committedAtMs) if (Number.isFinite(t)) lag.observe(Math.max(0, ackedAtMs - t) / 1000);
    },
    publisherFailing: (f) => failing.set(f ? 1 : 0),
    headRevision: (r) => head.set(r),
  };
}
