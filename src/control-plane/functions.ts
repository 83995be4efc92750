import { spawnSync, type ChildProcess } from 'node:child_process';
import { spawnOwned } from '../lib/children.ts';
import { existsSync, readdirSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import type { Logger } from '../lib/logger.ts';
import { freePort } from '../lib/ports.ts';
import { DENO_BIN, DENO_DIR, FUNCTIONS_DIR } from './paths.ts';

export { DENO_BIN, DENO_DIR, FUNCTIONS_DIR };

/** The Edge Functions of the project: every directory of supabase/functions with an index.ts (not _shared). */
export function functionNames(dir = FUNCTIONS_DIR): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && !d.name.startsWith('_') && !d.name.startsWith('.') && existsSync(join(dir, d.name, 'index.ts')))
    .map((d) => d.name)
    .sort();
}

function requireDeno(): void {
  if (!existsSync(DENO_BIN)) throw new Error(`Deno not found at ${DENO_BIN}; run 'npm install' (the deno npm package ships it)`);
}

/**
 * Fetch the functions' `npm:` dependencies into DENO_DIR (what the first start would otherwise do),
 * so tests and first runs do not wait on the registry. Throws with Deno's output on failure.
 */
export function prefetchFunctionDeps(): void {
  requireDeno();
  const entries = functionNames().map((n) => join(n, 'index.ts'));
  const r = spawnSync(DENO_BIN, ['cache', '--quiet', ...entries], {
    cwd: FUNCTIONS_DIR,
    env: { ...process.env, DENO_DIR, NO_COLOR: '1', DENO_NO_UPDATE_CHECK: '1' },
    encoding: 'utf8',
    timeout: 300_000,
  });
  if (r.status !== 0) throw new Error(`deno cache failed (${r.error?.message ?? `exit ${r.status}`}): ${(r.stderr || r.stdout || '').slice(-2000)}`);
}

/** The parent's environment (PATH, proxies, CA bundles) without settings the runner sets itself. */
function inheritedEnv(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !/^(RELAYNET_|SUPABASE_|DENO_SERVE_ADDRESS$|DENO_DIR$|NODE_OPTIONS$)/.test(k)) out[k] = v;
  }
  return out;
}

/** Resolve when the function answers HTTP (a CORS preflight) on `port`. */
function probe(port: number, name: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, method: 'OPTIONS', path: `/${name}`, timeout: 2_000 }, (res) => {
      res.resume();
      resolve((res.statusCode ?? 500) < 500);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

const LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error', 'fatal']);

/** Route one line of a function's output into the logger (its request lines are JSON; others are not). */
function logLine(log: Logger, line: string): void {
  const t = line.trim();
  if (!t || /^Listening on /.test(t) || /^Download /.test(t)) return;
  if (t.startsWith('{')) {
    try {
      const j = JSON.parse(t) as Record<string, unknown>;
      const { level, time: _time, fn: _fn, ...rest } = j;
      const lvl = typeof level === 'string' && LEVELS.has(level) ? (level as 'info') : 'info';
      // Successful heartbeats are the bulk of the traffic, preflights are probes: debug.
      const quiet = lvl === 'info' && (_fn === 'heartbeat' || rest.method === 'OPTIONS');
      log[quiet ? 'debug' : lvl](rest, 'function request');
      return;
    } catch {
      // not JSON after all
    }
  }
  log.warn({ line: t.slice(0, 2000) }, 'function output');
}

export interface FunctionRunner {
  names: string[];
  /** Loopback port a function serves on right now (changes when it is restarted); undefined if down. */
  port(name: string): number | undefined;
  /** Process id of a function's Deno process right now; undefined if down. */
  pid(name: string): number | undefined;
  stop(): Promise<void>;
}

interface Running {
  name: string;
  port: number;
  child: ChildProcess;
  ready: boolean;
}

/**
 * RELAYNET_FUNCTIONS_INSPECT=fn=host:port[,fn=host:port]: run those functions with Deno's inspector on
 * that loopback address (a CPU profile of a function under load: bench/README.md). Anything else is refused.
 */
export function inspectTargets(spec: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (spec ?? '').split(',').filter(Boolean)) {
    const m = /^([a-z-]+)=(127\.0\.0\.1:\d{1,5})$/.exec(part);
    if (!m) throw new Error(`RELAYNET_FUNCTIONS_INSPECT: "${part}" is not fn=127.0.0.1:port`);
    out.set(m[1]!, m[2]!);
  }
  return out;
}

