import { randomInt } from 'node:crypto';

/**
 * The sim's names and addresses, as pure functions of the sim id and a relay's index.
 *
 * Every host of the sim gets an address from the benchmarking range 198.18.0.0/15 (DESIGN.md, test
 * networks) on one /16 segment: the bridge in the "internet" namespace is 198.18.0.1, the service
 * namespace 198.18.0.2, relay i 198.18.1.i (or 198.18.3.i once `sim move` moved it). Names carry the
 * sim id so that two sims can run at once.
 */

export const SIM_ID_RE = /^[a-z0-9]{4}$/;
export const MAX_RELAYS = 250;
export const PREFIX_LEN = 16;
/** Every address of the sim's internet: relays allow clients to reach it (`--client-allow`). */
export const SIM_INTERNET = '198.18.0.0/15';
/**
 * The sim's IPv6 internet (documentation space), allowed to clients like SIM_INTERNET: the bridge's
 * /64 (relays and clients on it, the inet namespace their default router), and the web server on an
 * address of the inet namespace outside that /64, so nobody reaches it on-link: a client only through
 * its tunnel (or, were the tunnel to leak, by its default route over its own link).
 */
export const SIM_INTERNET6 = '2001:db8:18::/48';
export const BRIDGE_ADDRESS6 = '2001:db8:18::1';
export const PREFIX_LEN6 = 64;
export const WEB_ADDRESS6 = '2001:db8:18:1::80';
export const BRIDGE_ADDRESS = '198.18.0.1';
export const SVC_ADDRESS = '198.18.0.2';
/** Ports inside the service namespace: fixed, since nothing else lives there. */
export const CONTROL_PLANE_PORT = 54321;
export const NATS_PORT = 4222;
/** Every relay's WireGuard endpoint port; its link devices listen on this + the peer's mesh index. */
export const RELAY_PORT = 51820;
/** Each sim relay serves its Prometheus metrics on its namespace's loopback, this port (docs/operations.md). */
export const RELAY_METRICS_PORT = 9464;
/** The sim's control plane serves its metrics on its (service) namespace's loopback, this port. */
export const CONTROL_PLANE_METRICS_PORT = 9465;
/** The name of a node's own end of its veth pair, inside its namespace. */
export const PUBLIC_IF = 'pub0';
export const BRIDGE_IF = 'br0';

/** The sim's "internet host": a whoami HTTP server on the bridge address (src/sim/whoami.ts). */
export const WEB_PORT = 8080;
export const WEB_URL = `http://${BRIDGE_ADDRESS}:${WEB_PORT}`;
export const WEB_URL6 = `http://[${WEB_ADDRESS6}]:${WEB_PORT}`;
export const MAX_CLIENTS = 250;

export const CONTROL_PLANE_URL = `http://${SVC_ADDRESS}:${CONTROL_PLANE_PORT}`;
/** `sim up --nats N`: a NATS cluster of N nodes, all in the service namespace, node i on port NATS_PORT + i - 1. */
export const MAX_NATS_NODES = 5;
/** The cluster's route ports: node i listens for the other nodes on NATS_ROUTE_PORT + i - 1. */
export const NATS_ROUTE_PORT = 6222;
/** Node i's (1-based) client URL; node 1's is the single node's. */
export const natsNodeUrl = (i: number) => `nats://${SVC_ADDRESS}:${NATS_PORT + i - 1}`;
/** Node i's process name of `nodes`: 'nats' alone, 'nats-<i>' in a cluster (the name `sim kill --nats` takes). */
export const natsNodeName = (i: number, nodes: number) => (nodes === 1 ? 'nats' : `nats-${i}`);

/** A fresh sim id: 4 characters of a-z0-9. */
export function newSimId(rand: (n: number) => number = randomInt): string {
  const chars = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return Array.from({ length: 4 }, () => chars[rand(chars.length)]).join('');
}

export const inetNamespace = (simId: string) => `rcs-${simId}-inet`;
export const svcNamespace = (simId: string) => `rcs-${simId}-svc`;
export const relayNamespace = (simId: string, index: number) => `rcs-${simId}-r${index}`;
export const clientNamespace = (simId: string, index: number) => `rcs-${simId}-c${index}`;
/** True for every namespace a sim with this id creates. */
/**
 * The name relay i has in the sim's own hosts file (every relay namespace's /etc/hosts): its public
 * address. `.test` is reserved for testing (RFC 6761): no real DNS server has it.
 */
export const relayHostName = (index: number) => `relay-${index}.sim.test`;

