import { RelayConfigSchema, type RelayConfig } from '../../src/daemon/config.ts';

/**
 * A relay's configuration on the in-memory host, as a test or benchmark runs one in its own process:
 * no link ever goes stale or down (nobody answers a handshake there), observations hourly, no client
 * policy beyond the defaults. `over` gives the identity, the state directory and the services.
 */
export function inMemoryRelayConfig(
  over: Pick<RelayConfig, 'relayId' | 'name' | 'region' | 'endpoint' | 'stateDir' | 'controlPlaneUrl' | 'token' | 'topologyKey' | 'natsServers'> &
    Partial<RelayConfig>,
): RelayConfig {
  return RelayConfigSchema.parse({
    rotateKey: false,
    startMarginMs: 60_000,
    wgPrefix: 'f',
    keepaliveSeconds: 25,
    mtu: 1420,
    linkStaleAfterMs: 86_400_000,
    linkDownAfterMs: 86_400_000,
    observeIntervalMs: 3_600_000,
    kernelFullEveryMs: 300_000,
    resolveIntervalMs: 60_000,
    kernel: 'memory',
    wgImpl: 'auto',
    clientIdleAfterMs: 180_000,
    exitTableBase: 100_000,
    clientRulePriority: 20_000,
    clientSupernet: '100.96.0.0/11',
    clientDeny: [],
    clientAllow: [],
    serviceCidrs: [],
    clientPrefix6: null,
    exitIpv6: 'off',
    ...over,
  });
}
