import { join } from 'node:path';
import { createActor, type SnapshotFrom } from 'xstate';
import { clientSessionMachine } from '../actors/client-session.machine.ts';
import { clientsMachine } from '../actors/clients.machine.ts';
import { peerLinkMachine, type LinkState } from '../actors/peer-link.machine.ts';
import { relayMachine, type RelayLinksInput, type TopologyCounters } from '../actors/relay.machine.ts';
import { topologyMachine } from '../actors/topology.machine.ts';
import type { ClientOptions } from '../kernel/clients.ts';
import { systemDeps, type Deps } from '../lib/deps.ts';
import type { Logger } from '../lib/logger.ts';
import { loadOrCreateIdentityKey } from '../lib/identity-key.ts';
import { SOFTWARE } from '../lib/version.ts';
import type { TopologyView } from '../events/topology.fold.ts';
import { busSession, type BusSession, type RelayStartedEmission } from './bus-session.ts';
import type { RelayConfig } from './config.ts';
import { controlPlaneSession, type ControlPlaneSession } from './control-plane-session.ts';
import { kernelShell, type HostFacts, type KernelShell, type KernelWork } from './kernel-shell.ts';
import { statusProjection, type RelayStatus, type StatusProjection } from './relay-status.ts';
import { resolverActor } from './resolver.ts';
import { startStatusServer } from './status-server.ts';
import { metricsRefusal, relayMetrics, type RelayMetrics } from './relay-metrics.ts';
import { NETWORK_SPACE } from '../kernel/egress.ts';
import { parseListen, startMetricsServer, type ListenAddress, type MetricsServer } from '../lib/metrics-server.ts';
import { startReceipts } from './receipts-session.ts';
import { startMeasurements } from './measure-session.ts';

/** What `progress()` reads: cheap enough to poll a thousand relays of one process. */
export interface RelayProgress {
  state: string;
  revision: number;
  counters: TopologyCounters;
  /** Nothing left to do for now: the kernel actor is idle and no relay event waits to be published. */
  settled: boolean;
  /** The kernel actor's state (`idle` when it has nothing to do), or null before it runs. */
  kernel: string | null;
  /** Relay events not yet published: waiting, or sent and not acknowledged. */
  eventsPending: number;
  /** Relay events sent again after an acknowledgement did not come. */
  eventsResent: number;
}

export interface RelayDaemon {
  /** Resolves with the process exit code once the relay has stopped (0 after a clean drain). */
  done: Promise<number>;
  /** Begin draining: deregister, flush events, disconnect. */
  stop(signal?: string): void;
  status(): RelayStatus;
  /**
   * Its state, the revision it has folded and its topology counters, read from the actor's snapshot
   * without building the whole status (cheap enough to poll a thousand relays of one process).
   */
  progress(): RelayProgress;
  /** What its kernel did since start: rounds, their wall time, the commands run (Linux). */
  kernelWork(): KernelWork;
  /** Its links' states by peer id (of `only` those peers, when given: cheap to poll), without building the whole status. */
  linkStates(only?: readonly string[]): Map<string, LinkState>;
  /** A whole-scope kernel round now (what `relay-core reconcile` asks over the status socket). */
  reconcileAll(): { relayId: string; asked: boolean };
  /** Rotate the WireGuard key (what `relay-core rotate-key` asks over the status socket). */
  rotateKey(): { relayId: string; publicKey: string; registering: boolean; clients: number };
}

/**
 * Run one relay: the relay actor composed with its shells, which alone touch the world: the bus
 * session (bus-session.ts: NATS, the relay event publisher, the topology follower), the control-plane
 * session (control-plane-session.ts: key, admission, heartbeat, the NATS servers kept from clients),
 * the kernel shell (kernel-shell.ts: backend, kernel actor, the host at start) and the status
 * projection (relay-status.ts) served on the status socket. `stop()` drains the relay actor
 * (deregister, tear down); once it is done the shells stop: the kept sysctls, then the bus (flushed,
 * drained), then the status socket. `deps`: the ids and the clock (the system's by default).
 */
