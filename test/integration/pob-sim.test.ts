import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PobReportResponse } from '../../src/contract/api-pob.ts';
import { settleEpoch } from '../../src/contract/pob-settle.ts';
import { eventually, RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import { readManifest, type Manifest } from '../../src/sim/manifest.ts';
import { tempDir } from '../support/temp.ts';
import { simCli, statusUntil } from '../support/sim-cli.ts';

/**
 * Proof-of-Bandwidth receipts in a live sim (real wireguard-go in network namespaces, the control plane
 * on the Deno functions), with 10 s receipt epochs: traffic over the mesh between two relays is counted
 * by both ends of the link, each relay signs and hands in its receipts every epoch, both ends' counts
 * agree (no dispute when settled), and `pob verify` checks what the control plane keeps against the
 * relays' identity keys.
 */

const EPOCH = 10;

interface SimStatus {
  relays: { id: string; status: null | { meshAddress: string | null; links: { peerId: string; state: string }[] } }[];
}

describe('Proof-of-Bandwidth receipts in a sim', () => {
  const tmp = tempDir('pob-sim');
  const dir = tmp.dir;
  const sim = simCli(dir);
  let m: Manifest;
  let down: Promise<void> | null = null;
  const teardown = () =>
    (down ??= (async () => {
      const r = await sim(['down'], 120_000);
      if (r.exitCode !== 0) throw new Error(`sim down failed:\n${r.stdout}\n${r.stderr}`);
    })());

  /** The operator's `relay-core pob` against the sim's control plane (`--sim`: its service-role key). */
  const pob = (args: string[]) => execa(RELAY_CORE_BIN, ['pob', ...args, '--sim', dir], { reject: false, timeout: 60_000 });
  const report = async (relay: string, epoch: number): Promise<PobReportResponse> => {
    const r = await pob(['receipts', '--relay', relay, '--epoch', String(epoch), '--json']);
    if (r.exitCode !== 0) throw new Error(`pob receipts: ${r.stderr}`);
    return JSON.parse(r.stdout) as PobReportResponse;
  };

  beforeAll(async () => {
    try {
      const r = await sim(['up', '--relays', '2', '--receipt-epoch', String(EPOCH), '--wait', 'mesh', '--timeout', '90'], 240_000);
      if (r.exitCode !== 0) throw new Error(`sim up failed:\n${r.stdout}\n${r.stderr}`);
      m = readManifest(dir)!;
    } catch (e) {
      await teardown().catch(() => {});
      throw e;
    }
  }, 300_000);

  afterAll(async () => {
    try {
      await teardown();
    } finally {
      if (!process.env.KEEP_TMP) tmp.remove();
    }
  }, 180_000);

  it('counts the traffic of a link at both ends, each epoch, and the counts agree', async () => {
    const s = await statusUntil<SimStatus>(dir, 'both relays with mesh addresses', (x) => x.relays.every((r) => r.status?.meshAddress), 30_000);
    const mesh2 = s.relays.find((r) => r.id === 'relay-2')!.status!.meshAddress!;
    const ns1 = m.relays.find((r) => r.id === 'relay-1')!.namespace;
    // Each relay counts a link from its first sample of the link's counters (its ledger): wait until
    // both count their link to the other.
    const counting = (id: string, peer: string) => {
      const file = join(m.relays.find((r) => r.id === id)!.stateDir, 'receipts', 'ledger.json');
      return existsSync(file) && (JSON.parse(readFileSync(file, 'utf8')) as { peers: [string][] }).peers.some(([p]) => p === peer);
    };
    await eventually('both relays counting their link', async () => (counting('relay-1', 'relay-2') && counting('relay-2', 'relay-1')) || null, 30_000);
    // 400 echoes of 1,200 bytes from relay-1 to relay-2 over their link, in about 4 s (bounded).
    const first = Math.floor(Date.now() / 1000 / EPOCH);
    const ping = await execa('ip', ['netns', 'exec', ns1, 'ping', '-n', '-q', '-c', '400', '-i', '0.01', '-s', '1200', '-w', '30', mesh2], {
      reject: false,
      timeout: 40_000,
    });
    expect(ping.exitCode, ping.stdout).toBe(0);
    const last = Math.floor(Date.now() / 1000 / EPOCH);
    // Both relays hand in every epoch of the traffic once it is over (and the next sample has run).
    const epochs = Array.from({ length: last - first + 1 }, (_, i) => first + i);
    const reports = await eventually(
      `both relays' receipts for epochs ${first}-${last}`,
      async () => {
        const all = await Promise.all(epochs.flatMap((e) => ['relay-1', 'relay-2'].map((id) => report(id, e).then((r) => ({ id, e, r })))));
        return all.every((x) => x.r.roots.some((root) => root.relayId === x.id)) ? all : null;
      },
      (last - first + 4) * EPOCH * 1000,
      1000,
    );
    let sent = 0;
    let received = 0;
    for (const e of epochs) {
      const of = (id: string) => reports.find((x) => x.e === e && x.id === id)!.r.receipts;
      const settled = settleEpoch({
        epochSeconds: EPOCH,
        reports: new Map([
          ['relay-1', of('relay-1')],
          ['relay-2', of('relay-2')],
        ]),
        capacity: new Map(),
      });
      // Both ends signed nearly the same bytes for each direction: no disagreement, nothing one-sided.
      expect(settled.disputes, `epoch ${e}: ${JSON.stringify(settled.directions)}`).toEqual([]);
      const d12 = settled.directions.find((d) => d.from === 'relay-1' && d.to === 'relay-2')!;
      sent += d12.senderTx!;
      received += d12.receiverRx!;
    }
    // 400 echo requests of 1,228 bytes of IP each went through the link: at least that, sealed.
    expect(sent).toBeGreaterThan(400 * 1228);
    expect(Math.abs(sent - received) / sent).toBeLessThan(0.02);
    // The control plane settles the epochs the same way: both relays reported, no dispute.
    for (const e of epochs) {
      const r = await pob(['settle', '--epoch', String(e), '--json']);
      expect(r.exitCode, r.stderr).toBe(0);
      const settled = JSON.parse(r.stdout) as { reports: number; disputes: unknown[]; credits: { relayId: string; carried: number }[] };
      expect(settled.reports).toBe(2);
      expect(settled.disputes).toEqual([]);
      expect(settled.credits.map((c) => c.relayId)).toEqual(['relay-1', 'relay-2']);
    }
  }, 180_000);

  it('pob verify checks a relay’s kept receipts against its identity key, and proves one', async () => {
    const r = await pob(['verify', '--relay', 'relay-2', '--peer', 'relay-1', '--json']);
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as { ok: boolean; checks: { check: string; ok: boolean }[]; receipt: { peerId: string } };
    expect(j.ok).toBe(true);
    expect(j.checks.map((c) => [c.check, c.ok])).toEqual([
      ['root', true],
      ['inclusion', true],
    ]);
    expect(j.receipt.peerId).toBe('relay-1');
  });

  it('tears the sim down', async () => {
    await teardown();
  }, 180_000);
});
