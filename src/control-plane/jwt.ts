import { randomUUID } from 'node:crypto';
import { signHs256, verifyHs256, type JwtCheck } from '../contract/jwt.ts';

/**
 * HS256 JWTs as Supabase uses them (the service-role key) and as relay-core scopes them (relay
 * tokens). Signing and checking are src/contract/jwt.ts (jose), which the Edge Functions share.
 */

export type { JwtCheck };

/** Sign claims as an HS256 JWT. */
export const signJwt = signHs256;

/**
 * Verify an HS256 JWT as Supabase's gateway does before a function runs (verify_jwt): the signature
 * with the project secret, then `exp` and `nbf` if present. Role checks are the function's business.
 * Never throws.
 */
export function verifyJwt(token: string, secret: string, nowSeconds = Math.floor(Date.now() / 1000)): Promise<JwtCheck> {
  return verifyHs256(token, secret, nowSeconds);
}

export const TOKEN_ISSUER = 'relay-core';

/**
 * A scoped relay token: role `relay`, bound to one relay id, expiring after `ttlSeconds`, with its own
 * id (`jti`, a UUID) by which `relay-core token revoke` stops it alone.
 */
export function mintRelayToken(
  relayId: string,
  ttlSeconds: number,
  secret: string,
  now = Math.floor(Date.now() / 1000),
  jti: string = randomUUID(),
): Promise<string> {
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) throw new Error('ttlSeconds must be a positive integer');
  return signJwt({ role: 'relay', relay_id: relayId, jti, iss: TOKEN_ISSUER, iat: now, exp: now + ttlSeconds }, secret);
}

/**
 * A user token as Supabase Auth issues them (tests, local use): role `authenticated`, the user's id as
 * `sub`, expiring after `ttlSeconds`. The control plane lets it open, switch, list and close its own
 * client sessions only; with `operator`, it carries `app_metadata.relaynet_role: "operator"` (what
 * Supabase Auth's admin API sets on a user) and may enroll community relays too.
 */
export function mintUserToken(
  sub: string,
  ttlSeconds: number,
  secret: string,
  now = Math.floor(Date.now() / 1000),
  opts: { operator?: boolean } = {},
): Promise<string> {
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) throw new Error('ttlSeconds must be a positive integer');
  if (sub.length < 1 || sub.length > 255 || /[\u0000-\u001f\u007f]/.test(sub)) throw new Error('sub must be 1-255 characters without control characters');
  const meta = opts.operator ? { app_metadata: { relaynet_role: 'operator' } } : {};
  return signJwt({ role: 'authenticated', aud: 'authenticated', sub, iss: TOKEN_ISSUER, iat: now, exp: now + ttlSeconds, ...meta }, secret);
}

/** The service-role key of a local control plane (what Supabase hands a project's backend; no exp). */
export function serviceRoleKey(secret: string, now = Math.floor(Date.now() / 1000)): Promise<string> {
  return signJwt({ role: 'service_role', iss: TOKEN_ISSUER, iat: now }, secret);
}
