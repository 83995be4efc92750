/**
 * Per-join cost on the in-memory kernel backend, for meshes of N relays: how many operations relay-1
 * applies when relay N+1 joins, and how long the topology actor, planner and kernel actor take for it
 * (VIEW in, kernel idle). Reference, in the same run: programming the whole mesh of N+1 relays from an
 * empty host (what a full re-sync would cost).
 *
 *   node bench/mesh-join.ts [N ...]        (default 10 100 1000)
 */
import { performance } from 'node:perf_hooks';
import { relay } from '../test/support/given.ts';
import { meshHarness } from '../test/support/mesh-harness.ts';

const sizes = process.argv
  .slice(2)
  .map(Number)
  .filter((n) => n > 1);
const ns = sizes.length ? sizes : [10, 100, 1000];
// The same record objects from one view to the next, as the relay's fold keeps them (a join adds one).
const records = Array.from({ length: Math.max(...ns) + 1 }, (_, i) => relay(i + 1));
const relays = (n: number) => records.slice(0, n);

const rows: string[] = [];
for (const n of ns) {
  const h = meshHarness();
  await h.view(relays(n), 120_000);
  const before = h.backend.ops.length;
  const t0 = performance.now();
  await h.view(relays(n + 1), 120_000);
  const joinMs = performance.now() - t0;
  const joinOps = h.backend.ops.length - before;
  h.actor.stop();

  const full = meshHarness();
  const t1 = performance.now();
  await full.view(relays(n + 1), 120_000);
  const fullMs = performance.now() - t1;
  const fullOps = full.backend.ops.length;
  full.actor.stop();
  rows.push(`| ${n} | ${joinOps} | ${joinMs.toFixed(1)} | ${fullOps} | ${fullMs.toFixed(1)} | ${(joinMs / fullMs).toFixed(3)} |`);
}
console.log('| N | ops per join | join ms | ops, full mesh from empty | full ms | join/full time |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) console.log(r);
