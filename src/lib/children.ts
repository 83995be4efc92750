import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

const live = new Set<ChildProcess>();
let exitHook = false;

/**
 * Spawn a child this process stops itself, in order: in a process group of its own, so a terminal's
 * Ctrl-C (SIGINT to the foreground group) reaches only this process, which then stops its children
 * as it means to (relays deregister while the control plane is still up, then the control plane, then
 * NATS). Whatever is still running when this process exits is killed.
 */
export function spawnOwned(command: string, args: readonly string[], opts: SpawnOptions): ChildProcess {
  const child = spawn(command, args, { ...opts, detached: true });
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
