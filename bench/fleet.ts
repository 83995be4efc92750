/**
 * A fleet of relays on this machine (issue 15, part 6). Every relay is a whole `relay-core run` daemon
 * (startRelayDaemon) on the in-memory host: the real relay machine, fold and signature checks,
 * topology, clients and kernel actors, its own NATS connection and topology consumer, its own HTTP to
 * the control plane's Deno functions on PostgreSQL (a throwaway PostgreSQL 15; --db pglite for the
 * embedded one), its own status socket. The relays are hosted in --workers processes
 * (bench/fleet-worker.ts; relay i in worker (i - 1) mod W), so that no one process holds the whole
 * fleet's heap and the fleet uses every core (W defaults to the cores; more processes than cores cost
 * more CPU per event, measured in bench/README.md); this process runs the services, the probes and the
 * clock. The fleet grows in batches
 * to each N of --relays and is measured there:
 *
 *  - join: a probe relay registered with the service role (no daemon of its own: only the fleet's work
 *    is measured) until every relay of the fleet has folded its admission; p50 / p99 over --probes
 *    joins, each followed by the probe's leave;
 *  - CPU ms of the in-memory relays' workers per relay per topology event over those probes, less
 *    their idle rate measured just before with the same polling (heartbeats, timers), and its ratio
 *    between the last two N;
 *  - admissions/s: --admissions probe registrations, 8 concurrent, at fleet size N (each snapshot
 *    carries N relays), then their leaves;
 *  - heartbeat p50 / p99: the fleet's own heartbeat calls, timed in the workers (fetch), over the whole
 *    window and over the last 20 s of steady state alone (under load they wait for the workers too);
 *  - publisher lag p50 / p99: a topology event's envelope time (written with its revision) to its arrival
 *    on the stream, seen by a core-NATS observer;
 *  - restarts: 10% of the fleet stopped (they deregister) and started again with their state; deliveries/s
 *    (topology events folded by the fleet per second) from the first stop until every relay has folded
 *    everything again;
 *  - memory per in-memory relay (their workers' RSS and V8 heap after a full GC, less what they held
 *    before the first relay); resyncs of relays that were not restarted, under that load and then in 20 s of steady
 *    state (0 expected); the relays' own events per relay per topology event, by type.
 *
 * The in-memory host has nobody to hand shake with: links stay "handshaking" (programmed), so the
 * relays' link timers are set beyond the run and their devices are not polled.
 *
 * Real relays (--real R, default 2; 0 for none): relay-1 .. relay-R program a real host, each its
 * kernel in a network namespace of its own (one wireguard-go process per link, routes, nftables),
 * the namespaces on one bridge so that the links between the real relays come up. They are members
 * of the fleet from the first batch and grow with it. At each N:
 *  - a probe's join until every real relay has programmed its link to it (device and peer on the host);
 *  - their kernel work per topology event over the probes: rounds, wall ms, commands run (it must stay
 *    flat as the fleet grows: a round plans and reads only what the event changed);
 *  - relay-1 stopped (deregistered, every device torn down) and started again: until its links to the
 *    other real relays are up (handshakes) and until it has programmed a link to every relay.
 * They are left out of the 10% restarts. Needs root, wireguard-go (`npm run setup`), and room for a
 * wireguard-go process per link: fs.inotify.max_user_instances and kernel.pid_max are checked first
 * (Linux's defaults allow a real relay 64 links; docs/operations.md).
 *
 *   npm run bench:fleet -- --relays 10,100,1000 [--workers W] [--real R] [--batch 25] [--probes 10] [--admissions 40] [--db postgres|pglite] [--receipt-epoch S] [--heap-growing P] [--v8 FLAG,FLAG] [--relay-expire S] [--profile DIR] [--heap-snapshot DIR] [--nats-log FILE]
 *
 * --nats-log FILE: append nats-server's own log to FILE (it says why it closed a client's connection).
 *
 * --heap-growing P: V8's heap growing factor in the workers, 1 + P/100 (`--heap-growing-percent`). By
 * default V8 lets a heap grow to several times what is live before it collects the old generation
 * (the workers' RSS was 7.7 MiB per relay at N=100 for 1.06 MiB of live heap); at N=1,000 that does not
 * fit in this machine's memory. 30 keeps RSS near 3 times the live heap (N=300-600), for more collections.
 *
 * --v8 FLAG,FLAG: more V8 flags for the workers (without the leading dashes), for experiments with
 * the collector (e.g. compact-on-every-full-gc).
 *
 * --relay-expire S: how long a relay may stay silent before the control plane expires it (default the
 * database's, 300 s). A worker hosting 500 relays on a saturated core sends their heartbeats minutes
 * late, which a relay on its own host does not: run 3 to N=1,000 lost 299 relays that way
 * (bench/README.md). The expiry itself is tested in test/integration/control-plane.test.ts.
 *
 * --receipt-epoch S: the Proof-of-Bandwidth receipt epoch (default a day, so that no relay hands in its
 * receipts during the run).
 *
 * --heap-snapshot DIR: a V8 heap snapshot of each worker at each N, after the steady state
 * (DIR/fleet-N-wK.heapsnapshot; a worker of 500 relays writes gigabytes).
 *
 * --profile DIR: a V8 CPU profile of each worker over the probe window at each N
 * (DIR/fleet-N-wK.cpuprofile; open it in Chrome's DevTools, or sum self times with scripts/profile-top.ts).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { createWriteStream, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, totalmem } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { RealHost, RealReport, Unsettled, WorkerRequest } from './fleet-worker.ts';
import { startLocalControlPlane } from '../src/control-plane/local.ts';
import { rootLogger } from '../src/lib/logger.ts';
import { addBridge, addNetns, attachToBridge, deleteNetns, netnsPids, signal, WG_SOCKET_DIR, wgSocketNames } from '../src/sim/netns.ts';
import { preflight } from '../src/sim/network.ts';
import { generateWgKeyPair } from '../src/lib/wg-keys.ts';
import { startAuthedNats } from '../test/support/authed-nats.ts';
import { startTestPostgres } from '../test/support/postgres.ts';
import { tempDir } from '../test/support/temp.ts';

const { values } = parseArgs({
  options: {
    relays: { type: 'string', default: '10,100,1000' },
    workers: { type: 'string', default: String(availableParallelism()) },
    'receipt-epoch': { type: 'string', default: '86400' },
    batch: { type: 'string', default: '25' },
    probes: { type: 'string', default: '10' },
    admissions: { type: 'string', default: '40' },
    db: { type: 'string', default: 'postgres' },
    profile: { type: 'string' },
    'heap-growing': { type: 'string', default: '0' },
    'relay-expire': { type: 'string' },
    'heap-snapshot': { type: 'string' },
    real: { type: 'string', default: '2' },
    v8: { type: 'string', default: '' },
    'nats-log': { type: 'string' },
  },
});
const sizes = values.relays.split(',').map(Number);
const BATCH = Number(values.batch);
const WORKERS = Number(values.workers);
/** Each worker's V8 heap limit: a share of the machine's memory, at least 2 GiB. */
const WORKER_HEAP_MB = Math.max(2048, Math.floor((totalmem() * 0.75) / 2 ** 20 / Math.max(1, Number(values.workers))));
/** V8's heap growing factor in the workers, as a percentage over 1 (0: V8's own, which grows the heap to some 4x what is live). */
const HEAP_GROWING = Number(values['heap-growing']);
/** More V8 flags for the workers (--v8 flag,flag: e.g. compact-on-every-full-gc). */
const V8_FLAGS = values.v8
  .split(',')
  .filter(Boolean)
  .map((f) => `--${f.replace(/^-+/, '')}`);
