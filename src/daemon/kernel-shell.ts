import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromCallback, fromPromise } from 'xstate';
import { clientSysctls } from '../kernel/clients.ts';
import type { KernelBackend, NftCounter, PeerObservation } from '../kernel/host-state.ts';
import { kernelMachine, observedDevices, type ObserverEvent } from '../kernel/kernel.machine.ts';
import { LinuxKernelBackend } from '../kernel/linux-backend.ts';
import { MemoryKernelBackend } from '../kernel/memory-backend.ts';
import { reconcileWith } from '../kernel/reconcile.ts';
import type { Deps } from '../lib/deps.ts';
import type { Logger } from '../lib/logger.ts';
import type { Emit } from './bus-session.ts';
import type { RelayConfig } from './config.ts';
import type { RelayMetrics } from './relay-metrics.ts';

/** What the relay learned of its host at start, before any change of its own. */
export interface HostFacts {
  /** The clients' IPv6 prefix; null when none is configured or the host has IPv6 disabled. */
  clientPrefix6: string | null;
  /** Whether clients' IPv6 leaves the network here (an IPv6 exit). */
  exitIpv6: boolean;
  /** The client sysctls before this relay first changed them (restored on teardown). */
  sysctlsBefore: Record<string, string>;
  /** The client sysctls as this start found them. */
  sysctlsAtStart: Record<string, string>;
}

/** What the kernel did since the relay started: its rounds and their wall time; on Linux the commands run (null in memory). */
export interface KernelWork {
  rounds: number;
  roundMs: number;
  commands: number | null;
}

/**
 * The kernel's shell: the backend (Linux, or in memory), the kernel actor provided with it, its
 * observer on a timer and the publication of its rounds, and what the host was like at start.
 */
export interface KernelShell {
  kind: KernelBackend['kind'];
  /** The relay actor's `kernel` actor. */
  kernel: typeof kernelMachine;
  host: HostFacts;
  /** The kernel's work since start: rounds, their wall time, and (on Linux) the commands they ran. */
  work(): KernelWork;
  /** The named counters of an nftables table (read only). */
  counters(table: string): Promise<Record<string, NftCounter>>;
  /** The WireGuard peers of these devices as the host has them now: handshakes and counters (read only). */
  observe(devices: string[]): Promise<PeerObservation[]>;
  /** Be told of each reading the observer takes (its devices' peers, and when); returns the unsubscribe. */
  onObserved(listener: (observations: readonly PeerObservation[], atMs: number) => void): () => void;
  /** Once the relay stopped: a clean client teardown put the sysctls back, so the next start reads them afresh. */
  stopped(clientsTornDown: boolean): void;
}

export async function kernelShell(
  cfg: RelayConfig,
  log: Logger,
  emit: Emit,
  deps: Deps,
  metrics: Pick<RelayMetrics, 'kernelRound'> | null = null,
): Promise<KernelShell> {
  const backend: KernelBackend =
    // A long-running daemon keeps no log of applied operations (each is in its KernelReconciled event).
    cfg.kernel === 'memory'
      ? new MemoryKernelBackend({ recordOps: false })
      : new LinuxKernelBackend({ logger: log.child({ actor: 'kernel' }), impl: cfg.wgImpl, ...(cfg.kernelNetns ? { netns: cfg.kernelNetns } : {}) });
  const reconcile = reconcileWith(backend, deps.now);
  const work = { rounds: 0, roundMs: 0 };
  const observedListeners = new Set<(observations: readonly PeerObservation[], atMs: number) => void>();
  const kernel = kernelMachine.provide({
    actors: {
      reconcile: fromPromise(async ({ input }) => {
        const started = performance.now();
        const out = await reconcile(input);
        const ms = performance.now() - started;
        work.rounds++;
        work.roundMs += ms;
        metrics?.kernelRound(ms, out);
        return out;
      }),
      observer: fromCallback<ObserverEvent, Record<string, never>>(({ sendBack, receive }) => {
        let told: ObserverEvent | null = null;
        let busy = false;
        receive((e) => (told = e));
        const t = setInterval(() => {
          const devices = told ? observedDevices(told) : [];
          if (busy || devices.length === 0) return;
          busy = true;
          backend
            .observe(devices)
            .then((observations) => {
              const nowMs = deps.now();
              sendBack({ type: 'OBSERVED', observations, nowMs });
              for (const l of observedListeners) {
                try {
                  l(observations, nowMs);
                } catch (e) {
                  log.error({ err: String(e) }, 'a listener of the observer failed');
                }
              }
            })
            .catch((e) => log.warn({ err: String(e) }, 'cannot read WireGuard devices'))
            .finally(() => (busy = false));
        }, cfg.observeIntervalMs);
        return () => clearInterval(t);
      }),
      fullTimer: fromCallback<{ type: 'never' }, Record<string, never>>(({ sendBack }) => {
        const t = setInterval(() => sendBack({ type: 'RECONCILE_FULL' }), cfg.kernelFullEveryMs);
        return () => clearInterval(t);
      }),
    },
    actions: {
      emit: (_, ems) => {
        for (const e of ems) emit(e, e.causationId);
      },
    },
  });
  const sysctlFile = join(cfg.stateDir, 'sysctls-before.json');
  return {
    kind: backend.kind,
    kernel,
    host: await hostFacts(cfg, log, backend, sysctlFile),
    work: () => ({ ...work, commands: backend instanceof LinuxKernelBackend ? backend.commands : null }),
    counters: (table) => backend.counters(table),
    observe: (devices) => backend.observe(devices),
    onObserved: (listener) => {
      observedListeners.add(listener);
      return () => observedListeners.delete(listener);
    },
    stopped: (clientsTornDown) => {
      if (clientsTornDown) rmSync(sysctlFile, { force: true });
    },
  };
}

