// HS256 JWT verification with WebCrypto (Deno and Node alike), and the role checks of
// docs/control-plane.md. No remote imports; pure apart from crypto.subtle.
import { base64UrlToBytes } from './base64.ts';
import { HttpError } from './http.ts';

/** Who is calling: the service role (anything) or a relay (only its own relay id). */
export type Principal = { role: 'service_role' } | { role: 'relay'; relayId: string };

const RELAY_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;
/** WebCrypto's key type, named portably (Node's types declare CryptoKey as a value only). */
type Key = Awaited<ReturnType<typeof crypto.subtle.importKey>>;

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

let cachedKey: { secret: string; key: Promise<Key> } | null = null;
function hmacKey(secret: string): Promise<Key> {
  if (cachedKey?.secret !== secret) {
    cachedKey = { secret, key: crypto.subtle.importKey('raw', enc.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify']) };
  }
  return cachedKey.key;
}

const unauthorized = (message: string) => new HttpError(401, 'unauthorized', message);

function decodeJson(part: string): unknown {
  const bytes = base64UrlToBytes(part);
  if (!bytes) throw unauthorized('malformed JWT');
  try {
    return JSON.parse(dec.decode(bytes));
  } catch {
    throw unauthorized('malformed JWT');
  }
}

/**
 * Verify an HS256 JWT (signature with `secret`, then `exp` and `nbf`) and return its claims.
 * Throws 401 for anything else. The signature is checked before the claims are looked at.
 */
export async function verifyHs256(token: string, secret: string, nowSeconds: number): Promise<Record<string, unknown>> {
  const parts = token.split('.');
  if (parts.length !== 3 || parts.some((p) => p.length === 0)) throw unauthorized('malformed JWT');
  const [h, p, s] = parts as [string, string, string];
  const header = decodeJson(h);
  if (typeof header !== 'object' || header === null || (header as { alg?: unknown }).alg !== 'HS256') throw unauthorized('JWT must be HS256');
  const sig = base64UrlToBytes(s);
  if (!sig) throw unauthorized('malformed JWT');
  const ok = await crypto.subtle.verify('HMAC', await hmacKey(secret), sig as Uint8Array<ArrayBuffer>, enc.encode(`${h}.${p}`));
  if (!ok) throw unauthorized('invalid JWT signature');
  const claims = decodeJson(p);
  if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) throw unauthorized('malformed JWT claims');
  const c = claims as Record<string, unknown>;
  if (c.exp !== undefined && (typeof c.exp !== 'number' || !Number.isFinite(c.exp))) throw unauthorized('malformed exp claim');
  if (typeof c.exp === 'number' && c.exp <= nowSeconds) throw unauthorized('JWT expired');
  if (c.nbf !== undefined && (typeof c.nbf !== 'number' || c.nbf > nowSeconds + 60)) throw unauthorized('JWT not yet valid');
  return c;
}

/** The principal a verified token's claims describe; 401 for roles this project does not serve. */
export function principalOf(claims: Record<string, unknown>): Principal {
  if (claims.role === 'service_role') return { role: 'service_role' };
  if (claims.role === 'relay') {
    if (typeof claims.exp !== 'number') throw unauthorized('relay token without exp');
    if (typeof claims.relay_id !== 'string' || !RELAY_ID.test(claims.relay_id)) throw unauthorized('relay token without a valid relay_id');
    return { role: 'relay', relayId: claims.relay_id };
  }
  const role = typeof claims.role === 'string' ? claims.role.slice(0, 64) : null;
  throw unauthorized(`role ${JSON.stringify(role)} may not call this function`);
}

/**
 * Verify `Authorization: Bearer <jwt>` against the project's JWT secret and return who is calling.
 * 401 for a missing, malformed, wrongly signed or expired token, or a role we do not serve.
 */
export async function authenticate(authorization: string | null, secret: string, nowSeconds: number): Promise<Principal> {
  if (!authorization) throw unauthorized('missing Authorization header');
  const m = /^Bearer +([^\s]+)$/i.exec(authorization.trim());
  if (!m) throw unauthorized('Authorization must be "Bearer <JWT>"');
  return principalOf(await verifyHs256(m[1]!, secret, nowSeconds));
}

/** 403 unless the principal may act for `relayId`. */
export function authorizeRelay(p: Principal, relayId: string): void {
  if (p.role === 'relay' && p.relayId !== relayId) {
    throw new HttpError(403, 'forbidden', `this token is bound to relay ${p.relayId}, not ${relayId}`);
  }
}
