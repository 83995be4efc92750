import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RelayStatus } from '../../src/daemon/relay-daemon.ts';
import { fetchStatus } from '../../src/daemon/status-server.ts';
import { eventually, RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import { BRIDGE_IF, CONTROL_PLANE_PORT, inetNamespace, relayPublicAddress, SVC_ADDRESS, WEB_URL } from '../../src/sim/layout.ts';
import { readManifest, type Manifest, type SimRelay } from '../../src/sim/manifest.ts';
import { tempDir } from '../support/temp.ts';

/**
 * Safe by default (docs/security.md), on real WireGuard in a `relay-core sim` of two relays: the exit's
 * egress policy keeps clients from what lies behind it (a cloud metadata service stands in at
 * 169.254.169.254 on the exit's side of the sim's internet, in the test's own namespace) and from the
 * network's services; mesh links carry only what they should. Every traffic loop is bounded in count
 * and time; listeners and addresses the test adds go with the sim's namespaces.
 */
describe('safe by default: egress policy and mesh filters on real WireGuard', () => {
  let tmp: ReturnType<typeof tempDir>;
  let dir: string;
  const listeners: ResultPromise[] = [];
  const sim = (args: string[], timeoutMs = 150_000) => execa(RELAY_CORE_BIN, ['sim', ...args, '--state-dir', dir], { reject: false, timeout: timeoutMs });
  const manifest = (): Manifest => readManifest(dir)!;
  const relayOf = (id: string): SimRelay => manifest().relays.find((r) => r.id === id)!;
  const status = (id: string): Promise<RelayStatus> => fetchStatus(join(relayOf(id).stateDir, 'relay.sock')) as Promise<RelayStatus>;
  const inNs = (ns: string, argv: string[], timeoutMs = 15_000) => execa('ip', ['netns', 'exec', ns, ...argv], { reject: false, timeout: timeoutMs });
  const inRelay = (id: string, argv: string[], timeoutMs?: number) => inNs(relayOf(id).namespace, argv, timeoutMs);
  const inClient = (name: string, argv: string[], timeoutMs?: number) => inNs(manifest().clients.find((c) => c.name === name)!.namespace, argv, timeoutMs);
  /** A named counter of a relay's table, read with nft itself (not through the relay). */
  const counter = async (id: string, name: string): Promise<number> => {
    const table = (await status(id)).policy!.table;
    const out = (await inRelay(id, ['nft', '-j', 'list', 'counter', 'inet', table, name])).stdout;
    const found = (JSON.parse(out) as { nftables: { counter?: { packets: number } }[] }).nftables.find((o) => o.counter);
    return found!.counter!.packets;
  };
  /** A TCP server that answers every connection with a line, in a namespace, until the test ends. */
  const listen = async (ns: string, address: string, port: number, answer: string) => {
    const code = `require('net').createServer((s) => s.end(${JSON.stringify(answer + '\n')})).listen(${port}, ${JSON.stringify(address)}, () => console.log('listening'))`;
    const p = execa('ip', ['netns', 'exec', ns, process.execPath, '-e', code], { reject: false, timeout: 600_000 });
    listeners.push(p);
    await new Promise<void>((resolve, reject) => {
      p.stdout!.on('data', (d: Buffer) => d.toString().includes('listening') && resolve());
      p.catch(reject);
      setTimeout(() => reject(new Error(`listener on ${address}:${port} did not start`)), 10_000);
    });
  };

  beforeAll(async () => {
    tmp = tempDir('safety');
    dir = join(tmp.dir, 'state');
    const up = await sim(['up', '--relays', '2', '--timeout', '90']);
    expect(up.exitCode, up.stderr + up.stdout).toBe(0);
    const add = await sim(['client', 'add', '--name', 'c1', '--entry', 'relay-1', '--exit', 'relay-2']);
    expect(add.exitCode, add.stderr + add.stdout).toBe(0);
  }, 240_000);

  afterAll(async () => {
    for (const l of listeners) l.kill('SIGKILL');
    const r = await sim(['down']);
    expect(r.exitCode, r.stderr).toBe(0);
    if (!process.env.KEEP_TMP) tmp.remove();
  }, 120_000);

  it('a metadata service behind the exit is refused at once (TCP reset), counted, while the internet answers', async () => {
    const inet = inetNamespace(manifest().simId);
    const added = await inNs(inet, ['ip', 'addr', 'add', '169.254.169.254/32', 'dev', BRIDGE_IF]);
    expect(added.exitCode, added.stderr).toBe(0);
    await listen(inet, '169.254.169.254', 80, 'HTTP/1.0 200 OK\r\n\r\ninstance-credentials');
    // The service is there: the exit itself (not a client) reaches it, by its default route into the sim's internet.
    const direct = await inRelay('relay-2', ['curl', '-s', '--max-time', '4', 'http://169.254.169.254/']);
    expect(direct.stdout).toContain('instance-credentials');

    const before = await counter('relay-2', 'refused_link_local');
    const web = await inClient('c1', ['curl', '-s', '--max-time', '4', `${WEB_URL}/`]);
    expect(web.exitCode, web.stderr).toBe(0);
    expect(web.stdout.trim()).toBe(relayPublicAddress(2));
    for (let i = 0; i < 3; i++) {
      const started = Date.now();
      const r = await inClient('c1', ['curl', '-s', '--max-time', '8', 'http://169.254.169.254/']);
      // curl's 7 is "could not connect" (a reset), 28 a timeout: the client must fail fast.
      expect(r.exitCode, `attempt ${i}: ${r.stdout}`).toBe(7);
      expect(r.stdout).not.toContain('instance-credentials');
      expect(Date.now() - started).toBeLessThan(8_000);
    }
    expect(await counter('relay-2', 'refused_link_local')).toBeGreaterThanOrEqual(before + 3);
    // The relay reports it by reason in its status.
    await eventually('status shows the refusals', async () => ((await status('relay-2')).policy!.egress.find((r) => r.reason === 'link-local')?.packets ?? 0) >= before + 3, 15_000);
  });

  it('the control plane and NATS are refused to clients although the sim allows its internet', async () => {
    const st = await status('relay-2');
    expect(st.policy!.egress.find((r) => r.reason === 'service')?.v4).toContain(`${SVC_ADDRESS}/32`);
    expect(st.policy!.egress.some((r) => r.reason === 'benchmark')).toBe(false);
    const before = await counter('relay-2', 'refused_service');
    const r = await inClient('c1', ['curl', '-s', '--max-time', '8', `http://${SVC_ADDRESS}:${CONTROL_PLANE_PORT}/`]);
    expect(r.exitCode).toBe(7);
    expect(await counter('relay-2', 'refused_service')).toBeGreaterThan(before);
  });

  it("a relay's services are out of reach over a mesh link; a ping to its mesh address is not", async () => {
    const two = await status('relay-2');
    await listen(relayOf('relay-2').namespace, two.meshAddress!, 2222, 'relay-2-sshd');
    // It listens: relay-2 itself reaches it.
    const local = await inRelay('relay-2', ['curl', '-s', '--max-time', '3', `telnet://${two.meshAddress}:2222`]);
    expect(local.stdout).toContain('relay-2-sshd');

    const before = await counter('relay-2', 'mesh_input');
    const r = await inRelay('relay-1', ['curl', '-s', '--max-time', '3', `telnet://${two.meshAddress}:2222`]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stdout).not.toContain('relay-2-sshd');
    expect(await counter('relay-2', 'mesh_input')).toBeGreaterThan(before);
    const ping = await inRelay('relay-1', ['ping', '-c', '1', '-W', '3', two.meshAddress!]);
    expect(ping.exitCode, ping.stdout).toBe(0);
  });

  it('a packet over a mesh link with a forged client-pool source is dropped and counted', async () => {
    const [one, two] = await Promise.all([status('relay-1'), status('relay-2')]);
    // relay-1 sends from an address of relay-2's own pool: no packet from relay-1 can carry it.
    const forged = two.clientPool!.replace(/\.0\/\d+$/, '.77');
    const add = await inRelay('relay-1', ['ip', 'addr', 'add', `${forged}/32`, 'dev', 'lo']);
    expect(add.exitCode, add.stderr).toBe(0);
    try {
      const before = await counter('relay-2', 'mesh_spoofed');
      const r = await inRelay('relay-1', ['ping', '-c', '3', '-i', '0.2', '-W', '2', '-I', forged, two.meshAddress!]);
      expect(r.exitCode).not.toBe(0);
      expect(await counter('relay-2', 'mesh_spoofed')).toBeGreaterThanOrEqual(before + 3);
      // From its own mesh address the same ping passes.
      const genuine = await inRelay('relay-1', ['ping', '-c', '1', '-W', '3', '-I', one.meshAddress!, two.meshAddress!]);
      expect(genuine.exitCode, genuine.stdout).toBe(0);
    } finally {
      await inRelay('relay-1', ['ip', 'addr', 'del', `${forged}/32`, 'dev', 'lo']);
    }
  });
});