/** Clients' IPv6 (src/kernel/ipv6.ts): off where the host has no IPv6; an exit where it has a default route. */
async function hostFacts(cfg: RelayConfig, log: Logger, backend: KernelBackend, sysctlFile: string): Promise<HostFacts> {
  const hostIpv6 = await backend.ipv6();
  const clientPrefix6 = cfg.clientPrefix6 !== null && hostIpv6.enabled ? cfg.clientPrefix6 : null;
  if (cfg.clientPrefix6 !== null && !hostIpv6.enabled)
    log.warn({ clientPrefix6: cfg.clientPrefix6 }, 'this host has IPv6 disabled: clients get IPv4 only here (their IPv6 is dropped, never leaked)');
  const exitIpv6 = clientPrefix6 !== null && (cfg.exitIpv6 === 'on' || (cfg.exitIpv6 === 'auto' && hostIpv6.defaultRoute));
  if (cfg.exitIpv6 === 'on' && !hostIpv6.defaultRoute) log.warn('--exit-ipv6 on, but this host has no default IPv6 route');
  log.info({ clientPrefix6, exitIpv6 }, 'client IPv6');
  const sysctlKeys = Object.keys(clientSysctls(clientPrefix6));
  const sysctlsBefore = await originalSysctls(backend, sysctlFile, sysctlKeys);
  const sysctlsAtStart = await clientSysctlsNow(backend, sysctlKeys);
  return { clientPrefix6, exitIpv6, sysctlsBefore, sysctlsAtStart };
}

/**
 * The client sysctls as they were before this relay first changed them, kept in STATE_DIR so that a
 * relay restarted after a crash (when they are already changed) still restores the true originals.
 */
async function originalSysctls(backend: KernelBackend, file: string, keys: string[]): Promise<Record<string, string>> {
  let kept: Record<string, string> = {};
  if (existsSync(file)) {
    try {
      kept = JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>;
    } catch {
      /* unreadable: read the host again */
    }
  }
  // A key the file lacks (a first start with IPv6, after starts without) is read now, before we set it.
  const missing = keys.filter((k) => !(k in kept));
  if (missing.length === 0) return kept;
  const now = { ...kept, ...(await clientSysctlsNow(backend, missing)) };
  writeFileSync(file, JSON.stringify(now) + '\n', { mode: 0o600 });
  return now;
}

/** The client sysctls as the host has them now (nothing else is read). */
async function clientSysctlsNow(backend: KernelBackend, keys: string[]): Promise<Record<string, string>> {
  return (await backend.read({ devicePrefix: '\u0000', rulePriorities: [0, -1], sysctls: keys, nftTables: [] })).sysctls;
}
