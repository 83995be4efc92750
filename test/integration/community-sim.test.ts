import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import type { PobStatusResponse } from '../../src/contract/api-pob.ts';
import { RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import { relayPublicAddress } from '../../src/sim/layout.ts';
import { simSuite } from '../support/sim-harness.ts';

/**
 * A community relay in a live sim, the way an operator runs one (docs/proof-of-bandwidth.md,
 * "Community relays"): `sim add --community` has an operator enroll it with its own user token and run
 * it with the relay token it got. In probation it is in the mesh but carries no client; a measurement
 * by two core relays over their real WireGuard links makes it active; a client that allows community
 * relays then enters there, privately, and leaves at a core relay with that relay's address; a client
 * that does not is refused; a suspension closes the session and stops the client's traffic.
 */
describe('a community relay in a sim: enrolled, measured, then carrying private sessions', () => {
  const { sim, manifest, status, whoami, clientCli, operatorCli: asOperator } = simSuite('community-sim');
  const pob = (args: string[]) => execa(RELAY_CORE_BIN, ['pob', ...args, '--sim', manifest().stateDir], { reject: false, timeout: 120_000 });
  const standing = async (id: string) => {
    const r = await pob(['status', '--relay', id, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as PobStatusResponse).relays[0]!;
  };
  it('enrolls relay-4 through an operator: it joins the mesh in probation and carries no client', async () => {
    const add = await sim(['add', '--relay', 'relay-4', '--community', '--operator', 'olga', '--wait', 'mesh', '--timeout', '90'], 200_000);
    expect(add.exitCode, add.stderr + add.stdout).toBe(0);
    expect(add.stdout).toContain('added community relay relay-4 (operator olga; in probation until measured)');
    // It holds a link to every core relay (the full mesh), as a core relay would.
    const links = (await status('relay-4')).links;
    expect(links.map((l) => [l.peerId, l.state]).sort()).toEqual([
      ['relay-1', 'up'],
      ['relay-2', 'up'],
      ['relay-3', 'up'],
    ]);
    expect(await standing('relay-4')).toMatchObject({ class: 'community', state: 'probation', operatorId: 'olga', registered: true });
    const refused = await sim(['client', 'add', '--name', 'early', '--community', '--entry', 'relay-4', '--exit', 'relay-1']);
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr + refused.stdout).toMatch(/relay_not_active|in probation/);
  }, 240_000);

  it('is made active by its measurement over the mesh, and a client that allows it enters there privately', async () => {
    const m = await pob(['measure', '--relay', 'relay-4', '--measurers', 'relay-1,relay-2', '--seconds', '6', '--wait', '--json']);
    expect(m.exitCode, m.stderr + m.stdout).toBe(0);
    const st = await standing('relay-4');
    expect(st).toMatchObject({ state: 'active', lastMeasurement: { state: 'measured' } });
    console.log(`COMMUNITY-MEASURED ${JSON.stringify({ lineRateMbit: ((st.capacity ?? 0) * 8) / 1e6 })}`);
    // Without --community: refused; with it: private (a community entry sees only ciphertext).
    const no = await sim(['client', 'add', '--name', 'core-only', '--entry', 'relay-4', '--exit', 'relay-1']);
    expect(no.exitCode).not.toBe(0);
    expect(no.stderr + no.stdout).toMatch(/community_not_allowed|community relay/);
    const add = await sim(['client', 'add', '--name', 'c1', '--community', '--entry', 'relay-4', '--exit', 'relay-1']);
    expect(add.exitCode, add.stderr + add.stdout).toBe(0);
    expect(add.stdout).toMatch(/enters at relay-4, leaves at relay-1, private/);
    expect(manifest().clients.find((c) => c.name === 'c1')?.mode).toBe('private');
    expect(await whoami('c1')).toBe(relayPublicAddress(1));
  }, 240_000);

  it('is suspended by the network’s operator: the session is closed and the client’s traffic stops', async () => {
    const r = await asOperator(['relay', 'suspend', '--relay', 'relay-4', '--reason', 'test', '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ changed: true, sessionsClosed: 1, standing: { state: 'suspended' } });
    const list = await clientCli(['list', '--all', '--json']);
    expect(list.exitCode, list.stderr).toBe(0);
    const sessions = (JSON.parse(list.stdout) as { sessions: { entryId: string; status: string; closeReason: string | null }[] }).sessions;
    expect(sessions.filter((s) => s.entryId === 'relay-4').map((s) => [s.status, s.closeReason])).toEqual([['closed', 'removed']]);
    // The entry removed the session's forwarding: nothing more gets through (bounded: a few tries of 4 s).
    let got: string | null = relayPublicAddress(1);
    for (let i = 0; i < 5 && got !== null; i++) got = await whoami('c1');
    expect(got).toBeNull();
    expect((await standing('relay-4')).state).toBe('suspended');
  }, 120_000);
});
