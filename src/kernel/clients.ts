import type { ClientSession, RelayRecord } from '../contract/topology.events.ts';
import { formatIpv4, parseCidr, parseEndpoint, parseIpv4 } from '../contract/topology.events.ts';
import { privateEntryPort, privateMtu, privatePortRange } from '../contract/private-sessions.ts';
import type { DesiredHostState, DesiredWgDevice, KernelScope, PortMapState, RouteState, RuleState, WgPeerState } from './host-state.ts';
import { MAIN_TABLE, PORT_MAP } from './host-state.ts';
import { linkListenPort, meshIndex } from './mesh.ts';
import { egressMapElements, egressRules, NETWORK_SPACE, refusedCounter, type EgressRule } from './egress.ts';
import { nftDigest } from './host-text.ts';
import { embed6, embedCidr6 } from './ipv6.ts';
import { kept } from '../lib/kept.ts';
import { ECHO_PORT } from '../contract/pob-measure.ts';

/**
 * The client side of the data path (docs/clients.md), as pure functions of the relay's record, its
 * peers and the sessions entering at it.
 *
 * Entry: clients connect to one client-facing WireGuard device `<wg-prefix><own index>c`, listening on
 * the relay's endpoint port, with the first host of the relay's pool as its address. Each session is
 * one peer (allowed-ips = the client's /32, and its /128 with client IPv6: src/kernel/ipv6.ts) and one
 * policy rule per family `from <client> iif <device> lookup <exit table>`; the exit table (`exitTableBase + exit's mesh index`, owned by the mesh scope) default-
 * routes into the link to that exit. After every client rule, `from <pool> iif <device> unreachable`:
 * a client whose exit table is empty (link gone) or whose exit is unknown is refused, never looked up
 * in the main table (fail closed).
 *
 * Every relay (entry and exit alike): forwarding on, loose reverse-path filtering (replies from the
 * internet come back on a link device, not the interface the main table names), and one nftables table
 * that guards the relay and the networks behind it (docs/security.md): the exit's egress policy, what
 * mesh links may carry, fail closed at the entry; it also clamps TCP MSS and masquerades client
 * traffic leaving for the internet.
 */

export interface ClientOptions {
  wgPrefix: string;
  privateKeyFile: string;
  /** MTU of the client device (and of the client configurations the control plane hands out). */
  mtu: number;
  /** The table for exit relay i is `exitTableBase + i`. */
  exitTableBase: number;
  /** Client rules take `rulePriorityBase + host offset in the pool`; the fail-closed rule the end. */
  rulePriorityBase: number;
  /** The network-wide client address space (every relay's pool lies in it). */
  clientSupernet: string;
  /** The egress policy (src/kernel/egress.ts): `--client-deny`, refused besides the defaults. */
  denyCidrs: string[];
  /** `--client-allow`: taken out of the default deny ranges. */
  allowCidrs: string[];
  /** Control-plane and NATS addresses: always refused. */
  serviceCidrs: string[];
  /**
   * The clients' IPv6 /96 (src/kernel/ipv6.ts), or null for IPv4 only. With it, each client also has
   * the IPv6 address its IPv4 one embeds, steered like the IPv4 one; exits NAT it (NAT66).
   */
  clientPrefix6: string | null;
  /**
   * Serve private sessions: their port map and filters are in the table, their sessions programmed.
   * Always on in a running relay; off only to replay the log of a relay from before them.
   */
  privateSessions: boolean;
  /**
   * Let the measurers of a Proof-of-Bandwidth measurement reach the echo service over the mesh (TCP
   * ECHO_PORT to the mesh address). Always on in a running relay; off only to replay an older log.
   */
  echoService: boolean;
}

export const DEFAULT_EXIT_TABLE_BASE = 100_000;
export const DEFAULT_RULE_PRIORITY_BASE = 20_000;
export const DEFAULT_CLIENT_SUPERNET = '100.96.0.0/11';
/** The kernel's own rules start here (`main`): ours must end before. */
const MAIN_RULE_PRIORITY = 32_766;

