import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { INFO_FILE } from '../control-plane/local.ts';
import { mintRelayToken, mintUserToken, serviceRoleKey } from '../control-plane/jwt.ts';
import { loadOrCreateSecrets, topologyPublicKeyOf, writePrivate } from '../control-plane/secrets.ts';
import { loadOrCreateBusAuthority } from '../control-plane/bus-authority.ts';
import { natsResolverConfig } from '../contract/bus-auth.ts';
import { fetchStatus } from '../daemon/status-server.ts';
import { findNatsServer } from '../devnet/nats-server.ts';
import { RELAY_CORE_BIN } from '../devnet/relay-process.ts';
import {
  allocateRelayIndex,
  BRIDGE_ADDRESS,
  BRIDGE_IF,
  chooseWgPrefix,
  CONTROL_PLANE_PORT,
  CONTROL_PLANE_URL,
  defaultRelayId,
  inetNamespace,
  isSimNamespace,
  isSimWgSocket,
  NATS_PORT,
  NATS_ROUTE_PORT,
  natsNodeName,
  natsNodeUrl,
  newSimId,
  PREFIX_LEN,
  prefixesInUse,
  PUBLIC_IF,
  RELAY_PORT,
  relayNamespace,
  relayMovedAddress,
  relayPublicAddress,
  RELAY_METRICS_PORT,
  CONTROL_PLANE_METRICS_PORT,
  SIM_INTERNET,
  SIM_INTERNET6,
  BRIDGE_ADDRESS6,
  PREFIX_LEN6,
  relayPublicAddress6,
  WEB_URL6,
  WEB_ADDRESS6,
  simHostsFile,
  SVC_ADDRESS,
  svcNamespace,
  vethName,
  WEB_PORT,
  WEB_URL,
} from './layout.ts';
import { manifestPath, readManifest, StateDirBusyError, withStateDirLock, writeManifest, type Manifest, type SimProcess, type SimRelay } from './manifest.ts';
import * as host from './netns.ts';
import { convergence, type ConvergenceMode, type RelayObservation, type RelayStatusView, type Verdict } from './status.ts';

/**
 * Building, changing and tearing down a sim. Every step records what it is about to create in the
 * manifest first (see manifest.ts), so `down` can always find it.
 */

export type Out = (line: string) => void;
export type Settings = Manifest['settings'];

const WHOAMI_SCRIPT = fileURLToPath(new URL('./whoami.ts', import.meta.url));
const RELAY_TOKEN_TTL_SECONDS = 30 * 86400;
const SERVICE_START_TIMEOUT_MS = 120_000;
const RELAY_STOP_TIMEOUT_MS = 15_000;
const KILL_WAIT_MS = 5_000;

/** A sim being changed: its manifest, saved after every change. */
export class Sim {
  m: Manifest;
  constructor(m: Manifest) {
    this.m = m;
  }
  record(change: (m: Manifest) => void): void {
    change(this.m);
    writeManifest(this.m);
  }
}

export function loadSim(dir: string): Manifest {
  const m = readManifest(dir);
  if (!m) throw new Error(`no sim in ${dir} (no ${manifestPath(dir)}); start one with 'relay-core sim up --state-dir ${dir}'`);
  return m;
}

/** The environment of sim processes: without the caller's relay or Supabase settings, which flags would not override. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if ((k.startsWith('RELAYNET_') && k !== 'RELAYNET_LOG_LEVEL') || k.startsWith('SUPABASE_')) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

/** The environment of the sim's relays and control plane: `childEnv` at the sim's log level. */
const loggingEnv = (m: Manifest, extra: Record<string, string> = {}) => childEnv({ RELAYNET_LOG_LEVEL: m.settings.logLevel, ...extra });

// ---------------------------------------------------------------------------------------------
// up

export interface UpOptions {
  dir: string;
  relays: number;
  settings: Settings;
  dbUrl?: string;
  signal: AbortSignal;
  out: Out;
}

/** Check what the sim needs before creating anything; throws saying what is missing. */
export async function preflight(): Promise<void> {
  await findNatsServer();
  for (const tool of ['ip', 'nft', 'wg', 'wireguard-go']) {
    const found = ['/usr/sbin', '/usr/bin', '/sbin', '/bin', '/usr/local/bin', '/usr/local/sbin'].some((d) => existsSync(join(d, tool)));
    if (!found) throw new Error(`${tool} not found; run 'npm run setup' (it installs iproute2, nftables, wireguard-tools and wireguard-go)`);
  }
}

/**
 * Create the sim: the "internet" bridge, the service namespace with nats-server and the control
 * plane, and `relays` relays. Returns once they run (not yet converged). On an error everything
 * created so far is removed again.
 */
