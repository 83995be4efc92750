import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync } from 'node:fs';

const live = new Set<ChildProcess>();
let exitHook = false;
/** util-linux's setpriv, to give a child a parent-death signal (Debian's is in /usr/bin). */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p)) ?? null;

/**
 * Spawn a child this process stops itself, in order: in a process group of its own, so a terminal's
 * Ctrl-C (SIGINT to the foreground group) reaches only this process, which then stops its children
 * as it means to (relays deregister while the control plane is still up, then the control plane, then
 * NATS). Whatever is still running when this process exits is killed; and should this process be
 * killed outright (SIGKILL, which no handler sees), the kernel kills its children too: they are started
 * through `setpriv --pdeathsig SIGKILL`, which sets the parent-death signal and then executes the
 * command itself (same process).
 */
export function spawnOwned(command: string, args: readonly string[], opts: SpawnOptions): ChildProcess {
  const child = SETPRIV
    ? spawn(SETPRIV, ['--pdeathsig', 'SIGKILL', '--', command, ...args], { ...opts, detached: true })
    : spawn(command, args, { ...opts, detached: true });
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
  return child;
}
