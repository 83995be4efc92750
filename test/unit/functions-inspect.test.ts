import { describe, expect, it } from 'vitest';
import { inspectTargets } from '../../src/control-plane/functions.ts';

describe('RELAYNET_FUNCTIONS_INSPECT', () => {
  it('names functions to run under Deno’s inspector on a loopback port, and nothing else', () => {
    expect(inspectTargets(undefined)).toEqual(new Map());
    expect(inspectTargets('')).toEqual(new Map());
    expect(inspectTargets('register-server=127.0.0.1:9231,heartbeat=127.0.0.1:9232')).toEqual(
      new Map([
        ['register-server', '127.0.0.1:9231'],
        ['heartbeat', '127.0.0.1:9232'],
      ]),
    );
    // Never an inspector open beyond loopback, and no flag smuggled into deno's arguments.
    expect(() => inspectTargets('register-server=0.0.0.0:9231')).toThrow(/not fn=127\.0\.0\.1:port/);
    expect(() => inspectTargets('register-server=127.0.0.1:9231 --allow-all')).toThrow(/not fn=127\.0\.0\.1:port/);
    expect(() => inspectTargets('register-server')).toThrow(/not fn=127\.0\.0\.1:port/);
  });
});
