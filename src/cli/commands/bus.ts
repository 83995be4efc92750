import { jetstreamManager } from '@nats-io/jetstream';
import { CliError, requireStr, type Action } from '../args.ts';
import { authHint, busAuthOf, connectForReading, reexecInSim, simDir, withoutSim } from '../bus-options.ts';
import { STREAMS } from '../../contract/subjects.ts';
import { renderStreamStatus, streamStatusOf, type StreamStatus } from '../../bus/stream-status.ts';
import { inboxPrefixFor } from '../../contract/bus-auth.ts';
import { connectBus } from '../../bus/connection.ts';
import { bootstrapStreams, DEFAULT_STREAM_LIMITS } from '../../bus/streams.ts';
import { rootLogger } from '../../lib/logger.ts';

/** `relay-core bus bootstrap`: create the JetStream streams or update their limits (idempotent). */
export const bootstrap: Action = async (v) => {
  const servers = requireStr(v.natsUrl, 'nats-url', 'RELAYNET_NATS_SERVERS').split(',');
  const limits = {
    topologyMaxAgeSeconds: v.topologyMaxAge as number,
    topologyMaxBytes: v.topologyMaxBytes as number,
    relayMaxAgeSeconds: v.relayMaxAge as number,
    relayMaxBytes: v.relayMaxBytes as number,
    duplicateWindowSeconds: DEFAULT_STREAM_LIMITS.duplicateWindowSeconds,
    replicas: v.replicas as number,
  };
  const log = rootLogger({ component: 'bus-bootstrap' });
  let nc: Awaited<ReturnType<typeof connectBus>>;
  try {
    nc = await connectBus({
      servers,
      auth: busAuthOf(v, inboxPrefixFor({ kind: 'admin' })),
      name: 'relay-core bus bootstrap',
      logger: log,
      waitOnFirstConnect: false,
    });
  } catch (e) {
    throw new CliError(`cannot reach NATS at ${servers.join(',')}: ${authHint((e as Error).message)}`, 1);
  }
  try {
    const r = await bootstrapStreams(await jetstreamManager(nc, { timeout: 10_000 }), limits);
    for (const [name, what] of Object.entries(r)) process.stdout.write(`${name}: ${what}\n`);
  } catch (e) {
    // Credentials that may not administer streams (a relay's, the reader's) end here: a refused request or no answer.
    throw new CliError(
      `cannot create or update the streams: ${(e as Error).message} (only the administrator's credentials may: --nats-creds STATE_DIR/bus/admin.creds of the control plane)`,
      1,
    );
  } finally {
    await nc.close();
  }
  return 0;
};

/**
 * `relay-core bus status`: each stream's copies, leader and the state of its other copies, read with
 * the operator's reader credentials (or in a running sim with `--sim`). Exit 0 when every stream is
 * there and every copy current, 1 otherwise (said which).
 */
export const status: Action = async (v, ctx) => {
  const sim = simDir(v);
  if (sim !== null) return reexecInSim(sim, 'bus', withoutSim(ctx.argv).rest);
  const nc = await connectForReading(v, 'relay-core bus status');
  try {
    const jsm = await jetstreamManager(nc, { timeout: 10_000 });
    const streams: StreamStatus[] = [];
    const missing: string[] = [];
    for (const name of [STREAMS.topology, STREAMS.relay]) {
      try {
        streams.push(streamStatusOf(await jsm.streams.info(name)));
      } catch (e) {
        if (!/not found/i.test((e as Error).message)) throw new CliError(`cannot read stream ${name}: ${authHint((e as Error).message)}`, 1);
        missing.push(name);
      }
    }
    if (v.json) process.stdout.write(`${JSON.stringify({ streams, missing })}\n`);
    else {
      if (streams.length) process.stdout.write(`${renderStreamStatus(streams)}\n`);
      for (const name of missing) process.stdout.write(`${name}: no such stream (the control plane creates it at start; or relay-core bus bootstrap)\n`);
    }
    return missing.length === 0 && streams.every((s) => s.healthy) ? 0 : 1;
  } finally {
    await nc.close().catch(() => {});
  }
};
