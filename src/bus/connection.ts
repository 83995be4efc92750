import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../lib/logger.ts';

const connected = new WeakMap<NatsConnection, boolean>();

/** Whether a connection made by `connectBus` is connected right now (false while it reconnects). */
export const isBusConnected = (nc: NatsConnection): boolean => !nc.isClosed() && (connected.get(nc) ?? false);

/**
 * Connect to NATS and keep reconnecting for ever. With `waitOnFirstConnect` the call returns only once
 * a server answered, so a relay that boots while NATS is down waits (and logs) instead of failing.
 * Connection status changes are logged with the connection's name bound.
 */
export async function connectBus(opts: {
  servers: string[];
  token?: string | null;
  name: string;
  logger: Logger;
  waitOnFirstConnect?: boolean;
}): Promise<NatsConnection> {
  const nc = await connect({
    servers: opts.servers,
    name: opts.name,
    ...(opts.token ? { token: opts.token } : {}),
    waitOnFirstConnect: opts.waitOnFirstConnect ?? true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    reconnectJitter: 250,
    pingInterval: 5_000,
    maxPingOut: 2,
  });
  const log = opts.logger.child({ component: 'bus' });
  connected.set(nc, true);
  log.info({ server: nc.getServer() }, 'connected to NATS');
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') connected.set(nc, false);
      if (s.type === 'reconnect') connected.set(nc, true);
      switch (s.type) {
        case 'disconnect':
        case 'reconnect':
        case 'staleConnection':
          log.warn({ status: s.type, server: 'server' in s ? s.server : undefined }, `NATS ${s.type}`);
          break;
        case 'error':
          log.warn({ status: s.type, err: String(s.error) }, 'NATS error');
          break;
        default:
          break;
      }
    }
  })().catch(() => {});
  return nc;
}
