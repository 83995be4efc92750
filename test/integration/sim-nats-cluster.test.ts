import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import type { StreamStatus } from '../../src/bus/stream-status.ts';
import { STREAMS } from '../../src/contract/subjects.ts';
import { readManifest, type Manifest } from '../../src/sim/manifest.ts';
import { cmdline, isRunning, listNetns } from '../../src/sim/netns.ts';
import { WEB_URL } from '../../src/sim/layout.ts';
import { simCli, simStatus as readSimStatus } from '../support/sim-cli.ts';
import { tempDir } from '../support/temp.ts';

/**
 * `relay-core sim up --nats 3` (issue 15, part 5): a 3-node NATS cluster in the sim's service
 * namespace, the streams at 3 replicas, every relay given every node. The node leading the topology
 * stream is killed while a relay joins and a client's session opens; the mesh converges and the client's
 * traffic leaves at its exit, no relay resyncs or folds a revision twice, and the node, started again,
 * catches up.
 */

interface SimStatus {
  converged: { topology: boolean; mesh: boolean };
  nats: { name: string; url: string; process: string }[];
  relays: { id: string; status: null | { revision: number; counters: { resyncs: number; applied: number } } }[];
}

/** A relay's log lines about resyncs, pulls again and its consumer (why a relay resynced, for a failure's message). */
function resyncLines(stateDir: string): string {
  try {
    return readFileSync(join(stateDir, 'relay.log'), 'utf8')
      .split('\n')
      .filter((l) => /TopologyResyncRequested|pulling again|topology consumer|topology stream/.test(l))
      .slice(-8)
      .join('\n');
  } catch (e) {
    return `(cannot read its log: ${(e as Error).message})`;
  }
}

