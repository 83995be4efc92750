/**
 * Replay throughput and memory on a long recorded log (issue 5: at least 1,000,000 events).
 *
 * The log comes from bench/replay-log.ts (a consistent relay-1 log of a 4-relay network with client
 * sessions opening and closing, every kernel round planned by the relay's own planner), written once
 * and reused with --log. Side by side in the same run, alternating, each a fresh process measured by
 * GNU time (wall seconds and maximum resident set):
 *
 * - reference: bench/replay-reference.ts reads the file with replay's own reader (every line
 *   decoded) and only counts the entries;
 * - replay: `relay-core replay --relay relay-1 --file LOG --json`, the command an operator runs: it
 *   folds the topology and every actor, applies every recorded op to the in-memory host and re-plans
 *   every kernel round from its cause. The benchmark fails if a round does not match;
 * - the same replay with V8's old space capped at --heap-mib (NODE_OPTIONS=--max-old-space-size):
 *   Node lets garbage pile up while memory is plentiful, so the first replay's RSS says what it
 *   took, this one that it fits in that much.
 *
 *   node bench/replay.ts [--events 1000000] [--window 50] [--rounds 3] [--log FILE] [--heap-mib 256]
 */
import { execa } from 'execa';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { RELAY_CORE_BIN } from '../src/devnet/relay-process.ts';

const { values } = parseArgs({
  options: { events: { type: 'string' }, window: { type: 'string' }, rounds: { type: 'string' }, log: { type: 'string' }, 'heap-mib': { type: 'string' } },
});
const events = Number(values.events ?? 1_000_000);
const rounds = Number(values.rounds ?? 3);
const heapMiB = Number(values['heap-mib'] ?? 256);
const here = import.meta.dirname;
const tmp = values.log ? null : mkdtempSync(join(tmpdir(), 'relay-core-bench-replay-'));
const log = values.log ?? join(tmp!, 'relay-1.jsonl');
const node = process.execPath;

interface Timed {
  seconds: number;
  maxRssMiB: number;
  stdout: string;
}

/** Run argv under GNU time; its -f line is the last line of stderr. */
async function timed(argv: string[], env: Record<string, string> = {}): Promise<Timed> {
  const r = await execa('/usr/bin/time', ['-f', 'TIME %e %M', ...argv], { reject: false, maxBuffer: 1 << 30, env });
  const m = /TIME ([\d.]+) (\d+)\s*$/.exec(r.stderr);
  if (r.exitCode !== 0 || !m) throw new Error(`${argv.join(' ')} failed (exit ${r.exitCode}): ${r.stderr.slice(-2000)}`);
  return { seconds: Number(m[1]), maxRssMiB: Number(m[2]) / 1024, stdout: r.stdout };
}

try {
  if (!values.log || !existsSync(log)) {
    process.stderr.write(`writing a log of ${events} events to ${log} ...\n`);
    const g = await timed([node, join(here, 'replay-log.ts'), '--out', log, '--events', String(events), '--window', values.window ?? '50']);
    process.stderr.write(`  ${g.stdout.trim()} in ${g.seconds} s\n`);
  }
  const rows: { run: number; refS: number; refMiB: number; repS: number; repMiB: number; capS: number; capMiB: number; lines: number }[] = [];
  const replay = async (env: Record<string, string> = {}) => {
    const rep = await timed([RELAY_CORE_BIN, 'replay', '--relay', 'relay-1', '--file', log, '--json', '--no-verify'], env);
    const r = JSON.parse(rep.stdout) as {
      events: { relay: number; topology: number; skipped: number };
      checks: { rounds: number; matched: number; mismatched: number; unchecked: number };
    };
    if (r.checks.mismatched || r.checks.unchecked || r.events.skipped)
      throw new Error(`replay of the generated log is not clean: ${JSON.stringify({ events: r.events, checks: r.checks })}`);
    return { ...rep, r };
  };
  for (let run = 1; run <= rounds; run++) {
    const ref = await timed([node, '--disable-warning=ExperimentalWarning', join(here, 'replay-reference.ts'), log, 'relay-1']);
    const refCounts = JSON.parse(ref.stdout) as { topology: number; relay: number; ok: number; skipped: number };
    if (refCounts.skipped) throw new Error(`the reference skipped ${refCounts.skipped} lines`);
    const rep = await replay();
    const cap = await replay({ NODE_OPTIONS: `--max-old-space-size=${heapMiB}` });
    const r = rep.r;
    const lines = r.events.relay + r.events.topology;
    if (lines !== refCounts.topology + refCounts.relay) throw new Error(`replay read ${lines} events, the reference ${refCounts.topology + refCounts.relay}`);
    rows.push({ run, refS: ref.seconds, refMiB: ref.maxRssMiB, repS: rep.seconds, repMiB: rep.maxRssMiB, capS: cap.seconds, capMiB: cap.maxRssMiB, lines });
    process.stderr.write(
      `run ${run}: ${lines} events, ${r.checks.matched}/${r.checks.rounds} kernel rounds matched; reference ${ref.seconds} s, replay ${rep.seconds} s, capped ${cap.seconds} s\n`,
    );
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const lines = rows[0]!.lines;
  const refS = med(rows.map((x) => x.refS));
  const repS = med(rows.map((x) => x.repS));
  const fmt = (n: number) => Math.round(n).toLocaleString('en');
  console.log(`| what | events | s (median of ${rows.length}) | events/s | max RSS MiB |`);
  console.log('|---|---|---|---|---|');
  console.log(`| reference: read + decode | ${fmt(lines)} | ${refS.toFixed(1)} | ${fmt(lines / refS)} | ${med(rows.map((x) => x.refMiB)).toFixed(0)} |`);
  console.log(`| relay-core replay --file --json | ${fmt(lines)} | ${repS.toFixed(1)} | ${fmt(lines / repS)} | ${med(rows.map((x) => x.repMiB)).toFixed(0)} |`);
  const capS = med(rows.map((x) => x.capS));
  console.log(
    `| same, old space capped at ${heapMiB} MiB | ${fmt(lines)} | ${capS.toFixed(1)} | ${fmt(lines / capS)} | ${med(rows.map((x) => x.capMiB)).toFixed(0)} |`,
  );
  console.log(`| ratio replay / reference (throughput) | | | ${(refS / repS).toFixed(2)} | |`);
} finally {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
}
