import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { execa } from 'execa';

/**
 * Network namespace, veth and bridge helpers for the sim: `ip` and `nft` run with argument arrays
 * and a timeout each. Nothing here touches the root namespace's links, addresses or rules.
 */

const TIMEOUT_MS = 15_000;

async function run(cmd: string, args: string[], input?: string): Promise<string> {
  const r = await execa(cmd, args, { timeout: TIMEOUT_MS, reject: false, input });
  if (r.exitCode !== 0 || r.timedOut) {
    const why = r.timedOut ? `timed out after ${TIMEOUT_MS} ms` : (r.stderr || r.stdout || `exit ${r.exitCode}`).trim();
    throw new Error(`${cmd} ${args.join(' ')}: ${why}`);
  }
  return r.stdout;
}

const ip = (args: string[]) => run('ip', args);

export async function listNetns(): Promise<string[]> {
  const out = await ip(['-j', 'netns', 'list']);
  if (!out.trim()) return [];
  return (JSON.parse(out) as { name: string }[]).map((n) => n.name);
}

/** Create a namespace with its loopback up. */
export async function addNetns(name: string): Promise<void> {
  await ip(['netns', 'add', name]);
  await ip(['-n', name, 'link', 'set', 'lo', 'up']);
}

/** Where `ip netns exec NAME` finds the files it bind-mounts over /etc (resolv.conf, hosts). */
export const NETNS_ETC = '/etc/netns';

/**
 * Give processes started in `name` (by `ip netns exec`) a resolver of their own: DNS goes to the
 * namespace's own loopback, where nothing answers (a lookup fails at once, and no query leaves the
 * namespace), and /etc/hosts is `hosts` (default: localhost only). Removed with the namespace by
 * {@link deleteNetns}.
 */
