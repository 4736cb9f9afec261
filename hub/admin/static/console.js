// hub console: plain JS, no build step. The admin token lives in sessionStorage (this tab only) and goes
// to the admin API as a bearer token. Everything shown from the API is set as text, never as HTML.
'use strict';

const TOKEN_KEY = 'hub-admin-token';
const MAX_ROWS = 500;
const POLL_MS = 2000;

const $ = (id) => document.getElementById(id);
const state = { apps: [], app: null, page: null, timer: null, stream: null, paused: false, held: [], notShown: 0 };

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${token()}`, ...(options.body ? { 'Content-Type': 'application/json' } : {}) };
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) throw new Unauthorized((await response.json()).error);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells, className) {
  const tr = el('tr', null, className);
  for (const cell of cells) {
    const td = el('td');
    if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell === undefined || cell === null ? '' : String(cell);
    tr.appendChild(td);
  }
  return tr;
}

function fill(tbody, rows) { tbody.replaceChildren(...rows); }
const num = (v, digits = 0) => (v === null || v === undefined ? '–' : Number(v).toLocaleString(undefined, { maximumFractionDigits: digits }));
const clock = (t) => new Date(t * 1000).toLocaleTimeString(undefined, { hour12: false }) + '.' + String(Math.floor((t % 1) * 1000)).padStart(3, '0');
const when = (t) => new Date(t * 1000).toLocaleString(undefined, { hour12: false });
function age(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} days`;
}

// -- login ---------------------------------------------------------------------------------------------

function showLogin(message) {
  stopAll();
  sessionStorage.removeItem(TOKEN_KEY);
  $('top').hidden = true;
  for (const page of document.querySelectorAll('.page')) page.hidden = page.id !== 'page-login';
  $('login-error').hidden = !message;
  $('login-error').textContent = message || '';
  $('login-token').focus();
}

async function logIn(candidate) {
  sessionStorage.setItem(TOKEN_KEY, candidate);
  try {
    const cluster = await api('/api/cluster');
    state.apps = (await api('/api/apps')).apps;
    $('node-name').textContent = `node ${cluster.node_id}`;
  } catch (err) {
    showLogin(err instanceof Unauthorized ? 'The admin token is wrong.' : `Cannot reach the admin API: ${err.message}`);
    return false;
  }
  const select = $('app-select');
  select.replaceChildren(...state.apps.map((a) => { const o = el('option', a.id); o.value = a.id; return o; }));
  $('top').hidden = false;
  return true;
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  if (await logIn($('login-token').value.trim())) route();
});
$('logout').addEventListener('click', () => { showLogin(''); history.replaceState(null, '', '#/'); });

// -- routing -------------------------------------------------------------------------------------------

function stopAll() {
  clearInterval(state.timer);
  state.timer = null;
  if (state.stream) { state.stream.abort(); state.stream = null; }
}

