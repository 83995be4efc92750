import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The control plane's topology key a relay trusts (docs/security.md, "Pinned topology key"). The key
 * the relay first trusted is saved in its state directory and pinned: a control plane that later hands
 * out another key is refused (the relay stops following the topology and says why) until the operator
 * re-pins (`relay-core run --repin-topology-key`) or pins a key explicitly (`--topology-key`).
 */
export const TOPOLOGY_KEY_FILE = 'topology-key.pub';

export type PinDecision =
  | { action: 'trust'; key: string; save: boolean; how: 'first-use' | 'pinned' | 'explicit' | 'repinned' }
  | { action: 'refuse'; pinned: string; offered: string; source: 'file' | 'explicit' };

/**
 * Which key to trust when the control plane offers `offered`: an explicit key (`--topology-key`,
 * `RELAYNET_TOPOLOGY_KEY`) must match it; else the saved one must, unless the operator re-pins; with
 * neither, the offered key is trusted on first use and saved. Pure.
 */
export function decidePin(p: { saved: string | null; explicit: string | null; offered: string; repin: boolean }): PinDecision {
  if (p.explicit) {
    if (p.explicit !== p.offered) return { action: 'refuse', pinned: p.explicit, offered: p.offered, source: 'explicit' };
    return { action: 'trust', key: p.offered, save: p.saved !== p.offered, how: 'explicit' };
  }
  if (p.saved === null) return { action: 'trust', key: p.offered, save: true, how: 'first-use' };
  if (p.saved === p.offered) return { action: 'trust', key: p.offered, save: false, how: 'pinned' };
  if (p.repin) return { action: 'trust', key: p.offered, save: true, how: 'repinned' };
  return { action: 'refuse', pinned: p.saved, offered: p.offered, source: 'file' };
}

/** The saved key (null when there is none yet). */
export function readPinnedKey(stateDir: string): string | null {
  const f = join(stateDir, TOPOLOGY_KEY_FILE);
  if (!existsSync(f)) return null;
  const k = readFileSync(f, 'utf8').trim();
  return k || null;
}

/** Save the key (0600, replaced atomically). */
export function savePinnedKey(stateDir: string, key: string): void {
  const f = join(stateDir, TOPOLOGY_KEY_FILE);
  writeFileSync(`${f}.new`, `${key}\n`, { mode: 0o600 });
  renameSync(`${f}.new`, f);
}

/** The error a relay stops following with when the control plane's key is not the pinned one. */
export class TopologyKeyRefused extends Error {
  readonly pinned: string;
  readonly offered: string;
  constructor(pinned: string, offered: string, source: 'file' | 'explicit', stateDir: string) {
    super(
      source === 'file'
        ? `the control plane signs the topology with key ${offered}, but this relay pinned ${pinned} (${join(stateDir, TOPOLOGY_KEY_FILE)}); ` +
            'not following a control plane with another key. If its key changed on purpose, restart once with --repin-topology-key'
        : `the control plane signs the topology with key ${offered}, but --topology-key / RELAYNET_TOPOLOGY_KEY pins ${pinned}; not following it`,
    );
    this.name = 'TopologyKeyRefused';
    this.pinned = pinned;
    this.offered = offered;
  }
}
