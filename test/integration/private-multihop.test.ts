import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { execa, type ResultPromise } from 'execa';
import { describe, expect, it } from 'vitest';
import { eventually } from '../../src/devnet/relay-process.ts';
import { clientDevice, nftTableName, privateDevice } from '../../src/kernel/clients.ts';
import { linkDevice, meshIndex } from '../../src/kernel/mesh.ts';
import { BRIDGE_ADDRESS, relayPublicAddress, WEB_URL } from '../../src/sim/layout.ts';
import { runSessionLoop } from '../support/session-loop.ts';
import { simSuite } from '../support/sim-harness.ts';

/**
 * Private multihop (issue 16, docs/clients.md "Private sessions") on real WireGuard in a
 * `relay-core sim`: a stock client whose one peer is its exit, reached through its entry, which
 * forwards the client's ciphertext in its kernel. Captures with tcpdump show what each relay sees.
 * Every traffic loop is bounded in count and time; the sim is torn down after.
 */
describe('private sessions: the entry forwards ciphertext, the exit terminates the tunnel', () => {
  const { sim, manifest, relayOf, clientOf, status, inRelay, inClient, whoami, serverSaw, hostState, clientCli } = simSuite('private-multihop');
  const wgPrefix = () => manifest().wgPrefix;
  const indexOf = async (id: string) => meshIndex((await status(id)).meshAddress!);
  /** A bounded capture (tcpdump -A, in ASCII) in a relay's or client's namespace while `during` runs. */
  const capture = async (ns: string, iface: string, filter: string[], during: () => Promise<unknown>): Promise<{ text: string; packets: number }> => {
    const p: ResultPromise = execa('ip', ['netns', 'exec', ns, 'timeout', '30', 'tcpdump', '-i', iface, '-nn', '-A', '-l', '-s', '0', ...filter], {
      reject: false,
      timeout: 40_000,
    });
    // tcpdump says "listening on" once it captures (at most 5 s of waiting for it).
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 5_000);
      p.stderr?.on('data', (d: Buffer) => {
        if (/listening on/.test(d.toString())) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    await during();
    await new Promise((r) => setTimeout(r, 500));
    p.kill('SIGINT');
    const r = await p;
    const packets = Number(/(\d+) packets? captured/.exec(String(r.stderr))?.[1] ?? '0');
    return { text: String(r.stdout), packets };
  };
  const counterOf = async (id: string, name: string) => (await status(id)).policy?.filters.find((f) => f.name === name)?.packets ?? 0;

  it('a private client fetches with its exit’s address; the exit’s peer for it has the entry’s mesh address as endpoint; a standard client on the same entry works too', async () => {
    const add = await sim(['client', 'add', '--name', 'p1', '--entry', 'relay-1', '--exit', 'relay-2', '--private']);
    expect(add.exitCode, add.stderr + add.stdout).toBe(0);
    const std = await sim(['client', 'add', '--name', 's1', '--entry', 'relay-1', '--exit', 'relay-3']);
    expect(std.exitCode, std.stderr + std.stdout).toBe(0);
    expect(await whoami('p1')).toBe(relayPublicAddress(2));
    expect(await whoami('s1')).toBe(relayPublicAddress(3));
    // The configuration: the exit's key, the entry's address on the session's own port, MTU 1420 - 60.
    const conf = readFileSync(clientOf('p1').configFile, 'utf8');
    expect(conf).toContain(`PublicKey = ${(await status('relay-2')).publicKey}`);
    expect(conf).toMatch(new RegExp(`Endpoint = ${relayPublicAddress(1).replace(/\./g, '\\.')}:5\\d{4}\n`));
    expect(conf).toContain('MTU = 1360');
    // The exit's peer: the entry's mesh address, never the client's public address.
    const pdev = privateDevice(wgPrefix(), await indexOf('relay-2'));
    const endpoints = (await inRelay('relay-2', ['wg', 'show', pdev, 'endpoints'])).stdout.trim();
    expect(endpoints).toMatch(new RegExp(`^\\S+\\t${(await status('relay-1')).meshAddress!.replace(/\./g, '\\.')}:\\d+$`));
    expect(endpoints).not.toContain(clientOf('p1').publicAddress);
    // The entry has no peer for it: it only forwards.
    const cdev = clientDevice(wgPrefix(), await indexOf('relay-1'));
    const entryPeers = (await inRelay('relay-1', ['wg', 'show', cdev, 'peers'])).stdout;
    expect(entryPeers).not.toContain((await inClient('p1', ['wg', 'show', clientOf('p1').device, 'public-key'])).stdout.trim());
    // Both relays run the session, each in its part; the entry's table maps its port.
    const one = (await status('relay-1')).clients.find((c) => c.sessionId === clientOf('p1').sessionId);
    const two = (await status('relay-2')).clients.find((c) => c.sessionId === clientOf('p1').sessionId);
    expect([one?.mode, one?.role, two?.mode, two?.role]).toEqual(['private', 'entry', 'private', 'exit']);
    await eventually(
      'the exit hears the client',
      async () => (await status('relay-2')).clients.find((c) => c.sessionId === clientOf('p1').sessionId)?.state === 'active',
      15_000,
    );
    const map = (await inRelay('relay-1', ['nft', 'list', 'map', 'inet', nftTableName(wgPrefix(), await indexOf('relay-1')), 'port_map'])).stdout;
    expect(map).toContain(`${(await status('relay-2')).meshAddress} . `);
  }, 120_000);

  it('the entry never sees the client’s packets: a marker in a request is on no interface of the entry, and on the exit’s private device', async () => {
    const marker = `marker-${randomBytes(8).toString('hex')}`;
    const exitDev = privateDevice(wgPrefix(), await indexOf('relay-2'));
    let exitSaw = { text: '', packets: 0 };
    const entrySaw = await capture(relayOf('relay-1').namespace, 'any', [], async () => {
      exitSaw = await capture(relayOf('relay-2').namespace, exitDev, [], async () => {
        expect(await whoami('p1', `/?${marker}`)).toBe(relayPublicAddress(2));
      });
    });
    expect(serverSaw().some((r) => r.path.includes(marker))).toBe(true);
    // The request went through the entry (its public side and the mesh link both carried it) ...
    expect(entrySaw.packets).toBeGreaterThan(8);
    expect(entrySaw.text).not.toContain(marker);
    // ... and the exit decrypted it on its private device.
    expect(exitSaw.text).toContain(marker);
  }, 60_000);

  it('MTU: a DF ping of the configured size passes, one byte more is refused (message too long, mtu 1360); TCP is clamped at the exit and a transfer arrives whole', async () => {
    const mtu = 1360;
    const ok = await inClient('p1', ['ping', '-c', '2', '-W', '3', '-M', 'do', '-s', String(mtu - 28), BRIDGE_ADDRESS]);
    expect(ok.exitCode, ok.stdout + ok.stderr).toBe(0);
    const tooBig = await inClient('p1', ['ping', '-c', '1', '-W', '3', '-M', 'do', '-s', String(mtu - 27), BRIDGE_ADDRESS]);
    expect(tooBig.exitCode).not.toBe(0);
    expect(tooBig.stdout + tooBig.stderr).toMatch(/message too long, mtu=1360/);
    // The web server's SYN-ACK offers MSS 1460 (its link is 1500); the exit clamps it to its private device's MTU - 40.
    const synAck = ['tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack)'];
    const exitDev = privateDevice(wgPrefix(), await indexOf('relay-2'));
    let atExit = { text: '', packets: 0 };
    const atClient = await capture(clientOf('p1').namespace, clientOf('p1').device, synAck, async () => {
      atExit = await capture(relayOf('relay-2').namespace, exitDev, synAck, async () => {
        const r = await inClient('p1', ['curl', '-s', '--max-time', '60', '-o', '/dev/null', '-w', '%{size_download}', `${WEB_URL}/bytes/10000000`], 70_000);
        expect(r.exitCode, r.stderr).toBe(0);
        expect(Number(r.stdout)).toBe(10_000_000);
      });
    });
    const routes = (await inRelay('relay-2', ['ip', 'route', 'get', clientOf('p1').address!])).stdout;
    expect(atExit.text, `at the exit (${routes})`).toMatch(/mss 1320/);
    expect(atClient.text, `at the client; at the exit: ${atExit.text}`).toMatch(/mss 1320/);
  }, 120_000);

  it('fail closed: with its exit stopped the client gets nothing, the entry drops and counts its datagrams, nothing leaves by the entry’s address; back, traffic resumes', async () => {
    const stop = await sim(['stop', '--relay', 'relay-2']);
    expect(stop.exitCode, stop.stderr).toBe(0);
    // The entry takes the port map away once the exit left the topology.
    const table = nftTableName(wgPrefix(), await indexOf('relay-1'));
    await eventually(
      'the entry without a port map',
      async () => !/elements = /.test((await inRelay('relay-1', ['nft', 'list', 'map', 'inet', table, 'port_map'])).stdout),
      30_000,
    );
    const dropped = await counterOf('relay-1', 'private_unmapped');
    for (let i = 0; i < 3; i++) expect(await whoami('p1')).toBeNull();
    await eventually('the datagrams counted', async () => (await counterOf('relay-1', 'private_unmapped')) > dropped, 10_000);
    // The standard client of the same entry is unaffected; the entry's own address never reached the server.
    expect(await whoami('s1')).toBe(relayPublicAddress(3));
    expect(serverSaw().map((r) => r.remote)).not.toContain(relayPublicAddress(1));

    const restart = await sim(['restart', '--relay', 'relay-2', '--timeout', '90']);
    expect(restart.exitCode, restart.stderr + restart.stdout).toBe(0);
    const seen = await eventually('p1 through relay-2 again', async () => (await whoami('p1')) ?? false, 60_000, 500);
    expect(seen).toBe(relayPublicAddress(2));
    expect(serverSaw().map((r) => r.remote)).not.toContain(relayPublicAddress(1));
  }, 240_000);

  it('switching a private client’s exit gives it a new configuration; the old exit keeps nothing of it', async () => {
    const sw = await sim(['client', 'switch', '--name', 'p1', '--exit', 'relay-3']);
    expect(sw.exitCode, sw.stderr + sw.stdout).toBe(0);
    expect(readFileSync(clientOf('p1').configFile, 'utf8')).toContain(`PublicKey = ${(await status('relay-3')).publicKey}`);
    expect(await eventually('p1 through relay-3', async () => (await whoami('p1')) ?? false, 30_000, 500)).toBe(relayPublicAddress(3));
    const old = privateDevice(wgPrefix(), await indexOf('relay-2'));
    await eventually('no private device on relay-2', async () => (await inRelay('relay-2', ['ip', 'link', 'show', old])).exitCode !== 0, 30_000);
  }, 90_000);

  it('100 private sessions opened and closed leave no port map, peer, route or rule behind on the entry and the exits', async () => {
    const ids = ['relay-1', 'relay-2', 'relay-3'];
    const before = await Promise.all(ids.map(hostState));
    // Each open waits for two relays' confirmations, each close for two rounds; the bound is generous, not a timing.
    const r = await runSessionLoop(manifest(), { entry: 'relay-1', exits: ['relay-2', 'relay-3'], count: 100, timeoutMs: 700_000, private: true });
    expect(r.exitCode, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { count: number }).count).toBe(100);
    // Closing is asynchronous on the relays: wait until they run only the sim's own clients, then compare.
    await eventually('only p1 and s1 left', async () => (await Promise.all(ids.map(status))).every((s) => s.clients.length <= 2), 60_000);
    await eventually('hosts as before', async () => JSON.stringify(await Promise.all(ids.map(hostState))) === JSON.stringify(before), 60_000);
    // And both clients still work.
    expect(await whoami('p1')).toBe(relayPublicAddress(3));
    expect(await whoami('s1')).toBe(relayPublicAddress(3));
    // No link device went anywhere meanwhile.
    const link = linkDevice(wgPrefix(), await indexOf('relay-1'), await indexOf('relay-2'));
    expect((await inRelay('relay-1', ['ip', 'link', 'show', link])).exitCode).toBe(0);
  }, 800_000);

  it('relay-core client list shows each session’s mode', async () => {
    const r = await clientCli(['list']);
    expect(r.exitCode, r.stderr).toBe(0);
    const line = (id: string) => r.stdout.split('\n').find((l) => l.includes(id)) ?? '';
    expect(line(clientOf('p1').sessionId!)).toMatch(/relay-1 -> relay-3 {2}private {2}open/);
    expect(line(clientOf('s1').sessionId!)).toMatch(/relay-1 -> relay-3 {2}standard {2}open/);
  });

  it('fail closed at the entry: with the entry stopped the client reaches nothing, and its exit drops its side of the session', async () => {
    const stop = await sim(['stop', '--relay', 'relay-1']);
    expect(stop.exitCode, stop.stderr).toBe(0);
    for (let i = 0; i < 2; i++) expect(await whoami('p1')).toBeNull();
    // The control plane closed the sessions entering at relay-1 (entry-left): the exit removes the client's peer and device.
    const pdev = privateDevice(wgPrefix(), await indexOf('relay-3'));
    await eventually('no private device on relay-3', async () => (await inRelay('relay-3', ['ip', 'link', 'show', pdev])).exitCode !== 0, 30_000);
    expect((await status('relay-3')).clients).toEqual([]);
  }, 90_000);
});
