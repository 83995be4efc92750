import { execa } from 'execa';
import { existsSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../lib/logger.ts';
import { describeOp } from './execute.ts';
import {
  KernelOpError,
  type HostState,
  type KernelBackend,
  type KernelOp,
  type KernelScope,
  type NftCounter,
  type NftTableState,
  type PeerObservation,
  type RouteState,
  type RuleState,
  type WgDeviceState,
  type WgPeerState,
} from './host-state.ts';
import { canonicalHostState, isIpv6 } from './plan.ts';

/** Where wireguard-go puts its control socket: one directory for every network namespace. */
const WG_SOCKET_DIR = '/var/run/wireguard';
/** How long wireguard-go gets to notice its device is gone, exit and remove its socket. */
const SOCKET_GRACE_MS = 3_000;

export type WireGuardImpl = 'auto' | 'kernel' | 'userspace';

export interface LinuxKernelBackendOptions {
  logger: Logger;
  /** Run every command in this network namespace (`ip netns exec NS ...`): tests and tooling. */
  netns?: string;
  /** WireGuard devices from the kernel module, from `wireguard-go`, or whichever works (default). */
  impl?: WireGuardImpl;
  /** Per command (default 10 s). */
  timeoutMs?: number;
}

/**
 * The only code that changes the host: `ip`, `wg`, `wireguard-go`, `sysctl` and `nft`, each run with an
 * argument array, a timeout and no shell. Private keys reach `wg` as a file path only and never appear
 * on a command line, in a log or in memory longer than one parse (`wg show dump` prints the private
 * key first; that field is dropped unread).
 *
 * Reading sees only owned devices that exist as links in this namespace: `wg show all` would also list
 * the wireguard-go sockets of other namespaces, whose directory is shared. Device names must therefore
 * be unique on the machine.
 *
 * nftables: only tables of family inet named in the scope are read or changed, never the rest of the
 * ruleset. A table is written in one `nft -f -` transaction (create if absent, delete, create with its
 * body and the comment `relay-core:<digest>`), so it is never seen half built and never missing; its
 * digest reads back from that comment alone (a table without it reads with digest '' and is replaced).
 */
export class LinuxKernelBackend implements KernelBackend {
  readonly kind = 'linux' as const;
  private readonly log: Logger;
  private readonly netns: string | undefined;
  private readonly timeoutMs: number;
  /** Becomes 'kernel' or 'userspace' once a device was created the one way or the other. */
  private impl: WireGuardImpl;

  constructor(opts: LinuxKernelBackendOptions) {
    this.log = opts.logger;
    this.netns = opts.netns;
    this.impl = opts.impl ?? 'auto';
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  async apply(op: KernelOp): Promise<void> {
    this.log.debug({ op: describeOp(op) }, 'kernel op');
    if (op.op === 'link.add') {
      await this.createDevice(op);
      await this.run(['ip', 'link', 'set', 'dev', op.dev, 'mtu', String(op.mtu)], op);
    } else if (op.op === 'link.del') {
      await this.run(['ip', 'link', 'del', 'dev', op.dev], op);
      await this.awaitSocketGone(op);
    } else if (op.op === 'nft.table.set') {
      await this.run(['nft', '-f', '-'], op, nftTableScript(op));
    } else {
      await this.run(commandOf(op), op);
    }
  }

  async read(scope: KernelScope): Promise<HostState> {
    const links = (await this.json<IpAddrJson[]>(['ip', '-j', 'addr', 'show'])).filter((l) => l.ifname.startsWith(scope.devicePrefix));
    const owned = (dev: string | undefined) => dev !== undefined && dev.startsWith(scope.devicePrefix);
    const [dumps, routes, rules, sysctls, nftTables] = await Promise.all([
      Promise.all(links.map((l) => this.run(['wg', 'show', l.ifname, 'dump'], null))),
      this.readRoutes(owned),
      this.readRules(scope.rulePriorities),
      this.readSysctls(scope.sysctls),
      this.readNftTables(scope.nftTables),
    ]);
    const devices = Object.fromEntries(links.map((l, i) => [l.ifname, parseDevice(l, dumps[i]!)]));
    return canonicalHostState({ devices, routes, rules, sysctls, nftTables });
  }

  async observe(devices: string[]): Promise<PeerObservation[]> {
    const present = new Set((await this.json<{ ifname: string }[]>(['ip', '-j', 'link', 'show'])).map((l) => l.ifname));
    const dumps = await Promise.all(devices.filter((d) => present.has(d)).map(async (dev) => ({ dev, dump: await this.run(['wg', 'show', dev, 'dump'], null) })));
    return dumps.flatMap(({ dev, dump }) => parseDump(dump).peers.map((p) => observation(dev, p)));
  }

  /**
   * IPv6 is on when the host has it and `disable_ipv6` is 0; an exit for clients' IPv6 also needs a
   * default IPv6 route (main table).
   */
  async ipv6(): Promise<{ enabled: boolean; defaultRoute: boolean }> {
    const r = await this.exec(['sysctl', '-n', 'net.ipv6.conf.all.disable_ipv6']);
    if (r.error || r.stdout.trim() !== '0') return { enabled: false, defaultRoute: false };
    const routes = await this.json<unknown[]>(['ip', '-6', '-j', 'route', 'show', 'default']);
    return { enabled: true, defaultRoute: routes.length > 0 };
  }

  async counters(table: string): Promise<Record<string, NftCounter>> {
    const r = await this.exec(['nft', '-j', 'list', 'counters', 'table', 'inet', table]);
    // No such table (not programmed yet, or torn down): no counters.
    if (r.error) {
      if (/No such file or directory|does not exist/i.test(r.error.stderr)) return {};
      throw new Error(`${r.error.command.join(' ')} failed (exit ${r.error.exitCode}): ${r.error.stderr}`);
    }
    const listed = (JSON.parse(r.stdout) as NftCountersJson).nftables ?? [];
    return Object.fromEntries(listed.flatMap((o) => (o.counter && o.counter.table === table ? [[o.counter.name, { packets: o.counter.packets, bytes: o.counter.bytes }]] : [])));
  }

  /** `ip link add ... type wireguard` where the kernel has WireGuard, else a `wireguard-go` process. */
  private async createDevice(op: Extract<KernelOp, { op: 'link.add' }>): Promise<void> {
    if (this.impl !== 'userspace') {
      const r = await this.exec(['ip', 'link', 'add', 'dev', op.dev, 'type', 'wireguard']);
      if (!r.error) {
        this.impl = 'kernel';
        return;
      }
      // Only a kernel without WireGuard sends us to wireguard-go; any other failure is the answer.
      if (this.impl === 'kernel' || !/unknown device type|not supported/i.test(r.error.stderr)) throw this.opError(op, r.error);
      this.log.info({ dev: op.dev }, 'no WireGuard in this kernel: using wireguard-go');
    }
    // wireguard-go daemonises once its device and socket exist; it keeps our stdio only if LOG_LEVEL is set.
    const r = await this.exec(['wireguard-go', op.dev], { LOG_LEVEL: undefined });
    // It logs its errors to stdout.
    if (r.error) throw this.opError(op, { ...r.error, stderr: [r.error.stderr, r.stdout.trim()].filter(Boolean).join('\n') });
    this.impl = 'userspace';
  }

  /**
   * A wireguard-go device's daemon exits when its link is deleted and removes its socket. A socket that
   * lingers nobody answers on is stale and removed; one that answers means a wireguard-go for this
   * name still runs (in another namespace, or hung), which is an error.
   */
  private async awaitSocketGone(op: KernelOp & { dev: string }): Promise<void> {
    const socket = `${WG_SOCKET_DIR}/${op.dev}.sock`;
    const deadline = Date.now() + SOCKET_GRACE_MS;
    while (existsSync(socket) && Date.now() < deadline) await sleep(50);
    if (!existsSync(socket)) return;
    if (await socketAnswers(socket)) throw new KernelOpError(op, `${socket} still answers after its device was deleted`, { command: ['ip', 'link', 'del', 'dev', op.dev] });
    this.log.warn({ dev: op.dev, socket }, 'removing the stale wireguard-go socket');
    rmSync(socket, { force: true });
  }

  private async readRoutes(owned: (dev: string | undefined) => boolean): Promise<RouteState[]> {
    const read = async (fam: '-4' | '-6') =>
      (await this.json<IpRouteJson[]>(['ip', fam, '-N', '-d', '-j', 'route', 'show', 'table', 'all'])).filter((r) => owned(r.dev) && isManagedRoute(r)).map((r) => parseRoute(r, fam));
    return (await Promise.all([read('-4'), read('-6')])).flat();
  }

  private async readRules([lo, hi]: [number, number]): Promise<RuleState[]> {
    const read = async (fam: '-4' | '-6') => (await this.json<IpRuleJson[]>(['ip', fam, '-N', '-j', 'rule', 'show'])).filter((r) => r.priority >= lo && r.priority <= hi);
    // An IPv6 rule without `from` would read like the IPv4 one: rules without `from` are IPv4 rules.
    const [v4, v6] = await Promise.all([read('-4'), read('-6')]);
    const candidates = [...v4, ...v6.filter((r) => r.src !== 'all')];
    const strange = candidates.filter((r) => !isRepresentable(r));
    if (strange.length > 0) this.log.warn({ rules: strange }, 'rules in the owned priority range with selectors relay-core does not set: left alone');
    return candidates.filter(isRepresentable).map(parseRule);
  }

  /** One `sysctl -n KEY` per key: a value with a newline in it cannot shift the others. */
  private async readSysctls(keys: string[]): Promise<Record<string, string>> {
    const values = await Promise.all(keys.map((k) => this.run(['sysctl', '-n', k], null)));
    return Object.fromEntries(keys.map((k, i) => [k, values[i]!.replace(/\n$/, '')]));
  }

  /** The owned tables of family inet, with the digest from their comment. Nothing owned: `nft` is not run. */
  private async readNftTables(names: string[]): Promise<Record<string, NftTableState>> {
    if (names.length === 0) return {};
    const listed = (await this.json<NftListJson>(['nft', '-j', 'list', 'tables'])).nftables ?? [];
    const present = listed.flatMap((o) => (o.table && o.table.family === 'inet' && names.includes(o.table.name) ? [o.table.name] : []));
    const texts = await Promise.all(present.map((name) => this.run(['nft', 'list', 'table', 'inet', name], null)));
    return Object.fromEntries(present.map((name, i) => [name, { name, digest: nftTableDigest(name, texts[i]!) }]));
  }

  private async json<T>(args: string[]): Promise<T> {
    return JSON.parse(await this.run(args, null)) as T;
  }

  /** Run a command (`input` is its stdin); throw a `KernelOpError` for `op`, or a plain error while reading. Returns stdout. */
  private async run(args: string[], op: KernelOp | null, input?: string): Promise<string> {
    const r = await this.exec(args, {}, input);
    if (!r.error) return r.stdout;
    if (op) throw this.opError(op, r.error);
    throw new Error(`${r.error.command.join(' ')} failed (exit ${r.error.exitCode}): ${r.error.stderr}`);
  }

  private async exec(args: string[], env: Record<string, undefined> = {}, input?: string): Promise<{ stdout: string; error: CommandFailure | null }> {
    const command = this.netns ? ['ip', 'netns', 'exec', this.netns, ...args] : args;
    this.log.debug({ command }, 'run');
    const r = await execa(command[0]!, command.slice(1), { timeout: this.timeoutMs, reject: false, env, ...(input === undefined ? {} : { input }) });
    if (r.exitCode === 0 && !r.failed) return { stdout: r.stdout, error: null };
    const stderr = r.timedOut ? `timed out after ${this.timeoutMs} ms` : withoutBanner(r.stderr);
    return { stdout: r.stdout, error: { command, exitCode: r.exitCode ?? null, stderr } };
  }

  private opError(op: KernelOp, f: CommandFailure): KernelOpError {
    return new KernelOpError(op, `${describeOp(op)}: ${f.stderr || `exit ${f.exitCode}`}`, f);
  }
}

interface CommandFailure {
  command: string[];
  exitCode: number | null;
  stderr: string;
}

/** wireguard-go boxes a notice that the kernel has WireGuard (it says so on every Linux) into stderr. */
const withoutBanner = (stderr: string) =>
  stderr
    .split('\n')
    .filter((l) => !/^[┌│└]/.test(l))
    .join('\n')
    .trim();

const family = (addressOrCidr: string) => (isIpv6(addressOrCidr) ? '-6' : '-4');

/** The one command of every operation but link.add and link.del (more than one step) and nft.table.set (a script on stdin). */
function commandOf(op: Exclude<KernelOp, { op: 'link.add' | 'link.del' | 'nft.table.set' }>): string[] {
  switch (op.op) {
    case 'link.mtu':
      return ['ip', 'link', 'set', 'dev', op.dev, 'mtu', String(op.mtu)];
    case 'link.up':
      return ['ip', 'link', 'set', 'dev', op.dev, 'up'];
    case 'link.down':
      return ['ip', 'link', 'set', 'dev', op.dev, 'down'];
    case 'wg.device':
      return ['wg', 'set', op.dev, 'listen-port', String(op.listenPort), 'private-key', op.privateKeyFile];
    case 'wg.peer.set':
      return peerSetArgs(op.dev, op.peer);
    case 'wg.peer.del':
      return ['wg', 'set', op.dev, 'peer', op.publicKey, 'remove'];
    case 'addr.add':
    case 'addr.del':
      return ['ip', family(op.cidr), 'addr', op.op === 'addr.add' ? 'add' : 'del', op.cidr, 'dev', op.dev];
    case 'route.add':
    case 'route.del':
    case 'route.replace':
      return routeArgs(op.op.slice('route.'.length), op.route);
    case 'rule.add':
    case 'rule.del':
      return ruleArgs(op.op.slice('rule.'.length), op.rule);
    case 'sysctl.set':
      return ['sysctl', '-q', '-w', `${op.key}=${op.value}`];
    case 'nft.table.del':
      return ['nft', 'delete', 'table', 'inet', op.name];
    default:
      throw new KernelOpError(op, `unknown operation ${JSON.stringify((op as { op?: unknown }).op)}`);
  }
}

/** `wg set` replaces a peer's allowed-ips with the list given; an empty argument clears it. */
function peerSetArgs(dev: string, p: WgPeerState): string[] {
  const endpoint = p.endpoint === null ? [] : ['endpoint', p.endpoint];
  const keepalive = p.keepaliveSeconds > 0 ? String(p.keepaliveSeconds) : 'off';
  return ['wg', 'set', dev, 'peer', p.publicKey, ...endpoint, 'allowed-ips', p.allowedIps.join(','), 'persistent-keepalive', keepalive];
}

function routeArgs(verb: string, r: RouteState): string[] {
  return ['ip', family(r.dst), 'route', verb, r.dst, 'dev', r.dev, 'table', String(r.table), ...(r.src === null ? [] : ['src', r.src])];
}

/** A rule's family is its `from`'s; without one it is an IPv4 rule. */
function ruleArgs(verb: string, r: RuleState): string[] {
  const from = r.from === null ? [] : ['from', r.from];
  const iif = r.iif === null ? [] : ['iif', r.iif];
  const action = r.table === null ? ['unreachable'] : ['lookup', String(r.table)];
  return ['ip', r.from === null ? '-4' : family(r.from), 'rule', verb, 'priority', String(r.priority), ...from, ...iif, ...action];
}

/**
 * One nft transaction that replaces a table whether or not it exists: `table` creates it if absent,
 * `delete` drops it with everything in it, and the last `table` builds it anew with its comment.
 */
function nftTableScript(op: Extract<KernelOp, { op: 'nft.table.set' }>): string {
  return `table inet ${op.name} {}\ndelete table inet ${op.name}\ntable inet ${op.name} {\n comment "${NFT_COMMENT_PREFIX}${op.digest}";\n${op.body}\n}\n`;
}

const NFT_COMMENT_PREFIX = 'relay-core:';

/** The digest in a table's comment, which `nft list table` prints on the line after the table's. '' without one. */
function nftTableDigest(name: string, text: string): string {
  const lines = text.split('\n').map((l) => l.trim());
  const at = lines.indexOf(`table inet ${name} {`);
  const m = at < 0 ? null : /^comment "relay-core:([^"]*)"$/.exec(lines[at + 1] ?? '');
  return m?.[1] ?? '';
}

