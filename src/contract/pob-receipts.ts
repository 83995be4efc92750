// Traffic receipts of Proof-of-Bandwidth (issue 17; docs/proof-of-bandwidth.md). Once per epoch a
// relay counts, for each mesh link, the bytes it sent to and received from that peer (its WireGuard
// counters' growth over the epoch), puts one receipt per peer in a Merkle tree and signs the tree's
// root with its identity key. The control plane credits each direction of a link with what both of its
// ends signed (pob-settle.ts); anyone holding a receipt, its inclusion proof and the signed root can
// check the receipt was part of what the relay signed. WebCrypto only, so the Deno functions and Node
// share it. Pure.
import { base64ToBytes, bytesToBase64 } from './base64.ts';

/** One link's bytes in one epoch, as the reporting relay counted them. */
export interface LinkReceipt {
  peerId: string;
  /** Bytes this relay sent to the peer over the link (WireGuard's transfer_tx growth). */
  txBytes: number;
  /** Bytes this relay received from the peer over the link (transfer_rx growth). */
  rxBytes: number;
}

/** What a relay signs once per epoch: its receipts' Merkle root. */
export interface EpochRoot {
  relayId: string;
  /** The epoch's number: its start (Unix seconds) divided by `epochSeconds`. */
  epoch: number;
  epochSeconds: number;
  /** How many receipts (leaves) the tree holds. */
  count: number;
  /** The Merkle root, hex of SHA-256. */
  root: string;
  /** base64 Ed25519 signature by the relay's identity key over {@link rootText}. */
  signature: string;
}

/** A sibling on the way from a leaf to the root: its hash, and whether it is on the left. */
export interface ProofStep {
  left: boolean;
  hash: string;
}

const RECEIPT_DOMAIN = 'relaynet-pob-receipt-v1';
const ROOT_DOMAIN = 'relaynet-pob-root-v1';
// Leaves and inner nodes hash under different prefixes, so no inner node can pass for a receipt.
const LEAF = 0x00;
const NODE = 0x01;

/** The most receipts one root may hold: a relay's links, with room (the mesh is bounded far below). */
export const MAX_RECEIPTS = 65_536;

const enc = new TextEncoder();
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
const fromHex = (s: string): Uint8Array | null => {
  if (!/^[0-9a-f]{64}$/.test(s)) return null;
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = Number.parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
};

async function sha256(prefix: number, ...parts: Uint8Array[]): Promise<Uint8Array> {
  const len = parts.reduce((a, p) => a + p.length, 1);
  const buf = new Uint8Array(len);
  buf[0] = prefix;
  let at = 1;
  for (const p of parts) {
    buf.set(p, at);
    at += p.length;
  }
  return new Uint8Array(await crypto.subtle.digest('SHA-256', buf));
}

const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;

/** Why a receipt list cannot be signed or checked, or null when it is well formed. */
export function receiptsProblem(receipts: readonly LinkReceipt[]): string | null {
  if (!Array.isArray(receipts)) return 'receipts must be a list';
  if (receipts.length > MAX_RECEIPTS) return `${receipts.length} receipts: at most ${MAX_RECEIPTS}`;
  for (const [i, r] of receipts.entries()) {
    if (typeof r !== 'object' || r === null) return `receipt ${i}: not an object`;
    if (typeof r.peerId !== 'string' || r.peerId.length === 0 || r.peerId.length > 128) return `receipt ${i}: peerId must be 1-128 characters`;
    if (!isCount(r.txBytes) || !isCount(r.rxBytes)) return `receipt ${i} (${r.peerId}): byte counts must be non-negative safe integers`;
    if (i > 0 && receipts[i - 1]!.peerId >= r.peerId) return `receipt ${i} (${r.peerId}): receipts must be sorted by peerId, each peer once`;
  }
  return null;
}

/** The exact bytes of one receipt's leaf: a domain tag, the relay, the epoch and the receipt, as one JSON array. */
export function receiptText(relayId: string, epoch: number, r: LinkReceipt): string {
  return JSON.stringify([RECEIPT_DOMAIN, relayId, epoch, r.peerId, r.txBytes, r.rxBytes]);
}

/** The exact text a relay signs for an epoch. */
export function rootText(r: Omit<EpochRoot, 'signature'>): string {
  return JSON.stringify([ROOT_DOMAIN, r.relayId, r.epoch, r.epochSeconds, r.count, r.root]);
}

const leafHash = (relayId: string, epoch: number, r: LinkReceipt) => sha256(LEAF, enc.encode(receiptText(relayId, epoch, r)));

/**
 * The tree's levels, leaves first. A level of odd length carries its last node up unchanged (never
 * paired with itself, so no two receipt lists share a root by duplicating a leaf). An empty tree's
 * root is the hash of the leaf prefix alone.
 */
