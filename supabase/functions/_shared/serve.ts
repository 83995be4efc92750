// The request pipeline every function shares: CORS preflight, method, configuration, JWT, body,
// structured errors and one JSON log line per request on stderr (no keys, no tokens). Pure apart
// from the injected environment getter and clock, so Node's unit tests drive it with fake handlers.
import { ConfigError, loadEnv, type EnvGetter, type FunctionEnv } from './env.ts';
import { errorResponse, HttpError, json, readJsonBody } from './http.ts';
import { authenticate, type Principal } from './jwt.ts';

export interface Ctx {
  fn: string;
  env: FunctionEnv;
  principal: Principal;
  body: Record<string, unknown>;
  requestId: string;
  /** Extra fields for this request's log line (relayId, action, revision, ...). */
  log: Record<string, unknown>;
}

export type Handler = (ctx: Ctx) => Promise<Response>;

export const CORS_HEADERS: Record<string, string> = {
  'access-control-allow-origin': '*',
  'access-control-allow-headers': 'authorization, x-client-info, apikey, content-type, x-request-id',
  'access-control-allow-methods': 'POST, OPTIONS',
  // A browser caller may read these (a 429's Retry-After, the request id of an error report).
  'access-control-expose-headers': 'retry-after, x-request-id',
};

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Errors of the database driver that mean "not reachable right now" (retry later), not a bug. */
function isUnavailable(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return (
    typeof code === 'string' &&
    /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|EPIPE|CONNECT_TIMEOUT|CONNECTION_CLOSED|CONNECTION_ENDED|CONNECTION_DESTROYED|57P01|57P03|53300)$/.test(
      code,
    )
  );
}

export interface ServeOptions {
  getEnv: EnvGetter;
  now?: () => number;
  /** Where log lines go (default console.error, i.e. stderr). */
  logLine?: (line: string) => void;
  /** The largest body this function takes (default MAX_BODY_BYTES, 16 KiB). */
  maxBodyBytes?: number;
}

export function serveFunction(fn: string, handler: Handler, opts: ServeOptions): (req: Request) => Promise<Response> {
  const now = opts.now ?? Date.now;
  const logLine = opts.logLine ?? ((l: string) => console.error(l));
  let env: FunctionEnv | null = null;
  return async (req) => {
    const started = now();
    const given = req.headers.get('x-request-id');
    const requestId = given && REQUEST_ID.test(given) ? given : crypto.randomUUID();
    const extra: Record<string, unknown> = {};
    let res: Response;
    let errText: string | undefined;
    try {
      if (req.method === 'OPTIONS') {
        res = new Response(null, { status: 204 });
      } else if (req.method !== 'POST') {
        throw new HttpError(405, 'method_not_allowed', `${fn} takes POST, not ${req.method}`);
      } else {
        env ??= loadEnv(opts.getEnv);
        const principal = await authenticate(req.headers.get('authorization'), env.jwtSecret, Math.floor(now() / 1000), env.jwtIssuer);
        extra.role = principal.role;
        const body = await readJsonBody(req, opts.maxBodyBytes);
        res = await handler({ fn, env, principal, body, requestId, log: extra });
      }
    } catch (e) {
      if (e instanceof HttpError) {
        res = errorResponse(e);
        if (e.status === 405) res.headers.set('allow', 'POST, OPTIONS');
        extra.error = e.code;
        if (e.field !== undefined) extra.field = e.field;
      } else if (e instanceof ConfigError) {
        errText = e.message;
        res = json(500, { error: 'internal', message: `the function is misconfigured: ${e.message}`, requestId });
        extra.error = 'misconfigured';
      } else if (isUnavailable(e)) {
        errText = `${(e as { code?: string }).code}: ${String((e as Error).message ?? e).slice(0, 300)}`;
        res = json(503, { error: 'unavailable', message: 'the database is not reachable; retry later', requestId });
        extra.error = 'unavailable';
      } else {
        errText = String((e as Error)?.stack ?? e).slice(0, 2000);
        res = json(500, { error: 'internal', message: 'internal error; see the function log', requestId });
        extra.error = 'internal';
      }
    }
    for (const [k, v] of Object.entries(CORS_HEADERS)) res.headers.set(k, v);
    res.headers.set('x-request-id', requestId);
    const level = res.status >= 500 ? 'error' : res.status >= 400 ? 'warn' : 'info';
    logLine(
      JSON.stringify({
        level,
        time: new Date(now()).toISOString(),
        fn,
        requestId,
        method: req.method,
        status: res.status,
        ms: Math.round(now() - started),
        ...extra,
        ...(errText ? { err: errText } : {}),
      }),
    );
    return res;
  };
}

/** A refusal of a decision as the HttpError the caller sees. */
export function refused(r: { status: number; error: string; message: string; field?: string }): HttpError {
  return new HttpError(r.status, r.error, r.message, r.field);
}