export async function up(o: UpOptions): Promise<Manifest> {
  const existing = readManifest(o.dir);
  if (existing) throw new Error(`${o.dir} already holds sim ${existing.simId}; remove it first with 'relay-core sim down --state-dir ${o.dir}'`);
  const sim = new Sim(await newManifest(o.dir, o.settings));
  writeManifest(sim.m);
  const { simId, wgPrefix } = sim.m;
  try {
    await createNode(sim, inetNamespace(simId), null);
    await createNode(sim, svcNamespace(simId), 'svc');
    const relays: SimRelay[] = [];
    for (let i = 1; i <= o.relays; i++) {
      o.signal.throwIfAborted();
      relays.push(await createRelay(sim, defaultRelayId(i)));
    }
    o.out(`sim ${simId}: ${sim.m.namespaces.length} namespaces on bridge ${BRIDGE_ADDRESS}/${PREFIX_LEN} (WireGuard device prefix ${wgPrefix})`);
    await startServices(sim, o);
    for (const r of relays) {
      o.signal.throwIfAborted();
      startRelay(sim, r);
    }
    o.out(`sim ${simId}: started ${relays.length} relays`);
    return sim.m;
  } catch (e) {
    o.out(`sim ${simId}: ${o.signal.aborted ? 'interrupted' : 'failed'}; removing what was created`);
    await down(o.dir, { purge: false, out: o.out });
    throw e;
  }
}

async function newManifest(dir: string, settings: Settings): Promise<Manifest> {
  const namespaces = await host.listNetns();
  let simId = newSimId();
  while (namespaces.some((n) => isSimNamespace(simId, n))) simId = newSimId();
  // Device names are machine-wide for wireguard-go (its sockets share /var/run/wireguard): look at
  // every namespace's links and every socket.
  const names = [...host.wgSocketNames(), ...(await host.linkNames(null))];
  for (const ns of namespaces) names.push(...(await host.linkNames(ns).catch(() => [])));
  const cpDir = join(dir, 'control-plane');
  return {
    version: 1,
    simId,
    wgPrefix: chooseWgPrefix(prefixesInUse(names)),
    stateDir: dir,
    createdAt: new Date().toISOString(),
    settings,
    namespaces: [],
    veths: [],
    processes: [],
    relays: [],
    clients: [],
    controlPlane: {
      url: CONTROL_PLANE_URL,
      natsUrl: Array.from({ length: settings.natsNodes }, (_, k) => natsNodeUrl(k + 1)).join(','),
      stateDir: cpDir,
      serviceRoleKeyFile: join(dir, 'service-role.key'),
      topologyPublicKey: '',
    },
  };
}

/**
 * A namespace; unless it is the inet one (`node` null), attached to the bridge with its public address.
 * `address6`: its IPv6 on the bridge's /64 too, with a default route (the internet has both families).
 */
async function createNode(sim: Sim, ns: string, node: 'svc' | number | null, address6: string | null = null): Promise<void> {
  const { simId } = sim.m;
  sim.record((m) => m.namespaces.push(ns));
  await host.addNetns(ns);
  if (node === null) {
    await host.addBridge(ns, BRIDGE_IF, `${BRIDGE_ADDRESS}/${PREFIX_LEN}`);
    await host.addAddress6(ns, BRIDGE_IF, `${BRIDGE_ADDRESS6}/${PREFIX_LEN6}`, null);
    await host.addAddress6(ns, BRIDGE_IF, `${WEB_ADDRESS6}/128`, null);
    return;
  }
  const veth = { name: vethName(simId, node), namespace: inetNamespace(simId), peer: PUBLIC_IF, peerNamespace: ns };
  sim.record((m) => m.veths.push(veth));
  // A relay resolves its peers' endpoint names: inside the sim, never with the host's resolver.
  if (node !== 'svc') host.isolateDns(ns, simHostsFile());
  const address = node === 'svc' ? SVC_ADDRESS : relayPublicAddress(node);
  await host.attachToBridge({
    bridgeNs: veth.namespace,
    bridge: BRIDGE_IF,
    outer: veth.name,
    ns,
    inner: veth.peer,
    cidr: `${address}/${PREFIX_LEN}`,
    gateway: BRIDGE_ADDRESS,
  });
  if (address6) await host.addAddress6(ns, veth.peer, `${address6}/${PREFIX_LEN6}`, BRIDGE_ADDRESS6);
}

/**
 * A relay's record, namespace and token; not yet its process. `endpoint`: what it registers as its
 * public endpoint, instead of its public address and port (a name, to test resolution).
 */
