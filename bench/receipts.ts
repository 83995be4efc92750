/**
 * Proof-of-Bandwidth receipts (issue 17, "Performance"): what signing and checking an epoch's receipts
 * costs at 1,000 peers per relay (a relay of a 1,001-relay mesh), in receipts per second:
 *
 *  - sign: the relay's side: the Merkle root of the epoch's receipts (SHA-256 over WebCrypto, as the
 *    relay runs it) and one Ed25519 signature over it;
 *  - verify: the control plane's side (submit-receipts): the signature and the root recomputed from the
 *    receipts;
 *  - prove and check one receipt's inclusion (`pob verify --peer`);
 *  - settle: an epoch of N relays' receipts (N × (N − 1) directions) with settleEpoch.
 *
 * Reference, side by side in the same run: hashing the same receipts' leaf texts with node:crypto's
 * synchronous SHA-256 (the floor of any tree over them). Median of --runs runs.
 *
 *   npm run bench:receipts -- [--peers 1000] [--runs 20] [--settle 100,300]
 */
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { inclusionProof, type LinkReceipt, receiptText, signEpoch, verifyEpoch, verifyInclusion } from '../src/contract/pob-receipts.ts';
import { settleEpoch } from '../src/contract/pob-settle.ts';

const { values } = parseArgs({
  options: { peers: { type: 'string', default: '1000' }, runs: { type: 'string', default: '20' }, settle: { type: 'string', default: '100,300' } },
});
const PEERS = Number(values.peers);
const RUNS = Number(values.runs);
const out = (s: string) => process.stdout.write(`${s}\n`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const identityKey = Buffer.from(publicKey.export({ format: 'der', type: 'spki' }).subarray(12)).toString('base64');
const signer = (d: Uint8Array) => sign(null, d, privateKey);
const receipts: LinkReceipt[] = Array.from({ length: PEERS }, (_, i) => ({
  peerId: `relay-${String(i).padStart(5, '0')}`,
  txBytes: 1_000_000_000 + i * 7919,
  rxBytes: 2_000_000_000 + i * 104_729,
}));

async function time(f: () => Promise<unknown> | unknown): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    await f();
    ms.push(performance.now() - t0);
  }
  return median(ms);
}

const epoch = 5_987_000;
const root = await signEpoch('relay-a', epoch, 300, receipts, signer);
const proof = await inclusionProof('relay-a', epoch, receipts, PEERS >> 1);
const reference = await time(() => {
  for (const r of receipts)
    createHash('sha256')
      .update(receiptText('relay-a', epoch, r))
      .digest();
});
const signMs = await time(() => signEpoch('relay-a', epoch, 300, receipts, signer));
const verifyMs = await time(async () => {
  const v = await verifyEpoch(identityKey, root, receipts);
  if (!v.ok) throw new Error(v.message);
});
const proveMs = await time(async () => {
  const p = await inclusionProof('relay-a', epoch, receipts, PEERS >> 1);
  if (!(await verifyInclusion('relay-a', epoch, receipts[PEERS >> 1]!, p, root.root))) throw new Error('proof failed');
});
const checkMs = await time(async () => {
  if (!(await verifyInclusion('relay-a', epoch, receipts[PEERS >> 1]!, proof, root.root))) throw new Error('proof failed');
});

out(`receipts of one relay with ${PEERS} peers, median of ${RUNS} runs (${new Date().toISOString().slice(0, 10)}, node ${process.version}):`);
out('');
out('| step | ms | receipts/s | / reference |');
out('|---|---|---|---|');
const row = (what: string, ms: number) =>
  out(`| ${what} | ${ms.toFixed(2)} | ${Math.round((PEERS / ms) * 1000).toLocaleString('en')} | ${(ms / reference).toFixed(2)} |`);
row('reference: SHA-256 of each leaf text, node:crypto', reference);
row('sign: Merkle root + Ed25519 (relay)', signMs);
row('verify: signature + root from receipts (control plane)', verifyMs);
out(`| prove and check one receipt (${proof.length} steps) | ${proveMs.toFixed(2)} | | |`);
out(`| check one inclusion proof | ${checkMs.toFixed(3)} | | |`);

for (const n of values.settle.split(',').map(Number)) {
  const reports = new Map<string, LinkReceipt[]>();
  const ids = Array.from({ length: n }, (_, i) => `relay-${String(i).padStart(5, '0')}`);
  for (const id of ids)
    reports.set(
      id,
      ids.filter((p) => p !== id).map((peerId, k) => ({ peerId, txBytes: 1_000_000 + k, rxBytes: 1_000_000 + k })),
    );
  const capacity = new Map(ids.map((id) => [id, 10 ** 8]));
  const ms = await time(() => settleEpoch({ epochSeconds: 300, reports, capacity }));
  out(
    `settle an epoch of ${n} relays (${(n * (n - 1)).toLocaleString('en')} receipts): ${ms.toFixed(1)} ms, ${Math.round(((n * (n - 1)) / ms) * 1000).toLocaleString('en')} receipts/s`,
  );
}
