import {
  createAccount,
  createOperator,
  createUser,
  encodeAccount,
  encodeOperator,
  encodeUser,
  fmtCreds,
  fromPublic,
  fromSeed,
  type Permissions,
} from '@nats-io/jwt';
import { STREAMS, SUBJECT_ROOT } from './subjects.ts';

/**
 * NATS decentralized authentication (docs/security.md, "The bus"): an operator, a system account and
 * the one account the network lives in (RELAYNET), each an nkey; nats-server trusts the operator and
 * resolves the accounts; every party connects with a user JWT the account's signing key issued, whose
 * permissions say what it may publish and read. Importable by Node and by the Deno functions (the
 * register and heartbeat functions mint relay credentials), so nothing here touches the world.
 */

/** The seeds of the bus's authority (nkey seeds, `SO…`, `SA…`). Kept by the control plane, 0600. */
export interface BusAuthority {
  operatorSeed: string;
  systemAccountSeed: string;
  accountSeed: string;
  /** Signs users; the account JWT lists it, so it can be replaced without re-issuing the account. */
  accountSigningSeed: string;
}

/** Who a user JWT is for: one relay, the control plane's topology publisher, an operator's reader, the bus administrator, the system. */
export type BusRole = { kind: 'relay'; relayId: string } | { kind: 'publisher' } | { kind: 'reader' } | { kind: 'admin' } | { kind: 'system' };

const te = new TextEncoder();
const td = new TextDecoder();
const seedText = (s: Uint8Array) => td.decode(s);

export function createBusAuthority(): BusAuthority {
  return {
    operatorSeed: seedText(createOperator().getSeed()),
    systemAccountSeed: seedText(createAccount().getSeed()),
    accountSeed: seedText(createAccount().getSeed()),
    accountSigningSeed: seedText(createAccount().getSeed()),
  };
}

/** The public key (`O…`, `A…`, `U…`) of an nkey seed; throws on a malformed seed. */
export const publicKeyOfSeed = (seed: string): string => fromSeed(te.encode(seed)).getPublicKey();

/** A fresh user nkey: its seed stays where it was made; its public key goes into the user JWT. */
export function createUserKey(): { seed: string; publicKey: string } {
  const kp = createUser();
  return { seed: seedText(kp.getSeed()), publicKey: kp.getPublicKey() };
}

/** Whether `key` is a user nkey public key (`U…`, 56 characters, checksum valid). */
export function isUserPublicKey(key: string): boolean {
  if (typeof key !== 'string' || !/^U[A-Z2-7]{55}$/.test(key)) return false;
  try {
    fromPublic(key);
    return true;
  } catch {
    return false;
  }
}

/** The account name nats-server shows; subjects below are the account's own. */
export const ACCOUNT_NAME = 'RELAYNET';
/** Relay ids the bus accepts in subjects and consumer names (the registry's rule, restated: no dots or wildcards). */
const SUBJECT_TOKEN = /^[A-Za-z0-9_-]{1,64}$/;

/** The consumer a relay follows the topology with (one per relay; its name is its permission). */
export const topologyConsumerName = (relayId: string) => `topology-${relayId}`;

/** Replies to a party's requests arrive below its own inbox prefix, so no one reads another's answers. */
export function inboxPrefixFor(role: BusRole): string {
  return role.kind === 'relay' ? `_INBOX_relay_${role.relayId}` : `_INBOX_${role.kind}`;
}

const js = (api: string) => `$JS.API.${api}`;

/**
 * What a role may publish and subscribe to. Pure. Anything not allowed is refused by nats-server:
 * - a relay publishes its own events (`relaynet.relay.<id>.>`) and runs its own topology consumer
 *   (create, info, delete, pull, ack: by name); nothing of other relays, no stream administration;
 * - the publisher publishes topology subjects and reads stream info (to check its last revision);
 * - the reader creates ordered consumers on both streams and reads (tail, export, replay);
 * - the administrator administers streams (`bus bootstrap`, the control plane at start);
 * - the system user pushes account updates (revocations) to nats-server.
 */