const PROBES = Number(values.probes);
const ADMISSIONS = Number(values.admissions);
if (sizes.some((n, i) => !Number.isInteger(n) || n < 1 || (i > 0 && n <= sizes[i - 1]!)))
  throw new Error('--relays: increasing relay counts, e.g. 10,100,1000');
if (values.db !== 'postgres' && values.db !== 'pglite') throw new Error('--db: postgres or pglite');
if (!Number.isInteger(WORKERS) || WORKERS < 1) throw new Error('--workers: a positive number of processes');
const REAL = Number(values.real);
if (!Number.isInteger(REAL) || REAL < 0 || REAL > 9 || REAL > sizes[0]!) throw new Error('--real: 0 to 9 real relays, no more than the first fleet size');
if (REAL > 0) {
  if (process.getuid?.() !== 0) throw new Error('--real: real relays need root (network namespaces, wireguard-go); run as root or with --real 0');
  await preflight();
  // Each real relay has a wireguard-go device per peer (the fleet, the probes and the admissions at
  // once): one inotify instance and about 11 threads (PIDs) each. Linux's defaults (128 instances,
  // 32768 PIDs) stop a real relay's devices at N=65 (docs/operations.md).
  const devices = REAL * (sizes.at(-1)! + ADMISSIONS + 2);
  const limit = (file: string) => Number(readFileSync(file, 'utf8').trim());
  const inotify = limit('/proc/sys/fs/inotify/max_user_instances');
  const pids = limit('/proc/sys/kernel/pid_max');
  if (inotify < devices + 128 || pids < devices * 12 + 8192)
    throw new Error(
      `--real ${REAL} up to N=${sizes.at(-1)} runs some ${devices} wireguard-go processes, but fs.inotify.max_user_instances is ${inotify} ` +
        `(one each: at least ${devices + 128}) and kernel.pid_max ${pids} (11 threads each: at least ${devices * 12 + 8192}). ` +
        `Raise them (sysctl -w fs.inotify.max_user_instances=${Math.max(8192, devices + 128)} kernel.pid_max=4194304), or run with --real 0`,
    );
}

const log = rootLogger({ bench: 'fleet' }, process.env.RELAYNET_LOG_LEVEL ?? 'error');
const out = (s: string) => process.stdout.write(`${s}\n`);
/** Epoch ms: the workers' times are on the same clock. */
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], p: number) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};
const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '-');
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '-');

// ---------------------------------------------------------------------------------------------
// The services.

const tmp = tempDir('bench-fleet');
const pg = values.db === 'postgres' ? await startTestPostgres() : null;
// --nats-log FILE: nats-server's own log (why it closed a connection: slow consumer, stale, auth timeout).
const natsLog = values['nats-log'] ? createWriteStream(values['nats-log'], { flags: 'a' }) : null;
const bus = await startAuthedNats(join(tmp.dir, 'nats'), join(tmp.dir, 'cp'), natsLog ? { onLog: (line) => natsLog.write(line) } : {});
// Receipt epochs of a day by default: every relay hands in its receipts at each boundary (a burst of
// N receipts each), which is not what this benchmark measures (bench/README.md, --receipt-epoch).
const cp = await startLocalControlPlane({
  stateDir: join(tmp.dir, 'cp'),
  port: 0,
  dbUrl: pg?.url,
  natsServers: bus.urls,
  receiptEpochSeconds: Number(values['receipt-epoch']),
  ...(values['relay-expire'] === undefined ? {} : { relayExpireSeconds: Number(values['relay-expire']) }),
  logger: log,
});

