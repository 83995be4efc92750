import { fromCallback } from 'xstate';
import type { RelayMachineEvent } from '../actors/relay.machine.ts';
import type { Logger } from '../lib/logger.ts';
import { ControlPlaneError, type ControlPlaneClient } from './control-plane-client.ts';
import type { RelayBusIdentity } from './bus-credential.ts';
import type { RelayMetrics } from './relay-metrics.ts';

/**
 * The heartbeat actor: calls `heartbeat` every interval and tells the relay actor the control plane's
 * revision. An unreachable control plane is logged and tolerated: the data plane does not depend on it.
 * Past half the lifetime of the relay's NATS user JWT, the heartbeat asks for a fresh one.
 */
export function heartbeatActor(
  client: ControlPlaneClient,
  logger: Logger,
  identity: Pick<RelayBusIdentity, 'renewalDue' | 'update'> | null = null,
  now = Date.now,
  metrics: Pick<RelayMetrics, 'heartbeat'> | null = null,
) {
  return fromCallback<RelayMachineEvent, { relayId: string; intervalSeconds: number }>(({ sendBack, input }) => {
    const log = logger.child({ actor: 'heartbeat' });
    const abort = new AbortController();
    let busy = false;
    let failing = false;
    const beat = async () => {
      if (busy) return;
      busy = true;
      const started = now();
      try {
        const renew = identity?.renewalDue(now()) ?? false;
        const r = await client.heartbeat(input.relayId, abort.signal, renew);
        metrics?.heartbeat(now() - started, 'ok');
        if (r.bus && identity) {
          identity.update(r.bus, now());
          log.info({ expiresAt: r.bus.expiresAt }, 'NATS credential renewed');
        } else if (renew) log.warn('asked for a fresh NATS credential and got none');
        if (failing) log.info('control plane reachable again');
        failing = false;
        if (!abort.signal.aborted) sendBack({ type: 'HEARTBEAT', response: r });
      } catch (e) {
        if (abort.signal.aborted) return;
        const notRegistered = e instanceof ControlPlaneError && e.status === 404;
        metrics?.heartbeat(now() - started, notRegistered ? 'not_registered' : 'failed');
        if (notRegistered) {
          sendBack({ type: 'HEARTBEAT_NOT_REGISTERED' });
        } else if (!failing) {
          failing = true;
          log.warn({ err: (e as Error).message }, 'heartbeat failed; will keep trying');
        }
      } finally {
        busy = false;
      }
    };
    const t = setInterval(() => void beat(), input.intervalSeconds * 1000);
    return () => {
      clearInterval(t);
      abort.abort();
    };
  });
}
