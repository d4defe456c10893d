'use strict';
const view = document.getElementById('view');
let me = null;
// Each route() bumps this; a page whose data arrives after a newer route
// started does not paint over it.
let generation = 0;
function paint(gen, html) {
  if (gen !== generation) return false;
  view.innerHTML = html;
  return true;
}

function esc(v) { return String(v ?? '').replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c])); }

async function api(op, params) {
  const response = await fetch('/api/v1/' + op, {
    method: 'POST',
    headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + (sessionStorage.getItem('cascade-token') || '')},
    body: JSON.stringify(params || {}),
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) { showSignin(body.message); throw new Error(body.message); }
  if (!response.ok) throw new Error(body.message || response.statusText);
  return body;
}

function showSignin(message) {
  document.getElementById('signin').hidden = false;
  document.getElementById('signout').hidden = true;
  view.innerHTML = '';
  document.getElementById('signin-error').textContent = message || '';
}

document.getElementById('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  sessionStorage.setItem('cascade-token', document.getElementById('token').value.trim());
  await start();
});
document.getElementById('signout').addEventListener('click', () => { sessionStorage.removeItem('cascade-token'); showSignin(); });

function canWrite() { return me && me.caller.role !== 'auditor'; }

function table(headers, rows) {
  return '<table><tr>' + headers.map(h => '<th>' + esc(h) + '</th>').join('') + '</tr>' +
    rows.map(r => '<tr>' + r.map(c => '<td>' + c + '</td>').join('') + '</tr>').join('') + '</table>';
}

function counts(c) { return Object.entries(c || {}).map(([k, v]) => esc(k) + ': ' + esc(v)).join(', '); }

async function hierarchy() {
  const gen = generation;
  const tree = await api('sites.tree');
  const now = Date.now() / 1000;
  const links = tree.links.map(l => [esc(l.peer), esc(l.direction), l.status.connected ? '<span class="good">connected</span>' : '<span class="bad">down</span>',
    esc(l.status.seq_lag), l.status.last_contact ? esc(Math.round(now - l.status.last_contact)) + ' s ago' : '', esc(l.status.last_error)]);
  const children = tree.sites.filter(s => s.parent === tree.node).map(s => [esc(s.id), esc(s.name)]);
  if (!paint(gen, '<h2>Node ' + esc(tree.node) + '</h2><p>Above: ' + esc(tree.above.join(' → ') || '(root)') + '</p>' +
    '<p>Subtree: ' + esc(tree.subtree.join(', ')) + '</p><h3>Child sites</h3>' + table(['site', 'name'], children) +
    '<h3>Links</h3>' + table(['peer', 'direction', 'state', 'lag (entries)', 'last contact', 'last error'], links))) return;
}

async function compliance() {
  const gen = generation;
  const [bySeverity, bySite, byUpdate, computers] = await Promise.all([api('compliance.by_severity'), api('compliance.by_site'), api('compliance.by_update'), api('computers.list', {limit: 200})]);
  if (!paint(gen, '<h2>Compliance of this subtree</h2><h3>By severity</h3>' +
    table(['severity', 'states'], Object.entries(bySeverity).map(([s, c]) => [esc(s), counts(c)])) +
    '<h3>By site</h3>' + table(['site', 'severity', 'states'], Object.entries(bySite).flatMap(([site, sev]) => Object.entries(sev).map(([s, c]) => [esc(site), esc(s), counts(c)]))) +
    '<h3>By update</h3>' + table(['update', 'states'], Object.entries(byUpdate).map(([u, c]) => [esc(u), counts(c)])) +
    '<h3>Computers served here</h3>' + table(['computer', 'scan', 'states', ''], computers.computers.map(c => [esc(c.agent.id), esc(c.scan.state) + (c.scan.reason ? ' <span class="muted">(' + esc(c.scan.reason) + ')</span>' : ''), counts(c.states), '<button data-computer="' + esc(c.agent.id) + '">plan</button>'])) +
    '<div id="computer"></div>')) return;
  for (const b of view.querySelectorAll('button[data-computer]')) b.addEventListener('click', () => computer(b.dataset.computer));
}

async function computer(id) {
  const [plan, states] = await Promise.all([api('computers.plan', {computer: id}), api('computers.compliance', {computer: id})]);
  document.getElementById('computer').innerHTML = '<h3>' + esc(id) + '</h3><h4>Plan (in install order)</h4>' +
    table(['update', 'title', 'severity', 'restart', 'deadline'], plan.steps.map(s => [esc(s.update), esc(s.title), esc(s.severity), esc(s.restart), esc(s.deadline || '')])) +
    '<h4>States</h4>' + table(['update', 'state', 'why', 'age'], states.records.map(r => [esc(r.update), esc(r.state.state), esc(r.reason || r.stale || ''), esc(r.age_seconds) + ' s']));
}

async function updates() {
  const gen = generation;
  const [found, policies] = await Promise.all([api('updates.search', {limit: 200}), api('policies.list')]);
  const options = policies.map(p => '<option>' + esc(p.object.object.id) + '</option>').join('');
  if (!paint(gen, '<h2>Updates (' + esc(found.total) + ')</h2>' +
    (canWrite() ? '<p>Approve for policy <select id="approve-policy">' + options + '</select></p>' : '') +
    table(['id', 'title', 'severity', 'superseded', 'approved in', ''], found.updates.map(u => [esc(u.id), esc(u.title), esc(u.severity),
      u.superseded ? 'by ' + esc(u.superseded_by.join(', ')) : '', esc(u.approved_in.join(', ')),
      canWrite() ? '<button class="approve" data-update="' + esc(u.id) + '">Approve</button>' : ''])))) return;
  for (const b of view.querySelectorAll('button.approve')) b.addEventListener('click', async () => {
    try { await api('approvals.create', {policy: document.getElementById('approve-policy').value, update: b.dataset.update}); ++generation; await updates(); }
    catch (e) { alert(e.message); }
  });
}

