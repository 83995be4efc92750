import { credsAuthenticator } from '@nats-io/transport-node';
import { fromSeed } from '@nats-io/nkeys';
import { describe, expect, it } from 'vitest';
import { credsNonceAuthenticator, nkeySigner } from '../../src/bus/connection.ts';
import { createBusAuthority, createUserKey, credsText, mintUserJwt, publicKeyOfSeed } from '../../src/contract/bus-auth.ts';

const te = new TextEncoder();

async function relayCreds(relayId: string) {
  const a = createBusAuthority();
  const user = createUserKey();
  const issuer = { account: publicKeyOfSeed(a.accountSeed), signingSeed: a.accountSigningSeed };
  const jwt = await mintUserJwt(issuer, { kind: 'relay', relayId }, user.publicKey, { nowSeconds: 1_800_000_000, ttlSeconds: 3600 });
  return { text: credsText(jwt, user.seed), jwt, user };
}

describe('the bus connection’s nonce authenticator', () => {
  it('answers a nonce exactly as nats.js’s credsAuthenticator does, signing natively', async () => {
    const { text, jwt, user } = await relayCreds('relay-1');
    const creds = () => te.encode(text);
    const ours = credsNonceAuthenticator(creds);
    const theirs = credsAuthenticator(creds);
    for (const nonce of ['abc', 'nPjK3Gz0bWvU1yx9', 'x'.repeat(64)]) {
      const a = ours(nonce) as { jwt: string; nkey: string; sig: string };
      expect(a).toEqual(theirs(nonce));
      expect(a.jwt).toBe(jwt);
      expect(a.nkey).toBe(user.publicKey);
    }
    // No nonce (a server that asks for none): no signature, as nats.js.
    expect(ours(undefined)).toEqual(theirs(undefined));
    // The fast path is the one taken (a library that stopped exposing the raw seed would fall back, and this says so).
    expect(nkeySigner(fromSeed(te.encode(user.seed))).native).toBe(true);
  });

  it('reads the creds at every connect: a renewed JWT is used from the next one on', async () => {
    const first = await relayCreds('relay-2');
    const second = await relayCreds('relay-2');
    let text = first.text;
    const auth = credsNonceAuthenticator(() => te.encode(text));
    expect((auth('n1') as { jwt: string }).jwt).toBe(first.jwt);
    text = second.text;
    const after = auth('n1') as { jwt: string; nkey: string; sig: string };
    expect(after).toEqual(credsAuthenticator(() => te.encode(second.text))('n1'));
    expect(after.jwt).toBe(second.jwt);
  });

  it('refuses creds it cannot parse', () => {
    expect(() => credsNonceAuthenticator(() => te.encode('not creds'))('n')).toThrow(/unable to parse credentials/);
  });
});
