// The fields of the Edge Functions' requests and how a refusal names one (docs/control-plane.md):
// every schema's messages are the functions' 400 answers, each naming its field. What passes here
// always passes the relays' schemas (topology.events.ts), so an event built from a valid request is
// never rejected downstream. Pure.
import { z } from 'zod';
// The functions' IP predicates, until the contract has its own.
import { isIpv4, isIpv6 } from './ip.ts';
import { base64ToBytes } from './base64.ts';
import { RELAY_ID_RE } from './envelope.ts';

export const REGION_RE = /^[a-z0-9-]{1,64}$/;
const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const DNS_RE = /^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;

/** A string: `<field> is required` when absent, `<field> must be a string` when something else. */
export function text(field: string) {
  return z.string({ error: (i) => (i.input === undefined ? `${field} is required` : `${field} must be a string`) });
}

export function flag(field: string) {
  return z.boolean({ error: `${field} must be true or false` });
}

/** One of a fixed set of strings, the refusal naming them. */
export function oneOf<const T extends readonly [string, ...string[]]>(field: string, values: T) {
  return z.enum(values, { error: `${field} must be one of ${values.map((v) => JSON.stringify(v)).join(', ')}` });
}

export function relayIdField(field = 'relayId') {
  return text(field).regex(RELAY_ID_RE, `${field} must be 1-63 characters of a-z, 0-9 and -, starting with a letter or digit`);
}

export function regionField(field = 'region') {
  return text(field).regex(REGION_RE, `${field} must be 1-64 characters of a-z, 0-9 and -`);
}

/** A session id: a UUID, lower-cased (as Postgres prints it). */
export function sessionIdField(field = 'sessionId') {
  return text(field)
    .regex(UUID_RE, `${field} must be a UUID`)
    .transform((v) => v.toLowerCase());
}

/** A WireGuard public key: canonical base64 that decodes to exactly 32 bytes. */
export function wgKeyField(field = 'publicKey') {
  return text(field).superRefine((v, ctx) => {
    const m = wgKeyProblem(v, field);
    if (m) ctx.addIssue({ code: 'custom', message: m });
  });
}

/** A relay's Ed25519 identity public key: canonical base64 of exactly 32 bytes. */
export function identityKeyField(field = 'identityKey') {
  return text(field).superRefine((v, ctx) => {
    const m = wgKeyProblem(v, field, 'Ed25519 public key');
    if (m) ctx.addIssue({ code: 'custom', message: m });
  });
}

function wgKeyProblem(v: string, field: string, what = 'WireGuard key'): string | null {
  if (v.length > 64) return `${field} must be base64 of a 32-byte ${what}`;
  const bytes = base64ToBytes(v);
  if (!bytes) return `${field} is not valid (canonical, padded) base64`;
  return bytes.length === 32 ? null : `${field} must decode to exactly 32 bytes, not ${bytes.length}`;
}

/** A NATS user nkey public key: `U` and 55 base32 characters (the checksum is checked where a JWT is minted). */
export function busKeyField(field = 'busKey') {
  return text(field).regex(/^U[A-Z2-7]{55}$/, `${field} must be a NATS user public key (U followed by 55 base32 characters)`);
}

/** `IPv4:port`, `[IPv6]:port` or `dns-name:port`, port 1-65535. */
export function endpointField(field = 'endpoint') {
  return text(field).superRefine((v, ctx) => {
    const m = endpointProblem(v, field);
    if (m) ctx.addIssue({ code: 'custom', message: m });
  });
}

function endpointProblem(v: string, field: string): string | null {
  if (v.length > 261) return `${field} is longer than 261 characters`;
  let host: string;
  let port: string;
  const v6 = /^\[([^\]]*)\]:([^:]*)$/.exec(v);
  if (v6) {
    host = v6[1]!;
    port = v6[2]!;
    if (!isIpv6(host)) return `${field}: ${JSON.stringify(host)} is not an IPv6 address`;
  } else {
    const i = v.lastIndexOf(':');
    if (i <= 0) return `${field} must be host:port (IPv4, [IPv6] or DNS name)`;
    host = v.slice(0, i);
    port = v.slice(i + 1);
    if (host.includes(':')) return `${field}: put an IPv6 address in brackets, [addr]:port`;
    if (/^[\d.]+$/.test(host) ? !isIpv4(host) : !DNS_RE.test(host))
      return `${field}: ${JSON.stringify(host.slice(0, 64))} is neither an IPv4 address nor a DNS name`;
  }
  return /^[1-9]\d{0,4}$/.test(port) && Number(port) <= 65535 ? null : `${field}: port must be 1-65535`;
}

/** A request body: exactly these fields (an unknown one is named, with the allowed ones in `allowed` order). */
export function requestObject<S extends z.ZodRawShape>(shape: S, allowed: readonly string[] = Object.keys(shape)) {
  return z.strictObject(shape, {
    error: (i) =>
      i.code === 'unrecognized_keys' ? `unknown field ${JSON.stringify(String(i.keys[0]).slice(0, 64))}; allowed: ${allowed.join(', ')}` : undefined,
  });
}

/**
 * Exactly one of the fields `a` and `b` (two checks for the object). Both: a refusal naming `b`,
 * ranked before `a`'s own checks; neither: one naming `a`, ranked after `b`'s. They run whatever else
 * is wrong, so {@link checkRequest} ranks them with the rest.
 */
export function exactlyOne(a: string, b: string, messages: { both: string; neither: string }) {
  const has = (v: unknown, k: string) => typeof v === 'object' && v !== null && (v as Record<string, unknown>)[k] !== undefined;
  return [
    z.refine((v: unknown) => !(has(v, a) && has(v, b)), { message: messages.both, path: [b], params: { before: a }, when: () => true }),
    z.refine((v: unknown) => has(v, a) || has(v, b), { message: messages.neither, path: [a], params: { after: b }, when: () => true }),
  ] as const;
}

export type RequestCheck<T> = { ok: true; value: T } | { ok: false; field: string; message: string };

/**
 * Validate a request body. A refusal is the first problem in the order the functions have always
 * checked: an unknown field, then field by field in the schema's order (the checks of
 * {@link exactlyOne} where they rank), each field's checks in their order.
 */
export function checkRequest<S extends z.ZodObject>(schema: S, body: unknown): RequestCheck<z.output<S>> {
  const r = schema.safeParse(body);
  if (r.success) return { ok: true, value: r.data };
  const keys = Object.keys(schema.shape);
  const rank = (i: z.core.$ZodIssue) => {
    if (i.code === 'unrecognized_keys') return -1;
    const p = i.code === 'custom' ? (i.params as { before?: string; after?: string } | undefined) : undefined;
    if (p?.before) return keys.indexOf(p.before) * 3;
    if (p?.after) return keys.indexOf(p.after) * 3 + 2;
    return keys.indexOf(String(i.path[0])) * 3 + 1;
  };
  const first = r.error.issues.reduce((best, i) => (rank(i) < rank(best) ? i : best));
  const field = first.code === 'unrecognized_keys' ? String(first.keys[0]).slice(0, 64) : String(first.path[0] ?? 'body');
  return { ok: false, field, message: first.message };
}
