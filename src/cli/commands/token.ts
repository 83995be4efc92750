import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CliError, requireStr, str, type Command } from '../args.ts';
import { mintRelayToken, mintUserToken } from '../../control-plane/jwt.ts';
import { SECRETS_FILE } from '../../control-plane/secrets.ts';
import { RelayIdSchema } from '../../events/envelope.ts';

const usage = `Usage: relay-core token mint --relay-id ID [--ttl DURATION] [secret source]
       relay-core token mint --role user --sub ID [--ttl DURATION] [secret source]

Mint an HS256 JWT signed with the project's JWT secret. Prints the token on stdout.

  relay token (default, --role relay): {role: "relay", relay_id, iss: "relay-core", iat, exp}. The
    control plane lets it register, heartbeat and deregister only that relay id, confirm the client
    sessions entering there (client-ready) and list or close them, so community-operated relays never
    hold the service-role key. Give it to the relay as RELAYNET_TOKEN (or --token-file).
  user token (--role user): {role: "authenticated", aud: "authenticated", sub, iss, iat, exp}, the
    shape of a Supabase Auth user's JWT. It may open, switch, list and close only the client sessions
    it opened itself (relay-core client ...), and nothing else.

Options:
  --role relay|user        which kind of token (default relay)
  --relay-id ID            relay tokens: the relay the token is bound to (required; 1-63 chars of a-z, 0-9, -)
  --sub ID                 user tokens: the user's id (required; 1-255 characters, e.g. a Supabase user UUID)
  --ttl DURATION           lifetime: N followed by s, m, h or d, e.g. 12h, 30d (default 30d, at most 3650d)

Secret source (the first that is given):
  --jwt-secret-file FILE   a file holding the JWT secret (Supabase: Settings > API > JWT secret)
  --state-dir DIR          a local control plane's state directory (its secrets.json)
  RELAYNET_JWT_SECRET      environment variable with the secret
  (default)                ./.state/control-plane, the local control plane's default state directory

  -h, --help               show this help

Examples:
  RELAYNET_TOKEN=$(relay-core token mint --relay-id relay-a --ttl 90d) relay-core run --relay-id relay-a ...
  RELAYNET_TOKEN=$(relay-core token mint --role user --sub alice --ttl 1d) relay-core client add --exit relay-b ...`;

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

function readSecret(v: Record<string, unknown>): { secret: string; from: string } {
  const file = str(v['jwt-secret-file'], 'jwt-secret-file');
  const dirFlag = str(v['state-dir'], 'state-dir');
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

export const command: Command = {
  name: 'token',
  summary: 'mint scoped relay tokens and user tokens',
  usage,
  options: {
    role: { type: 'string' },
    'relay-id': { type: 'string' },
    sub: { type: 'string' },
    ttl: { type: 'string' },
    'state-dir': { type: 'string' },
    'jwt-secret-file': { type: 'string' },
  },
  async run(v, pos) {
    if (pos[0] !== 'mint') throw new CliError(`${pos[0] ? `unknown subcommand ${JSON.stringify(pos[0])}` : 'missing subcommand'}; the only one is 'mint'\n\n${usage}`, 2);
    if (pos.length > 1) throw new CliError(`unexpected argument ${JSON.stringify(pos[1])}\n\n${usage}`, 2);
    const role = str(v.role, 'role') ?? 'relay';
    if (role !== 'relay' && role !== 'user') throw new CliError(`--role must be relay or user, not ${JSON.stringify(role)}`, 2);
    let mint: (ttl: number, secret: string) => Promise<string>;
    if (role === 'user') {
      if (v['relay-id'] !== undefined) throw new CliError('--relay-id is for relay tokens; a user token takes --sub', 2);
      const sub = requireStr(v.sub, 'sub');
      if (sub.length > 255 || /[\u0000-\u001f\u007f]/.test(sub)) throw new CliError('--sub must be 1-255 characters without control characters', 2);
      mint = (ttl, secret) => mintUserToken(sub, ttl, secret);
    } else {
      if (v.sub !== undefined) throw new CliError('--sub is for user tokens (--role user); a relay token takes --relay-id', 2);
      const id = requireStr(v['relay-id'], 'relay-id');
      if (!RelayIdSchema.safeParse(id).success) throw new CliError(`--relay-id ${JSON.stringify(id)} is not a relay id (1-63 characters of a-z, 0-9 and -, starting with a letter or digit)`, 2);
      mint = (ttl, secret) => mintRelayToken(id, ttl, secret);
    }
    const ttl = parseTtl(str(v.ttl, 'ttl') ?? '30d');
    const { secret, from } = readSecret(v);
    if (secret.length < 32) throw new CliError(`the JWT secret from ${from} is shorter than 32 characters; that is not a Supabase JWT secret`, 1);
    process.stdout.write((await mint(ttl, secret)) + '\n');
    return 0;
  },
};