/**
 * The real relays' hosts: relay-1 .. relay-R, each its kernel in a network namespace of its own on one
 * bridge (198.18.1.0/24, in a namespace too), so that their links to each other come up. Nothing else
 * is routed from there: their links to the in-memory relays stay handshaking, and no packet leaves.
 * Their devices are named with a prefix of this run (wireguard-go's sockets are shared by every
 * namespace), and everything goes with the run (shutdown).
 */
const runId = randomBytes(3).toString('hex').slice(0, 4);
const realNs = { inet: `rcf-${runId}-inet`, relay: (k: number) => `rcf-${runId}-r${k}` };
const realPrefix = `q${String.fromCharCode(97 + randomInt(26), 97 + randomInt(26))}`;
const realHost = (index: number): RealHost | undefined =>
  index <= REAL ? { netns: realNs.relay(index), address: `198.18.1.${10 + index}`, wgPrefix: realPrefix } : undefined;
const realIds = Array.from({ length: REAL }, (_, k) => `relay-${k + 1}`);
async function removeRealHosts(): Promise<void> {
  const names = [realNs.inet, ...realIds.map((_, k) => realNs.relay(k + 1))];
  for (const ns of names) for (const pid of await netnsPids(ns).catch(() => [])) signal(pid, 'SIGKILL');
  for (const ns of names) await deleteNetns(ns).catch(() => {});
  // Only this run's devices' sockets (the prefix, then digits: not another prefix that begins with it).
  for (const f of wgSocketNames()) if (new RegExp(`^${realPrefix}\\d+(m\\d+|c|cp)\\.sock$`).test(f)) rmSync(join(WG_SOCKET_DIR, f), { force: true });
}
if (REAL > 0) {
  try {
    await addNetns(realNs.inet);
    await addBridge(realNs.inet, 'br0', '198.18.1.1/24');
    for (let k = 1; k <= REAL; k++) {
      await addNetns(realNs.relay(k));
      await attachToBridge({
        bridgeNs: realNs.inet,
        bridge: 'br0',
        outer: `v${runId}r${k}`,
        ns: realNs.relay(k),
        inner: 'pub0',
        cidr: `198.18.1.${10 + k}/24`,
        gateway: null,
      });
    }
  } catch (e) {
    await removeRealHosts();
    throw e;
  }
}

/** Every topology event as it arrives on the stream: its revision, and the publisher's lag behind its envelope time. */
let latestRevision = 0;
const lags: { at: number; ms: number }[] = [];
const observer = await bus.connect({ kind: 'observer', subjects: ['relaynet.topology.>', 'relaynet.relay.>'] });

/**
 * The relays are not stopped one by one (each leave is an event every other relay folds): their
 * workers are killed, the services go, and this process with them. Also on Ctrl-C or SIGTERM: no PostgreSQL, nats-server or directory left.
 */
const workers: Worker[] = [];
/** The real relays' own process (null without --real): their CPU and memory are not the in-memory fleet's. */
let realWorker: Worker | null = null;
/** Every worker process, the real relays' included. */
const everyWorker = () => (realWorker ? [...workers, realWorker] : workers);
let stopping: Promise<void> | null = null;
const shutdown = () =>
  (stopping ??= (async () => {
    for (const w of everyWorker()) w.child.kill('SIGKILL');
    if (REAL > 0) await removeRealHosts();
    await observer.close().catch(() => {});
    await cp.stop().catch(() => {});
    await Promise.all(bus.servers.map((s) => s.stop()));
    await pg?.stop();
    tmp.remove();
  })());
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void shutdown().finally(() => process.exit(130)));
const sub = observer.subscribe('relaynet.topology.>');
/** The relays' own events by type (the subject's last token), counted while `relayEventsOn`. */
const relayEvents = new Map<string, number>();
let relayEventsOn = false;
let lastRelayEventAt = 0;
/** The same, always, since the waiting for the fleet to settle last said what it saw. */
const recentRelayEvents = new Map<string, number>();
const relaySub = observer.subscribe('relaynet.relay.>');
void (async () => {
  for await (const m of relaySub) {
    lastRelayEventAt = now();
    let type = m.subject.slice(m.subject.lastIndexOf('.') + 1);
    if (type === 'topology-resync-requested') {
      try {
        const { reason, detail } = m.json<{ data: { reason?: string; detail?: string } }>().data;
        type += ` (${reason}${detail?.includes('not registered') ? ', not registered' : ''})`;
      } catch {
        /* counted without its reason */
      }
    }
    recentRelayEvents.set(type, (recentRelayEvents.get(type) ?? 0) + 1);
    if (relayEventsOn) relayEvents.set(type, (relayEvents.get(type) ?? 0) + 1);
  }
})();
void (async () => {
  for await (const m of sub) {
    try {
      const e = m.json<{ time: string; data: { revision?: number } }>();
      lags.push({ at: now(), ms: Date.now() - Date.parse(e.time) });
      if (typeof e.data.revision === 'number' && e.data.revision > latestRevision) latestRevision = e.data.revision;
    } catch {
      /* not an event: not ours to measure */
    }
  }
})();

