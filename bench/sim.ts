/**
 * Time from `relay-core sim up` to a converged mesh (every link handshaked, real wireguard-go), and
 * from `sim add` of one more relay to all of its links up, for N relays. Reference, side by side in
 * the same run: the same commands with `--wait topology` (relays registered and agreeing on the
 * topology, no wait for WireGuard), so the ratio is what the mesh adds on top of admission.
 *
 *   node bench/sim.ts [N ...]        (default 2 4 8; needs root)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { execa } from 'execa';
import { RELAY_CORE_BIN } from '../src/devnet/relay-process.ts';

const sizes = process.argv
  .slice(2)
  .map(Number)
  .filter((n) => n >= 1);
const ns = sizes.length ? sizes : [2, 4, 8];

async function timed(dir: string, args: string[]): Promise<number> {
  const t0 = performance.now();
  const r = await execa(RELAY_CORE_BIN, ['sim', ...args, '--state-dir', dir, '--timeout', '180'], { reject: false, timeout: 400_000 });
  if (r.exitCode !== 0) throw new Error(`sim ${args.join(' ')} failed: ${r.stderr || r.stdout}`);
  return (performance.now() - t0) / 1000;
}

async function run(n: number, wait: 'mesh' | 'topology'): Promise<{ up: number; join: number }> {
  const root = mkdtempSync(join(tmpdir(), 'relay-core-bench-sim-'));
  const dir = join(root, 'state');
  try {
    const up = await timed(dir, ['up', '--relays', String(n), '--wait', wait]);
    const join_ = await timed(dir, ['add', '--wait', wait]);
    return { up, join: join_ };
  } finally {
    await execa(RELAY_CORE_BIN, ['sim', 'down', '--state-dir', dir], { reject: false, timeout: 120_000 });
    rmSync(root, { recursive: true, force: true });
  }
}

const rows: string[] = [];
for (const n of ns) {
  const mesh = await run(n, 'mesh');
  const topo = await run(n, 'topology');
  rows.push(
    `| ${n} | ${mesh.up.toFixed(1)} | ${topo.up.toFixed(1)} | ${(mesh.up / topo.up).toFixed(2)} | ${mesh.join.toFixed(1)} | ${topo.join.toFixed(1)} | ${(mesh.join / topo.join).toFixed(2)} |`,
  );
}
console.log('| N | up to mesh converged s | up to topology s | ratio | join to links up s | join to topology s | ratio |');
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) console.log(r);
