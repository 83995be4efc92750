import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { Session } from 'node:inspector/promises';

/**
 * `f` under V8's CPU profiler, its profile written to `file` (a .cpuprofile: Chrome's DevTools opens
 * it, `node scripts/profile-top.ts` sums it), or just `f` when `file` is undefined.
 */
export async function withCpuProfile<T>(file: string | undefined, f: () => Promise<T>): Promise<T> {
  if (!file) return f();
  mkdirSync(dirname(file), { recursive: true });
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  try {
    return await f();
  } finally {
    const { profile } = await session.post('Profiler.stop');
    writeFileSync(file, JSON.stringify(profile));
    session.disconnect();
  }
}
