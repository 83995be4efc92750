import { describe, expect, it } from 'vitest';
import { HttpError, MAX_BODY_BYTES, parseJsonObject, parseRequest, readBodyBytes } from '../../supabase/functions/_shared/http.ts';
import { isIpv6 } from '../../src/contract/ip.ts';
import { RegisterRequestSchema, RelayIdRequestSchema } from '../../src/contract/api-relays.ts';
import { endpointField, wgKeyField } from '../../src/contract/request.ts';
import { EndpointSchema, WgKeySchema } from '../../src/contract/topology.events.ts';

// The functions' parsing of their requests: the contract's schemas, refusals as 400 invalid_request.
const parseRegisterRequest = (b: Record<string, unknown>) => parseRequest(RegisterRequestSchema, b);
const parseRelayIdRequest = (b: Record<string, unknown>) => parseRequest(RelayIdRequestSchema, b);

const key = (n: number, len = 32) => Buffer.alloc(len, n).toString('base64');
const good = { relayId: 'relay-a', name: 'Relay A', region: 'eu-west', publicKey: key(1), endpoint: '198.51.100.1:51820' };

function fieldOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    if (e instanceof HttpError) {
      expect(e.status).toBe(400);
      expect(e.code).toBe('invalid_request');
      return e.field;
    }
    throw e;
  }
  return undefined;
}

describe('register-server request validation', () => {
  it('accepts the contract example, rotateKey and exitIpv6 defaulting to false', () => {
    expect(parseRegisterRequest(good)).toEqual({ ...good, rotateKey: false, exitIpv6: false });
    expect(parseRegisterRequest({ ...good, rotateKey: true }).rotateKey).toBe(true);
    expect(parseRegisterRequest({ ...good, exitIpv6: true }).exitIpv6).toBe(true);
    expect(() => parseRegisterRequest({ ...good, exitIpv6: 'yes' })).toThrow(/exitIpv6 must be true or false/);
  });

  it.each([
    ['relayId', { relayId: 'Relay-A' }],
    ['relayId', { relayId: '-relay' }],
    ['relayId', { relayId: 'a'.repeat(64) }],
    ['relayId', { relayId: 7 }],
    ['relayId', { relayId: undefined }],
    ['name', { name: '' }],
    ['name', { name: 'x'.repeat(129) }],
    ['name', { name: 'bell\u0007' }],
    ['region', { region: 'EU' }],
    ['region', { region: 'r'.repeat(65) }],
    ['publicKey', { publicKey: 'not base64' }],
    ['publicKey', { publicKey: key(1, 31) }],
    ['publicKey', { publicKey: key(1, 33) }],
    ['publicKey', { publicKey: key(1).slice(0, -1) }],
    ['publicKey', { publicKey: 'AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQF=' }],
    ['endpoint', { endpoint: '198.51.100.1' }],
    ['endpoint', { endpoint: '198.51.100.1:0' }],
    ['endpoint', { endpoint: '198.51.100.1:65536' }],
    ['endpoint', { endpoint: '198.51.100.1:051820' }],
    ['endpoint', { endpoint: '198.51.100.256:51820' }],
    ['endpoint', { endpoint: '2001:db8::1:51820' }],
    ['endpoint', { endpoint: '[2001:db8::g]:51820' }],
    ['endpoint', { endpoint: 'under_score.example:1' }],
    ['endpoint', { endpoint: `${'a'.repeat(260)}:1` }],
    ['rotateKey', { rotateKey: 'true' }],
    ['rotateKey', { rotateKey: null }],
    ['surprise', { surprise: 1 }],
  ])('names %s for %j', (field, over) => {
    expect(fieldOf(() => parseRegisterRequest({ ...good, ...over }))).toBe(field);
  });

  it('names a missing field', () => {
    const { endpoint: _e, ...rest } = good;
    expect(fieldOf(() => parseRegisterRequest(rest))).toBe('endpoint');
  });

  it('accepts IPv4, bracketed IPv6 and DNS endpoints the relays accept too', () => {
    for (const ep of ['198.51.100.1:1', '[2001:db8::1]:51820', '[::ffff:192.0.2.1]:443', '[::]:9', 'relay-a.example.net:51820', 'localhost:65535']) {
      expect(endpointField().parse(ep)).toBe(ep);
      expect(EndpointSchema.safeParse(ep).success).toBe(true);
    }
  });

  it('accepts exactly the keys the relays accept', () => {
    for (let n = 0; n < 256; n += 17) {
      const k = key(n);
      expect(wgKeyField().parse(k)).toBe(k);
      expect(WgKeySchema.safeParse(k).success).toBe(true);
    }
  });

  it('tells IPv6 addresses from the rest', () => {
    for (const a of ['::', '::1', '2001:db8::', '1:2:3:4:5:6:7:8', '1::8', '::ffff:192.0.2.1', 'fe80::1:2:3:4:5:6']) expect([a, isIpv6(a)]).toEqual([a, true]);
    for (const a of ['', '1', ':1', '1::2::3', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', '12345::', '::ffff:192.0.2.256', '1::2:', 'g::1'])
      expect([a, isIpv6(a)]).toEqual([a, false]);
  });
});

describe('heartbeat and deregister request validation', () => {
  it('takes exactly a relay id', () => {
    expect(parseRelayIdRequest({ relayId: 'relay-a' })).toEqual({ relayId: 'relay-a' });
    expect(fieldOf(() => parseRelayIdRequest({}))).toBe('relayId');
    expect(fieldOf(() => parseRelayIdRequest({ relayId: 'Relay A' }))).toBe('relayId');
    expect(fieldOf(() => parseRelayIdRequest({ relayId: 'relay-a', name: 'x' }))).toBe('name');
  });
});

describe('request bodies', () => {
  const req = (body: string | null, headers: Record<string, string> = {}) => new Request('http://x/f', { method: 'POST', body, headers });

  it('parses a JSON object and names the body for anything else', async () => {
    expect(parseJsonObject(await readBodyBytes(req('{"a":1}')))).toEqual({ a: 1 });
    for (const text of ['', '{', '[]', 'null', '"x"', '1']) expect(fieldOf(() => parseJsonObject(new TextEncoder().encode(text)))).toBe('body');
    expect(fieldOf(() => parseJsonObject(new Uint8Array([0x7b, 0xff, 0x7d])))).toBe('body');
  });

  it('refuses more than 16 KiB, declared or streamed, without reading it all', async () => {
    const big = 'x'.repeat(MAX_BODY_BYTES + 1);
    await expect(readBodyBytes(req(big))).rejects.toMatchObject({ status: 400, field: 'body' });
    await expect(readBodyBytes(req('{}', { 'content-length': String(10 * MAX_BODY_BYTES) }))).rejects.toMatchObject({ field: 'body' });
    let pulled = 0;
    const endless = new ReadableStream<Uint8Array>({
      pull(c) {
        pulled++;
        c.enqueue(new Uint8Array(4096));
      },
    });
    const r = new Request('http://x/f', { method: 'POST', body: endless, duplex: 'half' } as RequestInit);
    await expect(readBodyBytes(r)).rejects.toMatchObject({ field: 'body' });
    expect(pulled).toBeLessThan(10);
    expect((await readBodyBytes(req('x'.repeat(MAX_BODY_BYTES)))).length).toBe(MAX_BODY_BYTES);
  });
});
