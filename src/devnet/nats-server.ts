import type { ChildProcess } from 'node:child_process';
import { spawnOwned } from '../lib/children.ts';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { natsResolverConfig } from '../contract/bus-auth.ts';
import { freePort, waitForPort } from '../lib/ports.ts';

/** A real `nats-server` with JetStream, started by us (devnet, tests, benchmarks). */
export interface NatsServer {
  url: string;
  port: number;
  storeDir: string;
  /** Stop the server (SIGTERM, then SIGKILL after 5 s). Idempotent. */
  stop(): Promise<void>;
  /** Start it again on the same port with the same store (JetStream data survives). */
  start(): Promise<void>;
  readonly running: boolean;
}

const NATS_BIN_CANDIDATES = ['/usr/sbin/nats-server', '/usr/bin/nats-server'];

export async function findNatsServer(): Promise<string> {
  const { access } = await import('node:fs/promises');
  for (const c of [process.env.NATS_SERVER_BIN, ...NATS_BIN_CANDIDATES]) {
    if (!c) continue;
    try {
      await access(c);
      return c;
    } catch {
      /* next */
    }
  }
  throw new Error("nats-server not found (looked in NATS_SERVER_BIN, /usr/sbin, /usr/bin); run 'npm run setup' (apt-get install nats-server)");
}

/**
 * Start `nats-server -js` on a free loopback port with its store under `dir`. The config sets a
 * max payload of 1 MiB so that oversize-event handling is ours to test, not the server's.
 * `authConf`: a control plane's nats-auth.conf (src/control-plane/bus-authority.ts): the server then
 * trusts that operator and admits only users with its JWTs (account JWTs kept under `dir`/jwt).
 * Without it the server admits anyone (or whoever has `token`, token mode): tests and benchmarks use
 * that only where they say why (bench/auth.ts's reference); the others run under auth (test/support/authed-nats.ts).
 */
export async function startNatsServer(
  dir: string,
  opts: { port?: number; onLog?: (line: string) => void; authConf?: string; token?: string; cluster?: ClusterMember } = {},
): Promise<NatsServer> {
  const bin = await findNatsServer();
  const port = opts.port ?? (await freePort());
  const storeDir = join(dir, 'jetstream');
  mkdirSync(storeDir, { recursive: true });
  const conf = join(dir, 'nats.conf');
  const auth: string[] = [];
  if (opts.authConf) {
    const resolverDir = join(dir, 'jwt');
    mkdirSync(resolverDir, { recursive: true });
    auth.push(readFileSync(opts.authConf, 'utf8'), natsResolverConfig(resolverDir));
  } else if (opts.token) {
    auth.push(`authorization { token: ${JSON.stringify(opts.token)} }`);
  }
  writeFileSync(
    conf,
    [
      `listen: 127.0.0.1:${port}`,
      `max_payload: 1048576`,
      `jetstream { store_dir: "${storeDir}", max_memory_store: 256MB, max_file_store: 8GB }`,
      ...(opts.cluster ? clusterConfig(opts.cluster) : []),
      ...auth,
    ].join('\n') + '\n',
    { mode: 0o600 },
  );
  let child: ChildProcess | null = null;

  async function start(): Promise<void> {
    if (child) return;
    const c = spawnOwned(bin, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    const onData = (b: Buffer) => opts.onLog?.(b.toString());
    c.stdout?.on('data', onData);
    c.stderr?.on('data', onData);
    const exited = new Promise<never>((_, reject) =>
      c.once('exit', (code) => reject(new Error(`nats-server exited with ${code} before listening on ${port}`))),
    );
    exited.catch(() => {});
    c.once('exit', () => {
      if (child === c) child = null;
    });
    await Promise.race([waitForPort(port, '127.0.0.1', 20_000), exited]);
  }

  async function stop(): Promise<void> {
    const c = child;
    if (!c) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => c.kill('SIGKILL'), 5_000);
      c.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      c.kill('SIGTERM');
    });
    child = null;
  }

  await start();
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir,
    stop,
    start,
    get running() {
      return child !== null;
    },
  };
}

/** What makes a server one node of a cluster: its name and the route ports of every node (its own included). */
export interface ClusterMember {
  cluster: string;
  serverName: string;
  routePort: number;
  routePorts: number[];
}

const clusterConfig = (m: ClusterMember): string[] => [
  `server_name: ${m.serverName}`,
  `cluster { name: ${m.cluster}, listen: 127.0.0.1:${m.routePort}, routes: [${m.routePorts.map((p) => `nats-route://127.0.0.1:${p}`).join(', ')}] }`,
];

/** A NATS cluster of real `nats-server` processes with JetStream on loopback, each node's store its own. */
export interface NatsCluster {
  nodes: NatsServer[];
  /** Every node's client URL: what relays and the control plane are given. */
  urls: string[];
  stop(): Promise<void>;
}

/**
 * Start `size` nodes of one JetStream cluster, node i in `dir`/n<i>, with the same options as
 * {@link startNatsServer} (auth included). JetStream elects its meta leader once a majority is up; the
 * first stream operations may wait for that (the control plane's publisher retries).
 */
export async function startNatsCluster(
  dir: string,
  size: number,
  opts: { onLog?: (node: number, line: string) => void; authConf?: string; token?: string; cluster?: string } = {},
): Promise<NatsCluster> {
  const routePorts: number[] = [];
  for (let i = 0; i < size; i++) routePorts.push(await freePort());
  const nodes = await Promise.all(
    routePorts.map((routePort, i) =>
      startNatsServer(join(dir, `n${i + 1}`), {
        ...(opts.authConf ? { authConf: opts.authConf } : {}),
        ...(opts.token ? { token: opts.token } : {}),
        ...(opts.onLog ? { onLog: (l: string) => opts.onLog!(i + 1, l) } : {}),
        cluster: { cluster: opts.cluster ?? 'relaynet', serverName: `nats-${i + 1}`, routePort, routePorts },
      }),
    ),
  );
  return { nodes, urls: nodes.map((n) => n.url), stop: async () => void (await Promise.all(nodes.map((n) => n.stop()))) };
}