/** Register (or deregister) a probe relay with the service role: the control plane's work and the fleet's, no daemon's. */
async function probe(fn: 'register-server' | 'deregister', id: string, i: number): Promise<number> {
  const body =
    fn === 'register-server'
      ? { relayId: id, name: id, region: 'probe', publicKey: generateWgKeyPair().publicKey, endpoint: `198.18.200.${(i % 250) + 1}:51820` }
      : { relayId: id };
  const call = () =>
    fetch(`${cp.url}/functions/v1/${fn}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${cp.serviceRoleKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  // A kept-alive connection the gateway closed meanwhile fails at once (ECONNRESET): both calls are
  // idempotent, so once more on a fresh one, as the relays' own client does.
  let res: Response;
  for (let attempt = 1; ; attempt++) {
    try {
      res = await call();
      break;
    } catch (e) {
      if (attempt >= 3) throw e;
      await sleep(200 * attempt);
    }
  }
  const text = await res.text();
  if (res.status !== 200) throw new Error(`${fn} ${id}: ${res.status} ${text}`);
  return (JSON.parse(text) as { revision?: number }).revision ?? 0;
}

// ---------------------------------------------------------------------------------------------
// The fleet: spread over --workers processes (bench/fleet-worker.ts), relay i in worker (i - 1) % W;
// the real relays (1 .. R) in one more process of their own.

interface Worker {
  k: number;
  child: ChildProcess;
  pending: Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>;
  seq: number;
  exited: Error | null;
}
function forkWorker(k: number): Worker {
  const child = fork(fileURLToPath(new URL('./fleet-worker.ts', import.meta.url)), [], {
    execArgv: ['--expose-gc', `--max-old-space-size=${WORKER_HEAP_MB}`, ...(HEAP_GROWING ? [`--heap-growing-percent=${HEAP_GROWING}`] : []), ...V8_FLAGS],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const w: Worker = { k, child, pending: new Map(), seq: 0, exited: null };
  child.on('message', (msg: { id: number; value?: unknown; error?: string }) => {
    const p = w.pending.get(msg.id);
    if (!p) return;
    w.pending.delete(msg.id);
    if (msg.error !== undefined) p.reject(new Error(`fleet worker ${k}: ${msg.error}`));
    else p.resolve(msg.value);
  });
  child.on('exit', (code, signal) => {
    w.exited = new Error(`fleet worker ${k} (pid ${child.pid}) exited (${signal ?? `code ${code}`})`);
    for (const p of w.pending.values()) p.reject(w.exited);
    w.pending.clear();
  });
  return w;
}

function ask<T>(w: Worker, req: WorkerRequest): Promise<T> {
  if (w.exited) return Promise.reject(w.exited);
  const id = ++w.seq;
  return new Promise<T>((resolve, reject) => {
    w.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
    w.child.send({ id, ...req });
  });
}
/** Ask every worker, the real relays' too. */
const askAll = <T>(req: WorkerRequest) => Promise.all(everyWorker().map((w) => ask<T>(w, req)));
/** Ask the in-memory fleet's workers alone (CPU, memory, profiles). */
const askFleet = <T>(req: WorkerRequest) => Promise.all(workers.map((w) => ask<T>(w, req)));

/** The fleet: relay id to its index (its worker is workerOf(index)). */
const fleet = new Map<string, number>();
const workerOf = (index: number) => (index <= REAL ? realWorker! : workers[(index - 1) % workers.length]!);

/** Start relays (tokens minted here, daemons started in their workers); resolves once all serve. */
async function startMembers(indices: number[]): Promise<void> {
  const byWorker = new Map<Worker, { index: number; token: string; real?: RealHost }[]>();
  for (const index of indices) {
    const token = await cp.mintRelayToken(`relay-${index}`, 30 * 86400);
    const w = workerOf(index);
    const real = realHost(index);
    byWorker.set(w, [...(byWorker.get(w) ?? []), { index, token, ...(real ? { real } : {}) }]);
  }
  await Promise.all([...byWorker].map(([w, members]) => ask(w, { op: 'start', members })));
  for (const index of indices) fleet.set(`relay-${index}`, index);
}

/** Until `ok` holds (polled every `everyMs`), or throw after `timeoutMs` saying `what`. */
async function until(what: string, ok: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 10): Promise<number> {
  const deadline = now() + timeoutMs;
  for (;;) {
    if (await ok()) return now();
    if (now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** The time every relay of the fleet has folded revision `r`: the latest of the workers' (each polls its relays every 10 ms). */
async function allFolded(r: number, timeoutMs = 600_000): Promise<number> {
  const at = await askAll<number | null>({ op: 'folded', revision: r, timeoutMs });
  if (at.some((t) => t === null)) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for every relay to fold revision ${r}`);
  return Math.max(...(at as number[]));
}

