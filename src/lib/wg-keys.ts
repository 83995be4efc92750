import { readPrivateKeyFile, writeNewPrivateKeyFile } from './private-file.ts';
import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';

const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

/** A WireGuard key pair as `wg genkey` / `wg pubkey` print them (base64 of 32 bytes). */
export interface WgKeyPair {
  privateKey: string;
  publicKey: string;
}

export function generateWgKeyPair(): WgKeyPair {
  const { privateKey } = generateKeyPairSync('x25519');
  const raw = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(X25519_PKCS8_PREFIX.length);
  const priv = Buffer.from(raw).toString('base64');
  return { privateKey: priv, publicKey: wgPublicKey(priv) };
}

/** Derive the public key of a base64 WireGuard private key (what `wg pubkey` does). Throws on a malformed key. */
export function wgPublicKey(privateKeyB64: string): string {
  const raw = Buffer.from(privateKeyB64.trim(), 'base64');
  if (raw.length !== 32) throw new Error('WireGuard private key must be base64 of 32 bytes');
  const key = createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, raw]), format: 'der', type: 'pkcs8' });
  const spki = createPublicKey(key).export({ format: 'der', type: 'spki' });
  return Buffer.from(spki.subarray(spki.length - 32)).toString('base64');
}

/** Load a WireGuard key that must exist in `file` (refused as `loadOrCreateWgKey` refuses one others can read). */
export function loadWgKey(file: string): WgKeyPair {
  const privateKey = readPrivateKeyFile(file);
  if (privateKey === null) throw new Error('no such key file');
  return { privateKey, publicKey: wgPublicKey(privateKey) };
}

/**
 * Load the relay's WireGuard key from `file`, or generate one there (mode 0600, directory 0700).
 * Refuses a key file that others can read: the private key never leaves this host.
 */
export function loadOrCreateWgKey(file: string): WgKeyPair & { created: boolean } {
  const privateKey = readPrivateKeyFile(file);
  if (privateKey !== null) {
    return { privateKey, publicKey: wgPublicKey(privateKey), created: false };
  }
  const kp = generateWgKeyPair();
  writeNewPrivateKeyFile(file, kp.privateKey);
  return { ...kp, created: true };
}
