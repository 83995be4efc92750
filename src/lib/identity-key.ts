import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { KeyObject } from 'node:crypto';
import { generateSigningKeyPair, importPrivateKey, publicKeyOfSeed } from '../events/signing.ts';

/**
 * A relay's identity: an Ed25519 key pair, distinct from its WireGuard key (X25519 keys cannot sign).
 * The relay signs every event it publishes with it; the control plane records the public key at
 * admission and announces it in the relay's `RelayAdmitted` event, where every reader of the topology
 * stream learns it.
 */
export interface IdentityKey {
  /** base64 of the raw 32-byte public key. */
  publicKey: string;
  /** The private key, for signing; never serialised, never logged. */
  privateKey: KeyObject;
  created: boolean;
}

/**
 * Load the relay's identity key from `file` (base64 of the 32-byte Ed25519 seed), or generate one there
 * (mode 0600, directory 0700). Refuses a key file that others can read, like the WireGuard key.
 */
export function loadOrCreateIdentityKey(file: string): IdentityKey {
  let text: string | null = null;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (text !== null) {
    const mode = statSync(file).mode & 0o777;
    if (mode & 0o077) throw new Error(`${file} is readable by others (mode ${mode.toString(8)}); chmod 600 it`);
    const seed = text.trim();
    let privateKey: KeyObject;
    try {
      privateKey = importPrivateKey(seed);
    } catch {
      throw new Error(`${file}: not an identity key (base64 of a 32-byte Ed25519 seed)`);
    }
    return { publicKey: publicKeyOfSeed(seed), privateKey, created: false };
  }
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const kp = generateSigningKeyPair();
  writeFileSync(file, kp.seed + '\n', { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600);
  return { publicKey: kp.publicKey, privateKey: importPrivateKey(kp.seed), created: true };
}
