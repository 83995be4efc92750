import { describe, expect, it } from 'vitest';
import { mintRelayToken, serviceRoleKey, signJwt, verifyJwt } from '../../src/control-plane/jwt.ts';
import { authenticate, authorizeRelay, verifyHs256 } from '../../supabase/functions/_shared/jwt.ts';

const JTI = '6f1c1e2a-4b7d-4c1e-9a51-3d2f0b8e7c11';

const SECRET = 'a-test-secret-that-is-long-enough-for-hs256';
const NOW = 1_800_000_000;
const ISS = 'https://project.supabase.co/auth/v1';
const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');

/** Both verifiers (the gateway's node:crypto one, the functions' WebCrypto one) agree on every token. */
async function both(token: string, now = NOW): Promise<[boolean, boolean]> {
  const gateway = (await verifyJwt(token, SECRET, now)).ok;
  const fn = await verifyHs256(token, SECRET, now).then(
    () => true,
    () => false,
  );
  return [gateway, fn];
}

describe('HS256 JWTs', () => {
  it('signs tokens both verifiers accept, with the claims intact', async () => {
    const t = await signJwt({ role: 'service_role', iat: NOW }, SECRET);
    expect(await both(t)).toEqual([true, true]);
    expect(await verifyJwt(t, SECRET, NOW)).toEqual({ ok: true, claims: { role: 'service_role', iat: NOW } });
    expect(await verifyHs256(t, SECRET, NOW)).toEqual({ role: 'service_role', iat: NOW });
  });

  it.each<[string, string | Promise<string>, number?]>([
    ['wrong secret', signJwt({ role: 'service_role' }, 'another-secret-another-secret-another')],
    ['expired', signJwt({ role: 'service_role', exp: NOW }, SECRET)],
    ['expired long ago', signJwt({ role: 'service_role', exp: NOW - 3600 }, SECRET)],
    ['exp not a number', signJwt({ role: 'service_role', exp: 'tomorrow' }, SECRET)],
    ['not yet valid', signJwt({ role: 'service_role', nbf: NOW + 3600 }, SECRET)],
    ['alg none', `${b64({ alg: 'none' })}.${b64({ role: 'service_role' })}.`],
    [
      'alg HS512 label',
      signJwt({ role: 'service_role' }, SECRET).then((s) => {
        const t = s.split('.');
        return `${b64({ alg: 'HS512' })}.${t[1]}.${t[2]}`;
      }),
    ],
    [
      'tampered claims',
      signJwt({ role: 'relay', relay_id: 'a', exp: NOW + 60 }, SECRET).then((s) => {
        const t = s.split('.');
        return `${t[0]}.${b64({ role: 'service_role' })}.${t[2]}`;
      }),
    ],
    ['two parts', 'abc.def'],
    ['garbage', 'not-a-jwt'],
    ['bad base64', '###.###.###'],
    ['claims not JSON', signJwt({}, SECRET).then((s) => s.replace(/^[^.]+\.[^.]+/, `${b64({ alg: 'HS256' })}.${Buffer.from('nope').toString('base64url')}`))],
  ])('both refuse: %s', async (_what, token, now) => {
    expect(await both(await token, now)).toEqual([false, false]);
  });

  it('mints relay tokens bound to one relay id with an expiry', async () => {
    const t = await mintRelayToken('relay-a', 600, SECRET, NOW, JTI);
    const r = await verifyJwt(t, SECRET, NOW);
    expect(r).toEqual({ ok: true, claims: { role: 'relay', relay_id: 'relay-a', jti: JTI, iss: 'relay-core', iat: NOW, exp: NOW + 600 } });
    // Each token its own id, by which it alone is revoked.
    const ids = await Promise.all(
      [1, 2].map(
        async () => ((await verifyJwt(await mintRelayToken('relay-a', 600, SECRET, NOW), SECRET, NOW)) as unknown as { claims: { jti: string } }).claims.jti,
      ),
    );
    expect(ids[0]).toMatch(/^[0-9a-f-]{36}$/);
    expect(ids[0]).not.toBe(ids[1]);
    expect((await verifyJwt(t, SECRET, NOW + 600)).ok).toBe(false);
    expect(() => mintRelayToken('relay-a', 0, SECRET)).toThrow();
    expect(await verifyJwt(await serviceRoleKey(SECRET, NOW), SECRET, NOW + 10 * 365 * 86400)).toMatchObject({
      ok: true,
      claims: { role: 'service_role', iss: 'relay-core' },
    });
  });
});

describe('who may call the functions', () => {
  const bearer = async (claims: Record<string, unknown>) => `Bearer ${await signJwt(claims, SECRET)}`;

  it('knows the service role and relays', async () => {
    expect(await authenticate(await bearer({ role: 'service_role' }), SECRET, NOW, ISS)).toEqual({ role: 'service_role' });
    expect(
      await authenticate(await bearer({ role: 'relay', relay_id: 'relay-a', jti: JTI.toUpperCase(), iss: 'relay-core', exp: NOW + 5 }), SECRET, NOW, ISS),
    ).toEqual({
      role: 'relay',
      relayId: 'relay-a',
      jti: JTI,
    });
    expect(await authenticate(`bearer   ${await signJwt({ role: 'service_role' }, SECRET)}`, SECRET, NOW, ISS)).toEqual({ role: 'service_role' });
  });

  it.each<[string, string | null | Promise<string>]>([
    ['no header', null],
    ['not Bearer', `Basic ${Buffer.from('a:b').toString('base64')}`],
    ['anon role', bearer({ role: 'anon' })],
    ['authenticated role', bearer({ role: 'authenticated', sub: 'u' })],
    ['no role', bearer({})],
    ['relay token without exp', bearer({ role: 'relay', relay_id: 'relay-a' })],
    ['relay token without relay_id', bearer({ role: 'relay', exp: NOW + 5 })],
    ['relay token with a bad relay_id', bearer({ role: 'relay', relay_id: 'Relay A', exp: NOW + 5 })],
    ['relay token without a jti', bearer({ role: 'relay', relay_id: 'relay-a', iss: 'relay-core', exp: NOW + 5 })],
    ['relay token with a jti that is not a UUID', bearer({ role: 'relay', relay_id: 'relay-a', jti: 'one', iss: 'relay-core', exp: NOW + 5 })],
  ])('401 for %s', async (_what, header) => {
    await expect(authenticate(await header, SECRET, NOW, ISS)).rejects.toMatchObject({ status: 401, code: 'unauthorized' });
  });

  it('403 for a relay token used for another relay', () => {
    expect(() => authorizeRelay({ role: 'relay', relayId: 'relay-a', jti: JTI }, 'relay-b')).toThrow(
      expect.objectContaining({ status: 403, code: 'forbidden' }),
    );
    expect(() => authorizeRelay({ role: 'relay', relayId: 'relay-a', jti: JTI }, 'relay-a')).not.toThrow();
    expect(() => authorizeRelay({ role: 'service_role' }, 'relay-b')).not.toThrow();
  });
});
