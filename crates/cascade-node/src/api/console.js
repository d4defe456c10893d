'use strict';
// The console: one page per hash (#dashboard, #computers?site=..., ...),
// each drawn from the workflow API with the signed-in token. Charts are
// inline SVG made here; nothing is loaded from anywhere else.
const view = document.getElementById('view');
let me = null;
// Each route() bumps this; a page whose data arrives after a newer route
// started does not paint over it.
let generation = 0;
function paint(gen, html) {
  if (gen !== generation) return false;
  view.innerHTML = html;
  // Screen readers and keyboards start at the new page's heading.
  const heading = view.querySelector('h1');
  if (heading) { heading.tabIndex = -1; heading.focus({preventScroll: true}); }
  return true;
}

function esc(v) { return String(v ?? '').replace(/[&<>"']/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c])); }

function token() { return sessionStorage.getItem('cascade-token') || ''; }

async function api(op, params) {
  const response = await fetch('/api/v1/' + op, {
    method: 'POST',
    headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + token()},
    body: JSON.stringify(params || {}),
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) { showSignin(body.message); throw new Error(body.message); }
  if (!response.ok) throw new Error(body.message || response.statusText);
  return body;
}

// Every page of a report as a CSV file, streamed by the node.
async function download(op, params, name) {
  const response = await fetch('/api/v1/' + op, {
    method: 'POST',
    headers: {'Content-Type': 'application/json', 'Accept': 'text/csv', 'Authorization': 'Bearer ' + token()},
    body: JSON.stringify(params || {}),
  });
  if (!response.ok) { const body = await response.json().catch(() => ({})); throw new Error(body.message || response.statusText); }
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement('a');
  a.href = url; a.download = name; document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function showSignin(message) {
  document.getElementById('signin').hidden = false;
  document.getElementById('signout').hidden = true;
  view.innerHTML = '';
  document.getElementById('signin-error').textContent = message || '';
  document.getElementById('token').focus();
}

document.getElementById('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  sessionStorage.setItem('cascade-token', document.getElementById('token').value.trim());
  await start();
});
document.getElementById('signout').addEventListener('click', () => { sessionStorage.removeItem('cascade-token'); showSignin(); });

function canWrite() { return me && me.caller.role !== 'auditor'; }

// Unix seconds in the browser's own time zone.
function when(s) { return s ? new Date(s * 1000).toLocaleString() : 'never'; }
function age(seconds) {
  if (seconds == null) return '';
  if (seconds < 120) return seconds + ' s';
  if (seconds < 7200) return Math.round(seconds / 60) + ' min';
  if (seconds < 172800) return Math.round(seconds / 3600) + ' h';
  return Math.round(seconds / 86400) + ' days';
}
function pct(v) { return v == null ? '–' : Number(v).toFixed(1) + ' %'; }

// A link to the computers behind a number.
function drill(params, text) {
  return '<a href="#computers?' + esc(new URLSearchParams(params).toString()) + '">' + esc(text) + '</a>';
}

function table(caption, headers, rows, empty) {
  if (!rows.length) return '<h2>' + esc(caption) + '</h2><p class="empty">' + esc(empty || 'Nothing here yet.') + '</p>';
  return '<table><caption>' + esc(caption) + '</caption><thead><tr>' + headers.map(h => '<th scope="col">' + h + '</th>').join('') + '</tr></thead><tbody>' +
    rows.map(r => '<tr>' + r.map(c => '<td>' + c + '</td>').join('') + '</tr>').join('') + '</tbody></table>';
}

const STATES = ['installed', 'required', 'not_applicable', 'superseded', 'downloaded', 'pending_restart', 'failed', 'unknown', 'stale'];
const SEVERITIES = ['Critical', 'Important', 'Moderate', 'Low', 'Unspecified'];

// Horizontal bars of percentages, each a link; named for screen readers.
function bars(title, rows) {
  if (!rows.length) return '';
  const height = 26 * rows.length + 10;
  const items = rows.map((r, i) => {
    const y = 5 + 26 * i;
    const width = Math.max(1, Math.round(3 * (r.percent || 0)));
    const colour = r.percent >= 95 ? '#047857' : r.percent >= 80 ? '#b45309' : '#b91c1c';
    return '<a href="' + esc(r.href) + '" aria-label="' + esc(r.name + ': ' + pct(r.percent)) + '"><title>' + esc(r.name + ': ' + pct(r.percent) + ' compliant') + '</title>' +
      '<text x="0" y="' + (y + 15) + '">' + esc(r.name) + '</text>' +
      '<rect x="140" y="' + y + '" width="' + width + '" height="18" fill="' + colour + '"></rect>' +
      '<text x="' + (146 + width) + '" y="' + (y + 15) + '">' + esc(pct(r.percent)) + '</text></a>';
  }).join('');
  return '<figure class="chart"><figcaption>' + esc(title) + '</figcaption><svg role="group" aria-label="' + esc(title) + '" width="520" height="' + height + '" viewBox="0 0 520 ' + height + '">' + items + '</svg></figure>';
}

// A line of compliance per day; its summary in words for screen readers.
function trendChart(title, points) {
  const w = 520, h = 180, left = 40, bottom = 20;
  const usable = points.filter(p => p.percent != null);
  if (!usable.length) return '<figure class="chart"><figcaption>' + esc(title) + '</figcaption><p class="empty">No history yet: every node keeps one point per day from now on.</p></figure>';
  const x = i => left + (usable.length === 1 ? (w - left) / 2 : i * (w - left - 10) / (usable.length - 1));
  const y = v => 5 + (h - bottom - 5) * (1 - v / 100);
  const line = usable.map((p, i) => x(i).toFixed(1) + ',' + y(p.percent).toFixed(1)).join(' ');
  const first = usable[0], last = usable[usable.length - 1];
  const words = title + ': ' + pct(first.percent) + ' on ' + first.day + ', ' + pct(last.percent) + ' on ' + last.day;
  const grid = [0, 50, 100].map(v => '<line x1="' + left + '" x2="' + w + '" y1="' + y(v) + '" y2="' + y(v) + '" stroke="#d1d5db"></line><text x="0" y="' + (y(v) + 4) + '">' + v + '%</text>').join('');
  const dots = usable.map((p, i) => '<circle cx="' + x(i).toFixed(1) + '" cy="' + y(p.percent).toFixed(1) + '" r="3" fill="#1d4ed8"><title>' + esc(p.day + ': ' + pct(p.percent)) + '</title></circle>').join('');
  return '<figure class="chart"><figcaption>' + esc(title) + '</figcaption><svg role="img" aria-label="' + esc(words) + '" width="' + w + '" height="' + h + '" viewBox="0 0 ' + w + ' ' + h + '">' + grid +
    '<polyline points="' + line + '" fill="none" stroke="#1d4ed8" stroke-width="2"></polyline>' + dots +
    '<text x="' + left + '" y="' + (h - 4) + '">' + esc(first.day) + '</text>' + (usable.length > 1 ? '<text x="' + (w - 80) + '" y="' + (h - 4) + '">' + esc(last.day) + '</text>' : '') + '</svg></figure>';
}

function stateCells(row, base) {
  return STATES.map(s => row[s] ? drill(Object.assign({}, base, {state: s}), row[s]) : '0');
}

async function dashboard(params) {
  const gen = generation;
  const days = [30, 90, 365].includes(Number(params.get('days'))) ? Number(params.get('days')) : 30;
  const [bySite, bySeverity, trend, failures, tree] = await Promise.all([
    api('reports.compliance', {by: 'site', sort: 'percent', limit: 50}),
    api('reports.compliance', {by: 'severity', sort: 'percent'}),
    api('reports.trend', {days}),
    api('reports.failures', {limit: 5}),
    api('sites.tree'),
  ]);
  const o = bySite.overall;
  const computers = await api('reports.computers', {limit: 1});
  const nothing = !o.total && !computers.items.length;
  const now = Date.now() / 1000;
  const links = tree.links.map(l => [esc(l.peer), esc(l.direction),
    l.status.stalled ? '<span class="bad">stalled</span>' : l.status.connected ? '<span class="good">connected</span>' : '<span class="bad">down</span>',
    esc(l.status.seq_lag), l.status.last_contact ? esc(age(Math.round(now - l.status.last_contact))) + ' ago' : 'never', esc(l.status.last_error)]);
  const points = trend.items.length ? trend.items[0].points : [];
  paint(gen, '<h1>Dashboard: ' + esc(tree.node) + ' and the sites below it</h1>' +
    (nothing ? '<p class="empty">No computer has reported to this node or below it yet. Agents enroll at their site with a token (<code>cascade ctl agent-token create --site SITE</code>) and report after their first scan; a new child site reports once its link is up (see Hierarchy).</p>' : '') +
    '<div class="kpis"><div class="kpi"><span class="big">' + esc(pct(o.percent)) + '</span>compliant (' + drill({}, o.compliant + ' of ' + o.total) + ' records)</div>' +
    '<div class="kpi"><span class="big">' + (o.failed ? drill({state: 'failed'}, o.failed) : '0') + '</span>failed</div>' +
    '<div class="kpi"><span class="big">' + (o.required ? drill({state: 'required'}, o.required) : '0') + '</span>still required</div>' +
    '<div class="kpi"><span class="big">' + (o.pending_restart ? drill({state: 'pending_restart'}, o.pending_restart) : '0') + '</span>waiting for a restart</div></div>' +
    '<div class="charts">' + bars('Compliance by site', bySite.items.map(r => ({name: r.site, percent: r.percent, href: '#computers?' + new URLSearchParams({site: r.site, only_site: 'true'})}))) +
    bars('Compliance by severity', bySeverity.items.map(r => ({name: r.severity, percent: r.percent, href: '#computers?' + new URLSearchParams({severity: r.severity})}))) + '</div>' +
    '<h2>Trend</h2><p>Show <a href="#dashboard?days=30">30</a> · <a href="#dashboard?days=90">90</a> · <a href="#dashboard?days=365">365</a> days</p>' +
    trendChart('Compliance over the last ' + days + ' days', points) +
    table('Compliance by site and state', ['site', 'compliant'].concat(STATES.map(esc)), bySite.items.map(r => [esc(r.site), esc(pct(r.percent))].concat(stateCells(r, {site: r.site, only_site: 'true'}))), 'No site has reported compliance yet.') +
    table('Compliance by severity', ['severity', 'compliant'].concat(STATES.map(esc)), bySeverity.items.map(r => [esc(r.severity), esc(pct(r.percent))].concat(stateCells(r, {severity: r.severity}))), 'No compliance yet.') +
    table('Top failing updates', ['update', 'title', 'failed', 'codes', 'sites'], failures.items.map(f => [esc(f.update), esc(f.title || ''),
      drill({update: f.update, state: 'failed'}, f.failed),
      f.codes.map(c => esc(c.code_hex) + (c.meaning ? ' <span class="muted">(' + esc(c.meaning) + ')</span>' : '') + ': ' + esc(c.computers)).join('<br>'),
      f.sites.map(s => drill({update: f.update, state: 'failed', site: s.site}, s.site + ': ' + s.computers)).join(', ')]), 'No update failed anywhere below this node.') +
    table('Link health', ['peer', 'direction', 'state', 'lag (entries)', 'last contact', 'last error'], links, 'This node has no parent or children yet.'));
}

const FILTERS = [
  ['search', 'Computer name holds'], ['site', 'Site (and below)'], ['update', 'Update'], ['state', 'State'], ['severity', 'Severity'],
  ['os', 'Operating system'], ['release', 'Release'], ['scan', 'Last scan'],
];

async function computers(params) {
  const gen = generation;
  const tree = await api('sites.tree');
  const query = {limit: 50};
  for (const [k] of FILTERS) { const v = params.get(k); if (v && k !== 'scan') query[k] = v; }
  if (params.get('only_site') === 'true' && query.site) query.only_site = true;
  const scan = params.get('scan') || '';
  if (scan.startsWith('older-')) query.scan_older_than_hours = Number(scan.slice(6));
  if (scan.startsWith('within-')) query.scanned_within_hours = Number(scan.slice(7));
  const sort = params.get('sort') || 'computer';
  if (sort !== 'computer') query.sort = sort;
  if (params.get('desc') === 'true') query.descending = true;
  if (params.get('after')) query.after = params.get('after');
  if (params.get('offset')) query.offset = Number(params.get('offset'));
  const result = await api('reports.computers', query);
  const perRecord = !!(query.update || query.state || query.severity);
  const select = (name, options, value) => '<select id="f-' + name + '" name="' + name + '"><option value="">any</option>' +
    options.map(([v, t]) => '<option value="' + esc(v) + '"' + (v === value ? ' selected' : '') + '>' + esc(t) + '</option>').join('') + '</select>';
  const input = name => '<input id="f-' + name + '" name="' + name + '" value="' + esc(params.get(name) || '') + '">';
  const control = {
    site: select('site', tree.subtree.map(s => [s, s]), params.get('site') || ''),
    state: select('state', STATES.map(s => [s, s.replace('_', ' ')]), params.get('state') || ''),
    severity: select('severity', SEVERITIES.map(s => [s, s]), params.get('severity') || ''),
    scan: select('scan', [['within-24', 'within 24 hours'], ['older-24', 'older than 24 hours'], ['older-72', 'older than 3 days'], ['older-168', 'older than a week']], scan),
  };
  const form = '<form class="filters" id="filters">' + FILTERS.map(([k, label]) => '<label for="f-' + k + '">' + esc(label) + (control[k] || input(k)) + '</label>').join('') +
    '<button type="submit">Apply</button> <a href="#computers">Clear</a></form>';
  const sortable = (key, label) => '<button type="button" class="sort" data-sort="' + key + '" aria-label="Sort by ' + esc(label) + '">' + esc(label) +
    (sort === key ? (params.get('desc') === 'true' ? ' ▼' : ' ▲') : '') + '</button>';
  const headers = [sortable('computer', 'computer'), sortable('site', 'site'), sortable('os', 'OS'), 'release', sortable('last_scan', 'last scan'), 'agent', 'restart']
    .concat(perRecord ? ['update', 'state', 'why', 'observed'] : []);
  const rows = result.items.map(c => [
    '<a href="#computer?' + esc(new URLSearchParams({id: c.computer}).toString()) + '">' + esc(c.computer) + '</a>', esc(c.site), esc(c.os || ''), esc(c.release || ''),
    c.last_scan ? esc(when(c.last_scan)) + ' <span class="muted">(' + esc(age(c.scan_age_seconds)) + ' ago)</span>' : 'never',
    esc(c.agent_version || ''), c.pending_restart ? 'pending' : '',
  ].concat(perRecord ? [esc(c.update), esc((c.state || '').replace('_', ' ')), esc(c.reason || ''), esc(when(c.observed_at))] : []));
  const next = result.next ? Object.assign(Object.fromEntries(params), {after: result.next}) : result.next_offset ? Object.assign(Object.fromEntries(params), {offset: result.next_offset}) : null;
  const words = {search: 'name holds', site: 'site', update: 'update', state: 'state', severity: 'severity', os: 'OS', release: 'release',
    scan_older_than_hours: 'last scan older than (hours)', scanned_within_hours: 'scanned within (hours)'};
  const described = Object.entries(query).filter(([k]) => words[k])
    .map(([k, v]) => words[k] + ' ' + String(v).replace('_', ' ') + (k === 'site' && query.only_site ? ' (that site only)' : '')).join(', ');
  if (!paint(gen, '<h1>Computers' + (described ? ': ' + esc(described) : ' of this subtree') + '</h1>' + form +
    '<p><button type="button" id="csv">Download CSV</button> <span id="csv-status" role="status"></span></p>' +
    table(perRecord ? 'Computers and their state' : 'Computers', headers, rows,
      described ? 'No computer matches these filters. Clear a filter, or widen the site or the scan age.' : 'No computer has reported to this node or below it yet: agents enroll at their site with a token and report after their first scan.') +
    '<div class="pager">' + (params.get('after') || params.get('offset') ? '<a href="#computers?' + esc(new URLSearchParams(Object.fromEntries([...params].filter(([k]) => k !== 'after' && k !== 'offset'))).toString()) + '">First page</a>' : '') +
    (next ? '<a href="#computers?' + esc(new URLSearchParams(next).toString()) + '" id="next-page">Next page</a>' : '') + '</div>')) return;
  document.getElementById('filters').addEventListener('submit', e => {
    e.preventDefault();
    const chosen = new URLSearchParams();
    for (const [k] of FILTERS) { const v = document.getElementById('f-' + k).value.trim(); if (v) chosen.set(k, v); }
    location.hash = 'computers?' + chosen.toString();
  });
  for (const b of view.querySelectorAll('button.sort')) b.addEventListener('click', () => {
    const chosen = new URLSearchParams(params);
    chosen.delete('after'); chosen.delete('offset');
    chosen.set('desc', String(sort === b.dataset.sort && params.get('desc') !== 'true'));
    chosen.set('sort', b.dataset.sort);
    location.hash = 'computers?' + chosen.toString();
  });
  document.getElementById('csv').addEventListener('click', async () => {
    const status = document.getElementById('csv-status');
    const all = Object.assign({}, query); delete all.after; delete all.offset; delete all.limit;
    status.textContent = 'Preparing…';
    try { await download('reports.computers', all, 'computers.csv'); status.textContent = 'Downloaded.'; }
    catch (e) { status.textContent = e.message; status.className = 'bad'; }
  });
}

async function computer(params) {
  const gen = generation;
  const id = params.get('id') || '';
  const c = await api('reports.computer', {computer: id});
  const s = c.computer;
  const dl = [['site', esc(s.site || '')], ['operating system', esc([s.os, s.release, s.version].filter(Boolean).join(' '))],
    ['last scan', esc(when(s.last_scan))], ['last report', esc(when(s.last_report))], ['agent', esc(s.agent_version || '')],
    ['restart', s.pending_restart ? 'an installed update waits for a restart' : 'none pending'], ['compliant', esc(pct(c.compliance.percent))]]
    .map(([k, v]) => '<dt>' + esc(k) + '</dt><dd>' + v + '</dd>').join('');
  paint(gen, '<h1>Computer ' + esc(id) + '</h1><dl class="summary">' + dl + '</dl>' +
    table('Updates', ['update', 'title', 'severity', 'state', 'why', 'code', 'observed'], c.records.map(r => [esc(r.update), esc(r.title || ''), esc(r.severity),
      esc(r.state.replace('_', ' ')), esc(r.reason), r.code != null ? esc(r.code_hex) + (r.code_meaning ? ' <span class="muted">' + esc(r.code_meaning) + '</span>' : '') : '',
      esc(when(r.observed_at))]), 'This computer has not reported any update state yet.') +
    table('Latest install events', ['when', 'update', 'event', 'detail'], c.events.map(e => [esc(when(e.at)), esc(e.update), esc(e.event) + (e.code != null ? ' ' + esc(e.code) : ''), esc(e.detail || '')]), 'No install events yet.')
    + (c.events_from === 'summary' ? '<p class="muted">The latest few, as its summary carries them; every event stays at the computer\'s own site, ' + esc(s.site || '') + '.</p>' : ''));
}

async function hierarchy() {
  const gen = generation;
  const tree = await api('sites.tree');
  const now = Date.now() / 1000;
  const links = tree.links.map(l => [esc(l.peer), esc(l.direction), l.status.stalled ? '<span class="bad">stalled</span>' : l.status.connected ? '<span class="good">connected</span>' : '<span class="bad">down</span>',
    esc(l.status.seq_lag), l.status.last_contact ? esc(age(Math.round(now - l.status.last_contact))) + ' ago' : 'never', esc(l.status.last_error)]);
  const children = tree.sites.filter(s => s.parent === tree.node).map(s => [drill({site: s.id}, s.id), esc(s.name)]);
  paint(gen, '<h1>Node ' + esc(tree.node) + '</h1><p>Above: ' + esc(tree.above.join(' → ') || '(root)') + '</p>' +
    '<p>Subtree: ' + esc(tree.subtree.join(', ')) + '</p>' + table('Child sites', ['site', 'name'], children, 'No child site is registered here (sites.add).') +
    table('Links', ['peer', 'direction', 'state', 'lag (entries)', 'last contact', 'last error'], links, 'This node has no parent or children yet.'));
}

async function updates(params) {
  const gen = generation;
  const query = {limit: 100, offset: Number(params.get('offset') || 0)};
  if (params.get('text')) query.text = params.get('text');
  if (params.get('severity')) query.severities = [params.get('severity')];
  const sort = params.get('sort') || 'id';
  if (sort !== 'id') query.sort = sort;
  if (params.get('desc') === 'true') query.descending = true;
  const sortable = (key, label) => '<button type="button" class="sort" data-sort="' + key + '" aria-label="Sort by ' + esc(label) + '">' + esc(label) +
    (sort === key ? (params.get('desc') === 'true' ? ' ▼' : ' ▲') : '') + '</button>';
  const [found, policies] = await Promise.all([api('updates.search', query), api('policies.list')]);
  const options = policies.map(p => '<option>' + esc(p.object.object.id) + '</option>').join('');
  const page = (offset, text) => '<a href="#updates?' + esc(new URLSearchParams(Object.assign(Object.fromEntries(params), {offset})).toString()) + '">' + text + '</a>';
  if (!paint(gen, '<h1>Updates (' + esc(found.total) + ')</h1>' +
    '<form class="filters" id="update-filters"><label for="u-text">Id, title or CVE holds<input id="u-text" value="' + esc(params.get('text') || '') + '"></label>' +
    '<label for="u-severity">Severity<select id="u-severity"><option value="">any</option>' + SEVERITIES.map(s => '<option' + (s === params.get('severity') ? ' selected' : '') + '>' + s + '</option>').join('') + '</select></label>' +
    '<button type="submit">Search</button></form>' +
    (canWrite() ? (options ? '<p><label for="approve-policy">Approve for policy</label> <select id="approve-policy">' + options + '</select></p>' : '<p class="empty">No policy yet: make one on the Policies page to approve updates for it.</p>') : '') +
    table('Updates', [sortable('id', 'id'), sortable('title', 'title'), sortable('severity', 'severity'), sortable('release_date', 'released'), 'superseded', 'approved in', ''], found.updates.map(u => [esc(u.id), esc(u.title), esc(u.severity), esc(u.release_date || ''),
      u.superseded ? 'by ' + esc(u.superseded_by.join(', ')) : '', esc(u.approved_in.join(', ')),
      canWrite() && options ? '<button type="button" class="approve" data-update="' + esc(u.id) + '">Approve</button>' : '']),
      query.text || query.severities ? 'No update matches. Clear the search.' : 'No update is known here yet: import a vendor catalog at the root (catalog.import).') +
    '<div class="pager">' + (query.offset > 0 ? page(Math.max(0, query.offset - 100), 'Previous page') : '') +
    (query.offset + found.updates.length < found.total ? page(query.offset + 100, 'Next page') : '') + '</div>')) return;
  document.getElementById('update-filters').addEventListener('submit', e => {
    e.preventDefault();
    const chosen = new URLSearchParams();
    const text = document.getElementById('u-text').value.trim(), severity = document.getElementById('u-severity').value;
    if (text) chosen.set('text', text);
    if (severity) chosen.set('severity', severity);
    location.hash = 'updates?' + chosen.toString();
  });
  for (const b of view.querySelectorAll('button.sort')) b.addEventListener('click', () => {
    const chosen = new URLSearchParams(params);
    chosen.delete('offset');
    chosen.set('desc', String(sort === b.dataset.sort && params.get('desc') !== 'true'));
    chosen.set('sort', b.dataset.sort);
    location.hash = 'updates?' + chosen.toString();
  });
  for (const b of view.querySelectorAll('button.approve')) b.addEventListener('click', async () => {
    try { await api('approvals.create', {policy: document.getElementById('approve-policy').value, update: b.dataset.update}); ++generation; await updates(params); }
    catch (e) { alert(e.message); }
  });
}

async function editor(kind, listOp, upsertOp, field, example) {
  const gen = generation;
  const rows = await api(listOp);
  const editable = r => canWrite() && r.status === 'local';
  if (!paint(gen, '<h1>' + esc(kind) + '</h1>' + table(kind, ['id', 'status', 'origin', ''], rows.map((r, i) => [esc(r.object.object.id), esc(r.status), esc(r.origin),
    '<button type="button" data-i="' + i + '">' + (editable(r) ? 'Edit' : 'View') + '</button>']), 'None yet.') +
    (canWrite() ? '<h2><label for="editor">Edit</label></h2><textarea id="editor" rows="16">' + esc(JSON.stringify(example, null, 2)) + '</textarea><br><button type="button" id="save">Save</button> <span id="saved" role="status"></span>' : '<pre id="viewer"></pre>'))) return;
  for (const b of view.querySelectorAll('button[data-i]')) b.addEventListener('click', () => {
    const r = rows[Number(b.dataset.i)];
    const target = document.getElementById('editor') || document.getElementById('viewer');
    const text = JSON.stringify(r.object.object, null, 2);
    if (target.tagName === 'TEXTAREA') { target.value = text; target.readOnly = !editable(r); target.focus(); } else target.textContent = text;
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
  if (!paint(gen, '<h1>Staged rollouts</h1>' + (all.length ? '' : '<p class="empty">No policy here has rings. A policy with rings opens each ring after the one before has soaked.</p>') +
    all.map(r => table(r.policy + ' · ' + r.update + (r.halted ? ' (halted: ' + r.halted + ')' : ''), ['ring', 'state', 'computers', 'installed', 'failed', 'max failures', ''], r.rings.map((g, i) => [esc(g.ring),
      esc(g.status.state) + (g.status.soak_until ? ' <span class="muted">(soak until ' + esc(when(g.status.soak_until)) + ')</span>' : ''),
      esc(g.computers), esc(g.installed), esc(g.failed), esc(g.max_failure_percent) + '%',
      (canWrite() && r.owned_here && g.status.state !== 'open' && (i === 0 || r.rings[i - 1].status.state === 'open')) ? '<button type="button" class="promote" data-policy="' + esc(r.policy) + '" data-update="' + esc(r.update) + '">Promote</button>' : '']))).join(''))) return;
  for (const b of view.querySelectorAll('button.promote')) b.addEventListener('click', async () => {
    try { await api('rollout.promote', {policy: b.dataset.policy, update: b.dataset.update}); ++generation; await rollouts(); } catch (e) { alert(e.message); }
  });
}

async function content() {
  const gen = generation;
  const status = await api('content.status');
  const c = status.cache;
  paint(gen, '<h1>Content at this node</h1><p>' + esc(c.files) + ' files, ' + esc(c.bytes) + ' bytes' +
    (c.limit_bytes ? ' of ' + esc(c.limit_bytes) : ' (no limit)') + '; fetched ' + esc(c.fetched_bytes) + ' bytes in ' + esc(c.transfers) +
    ' transfers; served ' + esc(c.served_bytes) + ' bytes; ' + esc(c.evicted) + ' evicted</p>' +
    (c.in_flight.length ? table('In flight', ['sha256', 'received', 'size'], c.in_flight.map(f => [esc(f.sha256), esc(f.received), esc(f.size)])) : '') +
    table('Approved updates', ['update', 'files', 'bytes', 'here', 'missing'], status.updates.map(u => [esc(u.id), esc(u.files), esc(u.bytes),
      u.staged ? '<span class="good">yes</span>' : '<span class="bad">no</span>', esc(u.missing.join(', '))]), 'No approved update has content to keep here.'));
}

const pages = {
  dashboard, computers, computer, hierarchy, updates, rollouts, content,
  compliance: dashboard,
  policies: () => editor('Policies', 'policies.list', 'policies.upsert', 'policy', {id: 'new-policy', name: 'New policy', updates: {severities: ['Critical']}, targets: {}, enabled: true}),
  windows: () => editor('Maintenance windows', 'windows.list', 'windows.upsert', 'window', {id: 'nightly', name: 'Nightly', time_zone: 'UTC', start: '22:00', duration_minutes: 240}),
};

async function route() {
  const gen = ++generation;
  const [name, query] = location.hash.slice(1).split('?');
  const page = pages[name] || dashboard;
  const current = pages[name] ? name : 'dashboard';
  for (const a of document.querySelectorAll('#tabs a')) {
    const active = a.hash === '#' + current;
    a.className = active ? 'active' : '';
    if (active) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  view.setAttribute('aria-busy', 'true');
  try { await page(new URLSearchParams(query || '')); }
  catch (e) {
    if (me) paint(gen, '<h1>Cannot show this page</h1><p class="bad" role="alert">' + esc(e.message) + '</p><p>Check the filters or the address, or go back to the <a href="#dashboard">dashboard</a>.</p>');
  } finally { view.removeAttribute('aria-busy'); }
}

async function start() {
  if (!token()) return showSignin();
  try { me = await api('me'); } catch (e) { return showSignin(e.message); }
  document.getElementById('signin').hidden = true;
  document.getElementById('signout').hidden = false;
  document.getElementById('who').textContent = me.caller.name + ' (' + me.caller.role + ') at ' + me.node;
  await route();
}
window.addEventListener('hashchange', route);
start();
