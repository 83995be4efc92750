import fc from 'fast-check';

/**
 * Generators of malformed values shared by the fuzz tests (test/unit/fuzz-topology.test.ts,
 * test/integration/fuzz-functions.test.ts). A mutation says whether it is certain to make the message
 * invalid (`mustReject`): values no field of any event or request accepts (objects, arrays, strings of
 * more than 300 characters, negative fractions and 0.75), field-specific bad values (a CIDR with host bits
 * for a pool, a 31-byte key for a key), missing required fields and unknown fields. Other mutations
 * (any JSON value, unicode, control characters) may by chance be valid; the tests then only require
 * that nothing throws and that what is accepted is what a valid message would do.
 */

/** The fuzz seed: RELAYNET_FUZZ_SEED, default 14 (issue 14). The same seed, the same cases. */
export const FUZZ_SEED = Number(process.env.RELAYNET_FUZZ_SEED ?? 14);

/** Scale of every run count: RELAYNET_FUZZ_SCALE (default 1). */
export const FUZZ_SCALE = Number(process.env.RELAYNET_FUZZ_SCALE ?? 1);

export const runs = (n: number) => Math.max(1, Math.round(n * FUZZ_SCALE));

// deno-lint-ignore no-control-regex
const CONTROL = '\u0000\u0001\u0007\b\t\n\u000b\f\r\u001b\u007f';

/** Strings with control characters, bidi overrides, homoglyphs, emoji, lone surrogates, NUL. */
export const nastyString = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: fc.constantFrom(...CONTROL.split('')), minLength: 1, maxLength: 8 }),
  fc.constantFrom(
    '',
    ' ',
    '\u0000',
    'relay-1\u0000',
    'relay-1\n',
    're\u202elay',
    'rеlay-1', // Cyrillic e
    'ｒｅｌａｙ',
    '💥',
    '\ud800',
    '\udfff',
    '../../etc/passwd',
    "'; drop table relaynet.relays; --",
    ['$', '{jndi:ldap://x}'].join(''),
    '%00',
    '\\u0000',
    'null',
    'undefined',
    '__proto__',
    'constructor',
  ),
);

/** Values that no field of any event or request accepts. */
export const alwaysInvalid = fc.oneof(
  fc.constant({}),
  fc.constant([]),
  fc.array(fc.jsonValue({ maxDepth: 1 }), { minLength: 1, maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 1 }), { minKeys: 1, maxKeys: 3 }),
  fc.integer({ min: 300, max: 3000 }).chain((n) => fc.constantFrom('x'.repeat(n), `relay-${'a'.repeat(n)}`, `${'\u0000'.repeat(n)}`, '💥'.repeat(n))),
  // Fractions no field takes: negative, or above the largest share a measurement allows (r ≤ 0.5).
  fc.constantFrom(-0.5, -1.5, 0.75),
);

/** Bad WireGuard keys: wrong length, not canonical, not base64. */
export const badKey = fc.constantFrom(
  '',
  'AAAA',
  Buffer.alloc(31, 7).toString('base64'),
  Buffer.alloc(33, 7).toString('base64'),
  Buffer.alloc(32, 7).toString('base64').replace('=', ''),
  `${Buffer.alloc(32, 7).toString('base64').slice(0, 42)}B=`, // non-zero padding bits
  Buffer.alloc(32, 7).toString('base64url'),
  `${Buffer.alloc(32, 7).toString('base64')} `,
  `\u0000${Buffer.alloc(32, 7).toString('base64')}`,
  'not base64 at all!!!!!!!!!!!!!!!!!!!!!!!!!!',
);

/** Bad IPv4 CIDRs for a pool: host bits, out of range, IPv6, no prefix. */
export const badCidr = fc.constantFrom(
  '100.96.0.1/22',
  '300.96.0.0/22',
  '100.96.0.0/33',
  '100.96.0.0',
  '100.96.0.0/-1',
  'fd00::/64',
  '100.96.0.0/22/1',
  '',
  '0x64.0.0.0/8',
);

/** Bad IPv4 addresses. */
export const badIpv4 = fc.constantFrom('256.1.1.1', '1.2.3', '1.2.3.4.5', '01.2.3.4', '1.2.3.4/32', '::1', '', ' 1.2.3.4', '1.2.3.４');

/** Bad relay ids (subjects may carry only [a-z0-9-]). */
export const badRelayId = fc.constantFrom(
  '',
  '-relay',
  'Relay-1',
  'relay_1',
  'relay.1',
  'relay 1',
  'relay-1>',
  'relay-*',
  'a'.repeat(64),
  'rеlay-1',
  'relay-1\n',
);

/** Bad UUIDs. */
export const badUuid = fc.constantFrom(
  '',
  'not-a-uuid',
  '00000000-0000-4000-8000-00000000000',
  '00000000-0000-4000-8000-0000000000001',
  '{00000000-0000-4000-8000-000000000001}',
  'zzzzzzzz-0000-4000-8000-000000000001',
);

/** Bad endpoints. */
export const badEndpoint = fc.constantFrom(
  '',
  '1.2.3.4',
  '1.2.3.4:0',
  '1.2.3.4:65536',
  '::1:51820',
  '[zz]:51820',
  'host_name:51820',
  ':51820',
  '1.2.3.4:51820:1',
  `${'a'.repeat(300)}:1`,
);