async function createRelay(sim: Sim, relayId: string, endpoint?: string, ipv6 = true, community: { operator: string } | null = null): Promise<SimRelay> {
  if (sim.m.relays.some((r) => r.id === relayId)) throw new Error(`the sim already has ${relayId}`);
  const index = allocateRelayIndex(relayId, new Set(sim.m.relays.map((r) => r.index)));
  if (index === null) throw new Error('the sim has no room for another relay (250 at most)');
  const stateDir = join(sim.m.stateDir, 'relays', relayId);
  const relay: SimRelay = {
    id: relayId,
    index,
    namespace: relayNamespace(sim.m.simId, index),
    publicAddress: relayPublicAddress(index),
    publicAddress6: ipv6 ? relayPublicAddress6(index) : null,
    endpoint: endpoint ?? `${relayPublicAddress(index)}:${RELAY_PORT}`,
    meshAddress: null,
    publicKey: null,
    stateDir,
    tokenFile: join(stateDir, 'token'),
  };
  sim.record((m) => m.relays.push(relay));
  await createNode(sim, relay.namespace, index, relay.publicAddress6);
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const { jwtSecret } = loadOrCreateSecrets(sim.m.controlPlane.stateDir);
  if (community) await enrollCommunityRelay(sim, relayId, community.operator, jwtSecret, relay.tokenFile);
  else writePrivate(relay.tokenFile, (await mintRelayToken(relayId, RELAY_TOKEN_TTL_SECONDS, jwtSecret)) + '\n');
  return relay;
}

/**
 * A community relay's token, the way an operator gets one (docs/proof-of-bandwidth.md, "Community
 * relays"): the operator's user token (the role a Supabase admin would set; STATE_DIR/operators/SUB.jwt,
 * 0600), then `relay-core operator enroll` against the sim's control plane, which writes the relay
 * token. The relay starts in probation.
 */
async function enrollCommunityRelay(sim: Sim, relayId: string, operator: string, jwtSecret: string, tokenFile: string): Promise<void> {
  const dir = join(sim.m.stateDir, 'operators');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const operatorToken = join(dir, `${operator}.jwt`);
  writePrivate(operatorToken, (await mintUserToken(operator, RELAY_TOKEN_TTL_SECONDS, jwtSecret, undefined, { operator: true })) + '\n');
  const r = await execa(
    'ip',
    [
      'netns',
      'exec',
      svcNamespace(sim.m.simId),
      RELAY_CORE_BIN,
      'operator',
      'enroll',
      '--relay-id',
      relayId,
      '--token-out',
      tokenFile,
      '--control-plane-url',
      `http://127.0.0.1:${CONTROL_PLANE_PORT}`,
      '--token-file',
      operatorToken,
    ],
    { reject: false, timeout: 60_000 },
  );
  if (r.exitCode !== 0) throw new Error(`operator ${operator} could not enroll ${relayId}: ${(r.stderr || r.stdout).trim()}`);
}

/** Spawn a sim process detached in its namespace, recorded in the manifest before it starts. */
export function spawnRecorded(sim: Sim, p: Pick<SimProcess, 'kind' | 'name' | 'namespace' | 'log'>, argv: string[], env: NodeJS.ProcessEnv): SimProcess {
  const entry: SimProcess = { ...p, command: ['ip', 'netns', 'exec', p.namespace, ...argv], pid: null, startedAt: null, stoppedBy: null };
  sim.record((m) => {
    m.processes = m.processes.filter((x) => !(x.kind === p.kind && x.name === p.name));
    m.processes.push(entry);
  });
  const { pid } = host.spawnInNetns(p.namespace, argv, { logFile: p.log, cwd: sim.m.stateDir, env });
  sim.record(() => {
    entry.pid = pid;
    entry.startedAt = new Date().toISOString();
  });
  return entry;
}

/**
 * The sim's NATS node `i` of `nodes` in the service namespace: its configuration (trusting the control
 * plane's bus authority), then its process. A single node keeps its files in DIR/nats; node i of a
 * cluster in DIR/nats/n<i>, its log DIR/nats/nats-<i>.log.
 */
