// Ed25519 signing of topology events with WebCrypto (Deno and Node alike). The key is the function
// secret RELAYNET_TOPOLOGY_SIGNING_KEY: base64 of the 32-byte seed. No remote imports.
import { base64ToBytes, base64UrlToBytes, bytesToBase64 } from '../../../src/contract/base64.ts';

/** DER prefix that wraps a raw 32-byte Ed25519 seed as PKCS#8. */
const PKCS8_PREFIX = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/** WebCrypto's key type, named portably (Node's types declare CryptoKey as a value only). */
type Key = Awaited<ReturnType<typeof crypto.subtle.importKey>>;

export interface SigningKey {
  privateKey: Key;
  /** base64 of the raw 32-byte public key (what relays get as `bus.topologySigningKey`). */
  publicKey: string;
}

/** Import the seed; throws a message naming the secret (never its value) when it is malformed. */
export async function importSigningKey(seedB64: string): Promise<SigningKey> {
  const seed = base64ToBytes(seedB64.trim());
  if (seed?.length !== 32) throw new Error('RELAYNET_TOPOLOGY_SIGNING_KEY must be base64 of a 32-byte Ed25519 seed');
  const der = new Uint8Array([...PKCS8_PREFIX, ...seed]);
  const extractable = await crypto.subtle.importKey('pkcs8', der, { name: 'Ed25519' }, true, ['sign']);
  const jwk = await crypto.subtle.exportKey('jwk', extractable);
  const pub = jwk.x ? base64UrlToBytes(jwk.x) : null;
  if (pub?.length !== 32) throw new Error('cannot derive the Ed25519 public key from RELAYNET_TOPOLOGY_SIGNING_KEY');
  const privateKey = await crypto.subtle.importKey('pkcs8', der, { name: 'Ed25519' }, false, ['sign']);
  return { privateKey, publicKey: bytesToBase64(pub) };
}

/** base64 Ed25519 signature over the UTF-8 bytes of `payload`. */
export async function signPayload(key: SigningKey, payload: string): Promise<string> {
  return bytesToBase64(new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' }, key.privateKey, new TextEncoder().encode(payload))));
}
