import { jetstreamManager } from '@nats-io/jetstream';
import { CliError, intOpt, requireStr, type Command } from '../args.ts';
import { connectBus } from '../../bus/connection.ts';
import { bootstrapStreams, DEFAULT_STREAM_LIMITS } from '../../bus/streams.ts';
import { rootLogger } from '../../lib/logger.ts';

const usage = `Usage: relay-core bus bootstrap --nats-url URL[,URL] [limits]

Create the JetStream streams RELAYNET_TOPOLOGY (relaynet.topology.>) and RELAYNET_RELAY
(relaynet.relay.>), or update their limits. Idempotent: running it again changes nothing.
Relays and the topology publisher run the same bootstrap on start.

Options:
  --nats-url URL[,URL]        NATS servers                         RELAYNET_NATS_SERVERS
  --nats-token TOKEN          NATS token                           RELAYNET_NATS_TOKEN
  --topology-max-age S        seconds (default ${DEFAULT_STREAM_LIMITS.topologyMaxAgeSeconds})
  --topology-max-bytes B      bytes (default ${DEFAULT_STREAM_LIMITS.topologyMaxBytes})
  --relay-max-age S           seconds (default ${DEFAULT_STREAM_LIMITS.relayMaxAgeSeconds})
  --relay-max-bytes B         bytes (default ${DEFAULT_STREAM_LIMITS.relayMaxBytes})
  -h, --help                  show this help`;

export const command: Command = {
  name: 'bus',
  summary: 'event-bus administration',
  usage,
  options: {
    'nats-url': { type: 'string' },
    'nats-token': { type: 'string' },
    'topology-max-age': { type: 'string' },
    'topology-max-bytes': { type: 'string' },
    'relay-max-age': { type: 'string' },
    'relay-max-bytes': { type: 'string' },
  },
  async run(v, pos) {
    if (pos[0] !== 'bootstrap') throw new CliError(`unknown or missing subcommand '${pos[0] ?? ''}'\n\n${usage}`, 2);
    const servers = requireStr(v['nats-url'], 'nats-url', 'RELAYNET_NATS_SERVERS').split(',');
    const limits = {
      topologyMaxAgeSeconds: intOpt(v['topology-max-age'], 'topology-max-age', DEFAULT_STREAM_LIMITS.topologyMaxAgeSeconds, 1),
      topologyMaxBytes: intOpt(v['topology-max-bytes'], 'topology-max-bytes', DEFAULT_STREAM_LIMITS.topologyMaxBytes, 1024),
      relayMaxAgeSeconds: intOpt(v['relay-max-age'], 'relay-max-age', DEFAULT_STREAM_LIMITS.relayMaxAgeSeconds, 1),
      relayMaxBytes: intOpt(v['relay-max-bytes'], 'relay-max-bytes', DEFAULT_STREAM_LIMITS.relayMaxBytes, 1024),
      duplicateWindowSeconds: DEFAULT_STREAM_LIMITS.duplicateWindowSeconds,
    };
    const log = rootLogger({ component: 'bus-bootstrap' });
    let nc;
    try {
      nc = await connectBus({ servers, token: (v['nats-token'] as string | undefined) ?? process.env.RELAYNET_NATS_TOKEN ?? null, name: 'relay-core bus bootstrap', logger: log, waitOnFirstConnect: false });
    } catch (e) {
      throw new CliError(`cannot reach NATS at ${servers.join(',')}: ${(e as Error).message}`, 1);
    }
    try {
      const r = await bootstrapStreams(await jetstreamManager(nc), limits);
      for (const [name, what] of Object.entries(r)) process.stdout.write(`${name}: ${what}\n`);
    } finally {
      await nc.close();
    }
    return 0;
  },
};
