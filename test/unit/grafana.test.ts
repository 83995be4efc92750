import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { controlPlaneMetrics } from '../../src/control-plane/metrics.ts';
import { relayMetrics } from '../../src/daemon/relay-metrics.ts';

/** docs/grafana/relay-core.json against the metrics the relays and the control plane export. */

interface Panel {
  type: string;
  title: string;
  targets?: { expr: string }[];
}

const dashboard = JSON.parse(readFileSync(resolve(import.meta.dirname, '../../docs/grafana/relay-core.json'), 'utf8')) as {
  uid: string;
  panels: Panel[];
  templating: { list: { name: string }[] };
};

async function exported(): Promise<Map<string, string>> {
  const names = new Map<string, string>();
  for (const r of [relayMetrics('x').registry, controlPlaneMetrics(['heartbeat']).registry])
    for (const m of await r.getMetricsAsJSON()) names.set(m.name, String(m.type));
  return names;
}

describe('the Grafana dashboard', () => {
  it('queries only metrics that exist (histograms by their buckets), and shows every relay-core metric somewhere', async () => {
    const names = await exported();
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    expect(exprs.length).toBeGreaterThan(20);
    const used = new Set<string>();
    for (const e of exprs) {
      for (const [m] of e.matchAll(/relaycore_[a-z0-9_]+/g)) {
        const base = m.replace(/_(bucket|sum|count)$/, '');
        const known = names.has(m) || (names.get(base) === 'histogram' && m !== base);
        expect(known, `${m} in ${e}`).toBe(true);
        if (names.get(base) === 'histogram') expect(m, `histogram ${base} is queried by its _bucket, _sum or _count`).not.toBe(base);
        used.add(base);
      }
      // Every query of a relay metric is filtered by the $relay variable, or is a control-plane one.
      if (/relaycore_(?!cp_|publisher_|topology_head)/.test(e)) expect(e, e).toContain('relay=~"$relay"');
    }
    const ours = [...names.keys()].filter((n) => n.startsWith('relaycore_'));
    expect(ours.filter((n) => !used.has(n))).toEqual([]);
  });

  it('has a data source and a relay variable, unique panel ids, and every panel a title', () => {
    expect(dashboard.templating.list.map((v) => v.name)).toEqual(['datasource', 'relay']);
    const ids = dashboard.panels.map((p) => (p as unknown as { id: number }).id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(dashboard.panels.every((p) => p.title.length > 0)).toBe(true);
  });
});
