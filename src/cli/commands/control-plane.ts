import { join, resolve } from 'node:path';
import { CliError, str, type Action } from '../args.ts';
import { redactUrl, SERVICE_ROLE_KEY_FILE, startLocalControlPlane, type LocalControlPlane } from '../../control-plane/local.ts';
import { rootLogger } from '../../lib/logger.ts';
import { parseListen, type ListenAddress } from '../../lib/metrics-server.ts';
import { parseIpv4 } from '../../contract/topology.events.ts';

export function parseNatsUrls(s: string | undefined): string[] | undefined {
  if (s === undefined || s.trim() === '') return undefined;
  const urls = s
    .split(',')
    .map((u) => u.trim())
    .filter(Boolean);
  for (const u of urls) {
    if (!/^(nats|tls|ws|wss):\/\/[^\s,]+$/.test(u)) throw new CliError(`--nats-url: ${JSON.stringify(u)} is not a NATS URL (nats://host:port)`, 2);
  }
  return urls;
}

/** `relay-core control-plane`: the local control plane until SIGINT or SIGTERM. */
export const controlPlane: Action = async (v) => {
  const port = v.port as number;
  const host = v.host as string;
  if (parseIpv4(host) === null) throw new CliError(`--host ${host}: give an IPv4 address (127.0.0.1, 0.0.0.0)`, 2);
  const heartbeatSeconds = v.heartbeatSeconds as number;
  const stateDir = resolve(v.stateDir as string);
  const dbUrl = str(v.dbUrl) || undefined;
  if (dbUrl !== undefined && !/^postgres(ql)?:\/\//.test(dbUrl)) throw new CliError('--db-url must be a postgres:// or postgresql:// URL', 2);
  const natsServers = parseNatsUrls(str(v.natsUrl));
  const natsToken = str(v.natsToken) || null;
  let metricsListen: ListenAddress | null = null;
  try {
    metricsListen = str(v.metricsListen) ? parseListen(str(v.metricsListen)!) : null;
  } catch (e) {
    throw new CliError(`--metrics-listen: ${(e as Error).message}`, 2);
  }
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
      cp = await startLocalControlPlane({
        stateDir,
        port,
        host,
        dbUrl,
        natsServers,
        natsToken,
        natsUserTtlSeconds: v.natsUserTtl as number,
        natsAuthOut: str(v.natsAuthOut),
        heartbeatSeconds,
        receiptEpochSeconds: v.receiptEpoch as number | undefined,
        measureEverySeconds: (v.measureEvery as number | undefined) ?? 0,
        ...(v.settleAfter !== undefined ? { settleAfterSeconds: v.settleAfter as number } : {}),
        streamReplicas: v.streamReplicas as number,
        metricsListen,
        logger: log,
      });
    } catch (e) {
      throw new CliError((e as Error).message, 1);
    }
    if (!signalled) {
      const keyFile = join(stateDir, SERVICE_ROLE_KEY_FILE);
      process.stdout.write(
        [
          'control plane running',
          `  URL (SUPABASE_URL)    ${cp.url}`,
          // Never the key itself: this output ends up in logs (a service's journal, a container's
          // log, the sim's control-plane.log), which must hold no secret. Its file is 0600.
          `  service-role key      in ${keyFile} (mode 0600)`,
          `  topology public key   ${cp.topologyPublicKey}`,
          `  database              ${redactUrl(cp.dbUrl)}${dbUrl ? '' : ' (embedded PGlite)'}`,
          `  topology publisher    ${cp.publisher ? `on (${natsServers!.join(',')})` : 'off (no --nats-url)'}`,
          cp.bus
            ? `  event bus auth        NATS JWT: nats-server must include ${cp.bus.authConf}; operator credentials ${cp.bus.dir}/{reader,admin}.creds`
            : '  event bus auth        token (--nats-token)',
          `  state directory       ${stateDir}`,
          '',
          'a relay needs (relay-core run):',
          `  SUPABASE_URL=${cp.url}`,
          `  RELAYNET_TOKEN_FILE=${keyFile}`,
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
};
