import { execa } from 'execa';
import { eventually, RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';

/** `relay-core sim <args> --state-dir DIR` through the real CLI, bounded, never throwing on an exit code. */
export const simCli =
  (dir: string) =>
  (args: string[], timeoutMs = 120_000) =>
    execa(RELAY_CORE_BIN, ['sim', ...args, '--state-dir', dir], { reject: false, timeout: timeoutMs });

/** `sim status --json`, parsed as the caller's view of it. */
export async function simStatus<S>(dir: string): Promise<S> {
  const r = await simCli(dir)(['status', '--json'], 30_000);
  if (r.exitCode !== 0) throw new Error(`sim status failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as S;
}

/** Poll `sim status` until `ok` holds (bounded); returns that status. */
export const statusUntil = <S>(dir: string, what: string, ok: (s: S) => boolean, timeoutMs = 60_000) =>
  eventually(
    what,
    async () => {
      const s = await simStatus<S>(dir);
      return ok(s) ? s : null;
    },
    timeoutMs,
    500,
  );
