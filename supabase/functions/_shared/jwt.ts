// HS256 JWT verification (src/contract/jwt.ts, jose, shared with the Node gateway) and the role checks
// of docs/control-plane.md. Pure apart from crypto.subtle.
import { verifyHs256 as checkHs256 } from '../../../src/contract/jwt.ts';
import { HttpError } from './http.ts';

/**
 * Who is calling: the service role (anything), a relay (only its own relay id), or a Supabase user
 * (`role: "authenticated"`, identified by `sub`: only client sessions it owns; `anonymous` for a
 * Supabase anonymous sign-in, `is_anonymous: true`).
 */
export type Principal =
  | { role: 'service_role' }
  | { role: 'relay'; relayId: string; jti: string }
  /** `operator`: the user may enroll community relays (app_metadata.relaynet_role "operator", which only Supabase Auth's admin sets). */
  | { role: 'user'; userId: string; anonymous: boolean; operator: boolean };

/** The app_metadata role of a user who may enroll community relays. */
export const OPERATOR_ROLE = 'operator';

/** The `iss` of the tokens relay-core mints (src/control-plane/jwt.ts): every relay token carries it. */
export const RELAY_TOKEN_ISSUER = 'relay-core';
/** The `aud` of Supabase Auth's user tokens. */
export const USER_AUDIENCE = 'authenticated';

const RELAY_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;
const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;
const unauthorized = (message: string) => new HttpError(401, 'unauthorized', message);

/**
 * Verify an HS256 JWT (signature with `secret`, then `exp` and `nbf`) and return its claims.
 * Throws 401 for anything else. The signature is checked before the claims are looked at.
 */
export async function verifyHs256(token: string, secret: string, nowSeconds: number): Promise<Record<string, unknown>> {
  const check = await checkHs256(token, secret, nowSeconds);
  if (!check.ok) throw unauthorized(check.reason);
  return check.claims;
}

const quoted = (v: unknown) => (typeof v === 'string' ? JSON.stringify(v.slice(0, 128)) : v === undefined ? 'none' : 'not a string');

/**
 * The principal a verified token's claims describe; 401 for roles this project does not serve and
 * for tokens not meant for it: a relay token's `iss` must be RELAY_TOKEN_ISSUER, a user token's `iss`
 * the configured `userIssuer` and its `aud` `authenticated` (a string, or an array holding it).
 */
export function principalOf(claims: Record<string, unknown>, userIssuer: string): Principal {
  if (claims.role === 'service_role') return { role: 'service_role' };
  if (claims.role === 'relay') {
    if (typeof claims.exp !== 'number') throw unauthorized('relay token without exp');
    if (claims.iss !== RELAY_TOKEN_ISSUER) throw unauthorized(`relay token with iss ${quoted(claims.iss)}; relay tokens are issued by "${RELAY_TOKEN_ISSUER}"`);
    if (typeof claims.relay_id !== 'string' || !RELAY_ID.test(claims.relay_id)) throw unauthorized('relay token without a valid relay_id');
    // Without its own id a token could only be stopped with its whole relay: mint a new one.
    if (typeof claims.jti !== 'string' || !UUID.test(claims.jti))
      throw unauthorized('relay token without a jti (a UUID); mint a new one with relay-core token mint');
    return { role: 'relay', relayId: claims.relay_id, jti: claims.jti.toLowerCase() };
  }
  if (claims.role === 'authenticated') {
    if (typeof claims.exp !== 'number') throw unauthorized('user token without exp');
    const aud = claims.aud;
    if (!(aud === USER_AUDIENCE || (Array.isArray(aud) && aud.includes(USER_AUDIENCE)))) {
      throw unauthorized(
        `user token with aud ${Array.isArray(aud) ? 'not holding "authenticated"' : quoted(aud)}; user tokens must be for audience "${USER_AUDIENCE}"`,
      );
    }
    if (claims.iss !== userIssuer)
      throw unauthorized(
        `user token with iss ${quoted(claims.iss)}; this control plane accepts user tokens of issuer ${JSON.stringify(userIssuer)} (RELAYNET_JWT_ISSUER)`,
      );
    if (typeof claims.sub !== 'string' || claims.sub.length < 1 || claims.sub.length > 255 || CONTROL.test(claims.sub)) {
      throw unauthorized('user token without a valid sub (1-255 characters)');
    }
    if (claims.is_anonymous !== undefined && typeof claims.is_anonymous !== 'boolean') throw unauthorized('user token with a malformed is_anonymous claim');
    const meta = claims.app_metadata;
    if (meta !== undefined && (meta === null || typeof meta !== 'object' || Array.isArray(meta)))
      throw unauthorized('user token with a malformed app_metadata claim');
    const anonymous = claims.is_anonymous === true;
    const operator = !anonymous && (meta as Record<string, unknown> | undefined)?.relaynet_role === OPERATOR_ROLE;
    return { role: 'user', userId: claims.sub, anonymous, operator };
  }
  const role = typeof claims.role === 'string' ? claims.role.slice(0, 64) : null;
  throw unauthorized(`role ${JSON.stringify(role)} may not call this function`);
}

/**
 * Verify `Authorization: Bearer <jwt>` against the project's JWT secret and return who is calling.
 * 401 for a missing, malformed, wrongly signed or expired token, a role we do not serve, or a token
 * of another issuer or audience (principalOf).
 */
export async function authenticate(authorization: string | null, secret: string, nowSeconds: number, userIssuer: string): Promise<Principal> {
  if (!authorization) throw unauthorized('missing Authorization header');
  const m = /^Bearer +([^\s]+)$/i.exec(authorization.trim());
  if (!m) throw unauthorized('Authorization must be "Bearer <JWT>"');
  return principalOf(await verifyHs256(m[1]!, secret, nowSeconds), userIssuer);
}

/** 403 unless the principal may act for `relayId` (the service role, or that relay's own token). */
export function authorizeRelay(p: Principal, relayId: string): void {
  if (p.role === 'user')
    throw new HttpError(403, 'forbidden', 'a user token cannot act for a relay; relays use a relay token (relay-core token mint) or the service-role key');
  if (p.role === 'relay' && p.relayId !== relayId) {
    throw new HttpError(403, 'forbidden', `this token is bound to relay ${p.relayId}, not ${relayId}`);
  }
}

/** 403 unless the principal's role is one of `roles`; `what` names the function for the message. */
export function requireRole(p: Principal, roles: readonly Principal['role'][], what: string): void {
  if (roles.includes(p.role)) return;
  const may = roles.map((r) => (r === 'service_role' ? 'the service role' : r === 'relay' ? 'relay tokens' : 'user tokens')).join(' or ');
  throw new HttpError(403, 'forbidden', `${what} takes ${may}, not a ${p.role === 'service_role' ? 'service-role' : p.role} token`);
}
