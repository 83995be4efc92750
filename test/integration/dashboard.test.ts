import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import { freePort } from '../../src/lib/ports.ts';
import { linkNames, netnsPids, processName, signal } from '../../src/sim/netns.ts';
import { simSuite } from '../support/sim-harness.ts';

/**
 * `relay-core dashboard --sim` in a real headless browser (Debian's chromium, driven by playwright-core):
 * the page shows every relay and every link, filters its event feed, links a kernel round to its
 * replay, and shows a killed relay's links turn stale and then down within the sim's configured times.
 * A screenshot is kept in artifacts/dashboard.png.
 */

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = resolve(import.meta.dirname, '../../artifacts');

describe('the operator dashboard in a headless browser', () => {
  const h = simSuite('dashboard');
  let dashboard: ResultPromise | null = null;
  let browser: Browser | null = null;
  let page: Page;
  let url = '';
  const cell = (from: string, to: string) => page.locator(`#matrix td[data-from="${from}"][data-to="${to}"]`);

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`no chromium at ${CHROMIUM}: scripts/setup.sh installs Debian's chromium (or set CHROMIUM)`);
    const port = await freePort();
    dashboard = execa(RELAY_CORE_BIN, ['dashboard', '--sim', h.manifest().stateDir, '--listen', `127.0.0.1:${port}`], {
      reject: false,
      buffer: true,
      all: true,
    });
    url = `http://127.0.0.1:${port}/`;
    await eventually(
      'the dashboard to answer',
      async () => {
        const r = await fetch(`${url}state`).catch(() => null);
        return r?.ok ? true : null;
      },
      30_000,
      250,
    );
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    await page.goto(url);
    await page.waitForSelector('#conn[data-live="true"]', { timeout: 15_000 });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    dashboard?.kill('SIGTERM');
    const r = await dashboard;
    // Ctrl-C (or SIGTERM) stops it cleanly.
    expect(r?.exitCode, String(r?.all ?? '')).toBe(0);
  }, 30_000);

  it('shows every relay, serving, and every link up', async () => {
    const ids = h.manifest().relays.map((r) => r.id);
    await page.waitForFunction(`document.querySelectorAll('#relays tbody tr[data-state="serving"]').length === ${ids.length}`, undefined, { timeout: 30_000 });
    for (const from of ids)
      for (const to of ids) {
        if (from === to) continue;
        await expect.poll(() => cell(from, to).getAttribute('data-state'), { timeout: 30_000 }).toBe('up');
      }
    expect(await page.locator('#relay-count').textContent()).toBe(String(ids.length));
    expect(Number(await page.locator('#revision').textContent())).toBe((await h.status('relay-1')).revision);
  });

  it('filters the event feed by type and relay', async () => {
    await page.fill('#filter-type', 'Link*');
    await page.fill('#filter-relay', 'relay-2');
    const items = page.locator('#feed li');
    expect(await items.count()).toBeGreaterThan(0);
    const seen = await items.evaluateAll((lis) => lis.map((li) => [li.getAttribute('data-type'), li.getAttribute('data-relay')]));
    expect(new Set(seen.map(([t, r]) => `${t} ${r}`))).toEqual(new Set(['LinkStateChanged relay-2']));
    await page.fill('#filter-type', '');
    await page.fill('#filter-relay', '');
    expect(await items.count()).toBeGreaterThan(seen.length);
  });

  it("lists a selected relay's kernel rounds, each linked to its replay up to that round", async () => {
    await page.locator('#relays tr[data-relay="relay-1"]').click();
    const link = page.locator('#rounds a.replay').first();
    await link.waitFor({ timeout: 10_000 });
    const seq = Number(await page.locator('#rounds tbody tr').first().getAttribute('data-seq'));
    const href = await link.getAttribute('href');
    expect(href).toBe(`/replay?relay=relay-1&to=${seq}`);
    const replayed = await (await fetch(new URL(href!, url))).text();
    expect(replayed).toContain(`relay-core replay --relay relay-1 --to ${seq}`);
    expect(replayed).toContain(`relay relay-1 as of relay-stream seq ${seq}`);
    expect(replayed).toMatch(/\d+ match, 0 differ/);
    expect((await fetch(new URL('/replay?relay=relay-1&to=0', url))).status).toBe(400);
  });

  it("a killed relay's links turn stale, then down, within the configured times; a screenshot is kept", async () => {
    const s = h.manifest().settings;
    const killed = 'relay-3';
    const others = h
      .manifest()
      .relays.map((r) => r.id)
      .filter((id) => id !== killed);
    const killedAt = Date.now();
    expect((await h.sim(['kill', '--relay', killed])).exitCode).toBe(0);
    // wireguard-go outlives a crashed daemon and would keep answering handshakes: kill it too, as a host's crash would.
    const ns = h.relayOf(killed).namespace;
    for (const pid of await netnsPids(ns)) if (processName(pid) === 'wireguard-go') signal(pid, 'SIGKILL');
    await eventually(
      'the killed relay’s devices gone',
      async () => ((await linkNames(ns)).some((l) => l.startsWith(h.manifest().wgPrefix)) ? null : true),
      15_000,
    );
    // Stale after link-stale-after without a handshake or traffic (read every observe interval); then down.
    // A few seconds more for the event's way to the page (bus, fold, push).
    const slack = s.observeIntervalMs + 5_000;
    const seen: Record<string, { stale: number | null; down: number | null }> = {};
    for (const from of others) seen[from] = { stale: null, down: null };
    await eventually(
      'every other relay to report its link to the killed one stale, then down',
      async () => {
        for (const from of others) {
          const st = await cell(from, killed).getAttribute('data-state');
          if (st === 'stale' && seen[from]!.stale === null) seen[from]!.stale = Date.now() - killedAt;
          if (st === 'down' && seen[from]!.down === null) seen[from]!.down = Date.now() - killedAt;
        }
        return others.every((f) => seen[f]!.down !== null) ? true : null;
      },
      s.linkDownAfterMs + slack + 10_000,
      100,
    );
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });
    console.log(`DASHBOARD-LINKS ${JSON.stringify({ staleAfterMs: s.linkStaleAfterMs, downAfterMs: s.linkDownAfterMs, seenMs: seen })}`);
    for (const from of others) {
      expect(seen[from]!.stale, `${from} -> ${killed} never shown stale`).not.toBeNull();
      expect(seen[from]!.stale!, `${from} stale`).toBeLessThan(s.linkStaleAfterMs + slack);
      expect(seen[from]!.down!, `${from} down`).toBeLessThan(s.linkDownAfterMs + slack);
      expect(seen[from]!.down!).toBeGreaterThan(seen[from]!.stale!);
    }
    // The links among the living stay up; the killed relay's row says no peer has its link up.
    expect(await cell(others[0]!, others[1]!).getAttribute('data-state')).toBe('up');
    expect(await page.locator(`#relays tr[data-relay="${killed}"] td[data-peers-up]`).getAttribute('data-peers-up')).toBe('0');
  });
});
