// Database side of the client API limits (limits.ts; relaynet.settings and relaynet.rate_limits,
// supabase/migrations). The token buckets live in Postgres because function instances are stateless
// and many: a token is taken in one statement, outside the caller's transaction, so a call that is
// refused later still counts, and a refused call holds no topology lock and writes nothing else.
import type { Sql, Tx } from './db.ts';
import type { Principal } from './jwt.ts';
import { rateLimited, rateLimitSubject, retryAfterSeconds, type LimitedAction, type LimitSettings } from './limits.ts';

type Db = Sql | Tx;

export async function limitSettings(db: Db): Promise<LimitSettings> {
  const [s] = await db`select max_sessions_per_user, allow_anonymous_users, rate_limit_window_seconds,
                              connect_rate_limit, switch_rate_limit, register_rate_limit from relaynet.settings`;
  if (!s) throw new Error('relaynet.settings has no row; are the migrations applied?');
  return {
    maxSessionsPerUser: Number(s.max_sessions_per_user),
    allowAnonymousUsers: s.allow_anonymous_users === true,
    rateLimitWindowSeconds: Number(s.rate_limit_window_seconds),
    rateLimits: { connect: Number(s.connect_rate_limit), switch: Number(s.switch_rate_limit), register: Number(s.register_rate_limit) },
  };
}

// What the bucket holds now: what it held, refilled at limit/window per second since, at most limit.
const LEVEL = `least($3::float8, b.tokens + greatest(0, extract(epoch from statement_timestamp() - b.updated_at)::float8) * $3::float8 / $4::float8)`;

/**
 * Take one token from the bucket of (`subject`, `action`), a bucket of `limit` tokens refilled at
 * `limit` per `windowSeconds`, atomically in one statement (concurrent callers queue on the row).
 * `level` is what the bucket held before (a missing row is a full bucket).
 */
export async function takeToken(
  sql: Sql,
  subject: string,
  action: LimitedAction,
  limit: number,
  windowSeconds: number,
): Promise<{ taken: boolean; level: number }> {
  const [r] = await sql.unsafe(
    `with old as (select ${LEVEL} as level from relaynet.rate_limits b where b.subject = $1 and b.action = $2),
     took as (
       insert into relaynet.rate_limits as b (subject, action, tokens, updated_at)
       values ($1, $2, $3::float8 - 1, statement_timestamp())
       on conflict (subject, action) do update
         set tokens = ${LEVEL} - 1, updated_at = greatest(b.updated_at, statement_timestamp())
         where ${LEVEL} >= 1
       returning 1
     )
     select (select count(*) from took)::int as taken, coalesce((select level from old), $3::float8) as level`,
    [subject, action, limit, windowSeconds],
  );
  return { taken: Number(r!.taken) === 1, level: Number(r!.level) };
}

/**
 * Charge a call of `action` to the caller's bucket (the service role is not limited): 429
 * `rate_limited` with Retry-After when the bucket is empty. Before the call's transaction.
 */
export async function enforceRateLimit(sql: Sql, p: Principal, action: LimitedAction, s: LimitSettings, log: Record<string, unknown>): Promise<void> {
  const subject = rateLimitSubject(p, action);
  if (subject === null) return;
  const limit = s.rateLimits[action];
  const r = await takeToken(sql, subject, action, limit, s.rateLimitWindowSeconds);
  if (r.taken) return;
  const retryAfter = retryAfterSeconds(r.level, limit, s.rateLimitWindowSeconds);
  log.retryAfter = retryAfter;
  throw rateLimited(action, subject, retryAfter, limit, s.rateLimitWindowSeconds);
}

/** Forget the buckets untouched for a window: they are full again, as good as no row. Returns how many. */
export async function sweepRateLimits(db: Db): Promise<number> {
  const rows = await db`delete from relaynet.rate_limits
                        where updated_at < clock_timestamp() - (select rate_limit_window_seconds from relaynet.settings) * interval '1 second'
                        returning 1`;
  return rows.length;
}

/** How many open sessions `owner` holds (the per-user cap). */
export async function openSessionsOfOwner(tx: Db, owner: string): Promise<number> {
  const [r] = await tx`select count(*)::int as n from relaynet.client_sessions where owner = ${owner} and status = 'open'`;
  return Number(r!.n);
}