/** Sysctls the client scope sets; the relay restores their values from before its start when it stops. */
export const CLIENT_SYSCTLS = { 'net.ipv4.ip_forward': '1', 'net.ipv4.conf.all.rp_filter': '2' } as const;
/**
 * With client IPv6, IPv6 forwarding too. A host that takes its own IPv6 route from router
 * advertisements keeps it only with `accept_ra=2` on that interface (docs/clients.md, "IPv6").
 */
export const CLIENT_SYSCTLS_V6 = { ...CLIENT_SYSCTLS, 'net.ipv6.conf.all.forwarding': '1' } as const;
export const clientSysctls = (clientPrefix6: string | null): Record<string, string> => ({ ...(clientPrefix6 ? CLIENT_SYSCTLS_V6 : CLIENT_SYSCTLS) });

export const clientDevice = (wgPrefix: string, ownIndex: number) => `${wgPrefix}${ownIndex}c`;
/**
 * A private session's exit terminates the client's tunnel on this device (docs/clients.md, "Private
 * sessions"); its name starts with the client device's, so the client scope owns it.
 */
export const privateDevice = (wgPrefix: string, ownIndex: number) => `${wgPrefix}${ownIndex}cp`;
/** The port a relay's private device listens on: its endpoint port plus its own index, the one port of its link range no link takes. */
export const privateListenPort = (r: RelayRecord): number => linkListenPort(r.endpoint, meshIndex(r.meshAddress));
/**
 * Where an entry forwards a private session's datagrams: its exit's mesh address, on the exit's private
 * port; null for an exit whose private port would pass 65535 (it has no links either: its sessions
 * fail closed), so that one misconfigured relay breaks nothing of the others'.
 */
export function privateTarget(exit: RelayRecord): string | null {
  const ep = parseEndpoint(exit.endpoint);
  const port = ep ? ep.port + meshIndex(exit.meshAddress) : 0;
  return ep && port <= 65535 ? `${exit.meshAddress}:${port}` : null;
}
export const nftTableName = (wgPrefix: string, ownIndex: number) => `${wgPrefix}${ownIndex}`;
export const exitTable = (exitTableBase: number, exitIndex: number) => exitTableBase + exitIndex;

/** A relay's client pool, parsed once per record (it is asked for every session of every round). */
const pools = new WeakMap<RelayRecord, { base: number; prefix: number; size: number; text: string }>();
function pool(self: RelayRecord): { base: number; prefix: number; size: number } {
  const known = pools.get(self);
  if (known && known.text === self.clientPool) return known;
  const p = parseCidr(self.clientPool);
  if (!p) throw new Error(`bad client pool ${self.clientPool} of relay ${self.id}`);
  const out = { base: p.base, prefix: p.prefix, size: 2 ** (32 - p.prefix), text: self.clientPool };
  pools.set(self, out);
  return out;
}

/** The entry's own address on its client device: the pool's first host, with the pool's prefix. */
export function gatewayAddress(self: RelayRecord): string {
  const p = pool(self);
  return `${formatIpv4(p.base + 1)}/${p.prefix}`;
}

/** The same address in the clients' IPv6 /96, with the IPv6 pool's prefix. */
export function gatewayAddress6(self: RelayRecord, prefix6: string): string {
  const p = pool(self);
  return `${embed6(prefix6, formatIpv4(p.base + 1))}/${96 + p.prefix}`;
}

/** The rule priority range the client scope owns for this relay's pool; throws when it does not fit. */
export function clientRulePriorities(self: RelayRecord, base: number): [number, number] {
  const end = base + pool(self).size;
  if (end >= MAIN_RULE_PRIORITY)
    throw new Error(`client pool ${self.clientPool} needs rule priorities ${base}..${end}, past ${MAIN_RULE_PRIORITY - 1}: lower the rule priority base`);
  return [base, end];
}

/** The priority of a client's rule: its host offset in the pool. Null when the address is not a host of the pool. */
export function clientRulePriority(self: RelayRecord, address: string, base: number): number | null {
  const p = pool(self);
  const a = parseIpv4(address);
  if (a === null) return null;
  const offset = a - p.base;
  return offset >= 2 && offset < p.size - 1 ? base + offset : null;
}

