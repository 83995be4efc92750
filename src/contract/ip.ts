import ipaddr from 'ipaddr.js';

/**
 * IP addresses and CIDRs, one module for the relays (src/kernel, src/events) and the Edge Functions
 * (supabase/functions/_shared): parsing and validation, canonical text (IPv6 compressed as RFC 5952
 * says, lower case, no embedded IPv4), ranges, and clients' IPv6 (an IPv4 address in a /96). Pure;
 * imports only ipaddr.js.
 *
 * Which texts are addresses is decided here, before ipaddr.js reads them: it would also take octal,
 * hex and short IPv4 forms (`010.1`, `0x7f.1`) and zone ids (`fe80::1%eth0`). By default an IPv4
 * address is four decimal octets without leading zeros and an IPv6 address is hex groups with at
 * most one `::`; the options widen that where a caller always has.
 */

/** An address as a number: its family and its 32 or 128 bits. */
export interface IpValue {
  v6: boolean;
  n: bigint;
}

export interface IpOptions {
  /** IPv4 octets (and CIDR prefix lengths) with leading zeros, read as decimal (`010` is 10). */
  leadingZeros?: boolean;
  /** IPv6 with a dotted IPv4 tail (`::ffff:192.0.2.1`). */
  embeddedIpv4?: boolean;
}

/** Whether a text that is an address or a CIDR is of the IPv6 family (anything with a colon). */
export const isIpv6Text = (addressOrCidr: string): boolean => addressOrCidr.includes(':');

const DOTTED = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const HEX_GROUPS = /^[0-9A-Fa-f:]+$/;
const HEX_GROUPS_IPV4_TAIL = /^[0-9A-Fa-f:]+:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/;

function ipv4Octets(s: string, leadingZeros: boolean): number[] | null {
  const m = DOTTED.exec(s);
  if (!m) return null;
  const parts = m.slice(1);
  if (parts.some((p) => Number(p) > 255 || (!leadingZeros && p.length > 1 && p.startsWith('0')))) return null;
  return parts.map(Number);
}

function isIpv6Syntax(s: string, embeddedIpv4: boolean): boolean {
  if (HEX_GROUPS.test(s)) return ipaddr.IPv6.isValid(s);
  const tail = embeddedIpv4 ? HEX_GROUPS_IPV4_TAIL.exec(s) : null;
  return !!tail && ipv4Octets(tail[1]!, false) !== null && ipaddr.IPv6.isValid(s);
}

function ipValueOf(a: ipaddr.IPv4 | ipaddr.IPv6): IpValue {
  return { v6: a.kind() === 'ipv6', n: a.toByteArray().reduce((acc, b) => (acc << 8n) | BigInt(b), 0n) };
}

function addressOf({ v6, n }: IpValue): ipaddr.IPv4 | ipaddr.IPv6 {
  const bytes = v6 ? 16 : 4;
  return ipaddr.fromByteArray(Array.from({ length: bytes }, (_, i) => Number((n >> BigInt(8 * (bytes - 1 - i))) & 0xffn)));
}

/** An IPv4 (no colon) or IPv6 address, or null when `s` is not one. */
export function parseIp(s: string, opts: IpOptions = {}): IpValue | null {
  if (!isIpv6Text(s)) {
    const octets = ipv4Octets(s, opts.leadingZeros ?? false);
    return octets && ipValueOf(new ipaddr.IPv4(octets));
  }
  return isIpv6Syntax(s, opts.embeddedIpv4 ?? false) ? ipValueOf(ipaddr.IPv6.parse(s)) : null;
}

/** Canonical text: dotted decimal, or RFC 5952 (longest run of two or more zero groups as `::`, the first of equals). */
export function formatIp(ip: IpValue): string {
  const a = addressOf(ip);
  return a instanceof ipaddr.IPv6 ? a.toRFC5952String() : a.toString();
}

/** A dotted-quad IPv4 address (no leading zeros) as a 32-bit number, or null. */
export function parseIpv4(s: string): number | null {
  const ip = isIpv6Text(s) ? null : parseIp(s);
  return ip && Number(ip.n);
}

export function formatIpv4(n: number): string {
  return formatIp({ v6: false, n: BigInt(n) & 0xffffffffn });
}

export interface CidrOptions extends IpOptions {
  /** A bare address is its host route (/32, /128). */
  bareAddress?: boolean;
  /** Host bits below the prefix: `refuse` (null), `mask` (the network), `keep` (an interface address). */
  hostBits: 'refuse' | 'mask' | 'keep';
}

