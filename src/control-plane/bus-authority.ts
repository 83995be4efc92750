import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  type BusAuthority,
  type BusRole,
  createBusAuthority,
  createUserKey,
  issuerFor,
  credsText,
  mintUserJwt,
  natsServerAuthConfig,
  publicKeyOfSeed,
} from '../contract/bus-auth.ts';
import { readPrivateJson, writePrivate } from './secrets.ts';

/**
 * The control plane's NATS authority on disk (STATE_DIR/bus, 0700): the seeds (authority.json, 0600),
 * the nats-server configuration that trusts them (nats-auth.conf: JWTs only, no secret) and the
 * credentials of the control plane's own parties and of the operator (*.creds, 0600):
 *
 *   publisher.creds   the topology publisher: publishes topology subjects only
 *   reader.creds      `events tail`, `events export`, `replay`: reads both streams
 *   admin.creds       `bus bootstrap` and the control plane at start: administers the streams
 *   system.creds      pushes account updates (revocations) to nats-server
 *
 * Created at first start and reused; the credentials are issued again at every start (fresh user
 * keys; they do not expire: the operator's own, on the operator's host).
 */
export const BUS_DIR = 'bus';
export const NATS_AUTH_CONF = 'nats-auth.conf';
const AUTHORITY_FILE = 'authority.json';
const OPERATOR_ROLES = ['publisher', 'reader', 'admin', 'system'] as const;
export type OperatorRole = (typeof OPERATOR_ROLES)[number];

export interface BusAuthorityFiles {
  authority: BusAuthority;
  /** The account's public key (`A…`), which the functions name as the issuer of relay JWTs. */
  account: string;
  dir: string;
  /** nats-server's part of the configuration (operator, system account, preloaded accounts). */
  authConf: string;
  creds: Record<OperatorRole, string>;
}

function loadAuthority(file: string): BusAuthority {
  const a = readPrivateJson<BusAuthority>(file);
  for (const [k, prefix] of [
    ['operatorSeed', 'SO'],
    ['systemAccountSeed', 'SA'],
    ['accountSeed', 'SA'],
    ['accountSigningSeed', 'SA'],
  ] as const) {
    const v = a[k];
    let ok = typeof v === 'string' && v.startsWith(prefix);
    if (ok) {
      try {
        publicKeyOfSeed(v!);
      } catch {
        ok = false;
      }
    }
    if (!ok) throw new Error(`${file}: ${k} must be an nkey seed (${prefix}…)`);
  }
  return a as BusAuthority;
}

/** Load or create STATE_DIR/bus and (re)write the server configuration and the operator credentials. */
export async function loadOrCreateBusAuthority(stateDir: string): Promise<BusAuthorityFiles> {
  const dir = join(stateDir, BUS_DIR);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, AUTHORITY_FILE);
  let authority: BusAuthority;
  if (existsSync(file)) authority = loadAuthority(file);
  else {
    authority = createBusAuthority();
    writePrivate(file, `${JSON.stringify(authority, null, 2)}\n`);
  }
  const authConf = join(dir, NATS_AUTH_CONF);
  writeFileSync(authConf, await natsServerAuthConfig(authority), { mode: 0o644 });
  const nowSeconds = Math.floor(Date.now() / 1000);
  const creds = {} as Record<OperatorRole, string>;
  for (const role of OPERATOR_ROLES) {
    const user = createUserKey();
    const jwt = await mintUserJwt(issuerFor(authority, { kind: role } as BusRole), { kind: role } as BusRole, user.publicKey, { nowSeconds, ttlSeconds: 0 });
    creds[role] = join(dir, `${role}.creds`);
    writePrivate(creds[role], credsText(jwt, user.seed));
  }
  return { authority, account: publicKeyOfSeed(authority.accountSeed), dir, authConf, creds };
}
