import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RelayStatus } from '../../src/daemon/relay-status.ts';
import { fetchStatus } from '../../src/daemon/status-server.ts';
import { eventually, RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import type { KernelOp } from '../../src/kernel/host-state.ts';
import type { ReplayResult } from '../../src/replay/replay.ts';
import { readManifest, type Manifest, type SimRelay } from '../../src/sim/manifest.ts';
import { runSessionLoop } from '../support/session-loop.ts';
import { tempDir } from '../support/temp.ts';

/**
 * Replay against a recorded run of a real sim (wireguard-go, nats-server, control plane on Deno and
 * embedded Postgres): 3 relays, a 4th joins, 20 client sessions and 10 private ones opened and closed on
 * relay-1, a stock client and a private one left connected, relay-3 killed and restarted. Each relay's log, replayed by
 * `relay-core replay`, must re-derive exactly the kernel operations the daemon logged live, end on the
 * host the relay really has (`--diff`), and, cut at a sequence, give what the relay reported then.
 */
describe('replay of a recorded sim run', () => {
  let tmp: ReturnType<typeof tempDir>;
  let dir: string;
  const ids = ['relay-1', 'relay-2', 'relay-3', 'relay-4'];
  const sim = (args: string[], timeoutMs = 150_000) => execa(RELAY_CORE_BIN, ['sim', ...args, '--state-dir', dir], { reject: false, timeout: timeoutMs });
  const cli = (args: string[], timeoutMs = 60_000) => execa(RELAY_CORE_BIN, args, { reject: false, timeout: timeoutMs });
  const manifest = (): Manifest => readManifest(dir)!;
  const relayOf = (id: string): SimRelay => manifest().relays.find((r) => r.id === id)!;
  const status = (id: string): Promise<RelayStatus> => fetchStatus(join(relayOf(id).stateDir, 'relay.sock')) as Promise<RelayStatus>;
  const replay = async (id: string, extra: string[] = []): Promise<ReplayResult> => {
    const r = await cli(['replay', '--relay', id, '--sim', dir, '--json', ...extra]);
    expect(r.exitCode, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as ReplayResult;
  };
  /** The last sequence of the relay's own stream, once it has stopped growing (the relay is quiet). */
  const quietSeq = async (id: string): Promise<number> => {
    const last = async () => {
      const r = await cli(['events', 'export', '--sim', dir, '--relay', id, '--stream', 'relay']);
      expect(r.exitCode, r.stderr).toBe(0);
      return (JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { seq: number }).seq;
    };
    let seq = await last();
    await eventually(
      `${id} quiet`,
      async () => {
        await new Promise((r) => setTimeout(r, 1_500));
        const now = await last();
        const same = now === seq;
        seq = now;
        return same;
      },
      30_000,
    );
    return seq;
  };
  /** What the live relay reports, in the terms replay uses. */
  const reported = (s: RelayStatus) => ({
    revision: s.revision,
    digest: createHash('sha256').update(s.topologyDigest).digest('hex'),
    links: Object.fromEntries(s.links.map((l) => [l.peerId, l.state])),
    sessions: Object.fromEntries(s.clients.map((c) => [c.sessionId, [c.state, c.exitId]])),
  });
  const replayed = (r: ReplayResult) => ({
    revision: r.topology.revision,
    digest: r.topology.digest,
    links: Object.fromEntries(r.links.map((l) => [l.peerId, l.state])),
    sessions: Object.fromEntries(r.sessions.map((s) => [s.sessionId, [s.state, s.exitId]])),
  });
  /** Every operation the daemon logged as applied (its own log file, not the event stream). */
  const loggedOps = (id: string): KernelOp[] =>
    readFileSync(join(relayOf(id).stateDir, 'relay.log'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('"msg":"KernelReconciled"'))
      .flatMap((l) => (JSON.parse(l) as { ops: KernelOp[] }).ops);

  const snapshots: { id: string; seq: number; state: ReturnType<typeof reported> }[] = [];

  beforeAll(() => {
    tmp = tempDir('replay');
    dir = join(tmp.dir, 'state');
  });

  afterAll(async () => {
    const r = await sim(['down']);
    expect(r.exitCode, r.stderr).toBe(0);
    if (!process.env.KEEP_TMP) tmp.remove();
  });

  it('records a run: joins, 30 sessions (10 private) opened and closed, two clients left connected, a kill and a restart', async () => {
    const up = await sim(['up', '--relays', '3', '--timeout', '90']);
    expect(up.exitCode, up.stderr + up.stdout).toBe(0);
    const add = await sim(['add', '--relay', 'relay-4', '--timeout', '90']);
    expect(add.exitCode, add.stderr + add.stdout).toBe(0);
    // Snapshot 1: after the join, before any session.
    snapshots.push({ id: 'relay-1', seq: await quietSeq('relay-1'), state: reported(await status('relay-1')) });

    const loop = await runSessionLoop(manifest(), { entry: 'relay-1', exits: ['relay-2', 'relay-3', 'relay-4'], count: 20, timeoutMs: 180_000 });
    expect(loop.exitCode, loop.stderr).toBe(0);
    expect((JSON.parse(loop.stdout) as { count: number }).count).toBe(20);
    // Private sessions too: port maps at the entry, the private device and its peers at the exits.
    const hidden = await runSessionLoop(manifest(), { entry: 'relay-1', exits: ['relay-2', 'relay-4'], count: 10, timeoutMs: 180_000, private: true });
    expect(hidden.exitCode, hidden.stderr).toBe(0);
    const client = await sim(['client', 'add', '--name', 'c1', '--entry', 'relay-1', '--exit', 'relay-3']);
    expect(client.exitCode, client.stderr + client.stdout).toBe(0);
    const privateClient = await sim(['client', 'add', '--name', 'c2', '--entry', 'relay-1', '--exit', 'relay-2', '--private']);
    expect(privateClient.exitCode, privateClient.stderr + privateClient.stdout).toBe(0);
    await eventually('relay-1 runs only c1 and c2', async () => (await status('relay-1')).clients.length === 2, 30_000);
    // Snapshot 2: the sessions closed, c1 connected through relay-3, c2 (private) through relay-2.
    snapshots.push({ id: 'relay-1', seq: await quietSeq('relay-1'), state: reported(await status('relay-1')) });

    // Killed, its wireguard-go devices live on (the others' links stay up); its daemon is gone.
    expect((await sim(['kill', '--relay', 'relay-3'])).exitCode).toBe(0);
    await new Promise((r) => setTimeout(r, 2_000));
    const restart = await sim(['restart', '--relay', 'relay-3', '--timeout', '90']);
    expect(restart.exitCode, restart.stderr + restart.stdout).toBe(0);
    for (const id of ids) await quietSeq(id);
  }, 600_000);

  it("replaying each relay's log re-derives exactly the kernel operations it applied live, and ends on its real host", async () => {
    for (const id of ids) {
      const r = await replay(id, ['--rounds']);
      expect(r.checks, id).toMatchObject({ mismatched: 0, unchecked: 0, inconsistent: 0 });
      expect(r.checks.matched, id).toBe(r.checks.rounds);
      const derived = r.rounds!.flatMap((x) => x.derived ?? []);
      const live = loggedOps(id);
      expect(live.length, id).toBeGreaterThan(0);
      expect(derived, id).toEqual(live);
      // The private sessions' objects are among them: port maps at the entry, the private device at an exit.
      // (A session closed and the next opened on the same address often share a round: one portmap.replace, or nothing.)
      if (id === 'relay-1')
        expect(
          ['portmap.add', 'portmap.del'].every((k) => live.some((o) => o.op === k)),
          id,
        ).toBe(true);
      if (id === 'relay-2')
        expect(
          live.some((o) => o.op === 'link.add' && o.dev.endsWith('cp')),
          id,
        ).toBe(true);
      const diff = await cli(['replay', '--relay', id, '--sim', dir, '--diff']);
      expect(diff.exitCode, `${id}: ${diff.stdout}${diff.stderr}`).toBe(0);
      expect(diff.stdout).toMatch(/^no drift/);
    }
    const three = await replay('relay-3');
    expect(three.relay).toMatchObject({ runs: 2, uncleanEnds: 1, state: 'serving' });
    // The same log replays to the same result.
    expect(JSON.stringify(await replay('relay-1'))).toBe(JSON.stringify(await replay('relay-1')));
  }, 300_000);

  it('a log cut at a sequence gives the state the live relay reported at that sequence', async () => {
    expect(snapshots).toHaveLength(2);
    for (const s of snapshots) {
      const r = await replay(s.id, ['--to', String(s.seq)]);
      expect(r.upTo!.seq).toBe(s.seq);
      expect(replayed(r)).toEqual(s.state);
    }
    // The two points differ (sessions, the stock client), so the cut matters.
    expect(snapshots[0]!.state).not.toEqual(snapshots[1]!.state);
  }, 120_000);

  it('--diff shows drift made behind the relay: a route removed by hand', async () => {
    const ns = relayOf('relay-2').namespace;
    const routes = (await execa('ip', ['netns', 'exec', ns, 'ip', '-4', 'route', 'show', 'table', 'main'])).stdout.split('\n');
    const victim = routes.find((l) => / dev \S+m\d+/.test(l) && l.startsWith('100.96.'))!;
    expect(victim).toBeDefined();
    const dst = victim.split(' ')[0]!;
    const dev = victim.match(/ dev (\S+)/)![1]!;
    // The relay mends drift itself (its whole-scope round, on a timer): it is frozen while replay reads
    // the host, else a round that runs in between puts the route back first (seen once in CI: exit 0).
    const pid = manifest().processes.find((p) => p.kind === 'relay' && p.name === 'relay-2')!.pid!;
    process.kill(pid, 'SIGSTOP');
    try {
      await execa('ip', ['netns', 'exec', ns, 'ip', 'route', 'del', dst, 'dev', dev]);
      const diff = await cli(['replay', '--relay', 'relay-2', '--sim', dir, '--diff']);
      expect(diff.exitCode, diff.stdout + diff.stderr).toBe(1);
      expect(diff.stdout).toContain(`- route ${dst} dev ${dev} table 254`);
    } finally {
      await execa('ip', ['netns', 'exec', ns, 'ip', 'route', 'add', dst, 'dev', dev], { reject: false });
      process.kill(pid, 'SIGCONT');
    }
  }, 60_000);
});