export function clientScope(self: RelayRecord, opts: Pick<ClientOptions, 'wgPrefix' | 'rulePriorityBase' | 'clientPrefix6'>): KernelScope {
  const own = meshIndex(self.meshAddress);
  return {
    devicePrefix: clientDevice(opts.wgPrefix, own),
    rulePriorities: clientRulePriorities(self, opts.rulePriorityBase),
    sysctls: Object.keys(clientSysctls(opts.clientPrefix6)),
    nftTables: [nftTableName(opts.wgPrefix, own)],
  };
}

/** Counters of the mesh and client filters, besides the egress policy's `refused_<reason>` ones. */
export const FILTER_COUNTERS = {
  /** A client packet to this relay itself (clients reach the internet, not the relay they enter at). */
  client_input: 'clients may not reach the relay they enter at',
  /** A client packet that would leave the entry other than into a mesh link (fail closed). */
  fail_closed: 'client traffic that would leave the entry other than into a mesh link',
  /** A new connection toward one of this entry's clients. */
  client_unsolicited: 'connections toward a client that it did not open',
  /** Mesh link: a source in the network's space that is not the sending relay's own (mesh address or pool). */
  mesh_spoofed: "a mesh packet whose source is not the sending relay's own mesh address or client pool",
  /** Mesh link: a packet to forward that is neither a client's of the sending relay nor a reply to ours. */
  mesh_foreign: 'a mesh packet to forward that no client of the sending relay sent',
  /** Mesh link: a packet for this relay's own services (anything but ICMP echo to the mesh address and replies). */
  mesh_input: "a mesh packet for this relay's own services",
  /** A datagram to a private session's port that forwards nowhere: no such session here, or its exit is gone. */
  private_unmapped: 'a datagram to a private port with no session, or whose exit is gone',
  /** A forwarded private datagram that would leave the entry other than into a mesh link (fail closed). */
  private_fail_closed: 'a private datagram that would leave the entry other than into a mesh link',
  /** A datagram to this relay's private device that did not come over a mesh link (only entries forward to it). */
  private_direct: 'a datagram to the private device from outside the mesh',
} as const;
export type FilterCounter = keyof typeof FILTER_COUNTERS;

const PRIVATE_COUNTERS: readonly FilterCounter[] = ['private_unmapped', 'private_fail_closed', 'private_direct'];
/** The filter counters of a relay's table: the private sessions' only when it serves them. */
export const filterCounters = (privateSessions: boolean): FilterCounter[] =>
  (Object.keys(FILTER_COUNTERS) as FilterCounter[]).filter((c) => privateSessions || !PRIVATE_COUNTERS.includes(c));

/** Everything the table needs besides the relay record: names, the client space, the egress policy. */
export type NftOptions = Pick<
  ClientOptions,
  'wgPrefix' | 'clientSupernet' | 'denyCidrs' | 'allowCidrs' | 'serviceCidrs' | 'clientPrefix6' | 'privateSessions' | 'echoService'
>;

/** The egress policy of a relay with these options. */
export const clientEgressRules = (opts: NftOptions): EgressRule[] =>
  egressRules({ denyCidrs: opts.denyCidrs, allowCidrs: opts.allowCidrs, serviceCidrs: opts.serviceCidrs, clientPrefix6: opts.clientPrefix6 });

/**
 * The nftables table body of a relay (inside `table inet <name> { ... }`). Pure; its digest names it.
 * Every drop and refusal is counted in a named counter (FILTER_COUNTERS, `refused_<reason>`), never
 * logged per packet. Refused client traffic gets a TCP reset or ICMP administratively prohibited, so a
 * client fails at once instead of waiting for a timeout.
 */
