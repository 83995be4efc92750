import { createServer, request, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../lib/logger.ts';
import { verifyJwt } from './jwt.ts';
import type { ControlPlaneMetrics } from './metrics.ts';

/** Bodies larger than this are refused at the gateway; functions apply their own, smaller limit (16 KiB). */
export const GATEWAY_MAX_BODY = 1024 * 1024;
/**
 * How long an idle client connection stays open (Supabase's gateway keeps them 60 s). Node's default, 5 s,
 * races a relay's heartbeat every 10 s: the client reuses a connection the gateway is closing, and the
 * call fails with "other side closed" (hundreds of failed heartbeats in bench:fleet at N=500, where a
 * busy relay process checks a connection's age late). The answer's `Keep-Alive: timeout=` says it.
 */
export const GATEWAY_KEEP_ALIVE_MS = 65_000;
/** How long a function may take to answer (Supabase's wall-clock limit is 150 s). */
export const GATEWAY_TIMEOUT_MS = 150_000;

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host']);

function forwardable(h: IncomingHttpHeaders): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) if (!HOP_BY_HOP.has(k) && v !== undefined) out[k] = v;
  return out;
}

function send(res: ServerResponse, status: number, body: Record<string, unknown>, close = false): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json', 'access-control-allow-origin': '*', ...(close ? { connection: 'close' } : {}) });
  res.end(JSON.stringify(body));
}

export interface Gateway {
  server: Server;
  port: number;
  url: string;
  stop(): Promise<void>;
}

/**
 * A Supabase-style API gateway for Edge Functions on 127.0.0.1: routes `/functions/v1/<name>[/...]`
 * to the function's Deno process (path `/<name>[/...]`, as Supabase strips `/functions/v1`), after
 * verifying the bearer JWT as Supabase's `verify_jwt` does (HS256 signature and exp; 401 JSON
 * otherwise). CORS preflights (OPTIONS) pass without a token, to the function, as on Supabase.
 * Unknown functions are 404; bodies over 1 MiB are refused; answers are streamed back.
 */
export async function startGateway(opts: {
  port: number;
  host?: string;
  jwtSecret: string;
  route: (name: string) => number | undefined;
  known: (name: string) => boolean;
  logger: Logger;
  /** Each answered request, by function (null: none), status code and duration. */
  metrics?: Pick<ControlPlaneMetrics, 'request'> | null;
}): Promise<Gateway> {
  const log = opts.logger.child({ component: 'gateway' });
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const started = performance.now();
    let fn: string | null = null;
    const metrics = opts.metrics;
    if (metrics) res.once('close', () => metrics.request(fn, res.statusCode, performance.now() - started));
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://gateway');
    } catch {
      return send(res, 400, { error: 'invalid_request', message: 'bad request URL' });
    }
    const m = /^\/functions\/v1\/([A-Za-z0-9_-]+)(\/.*)?$/.exec(url.pathname);
    if (!m || !opts.known(m[1]!)) {
      req.resume();
      return send(res, 404, { error: 'not_found', message: m ? `function ${m[1]} does not exist` : `no route for ${url.pathname.slice(0, 200)}` });
    }
    const name = m[1]!;
    fn = name;
    if (req.method === 'OPTIONS') return forward(req, res, name, m[2] ?? '', url);
    const bearer = /^Bearer +(\S+)$/i.exec((req.headers.authorization ?? '').trim());
    const check = bearer
      ? verifyJwt(bearer[1]!, opts.jwtSecret)
      : Promise.resolve({ ok: false as const, reason: 'missing authorization header (Bearer <JWT>)' });
    void check.then((c) => {
      if (c.ok) return forward(req, res, name, m[2] ?? '', url);
      req.resume();
      send(res, 401, { error: 'unauthorized', message: c.reason });
    });
  });
  /** Past the route and the token check: the body limit, then piping to the function's worker. */
  const forward = (req: IncomingMessage, res: ServerResponse, name: string, rest: string, url: URL): void => {
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > GATEWAY_MAX_BODY) {
      req.resume();
      res.once('finish', () => req.socket.destroySoon());
      send(res, 400, { error: 'invalid_request', field: 'body', message: `body is ${declared} bytes; the gateway limit is ${GATEWAY_MAX_BODY}` }, true);
      return;
    }
    const port = opts.route(name);
    if (!port) {
      req.resume();
      send(res, 503, { error: 'function_unavailable', message: `function ${name} is not running; retry shortly` });
      return;
    }
    const upstream = request(
      {
        host: '127.0.0.1',
        port,
        method: req.method,
        path: `/${name}${rest}${url.search}`,
        headers: { ...forwardable(req.headers), 'x-forwarded-for': req.socket.remoteAddress ?? '' },
        timeout: GATEWAY_TIMEOUT_MS,
      },
      (up) => {
        res.writeHead(up.statusCode ?? 502, forwardable(up.headers));
        up.pipe(res);
        up.on('error', () => res.destroy());
      },
    );
    upstream.on('timeout', () => {
      upstream.destroy();
      send(res, 504, { error: 'function_timeout', message: `function ${name} did not answer within ${GATEWAY_TIMEOUT_MS / 1000} s` });
    });
    upstream.on('error', (e) => {
      if (res.writableEnded) return;
      log.warn({ fn: name, err: e.message }, 'function unreachable');
      send(res, 503, { error: 'function_unavailable', message: `function ${name} is not answering; retry shortly` });
    });
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    let seen = 0;
    req.on('data', (c: Buffer) => {
      seen += c.length;
      if (seen > GATEWAY_MAX_BODY) {
        req.unpipe(upstream);
        upstream.destroy();
        req.resume();
        res.once('finish', () => req.socket.destroySoon());
        send(res, 400, { error: 'invalid_request', field: 'body', message: `body is over the gateway limit of ${GATEWAY_MAX_BODY} bytes` }, true);
      }
    });
    req.pipe(upstream);
  };
  server.keepAliveTimeout = GATEWAY_KEEP_ALIVE_MS;
  server.headersTimeout = 30_000;
  server.requestTimeout = GATEWAY_TIMEOUT_MS + 10_000;
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        new Error(
          e.code === 'EADDRINUSE'
            ? `port ${opts.port} on ${host} is already in use (choose another with --port, or 0 for any free port)`
            : e.code === 'EADDRNOTAVAIL'
              ? `${host} is not an address of this host (--host)`
              : `gateway: ${e.message}`,
        ),
      ),
    );
    server.listen(opts.port, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  let stopped: Promise<void> | null = null;
  return {
    server,
    port,
    // Listening on every address, it is still reached here on loopback.
    url: `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`,
    stop: () =>
      (stopped ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      })),
  };
}
