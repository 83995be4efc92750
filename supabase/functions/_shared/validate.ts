// Strict request validation for the Edge Functions: every error names the offending field. Pure.
// What passes here always passes the relays' schemas (src/events/topology.events.ts), so an event
// built from a valid request is never rejected downstream.
import { isIpv6Text, parseIp, parseIpv4 } from '../../../src/contract/ip.ts';
import { base64ToBytes } from './base64.ts';
import { badRequest } from './http.ts';

export interface RegisterRequest {
  relayId: string;
  name: string;
  region: string;
  publicKey: string;
  endpoint: string;
  rotateKey: boolean;
  /** Clients' IPv6 may leave at this relay (it has IPv6 to the internet); absent: false. */
  exitIpv6: boolean;
}

export interface RelayIdRequest {
  relayId: string;
}

export const RELAY_ID_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const REGION_RE = /^[a-z0-9-]{1,64}$/;
const DNS_RE = /^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;
// deno-lint-ignore no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f]/;

const REGISTER_FIELDS = ['relayId', 'name', 'region', 'publicKey', 'endpoint', 'rotateKey', 'exitIpv6'] as const;
const RELAY_ID_FIELDS = ['relayId'] as const;

/** 400 naming the first field that is not in `allowed`. */
export function onlyFields(body: Record<string, unknown>, allowed: readonly string[]): void {
  for (const k of Object.keys(body)) {
    if (!allowed.includes(k)) throw badRequest(k.slice(0, 64), `unknown field ${JSON.stringify(k.slice(0, 64))}; allowed: ${allowed.join(', ')}`);
  }
}

export function str(body: Record<string, unknown>, field: string): string {
  const v = body[field];
  if (v === undefined) throw badRequest(field, `${field} is required`);
  if (typeof v !== 'string') throw badRequest(field, `${field} must be a string`);
  return v;
}

export function validRelayId(v: string, field = 'relayId'): string {
  if (!RELAY_ID_RE.test(v)) throw badRequest(field, `${field} must be 1-63 characters of a-z, 0-9 and -, starting with a letter or digit`);
  return v;
}

/** A WireGuard public key: canonical base64 that decodes to exactly 32 bytes. */
export function validWgKey(v: string, field = 'publicKey'): string {
  if (v.length > 64) throw badRequest(field, `${field} must be base64 of a 32-byte WireGuard key`);
  const bytes = base64ToBytes(v);
  if (!bytes) throw badRequest(field, `${field} is not valid (canonical, padded) base64`);
  if (bytes.length !== 32) throw badRequest(field, `${field} must decode to exactly 32 bytes, not ${bytes.length}`);
  return v;
}

export function isIpv4(s: string): boolean {
  return parseIpv4(s) !== null;
}

/** Hex groups, or with a dotted IPv4 tail (`::ffff:192.0.2.1`). */
export function isIpv6(s: string): boolean {
  return s.length <= 45 && isIpv6Text(s) && parseIp(s, { embeddedIpv4: true }) !== null;
}

/** `IPv4:port`, `[IPv6]:port` or `dns-name:port`, port 1-65535. */
export function validEndpoint(v: string, field = 'endpoint'): string {
  if (v.length > 261) throw badRequest(field, `${field} is longer than 261 characters`);
  let host: string;
  let port: string;
  const v6 = /^\[([^\]]*)\]:([^:]*)$/.exec(v);
  if (v6) {
    host = v6[1]!;
    port = v6[2]!;
    if (!isIpv6(host)) throw badRequest(field, `${field}: ${JSON.stringify(host)} is not an IPv6 address`);
  } else {
    const i = v.lastIndexOf(':');
    if (i <= 0) throw badRequest(field, `${field} must be host:port (IPv4, [IPv6] or DNS name)`);
    host = v.slice(0, i);
    port = v.slice(i + 1);
    if (host.includes(':')) throw badRequest(field, `${field}: put an IPv6 address in brackets, [addr]:port`);
    if (/^[\d.]+$/.test(host) ? !isIpv4(host) : !DNS_RE.test(host)) throw badRequest(field, `${field}: ${JSON.stringify(host.slice(0, 64))} is neither an IPv4 address nor a DNS name`);
  }
  if (!/^[1-9]\d{0,4}$/.test(port) || Number(port) > 65535) throw badRequest(field, `${field}: port must be 1-65535`);
  return v;
}

export function parseRegisterRequest(body: Record<string, unknown>): RegisterRequest {
  onlyFields(body, REGISTER_FIELDS);
  const relayId = validRelayId(str(body, 'relayId'));
  const name = str(body, 'name');
  if (name.length < 1 || name.length > 128) throw badRequest('name', 'name must be 1-128 characters');
  if (CONTROL_RE.test(name)) throw badRequest('name', 'name must not contain control characters');
  const region = str(body, 'region');
  if (!REGION_RE.test(region)) throw badRequest('region', 'region must be 1-64 characters of a-z, 0-9 and -');
  const publicKey = validWgKey(str(body, 'publicKey'));
  const endpoint = validEndpoint(str(body, 'endpoint'));
  const rotateKey = body.rotateKey === undefined ? false : body.rotateKey;
  if (typeof rotateKey !== 'boolean') throw badRequest('rotateKey', 'rotateKey must be true or false');
  const exitIpv6 = body.exitIpv6 === undefined ? false : body.exitIpv6;
  if (typeof exitIpv6 !== 'boolean') throw badRequest('exitIpv6', 'exitIpv6 must be true or false');
  return { relayId, name, region, publicKey, endpoint, rotateKey, exitIpv6 };
}

export function parseRelayIdRequest(body: Record<string, unknown>): RelayIdRequest {
  onlyFields(body, RELAY_ID_FIELDS);
  return { relayId: validRelayId(str(body, 'relayId')) };
}