async function levels(relayId: string, epoch: number, receipts: readonly LinkReceipt[]): Promise<Uint8Array[][]> {
  const out: Uint8Array[][] = [await Promise.all(receipts.map((r) => leafHash(relayId, epoch, r)))];
  if (out[0]!.length === 0) return [[await sha256(LEAF)]];
  while (out.at(-1)!.length > 1) {
    const level = out.at(-1)!;
    const next: Promise<Uint8Array>[] = [];
    for (let i = 0; i < level.length; i += 2) next.push(i + 1 < level.length ? sha256(NODE, level[i]!, level[i + 1]!) : Promise.resolve(level[i]!));
    out.push(await Promise.all(next));
  }
  return out;
}

/** The Merkle root (hex) of a relay's receipts for an epoch. Throws on a malformed list. */
export async function receiptsRoot(relayId: string, epoch: number, receipts: readonly LinkReceipt[]): Promise<string> {
  const problem = receiptsProblem(receipts);
  if (problem) throw new Error(problem);
  return hex((await levels(relayId, epoch, receipts)).at(-1)![0]!);
}

/** The siblings from receipt `index`'s leaf to the root. */
export async function inclusionProof(relayId: string, epoch: number, receipts: readonly LinkReceipt[], index: number): Promise<ProofStep[]> {
  const problem = receiptsProblem(receipts);
  if (problem) throw new Error(problem);
  if (!Number.isInteger(index) || index < 0 || index >= receipts.length) throw new Error(`no receipt ${index} of ${receipts.length}`);
  const proof: ProofStep[] = [];
  let i = index;
  for (const level of (await levels(relayId, epoch, receipts)).slice(0, -1)) {
    const sibling = i ^ 1;
    if (sibling < level.length) proof.push({ left: sibling < i, hash: hex(level[sibling]!) });
    i >>= 1;
  }
  return proof;
}

/** Whether `receipt` (of `relayId`, `epoch`) is in the tree whose root is `root`, by `proof`. Never throws. */
export async function verifyInclusion(relayId: string, epoch: number, receipt: LinkReceipt, proof: readonly ProofStep[], root: string): Promise<boolean> {
  if (receiptsProblem([receipt]) !== null || !Array.isArray(proof) || proof.length > 64) return false;
  let h = await leafHash(relayId, epoch, receipt);
  for (const step of proof) {
    const sibling = typeof step?.hash === 'string' ? fromHex(step.hash) : null;
    if (!sibling || typeof step.left !== 'boolean') return false;
    h = step.left ? await sha256(NODE, sibling, h) : await sha256(NODE, h, sibling);
  }
  return hex(h) === root;
}

/** Sign an epoch's receipts: the root and its signature, with the identity key as a signer. */
export async function signEpoch(
  relayId: string,
  epoch: number,
  epochSeconds: number,
  receipts: readonly LinkReceipt[],
  sign: (data: Uint8Array) => Uint8Array | Promise<Uint8Array>,
): Promise<EpochRoot> {
  const unsigned = { relayId, epoch, epochSeconds, count: receipts.length, root: await receiptsRoot(relayId, epoch, receipts) };
  return { ...unsigned, signature: bytesToBase64(await sign(enc.encode(rootText(unsigned)))) };
}

export type RootVerdict = { ok: true } | { ok: false; reason: 'malformed' | 'bad-signature' | 'root-mismatch'; message: string };

/**
 * Check a signed root against the relay's identity key (base64 Ed25519 public key) and, when given,
 * against the receipts it claims to cover. Never throws.
 */
export async function verifyEpoch(identityKey: string, root: EpochRoot, receipts?: readonly LinkReceipt[]): Promise<RootVerdict> {
  if (
    typeof root?.relayId !== 'string' ||
    !Number.isSafeInteger(root.epoch) ||
    root.epoch < 0 ||
    !Number.isSafeInteger(root.epochSeconds) ||
    root.epochSeconds <= 0 ||
    !isCount(root.count) ||
    root.count > MAX_RECEIPTS ||
    typeof root.root !== 'string' ||
    fromHex(root.root) === null ||
    typeof root.signature !== 'string'
  )
    return { ok: false, reason: 'malformed', message: 'not an epoch root (relayId, epoch, epochSeconds, count, root as 64 hex, signature)' };
  const raw = base64ToBytes(identityKey);
  const sig = base64ToBytes(root.signature);
  let good = false;
  if (raw?.length === 32 && sig?.length === 64) {
    try {
      const key = await crypto.subtle.importKey('raw', new Uint8Array(raw), { name: 'Ed25519' }, false, ['verify']);
      good = await crypto.subtle.verify({ name: 'Ed25519' }, key, new Uint8Array(sig), enc.encode(rootText(root)));
    } catch {
      good = false;
    }
  }
  if (!good) return { ok: false, reason: 'bad-signature', message: `not a signature by ${root.relayId}'s identity key over its epoch ${root.epoch} root` };
  if (receipts) {
    const problem = receiptsProblem(receipts);
    if (problem) return { ok: false, reason: 'malformed', message: problem };
    if (receipts.length !== root.count || (await receiptsRoot(root.relayId, root.epoch, receipts)) !== root.root)
      return { ok: false, reason: 'root-mismatch', message: `the receipts are not those ${root.relayId} signed for epoch ${root.epoch}` };
  }
  return { ok: true };
}
