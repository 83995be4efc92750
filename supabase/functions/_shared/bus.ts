// A relay's NATS user JWT (docs/security.md, "The bus"), issued by register-server at admission and
// by heartbeat when the relay asks to renew: for the nkey the relay registered, with the permissions
// of a relay (its own subjects and consumer only), expiring after RELAYNET_NATS_USER_TTL_SECONDS.
import type { BusCredential } from '../../../src/contract/api-relays.ts';
import { isUserPublicKey, mintUserJwt } from '../../../src/contract/bus-auth.ts';
import type { FunctionEnv } from './env.ts';
import { badRequest } from './http.ts';

/**
 * The credential for `busKey`, or null in token mode or when the relay sent no key (it gets no NATS
 * access then: a bus with auth refuses it, and it says so). A key with a bad checksum is a 400.
 */
export async function relayBusCredential(
  env: FunctionEnv,
  relayId: string,
  busKey: string | null | undefined,
  now = Date.now(),
): Promise<BusCredential | null> {
  const issuer = env.natsIssuer;
  if (!issuer) return null;
  if (!busKey) return null;
  if (!isUserPublicKey(busKey)) throw badRequest('busKey', 'busKey is not a valid NATS user public key (bad checksum)');
  const nowSeconds = Math.floor(now / 1000);
  const jwt = await mintUserJwt(issuer, { kind: 'relay', relayId }, busKey, { nowSeconds, ttlSeconds: issuer.ttlSeconds });
  return { jwt, expiresAt: new Date((nowSeconds + issuer.ttlSeconds) * 1000).toISOString() };
}