export function clientNftBody(self: RelayRecord, opts: NftOptions): string {
  // The body depends on the relay and the options alone, never on the sessions: built once per
  // (relay, options), not on every session that opens or closes (its egress policy is the costly part).
  const key = JSON.stringify([
    self,
    opts.wgPrefix,
    opts.clientSupernet,
    opts.denyCidrs,
    opts.allowCidrs,
    opts.serviceCidrs,
    opts.clientPrefix6,
    opts.privateSessions,
    opts.echoService,
  ]);
  const known = nftBodies.get(key);
  if (known !== undefined) return known;
  const body = buildClientNftBody(self, opts);
  if (nftBodies.size >= 64) nftBodies.delete(nftBodies.keys().next().value!);
  nftBodies.set(key, body);
  return body;
}

/** The bodies built last, by relay and options (bounded: the oldest goes first). */
const nftBodies = new Map<string, string>();

function buildClientNftBody(self: RelayRecord, opts: NftOptions): string {
  const own = meshIndex(self.meshAddress);
  const dev = clientDevice(opts.wgPrefix, own);
  const pdev = privateDevice(opts.wgPrefix, own);
  const links = `${opts.wgPrefix}${own}m*`;
  const ep = parseEndpoint(self.endpoint);
  if (!ep) throw new Error(`bad endpoint ${self.endpoint}`);
  // The ports of private sessions entering here (src/contract/private-sessions.ts), and this relay's own private port.
  const range = privatePortRange(ep.port, self.clientPool);
  const privatePort = privateListenPort(self);
  // Only with private sessions on: without, the table is the one relays had before them (replay of their logs).
  const p = <T>(...lines: T[]): T[] => (opts.privateSessions ? lines : []);
  const v6 = opts.clientPrefix6;
  const rules = clientEgressRules(opts);
  const elements = egressMapElements(rules);
  // One verdict map per family: a packet costs one lookup, whatever the number of reasons.
  const maps = (['v4', 'v6'] as const)
    .filter((f) => elements[f].length > 0)
    .map((f) =>
      [
        `  map egress_${f} {`,
        `    type ${f === 'v4' ? 'ipv4_addr' : 'ipv6_addr'} : verdict; flags interval;`,
        `    elements = { ${elements[f].map((e) => `${e.cidr} : goto ${refusedCounter(e.reason)}`).join(', ')} }`,
        '  }',
      ].join('\n'),
    );
  const egressFrom = (iif: string) =>
    (['v4', 'v6'] as const).filter((f) => elements[f].length > 0).map((f) => `    iifname "${iif}" ${f === 'v4' ? 'ip' : 'ip6'} daddr vmap @egress_${f}`);
  const egress = egressFrom(links);
  // Each reason's chain counts the refusal, then refuses.
  const refuseChains = rules.map((r) => `  chain ${refusedCounter(r.reason)} {\n    counter name "${refusedCounter(r.reason)}" goto refuse\n  }`);
  const counters = [...filterCounters(opts.privateSessions), ...rules.map((r) => refusedCounter(r.reason))].map((c) => `  counter ${c} {\n  }`);
  return [
    ...counters,
    ...maps,
    '  chain refuse {',
    '    meta l4proto tcp reject with tcp reset',
    '    reject with icmpx type admin-prohibited',
    '  }',
    ...refuseChains,
    // Entry: a private session's datagrams go on to its exit, in the kernel (the port map is the sessions').
    ...p(
      `  map ${PORT_MAP} {`,
      '    type inet_service : ipv4_addr . inet_service;',
      '  }',
      '  chain private_dnat {',
      '    type nat hook prerouting priority dstnat; policy accept;',
      `    iifname != "${links}" iifname != "${dev}" iifname != "${pdev}" fib daddr type local dnat ip to udp dport map @${PORT_MAP}`,
      '  }',
    ),
    // A mesh link's sources in the network's space are its peer's alone: the route back to the source
    // must go out the link it came in on (the peer's mesh address and pool are routed there).
    '  chain mesh_ingress {',
    '    type filter hook prerouting priority filter; policy accept;',
    `    iifname "${links}" ip saddr ${NETWORK_SPACE} fib saddr . iif oif missing counter name "mesh_spoofed" drop`,
    ...(v6 ? [`    iifname "${links}" ip6 saddr ${v6} fib saddr . iif oif missing counter name "mesh_spoofed" drop`] : []),
    '  }',
    '  chain input_filter {',
    '    type filter hook input priority filter; policy accept;',
    `    iifname "${dev}" counter name "client_input" drop`,
    ...p(`    iifname "${pdev}" counter name "client_input" drop`),
    // Over a mesh link the relay answers pings to its mesh address, its own connections' replies, and
    // its echo service (open only while it is measured, to its measurers only; docs/proof-of-bandwidth.md).
    `    iifname "${links}" ct state established,related accept`,
    `    iifname "${links}" ip daddr ${self.meshAddress} icmp type echo-request accept`,
    ...(opts.echoService ? [`    iifname "${links}" ip daddr ${self.meshAddress} tcp dport ${ECHO_PORT} accept`] : []),
    // Exit: private sessions' datagrams, forwarded by their entries over the mesh.
    ...p(`    iifname "${links}" ip daddr ${self.meshAddress} udp dport ${privatePort} accept`),
    `    iifname "${links}" counter name "mesh_input" drop`,
    ...p(`    udp dport ${privatePort} counter name "private_direct" drop`),
    // Entry: a new datagram to a private port that no session forwards (its replies are the relay's own).
    ...(range ? p(`    ct state new udp dport ${range[0]}-${range[1]} counter name "private_unmapped" drop`) : []),
    '  }',
    '  chain forward_filter {',
    '    type filter hook forward priority filter; policy accept;',
    // The mesh adds a WireGuard layer: TCP segments are sized to the route they take.
    `    iifname "${dev}" tcp flags syn tcp option maxseg size set rt mtu`,
    `    oifname "${dev}" tcp flags syn tcp option maxseg size set rt mtu`,
    // Private sessions at their exit: two WireGuard layers on the way in, the private device's MTU on the way out.
    ...p(`    iifname "${pdev}" tcp flags syn tcp option maxseg size set rt mtu`, `    oifname "${pdev}" tcp flags syn tcp option maxseg size set rt mtu`),
    // Entry: a forwarded private datagram goes into a mesh link (to its exit) or nowhere; its exit's replies come back.
    ...p(
      `    ct status dnat ct direction original ip daddr ${NETWORK_SPACE} oifname != "${links}" counter name "private_fail_closed" drop`,
      `    iifname "${links}" ct status dnat ct direction reply accept`,
    ),
    // Entry: the network's own space is not the internet; everything else goes to the exit, which decides.
    `    iifname "${dev}" ip daddr ${NETWORK_SPACE} goto ${refusedCounter('network')}`,
    ...(v6 ? [`    iifname "${dev}" ip6 daddr ${v6} goto ${refusedCounter('network')}`] : []),
    // Fail closed: a client's packets leave the entry only into a mesh link.
    `    iifname "${dev}" oifname != "${links}" counter name "fail_closed" drop`,
    `    oifname "${dev}" ct state established,related accept`,
    `    oifname "${dev}" counter name "client_unsolicited" drop`,
    // Exit: a private session's client reaches the internet, under the egress policy, as a link's do.
    ...p(
      `    iifname "${pdev}" ip daddr ${NETWORK_SPACE} goto ${refusedCounter('network')}`,
      ...(v6 ? [`    iifname "${pdev}" ip6 daddr ${v6} goto ${refusedCounter('network')}`] : []),
      ...egressFrom(pdev),
      `    oifname "${pdev}" ct state established,related accept`,
      `    oifname "${pdev}" counter name "client_unsolicited" drop`,
    ),
    // Exit: a mesh link carries the sending relay's clients' traffic, under the egress policy.
    `    iifname "${links}" ip saddr != ${opts.clientSupernet} counter name "mesh_foreign" drop`,
    // With client IPv6, the mesh forwards IPv6 only from the clients' IPv6 space.
    ...(v6 ? [`    iifname "${links}" ip6 saddr != ${v6} counter name "mesh_foreign" drop`] : []),
    ...egress,
    // Without it, none.
    ...(v6 ? [] : [`    iifname "${links}" meta nfproto ipv6 counter name "mesh_foreign" drop`]),
    '  }',
    '  chain postrouting_nat {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    // Entry: a private session's datagrams reach its exit from the entry's mesh address (replies come back
    // the same way): the exit never learns the client's address.
    ...p(`    oifname "${links}" ct status dnat masquerade`),
    `    oifname "${links}" return`,
    `    oifname "${dev}" return`,
    ...p(`    oifname "${pdev}" return`),
    `    ip saddr ${opts.clientSupernet} masquerade`,
    // NAT66: the clients' IPv6 leaves with the exit's own address, as their IPv4 does.
    ...(v6 ? [`    ip6 saddr ${v6} masquerade`] : []),
    '  }',
  ].join('\n');
}

