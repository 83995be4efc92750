import { describe, expect, it } from 'vitest';
import { GATEWAY_KEEP_ALIVE_MS, startGateway } from '../../src/control-plane/gateway.ts';
import { rootLogger } from '../../src/lib/logger.ts';

describe('the control plane gateway', () => {
  it(`keeps idle connections ${GATEWAY_KEEP_ALIVE_MS / 1000} s and says so, so that a heartbeat every 10 s reuses a live one`, async () => {
    const gw = await startGateway({
      port: 0,
      jwtSecret: 'x'.repeat(32),
      route: () => undefined,
      known: () => false,
      logger: rootLogger({ test: 'gateway' }, 'silent'),
    });
    try {
      const r = await fetch(`${gw.url}/functions/v1/nothing`);
      expect(r.status).toBe(404);
      await r.arrayBuffer();
      expect(GATEWAY_KEEP_ALIVE_MS).toBeGreaterThan(10_000);
      expect(r.headers.get('keep-alive')).toBe(`timeout=${GATEWAY_KEEP_ALIVE_MS / 1000}`);
      expect(gw.server.keepAliveTimeout).toBe(GATEWAY_KEEP_ALIVE_MS);
    } finally {
      await gw.stop();
    }
  });
});