function route() {
  if (!token()) return showLogin('');
  const parts = location.hash.replace(/^#\/?/, '').split('/');
  let page = parts[0] || '';
  let appId = null;
  if (page === 'apps' && parts[1]) { appId = decodeURIComponent(parts[1]); page = parts[2] || 'debug'; }
  if (!['cluster', 'apps', 'channels', 'debug', 'webhooks'].includes(page)) {
    const first = state.apps[0];
    location.replace(first ? `#/apps/${encodeURIComponent(first.id)}/debug` : '#/cluster');
    return undefined;
  }
  state.app = appId || state.app || (state.apps[0] && state.apps[0].id);
  $('app-select').value = state.app;
  stopAll();
  state.page = page;
  for (const section of document.querySelectorAll('.page')) section.hidden = section.id !== `page-${page}`;
  for (const link of document.querySelectorAll('#nav a')) {
    const p = link.dataset.page;
    if (!['cluster', 'apps'].includes(p)) link.href = `#/apps/${encodeURIComponent(state.app)}/${p}`;
    link.classList.toggle('active', p === page);
  }
  for (const span of document.querySelectorAll('.app-id')) span.textContent = state.app;
  const pages = { cluster: showCluster, apps: showApps, channels: showChannels, debug: showDebug, webhooks: showWebhooks };
  return pages[page]().catch(onError);
}

function onError(err) {
  if (err instanceof Unauthorized) showLogin('The admin token is no longer accepted.');
  else console.error(err);
}

function poll(fn) {
  const run = () => fn().catch(onError);
  state.timer = setInterval(run, POLL_MS);
  return run();
}

$('app-select').addEventListener('change', () => {
  const page = ['channels', 'debug', 'webhooks'].includes(state.page) ? state.page : 'debug';
  location.hash = `#/apps/${encodeURIComponent($('app-select').value)}/${page}`;
});
window.addEventListener('hashchange', route);

// -- cluster -------------------------------------------------------------------------------------------

function chart(canvasId, points) {
  const canvas = $(canvasId);
  const ctx = canvas.getContext('2d');
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const values = points.filter((v) => v !== null && v !== undefined);
  if (points.length < 2 || !values.length) return;
  const top = Math.max(...values) * 1.15 || 1;
  const x = (i) => (i / (points.length - 1)) * width;
  const y = (v) => height - 2 - ((v || 0) / top) * (height - 6);
  ctx.beginPath();
  points.forEach((v, i) => (i === 0 ? ctx.moveTo(x(i), y(v)) : ctx.lineTo(x(i), y(v))));
  ctx.strokeStyle = '#3b5bdb';
  ctx.lineWidth = 1.5;
  ctx.stroke();
  ctx.lineTo(width, height);
  ctx.lineTo(0, height);
  ctx.closePath();
  ctx.fillStyle = 'rgba(59, 91, 219, 0.12)';
  ctx.fill();
}

// The nodes' own histories (their last reports), summed across nodes point by point from the newest.
function series(nodes, name, combine) {
  const length = Math.max(0, ...nodes.map((n) => ((n.history || {})[name] || []).length));
  const out = [];
  for (let back = length; back >= 1; back -= 1) {
    const values = nodes.map((n) => { const h = (n.history || {})[name] || []; return h[h.length - back]; })
      .filter((v) => v !== null && v !== undefined);
    out.push(values.length ? combine(values) : null);
  }
  return out;
}
const sum = (values) => values.reduce((a, b) => a + b, 0);
const max = (values) => Math.max(...values);

async function showCluster() {
  await poll(async () => {
    const cluster = await api('/api/cluster');
    const nodes = cluster.nodes;
    const total = (name) => nodes.reduce((s, n) => s + (n[name] || 0), 0);
    const fanouts = nodes.map((n) => n.fanout_p99_ms).filter((v) => v !== null && v !== undefined);
    chart('chart-connections', series(nodes, 'connections', sum));
    chart('chart-deliveries', series(nodes, 'deliveries_per_second', sum));
    chart('chart-published', series(nodes, 'published_per_second', sum));
    chart('chart-fanout', series(nodes, 'fanout_p99_ms', max));
    $('now-connections').textContent = num(total('connections'));
    $('now-deliveries').textContent = num(total('deliveries_per_second'));
    $('now-published').textContent = num(total('published_per_second'));
    $('now-fanout').textContent = fanouts.length ? num(Math.max(...fanouts), 2) : '–';
    fill($('nodes'), nodes.map((n) => row([
      n.node_id, n.role,
      el('span', n.ready ? 'ready' : 'not ready', n.ready ? 'ok' : 'bad'),
      el('span', n.redis, n.redis === 'down' ? 'bad' : 'ok'),
      num(n.connections), num(n.channels), num(n.deliveries_per_second, 1), num(n.published_per_second, 1),
      n.fanout_p99_ms === null ? '–' : `${num(n.fanout_p99_ms, 2)} ms`,
      num(n.webhook_queue_depth), `${num(n.memory_bytes / 1048576, 1)} MiB`,
    ])));
  });
}

// -- apps ----------------------------------------------------------------------------------------------

async function showApps() {
  await poll(async () => {
    const [apps, cluster] = await Promise.all([api('/api/apps'), api('/api/cluster')]);
    state.apps = apps.apps;
    // Editing goes through the apps endpoints; a read-only store (the apps file) answers writes with 405.
    const writable = apps.writable === true;
    $('apps-store').textContent = apps.store ? `App store: ${apps.store}${writable ? '' : ' (read-only)'}` : '';
    fill($('apps'), state.apps.map((a) => {
      const figures = cluster.apps[a.id] || {};
      const edit = writable ? el('button', 'Edit', 'link') : el('span', '', 'muted');
      if (writable) edit.addEventListener('click', () => editApp(a));
      const open = el('a', a.id);
      open.href = `#/apps/${encodeURIComponent(a.id)}/debug`;
      return row([open, a.key, a.enabled ? 'yes' : 'no', a.enable_client_messages ? 'yes' : 'no',
        num(figures.connections || 0), num(figures.published_per_second || 0, 1),
        num(figures.deliveries_per_second || 0, 1), edit]);
    }));
  });
}

function editApp(app) {
  $('app-edit').hidden = false;
  $('edit-id').textContent = app.id;
  $('edit-enabled').checked = app.enabled;
  $('edit-client-messages').checked = app.enable_client_messages;
  $('edit-max-connections').value = app.max_connections;
  $('edit-result').textContent = '';
  $('app-edit').onsubmit = async (event) => {
    event.preventDefault();
    const changes = { enabled: $('edit-enabled').checked, enable_client_messages: $('edit-client-messages').checked,
      max_connections: Number($('edit-max-connections').value) };
    try {
      await api(`/api/apps/${encodeURIComponent(app.id)}`, { method: 'PATCH', body: JSON.stringify(changes) });
      $('edit-result').textContent = 'Saved.';
    } catch (err) {
      if (err instanceof Unauthorized) throw err;
      $('edit-result').textContent = `Not saved: ${err.message}`;
    }
  };
}
$('edit-cancel').addEventListener('click', () => { $('app-edit').hidden = true; });

// -- channels ------------------------------------------------------------------------------------------

let selectedChannel = null;

async function showChannels() {
  selectedChannel = null;
  $('channel-detail').hidden = true;
  await poll(refreshChannels);
}

async function refreshChannels() {
  const base = `/api/apps/${encodeURIComponent(state.app)}/channels`;
  const { channels } = await api(`${base}?prefix=${encodeURIComponent($('channel-prefix').value)}`);
  fill($('channel-list'), channels.map((c) => {
    const tr = row([c.name, c.kind, num(c.subscription_count)], `clickable${c.name === selectedChannel ? ' selected' : ''}`);
    tr.dataset.channel = c.name;
    tr.addEventListener('click', () => { selectedChannel = c.name; refreshChannels().catch(onError); });
    return tr;
  }));
  if (!selectedChannel) return;
  const detail = await api(`${base}/${encodeURIComponent(selectedChannel)}`);
  $('channel-detail').hidden = false;
  $('detail-name').textContent = detail.name;
  $('detail-count').textContent = num(detail.subscription_count);
  $('detail-members').hidden = !detail.members;
  if (detail.members) fill($('members'), detail.members.map((m) => row([m.id, JSON.stringify(m.info)])));
  $('detail-cache').hidden = !('cache' in detail);
  if ('cache' in detail) {
    $('cache-event').textContent = detail.cache ? `${detail.cache.event} (expires in ${detail.cache.ttl} s)\n${detail.cache.data}` : 'nothing cached';
  }
}
$('channel-filter').addEventListener('submit', (event) => { event.preventDefault(); refreshChannels().catch(onError); });

// -- debug console -------------------------------------------------------------------------------------

function describe(e) {
  const parts = [];
  if (e.reason) parts.push(`reason: ${e.reason}`);
  if (e.message) parts.push(e.message);
  if (e.user_id) parts.push(`user ${e.user_id}`);
  if (e.source) parts.push(`from the ${e.source}`);
  if (e.url) parts.push(e.url);
  if (e.webhooks) parts.push(e.webhooks.join(', '));
  if (e.attempts) parts.push(`attempt ${e.attempts}`);
  if (e.error) parts.push(e.error);
  if (e.data !== undefined && e.data !== null) parts.push(e.data);
  return parts.join(' · ');
}

function addEvents(events) {
  if (state.paused) {
    state.held.push(...events);
    $('stream-state').textContent = `paused, ${state.held.length} waiting`;
    return;
  }
  const tbody = $('stream');
  for (const e of events) {
    const tr = row([clock(e.time), e.node, el('span', e.kind, `badge k-${e.kind}`), e.channel, e.event, e.socket_id, describe(e)], 'ev');
    tr.dataset.kind = e.kind;
    tr.lastChild.className = 'details';
    tbody.insertBefore(tr, tbody.firstChild);
  }
  while (tbody.children.length > MAX_ROWS) tbody.removeChild(tbody.lastChild);
}

function onStreamEvent(name, data) {
  if (name === 'hello') $('stream-state').textContent = `live from node ${data.node}, up to ${data.rate} events/s`;
  else if (name === 'events') addEvents(data);
  else if (name === 'dropped') {
    state.notShown += data.count;
    $('not-shown').hidden = false;
    $('not-shown').textContent = `${num(state.notShown)} events not shown (over ${num(state.rate || 0)}/s)`;
  }
}

async function openStream() {
  const controller = new AbortController();
  state.stream = controller;
  const query = new URLSearchParams({ channel: $('filter-channel').value, event: $('filter-event').value });
  while (!controller.signal.aborted) {
    try {
      const response = await fetch(`/api/apps/${encodeURIComponent(state.app)}/stream?${query}`, {
        headers: { Authorization: `Bearer ${token()}` }, signal: controller.signal });
      if (response.status === 401) throw new Unauthorized('token refused');
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = 'message';
          let data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) name = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (data) {
            const parsed = JSON.parse(data);
            if (name === 'hello') state.rate = parsed.rate;
            onStreamEvent(name, parsed);
          }
        }
      }
    } catch (err) {
      if (controller.signal.aborted) return;
      if (err instanceof Unauthorized) { onError(err); return; }
    }
    if (controller.signal.aborted) return;
    $('stream-state').textContent = 'reconnecting…';
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function showDebug() {
  state.notShown = 0;
  state.held = [];
  $('not-shown').hidden = true;
  $('stream').replaceChildren();
  $('stream-state').textContent = 'connecting…';
  openStream();
}