const failClosed = new WeakMap<RelayRecord, { key: string; rules: readonly RuleState[] }>();

/** The fail-closed rules of this relay's pool (the same objects while its record and the options are). */
function failClosedRules(self: RelayRecord, dev: string, priority: number, v6: string | null): readonly RuleState[] {
  const key = `${dev} ${priority} ${v6}`;
  const kept = failClosed.get(self);
  if (kept?.key === key) return kept.rules;
  const rules: RuleState[] = [{ priority, from: self.clientPool, iif: dev, table: null }];
  if (v6) rules.push({ priority, from: embedCidr6(v6, self.clientPool), iif: dev, table: null });
  failClosed.set(self, { key, rules });
  return rules;
}

/** What one session puts in the client part of the host (see desiredClientState). */
interface SessionPart {
  peer: WgPeerState | null;
  privatePeer: WgPeerState | null;
  routes: RouteState[];
  rules: RuleState[];
  portMap: PortMapState | null;
}

/**
 * Each session's part, kept while the session, this relay's and its exit's records and the options it
 * depends on are the same: a desired state then holds the very objects of the last one for every session
 * that did not change, so a round's focus (src/kernel/focus.ts) holds only what a change touched, and
 * nothing is parsed or built again per session.
 */
const sessionParts = new WeakMap<ClientSession, { self: RelayRecord; exit: RelayRecord | undefined; key: string; part: SessionPart }>();