// ---------------------------------------------------------------------------------------------------
// Parsing what `ip -j` and `wg show dump` print.

interface IpAddrJson {
  ifname: string;
  mtu: number;
  flags: string[];
  addr_info: { family: string; local: string; prefixlen: number; scope: string }[];
}

/** `ip -N -d -j route`: numeric type, protocol and table. */
interface IpRouteJson {
  type: string;
  dst: string;
  dev?: string;
  table: string;
  protocol?: string;
  prefsrc?: string;
}

interface IpRuleJson {
  priority: number;
  src: string;
  srclen?: number;
  iif?: string;
  table?: string;
  /** Present for actions other than a lookup: numeric with -N (`7`), else its name (`unreachable`). */
  action?: string;
}

/** `nft -j list counters table inet T`: a metainfo object, then one object per named counter. */
interface NftCountersJson {
  nftables?: { counter?: { family: string; table: string; name: string; packets: number; bytes: number } }[];
}

/** `nft -j list tables`: a metainfo object, then one object per table. */
interface NftListJson {
  nftables?: { table?: { family: string; name: string } }[];
}

const RTN_UNICAST = '1';
const RTPROT_KERNEL = '2';

/**
 * Routes we add are unicast and not the kernel's. The kernel adds by itself: `local` routes in table
 * 255 for each address (and broadcast ones for shorter prefixes), a prefix route for every address
 * shorter than /32 (/128), the IPv6 `fe80::/64` and multicast routes of every link.
 */
