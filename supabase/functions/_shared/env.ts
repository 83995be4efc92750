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
  heartbeatSeconds: number;
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
  const issuer = get('RELAYNET_JWT_ISSUER')?.trim();
  const supabaseUrl = get('SUPABASE_URL')?.trim().replace(/\/+$/, '');
  const jwtIssuer = issuer || (supabaseUrl ? `${supabaseUrl}/auth/v1` : RELAY_TOKEN_ISSUER);
  if (jwtIssuer.length > 512 || /\s/.test(jwtIssuer)) throw new ConfigError('RELAYNET_JWT_ISSUER must be one word of at most 512 characters');
  return {
    dbUrl: get('SUPABASE_DB_URL')!.trim(),
    jwtSecret,
    jwtIssuer,
    signingSeed: get('RELAYNET_TOPOLOGY_SIGNING_KEY')!.trim(),
    natsServers,
    natsToken: get('RELAYNET_NATS_TOKEN')?.trim() || null,
    heartbeatSeconds: Number(hb),
  };
}
