import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CliError, requireStr, str, type Action, type Values } from '../args.ts';
import { mintRelayToken, mintUserToken } from '../../control-plane/jwt.ts';
import { SECRETS_FILE } from '../../control-plane/secrets.ts';
import { RelayIdSchema } from '../../contract/envelope.ts';
import { ControlPlaneError } from '../../daemon/control-plane-client.ts';
import { connect } from './client.ts';

const UNIT = { s: 1, m: 60, h: 3600, d: 86400 } as const;
export const MAX_TTL_SECONDS = 3650 * 86400;

/** `90s`, `15m`, `12h`, `30d` -> seconds; CliError (exit 2) otherwise. */
export function parseTtl(s: string): number {
  const m = /^(\d{1,10})([smhd])$/.exec(s.trim());
  if (!m) throw new CliError(`--ttl must be a number followed by s, m, h or d (e.g. 12h, 30d), not ${JSON.stringify(s)}`, 2);
  const secs = Number(m[1]) * UNIT[m[2] as keyof typeof UNIT];
  if (secs < 1 || secs > MAX_TTL_SECONDS) throw new CliError('--ttl must be between 1s and 3650d', 2);
  return secs;
}

function readSecret(v: Values): { secret: string; from: string } {
  const file = str(v.jwtSecretFile);
  const dirFlag = str(v.stateDir);
  if (file && dirFlag) throw new CliError('give either --jwt-secret-file or --state-dir, not both', 2);
  if (file) {
    try {
      return { secret: readFileSync(file, 'utf8').trim(), from: file };
    } catch (e) {
      throw new CliError(`cannot read --jwt-secret-file ${file}: ${(e as Error).message}`, 1);
    }
  }
  if (!dirFlag && process.env.RELAYNET_JWT_SECRET) return { secret: process.env.RELAYNET_JWT_SECRET.trim(), from: 'RELAYNET_JWT_SECRET' };
  const secretsFile = join(resolve(dirFlag ?? '.state/control-plane'), SECRETS_FILE);
  let text: string;
  try {
    text = readFileSync(secretsFile, 'utf8');
  } catch (e) {
    const hint = dirFlag ? '' : ' (give --jwt-secret-file, --state-dir or RELAYNET_JWT_SECRET)';
    throw new CliError(`cannot read the JWT secret from ${secretsFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}${hint}`, 1);
  }
  try {
    const s = (JSON.parse(text) as { jwtSecret?: unknown }).jwtSecret;
    if (typeof s !== 'string') throw new Error('no jwtSecret');
    return { secret: s, from: secretsFile };
  } catch {
    throw new CliError(`${secretsFile} has no jwtSecret`, 1);
  }
}

/** `relay-core token mint`: a relay token or a user token on stdout. */
export const mint: Action = async (v) => {
  const role = v.role as string;
  if (role !== 'relay' && role !== 'user') throw new CliError(`--role must be relay or user, not ${JSON.stringify(role)}`, 2);
  let sign: (ttl: number, secret: string) => Promise<string>;
  if (role === 'user') {
    if (v.relayId !== undefined) throw new CliError('--relay-id is for relay tokens; a user token takes --sub', 2);
    const sub = requireStr(v.sub, 'sub');
    if (sub.length > 255 || /[\u0000-\u001f\u007f]/.test(sub)) throw new CliError('--sub must be 1-255 characters without control characters', 2);
    const operator = v.operator === true;
    sign = (ttl, secret) => mintUserToken(sub, ttl, secret, undefined, { operator });
  } else {
    if (v.sub !== undefined) throw new CliError('--sub is for user tokens (--role user); a relay token takes --relay-id', 2);
    if (v.operator === true) throw new CliError('--operator is for user tokens (--role user)', 2);
    const id = requireStr(v.relayId, 'relay-id');
    if (!RelayIdSchema.safeParse(id).success)
      throw new CliError(`--relay-id ${JSON.stringify(id)} is not a relay id (1-63 characters of a-z, 0-9 and -, starting with a letter or digit)`, 2);
    const jti = randomUUID();
    sign = async (ttl, secret) => {
      const t = await mintRelayToken(id, ttl, secret, undefined, jti);
      // Its id, for the operator's records: the token alone is revoked by it (token revoke --jti).
      process.stderr.write(`relay token ${jti} for ${id}; revoke it with: relay-core token revoke --jti ${jti}\n`);
      return t;
    };
  }
  const ttl = parseTtl(v.ttl as string);
  const { secret, from } = readSecret(v);
  if (secret.length < 32) throw new CliError(`the JWT secret from ${from} is shorter than 32 characters; that is not a Supabase JWT secret`, 1);
  process.stdout.write((await sign(ttl, secret)) + '\n');
  return 0;
};

/** `relay-core token revoke`: stop one relay token by its jti (the revoke-token function, service role). */
export const revoke: Action = async (v) => {
  const jti = requireStr(v.jti, 'jti');
  let r: { jti: string; changed: boolean };
  try {
    r = await connect(v, 'the service-role key').revokeToken({ jti, reason: str(v.reason) ?? '' });
  } catch (e) {
    if (e instanceof ControlPlaneError) throw new CliError(e.message, 1);
    throw e;
  }
  if (v.json) process.stdout.write(`${JSON.stringify(r)}\n`);
  else process.stdout.write(`relay token ${r.jti} ${r.changed ? 'revoked' : 'was revoked already'}\n`);
  return 0;
};