/** What a session's part depends on of the options, as text (the options object is built anew per view). */
const partKeys = new WeakMap<ClientOptions, string>();
const partKey = (opts: ClientOptions): string =>
  kept(partKeys, opts, (o) => `${o.wgPrefix} ${o.exitTableBase} ${o.rulePriorityBase} ${o.clientPrefix6} ${o.privateSessions}`);

function sessionPart(
  self: RelayRecord,
  exit: RelayRecord | undefined,
  s: ClientSession,
  opts: ClientOptions,
  dev: string,
  pdev: string,
  table: string,
): SessionPart {
  const key = partKey(opts);
  const kept = sessionParts.get(s);
  if (kept && kept.self === self && kept.exit === exit && kept.key === key) return kept.part;
  const part: SessionPart = { peer: null, privatePeer: null, routes: [], rules: [], portMap: null };
  const v6 = opts.clientPrefix6;
  const address6 = v6 ? `${embed6(v6, s.address)}/128` : null;
  const allowedIps = address6 ? [`${s.address}/32`, address6] : [`${s.address}/32`];
  if (s.mode === 'private') {
    if (!opts.privateSessions) {
      // Not served: nothing.
    } else if (s.exitId === self.id && s.entryId !== self.id) {
      part.privatePeer = { publicKey: s.publicKey, endpoint: null, allowedIps, keepaliveSeconds: 0 };
      for (const dst of allowedIps) part.routes.push({ dst, dev: pdev, table: MAIN_TABLE, src: null });
    } else if (s.entryId === self.id && exit && exit.id !== self.id) {
      const port = privateEntryPort(self, s.address);
      const to = privateTarget(exit);
      if ('port' in port && to !== null) part.portMap = { table, port: port.port, to };
    }
  } else {
    const priority = clientRulePriority(self, s.address, opts.rulePriorityBase);
    if (s.entryId === self.id && priority !== null) {
      part.peer = { publicKey: s.publicKey, endpoint: null, allowedIps, keepaliveSeconds: 0 };
      if (exit && exit.id !== self.id) {
        const exitTableId = exitTable(opts.exitTableBase, meshIndex(exit.meshAddress));
        part.rules.push({ priority, from: `${s.address}/32`, iif: dev, table: exitTableId });
        if (address6) part.rules.push({ priority, from: address6, iif: dev, table: exitTableId });
      }
    }
  }
  sessionParts.set(s, { self, exit, key, part });
  return part;
}

