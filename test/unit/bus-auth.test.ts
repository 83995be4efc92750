import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decode, parseCreds } from '@nats-io/jwt';
import { afterAll, describe, expect, it } from 'vitest';
import {
  type BusRole,
  createBusAuthority,
  createUserKey,
  credsText,
  inboxPrefixFor,
  isUserPublicKey,
  issuerFor,
  mintUserJwt,
  natsServerAuthConfig,
  permissionsFor,
  publicKeyOfSeed,
} from '../../src/contract/bus-auth.ts';
import { loadOrCreateBusAuthority } from '../../src/control-plane/bus-authority.ts';
import { credentialMoveDelay, relayBusIdentity, renewalDue } from '../../src/daemon/bus-credential.ts';
import { revocationsOf } from '../../src/control-plane/bus-revocations.ts';

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'bus-auth-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** NATS subject matching: `*` one token, `>` one or more trailing tokens. */
function matches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length || (p[i] !== '*' && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}
const mayPublish = (role: BusRole, subject: string) => (permissionsFor(role).pub?.allow ?? []).some((p) => matches(p, subject));
const maySubscribe = (role: BusRole, subject: string) => (permissionsFor(role).sub?.allow ?? []).some((p) => matches(p, subject));

describe('bus permissions (pure)', () => {
  const r1: BusRole = { kind: 'relay', relayId: 'relay-1' };
  it('a relay publishes its own events and runs its own topology consumer, nothing else', () => {
    expect(mayPublish(r1, 'relaynet.relay.relay-1.kernel.kernel-reconciled')).toBe(true);
    expect(mayPublish(r1, 'relaynet.relay.relay-2.kernel.kernel-reconciled')).toBe(false);
    expect(mayPublish(r1, 'relaynet.relay.relay-10.kernel.kernel-reconciled')).toBe(false);
    expect(mayPublish(r1, 'relaynet.topology.relay-1.relay-admitted')).toBe(false);
    expect(mayPublish(r1, '$JS.API.CONSUMER.CREATE.RELAYNET_TOPOLOGY.topology-relay-1.relaynet.topology.>')).toBe(true);
    expect(mayPublish(r1, '$JS.API.CONSUMER.MSG.NEXT.RELAYNET_TOPOLOGY.topology-relay-1')).toBe(true);
    expect(mayPublish(r1, '$JS.ACK.RELAYNET_TOPOLOGY.topology-relay-1.1.2.3.4.5')).toBe(true);
    for (const s of [
      '$JS.API.CONSUMER.DELETE.RELAYNET_TOPOLOGY.topology-relay-2',
      '$JS.API.CONSUMER.INFO.RELAYNET_TOPOLOGY.topology-relay-2',
      '$JS.API.CONSUMER.MSG.NEXT.RELAYNET_TOPOLOGY.topology-relay-2',
      '$JS.API.CONSUMER.CREATE.RELAYNET_RELAY.topology-relay-1',
      '$JS.API.STREAM.DELETE.RELAYNET_TOPOLOGY',
      '$JS.API.STREAM.PURGE.RELAYNET_RELAY',
      '$JS.API.STREAM.UPDATE.RELAYNET_RELAY',
      '$JS.API.STREAM.CREATE.X',
      '$JS.ACK.RELAYNET_TOPOLOGY.topology-relay-2.1.2.3.4.5',
      '$SYS.REQ.CLAIMS.UPDATE',
    ]) {
      expect(mayPublish(r1, s), s).toBe(false);
    }
    expect(maySubscribe(r1, '_INBOX_relay_relay-1.abc')).toBe(true);
    expect(maySubscribe(r1, '_INBOX_relay_relay-2.abc')).toBe(false);
    expect(maySubscribe(r1, 'relaynet.relay.relay-2.kernel.x')).toBe(false);
    expect(maySubscribe(r1, '_INBOX.abc')).toBe(false);
  });

  it('the publisher publishes topology only; the reader reads; only the administrator administers streams', () => {
    expect(mayPublish({ kind: 'publisher' }, 'relaynet.topology.relay-1.relay-admitted')).toBe(true);
    expect(mayPublish({ kind: 'publisher' }, 'relaynet.relay.relay-1.kernel.x')).toBe(false);
    expect(mayPublish({ kind: 'publisher' }, '$JS.API.STREAM.DELETE.RELAYNET_TOPOLOGY')).toBe(false);
    expect(mayPublish({ kind: 'reader' }, '$JS.API.CONSUMER.CREATE.RELAYNET_RELAY.abc.relaynet.relay.>')).toBe(true);
    expect(mayPublish({ kind: 'reader' }, 'relaynet.topology.relay-1.relay-admitted')).toBe(false);
    expect(mayPublish({ kind: 'reader' }, '$JS.API.STREAM.PURGE.RELAYNET_RELAY')).toBe(false);
    expect(mayPublish({ kind: 'admin' }, '$JS.API.STREAM.UPDATE.RELAYNET_RELAY')).toBe(true);
    expect(mayPublish({ kind: 'admin' }, 'relaynet.topology.relay-1.relay-admitted')).toBe(false);
    expect(inboxPrefixFor({ kind: 'reader' })).toBe('_INBOX_reader');
  });

  it('refuses a relay id that would widen its subjects', () => {
    for (const id of ['relay.1', 'relay-*', '>', '', 'a b']) expect(() => permissionsFor({ kind: 'relay', relayId: id }), id).toThrow(/subject token/);
  });
});

