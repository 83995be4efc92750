import { join } from 'node:path';
import { execa } from 'execa';
import { CONTROL_PLANE_PORT, svcNamespace } from '../../src/sim/layout.ts';
import type { Manifest } from '../../src/sim/manifest.ts';

/**
 * Open and close `count` client sessions one after another on a running sim's control plane
 * (src/sim/session-loop.ts, run in the sim's service namespace). Resolves to the finished process:
 * the caller asserts its exit code and the count it printed.
 */
export function runSessionLoop(m: Manifest, opts: { entry: string; exits: string[]; count: number; timeoutMs: number; private?: boolean }) {
  return execa(
    'ip',
    [
      'netns',
      'exec',
      svcNamespace(m.simId),
      process.execPath,
      join(import.meta.dirname, '../../src/sim/session-loop.ts'),
      '--url',
      `http://127.0.0.1:${CONTROL_PLANE_PORT}`,
      '--token-file',
      m.controlPlane.serviceRoleKeyFile,
      '--entry',
      opts.entry,
      '--exit',
      opts.exits.join(','),
      '--count',
      String(opts.count),
      ...(opts.private ? ['--private'] : []),
    ],
    { reject: false, timeout: opts.timeoutMs },
  );
}
