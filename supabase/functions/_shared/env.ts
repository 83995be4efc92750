// Function configuration (docs/control-plane.md, "Function environment"). Pure: the caller passes
// the environment getter (Deno.env.get in the functions, a map in tests).
import { RELAY_TOKEN_ISSUER } from './jwt.ts';

export interface FunctionEnv {
  dbUrl: string;
  jwtSecret: string;
  /**
   * The `iss` user tokens must carry: RELAYNET_JWT_ISSUER, else Supabase Auth's issuer
   * `${SUPABASE_URL}/auth/v1` when SUPABASE_URL is set (a deployed project), else `relay-core` (the
   * tokens `relay-core token mint --role user` signs).
   */
  jwtIssuer: string;
  /** base64 Ed25519 seed; the public key is derived from it (sign.ts). */
  signingSeed: string;
  natsServers: string[];
  natsToken: string | null;
  /**
   * NATS decentralized auth: the RELAYNET account (A…), the seed of its signing key (SA…) that signs
   * relays' user JWTs, and their lifetime. Null in token mode (RELAYNET_NATS_ACCOUNT unset).
   */
  natsIssuer: { account: string; signingSeed: string; ttlSeconds: number } | null;
  heartbeatSeconds: number;
  /**
   * RELAYNET_DB_LISTEN=1: the database connection may LISTEN (PostgreSQL directly, through a
   * session-mode pooler, or the local PGlite multiplexer; not a transaction pooler): connect-client and
   * switch-exit are woken by a notification when the entry confirms, instead of reading the row every
   * 100 ms. Default off.
   */
  dbListen: boolean;
}

export type EnvGetter = (name: string) => string | undefined;

/** A configuration error: names the variable, never its value. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export function loadEnv(get: EnvGetter): FunctionEnv {
  const missing = ['SUPABASE_DB_URL', 'RELAYNET_JWT_SECRET', 'RELAYNET_TOPOLOGY_SIGNING_KEY', 'RELAYNET_NATS_SERVERS'].filter((n) => !get(n)?.trim());
  if (missing.length) throw new ConfigError(`function secret(s) not set: ${missing.join(', ')}`);
  const jwtSecret = get('RELAYNET_JWT_SECRET')!;
  if (jwtSecret.length < 32) throw new ConfigError('RELAYNET_JWT_SECRET must be at least 32 characters');
  const natsServers = get('RELAYNET_NATS_SERVERS')!
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const s of natsServers) {
    if (!/^(nats|tls|ws|wss):\/\/[^\s,]+$/.test(s) && !/^[^\s,/:]+:\d{1,5}$/.test(s))
      throw new ConfigError(`RELAYNET_NATS_SERVERS: ${JSON.stringify(s)} is not a NATS server URL`);
  }
  const hb = get('RELAYNET_HEARTBEAT_SECONDS')?.trim() || '10';
  if (!/^\d{1,5}$/.test(hb) || Number(hb) < 1 || Number(hb) > 3600) throw new ConfigError('RELAYNET_HEARTBEAT_SECONDS must be an integer in 1..3600');
  const listen = get('RELAYNET_DB_LISTEN')?.trim() || '0';
  if (!/^(0|1|true|false)$/.test(listen)) throw new ConfigError('RELAYNET_DB_LISTEN must be 1 (or true) or 0 (or false)');
  const issuer = get('RELAYNET_JWT_ISSUER')?.trim();
  const supabaseUrl = get('SUPABASE_URL')?.trim().replace(/\/+$/, '');
  const jwtIssuer = issuer || (supabaseUrl ? `${supabaseUrl}/auth/v1` : RELAY_TOKEN_ISSUER);
  if (jwtIssuer.length > 512 || /\s/.test(jwtIssuer)) throw new ConfigError('RELAYNET_JWT_ISSUER must be one word of at most 512 characters');
  const account = get('RELAYNET_NATS_ACCOUNT')?.trim();
  const signingSeed = get('RELAYNET_NATS_ACCOUNT_SIGNING_KEY')?.trim();
  let natsIssuer: FunctionEnv['natsIssuer'] = null;
  if (account || signingSeed) {
    if (!account || !/^A[A-Z2-7]{55}$/.test(account)) throw new ConfigError('RELAYNET_NATS_ACCOUNT must be a NATS account public key (A…)');
    if (!signingSeed || !/^SA[A-Z2-7]{56}$/.test(signingSeed)) throw new ConfigError('RELAYNET_NATS_ACCOUNT_SIGNING_KEY must be a NATS account seed (SA…)');
    const ttl = get('RELAYNET_NATS_USER_TTL_SECONDS')?.trim() || '3600';
    if (!/^\d{1,7}$/.test(ttl) || Number(ttl) < 60 || Number(ttl) > 30 * 24 * 3600)
      throw new ConfigError('RELAYNET_NATS_USER_TTL_SECONDS must be an integer in 60..2592000');
    natsIssuer = { account, signingSeed, ttlSeconds: Number(ttl) };
  }
  return {
    dbUrl: get('SUPABASE_DB_URL')!.trim(),
    jwtSecret,
    jwtIssuer,
    signingSeed: get('RELAYNET_TOPOLOGY_SIGNING_KEY')!.trim(),
    natsServers,
    natsToken: get('RELAYNET_NATS_TOKEN')?.trim() || null,
    natsIssuer,
    heartbeatSeconds: Number(hb),
    dbListen: listen === '1' || listen === 'true',
  };
}
