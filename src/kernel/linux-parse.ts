import type { PeerObservation, PortMapState, RouteState, RuleState, WgDeviceState, WgPeerState } from './host-state.ts';
import { isIpv6 } from './ip.ts';

/**
 * What the Linux backend's commands (linux-commands.ts) print, parsed into host state: `ip -j`,
 * `wg show dump`, `nft -j` and `nft list table`. Pure: test/unit/linux-commands.test.ts feeds it
 * captured output.
 */

/** The digest in a table's comment, which `nft list table` prints on the line after the table's. '' without one. */
export function nftTableDigest(name: string, text: string): string {
  const lines = text.split('\n').map((l) => l.trim());
  const at = lines.indexOf(`table inet ${name} {`);
  const m = at < 0 ? null : /^comment "relay-core:([^"]*)"$/.exec(lines[at + 1] ?? '');
  return m?.[1] ?? '';
}

export interface IpAddrJson {
  ifname: string;
  mtu: number;
  flags: string[];
  addr_info: { family: string; local: string; prefixlen: number; scope: string }[];
}

/** `ip -N -d -j route`: numeric type, protocol and table. */
export interface IpRouteJson {
  type: string;
  dst: string;
  dev?: string;
  table: string;
  protocol?: string;
  prefsrc?: string;
}

export interface IpRuleJson {
  priority: number;
  src: string;
  srclen?: number;
  iif?: string;
  table?: string;
  /** Present for actions other than a lookup: numeric with -N (`7`), else its name (`unreachable`). */
  action?: string;
}

/** `nft -j list counters table inet T`: a metainfo object, then one object per named counter. */
export interface NftCountersJson {
  nftables?: { counter?: { family: string; table: string; name: string; packets: number; bytes: number } }[];
}

/** `nft -j list map inet T M`: a metainfo object, then the map with its elements (`elem` absent when it has none). */
export interface NftMapJson {
  nftables?: { map?: { family: string; table: string; name: string; elem?: unknown[] } }[];
}

/**
 * The elements of `table`'s port map as port maps: `[port, {concat: [address, port]}]` each. An
 * element of another shape is an error (the map's type is ours).
 */
export function portMapsOf(listed: NftMapJson, table: string): PortMapState[] {
  const out: PortMapState[] = [];
  for (const o of listed.nftables ?? []) {
    if (!o.map || o.map.table !== table || o.map.family !== 'inet') continue;
    for (const e of o.map.elem ?? []) {
      const [port, value] = Array.isArray(e) ? e : [];
      const concat = (value as { concat?: unknown } | undefined)?.concat;
      if (typeof port !== 'number' || !Array.isArray(concat) || typeof concat[0] !== 'string' || typeof concat[1] !== 'number')
        throw new Error(`unexpected element in map ${table} ${o.map.name}: ${JSON.stringify(e)}`);
      out.push({ table, port, to: `${concat[0]}:${concat[1]}` });
    }
  }
  return out;
}

/** `nft -j list tables`: a metainfo object, then one object per table. */
export interface NftListJson {
  nftables?: { table?: { family: string; name: string } }[];
}

const RTN_UNICAST = '1';
const RTPROT_KERNEL = '2';

/**
 * Routes we add are unicast and not the kernel's. The kernel adds by itself: `local` routes in table
 * 255 for each address (and broadcast ones for shorter prefixes), a prefix route for every address
 * shorter than /32 (/128), the IPv6 `fe80::/64` and multicast routes of every link.
 */
export const isManagedRoute = (r: IpRouteJson) => r.type === RTN_UNICAST && r.protocol !== RTPROT_KERNEL;

export function parseRoute(r: IpRouteJson, fam: '-4' | '-6'): RouteState {
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
export const isRepresentable = (r: IpRuleJson) =>
  (r.table !== undefined ? r.action === undefined : isUnreachable(r)) && Object.keys(r).every((k) => RULE_FIELDS.has(k));

export function parseRule(r: IpRuleJson): RuleState {
  const from = r.src === 'all' ? null : `${r.src}/${r.srclen ?? (isIpv6(r.src) ? 128 : 32)}`;
  return { priority: r.priority, from, iif: r.iif ?? null, table: r.table === undefined ? null : Number(r.table) };
}

export interface DumpPeer extends WgPeerState {
  latestHandshakeSeconds: number;
  rxBytes: number;
  txBytes: number;
}

const none = (field: string | undefined): string | null => (field === undefined || field === '(none)' ? null : field);

/**
 * `wg show DEV dump`: the device line (private key, public key, listen port, fwmark), then one line per
 * peer (public key, preshared key, endpoint, allowed ips, latest handshake, rx, tx, keepalive).
 */
export function parseDump(dump: string): { publicKey: string; listenPort: number; peers: DumpPeer[] } {
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

/**
 * `wg show all dump` cut into each device's `wg show DEV dump` text (the lines without the leading
 * device name), for the devices in `wanted` only.
 */
export function splitDumpAll(text: string, wanted: ReadonlySet<string>): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const tab = line.indexOf('\t');
    if (tab <= 0) continue;
    const dev = line.slice(0, tab);
    if (wanted.has(dev)) out.set(dev, `${out.get(dev) ?? ''}${line.slice(tab + 1)}\n`);
  }
  return out;
}