export interface CidrValue {
  ip: IpValue;
  prefix: number;
}

const hostMask = (ip: IpValue, prefix: number) => (1n << BigInt((ip.v6 ? 128 : 32) - prefix)) - 1n;

/** `address/prefix` as the options allow, or null. */
export function parseCidr(s: string, opts: CidrOptions): CidrValue | null {
  const [addr = '', len, extra] = s.split('/');
  const ip = extra === undefined ? parseIp(addr, opts) : null;
  if (!ip || (len === undefined && !opts.bareAddress)) return null;
  const bits = ip.v6 ? 128 : 32;
  if (len !== undefined && !(ip.v6 || opts.leadingZeros ? /^\d{1,3}$/ : /^\d{1,2}$/).test(len)) return null;
  const prefix = len === undefined ? bits : Number(len);
  if (prefix > bits) return null;
  const host = ip.n & hostMask(ip, prefix);
  if (host !== 0n && opts.hostBits === 'refuse') return null;
  return { ip: opts.hostBits === 'mask' ? { v6: ip.v6, n: ip.n ^ host } : ip, prefix };
}

export function formatCidr(c: CidrValue): string {
  return `${formatIp(c.ip)}/${c.prefix}`;
}

/** The first and last address of a CIDR's network. */
export function cidrRange(c: CidrValue): { lo: bigint; hi: bigint } {
  const host = hostMask(c.ip, c.prefix);
  const lo = c.ip.n & ~host;
  return { lo, hi: lo | host };
}

/** An IPv4 network `a.b.c.d/n` (no leading zeros, no host bits) as numbers, or null. */
export function parseIpv4Cidr(s: string, opts: { bareAddress?: boolean } = {}): { base: number; prefix: number } | null {
  const c = isIpv6Text(s) ? null : parseCidr(s, { bareAddress: opts.bareAddress, hostBits: 'refuse' });
  return c && { base: Number(c.ip.n), prefix: c.prefix };
}

// -------------------------------------------------------------------------------------------------
// Clients' IPv6 (docs/clients.md, "IPv6"): a client's IPv6 address is its IPv4 address in the low 32
// bits of the network's client /96, so the control plane and every relay derive the same one.

/** The /96's network; throws unless `prefix6` is an IPv6 /96 (hex groups) with no host bits. */
function prefix6Base(prefix6: string): bigint {
  const [addr, len] = prefix6.split('/');
  const ip = addr === undefined || !isIpv6Text(addr) ? null : parseIp(addr);
  if (!ip || len !== '96') throw new Error(`client IPv6 prefix ${prefix6} is not an IPv6 /96`);
  if ((ip.n & 0xffffffffn) !== 0n) throw new Error(`client IPv6 prefix ${prefix6} has host bits set`);
  return ip.n;
}

/** Null when `prefix6` is a valid client /96, else why not (for option and settings validation). */
export function prefix6Problem(prefix6: string): string | null {
  try {
    prefix6Base(prefix6);
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

/** The IPv6 address (RFC 5952 text) of the client or gateway with IPv4 address `v4`. */
export function embedIpv4In6(prefix6: string, v4: string, opts: Pick<IpOptions, 'leadingZeros'> = {}): string {
  const a = isIpv6Text(v4) ? null : parseIp(v4, opts);
  if (!a) throw new Error(`${v4} is not an IPv4 address`);
  return formatIp({ v6: true, n: prefix6Base(prefix6) | a.n });
}

/** The IPv6 counterpart of an IPv4 CIDR (a relay's pool): the same addresses in the /96. */
export function embedCidr6(prefix6: string, cidr4: string, opts: Pick<IpOptions, 'leadingZeros'> = {}): string {
  const c = isIpv6Text(cidr4) ? null : parseCidr(cidr4, { ...opts, hostBits: 'keep' });
  if (!c) throw new Error(`${cidr4} is not an IPv4 CIDR`);
  return `${formatIp({ v6: true, n: prefix6Base(prefix6) | c.ip.n })}/${96 + c.prefix}`;
}

/** A dotted-quad IPv4 address (no leading zeros). */
export function isIpv4(s: string): boolean {
  return parseIpv4(s) !== null;
}

/** An IPv6 address in hex groups, or with a dotted IPv4 tail (`::ffff:192.0.2.1`); no zone. */
export function isIpv6(s: string): boolean {
  return s.length <= 45 && isIpv6Text(s) && parseIp(s, { embeddedIpv4: true }) !== null;
}
