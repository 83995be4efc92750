import { readPrivateKeyFile, writeNewPrivateKeyFile } from './private-file.ts';
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
  const seed = readPrivateKeyFile(file);
  if (seed !== null) {
    let privateKey: KeyObject;
    try {
      privateKey = importPrivateKey(seed);
    } catch {
      throw new Error(`${file}: not an identity key (base64 of a 32-byte Ed25519 seed)`);
    }
    return { publicKey: publicKeyOfSeed(seed), privateKey, created: false };
  }
  const kp = generateSigningKeyPair();
  writeNewPrivateKeyFile(file, kp.seed);
  return { publicKey: kp.publicKey, privateKey: importPrivateKey(kp.seed), created: true };
}
