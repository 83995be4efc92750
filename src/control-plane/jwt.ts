import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * HS256 JWTs as Supabase uses them (the service-role key) and as relay-core scopes them (relay
 * tokens). The Edge Functions verify the same tokens with WebCrypto (supabase/functions/_shared/jwt.ts).
 */

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');
const B64URL = /^[A-Za-z0-9_-]+$/;

/** Sign claims as an HS256 JWT. */
export function signJwt(claims: Record<string, unknown>, secret: string): string {
  if (!secret) throw new Error('empty JWT secret');
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

export type JwtCheck = { ok: true; claims: Record<string, unknown> } | { ok: false; reason: string };

function decodePart(s: string): unknown {
  return JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
}

/**
 * Verify an HS256 JWT as Supabase's gateway does before a function runs (verify_jwt): the signature
 * with the project secret (timing-safe), then `exp` and `nbf` if present. Role checks are the
 * function's business. Never throws.
 */
export function verifyJwt(token: string, secret: string, nowSeconds = Math.floor(Date.now() / 1000)): JwtCheck {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts.every((p) => B64URL.test(p))) return { ok: false, reason: 'malformed JWT' };
  const [h, p, s] = parts as [string, string, string];
  try {
    const head = decodePart(h) as { alg?: unknown } | null;
    if (typeof head !== 'object' || head === null || head.alg !== 'HS256') return { ok: false, reason: 'JWT must be HS256' };
    const expected = createHmac('sha256', secret).update(`${h}.${p}`).digest();
    const got = Buffer.from(s, 'base64url');
    if (got.length !== expected.length || !timingSafeEqual(got, expected)) return { ok: false, reason: 'invalid JWT signature' };
    const claims = decodePart(p);
    if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) return { ok: false, reason: 'malformed JWT claims' };
    const c = claims as Record<string, unknown>;
    if (c.exp !== undefined && (typeof c.exp !== 'number' || !Number.isFinite(c.exp))) return { ok: false, reason: 'malformed exp claim' };
    if (typeof c.exp === 'number' && c.exp <= nowSeconds) return { ok: false, reason: 'JWT expired' };
    if (c.nbf !== undefined && (typeof c.nbf !== 'number' || c.nbf > nowSeconds + 60)) return { ok: false, reason: 'JWT not yet valid' };
    return { ok: true, claims: c };
  } catch {
    return { ok: false, reason: 'malformed JWT' };
  }
}

export const TOKEN_ISSUER = 'relay-core';

/** A scoped relay token: role `relay`, bound to one relay id, expiring after `ttlSeconds`. */
export function mintRelayToken(relayId: string, ttlSeconds: number, secret: string, now = Math.floor(Date.now() / 1000)): string {
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) throw new Error('ttlSeconds must be a positive integer');
  return signJwt({ role: 'relay', relay_id: relayId, iss: TOKEN_ISSUER, iat: now, exp: now + ttlSeconds }, secret);
}

/**
 * A user token as Supabase Auth issues them (tests, local use): role `authenticated`, the user's id as
 * `sub`, expiring after `ttlSeconds`. The control plane lets it open, switch, list and close its own
 * client sessions only.
 */
export function mintUserToken(sub: string, ttlSeconds: number, secret: string, now = Math.floor(Date.now() / 1000)): string {
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) throw new Error('ttlSeconds must be a positive integer');
  if (sub.length < 1 || sub.length > 255 || /[\u0000-\u001f\u007f]/.test(sub)) throw new Error('sub must be 1-255 characters without control characters');
  return signJwt({ role: 'authenticated', aud: 'authenticated', sub, iss: TOKEN_ISSUER, iat: now, exp: now + ttlSeconds }, secret);
}

/** The service-role key of a local control plane (what Supabase hands a project's backend; no exp). */
export function serviceRoleKey(secret: string, now = Math.floor(Date.now() / 1000)): string {
  return signJwt({ role: 'service_role', iss: TOKEN_ISSUER, iat: now }, secret);
}