async function startNatsNode(sim: Sim, i: number): Promise<SimProcess> {
  const { m } = sim;
  const nodes = m.settings.natsNodes;
  const natsDir = join(m.stateDir, 'nats');
  const dir = nodes === 1 ? natsDir : join(natsDir, `n${i}`);
  mkdirSync(join(dir, 'jetstream'), { recursive: true, mode: 0o700 });
  mkdirSync(join(dir, 'jwt'), { recursive: true, mode: 0o700 });
  // NATS decentralized auth: the control plane's authority (made here first, so nats-server trusts it
  // from its start); every party connects with a user JWT of that account (docs/security.md, "The bus").
  const bus = await loadOrCreateBusAuthority(m.controlPlane.stateDir);
  const routes = Array.from({ length: nodes }, (_, k) => `nats-route://${SVC_ADDRESS}:${NATS_ROUTE_PORT + k}`);
  const conf = join(dir, 'nats.conf');
  writePrivate(
    conf,
    // The file store must have room for the streams' max_bytes reservations (src/bus/streams.ts), or JetStream refuses them.
    [
      `listen: ${SVC_ADDRESS}:${NATS_PORT + i - 1}`,
      'max_payload: 1048576',
      `jetstream { store_dir: "${join(dir, 'jetstream')}", max_memory_store: 256MB, max_file_store: 8GB }`,
      ...(nodes > 1
        ? [
            `server_name: ${natsNodeName(i, nodes)}`,
            `cluster { name: rcs-${m.simId}, listen: ${SVC_ADDRESS}:${NATS_ROUTE_PORT + i - 1}, routes: [${routes.join(', ')}] }`,
          ]
        : []),
      readFileSync(bus.authConf, 'utf8'),
      natsResolverConfig(join(dir, 'jwt')),
    ].join('\n') + '\n',
  );
  const name = natsNodeName(i, nodes);
  const log = join(natsDir, nodes === 1 ? 'nats.log' : `${name}.log`);
  return spawnRecorded(sim, { kind: 'nats', name, namespace: svcNamespace(m.simId), log }, [await findNatsServer(), '-c', conf], childEnv());
}

/** nats-server (one node, or a cluster) and the control plane in the service namespace, reachable from the relays' namespaces. */
async function startServices(sim: Sim, o: UpOptions): Promise<void> {
  const { m } = sim;
  const svc = svcNamespace(m.simId);
  const cp = m.controlPlane;
  const nodes = m.settings.natsNodes;
  const nats: SimProcess[] = [];
  for (let i = 1; i <= nodes; i++) nats.push(await startNatsNode(sim, i));

  // The secrets first, so relay tokens and the service-role key file exist before the control plane does.
  const secrets = loadOrCreateSecrets(cp.stateDir);
  writePrivate(cp.serviceRoleKeyFile, (await serviceRoleKey(secrets.jwtSecret)) + '\n');
  sim.record(() => (cp.topologyPublicKey = topologyPublicKeyOf(secrets.topologySigningSeed)));
  await host.forwardToLoopback(svc, SVC_ADDRESS, CONTROL_PLANE_PORT);
  rmSync(join(cp.stateDir, INFO_FILE), { force: true });
  const cpArgs = [
    RELAY_CORE_BIN,
    'control-plane',
    '--port',
    String(CONTROL_PLANE_PORT),
    '--state-dir',
    cp.stateDir,
    '--nats-url',
    cp.natsUrl,
    '--heartbeat-seconds',
    String(m.settings.heartbeatSeconds),
    ...(m.settings.receiptEpochSeconds ? ['--receipt-epoch', String(m.settings.receiptEpochSeconds)] : []),
    ...(m.settings.measureEverySeconds ? ['--measure-every', String(m.settings.measureEverySeconds)] : []),
    ...(m.settings.settleAfterSeconds !== undefined ? ['--settle-after', String(m.settings.settleAfterSeconds)] : []),
    // On a cluster every stream keeps a copy on each node: losing one loses nothing.
    ...(nodes > 1 ? ['--stream-replicas', String(Math.min(nodes, 3))] : []),
    '--metrics-listen',
    `127.0.0.1:${CONTROL_PLANE_METRICS_PORT}`,
  ];
  // The database URL goes by environment, so it (and its password) is in neither argv nor the manifest.
  const controlPlane = spawnRecorded(
    sim,
    { kind: 'control-plane', name: 'control-plane', namespace: svc, log: join(cp.stateDir, 'control-plane.log') },
    cpArgs,
    loggingEnv(m, o.dbUrl ? { SUPABASE_DB_URL: o.dbUrl } : {}),
  );

  // The control plane writes its info file once every part of it is up.
  const deadline = Date.now() + SERVICE_START_TIMEOUT_MS;
  while (!existsSync(join(cp.stateDir, INFO_FILE))) {
    o.signal.throwIfAborted();
    for (const p of [...nats, controlPlane]) if (!host.isRunning(p.pid!)) throw new Error(`${p.name} exited during start:\n${logTail(p.log)}`);
    if (Date.now() > deadline) throw new Error(`the control plane did not come up in ${SERVICE_START_TIMEOUT_MS / 1000} s:\n${logTail(controlPlane.log)}`);
    await sleep(250);
  }
  o.out(
    `sim ${m.simId}: ${nodes === 1 ? 'nats-server' : `a NATS cluster of ${nodes} nodes`} at ${cp.natsUrl}, control plane at ${CONTROL_PLANE_URL} (in ${svc})`,
  );
  startWeb(sim);
  o.out(`sim ${m.simId}: an "internet" web server at ${WEB_URL} and ${WEB_URL6} answers with the address each request comes from`);
  const probeFrom = m.relays[0]?.namespace;
  if (probeFrom) {
    const ports: [string, number][] = [['the control plane', CONTROL_PLANE_PORT]];
    for (let i = 1; i <= nodes; i++) ports.push([natsNodeName(i, nodes), NATS_PORT + i - 1]);
    for (const [what, port] of ports) {
      if (!(await host.tcpReachable(probeFrom, SVC_ADDRESS, port))) throw new Error(`${what} (${SVC_ADDRESS}:${port}) is not reachable from ${probeFrom}`);
    }
  }
}

