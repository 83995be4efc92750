import { describe, expect, it } from 'vitest';
import {
  allocateRelayIndex,
  chooseWgPrefix,
  inetNamespace,
  isSimNamespace,
  isSimWgSocket,
  newSimId,
  prefixesInUse,
  relayNamespace,
  relayMovedAddress,
  relayPublicAddress,
  RELAYS_CIDRS,
  svcNamespace,
  vethName,
} from '../../src/sim/layout.ts';

/** A deterministic stand-in for crypto.randomInt: returns the scripted values in turn, then 0. */
const scripted =
  (...values: number[]) =>
  (n: number) =>
    Math.min(values.shift() ?? 0, n - 1);

describe('sim layout', () => {
  it('sim ids are 4 characters of a-z0-9', () => {
    for (let i = 0; i < 50; i++) expect(newSimId()).toMatch(/^[a-z0-9]{4}$/);
    expect(newSimId(scripted(0, 25, 26, 35))).toBe('az09');
  });

  it('names carry the sim id, and interface names stay within 15 characters', () => {
    expect([inetNamespace('ab12'), svcNamespace('ab12'), relayNamespace('ab12', 7)]).toEqual(['rcs-ab12-inet', 'rcs-ab12-svc', 'rcs-ab12-r7']);
    expect(vethName('ab12', 'svc')).toBe('vab12s');
    expect(vethName('ab12', 250)).toBe('vab12r250');
    expect(vethName('ab12', 250).length).toBeLessThanOrEqual(15);
    expect(isSimNamespace('ab12', 'rcs-ab12-r3')).toBe(true);
    expect(isSimNamespace('ab12', 'rcs-ab123-r3')).toBe(false);
    expect(isSimNamespace('ab12', 'other')).toBe(false);
  });

  it('relay i gets 198.18.1.i, only for i in 1..250 (the benchmarking range, never RFC 1918)', () => {
    expect(relayPublicAddress(1)).toBe('198.18.1.1');
    expect(relayPublicAddress(250)).toBe('198.18.1.250');
    expect(() => relayPublicAddress(0)).toThrow(/outside/);
    expect(() => relayPublicAddress(251)).toThrow(/outside/);
  });

  it("a moved relay i gets 198.18.3.i, in the relays' ranges clients reach directly", () => {
    expect(relayMovedAddress(3)).toBe('198.18.3.3');
    expect(relayMovedAddress(250)).toBe('198.18.3.250');
    expect(() => relayMovedAddress(251)).toThrow(/outside/);
    expect(RELAYS_CIDRS).toEqual(['198.18.1.0/24', '198.18.3.0/24']);
  });

  it('relay-<n> gets index n when free, anything else the lowest free index', () => {
    expect(allocateRelayIndex('relay-7', new Set([1, 2]))).toBe(7);
    expect(allocateRelayIndex('relay-2', new Set([1, 2]))).toBe(3);
    expect(allocateRelayIndex('edge-a', new Set([1, 3]))).toBe(2);
    expect(allocateRelayIndex('relay-0', new Set())).toBe(1);
    expect(allocateRelayIndex('relay-251', new Set())).toBe(1);
    expect(allocateRelayIndex('x', new Set(Array.from({ length: 250 }, (_, i) => i + 1)))).toBeNull();
  });

  it('WireGuard prefixes in use are the leading letters of device and socket names', () => {
    expect([...prefixesInUse(['rc1m2', 'abc3m1.sock', 'eth0', 'lo', '123', 'Xy'])].sort()).toEqual(['abc', 'eth', 'lo', 'rc']);
  });

  it('the chosen prefix is 3 letters and not one in use', () => {
    // The first candidate (aaa) is taken, the second (aab) is free.
    expect(chooseWgPrefix(new Set(['aaa']), scripted(0, 0, 0, 0, 0, 1))).toBe('aab');
    for (let i = 0; i < 50; i++) expect(chooseWgPrefix(new Set())).toMatch(/^[a-z]{3}$/);
    expect(() => chooseWgPrefix(new Set(['aaa']), () => 0)).toThrow(/no free/);
  });

  it("a sim's WireGuard sockets are exactly its prefix's link devices", () => {
    expect(isSimWgSocket('abc', 'abc1m2.sock')).toBe(true);
    expect(isSimWgSocket('abc', 'abc12m250.sock')).toBe(true);
    expect(isSimWgSocket('abc', 'abcd1m2.sock')).toBe(false);
    expect(isSimWgSocket('abc', 'ab1m2.sock')).toBe(false);
    expect(isSimWgSocket('abc', 'abc1m2')).toBe(false);
    expect(isSimWgSocket('abc', 'abc1x2.sock')).toBe(false);
  });
});
