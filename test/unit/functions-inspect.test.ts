import { describe, expect, it } from 'vitest';
import { inspectTargets, parseFunctionWorkers } from '../../src/control-plane/functions.ts';

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

describe('--function-workers', () => {
  const names = ['heartbeat', 'register-server', 'switch-exit'];
  it('gives every function N, or the functions named theirs', () => {
    expect(parseFunctionWorkers('2', names)).toEqual({ heartbeat: 2, 'register-server': 2, 'switch-exit': 2 });
    expect(parseFunctionWorkers('register-server=3, heartbeat=2', names)).toEqual({ 'register-server': 3, heartbeat: 2 });
    expect(parseFunctionWorkers('heartbeat=8', names)).toEqual({ heartbeat: 8 });
  });
  it('refuses unknown functions, repeated ones, and counts outside 1 to 8, saying which', () => {
    expect(() => parseFunctionWorkers('0', names)).toThrow(/"0" is not a count of workers from 1 to 8/);
    expect(() => parseFunctionWorkers('9', names)).toThrow(/from 1 to 8/);
    expect(() => parseFunctionWorkers('heartbeat=1.5', names)).toThrow(/--function-workers heartbeat: "1.5"/);
    expect(() => parseFunctionWorkers('hearbeat=2', names)).toThrow(/there is no function hearbeat \(functions: heartbeat, register-server, switch-exit\)/);
    expect(() => parseFunctionWorkers('heartbeat=2,heartbeat=3', names)).toThrow(/heartbeat is given twice/);
    expect(() => parseFunctionWorkers('heartbeat', names)).toThrow(/"heartbeat" is not name=N/);
    expect(() => parseFunctionWorkers('', names)).toThrow(/"" is not name=N/);
  });
});
