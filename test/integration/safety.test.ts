import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RelayStatus } from '../../src/daemon/relay-status.ts';
import { fetchStatus } from '../../src/daemon/status-server.ts';
import { eventually, RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import { formatIpv4, parseCidr } from '../../src/contract/topology.events.ts';
import { DEFAULT_CLIENT_PREFIX6, embed6 } from '../../src/kernel/ipv6.ts';
import {
  BRIDGE_ADDRESS6,
  BRIDGE_IF,
  clientPublicAddress6,
  CONTROL_PLANE_PORT,
  inetNamespace,
  PUBLIC_IF,
  RELAY_PORT,
  relayPublicAddress,
  SVC_ADDRESS,
  WEB_ADDRESS6,
  WEB_PORT,
  WEB_URL,
  WEB_URL6,
} from '../../src/sim/layout.ts';
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
    // A relay with no IPv6 at all, and a client leaving there.
    const noV6 = await sim(['add', '--relay', 'relay-3', '--no-ipv6', '--timeout', '90']);
    expect(noV6.exitCode, noV6.stderr + noV6.stdout).toBe(0);
    const add2 = await sim(['client', 'add', '--name', 'c2', '--entry', 'relay-1', '--exit', 'relay-3']);
    expect(add2.exitCode, add2.stderr + add2.stdout).toBe(0);
  }, 300_000);

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
    await eventually(
      'status shows the refusals',
      async () => ((await status('relay-2')).policy!.egress.find((r) => r.reason === 'link-local')?.packets ?? 0) >= before + 3,
      15_000,
    );
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

  /** Capture on `dev` in `ns` while `during` runs: tcpdump's text lines (bounded: 2,000 packets, 60 s). */
  const capture = async (ns: string, dev: string, during: () => Promise<void>): Promise<string[]> => {
    const p = execa('ip', ['netns', 'exec', ns, 'tcpdump', '-n', '-l', '-c', '2000', '-i', dev], { reject: false, timeout: 60_000 });
    await new Promise<void>((resolve, reject) => {
      p.stderr!.on('data', (d: Buffer) => d.toString().includes('listening on') && resolve());
      p.catch(reject);
      setTimeout(() => reject(new Error(`tcpdump on ${dev} in ${ns} did not start`)), 10_000);
    });
    try {
      await during();
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      p.kill('SIGINT');
    }
    return (await p).stdout.split('\n').filter(Boolean);
  };

  it("IPv6 never leaks: a client's IPv6 leaves at its exit (NAT66) and its own link carries nothing but UDP to its entry", async () => {
    const c1 = manifest().clients.find((c) => c.name === 'c1')!;
    const entry = relayOf('relay-1');
    const own6 = clientPublicAddress6(c1.index);
    const exit6 = relayOf('relay-2').publicAddress6!;
    expect(exit6).toBeTruthy();
    // The client's link has IPv6 and a default route of its own: without the tunnel its IPv6 would leave there.
    const routes = await inNs(c1.namespace, ['ip', '-6', 'route', 'show', 'default']);
    expect(routes.stdout).toContain(`via ${BRIDGE_ADDRESS6} dev ${PUBLIC_IF}`);
    const answers: string[] = [];
    const lines = await capture(c1.namespace, PUBLIC_IF, async () => {
      for (let i = 0; i < 3; i++) {
        for (const url of [`${WEB_URL6}/`, `${WEB_URL}/`]) {
          const r = await inNs(c1.namespace, ['curl', '-sS', '--max-time', '5', url]);
          expect(r.exitCode, r.stderr).toBe(0);
          answers.push(r.stdout.trim());
        }
      }
    });
    // The web server saw the exits' addresses, of both families.
    expect(answers).toEqual([exit6, relayPublicAddress(2), exit6, relayPublicAddress(2), exit6, relayPublicAddress(2)]);
    const tunnel = new Set([`${c1.publicAddress} > ${entry.publicAddress}.${RELAY_PORT}`, `${entry.publicAddress}.${RELAY_PORT} > ${c1.publicAddress}`]);
    let udp = 0;
    const other: string[] = [];
    for (const line of lines) {
      const m = /^\S+ (IP6?) (\S+?)(\.\d+)? > (\S+?)(\.\d+)?: (.*)$/.exec(line);
      if (m && m[1] === 'IP' && m[6]!.startsWith('UDP') && tunnel.has(m[2] === c1.publicAddress ? `${m[2]} > ${m[4]}${m[5]}` : `${m[2]}${m[3]} > ${m[4]}`))
        udp++;
      // Link housekeeping (ARP, IPv6 neighbour discovery and MLD between link-local and multicast addresses) carries nothing of the client's.
      else if (/ ARP, /.test(line)) continue;
      else if (m && m[1] === 'IP6' && /^(fe80:|::$)/.test(m[2]!) && /^(fe80:|ff02:)/.test(m[4]!) && m[6]!.startsWith('ICMP6')) continue;
      // Other hosts' neighbour discovery floods every port of the bridge; the client's own would be a leak.
      else if (m && m[1] === 'IP6' && m[2] !== own6 && /^ff02:/.test(m[4]!) && m[6]!.startsWith('ICMP6')) continue;
      else other.push(line);
    }
    expect(other, "packets on the client's own link that are not its tunnel").toEqual([]);
    expect(udp).toBeGreaterThanOrEqual(12);
    expect(lines.join('\n')).not.toMatch(/2001:db8:18:1::80|198\.18\.0\.1\./);
  });

  it('a client whose exit has no IPv6 is refused at the entry at once (ICMPv6 unreachable), never routed elsewhere', async () => {
    const c2 = manifest().clients.find((c) => c.name === 'c2')!;
    const view = await status('relay-1');
    expect(view.relays.find((r) => r.id === 'relay-3')?.exitIpv6).toBe(false);
    expect(view.relays.find((r) => r.id === 'relay-2')?.exitIpv6).toBe(true);
    // The entry's own address on its client device, in the clients' /96: where the refusal comes from.
    const pool = parseCidr(view.clientPool!)!;
    const gateway6 = embed6(DEFAULT_CLIENT_PREFIX6, formatIpv4(pool.base + 1));
    const results: number[] = [];
    const lines = await capture(c2.namespace, c2.device, async () => {
      for (let i = 0; i < 3; i++) results.push((await inNs(c2.namespace, ['curl', '-sS', '--max-time', '8', `${WEB_URL6}/`])).exitCode ?? -1);
    });
    // curl's 7 is "could not connect" (refused at once); 28 would be a timeout.
    expect(results).toEqual([7, 7, 7]);
    // Every packet the client sent there was refused by the entry itself: one SYN per connection, or two
    // when the tunnel's handshake outlasts TCP's first retransmission (both then go through at once).
    const sent = lines.filter((l) => l.includes(` > ${WEB_ADDRESS6}.${WEB_PORT}: `)).length;
    const refused = lines.filter((l) => l.includes(`IP6 ${gateway6} > `) && l.includes('ICMP6, destination unreachable')).length;
    expect(sent).toBeGreaterThanOrEqual(3);
    expect(refused).toBe(sent);
    // Its IPv4 still leaves at its exit.
    const v4 = await inNs(c2.namespace, ['curl', '-sS', '--max-time', '5', `${WEB_URL}/`]);
    expect(v4.stdout.trim()).toBe(relayPublicAddress(3));
  });
});
