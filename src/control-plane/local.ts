import { closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import type { Logger } from '../lib/logger.ts';
import { startEmbeddedPostgres, type EmbeddedPostgres } from './embedded-postgres.ts';
import { functionNames, startFunctions, type FunctionRunner } from './functions.ts';
import { startGateway } from './gateway.ts';
import { controlPlaneMetrics } from './metrics.ts';
import { startMetricsServer, type ListenAddress } from '../lib/metrics-server.ts';
import { mintRelayToken, mintUserToken, serviceRoleKey, TOKEN_ISSUER } from './jwt.ts';
import { migrate } from './migrate.ts';
import { loadOrCreateSecrets, topologyPublicKeyOf, writePrivate } from './secrets.ts';
import { type BusAuthorityFiles, loadOrCreateBusAuthority } from './bus-authority.ts';
import { startBusRevocations } from './bus-revocations.ts';
import { type BusAuth, credsFileAuth } from '../bus/connection.ts';
import { inboxPrefixFor } from '../contract/bus-auth.ts';
import { startTopologyPublisher, type TopologyPublisher } from './topology-publisher.ts';
import { DEFAULT_STREAM_LIMITS } from '../bus/stream-limits.ts';
import { startPobScheduler } from './pob-scheduler.ts';

export { loadOrCreateSecrets, SECRETS_FILE, topologyPublicKeyOf, type Secrets } from './secrets.ts';

/** A running local control plane: what a relay needs to reach it, and how to stop it. */
export interface LocalControlPlane {
  /** The SUPABASE_URL of this control plane (the gateway), http://127.0.0.1:PORT. */
  url: string;
  serviceRoleKey: string;
  jwtSecret: string;
  /** base64 Ed25519 public key relays verify topology events with. */
  topologyPublicKey: string;
  dbUrl: string;
  publisher: TopologyPublisher | null;
  /** NATS decentralized auth (STATE_DIR/bus: nats-auth.conf for nats-server, the operator's .creds), or null in token mode. */
  bus: BusAuthorityFiles | null;
  /** A scoped relay token for `relayId`, valid for `ttlSeconds`. */
  mintRelayToken(relayId: string, ttlSeconds: number): Promise<string>;
  /** A user token (role `authenticated`, `sub`), valid for `ttlSeconds`: it may manage its own client sessions. */
  mintUserToken(sub: string, ttlSeconds: number): Promise<string>;
  /** Direct URL of a function's Deno process, bypassing the gateway (tests, debugging). */
  functionUrl(name: string): string | undefined;
  stop(): Promise<void>;
}

export interface LocalControlPlaneOptions {
  stateDir: string;
  /** Gateway port; 0 (default) = a free port. */
  port?: number;
  /** The address the gateway listens on (default 127.0.0.1; 0.0.0.0 in a container). */
  host?: string;
  /** A real PostgreSQL; default: embedded PGlite with its data in STATE_DIR/pgdata. */
  dbUrl?: string;
  /** NATS servers handed to relays; when given, the topology publisher runs too. */
  natsServers?: string[];
  /** Token mode: one NATS token for the publisher and every relay. Without it: NATS decentralized auth (STATE_DIR/bus). */
  natsToken?: string | null;
  /** Lifetime of a relay's NATS user JWT (default 3600 s); relays renew it through the heartbeat. */
  natsUserTtlSeconds?: number;
  /** Also write nats-auth.conf here (0644): for a nats-server that reads it from a shared volume. */
  natsAuthOut?: string;
  heartbeatSeconds?: number;
  /**
   * The Proof-of-Bandwidth receipt epoch in seconds (relaynet.settings.pob_epoch_seconds, handed to relays
   * at registration); set at start when given, else the database's (300 by default).
   */
  receiptEpochSeconds?: number;
  /**
   * How long a relay may stay silent before it is expired from the topology
   * (relaynet.settings.relay_expire_seconds, docs/control-plane.md); set at start when given, else the
   * database's (30 heartbeat intervals by default).
   */
  relayExpireSeconds?: number;
  /**
   * Measure every relay's capacity this often (seconds), one measurement at a time, the relay measured
   * longest ago first (docs/proof-of-bandwidth.md, "On a schedule"); absent or 0: only on demand.
   */
  measureEverySeconds?: number;
  /**
   * Settle each receipt epoch this long (seconds) after it ends, once, oldest first after an outage
   * (docs/proof-of-bandwidth.md, "On a schedule"); absent: only `pob settle`.
   */
  settleAfterSeconds?: number;
  /** Copies of each JetStream stream the control plane creates (default 1; 3 on a 3-node NATS cluster). */
  streamReplicas?: number;
  /** Serve Prometheus metrics here (`--metrics-listen`: the gateway's requests, admissions, heartbeats, the publisher). */
  metricsListen?: ListenAddress | null;
  logger: Logger;
}

export const INFO_FILE = 'control-plane.json';
export const SERVICE_ROLE_KEY_FILE = 'service-role.key';
/** Handed to relays when no NATS server is configured (the usual local nats-server). */
export const DEFAULT_NATS_SERVERS = ['nats://127.0.0.1:4222'];

/** One control plane per state directory: a pid lock file, taken over when its owner is gone. */
function lockStateDir(stateDir: string): () => void {
  const file = join(stateDir, 'control-plane.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx', 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(file, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(readFileSync(file, 'utf8').trim());
      let alive = false;
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid) {
        try {
          process.kill(pid, 0);
          alive = true;
        } catch (err) {
          alive = (err as NodeJS.ErrnoException).code === 'EPERM';
        }
      }
      if (alive) throw new Error(`another control plane (pid ${pid}) uses ${stateDir}; stop it or choose another --state-dir`);
      if (pid === process.pid) throw new Error(`this process already runs a control plane on ${stateDir}`);
      rmSync(file, { force: true });
    }
  }
  throw new Error(`cannot lock ${stateDir}`);
}

