import { chmodSync, rmSync } from 'node:fs';
import { createServer, request, type Server, type ServerResponse } from 'node:http';

/**
 * The relay's local status endpoint: HTTP on a unix socket in its state directory (mode 0600, so only
 * the relay's user reads it). `GET /status` answers the JSON `snapshot()` returns (or resolves to);
 * `GET /healthz` answers `health()` at once, without reading the kernel: the container health check
 * calls it every few seconds with curl (a `relay-core status` process there costs ~0.6 s of CPU).
 * `POST /<action>` runs one of `actions` (the operator's: `rotate-key`) and answers 202 with its result.
 */
export async function startStatusServer(
  socketPath: string,
  snapshot: () => unknown | Promise<unknown>,
  health: () => unknown = () => ({}),
  actions: Record<string, () => unknown> = {},
): Promise<Server> {
  rmSync(socketPath, { force: true });
  /** `status` with what `produce` gives, or 500 `failure` with the message it threw. */
  const answer = async (res: ServerResponse, status: number, failure: string, produce: () => unknown): Promise<void> => {
    let code = status;
    let body: string;
    try {
      body = JSON.stringify(await produce());
    } catch (e) {
      code = 500;
      body = JSON.stringify({ error: failure, message: (e as Error).message });
    }
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(body);
  };
  const srv = createServer(async (req, res) => {
    const action = req.url?.slice(1) ?? '';
    if (req.method === 'GET' && req.url === '/status') await answer(res, 200, 'status_failed', snapshot);
    else if (req.method === 'GET' && req.url === '/healthz') await answer(res, 200, 'health_failed', health);
    else if (req.method === 'POST' && Object.hasOwn(actions, action)) await answer(res, 202, 'action_failed', actions[action]!);
    else await answer(res, 404, 'not_found', () => ({ error: 'not_found' }));
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(socketPath, () => resolve());
  });
  chmodSync(socketPath, 0o600);
  srv.unref();
  return srv;
}

/** Read a relay's status over its socket; rejects with a clear message when no relay listens there. */
export function fetchStatus(socketPath: string, timeoutMs = 3_000): Promise<unknown> {
  return callStatusSocket(socketPath, 'GET', '/status', timeoutMs);
}

/** GET or POST `path` on a relay's status socket; the JSON answer (rejects with the relay's message on a 4xx or 5xx). */
export function callStatusSocket(socketPath: string, method: 'GET' | 'POST', path: string, timeoutMs = 3_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        let body: unknown;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch (e) {
          reject(new Error(`bad status answer from ${socketPath}: ${(e as Error).message}`));
          return;
        }
        // A refusal or a failure on the relay's side: its message, not a body the caller would misread.
        const status = res.statusCode ?? 0;
        if (status >= 400) {
          const b = body as { error?: unknown; message?: unknown };
          reject(new Error(`${method} ${path} on ${socketPath}: ${status} ${String(b?.message ?? b?.error ?? '')}`.trim()));
          return;
        }
        resolve(body);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${socketPath} in ${timeoutMs} ms`)));
    req.on('error', (e: NodeJS.ErrnoException) =>
      reject(new Error(e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? `no relay is running with status socket ${socketPath}` : e.message)),
    );
    req.end();
  });
}
