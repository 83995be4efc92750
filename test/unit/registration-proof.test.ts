import { generateKeyPairSync, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { RegisterRequestSchema } from '../../src/contract/api-relays.ts';
import { PROOF_WINDOW_SECONDS, proofSigner, proofText, verifyRegistrationProof } from '../../src/contract/registration-proof.ts';
import { signedRegistration } from '../../src/daemon/control-plane-session.ts';
import { decide } from '../../supabase/functions/_shared/admission.ts';

const NOW = 1_800_000_000;
const identity = () => {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(12);
  return { privateKey, publicKey: Buffer.from(raw).toString('base64') };
};
const A = identity();
const B = identity();
const wg = (n: number) => Buffer.alloc(32, n).toString('base64');
const request = (over: Record<string, unknown> = {}) => ({
  relayId: 'relay-a',
  name: 'A',
  region: 'eu',
  publicKey: wg(1),
  endpoint: '198.51.100.1:51820',
  identityKey: A.publicKey,
  ...over,
});
const valid = (body: unknown) => RegisterRequestSchema.parse(body);

describe('registration proof', () => {
  it("the relay's signed registration verifies with its identity key, and only with it", async () => {
    const body = await signedRegistration(request(), A.privateKey, NOW);
    const req = valid(body);
    expect(req.proof?.at).toBe(NOW);
    expect(await verifyRegistrationProof(A.publicKey, req, req.proof, NOW + 10)).toEqual({ ok: true });
    expect(await verifyRegistrationProof(B.publicKey, req, req.proof, NOW)).toMatchObject({ ok: false, reason: 'bad-signature' });
  });

  it('covers every field the registration sets: a changed key, endpoint, NATS key or identity breaks it', async () => {
    const signed = valid(await signedRegistration(request({ busKey: undefined }), A.privateKey, NOW));
    for (const change of [
      { publicKey: wg(2) },
      { endpoint: '198.51.100.66:51820' },
      { identityKey: B.publicKey },
      { busKey: 'UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4' },
      { name: 'B' },
      { region: 'us' },
      { exitIpv6: true },
      { relayId: 'relay-b' },
    ]) {
      const tampered = { ...signed, ...change };
      expect(await verifyRegistrationProof(A.publicKey, tampered, signed.proof, NOW), JSON.stringify(change)).toMatchObject({
        ok: false,
        reason: 'bad-signature',
      });
    }
  });

  it('refuses a missing proof, one signed outside the window and malformed signatures', async () => {
    const req = valid(await signedRegistration(request(), A.privateKey, NOW));
    expect(await verifyRegistrationProof(A.publicKey, req, undefined, NOW)).toMatchObject({ ok: false, reason: 'missing' });
    expect(await verifyRegistrationProof(A.publicKey, req, req.proof, NOW + PROOF_WINDOW_SECONDS + 1)).toMatchObject({ ok: false, reason: 'stale' });
    expect(await verifyRegistrationProof(A.publicKey, req, req.proof, NOW - PROOF_WINDOW_SECONDS - 1)).toMatchObject({ ok: false, reason: 'stale' });
    for (const signature of ['', 'AAAA', Buffer.alloc(64).toString('base64'), Buffer.alloc(65, 1).toString('base64'), '!!!']) {
      expect(await verifyRegistrationProof(A.publicKey, req, { at: NOW, signature }, NOW)).toMatchObject({ ok: false, reason: 'bad-signature' });
    }
    // A signer that is not a key at all is a refusal, not a crash.
    expect(await verifyRegistrationProof('not-a-key', req, req.proof, NOW)).toMatchObject({ ok: false, reason: 'bad-signature' });
  });

  it('a malformed proof field is a 400 naming proof', () => {
    for (const proof of [{ at: 'now', signature: 'x' }, { at: 1.5, signature: 'x' }, { at: 1 }, { at: 1, signature: 'x', extra: 1 }, 'proof']) {
      const r = RegisterRequestSchema.safeParse(request({ proof }));
      expect(r.success, JSON.stringify(proof)).toBe(false);
      expect(r.error?.issues[0]?.path[0]).toBe('proof');
    }
  });

  it('is signed by the recorded identity key, else by the presented one; a relay without identity needs none', () => {
    expect(proofSigner(A.publicKey, B.publicKey)).toBe(A.publicKey);
    expect(proofSigner(null, B.publicKey)).toBe(B.publicKey);
    expect(proofSigner(A.publicKey, undefined)).toBe(A.publicKey);
    expect(proofSigner(null, undefined)).toBeNull();
  });

  it('signs one exact text: a domain tag, the fields, the time', () => {
    const text = proofText(valid(request()), NOW);
    expect(JSON.parse(text)).toEqual(['relaynet-register-v1', 'relay-a', 'A', 'eu', wg(1), '198.51.100.1:51820', false, null, A.publicKey, NOW]);
    // The relay signs the text it sends; it did not sign another time.
    const sig = sign(null, Buffer.from(text), A.privateKey).toString('base64');
    expect(sig).toHaveLength(88);
  });
});

describe('register-server with a proof verdict', () => {
  const stored = {
    id: 'relay-a',
    name: 'A',
    region: 'eu',
    publicKey: wg(1),
    endpoint: '198.51.100.1:51820',
    identityKey: A.publicKey,
    status: 'active' as const,
  };
  it('refuses a rotation whose proof failed with 403 identity_proof naming proof, and writes nothing', () => {
    const d = decide(stored, valid(request({ publicKey: wg(2), rotateKey: true })), null, { ok: false, reason: 'missing', message: 'no proof' });
    expect(d).toEqual({ action: 'reject', events: [], refusal: { status: 403, error: 'identity_proof', field: 'proof', message: 'no proof' } });
  });
  it('rotates with a valid proof, or where none is needed (the operator)', () => {
    for (const proof of [{ ok: true } as const, null]) {
      const d = decide(stored, valid(request({ publicKey: wg(2), rotateKey: true })), null, proof);
      expect(d).toMatchObject({ action: 'readmit', keyRotated: true, events: [{ type: 'RelayKeyRotated', publicKey: wg(2), previousPublicKey: wg(1) }] });
    }
  });
});
