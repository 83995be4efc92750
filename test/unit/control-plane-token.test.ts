import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseTtl } from '../../src/cli/commands/token.ts';
import { verifyJwt } from '../../src/control-plane/jwt.ts';
import { loadOrCreateSecrets } from '../../src/control-plane/secrets.ts';
import { tempDir } from '../support/temp.ts';
import { cli } from '../support/cli.ts';

describe('relay-core token mint', () => {
  let tmp: ReturnType<typeof tempDir>;
  let stateDir: string;
  let secret: string;
  const envSecret = process.env.RELAYNET_JWT_SECRET;
  beforeAll(() => {
    tmp = tempDir('token');
    stateDir = join(tmp.dir, 'cp');
    secret = loadOrCreateSecrets(stateDir).jwtSecret;
  });
  afterEach(() => {
    if (envSecret === undefined) delete process.env.RELAYNET_JWT_SECRET;
    else process.env.RELAYNET_JWT_SECRET = envSecret;
  });
  afterAll(() => tmp?.remove());

  it('mints a relay token from a state directory', async () => {
    const r = await cli('token', 'mint', '--relay-id', 'relay-a', '--ttl', '2h', '--state-dir', stateDir);
    expect(r.code).toBe(0);
    const check = await verifyJwt(r.out.trim(), secret);
    if (!check.ok) throw new Error(check.reason);
    expect(check.claims).toMatchObject({ role: 'relay', relay_id: 'relay-a', iss: 'relay-core' });
    expect((check.claims.exp as number) - (check.claims.iat as number)).toBe(7200);
  });

  it('reads the secret from a file or the environment', async () => {
    const file = join(tmp.dir, 'jwt-secret');
    writeFileSync(file, 'file-secret-file-secret-file-secret-1234\n');
    const f = await cli('token', 'mint', '--relay-id', 'relay-b', '--jwt-secret-file', file);
    expect((await verifyJwt(f.out.trim(), 'file-secret-file-secret-file-secret-1234')).ok).toBe(true);
    process.env.RELAYNET_JWT_SECRET = 'env-secret-env-secret-env-secret-12345678';
    const e = await cli('token', 'mint', '--relay-id', 'relay-b');
    expect((await verifyJwt(e.out.trim(), 'env-secret-env-secret-env-secret-12345678')).ok).toBe(true);
    expect(await verifyJwt(e.out.trim(), 'env-secret-env-secret-env-secret-12345678')).toMatchObject({ ok: true, claims: { relay_id: 'relay-b' } });
  });

  it.each([
    [['token', 'mint', '--relay-id', 'Relay_A'], 2, /not a relay id/],
    [['token', 'mint'], 2, /missing --relay-id/],
    [['token', 'mint', '--relay-id', 'a', '--ttl', '30 days'], 2, /--ttl must be/],
    [['token', 'mint', '--relay-id', 'a', '--ttl', '0s'], 2, /between 1s and 3650d/],
    [['token', 'mint', '--relay-id', 'a', '--ttl', '3651d'], 2, /between 1s and 3650d/],
    [['token', 'burn', '--relay-id', 'a'], 2, /unknown subcommand "burn"/],
    [['token', '--relay-id', 'a'], 2, /missing subcommand/],
    [['token', 'mint', '--relay-id', 'a', '--bogus'], 2, /Unknown option/],
  ])('%j exits %i with a clear message', async (argv, code, re) => {
    const r = await cli(...(argv as string[]));
    expect(r.code).toBe(code);
    expect(r.err).toMatch(re);
    expect(r.out).toBe('');
  });

  it('exits 1 when there is no secret to sign with', async () => {
    delete process.env.RELAYNET_JWT_SECRET;
    const r = await cli('token', 'mint', '--relay-id', 'a', '--state-dir', join(tmp.dir, 'nowhere'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/cannot read the JWT secret/);
    const both = await cli('token', 'mint', '--relay-id', 'a', '--state-dir', stateDir, '--jwt-secret-file', 'x');
    expect(both.code).toBe(2);
    mkdirSync(join(tmp.dir, 'weak'));
    writeFileSync(join(tmp.dir, 'weak', 'secrets.json'), JSON.stringify({ jwtSecret: 'short' }));
    const weak = await cli('token', 'mint', '--relay-id', 'a', '--state-dir', join(tmp.dir, 'weak'));
    expect(weak.code).toBe(1);
    expect(weak.err).toMatch(/shorter than 32/);
  });

  it('parses lifetimes', () => {
    expect(parseTtl('90s')).toBe(90);
    expect(parseTtl('15m')).toBe(900);
    expect(parseTtl('12h')).toBe(43200);
    expect(parseTtl('30d')).toBe(2592000);
  });

  it('prints complete help', async () => {
    const r = await cli('token', 'mint', '--help');
    expect(r.code).toBe(0);
    expect(r.out).toContain('--relay-id');
    expect(r.out).toContain('--jwt-secret-file');
    expect(r.out).toContain('RELAYNET_JWT_SECRET');
  });
});
