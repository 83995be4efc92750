import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../src/lib/ports.ts';

/**
 * A real, throwaway PostgreSQL cluster for integration tests: Debian's PostgreSQL 15 (`initdb` and
 * `pg_ctl` from /usr/lib/postgresql/15/bin, or RELAYNET_PG_BIN), run as the `postgres` user when the
 * tests run as root, in a fresh temp directory, on a free 127.0.0.1 port, trust authentication, no
 * fsync. `stop()` stops it and removes the directory; so does process exit, should a test crash.
 *
 * Missing binaries are an error, never a skip: install them with
 * `apt-get install --no-install-recommends postgresql` (scripts/setup.sh does).
 */
export interface TestPostgres {
  url: string;
  port: number;
  dir: string;
  stop(): Promise<void>;
}

const PREFERRED = '15';

export function findPgBin(): string {
  if (process.env.RELAYNET_PG_BIN) return process.env.RELAYNET_PG_BIN;
  const root = '/usr/lib/postgresql';
  const preferred = join(root, PREFERRED, 'bin');
  if (existsSync(join(preferred, 'initdb'))) return preferred;
  const others = existsSync(root)
    ? readdirSync(root)
        .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (others[0]) return join(root, others[0], 'bin');
  throw new Error(
    `PostgreSQL server binaries not found (looked for ${preferred}/initdb). The integration tests run against a real PostgreSQL: ` +
      `install it with 'apt-get install --no-install-recommends postgresql' (scripts/setup.sh does), or set RELAYNET_PG_BIN to a directory with initdb and pg_ctl.`,
  );
}

const asRoot = () => process.getuid?.() === 0;

function run(bin: string, args: string[], timeout = 60_000): SpawnSyncReturns<string> {
  const [cmd, argv] = asRoot() ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
  return spawnSync(cmd, argv, { encoding: 'utf8', timeout, env: { ...process.env, LC_ALL: 'C', LANG: 'C' } });
}

function check(r: SpawnSyncReturns<string>, what: string, logFile?: string): void {
  if (r.status === 0) return;
  let log = '';
  try {
    if (logFile) log = readFileSync(logFile, 'utf8').slice(-2000);
  } catch {
    /* no log */
  }
  throw new Error(
    `${what} failed (${r.error?.message ?? `exit ${r.status}`}): ${(r.stderr || r.stdout || '').slice(-2000)}${log ? `\nserver log:\n${log}` : ''}`,
  );
}

const clusters = new Set<{ pgCtl: string; data: string; dir: string }>();
let exitHook = false;

function teardown(c: { pgCtl: string; data: string; dir: string }): void {
  if (existsSync(join(c.data, 'postmaster.pid'))) run(c.pgCtl, ['stop', '-D', c.data, '-m', 'immediate', '-w', '-t', '20'], 30_000);
  rmSync(c.dir, { recursive: true, force: true });
  clusters.delete(c);
}

export async function startTestPostgres(): Promise<TestPostgres> {
  const bin = findPgBin();
  const initdb = join(bin, 'initdb');
  const pgCtl = join(bin, 'pg_ctl');
  if (asRoot() && spawnSync('id', ['-u', 'postgres']).status !== 0) {
    throw new Error("running as root, but there is no 'postgres' user to run PostgreSQL as (the postgresql package creates it)");
  }
  const dir = mkdtempSync(join(tmpdir(), 'relay-core-pg-'));
  const c = { pgCtl, data: join(dir, 'data'), dir };
  clusters.add(c);
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const k of [...clusters]) teardown(k);
    });
  }
  try {
    if (asRoot()) {
      const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim());
      const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
      chownSync(dir, uid, gid);
    }
    const superuser = asRoot() ? 'postgres' : userInfo().username;
    check(run(initdb, ['-D', c.data, '-A', 'trust', '-U', superuser, '-E', 'UTF8', '--locale=C', '--no-sync']), 'initdb');
    const logFile = join(dir, 'postgres.log');
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      const opts = `-c listen_addresses=127.0.0.1 -p ${port} -k ${dir} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100`;
      const r = run(pgCtl, ['start', '-D', c.data, '-l', logFile, '-w', '-t', '60', '-o', opts], 90_000);
      try {
        check(r, 'pg_ctl start', logFile);
      } catch (e) {
        lastError = e;
        continue;
      }
      return {
        url: `postgres://${superuser}@127.0.0.1:${port}/postgres`,
        port,
        dir,
        stop: async () => teardown(c),
      };
    }
    throw lastError;
  } catch (e) {
    teardown(c);
    throw e;
  }
}
