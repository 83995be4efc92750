import { rmSync } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { RelayIdSchema } from '../contract/envelope.ts';
import type { LogEntry, StoredMessage } from '../events/log.ts';
import type { ListenAddress } from '../lib/metrics-server.ts';
import type { Logger } from '../lib/logger.ts';
import { emptyDashboard, foldDashboard, type DashboardState } from './fold.ts';
import { DASHBOARD_PAGE } from './page.ts';

/** How often at most the page is sent the state again while events arrive. */
const PUSH_EVERY_MS = 250;
/** A comment line this often keeps idle connections (and proxies) open. */
const KEEPALIVE_MS = 15_000;
/** Pages open at once; more are refused (503). */
const MAX_PAGES = 64;

export interface DashboardSources {
  /** Every message of the streams as it arrives (topology from its start, the relay stream from `--since`), until `signal`. */
  messages(signal: AbortSignal): AsyncIterable<StoredMessage>;
  /** Decode and verify a message (a relay not yet admitted is waited for, briefly, by the caller's decoder). */
  decode(m: StoredMessage): Promise<LogEntry>;
  /** `relay-core replay --relay ID --to SEQ` as text. */
  replay(relayId: string, toSeq: number): Promise<string>;
}

export interface Dashboard {
  /** Where it serves: a TCP address, or the unix socket given. */
  address: ListenAddress | { socket: string };
  state(): DashboardState;
  /** Resolves when the streams end or fail (with the error), or after `close`. */
  done: Promise<void>;
  close(): Promise<void>;
}

/**
 * The operator's dashboard (docs/operations.md, "Dashboard"): folds the streams into a
 * `DashboardState` and serves `/` (the page), `/stream` (server-sent events: the state, at most every
 * 250 ms while it changes), `/state` (the state as JSON) and `/replay?relay=ID&to=SEQ` (a relay
 * replayed to a kernel round, as text). Read only: nothing it serves changes anything.
 */
export async function startDashboard(opts: { listen: ListenAddress | { socket: string }; sources: DashboardSources; logger: Logger }): Promise<Dashboard> {
  const log = opts.logger.child({ component: 'dashboard' });
  const state = emptyDashboard();
  const pages = new Set<ServerResponse>();
  let dirty = false;
  const snapshot = () => JSON.stringify({ now: Date.now(), state });
  const push = (res: ServerResponse, body: string) => res.write(`event: state\ndata: ${body}\n\n`);

  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://dashboard');
    if (req.method !== 'GET') return text(res, 405, 'only GET\n');
    if (url.pathname === '/') {
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'content-security-policy': "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
      });
      return res.end(DASHBOARD_PAGE);
    }
    if (url.pathname === '/state') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(snapshot());
    }
    if (url.pathname === '/stream') {
      if (pages.size >= MAX_PAGES) return text(res, 503, `at most ${MAX_PAGES} pages at once\n`);
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
      pages.add(res);
      res.on('close', () => pages.delete(res));
      push(res, snapshot());
      return;
    }
    if (url.pathname === '/replay') {
      const relay = url.searchParams.get('relay') ?? '';
      const to = Number(url.searchParams.get('to'));
      if (!RelayIdSchema.safeParse(relay).success) return text(res, 400, 'relay: not a relay id (a-z, 0-9 and -)\n');
      if (!Number.isSafeInteger(to) || to < 1) return text(res, 400, 'to: a relay-stream sequence (a positive integer)\n');
      try {
        return text(res, 200, await opts.sources.replay(relay, to));
      } catch (e) {
        log.warn({ err: String(e), relay, to }, 'replay failed');
        return text(res, 500, `replay failed: ${(e as Error).message}\n`);
      }
    }
    return text(res, 404, 'not found\n');
  });

  const abort = new AbortController();
  const done = (async () => {
    for await (const m of opts.sources.messages(abort.signal)) {
      foldDashboard(state, await opts.sources.decode(m));
      dirty = true;
    }
  })();
  done.catch((e) => log.error({ err: String(e) }, 'cannot read the streams'));
  const ticker = setInterval(() => {
    if (!dirty) return;
    dirty = false;
    const body = snapshot();
    for (const p of pages) push(p, body);
  }, PUSH_EVERY_MS);
  const keepalive = setInterval(() => {
    for (const p of pages) p.write(': keepalive\n\n');
  }, KEEPALIVE_MS);

  const listen = opts.listen;
  if ('socket' in listen) rmSync(listen.socket, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`cannot serve the dashboard on ${where(listen)}: ${(e as Error).message}`)));
    if ('socket' in listen) server.listen(listen.socket, () => resolve());
    else server.listen(listen.port, listen.host, () => resolve());
  });
  const a = server.address();
  const address = 'socket' in listen ? listen : { host: (a as AddressInfo).address, port: (a as AddressInfo).port };
  log.info({ address }, 'dashboard serving');
  let closing: Promise<void> | null = null;
  return {
    address,
    state: () => state,
    done,
    close: () =>
      (closing ??= (async () => {
        abort.abort();
        clearInterval(ticker);
        clearInterval(keepalive);
        for (const p of pages) p.end();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        await done.catch(() => {});
      })()),
  };
}

const where = (l: ListenAddress | { socket: string }) => ('socket' in l ? l.socket : `${l.host}:${l.port}`);

function text(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(body);
}