/** The whoami server in the inet namespace: the internet host clients fetch from (src/sim/whoami.ts). */
function startWeb(sim: Sim): SimProcess {
  const inet = inetNamespace(sim.m.simId);
  const dir = join(sim.m.stateDir, 'web');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const argv = [
    process.execPath,
    WHOAMI_SCRIPT,
    '--listen',
    `${BRIDGE_ADDRESS}:${WEB_PORT}`,
    '--listen',
    `[${WEB_ADDRESS6}]:${WEB_PORT}`,
    '--log',
    join(dir, 'requests.jsonl'),
  ];
  return spawnRecorded(sim, { kind: 'web', name: 'web', namespace: inet, log: join(dir, 'web.log') }, argv, childEnv());
}

function relayArgv(m: Manifest, r: SimRelay): string[] {
  const s = m.settings;
  return [
    RELAY_CORE_BIN,
    'run',
    '--relay-id',
    r.id,
    '--region',
    `region-${((r.index - 1) % 3) + 1}`,
    '--endpoint',
    r.endpoint,
    '--state-dir',
    r.stateDir,
    '--control-plane-url',
    m.controlPlane.url,
    '--token-file',
    r.tokenFile,
    '--topology-key',
    m.controlPlane.topologyPublicKey,
    '--nats-url',
    m.controlPlane.natsUrl,
    '--wg-prefix',
    m.wgPrefix,
    '--keepalive',
    String(s.keepaliveSeconds),
    '--link-stale-after',
    String(s.linkStaleAfterMs),
    '--link-down-after',
    String(s.linkDownAfterMs),
    '--observe-interval',
    String(s.observeIntervalMs),
    // The sim's internet lives in the benchmarking range, which the egress policy refuses by default.
    '--client-allow',
    `${SIM_INTERNET},${SIM_INTERNET6}`,
    '--metrics-listen',
    `127.0.0.1:${RELAY_METRICS_PORT}`,
  ];
}

/**
 * A relay's wireguard-go processes inherit its environment. Go's default runs each on every core; the
 * sim runs one per link end on a few cores, where each process's threads only take turns with the
 * others' (and spin looking for work): one thread each carried 0.95 of a 100 Mbit/s cap through a
 * measurement where the default carried 0.82 (docs/proof-of-bandwidth.md, "Measuring"). The caller's
 * GOMAXPROCS wins.
 */
const RELAY_GOMAXPROCS = '1';

function startRelay(sim: Sim, r: SimRelay): SimProcess {
  const env = loggingEnv(sim.m, { GOMAXPROCS: process.env.GOMAXPROCS ?? RELAY_GOMAXPROCS });
  return spawnRecorded(sim, { kind: 'relay', name: r.id, namespace: r.namespace, log: join(r.stateDir, 'relay.log') }, relayArgv(sim.m, r), env);
}

// ---------------------------------------------------------------------------------------------
// observing

/** Whether the recorded process still runs and is the one the sim started (not a reused pid). */
export function runningProcess(m: Manifest, p: SimProcess | undefined): boolean {
  if (!p?.pid || !host.isRunning(p.pid)) return false;
  return host.cmdline(p.pid)?.some((a) => a.startsWith(m.stateDir + '/')) ?? false;
}

function processState(m: Manifest, p: SimProcess | undefined): RelayObservation['process'] {
  if (!p?.pid) return 'not started';
  if (runningProcess(m, p)) return 'running';
  return p.stoppedBy === 'SIGTERM' ? 'stopped' : p.stoppedBy === 'SIGKILL' ? 'killed' : 'exited';
}

const relayProcess = (m: Manifest, id: string) => m.processes.find((p) => p.kind === 'relay' && p.name === id);

/** Every relay's process state and, when it runs, its status (from its socket). */
export async function observe(m: Manifest): Promise<RelayObservation[]> {
  return Promise.all(
    m.relays.map(async (r) => {
      const p = relayProcess(m, r.id);
      const proc = processState(m, p);
      let status: RelayStatusView | null = null;
      let statusError: string | null = null;
      if (proc === 'running') {
        try {
          status = (await fetchStatus(join(r.stateDir, 'relay.sock'), 2_000)) as RelayStatusView;
        } catch (e) {
          statusError = (e as Error).message;
        }
      }
      return { id: r.id, publicAddress: r.publicAddress, pid: p?.pid ?? null, process: proc, status, statusError };
    }),
  );
}

