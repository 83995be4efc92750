import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  cidrRange,
  embedCidr6,
  embedIpv4In6,
  formatCidr,
  formatIp,
  formatIpv4,
  parseCidr,
  parseIp,
  parseIpv4,
  parseIpv4Cidr,
  prefix6Problem,
  type CidrOptions,
} from '../../src/contract/ip.ts';
import { DENO_BIN, DENO_DIR, FUNCTIONS_DIR } from '../../src/control-plane/paths.ts';
import { canonicalCidr, canonicalIp } from '../../src/kernel/ip.ts';
import { embed6 } from '../../src/kernel/ipv6.ts';

const canonical = (s: string, opts = {}) => {
  const ip = parseIp(s, opts);
  return ip && formatIp(ip);
};

/** RFC 5952, section 4, written out: the reference ipaddr.js's text is held to (and what relay-core printed before it). */
function rfc5952(n: bigint): string {
  const groups = Array.from({ length: 8 }, (_, i) => Number((n >> BigInt(112 - 16 * i)) & 0xffffn));
  let best = { at: -1, len: 1 };
  for (let i = 0; i < 8; i++) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > best.len) best = { at: i, len: j - i };
  }
  const hex = groups.map((g) => g.toString(16));
  return best.at < 0 ? hex.join(':') : `${hex.slice(0, best.at).join(':')}::${hex.slice(best.at + best.len).join(':')}`;
}

