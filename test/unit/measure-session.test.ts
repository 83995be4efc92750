import { connect, createServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { SubmitMeasurementRequest, SubmitMeasurementResponse } from '../../src/contract/api-pob.ts';
import { verifyReport, type SignedReport } from '../../src/contract/pob-measure.ts';
import { startMeasurements, type MeasureSession } from '../../src/daemon/measure-session.ts';
import { seedTopology, type ScheduledMeasurement } from '../../src/events/topology.fold.ts';
import { generateSigningKeyPair, importPrivateKey } from '../../src/events/signing.ts';
import type { PeerObservation } from '../../src/kernel/host-state.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { relay } from '../support/given.ts';

/**
 * The measurement shell on loopback: a target (relay-3 on 127.0.0.3) and a measurer (relay-1, whose
 * connections leave from 127.0.0.1) take part in one 2 s measurement through real TCP sockets; each
 * signs its report with its own identity key and hands it in, and says so in a MeasurementReported;
 * strangers get no echo, and a corrupted echo fails the checks.
 */
describe('the measurement shell', () => {
  const sessions: MeasureSession[] = [];
  const timers: NodeJS.Timeout[] = [];
  afterEach(() => {
    for (const s of sessions.splice(0)) s.stop();
    for (const t of timers.splice(0)) clearInterval(t);
  });
  const keys = { 'relay-1': generateSigningKeyPair(), 'relay-3': generateSigningKeyPair() };
  const relays = [relay(1, { meshAddress: '127.0.0.1' }), relay(3, { meshAddress: '127.0.0.3' })];
  const port = 40_000 + Math.floor(Math.random() * 20_000);

  /**
   * A stand-in for the relay's observer: a reading each second of two links, one to the measurer
   * relay-1 (its bytes are the echo's, left out) and one to relay-2, which sends 1,000 bytes a second.
   */
  const observer = () => {
    let n = 0;
    const listeners = new Set<(o: readonly PeerObservation[], atMs: number) => void>();
    timers.push(
      setInterval(() => {
        n++;
        const o = [
          { dev: 'wg-r1', publicKey: 'k1', endpoint: null, latestHandshakeMs: null, rxBytes: 0, txBytes: n * 1_000_000 },
          { dev: 'wg-r2', publicKey: 'k2', endpoint: null, latestHandshakeMs: null, rxBytes: 0, txBytes: n * 1_000 },
        ];
        for (const l of listeners) l(o, Date.now());
      }, 1_000),
    );
    return {
      links: () => [
        { peerId: 'relay-1', device: 'wg-r1' },
        { peerId: 'relay-2', device: 'wg-r2' },
      ],
      onObserved: (l: (o: readonly PeerObservation[], atMs: number) => void) => {
        listeners.add(l);
        return () => listeners.delete(l);
      },
    };
  };

  function party(relayId: 'relay-1' | 'relay-3', submitted: SubmitMeasurementRequest[], events: { type: string; data: Record<string, unknown> }[]) {
    const s = startMeasurements({
      relayId,
      identityKey: importPrivateKey(keys[relayId].seed),
      ...observer(),
      submit: async (req) => {
        submitted.push(req);
        return { measurementId: req.measurementId, relayId, stored: true, state: { state: 'scheduled' } } as unknown as SubmitMeasurementResponse;
      },
      emit: (e) => void events.push(e),
      log: rootLogger({ test: 'measure-session' }, 'silent'),
      now: Date.now,
      echoPort: port,
    });
    sessions.push(s);
    return s;
  }

  const measurement = (): ScheduledMeasurement => ({
    id: '00000000-0000-4000-8000-0000000000cc',
    targetId: 'relay-3',
    measurerIds: ['relay-1'],
    startsAt: new Date(Date.now() + 2_500).toISOString(),
    seconds: 2,
    streams: 2,
    r: 0.1,
  });

  it('echoes every byte to the measurer (only), which counts them per second and checks them; both sign and hand in', async () => {
    const submitted: SubmitMeasurementRequest[] = [];
    const events: { type: string; data: Record<string, unknown> }[] = [];
    const m = measurement();
    const target = party('relay-3', submitted, events);
    const measurer = party('relay-1', submitted, events);
    for (const [p, id] of [
      [target, 'relay-3'],
      [measurer, 'relay-1'],
    ] as const)
      p.update(seedTopology(5, relays, [], id, [m]));
    // The same view again takes part once.
    measurer.update(seedTopology(5, relays, [], 'relay-1', [m]));
    // The echo service is open from 2 s before the start, for the measurers only: a connection from
    // another address is closed without an echo.
    await new Promise((r) => setTimeout(r, 1_000));
    const stranger = await new Promise<{ echoed: number; closed: boolean }>((resolve) => {
      let echoed = 0;
      const c = connect({ host: '127.0.0.3', port, localAddress: '127.0.0.2' }, () => c.write('hello'));
      c.on('data', (b: Buffer) => {
        echoed += b.length;
      });
      c.on('error', () => {});
      c.on('close', () => resolve({ echoed, closed: true }));
      setTimeout(() => resolve({ echoed, closed: false }), 1_000);
    });
    expect(stranger).toEqual({ echoed: 0, closed: true });
    const until = Date.now() + 8_000;
    while (submitted.length < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    const mine = submitted.find((r) => r.role === 'measurer')!;
    expect(mine).toMatchObject({ measurementId: m.id, relayId: 'relay-1', failures: 0, error: null });
    expect(mine.echoed).toHaveLength(2);
    expect(mine.echoed!.every((b) => b > 1_000_000)).toBe(true);
    expect(mine.checks).toBeGreaterThan(0);
    expect(await verifyReport(keys['relay-1'].publicKey, mine as SignedReport)).toBe(true);
    // The target's other traffic: relay-2's 1,000 bytes a second, as its observer read them.
    const theirs = submitted.find((r) => r.role === 'target')!;
    expect(theirs).toMatchObject({ relayId: 'relay-3' });
    expect(theirs.background).toHaveLength(2);
    for (const b of theirs.background!) {
      expect(b).toBeGreaterThan(900);
      expect(b).toBeLessThan(1_100);
    }
    expect(await verifyReport(keys['relay-3'].publicKey, theirs as SignedReport)).toBe(true);
    expect(submitted).toHaveLength(2);
    expect(events.map((e) => [e.type, e.data.role, e.data.outcome])).toEqual(
      expect.arrayContaining([
        ['MeasurementReported', 'measurer', 'scheduled'],
        ['MeasurementReported', 'target', 'scheduled'],
      ]),
    );
  }, 15_000);

  it('a corrupted echo fails the measurer’s checks: nothing of it is counted', async () => {
    const submitted: SubmitMeasurementRequest[] = [];
    const m = measurement();
    // A cheating target: it answers on the echo port with every byte flipped.
    const cheat = createServer((s) => {
      s.on('error', () => {});
      s.on('data', (b: Buffer) => s.write(Buffer.from(b.map((x) => x ^ 0xff))));
    });
    await new Promise<void>((r) => cheat.listen(port + 1, '127.0.0.3', r));
    try {
      const measurer = startMeasurements({
        relayId: 'relay-1',
        identityKey: importPrivateKey(keys['relay-1'].seed),
        ...observer(),
        submit: async (req) => {
          submitted.push(req);
          return { state: { state: 'rejected' } } as unknown as SubmitMeasurementResponse;
        },
        emit: () => {},
        log: rootLogger({ test: 'measure-session' }, 'silent'),
        now: Date.now,
        echoPort: port + 1,
      });
      sessions.push(measurer);
      measurer.update(seedTopology(5, relays, [], 'relay-1', [m]));
      const until = Date.now() + 8_000;
      while (submitted.length < 1 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      expect(submitted[0]!.failures).toBeGreaterThan(0);
      expect(submitted[0]!.echoed).toEqual([0, 0]);
    } finally {
      cheat.close();
    }
  }, 15_000);

  it('a measurement right after another finds the echo service open (the one listener outlives the first window)', async () => {
    const submitted: SubmitMeasurementRequest[] = [];
    const events: { type: string; data: Record<string, unknown> }[] = [];
    const first = { ...measurement(), id: '00000000-0000-4000-8000-0000000000d1' };
    // The second opens its window (2 s before its start) while the first's is still open.
    const second = { ...first, id: '00000000-0000-4000-8000-0000000000d2', startsAt: new Date(Date.parse(first.startsAt) + 2_500).toISOString() };
    const target = party('relay-3', submitted, events);
    const measurer = party('relay-1', submitted, events);
    target.update(seedTopology(5, relays, [], 'relay-3', [first]));
    measurer.update(seedTopology(5, relays, [], 'relay-1', [first]));
    await new Promise((r) => setTimeout(r, 1_500));
    target.update(seedTopology(6, relays, [], 'relay-3', [first, second]));
    measurer.update(seedTopology(6, relays, [], 'relay-1', [first, second]));
    const until = Date.now() + 10_000;
    while (submitted.filter((r) => r.role === 'measurer').length < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    const mine = submitted.filter((r) => r.role === 'measurer');
    expect(mine.map((r) => [r.measurementId, r.error, r.failures])).toEqual([
      [first.id, null, 0],
      [second.id, null, 0],
    ]);
    for (const r of mine) expect(r.echoed!.every((b) => b > 1_000_000)).toBe(true);
  }, 20_000);
});