export function permissionsFor(role: BusRole): Permissions {
  const inbox = `${inboxPrefixFor(role)}.>`;
  switch (role.kind) {
    case 'relay': {
      if (!SUBJECT_TOKEN.test(role.relayId)) throw new Error(`relay id ${JSON.stringify(role.relayId)} cannot be a NATS subject token`);
      const topo = STREAMS.topology;
      const consumer = topologyConsumerName(role.relayId);
      return {
        pub: {
          allow: [
            `${SUBJECT_ROOT}.relay.${role.relayId}.>`,
            js('INFO'),
            js(`CONSUMER.CREATE.${topo}.${consumer}`),
            js(`CONSUMER.CREATE.${topo}.${consumer}.>`),
            js(`CONSUMER.DURABLE.CREATE.${topo}.${consumer}`),
            js(`CONSUMER.INFO.${topo}.${consumer}`),
            js(`CONSUMER.DELETE.${topo}.${consumer}`),
            js(`CONSUMER.MSG.NEXT.${topo}.${consumer}`),
            `$JS.ACK.${topo}.${consumer}.>`,
          ],
        },
        sub: { allow: [inbox] },
      };
    }
    case 'publisher':
      return {
        pub: { allow: [`${SUBJECT_ROOT}.topology.>`, js('INFO'), js(`STREAM.INFO.${STREAMS.topology}`), js(`STREAM.MSG.GET.${STREAMS.topology}`)] },
        sub: { allow: [inbox] },
      };
    case 'reader': {
      const streams = [STREAMS.topology, STREAMS.relay];
      return {
        pub: {
          allow: [
            js('INFO'),
            js('STREAM.NAMES'),
            js('STREAM.LIST'),
            ...streams.flatMap((s) => [
              js(`STREAM.INFO.${s}`),
              js(`STREAM.MSG.GET.${s}`),
              js(`CONSUMER.CREATE.${s}.*`),
              js(`CONSUMER.CREATE.${s}.*.>`),
              js(`CONSUMER.INFO.${s}.*`),
              js(`CONSUMER.MSG.NEXT.${s}.*`),
              js(`CONSUMER.DELETE.${s}.*`),
            ]),
          ],
        },
        sub: { allow: [inbox] },
      };
    }
    case 'admin':
      return { pub: { allow: ['$JS.API.>'] }, sub: { allow: [inbox] } };
    case 'system':
      return { pub: { allow: ['$SYS.REQ.>'] }, sub: { allow: [inbox] } };
  }
}

/** The user JWT's name: who it is for, as nats-server logs it. */
export const userName = (role: BusRole) => (role.kind === 'relay' ? `relay-core relay ${role.relayId}` : `relay-core ${role.kind}`);

/** Who issues user JWTs: an account (its public key) and the seed that signs for it (its own, or a signing key it lists). */
export interface UserIssuer {
  account: string;
  signingSeed: string;
}

/** The issuer of a role's users: the RELAYNET account's signing key; for the system user, the system account itself. */
export function issuerFor(a: BusAuthority, role: BusRole): UserIssuer {
  return role.kind === 'system'
    ? { account: publicKeyOfSeed(a.systemAccountSeed), signingSeed: a.systemAccountSeed }
    : { account: publicKeyOfSeed(a.accountSeed), signingSeed: a.accountSigningSeed };
}

/**
 * A user JWT for `role`, bound to the user's nkey public key, issued for `issuer.account` (signed by
 * its signing key, named as `issuer_account`, or by the account itself), valid from `nowSeconds` for
 * `ttlSeconds` (0: no expiry, only for the operator's own credentials). Bearer tokens are refused:
 * the connecting party must sign the server's nonce with the user's nkey.
 */
