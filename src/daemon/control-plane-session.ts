import { existsSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { lookup } from 'node:dns/promises';
import { join } from 'node:path';
import { fromPromise } from 'xstate';
import { sign, type KeyObject } from 'node:crypto';
import { type RegisterRequest, RegisterRequestSchema, type RegisterResponse } from '../contract/api-relays.ts';
import { signRegistration } from '../contract/registration-proof.ts';
import type { Logger } from '../lib/logger.ts';
import { generateWgKeyPair, loadOrCreateWgKey, loadWgKey } from '../lib/wg-keys.ts';
import type { BusSession } from './bus-session.ts';
import type { RelayConfig } from './config.ts';
import type { SubmitMeasurementRequest, SubmitMeasurementResponse, SubmitReceiptsRequest, SubmitReceiptsResponse } from '../contract/api-pob.ts';
import { ControlPlaneClient, ControlPlaneError, type RetryPolicy } from './control-plane-client.ts';
import { natsDenyCidrs } from './control-plane-deny.ts';
import { heartbeatActor } from './heartbeat.ts';
import type { RelayMetrics } from './relay-metrics.ts';
import { relayBusIdentity } from './bus-credential.ts';
import type { BusAuth } from '../bus/connection.ts';

/** Every address of a name, both families. */
const lookupAll = async (host: string) => (await lookup(host, { all: true })).map((a) => a.address);

/**
 * The relay's side of the control plane: its WireGuard key (loaded or made at start, rotated on
 * request), admission, heartbeats, deregistration and session confirmations. It brings the bus up with
 * the first admission and keeps clients from the NATS servers each admission hands out.
 */
export interface ControlPlaneSession {
  /** The private key's file in the state directory (what WireGuard devices are given). */
  keyFile: string;
  /** The public key the relay holds: a rotation's new one once staged on the devices (or, for a relay not serving, once admitted). */
  publicKey(): string;
  /** The relay actor's `register` actor. */
  register: ReturnType<typeof fromPromise<RegisterResponse, { request: RegisterRequest }>>;
  /** The relay actor's `heartbeat` actor. */
  heartbeat: ReturnType<typeof heartbeatActor>;
  /** The relay actor's `deregister` actor; the relay's topology consumer goes with it. */
  deregister: ReturnType<typeof fromPromise<{ revision: number }, { relayId: string }>>;
  /** Tell the control plane (in the background, logged) that the entry steers a session to `exitId`. */
  confirm(sessionId: string, exitId: string): void;
  /**
   * Make a new WireGuard key to be registered at the next registration (the caller then resyncs the
   * relay). Returns its public key; a rotation already pending is kept (one at a time). For a relay that
   * is not serving: its next registration announces the key, and its devices take it after.
   */
  rotateKey(): string;
  /**
   * A serving relay's rotation (docs/security.md, "Rotation"): a new key replaces the key file at once,
   * the old one kept as `wg.key.previous` (0600) until the control plane holds the new one. The caller
   * puts it on the devices (KEY_STAGED), then resyncs; the registration announces it. A registration
   * the control plane refuses, or does not answer, puts the old key back (the next one registers it,
   * and the devices follow the view). A relay that stopped in between announces the staged key at its
   * next start. Null when a rotation is already under way (one at a time).
   */
  stageKey(): { publicKey: string; previousPublicKey: string } | null;
  /**
   * Called when a staged key is given up on and the old one is back in the key file (`publicKey`, the
   * old key; `previousPublicKey`, the one given up): the caller stages it on the devices again.
   */
  onKeyRestored(listener: (k: { publicKey: string; previousPublicKey: string }) => void): void;
  /** The receipt epoch's length the last registration gave (null: none yet, or a control plane without receipts). */
  receiptEpochSeconds(): number | null;
  /** Hand in an epoch's Proof-of-Bandwidth receipts. */
  submitReceipts(req: SubmitReceiptsRequest): Promise<SubmitReceiptsResponse>;
  /** Hand in this relay's signed report of a capacity measurement. */
  submitMeasurement(req: SubmitMeasurementRequest): Promise<SubmitMeasurementResponse>;
}

/**
 * The registration as sent: the request with the relay's signature by its identity key over what it
 * sets (registration-proof.ts), so that the control plane knows a token alone did not send it.
 */
export async function signedRegistration(request: RegisterRequest, identityKey: KeyObject, nowSeconds: number): Promise<RegisterRequest> {
  const { proof: _, ...body } = request;
  const fields = RegisterRequestSchema.parse(body);
  return { ...body, proof: await signRegistration(fields, nowSeconds, (data) => sign(null, data, identityKey)) };
}

export function controlPlaneSession(
  cfg: RelayConfig,
  log: Logger,
  bus: Pick<BusSession, 'connect' | 'deleteConsumer' | 'credentialReplaced'>,
  identityKey: KeyObject,
  metrics: Pick<RelayMetrics, 'heartbeat'> | null = null,
  /** The client's retries (tests shorten them). */
  retry?: RetryPolicy,
): ControlPlaneSession {
  const keyFile = join(cfg.stateDir, 'wg.key');
  const previousFile = `${keyFile}.previous`;
  let key = loadOrCreateWgKey(keyFile);
  let pendingKey: { privateKey: string; publicKey: string } | null = null;
  // A staged key the control plane may not hold yet (a rotation a stop interrupted): the key file has the
  // new key, `wg.key.previous` the old one, and the registration announces the new one (rotateKey).
  let staged: { privateKey: string; publicKey: string } | null = existsSync(previousFile) ? loadWgKey(previousFile) : null;
  // Staged by this run (its links are down until the key is announced) rather than found at start.
  let stagedHere = false;
  // The next registration says rotateKey whatever its key: after a rotation given up on for want of an
  // answer, the control plane may hold either key (the answer may be what was lost).
  let announce = false;
  if (staged) log.warn({ publicKey: key.publicKey, previousPublicKey: staged.publicKey }, 'a staged WireGuard key rotation is announced again');
  if (cfg.rotateKey && !staged) {
    pendingKey = generateWgKeyPair();
    log.info({ publicKey: pendingKey.publicKey }, 'rotating WireGuard key');
  } else if (key.created) {
    log.info({ publicKey: key.publicKey, keyFile }, 'generated WireGuard key');
  }
  const writeKey = (file: string, privateKey: string) => {
    const tmp = `${file}.new`;
    writeFileSync(tmp, privateKey + '\n', { mode: 0o600 });
    renameSync(tmp, file);
  };
  let restored: ((k: { publicKey: string; previousPublicKey: string }) => void) | null = null;
  // A rotation given up on: the old key back in the key file, and on the devices (the listener stages
  // it; the links come back at once). Refused, it is over; unanswered, the next registration announces
  // the old key again (rotateKey: a no-op if the control plane never took the new one).
  const unstage = (why: string, refused: boolean) => {
    if (!staged) return;
    const givenUp = key.publicKey;
    log.error(
      { publicKey: key.publicKey, previousPublicKey: staged.publicKey, reason: why, refused },
      refused ? 'WireGuard key rotation refused: the previous key is restored' : 'WireGuard key rotation not answered: the previous key is restored',
    );
    writeKey(keyFile, staged.privateKey);
    key = { ...staged, created: false };
    rmSync(previousFile, { force: true });
    staged = null;
    stagedHere = false;
    announce = !refused;
    restored?.({ publicKey: key.publicKey, previousPublicKey: givenUp });
  };
  const identity = relayBusIdentity(cfg.stateDir);
  identity.onReplaced((previous) => bus.credentialReplaced(previous));
  const client = new ControlPlaneClient({
    url: cfg.controlPlaneUrl,
    key: cfg.token,
    logger: log.child({ component: 'control-plane-client' }),
    ...(retry ? { retry } : {}),
  });
  let receiptEpochSeconds: number | null = null;

  return {
    keyFile,
    publicKey: () => key.publicKey,
    register: fromPromise(async ({ input }) => {
      const publicKey = pendingKey?.publicKey ?? key.publicKey;
      const request = { ...input.request, publicKey, rotateKey: pendingKey !== null || staged !== null || announce, busKey: identity.busKey };
      // Signed for each attempt: retries against a slow control plane never send a stale proof.
      let reg: RegisterResponse;
      try {
        reg = await client.register(() => signedRegistration(request, identityKey, Math.floor(Date.now() / 1000)));
      } catch (e) {
        // A refusal ends the rotation. A serving relay's links are down while its staged key is not
        // announced: it gives the rotation up when the control plane does not answer either. At start
        // (a rotation a stop interrupted) it keeps trying: the control plane may hold the new key.
        const refused = e instanceof ControlPlaneError && e.kind === 'refused';
        if (refused || stagedHere) unstage((e as Error).message, refused);
        throw e;
      }
      receiptEpochSeconds = reg.receiptEpochSeconds ?? null;
      if (pendingKey && reg.relay.publicKey === pendingKey.publicKey) {
        // Only now that the control plane holds the new key does it replace the old one on disk.
        writeKey(keyFile, pendingKey.privateKey);
        key = { ...pendingKey, created: false };
        log.info({ publicKey: key.publicKey }, 'WireGuard key rotated');
        pendingKey = null;
      }
      announce = false;
      if (staged && reg.relay.publicKey === key.publicKey) {
        rmSync(previousFile, { force: true });
        staged = null;
        stagedHere = false;
        log.info({ publicKey: key.publicKey }, 'WireGuard key rotated');
      }
      // NATS decentralized auth: the JWT issued for our nkey; token mode: the token; else none.
      let auth: BusAuth = { kind: 'none' };
      if (reg.bus.credential) {
        identity.update(reg.bus.credential, Date.now());
        auth = identity.auth(cfg.relayId);
      } else if (reg.bus.token) auth = { kind: 'token', token: reg.bus.token };
      bus.connect(reg, auth);
      // Clients are kept from the NATS servers this registration hands out (the egress policy's `service`).
      const nats = await natsDenyCidrs(cfg.natsServers ?? reg.bus.servers, lookupAll);
      for (const w of nats.warnings) log.warn(w);
      return { ...reg, serviceCidrs: nats.cidrs };
    }),
    heartbeat: heartbeatActor(client, log, identity, Date.now, metrics),
    deregister: fromPromise(async ({ input }) => {
      const r = await client.deregister(input.relayId);
      // Gone from the topology: its durable consumer has nothing left to deliver.
      await bus.deleteConsumer(input.relayId);
      return r;
    }),
    onKeyRestored: (listener) => {
      restored = listener;
    },
    stageKey: () => {
      if (staged || pendingKey) return null;
      const next = generateWgKeyPair();
      writeKey(previousFile, key.privateKey);
      writeKey(keyFile, next.privateKey);
      staged = { privateKey: key.privateKey, publicKey: key.publicKey };
      stagedHere = true;
      key = { ...next, created: false };
      log.info({ publicKey: next.publicKey, previousPublicKey: staged.publicKey }, 'rotating WireGuard key: staged on the devices before it is announced');
      return { publicKey: next.publicKey, previousPublicKey: staged.publicKey };
    },
    rotateKey: () => {
      if (staged) return key.publicKey;
      if (!pendingKey) {
        pendingKey = generateWgKeyPair();
        log.info({ publicKey: pendingKey.publicKey }, 'rotating WireGuard key');
      }
      return pendingKey.publicKey;
    },
    receiptEpochSeconds: () => receiptEpochSeconds,
    submitReceipts: (req) => client.submitReceipts(req),
    submitMeasurement: (req) => client.submitMeasurement(req),
    confirm: (sessionId, exitId) => {
      client.clientReady(cfg.relayId, sessionId, exitId).then(
        (r) => log.info({ sessionId, exitId, confirmed: r.confirmed }, 'session confirmed to the control plane'),
        (e) => log.warn({ sessionId, exitId, err: String((e as Error).message ?? e) }, 'could not confirm the session to the control plane'),
      );
    },
  };
}