describe('user JWTs', () => {
  const a = createBusAuthority();
  const user = createUserKey();
  const role: BusRole = { kind: 'relay', relayId: 'relay-1' };

  it('bind the user nkey, name the account, are signed by its signing key, expire, and allow no bearer use', async () => {
    const jwt = await mintUserJwt(issuerFor(a, role), role, user.publicKey, { nowSeconds: 1_000_000, ttlSeconds: 600 });
    const c = decode<Record<string, unknown>>(jwt);
    expect(c.sub).toBe(user.publicKey);
    expect(c.iss).toBe(publicKeyOfSeed(a.accountSigningSeed));
    expect(c.nats.issuer_account).toBe(publicKeyOfSeed(a.accountSeed));
    expect(c.exp).toBe(1_000_600);
    expect(c.nats.bearer_token).toBe(false);
    expect(c.nats.pub).toEqual(permissionsFor(role).pub);
    expect(c.name).toBe('relay-core relay relay-1');
  });

  it('operator credentials may have no expiry; the system user is issued by the system account itself', async () => {
    const jwt = await mintUserJwt(issuerFor(a, { kind: 'system' }), { kind: 'system' }, user.publicKey, { nowSeconds: 1, ttlSeconds: 0 });
    const c = decode<Record<string, unknown>>(jwt);
    expect(c.exp).toBeUndefined();
    expect(c.iss).toBe(publicKeyOfSeed(a.systemAccountSeed));
    expect(c.nats.issuer_account).toBeUndefined();
  });

  it('refuse a key that is not a user public key; a creds file carries the JWT and the seed', async () => {
    await expect(mintUserJwt(issuerFor(a, role), role, publicKeyOfSeed(a.accountSeed), { nowSeconds: 1, ttlSeconds: 60 })).rejects.toThrow(/user public key/);
    expect(isUserPublicKey(user.publicKey)).toBe(true);
    expect(isUserPublicKey(`${user.publicKey.slice(0, -1)}${user.publicKey.endsWith('A') ? 'B' : 'A'}`)).toBe(false);
    const jwt = await mintUserJwt(issuerFor(a, role), role, user.publicKey, { nowSeconds: 1, ttlSeconds: 60 });
    const parsed = await parseCreds(new TextEncoder().encode(credsText(jwt, user.seed)));
    expect(parsed.jwt).toBe(jwt);
    expect(parsed.key).toBe(user.seed);
  });

  it("nats-server's configuration names the operator, the system account and preloads both accounts", async () => {
    const conf = await natsServerAuthConfig(a);
    expect(conf).toMatch(/^operator: eyJ/m);
    expect(conf).toContain(`system_account: ${publicKeyOfSeed(a.systemAccountSeed)}`);
    expect(conf).toContain(`${publicKeyOfSeed(a.accountSeed)}: eyJ`);
    for (const seed of Object.values(a)) expect(conf).not.toContain(seed);
  });
});

