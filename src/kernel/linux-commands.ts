import { KernelOpError, PORT_MAP, type KernelOp, type PortMapState, type RouteState, type RuleState, type WgPeerState } from './host-state.ts';
import { isIpv6 } from './ip.ts';

/**
 * Every command the Linux backend runs, as argument arrays (never a shell string) or an nft script:
 * pure, so tests can hold their exact text (test/unit/linux-commands.test.ts). The backend
 * (linux-backend.ts) only runs them and hands their output to linux-parse.ts.
 */

/** What the backend reads, and the steps of the operations that take more than one command. */
export const READ = {
  addresses: ['ip', '-j', 'addr', 'show'],
  links: ['ip', '-j', 'link', 'show'],
  wgDump: (dev: string) => ['wg', 'show', dev, 'dump'],
  /** One question to a device's WireGuard (its daemon must answer it: a wireguard-go that runs). */
  wgListenPort: (dev: string) => ['wg', 'show', dev, 'listen-port'],
  /** Every WireGuard device's dump in one process, each line led by its device's name. */
  wgDumpAll: ['wg', 'show', 'all', 'dump'],
  routes: (fam: '-4' | '-6') => ['ip', fam, '-N', '-d', '-j', 'route', 'show', 'table', 'all'],
  rules: (fam: '-4' | '-6') => ['ip', fam, '-N', '-j', 'rule', 'show'],
  sysctls: (keys: readonly string[]) => ['sysctl', ...keys],
  nftTables: ['nft', '-j', 'list', 'tables'],
  nftTable: (name: string) => ['nft', 'list', 'table', 'inet', name],
  nftCounters: (table: string) => ['nft', '-j', 'list', 'counters', 'table', 'inet', table],
  portMap: (table: string) => ['nft', '-j', 'list', 'map', 'inet', table, PORT_MAP],
  ipv6Disabled: ['sysctl', '-n', 'net.ipv6.conf.all.disable_ipv6'],
  ipv6DefaultRoutes: ['ip', '-6', '-j', 'route', 'show', 'default'],
} as const;

export const STEP = {
  /** A kernel WireGuard device; where the kernel has none, `wireguardGo` instead. */
  kernelDevice: (dev: string) => ['ip', 'link', 'add', 'dev', dev, 'type', 'wireguard'],
  wireguardGo: (dev: string) => ['wireguard-go', dev],
  mtu: (dev: string, mtu: number) => ['ip', 'link', 'set', 'dev', dev, 'mtu', String(mtu)],
  deleteLink: (dev: string) => ['ip', 'link', 'del', 'dev', dev],
  /** An nft.table.set's or a portmap.replace's script goes on this command's stdin. */
  nftScript: ['nft', '-f', '-'],
} as const;

const family = (addressOrCidr: string) => (isIpv6(addressOrCidr) ? '-6' : '-4');

/**
 * Which `ip -batch` an operation can go in: `-4` or `-6` (its family), `link` (a link's, no family), or
 * null when it is not one `ip` command. Consecutive operations of one batch key run in one process.
 */
export function ipBatchKey(op: KernelOp): '-4' | '-6' | 'link' | null {
  if (op.op === 'link.up' || op.op === 'link.down' || op.op === 'link.mtu') return 'link';
  if (op.op.startsWith('addr.') || op.op.startsWith('route.') || op.op.startsWith('rule.')) {
    const [, fam] = commandOf(op as Parameters<typeof commandOf>[0]);
    return fam === '-6' ? '-6' : '-4';
  }
  return null;
}

/** `ip -batch -` (with the family, if any) and its stdin: one line per operation, its command without `ip` and the family. */
export function ipBatch(key: '-4' | '-6' | 'link', ops: readonly KernelOp[]): { args: string[]; input: string } {
  const lines = ops.map((op) => {
    const args = commandOf(op as Parameters<typeof commandOf>[0]).slice(key === 'link' ? 1 : 2);
    if (args.some((a) => a === '' || /[\s"'\\#]/.test(a))) throw new KernelOpError(op, `cannot batch ${JSON.stringify(args)}`);
    return args.join(' ');
  });
  return { args: key === 'link' ? ['ip', '-batch', '-'] : ['ip', key, '-batch', '-'], input: `${lines.join('\n')}\n` };
}

/** The 1-based line at which `ip -batch` stopped (its `Command failed -:N`), and what it said before; null when it does not say. */
export function ipBatchFailure(stderr: string): { line: number; message: string } | null {
  const m = /^Command failed -:(\d+)\s*$/m.exec(stderr);
  if (!m) return null;
  return { line: Number(m[1]), message: stderr.slice(0, m.index).trim() };
}

/** The one command of every operation but link.add and link.del (more than one step), nft.table.set and portmap.replace (scripts on stdin). */
export function commandOf(op: Exclude<KernelOp, { op: 'link.add' | 'link.del' | 'nft.table.set' | 'portmap.replace' }>): string[] {
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
    case 'portmap.add':
      return ['nft', 'add', 'element', 'inet', op.map.table, PORT_MAP, `{ ${portMapElement(op.map)} }`];
    case 'portmap.del':
      return ['nft', 'delete', 'element', 'inet', op.map.table, PORT_MAP, `{ ${op.map.port} }`];
    default:
      throw new KernelOpError(op, `unknown operation ${JSON.stringify((op as { op?: unknown }).op)}`);
  }
}

/**
 * `wg set` replaces a peer's allowed-ips with the list given; an empty argument clears it. A peer with a
 * persistent keepalive has it turned off and on again in the same call: WireGuard (kernel and
 * wireguard-go) sends a keepalive at once when it goes from off to on, so a set peer starts a
 * handshake now if it has no session (after its device's key changed, say) instead of at the next
 * retry, 5 s on (docs/security.md, "Rotation").
 */
function peerSetArgs(dev: string, p: WgPeerState): string[] {
  const endpoint = p.endpoint === null ? [] : ['endpoint', p.endpoint];
  const set = ['wg', 'set', dev, 'peer', p.publicKey, ...endpoint, 'allowed-ips', p.allowedIps.join(',')];
  if (p.keepaliveSeconds <= 0) return [...set, 'persistent-keepalive', 'off'];
  return [...set, 'persistent-keepalive', 'off', 'peer', p.publicKey, 'persistent-keepalive', String(p.keepaliveSeconds)];
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
export function nftTableScript(op: Extract<KernelOp, { op: 'nft.table.set' }>): string {
  return `table inet ${op.name} {}\ndelete table inet ${op.name}\ntable inet ${op.name} {\n comment "${NFT_COMMENT_PREFIX}${op.digest}";\n${op.body}\n}\n`;
}

export const NFT_COMMENT_PREFIX = 'relay-core:';

/** `PORT : ADDRESS . PORT`, an element of a port map; refuses anything but an IPv4 address and ports (it goes into nft's parser). */
function portMapElement(m: PortMapState): string {
  const to = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(m.to);
  if (!to || !Number.isInteger(m.port) || m.port < 1 || m.port > 65535 || Number(to[2]) < 1 || Number(to[2]) > 65535)
    throw new Error(`bad port map ${m.port} to ${m.to}`);
  return `${m.port} : ${to[1]} . ${to[2]}`;
}

/** One nft transaction that points a mapped port elsewhere: its element deleted and added again, never absent in between. */
export function portMapReplaceScript(op: Extract<KernelOp, { op: 'portmap.replace' }>): string {
  const { table, port } = op.map;
  return `delete element inet ${table} ${PORT_MAP} { ${port} }\nadd element inet ${table} ${PORT_MAP} { ${portMapElement(op.map)} }\n`;
}
