import { chmodSync, cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import type { RelayStatus } from '../../src/daemon/relay-status.ts';
import { fetchStatus } from '../../src/daemon/status-server.ts';
import { eventually } from '../../src/devnet/relay-process.ts';
import { linkNames } from '../../src/sim/netns.ts';
import { simSuite } from '../support/sim-harness.ts';
import { tempDir } from '../support/temp.ts';

/**
 * The packaged systemd unit (packaging/systemd/relay-core.service): `systemd-analyze verify` accepts it,
 * `systemd-analyze security` rates its exposure, and what it grants is enough: a relay of a sim run as
 * an unprivileged user with only the unit's capabilities (setpriv: bounding, inheritable and ambient
 * sets, no new privileges) and its own /var/run/wireguard (the unit's RuntimeDirectory) joins the
 * mesh, carries a ping, and on SIGTERM drains and exits 0, leaving nothing behind.
 */

const ROOT = resolve(import.meta.dirname, '../..');
const UNIT = join(ROOT, 'packaging/systemd/relay-core.service');
const NOBODY = 65534;

/** The unit with ExecStart pointing at this checkout (verify checks that the command exists). */
function unitHere(dir: string): string {
  const path = join(dir, 'relay-core.service');
  writeFileSync(path, readFileSync(UNIT, 'utf8').replaceAll('/opt/relay-core/bin/relay-core', join(ROOT, 'bin/relay-core')));
  return path;
}

/** The capabilities the unit names in `key` (CAP_NET_ADMIN ...), lower case without the prefix, as setpriv takes them. */
function unitCaps(key: string): string[] {
  const line = readFileSync(UNIT, 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${key}=`));
  if (!line) throw new Error(`the unit has no ${key}=`);
  return line
    .slice(key.length + 1)
    .trim()
    .split(/\s+/)
    .map((c) => c.replace(/^CAP_/, '').toLowerCase());
}

describe('the systemd unit', () => {
  const tmp = tempDir('service-unit');
  afterAll(() => tmp.remove());

  it('passes systemd-analyze verify, and its exposure is rated OK or better', async () => {
    const unit = unitHere(tmp.dir);
    const verify = await execa('systemd-analyze', ['verify', unit], { reject: false, all: true });
    expect(verify.exitCode, verify.all).toBe(0);
    expect(verify.all).toBe('');
    const sec = await execa('systemd-analyze', ['security', '--offline=yes', unit], { reject: false, all: true });
    const m = /Overall exposure level for relay-core\.service: (\d+\.\d+) (\w+)/.exec(sec.all ?? '');
    expect(m, sec.all).not.toBeNull();
    console.log(`UNIT-EXPOSURE ${m![1]} ${m![2]}`);
    // systemd rates 0-10, lower is better: up to 2.9 is "OK", 1.9 "SAFE".
    expect(Number(m![1])).toBeLessThan(3);
  });

  describe('a relay with only what the unit grants', () => {
    const h = simSuite('service-unit', 2);
    let relay: ResultPromise | null = null;
    const state = join(tmp.dir, 'relay-2');
    const wgRun = join(tmp.dir, 'wireguard');

    afterAll(async () => {
      relay?.kill('SIGKILL');
      await relay?.catch(() => {});
    });

    it('joins the mesh as an unprivileged user with CAP_NET_ADMIN alone, and drains on SIGTERM', async () => {
      const bounding = unitCaps('CapabilityBoundingSet');
      expect(unitCaps('AmbientCapabilities')).toEqual(bounding);
      const r2 = h.relayOf('relay-2');
      const command = h.manifest().processes.find((p) => p.kind === 'relay' && p.name === 'relay-2')!.command;
      const stop = await h.sim(['stop', '--relay', 'relay-2']);
      expect(stop.exitCode, stop.stderr).toBe(0);
      // Its keys and credentials, in a state directory of its own user (the unit's StateDirectory).
      cpSync(r2.stateDir, state, { recursive: true });
      rmSync(join(state, 'relay.log'), { force: true });
      mkdirSync(wgRun, { mode: 0o700 });
      chmodSync(tmp.dir, 0o755);
      await execa('chown', ['-R', `${NOBODY}:${NOBODY}`, state, wgRun]);
      const argv = command.slice(command.indexOf('run') - 1).map((a) => (a.startsWith(r2.stateDir) ? a.replace(r2.stateDir, state) : a));
      const caps = bounding.map((c) => `+${c}`).join(',');
      const script = `mount --bind ${wgRun} /var/run/wireguard && exec setpriv --reuid=${NOBODY} --regid=${NOBODY} --clear-groups --inh-caps=-all,${caps} --ambient-caps=-all,${caps} --bounding-set=-all,${caps} --no-new-privs "$@"`;
      relay = execa('ip', ['netns', 'exec', r2.namespace, 'unshare', '--mount', 'sh', '-c', script, 'sh', ...argv], { reject: false, all: true });

      const st = await eventually(
        'relay-2, unprivileged, serving with its link to relay-1 up',
        async () => {
          const s = (await fetchStatus(join(state, 'relay.sock')).catch(() => null)) as RelayStatus | null;
          return s?.state === 'serving' && s.links.every((l) => l.state === 'up') && s.links.length === 1 ? s : null;
        },
        60_000,
        500,
      );
      const uid = await execa('ps', ['-o', 'user=', '-C', 'wireguard-go']);
      expect(uid.stdout.split('\n').map((u) => u.trim())).toContain('nobody');
      const relay1 = await h.status('relay-1');
      const ping = await h.inRelay('relay-2', ['ping', '-c', '2', '-W', '2', relay1.meshAddress!]);
      expect(ping.exitCode, ping.stdout).toBe(0);
      expect((await h.inRelay('relay-2', ['sysctl', '-n', 'net.ipv4.ip_forward'])).stdout.trim()).toBe('1');
      expect(st.policy?.table).toBeTruthy();

      relay.kill('SIGTERM');
      const done = await relay;
      expect(done.exitCode, String(done.all ?? '').slice(-2000)).toBe(0);
      expect((await linkNames(r2.namespace)).filter((l) => l.startsWith(h.manifest().wgPrefix))).toEqual([]);
      expect((await h.inRelay('relay-2', ['sysctl', '-n', 'net.ipv4.ip_forward'])).stdout.trim()).toBe('0');
    });
  });
});
