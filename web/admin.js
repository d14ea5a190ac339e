// admin.js: the /admin page. Asks for the admin token (kept in this tab's sessionStorage, never
// in the address), then every few seconds reads GET /api/admin/vms and /api/admin/sessions and
// each online VM's thumbnail, and draws one card per VM: thumbnail, agent version, uptime,
// encoders, a form to mint a view or control link (shown with its QR code), and the VM's
// sessions with buttons to end one or revoke its link. Everything from the server goes into the
// page as text (textContent), except the QR code's SVG, which the controller makes itself.

const KEY = 'vdesk-admin-token';
const REFRESH_MS = 3000;
const THUMB_MS = 5000;

const $ = (id) => document.getElementById(id);
let token = globalThis.sessionStorage?.getItem(KEY) || '';
let timer = null;
let thumbTimer = null;
const thumbUrls = new Map();
let currentLink = null;

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  if (resp.status === 401 || resp.status === 403) {
    signOut('The admin token was refused. Enter it again.');
    throw new Error('unauthorized');
  }
  if (!resp.ok) {
    let msg = `${resp.status}`;
    try { msg = (await resp.json()).error.message; } catch { /* not JSON */ }
    throw new Error(msg);
  }
  return resp;
}

export function formatUptime(secs) {
  if (secs == null) return '—';
  const d = Math.floor(secs / 86400), h = Math.floor((secs % 86400) / 3600), m = Math.floor((secs % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${secs % 60}s`;
  return `${secs}s`;
}

export function formatBitrate(kbps) {
  if (kbps == null) return '—';
  return kbps >= 1000 ? `${(kbps / 1000).toFixed(1)} Mbit/s` : `${Math.round(kbps)} kbit/s`;
}

function fact(label, value) {
  return el('span', {}, `${label} `, el('b', { text: value }));
}

// The transport of a session: the local ICE candidate type of its selected pair (WebRTC), or
// the WebSocket fallback through the controller.
export function formatTransport(s) {
  if (s.transport === 'websocket') return 'WebSocket';
  if (!s.connected) return 'connecting';
  if (s.transport === 'relay') return 'WebRTC via TURN (relay)';
  if (['host', 'srflx', 'prflx'].includes(s.transport)) return `WebRTC direct (${s.transport})`;
  return 'WebRTC';
}

// Who holds control: the agent says so (holdsControl); an older agent does not, and then only
// the link's permission is known.
export function formatControl(s) {
  if (s.holdsControl === true) return 'in control';
  if (s.permission === 'view') return 'watches';
  return s.holdsControl === false ? 'not in control' : 'may take control';
}

function sessionRow(s) {
  const perm = el('span', { class: `pill ${s.permission}`, text: s.permission });
  const state = el('span', {}, el('span', { class: `dot ${s.connected ? 'ok' : ''}` }), formatTransport(s));
  // WebSocket viewers are not in the relay's sessions: they end when their page closes.
  const end = s.transport === 'websocket' ? null : el('button', { class: 'small ghost', type: 'button', text: 'End session', 'data-action': 'end',
    onclick: () => act(() => api('DELETE', `/api/admin/sessions/${s.sessionId}`)) });
  const revoke = s.linkId ? el('button', { class: 'small danger', type: 'button', text: 'Revoke link', 'data-action': 'revoke',
    onclick: () => act(() => api('POST', `/api/admin/links/${s.linkId}/revoke`)) }) : null;
  return el('tr', { 'data-session': s.sessionId },
    el('td', { class: 'viewer', text: s.name ?? `viewer ${s.sessionId.slice(0, 6)}` }),
    el('td', {}, perm),
    el('td', { class: s.holdsControl ? 'control holder' : 'control', text: formatControl(s) }),
    el('td', {}, state),
    el('td', { text: formatBitrate(s.bitrateKbps) }),
    el('td', { text: s.rttMs != null ? `${Math.round(s.rttMs)} ms` : '—' }),
    el('td', { class: 'actions' }, end, revoke));
}

function vmCard(vm, sessions) {
  const thumb = el('div', { class: 'thumb', 'data-thumb': vm.vmId });
  const url = thumbUrls.get(vm.vmId);
  if (vm.online && url) thumb.append(el('img', { src: url, alt: `${vm.vmId} screen` }));
  else thumb.textContent = vm.online ? (vm.thumbnails ? 'loading…' : 'no thumbnail (older agent)') : 'offline';
  const encoders = vm.encoders.map((e) => `${e.codec} · ${e.encoder}${e.hardware ? ' (hw)' : ''}`).join(', ') || '—';
  const name = el('input', { placeholder: 'Viewer name', 'aria-label': 'Viewer name', maxlength: '40' });
  const perm = el('select', { 'aria-label': 'Permission' },
    el('option', { value: 'view', text: 'View only' }), el('option', { value: 'control', text: 'Control' }),
    el('option', { value: 'admin', text: 'Admin' }));
  const ttl = el('select', { 'aria-label': 'Valid for' },
    el('option', { value: '1h', text: '1 hour' }), el('option', { value: '8h', text: '8 hours' }),
    el('option', { value: '1d', text: '1 day' }), el('option', { value: '7d', text: '7 days' }));
  const mint = el('button', { type: 'button', text: 'Create link', 'data-action': 'mint',
    onclick: () => act(async () => {
      const body = { vmId: vm.vmId, permission: perm.value, ttl: ttl.value };
      if (name.value.trim()) body.name = name.value.trim();
      showLink(await (await api('POST', '/api/admin/links', body)).json());
    }) });
  const rows = sessions.map(sessionRow);
  const table = rows.length
    ? el('table', {}, el('thead', {}, el('tr', {}, ...['Viewer', 'Permission', 'Control', 'Transport', 'Bitrate', 'Latency', ''].map((h) => el('th', { text: h })))),
      el('tbody', {}, ...rows))
    : el('p', { class: 'nosessions', text: 'Nobody is watching.' });
  return el('article', { class: 'vm card', 'data-vm': vm.vmId },
    thumb,
    el('div', {},
      el('div', { class: 'vm-head' }, el('h2', { text: vm.vmId }),
        el('span', { class: `badge ${vm.online ? 'online' : 'offline'}`, text: vm.online ? 'online' : 'offline' })),
      el('div', { class: 'facts' },
        fact('Agent', vm.agentVersion ?? '—'), fact('Uptime', formatUptime(vm.uptimeSecs)),
        fact('Encoders', encoders), fact('Sessions', String(vm.sessions))),
      el('div', { class: 'mint' }, name, perm, ttl, mint),
      table));
}

async function act(fn) {
  try {
    await fn();
    $('banner').hidden = true;
  } catch (e) {
    if (e.message !== 'unauthorized') { $('banner').textContent = e.message; $('banner').hidden = false; }
  }
  await refresh();
}

function showLink(link) {
  currentLink = link;
  $('link-vm').textContent = link.vmId;
  $('link-perm').textContent = link.permission;
  $('link-expiry').textContent = `until ${new Date(link.expiresAt * 1000).toLocaleString()}`;
  $('link-url').value = link.url;
  $('link-open').href = link.url;
  $('link-qr').innerHTML = link.qrSvg; // made by the controller from the URL: rectangles only
  $('link-revoke').disabled = false;
  $('link-revoke').textContent = 'Revoke link';
  if (!$('link-dialog').open) $('link-dialog').showModal();
}

async function refresh() {
  if (!token) return;
  try {
    const [vms, sessions] = await Promise.all([
      api('GET', '/api/admin/vms').then((r) => r.json()),
      api('GET', '/api/admin/sessions').then((r) => r.json()),
    ]);
    const byVm = new Map();
    for (const s of sessions.sessions) byVm.set(s.vmId, [...(byVm.get(s.vmId) ?? []), s]);
    const online = vms.vms.filter((v) => v.online).length;
    const n = sessions.sessions.length;
    $('summary').textContent = `${online} of ${vms.vms.length} VMs online · ${n} session${n === 1 ? '' : 's'}`;
    $('vms').replaceChildren(...vms.vms.map((v) => vmCard(v, byVm.get(v.vmId) ?? [])));
    $('no-vms').hidden = vms.vms.length > 0;
    return vms.vms;
  } catch (e) {
    if (e.message !== 'unauthorized') { $('banner').textContent = `Cannot reach the controller: ${e.message}`; $('banner').hidden = false; }
    return [];
  }
}

async function refreshThumbs() {
  const vms = await refresh();
  await Promise.all((vms ?? []).filter((v) => v.online && v.thumbnails).map(async (v) => {
    try {
      const blob = await (await api('GET', `/api/admin/vms/${encodeURIComponent(v.vmId)}/thumbnail`)).blob();
      const old = thumbUrls.get(v.vmId);
      thumbUrls.set(v.vmId, URL.createObjectURL(blob));
      if (old) URL.revokeObjectURL(old);
    } catch { /* keep the last one */ }
  }));
  await refresh();
}

function signIn() {
  $('login').hidden = true;
  $('dashboard').hidden = false;
  $('sign-out').hidden = false;
  refreshThumbs();
  timer = setInterval(refresh, REFRESH_MS);
  thumbTimer = setInterval(refreshThumbs, THUMB_MS);
}

function signOut(message = '') {
  token = '';
  sessionStorage.removeItem(KEY);
  clearInterval(timer);
  clearInterval(thumbTimer);
  $('dashboard').hidden = true;
  $('sign-out').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message;
  $('summary').textContent = '';
}

function init() {
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    token = $('token').value.trim();
    $('token').value = '';
    sessionStorage.setItem(KEY, token);
    signIn();
  });
  $('sign-out').addEventListener('click', () => signOut());
  $('link-copy').addEventListener('click', () => navigator.clipboard?.writeText($('link-url').value));
  $('link-revoke').addEventListener('click', () => act(async () => {
    await api('POST', `/api/admin/links/${currentLink.id}/revoke`);
    $('link-revoke').disabled = true;
    $('link-revoke').textContent = 'Revoked';
  }));
  if (token) signIn(); else signOut();
}

if (typeof document !== 'undefined') init();
