import { readFileSync } from 'node:fs';
import { connect, credsAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../lib/logger.ts';

/**
 * How a party authenticates to NATS: a user JWT with its nkey (a `.creds` file's text, read again at
 * every reconnect, so a renewed JWT is used from the next connection on) and the inbox prefix its
 * permissions allow; or a shared token (token mode, an explicit choice); or nothing (a bus without
 * auth: tests of the bus itself only).
 */
export type BusAuth = { kind: 'creds'; creds: () => Uint8Array; inboxPrefix?: string } | { kind: 'token'; token: string } | { kind: 'none' };

/** The auth of a `.creds` file (the operator's reader or admin credentials, the publisher's). Throws when it cannot be read. */
export function credsFileAuth(file: string, inboxPrefix?: string): BusAuth {
  readFileSync(file); // fail now, with the path, rather than at connect
  return { kind: 'creds', creds: () => readFileSync(file), ...(inboxPrefix ? { inboxPrefix } : {}) };
}

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
  auth: BusAuth;
  name: string;
  logger: Logger;
  waitOnFirstConnect?: boolean;
}): Promise<NatsConnection> {
  const nc = await connect({
    servers: opts.servers,
    name: opts.name,
    ...(opts.auth.kind === 'token' ? { token: opts.auth.token } : {}),
    ...(opts.auth.kind === 'creds'
      ? { authenticator: credsAuthenticator(opts.auth.creds), ...(opts.auth.inboxPrefix ? { inboxPrefix: opts.auth.inboxPrefix } : {}) }
      : {}),
    waitOnFirstConnect: opts.waitOnFirstConnect ?? true,
    maxReconnectAttempts: -1,
    // A refused credential (expired, revoked while banned) is not the end: the relay renews its JWT
    // through the heartbeat, an unbanned relay gets a fresh one, and the next reconnect uses it.
    ignoreAuthErrorAbort: true,
    reconnectTimeWait: 500,
    reconnectJitter: 250,
    pingInterval: 5_000,
    maxPingOut: 2,
    // Without it nats.js builds two Errors (stack traces) for every request, every JetStream publish
    // among them, only to say where a failed one began: a relay publishes several events per topology
    // event. Failures still say what failed.
    noAsyncTraces: true,
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
