// The limits of the client API (docs/control-plane.md, "Limits"), as pure decisions: who is rate
// limited on what, when a refused call may come back, anonymous users, the per-user session cap.
// The database side (the token buckets, the settings row) is limit-store.ts.
import { HttpError } from './http.ts';
import type { Principal } from './jwt.ts';

/** The calls that are rate limited: connect-client and switch-exit per user, register-server per relay. */
export type LimitedAction = 'connect' | 'switch' | 'register';

export const LIMITED_FUNCTION: Record<LimitedAction, string> = { connect: 'connect-client', switch: 'switch-exit', register: 'register-server' };

/** relaynet.settings as the limits use it. */
export interface LimitSettings {
  maxSessionsPerUser: number;
  allowAnonymousUsers: boolean;
  rateLimitWindowSeconds: number;
  /** Calls per window (a token bucket of that size, refilled at that rate). */
  rateLimits: Record<LimitedAction, number>;
}

export const DEFAULT_LIMIT_SETTINGS: LimitSettings = {
  maxSessionsPerUser: 5,
  allowAnonymousUsers: false,
  rateLimitWindowSeconds: 60,
  rateLimits: { connect: 10, switch: 30, register: 10 },
};

const SETTING: Record<LimitedAction, string> = { connect: 'connect_rate_limit', switch: 'switch_rate_limit', register: 'register_rate_limit' };

/**
 * The bucket a call of `action` draws from: `user:<sub>` for a user, `relay:<relay id>` for a relay
 * token (every token of one relay shares it); null when the call is not limited (the service role,
 * or a role the action is not limited for).
 */
export function rateLimitSubject(p: Principal, action: LimitedAction): string | null {
  if (p.role === 'user' && (action === 'connect' || action === 'switch')) return `user:${p.userId}`;
  if (p.role === 'relay' && action === 'register') return `relay:${p.relayId}`;
  return null;
}

/** What a bucket holds after `elapsedSeconds` of refilling from `tokens` (at most `limit`). */
export function bucketLevel(tokens: number, elapsedSeconds: number, limit: number, windowSeconds: number): number {
  return Math.min(limit, tokens + Math.max(0, elapsedSeconds) * (limit / windowSeconds));
}

/** Whole seconds until a bucket that holds `level` (< 1) tokens holds one again; at least 1. */
export function retryAfterSeconds(level: number, limit: number, windowSeconds: number): number {
  const missing = Math.max(0, 1 - level);
  return Math.max(1, Math.ceil((missing * windowSeconds) / limit - 1e-9));
}

/** 429 `rate_limited` with `Retry-After` (seconds) and `retryAfterSeconds` in the body. */
export function rateLimited(action: LimitedAction, subject: string, retryAfter: number, limit: number, windowSeconds: number): HttpError {
  const per = subject.startsWith('relay:') ? 'relay' : 'user';
  return new HttpError(
    429,
    'rate_limited',
    `too many ${LIMITED_FUNCTION[action]} calls: at most ${limit} per ${windowSeconds} s per ${per} (${SETTING[action]}, rate_limit_window_seconds); retry after ${retryAfter} s`,
    undefined,
    { headers: { 'retry-after': String(retryAfter) }, details: { retryAfterSeconds: retryAfter } },
  );
}

/** 403 `anonymous_not_allowed` for a Supabase anonymous user unless the settings allow them. */
export function checkAnonymous(p: Principal, s: Pick<LimitSettings, 'allowAnonymousUsers'>, fn: string): void {
  if (p.role === 'user' && p.anonymous && !s.allowAnonymousUsers) {
    throw new HttpError(
      403,
      'anonymous_not_allowed',
      `${fn} does not take anonymous users (is_anonymous) on this network (allow_anonymous_users); sign in with an account`,
    );
  }
}

/**
 * connect-client: 409 `too_many_sessions` when the user already holds `open` sessions, the cap
 * (max_sessions_per_user) or more. The service role has no cap.
 */
export function checkSessionCap(p: Principal, open: number, s: Pick<LimitSettings, 'maxSessionsPerUser'>): void {
  if (p.role !== 'user' || open < s.maxSessionsPerUser) return;
  throw new HttpError(
    409,
    'too_many_sessions',
    `you have ${open} open session${open === 1 ? '' : 's'}, the most one user may hold (max_sessions_per_user = ${s.maxSessionsPerUser}); close one (disconnect-client) or switch its exit instead`,
  );
}