$('apply-filter').addEventListener('click', () => { if (state.stream) state.stream.abort(); openStream(); });
$('clear').addEventListener('click', () => { $('stream').replaceChildren(); state.notShown = 0; $('not-shown').hidden = true; });
$('pause').addEventListener('click', () => {
  state.paused = !state.paused;
  $('pause').textContent = state.paused ? 'Resume' : 'Pause';
  if (!state.paused) {
    const held = state.held.splice(0);
    addEvents(held);
    $('stream-state').textContent = 'live';
  } else {
    $('stream-state').textContent = 'paused';
  }
});
$('publish').addEventListener('submit', async (event) => {
  event.preventDefault();
  const raw = $('publish-data').value;
  const body = { channel: $('publish-channel').value.trim(), name: $('publish-event').value.trim(), data: raw || '{}' };
  try {
    await api(`/api/apps/${encodeURIComponent(state.app)}/events`, { method: 'POST', body: JSON.stringify(body) });
    $('publish-result').textContent = `published ${body.name} to ${body.channel}`;
  } catch (err) {
    if (err instanceof Unauthorized) return onError(err);
    $('publish-result').textContent = `not published: ${err.message}`;
  }
  return undefined;
});

// -- webhooks ------------------------------------------------------------------------------------------

async function replay(path, resultId) {
  try {
    const { replayed } = await api(path, { method: 'POST' });
    $(resultId).textContent = `${replayed} replayed`;
  } catch (err) {
    if (err instanceof Unauthorized) throw err;
    $(resultId).textContent = err.message;
  }
  await refreshWebhooks();
}

