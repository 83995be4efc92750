/**
 * relay-core networks in containers, with testcontainers: NATS, the control plane, relays and stock
 * WireGuard clients on a Docker network the test creates. A user's test starts a network in a few lines:
 *
 *   const net = await testNetwork();
 *   const auth = await testBusAuthority();   // NATS decentralized auth: nats trusts it, the control plane holds it
 *   const nats = await new NatsContainer().withNetwork(net).withAuth(auth).start();
 *   const cp = await new ControlPlaneContainer().withNetwork(net).withNats(nats).withAuth(auth).start();
 *   const relays = await Promise.all(['relay-1', 'relay-2'].map((id) => new RelayContainer(id).withNetwork(net).withControlPlane(cp).start()));
 *
 * A relay container never holds the service-role key: the control plane's container mints it a scoped
 * relay token (role `relay`, bound to its id; `relay-core token mint`), as docker-compose.yml does.
 *
 * The images are built locally (scripts/docker-images.sh; scripts/docker-engine.sh starts an engine
 * where none runs). There is no registry here, so testcontainers' reaper (Ryuk, an image from a
 * registry) is off; every container and network this module makes carries the label
 * `relay-core.test=<run>` and `removeLabelled(run)` removes whatever a test left behind.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { AbstractStartedContainer, GenericContainer, Wait, type StartedNetwork, type StartedTestContainer } from 'testcontainers';
import type { RelayStatus } from '../../src/daemon/relay-status.ts';
import { loadOrCreateBusAuthority } from '../../src/control-plane/bus-authority.ts';

process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true';

const TAG = process.env.RELAY_CORE_IMAGE_TAG ?? 'dev';
export const IMAGES = {
  relay: `relay-core:${TAG}`,
  controlPlane: `relay-core-cp:${TAG}`,
  nats: `relay-core-nats:${TAG}`,
  /** Debian with wireguard-go, wireguard-tools, iproute2 and curl (scripts/docker-images.sh): nothing of relay-core. */
  base: 'relay-core-base:bookworm',
};

/** This process's run label: everything started here carries it. */
export const RUN = `rc-${randomUUID().slice(0, 8)}`;
const LABEL = 'relay-core.test';
const CP_STATE = '/var/lib/relay-core-cp';
const CP_PORT = 54321;
/** Where a relay container finds its scoped relay token (0600), as in docker-compose.yml. */
export const RELAY_TOKEN_FILE = '/run/relay-token/token';
/** The Docker engine's networks (scripts/docker-engine.sh): the containers' "internet", which relays must allow their clients (docs/security.md). */
const ENGINE_NETWORKS = '198.19.0.0/16';

let networks = 0;

/** A bridge network of its own (addresses from the engine's pool), labelled with this run. */
export async function testNetwork(): Promise<StartedNetwork> {
  const name = `${RUN}-net${++networks}`;
  const id = (await execa('docker', ['network', 'create', '--driver', 'bridge', '--label', `${LABEL}=${RUN}`, name])).stdout.trim();
  const stop = async () => {
    await execa('docker', ['network', 'rm', id], { reject: false });
    return {};
  };
  // withNetwork only asks for the name.
  return { getName: () => name, getId: () => id, stop, [Symbol.asyncDispose]: async () => void (await stop()) } as unknown as StartedNetwork;
}

/**
 * A container labelled with this run that joins one network under an alias, and only that network
 * (testcontainers' own aliases would also attach it to the default bridge: a second way around a tunnel).
 */
class RunContainer extends GenericContainer {
  protected readonly alias: string | null;

  constructor(image: string, alias: string | null) {
    super(image);
    this.alias = alias;
    this.withLabels({ [LABEL]: RUN });
  }

  override withNetwork(network: StartedNetwork): this {
    super.withNetwork(network);
    if (this.alias) this.createOpts.NetworkingConfig = { EndpointsConfig: { [network.getName()]: { Aliases: [this.alias] } } };
    return this;
  }

  /** NET_ADMIN and /dev/net/tun: enough for wireguard-go, ip and nft in the container's own namespace. */
  protected withTun(): this {
    this.withAddedCapabilities('NET_ADMIN');
    this.hostConfig.Devices = [{ PathOnHost: '/dev/net/tun', PathInContainer: '/dev/net/tun', CgroupPermissions: 'rwm' }];
    return this;
  }
}

