import { createPrivateKey, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fromSeed, type KeyPair } from '@nats-io/nkeys';
import { type Authenticator, connect, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../lib/logger.ts';

/**
 * How a party authenticates to NATS: a user JWT with its nkey (a `.creds` file's text, read again at
 * every reconnect, so a renewed JWT is used from the next connection on) and the inbox prefix its
 * permissions allow; or a shared token (token mode, an explicit choice); or nothing (a bus without
 * auth: tests of the bus itself only).
 */
export type BusAuth = { kind: 'creds'; creds: () => Uint8Array; inboxPrefix?: string } | { kind: 'token'; token: string } | { kind: 'none' };

/** The auth of a `.creds` file (the operator's reader or admin credentials, the publisher's). Throws when it cannot be read. */
export function credsFileAuth(file: string, inboxPrefix?: string): BusAuth {
  readFileSync(file); // fail now, with the path, rather than at connect
  return { kind: 'creds', creds: () => readFileSync(file), ...(inboxPrefix ? { inboxPrefix } : {}) };
}

/** The DER of an Ed25519 private key (PKCS#8, RFC 8410) up to its 32-byte seed. */
const ED25519_PKCS8_HEAD = Buffer.from('302e020100300506032b657004220420', 'hex');
/** The JWT and the seed of a `.creds` text (its two dashed blocks, as nats.js reads them). */
const CREDS_BLOCK = /\s*(?:(?:[-]{3,}[^\n]*[-]{3,}\n)(.+)(?:\n\s*[-]{3,}[^\n]*[-]{3,}\n))/gi;

/**
 * What nats.js's `credsAuthenticator` answers a server's nonce with (the JWT, the user's public nkey,
 * the nonce signed with its seed, base64), with the key derived once per credential and the nonce
 * signed by Node's native Ed25519. nats.js derives the key pair from the seed in JavaScript twice at
 * every connect (20 ms on the 2-core development machine; this takes 0.06 ms): after a long collector
 * pause, the 500 relays of one bench:fleet worker reconnecting at once kept it busy long enough to
 * miss their pings again. The creds are read at every connect (a renewed JWT is used from the next
 * one on).
 */
export function credsNonceAuthenticator(creds: () => Uint8Array): Authenticator {
  let kept: { text: string; jwt: string; nkey: string; sign: (data: Uint8Array) => Uint8Array } | null = null;
  return (nonce?: string) => {
    const text = new TextDecoder().decode(creds());
    if (kept?.text !== text) {
      const blocks = [...text.matchAll(CREDS_BLOCK)].map((m) => m[1]!.trim());
      if (blocks.length < 2) throw new Error('unable to parse credentials');
      const kp = fromSeed(new TextEncoder().encode(blocks[1]));
      kept = { text, jwt: blocks[0]!, nkey: kp.getPublicKey(), sign: nkeySigner(kp).sign };
    }
    return { jwt: kept.jwt, nkey: kept.nkey, sig: nonce ? Buffer.from(kept.sign(new TextEncoder().encode(nonce))).toString('base64') : '' };
  };
}

/**
 * Node's Ed25519 for an nkey, when its raw seed can be had (nkeys.js has `getRawSeed`, undeclared) and
 * signs exactly as the nkey does (Ed25519 signatures are deterministic: one probe tells); else the
 * nkey's own (JavaScript) signing.
 */
export function nkeySigner(kp: KeyPair): { native: boolean; sign: (data: Uint8Array) => Uint8Array } {
  const raw = (kp as KeyPair & { getRawSeed?: () => Uint8Array }).getRawSeed?.();
  if (raw?.length === 32) {
    const key = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_HEAD, raw]), format: 'der', type: 'pkcs8' });
    const probe = new TextEncoder().encode('relay-core nkey probe');
    if (Buffer.from(kp.sign(probe)).equals(sign(null, probe, key))) return { native: true, sign: (data) => sign(null, data, key) };
  }
  return { native: false, sign: (data) => kp.sign(data) };
}

