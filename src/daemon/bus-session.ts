import type { KeyObject } from 'node:crypto';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { fromCallback } from 'xstate';
import type { ClientSessionEmission } from '../actors/client-session.machine.ts';
import type { LinkStateChanged } from '../actors/peer-link.machine.ts';
import type { Emission, FollowCommand, FollowInput } from '../actors/relay.machine.ts';
import type { PeerEndpointResolvedEmission } from '../actors/topology.machine.ts';
import { type BusAuth, busConnects, connectBus, isBusConnected } from '../bus/connection.ts';
import { RelayEventPublisher } from '../bus/relay-event-publisher.ts';
import { currentVersion } from '../contract/catalogue.ts';
import { envelope } from '../contract/envelope.ts';
import type { RelayEvent } from '../contract/relay.events.ts';
import { importPublicKey } from '../events/signing.ts';
import type { KernelEmission } from '../kernel/kernel.machine.ts';
import type { Deps } from '../lib/deps.ts';
import type { Logger } from '../lib/logger.ts';
import type { RelayConfig } from './config.ts';
import type { RelayMetrics } from './relay-metrics.ts';
import type { BusCredential, RegisterResponse } from '../contract/api-relays.ts';
import { credentialMoveDelay } from './bus-credential.ts';
import { sleep } from './control-plane-client.ts';
import { deleteTopologyConsumer, runTopologyFollower, type FollowerDeps, type FollowerState } from './topology-follower.ts';
import { decidePin, readPinnedKey, savePinnedKey, TopologyKeyRefused } from './topology-pin.ts';

/** The first event of every run: who started, which build, and the configuration replay needs. */
export type RelayStartedEmission = { type: 'RelayStarted'; data: Extract<RelayEvent, { type: 'RelayStarted' }>['data'] };

/** What the bus session itself reports: drops while the bus was away, a refused topology key. */
export type BusEmission =
  | { type: 'RelayEventsDropped'; data: Extract<RelayEvent, { type: 'RelayEventsDropped' }>['data'] }
  | { type: 'TopologyKeyRefused'; data: Extract<RelayEvent, { type: 'TopologyKeyRefused' }>['data'] };

/** What the measurement shell reports (docs/proof-of-bandwidth.md, "Measuring"). */
export type MeasureEmission = { type: 'MeasurementReported'; data: Extract<RelayEvent, { type: 'MeasurementReported' }>['data'] };

/** What the receipts shell reports (docs/proof-of-bandwidth.md). */
export type ReceiptsEmission =
  | { type: 'ReceiptsSigned'; data: Extract<RelayEvent, { type: 'ReceiptsSigned' }>['data'] }
  | { type: 'ReceiptsRefused'; data: Extract<RelayEvent, { type: 'ReceiptsRefused' }>['data'] };

/** Any relay event an actor (or the daemon) wants published; `id` where the machine chose the envelope id. */
export type RelayEmission =
  | Emission
  | RelayStartedEmission
  | BusEmission
  | ReceiptsEmission
  | MeasureEmission
  | LinkStateChanged
  | KernelEmission
  | ClientSessionEmission
  | PeerEndpointResolvedEmission;

/** Publish a relay event: logged, put in its envelope and sent (queued until the bus is up). */
export type Emit = (em: RelayEmission, causationId?: string | null) => void;

/** The bus as `relay-core status` shows it. */
export interface BusStatus {
  connected: boolean;
  server: string | null;
  follower: FollowerState;
  published: number;
  pending: number;
  dropped: number;
  /** Events sent again after an acknowledgement did not come (the stream keeps each once). */
  resent: number;
  /** How many events may be out unacknowledged at once now (smaller after failures; docs/events.md). */
  window: number;
  /** The control plane's epoch of the latest registration (null before it, or from a control plane without epochs). */
  epoch: string | null;
  /** The topology key this relay trusts (pinned in STATE_DIR/topology-key.pub), null before the first registration. */
  topologyKey: string | null;
  /** A key the control plane offered and the relay refused (it does not follow the topology meanwhile), or null. */
  topologyKeyRefused: string | null;
}

/**
 * The relay's side of the event bus: the NATS connection, the relay event publisher and the topology
 * follower. Events emitted before the bus is up wait in memory and go out, in order, once it is.
 */