async function refreshWebhooks() {
  const base = `/api/apps/${encodeURIComponent(state.app)}`;
  const w = await api(`${base}/webhooks`);
  $('queue-depth').textContent = num(w.queue.depth);
  $('queue-age').textContent = w.queue.depth ? age(w.queue.oldest_age) : '–';
  $('webhook-urls').textContent = w.urls.join(', ') || 'none configured';
  $('dead-total').textContent = `(${num(w.dead_letter_total)})`;
  $('dead-ttl').textContent = age(w.dead_letter_ttl);
  $('replay-all').disabled = !w.dead_letter_total;
  fill($('dead-letters'), w.dead_letters.map((d) => {
    const button = el('button', 'Replay', 'replay');
    button.addEventListener('click', () => replay(`${base}/dead-letters/${encodeURIComponent(d.id)}/replay`, 'replay-result').catch(onError));
    const what = d.events.map((e) => [e.name, e.channel, e.user_id].filter(Boolean).join(' ')).join(', ');
    const tr = row([when(d.died_at), d.url, what, d.attempts, d.error, button]);
    tr.dataset.id = d.id;
    return tr;
  }));
  fill($('failures'), w.failures.map((f) => row([when(f.at), f.url, f.attempts, f.error, f.gave_up ? 'given up' : 'will retry'])));
}

async function showWebhooks() {
  $('replay-result').textContent = '';
  await poll(refreshWebhooks);
}
$('replay-all').addEventListener('click', () => replay(`/api/apps/${encodeURIComponent(state.app)}/dead-letters/replay`, 'replay-result').catch(onError));

// -- start ---------------------------------------------------------------------------------------------

(async () => {
  const fragment = location.hash.match(/^#token=(.+)$/);
  if (fragment) {
    // `make run` prints a URL carrying the token in the fragment (never sent to a server): keep it, drop it from the address bar.
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(fragment[1]));
    history.replaceState(null, '', '#/');
  }
  if (token() && await logIn(token())) route(); else if (!token()) showLogin('');
})();