const fleetCpuMs = async () => (await askFleet<number>({ op: 'cpu' })).reduce((a, b) => a + b, 0);
const realCpuMs = async () => (realWorker ? await ask<number>(realWorker, { op: 'cpu' }) : 0);
async function fleetMem(): Promise<{ rss: number; heap: number; external: number }> {
  const ms = await askFleet<{ rss: number; heap: number; external: number }>({ op: 'mem' });
  const sum = (k: 'rss' | 'heap' | 'external') => ms.reduce((a, m) => a + m[k], 0);
  return { rss: sum('rss'), heap: sum('heap'), external: sum('external') };
}
async function fleetCounters(): Promise<Map<string, { applied: number; resyncs: number }>> {
  const parts = await askAll<Record<string, { applied: number; resyncs: number }>>({ op: 'counters' });
  return new Map(parts.flatMap((p) => Object.entries(p)));
}
const sumOf = (c: Map<string, { applied: number; resyncs: number }>, f: (x: { applied: number; resyncs: number }) => number, ids: Iterable<string>) =>
  [...ids].reduce((a, id) => a + (c.has(id) ? f(c.get(id)!) : 0), 0);

/** The real relays' reports (kernel work, and their links to `peers`; null: every link). */
const realReports = async (peers: string[] | null): Promise<RealReport[]> => (realWorker ? await ask<RealReport[]>(realWorker, { op: 'real', peers }) : []);
/** Link states past the kernel's part: the device and peer are on the host. */
const PROGRAMMED = new Set(['handshaking', 'up', 'stale', 'down']);
/** The time every real relay has programmed its link to `peer`. */
const realProgrammed = (peer: string): Promise<number> =>
  until(
    `every real relay's link to ${peer}`,
    async () => {
      const rs = await realReports([peer]);
      return rs.length === REAL && rs.every((r) => PROGRAMMED.has(r.links[peer] ?? 'absent'));
    },
    600_000,
    20,
  );
/** The real relays' kernel work from `a` to `b`, summed: rounds, wall ms, commands. */
function workBetween(a: RealReport[], b: RealReport[]): { rounds: number; roundMs: number; commands: number } {
  const sum = { rounds: 0, roundMs: 0, commands: 0 };
  for (const r of b) {
    const was = a.find((x) => x.id === r.id)?.work ?? { rounds: 0, roundMs: 0, commands: 0 };
    sum.rounds += r.work.rounds - was.rounds;
    sum.roundMs += r.work.roundMs - was.roundMs;
    sum.commands += (r.work.commands ?? 0) - (was.commands ?? 0);
  }
  return sum;
}

/**
 * relay-1 (real) stopped and started again: how long its stop took (deregistration and teardown of
 * every device), then from its start until its links to the other real relays are up (handshakes
 * both ways) and until it has programmed a link to every relay, and its kernel's work for that.
 */
async function realRestart(): Promise<{ stopS: number; upS: number; programmedS: number; rounds: number; commands: number }> {
  const id = realIds[0]!;
  const index = fleet.get(id)!;
  const t0 = now();
  await ask(workerOf(index), { op: 'stop', ids: [id] });
  fleet.delete(id);
  const t1 = now();
  await startMembers([index]);
  const up =
    REAL < 2
      ? NaN
      : await until(
          'the links between the real relays to be up',
          async () => {
            const rs = await realReports(realIds);
            return rs.length === REAL && rs.every((r) => realIds.every((p) => p === r.id || r.links[p] === 'up'));
          },
          900_000,
          100,
        );
  let mine: RealReport | undefined;
  const programmed = await until(
    `${id} to program a link to every relay`,
    async () => {
      mine = (await realReports(null)).find((r) => r.id === id);
      const states = Object.values(mine?.links ?? {});
      return states.length === fleet.size - 1 && states.every((st) => PROGRAMMED.has(st));
    },
    900_000,
    500,
  );
  return {
    stopS: (t1 - t0) / 1000,
    upS: (up - t1) / 1000,
    programmedS: (programmed - t1) / 1000,
    rounds: mine!.work.rounds,
    commands: mine!.work.commands ?? 0,
  };
}

// ---------------------------------------------------------------------------------------------
// Measurements at one fleet size.

interface Figures {
  n: number;
  growS: number;
  joinP50: number;
  joinP99: number;
  cpuPerRelayEvent: number;
  idleCpuPct: number;
  admissionsPerS: number;
  heartbeatP50: number;
  heartbeatP99: number;
  heartbeats: number;
  steadyHeartbeatP99: number;
  steadyHeartbeats: number;
  lagP50: number;
  lagP99: number;
  restarted: number;
  restartS: number;
  deliveriesPerS: number;
  rssPerRelayMiB: number;
  heapPerRelayMiB: number;
  externalPerRelayMiB: number;
  /** Of relays not restarted: during the probes, admissions and restarts; then in 20 s of steady state. */
  resyncs: number;
  steadyResyncs: number;
  /** The relays' own events per relay per probe event, by type. */
  relayEvents: string;
  /** Real relays: a probe's join until every real relay programmed its link to it, p50 / p99 (ms). */
  realJoinP50: number;
  realJoinP99: number;
  /** Real relays' kernel work per relay per probe event: rounds, wall ms, commands. */
  realRoundsPerEvent: number;
  /** The real relays' process CPU ms per relay per probe event (their commands' own processes not counted). */
  realCpuPerEvent: number;
  realRoundMsPerEvent: number;
  realCommandsPerEvent: number;
  realRestart: Awaited<ReturnType<typeof realRestart>> | null;
}

let probeSeq = 0;
/** What the workers hold with no relay yet (after a full GC), taken once they have started. */
let memBase = { rss: 0, heap: 0, external: 0 };

