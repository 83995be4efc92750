/**
 * One process of bench:fleet's fleet (bench/fleet.ts forks several, each hosting a slice of the relays).
 * Each relay is a whole daemon (startRelayDaemon) on the in-memory host, with its own NATS connection
 * and its own HTTP to the control plane. The parent asks over the IPC channel; every request has an id
 * and gets one answer ({ id, value } or { id, error }). Times cross processes as epoch milliseconds
 * (performance.timeOrigin + performance.now(): one clock on one machine). The worker exits when its
 * parent goes (the channel closes), so a killed benchmark leaves no relay behind.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { dirname, join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { getHeapSpaceStatistics, writeHeapSnapshot } from 'node:v8';
import type { RelayConfig } from '../src/daemon/config.ts';
import type { LinkState } from '../src/actors/peer-link.machine.ts';
import type { KernelWork } from '../src/daemon/kernel-shell.ts';
import { startRelayDaemon, type RelayDaemon } from '../src/daemon/relay-daemon.ts';
import { rootLogger } from '../src/lib/logger.ts';
import { inMemoryRelayConfig } from '../test/support/relay-config.ts';

export interface WorkerInit {
  dir: string;
  controlPlaneUrl: string;
  topologyKey: string;
}

/**
 * A real relay's host: its kernel commands run in network namespace `netns` (wireguard-go devices, routes,
 * nftables), its WireGuard endpoint is `address` there, its devices are named with `wgPrefix`.
 */
export interface RealHost {
  netns: string;
  address: string;
  wgPrefix: string;
}

/** A real relay as `real` reports it: its kernel's work since start, and the state of its links to the peers asked about (absent: none). */
export interface RealReport {
  id: string;
  work: KernelWork;
  links: Record<string, LinkState>;
}

/** What the parent may ask (`op`), with its arguments; the answer's value is in the comment. */
export type WorkerRequest =
  | { op: 'init'; init: WorkerInit } // null
  | { op: 'start'; members: { index: number; token: string; real?: RealHost }[] } // null, once all serve
  | { op: 'real'; peers: string[] | null } // RealReport[]: its real relays' kernel work and their links to `peers` (null: all)
  | { op: 'folded'; revision: number; timeoutMs: number } // epoch ms all its relays had folded it, or null at the timeout
  | { op: 'settled'; resetLoopDelay?: boolean } // Unsettled: its relays that are not settled (0 when all are), and why; the loop delay measured afresh after it
  | { op: 'counters' } // { [relayId]: { applied, resyncs } }
  | { op: 'stop'; ids: string[] } // null, once they are done
  | { op: 'cpu' } // CPU ms of this process
  | { op: 'mem' } // { rss, heap, external } bytes after a full GC (external: off the V8 heap, ArrayBuffers included)
  | { op: 'heartbeats'; since: number } // heartbeat call durations (ms) started at or after `since` (epoch ms)
  | { op: 'profile'; file: string | null } // start a CPU profile (file: where stop will write it), or stop and write it
  | { op: 'mem-now' } // { rss, heapUsed, heapTotal } bytes as they are (no collection first), spaces: the large heap spaces' MiB used/size
  | { op: 'heap-snapshot'; file: string }; // write a V8 heap snapshot of this worker (after a full GC)

/** A worker's relays that are not settled: how many, how many of them with a busy kernel actor, the events they have yet to publish, one of them. */
export interface Unsettled {
  relays: number;
  kernelBusy: number;
  eventsPending: number;
  /** Events all its relays sent again since they started (an acknowledgement that did not come). */
  eventsResent: number;
  /** The longest and the 99th percentile delay of this process's event loop since the last ask that reset it (ms). */
  loopDelayMaxMs: number;
  loopDelayP99Ms: number;
  example: string | null;
}

/** How late this process's event loop runs (a busy loop runs expired timers before it reads the acknowledgements waiting on its sockets). */
const loopDelay = monitorEventLoopDelay({ resolution: 20 });
loopDelay.enable();
const epoch = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = rootLogger({ bench: 'fleet', worker: process.pid }, process.env.RELAYNET_LOG_LEVEL ?? 'error');

/** The relays' heartbeat calls, timed: every relay's HTTP goes through this process's fetch. */
const heartbeats: { at: number; ms: number }[] = [];
const realFetch = globalThis.fetch;
globalThis.fetch = async (input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) => {
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
  const t0 = epoch();
  const res = await realFetch(input, init);
  if (url.endsWith('/functions/v1/heartbeat')) heartbeats.push({ at: t0, ms: epoch() - t0 });
  return res;
};

let init: WorkerInit | null = null;
const fleet = new Map<string, RelayDaemon>();
let profiler: { session: Session; file: string } | null = null;

function relayConfig(index: number, id: string, token: string, at: WorkerInit, real: RealHost | undefined): RelayConfig {
  // Nobody answers on the in-memory host: links stay programmed (handshaking) for the whole run. A
  // real relay's links to the other real relays come up; to the rest they stay handshaking (their
  // endpoints are not routed from its namespace), and never go down during the run.
  return inMemoryRelayConfig({
    relayId: id,
    name: id,
    region: `region-${(index % 3) + 1}`,
    endpoint: real ? `${real.address}:51820` : `198.18.${100 + (index >> 8)}.${index & 255 || 254}:51820`,
    stateDir: join(at.dir, 'relays', id),
    controlPlaneUrl: at.controlPlaneUrl,
    token,
    topologyKey: at.topologyKey,
    natsServers: null,
    // The drift check (a whole-scope round) hourly, not every 5 min: with a thousand relays a few of
    // them would always be in one, and the fleet never quiet at once (bench/README.md, run 4).
    kernelFullEveryMs: 3_600_000,
    ...(real ? { kernel: 'linux', wgImpl: 'userspace', kernelNetns: real.netns, wgPrefix: real.wgPrefix, observeIntervalMs: 2_000 } : {}),
  });
}
/** The real relays of this worker. */
const reals = new Set<string>();

