import { readPrivateKeyFile, writeNewPrivateKeyFile } from '../lib/private-file.ts';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BusCredential } from '../contract/api-relays.ts';
import { createUserKey, credsText, inboxPrefixFor, publicKeyOfSeed } from '../contract/bus-auth.ts';
import type { BusAuth } from '../bus/connection.ts';

/** When a credential received at `receivedAtMs` should be renewed: past half its lifetime. Pure. */
export function renewalDue(c: { expiresAt: string }, receivedAtMs: number, nowMs: number): boolean {
  const expires = Date.parse(c.expiresAt);
  if (!Number.isFinite(expires)) return true;
  return nowMs >= receivedAtMs + (expires - receivedAtMs) / 2;
}

/**
 * When to move a live bus connection onto a renewed credential, given the expiry of the one it
 * connected with: at a random point (`random` in [0, 1)) of the first half of what that one has left.
 * nats-server closes a connection when the JWT it authenticated with expires, whatever the relay holds
 * by then; moving first keeps that from happening, and relays whose credentials were issued together (a
 * fleet admitted at once) do not all reconnect in the same second. Null when it has expired already
 * (the server has closed or is closing the connection, and the reconnect reads the newest). Pure.
 */
export function credentialMoveDelay(connectedExpiresAt: string, nowMs: number, random: number): number | null {
  const left = Date.parse(connectedExpiresAt) - nowMs;
  if (!Number.isFinite(left) || left <= 0) return null;
  return Math.floor((Math.min(Math.max(random, 0), 1) * left) / 2);
}

/**
 * The relay's NATS identity (docs/security.md, "The bus"): an nkey made at first start (STATE_DIR/nats.nk,
 * 0600; its public key goes to the control plane at admission) and the user JWT the control plane
 * issued for it, renewed through the heartbeat. The current JWT and the seed are also written as
 * STATE_DIR/nats.creds (0600), what NATS tools read, e.g. to check the relay's permissions by hand.
 */
export interface RelayBusIdentity {
  /** The nkey's public key (U…), sent at admission. */
  busKey: string;
  /** Take a credential from the control plane (registration or heartbeat). */
  update(c: BusCredential, nowMs: number): void;
  /** Told, at every update that replaces a credential, the one replaced (the live connection may still use it). */
  onReplaced(listener: (previous: BusCredential) => void): void;
  /** Whether the heartbeat should ask for a fresh JWT. */
  renewalDue(nowMs: number): boolean;
  /** How the relay connects: with the current JWT at every (re)connect. */
  auth(relayId: string): BusAuth;
  readonly credential: BusCredential | null;
}

function loadOrCreateSeed(file: string): string {
  const seed = readPrivateKeyFile(file);
  if (seed !== null) {
    try {
      if (!seed.startsWith('SU')) throw new Error('not a user seed');
      publicKeyOfSeed(seed);
    } catch {
      throw new Error(`${file} is not a NATS user nkey seed (SU…); remove it to make a new one`);
    }
    return seed;
  }
  const created = createUserKey().seed;
  writeNewPrivateKeyFile(file, created);
  return created;
}

export function relayBusIdentity(stateDir: string): RelayBusIdentity {
  const seed = loadOrCreateSeed(join(stateDir, 'nats.nk'));
  const credsFile = join(stateDir, 'nats.creds');
  let credential: BusCredential | null = null;
  let receivedAt = 0;
  let creds: Uint8Array | null = null;
  let replaced: ((previous: BusCredential) => void) | null = null;
  return {
    busKey: publicKeyOfSeed(seed),
    update(c, nowMs) {
      const previous = credential;
      credential = c;
      receivedAt = nowMs;
      const text = credsText(c.jwt, seed);
      creds = new TextEncoder().encode(text);
      const tmp = `${credsFile}.new`;
      writeFileSync(tmp, text, { mode: 0o600 });
      renameSync(tmp, credsFile);
      if (previous && previous.jwt !== c.jwt) replaced?.(previous);
    },
    onReplaced(listener) {
      replaced = listener;
    },
    renewalDue: (nowMs) => credential !== null && renewalDue(credential, receivedAt, nowMs),
    auth: (relayId) => ({
      kind: 'creds',
      creds: () => {
        if (!creds) throw new Error('no NATS credential from the control plane yet');
        return creds;
      },
      inboxPrefix: inboxPrefixFor({ kind: 'relay', relayId }),
    }),
    get credential() {
      return credential;
    },
  };
}