async function growTo(n: number): Promise<number> {
  const t0 = now();
  let next = fleet.size + 1;
  while (fleet.size < n) {
    const batch = Array.from({ length: Math.min(BATCH, n - fleet.size) }, () => next++);
    await startMembers(batch);
    if (fleet.size % 100 === 0 || fleet.size === n) {
      // The workers' memory as it is (no collection first): what V8 holds on to while the fleet grows.
      const ms = await askFleet<{ rss: number; heapUsed: number; heapTotal: number; spaces: string }>({ op: 'mem-now' });
      const gb = (k: 'rss' | 'heapUsed' | 'heapTotal') => ms.map((m) => (m[k] / 2 ** 30).toFixed(1)).join('+');
      out(
        `  fleet: ${fleet.size} relays (${((now() - t0) / 1000).toFixed(0)} s); workers GB: RSS ${gb('rss')}, heap used ${gb('heapUsed')} of ${gb('heapTotal')}; MiB used/held by space: ${ms.map((m) => `[${m.spaces}]`).join(' ')}`,
      );
    }
  }
  await allFolded(latestRevision);
  return (now() - t0) / 1000;
}

/**
 * Until every relay has done and published all that came before (its kernel idle, no event waiting to
 * be published) and none has arrived on the stream for a second: an idle window must be idle. Every
 * 30 s of waiting it says what keeps the fleet busy: the relays not settled, and the relay events that
 * arrived meanwhile by type.
 */
async function quiet(): Promise<number> {
  let saidAt = now();
  recentRelayEvents.clear();
  return until(
    'every relay to settle and publish all its events',
    async () => {
      // The workers' loop delay covers the time since the line before (the first: since the workers began).
      const saying = now() - saidAt >= 30_000;
      const unsettled = await askAll<Unsettled>({ op: 'settled', resetLoopDelay: saying });
      const relays = unsettled.reduce((a, u) => a + u.relays, 0);
      if (relays === 0 && now() - lastRelayEventAt > 1_000) return true;
      if (saying) {
        const kernelBusy = unsettled.reduce((a, u) => a + u.kernelBusy, 0);
        const pending = unsettled.reduce((a, u) => a + u.eventsPending, 0);
        const example = unsettled.find((u) => u.example)?.example;
        const resent = unsettled.reduce((a, u) => a + u.eventsResent, 0);
        const loops = unsettled.map((u) => `${u.loopDelayP99Ms.toFixed(0)}/${u.loopDelayMaxMs.toFixed(0)}`).join(', ');
        const events = [...recentRelayEvents].sort((a, b) => b[1] - a[1]).map(([t, c]) => `${t} ${c}`);
        out(
          `  settling: ${relays} relays not settled (${kernelBusy} with a busy kernel actor, ${pending} events to publish${example ? `; e.g. ${example}` : ''}; ${resent} sent again since start; workers' event loop delay p99/max ${loops} ms); relay events in the last ${((now() - saidAt) / 1000).toFixed(0)} s: ${events.join(', ') || 'none'}`,
        );
        saidAt = now();
        recentRelayEvents.clear();
      }
      return false;
    },
    1_800_000,
    250,
  );
}

