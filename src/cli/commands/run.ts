import { lookup } from 'node:dns/promises';
import { resolve } from 'node:path';
import { CliError, str, tokenOpt, type Action } from '../args.ts';
import { RelayConfigSchema } from '../../daemon/config.ts';
import { controlPlaneDenyCidrs } from '../../daemon/control-plane-deny.ts';
import { startRelayDaemon, type RelayDaemon } from '../../daemon/relay-daemon.ts';
import { formatIssues } from '../../contract/catalogue.ts';
import { rootLogger } from '../../lib/logger.ts';

/** `relay-core run`: the relay daemon until SIGTERM or SIGINT. */
export const run: Action = async (v) => {
  const relayId = str(v.relayId) ?? '';
  const token = tokenOpt(v);
  const nats = str(v.natsUrl);
  const controlPlaneUrl = str(v.controlPlaneUrl) ?? '';
  const list = (value: unknown) =>
    (str(value) ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  const deny = list(v.clientDeny);
  const allow = list(v.clientAllow);
  const prefix6 = v.clientPrefix6 as string;
  const cpDeny = await controlPlaneDenyCidrs(controlPlaneUrl, async (host) => (await lookup(host, { all: true })).map((a) => a.address));
  const parsed = RelayConfigSchema.safeParse({
    relayId,
    name: str(v.name) ?? relayId,
    region: v.region,
    endpoint: str(v.endpoint) ?? '',
    stateDir: resolve(str(v.stateDir) ?? `.state/relay-${relayId}`),
    controlPlaneUrl,
    token: token ?? '',
    topologyKey: str(v.topologyKey) ?? null,
    natsServers: nats
      ? nats
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
      : null,
    rotateKey: v.rotateKey === true,
    repinTopologyKey: v.repinTopologyKey === true,
    eventQueue: v.eventQueue,
    startMarginMs: v.startMarginMs,
    wgPrefix: v.wgPrefix,
    keepaliveSeconds: v.keepalive,
    mtu: v.mtu,
    linkStaleAfterMs: v.linkStaleAfter,
    linkDownAfterMs: v.linkDownAfter,
    observeIntervalMs: v.observeInterval,
    kernelFullEveryMs: v.kernelFullEvery,
    resolveIntervalMs: v.resolveInterval,
    kernel: v.kernel,
    wgImpl: v.wgImpl,
    clientIdleAfterMs: v.clientIdleAfter,
    exitTableBase: v.exitTableBase,
    clientRulePriority: v.clientRulePriority,
    clientSupernet: v.clientSupernet,
    clientDeny: [...new Set(deny)],
    clientAllow: [...new Set(allow)],
    serviceCidrs: cpDeny.cidrs,
    clientPrefix6: prefix6 === 'off' ? null : prefix6,
    exitIpv6: v.exitIpv6,
    metricsListen: str(v.metricsListen) ?? null,
  });
  if (!parsed.success) throw new CliError(`invalid configuration: ${formatIssues(parsed.error)}`, 2);
  const cfg = parsed.data;
  const logger = rootLogger({ relayId: cfg.relayId });
  if (cpDeny.warning) logger.warn({ controlPlaneUrl }, cpDeny.warning);
  let daemon: RelayDaemon;
  try {
    daemon = await startRelayDaemon(cfg, logger);
  } catch (e) {
    throw new CliError((e as Error).message, 1);
  }
  const onSignal = (sig: NodeJS.Signals) => {
    logger.info({ signal: sig }, 'signal received, draining');
    daemon.stop(sig);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  const code = await daemon.done;
  const st = daemon.status();
  if (code !== 0) process.stderr.write(`relay-core run: ${st.error ?? 'relay failed'}\n`);
  return code;
};
