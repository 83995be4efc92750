import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, expect } from 'vitest';
import type { RelayStatus } from '../../src/daemon/relay-status.ts';
import { fetchStatus } from '../../src/daemon/status-server.ts';
import { RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import { CONTROL_PLANE_PORT, svcNamespace, WEB_URL } from '../../src/sim/layout.ts';
import { readManifest, type Manifest, type SimClient, type SimRelay } from '../../src/sim/manifest.ts';
import { tempDir } from './temp.ts';

/**
 * What the sim tests with clients do to a running `relay-core sim` in `dir()`: run its commands, read
 * its manifest and its relays' status, run commands in a relay's or a client's namespace, fetch from
 * the sim's web server through a client (bounded: 4 s), read what the server saw, take a relay's host
 * state (WireGuard peers, links, rules, routes, nftables without counters or times), and call the
 * control plane as an operator with `relay-core client`.
 */
export function simHarness(dir: () => string) {
  const sim = (args: string[], timeoutMs = 150_000) => execa(RELAY_CORE_BIN, ['sim', ...args, '--state-dir', dir()], { reject: false, timeout: timeoutMs });
  const manifest = (): Manifest => readManifest(dir())!;
  const relayOf = (id: string): SimRelay => manifest().relays.find((r) => r.id === id)!;
  const clientOf = (name: string): SimClient => manifest().clients.find((c) => c.name === name)!;
  const status = (id: string): Promise<RelayStatus> => fetchStatus(join(relayOf(id).stateDir, 'relay.sock')) as Promise<RelayStatus>;
  const inRelay = (id: string, argv: string[], timeoutMs = 15_000) =>
    execa('ip', ['netns', 'exec', relayOf(id).namespace, ...argv], { reject: false, timeout: timeoutMs });
  const inClient = (name: string, argv: string[], timeoutMs = 15_000) =>
    execa('ip', ['netns', 'exec', clientOf(name).namespace, ...argv], { reject: false, timeout: timeoutMs });
  /** One bounded request from a client to the web server: the address the server saw, or null. */
  const whoami = async (name: string, path = '/'): Promise<string | null> => {
    const r = await inClient(name, ['curl', '-s', '--max-time', '4', `${WEB_URL}${path}`]);
    return r.exitCode === 0 ? r.stdout.trim() : null;
  };
  /** Every request the web server logged: the address it came from and its path. */
  const serverSaw = (): { remote: string; path: string }[] =>
    readFileSync(join(dir(), 'web', 'requests.jsonl'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { remote: string; path: string });
  /** What a relay's namespace holds of WireGuard peers, links, rules, routes and nftables (no counters or times). */
  const hostState = async (id: string) => {
    const wg = (await inRelay(id, ['wg', 'show', 'all', 'dump'])).stdout
      .split('\n')
      .filter((l) => l.split('\t').length > 5)
      .map((l) => l.split('\t').slice(0, 2).concat(l.split('\t')[4]!).join(' '))
      .sort();
    const links = (await inRelay(id, ['ip', '-br', 'link', 'show'])).stdout
      .split('\n')
      .map((l) => l.split(/\s+/)[0])
      .sort();
    const rules = (await inRelay(id, ['ip', 'rule', 'show'])).stdout;
    const routes = (await inRelay(id, ['ip', 'route', 'show', 'table', 'all'])).stdout.split('\n').sort().join('\n');
    const nft = (await inRelay(id, ['nft', 'list', 'ruleset'])).stdout.replace(/packets \d+ bytes \d+/g, '');
    return { wg, links, rules, routes, nft };
  };
  /** `relay-core <args>` against the sim's control plane, from inside its service namespace, with its service-role key. */
  const operatorCli = (args: string[]) =>
    execa(
      'ip',
      [
        'netns',
        'exec',
        svcNamespace(manifest().simId),
        RELAY_CORE_BIN,
        ...args,
        '--control-plane-url',
        `http://127.0.0.1:${CONTROL_PLANE_PORT}`,
        '--token-file',
        manifest().controlPlane.serviceRoleKeyFile,
      ],
      { reject: false, timeout: 60_000 },
    );
  /** `relay-core client ...` as the operator. */
  const clientCli = (args: string[]) => operatorCli(['client', ...args]);
  return { sim, manifest, relayOf, clientOf, status, inRelay, inClient, whoami, serverSaw, hostState, clientCli, operatorCli };
}

/**
 * A sim of `relays` relays for one test file: `sim up` before its tests (in a temporary directory
 * named after `name`), `sim down` after them (the directory kept with KEEP_TMP=1); its harness.
 */
export function simSuite(name: string, relays = 3) {
  let tmp: ReturnType<typeof tempDir>;
  let dir: string;
  const h = simHarness(() => dir);
  beforeAll(async () => {
    tmp = tempDir(name);
    dir = join(tmp.dir, 'state');
    const up = await h.sim(['up', '--relays', String(relays), '--timeout', '90']);
    expect(up.exitCode, up.stderr + up.stdout).toBe(0);
  }, 200_000);
  afterAll(async () => {
    const r = await h.sim(['down']);
    expect(r.exitCode, r.stderr).toBe(0);
    if (!process.env.KEEP_TMP) tmp.remove();
  }, 120_000);
  return h;
}
