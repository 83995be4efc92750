import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';

// DER prefixes that wrap a raw 32-byte Ed25519 key as PKCS#8 (private) and SPKI (public).
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** An Ed25519 key pair as base64 of the raw 32-byte seed and public key (the form Deno's WebCrypto side uses too). */
export interface SigningKeyPair {
  seed: string;
  publicKey: string;
}

export function generateSigningKeyPair(): SigningKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const seed = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(PKCS8_PREFIX.length);
  const pub = publicKey.export({ format: 'der', type: 'spki' }).subarray(SPKI_PREFIX.length);
  return { seed: Buffer.from(seed).toString('base64'), publicKey: Buffer.from(pub).toString('base64') };
}

function rawKey(b64: string, what: string): Buffer {
  const raw = Buffer.from(b64, 'base64');
  if (raw.length !== 32 || raw.toString('base64') !== b64) throw new Error(`${what} must be base64 of 32 bytes`);
  return raw;
}

export function importPublicKey(b64: string): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, rawKey(b64, 'Ed25519 public key')]), format: 'der', type: 'spki' });
}

export function importPrivateKey(seedB64: string): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, rawKey(seedB64, 'Ed25519 seed')]), format: 'der', type: 'pkcs8' });
}

/** The base64 public key of a base64 Ed25519 seed. Throws on a malformed seed. */
export function publicKeyOfSeed(seedB64: string): string {
  const spki = createPublicKey(importPrivateKey(seedB64)).export({ format: 'der', type: 'spki' });
  return Buffer.from(spki.subarray(SPKI_PREFIX.length)).toString('base64');
}

/** Sign bytes; returns base64 signature. */
export function signBytes(key: KeyObject, data: Uint8Array): string {
  return sign(null, data, key).toString('base64');
}

/** Verify a base64 signature over bytes; false on any malformed input, never throws. */
export function verifyBytes(key: KeyObject, data: Uint8Array, signatureB64: string): boolean {
  try {
    const sig = Buffer.from(signatureB64, 'base64');
    if (sig.length !== 64) return false;
    return verify(null, data, key, sig);
  } catch {
    return false;
  }
}