async function editor(kind, listOp, upsertOp, field, example) {
  const gen = generation;
  const rows = await api(listOp);
  const editable = r => canWrite() && r.status === 'local';
  if (!paint(gen, '<h2>' + esc(kind) + '</h2>' + table(['id', 'status', 'origin', ''], rows.map((r, i) => [esc(r.object.object.id), esc(r.status), esc(r.origin),
    '<button data-i="' + i + '">' + (editable(r) ? 'Edit' : 'View') + '</button>'])) +
    (canWrite() ? '<h3>Edit</h3><textarea id="editor" rows="16">' + esc(JSON.stringify(example, null, 2)) + '</textarea><br><button id="save">Save</button> <span id="saved"></span>' : '<pre id="viewer"></pre>'))) return;
  for (const b of view.querySelectorAll('button[data-i]')) b.addEventListener('click', () => {
    const r = rows[Number(b.dataset.i)];
    const target = document.getElementById('editor') || document.getElementById('viewer');
    const text = JSON.stringify(r.object.object, null, 2);
    if (target.tagName === 'TEXTAREA') { target.value = text; target.readOnly = !editable(r); } else target.textContent = text;
  });
  const save = document.getElementById('save');
  if (save) save.addEventListener('click', async () => {
    const out = document.getElementById('saved');
    try { await api(upsertOp, {[field]: JSON.parse(document.getElementById('editor').value)}); out.textContent = 'saved'; out.className = 'good'; }
    catch (e) { out.textContent = e.message; out.className = 'bad'; }
  });
}

async function rollouts() {
  const gen = generation;
  const all = await api('rollout.status');
  if (!paint(gen, '<h2>Staged rollouts</h2>' + (all.length ? '' : '<p class="muted">No policy here has rings.</p>') +
    all.map(r => '<h3>' + esc(r.policy) + ' · ' + esc(r.update) + (r.halted ? ' <span class="bad">halted: ' + esc(r.halted) + '</span>' : '') + '</h3>' +
      table(['ring', 'state', 'computers', 'installed', 'failed', 'max failures', ''], r.rings.map((g, i) => [esc(g.ring),
        esc(g.status.state) + (g.status.soak_until ? ' <span class="muted">(soak until ' + esc(new Date(g.status.soak_until * 1000).toISOString()) + ')</span>' : ''),
        esc(g.computers), esc(g.installed), esc(g.failed), esc(g.max_failure_percent) + '%',
        (canWrite() && r.owned_here && g.status.state !== 'open' && (i === 0 || r.rings[i - 1].status.state === 'open')) ? '<button class="promote" data-policy="' + esc(r.policy) + '" data-update="' + esc(r.update) + '">Promote</button>' : '']))).join(''))) return;
  for (const b of view.querySelectorAll('button.promote')) b.addEventListener('click', async () => {
    try { await api('rollout.promote', {policy: b.dataset.policy, update: b.dataset.update}); ++generation; await rollouts(); } catch (e) { alert(e.message); }
  });
}

async function content() {
  const gen = generation;
  const status = await api('content.status');
  const c = status.cache;
  if (!paint(gen, '<h2>Content at this node</h2><p>' + esc(c.files) + ' files, ' + esc(c.bytes) + ' bytes' +
    (c.limit_bytes ? ' of ' + esc(c.limit_bytes) : ' (no limit)') + '; fetched ' + esc(c.fetched_bytes) + ' bytes in ' + esc(c.transfers) +
    ' transfers; served ' + esc(c.served_bytes) + ' bytes; ' + esc(c.evicted) + ' evicted</p>' +
    (c.in_flight.length ? '<h3>In flight</h3>' + table(['sha256', 'received', 'size'], c.in_flight.map(f => [esc(f.sha256), esc(f.received), esc(f.size)])) : '') +
    '<h3>Approved updates</h3>' + table(['update', 'files', 'bytes', 'here', 'missing'], status.updates.map(u => [esc(u.id), esc(u.files), esc(u.bytes),
      u.staged ? '<span class="good">yes</span>' : '<span class="bad">no</span>', esc(u.missing.join(', '))])))) return;
}

const pages = {
  hierarchy, compliance, updates, rollouts, content,
  policies: () => editor('Policies', 'policies.list', 'policies.upsert', 'policy', {id: 'new-policy', name: 'New policy', updates: {severities: ['Critical']}, targets: {}, enabled: true}),
  windows: () => editor('Maintenance windows', 'windows.list', 'windows.upsert', 'window', {id: 'nightly', name: 'Nightly', time_zone: 'UTC', start: '22:00', duration_minutes: 240}),
};

async function route() {
  const gen = ++generation;
  const page = pages[location.hash.slice(1)] || hierarchy;
  for (const a of document.querySelectorAll('#tabs a')) a.className = a.hash === (location.hash || '#hierarchy') ? 'active' : '';
  try { await page(); } catch (e) { if (me) paint(gen, '<p class="bad">' + esc(e.message) + '</p>'); }
}

async function start() {
  if (!sessionStorage.getItem('cascade-token')) return showSignin();
  try { me = await api('me'); } catch (e) { return showSignin(e.message); }
  document.getElementById('signin').hidden = true;
  document.getElementById('signout').hidden = false;
  document.getElementById('who').textContent = me.caller.name + ' (' + me.caller.role + ') at ' + me.node;
  await route();
}
window.addEventListener('hashchange', route);
start();
