import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

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

/**
 * Load the relay's WireGuard key from `file`, or generate one there (mode 0600, directory 0700).
 * Refuses a key file that others can read: the private key never leaves this host.
 */
export function loadOrCreateWgKey(file: string): WgKeyPair & { created: boolean } {
  let text: string | null = null;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (text !== null) {
    const mode = statSync(file).mode & 0o777;
    if (mode & 0o077) throw new Error(`${file} is readable by others (mode ${mode.toString(8)}); chmod 600 it`);
    const privateKey = text.trim();
    return { privateKey, publicKey: wgPublicKey(privateKey), created: false };
  }
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const kp = generateWgKeyPair();
  writeFileSync(file, kp.privateKey + '\n', { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600);
  return { ...kp, created: true };
}
