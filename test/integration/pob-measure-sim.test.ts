import { sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MeasurementState, PobStatusResponse, ScheduleMeasurementResponse } from '../../src/contract/api-pob.ts';
import { signReport } from '../../src/contract/pob-measure.ts';
import { signEpoch } from '../../src/contract/pob-receipts.ts';
import { loadOrCreateIdentityKey } from '../../src/lib/identity-key.ts';
import { lineRate } from '../../src/contract/pob-capacity.ts';
import { RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import { readManifest, type Manifest } from '../../src/sim/manifest.ts';
import { CONTROL_PLANE_URL, PUBLIC_IF } from '../../src/sim/layout.ts';
import { tempDir } from '../support/temp.ts';
import { simCli, statusUntil } from '../support/sim-cli.ts';

/**
 * Capacity measurement in a live sim (issue 17; docs/proof-of-bandwidth.md, "Measuring"): three relays
 * on real wireguard-go, relay-3's public link capped with `tc tbf`; relay-1 and relay-2 measure it over
 * their mesh links (its echo service sends back every byte), sign their counts, and the control plane
 * concludes. An honest relay measures within ±10 % of its cap at 20, 50 and 60 Mbit/s; one that
 * carries other traffic (to a relay-4 added for it) meanwhile, or over-reports it, gets at most 1/(1-r)
 * of its cap; a relay that corrupts or drops the measurement traffic is rejected (cheaters played by the
 * test, never a flag of the product: it takes the echo port before the relay can).
 */

interface SimStatus {
  relays: { id: string; status: null | { meshAddress: string | null; links: { peerId: string; state: string }[] } }[];
}

/** A cheater's measurement; an honest relay's accuracy is measured over 10 s, as bench:pob-measure does. */
const SECONDS = 6;
const ACCURACY_SECONDS = 10;
/**
 * Caps that bind: the accuracy of a measurement is the product's; what a 3-relay sim carries on two cores
 * is the machine's. Each echoed byte crosses WireGuard four times, and this sim, uncapped, carries 100-110
 * Mbit/s of echo (line rate, 2026-12-03): at a 100 Mbit/s cap the cores, not the cap, set the figure
 * (0.78-0.93 of it in runs alone here). 60 Mbit/s leaves the sim a third of its CPU; 100 Mbit/s is
 * measured by `npm run bench:pob-measure`, side by side with a bulk-transfer reference (bench/README.md).
 */
const CAPS_MBIT = [20, 50, 60];

describe('Proof-of-Bandwidth capacity measurement in a sim', () => {
  const tmp = tempDir('pob-measure-sim');
  const dir = tmp.dir;
  const sim = simCli(dir);
  let m: Manifest;
  let down: Promise<void> | null = null;
  const teardown = () =>
    (down ??= (async () => {
      const r = await sim(['down'], 120_000);
      if (r.exitCode !== 0) throw new Error(`sim down failed:\n${r.stdout}\n${r.stderr}`);
    })());
  const ns = (id: string) => m.relays.find((r) => r.id === id)!.namespace;

  /** The operator's `relay-core pob` against the sim's control plane (`--sim`: its service-role key). */
  const pob = (args: string[], timeout = 60_000) => execa(RELAY_CORE_BIN, ['pob', ...args, '--sim', dir], { reject: false, timeout });
  const measure = async (target: string, measurers = 'relay-1,relay-2', seconds = SECONDS): Promise<MeasurementState> => {
    const r = await pob(['measure', '--relay', target, '--measurers', measurers, '--seconds', String(seconds), '--streams', '2', '--wait', '--json'], 150_000);
    expect(r.stderr).not.toMatch(/not concluded/);
    return JSON.parse(r.stdout) as MeasurementState;
  };
  /** A function of the control plane called as `relayId` (its own token), from the sim's internet namespace. */
  const asRelay = async (relayId: string, fn: string, body: unknown) => {
    const relay = m.relays.find((r) => r.id === relayId)!;
    const token = readFileSync(relay.tokenFile, 'utf8').trim();
    const r = await execa(
      'ip',
      [
        'netns',
        'exec',
        `rcs-${m.simId}-inet`,
        'curl',
        '-sS',
        '-m',
        '20',
        '-X',
        'POST',
        '-H',
        `authorization: Bearer ${token}`,
        '-H',
        'content-type: application/json',
        '--data-binary',
        '@-',
        `${CONTROL_PLANE_URL}/functions/v1/${fn}`,
      ],
      { input: JSON.stringify(body), reject: false, timeout: 30_000 },
    );
    return JSON.parse(r.stdout) as Record<string, any>;
  };
  /** A relay's identity key, from its state directory: what a cheating operator of that relay holds. */
  const identityOf = (relayId: string) => loadOrCreateIdentityKey(join(m.relays.find((r) => r.id === relayId)!.stateDir, 'identity.key')).privateKey;
  const cap = (id: string, mbit: number | null) =>
    execa(
      'ip',
      [
        'netns',
        'exec',
        ns(id),
        'tc',
        'qdisc',
        mbit === null ? 'del' : 'replace',
        'dev',
        PUBLIC_IF,
        'root',
        ...(mbit === null ? [] : ['tbf', 'rate', `${mbit}mbit`, 'burst', '64kb', 'latency', '50ms']),
      ],
      { reject: mbit !== null },
    );

  beforeAll(async () => {
    try {
      const r = await sim(['up', '--relays', '3', '--wait', 'mesh', '--timeout', '90'], 240_000);
      if (r.exitCode !== 0) throw new Error(`sim up failed:\n${r.stdout}\n${r.stderr}`);
      m = readManifest(dir)!;
      await statusUntil<SimStatus>(dir, 'every relay with its mesh address', (x) => x.relays.every((y) => y.status?.meshAddress), 30_000);
    } catch (e) {
      await teardown().catch(() => {});
      throw e;
    }
  }, 300_000);

  afterAll(async () => {
    try {
      await teardown();
    } finally {
      if (!process.env.KEEP_TMP) tmp.remove();
    }
  }, 180_000);

  const figures: Record<string, number> = {};
  for (const mbit of CAPS_MBIT) {
    it(`measures an honest relay capped at ${mbit} Mbit/s within ±10 % of its cap (as a line rate)`, async () => {
      await cap('relay-3', mbit);
      try {
        const s = await measure('relay-3', 'relay-1,relay-2', ACCURACY_SECONDS);
        expect(s.state, JSON.stringify(s)).toBe('measured');
        expect(s.reported.sort()).toEqual(['relay-1', 'relay-2', 'relay-3']);
        const capBytes = (mbit * 1e6) / 8;
        figures[`${mbit}`] = s.lineRate! / capBytes;
        console.log(
          `POB-MEASURE ${JSON.stringify({ capMbit: mbit, goodputMbit: (s.capacity! * 8) / 1e6, lineRateMbit: (s.lineRate! * 8) / 1e6, ratio: s.lineRate! / capBytes })}`,
        );
        expect(s.lineRate! / capBytes).toBeGreaterThan(0.9);
        expect(s.lineRate! / capBytes).toBeLessThan(1.1);
        // The goodput and the line rate are the same measurement, in two units (WireGuard, IP, TCP and Ethernet headers).
        expect(s.lineRate).toBe(Math.round(lineRate(s.capacity!, 1420)));
      } finally {
        await cap('relay-3', null);
      }
    }, 200_000);
  }

  it('keeps the capacity, tells every relay (RelayMeasured), and pob status shows it', async () => {
    const r = await pob(['status', '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const st = JSON.parse(r.stdout) as PobStatusResponse;
    const three = st.relays.find((x) => x.relayId === 'relay-3')!;
    expect(three.lastMeasurement?.state).toBe('measured');
    expect(three.capacity).toBe(three.lastMeasurement?.lineRate);
    // Every relay folded the conclusions: no measurement left in any relay's view.
    const events = await execa(RELAY_CORE_BIN, ['events', 'export', '--sim', dir, '--stream', 'topology', '--type', 'RelayMeasured'], {
      reject: false,
      timeout: 60_000,
    });
    expect(events.exitCode, events.stderr).toBe(0);
    const measured = events.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(JSON.parse(l).data as string) as { data: { relayId: string; outcome: string } });
    expect(measured.filter((e) => e.data.relayId === 'relay-3' && e.data.outcome === 'measured')).toHaveLength(3);
    // Each party said what it counted and handed in (relay events, signed by the relay).
    for (const [id, role] of [
      ['relay-1', 'measurer'],
      ['relay-3', 'target'],
    ] as const) {
      const r = await execa(RELAY_CORE_BIN, ['events', 'export', '--sim', dir, '--stream', 'relay', '--relay', id, '--type', 'MeasurementReported'], {
        reject: false,
        timeout: 60_000,
      });
      const reported = r.stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(JSON.parse(l).data as string) as { data: { role: string; bytes: number; outcome: string | null } });
      expect(
        reported.map((e) => [e.data.role, e.data.outcome !== null]),
        id,
      ).toEqual(Array.from({ length: 3 }, () => [role, true]));
      if (role === 'measurer') expect(reported.every((e) => e.data.bytes > 0)).toBe(true);
    }
  });

  it('gives a relay that carries other traffic during its measurement at most 1/(1-r) of its cap, that traffic counted', async () => {
    // relay-4, added now (the accuracy above is measured with three relays on the two cores): it takes
    // no part in measurements, and relay-3 sends it other traffic.
    const add = await sim(['add', '--relay', 'relay-4', '--wait', 'mesh', '--timeout', '90'], 200_000);
    expect(add.exitCode, add.stderr + add.stdout).toBe(0);
    m = readManifest(dir)!;
    await cap('relay-3', 20);
    const mesh4 = (
      await statusUntil<SimStatus>(dir, 'relay-4 with its mesh address', (x) => !!x.relays.find((y) => y.id === 'relay-4')?.status?.meshAddress)
    ).relays.find((y) => y.id === 'relay-4')!.status!.meshAddress!;
    // A sink on relay-4's mesh address, and relay-3 sending to it over their link as fast as it can (bounded: 30 s).
    const sink = execa(
      'ip',
      [
        'netns',
        'exec',
        ns('relay-4'),
        process.execPath,
        '-e',
        `require('net').createServer((s)=>{s.on('data',()=>{});s.on('error',()=>{})}).listen(51900,'${mesh4}',()=>console.log('ready'));setTimeout(()=>process.exit(0),40000);`,
      ],
      { reject: false },
    );
    let source: ReturnType<typeof execa> | null = null;
    try {
      await new Promise<void>((res, rej) => {
        sink.stdout?.on('data', (b: Buffer) => b.toString().includes('ready') && res());
        void sink.then((r) => rej(new Error(`the sink ended: ${r.stderr}`)));
      });
      source = execa(
        'ip',
        [
          'netns',
          'exec',
          ns('relay-3'),
          process.execPath,
          '-e',
          `const net=require('net');const z=Buffer.alloc(65536);for(let i=0;i<2;i++){const s=net.connect(51900,'${mesh4}');s.on('error',()=>{});const w=()=>{while(s.write(z)){}};s.on('connect',w);s.on('drain',w);}setTimeout(()=>process.exit(0),30000);`,
        ],
        { reject: false },
      );
      const s = await measure('relay-3');
      expect(s.state, JSON.stringify(s)).toBe('measured');
      const ratio = s.lineRate! / ((20 * 1e6) / 8);
      // What relay-3 counted as its other traffic, and handed in signed (its MeasurementReported).
      const reported = await execa(RELAY_CORE_BIN, ['events', 'export', '--sim', dir, '--stream', 'relay', '--type', 'MeasurementReported'], {
        reject: false,
        timeout: 60_000,
      });
      expect(reported.exitCode, reported.stderr).toBe(0);
      const background = reported.stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(JSON.parse(l).data as string) as { data: { measurementId: string; role: string; bytes: number } })
        .find((e) => e.data.measurementId === s.measurement.id && e.data.role === 'target')?.data.bytes;
      console.log(`POB-EXTRA-TRAFFIC ${JSON.stringify({ capMbit: 20, r: 0.1, ratio, backgroundMbit: ((background ?? 0) * 8) / SECONDS / 1e6 })}`);
      // It carried a lot besides the echoes, and said so; it is credited up to r/(1-r) of the echoes for it.
      expect(background).toBeGreaterThan((2 * 1e6 * SECONDS) / 8);
      expect(ratio).toBeLessThan((1 / 0.9) * 1.1);
    } finally {
      source?.kill('SIGKILL');
      sink.kill('SIGKILL');
      await Promise.allSettled([source, sink]);
      await cap('relay-3', null);
    }
  }, 200_000);

  it('gives a relay that over-reports its other traffic at most 1/(1-r) of the capacity it showed', async () => {
    await cap('relay-3', 20);
    try {
      const r = await pob(['measure', '--relay', 'relay-3', '--measurers', 'relay-1,relay-2', '--seconds', String(SECONDS), '--r', '0.1', '--json']);
      expect(r.exitCode, r.stderr).toBe(0);
      const { measurement } = JSON.parse(r.stdout) as ScheduleMeasurementResponse;
      // relay-3's operator signs a report of huge other traffic with its identity key, and hands it in
      // before the relay's own (reports are taken from 30 s before the end).
      const forged = await signReport(
        { measurementId: measurement.id, relayId: 'relay-3', role: 'target' as const, background: new Array(SECONDS).fill(1e9) },
        (d) => sign(null, d, identityOf('relay-3')),
      );
      const sent = await asRelay('relay-3', 'submit-measurement', forged);
      expect(sent.stored, JSON.stringify(sent)).toBe(true);
      let s: MeasurementState | null = null;
      for (let i = 0; i < 120 && s?.state !== 'measured'; i++) {
        await new Promise((res) => setTimeout(res, 1000));
        const st = JSON.parse((await pob(['status', '--relay', 'relay-3', '--json'])).stdout) as PobStatusResponse;
        s = st.relays[0]!.lastMeasurement;
        if (s && s.state !== 'scheduled' && s.state !== 'measured') break;
      }
      expect(s?.state, JSON.stringify(s)).toBe('measured');
      const ratio = s!.lineRate! / ((20 * 1e6) / 8);
      console.log(`POB-OVERREPORT ${JSON.stringify({ capMbit: 20, r: 0.1, ratio, honest: figures['20'] })}`);
      // The echoes bound what it can claim: its honest figure times 1/(1-r), not the billions it signed.
      expect(ratio).toBeGreaterThan(1.0);
      expect(ratio).toBeLessThan((1 / 0.9) * 1.1);
    } finally {
      await cap('relay-3', null);
    }
  }, 200_000);

  it('caps two colluding relays that inflate receipts between themselves at their measured capacities, and flags them', async () => {
    // relay-2 is measured too (relay-3 was above), capped at 50 Mbit/s.
    await cap('relay-2', 50);
    try {
      expect((await measure('relay-2', 'relay-1,relay-3')).state).toBe('measured');
    } finally {
      await cap('relay-2', null);
    }
    const st = JSON.parse((await pob(['status', '--json'])).stdout) as PobStatusResponse;
    const capacity = (id: string) => st.relays.find((x) => x.relayId === id)!.capacity!;
    // Their operators sign receipts of 1 TB each way on their link for an epoch of a day before the sim,
    // which no relay handed in: both ends agree, so no 2 % dispute can catch them.
    const EPOCH = 300;
    const epoch = Math.floor(Date.now() / 1000 / EPOCH) - 288;
    const tb = 1e12;
    for (const [id, peer] of [
      ['relay-2', 'relay-3'],
      ['relay-3', 'relay-2'],
    ] as const) {
      const receipts = [{ peerId: peer, txBytes: tb, rxBytes: tb }];
      const root = await signEpoch(id, epoch, EPOCH, receipts, (d) => sign(null, d, identityOf(id)));
      const r = await asRelay(id, 'submit-receipts', { relayId: id, epoch, epochSeconds: EPOCH, root: root.root, signature: root.signature, receipts });
      expect(r.stored, JSON.stringify(r)).toBe(true);
    }
    const settled = await pob(['settle', '--epoch', String(epoch), '--json']);
    expect(settled.exitCode, settled.stderr).toBe(0);
    const out = JSON.parse(settled.stdout) as {
      credits: { relayId: string; carried: number; cap: number | null; credit: number }[];
      disputes: { kind: string; relayId?: string }[];
    };
    for (const id of ['relay-2', 'relay-3']) {
      const c = out.credits.find((x) => x.relayId === id)!;
      expect(c.carried).toBe(2 * tb);
      expect(c.cap).toBe(capacity(id) * 2 * EPOCH);
      expect(c.credit).toBe(c.cap);
    }
    expect(
      out.disputes
        .filter((d) => d.kind === 'over-capacity')
        .map((d) => d.relayId)
        .sort(),
    ).toEqual(['relay-2', 'relay-3']);
    console.log(`POB-COLLUSION ${JSON.stringify({ claimedEach: 2 * tb, credited: out.credits.map((c) => [c.relayId, c.credit]) })}`);
  }, 200_000);

  it('credits a relay that inflates its receipts against an honest peer with what the peer signed, not a byte more, and flags it', async () => {
    // relay-1's honest account of its link with relay-3 for an epoch before the sim: 100 MB sent to it,
    // 200 MB received from it. relay-3's operator signs 1 TB each way.
    const EPOCH = 300;
    const epoch = Math.floor(Date.now() / 1000 / EPOCH) - 287;
    const MB = 1e6;
    for (const [id, receipts] of [
      ['relay-1', [{ peerId: 'relay-3', txBytes: 100 * MB, rxBytes: 200 * MB }]],
      ['relay-3', [{ peerId: 'relay-1', txBytes: 1e12, rxBytes: 1e12 }]],
    ] as const) {
      const root = await signEpoch(id, epoch, EPOCH, [...receipts], (d) => sign(null, d, identityOf(id)));
      const r = await asRelay(id, 'submit-receipts', { relayId: id, epoch, epochSeconds: EPOCH, root: root.root, signature: root.signature, receipts });
      expect(r.stored, JSON.stringify(r)).toBe(true);
    }
    const settled = await pob(['settle', '--epoch', String(epoch), '--json']);
    expect(settled.exitCode, settled.stderr).toBe(0);
    const out = JSON.parse(settled.stdout) as {
      credits: { relayId: string; carried: number; cap: number | null; credit: number }[];
      disputes: { kind: string; from?: string; to?: string }[];
    };
    // relay-3 is credited the 200 MB relay-1 received from it and the 100 MB relay-1 sent it: 300 MB of the 2 TB it claimed.
    const three = out.credits.find((x) => x.relayId === 'relay-3')!;
    expect(three.carried).toBe(300 * MB);
    expect(three.credit).toBe(Math.min(300 * MB, three.cap ?? 0));
    expect(
      out.disputes
        .filter((d) => d.kind === 'disagree')
        .map((d) => `${d.from}->${d.to}`)
        .sort(),
    ).toEqual(['relay-1->relay-3', 'relay-3->relay-1']);
    console.log(`POB-INFLATE ${JSON.stringify({ claimed: 2e12, carried: three.carried, credit: three.credit, cap: three.cap })}`);
  }, 120_000);

  /** A cheating echo service in relay-3's namespace, on its mesh address and the echo port, before the relay takes it. */
  async function cheater(kind: 'corrupt' | 'drop'): Promise<{ stop(): Promise<void> }> {
    const s = await statusUntil<SimStatus>(
      dir,
      'relay-3 with its mesh address',
      (x) => !!x.relays.find((y) => y.id === 'relay-3')?.status?.meshAddress,
      10_000,
    );
    const mesh = s.relays.find((y) => y.id === 'relay-3')!.status!.meshAddress!;
    const script =
      kind === 'corrupt'
        ? `require('net').createServer((s) => { s.on('error', () => {}); s.on('data', (b) => { b[0] ^= 0xff; s.write(b); }); }).listen(51900, '${mesh}', () => console.log('ready'));`
        : `require('net').createServer((s) => { s.on('error', () => {}); s.resume(); }).listen(51900, '${mesh}', () => console.log('ready'));`;
    const p = execa('ip', ['netns', 'exec', ns('relay-3'), process.execPath, '-e', script], { reject: false });
    await new Promise<void>((resolve, reject) => {
      p.stdout?.on('data', (b: Buffer) => b.toString().includes('ready') && resolve());
      p.catch(reject);
      setTimeout(() => reject(new Error('the cheating echo did not start')), 10_000);
    });
    return {
      stop: async () => {
        p.kill('SIGKILL');
        await p;
      },
    };
  }

  for (const kind of ['corrupt', 'drop'] as const) {
    it(`rejects a relay that ${kind === 'corrupt' ? 'corrupts' : 'drops'} the measurement traffic`, async () => {
      const c = await cheater(kind);
      try {
        const s = await measure('relay-3');
        expect(s.state, JSON.stringify(s)).toBe('rejected');
        expect(s.reason).toMatch(kind === 'corrupt' ? /^spot-check-failed/ : /^(nothing-echoed|stream-broken)/);
      } finally {
        await c.stop();
      }
      // The capacity kept is still the last one measured.
      const st = JSON.parse((await pob(['status', '--relay', 'relay-3', '--json'])).stdout) as PobStatusResponse;
      expect(st.relays[0]!.capacity).toBeGreaterThan(0);
      expect(st.relays[0]!.lastMeasurement?.state).toBe('rejected');
    }, 200_000);
  }

  it('tears the sim down', async () => {
    await teardown();
  }, 180_000);
});