/**
 * The client part of the host for `self`: device, peers, rules, sysctls, nftables. `sessions` are the
 * sessions to program (those that concern `self`); `relays` holds their exits (at least).
 *
 * Standard sessions entering here: a peer on the client device and a rule to the exit's table. A
 * session whose exit is not in `relays` (it left, or is this relay) gets its peer but no rule, so the
 * fail-closed rule refuses its traffic.
 *
 * Private sessions (docs/clients.md, "Private sessions"), entering here: a port map from the session's
 * port to its exit's private port; none while the exit is not in `relays` (the nftables filter drops
 * and counts what arrives). Leaving here: a peer on the private device (which exists while there is
 * one) and a route of the client's address into it; the exit's egress policy applies as for a link.
 */
export function desiredClientState(
  self: RelayRecord,
  relays: Readonly<Record<string, RelayRecord>>,
  sessions: readonly ClientSession[],
  opts: ClientOptions,
): DesiredHostState {
  const own = meshIndex(self.meshAddress);
  const dev = clientDevice(opts.wgPrefix, own);
  const pdev = privateDevice(opts.wgPrefix, own);
  const table = nftTableName(opts.wgPrefix, own);
  const ep = parseEndpoint(self.endpoint);
  if (!ep) throw new Error(`bad endpoint ${self.endpoint}`);
  const [, failClosedPriority] = clientRulePriorities(self, opts.rulePriorityBase);
  const v6 = opts.clientPrefix6;
  // The fail-closed end, per family: also where a client's IPv6 ends when its exit has no IPv6 route.
  const rules: RuleState[] = [...failClosedRules(self, dev, failClosedPriority, v6)];
  const peers: WgPeerState[] = [];
  const privatePeers: WgPeerState[] = [];
  const routes: RouteState[] = [];
  const portMaps: PortMapState[] = [];
  for (const s of [...sessions].sort((a, b) => (a.publicKey < b.publicKey ? -1 : 1))) {
    const part = sessionPart(self, relays[s.exitId], s, opts, dev, pdev, table);
    if (part.peer) peers.push(part.peer);
    if (part.privatePeer) privatePeers.push(part.privatePeer);
    for (const r of part.routes) routes.push(r);
    for (const r of part.rules) rules.push(r);
    if (part.portMap) portMaps.push(part.portMap);
  }
  const body = clientNftBody(self, opts);
  const devices = new Map<string, DesiredWgDevice>([
    [
      dev,
      {
        name: dev,
        publicKey: self.publicKey,
        privateKeyFile: opts.privateKeyFile,
        listenPort: ep.port,
        mtu: opts.mtu,
        addresses: v6 ? [gatewayAddress(self), gatewayAddress6(self, v6)] : [gatewayAddress(self)],
        up: true,
        peers,
      },
    ],
  ]);
  // The private device, while a private session leaves here: the relay's key, on its private port, and
  // an MTU that leaves room for the client's datagrams inside the mesh link to its entry.
  if (privatePeers.length > 0)
    devices.set(pdev, {
      name: pdev,
      publicKey: self.publicKey,
      privateKeyFile: opts.privateKeyFile,
      listenPort: privateListenPort(self),
      mtu: privateMtu(opts.mtu),
      addresses: [],
      up: true,
      peers: privatePeers,
    });
  return {
    devices,
    routes,
    rules,
    sysctls: clientSysctls(v6),
    nftTables: { [table]: { name: table, digest: nftDigest(body), body } },
    portMaps,
  };
}

/** What the client scope leaves when the relay stops: nothing of its own, the sysctls as they were. */
export function releasedClientState(originalSysctls: Record<string, string>): DesiredHostState {
  return { devices: new Map(), routes: [], rules: [], sysctls: { ...originalSysctls }, nftTables: {}, portMaps: [] };
}