const isManagedRoute = (r: IpRouteJson) => r.type === RTN_UNICAST && r.protocol !== RTPROT_KERNEL;

function parseRoute(r: IpRouteJson, fam: '-4' | '-6'): RouteState {
  const bits = fam === '-6' ? 128 : 32;
  const dst = r.dst === 'default' ? (fam === '-6' ? '::/0' : '0.0.0.0/0') : r.dst.includes('/') ? r.dst : `${r.dst}/${bits}`;
  return { dst, dev: r.dev!, table: Number(r.table), src: r.prefsrc ?? null };
}

/** FR_ACT_UNREACHABLE, as `ip -N rule` prints it; without -N it is named. */
const UNREACHABLE_ACTIONS = new Set(['7', 'unreachable']);
/**
 * The selectors a `RuleState` can hold, with a lookup or the action `unreachable`; a rule with any
 * other selector (fwmark, oif) or action (blackhole, prohibit, goto) is not ours.
 */
const RULE_FIELDS = new Set(['priority', 'src', 'srclen', 'iif', 'iif_detached', 'table', 'action']);
const isUnreachable = (r: IpRuleJson) => r.action !== undefined && UNREACHABLE_ACTIONS.has(r.action);
const isRepresentable = (r: IpRuleJson) =>
  (r.table !== undefined ? r.action === undefined : isUnreachable(r)) && Object.keys(r).every((k) => RULE_FIELDS.has(k));

