/**
 * What one relay holds on its heap as the network grows (issue 15: the thousand-relay fleet stops on
 * memory, bench/README.md): the real relay machine (fold, topology, peer links, clients, kernel actor on
 * the in-memory host) seeded with a network of N relays, its kernel idle, garbage collected; the heap
 * it added, and per peer. With --snapshot DIR, a heap snapshot at each N and the live objects by kind.
 * Reference, in the same run: the smallest N given (the fixed part of a relay).
 *
 *   node --expose-gc bench/relay-heap.ts [N ...] [--snapshot DIR]      (default 100 300 1000)
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeHeapSnapshot } from 'node:v8';
import { waitFor, type AnyActorRef } from 'xstate';
import type { RegisterResponse } from '../src/contract/api-relays.ts';
import { systemDeps } from '../src/lib/deps.ts';
import { busDetails, relay } from '../test/support/given.ts';
import { relayOnMemoryHost } from '../test/support/relay-harness.ts';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { snapshot: { type: 'string' } } });
if (values.snapshot) mkdirSync(values.snapshot, { recursive: true });
const sizes = positionals.length ? positionals.map(Number) : [100, 300, 1000];
const gcFn = (globalThis as { gc?: () => void }).gc;
if (!gcFn) throw new Error('run with node --expose-gc (npm run bench:relay-heap does)');
if (sizes.some((n) => !Number.isInteger(n) || n < 2)) throw new Error('usage: node --expose-gc bench/relay-heap.ts [N ...] [--snapshot DIR]');
const collect = () => {
  gcFn();
  gcFn();
};

/** The live objects of a heap snapshot by kind (constructor for objects and closures): bytes and count. */
function byKind(file: string): Map<string, { bytes: number; count: number }> {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  const f = snap.snapshot.meta.node_fields;
  const [width, iType, iName, iSize] = [f.length, f.indexOf('type'), f.indexOf('name'), f.indexOf('self_size')];
  const types = snap.snapshot.meta.node_types[0];
  const out = new Map<string, { bytes: number; count: number }>();
  for (let i = 0; i < snap.nodes.length; i += width) {
    const t = types[snap.nodes[i + iType]!]!;
    const k = t === 'object' || t === 'closure' ? `${t} ${snap.strings[snap.nodes[i + iName]!]}` : t;
    const a = out.get(k) ?? { bytes: 0, count: 0 };
    a.bytes += snap.nodes[i + iSize]!;
    a.count++;
    out.set(k, a);
  }
  return out;
}

async function measure(n: number): Promise<{ bytes: number; kinds: Map<string, { bytes: number; count: number }> | null }> {
  collect();
  const before = process.memoryUsage().heapUsed;
  const self = relay(1);
  const registration: RegisterResponse = {
    relay: self,
    readmitted: false,
    revision: 1,
    revisionTime: new Date().toISOString(),
    relays: Array.from({ length: n - 1 }, (_, i) => relay(i + 2)),
    sessions: [],
    bus: busDetails(),
    heartbeatIntervalSeconds: 10,
  };
  const { actor: created, follow } = relayOnMemoryHost({
    self,
    registration,
    deps: systemDeps,
    emit: () => {},
    timing: { staleAfterMs: 86_400_000, downAfterMs: 86_400_000 },
  });
  const actor = created.start();
  await waitFor(actor, (s) => s.matches('serving') && follow() !== null, { timeout: 120_000 });
  const kernel = () => actor.getSnapshot().children.kernel as AnyActorRef;
  for (let quiet = 0; quiet < 3; ) {
    await new Promise((r) => setImmediate(r));
    quiet = kernel().getSnapshot().value === 'idle' ? quiet + 1 : 0;
  }
  if (actor.getSnapshot().context.view.relays.size !== n) throw new Error(`the relay holds ${actor.getSnapshot().context.view.relays.size} relays, not ${n}`);
  collect();
  const bytes = process.memoryUsage().heapUsed - before;
  const kinds = values.snapshot ? byKind(writeHeapSnapshot(join(values.snapshot, `relay-${n}.heapsnapshot`))) : null;
  actor.stop();
  return { bytes, kinds };
}

const MiB = 1024 * 1024;
const results: { n: number; bytes: number; kinds: Map<string, { bytes: number; count: number }> | null }[] = [];
for (const n of sizes) results.push({ n, ...(await measure(n)) });
const ref = results[0]!;
console.log(`| N | heap of one relay (MiB) | per peer (KiB) | per peer above N=${ref.n} (KiB) |`);
console.log('|---|---|---|---|');
for (const r of results)
  console.log(
    `| ${r.n} | ${(r.bytes / MiB).toFixed(2)} | ${(r.bytes / (r.n - 1) / 1024).toFixed(2)} | ${r === ref ? '-' : ((r.bytes - ref.bytes) / (r.n - ref.n) / 1024).toFixed(2)} |`,
  );
const last = results.at(-1)!;
if (ref.kinds && last.kinds && last !== ref) {
  console.log(`\nLive objects added per peer from N=${ref.n} to N=${last.n}, by kind (the largest):`);
  const rows = [...last.kinds].map(([k, v]) => {
    const r = ref.kinds!.get(k) ?? { bytes: 0, count: 0 };
    return { k, bytes: (v.bytes - r.bytes) / (last.n - ref.n), count: (v.count - r.count) / (last.n - ref.n) };
  });
  for (const r of rows.sort((a, b) => b.bytes - a.bytes).slice(0, 12))
    console.log(`${r.bytes.toFixed(0).padStart(7)} B ${r.count.toFixed(1).padStart(6)} ${r.k}`);
}
process.exit(0);