export interface BusSession {
  emit: Emit;
  /**
   * Take a registration: its epoch goes on every event from now on; the first one's bus details connect,
   * in the background (admission does not wait for NATS, the follower does). Throws
   * {@link TopologyKeyRefused} (and publishes `TopologyKeyRefused`) when the control plane's topology
   * key is not the pinned one, at any registration.
   */
  connect(reg: RegisterResponse, auth: BusAuth): void;
  /**
   * The relay's NATS credential was replaced by a renewed one: the live connection, which may still use
   * `previous`, moves onto the renewed one (a reconnect) at a random moment before `previous` expires
   * (`credentialMoveDelay`), not when nats-server closes it for an expired JWT.
   */
  credentialReplaced(previous: BusCredential): void;
  /** The relay actor's `follow` actor: the topology follower, once the bus is up. */
  follow: ReturnType<typeof fromCallback<FollowCommand, FollowInput>>;
  /** Delete this relay's durable topology consumer (it is gone from the topology); failures are logged. */
  deleteConsumer(relayId: string): Promise<void>;
  status(): BusStatus;
  /** How many relay events wait to be published (cheap: no status built). */
  pending(): number;
  /** How many relay events were sent again (cheap: no status built). */
  resent(): number;
  /** Flush the publisher (at most 2 s) and drain the connection. */
  close(): Promise<void>;
}

/** The wait before setting the bus up again after `attempt` + 1 failures: 0.5 s doubling to 10 s. */
const busSetupRetryMs = (attempt: number): number => Math.min(10_000, 500 * 2 ** attempt);