export async function startRelayDaemon(cfg: RelayConfig, logger: Logger, deps: Deps = systemDeps): Promise<RelayDaemon> {
  // Bound once: `relay-core run` binds the relay id at its root already (a second would repeat it in every line).
  const log = logger.bindings().relayId === cfg.relayId ? logger : logger.child({ relayId: cfg.relayId });
  // The relay's Ed25519 identity (not its WireGuard key): it signs every relay event, and the control
  // plane announces its public key at admission. Only the public key is ever logged.
  const identityFile = join(cfg.stateDir, 'identity.key');
  const identity = loadOrCreateIdentityKey(identityFile);
  if (identity.created) log.info({ identityKey: identity.publicKey, identityFile }, 'generated identity key');
  // Prometheus metrics only where asked for (`--metrics-listen`): a thousand relays of one process keep none.
  const metricsAt = cfg.metricsListen ? parseListen(cfg.metricsListen) : null;
  const metrics = metricsAt ? relayMetrics(cfg.relayId, { processMetrics: true }) : null;
  const bus = busSession(cfg, log, deps, identity.privateKey, metrics);
  const controlPlane = controlPlaneSession(cfg, log, bus, identity.privateKey, metrics);
  // Kernel rounds go to the bus; a key rotation also waits for the round its staged key caused.
  const roundsSeen = new Set<string>();
  let stagedCause: string | null = null;
  const kernelEmit: typeof bus.emit = (e, id) => {
    if (e.type === 'KernelReconciled' && e.causationId !== null && e.causationId === stagedCause) roundsSeen.add(e.causationId);
    bus.emit(e, id);
  };
  const kernel = await kernelShell(cfg, log, kernelEmit, deps, metrics);
  const projection = statusProjection(
    { relayId: cfg.relayId, wgPrefix: cfg.wgPrefix, kernel: kernel.kind, publicKey: controlPlane.publicKey, bus: bus.status, counters: kernel.counters },
    log,
    deps,
  );
  const clientOptions = clientOptionsOf(cfg, controlPlane.keyFile, kernel.host);
  const actor = createActor(relayActor(cfg, log, bus, controlPlane, kernel, projection), {
    input: {
      request: {
        relayId: cfg.relayId,
        name: cfg.name,
        region: cfg.region,
        publicKey: controlPlane.publicKey(),
        identityKey: identity.publicKey,
        endpoint: cfg.endpoint,
        exitIpv6: kernel.host.exitIpv6,
      },
      links: linksOf(cfg, controlPlane.keyFile, kernel.host, clientOptions),
      deps,
    },
  });
  let lastStateLogged = '';
  actor.subscribe((s) => {
    const st = String(s.value);
    if (st !== lastStateLogged) {
      log.info({ state: st, revision: s.context.view.revision }, 'relay state');
      lastStateLogged = st;
    }
  });

  const status = () => projection.status(actor.getSnapshot());
  // A rotation given up on (refused, or not answered): the old key goes back on the devices now.
  controlPlane.onKeyRestored((k) => actor.send({ type: 'KEY_STAGED', ...k }));
  // The operator's key rotation (docs/security.md, "Rotation"). A serving relay first puts the new key
  // on its devices, and only once the kernel has done so registers it: the other relays re-key after it,
  // and their handshakes reach devices that already hold the key (announced first, both ends would start
  // handshakes within milliseconds of each other, and crossed handshakes stall a link for 5 s). A relay
  // that is not serving registers the pending key at its next registration, and its devices follow.
  const rotateKey = () => {
    const serving = actor.getSnapshot().matches('serving');
    const staged = serving ? controlPlane.stageKey() : null;
    const publicKey = staged ? staged.publicKey : controlPlane.rotateKey();
    if (staged) {
      actor.send({ type: 'KEY_STAGED', publicKey: staged.publicKey, previousPublicKey: staged.previousPublicKey });
      stagedCause = actor.getSnapshot().context.cause;
      void untilStaged(stagedCause).then((reached) => {
        if (!reached) log.warn({ publicKey }, 'the staged key is not on every device yet; registering it anyway');
        actor.send({ type: 'RESYNC', detail: 'WireGuard key rotation' });
      });
    } else if (serving) actor.send({ type: 'RESYNC', detail: 'WireGuard key rotation' });
    // Stock clients that name this relay's key as their peer (standard ones entering here, private ones
    // leaving here) hold the old key: their configurations must be re-issued.
    const named = status().clients.filter((c) => (c.mode === 'standard' ? c.role === 'entry' : c.role === 'exit'));
    return { relayId: cfg.relayId, publicKey, registering: serving, clients: named.length };
  };
  /** Whether the kernel ran the round the staged key caused and is idle again (false after 10 s; true at once without devices). */
  const untilStaged = async (cause: string | null): Promise<boolean> => {
    if (cause === null || status().links.length === 0) return true;
    const until = Date.now() + 10_000;
    while (Date.now() < until) {
      if (roundsSeen.has(cause) && actor.system.get('kernel')?.getSnapshot().value === 'idle') return true;
      await new Promise((r) => setTimeout(r, 20));
    }
    return false;
  };
  // The operator's drift check: the kernel actor's next round reads and plans its whole scope.
  const reconcileAll = () => {
    actor.system.get('kernel')?.send({ type: 'RECONCILE_FULL' });
    return { relayId: cfg.relayId, asked: true };
  };
  // Before the status socket: a metrics port that is taken fails the start with nothing left open.
  const metricsServer = metrics && metricsAt ? await serveMetrics(metricsAt, metrics, actor, projection, kernel, clientOptions, log) : null;
  const statusServer = await startStatusServer(
    join(cfg.stateDir, 'relay.sock'),
    async () => {
      await projection.readCounters(actor.getSnapshot());
      return status();
    },
    () => ({ relayId: cfg.relayId, state: String(actor.getSnapshot().value) }),
    { 'rotate-key': () => rotateKey(), reconcile: () => reconcileAll() },
  );
  bus.emit(relayStarted(cfg, controlPlane.publicKey(), clientOptions, kernel.host));
  actor.start();
  /** The topology actor's link actors by peer id (read from its snapshot). */
  const linkActors = () =>
    (actor.getSnapshot().children.topology?.getSnapshot() as SnapshotFrom<typeof topologyMachine> | undefined)?.context?.links ?? new Map();
  /** Each mesh link's peer and device, straight from the link actors (not the whole status: receipts sample it every 30 s). */
  const meshLinks = () =>
    [...linkActors().values()].map((ref) => {
      const c = ref.getSnapshot().context;
      return { peerId: c.peer.id, device: c.device };
    });
  // Proof-of-Bandwidth receipts, once the control plane has said how long an epoch is.
  const receipts = startReceipts({
    relayId: cfg.relayId,
    stateDir: cfg.stateDir,
    identityKey: identity.privateKey,
    epochSeconds: controlPlane.receiptEpochSeconds,
    links: meshLinks,
    observe: kernel.observe,
    submit: controlPlane.submitReceipts,
    emit: (e) => bus.emit(e),
    log,
    now: deps.now,
  });

  // Capacity measurements the relay takes part in, as its view learns of them.
  const measurements = startMeasurements({
    relayId: cfg.relayId,
    identityKey: identity.privateKey,
    links: meshLinks,
    onObserved: kernel.onObserved,
    submit: controlPlane.submitMeasurement,
    emit: (e) => bus.emit(e),
    log,
    now: deps.now,
  });
  let measurementsSeen: TopologyView['measurements'];
  actor.subscribe((s) => {
    if (s.context.view.measurements === measurementsSeen) return;
    measurementsSeen = s.context.view.measurements;
    measurements.update(s.context.view);
  });

  const done = new Promise<number>((resolve) => {
    actor.subscribe({
      next: async (s) => {
        if (s.status !== 'done') return;
        receipts.stop();
        measurements.stop();
        const failed = s.value === 'failed';
        kernel.stopped(s.context.tornDown.clients);
        await bus.close();
        statusServer.close();
        await metricsServer?.close();
        log.info({ state: s.value, error: s.context.error }, failed ? 'relay failed' : 'relay stopped');
        resolve(failed ? 1 : 0);
      },
    });
  });

  return {
    done,
    status,
    progress: () => {
      const s = actor.getSnapshot();
      const kernelState = actor.system.get('kernel')?.getSnapshot().value;
      const eventsPending = bus.pending();
      return {
        state: String(s.value),
        revision: s.context.view.revision,
        counters: s.context.counters,
        settled: (kernelState === undefined || kernelState === 'idle') && eventsPending === 0,
        kernel: kernelState === undefined ? null : String(kernelState),
        eventsPending,
        eventsResent: bus.resent(),
      };
    },
    kernelWork: () => kernel.work(),
    linkStates: (only) => {
      const links = linkActors();
      const out = new Map<string, LinkState>();
      for (const peerId of only ?? links.keys()) {
        const link = links.get(peerId);
        if (link) out.set(peerId, link.getSnapshot().value as LinkState);
      }
      return out;
    },
    rotateKey,
    reconcileAll,
    stop: (signal = 'SIGTERM') => actor.send({ type: 'STOP', signal }),
  };
}