/**
 * Run each Edge Function in its own Deno process, as Supabase's edge runtime runs each in its own
 * worker: `deno run` of supabase/functions/<name>/index.ts with Deno.serve on a loopback port
 * (DENO_SERVE_ADDRESS), permissions for net, env and reading its code and dependency cache. Resolves
 * once every function answers HTTP. A function that dies is restarted (with backoff) and logged.
 */
export async function startFunctions(opts: { env: Record<string, string>; logger: Logger; startTimeoutMs?: number }): Promise<FunctionRunner> {
  requireDeno();
  const names = functionNames();
  if (!names.length) throw new Error(`no Edge Functions found in ${FUNCTIONS_DIR}`);
  const log = opts.logger.child({ component: 'edge-functions' });
  const running = new Map<string, Running>();
  const restarts = new Map<string, number[]>();
  let stopping = false;

  const inspect = inspectTargets(process.env.RELAYNET_FUNCTIONS_INSPECT);
  const launch = async (name: string): Promise<Running> => {
    const port = await freePort();
    const child = spawnOwned(
      DENO_BIN,
      [
        'run',
        '--no-prompt',
        '--allow-net',
        '--allow-env',
        `--allow-read=${FUNCTIONS_DIR},${DENO_DIR}`,
        ...(inspect.has(name) ? [`--inspect=${inspect.get(name)}`] : []),
        join(name, 'index.ts'),
      ],
      {
        cwd: FUNCTIONS_DIR,
        env: { ...inheritedEnv(), DENO_DIR, NO_COLOR: '1', DENO_NO_UPDATE_CHECK: '1', DENO_SERVE_ADDRESS: `tcp:127.0.0.1:${port}`, ...opts.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const flog = log.child({ fn: name, denoPid: child.pid });
    for (const stream of [child.stdout!, child.stderr!]) {
      let buf = '';
      stream.setEncoding('utf8');
      stream.on('data', (s: string) => {
        buf += s;
        for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
          logLine(flog, buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
        if (buf.length > 64 * 1024) {
          logLine(flog, buf);
          buf = '';
        }
      });
      stream.on('end', () => buf && logLine(flog, buf));
    }
    const r: Running = { name, port, child, ready: false };
    child.once('exit', (code, signal) => {
      if (running.get(name) === r) running.delete(name);
      if (stopping || !r.ready) return;
      flog.error({ code, signal }, 'Edge Function exited; restarting it');
      const now = Date.now();
      const recent = (restarts.get(name) ?? []).filter((t) => now - t < 60_000);
      restarts.set(name, [...recent, now]);
      const delay = Math.min(30_000, 250 * 2 ** recent.length);
      setTimeout(() => {
        if (stopping) return;
        launch(name)
          .then((again) => waitReady(again, 120_000))
          .catch((e) => flog.error({ err: (e as Error).message }, 'Edge Function restart failed'));
      }, delay).unref();
    });
    running.set(name, r);
    return r;
  };

  const waitReady = async (r: Running, timeoutMs: number): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (r.child.exitCode !== null || r.child.signalCode !== null) {
        throw new Error(`Edge Function ${r.name} exited during start (code ${r.child.exitCode ?? r.child.signalCode}); see the log above`);
      }
      if (await probe(r.port, r.name)) {
        r.ready = true;
        return;
      }
      if (Date.now() > deadline) throw new Error(`Edge Function ${r.name} did not answer within ${timeoutMs} ms`);
      await new Promise((res) => setTimeout(res, 100));
    }
  };

  const stop = async () => {
    stopping = true;
    await Promise.all(
      [...running.values()].map(
        ({ child }) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            const t = setTimeout(() => child.kill('SIGKILL'), 3_000);
            child.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
            child.kill('SIGTERM');
          }),
      ),
    );
    running.clear();
  };

  try {
    const started = await Promise.all(names.map((n) => launch(n)));
    await Promise.all(started.map((r) => waitReady(r, opts.startTimeoutMs ?? 120_000)));
  } catch (e) {
    await stop();
    throw e;
  }
  log.info({ functions: Object.fromEntries([...running.values()].map((r) => [r.name, r.port])) }, 'Edge Functions ready');
  return {
    names,
    port: (name) => {
      const r = running.get(name);
      return r?.ready ? r.port : undefined;
    },
    pid: (name) => running.get(name)?.child.pid,
    stop,
  };
}