async function until(ok: () => boolean, timeoutMs: number, everyMs: number): Promise<boolean> {
  const deadline = epoch() + timeoutMs;
  for (;;) {
    if (ok()) return true;
    if (epoch() > deadline) return false;
    await sleep(everyMs);
  }
}

async function handle(req: WorkerRequest): Promise<unknown> {
  if (req.op === 'init') {
    init = req.init;
    return null;
  }
  if (!init) throw new Error(`${req.op} before init`);
  const at = init;
  switch (req.op) {
    case 'start': {
      const started = await Promise.all(
        req.members.map(async ({ index, token, real }) => {
          const id = `relay-${index}`;
          mkdirSync(join(at.dir, 'relays', id), { recursive: true, mode: 0o700 });
          const daemon = await startRelayDaemon(relayConfig(index, id, token, at, real), log);
          fleet.set(id, daemon);
          if (real) reals.add(id);
          return daemon;
        }),
      );
      if (!(await until(() => started.every((d) => d.progress().state === 'serving'), 600_000, 50)))
        throw new Error(`relays ${req.members.map((m) => m.index).join(',')} did not serve within 600 s`);
      return null;
    }
    case 'folded': {
      // Checking only those not there yet, every 10 ms.
      let pending = [...fleet.values()];
      const ok = await until(
        () => {
          pending = pending.filter((d) => d.progress().revision < req.revision);
          return pending.length === 0;
        },
        req.timeoutMs,
        10,
      );
      return ok ? epoch() : null;
    }
    case 'real': {
      return [...reals].flatMap((id): RealReport[] => {
        const d = fleet.get(id);
        return d ? [{ id, work: d.kernelWork(), links: Object.fromEntries(d.linkStates(req.peers ?? undefined)) }] : [];
      });
    }
    case 'settled': {
      const u: Unsettled = {
        relays: 0,
        kernelBusy: 0,
        eventsPending: 0,
        eventsResent: 0,
        loopDelayMaxMs: loopDelay.max / 1e6,
        loopDelayP99Ms: loopDelay.percentile(99) / 1e6,
        example: null,
      };
      if (req.resetLoopDelay) loopDelay.reset();
      for (const [id, d] of fleet) {
        const p = d.progress();
        u.eventsResent += p.eventsResent;
        if (p.settled) continue;
        u.relays++;
        if (p.kernel !== null && p.kernel !== 'idle') u.kernelBusy++;
        u.eventsPending += p.eventsPending;
        u.example ??= `${id} (kernel ${p.kernel ?? 'not running'}, ${p.eventsPending} events to publish)`;
      }
      return u;
    }
    case 'counters':
      return Object.fromEntries(
        [...fleet].map(([id, d]) => {
          const c = d.progress().counters;
          return [id, { applied: c.applied, resyncs: c.resyncs }];
        }),
      );
    case 'stop':
      await Promise.all(
        req.ids.map(async (id) => {
          const d = fleet.get(id);
          if (!d) throw new Error(`${id} is not in this worker`);
          d.stop();
          await d.done;
          fleet.delete(id);
          reals.delete(id);
        }),
      );
      return null;
    case 'cpu': {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    }
    case 'mem-now': {
      const m = process.memoryUsage();
      // The spaces that hold more than 64 MiB, as "name used/size" in MiB: where V8's slack is.
      const spaces = getHeapSpaceStatistics()
        .filter((sp) => sp.space_size > 64 * 2 ** 20)
        .map((sp) => `${sp.space_name.replace(/_space$/, '')} ${(sp.space_used_size / 2 ** 20).toFixed(0)}/${(sp.space_size / 2 ** 20).toFixed(0)}`)
        .join(', ');
      return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, spaces };
    }
    case 'heap-snapshot': {
      globalThis.gc!();
      mkdirSync(dirname(req.file), { recursive: true });
      return writeHeapSnapshot(req.file);
    }
    case 'mem': {
      globalThis.gc!();
      const m = process.memoryUsage();
      return { rss: m.rss, heap: m.heapUsed, external: m.external };
    }
    case 'heartbeats':
      return heartbeats.filter((h) => h.at >= req.since).map((h) => h.ms);
    case 'profile': {
      if (req.file) {
        if (profiler) throw new Error('a profile is already running');
        const session = new Session();
        session.connect();
        await session.post('Profiler.enable');
        await session.post('Profiler.start');
        profiler = { session, file: req.file };
        return null;
      }
      if (!profiler) throw new Error('no profile running');
      const { session, file } = profiler;
      profiler = null;
      const { profile } = await session.post('Profiler.stop');
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, JSON.stringify(profile));
      session.disconnect();
      return null;
    }
  }
}

if (!process.send) throw new Error('bench/fleet-worker.ts is forked by bench/fleet.ts, not run on its own');
if (typeof globalThis.gc !== 'function') throw new Error('fleet worker: run with node --expose-gc');
process.on('message', (msg: { id: number } & WorkerRequest) => {
  handle(msg).then(
    (value) => process.send!({ id: msg.id, value }),
    (e: unknown) => process.send!({ id: msg.id, error: e instanceof Error ? (e.stack ?? e.message) : String(e) }),
  );
});
// The parent went (done, or killed): so do the relays, without draining (their services go too).
process.on('disconnect', () => process.exit(0));