/**
 * Poll until the sim converges (`mode`) or `timeoutMs` passes; returns the last verdict and
 * observations either way. Mesh addresses and keys the relays report go into the manifest.
 */
export async function waitConverged(
  dir: string,
  mode: ConvergenceMode,
  timeoutMs: number,
  signal: AbortSignal,
  onProgress?: (relays: RelayObservation[], elapsedMs: number) => void,
): Promise<{ verdict: Verdict; relays: RelayObservation[]; ms: number }> {
  const started = Date.now();
  for (;;) {
    const relays = await observe(loadSim(dir));
    const verdict = convergence(relays, mode);
    onProgress?.(relays, Date.now() - started);
    if (verdict.converged || Date.now() - started >= timeoutMs || signal.aborted) {
      await recordIdentities(dir, relays);
      return { verdict, relays, ms: Date.now() - started };
    }
    await sleep(500);
  }
}

/** Note the mesh addresses and keys the relays report in the manifest (not when another command holds it: next time). */
async function recordIdentities(dir: string, relays: RelayObservation[]): Promise<void> {
  const update = async () => {
    const m = loadSim(dir);
    for (const o of relays) {
      const r = m.relays.find((x) => x.id === o.id);
      if (r && o.status?.meshAddress) Object.assign(r, { meshAddress: o.status.meshAddress, publicKey: o.status.publicKey });
    }
    writeManifest(m);
  };
  await withStateDirLock(dir, update).catch((e: unknown) => {
    if (!(e instanceof StateDirBusyError)) throw e;
  });
}

// ---------------------------------------------------------------------------------------------
// changing relays

/**
 * A new relay; `endpoint` (optional) is what it registers instead of its public address and port;
 * `ipv6` false: its namespace has no IPv6, so it is no exit for clients' IPv6.
 */
export async function addRelay(
  dir: string,
  relayId: string | undefined,
  out: Out,
  endpoint?: string,
  ipv6 = true,
  community: { operator: string } | null = null,
): Promise<SimRelay> {
  const sim = new Sim(loadSim(dir));
  const taken = new Set(sim.m.relays.map((r) => r.index));
  const id = relayId ?? defaultRelayId(allocateRelayIndex('', taken) ?? 0);
  const relay = await createRelay(sim, id, endpoint, ipv6, community);
  startRelay(sim, relay);
  const what = community ? `community relay ${id} (operator ${community.operator}; in probation until measured)` : id;
  out(`sim ${sim.m.simId}: added ${what} in ${relay.namespace} at ${relay.endpoint}${ipv6 ? ` and ${relay.publicAddress6}` : ' (no IPv6)'}`);
  return relay;
}

function findRelay(m: Manifest, relayId: string): SimRelay {
  const r = m.relays.find((x) => x.id === relayId);
  if (!r) throw new Error(`the sim has no relay ${relayId} (it has ${m.relays.map((x) => x.id).join(', ') || 'none'})`);
  return r;
}

/** SIGTERM (the relay deregisters and removes its links; SIGKILL after a bound) or SIGKILL (a crash). */
export async function stopRelay(dir: string, relayId: string, sig: 'SIGTERM' | 'SIGKILL', out: Out): Promise<void> {
  const sim = new Sim(loadSim(dir));
  findRelay(sim.m, relayId);
  const stopped = await stopProcess(sim, relayProcess(sim.m, relayId), sig, relayId, out);
  if (stopped)
    out(
      sig === 'SIGTERM'
        ? `${relayId} (pid ${stopped}) stopped: it deregistered`
        : `${relayId} (pid ${stopped}) killed: its WireGuard devices stay until it restarts`,
    );
}

/**
 * Signal a recorded process that runs and wait until it is gone (after SIGTERM, SIGKILL past a bound).
 * Returns its pid when it stopped as asked, null when it was not running or needed SIGKILL (said so).
 */
async function stopProcess(sim: Sim, p: SimProcess | undefined, sig: 'SIGTERM' | 'SIGKILL', what: string, out: Out): Promise<number | null> {
  if (!p || !runningProcess(sim.m, p)) {
    out(`${what} is not running`);
    return null;
  }
  sim.record(() => (p.stoppedBy = sig));
  host.signal(p.pid!, sig);
  const left = await host.waitGone([p.pid!], sig === 'SIGTERM' ? RELAY_STOP_TIMEOUT_MS : KILL_WAIT_MS);
  if (left.length && sig === 'SIGTERM') {
    host.signal(p.pid!, 'SIGKILL');
    await host.waitGone([p.pid!], KILL_WAIT_MS);
    out(`${what} (pid ${p.pid}) did not stop within ${RELAY_STOP_TIMEOUT_MS / 1000} s of SIGTERM; killed it`);
    return null;
  }
  return p.pid;
}

