import { parseCidr, parseEndpoint, parseIpv4 } from './topology.events.ts';

/**
 * Private sessions, the arithmetic the control plane and the relays share (docs/clients.md, "Private
 * sessions"). Pure; imported by the Edge Functions too.
 *
 * A private client's single WireGuard peer is its exit, reached at its entry's address on a port of its
 * own: the entry's endpoint port less the host offset of the client's address in the entry's pool
 * (client addresses are offsets 2 .. size - 2, so a /22 pool takes the 1,021 ports below the endpoint
 * port, which the entry's client device listens on; its mesh links take the ports above it). The entry
 * forwards what arrives there, in the kernel, to its exit's mesh address on the exit's private port.
 */

/**
 * What a private session adds inside the mesh link from its entry to its exit: the client's whole
 * WireGuard datagram travels in it, 20 bytes of IPv4, 8 of UDP and 32 of WireGuard around the
 * client's packet (the client reaches its entry over IPv4: see {@link privateEntryPort}).
 */
export const PRIVATE_OVERHEAD = 60;

/** The MTU of a private client's tunnel: its datagrams must fit a mesh link of `meshMtu`. */
export const privateMtu = (meshMtu: number): number => meshMtu - PRIVATE_OVERHEAD;

/**
 * The lowest port a private session may take: the well-known ports below it are the host's own (DNS,
 * NTP, DHCP, ...), and the entry drops new datagrams to its private ports that no session maps. An
 * entry whose endpoint port is too low for its pool (a relay on 443) takes no private sessions.
 */
export const PRIVATE_PORT_MIN = 1024;

/**
 * The port of a private session on its entry, or an error: the address must be a client host of the
 * entry's pool, the entry's endpoint an IPv4 address or a name (the entry forwards IPv4 only: the
 * exit's mesh address is IPv4), and the port at least {@link PRIVATE_PORT_MIN}.
 */
export function privateEntryPort(entry: { endpoint: string; clientPool: string }, address: string): { port: number } | { error: string } {
  const ep = parseEndpoint(entry.endpoint);
  if (!ep) return { error: `bad endpoint ${entry.endpoint}` };
  if (ep.host.includes(':')) return { error: `its endpoint ${entry.endpoint} is IPv6, and private sessions enter over IPv4` };
  const pool = parseCidr(entry.clientPool);
  const a = parseIpv4(address);
  if (!pool || a === null) return { error: `bad pool ${entry.clientPool} or address ${address}` };
  const offset = a - pool.base;
  const size = 2 ** (32 - pool.prefix);
  if (offset < 2 || offset > size - 2) return { error: `${address} is not a client address of the pool ${entry.clientPool}` };
  const port = ep.port - offset;
  if (port < PRIVATE_PORT_MIN)
    return { error: `its endpoint port ${ep.port} leaves no room above ${PRIVATE_PORT_MIN - 1} for the private ports of its pool ${entry.clientPool}` };
  return { port };
}

/**
 * The ports a relay's private sessions may take: below its endpoint port by the client offsets of its
 * pool (2 .. size - 2), none below {@link PRIVATE_PORT_MIN}; null when that leaves none.
 */
export function privatePortRange(endpointPort: number, clientPool: string): [number, number] | null {
  const pool = parseCidr(clientPool);
  if (!pool || pool.prefix > 30) return null;
  const size = 2 ** (32 - pool.prefix);
  const range: [number, number] = [Math.max(PRIVATE_PORT_MIN, endpointPort - (size - 2)), endpointPort - 2];
  return range[0] <= range[1] ? range : null;
}