export function parseDevice(link: IpAddrJson, dump: string): WgDeviceState {
  return withWireGuard(
    {
      name: link.ifname,
      publicKey: '',
      listenPort: 0,
      mtu: link.mtu,
      // Link-local IPv6 addresses come with every link that goes up: the kernel's, not ours.
      addresses: link.addr_info.filter((a) => a.scope !== 'link').map((a) => `${a.local}/${a.prefixlen}`),
      up: link.flags.includes('UP'),
      peers: [],
    },
    dump,
  );
}

/** A device with its WireGuard settings (key, listen port, peers) as `wg show DEV dump` gives them, its link's as `link` has them. */
export function withWireGuard(link: WgDeviceState, dump: string): WgDeviceState {
  const wg = parseDump(dump);
  return {
    ...link,
    publicKey: wg.publicKey,
    listenPort: wg.listenPort,
    peers: wg.peers.map(({ publicKey, endpoint, allowedIps, keepaliveSeconds }) => ({ publicKey, endpoint, allowedIps, keepaliveSeconds })),
  };
}

export function observation(dev: string, p: DumpPeer): PeerObservation {
  return {
    dev,
    publicKey: p.publicKey,
    endpoint: p.endpoint,
    latestHandshakeMs: p.latestHandshakeSeconds > 0 ? p.latestHandshakeSeconds * 1000 : null,
    rxBytes: p.rxBytes,
    txBytes: p.txBytes,
  };
}

/** The routes of `ip -N -d -j route show table all` (one family) that an owner with these devices manages. */
export function routesOf(listed: IpRouteJson[], fam: '-4' | '-6', owned: (dev: string | undefined) => boolean): RouteState[] {
  return listed.filter((r) => owned(r.dev) && isManagedRoute(r)).map((r) => parseRoute(r, fam));
}

/**
 * The rules of both families' `ip -N -j rule show` in the priority range [lo, hi]: those a `RuleState`
 * can hold, and the strange ones (other selectors or actions), which are left alone. An IPv6 rule
 * without `from` would read like the IPv4 one: rules without `from` are IPv4 rules.
 */
export function rulesOf(v4: IpRuleJson[], v6: IpRuleJson[], [lo, hi]: [number, number]): { rules: RuleState[]; strange: IpRuleJson[] } {
  const inRange = (r: IpRuleJson) => r.priority >= lo && r.priority <= hi;
  const candidates = [...v4.filter(inRange), ...v6.filter((r) => inRange(r) && r.src !== 'all')];
  return { rules: candidates.filter(isRepresentable).map(parseRule), strange: candidates.filter((r) => !isRepresentable(r)) };
}

/** The names among `names` that `nft -j list tables` lists as tables of family inet. */
export function presentTables(listed: NftListJson, names: readonly string[]): string[] {
  return (listed.nftables ?? []).flatMap((o) => (o.table && o.table.family === 'inet' && names.includes(o.table.name) ? [o.table.name] : []));
}

/** The named counters of `table` in `nft -j list counters table inet <table>`. */
export function countersOf(listed: NftCountersJson, table: string): Record<string, { packets: number; bytes: number }> {
  return Object.fromEntries(
    (listed.nftables ?? []).flatMap((o) =>
      o.counter && o.counter.table === table ? [[o.counter.name, { packets: o.counter.packets, bytes: o.counter.bytes }]] : [],
    ),
  );
}

/**
 * `sysctl KEY...` prints `KEY = VALUE` per key, in order. Matched by key, so a line of another shape
 * cannot shift the others; a key without its line is an error.
 */
export function sysctlValues(out: string, keys: readonly string[]): Record<string, string> {
  const byKey = new Map<string, string>();
  for (const line of out.split('\n')) {
    const i = line.indexOf(' = ');
    if (i > 0) byKey.set(line.slice(0, i), line.slice(i + 3));
  }
  return Object.fromEntries(
    keys.map((k) => {
      const v = byKey.get(k);
      if (v === undefined) throw new Error(`sysctl printed no value for ${k}`);
      return [k, v];
    }),
  );
}