/** The hosts file of a relay namespace: localhost, and every possible relay's name. */
export function simHostsFile(): string {
  const lines = ['127.0.0.1 localhost', '::1 localhost'];
  for (let i = 1; i <= MAX_RELAYS; i++) lines.push(`${relayPublicAddress(i)} ${relayHostName(i)}`);
  return lines.join('\n') + '\n';
}

export const isSimNamespace = (simId: string, ns: string) => ns.startsWith(`rcs-${simId}-`);

/** The bridge-side end of a node's veth pair (at most 9 characters; the limit is 15). */
export const vethName = (simId: string, node: 'svc' | number | { client: number }) =>
  `v${simId}${node === 'svc' ? 's' : typeof node === 'number' ? `r${node}` : `c${node.client}`}`;

/** Client c of the sim: 198.18.2.c, a /32 on its public interface (see src/sim/clients.ts). */
export function clientPublicAddress(index: number): string {
  if (!Number.isInteger(index) || index < 1 || index > MAX_CLIENTS) throw new Error(`client index ${index} is outside 1..${MAX_CLIENTS}`);
  return `198.18.2.${index}`;
}
/** Client c's IPv6 on its public link: 2001:db8:18::2:<c in hex>, with a default route (a dual-stack home network). */
export function clientPublicAddress6(index: number): string {
  clientPublicAddress(index); // the same range check
  return `2001:db8:18::2:${index.toString(16)}`;
}
/** The stock WireGuard device inside client c's namespace (device names are machine-wide for wireguard-go). */
export const clientWgDevice = (wgPrefix: string, index: number) => `${wgPrefix}k${index}`;
/**
 * Where the relays' public addresses are (their own, and where `sim move` moves them): a client
 * reaches its entry directly, everything else through its tunnel.
 */
export const RELAYS_CIDRS = ['198.18.1.0/24', '198.18.3.0/24'];

export function relayPublicAddress(index: number): string {
  if (!Number.isInteger(index) || index < 1 || index > MAX_RELAYS) throw new Error(`relay index ${index} is outside 1..${MAX_RELAYS}`);
  return `198.18.1.${index}`;
}

/**
 * Relay i's other public address, where `sim move` moves it (its endpoint changes, as when a host gets
 * a new address): 198.18.3.i; moved again it goes back to 198.18.1.i.
 */
export function relayMovedAddress(index: number): string {
  relayPublicAddress(index); // the same range check
  return `198.18.3.${index}`;
}

/** Relay i's IPv6 on its public link (unless it was added with --no-ipv6): 2001:db8:18::1:<i in hex>. */
export function relayPublicAddress6(index: number): string {
  relayPublicAddress(index); // the same range check
  return `2001:db8:18::1:${index.toString(16)}`;
}

export const defaultRelayId = (index: number) => `relay-${index}`;

/**
 * The index (and so the address and namespace) for a new relay: `relay-<n>` gets n when free, any
 * other id the lowest free index. Null when all are taken.
 */
export function allocateRelayIndex(relayId: string, taken: ReadonlySet<number>): number | null {
  const m = /^relay-(\d{1,3})$/.exec(relayId);
  const wanted = m ? Number(m[1]) : NaN;
  if (wanted >= 1 && wanted <= MAX_RELAYS && !taken.has(wanted)) return wanted;
  for (let i = 1; i <= MAX_RELAYS; i++) if (!taken.has(i)) return i;
  return null;
}

/**
 * The WireGuard device prefixes already in use, from device names and `/var/run/wireguard` socket
 * names anywhere on the machine: the leading letters of each name. Relay link devices are named
 * `<prefix><own index>m<peer index>`, so two relays can only clash when their prefixes are equal.
 */
export function prefixesInUse(names: Iterable<string>): Set<string> {
  const used = new Set<string>();
  for (const n of names) {
    const m = /^[a-z]+/.exec(n);
    if (m) used.add(m[0]);
  }
  return used;
}

/** A random 3-letter prefix not in `used` (and never the daemon's default `rc`, a 2-letter one). */
export function chooseWgPrefix(used: ReadonlySet<string>, rand: (n: number) => number = randomInt): string {
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  for (let attempt = 0; attempt < 1000; attempt++) {
    const p = Array.from({ length: 3 }, () => letters[rand(letters.length)]).join('');
    if (!used.has(p)) return p;
  }
  throw new Error('no free WireGuard device prefix found');
}

/** The control socket name of a link device of a sim with this prefix (`/var/run/wireguard/<name>`). */
export const isSimWgSocket = (wgPrefix: string, file: string) => new RegExp(`^${wgPrefix}(\\d+m\\d+|\\d+c|k\\d+)\\.sock$`).test(file);