/** `identity`: the relay's identity key, which signs every event it publishes (src/lib/identity-key.ts). */
export function busSession(
  cfg: RelayConfig,
  log: Logger,
  deps: Deps,
  identity: KeyObject | null = null,
  metrics: Pick<RelayMetrics, 'published'> | null = null,
): BusSession {
  let nc: NatsConnection | null = null;
  let bus: Promise<FollowerDeps> | null = null;
  let followerState: FollowerState = 'stopped';
  let epoch: string | null = null;
  let trustedKey: string | null = null;
  let refusedKey: string | null = null;
  // `--repin-topology-key` applies to this run's first registration only.
  let repin = cfg.repinTopologyKey === true;
  // Aborted by close(): stops the bus setup's retries.
  const closing = new AbortController();
  // A planned move onto a renewed credential (one at a time: the earliest deadline counts).
  let move: ReturnType<typeof setTimeout> | null = null;

  const emit: Emit = (em, causationId = null) => {
    const id = 'id' in em && em.id ? em.id : deps.newId();
    const ev = envelope(
      { source: cfg.relayId, now: () => new Date(deps.now()), newId: () => id, causationId, epoch },
      em.type,
      currentVersion(em.type),
      em.data,
    ) as RelayEvent;
    log.info({ event: em.type, eventId: ev.id, ...em.data }, em.type);
    publisher.publish(ev);
  };
  // Events wait here for the bus (bounded; the drops are reported once it takes events again).
  const publisher: RelayEventPublisher = new RelayEventPublisher({
    js: null,
    relayId: cfg.relayId,
    logger: log,
    capacity: cfg.eventQueue,
    identity,
    now: deps.now,
    onDropped: (d) => emit({ type: 'RelayEventsDropped', data: d }),
    onPublished: metrics ? (e, at) => metrics.published(at - Date.parse(e.time)) : undefined,
  });

  /** The pinned-key check of every registration (src/daemon/topology-pin.ts). */
  const checkKey = (offered: string): string => {
    const d = decidePin({ saved: readPinnedKey(cfg.stateDir), explicit: cfg.topologyKey, offered, repin });
    if (d.action === 'refuse') {
      if (refusedKey !== d.offered) {
        refusedKey = d.offered;
        emit({ type: 'TopologyKeyRefused', data: { pinnedKey: d.pinned, offeredKey: d.offered, source: d.source } });
      }
      throw new TopologyKeyRefused(d.pinned, d.offered, d.source, cfg.stateDir);
    }
    if (d.save) savePinnedKey(cfg.stateDir, d.key);
    if (d.how !== 'pinned' && d.key !== trustedKey) log.info({ topologyKey: d.key, how: d.how }, 'trusting the control plane topology key');
    if (trustedKey !== null && trustedKey !== d.key) {
      // Only a re-pin gets here (the first registration of a run): the follower verifies with the key it started with.
      throw new Error('topology key changed within a run');
    }
    repin = false;
    refusedKey = null;
    trustedKey = d.key;
    return d.key;
  };

  return {
    emit,
    connect: (reg, auth) => {
      const key = checkKey(reg.bus.topologySigningKey);
      epoch = reg.epoch ?? null;
      if (bus) return;
      const cpKey = importPublicKey(key);
      const servers = cfg.natsServers ?? reg.bus.servers;
      log.info({ servers }, 'connecting to the event bus');
      // Set up until it works: a NATS too busy to answer the JetStream check in time (a fleet of a
      // thousand relays starting at once) must not leave the relay serving without a bus, for ever.
      bus = (async () => {
        for (let attempt = 0; ; attempt++) {
          try {
            nc ??= await connectBus({ servers, auth, name: `relay-core ${cfg.relayId}`, logger: log });
            const js = jetstream(nc);
            const jsm = await jetstreamManager(nc);
            publisher.attach(js);
            if (attempt > 0) log.info({ attempts: attempt + 1 }, 'event bus set up');
            return { js, jsm, relayId: cfg.relayId, controlPlaneKey: cpKey, logger: log, startMarginMs: cfg.startMarginMs };
          } catch (e) {
            if (closing.signal.aborted) throw e;
            const retryMs = busSetupRetryMs(attempt);
            if (attempt === 0 || attempt % 10 === 9) log.error({ err: String(e), attempt: attempt + 1, retryMs }, 'event bus setup failed, retrying');
            await sleep(retryMs, closing.signal);
            if (closing.signal.aborted) throw new Error('bus session closed during the event bus setup');
          }
        }
      })();
      bus.catch(() => {});
    },
    credentialReplaced: (previous) => {
      const conn = nc;
      // Not connected (yet, or while reconnecting): the next connect reads the newest credential.
      if (move || !conn || !isBusConnected(conn) || closing.signal.aborted) return;
      const delay = credentialMoveDelay(previous.expiresAt, deps.now(), Math.random());
      if (delay === null) return;
      const connects = busConnects(conn);
      log.info({ inMs: delay, expiresAt: previous.expiresAt }, 'will move the bus connection onto the renewed NATS credential');
      move = setTimeout(() => {
        move = null;
        // Reconnected meanwhile (a dropped connection, a restarted server): that connect read the newest.
        if (closing.signal.aborted || conn.isClosed() || busConnects(conn) !== connects) return;
        log.info({ expiresAt: previous.expiresAt }, 'moving the bus connection onto the renewed NATS credential');
        conn.reconnect().catch((e) => log.warn({ err: String(e) }, 'could not move the bus connection onto the renewed NATS credential'));
      }, delay);
      move.unref();
    },
    // `follow` needs the bus, which exists only after the first registration; serving comes after it.
    follow: fromCallback<FollowCommand, FollowInput>(({ sendBack, input, receive }) => {
      if (!bus) throw new Error('topology follower started before the event bus');
      let stopped = false;
      let cleanup: (() => void) | null = null;
      // Commands that come before the bus is up find no pull to start again: nothing to do then.
      let command: ((e: FollowCommand) => void) | null = null;
      receive((e) => command?.(e));
      bus.then(
        (d) => {
          if (!stopped)
            cleanup = runTopologyFollower({ ...d, onState: (st) => (followerState = st) }, input, sendBack, (listener) => {
              command = listener;
            });
        },
        () => {},
      );
      return () => {
        stopped = true;
        cleanup?.();
      };
    }),
    deleteConsumer: async (relayId) => {
      const d = await bus?.catch(() => null);
      if (d) await deleteTopologyConsumer(d.jsm, relayId).catch((e) => log.warn({ err: String(e) }, 'could not delete the topology consumer'));
    },
    pending: () => publisher.pending,
    resent: () => publisher.resent,
    status: () => ({
      connected: nc !== null && isBusConnected(nc),
      server: nc?.getServer() ?? null,
      follower: followerState,
      published: publisher.published,
      pending: publisher.pending,
      dropped: publisher.dropped,
      resent: publisher.resent,
      window: publisher.window,
      epoch,
      topologyKey: trustedKey,
      topologyKeyRefused: refusedKey,
    }),
    close: async () => {
      closing.abort();
      if (move) clearTimeout(move);
      await publisher.close(2_000);
      await nc?.drain().catch(() => {});
    },
  };
}
