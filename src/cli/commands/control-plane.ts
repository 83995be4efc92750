import { resolve } from 'node:path';
import { CliError, intOpt, str, type Command } from '../args.ts';
import { redactUrl, startLocalControlPlane, type LocalControlPlane } from '../../control-plane/local.ts';
import { rootLogger } from '../../lib/logger.ts';
import { parseIpv4 } from '../../contract/topology.events.ts';

const usage = `Usage: relay-core control-plane [options]

Run the control plane on this machine as Supabase runs it: every Edge Function of supabase/functions
on the Deno runtime (one process each), behind a gateway that routes /functions/v1/<name> and
verifies JWTs like Supabase's verify_jwt, on an embedded Postgres (PGlite, data in STATE_DIR/pgdata)
or on a real PostgreSQL given by --db-url. Applies supabase/migrations on start. With --nats-url it
also runs the topology publisher (outbox to JetStream). Prints the URL, the service-role key, the
topology public key and the environment a relay needs; runs until SIGINT or SIGTERM, then stops
everything and exits 0.

Secrets (JWT secret, Ed25519 topology signing key) are generated on first start into
STATE_DIR/secrets.json (mode 0600) and reused; STATE_DIR/control-plane.json (0600) has the URL, the
service-role key, the topology public key, the database URL and the NATS servers;
STATE_DIR/service-role.key (0600) the service-role key alone, for relays' --token-file.

Options:                                                                       (environment)
  --port P                 gateway port (default 54321; 0 = any free port)
  --host ADDR              IPv4 address the gateway listens on (default 127.0.0.1;
                           0.0.0.0 for every address, as in a container)
  --state-dir DIR          secrets, embedded database, control-plane.json
                           (default ./.state/control-plane)
  --db-url URL             real PostgreSQL, e.g. postgres://user:pw@127.0.0.1:5432/db    SUPABASE_DB_URL
                           (default: embedded PGlite)
  --nats-url URL[,URL]     NATS servers handed to relays; starts the topology publisher  RELAYNET_NATS_SERVERS
                           (without it relays are told nats://127.0.0.1:4222 and no publisher runs)
  --nats-token TOKEN       NATS token for the publisher and handed to relays            RELAYNET_NATS_TOKEN
  --heartbeat-seconds N    heartbeat interval handed to relays, 1-3600 (default 10)
  -h, --help               show this help

Examples:
  relay-core control-plane --nats-url nats://127.0.0.1:4222
  relay-core control-plane --port 0 --db-url postgres://postgres@127.0.0.1:5432/postgres
  relay-core token mint --relay-id relay-a          # a scoped token for one relay`;

export function parseNatsUrls(s: string | undefined): string[] | undefined {
  if (s === undefined || s.trim() === '') return undefined;
  const urls = s.split(',').map((u) => u.trim()).filter(Boolean);
  for (const u of urls) {
    if (!/^(nats|tls|ws|wss):\/\/[^\s,]+$/.test(u)) throw new CliError(`--nats-url: ${JSON.stringify(u)} is not a NATS URL (nats://host:port)`, 2);
  }
  return urls;
}

export const command: Command = {
  name: 'control-plane',
  summary: 'run the local control plane',
  usage,
  options: {
    port: { type: 'string' },
    host: { type: 'string' },
    'state-dir': { type: 'string' },
    'db-url': { type: 'string' },
    'nats-url': { type: 'string' },
    'nats-token': { type: 'string' },
    'heartbeat-seconds': { type: 'string' },
  },
  async run(v, positionals) {
    if (positionals.length) throw new CliError(`unexpected argument ${JSON.stringify(positionals[0])}\n\n${usage}`, 2);
    const port = intOpt(v.port, 'port', 54321, 0, 65535);
    const host = str(v.host, 'host') ?? '127.0.0.1';
    if (parseIpv4(host) === null) throw new CliError(`--host ${host}: give an IPv4 address (127.0.0.1, 0.0.0.0)`, 2);
    const heartbeatSeconds = intOpt(v['heartbeat-seconds'], 'heartbeat-seconds', 10, 1, 3600);
    const stateDir = resolve(str(v['state-dir'], 'state-dir') ?? '.state/control-plane');
    const dbUrl = str(v['db-url'], 'db-url', 'SUPABASE_DB_URL') || undefined;
    if (dbUrl !== undefined && !/^postgres(ql)?:\/\//.test(dbUrl)) throw new CliError('--db-url must be a postgres:// or postgresql:// URL', 2);
    const natsServers = parseNatsUrls(str(v['nats-url'], 'nats-url', 'RELAYNET_NATS_SERVERS'));
    const natsToken = str(v['nats-token'], 'nats-token', 'RELAYNET_NATS_TOKEN') || null;
    const log = rootLogger({ component: 'relay-core' });

    // Signals are taken from the start, so ^C during startup still stops cleanly; a second one forces.
    let signalled: string | null = null;
    let wake: () => void = () => {};
    const stopRequested = new Promise<void>((r) => (wake = r));
    const onSignal = (sig: string) => {
      if (signalled) {
        process.stderr.write(`relay-core control-plane: ${sig} again, exiting now\n`);
        process.exit(130);
      }
      signalled = sig;
      wake();
    };
    const onInt = () => onSignal('SIGINT');
    const onTerm = () => onSignal('SIGTERM');
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
    try {
      let cp: LocalControlPlane;
      try {
        cp = await startLocalControlPlane({ stateDir, port, host, dbUrl, natsServers, natsToken, heartbeatSeconds, logger: log });
      } catch (e) {
        throw new CliError((e as Error).message, 1);
      }
      if (!signalled) {
        process.stdout.write(
          [
            'control plane running',
            `  URL (SUPABASE_URL)    ${cp.url}`,
            `  service-role key      ${cp.serviceRoleKey}`,
            `  topology public key   ${cp.topologyPublicKey}`,
            `  database              ${redactUrl(cp.dbUrl)}${dbUrl ? '' : ' (embedded PGlite)'}`,
            `  topology publisher    ${cp.publisher ? `on (${natsServers!.join(',')})` : 'off (no --nats-url)'}`,
            `  state directory       ${stateDir}`,
            '',
            'a relay needs (relay-core run):',
            `  SUPABASE_URL=${cp.url}`,
            `  RELAYNET_TOKEN=${cp.serviceRoleKey}`,
            `  RELAYNET_TOPOLOGY_KEY=${cp.topologyPublicKey}`,
            'or, instead of the service-role key, a token scoped to one relay:',
            `  RELAYNET_TOKEN=$(relay-core token mint --relay-id <relay-id> --state-dir ${stateDir})`,
            '',
            'stop with Ctrl-C (SIGINT) or SIGTERM',
            '',
          ].join('\n'),
        );
      }
      await stopRequested;
      log.info({ signal: signalled }, 'stopping');
      await cp.stop();
      process.stdout.write('control plane stopped\n');
      return 0;
    } finally {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
    }
  },
};
