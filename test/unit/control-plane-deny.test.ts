import { describe, expect, it } from 'vitest';
import { controlPlaneDenyCidrs, natsDenyCidrs } from '../../src/daemon/control-plane-deny.ts';

const table = (m: Record<string, string[]>) => async (host: string) => {
  const a = m[host];
  if (!a) throw new Error(`getaddrinfo ENOTFOUND ${host}`);
  return a;
};

describe('the control plane kept from clients', () => {
  it('takes an IPv4 address from the URL as it is', async () => {
    expect(await controlPlaneDenyCidrs('http://198.18.0.2:54321', table({}))).toEqual({ cidrs: ['198.18.0.2/32'], warning: null });
  });

  it('resolves a host name to every address of both families, once each, without loopback', async () => {
    const r = await controlPlaneDenyCidrs(
      'https://control-plane:54321/x',
      table({ 'control-plane': ['198.19.16.3', '198.19.16.3', '127.0.0.1', '198.19.17.9', '2001:db8::5', '::1'] }),
    );
    expect(r).toEqual({ cidrs: ['198.19.16.3/32', '198.19.17.9/32', '2001:db8::5/128'], warning: null });
  });

  it('takes an IPv6 address from the URL as it is', async () => {
    expect((await controlPlaneDenyCidrs('http://[2001:db8::2]:54321', table({}))).cidrs).toEqual(['2001:db8::2/128']);
  });

  it('keeps clients from every NATS server handed out, URL or host:port, and says which did not resolve', async () => {
    const r = await natsDenyCidrs(['nats://198.18.0.2:4222', 'nats:4222', 'nats://gone.invalid:4222'], table({ nats: ['198.19.16.4'] }));
    expect(r.cidrs).toEqual(['198.18.0.2/32', '198.19.16.4/32']);
    expect(r.warnings).toHaveLength(1);
    expect(r.warnings[0]).toMatch(/NATS server nats:\/\/gone\.invalid:4222 host gone\.invalid/);
  });

  it('leaves loopback and localhost out', async () => {
    expect((await controlPlaneDenyCidrs('http://127.0.0.1:54321', table({}))).cidrs).toEqual([]);
    expect((await controlPlaneDenyCidrs('http://localhost:54321', table({}))).cidrs).toEqual([]);
  });

  it('says why when the name does not resolve, and denies nothing it cannot name', async () => {
    const r = await controlPlaneDenyCidrs('http://nowhere.invalid:54321', table({}));
    expect(r.cidrs).toEqual([]);
    expect(r.warning).toMatch(/cannot resolve the control plane's host nowhere\.invalid.*ENOTFOUND/);
  });

  it('ignores a URL it cannot parse (the configuration check reports it)', async () => {
    expect(await controlPlaneDenyCidrs('not a url', table({}))).toEqual({ cidrs: [], warning: null });
  });
});
