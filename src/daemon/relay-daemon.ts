import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { createActor, fromCallback, fromPromise, type SnapshotFrom } from 'xstate';
import { relayMachine, type Emission, type FollowInput, type RelayMachineEvent } from '../actors/relay.machine.ts';
import { connectBus, isBusConnected } from '../bus/connection.ts';
import { RelayEventPublisher } from '../bus/relay-event-publisher.ts';
import { envelope } from '../events/envelope.ts';
import type { RelayEvent } from '../events/relay.events.ts';
import { importPublicKey } from '../events/signing.ts';
import { canonicalTopology } from '../events/topology.fold.ts';
import type { RelayRecord } from '../events/topology.events.ts';
import type { Logger } from '../lib/logger.ts';
import { loadOrCreateWgKey, generateWgKeyPair } from '../lib/wg-keys.ts';
import { SOFTWARE } from '../lib/version.ts';
import { systemDeps, type Deps } from '../lib/deps.ts';
import { currentVersion } from '../events/catalogue.ts';
import { ControlPlaneClient, type RegisterResponse } from './control-plane-client.ts';
import type { RelayConfig } from './config.ts';
import { heartbeatActor } from './heartbeat.ts';
import { natsDenyCidrs } from './control-plane-deny.ts';
import { lookup } from 'node:dns/promises';
import { startStatusServer } from './status-server.ts';
import { deleteTopologyConsumer, runTopologyFollower, type FollowerDeps, type FollowerState } from './topology-follower.ts';
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { clientSessionMachine, type ClientSessionEmission, type ClientSessionState } from '../actors/client-session.machine.ts';
import { clientsMachine, serviceCidrsOf } from '../actors/clients.machine.ts';
import { clientEgressRules, clientSysctls, FILTER_COUNTERS, nftTableName, type FilterCounter } from '../kernel/clients.ts';
import { refusedCounter, type EgressRule } from '../kernel/egress.ts';
import { meshIndex } from '../kernel/mesh.ts';
import type { LinkState, LinkStateChanged } from '../actors/peer-link.machine.ts';
import { peerLinkMachine } from '../actors/peer-link.machine.ts';
import { topologyMachine, type PeerEndpointResolvedEmission } from '../actors/topology.machine.ts';
import { endpointName } from '../kernel/endpoint-resolution.ts';
import { resolverActor } from './resolver.ts';
import type { KernelBackend, NftCounter } from '../kernel/host-state.ts';
import { initialKernelStats, kernelMachine, type KernelEmission, type KernelStats, type ObserverEvent } from '../kernel/kernel.machine.ts';
import { LinuxKernelBackend } from '../kernel/linux-backend.ts';
import { MemoryKernelBackend } from '../kernel/memory-backend.ts';
import { reconcileWith } from '../kernel/reconcile.ts';

/** Every address of a name, both families. */
const lookupAll = async (host: string) => (await lookup(host, { all: true })).map((a) => a.address);

/** The first event of every run: who started, which build, and the configuration replay needs. */
type RelayStartedEmission = { type: 'RelayStarted'; data: Extract<RelayEvent, { type: 'RelayStarted' }>['data'] };

export interface RelayDaemon {
  /** Resolves with the process exit code once the relay has stopped (0 after a clean drain). */
  done: Promise<number>;
  /** Begin draining: deregister, flush events, disconnect. */
  stop(signal?: string): void;
  status(): RelayStatus;
}

export interface RelayStatus {
  relayId: string;
  state: string;
  publicKey: string;
  meshAddress: string | null;
  clientPool: string | null;
  revision: number;
  relays: RelayRecord[];
  topologyDigest: string;
  counters: SnapshotFrom<typeof relayMachine>['context']['counters'];
  bus: { connected: boolean; server: string | null; follower: FollowerState; published: number; pending: number; dropped: number };
  links: LinkStatus[];
  clients: ClientStatus[];
  kernel: { backend: KernelBackend['kind'] } & KernelStats;
  /** The egress policy and mesh filters (docs/security.md), with their counters; null before registration. */
  policy: PolicyStatus | null;
  error: string | null;
}

export interface PolicyStatus {
  /** The nftables table (family inet) that holds them. */
  table: string;
  /** Refused destinations by reason, in evaluation order, and what each refused since the table was set. */
  egress: (EgressRule & NftCounter)[];
  /** The other filters' drops. */
  filters: ({ name: FilterCounter; description: string } & NftCounter)[];
  /** When the counters were read (ISO time), or null if not yet. */
  countersAt: string | null;
}

