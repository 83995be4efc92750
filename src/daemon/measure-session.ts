// The relay's part in capacity measurements (issue 17; docs/proof-of-bandwidth.md, "Measuring"). The view
// holds the measurements the relay takes part in (MeasurementScheduled, until RelayMeasured). As their
// target it opens its echo service on its mesh address (TCP ECHO_PORT), from just before the start to
// just after the end, for the measurers' mesh addresses only, and keeps its links' transmit counters as
// the relay's observer reads them, for its report of other traffic. As a measurer it opens its streams to the target's echo
// service at the start, sends keystream, checks every byte that comes back (src/pob/echo-check.ts) and
// counts the good ones per second. At the end each party signs its report with its identity key and
// hands it in (submit-measurement).
import { sign, type KeyObject } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { SubmitMeasurementRequest, SubmitMeasurementResponse } from '../contract/api-pob.ts';
import { ECHO_PORT, signReport, type UnsignedReport } from '../contract/pob-measure.ts';
import type { ScheduledMeasurement, TopologyView } from '../events/topology.fold.ts';
import type { PeerObservation } from '../kernel/host-state.ts';
import type { Logger } from '../lib/logger.ts';
import { backgroundOf, EchoStream, PerSecond } from '../pob/echo-check.ts';
import type { MeasureEmission } from './bus-session.ts';
import { ControlPlaneError } from './control-plane-client.ts';

export interface MeasureDeps {
  relayId: string;
  identityKey: KeyObject;
  /** The mesh links now: each peer and its device. */
  links(): { peerId: string; device: string }[];
  /** Be told of each reading of the devices by the relay's observer (and when it was taken); returns the unsubscribe. */
  onObserved(listener: (observations: readonly PeerObservation[], atMs: number) => void): () => void;
  submit(req: SubmitMeasurementRequest): Promise<SubmitMeasurementResponse>;
  /** Publish a relay event (`MeasurementReported`). */
  emit(em: MeasureEmission): void;
  log: Logger;
  now(): number;
  /** The echo service's port (ECHO_PORT; tests may use another). */
  echoPort?: number;
}

export interface MeasureSession {
  /** Take part in the view's measurements not yet taken up. */
  update(view: TopologyView): void;
  /** Measurements under way. */
  active(): string[];
  stop(): void;
}

/** How early before the start the target opens its echo service, and how long after the end it keeps it. */
const ECHO_OPEN_BEFORE_MS = 2_000;
const ECHO_KEEP_AFTER_MS = 2_000;
/** How long after the end a target waits for the observer's first reading past it before it reports without one. */
const LAST_SAMPLE_WAIT_MS = 12_000;
/** How much a measurer writes at a time. */
const CHUNK = 64 * 1024;
/** A measurer's read buffer per stream. */
const READ_BUFFER = 64 * 1024;