export async function mintUserJwt(issuer: UserIssuer, role: BusRole, userPublicKey: string, opts: { nowSeconds: number; ttlSeconds: number }): Promise<string> {
  if (!isUserPublicKey(userPublicKey)) throw new Error('not a NATS user public key (U…)');
  const signer = fromSeed(te.encode(issuer.signingSeed));
  const claims = { ...permissionsFor(role), bearer_token: false };
  const exp = opts.ttlSeconds > 0 ? { exp: opts.nowSeconds + opts.ttlSeconds } : {};
  if (signer.getPublicKey() === issuer.account) return encodeUser(userName(role), fromPublic(userPublicKey), signer, claims, exp);
  return encodeUser(userName(role), fromPublic(userPublicKey), fromPublic(issuer.account), claims, { ...exp, signer });
}

/** A `.creds` file (what `nats` tools and nats.js's credsAuthenticator read): the JWT and the user's seed. */
export const credsText = (jwt: string, userSeed: string): string => td.decode(fmtCreds(jwt, fromSeed(te.encode(userSeed))));

/** The account JWTs nats-server preloads (system and RELAYNET, JetStream enabled) and the operator JWT it trusts. */
export async function authorityJwts(a: BusAuthority, opts: { revocations?: Record<string, number> } = {}) {
  const operator = fromSeed(te.encode(a.operatorSeed));
  const system = fromSeed(te.encode(a.systemAccountSeed));
  const account = fromSeed(te.encode(a.accountSeed));
  const operatorJwt = await encodeOperator('relay-core', operator, { system_account: system.getPublicKey() });
  // Limits are spelled out: an account JWT without them allows no connections.
  const unlimited = { conn: -1, subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true };
  const systemJwt = await encodeAccount('SYS', system, { limits: unlimited }, { signer: operator });
  const accountJwt = await encodeAccount(
    ACCOUNT_NAME,
    account,
    {
      signing_keys: [publicKeyOfSeed(a.accountSigningSeed)],
      limits: {
        ...unlimited,
        disk_storage: -1,
        mem_storage: -1,
        streams: -1,
        consumer: -1,
      },
      ...(opts.revocations && Object.keys(opts.revocations).length ? { revocations: opts.revocations } : {}),
    },
    { signer: operator },
  );
  return { operatorJwt, systemJwt, accountJwt, systemAccount: system.getPublicKey(), account: account.getPublicKey() };
}

/**
 * How long nats-server waits for a client's CONNECT (its signed nonce) after its hello, in seconds.
 * Its default, 2 s, dropped relays of a loaded host ("Authentication Timeout": a process whose event
 * loop was busy answered late), and every one dropped reconnected and pulled again; 10 s still closes
 * a connection that never authenticates.
 */
export const NATS_AUTH_TIMEOUT_SECONDS = 10;

/**
 * The part of nats-server's configuration that turns on this authority: the operator it trusts, its
 * system account, both accounts preloaded, and the time a client has to authenticate. The server's own
 * configuration adds the resolver ({@link natsResolverConfig}), which says where it keeps account JWTs
 * (its own directory).
 */
export async function natsServerAuthConfig(a: BusAuthority): Promise<string> {
  const j = await authorityJwts(a);
  return [
    `authorization { timeout: ${NATS_AUTH_TIMEOUT_SECONDS} }`,
    `operator: ${j.operatorJwt}`,
    `system_account: ${j.systemAccount}`,
    'resolver_preload: {',
    `  ${j.systemAccount}: ${j.systemJwt}`,
    `  ${j.account}: ${j.accountJwt}`,
    '}',
    '',
  ].join('\n');
}

/** A full resolver: account JWTs kept in `dir`, updated at run time by the system user (revocations). */
export const natsResolverConfig = (dir: string) => `resolver: { type: full, dir: ${JSON.stringify(dir)}, allow_delete: false, interval: "2m" }\n`;