export function redactUrl(u: string): string {
  return u.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}

/** Connect to `dbUrl` and apply the migrations; errors say which database and why. */
async function prepareDatabase(dbUrl: string, log: Logger, settings: { receiptEpochSeconds?: number; relayExpireSeconds?: number }): Promise<void> {
  const { receiptEpochSeconds, relayExpireSeconds } = settings;
  const sql = postgres(dbUrl, { max: 1, prepare: false, onnotice: () => {}, connect_timeout: 10, connection: { application_name: 'relaynet-migrate' } });
  try {
    try {
      await sql`select 1`;
    } catch (e) {
      const code = (e as { code?: string }).code;
      throw new Error(`cannot connect to the database at ${redactUrl(dbUrl)}: ${code ? `${code}: ` : ''}${(e as Error).message}`);
    }
    const applied = await migrate(sql);
    if (applied.length) log.info({ applied }, 'migrations applied');
    else log.debug('migrations up to date');
    if (receiptEpochSeconds !== undefined) {
      await sql`update relaynet.settings set pob_epoch_seconds = ${receiptEpochSeconds}`;
      log.info({ receiptEpochSeconds }, 'receipt epoch set');
    }
    if (relayExpireSeconds !== undefined) {
      await sql`update relaynet.settings set relay_expire_seconds = ${relayExpireSeconds}`;
      log.info({ relayExpireSeconds }, 'relay expiry set');
    }
  } finally {
    await sql.end({ timeout: 2 }).catch(() => {});
  }
}

/**
 * Start the control plane on this machine: the gateway (Supabase's API gateway for functions),
 * Postgres (embedded PGlite by default, or `dbUrl`) with the migrations applied, one Deno process per
 * Edge Function, and the topology publisher when NATS servers are given. `stop()` stops all of it;
 * the state directory keeps data and secrets for the next start.
 */
