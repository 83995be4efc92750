/**
 * Proof-of-Bandwidth capacity measurement: accuracy against a `tc tbf` cap, and what one measurement
 * costs. A 3-relay sim (real wireguard-go); relay-3's public link is capped at each rate in turn and
 * relay-1 and relay-2 measure it (`relay-core pob measure`, 2 streams each). Reference, side by side in
 * the same run and at the same cap: a plain bulk TCP transfer pulled over the same two mesh links from
 * relay-3 (2 streams per puller, the DESIGN.md shape where iperf3 got 0.91-0.92 of the cap), so the
 * ratio says how close the measurement's goodput comes to what TCP can take out of the relay.
 *
 *   node bench/pob-measure.ts [--caps 20,50,100] [--seconds 10] [--runs 3]      (needs root)
 *
 * Prints, per cap: the measured line rate / cap (accuracy), the measured goodput / the reference
 * goodput, the time from `pob measure` to the conclusion, and the bytes echoed (each crossed the
 * target's link twice).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { execa } from 'execa';
import type { MeasurementState } from '../src/contract/api-pob.ts';
import { RELAY_CORE_BIN } from '../src/devnet/relay-process.ts';
import { PUBLIC_IF } from '../src/sim/layout.ts';
import { readManifest, type Manifest } from '../src/sim/manifest.ts';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : dflt;
};
const caps = arg('caps', '20,50,100').split(',').map(Number);
const seconds = Number(arg('seconds', '10'));
const runs = Number(arg('runs', '3'));

const root = mkdtempSync(join(tmpdir(), 'relay-core-bench-pob-'));
const dir = join(root, 'state');
const sim = (args: string[]) => execa(RELAY_CORE_BIN, ['sim', ...args, '--state-dir', dir], { reject: false, timeout: 400_000 });

/**
 * Bulk TCP from relay-3 over the mesh links to relay-1 and relay-2 for `secs` seconds: goodput received,
 * bytes/s. On the echo port, between measurements (the one TCP port a relay's table opens to the mesh).
 */
async function reference(m: Manifest, mesh3: string, secs: number): Promise<number> {
  const ns = (id: string) => m.relays.find((r) => r.id === id)!.namespace;
  const server = `const net=require('net');const z=Buffer.alloc(65536);net.createServer((s)=>{s.on('error',()=>{});const w=()=>{while(s.write(z)){}};s.on('drain',w);w();setTimeout(()=>s.destroy(),${(secs + 3) * 1000});}).listen(51900,'${mesh3}',()=>console.log('ready'));setTimeout(()=>process.exit(0),${(secs + 6) * 1000});`;
  // The relay keeps its echo service 2 s past a measurement's end: wait for the port.
  await new Promise((r) => setTimeout(r, 3_000));
  const srv = execa('ip', ['netns', 'exec', ns('relay-3'), process.execPath, '-e', server], { reject: false });
  await new Promise<void>((res, rej) => {
    srv.stdout?.on('data', (b: Buffer) => b.toString().includes('ready') && res());
    void srv.then((r) => rej(new Error(`the reference's server ended: ${r.stderr}`)));
  });
  // Each puller counts what it receives in the middle `secs` seconds (after a second of ramp-up).
  const puller = `const net=require('net');let n=0,on=false;for(let i=0;i<2;i++){const s=net.connect(51900,'${mesh3}');s.on('data',(b)=>{if(on)n+=b.length});s.on('error',()=>{})}setTimeout(()=>{on=true},1000);setTimeout(()=>{console.log(n);process.exit(0)},${(secs + 1) * 1000});`;
  const got = await Promise.all(['relay-1', 'relay-2'].map((id) => execa('ip', ['netns', 'exec', ns(id), process.execPath, '-e', puller], { reject: false })));
  srv.kill('SIGKILL');
  await srv;
  return got.reduce((a, r) => a + Number(r.stdout.trim()), 0) / secs;
}

async function measure(): Promise<{ state: MeasurementState; wallSeconds: number }> {
  const t0 = performance.now();
  const r = await execa(
    RELAY_CORE_BIN,
    ['pob', 'measure', '--relay', 'relay-3', '--measurers', 'relay-1,relay-2', '--seconds', String(seconds), '--wait', '--json', '--sim', dir],
    {
      reject: false,
      timeout: 300_000,
    },
  );
  const state = JSON.parse(r.stdout) as MeasurementState;
  if (state.state !== 'measured') throw new Error(`measurement ${state.state}: ${state.reason}`);
  return { state, wallSeconds: (performance.now() - t0) / 1000 };
}

try {
  const up = await sim(['up', '--relays', '3', '--wait', 'mesh', '--timeout', '120']);
  if (up.exitCode !== 0) throw new Error(`sim up: ${up.stderr || up.stdout}`);
  const m = readManifest(dir)!;
  const status = JSON.parse((await sim(['status', '--json'])).stdout) as { relays: { id: string; status: { meshAddress: string } | null }[] };
  const mesh3 = status.relays.find((r) => r.id === 'relay-3')!.status!.meshAddress;
  const ns3 = m.relays.find((r) => r.id === 'relay-3')!.namespace;
  console.log(
    `| cap Mbit/s | run | line rate / cap | goodput / bulk TCP reference | goodput Mbit/s | reference Mbit/s | measure to conclusion s | bytes echoed MB |`,
  );
  console.log('|---|---|---|---|---|---|---|---|');
  for (const capMbit of caps) {
    await execa('ip', [
      'netns',
      'exec',
      ns3,
      'tc',
      'qdisc',
      'replace',
      'dev',
      PUBLIC_IF,
      'root',
      'tbf',
      'rate',
      `${capMbit}mbit`,
      'burst',
      '64kb',
      'latency',
      '50ms',
    ]);
    try {
      for (let run = 1; run <= runs; run++) {
        // Measurement and reference alternate, each at the same cap.
        const { state, wallSeconds } = await measure();
        const ref = await reference(m, mesh3, seconds);
        const cap = (capMbit * 1e6) / 8;
        console.log(
          `| ${capMbit} | ${run} | ${(state.lineRate! / cap).toFixed(3)} | ${(state.capacity! / ref).toFixed(3)} | ${((state.capacity! * 8) / 1e6).toFixed(1)} | ${((ref * 8) / 1e6).toFixed(1)} | ${wallSeconds.toFixed(1)} | ${(state.echoedBytes / 1e6).toFixed(1)} |`,
        );
      }
    } finally {
      await execa('ip', ['netns', 'exec', ns3, 'tc', 'qdisc', 'del', 'dev', PUBLIC_IF, 'root'], { reject: false });
    }
  }
} finally {
  await sim(['down']);
  rmSync(root, { recursive: true, force: true });
}