async function measureAt(n: number): Promise<Figures> {
  const growS = await growTo(n);
  await quiet();
  const windowStart = now();
  const countersBefore = await fleetCounters();

  // Idle: the same polling as while waiting for a revision (each worker's relays every 10 ms), for 5 s.
  const idleMs = 5_000;
  const [c0, rc0] = [await fleetCpuMs(), await realCpuMs()];
  const t0 = now();
  await askAll({ op: 'folded', revision: Number.MAX_SAFE_INTEGER, timeoutMs: idleMs });
  const idleRate = ((await fleetCpuMs()) - c0) / (now() - t0);
  const realIdleRate = ((await realCpuMs()) - rc0) / (now() - t0);

  // Joins and leaves of probe relays, one at a time.
  const joins: number[] = [];
  const realJoins: number[] = [];
  const realWork0 = REAL > 0 ? await realReports([]) : [];
  relayEvents.clear();
  relayEventsOn = true;
  const [c1, rc1] = [await fleetCpuMs(), await realCpuMs()];
  const t1 = now();
  let events = 0;
  if (values.profile) await Promise.all(workers.map((w) => ask(w, { op: 'profile', file: join(values.profile!, `fleet-${n}-w${w.k}.cpuprofile`) })));
  for (let k = 0; k < PROBES; k++) {
    const id = `probe-${++probeSeq}`;
    const s = now();
    const r = await probe('register-server', id, probeSeq);
    const [folded, programmed] = await Promise.all([allFolded(r), REAL > 0 ? realProgrammed(id) : NaN]);
    joins.push(folded - s);
    if (REAL > 0) realJoins.push(programmed - s);
    const before = latestRevision;
    await probe('deregister', id, probeSeq);
    await until(`${id}'s leave on the stream`, () => latestRevision > before, 30_000);
    await allFolded(latestRevision);
    events += 2;
  }
  // Until the relays have published what the probes made them do: that is part of their work.
  await quiet();
  if (values.profile) await askFleet({ op: 'profile', file: null });
  relayEventsOn = false;
  // The in-memory relays' CPU alone: the real relays have their own process (realCpuPerEvent).
  const memoryRelays = n - REAL;
  const cpuPerRelayEvent = ((await fleetCpuMs()) - c1 - idleRate * (now() - t1)) / (memoryRelays * events);
  const realCpuPerEvent = REAL > 0 ? ((await realCpuMs()) - rc1 - realIdleRate * (now() - t1)) / (REAL * events) : NaN;
  const perRelayEvent = [...relayEvents].map(([t, c]) => `${t} ${(c / (n * events)).toFixed(2)}`).join(', ');
  const realWork = workBetween(realWork0, REAL > 0 ? await realReports([]) : []);
  // Said as soon as known: a run stopped later (the restarts take longest) keeps these.
  out(
    `N=${n}: grew in ${f1(growS)} s; ${PROBES} joins: p50 ${f1(pct(joins, 50))} ms p99 ${f1(pct(joins, 99))} ms; ${f2(cpuPerRelayEvent)} CPU ms/relay/event (idle ${f1(idleRate * 100)}% CPU); relay events per relay per topology event: ${perRelayEvent}`,
  );

  // Admissions at this size: 8 concurrent registrations, then their leaves.
  const ids = Array.from({ length: ADMISSIONS }, () => `probe-${++probeSeq}`);
  let nextId = 0;
  const a0 = now();
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (nextId < ids.length) {
        const i = nextId++;
        await probe('register-server', ids[i]!, probeSeq + i);
      }
    }),
  );
  const admissionsPerS = ids.length / ((now() - a0) / 1000);
  out(`N=${n}: ${f1(admissionsPerS)} admissions/s (${ids.length}, 8 at once); restarting every tenth relay ...`);
  await allFolded(latestRevision);
  for (const id of ids) await probe('deregister', id, 0);
  await sleep(500);
  await allFolded(latestRevision);

  // Restarts: every tenth relay stopped (deregistered) and started again with its state.
  // (The real relays are not among them: theirs is realRestart, last.)
  const all = [...fleet].filter(([id]) => !realIds.includes(id));
  const restart = all.filter((_, i) => i % 10 === 0);
  const stay = all.filter((_, i) => i % 10 !== 0).map(([id]) => id);
  const before = await fleetCounters();
  const r0 = now();
  await Promise.all(
    workers.map((w) => {
      const ids = restart.filter(([, index]) => workerOf(index) === w).map(([id]) => id);
      return ids.length ? ask(w, { op: 'stop', ids }) : null;
    }),
  );
  for (const [id] of restart) fleet.delete(id);
  await startMembers(restart.map(([, index]) => index));
  await sleep(200);
  const restartEnd = await allFolded(latestRevision);
  const restartS = (restartEnd - r0) / 1000;
  const after = await fleetCounters();
  const applied = (x: { applied: number }) => x.applied;
  const deliveries =
    sumOf(after, applied, stay) -
    sumOf(before, applied, stay) +
    sumOf(
      after,
      applied,
      restart.map(([id]) => id),
    );

  const resyncsOf = (c: Map<string, { applied: number; resyncs: number }>) =>
    stay.reduce((a, id) => a + (c.get(id)?.resyncs ?? 0) - (countersBefore.get(id)?.resyncs ?? 0), 0);
  const resyncs = resyncsOf(after);
  // Steady state once more: two heartbeat periods with nothing happening.
  await quiet();
  const steadyStart = now();
  await sleep(20_000);
  const steadyResyncs = resyncsOf(await fleetCounters()) - resyncs;

  const mem = await fleetMem();
  if (values['heap-snapshot'])
    await Promise.all(workers.map((w) => ask(w, { op: 'heap-snapshot', file: join(values['heap-snapshot']!, `fleet-${n}-w${w.k}.heapsnapshot`) })));
  const hb = (await askAll<number[]>({ op: 'heartbeats', since: windowStart })).flat();
  // Those of the steady state alone: the control plane's answer, not the workers' backlog under load.
  const hbSteady = (await askAll<number[]>({ op: 'heartbeats', since: steadyStart })).flat();
  const lag = lags.filter((l) => l.at >= windowStart).map((l) => l.ms);
  const realPerEvent = (x: number) => x / (REAL * events);
  return {
    n,
    growS,
    joinP50: pct(joins, 50),
    joinP99: pct(joins, 99),
    cpuPerRelayEvent,
    idleCpuPct: idleRate * 100,
    admissionsPerS,
    heartbeatP50: pct(hb, 50),
    heartbeatP99: pct(hb, 99),
    heartbeats: hb.length,
    steadyHeartbeatP99: pct(hbSteady, 99),
    steadyHeartbeats: hbSteady.length,
    lagP50: pct(lag, 50),
    lagP99: pct(lag, 99),
    restarted: restart.length,
    restartS,
    deliveriesPerS: deliveries / restartS,
    rssPerRelayMiB: (mem.rss - memBase.rss) / memoryRelays / 2 ** 20,
    heapPerRelayMiB: (mem.heap - memBase.heap) / memoryRelays / 2 ** 20,
    externalPerRelayMiB: (mem.external - memBase.external) / memoryRelays / 2 ** 20,
    resyncs,
    steadyResyncs,
    relayEvents: perRelayEvent,
    realJoinP50: pct(realJoins, 50),
    realJoinP99: pct(realJoins, 99),
    realRoundsPerEvent: realPerEvent(realWork.rounds),
    realCpuPerEvent,
    realRoundMsPerEvent: realPerEvent(realWork.roundMs),
    realCommandsPerEvent: realPerEvent(realWork.commands),
    // Last: its teardown and start are work the figures above must not see.
    realRestart: REAL > 0 ? await realRestart() : null,
  };
}