function parseRule(r: IpRuleJson): RuleState {
  const from = r.src === 'all' ? null : `${r.src}/${r.srclen ?? (isIpv6(r.src) ? 128 : 32)}`;
  return { priority: r.priority, from, iif: r.iif ?? null, table: r.table === undefined ? null : Number(r.table) };
}

interface DumpPeer extends WgPeerState {
  latestHandshakeSeconds: number;
  rxBytes: number;
  txBytes: number;
}

const none = (field: string | undefined): string | null => (field === undefined || field === '(none)' ? null : field);

/**
 * `wg show DEV dump`: the device line (private key, public key, listen port, fwmark), then one line per
 * peer (public key, preshared key, endpoint, allowed ips, latest handshake, rx, tx, keepalive).
 */
function parseDump(dump: string): { publicKey: string; listenPort: number; peers: DumpPeer[] } {
  const [device = '', ...peerLines] = dump.split('\n').filter((l) => l !== '');
  const [, publicKey, listenPort] = device.split('\t'); // field 0, the private key, is skipped unread
  const peers = peerLines.map((line): DumpPeer => {
    const [key = '', , endpoint, allowed, handshake, rx, tx, keepalive] = line.split('\t');
    return {
      publicKey: key,
      endpoint: none(endpoint),
      allowedIps: none(allowed)?.split(',') ?? [],
      keepaliveSeconds: keepalive === 'off' ? 0 : Number(keepalive),
      latestHandshakeSeconds: Number(handshake),
      rxBytes: Number(rx),
      txBytes: Number(tx),
    };
  });
  return { publicKey: none(publicKey) ?? '', listenPort: Number(listenPort), peers };
}

function parseDevice(link: IpAddrJson, dump: string): WgDeviceState {
  const wg = parseDump(dump);
  return {
    name: link.ifname,
    publicKey: wg.publicKey,
    listenPort: wg.listenPort,
    mtu: link.mtu,
    // Link-local IPv6 addresses come with every link that goes up: the kernel's, not ours.
    addresses: link.addr_info.filter((a) => a.scope !== 'link').map((a) => `${a.local}/${a.prefixlen}`),
    up: link.flags.includes('UP'),
    peers: wg.peers.map(({ publicKey, endpoint, allowedIps, keepaliveSeconds }) => ({ publicKey, endpoint, allowedIps, keepaliveSeconds })),
  };
}

function observation(dev: string, p: DumpPeer): PeerObservation {
  return {
    dev,
    publicKey: p.publicKey,
    endpoint: p.endpoint,
    latestHandshakeMs: p.latestHandshakeSeconds > 0 ? p.latestHandshakeSeconds * 1000 : null,
    rxBytes: p.rxBytes,
    txBytes: p.txBytes,
  };
}

/** Whether a process listens on a unix socket (a stale socket file refuses connections). */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    s.setTimeout(1_000, () => (s.destroy(), resolve(false)));
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}
