import { assertPrivate } from '../lib/private-file.ts';
import { createPublicKey, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateSigningKeyPair, importPrivateKey } from '../events/signing.ts';

/** What STATE_DIR/secrets.json (mode 0600) holds. */
export interface Secrets {
  jwtSecret: string;
  /** base64 32-byte Ed25519 seed (RELAYNET_TOPOLOGY_SIGNING_KEY). */
  topologySigningSeed: string;
}

export const SECRETS_FILE = 'secrets.json';

export function writePrivate(file: string, text: string): void {
  writeFileSync(file, text, { mode: 0o600 });
  chmodSync(file, 0o600);
}

export function topologyPublicKeyOf(seed: string): string {
  const spki = createPublicKey(importPrivateKey(seed)).export({ format: 'der', type: 'spki' });
  return Buffer.from(spki.subarray(spki.length - 32)).toString('base64');
}

/** A private JSON file: refused when others may read it or when it is not JSON. */
export function readPrivateJson<T>(file: string): Partial<T> {
  assertPrivate(file);
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Partial<T>;
  } catch (e) {
    throw new Error(`${file} is not valid JSON: ${(e as Error).message}`);
  }
}

/** Secrets are generated on first start in the state directory (0600) and reused afterwards. */
export function loadOrCreateSecrets(stateDir: string): Secrets {
  const file = join(stateDir, SECRETS_FILE);
  if (existsSync(file)) {
    const s = readPrivateJson<Secrets>(file);
    if (typeof s.jwtSecret !== 'string' || s.jwtSecret.length < 32) throw new Error(`${file}: jwtSecret must be a string of at least 32 characters`);
    try {
      topologyPublicKeyOf(String(s.topologySigningSeed));
    } catch {
      throw new Error(`${file}: topologySigningSeed must be base64 of a 32-byte Ed25519 seed`);
    }
    return { jwtSecret: s.jwtSecret, topologySigningSeed: s.topologySigningSeed! };
  }
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const s: Secrets = { jwtSecret: randomBytes(32).toString('base64url'), topologySigningSeed: generateSigningKeyPair().seed };
  writePrivate(file, JSON.stringify(s, null, 2) + '\n');
  return s;
}
