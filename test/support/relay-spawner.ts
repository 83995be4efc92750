import { join } from 'node:path';
import type { LocalControlPlane } from '../../src/control-plane/local.ts';
import type { RelayProcess } from '../../src/devnet/relay-process.ts';

type RelayOptions = ConstructorParameters<typeof RelayProcess>[0];

/**
 * `relay-core run` processes of a test against a local control plane: relay `id` with its state in
 * `dir`/id, endpoint 198.51.100.n:51820 (documentation addresses; the in-memory kernel sends nothing),
 * the service-role key and region `test` unless `extra` says otherwise.
 */
export function relayOptions(dir: string, cp: LocalControlPlane, id: string, n: number, extra: Partial<RelayOptions> = {}): RelayOptions {
  return {
    relayId: id,
    stateDir: join(dir, id),
    endpoint: `198.51.100.${n}:51820`,
    controlPlaneUrl: cp.url,
    token: cp.serviceRoleKey,
    region: 'test',
    ...extra,
  };
}
