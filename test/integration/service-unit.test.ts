import { chmodSync, cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RelayStatus } from '../../src/daemon/relay-status.ts';
import { fetchStatus } from '../../src/daemon/status-server.ts';
import { eventually, RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import { RELAY_METRICS_PORT } from '../../src/sim/layout.ts';
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

    beforeAll(async () => {
      const stop = await h.sim(['stop', '--relay', 'relay-2']);
      expect(stop.exitCode, stop.stderr).toBe(0);
    }, 60_000);

    afterAll(async () => {
      relay?.kill('SIGKILL');
      await relay?.catch(() => {});
    });

    it("relay-core doctor passes with relay-2's settings in its namespace, and names what fails: a bad token, no privileges", async () => {
      const r2 = h.relayOf('relay-2');
      const m = h.manifest();
      const settings = [
        '--relay-id',
        'relay-2',
        '--endpoint',
        r2.endpoint,
        '--state-dir',
        r2.stateDir,
        '--control-plane-url',
        m.controlPlane.url,
        '--nats-url',
        m.controlPlane.natsUrl,
        '--metrics-listen',
        `127.0.0.1:${RELAY_METRICS_PORT}`,
      ];
      const doctor = (args: string[], prefix: string[] = []) =>
        execa('ip', ['netns', 'exec', r2.namespace, ...prefix, RELAY_CORE_BIN, 'doctor', ...settings, ...args], { reject: false, all: true, timeout: 60_000 });
      const ok = await doctor(['--token-file', r2.tokenFile]);
      expect(ok.exitCode, ok.all).toBe(0);
      const lines = ok.stdout.split('\n');
      for (const name of [
        'privileges',
        'wireguard',
        'wg',
        'ip',
        'nft',
        'nftables',
        'forwarding',
        'wireguard port',
        'metrics port',
        'clock',
        'control plane',
        'nats',
        'state dir',
      ])
        expect(
          lines.find((l) => new RegExp(`^PASS  ${name} +\\S`).test(l)),
          `${name}\n${ok.stdout}`,
        ).toBeTruthy();
      expect(ok.stdout).toMatch(/control plane +.*token accepted; the relay is not admitted yet/);
      expect(ok.stdout).toMatch(/nats +.*credentials \(STATE_DIR\/nats\.creds\) accepted/);
      expect(lines.at(-1)).toBe('ready: 13 passed, 0 failed, 0 skipped');

      const badToken = join(tmp.dir, 'bad-token');
      writeFileSync(badToken, 'not-a-token\n', { mode: 0o600 });
      const refused = await doctor(['--token-file', badToken, '--json']);
      expect(refused.exitCode, refused.all).toBe(1);
      const report = JSON.parse(refused.stdout) as { ready: boolean; checks: { name: string; status: string; detail: string }[] };
      expect(report.ready).toBe(false);
      expect(report.checks.filter((c) => c.status === 'fail').map((c) => c.name)).toEqual(['control plane']);
      expect(report.checks.find((c) => c.name === 'control plane')!.detail).toMatch(/refused the token/);

      // Without CAP_NET_ADMIN: the privileges and nftables checks fail (and say so), exit 1.
      const weak = await doctor(
        ['--token', readFileSync(r2.tokenFile, 'utf8').trim()],
        ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all'],
      );
      expect(weak.exitCode, weak.all).toBe(1);
      expect(weak.stdout).toMatch(/^FAIL {2}privileges +uid 65534 without CAP_NET_ADMIN/m);
      expect(weak.stdout).toMatch(/^FAIL {2}nftables /m);
    });

    it('joins the mesh as an unprivileged user with CAP_NET_ADMIN alone, and drains on SIGTERM', async () => {
      const bounding = unitCaps('CapabilityBoundingSet');
      expect(unitCaps('AmbientCapabilities')).toEqual(bounding);
      const r2 = h.relayOf('relay-2');
      const command = h.manifest().processes.find((p) => p.kind === 'relay' && p.name === 'relay-2')!.command;
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