export function startMeasurements(d: MeasureDeps): MeasureSession {
  const log = d.log.child({ component: 'measure' });
  const seen = new Set<string>();
  const running = new Map<string, () => void>();
  let stopped = false;
  const port = d.echoPort ?? ECHO_PORT;

  const hand = async (m: ScheduledMeasurement, report: UnsignedReport) => {
    const signed = await signReport(report, (data) => sign(null, data, d.identityKey));
    const { measurementId, relayId, role, signature } = signed;
    const body: SubmitMeasurementRequest =
      signed.role === 'target'
        ? { measurementId, relayId, role, background: signed.background, signature }
        : { measurementId, relayId, role, echoed: signed.echoed, checks: signed.checks, failures: signed.failures, error: signed.error, signature };
    const event = {
      measurementId,
      role,
      targetId: m.targetId,
      bytes: (signed.role === 'target' ? signed.background : signed.echoed).reduce((a, b) => a + b, 0),
      checks: signed.role === 'measurer' ? signed.checks : null,
      failures: signed.role === 'measurer' ? signed.failures : null,
      error: signed.role === 'measurer' ? signed.error : null,
    };
    try {
      const r = await d.submit(body);
      log.info({ measurementId: m.id, role, state: r.state.state, capacity: r.state.capacity, lineRate: r.state.lineRate }, 'measurement report handed in');
      d.emit({ type: 'MeasurementReported', data: { ...event, outcome: r.state.state, refused: null } });
    } catch (e) {
      const err = e as Error;
      const refused = e instanceof ControlPlaneError && e.kind === 'refused';
      log.error({ measurementId: m.id, role, refused, err: err.message }, 'measurement report not handed in');
      d.emit({ type: 'MeasurementReported', data: { ...event, outcome: null, refused: err.message.slice(0, 512) } });
    }
  };

  // One echo listener, open while any measurement of this relay is in its window: a measurement that
  // starts right after another finds it open, and never races the close of the one before for the port.
  const windows = new Map<string, Set<string>>();
  const echoSockets = new Set<Socket>();
  let echo: Server | null = null;
  const allowedNow = (from: string) => [...windows.values()].some((a) => a.has(from));
  const openEcho = (m: ScheduledMeasurement, address: string, allowed: Set<string>) => {
    windows.set(m.id, allowed);
    if (echo) return;
    const server = createServer((s) => {
      const from = s.remoteAddress?.replace(/^::ffff:/, '') ?? '';
      if (!allowedNow(from)) {
        log.warn({ measurementId: m.id, from }, 'echo service: a connection from other than a measurer refused');
        s.destroy();
        return;
      }
      echoSockets.add(s);
      s.on('error', () => {});
      s.on('close', () => echoSockets.delete(s));
      s.pipe(s);
    });
    echo = server;
    server.on('error', (e) => {
      log.error({ measurementId: m.id, err: e.message }, 'echo service failed');
      if (echo === server) echo = null;
    });
    server.listen(port, address, () => log.info({ measurementId: m.id, address: `${address}:${port}` }, 'echo service open'));
  };
  const closeEcho = (id: string) => {
    windows.delete(id);
    // The streams of measurers no measurement under way takes go; the listener goes with the last window.
    for (const s of echoSockets) if (!allowedNow(s.remoteAddress?.replace(/^::ffff:/, '') ?? '')) s.destroy();
    if (windows.size === 0 && echo) {
      echo.close();
      echo = null;
    }
  };

  const asTarget = (m: ScheduledMeasurement, view: TopologyView) => {
    const startMs = Date.parse(m.startsAt);
    const endMs = startMs + m.seconds * 1000;
    const self = view.relays.get(d.relayId);
    const allowed = new Set(m.measurerIds.map((id) => view.relays.get(id)?.meshAddress).filter((a): a is string => a !== undefined));
    if (!self) return;
    const samples: { atMs: number; tx: Map<string, number> }[] = [];
    const timers: NodeJS.Timeout[] = [];
    let done = false;
    let reported = false;
    // The observer's readings, from before the start (the last one before it is kept) to the first one past the end.
    const unsubscribe = d.onObserved((observations, atMs) => {
      const byDevice = new Map(d.links().map((l) => [l.device, l.peerId]));
      const tx = new Map<string, number>();
      for (const o of observations) {
        const peer = byDevice.get(o.dev);
        if (peer) tx.set(peer, (tx.get(peer) ?? 0) + o.txBytes);
      }
      if (samples.length > 0 && samples[samples.length - 1]!.atMs <= startMs && atMs <= startMs) samples.pop();
      samples.push({ atMs, tx });
      if (atMs >= endMs) reportThenFinish();
    });
    const report = async () => {
      if (reported) return;
      reported = true;
      unsubscribe();
      const background = backgroundOf(samples, startMs, m.seconds, new Set(m.measurerIds));
      if (!stopped) await hand(m, { measurementId: m.id, relayId: d.relayId, role: 'target', background });
    };
    const finish = () => {
      if (done) return;
      done = true;
      unsubscribe();
      for (const t of timers) clearTimeout(t);
      closeEcho(m.id);
      running.delete(m.id);
    };
    // The echo service stays open until ECHO_KEEP_AFTER_MS past the end, even when the report went before.
    const reportThenFinish = () =>
      void report().finally(() => {
        if (!done) timers.push(setTimeout(finish, Math.max(0, endMs + ECHO_KEEP_AFTER_MS - d.now())));
      });
    timers.push(setTimeout(() => openEcho(m, self.meshAddress, allowed), Math.max(0, startMs - ECHO_OPEN_BEFORE_MS - d.now())));
    timers.push(
      setTimeout(
        () => {
          if (!reported) log.warn({ measurementId: m.id }, 'no reading of the devices past the end of the measurement: reporting without it');
          reportThenFinish();
        },
        Math.max(0, endMs + LAST_SAMPLE_WAIT_MS - d.now()),
      ),
    );
    running.set(m.id, finish);
  };

  const asMeasurer = (m: ScheduledMeasurement, view: TopologyView) => {
    const startMs = Date.parse(m.startsAt);
    const endMs = startMs + m.seconds * 1000;
    const target = view.relays.get(m.targetId);
    if (!target) return;
    const counts = new PerSecond(startMs, m.seconds);
    const good = (atMs: number, bytes: number) => void counts.add(atMs, bytes);
    const streams: { sock: Socket; echo: EchoStream }[] = [];
    let error: string | null = null;
    let ended = false;
    const timers: NodeJS.Timeout[] = [];
    const fail = (why: string) => {
      if (!ended && error === null) error = why.slice(0, 256);
    };
    const begin = () => {
      for (let i = 0; i < m.streams; i++) {
        const echo = new EchoStream();
        // Read into one buffer of the stream's own (no allocation per read: a link delivers about a segment per read).
        const sock = connect({
          host: target.meshAddress,
          port,
          onread: {
            buffer: Buffer.allocUnsafe(READ_BUFFER),
            callback: (n, buf) => {
              if (!ended) echo.receive(buf.subarray(0, n), d.now(), good);
              return true;
            },
          },
        });
        sock.setNoDelay(true);
        const pump = () => {
          while (!ended && sock.writable && sock.write(echo.next(CHUNK))) {
            // The socket takes more: keep writing until it pushes back.
          }
        };
        sock.on('connect', pump);
        sock.on('drain', pump);
        sock.on('error', (e) => fail(`stream ${i}: ${e.message}`));
        sock.on('close', () => fail(`stream ${i} closed by the target ${((d.now() - startMs) / 1000).toFixed(1)} s in`));
        streams.push({ sock, echo });
      }
    };
    const finish = () => {
      if (ended) return;
      ended = true;
      for (const t of timers) clearTimeout(t);
      for (const s of streams) s.sock.destroy();
      running.delete(m.id);
    };
    timers.push(setTimeout(begin, Math.max(0, startMs - d.now())));
    timers.push(
      setTimeout(
        () => {
          for (const s of streams) s.echo.flush(good);
          finish();
          const checks = streams.reduce((a, s) => a + s.echo.checks, 0);
          const failures = streams.reduce((a, s) => a + s.echo.failures, 0);
          if (!stopped) void hand(m, { measurementId: m.id, relayId: d.relayId, role: 'measurer', echoed: counts.counts, checks, failures, error });
        },
        Math.max(0, endMs - d.now()),
      ),
    );
    running.set(m.id, finish);
  };

  return {
    update: (view) => {
      if (stopped || !view.measurements) return;
      for (const m of Object.values(view.measurements)) {
        if (seen.has(m.id)) continue;
        seen.add(m.id);
        const endMs = Date.parse(m.startsAt) + m.seconds * 1000;
        const role = m.targetId === d.relayId ? 'target' : m.measurerIds.includes(d.relayId) ? 'measurer' : null;
        if (role === null) continue;
        if (endMs <= d.now()) {
          log.warn({ measurementId: m.id, role }, 'a measurement learned of after its end: not taken part in');
          continue;
        }
        log.info({ measurementId: m.id, role, targetId: m.targetId, startsAt: m.startsAt, seconds: m.seconds }, 'taking part in a capacity measurement');
        if (role === 'target') asTarget(m, view);
        else asMeasurer(m, view);
      }
    },
    active: () => [...running.keys()],
    stop: () => {
      stopped = true;
      for (const f of [...running.values()]) f();
    },
  };
}