/**
 * Serve the relay's metrics: each scrape reads the policy counters and the links' WireGuard state
 * afresh (as `relay-core status` does), then sets the metrics from the status. Addresses of the
 * relay network (clients, mesh peers) are refused.
 */
async function serveMetrics(
  listen: ListenAddress,
  metrics: RelayMetrics,
  actor: { getSnapshot(): Parameters<StatusProjection['status']>[0] },
  projection: StatusProjection,
  kernel: KernelShell,
  clients: ClientOptions,
  log: Logger,
): Promise<MetricsServer> {
  const network = [NETWORK_SPACE, clients.clientSupernet, ...(clients.clientPrefix6 ? [clients.clientPrefix6] : [])];
  return startMetricsServer({
    listen,
    registry: metrics.registry,
    refuse: (remote) => metricsRefusal(remote, network),
    logger: log,
    before: async () => {
      const s = actor.getSnapshot();
      await projection.readCounters(s);
      const status = projection.status(s);
      const devices = status.links.map((l) => l.device);
      const observations = devices.length ? await kernel.observe(devices).catch(() => []) : [];
      metrics.update(status, observations, Date.now());
    },
  });
}

/** The relay actor with the shells' actors and actions; the topology and clients actors publish through the bus. */
function relayActor(cfg: RelayConfig, log: Logger, bus: BusSession, controlPlane: ControlPlaneSession, kernel: KernelShell, projection: StatusProjection) {
  const { emit } = bus;
  const topology = topologyMachine.provide({
    actions: { emit: (_, e) => emit(e) },
    actors: {
      resolver: resolverActor({ intervalMs: cfg.resolveIntervalMs, logger: log }),
      peerLink: peerLinkMachine.provide({
        actions: {
          emit: (_, e) => {
            projection.linkChanged(e.data.peerId);
            emit(e);
          },
        },
      }),
    },
  });
  const clients = clientsMachine.provide({
    actors: {
      clientSession: clientSessionMachine.provide({
        actions: {
          emit: (_, e) => emit(e),
          // The control plane answers the client's connect (or exit switch) once the entry confirms it.
          confirm: (_, p) => controlPlane.confirm(p.sessionId, p.exitId),
        },
      }),
    },
  });
  return relayMachine.provide({
    actors: {
      register: controlPlane.register,
      follow: bus.follow,
      heartbeat: controlPlane.heartbeat,
      kernel: kernel.kernel,
      topology,
      clients,
      deregister: controlPlane.deregister,
    },
    actions: {
      emit: (_, params) => emit(params, params.type === 'TopologyEventApplied' ? params.data.eventId : null),
      reportFatal: (_, params) => log.error({ err: params.error }, 'registration failed'),
    },
  });
}