export interface LinkStatus {
  peerId: string;
  device: string;
  state: LinkState;
  peerMeshAddress: string;
  peerEndpoint: string;
  /**
   * For an endpoint given as a DNS name: the address it resolved to (programmed as the peer's
   * endpoint), or null with the error of the last change (null too while the first lookup runs).
   * Null for an endpoint given as an address.
   */
  endpointResolution: { host: string; address: string | null; error: string | null } | null;
  latestHandshakeMs: number | null;
  rxBytes: number;
  txBytes: number;
  /** When the link entered its state (ISO time). */
  since: string | null;
}

export interface ClientStatus {
  sessionId: string;
  publicKey: string;
  address: string;
  exitId: string;
  /** The exit the control plane was last told this entry steers to. */
  confirmedExitId: string | null;
  state: ClientSessionState;
  latestHandshakeMs: number | null;
  rxBytes: number;
  txBytes: number;
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

/**
 * Run one relay: key, registration, topology seed and stream, heartbeat, status socket, and a clean
 * drain on `stop()`. The world is touched only here and in the clients it wires into the relay actor.
 * `deps`: the ids and the clock the relay and its actors use (the system's by default).
 */
export async function startRelayDaemon(cfg: RelayConfig, logger: Logger, deps: Deps = systemDeps): Promise<RelayDaemon> {
  const log = logger.child({ relayId: cfg.relayId });
  const keyFile = join(cfg.stateDir, 'wg.key');
  let key = loadOrCreateWgKey(keyFile);
  let pendingKey: { privateKey: string; publicKey: string } | null = null;
  if (cfg.rotateKey) {
    pendingKey = generateWgKeyPair();
    log.info({ publicKey: pendingKey.publicKey }, 'rotating WireGuard key');
  } else if (key.created) {
    log.info({ publicKey: key.publicKey, keyFile }, 'generated WireGuard key');
  }

  const client = new ControlPlaneClient({ url: cfg.controlPlaneUrl, key: cfg.token, logger: log.child({ component: 'control-plane-client' }) });
  let nc: NatsConnection | null = null;
  let publisher: RelayEventPublisher | null = null;
  const early: RelayEvent[] = [];

  const publish = (e: RelayEvent) => {
    if (publisher) publisher.publish(e);
    else early.push(e);
  };
  /** Publish a relay event: the machine's id where it chose one (a cause of kernel work), else a new one. */
  const emit = (em: Emission | RelayStartedEmission | LinkStateChanged | KernelEmission | ClientSessionEmission | PeerEndpointResolvedEmission, causationId: string | null = null) => {
    const id = 'id' in em && em.id ? em.id : deps.newId();
    const ev = envelope({ source: cfg.relayId, now: () => new Date(deps.now()), newId: () => id, causationId }, em.type, currentVersion(em.type), em.data) as RelayEvent;
    log.info({ event: em.type, eventId: ev.id, ...em.data }, em.type);
    publish(ev);
  };

  // The bus comes up after the first successful registration (its details come from the control
  // plane) and in the background: admission does not wait for NATS, the follower does.
  let bus: Promise<FollowerDeps> | null = null;
  let followerState: FollowerState = 'stopped';
  function ensureBus(reg: RegisterResponse): void {
    if (bus) return;
    const pinned = cfg.topologyKey;
    if (pinned && pinned !== reg.bus.topologySigningKey) {
      throw new Error(`control plane's topology key ${reg.bus.topologySigningKey} differs from the pinned RELAYNET_TOPOLOGY_KEY`);
    }
    const cpKey = importPublicKey(pinned ?? reg.bus.topologySigningKey);
    const servers = cfg.natsServers ?? reg.bus.servers;
    log.info({ servers }, 'connecting to the event bus');
    bus = (async () => {
      nc = await connectBus({ servers, token: reg.bus.token, name: `relay-core ${cfg.relayId}`, logger: log });
      const js = jetstream(nc);
      const jsm = await jetstreamManager(nc);
      publisher = new RelayEventPublisher({ js, relayId: cfg.relayId, logger: log });
      for (const e of early.splice(0)) publisher.publish(e);
      return { js, jsm, relayId: cfg.relayId, controlPlaneKey: cpKey, logger: log, startMarginMs: cfg.startMarginMs };
    })();
    bus.catch((e) => log.error({ err: String(e) }, 'event bus setup failed'));
  }

  const backend: KernelBackend =
    cfg.kernel === 'memory' ? new MemoryKernelBackend() : new LinuxKernelBackend({ logger: log.child({ actor: 'kernel' }), impl: cfg.wgImpl });
  const linkSince = new Map<string, string>();
  /** The latest read of the policy table's counters (read when someone asks for the status, never on a timer). */
  let policyCounters: { at: string; values: Record<string, NftCounter> } | null = null;
  const readPolicyCounters = async () => {
    const table = policyTable();
    if (!table) return;
    try {
      policyCounters = { at: new Date().toISOString(), values: await backend.counters(table) };
    } catch (e) {
      log.warn({ err: String(e), table }, 'cannot read the nftables counters');
    }
  };
  /** The relay's nftables table, once registration gave it its mesh address. */
  const policyTable = (): string | null => {
    const reg = actorRef?.getSnapshot().context.registration;
    return reg ? nftTableName(cfg.wgPrefix, meshIndex(reg.relay.meshAddress)) : null;
  };
  let actorRef: { getSnapshot(): SnapshotFrom<typeof relayMachine> } | null = null;
  const kernel = kernelMachine.provide({
    actors: {
      reconcile: fromPromise(async ({ input }) => reconcileWith(backend, deps.now)(input)),
      observer: fromCallback<ObserverEvent, Record<string, never>>(({ sendBack, receive }) => {
        let devices: string[] = [];
        let busy = false;
        receive((e) => (devices = e.devices));
        const t = setInterval(() => {
          if (busy || devices.length === 0) return;
          busy = true;
          backend
            .observe(devices)
            .then((observations) => sendBack({ type: 'OBSERVED', observations, nowMs: deps.now() }))
            .catch((e) => log.warn({ err: String(e) }, 'cannot read WireGuard devices'))
            .finally(() => (busy = false));
        }, cfg.observeIntervalMs);
        return () => clearInterval(t);
      }),
    },
    actions: { emit: (_, ems) => ems.forEach((e) => emit(e, e.causationId)) },
  });
  const topology = topologyMachine.provide({
    actions: { emit: (_, e) => emit(e) },
    actors: {
      resolver: resolverActor({ intervalMs: cfg.resolveIntervalMs, logger: log }),
      peerLink: peerLinkMachine.provide({
        actions: {
          emit: (_, e) => {
            linkSince.set(e.data.peerId, new Date().toISOString());
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
          confirm: (_, p) => {
            client.clientReady(cfg.relayId, p.sessionId, p.exitId).then(
              (r) => log.info({ sessionId: p.sessionId, exitId: p.exitId, confirmed: r.confirmed }, 'session confirmed to the control plane'),
              (e) => log.warn({ sessionId: p.sessionId, exitId: p.exitId, err: String((e as Error).message ?? e) }, 'could not confirm the session to the control plane'),
            );
          },
        },
      }),
    },
  });
  // Clients' IPv6 (src/kernel/ipv6.ts): off where the host has no IPv6; an exit where it has a default route.
  const hostIpv6 = await backend.ipv6();
  const clientPrefix6 = cfg.clientPrefix6 !== null && hostIpv6.enabled ? cfg.clientPrefix6 : null;
  if (cfg.clientPrefix6 !== null && !hostIpv6.enabled) log.warn({ clientPrefix6: cfg.clientPrefix6 }, 'this host has IPv6 disabled: clients get IPv4 only here (their IPv6 is dropped, never leaked)');
  const exitIpv6 = clientPrefix6 !== null && (cfg.exitIpv6 === 'on' || (cfg.exitIpv6 === 'auto' && hostIpv6.defaultRoute));
  if (cfg.exitIpv6 === 'on' && !hostIpv6.defaultRoute) log.warn('--exit-ipv6 on, but this host has no default IPv6 route');
  log.info({ clientPrefix6, exitIpv6 }, 'client IPv6');
  const sysctlKeys = Object.keys(clientSysctls(clientPrefix6));
  const sysctlFile = join(cfg.stateDir, 'sysctls-before.json');
  const sysctlsBefore = await originalSysctls(backend, sysctlFile, sysctlKeys);
  const sysctlsAtStart = await clientSysctlsNow(backend, sysctlKeys);

  const machine = relayMachine.provide({
    actors: {
      register: fromPromise(async ({ input }) => {
        const publicKey = pendingKey?.publicKey ?? key.publicKey;
        const reg = await client.register({ ...input.request, publicKey, rotateKey: pendingKey !== null });
        if (pendingKey) {
          // Only now that the control plane holds the new key does it replace the old one on disk.
          const tmp = `${keyFile}.new`;
          writeFileSync(tmp, pendingKey.privateKey + '\n', { mode: 0o600 });
          renameSync(tmp, keyFile);
          key = { ...pendingKey, created: false };
          pendingKey = null;
        }
        ensureBus(reg);
        // Clients are kept from the NATS servers this registration hands out (the egress policy's `service`).
        const nats = await natsDenyCidrs(cfg.natsServers ?? reg.bus.servers, lookupAll);
        for (const w of nats.warnings) log.warn(w);
        return { ...reg, serviceCidrs: nats.cidrs };
      }),
      // `follow` needs the bus, which exists only after the first registration; serving comes after it.
      follow: fromCallback<RelayMachineEvent, FollowInput>(({ sendBack, input }) => {
        if (!bus) throw new Error('topology follower started before the event bus');
        let stopped = false;
        let cleanup: (() => void) | null = null;
        bus.then((deps) => {
          if (!stopped) cleanup = runTopologyFollower({ ...deps, onState: (st) => (followerState = st) }, input, sendBack);
        }, () => {});
        return () => {
          stopped = true;
          cleanup?.();
        };
      }),
      heartbeat: heartbeatActor(client, log),
      kernel,
      topology,
      clients,
      deregister: fromPromise(async ({ input }) => {
        const r = await client.deregister(input.relayId);
        // Gone from the topology: its durable consumer has nothing left to deliver.
        const deps = await bus?.catch(() => null);
        if (deps) await deleteTopologyConsumer(deps.jsm, input.relayId).catch((e) => log.warn({ err: String(e) }, 'could not delete the topology consumer'));
        return r;
      }),
    },
    actions: {
      emit: (_, params) => emit(params, params.type === 'TopologyEventApplied' ? params.data.eventId : null),
      reportFatal: (_, params) => log.error({ err: params.error }, 'registration failed'),
    },
  });
  const actor = createActor(machine, {
    input: {
      request: { relayId: cfg.relayId, name: cfg.name, region: cfg.region, publicKey: key.publicKey, endpoint: cfg.endpoint, exitIpv6 },
      links: {
        mesh: { wgPrefix: cfg.wgPrefix, keepaliveSeconds: cfg.keepaliveSeconds, mtu: cfg.mtu, privateKeyFile: keyFile, exitTableBase: cfg.exitTableBase, clientPrefix6 },
        timing: { staleAfterMs: cfg.linkStaleAfterMs, downAfterMs: cfg.linkDownAfterMs },
        clients: {
          options: {
            wgPrefix: cfg.wgPrefix,
            privateKeyFile: keyFile,
            mtu: cfg.mtu,
            exitTableBase: cfg.exitTableBase,
            rulePriorityBase: cfg.clientRulePriority,
            clientSupernet: cfg.clientSupernet,
            denyCidrs: cfg.clientDeny,
            allowCidrs: cfg.clientAllow,
            serviceCidrs: cfg.serviceCidrs,
            clientPrefix6,
          },
          idleAfterMs: cfg.clientIdleAfterMs,
          originalSysctls: sysctlsBefore,
        },
      },
      deps,
    },
  });

  actorRef = actor;
  let lastStateLogged = '';
  actor.subscribe((s) => {
    const st = String(s.value);
    if (st !== lastStateLogged) {
      log.info({ state: st, revision: s.context.view.revision }, 'relay state');
      lastStateLogged = st;
    }
  });

  const status = (): RelayStatus => {
    const s = actor.getSnapshot();
    const view = s.context.view;
    return {
      relayId: cfg.relayId,
      state: String(s.value),
      publicKey: key.publicKey,
      meshAddress: s.context.registration?.relay.meshAddress ?? null,
      clientPool: s.context.registration?.relay.clientPool ?? null,
      revision: view.revision,
      relays: Object.values(view.relays).sort((a, b) => a.id.localeCompare(b.id)),
      topologyDigest: canonicalTopology(view),
      counters: s.context.counters,
      bus: {
        connected: nc !== null && isBusConnected(nc),
        server: nc?.getServer() ?? null,
        follower: followerState,
        published: publisher?.published ?? 0,
        pending: publisher?.pending ?? early.length,
        dropped: publisher?.dropped ?? 0,
      },
      links: linkStatuses(s, linkSince),
      clients: clientStatuses(s),
      kernel: { backend: backend.kind, ...(s.children.kernel?.getSnapshot().context.stats ?? initialKernelStats()) },
      policy: policyStatus(s),
      error: s.context.error,
    };
  };

  /** The policy as the clients actor programs it (configured and registered service addresses). */
  const policyStatus = (s: SnapshotFrom<typeof relayMachine>): PolicyStatus | null => {
    const table = policyTable();
    if (!table) return null;
    const clientsCtx = (s.children.clients?.getSnapshot() as SnapshotFrom<typeof clientsMachine> | undefined)?.context;
    if (!clientsCtx?.clients) return null;
    const rules = clientEgressRules({ ...clientsCtx.clients, serviceCidrs: serviceCidrsOf(clientsCtx) });
    const counter = (name: string): NftCounter => policyCounters?.values[name] ?? { packets: 0, bytes: 0 };
    return {
      table,
      egress: rules.map((r) => ({ ...r, ...counter(refusedCounter(r.reason)) })),
      filters: (Object.keys(FILTER_COUNTERS) as FilterCounter[]).map((name) => ({ name, description: FILTER_COUNTERS[name], ...counter(name) })),
      countersAt: policyCounters?.at ?? null,
    };
  };

  const statusServer = await startStatusServer(join(cfg.stateDir, 'relay.sock'), async () => {
    await readPolicyCounters();
    return status();
  });
  emit({
    type: 'RelayStarted',
    data: {
      name: cfg.name,
      region: cfg.region,
      publicKey: key.publicKey,
      software: SOFTWARE,
      config: {
        wgPrefix: cfg.wgPrefix,
        keepaliveSeconds: cfg.keepaliveSeconds,
        mtu: cfg.mtu,
        privateKeyFile: keyFile,
        exitTableBase: cfg.exitTableBase,
        rulePriorityBase: cfg.clientRulePriority,
        clientSupernet: cfg.clientSupernet,
        denyCidrs: cfg.clientDeny,
        allowCidrs: cfg.clientAllow,
        serviceCidrs: cfg.serviceCidrs,
        clientPrefix6,
        clientIdleAfterMs: cfg.clientIdleAfterMs,
        linkStaleAfterMs: cfg.linkStaleAfterMs,
        linkDownAfterMs: cfg.linkDownAfterMs,
        sysctlsBefore,
        sysctlsAtStart,
      },
    },
  });
  actor.start();

  const done = new Promise<number>((resolve) => {
    actor.subscribe({
      next: async (s) => {
        if (s.status !== 'done') return;
        const failed = s.value === 'failed';
        // Cleanly torn down: the sysctls are back, so the next start reads the originals afresh.
        if (s.context.tornDown.clients) rmSync(sysctlFile, { force: true });
        await publisher?.close(2_000);
        await nc?.drain().catch(() => {});
        statusServer.close();
        log.info({ state: s.value, error: s.context.error }, failed ? 'relay failed' : 'relay stopped');
        resolve(failed ? 1 : 0);
      },
    });
  });

  return {
    done,
    status,
    stop: (signal = 'SIGTERM') => actor.send({ type: 'STOP', signal }),
  };
}

/** Every link actor's state, read from the topology actor's children. */
function linkStatuses(s: SnapshotFrom<typeof relayMachine>, since: Map<string, string>): LinkStatus[] {
  const topo = s.children.topology?.getSnapshot() as SnapshotFrom<typeof topologyMachine> | undefined;
  if (!topo?.context?.links) return [];
  const resolved = topo.context.resolved ?? {};
  return Object.values(topo.context.links)
    .map((ref) => {
      const l = ref.getSnapshot();
      const host = endpointName(l.context.peer);
      const r = resolved[l.context.peer.id];
      return {
        peerId: l.context.peer.id,
        device: l.context.device,
        state: l.value as LinkState,
        peerMeshAddress: l.context.peer.meshAddress,
        peerEndpoint: l.context.peer.endpoint,
        endpointResolution: host === null ? null : r && r.host === host ? { ...r } : { host, address: null, error: null },
        latestHandshakeMs: l.context.latestHandshakeMs,
        rxBytes: l.context.rxBytes,
        txBytes: l.context.txBytes,
        since: since.get(l.context.peer.id) ?? null,
      };
    })
    .sort((a, b) => a.peerId.localeCompare(b.peerId));
}

/** Every client session's state, read from the clients actor's children. */
function clientStatuses(s: SnapshotFrom<typeof relayMachine>): ClientStatus[] {
  const c = s.children.clients?.getSnapshot() as SnapshotFrom<typeof clientsMachine> | undefined;
  if (!c?.context?.actors) return [];
  return Object.values(c.context.actors)
    .map((ref) => {
      const a = ref.getSnapshot();
      return {
        sessionId: a.context.session.id,
        publicKey: a.context.session.publicKey,
        address: a.context.session.address,
        exitId: a.context.session.exitId,
        confirmedExitId: a.context.confirmedExit,
        state: a.value as ClientSessionState,
        latestHandshakeMs: a.context.latestHandshakeMs,
        rxBytes: a.context.rxBytes,
        txBytes: a.context.txBytes,
      };
    })
    .sort((a, b) => a.address.localeCompare(b.address, undefined, { numeric: true }));
}