describe("the control plane's authority on disk", () => {
  it('is made once (0600), reused, and writes 0600 operator credentials', async () => {
    const dir = tmp();
    const first = await loadOrCreateBusAuthority(dir);
    expect(statSync(join(first.dir, 'authority.json')).mode & 0o777).toBe(0o600);
    for (const f of Object.values(first.creds)) expect(statSync(f).mode & 0o777).toBe(0o600);
    expect(readFileSync(first.authConf, 'utf8')).not.toContain(first.authority.accountSigningSeed);
    const again = await loadOrCreateBusAuthority(dir);
    expect(again.authority).toEqual(first.authority);
  });

  it('refuses an authority others can read, or one with a broken seed', async () => {
    const dir = tmp();
    const b = await loadOrCreateBusAuthority(dir);
    const file = join(b.dir, 'authority.json');
    chmodSync(file, 0o644);
    await expect(loadOrCreateBusAuthority(dir)).rejects.toThrow(/readable by others/);
    writeFileSync(file, JSON.stringify({ ...b.authority, accountSigningSeed: 'SAnope' }), { mode: 0o600 });
    chmodSync(file, 0o600);
    await expect(loadOrCreateBusAuthority(dir)).rejects.toThrow(/accountSigningSeed must be an nkey seed/);
  });
});

describe("a relay's NATS identity", () => {
  it('renews past half the lifetime', () => {
    const c = { expiresAt: new Date(10_000).toISOString() };
    expect(renewalDue(c, 0, 4_999)).toBe(false);
    expect(renewalDue(c, 0, 5_000)).toBe(true);
    expect(renewalDue({ expiresAt: 'garbage' }, 0, 1)).toBe(true);
  });

  it('moves its connection onto a renewed credential within the first half of what the old one has left', () => {
    const old = new Date(100_000).toISOString();
    expect(credentialMoveDelay(old, 40_000, 0)).toBe(0);
    expect(credentialMoveDelay(old, 40_000, 0.5)).toBe(15_000);
    expect(credentialMoveDelay(old, 40_000, 0.999_999)).toBeLessThan(30_000);
    expect(credentialMoveDelay(old, 40_000, 7)).toBe(30_000); // a random out of range is clamped, never past the half
    expect(credentialMoveDelay(old, 100_000, 0.5)).toBeNull(); // expired: the server closes it, the reconnect reads the newest
    expect(credentialMoveDelay('garbage', 0, 0.5)).toBeNull();
  });

  it('tells who listens the credential an update replaced, and only a replaced one', () => {
    const id = relayBusIdentity(tmp());
    const replaced: string[] = [];
    id.onReplaced((p) => replaced.push(p.jwt));
    const at = new Date(Date.now() + 60_000).toISOString();
    id.update({ jwt: 'eyJ.a.a', expiresAt: at }, Date.now()); // the first: nothing replaced
    id.update({ jwt: 'eyJ.a.a', expiresAt: at }, Date.now()); // the same again (a re-registration): nothing to move onto
    id.update({ jwt: 'eyJ.b.b', expiresAt: at }, Date.now());
    expect(replaced).toEqual(['eyJ.a.a']);
  });

  it('makes its nkey once (0600), keeps it, and writes its credentials 0600', () => {
    const dir = tmp();
    const id = relayBusIdentity(dir);
    expect(statSync(join(dir, 'nats.nk')).mode & 0o777).toBe(0o600);
    expect(relayBusIdentity(dir).busKey).toBe(id.busKey);
    expect(id.renewalDue(0)).toBe(false);
    id.update({ jwt: 'eyJ.x.y', expiresAt: new Date(Date.now() + 60_000).toISOString() }, Date.now());
    expect(statSync(join(dir, 'nats.creds')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(dir, 'nats.creds'), 'utf8')).toContain('eyJ.x.y');
    const auth = id.auth('relay-1');
    expect(auth).toMatchObject({ kind: 'creds', inboxPrefix: '_INBOX_relay_relay-1' });
    chmodSync(join(dir, 'nats.nk'), 0o644);
    expect(() => relayBusIdentity(dir)).toThrow(/readable by others/);
  });
});

describe('revocations of banned relays', () => {
  it("revoke every JWT of a banned relay's nkey issued up to the second of its ban", () => {
    const busKey = createUserKey().publicKey;
    expect(revocationsOf([{ bus_key: busKey, banned_at: new Date(1_700_000_000_500) }])).toEqual({ [busKey]: 1_700_000_001 });
    expect(revocationsOf([])).toEqual({});
  });
});