// ---------------------------------------------------------------------------------------------

const results: Figures[] = [];
try {
  for (let k = 0; k < WORKERS; k++) workers.push(forkWorker(k));
  if (REAL > 0) realWorker = forkWorker(WORKERS);
  await askAll({ op: 'init', init: { dir: tmp.dir, controlPlaneUrl: cp.url, topologyKey: cp.topologyPublicKey } });
  memBase = await fleetMem();
  out(
    `fleet: relays hosted in ${WORKERS} worker processes (in-memory kernel${REAL > 0 ? `; ${realIds.join(', ')} real: wireguard-go in namespaces ${realNs.relay(1)}..` : ''}), NATS at ${bus.url}, control plane ${cp.url} on ${values.db}`,
  );
  for (const n of sizes) {
    out(`N=${n}: growing in batches of ${BATCH} ...`);
    const f = await measureAt(n);
    results.push(f);
    const rr = f.realRestart;
    if (rr)
      out(
        `N=${n}: real relays: a join until every real relay programmed its link p50 ${f1(f.realJoinP50)} ms p99 ${f1(f.realJoinP99)} ms; per relay per topology event ${f2(f.realRoundsPerEvent)} kernel rounds, ${f1(f.realRoundMsPerEvent)} ms, ${f1(f.realCommandsPerEvent)} commands, ${f2(f.realCpuPerEvent)} CPU ms of the relays' process; ` +
          `${realIds[0]} restarted: stop ${f1(rr.stopS)} s, start to links between real relays up ${f1(rr.upS)} s, to all ${n - 1} links programmed ${f1(rr.programmedS)} s (${rr.rounds} rounds, ${rr.commands} commands)`,
      );
    out(
      `N=${n}: grew in ${f1(f.growS)} s; join p50 ${f1(f.joinP50)} ms p99 ${f1(f.joinP99)} ms; ${f2(f.cpuPerRelayEvent)} CPU ms/relay/event (idle ${f1(f.idleCpuPct)}% CPU); ` +
        `${f1(f.admissionsPerS)} admissions/s; heartbeat p50 ${f1(f.heartbeatP50)} p99 ${f1(f.heartbeatP99)} ms (${f.heartbeats}), in steady state p99 ${f1(f.steadyHeartbeatP99)} ms (${f.steadyHeartbeats}); publisher lag p50 ${f1(f.lagP50)} p99 ${f1(f.lagP99)} ms; ` +
        `restart of ${f.restarted}: ${f1(f.restartS)} s, ${f1(f.deliveriesPerS)} deliveries/s; ${f2(f.rssPerRelayMiB)} MiB RSS, ${f2(f.heapPerRelayMiB)} MiB heap, ${f2(f.externalPerRelayMiB)} MiB external per relay; ${f.resyncs} resyncs under load, ${f.steadyResyncs} in steady state; relay events per relay per topology event: ${f.relayEvents}`,
    );
  }
  out('');
  out(
    '| N | join p50 / p99 (ms) | CPU ms / relay / event | admissions/s | heartbeat p50 / p99 (ms), steady p99 | publisher lag p50 / p99 (ms) | restart 10%: s, deliveries/s | MiB / relay (RSS, heap) | resyncs: load, steady |',
  );
  out('|---|---|---|---|---|---|---|---|---|');
  for (const f of results) {
    out(
      `| ${f.n} | ${f1(f.joinP50)} / ${f1(f.joinP99)} | ${f2(f.cpuPerRelayEvent)} | ${f1(f.admissionsPerS)} | ${f1(f.heartbeatP50)} / ${f1(f.heartbeatP99)}, ${f1(f.steadyHeartbeatP99)} | ${f1(f.lagP50)} / ${f1(f.lagP99)} | ${f1(f.restartS)}, ${f1(f.deliveriesPerS)} | ${f2(f.rssPerRelayMiB)}, ${f2(f.heapPerRelayMiB)} | ${f.resyncs}, ${f.steadyResyncs} |`,
    );
  }
  if (REAL > 0) {
    out('');
    out(
      '| N | real: join to links programmed p50 / p99 (ms) | real: kernel rounds, ms, commands / relay / event | real: CPU ms / relay / event | real restart: stop s, to real links up s, to all links programmed s (rounds, commands) |',
    );
    out('|---|---|---|---|---|');
    for (const f of results) {
      const rr = f.realRestart!;
      out(
        `| ${f.n} | ${f1(f.realJoinP50)} / ${f1(f.realJoinP99)} | ${f2(f.realRoundsPerEvent)}, ${f1(f.realRoundMsPerEvent)}, ${f1(f.realCommandsPerEvent)} | ${f2(f.realCpuPerEvent)} | ${f1(rr.stopS)}, ${f1(rr.upS)}, ${f1(rr.programmedS)} (${rr.rounds}, ${rr.commands}) |`,
      );
    }
  }
  if (results.length >= 2) {
    const [a, b] = results.slice(-2) as [Figures, Figures];
    out(`CPU per relay per event, N=${b.n} / N=${a.n}: ${f2(b.cpuPerRelayEvent / a.cpuPerRelayEvent)}`);
  }
} finally {
  await shutdown();
}
process.exit(0);