// ---------------------------------------------------------------------------------------------
// NATS nodes

/** The sim's NATS node `name` ('nats', or 'nats-<i>' of a cluster) and its index, or an error naming the nodes there are. */
function findNatsNode(m: Manifest, name: string): { index: number; p: SimProcess | undefined } {
  const nodes = m.settings.natsNodes;
  for (let i = 1; i <= nodes; i++) {
    if (natsNodeName(i, nodes) === name) return { index: i, p: m.processes.find((p) => p.kind === 'nats' && p.name === name) };
  }
  const names = Array.from({ length: nodes }, (_, k) => natsNodeName(k + 1, nodes));
  throw new Error(`the sim has no NATS node ${name} (it has ${names.join(', ')})`);
}

/** SIGTERM or SIGKILL one NATS node (of a cluster, the others carry on; its store stays for `restartNats`). */
export async function stopNats(dir: string, name: string, sig: 'SIGTERM' | 'SIGKILL', out: Out): Promise<void> {
  const sim = new Sim(loadSim(dir));
  const { p } = findNatsNode(sim.m, name);
  const stopped = await stopProcess(sim, p, sig, name, out);
  if (stopped) out(`${name} (pid ${stopped}) ${sig === 'SIGTERM' ? 'stopped' : 'killed'}; 'sim restart --nats ${name}' starts it again on its store`);
}

/** Start a NATS node again on its own store (stopping it first if it runs); in a cluster it catches up from the others. */
export async function restartNats(dir: string, name: string, out: Out): Promise<void> {
  const before = loadSim(dir);
  if (runningProcess(before, findNatsNode(before, name).p)) await stopNats(dir, name, 'SIGTERM', out);
  const sim = new Sim(loadSim(dir));
  const { index } = findNatsNode(sim.m, name);
  const p = await startNatsNode(sim, index);
  out(`${name} started again (pid ${p.pid}) at ${natsNodeUrl(index)}`);
}

/** The NATS nodes' process states: a cluster loses one and carries on. */
export function observeNats(m: Manifest): { name: string; url: string; process: RelayObservation['process'] }[] {
  const nodes = m.settings.natsNodes;
  return Array.from({ length: nodes }, (_, k) => {
    const name = natsNodeName(k + 1, nodes);
    return { name, url: natsNodeUrl(k + 1), process: processState(m, findNatsNode(m, name).p) };
  });
}

/** The sim (loaded afresh) and its relay `relayId`, its process stopped first with `sig` if it runs. */
async function stoppedRelay(dir: string, relayId: string, sig: 'SIGTERM' | 'SIGKILL', out: Out): Promise<{ sim: Sim; relay: SimRelay }> {
  const before = loadSim(dir);
  findRelay(before, relayId);
  if (runningProcess(before, relayProcess(before, relayId))) await stopRelay(dir, relayId, sig, out);
  const sim = new Sim(loadSim(dir));
  return { sim, relay: findRelay(sim.m, relayId) };
}

/** Start a relay's process again, in its namespace with its state directory and key (stopping it first if it runs). */
export async function restartRelay(dir: string, relayId: string, out: Out): Promise<void> {
  const { sim, relay } = await stoppedRelay(dir, relayId, 'SIGTERM', out);
  const p = startRelay(sim, relay);
  out(`${relayId} started again (pid ${p.pid}) in ${relay.namespace}`);
}

/**
 * Move a relay to its other public address (198.18.1.i <-> 198.18.3.i), as when its host gets a new
 * one: SIGKILL (so it does not deregister and stays in the topology), the new address on its public
 * interface instead of the old, then started again with the new endpoint (same state directory, so
 * the same keys). The control plane takes the new endpoint at its registration (RelayEndpointChanged).
 */
export async function moveRelay(dir: string, relayId: string, out: Out): Promise<SimRelay> {
  const { sim, relay } = await stoppedRelay(dir, relayId, 'SIGKILL', out);
  const from = relay.publicAddress;
  const to = from === relayMovedAddress(relay.index) ? relayPublicAddress(relay.index) : relayMovedAddress(relay.index);
  await host.replaceAddress(relay.namespace, PUBLIC_IF, `${from}/${PREFIX_LEN}`, `${to}/${PREFIX_LEN}`, BRIDGE_ADDRESS);
  sim.record(() => Object.assign(relay, { publicAddress: to, endpoint: `${to}:${RELAY_PORT}` }));
  const p = startRelay(sim, relay);
  out(`${relayId} moved from ${from} to ${to} and started again (pid ${p.pid}); it registers ${relay.endpoint}`);
  return relay;
}

// ---------------------------------------------------------------------------------------------
// down

