// A relay's proof that a registration comes from the holder of its identity key (docs/security.md,
// "Rotation"). A relay token alone may not move a relay's traffic: every registration of a relay with a
// recorded identity key carries an Ed25519 signature by that key over what the registration sets (its
// WireGuard key, endpoint, NATS key, identity key...) and the time it was signed. WebCrypto only, so the
// Deno functions and Node share it. Pure but for the clock the caller passes.
import { base64ToBytes, bytesToBase64 } from './base64.ts';

/** How far the signing time may be from the control plane's clock (either way), in seconds. */
export const PROOF_WINDOW_SECONDS = 300;

const DOMAIN = 'relaynet-register-v1';

/** The fields of a registration the proof covers: everything it changes in the registry. */
export interface ProvenFields {
  relayId: string;
  name: string;
  region: string;
  publicKey: string;
  endpoint: string;
  exitIpv6: boolean;
  busKey?: string | undefined;
  identityKey?: string | undefined;
}

/** What the relay sends as `proof`. */
export interface RegistrationProof {
  /** Unix seconds when the relay signed. */
  at: number;
  /** base64 Ed25519 signature over {@link proofText}. */
  signature: string;
}

/** The exact text signed: a domain tag, every proven field and the time, as one JSON array. */
export function proofText(f: ProvenFields, at: number): string {
  return JSON.stringify([DOMAIN, f.relayId, f.name, f.region, f.publicKey, f.endpoint, f.exitIpv6, f.busKey ?? null, f.identityKey ?? null, at]);
}

/**
 * The identity key a registration must be signed with: the one the registry holds for the relay (a new
 * identity key is accepted only on the old one's word), else the one the request presents (proof of
 * possession at first admission); null: a relay without identity (from before identities), no proof.
 */
export function proofSigner(recorded: string | null | undefined, presented: string | undefined): string | null {
  return recorded ?? presented ?? null;
}

export type ProofVerdict = { ok: true } | { ok: false; reason: 'missing' | 'stale' | 'bad-signature'; message: string };

type Key = Awaited<ReturnType<typeof crypto.subtle.importKey>>;

async function importIdentityKey(b64: string): Promise<Key | null> {
  const raw = base64ToBytes(b64);
  if (raw?.length !== 32) return null;
  try {
    return await crypto.subtle.importKey('raw', new Uint8Array(raw), { name: 'Ed25519' }, false, ['verify']);
  } catch {
    return null;
  }
}

/** Check `proof` for the registration `f`, signed by `signer`, against the clock `nowSeconds`. */
export async function verifyRegistrationProof(
  signer: string,
  f: ProvenFields,
  proof: RegistrationProof | undefined,
  nowSeconds: number,
): Promise<ProofVerdict> {
  if (!proof) {
    return {
      ok: false,
      reason: 'missing',
      message: `relay ${f.relayId} has an identity key: a registration must carry its signature (proof); a relay token alone cannot change a relay`,
    };
  }
  if (Math.abs(proof.at - nowSeconds) > PROOF_WINDOW_SECONDS) {
    return {
      ok: false,
      reason: 'stale',
      message: `proof signed at ${proof.at}, the control plane's time is ${nowSeconds}: more than ${PROOF_WINDOW_SECONDS} s apart (check the relay's clock)`,
    };
  }
  const key = await importIdentityKey(signer);
  const sig = base64ToBytes(proof.signature);
  const good =
    key !== null &&
    sig?.length === 64 &&
    (await crypto.subtle.verify({ name: 'Ed25519' }, key, new Uint8Array(sig), new TextEncoder().encode(proofText(f, proof.at))));
  if (!good) {
    return {
      ok: false,
      reason: 'bad-signature',
      message: `proof is not a signature by relay ${f.relayId}'s identity key ${signer} over this registration (a lost identity key: the operator clears it with relay-core relay forget-identity)`,
    };
  }
  return { ok: true };
}

/** Sign a registration with an identity key given as a WebCrypto or Node private key signer. */
export async function signRegistration(f: ProvenFields, at: number, sign: (data: Uint8Array) => Uint8Array | Promise<Uint8Array>): Promise<RegistrationProof> {
  return { at, signature: bytesToBase64(await sign(new TextEncoder().encode(proofText(f, at)))) };
}