/** Bad timestamps. */
export const badTime = fc.constantFrom('', 'yesterday', '2026-13-01T00:00:00Z', '2026-11-25 00:00:00', '2026-11-25T25:00:00Z', '1764028800');

/** JSON paths of a value: every key of every object (arrays are not used by events or requests). */
export function pathsOf(v: unknown, prefix: string[] = []): string[][] {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return [];
  const out: string[][] = [];
  for (const k of Object.keys(v)) {
    const p = [...prefix, k];
    out.push(p);
    out.push(...pathsOf((v as Record<string, unknown>)[k], p));
  }
  return out;
}

export function objectPaths(v: unknown, prefix: string[] = []): string[][] {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return [];
  const out: string[][] = [prefix];
  for (const [k, x] of Object.entries(v)) out.push(...objectPaths(x, [...prefix, k]));
  return out;
}

const clone = <T>(v: T): T => structuredClone(v);

/** A setter of `x` for {@link setAt}. */
const put =
  (x: unknown) =>
  (o: Record<string, unknown>, k: string): void => {
    o[k] = x;
  };

function setAt(root: unknown, path: string[], f: (parent: Record<string, unknown>, key: string) => void): unknown {
  const out = clone(root) as Record<string, unknown>;
  let at: Record<string, unknown> = out;
  for (const k of path.slice(0, -1)) at = at[k] as Record<string, unknown>;
  f(at, path[path.length - 1]!);
  return out;
}

/** A field-specific invalid value for the last key of `path`, or null when none is known. */
export function fieldSpecific(path: string[]): fc.Arbitrary<unknown> | null {
  const k = path[path.length - 1]!;
  if (/publicKey$|previousPublicKey$/.test(k)) return badKey;
  if (k === 'clientPool') return badCidr;
  if (k === 'meshAddress' || k === 'address') return badIpv4;
  if (/^(relayId|entryId|exitId|previousExitId|exit|entry)$/.test(k) || (k === 'id' && path.length > 1 && path[path.length - 2] === 'relay')) return badRelayId;
  if (k === 'id' || k === 'sessionId') return badUuid;
  if (/[eE]ndpoint$/.test(k)) return badEndpoint;
  if (k === 'time' || k === 'openedAt' || k === 'expiresAt') return badTime;
  if (k === 'revision' || k === 'version') return fc.constantFrom(0, -1, 1.5, '1', null, true, Number.POSITIVE_INFINITY);
  if (k === 'source') return fc.constantFrom('', 'Control-Plane', 'control plane', '*', 'relay_1');
  if (k === 'type') return fc.constantFrom('', 'relayAdmitted', 'RelayAdmitted ', 'Nope', 'X');
  return null;
}

export interface Mutation {
  value: unknown;
  what: string;
  mustReject: boolean;
}

/**
 * One mutation of a JSON object: a field replaced (by a value no field accepts, a value bad for that
 * field, any JSON value, a nasty string), removed, or an unknown field added.
 * `optional`: keys whose removal is valid; `nullable`: keys that accept null.
 */
export function mutationOf(base: object, opts: { optional?: readonly string[] } = {}): fc.Arbitrary<Mutation> {
  const paths = pathsOf(base);
  const objs = objectPaths(base);
  const optional = new Set(opts.optional ?? []);
  const replace = fc.constantFrom(...paths).chain((p) => {
    const specific = fieldSpecific(p);
    const name = p.join('.');
    const arbs: fc.Arbitrary<Mutation>[] = [
      alwaysInvalid.map((x) => ({ value: setAt(base, p, put(x)), what: `${name}=invalid`, mustReject: true })),
      fc.jsonValue({ maxDepth: 2 }).map((x) => ({ value: setAt(base, p, put(x)), what: `${name}=json`, mustReject: false })),
      nastyString.map((x) => ({ value: setAt(base, p, put(x)), what: `${name}=string`, mustReject: false })),
      fc.constant({
        value: setAt(base, p, (o, k) => {
          delete o[k];
        }),
        what: `${name} removed`,
        mustReject: !optional.has(p[p.length - 1]!),
      }),
    ];
    if (specific) arbs.push(specific.map((x) => ({ value: setAt(base, p, put(x)), what: `${name}=bad`, mustReject: true })));
    return fc.oneof(...arbs);
  });
  const extra = fc.tuple(fc.constantFrom(...objs), fc.string({ minLength: 1, maxLength: 12 }), fc.jsonValue({ maxDepth: 1 })).map(([p, k, x]) => {
    const key = k === '__proto__' ? 'proto' : k;
    const out = clone(base) as Record<string, unknown>;
    let at: Record<string, unknown> = out;
    for (const s of p) at = at[s] as Record<string, unknown>;
    const known = Object.hasOwn(at, key);
    at[key] = x;
    return { value: out, what: `${p.join('.') || '(root)'}+field`, mustReject: !known };
  });
  return fc.oneof({ arbitrary: replace, weight: 5 }, { arbitrary: extra, weight: 1 });
}

/** Count occurrences by key (reports). */
export class Tally {
  readonly counts: Record<string, number> = {};
  add(k: string, n = 1): void {
    this.counts[k] = (this.counts[k] ?? 0) + n;
  }
  get total(): number {
    return Object.values(this.counts).reduce((a, b) => a + b, 0);
  }
  sorted(): Record<string, number> {
    return Object.fromEntries(Object.entries(this.counts).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)));
  }
}
