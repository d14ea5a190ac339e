// auth.e2e.mjs: authentication and authorization against the real vdesk-controller binary: 401
// without a token, 403 for an expired, forged or other-VM token and for another link's session,
// per-VM agent secrets, the admin API, WebSocket Origin checks, and what the viewer page shows
// for 401/403 in Debian's Chromium (a clear message, no retry loop). No Xvfb or agent binary:
// the "agent" is a WebSocket opened from a same-origin page.
//
// Run: node --test web/test/e2e/auth.e2e.mjs (binaries from $VDESK_BIN_DIR; VDESK_E2E=0 skips).

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';

import {
  CONTROLLER_BIN,
  Processes,
  errorPanelText,
  launchChromium,
  mintToken,
  newSecret,
  recordConsole,
  reportingFailures,
  sleep,
  startController,
  viewerState,
  waitFor,
} from './harness.mjs';

const skip = process.env.VDESK_E2E === '0' ? 'VDESK_E2E=0' : false;
const OFFER = 'v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n';

describe('auth end to end (vdesk-controller + Chromium)', { skip }, () => {
  const procs = new Processes();
  const consoles = [];
  const reports = () => `${consoles.join('\n')}\n${procs.report()}`;
  let ctl;
  let browser;
  let agentPage;

  /** fetch + JSON against the controller; `token` as a Bearer header. */
  async function api(path, { method = 'GET', token, body } = {}) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(`${ctl.base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(5000),
    });
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      // not JSON (SSE); the status is what matters
    }
    return { status: res.status, json, headers: res.headers };
  }

  /**
   * Opens the agents' WebSocket from the page and answers the controller's challenge with the
   * hello of protocol 2 (an HMAC of the secret over the nonce); resolves to the first reply.
   */
  function agentHello(page, vmId, token) {
    return page.evaluate(
      ({ vmId, token }) =>
        new Promise((resolve) => {
          const ws = new WebSocket(`ws://${location.host}/api/agent/ws`);
          window.__agentWs = ws;
          window.__agentMsgs = [];
          ws.onmessage = async (e) => {
            const msg = JSON.parse(e.data);
            if (msg.type === 'challenge') {
              const enc = new TextEncoder();
              const key = await crypto.subtle.importKey('raw', enc.encode(token), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
              const mac = await crypto.subtle.sign('HMAC', key, enc.encode(`vdesk-agent-hello-v1:${msg.nonce}:${vmId}`));
              const proof = [...new Uint8Array(mac)].map((b) => b.toString(16).padStart(2, '0')).join('');
              ws.send(JSON.stringify({ type: 'hello', vmId, proof, protocolVersion: 2, agentVersion: 'e2e' }));
              return;
            }
            window.__agentMsgs.push(msg);
            if (window.__agentMsgs.length === 1) resolve(msg);
          };
          ws.onerror = () => resolve({ type: 'socket-error' });
          ws.onclose = (e) => resolve({ type: 'closed', code: e.code });
        }),
      { vmId, token },
    );
  }

  before(async () => {
    if (!existsSync(CONTROLLER_BIN)) throw new Error(`${CONTROLLER_BIN} is missing: build it or set VDESK_BIN_DIR`);
    try {
      ctl = await startController(procs, { vms: ['demo', 'other'] });
      browser = await launchChromium();
      agentPage = await browser.newPage();
      recordConsole(agentPage, 'agent', consoles);
      await agentPage.goto(`${ctl.base}/healthz`);
      const welcome = await agentHello(agentPage, 'demo', await ctl.agentSecret('demo'));
      assert.equal(welcome.type, 'welcome', JSON.stringify(welcome));
    } catch (e) {
      console.error(reports());
      throw e;
    }
  });

  after(async () => {
    await browser?.close();
    await procs.stopAll();
  });

  it('answers 401 without a token and 403 for expired, forged or other-VM tokens', { timeout: 30000 }, () =>
    reportingFailures(reports, async () => {
      const create = { vmId: 'demo', offer: { type: 'offer', sdp: OFFER } };
      for (const [path, opts] of [
        ['/api/vms/demo', {}],
        ['/api/webrtc/config', {}],
        ['/api/webrtc/session', { method: 'POST', body: create }],
      ]) {
        const r = await api(path, opts);
        assert.equal(r.status, 401, path);
        assert.equal(r.json.error.code, 'unauthorized', path);
      }
      const expired = await ctl.token('demo', { ttl: '1s' });
      const forged = await mintToken(newSecret(), 'demo');
      const otherVm = await ctl.token('other');
      await sleep(1100);
      for (const [token, words] of [
        [expired, /expired/],
        [forged, /signature/],
        [otherVm, /another VM/],
      ]) {
        for (const [path, opts] of [
          ['/api/vms/demo', {}],
          ['/api/webrtc/session', { method: 'POST', body: create }],
        ]) {
          const r = await api(path, { ...opts, token });
          assert.equal(r.status, 403, `${path}: ${JSON.stringify(r.json)}`);
          assert.equal(r.json.error.code, 'forbidden');
          assert.match(r.json.error.message, words);
        }
      }
    }));

  it('keeps a session to the link that created it, and the agent gets its permission', { timeout: 30000 }, () =>
    reportingFailures(reports, async () => {
      const mine = await ctl.token('demo', { permission: 'view' });
      const theirs = await ctl.token('demo');
      const created = await api('/api/webrtc/session', {
        method: 'POST',
        token: mine,
        body: { vmId: 'demo', offer: { type: 'offer', sdp: OFFER } },
      });
      assert.equal(created.status, 201, JSON.stringify(created.json));
      const id = created.json.sessionId;
      const offer = await waitFor('the offer at the agent', () =>
        agentPage.evaluate((id) => window.__agentMsgs.find((m) => m.type === 'offer' && m.sessionId === id), id),
      );
      assert.equal(offer.permission, 'view', 'the permission comes from the token');

      const base = `/api/webrtc/session/${id}`;
      const cand = { candidate: { candidate: 'candidate:1 1 UDP 2122252543 192.0.2.1 50001 typ host', sdpMLineIndex: 0 }, from: 'browser' };
      for (const [path, opts] of [
        [`${base}/events`, {}],
        [`${base}/answer`, {}],
        [`${base}/candidates/vm`, {}],
        [`${base}/candidate`, { method: 'POST', body: cand }],
        [base, { method: 'DELETE' }],
      ]) {
        assert.equal((await api(path, opts)).status, 401, `${path} without a token`);
        const r = await api(path, { ...opts, token: theirs });
        assert.equal(r.status, 403, `${path} with another link`);
        assert.match(r.json.error.message, /another viewer link/);
      }
      const agentGot = await agentPage.evaluate((id) => window.__agentMsgs.filter((m) => m.sessionId === id).map((m) => m.type), id);
      assert.deepEqual(agentGot, ['offer'], 'nothing from the refused requests reached the agent');
      // The owner's own requests work, the token also in the query (as EventSource sends it).
      assert.equal((await api(`${base}/answer?token=${mine}`)).status, 202);
      assert.equal((await api(`${base}/candidate`, { method: 'POST', body: cand, token: mine })).status, 204);
      assert.equal((await api(base, { method: 'DELETE', token: mine })).status, 204);
    }));

  it('registers an agent only with its own VM secret', { timeout: 20000 }, () =>
    reportingFailures(reports, async () => {
      const page = await browser.newPage();
      await page.goto(`${ctl.base}/healthz`);
      const reply = await agentHello(page, 'other', await ctl.agentSecret('demo'));
      assert.equal(reply.type, 'error');
      assert.equal(reply.code, 'unauthorized');
      assert.equal((await ctl.vmInfo('other')).body.online, false);
      assert.equal((await ctl.vmInfo('demo')).body.online, true, 'the real demo agent is untouched');
      await page.close();
    }));

  it('refuses WebSocket upgrades from another origin', { timeout: 20000 }, () =>
    reportingFailures(reports, async () => {
      // A raw upgrade request, as a browser on another site would send it (Chromium's own rules
      // for pages on other origins vary, so the request is made by hand).
      const upgrade = (origin) =>
        new Promise((resolve, reject) => {
          const headers = {
            Connection: 'Upgrade',
            Upgrade: 'websocket',
            'Sec-WebSocket-Version': '13',
            'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
          };
          if (origin) headers.Origin = origin;
          const req = http.request({ host: '127.0.0.1', port: ctl.port, path: '/api/agent/ws', headers });
          req.on('upgrade', (res, socket) => {
            socket.destroy();
            resolve(res.statusCode);
          });
          req.on('response', (res) => {
            res.resume();
            resolve(res.statusCode);
          });
          req.on('error', reject);
          req.end();
        });
      assert.equal(await upgrade('https://evil.example'), 403);
      assert.equal(await upgrade('null'), 403);
      assert.equal(await upgrade(`http://127.0.0.1:${ctl.port}`), 101, 'same origin');
      assert.equal(await upgrade(null), 101, 'no Origin (an agent)');
      await waitFor('the refusal in the controller log', () => procs.report().includes('Origin does not match Host'), {
        timeoutMs: 3000,
      });
    }));

  it('mints working links from the admin API', { timeout: 20000 }, () =>
    reportingFailures(reports, async () => {
      const body = { vmId: 'demo', permission: 'control', ttl: '10m' };
      assert.equal((await api('/api/admin/links', { method: 'POST', body })).status, 401);
      assert.equal((await api('/api/admin/links', { method: 'POST', body, token: 'x'.repeat(20) })).status, 403);
      const r = await api('/api/admin/links', { method: 'POST', body, token: ctl.adminToken });
      assert.equal(r.status, 201, JSON.stringify(r.json));
      assert.equal(r.json.url, `${ctl.base}/vm/demo?token=${r.json.token}`);
      assert.equal((await api('/api/vms/demo', { token: r.json.token })).status, 200);
    }));

  for (const [name, url, code, text] of [
    ['a link for another VM', async () => `${ctl.base}/vm/demo?token=${await ctl.token('other')}`, 'forbidden', /Access denied/],
    ['no token at all', async () => `${ctl.base}/vm/demo`, 'unauthorized', /Not authorized/],
  ]) {
    it(`the page says so for ${name}, and does not retry`, { timeout: 30000 }, () =>
      reportingFailures(reports, async () => {
        const page = await browser.newPage();
        recordConsole(page, name, consoles);
        await page.goto(await url());
        const shown = await waitFor('the error panel', async () => {
          const t = await errorPanelText(page);
          return text.test(t) && t;
        }, { timeoutMs: 5000 });
        assert.match(shown, /link/, 'the hint says what to do');
        await sleep(3000);
        const st = await viewerState(page);
        assert.equal(st.lastError.code, code);
        assert.equal(await page.evaluate(() => window.vdeskViewer.attempts), 1, 'no retry loop');
        await page.close();
      }));
  }
});