/** The client data path's settings, from the configuration and what the host allows. */
function clientOptionsOf(cfg: RelayConfig, keyFile: string, host: HostFacts): ClientOptions {
  return {
    wgPrefix: cfg.wgPrefix,
    privateKeyFile: keyFile,
    mtu: cfg.mtu,
    exitTableBase: cfg.exitTableBase,
    rulePriorityBase: cfg.clientRulePriority,
    clientSupernet: cfg.clientSupernet,
    denyCidrs: cfg.clientDeny,
    allowCidrs: cfg.clientAllow,
    serviceCidrs: cfg.serviceCidrs,
    clientPrefix6: host.clientPrefix6,
    privateSessions: true,
    echoService: true,
  };
}

function linksOf(cfg: RelayConfig, keyFile: string, host: HostFacts, clientOptions: ClientOptions): RelayLinksInput {
  return {
    mesh: {
      wgPrefix: cfg.wgPrefix,
      keepaliveSeconds: cfg.keepaliveSeconds,
      mtu: cfg.mtu,
      privateKeyFile: keyFile,
      exitTableBase: cfg.exitTableBase,
      clientPrefix6: host.clientPrefix6,
    },
    timing: { staleAfterMs: cfg.linkStaleAfterMs, downAfterMs: cfg.linkDownAfterMs },
    clients: { options: clientOptions, idleAfterMs: cfg.clientIdleAfterMs, originalSysctls: host.sysctlsBefore },
  };
}

/** The run's first event: the configuration replay needs (its keys in the order they have always been published). */
function relayStarted(cfg: RelayConfig, publicKey: string, clientOptions: ClientOptions, host: HostFacts): RelayStartedEmission {
  const { wgPrefix, mtu, ...clientRest } = clientOptions;
  return {
    type: 'RelayStarted',
    data: {
      name: cfg.name,
      region: cfg.region,
      publicKey,
      software: SOFTWARE,
      config: {
        wgPrefix,
        keepaliveSeconds: cfg.keepaliveSeconds,
        mtu,
        ...clientRest,
        clientIdleAfterMs: cfg.clientIdleAfterMs,
        linkStaleAfterMs: cfg.linkStaleAfterMs,
        linkDownAfterMs: cfg.linkDownAfterMs,
        sysctlsBefore: host.sysctlsBefore,
        sysctlsAtStart: host.sysctlsAtStart,
      },
    },
  };
}
