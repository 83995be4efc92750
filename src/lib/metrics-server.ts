import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isIP } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from './logger.ts';

/** Where metrics are served: `--metrics-listen` as given. */
export interface ListenAddress {
  host: string;
  port: number;
}

/**
 * `--metrics-listen`: `PORT` (on 127.0.0.1), `ADDR:PORT` or `[IPV6]:PORT`. The address must be an IP
 * address (no name: what it binds must be what the operator read). Throws with what is wrong.
 */
export function parseListen(text: string): ListenAddress {
  const m = /^(?:(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):)?(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || !(port >= 0 && port <= 65535)) throw new Error(`metrics listen address "${text}": expected PORT, ADDR:PORT or [IPV6]:PORT`);
  const host = m[1] ?? m[2] ?? '127.0.0.1';
  if (isIP(host) === 0) throw new Error(`metrics listen address "${text}": "${host}" is not an IP address`);
  return { host, port };
}

export interface MetricsServer {
  server: Server;
  /** Where it listens (the port the OS chose for port 0). */
  address: ListenAddress;
  close(): Promise<void>;
}

/**
 * Serve `GET /metrics` in Prometheus's text format. `before` runs first at each scrape (to read what
 * the metrics are set from); `refuse` names why a peer address may not scrape (a client or a mesh
 * link: metrics are for the operator's network only), or null. Anything else is 404; a scrape whose
 * `before` or rendering fails is 500 with the message, logged.
 */
export async function startMetricsServer(opts: {
  listen: ListenAddress;
  registry: Registry;
  before?: () => Promise<void>;
  refuse?: (remoteAddress: string) => string | null;
  logger: Logger;
}): Promise<MetricsServer> {
  const log = opts.logger.child({ component: 'metrics' });
  let refused = 0;
  const server = createServer(async (req, res) => {
    const remote = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    const why = opts.refuse?.(remote) ?? null;
    if (why !== null) {
      refused++;
      if (refused === 1 || refused % 100 === 0) log.warn({ remote, reason: why, refused }, 'refused a metrics request');
      res.writeHead(403, { 'content-type': 'text/plain' }).end(`forbidden: ${why}\n`);
      return;
    }
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at /metrics\n');
      return;
    }
    try {
      await opts.before?.();
      const body = await opts.registry.metrics();
      res.writeHead(200, { 'content-type': opts.registry.contentType }).end(body);
    } catch (e) {
      log.error({ err: String(e) }, 'metrics scrape failed');
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${(e as Error).message}\n`);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`cannot serve metrics on ${opts.listen.host}:${opts.listen.port}: ${(e as Error).message}`)));
    server.listen(opts.listen.port, opts.listen.host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  log.info({ host: a.address, port: a.port }, 'serving metrics');
  return {
    server,
    address: { host: a.address, port: a.port },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