export async function startLocalControlPlane(opts: LocalControlPlaneOptions): Promise<LocalControlPlane> {
  const log = opts.logger.child({ component: 'control-plane' });
  mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
  const unlock = lockStateDir(opts.stateDir);
  // control-plane.json says a control plane is up here (the sim and the container health check wait
  // for it): a previous run's copy goes until this one is serving.
  rmSync(join(opts.stateDir, INFO_FILE), { force: true });
  const stops: { what: string; stop: () => Promise<unknown> }[] = [{ what: 'lock', stop: async () => unlock() }];
  const stopAll = async () => {
    for (const s of stops.splice(0).reverse()) {
      await s.stop().catch((e: unknown) => log.warn({ err: String((e as Error)?.message ?? e), what: s.what }, 'stop failed'));
    }
  };
  try {
    const secrets = loadOrCreateSecrets(opts.stateDir);
    const bus = opts.natsToken ? null : await loadOrCreateBusAuthority(opts.stateDir);
    if (bus && opts.natsAuthOut) {
      const tmp = `${opts.natsAuthOut}.new`;
      writeFileSync(tmp, readFileSync(bus.authConf), { mode: 0o644 });
      renameSync(tmp, opts.natsAuthOut);
    }
    const topologyPublicKey = topologyPublicKeyOf(secrets.topologySigningSeed);
    const names = new Set(functionNames());
    const metrics = opts.metricsListen ? controlPlaneMetrics([...names], { processMetrics: true }) : null;
    let fns: FunctionRunner | null = null;
    // The gateway first: a port that is taken fails the start at once.
    const gw = await startGateway({
      port: opts.port ?? 0,
      ...(opts.host ? { host: opts.host } : {}),
      jwtSecret: secrets.jwtSecret,
      known: (n) => names.has(n),
      route: (n) => fns?.port(n),
      logger: opts.logger,
      metrics,
    });
    stops.push({ what: 'gateway', stop: () => gw.stop() });

    let dbUrl = opts.dbUrl;
    if (!dbUrl) {
      const embedded: EmbeddedPostgres = await startEmbeddedPostgres({ dataDir: join(opts.stateDir, 'pgdata') });
      stops.push({ what: 'embedded database', stop: () => embedded.stop() });
      dbUrl = embedded.url;
    }
    await prepareDatabase(dbUrl, log, opts);

    // The publisher before the functions: its first round checks the database's epoch against the bus
    // (a restored database begins a new epoch) before any function can write a topology event.
    let publisher: TopologyPublisher | null = null;
    if (opts.natsServers?.length) {
      const auth = (role: 'publisher' | 'admin'): BusAuth =>
        bus ? credsFileAuth(bus.creds[role], inboxPrefixFor({ kind: role })) : { kind: 'token', token: opts.natsToken! };
      const p = await startTopologyPublisher({
        dbUrl,
        natsServers: opts.natsServers,
        auth: auth('publisher'),
        adminAuth: auth('admin'),
        logger: opts.logger,
        topologyPublicKey,
        // Both take LISTEN: a real PostgreSQL, and the PGlite multiplexer (it routes notifications itself).
        listen: true,
        streamLimits: { ...DEFAULT_STREAM_LIMITS, replicas: opts.streamReplicas ?? 1 },
        metrics,
      });
      publisher = p;
      stops.push({ what: 'topology publisher', stop: () => p.stop() });
      if (bus) {
        // Banned relays' nkeys, revoked on nats-server (docs/security.md, "Bans").
        const r = await startBusRevocations({
          dbUrl,
          natsServers: opts.natsServers,
          authority: bus.authority,
          systemCreds: bus.creds.system,
          logger: opts.logger,
        });
        stops.push({ what: 'bus revocations', stop: () => r.stop() });
      }
    }

    const natsServers = opts.natsServers?.length ? opts.natsServers : DEFAULT_NATS_SERVERS;
    fns = await startFunctions({
      env: {
        SUPABASE_DB_URL: dbUrl,
        RELAYNET_JWT_SECRET: secrets.jwtSecret,
        // The user tokens a local control plane accepts are the ones it mints (mintUserToken).
        RELAYNET_JWT_ISSUER: TOKEN_ISSUER,
        RELAYNET_TOPOLOGY_SIGNING_KEY: secrets.topologySigningSeed,
        RELAYNET_NATS_SERVERS: natsServers.join(','),
        ...(opts.natsToken ? { RELAYNET_NATS_TOKEN: opts.natsToken } : {}),
        ...(bus
          ? {
              RELAYNET_NATS_ACCOUNT: bus.account,
              RELAYNET_NATS_ACCOUNT_SIGNING_KEY: bus.authority.accountSigningSeed,
              RELAYNET_NATS_USER_TTL_SECONDS: String(opts.natsUserTtlSeconds ?? 3600),
            }
          : {}),
        RELAYNET_HEARTBEAT_SECONDS: String(opts.heartbeatSeconds ?? 10),
        RELAYNET_DB_LISTEN: '1',
      },
      logger: opts.logger,
    });
    const runner = fns;
    stops.push({ what: 'functions', stop: () => runner.stop() });

    if (metrics && opts.metricsListen) {
      const pub = publisher;
      const m = await startMetricsServer({
        listen: opts.metricsListen,
        registry: metrics.registry,
        logger: opts.logger,
        before: async () => {
          if (pub) metrics.headRevision(await pub.headRevision());
        },
      });
      stops.push({ what: 'metrics', stop: () => m.close() });
    }

    const srk = await serviceRoleKey(secrets.jwtSecret);
    if (opts.measureEverySeconds || opts.settleAfterSeconds !== undefined) {
      const s = startPobScheduler({
        url: gw.url,
        serviceRoleKey: srk,
        everySeconds: opts.measureEverySeconds ?? 0,
        ...(opts.settleAfterSeconds !== undefined ? { settleAfterSeconds: opts.settleAfterSeconds } : {}),
        logger: opts.logger,
      });
      stops.push({ what: 'Proof-of-Bandwidth schedule', stop: async () => s.stop() });
      log.info({ measureEverySeconds: opts.measureEverySeconds ?? 0, settleAfterSeconds: opts.settleAfterSeconds ?? null }, 'Proof-of-Bandwidth on a schedule');
    }
    // The key alone, for `--token-file` (relays and operators on this host or sharing its state volume).
    writePrivate(join(opts.stateDir, SERVICE_ROLE_KEY_FILE), srk + '\n');
    writePrivate(
      join(opts.stateDir, INFO_FILE),
      JSON.stringify({ url: gw.url, serviceRoleKey: srk, topologyPublicKey, dbUrl, natsServers: opts.natsServers ?? [] }, null, 2) + '\n',
    );
    log.info({ url: gw.url, db: redactUrl(dbUrl), functions: [...names], publisher: !!publisher }, 'control plane up');
    let stopping: Promise<void> | null = null;
    return {
      url: gw.url,
      serviceRoleKey: srk,
      jwtSecret: secrets.jwtSecret,
      topologyPublicKey,
      dbUrl,
      publisher,
      bus,
      mintRelayToken: (relayId, ttl) => mintRelayToken(relayId, ttl, secrets.jwtSecret),
      mintUserToken: (sub, ttl) => mintUserToken(sub, ttl, secrets.jwtSecret),
      functionUrl: (name) => {
        const p = runner.port(name);
        return p ? `http://127.0.0.1:${p}/${name}` : undefined;
      },
      stop: () => (stopping ??= stopAll().then(() => log.info('control plane stopped'))),
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}