describe('relay-core sim --nats 3: relays on a NATS cluster', () => {
  let tmp: ReturnType<typeof tempDir>;
  let dir: string;
  let sim: ReturnType<typeof simCli>;
  let m: Manifest;

  const manifest = () => readManifest(dir)!;
  /** `relay-core bus status --sim DIR --json`, as an operator asks it: both streams and their copies. */
  const streams = async (): Promise<{ code: number | undefined; streams: Record<string, StreamStatus> }> => {
    const r = await execa(RELAY_CORE_BIN, ['bus', 'status', '--sim', dir, '--json'], { reject: false, timeout: 30_000 });
    if (r.exitCode !== 0 && r.exitCode !== 1) throw new Error(`bus status failed: ${r.stderr}`);
    const out = JSON.parse(r.stdout) as { streams: StreamStatus[] };
    return { code: r.exitCode, streams: Object.fromEntries(out.streams.map((x) => [x.stream, x])) };
  };
  /** Both streams with 3 copies, every one current: `bus status` exits 0. */
  const allCurrent = () =>
    eventually(
      'every copy of both streams to be current',
      async () => {
        const s = await streams().catch(() => null);
        const ok = s && s.code === 0 && Object.keys(s.streams).length === 2 && Object.values(s.streams).every((x) => x.replicas === 3 && x.peers.length === 2);
        return ok ? s.streams : null;
      },
      90_000,
      1_000,
    );
  const inClient = (name: string, argv: string[]) =>
    execa('ip', ['netns', 'exec', manifest().clients.find((c) => c.name === name)!.namespace, ...argv], { reject: false, timeout: 15_000 });

  beforeAll(() => {
    tmp = tempDir('sim-nats');
    dir = join(tmp.dir, 'state');
    sim = simCli(dir);
  });

  afterAll(async () => {
    const before = readManifest(dir);
    const r = await sim(['down']);
    expect(r.exitCode, r.stderr).toBe(0);
    if (before) {
      expect((await listNetns()).filter((ns) => ns.startsWith(`rcs-${before.simId}-`))).toEqual([]);
      const left = readdirSync('/proc')
        .filter((p) => /^\d+$/.test(p) && isRunning(Number(p)))
        .filter((p) => cmdline(Number(p))?.some((a) => a.includes(before.stateDir)));
      expect(left).toEqual([]);
    }
    if (!process.env.KEEP_TMP) tmp.remove();
  });

  it('refuses a cluster without a majority and a node it does not have, exit 2', async () => {
    for (const args of [
      ['up', '--nats', '2'],
      ['up', '--nats', '6'],
      ['kill', '--relay', 'relay-1', '--nats-node', 'nats-1'],
      ['stop', '--nats-node', 'redis'],
    ]) {
      const r = await sim(args, 30_000);
      expect(r.exitCode, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(/^relay-core sim: /);
    }
  });

  it('up --nats 3: three nodes in the service namespace, every relay given all of them, both streams at 3 replicas', async () => {
    const r = await sim(['up', '--relays', '3', '--nats', '3', '--wait', 'mesh', '--timeout', '150'], 300_000);
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toContain('a NATS cluster of 3 nodes');
    m = manifest();
    const urls = ['4222', '4223', '4224'].map((p) => `nats://198.18.0.2:${p}`);
    expect(m.controlPlane.natsUrl).toBe(urls.join(','));
    const nats = m.processes.filter((p) => p.kind === 'nats');
    expect(nats.map((p) => [p.name, p.namespace])).toEqual([1, 2, 3].map((i) => [`nats-${i}`, `rcs-${m.simId}-svc`]));
    for (const p of nats) expect(isRunning(p.pid!), p.name).toBe(true);
    const cpArgv = cmdline(m.processes.find((p) => p.kind === 'control-plane')!.pid!)!;
    expect(cpArgv.join(' ')).toContain(`--nats-url ${urls.join(',')} `);
    expect(cpArgv.join(' ')).toContain('--stream-replicas 3');
    for (const relay of m.relays) expect(cmdline(m.processes.find((p) => p.name === relay.id)!.pid!)!.join(' ')).toContain(`--nats-url ${urls.join(',')}`);

    const s = await allCurrent();
    expect(Object.keys(s).sort()).toEqual([STREAMS.relay, STREAMS.topology].sort());
    const text = await sim(['status'], 30_000);
    expect(text.stdout).toContain(`NATS: nats-1 ${urls[0]} running, nats-2 ${urls[1]} running, nats-3 ${urls[2]} running`);
  });

  it("kills the topology stream leader's node: a relay joins and a client's session opens on the others; the node returns and catches up", async () => {
    const before = await readSimStatus<SimStatus>(dir);
    const leader = (await streams()).streams[STREAMS.topology]!.leader!;
    expect(leader).toMatch(/^nats-[123]$/);
    const killed = await sim(['kill', '--nats-node', leader], 60_000);
    expect(killed.exitCode, killed.stderr).toBe(0);
    expect(killed.stdout).toContain(`${leader} (pid`);
    expect((await readSimStatus<SimStatus>(dir)).nats.find((n) => n.name === leader)!.process).toBe('killed');
    // The operator sees the lost copy: bus status names it and exits 1.
    const degraded = await eventually(
      `bus status to report ${leader}'s copy unreachable`,
      async () => {
        const x = await streams();
        return x.code === 1 && x.streams[STREAMS.topology]!.problems.some((p) => p.startsWith(`${leader} unreachable`)) ? x : null;
      },
      60_000,
      1_000,
    );
    expect(degraded.streams[STREAMS.topology]!.leader).not.toBe(leader);

    const added = await sim(['add', '--relay', 'relay-4', '--wait', 'mesh', '--timeout', '120'], 240_000);
    expect(added.exitCode, `${added.stdout}\n${added.stderr}`).toBe(0);
    const client = await sim(['client', 'add', '--name', 'c1', '--entry', 'relay-1', '--exit', 'relay-4'], 120_000);
    expect(client.exitCode, `${client.stdout}\n${client.stderr}`).toBe(0);
    const exitAddress = manifest().relays.find((x) => x.id === 'relay-4')!.publicAddress;
    await eventually(
      "the client's request to leave at relay-4",
      async () => {
        const r = await inClient('c1', ['curl', '-s', '--max-time', '4', `${WEB_URL}/`]);
        return r.exitCode === 0 && r.stdout.trim() === exitAddress ? true : null;
      },
      30_000,
    );

    const restarted = await sim(['restart', '--nats-node', leader, '--wait', 'mesh', '--timeout', '120'], 240_000);
    expect(restarted.exitCode, `${restarted.stdout}\n${restarted.stderr}`).toBe(0);
    const s = await allCurrent();
    const t = s[STREAMS.topology]!;
    expect([t.leader, ...t.peers.map((p) => p.name)].sort()).toEqual(['nats-1', 'nats-2', 'nats-3']);

    const after = await eventually(
      'every relay at one revision',
      async () => {
        const x = await readSimStatus<SimStatus>(dir);
        const revisions = new Set(x.relays.map((r) => r.status?.revision ?? -1));
        return x.relays.length === 4 && revisions.size === 1 && !revisions.has(-1) ? x : null;
      },
      60_000,
    );
    for (const b of before.relays) {
      const a = after.relays.find((x) => x.id === b.id)!.status!;
      // Each revision since was folded once, from the stream, with no resync.
      expect(a.counters.resyncs, `${b.id} resynced: ${resyncLines(manifest().relays.find((x) => x.id === b.id)!.stateDir)}`).toBe(b.status!.counters.resyncs);
      expect(a.counters.applied - b.status!.counters.applied, b.id).toBe(a.revision - b.status!.revision);
    }
    // relay-4's admission and c1's session, at least.
    expect(after.relays[0]!.status!.revision - before.relays[0]!.status!.revision).toBeGreaterThanOrEqual(2);
    expect((await readSimStatus<SimStatus>(dir)).nats.map((n) => n.process)).toEqual(['running', 'running', 'running']);
  });
});
