import { generateKeyPairSync, sign } from 'node:crypto';
import { join } from 'node:path';
import { execa } from 'execa';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_RECEIPTS_BODY_BYTES } from '../../src/contract/api-pob.ts';
import { type LinkReceipt, inclusionProof, signEpoch, verifyInclusion } from '../../src/contract/pob-receipts.ts';
import { startLocalControlPlane, type LocalControlPlane } from '../../src/control-plane/local.ts';
import { signedRegistration } from '../../src/daemon/control-plane-session.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts';
import { tempDir } from '../support/temp.ts';

/**
 * submit-receipts on real Deno behind the local gateway, on embedded PGlite and on PostgreSQL 15: a
 * relay hands in an epoch's receipts signed with its identity key; forged, mismatched, conflicting,
 * early, late and oversized submissions are refused with the reason, and nothing of them is stored.
 */
describe.each(['pglite', 'postgresql'] as const)('Proof-of-Bandwidth receipts on %s', (backend) => {
  const log = rootLogger({ test: `pob-${backend}` }, process.env.RELAYNET_LOG_LEVEL ?? 'warn');
  let tmp: ReturnType<typeof tempDir>;
  let pg: TestPostgres | null = null;
  let cp: LocalControlPlane;
  let sql: postgres.Sql;
  /** An Ed25519 identity as a relay makes one: its private key as a signer, and its base64 public key. */
  const newIdentity = () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const key = Buffer.from(publicKey.export({ format: 'der', type: 'spki' }).subarray(12)).toString('base64');
    return { privateKey, identityKey: key, signer: (data: Uint8Array) => sign(null, data, privateKey) };
  };
  const identity = newIdentity();
  const { identityKey, signer } = identity;
  const E = 300;
  // The epochs the tests hand in, fixed once: an epoch boundary passing during the run changes nothing.
  const E0 = Math.floor(Date.now() / 1000 / E) - 1;
  const lastClosed = () => E0;
  let token = '';

  async function call(fn: string, body: unknown, bearer = token) {
    const res = await fetch(`${cp.url}/functions/v1/${fn}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  }

  const receipts = (n: number): LinkReceipt[] =>
    Array.from({ length: n }, (_, i) => ({ peerId: `relay-p${String(i).padStart(4, '0')}`, txBytes: 1_000_000 + i, rxBytes: 2_000_000 + i }));
  /** A relay's epoch as submit-receipts takes it, signed by `by` (relay-a's identity unless given). */
  async function submission(epoch: number, rs: LinkReceipt[], over: Record<string, unknown> = {}, relayId = 'relay-a', by = signer) {
    const root = await signEpoch(relayId, epoch, E, rs, by);
    return { relayId, epoch, epochSeconds: E, root: root.root, signature: root.signature, receipts: rs, ...over };
  }
  /** Register relay `relayId` (public key byte `n`) with `id`'s identity, by its own token, as a relay does. */
  async function registerWithIdentity(relayId: string, n: number, id: ReturnType<typeof newIdentity>, bearer: string) {
    const reg = {
      relayId,
      name: relayId,
      region: 'test',
      publicKey: Buffer.alloc(32, n).toString('base64'),
      endpoint: `198.51.100.${n}:51820`,
      identityKey: id.identityKey,
    };
    return call('register-server', await signedRegistration(reg, id.privateKey, Math.floor(Date.now() / 1000)), bearer);
  }
  const stored = async (epoch: number) =>
    (await sql`select count(*)::int as n from relaynet.pob_receipts where relay_id = 'relay-a' and epoch = ${epoch}`)[0]!.n as number;

  beforeAll(async () => {
    tmp = tempDir(`pob-${backend}`);
    if (backend === 'postgresql') pg = await startTestPostgres();
    cp = await startLocalControlPlane({ stateDir: join(tmp.dir, 'state'), port: 0, dbUrl: pg?.url, natsToken: 'nats-secret', logger: log });
    sql = postgres(cp.dbUrl, { max: 1, prepare: false, onnotice: () => {} });
    token = await cp.mintRelayToken('relay-a', 3600);
    const r = await registerWithIdentity('relay-a', 7, identity, token);
    expect(r.status).toBe(200);
  }, 120_000);

  afterAll(async () => {
    await sql?.end({ timeout: 2 }).catch(() => {});
    await cp?.stop();
    await pg?.stop();
    tmp?.remove();
  });

  it('keeps a closed epoch’s receipts under the root the relay signed, once', async () => {
    const epoch = lastClosed();
    const rs = receipts(1000);
    const body = await submission(epoch, rs);
    expect(JSON.stringify(body).length).toBeGreaterThan(16 * 1024); // beyond the other functions' limit
    expect(await call('submit-receipts', body)).toEqual({ status: 200, body: { relayId: 'relay-a', epoch, receipts: 1000, stored: true } });
    // A retry stores nothing more.
    expect(await call('submit-receipts', body)).toEqual({ status: 200, body: { relayId: 'relay-a', epoch, receipts: 1000, stored: false } });
    expect(await stored(epoch)).toBe(1000);
    // What is stored proves each receipt part of the signed root.
    const [root] = await sql`select root, count, signature from relaynet.pob_roots where relay_id = 'relay-a' and epoch = ${epoch}`;
    expect(root).toMatchObject({ root: body.root, count: 1000, signature: body.signature });
    const rows = await sql`select peer_id, tx_bytes, rx_bytes from relaynet.pob_receipts where relay_id = 'relay-a' and epoch = ${epoch} order by peer_id`;
    const back = rows.map((r) => ({ peerId: r.peer_id as string, txBytes: Number(r.tx_bytes), rxBytes: Number(r.rx_bytes) }));
    expect(back).toEqual(rs);
    expect(await verifyInclusion('relay-a', epoch, back[617]!, await inclusionProof('relay-a', epoch, back, 617), root!.root)).toBe(true);
  });

  it('refuses another root for an epoch already handed in, and keeps the first', async () => {
    const epoch = lastClosed();
    const inflated = receipts(1000).map((r) => ({ ...r, txBytes: r.txBytes * 10 }));
    const r = await call('submit-receipts', await submission(epoch, inflated));
    expect([r.status, r.body.error, r.body.field]).toEqual([409, 'conflicting_root', 'root']);
    const [sum] = await sql`select sum(tx_bytes)::text as tx from relaynet.pob_receipts where relay_id = 'relay-a' and epoch = ${epoch}`;
    expect(Number(sum!.tx)).toBe(receipts(1000).reduce((a, x) => a + x.txBytes, 0));
  });

  it('refuses forged, mismatched, early, late, misshapen and oversized submissions, storing nothing', async () => {
    const epoch = lastClosed() - 1;
    const rs = receipts(3);
    const good = await submission(epoch, rs);
    const forger = generateKeyPairSync('ed25519').privateKey;
    const forged = await signEpoch('relay-a', epoch, E, rs, (d) => sign(null, d, forger));
    const cases: [string, unknown, number, string][] = [
      ['signed by another key', { ...good, signature: forged.signature }, 403, 'signature'],
      ['receipts not under the root', { ...good, receipts: rs.map((r, i) => (i === 1 ? { ...r, rxBytes: r.rxBytes + 1 } : r)) }, 400, 'root'],
      ['a receipt dropped', { ...good, receipts: rs.slice(1) }, 403, 'signature'],
      ['receipts out of order', { ...good, receipts: [...rs].reverse() }, 400, 'receipts'],
      // Two epochs on: at least 300 s from its end whenever the test runs (30 s of clock slack are allowed).
      ['an epoch not over yet', await submission(lastClosed() + 3, rs), 400, 'epoch'],
      ['an epoch too old', await submission(lastClosed() - 3000, rs), 400, 'epoch'],
      ['another epoch length', { ...good, epochSeconds: 600 }, 400, 'epochSeconds'],
      ['a negative count', { ...good, receipts: [{ ...rs[0], txBytes: -1 }] }, 400, 'receipts'],
      ['a bad peer id', { ...good, receipts: [{ ...rs[0], peerId: 'Relay A' }] }, 400, 'receipts'],
      ['a root that is not hex', { ...good, root: 'z'.repeat(64) }, 400, 'root'],
      ['an extra field', { ...good, credit: 10 }, 400, 'credit'],
      ['more than 1 MiB', { ...good, padding: 'x'.repeat(MAX_RECEIPTS_BODY_BYTES) }, 400, 'body'],
    ];
    for (const [what, body, status, field] of cases) {
      const r = await call('submit-receipts', body);
      expect([what, r.status, r.body.field]).toEqual([what, status, field]);
    }
    expect(await stored(epoch)).toBe(0);
    // Another relay's token, a user's: refused; then the genuine submission is taken.
    const other = await cp.mintRelayToken('relay-b', 600);
    expect((await call('submit-receipts', good, other)).status).toBe(403);
    expect((await call('submit-receipts', good)).status).toBe(200);
    expect(await stored(epoch)).toBe(3);
  });

  it('reports an epoch: every root, one relay’s receipts; a relay token reads only its own', async () => {
    const epoch = lastClosed();
    const all = await call('pob-report', { epoch }, cp.serviceRoleKey);
    expect(all.status).toBe(200);
    expect(all.body).toMatchObject({ epoch, epochSeconds: E, receipts: [] });
    expect(all.body.roots.map((r: { relayId: string }) => r.relayId)).toEqual(['relay-a']);
    expect(all.body.roots[0]).toMatchObject({ count: 1000, identityKey });
    const mine = await call('pob-report', { relayId: 'relay-a' });
    expect(mine.body.epoch).toBe(epoch);
    expect(mine.body.receipts).toEqual(receipts(1000));
    const other = await call('pob-report', { relayId: 'relay-b' });
    expect([other.status, other.body.field]).toEqual([403, 'relayId']);
    const user = await call('pob-report', {}, await cp.mintUserToken('user-x', 600));
    expect(user.status).toBe(403);
    expect((await call('pob-report', { epoch: -1 }, cp.serviceRoleKey)).status).toBe(400);
  });

  it('pob verify checks the root and proves a receipt, and fails against another identity key', async () => {
    const epoch = lastClosed();
    const cli = (args: string[]) =>
      execa(
        RELAY_CORE_BIN,
        ['pob', 'verify', '--relay', 'relay-a', '--epoch', String(epoch), ...args, '--control-plane-url', cp.url, '--token', cp.serviceRoleKey],
        {
          reject: false,
          timeout: 60_000,
        },
      );
    const ok = await cli(['--peer', 'relay-p0617', '--json']);
    expect(ok.exitCode, ok.stderr).toBe(0);
    const j = JSON.parse(ok.stdout);
    expect(j).toMatchObject({ ok: true, identityKey, receipt: { peerId: 'relay-p0617', txBytes: 1_000_617, rxBytes: 2_000_617 } });
    expect(j.receipt.proof).toHaveLength(10); // 1,000 leaves: ten levels
    const pinned = await cli(['--identity-key', Buffer.alloc(32, 1).toString('base64')]);
    expect(pinned.exitCode).toBe(1);
    expect(pinned.stdout).toMatch(/FAILED\s+root\s+not a signature by relay-a's identity key/);
    const missing = await cli(['--peer', 'relay-zz']);
    expect(missing.exitCode).toBe(1);
    expect(missing.stdout).toMatch(/FAILED\s+inclusion\s+relay relay-a has no receipt for relay-zz/);
  });

  it('settles an epoch: what both ends signed, capped by capacity, and the disputes; again the same', async () => {
    // relay-b, with its own identity, and one epoch where relay-a over-reports what it sent to relay-b.
    const idB = newIdentity();
    const tokenB = await cp.mintRelayToken('relay-b', 600);
    expect((await registerWithIdentity('relay-b', 8, idB, tokenB)).status).toBe(200);
    const epoch = E0 - 2;
    const MB = 1_000_000;
    const a = [{ peerId: 'relay-b', txBytes: 110 * MB, rxBytes: 20 * MB }];
    const b = [{ peerId: 'relay-a', txBytes: 20 * MB, rxBytes: 100 * MB }];
    expect((await call('submit-receipts', await submission(epoch, a))).status).toBe(200);
    expect((await call('submit-receipts', await submission(epoch, b, {}, 'relay-b', idB.signer), tokenB)).status).toBe(200);
    // relay-a measured at 0.1 MB/s each way: at most 60 MB in a 300 s epoch; relay-b never measured.
    await sql`insert into relaynet.pob_capacity (relay_id, bytes_per_second) values ('relay-a', 100000)`;
    const cli = () =>
      execa(RELAY_CORE_BIN, ['pob', 'settle', '--epoch', String(epoch), '--json', '--control-plane-url', cp.url, '--token', cp.serviceRoleKey], {
        reject: false,
        timeout: 60_000,
      });
    const first = await cli();
    expect(first.exitCode, first.stderr).toBe(0);
    const r = JSON.parse(first.stdout);
    expect(r).toMatchObject({ epoch, epochSeconds: E, reports: 2 });
    expect(r.credits).toEqual([
      { relayId: 'relay-a', carried: 120 * MB, cap: 60 * MB, credit: 60 * MB },
      { relayId: 'relay-b', carried: 120 * MB, cap: null, credit: 0 },
    ]);
    expect(r.disputes).toEqual([
      { kind: 'disagree', from: 'relay-a', to: 'relay-b', senderTx: 110 * MB, receiverRx: 100 * MB },
      { kind: 'over-capacity', relayId: 'relay-a', carried: 120 * MB, cap: 60 * MB },
    ]);
    // Kept, and settling again replaces it with the same.
    const again = await cli();
    expect(JSON.parse(again.stdout)).toEqual(r);
    const kept = await sql`select relay_id, credit::text from relaynet.pob_credits where epoch = ${epoch} order by relay_id`;
    expect(kept.map((k) => [k.relay_id, Number(k.credit)])).toEqual([
      ['relay-a', 60 * MB],
      ['relay-b', 0],
    ]);
    const disputes = await sql`select kind, detail from relaynet.pob_disputes where epoch = ${epoch} order by seq`;
    expect(disputes.map((d) => [d.kind, d.detail.from ?? d.detail.relayId])).toEqual([
      ['disagree', 'relay-a'],
      ['over-capacity', 'relay-a'],
    ]);
    // Each settlement appended EpochSettled and a ReceiptDisputed per dispute, signed like every topology event.
    const events = await sql`select type, payload from relaynet.topology_events where type in ('EpochSettled', 'ReceiptDisputed') order by revision`;
    const settledEvents = events.map((e) => [e.type, JSON.parse(e.payload as string).data]).map(([t, d]) => [t, { ...d, revision: undefined }]);
    const once = [
      ['EpochSettled', { revision: undefined, epoch, epochSeconds: E, relays: 2, credited: 60 * MB, disputes: 2 }],
      ['ReceiptDisputed', { revision: undefined, epoch, dispute: r.disputes[0] }],
      ['ReceiptDisputed', { revision: undefined, epoch, dispute: r.disputes[1] }],
    ];
    expect(settledEvents).toEqual([...once, ...once]);
    // Not an open epoch, not a relay's token.
    const open = await call('settle-epoch', { epoch: E0 + 3 }, cp.serviceRoleKey);
    expect([open.status, open.body.error]).toEqual([409, 'epoch_open']);
    expect((await call('settle-epoch', { epoch })).status).toBe(403);
  });

  it('refuses a relay with no identity key on record', async () => {
    const t = await cp.mintRelayToken('relay-n', 600);
    const reg = { relayId: 'relay-n', name: 'N', region: 'test', publicKey: Buffer.alloc(32, 9).toString('base64'), endpoint: '198.51.100.9:51820' };
    expect((await call('register-server', reg, cp.serviceRoleKey)).status).toBe(200);
    const body = { ...(await submission(lastClosed(), receipts(2))), relayId: 'relay-n' };
    const r = await call('submit-receipts', body, t);
    expect([r.status, r.body.error]).toEqual([409, 'no_identity']);
  });
});
