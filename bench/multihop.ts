/**
 * Multihop throughput: iperf3 from a stock WireGuard client through an entry and an exit relay to a
 * server on the simulated internet. Two paths, measured alternately in the same run:
 *
 * - relay-core: `relay-core sim up --relays 2` and `sim client add --entry relay-1 --exit relay-2`:
 *   the daemons program everything (client device, steering rule, exit table, filters, MSS clamp, NAT);
 * - reference: the same chain built by hand with the same tools (wireguard-go, wg, ip, nft) in
 *   namespaces of its own: client -> entry's client device -> `ip rule from <client> lookup <table>` ->
 *   the table's default route into a point-to-point link to the exit -> masquerade at the exit; no
 *   filters, no clamp.
 *
 * The ratio relay-core / reference is what the daemon's design costs the data path (the goal is 1).
 *
 * A third path in the same run: a private client of the same sim (`sim client add --private`, the same
 * entry and exit): its datagrams are forwarded by the entry's kernel (DNAT into the link) and its tunnel
 * ends at the exit, so the entry-to-exit leg carries two WireGuard layers. The ratio private / standard is
 * what privacy costs (issue 16 asks at least 0.9).
 *
 *   node bench/multihop.ts [--seconds S] [--rounds N] [--autogroup off]
 *       (default 10 s, 2 rounds; needs root, iperf3). `--autogroup off` sets kernel.sched_autogroup_enabled=0
 *       for the run and puts the value it found back afterwards: the scheduler then shares the cores between
 *       processes rather than between sessions (see wgProcesses).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { RELAY_CORE_BIN } from '../src/devnet/relay-process.ts';
import { BRIDGE_ADDRESS } from '../src/sim/layout.ts';
import { readManifest } from '../src/sim/manifest.ts';

const { values } = parseArgs({ options: { seconds: { type: 'string' }, rounds: { type: 'string' }, autogroup: { type: 'string' } } });
const seconds = Number(values.seconds ?? 10);
const rounds = Number(values.rounds ?? 2);
if (values.autogroup !== undefined && values.autogroup !== 'off') throw new Error(`--autogroup takes only 'off' (got ${values.autogroup})`);
const AUTOGROUP = '/proc/sys/kernel/sched_autogroup_enabled';

async function sh(argv: string[], input?: string): Promise<string> {
  const r = await execa(argv[0]!, argv.slice(1), { reject: false, timeout: 120_000, input });
  if (r.exitCode !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr || r.stdout}`);
  return r.stdout;
}
const inNs = (ns: string, argv: string[], input?: string) => sh(['ip', 'netns', 'exec', ns, ...argv], input);

/** Mbit/s of one iperf3 run from `clientNs` to `server` (TCP, client to server). */
async function iperf(clientNs: string, server: string): Promise<number> {
  const out = await inNs(clientNs, ['iperf3', '-c', server, '-t', String(seconds), '-J']);
  return (JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second / 1e6;
}

function startIperfServer(ns: string, address: string): { stop: () => void } {
  const p = execa('ip', ['netns', 'exec', ns, 'iperf3', '-s', '-B', address], { reject: false });
  return { stop: () => void p.kill('SIGTERM') };
}

// ---------------------------------------------------------------------------------------------------
// The reference chain, by hand.

const id = Math.random().toString(36).slice(2, 6);
const NS = { inet: `rcb-${id}-inet`, entry: `rcb-${id}-entry`, exit: `rcb-${id}-exit`, client: `rcb-${id}-client` };
const DEV = { entryClient: `rb${id}c`, entryLink: `rb${id}e`, exitLink: `rb${id}x`, client: `rb${id}k` };
const REF_SERVER = '198.19.0.1';

async function wgKeys(): Promise<{ priv: string; pub: string }> {
  const priv = (await sh(['wg', 'genkey'])).trim();
  return { priv, pub: (await sh(['wg', 'pubkey'], priv)).trim() };
}

/**
 * Start the wireguard-go processes of one simulated host in one new session, as the relay-core daemon's
 * devices are in its (the sim starts each relay as a session leader, and every device it makes joins its
 * session). With CFS autogroups (`kernel.sched_autogroup_enabled=1`, Debian's default) each session is a
 * scheduling group of its own, and on two saturated cores that grouping alone halves the sim path's
 * throughput: a reference whose processes all share the benchmark's session is not the same experiment.
 */
async function wgProcesses(ns: string, devs: string[]): Promise<void> {
  await inNs(ns, ['setsid', '-w', 'sh', '-c', devs.map((d) => `wireguard-go ${d}`).join(' && ')]);
}

async function wgDevice(
  ns: string,
  dev: string,
  priv: string,
  port: number | null,
  addr: string,
  peer: { pub: string; endpoint?: string; allowed: string },
): Promise<void> {
  const conf = `[Interface]\nPrivateKey = ${priv}\n${port ? `ListenPort = ${port}\n` : ''}\n[Peer]\nPublicKey = ${peer.pub}\nAllowedIPs = ${peer.allowed}\n${peer.endpoint ? `Endpoint = ${peer.endpoint}\nPersistentKeepalive = 25\n` : ''}`;
  // `wg setconf` opens its file with fopen, which refuses the socket Node makes of a child's stdin.
  const file = join(root, `${dev}.conf`);
  writeFileSync(file, conf, { mode: 0o600 });
  await inNs(ns, ['wg', 'setconf', dev, file]);
  await inNs(ns, ['ip', 'address', 'add', addr, 'dev', dev]);
  await inNs(ns, ['ip', 'link', 'set', 'dev', dev, 'mtu', '1420', 'up']);
}

async function buildReference(): Promise<void> {
  for (const ns of Object.values(NS)) {
    await sh(['ip', 'netns', 'add', ns]);
    await inNs(ns, ['ip', 'link', 'set', 'lo', 'up']);
  }
  await inNs(NS.inet, ['ip', 'link', 'add', 'br0', 'type', 'bridge']);
  await inNs(NS.inet, ['ip', 'address', 'add', `${REF_SERVER}/16`, 'dev', 'br0']);
  await inNs(NS.inet, ['ip', 'link', 'set', 'br0', 'up']);
  const attach = async (ns: string, veth: string, cidr: string, route: string[]) => {
    await sh(['ip', '-n', NS.inet, 'link', 'add', veth, 'type', 'veth', 'peer', 'name', 'pub0', 'netns', ns]);
    await sh(['ip', '-n', NS.inet, 'link', 'set', veth, 'master', 'br0', 'up']);
    await inNs(ns, ['ip', 'address', 'add', cidr, 'dev', 'pub0']);
    await inNs(ns, ['ip', 'link', 'set', 'pub0', 'up']);
    await inNs(ns, ['ip', 'route', 'add', ...route]);
  };
  await attach(NS.entry, `vb${id}e`, '198.19.1.1/16', ['default', 'via', REF_SERVER]);
  await attach(NS.exit, `vb${id}x`, '198.19.1.2/16', ['default', 'via', REF_SERVER]);
  await attach(NS.client, `vb${id}k`, '198.19.2.1/32', ['198.19.1.0/24', 'dev', 'pub0']);

  const [entry, exit, client] = [await wgKeys(), await wgKeys(), await wgKeys()];
  // The entry's two devices share a session (relay-1's), the exit's is another; the client's wireguard-go
  // stays in the benchmark's session, like the sim client's (started by 'sim client add').
  await wgProcesses(NS.entry, [DEV.entryClient, DEV.entryLink]);
  await wgProcesses(NS.exit, [DEV.exitLink]);
  await inNs(NS.client, ['wireguard-go', DEV.client]);
  await wgDevice(NS.entry, DEV.entryClient, entry.priv, 51820, '100.96.0.1/22', { pub: client.pub, allowed: '100.96.0.2/32' });
  await wgDevice(NS.entry, DEV.entryLink, entry.priv, 51822, '100.64.0.1/32', { pub: exit.pub, endpoint: '198.19.1.2:51821', allowed: '0.0.0.0/0' });
  await wgDevice(NS.exit, DEV.exitLink, exit.priv, 51821, '100.64.0.2/32', { pub: entry.pub, endpoint: '198.19.1.1:51822', allowed: '0.0.0.0/0' });
  await wgDevice(NS.client, DEV.client, client.priv, null, '100.96.0.2/32', { pub: entry.pub, endpoint: '198.19.1.1:51820', allowed: '0.0.0.0/0' });
  await inNs(NS.client, ['ip', 'route', 'add', 'default', 'dev', DEV.client]);
  // Entry: steer the client into the link to the exit.
  await inNs(NS.entry, ['sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=2']);
  await inNs(NS.entry, ['ip', 'route', 'add', 'default', 'dev', DEV.entryLink, 'table', '100002']);
  await inNs(NS.entry, ['ip', 'rule', 'add', 'priority', '20002', 'from', '100.96.0.2', 'iif', DEV.entryClient, 'lookup', '100002']);
  // Exit: replies to the pool back into the link, masquerade onto the public interface.
  await inNs(NS.exit, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  await inNs(NS.exit, ['ip', 'route', 'add', '100.96.0.0/22', 'dev', DEV.exitLink]);
  await inNs(
    NS.exit,
    ['nft', '-f', '-'],
    'table ip ref_nat {\n chain postrouting_nat {\n  type nat hook postrouting priority srcnat;\n  oifname "pub0" ip saddr 100.96.0.0/11 masquerade\n }\n}\n',
  );
}

async function removeReference(): Promise<void> {
  for (const ns of Object.values(NS)) {
    const pids = (await execa('ip', ['netns', 'pids', ns], { reject: false })).stdout.split('\n').filter(Boolean);
    for (const p of pids) await execa('kill', [p], { reject: false });
    await execa('ip', ['netns', 'del', ns], { reject: false });
  }
  for (const d of Object.values(DEV)) rmSync(`/var/run/wireguard/${d}.sock`, { force: true });
}

// ---------------------------------------------------------------------------------------------------

const root = mkdtempSync(join(tmpdir(), 'relay-core-bench-multihop-'));
const dir = join(root, 'state');
const sim = (args: string[]) => sh([RELAY_CORE_BIN, 'sim', ...args, '--state-dir', dir]);
const servers: { stop: () => void }[] = [];
const autogroupFound = existsSync(AUTOGROUP) ? readFileSync(AUTOGROUP, 'utf8').trim() : null;
try {
  if (values.autogroup === 'off') {
    if (autogroupFound === null) throw new Error(`${AUTOGROUP} does not exist: this kernel has no autogroups to turn off`);
    writeFileSync(AUTOGROUP, '0');
  }
  console.log(`kernel.sched_autogroup_enabled during the run: ${values.autogroup === 'off' ? 0 : (autogroupFound ?? 'absent')}`);
  await sim(['up', '--relays', '2', '--timeout', '120']);
  await sim(['client', 'add', '--name', 'bench', '--entry', 'relay-1', '--exit', 'relay-2']);
  await sim(['client', 'add', '--name', 'private', '--entry', 'relay-1', '--exit', 'relay-2', '--private']);
  const m = readManifest(dir)!;
  const simClient = m.clients.find((c) => c.name === 'bench')!.namespace;
  const privateClient = m.clients.find((c) => c.name === 'private')!.namespace;
  await buildReference();
  servers.push(startIperfServer(`rcs-${m.simId}-inet`, BRIDGE_ADDRESS), startIperfServer(NS.inet, REF_SERVER));
  await new Promise((r) => setTimeout(r, 1_000));
  const relay: number[] = [];
  const ref: number[] = [];
  const priv: number[] = [];
  for (let i = 0; i < rounds; i++) {
    ref.push(await iperf(NS.client, REF_SERVER));
    relay.push(await iperf(simClient, BRIDGE_ADDRESS));
    priv.push(await iperf(privateClient, BRIDGE_ADDRESS));
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  console.log(`| path | Mbit/s per run (${seconds} s each) | mean |`);
  console.log('|---|---|---|');
  console.log(`| relay-core (sim, daemons) | ${relay.map((x) => x.toFixed(0)).join(', ')} | ${mean(relay).toFixed(0)} |`);
  console.log(`| relay-core private (sim, daemons) | ${priv.map((x) => x.toFixed(0)).join(', ')} | ${mean(priv).toFixed(0)} |`);
  console.log(`| reference (by hand) | ${ref.map((x) => x.toFixed(0)).join(', ')} | ${mean(ref).toFixed(0)} |`);
  console.log(`\nratio relay-core / reference: ${(mean(relay) / mean(ref)).toFixed(2)}`);
  console.log(`ratio private / standard: ${(mean(priv) / mean(relay)).toFixed(2)}`);
} finally {
  if (values.autogroup === 'off' && autogroupFound !== null) writeFileSync(AUTOGROUP, autogroupFound);
  for (const s of servers) s.stop();
  await removeReference();
  await execa(RELAY_CORE_BIN, ['sim', 'down', '--state-dir', dir], { reject: false, timeout: 120_000 });
  rmSync(root, { recursive: true, force: true });
}
