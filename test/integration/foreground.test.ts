import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { eventually, RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import { tempDir } from '../support/temp.ts';

/**
 * The foreground networks, `relay-core devnet` and `relay-core sim`, as an operator runs them and stops
 * them with Ctrl-C (SIGINT to the whole foreground process group, as a terminal sends it): to a pipe they
 * print the table only when it changed, and Ctrl-C is quiet: the relays deregister while the control
 * plane is still up, everything stops in order, nothing is logged above info, exit 0.
 */

/** Started in a process group of its own, like a shell's foreground job. */
function startGroup(args: string[], env: Record<string, string> = {}): ResultPromise<{ detached: true; reject: false; all: true }> {
  return execa(RELAY_CORE_BIN, args, { detached: true, reject: false, all: true, env: { RELAYNET_LOG_LEVEL: 'info', ...env } });
}

/** Ctrl-C at a terminal: SIGINT to every process of the group. */
const ctrlC = (p: { pid?: number | undefined }) => process.kill(-p.pid!, 'SIGINT');

/** Log lines (JSON) above info: warnings and errors. */
const loud = (text: string) =>
  text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .filter((l) => (JSON.parse(l) as { level: number }).level >= 40);

describe('foreground networks and Ctrl-C', () => {
  const tmp = tempDir('foreground');
  const running: ResultPromise[] = [];
  afterAll(async () => {
    for (const p of running) {
      try {
        // Ctrl-C first, so it stops what it started; SIGKILL if it does not (its children die with it).
        if (p.pid) process.kill(-p.pid, 'SIGINT');
        const exited = await Promise.race([p.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 30_000))]);
        if (!exited && p.pid) process.kill(-p.pid, 'SIGKILL');
      } catch {
        /* the group is gone already */
      }
    }
    await Promise.allSettled(running);
    // A sim left behind by a failure: removed.
    if (existsSync(join(tmp.dir, 'sim', 'manifest.json'))) await execa(RELAY_CORE_BIN, ['sim', 'down', '--state-dir', join(tmp.dir, 'sim')], { reject: false });
    tmp.remove();
  }, 120_000);

  it('devnet: no table repeated while nothing changes; Ctrl-C deregisters every relay, stops the rest in order, logs nothing above info, exits 0', async () => {
    const p = startGroup(['devnet', '--relays', '2', '--state-dir', join(tmp.dir, 'devnet')]);
    running.push(p);
    let out = '';
    p.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    await eventually('devnet to converge', async () => (out.includes('Ctrl-C to stop') ? true : null), 120_000, 250);
    // Three status periods (5 s): a table only when it changed, so never the same one twice in a row,
    // and not one a period (the network settles: a relay's bus may come up just after convergence).
    await new Promise((r) => setTimeout(r, 16_000));
    const tables = out
      .split('\n')
      .reduce<string[][]>(
        (acc, l) => (l.startsWith('RELAY ') ? [...acc, [l]] : acc.length && l.startsWith('relay-') ? [...acc.slice(0, -1), [...acc.at(-1)!, l]] : acc),
        [],
      )
      .map((t) => t.join('\n'));
    const live = tables.slice(1);
    expect(live.length, out).toBeLessThan(3);
    for (const [i, t] of live.entries()) expect(t, `table ${i + 1} after convergence repeats the one before it`).not.toBe(tables[i]);
    ctrlC(p);
    const r = await p;
    expect(r.exitCode, r.all.slice(-3000)).toBe(0);
    expect(loud(r.stderr)).toEqual([]);
    expect(r.stdout).toContain('devnet: relay-1 stopped (deregistered)');
    expect(r.stdout).toContain('devnet: relay-2 stopped (deregistered)');
    const order = ['relay-2 stopped', 'control plane stopped', 'nats-server stopped'].map((s) => r.stdout.indexOf(`devnet: ${s}`));
    expect(order.every((i) => i > 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    // The relays' own logs: deregistered, nothing above info on the way out.
    for (const id of ['relay-1', 'relay-2']) {
      const { stdout } = await execa('cat', [join(tmp.dir, 'devnet', id, 'relay.log')]);
      expect(stdout).toContain('"deregistered":true');
      expect(loud(stdout.slice(stdout.lastIndexOf('"signal":"SIGTERM"')))).toEqual([]);
    }
  }, 180_000);

  it('devnet killed outright (SIGKILL, no handler runs): its relays and nats-server die with it', async () => {
    const dir = join(tmp.dir, 'devnet-killed');
    const p = startGroup(['devnet', '--relays', '2', '--state-dir', dir]);
    running.push(p);
    let out = '';
    p.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    await eventually('devnet to converge', async () => (out.includes('Ctrl-C to stop') ? true : null), 120_000, 250);
    const children = async () => (await execa('pgrep', ['-f', dir], { reject: false })).stdout.split('\n').filter(Boolean).map(Number);
    // The two relays and nats-server run with the state directory in their command lines.
    expect((await children()).length).toBeGreaterThanOrEqual(3);
    process.kill(p.pid!, 'SIGKILL');
    await p;
    await eventually('its children to be gone', async () => ((await children()).length === 0 ? true : null), 10_000, 200);
  }, 180_000);

  it('sim up on a terminal shows its progress (relays serving, links up) on one line rewritten in place', async () => {
    const dir = join(tmp.dir, 'sim-tty');
    // script(1) gives the command a terminal.
    const r = await execa('script', ['-qfec', `${RELAY_CORE_BIN} sim up --relays 2 --state-dir ${dir} --timeout 90`, '/dev/null'], {
      reject: false,
      all: true,
      timeout: 150_000,
    });
    try {
      expect(r.exitCode, r.all.slice(-3000)).toBe(0);
      const progress = [...r.stdout.matchAll(/\r\x1b\[K {2}relays serving (\d+)\/(\d+), links up (\d+)\/(\d+), [\d.]+ s/g)];
      expect(progress.length, r.stdout.slice(0, 2000)).toBeGreaterThan(0);
      expect(progress.every((m) => m[2] === '2' && m[4] === '2')).toBe(true);
      expect(r.stdout).toMatch(/converged \(mesh\)/);
    } finally {
      await execa(RELAY_CORE_BIN, ['sim', 'down', '--state-dir', dir], { reject: false });
    }
  }, 180_000);

  it('sim in the foreground: to a pipe, a table only when something changed; Ctrl-C removes the sim and exits 0', async () => {
    const dir = join(tmp.dir, 'sim');
    const p = startGroup(['sim', '--relays', '2', '--state-dir', dir, '--timeout', '90']);
    running.push(p);
    let out = '';
    p.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    await eventually('the sim to converge', async () => (/converged \(mesh\)/.test(out) ? true : null), 150_000, 250);
    await new Promise((r) => setTimeout(r, 4_000));
    // Redrawn every second on a terminal; here, once at most after converging (the live loop's first table).
    const tables = out.slice(out.search(/converged \(mesh\)/)).split('(Ctrl-C removes the sim)').length - 1;
    expect(tables).toBeLessThanOrEqual(1);
    ctrlC(p);
    const r = await p;
    expect(r.exitCode, r.all.slice(-3000)).toBe(0);
    expect(loud(r.stderr)).toEqual([]);
    expect(existsSync(join(dir, 'manifest.json'))).toBe(false);
  }, 240_000);
});
