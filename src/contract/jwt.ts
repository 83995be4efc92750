import { CompactSign, compactVerify, errors } from 'jose';

/**
 * HS256 JWTs as Supabase uses them (the service-role key, user tokens) and as relay-core scopes them
 * (relay tokens), signed and checked with jose. One module for both sides: the local gateway and
 * token minting (src/control-plane/jwt.ts, Node) and the Edge Functions (supabase/functions/_shared/
 * jwt.ts, Deno). Pure apart from WebCrypto; imports only jose.
 */

export type JwtCheck = { ok: true; claims: Record<string, unknown> } | { ok: false; reason: string };

const B64URL = /^[A-Za-z0-9_-]+$/;
const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

/** Sign claims as an HS256 JWT (header `{"alg":"HS256","typ":"JWT"}`, the claims as JSON in their order); bad arguments throw at once. */
export function signHs256(claims: Record<string, unknown>, secret: string): Promise<string> {
  if (!secret) throw new Error('empty JWT secret');
  return new CompactSign(enc.encode(JSON.stringify(claims))).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(enc.encode(secret));
}

/** Why jose refused a token, in the words of the checks it replaced. */
function refusal(e: unknown): string {
  if (e instanceof errors.JWSSignatureVerificationFailed) return 'invalid JWT signature';
  if (e instanceof errors.JOSEAlgNotAllowed) return 'JWT must be HS256';
  if (e instanceof errors.JWSInvalid) {
    // A header that is JSON but not an object, or one without a string `alg`, names no usable algorithm.
    if (/"alg"/.test(e.message) || (/Protected Header is invalid/.test(e.message) && e.cause === undefined)) return 'JWT must be HS256';
  }
  return 'malformed JWT';
}

/**
 * Verify an HS256 JWT as Supabase's gateway does before a function runs (verify_jwt): the algorithm
 * pinned to HS256, the signature with the project secret, then `exp` and `nbf` if present (`nbf` with
 * 60 s of leeway). Role checks are the caller's business. Never throws.
 */
export async function verifyHs256(token: string, secret: string, nowSeconds: number): Promise<JwtCheck> {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts.every((p) => B64URL.test(p))) return { ok: false, reason: 'malformed JWT' };
  let payload: Uint8Array;
  try {
    ({ payload } = await compactVerify(token, enc.encode(secret), { algorithms: ['HS256'] }));
  } catch (e) {
    return { ok: false, reason: refusal(e) };
  }
  let claims: unknown;
  try {
    claims = JSON.parse(dec.decode(payload));
  } catch {
    return { ok: false, reason: 'malformed JWT' };
  }
  if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) return { ok: false, reason: 'malformed JWT claims' };
  const c = claims as Record<string, unknown>;
  if (c.exp !== undefined && (typeof c.exp !== 'number' || !Number.isFinite(c.exp))) return { ok: false, reason: 'malformed exp claim' };
  if (typeof c.exp === 'number' && c.exp <= nowSeconds) return { ok: false, reason: 'JWT expired' };
  if (c.nbf !== undefined && (typeof c.nbf !== 'number' || c.nbf > nowSeconds + 60)) return { ok: false, reason: 'JWT not yet valid' };
  return { ok: true, claims: c };
}