/** Remove every container and network labelled with `run` (default: this process's). */
export async function removeLabelled(run = RUN): Promise<{ containers: number; networks: number }> {
  const ids = (await execa('docker', ['ps', '-aq', '--filter', `label=${LABEL}=${run}`])).stdout.split('\n').filter(Boolean);
  if (ids.length) await execa('docker', ['rm', '-f', '-v', ...ids], { reject: false });
  const nets = (await execa('docker', ['network', 'ls', '-q', '--filter', `label=${LABEL}=${run}`])).stdout.split('\n').filter(Boolean);
  if (nets.length) await execa('docker', ['network', 'rm', ...nets], { reject: false });
  return { containers: ids.length, networks: nets.length };
}

/** Fail with a message saying what to do when the engine or an image is missing. */
export async function requireImages(): Promise<void> {
  const info = await execa('docker', ['info', '--format', '{{.ServerVersion}}'], { reject: false, timeout: 10_000 });
  if (info.exitCode !== 0) throw new Error(`no Docker engine answers (${info.stderr.trim().split('\n').at(-1)}): run scripts/docker-engine.sh start`);
  for (const image of Object.values(IMAGES)) {
    const r = await execa('docker', ['image', 'inspect', image], { reject: false });
    if (r.exitCode !== 0) throw new Error(`image ${image} is missing: run scripts/docker-images.sh`);
  }
}

async function exec(c: StartedTestContainer, argv: string[], what: string): Promise<string> {
  const r = await c.exec(argv);
  if (r.exitCode !== 0) throw new Error(`${what}: ${argv.join(' ')} exited ${r.exitCode}: ${r.output.trim()}`);
  return r.stdout;
}

/** The IPv4 address of the container's network interface (the one its default route leaves by). */
async function networkAddress(c: StartedTestContainer, what: string): Promise<string> {
  const script = `dev=$(ip -4 -o route show default | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }'); ip -4 -o addr show dev "$dev" scope global | awk '{ split($4, a, "/"); print a[1]; exit }'`;
  const a = (await exec(c, ['sh', '-c', script], what)).trim();
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(a)) throw new Error(`${what}: no IPv4 address on its network interface (${JSON.stringify(a)})`);
  return a;
}

/** The claims of a JWT (the middle part), without verifying it: what a token says it is. */
export function jwtClaims(token: string): Record<string, unknown> {
  const payload = token.trim().split('.')[1];
  if (!payload) throw new Error('not a JWT');
  return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/**
 * From inside a relay container (`run` executes argv there): POST `body` as JSON to the control plane's
 * function `name` (SUPABASE_URL) with the token in RELAY_TOKEN_FILE; the HTTP status. The URL's host
 * name is pinned to `cpAddress` (curl --resolve), which the caller reads from the engine: the container's
 * resolver (Docker's embedded DNS) is not what these calls test, and twice in CI it left curl's lookup
 * of the control plane unanswered for 10 s (not reproduced in three runs of the suite alone).
 */
export async function callFunctionWithRelayToken(run: (argv: string[]) => Promise<string>, name: string, body: unknown, cpAddress: string): Promise<number> {
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(cpAddress)) throw new Error(`${name}: not an IPv4 address for the control plane (${JSON.stringify(cpAddress)})`);
  const script =
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the shell's parameter expansion (the URL's host:port)
    'hp=${SUPABASE_URL#*://}; hp=${hp%%/*}; ' +
    'curl -sS -o /dev/null -w "%{http_code}" --max-time 10 --resolve "$hp:$4" -X POST -H "Authorization: Bearer $(cat "$1")" ' +
    '-H "Content-Type: application/json" --data "$2" "$SUPABASE_URL/functions/v1/$3"';
  const status = (await run(['sh', '-c', script, 'call', RELAY_TOKEN_FILE, JSON.stringify(body), name, cpAddress])).trim();
  if (!/^\d{3}$/.test(status)) throw new Error(`${name}: no HTTP status (${JSON.stringify(status)})`);
  return Number(status);
}

