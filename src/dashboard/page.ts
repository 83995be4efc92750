/**
 * The operator's page: one HTML document, its style and script inline (no build step, nothing fetched
 * from elsewhere). It opens `/stream` (server-sent events: the whole folded state, `DashboardState`, at
 * most a few times a second) and renders it; every value goes in with `textContent`, never as HTML, so
 * nothing from the streams can inject markup. Elements carry `data-*` attributes the browser test reads.
 */
export const DASHBOARD_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>relay-core mesh</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  :root { --up: #1a7f37; --stale: #bf8700; --down: #cf222e; --other: #6e7781; --bg: #f6f8fa; }
  body { font: 13px/1.4 system-ui, sans-serif; margin: 0; color: #1f2328; }
  header { display: flex; gap: 1.5em; align-items: baseline; padding: .6em 1em; background: #24292f; color: #fff; }
  header h1 { font-size: 15px; margin: 0; }
  #conn[data-live="true"] { color: #7ee787; } #conn[data-live="false"] { color: #ffa198; }
  main { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 1em; padding: 1em; }
  section { background: var(--bg); border: 1px solid #d0d7de; border-radius: 6px; padding: .6em .8em; overflow: auto; }
  h2 { font-size: 13px; margin: 0 0 .5em; }
  table { border-collapse: collapse; }
  th, td { padding: 2px 6px; text-align: left; white-space: nowrap; }
  #matrix td { text-align: center; min-width: 4.5em; border: 1px solid #fff; font-size: 11px; color: #fff; }
  #matrix td[data-state="up"] { background: var(--up); }
  #matrix td[data-state="stale"] { background: var(--stale); }
  #matrix td[data-state="down"] { background: var(--down); }
  #matrix td[data-state="self"] { background: #d0d7de; }
  #matrix td[data-state="none"] { background: #eaeef2; color: var(--other); }
  #matrix td:not([data-state="up"]):not([data-state="stale"]):not([data-state="down"]):not([data-state="self"]):not([data-state="none"]) { background: var(--other); }
  #relays tr { cursor: pointer; } #relays tr[data-selected="true"] { background: #ddf4ff; }
  #feed { list-style: none; margin: 0; padding: 0; font-family: ui-monospace, monospace; font-size: 11px; max-height: 40em; overflow: auto; }
  #feed li { white-space: pre; } #feed li[data-type="REJECTED"] { color: var(--down); }
  .filters { display: flex; gap: .5em; margin-bottom: .5em; } .filters input { font: inherit; }
  #rounds td.failed { color: var(--down); } code { font-size: 11px; }
</style>
</head>
<body>
<header>
  <h1>relay-core mesh</h1>
  <span>topology revision <b id="revision">–</b></span>
  <span><b id="relay-count">0</b> relays</span>
  <span>rejected messages <b id="rejected">0</b></span>
  <span id="conn" data-live="false">connecting…</span>
</header>
<main>
  <div>
    <section>
      <h2>Links (row: the relay that reports; column: its peer; handshake age)</h2>
      <table id="matrix"><thead></thead><tbody></tbody></table>
    </section>
    <section style="margin-top:1em">
      <h2>Relays (click one for its kernel rounds)</h2>
      <table id="relays">
        <thead><tr><th>relay</th><th>state</th><th>revision</th><th>in topology</th><th>peers' links up</th><th>last heard</th></tr></thead>
        <tbody></tbody>
      </table>
    </section>
    <section style="margin-top:1em" id="selected" hidden>
      <h2>Kernel rounds of <span id="selected-id"></span></h2>
      <table id="rounds">
        <thead><tr><th>time</th><th>owner</th><th>round</th><th>planned</th><th>applied</th><th></th><th>replay to here</th></tr></thead>
        <tbody></tbody>
      </table>
    </section>
  </div>
  <section>
    <h2>Events</h2>
    <div class="filters">
      <input id="filter-relay" placeholder="relay id">
      <input id="filter-type" placeholder="type (Link*, Kernel*)">
      <input id="filter-text" placeholder="text">
    </div>
    <ul id="feed"></ul>
  </section>
</main>
<script>
"use strict";
let state = null;
let offset = 0;
let selected = null;
const el = (tag, text, attrs) => {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
};
const age = (ms) => {
  if (ms === null || ms === undefined) return '';
  const s = Math.max(0, Math.round((Date.now() + offset - ms) / 1000));
  return s < 120 ? s + 's' : s < 7200 ? Math.round(s / 60) + 'm' : Math.round(s / 3600) + 'h';
};
const wildcard = (p) => new RegExp('^(' + p.split(',').map((x) => x.trim().replace(/[.+^$()|[\\]{}\\\\]/g, '\\\\$&').replace(/\\*/g, '.*').replace(/\\?/g, '.')).join('|') + ')$');
function renderMatrix() {
  const ids = state.relays.map((r) => r.id);
  const head = document.querySelector('#matrix thead');
  const tr = el('tr');
  tr.append(el('th', ''));
  for (const id of ids) tr.append(el('th', id));
  head.replaceChildren(tr);
  const body = document.querySelector('#matrix tbody');
  body.replaceChildren(...state.relays.map((r) => {
    const row = el('tr', undefined, { 'data-relay': r.id });
    row.append(el('th', r.id));
    for (const to of ids) {
      const l = r.links[to];
      const st = to === r.id ? 'self' : l ? l.state : 'none';
      const text = to === r.id ? '' : l ? l.state + (l.latestHandshakeMs ? ' ' + age(l.latestHandshakeMs) : '') : '–';
      const td = el('td', text, { 'data-from': r.id, 'data-to': to, 'data-state': st });
      if (l) td.title = l.reason + ' (since ' + l.since + ')';
      row.append(td);
    }
    return row;
  }));
}
function renderRelays() {
  const body = document.querySelector('#relays tbody');
  body.replaceChildren(...state.relays.map((r) => {
    const row = el('tr', undefined, { 'data-relay': r.id, 'data-state': r.state || 'unknown', 'data-selected': r.id === selected });
    // What the others say of it: a relay that crashed says nothing more itself, its peers do.
    const peers = state.relays.filter((p) => p.id !== r.id && p.links[r.id]);
    const upFrom = peers.filter((p) => p.links[r.id].state === 'up').length;
    row.append(el('td', r.id), el('td', r.state || '–'), el('td', r.revision), el('td', r.member ? 'yes' : r.left ? 'left (' + r.left + ')' : 'no'),
      el('td', peers.length ? upFrom + '/' + peers.length : '–', { 'data-peers-up': upFrom }), el('td', r.lastHeard ? age(Date.parse(r.lastHeard)) + ' ago' : '–'));
    row.addEventListener('click', () => { selected = r.id; render(); });
    return row;
  }));
}
function renderRounds() {
  const r = state.relays.find((x) => x.id === selected);
  const panel = document.getElementById('selected');
  panel.hidden = !r;
  if (!r) return;
  document.getElementById('selected-id').textContent = r.id;
  document.querySelector('#rounds tbody').replaceChildren(...r.rounds.map((k) => {
    const row = el('tr', undefined, { 'data-seq': k.seq });
    const link = el('a', 'replay --to ' + k.seq, { href: '/replay?relay=' + encodeURIComponent(r.id) + '&to=' + k.seq, target: '_blank', class: 'replay' });
    const cmd = el('td');
    cmd.append(link, el('code', ' relay-core replay --relay ' + r.id + ' --to ' + k.seq));
    row.append(el('td', k.time.slice(11, 23)), el('td', k.owner), el('td', k.round), el('td', k.planned), el('td', k.applied), el('td', k.failed ? 'failed' : k.focused ? 'focused' : 'whole', { class: k.failed ? 'failed' : '' }), cmd);
    return row;
  }));
}
function renderFeed() {
  const relay = document.getElementById('filter-relay').value.trim();
  const type = document.getElementById('filter-type').value.trim();
  const text = document.getElementById('filter-text').value.trim().toLowerCase();
  const t = type ? wildcard(type) : null;
  const items = state.feed.filter((f) => (!relay || f.relayId === relay) && (!t || t.test(f.type)) && (!text || f.text.toLowerCase().includes(text)));
  document.getElementById('feed').replaceChildren(...items.map((f) => el('li', f.text, { 'data-type': f.type, 'data-relay': f.relayId || '', 'data-stream': f.stream })));
}
function render() {
  if (!state) return;
  document.getElementById('revision').textContent = state.topologyRevision;
  document.getElementById('relay-count').textContent = state.relays.length;
  document.getElementById('rejected').textContent = state.rejected;
  renderMatrix(); renderRelays(); renderRounds(); renderFeed();
}
for (const id of ['filter-relay', 'filter-type', 'filter-text']) document.getElementById(id).addEventListener('input', renderFeed);
const conn = document.getElementById('conn');
const source = new EventSource('/stream');
source.addEventListener('state', (m) => {
  const msg = JSON.parse(m.data);
  offset = msg.now - Date.now();
  state = msg.state;
  conn.textContent = 'live'; conn.dataset.live = 'true';
  render();
});
source.onerror = () => { conn.textContent = 'reconnecting…'; conn.dataset.live = 'false'; };
setInterval(render, 1000);
</script>
</body>
</html>
`;