/**
 * Remove everything the sim in `dir` created, from its manifest alone: relays first with SIGTERM
 * (they deregister and remove their devices while the control plane still runs), then every process
 * left in the sim's namespaces (wireguard-go among them) and every recorded process that still runs,
 * SIGTERM then SIGKILL; then the namespaces (their veths and the bridge go with them), leftover
 * WireGuard sockets, and the sim's files except logs (all of them with `purge`). Idempotent.
 */
export async function down(dir: string, o: { purge: boolean; out: Out }): Promise<void> {
  const m = readManifest(dir);
  if (!m) {
    o.out(`no sim in ${dir} (no manifest.json): nothing to remove`);
    if (o.purge) removeSimFiles(dir, true);
    return;
  }
  const out = (s: string) => o.out(`sim ${m.simId}: ${s}`);
  const namespaces = m.namespaces.filter((ns) => isSimNamespace(m.simId, ns));

  const relays = m.processes.filter((p) => p.kind === 'relay' && runningProcess(m, p));
  if (relays.length) {
    for (const p of relays) host.signal(p.pid!, 'SIGTERM');
    const left = await host.waitGone(
      relays.map((p) => p.pid!),
      RELAY_STOP_TIMEOUT_MS,
    );
    const stopped = relays.filter((p) => !left.includes(p.pid!)).map((p) => p.name);
    if (stopped.length) out(`stopped ${stopped.join(', ')} (SIGTERM: deregistered, links removed)`);
  }

  await killAll(m, namespaces, out);
  for (const ns of [...namespaces].reverse()) if (await host.deleteNetns(ns)) out(`deleted namespace ${ns}`);
  for (const f of host.wgSocketNames().filter((f) => isSimWgSocket(m.wgPrefix, f))) {
    rmSync(join(host.WG_SOCKET_DIR, f), { force: true });
    out(`removed ${join(host.WG_SOCKET_DIR, f)}`);
  }
  removeSimFiles(dir, o.purge);
  out(o.purge ? `removed ${dir}'s sim files and logs` : `removed the sim's files; logs kept in ${dir}`);
}

/**
 * SIGTERM, then SIGKILL, every recorded process that still runs and every process in the sim's
 * namespaces, until none is left (or throw). Enumerated again each round: a control plane stopped while it
 * starts may spawn its Deno workers after the first look, and a namespace deleted with a process
 * still in it lives on, unnamed, with that process.
 */
async function killAll(m: Manifest, namespaces: string[], out: Out): Promise<void> {
  const seen = new Map<number, string>();
  const killed = new Set<number>();
  const deadline = Date.now() + 3 * KILL_WAIT_MS;
  for (let round = 0; ; round++) {
    const live = new Map<number, string>();
    for (const p of m.processes) if (runningProcess(m, p)) live.set(p.pid!, `${p.name} (pid ${p.pid})`);
    for (const ns of namespaces) {
      for (const pid of await host.netnsPids(ns)) if (!live.has(pid) && host.isRunning(pid)) live.set(pid, `${host.processName(pid)} (pid ${pid}) in ${ns}`);
    }
    for (const [pid, what] of live) if (!seen.has(pid)) seen.set(pid, what);
    if (live.size === 0 || Date.now() > deadline) {
      for (const [pid, what] of seen) out(`${live.has(pid) ? 'could not kill' : killed.has(pid) ? 'killed' : 'stopped'} ${what}`);
      // Deleting a namespace would hide what is left in it: keep it, and the manifest, for another try.
      if (live.size) throw new Error(`${live.size} process(es) of the sim could not be killed; nothing else was removed, run 'relay-core sim down' again`);
      return;
    }
    const sig = round === 0 ? 'SIGTERM' : 'SIGKILL';
    for (const pid of live.keys()) if (host.signal(pid, sig) && sig === 'SIGKILL') killed.add(pid);
    await host.waitGone([...live.keys()], round === 0 ? KILL_WAIT_MS : 1_000);
  }
}

const SIM_PATHS = ['relays', 'clients', 'web', 'control-plane', 'nats', 'service-role.key'];

/** The sim's files in `dir` (never anything else there), logs only with `purge`; the manifest last. */
function removeSimFiles(dir: string, purge: boolean): void {
  for (const p of SIM_PATHS) removeTree(join(dir, p), purge);
  rmSync(manifestPath(dir), { force: true });
}

function removeTree(path: string, purge: boolean): void {
  let st: Stats;
  try {
    st = statSync(path);
  } catch {
    return;
  }
  if (purge) {
    rmSync(path, { recursive: true, force: true });
  } else if (st.isDirectory()) {
    for (const e of readdirSync(path)) removeTree(join(path, e), purge);
    if (readdirSync(path).length === 0) rmdirSync(path);
  } else if (!path.endsWith('.log')) {
    rmSync(path, { force: true });
  }
}

// ---------------------------------------------------------------------------------------------

function logTail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return `(no log at ${file})`;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