export function isolateDns(name: string, hosts = '127.0.0.1 localhost\n::1 localhost\n'): void {
  const dir = `${NETNS_ETC}/${name}`;
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  writeFileSync(`${dir}/resolv.conf`, 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n', { mode: 0o644 });
  writeFileSync(`${dir}/hosts`, hosts, { mode: 0o644 });
}

/** Delete a namespace (and its files in /etc/netns); false when it did not exist. Its veth ends (and their peers) go with it. */
export async function deleteNetns(name: string): Promise<boolean> {
  rmSync(`${NETNS_ETC}/${name}`, { recursive: true, force: true });
  try {
    rmdirSync(NETNS_ETC);
  } catch {
    /* not empty (other namespaces' files) or not there */
  }
  if (!(await listNetns()).includes(name)) return false;
  await ip(['netns', 'del', name]);
  return true;
}

/** Pids of the processes in a namespace (none when it does not exist). */
export async function netnsPids(name: string): Promise<number[]> {
  if (!(await listNetns()).includes(name)) return [];
  const out = await ip(['netns', 'pids', name]);
  return out.split('\n').filter(Boolean).map(Number);
}

/** The link names of a namespace (null: the root namespace). */
export async function linkNames(ns: string | null): Promise<string[]> {
  const out = await ip([...(ns ? ['-n', ns] : []), '-j', 'link', 'show']);
  return out.trim() ? (JSON.parse(out) as { ifname: string }[]).map((l) => l.ifname) : [];
}

/**
 * A bridge with an address of its own. Its MAC is set explicitly: a bridge left to choose takes the
 * lowest MAC of its ports and changes it whenever a port with a lower one joins, and every host on it
 * keeps the old MAC in its neighbour table for up to a minute (no gratuitous ARP by default). In the
 * sim that cut every exit's traffic to the "internet" (the bridge's own address) whenever a new
 * relay or client joined with a lower random MAC: the clients test's intermittent failure.
 */
export async function addBridge(ns: string, name: string, cidr: string): Promise<void> {
  // Locally administered, unicast (02:...), random so that two sims' bridges differ.
  const mac = ['02', ...[...randomBytes(5)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
  await ip(['-n', ns, 'link', 'add', name, 'address', mac, 'type', 'bridge']);
  await ip(['-n', ns, 'address', 'add', cidr, 'dev', name]);
  await ip(['-n', ns, 'link', 'set', name, 'up']);
}

/**
 * Connect namespace `ns` to the bridge in `bridgeNs` by a veth pair created in the bridge's namespace
 * with its other end moved straight into `ns` (so no name is ever taken in the root namespace), and
 * give that end `cidr`, a route to each of `onLink` over the segment, and a default route via `gateway` (when given).
 */
export async function attachToBridge(o: {
  bridgeNs: string;
  bridge: string;
  outer: string;
  ns: string;
  inner: string;
  cidr: string;
  gateway: string | null;
  onLink?: string[];
}): Promise<void> {
  await ip(['-n', o.bridgeNs, 'link', 'add', o.outer, 'type', 'veth', 'peer', 'name', o.inner, 'netns', o.ns]);
  await ip(['-n', o.bridgeNs, 'link', 'set', o.outer, 'master', o.bridge, 'up']);
  await ip(['-n', o.ns, 'address', 'add', o.cidr, 'dev', o.inner]);
  await ip(['-n', o.ns, 'link', 'set', o.inner, 'up']);
  // Only `onLink` directly on the segment (a sim client reaches the relays, nothing else, without its tunnel).
  for (const cidr of o.onLink ?? []) await ip(['-n', o.ns, 'route', 'add', cidr, 'dev', o.inner]);
  if (o.gateway) await ip(['-n', o.ns, 'route', 'add', 'default', 'via', o.gateway]);
}

/**
 * Replace the IPv4 address `from` of `dev` in `ns` by `to` (both CIDRs), and the default route via
 * `gateway` (deleting an interface's last address removes the routes through it).
 */
export async function replaceAddress(ns: string, dev: string, from: string, to: string, gateway: string): Promise<void> {
  await ip(['-n', ns, 'address', 'del', from, 'dev', dev]);
  await ip(['-n', ns, 'address', 'add', to, 'dev', dev]);
  await ip(['-n', ns, 'route', 'replace', 'default', 'via', gateway, 'dev', dev]);
}

/**
 * An IPv6 address on `dev` in `ns` (no duplicate address detection: the address is usable at once),
 * and a default route via `gateway` when given (with `metric`, default the kernel's 1024).
 */
export async function addAddress6(ns: string, dev: string, cidr: string, gateway: string | null, metric?: number): Promise<void> {
  await ip(['-n', ns, '-6', 'address', 'add', cidr, 'dev', dev, 'nodad']);
  if (gateway) await ip(['-n', ns, '-6', 'route', 'add', 'default', 'via', gateway, 'dev', dev, ...(metric === undefined ? [] : ['metric', String(metric)])]);
}

/**
 * Make a service that listens only on 127.0.0.1:port inside `ns` reachable at address:port from the
 * other namespaces: DNAT to loopback (which needs route_localnet, a per-namespace setting). The local
 * control plane's gateway binds 127.0.0.1 only.
 */
export async function forwardToLoopback(ns: string, address: string, port: number): Promise<void> {
  await run('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv4.conf.all.route_localnet=1']);
  const rules = [
    'table ip relay_core_sim {',
    '  chain prerouting {',
    '    type nat hook prerouting priority dstnat;',
    `    ip daddr ${address} tcp dport ${port} dnat to 127.0.0.1:${port}`,
    '  }',
    '}',
  ].join('\n');
  await run('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], rules + '\n');
}

const PROBE = `const [h, p, t] = process.argv.slice(1);
const s = require('node:net').connect(Number(p), h);
const done = (code) => { s.destroy(); process.exit(code); };
s.once('connect', () => done(0));
s.once('error', () => done(1));
setTimeout(() => done(1), Number(t));`;

/** Whether a TCP connection from inside `ns` to host:port succeeds within `timeoutMs`. */
export async function tcpReachable(ns: string, host: string, port: number, timeoutMs = 2_000): Promise<boolean> {
  const r = await execa('ip', ['netns', 'exec', ns, process.execPath, '-e', PROBE, host, String(port), String(timeoutMs)], {
    timeout: timeoutMs + 5_000,
    reject: false,
  });
  return r.exitCode === 0;
}

/**
 * Start `argv` inside `ns`, detached: its own session and process group (so it outlives the sim CLI
 * and a Ctrl-C in the sim's terminal does not reach it), stdout and stderr appended to `logFile`.
 * `ip netns exec` execs the command after entering the namespace, so the pid is the command's own.
 */
export function spawnInNetns(ns: string, argv: string[], o: { logFile: string; cwd: string; env?: NodeJS.ProcessEnv }): { pid: number; command: string[] } {
  const command = ['ip', 'netns', 'exec', ns, ...argv];
  const fd = openSync(o.logFile, 'a', 0o600);
  try {
    const child = spawn(command[0]!, command.slice(1), { detached: true, stdio: ['ignore', fd, fd], cwd: o.cwd, env: o.env ?? process.env });
    if (child.pid === undefined) throw new Error(`cannot start ${command.join(' ')}`);
    child.unref();
    return { pid: child.pid, command };
  } finally {
    closeSync(fd);
  }
}

/** A live process (a zombie, dead but not yet reaped, counts as gone). */
export function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** The process's command line, or null when it is gone. */
export function cmdline(pid: number): string[] | null {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return null;
  }
}

export function processName(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

/** Send a signal; false when the process is already gone. */
export function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** Wait until none of `pids` runs, for at most `timeoutMs`; returns those still running. */
export async function waitGone(pids: number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = pids.filter(isRunning);
    if (left.length === 0 || Date.now() >= deadline) return left;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The names of the WireGuard userspace control sockets (shared by every namespace of the machine). */
export const WG_SOCKET_DIR = '/var/run/wireguard';
export function wgSocketNames(): string[] {
  try {
    return readdirSync(WG_SOCKET_DIR);
  } catch {
    return [];
  }
}