describe('canonical text', () => {
  it.each([
    ['100.64.0.1', '100.64.0.1'],
    ['0.0.0.0', '0.0.0.0'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['2001:0db8::0001', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['0:0:0:0:0:0:0:0', '::'],
    ['0::1', '::1'],
    ['fe80:0:0:0:0:0:0:0', 'fe80::'],
    ['1:0:0:0:0:0:0:8', '1::8'],
    ['0:0:0:0:0:ffff:6460:407', '::ffff:6460:407'],
    ['fd64:0:0:0:0:0:6460:407', 'fd64::6460:407'],
  ])('%s is %s', (input, text) => {
    expect(canonical(input)).toBe(text);
    expect(canonicalIp(input)).toBe(text);
  });

  it('writes IPv4-mapped and embedded forms in hex, as iproute2 is compared (never dotted)', () => {
    expect(canonical('::ffff:100.96.4.7', { embeddedIpv4: true })).toBe('::ffff:6460:407');
    expect(canonical('::ffff:6460:407')).toBe('::ffff:6460:407');
    expect(canonical('fd64::100.96.4.7', { embeddedIpv4: true })).toBe('fd64::6460:407');
  });

  it('agrees with RFC 5952 written out, on random addresses rich in zero groups', () => {
    let seed = 13;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    for (let i = 0; i < 5000; i++) {
      const n = Array.from({ length: 8 }, () => BigInt(next() % 3 === 0 ? next() % 0x10000 : 0)).reduce((acc, g) => (acc << 16n) | g, 0n);
      expect(formatIp({ v6: true, n })).toBe(rfc5952(n));
      expect(canonical(rfc5952(n))).toBe(rfc5952(n));
    }
  });

  it('formats IPv4 numbers and CIDRs', () => {
    expect(parseIpv4('100.64.0.1')).toBe(0x64400001);
    expect(formatIpv4(0x64400001)).toBe('100.64.0.1');
    expect(formatIpv4(0xffffffff)).toBe('255.255.255.255');
    expect(canonicalCidr('100.96.0.1/22')).toBe('100.96.0.0/22');
    expect(canonicalCidr('100.64.0.1/24', true)).toBe('100.64.0.1/24');
    expect(canonicalCidr('2001:DB8::1/64')).toBe('2001:db8::/64');
    expect(canonicalCidr('::/0')).toBe('::/0');
  });
});

describe('what is not an address', () => {
  it.each([
    ['leading zero', '100.64.0.01'],
    ['octet over 255', '256.1.1.1'],
    ['three octets', '1.2.3'],
    ['five octets', '1.2.3.4.5'],
    ['octal and hex forms', '0x7f.0.0.1'],
    ['a short form', '010.1'],
    ['empty', ''],
    ['space', ' 1.2.3.4'],
    ['a zone id', 'fe80::1%eth0'],
    ['two ::', '1::2::3'],
    ['a group of five digits', '12345::'],
    ['a leading colon', ':1'],
    ['a trailing colon', '1::2:'],
    ['nine groups', '1:2:3:4:5:6:7:8:9'],
    ['seven groups', '1:2:3:4:5:6:7'],
    [':: for no group', '1:2:3:4::5:6:7:8'],
    ['not hex', 'g::1'],
    ['a dotted tail unless asked for', '::ffff:1.2.3.4'],
  ])('%s: %j', (_what, s) => {
    expect(parseIp(s)).toBeNull();
  });

  it('keeps what each caller always accepted', () => {
    // The kernel reads octets with leading zeros as decimal (the host never prints them).
    expect(parseIp('100.064.0.1')).toBeNull();
    expect(canonical('100.064.0.1', { leadingZeros: true })).toBe('100.64.0.1');
    expect(canonicalIp('100.064.0.1')).toBe('100.64.0.1');
    // Endpoints may name an IPv6 address with a dotted tail, but a valid one.
    expect(parseIp('::ffff:1.2.3.256', { embeddedIpv4: true })).toBeNull();
    expect(parseIp('::ffff:01.2.3.4', { embeddedIpv4: true })).toBeNull();
    expect(parseIp('1:2:3:4:5:6:7:1.2.3.4', { embeddedIpv4: true })).toBeNull();
    // What no parser takes, the kernel passes through for the host to refuse.
    expect(canonicalIp('not-an-address')).toBe('not-an-address');
    expect(canonicalCidr('not-an-address/8')).toBe('not-an-address/8');
  });
});

describe('CIDRs', () => {
  const refuse: CidrOptions = { hostBits: 'refuse' };
  const text = (s: string, opts: CidrOptions) => {
    const c = parseCidr(s, opts);
    return c && formatCidr(c);
  };

  it('refuses, masks or keeps host bits as asked', () => {
    expect(text('100.96.4.1/22', refuse)).toBeNull();
    expect(text('100.96.4.1/22', { hostBits: 'mask' })).toBe('100.96.4.0/22');
    expect(text('100.96.4.1/22', { hostBits: 'keep' })).toBe('100.96.4.1/22');
    expect(text('fd64::1/96', refuse)).toBeNull();
    expect(text('fd64::/96', refuse)).toBe('fd64::/96');
  });

  it('refuses prefix lengths past the family, malformed ones, and bare addresses unless asked', () => {
    expect(parseCidr('100.96.4.0/33', refuse)).toBeNull();
    expect(parseCidr('fd64::/129', refuse)).toBeNull();
    expect(text('fd64::/128', refuse)).toBe('fd64::/128');
    for (const bad of ['100.96.4.0/', '100.96.4.0/x', '100.96.4.0/-1', '100.96.4.0/22/1', '100.96.4.0/ 22', '/22'])
      expect([bad, parseCidr(bad, refuse)]).toEqual([bad, null]);
    expect(parseCidr('100.96.4.7', refuse)).toBeNull();
    expect(text('100.96.4.7', { ...refuse, bareAddress: true })).toBe('100.96.4.7/32');
    expect(text('fd64::7', { ...refuse, bareAddress: true })).toBe('fd64::7/128');
    // Strictly two digits for an IPv4 prefix; the kernel's reading takes a leading zero.
    expect(parseCidr('10.0.0.0/008', refuse)).toBeNull();
    expect(text('10.0.0.0/008', { hostBits: 'mask', leadingZeros: true })).toBe('10.0.0.0/8');
  });

  it('reads IPv4 networks as numbers and gives ranges', () => {
    expect(parseIpv4Cidr('100.96.4.0/22')).toEqual({ base: 0x64600400, prefix: 22 });
    expect(parseIpv4Cidr('100.96.4.0')).toBeNull();
    expect(parseIpv4Cidr('100.96.4.7', { bareAddress: true })).toEqual({ base: 0x64600407, prefix: 32 });
    expect(parseIpv4Cidr('fd64::/96')).toBeNull();
    expect(cidrRange(parseCidr('100.96.4.9/22', { hostBits: 'keep' })!)).toEqual({ lo: 0x64600400n, hi: 0x646007ffn });
    expect(cidrRange(parseCidr('::/0', refuse)!)).toEqual({ lo: 0n, hi: (1n << 128n) - 1n });
  });
});

describe("clients' IPv6", () => {
  it('embeds an IPv4 address or pool in a /96', () => {
    expect(embedIpv4In6('fd64::/96', '100.96.4.7')).toBe('fd64::6460:407');
    expect(embedIpv4In6('fd64::/96', '0.0.0.0')).toBe('fd64::');
    expect(embedIpv4In6('2001:db8:0:1::/96', '100.127.255.254')).toBe('2001:db8:0:1::647f:fffe');
    expect(embedIpv4In6('fd64:1:2:3:4:5::/96', '0.0.0.1')).toBe('fd64:1:2:3:4:5:0:1');
    expect(embedCidr6('fd64::/96', '100.96.4.0/22')).toBe('fd64::6460:400/118');
  });

  it('says why a prefix or an address does not do', () => {
    expect(prefix6Problem('fd64::/96')).toBeNull();
    expect(prefix6Problem('fd64::/64')).toBe('client IPv6 prefix fd64::/64 is not an IPv6 /96');
    expect(prefix6Problem('100.64.0.0/10')).toBe('client IPv6 prefix 100.64.0.0/10 is not an IPv6 /96');
    expect(prefix6Problem('fd64::1/96')).toBe('client IPv6 prefix fd64::1/96 has host bits set');
    expect(() => embedIpv4In6('fd64::/96', '100.96.4.07')).toThrow('100.96.4.07 is not an IPv4 address');
    expect(() => embedIpv4In6('fd64::/96', 'fd64::1')).toThrow('fd64::1 is not an IPv4 address');
    expect(() => embedCidr6('fd64::/96', '100.96.4.0/33')).toThrow('100.96.4.0/33 is not an IPv4 CIDR');
  });

  it('is the same in the Edge Functions under Deno (their ipaddr.js from npm:) as on the relays under Node', () => {
    const cases = [
      ['fd64::/96', '100.96.4.7'],
      ['2001:db8:0:1::/96', '100.127.255.254'],
      ['fd00:0:0:0:0:0::/96', '100.96.0.0'],
      ['fd64:1:2:3:4:5::/96', '0.0.0.1'],
      ['fd64:0:0:ffff::/96', '255.255.0.0'],
    ];
    const endpoints = ['::ffff:192.0.2.1', '[::1]', '1::2:', '::ffff:192.0.2.256', 'fe80::1%eth0'];
    const script = [
      "import { embedIpv4In6 } from './_shared/addresses.ts';",
      "import { isIpv6 } from '../../src/contract/ip.ts';",
      `const cases = ${JSON.stringify(cases)};`,
      `console.log(JSON.stringify({ embedded: cases.map(([p, a]) => embedIpv4In6(p, a)), v6: ${JSON.stringify(endpoints)}.map(isIpv6) }));`,
    ].join('\n');
    const r = spawnSync(DENO_BIN, ['eval', '--quiet', script], {
      cwd: FUNCTIONS_DIR,
      env: { ...process.env, DENO_DIR, NO_COLOR: '1', DENO_NO_UPDATE_CHECK: '1' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const deno = JSON.parse(r.stdout);
    expect(deno.embedded).toEqual(cases.map(([p, a]) => embed6(p!, a!)));
    expect(deno.embedded).toEqual(['fd64::6460:407', '2001:db8:0:1::647f:fffe', 'fd00::6460:0', 'fd64:1:2:3:4:5:0:1', 'fd64::ffff:0:0:ffff:0']);
    expect(deno.v6).toEqual([true, false, false, false, false]);
  });
});