/** What `connectBus` knows of each of its connections: connected right now, and how many times it connected. */
const links = new WeakMap<NatsConnection, { connected: boolean; connects: number }>();

/** Whether a connection made by `connectBus` is connected right now (false while it reconnects). */
export const isBusConnected = (nc: NatsConnection): boolean => !nc.isClosed() && (links.get(nc)?.connected ?? false);

/** How many times a connection made by `connectBus` has connected (1 + its reconnects). */
export const busConnects = (nc: NatsConnection): number => links.get(nc)?.connects ?? 0;

/**
 * Connect to NATS and keep reconnecting for ever. With `waitOnFirstConnect` the call returns only once
 * a server answered, so a relay that boots while NATS is down waits (and logs) instead of failing.
 * Connection status changes are logged with the connection's name bound.
 */
export async function connectBus(opts: {
  servers: string[];
  auth: BusAuth;
  name: string;
  logger: Logger;
  waitOnFirstConnect?: boolean;
}): Promise<NatsConnection> {
  const nc = await connect({
    servers: opts.servers,
    name: opts.name,
    ...(opts.auth.kind === 'token' ? { token: opts.auth.token } : {}),
    ...(opts.auth.kind === 'creds'
      ? { authenticator: credsNonceAuthenticator(opts.auth.creds), ...(opts.auth.inboxPrefix ? { inboxPrefix: opts.auth.inboxPrefix } : {}) }
      : {}),
    waitOnFirstConnect: opts.waitOnFirstConnect ?? true,
    maxReconnectAttempts: -1,
    // A refused credential (expired, revoked while banned) is not the end: the relay renews its JWT
    // through the heartbeat, an unbanned relay gets a fresh one, and the next reconnect uses it.
    ignoreAuthErrorAbort: true,
    // Reconnects spread over 1.5 s after the first: many relays dropped at once (a node restarted, a
    // loaded server) come back in a stream the server can authenticate, not a wave it times out.
    reconnectTimeWait: 500,
    reconnectJitter: 1_000,
    // A server that stopped answering is given up after 60-80 s. A closed connection (a node stopped
    // or restarted) is noticed at once, without pings; they are for a silent path, and a relay whose
    // process pauses (a long collection, a saturated core) must not take its own lateness for a dead
    // server: at 5 s x 2 the relays of a loaded bench:fleet worker went stale together and then timed
    // out authenticating all at once, a storm that fed itself (bench/README.md, run 9).
    pingInterval: 20_000,
    maxPingOut: 3,
    // Without it nats.js builds two Errors (stack traces) for every request, every JetStream publish
    // among them, only to say where a failed one began: a relay publishes several events per topology
    // event. Failures still say what failed.
    noAsyncTraces: true,
  });
  const log = opts.logger.child({ component: 'bus' });
  const link = { connected: true, connects: 1 };
  links.set(nc, link);
  log.info({ server: nc.getServer() }, 'connected to NATS');
  void (async () => {
    // A reconnect the relay asked for (`nc.reconnect()`: onto a renewed credential) is not a fault: its
    // disconnect and reconnect are logged at info.
    let forced = false;
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') link.connected = false;
      if (s.type === 'reconnect') {
        link.connected = true;
        link.connects++;
      }
      switch (s.type) {
        case 'forceReconnect':
          forced = true;
          break;
        case 'disconnect':
        case 'reconnect':
        case 'staleConnection': {
          const fields = { status: s.type, server: 'server' in s ? s.server : undefined };
          if (forced && s.type !== 'staleConnection') log.info({ ...fields, forced }, `NATS ${s.type}`);
          else log.warn(fields, `NATS ${s.type}`);
          if (s.type === 'reconnect') forced = false;
          break;
        }
        case 'error':
          log.warn({ status: s.type, err: String(s.error) }, 'NATS error');
          break;
        default:
          break;
      }
    }
  })().catch(() => {});
  return nc;
}