/** Paths in a container (outside /proc and /sys) of files that hold the service-role key or the JWT secret. */
export const SECRET_FILE_SEARCH = [
  'find',
  '/',
  '(',
  '-path',
  '/proc',
  '-o',
  '-path',
  '/sys',
  ')',
  '-prune',
  '-o',
  '(',
  '-name',
  'service-role.key',
  '-o',
  '-name',
  'secrets.json',
  ')',
  '-print',
];

// ---------------------------------------------------------------------------------------------------

/** A control plane's bus authority, made on the host for one test network: nats-server trusts its conf, the control plane gets its seeds. */
export interface TestBusAuthority {
  conf: string;
  authorityJson: string;
}

export async function testBusAuthority(): Promise<TestBusAuthority> {
  const dir = mkdtempSync(join(tmpdir(), 'rc-bus-'));
  try {
    const b = await loadOrCreateBusAuthority(dir);
    return { conf: readFileSync(b.authConf, 'utf8'), authorityJson: readFileSync(join(b.dir, 'authority.json'), 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export class NatsContainer extends RunContainer {
  constructor(alias = 'nats', image = IMAGES.nats) {
    super(image, alias);
    this.withWaitStrategy(Wait.forHealthCheck()).withStartupTimeout(60_000);
  }

  /** NATS decentralized auth: trust this authority's operator (docker/nats-entrypoint.sh reads /auth/nats-auth.conf). */
  withAuth(a: TestBusAuthority): this {
    return this.withCopyContentToContainer([{ content: a.conf, target: '/auth/nats-auth.conf', mode: 0o644 }]);
  }

  override async start(): Promise<StartedNatsContainer> {
    return new StartedNatsContainer(await super.start(), this.alias!);
  }
}

/** A started container reached by other containers of its network under its alias. */
abstract class StartedAliasedContainer extends AbstractStartedContainer {
  protected readonly alias: string;

  constructor(c: StartedTestContainer, alias: string) {
    super(c);
    this.alias = alias;
  }
}

export class StartedNatsContainer extends StartedAliasedContainer {
  /** The URL other containers on its network use. */
  get url(): string {
    return `nats://${this.alias}:4222`;
  }
}

// ---------------------------------------------------------------------------------------------------

export class ControlPlaneContainer extends RunContainer {
  private readonly flags: string[] = ['--heartbeat-seconds', '2'];

  constructor(alias = 'control-plane', image = IMAGES.controlPlane) {
    super(image, alias);
    this.withWaitStrategy(Wait.forHealthCheck()).withStartupTimeout(120_000);
  }

  withNats(nats: StartedNatsContainer): this {
    this.flags.push('--nats-url', nats.url);
    return this;
  }

  /** The bus authority nats-server trusts (the control plane would otherwise make its own on first start). */
  withAuth(a: TestBusAuthority): this {
    return this.withCopyContentToContainer([{ content: a.authorityJson, target: `${CP_STATE}/bus/authority.json`, mode: 0o600 }]);
  }

  override async start(): Promise<StartedControlPlaneContainer> {
    this.withCommand(this.flags);
    return new StartedControlPlaneContainer(await super.start(), this.alias!);
  }
}

export class StartedControlPlaneContainer extends StartedAliasedContainer {
  /** SUPABASE_URL for containers on its network. */
  get url(): string {
    return `http://${this.alias}:${CP_PORT}`;
  }

  /** The service-role key the control plane generated (STATE_DIR/service-role.key, inside the container): the operator's, never a relay's. */
  async serviceRoleKey(): Promise<string> {
    return (await exec(this, ['cat', `${CP_STATE}/service-role.key`], 'control plane')).trim();
  }

  /** A scoped relay token for `relayId` (role `relay`, bound to that id), minted inside the container: the JWT secret stays there. */
  async relayToken(relayId: string, ttl = '1d'): Promise<string> {
    const argv = ['relay-core', 'token', 'mint', '--role', 'relay', '--relay-id', relayId, '--ttl', ttl, '--state-dir', CP_STATE];
    return (await exec(this, argv, 'control plane')).trim();
  }

  /** `relay-core client ARGS` run inside the control plane's container as the operator. */
  async client(args: string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
    const r = await this.exec([
      'relay-core',
      'client',
      ...args,
      '--control-plane-url',
      `http://127.0.0.1:${CP_PORT}`,
      '--token-file',
      `${CP_STATE}/service-role.key`,
    ]);
    return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
  }
}

// ---------------------------------------------------------------------------------------------------

export class RelayContainer extends RunContainer {
  private readonly flags: string[] = ['run', '--observe-interval', '1000'];

  readonly relayId: string;

  constructor(relayId: string, image = IMAGES.relay) {
    super(image, relayId);
    this.relayId = relayId;
    this.withTun()
      .withHostname(relayId)
      .withEnvironment({ RELAYNET_RELAY_ID: relayId, RELAYNET_LOG_LEVEL: 'info', RELAYNET_CLIENT_ALLOW: ENGINE_NETWORKS })
      .withWaitStrategy(Wait.forHealthCheck())
      .withStartupTimeout(120_000);
    // Namespaced sysctls are set at creation: /proc/sys is read-only in a container. The relay finds
    // them as it wants them (forwarding on, loose reverse-path filter) and changes nothing.
    this.hostConfig.Sysctls = { 'net.ipv4.ip_forward': '1', 'net.ipv4.conf.all.rp_filter': '2', 'net.ipv4.conf.default.rp_filter': '2' };
  }

  /** Register with this control plane, with a relay token it mints for this relay id (or `token`): a file, mode 0600. */
  withControlPlane(cp: StartedControlPlaneContainer, token?: string): this {
    this.withEnvironment({ SUPABASE_URL: cp.url, RELAYNET_TOKEN_FILE: RELAY_TOKEN_FILE });
    this.pendingToken = token ? Promise.resolve(token) : cp.relayToken(this.relayId);
    return this;
  }

  /** More `relay-core run` flags (e.g. link timing). */
  withRunFlags(...flags: string[]): this {
    this.flags.push(...flags);
    return this;
  }

  private pendingToken: Promise<string> | null = null;

  override async start(): Promise<StartedRelayContainer> {
    if (!this.pendingToken) throw new Error(`RelayContainer ${this.relayId}: withControlPlane(...) first`);
    this.withCopyContentToContainer([{ content: `${await this.pendingToken}\n`, target: RELAY_TOKEN_FILE, mode: 0o600 }]);
    this.withCommand(this.flags);
    return new StartedRelayContainer(await super.start(), this.relayId);
  }
}

export class StartedRelayContainer extends AbstractStartedContainer {
  readonly relayId: string;

  constructor(c: StartedTestContainer, relayId: string) {
    super(c);
    this.relayId = relayId;
  }

  /** What the relay believes (`relay-core status --json` inside the container). */
  async status(): Promise<RelayStatus> {
    return JSON.parse(await exec(this, ['relay-core', 'status', '--json'], this.relayId)) as RelayStatus;
  }

  /** This container's address on its network (the relay's public endpoint host). */
  address(): Promise<string> {
    return networkAddress(this, this.relayId);
  }

  /** The claims of the token the relay runs with (its RELAYNET_TOKEN_FILE), unverified. */
  async tokenClaims(): Promise<Record<string, unknown>> {
    return jwtClaims(await exec(this, ['cat', RELAY_TOKEN_FILE], this.relayId));
  }

  /** POST `body` to the control plane's function `name` (at `cpAddress`) from inside the container, with the relay's own token: the HTTP status. */
  callFunction(name: string, body: unknown, cpAddress: string): Promise<number> {
    return callFunctionWithRelayToken((argv) => exec(this, argv, this.relayId), name, body, cpAddress);
  }

  /** `wg show all dump` rows: device, then the peer's fields. */
  async wgPeers(): Promise<string[][]> {
    const out = await exec(this, ['wg', 'show', 'all', 'dump'], this.relayId);
    return out
      .trim()
      .split('\n')
      .map((l) => l.split('\t'))
      .filter((f) => f.length === 9);
  }

  /** SIGKILL the container (a crash: no deregistration, devices gone with its network namespace). */
  async crash(): Promise<void> {
    await execa('docker', ['kill', '--signal', 'KILL', this.getId()]);
  }

  /** `docker stop`: SIGTERM, so the relay deregisters and exits 0 (within `graceS`, else SIGKILL). */
  async stopGracefully(graceS = 20): Promise<number> {
    await execa('docker', ['stop', '--time', String(graceS), this.getId()]);
    return Number((await execa('docker', ['inspect', '--format', '{{.State.ExitCode}}', this.getId()])).stdout.trim());
  }

  /** Start the same container again (its state directory, and so its key, kept) and wait until healthy. */
  async startAgain(timeoutMs = 120_000): Promise<void> {
    await execa('docker', ['start', this.getId()]);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const health = (await execa('docker', ['inspect', '--format', '{{.State.Health.Status}}', this.getId()])).stdout.trim();
      if (health === 'healthy') return;
      if (Date.now() > deadline) throw new Error(`${this.relayId}: not healthy ${timeoutMs} ms after start (${health})`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** Ping `address` from inside the container; true if every one of `count` echoes came back. */
  async ping(address: string, count = 2): Promise<boolean> {
    return (await this.exec(['ping', '-n', '-q', '-c', String(count), '-W', '2', address])).exitCode === 0;
  }
}

// ---------------------------------------------------------------------------------------------------

/** A stock WireGuard client: Debian's wireguard-go and wireguard-tools, nothing of relay-core. */
export class WireGuardClientContainer extends RunContainer {
  constructor(name: string, image = IMAGES.base) {
    super(image, name);
    this.withTun().withHostname(name).withCommand(['sleep', 'infinity']);
  }

  override async start(): Promise<StartedWireGuardClientContainer> {
    return new StartedWireGuardClientContainer(await super.start());
  }
}

export class StartedWireGuardClientContainer extends AbstractStartedContainer {
  /** Bring the tunnel up from a wg-quick file (docker/wg-client-up.sh: what wg-quick does, and every
   *  route into the tunnel but the one to `entry`, an address or a name on the network). */
  async up(config: string, entry: string): Promise<void> {
    await this.copyFilesToContainer([
      { source: join(import.meta.dirname, '../../docker/wg-client-up.sh'), target: '/usr/local/bin/wg-client-up', mode: 0o755 },
    ]);
    await this.copyContentToContainer([{ content: config, target: '/etc/wireguard/wg0.conf', mode: 0o600 }]);
    await exec(this, ['wg-client-up', '/etc/wireguard/wg0.conf', entry], 'client up');
  }

  /** `curl URL` from the client: the body, or null when it fails (exit code and error in `error`). */
  async fetch(url: string, timeoutS = 5): Promise<{ body: string | null; error: string | null }> {
    const r = await this.exec(['curl', '-sS', '--max-time', String(timeoutS), url]);
    return r.exitCode === 0 ? { body: r.stdout, error: null } : { body: null, error: `curl exit ${r.exitCode}: ${r.stderr.trim()}` };
  }
}

// ---------------------------------------------------------------------------------------------------

/** The "internet" host: an HTTP server answering with the address each request came from. */
export class WhoamiContainer extends RunContainer {
  constructor(alias = 'web', image = IMAGES.relay) {
    super(image, alias);
    this.withEntrypoint([
      'node',
      '--disable-warning=ExperimentalWarning',
      '/opt/relay-core/src/sim/whoami.ts',
      '--listen',
      '0.0.0.0:8080',
      '--log',
      '/tmp/requests.jsonl',
    ])
      .withWaitStrategy(Wait.forSuccessfulCommand('curl -fsS -o /dev/null http://127.0.0.1:8080/'))
      .withStartupTimeout(60_000);
  }

  override async start(): Promise<StartedWhoamiContainer> {
    return new StartedWhoamiContainer(await super.start());
  }
}

export class StartedWhoamiContainer extends AbstractStartedContainer {
  /** Every source address that ever reached the server. */
  async remotes(): Promise<string[]> {
    const r = await this.exec(['cat', '/tmp/requests.jsonl']);
    if (r.exitCode !== 0) return [];
    return r.stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => (JSON.parse(l) as { remote: string }).remote);
  }

  address(): Promise<string> {
    return networkAddress(this, 'web');
  }
}
