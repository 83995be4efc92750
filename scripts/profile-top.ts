/**
 * The functions a V8 CPU profile (.cpuprofile) spent most time in: self and inclusive milliseconds,
 * summed by function (name, file, line), idle and the profiler's own nodes left out.
 *
 *   node scripts/profile-top.ts PROFILE.cpuprofile [--top 40] [--inclusive] [--per N]
 *
 * --per N divides every figure by N (e.g. relays × topology events, for a per-relay-per-event cost).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '40' }, inclusive: { type: 'boolean', default: false }, per: { type: 'string', default: '1' } },
});
if (positionals.length !== 1) {
  process.stderr.write('usage: node scripts/profile-top.ts PROFILE.cpuprofile [--top 40] [--inclusive] [--per N]\n');
  process.exit(2);
}
const profile = JSON.parse(readFileSync(positionals[0]!, 'utf8')) as Profile;
const per = Number(values.per);
const skip = new Set(['(idle)', '(program)', '(root)']);

const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const key = (n: ProfileNode) => {
  const f = n.callFrame;
  const file = f.url.replace(/^file:\/\//, '').replace(`${process.cwd()}/`, '');
  return `${f.functionName || '(anonymous)'} ${file}:${f.lineNumber + 1}`;
};

const self = new Map<string, number>();
const inclusive = new Map<string, number>();
let total = 0;
let idle = 0;
profile.samples.forEach((id, i) => {
  const ms = (profile.timeDeltas[i] ?? 0) / 1000;
  const node = byId.get(id)!;
  if (skip.has(node.callFrame.functionName)) {
    if (node.callFrame.functionName === '(idle)') idle += ms;
    return;
  }
  total += ms;
  const k = key(node);
  self.set(k, (self.get(k) ?? 0) + ms);
  // Each function once per sample, however deep it recurses.
  const seen = new Set<string>();
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
    const n = byId.get(at)!;
    if (skip.has(n.callFrame.functionName)) continue;
    const kk = key(n);
    if (seen.has(kk)) continue;
    seen.add(kk);
    inclusive.set(kk, (inclusive.get(kk) ?? 0) + ms);
  }
});

const rows = [...(values.inclusive ? inclusive : self)].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top));
process.stdout.write(`busy ${(total / per).toFixed(3)} ms, idle ${(idle / per).toFixed(3)} ms${per !== 1 ? ` (per ${per})` : ''}\n`);
for (const [k, ms] of rows) process.stdout.write(`${(ms / per).toFixed(3).padStart(10)}  ${((100 * ms) / total).toFixed(1).padStart(5)}%  ${k}\n`);
