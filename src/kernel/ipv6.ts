import { formatIp, parseIpv4, parseIpv6 } from './ip.ts';

/**
 * Clients' IPv6 inside the tunnel (docs/clients.md, "IPv6"). The network's client IPv6 space is one
 * /96 (`--client-prefix6`, default fd64::/96, a unique local prefix); a client's IPv6 address is its
 * IPv4 address in the low 32 bits of that prefix, so a relay's IPv6 pool is its IPv4 pool there
 * (100.96.4.0/22 → fd64::6460:400/118). Nothing new is allocated, stored or sent: the control plane,
 * the entry and the exit all derive the same address from the session's IPv4 one.
 */

export const DEFAULT_CLIENT_PREFIX6 = 'fd64::/96';

/** The /96's network as a bigint; throws unless `prefix6` is an IPv6 /96 with no host bits. */
function prefixBase(prefix6: string): bigint {
  const [addr, len] = prefix6.split('/');
  const ip = addr === undefined ? null : parseIpv6(addr);
  if (!ip || len !== '96') throw new Error(`client IPv6 prefix ${prefix6} is not an IPv6 /96`);
  if ((ip.n & 0xffffffffn) !== 0n) throw new Error(`client IPv6 prefix ${prefix6} has host bits set`);
  return ip.n;
}

/** Null when `prefix6` is a valid /96, else why not (for option and settings validation). */
export function prefix6Problem(prefix6: string): string | null {
  try {
    prefixBase(prefix6);
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

/** The IPv6 address of the client (or gateway) with IPv4 address `v4`. */
export function embed6(prefix6: string, v4: string): string {
  const a = parseIpv4(v4);
  if (!a) throw new Error(`${v4} is not an IPv4 address`);
  return formatIp({ v6: true, n: prefixBase(prefix6) | a.n });
}

/** The IPv6 counterpart of an IPv4 CIDR (a relay's pool): the same addresses in the /96. */
export function embedCidr6(prefix6: string, cidr4: string): string {
  const [addr, len] = cidr4.split('/');
  const bits = Number(len);
  if (addr === undefined || !Number.isInteger(bits) || bits < 0 || bits > 32) throw new Error(`${cidr4} is not an IPv4 CIDR`);
  return `${embed6(prefix6, addr)}/${96 + bits}`;
}
