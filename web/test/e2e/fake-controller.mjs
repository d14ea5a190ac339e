// fake-controller.mjs: a small in-memory stand-in for vdesk-controller's viewer API
// (docs/protocol.md: VM info, WebRTC config, sessions, SSE events, answer and candidate polls,
// DELETE) that serves web/ like the controller does, so the viewer can be tested end to end while
// the real controller and agent are elsewhere. Its "agent" is a Chromium page (fake-agent.html)
// that answers with a real RTCPeerConnection sending a canvas: real ICE, DTLS and SRTP, no mock
// SDP. Test code only; it is not the controller and makes no claim to match its every behaviour.

import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const TYPES = { '.js': 'text/javascript', '.css': 'text/css', '.ts': 'text/plain', '.html': 'text/html' };
const AGENT_GONE_MS = 1500;

export class FakeController {
  vms = new Map(); // vmId -> {lastSeen, offers: []}
  sessions = new Map(); // id -> session
  server = null;

  /** `vms`: the VM ids the controller knows (like `--vm`); `eventStream: false` answers the SSE
   *  route with 404, to test the viewer's fallback to polling. */
  constructor(vms, { eventStream = true } = {}) {
    this.eventStream = eventStream;
    for (const v of vms) this.vms.set(v, { lastSeen: 0, offers: [] });
  }

  async listen() {
    this.server = http.createServer((req, res) => {
      this.#handle(req, res).catch((e) => {
        if (!res.headersSent) this.#error(res, 500, 'internal', e.message);
      });
    });
    await new Promise((r) => this.server.listen(0, '127.0.0.1', r));
    this.closer = setInterval(() => this.#reapAgents(), 250);
    return `http://127.0.0.1:${this.server.address().port}`;
  }

  async close() {
    clearInterval(this.closer);
    for (const s of this.sessions.values()) for (const c of s.streams) c.end();
    this.server?.closeAllConnections?.();
    await new Promise((r) => this.server?.close(r) ?? r());
  }

  #online(vmId) {
    const vm = this.vms.get(vmId);
    return !!vm && Date.now() - vm.lastSeen < AGENT_GONE_MS;
  }

  /** Ends every session of agents that stopped polling (the real one sees its WebSocket close). */
  #reapAgents() {
    for (const s of this.sessions.values()) {
      if (!s.ended && !this.#online(s.vmId)) this.#end(s, 'agent_disconnected', 'VM agent disconnected');
    }
  }

  #push(s, msg) {
    s.events.push(msg);
    const id = s.events.length;
    for (const c of s.streams) c.write(`id: ${id}\nevent: ${msg.type}\ndata: ${JSON.stringify(msg)}\n\n`);
  }

  #end(s, code, reason) {
    if (s.ended) return;
    s.ended = { code, reason };
    this.#push(s, { type: 'ended', code, reason });
    for (const c of s.streams) c.end();
  }

  #json(res, status, body) {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(body === undefined ? '' : JSON.stringify(body));
  }

  #error(res, status, code, message) {
    this.#json(res, status, { error: { code, message } });
  }

  async #body(req) {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    return chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : null;
  }

  async #file(res, name, type) {
    try {
      const body = await readFile(path.join(WEB, name));
      res.writeHead(200, { 'content-type': type ?? TYPES[path.extname(name)] ?? 'application/octet-stream' });
      res.end(body);
    } catch {
      this.#error(res, 404, 'not_found', 'no such file');
    }
  }

  async #handle(req, res) {
    const url = new URL(req.url, 'http://x');
    const p = url.pathname;
    const m = (re) => re.exec(p);
    let g;
    if (req.method === 'GET' && m(/^\/vm\/[^/]+\/?$/)) return this.#file(res, 'viewer.html');
    if (req.method === 'GET' && (g = m(/^\/assets\/([a-z.]+)$/))) return this.#file(res, g[1]);
    if (req.method === 'GET' && p === '/fake-agent.html') return this.#file(res, 'test/e2e/fake-agent.html');
    if (p === '/healthz') return res.end('ok');
    if (req.method === 'GET' && (g = m(/^\/api\/vms\/([^/]+)$/))) {
      if (!this.vms.has(g[1])) return this.#error(res, 404, 'vm_not_found', 'unknown VM');
      return this.#json(res, 200, { vmId: g[1], online: this.#online(g[1]) });
    }
    if (req.method === 'GET' && p === '/api/webrtc/config') return this.#json(res, 200, { iceServers: [] });
    if (req.method === 'POST' && p === '/api/webrtc/session') {
      const { vmId, offer } = await this.#body(req);
      if (!this.vms.has(vmId)) return this.#error(res, 404, 'vm_not_found', 'unknown VM');
      if (!this.#online(vmId)) return this.#error(res, 503, 'agent_offline', 'VM agent is offline');
      const id = randomBytes(16).toString('hex');
      const s = { id, vmId, answer: null, events: [], streams: new Set(), ended: null };
      s.candidates = { vm: [], browser: [] };
      s.cursor = { vm: 0, browser: 0 };
      s.complete = { vm: false, browser: false };
      this.sessions.set(id, s);
      this.vms.get(vmId).offers.push({ sessionId: id, sdp: offer.sdp });
      return this.#json(res, 201, { sessionId: id, vmId, eventsUrl: `/api/webrtc/session/${id}/events` });
    }
    // The fake agent's side: fetch offers (this is its heartbeat) and post answers.
    if (req.method === 'GET' && (g = m(/^\/fake\/agent\/([^/]+)\/offers$/))) {
      const vm = this.vms.get(g[1]);
      vm.lastSeen = Date.now();
      return this.#json(res, 200, { offers: vm.offers.splice(0) });
    }
    if (req.method === 'POST' && p === '/fake/agent/answer') {
      const { sessionId, sdp } = await this.#body(req);
      const s = this.sessions.get(sessionId);
      s.answer = sdp;
      this.#push(s, { type: 'answer', sdp });
      return this.#json(res, 204);
    }
    if ((g = m(/^\/api\/webrtc\/session\/([0-9a-f]{32})(\/.*)?$/))) {
      const s = this.sessions.get(g[1]);
      if (!s) return this.#error(res, 404, 'session_not_found', 'unknown session');
      const rest = g[2] ?? '';
      if (req.method === 'DELETE' && rest === '') {
        this.#end(s, 'viewer_left', 'viewer left');
        return this.#json(res, 204);
      }
      if (req.method === 'GET' && rest === '/events' && this.eventStream) {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
        const from = Number(req.headers['last-event-id'] ?? 0);
        s.events.slice(from).forEach((msg, i) => {
          res.write(`id: ${from + i + 1}\nevent: ${msg.type}\ndata: ${JSON.stringify(msg)}\n\n`);
        });
        if (s.ended) return res.end();
        s.streams.add(res);
        req.on('close', () => s.streams.delete(res));
        return;
      }
      if (s.ended) return this.#error(res, 410, s.ended.code, s.ended.reason);
      if (req.method === 'GET' && rest === '/answer') {
        return s.answer ? this.#json(res, 200, { type: 'answer', sdp: s.answer }) : this.#json(res, 202, { status: 'pending' });
      }
      if (req.method === 'POST' && rest === '/candidate') {
        const { candidate, from } = await this.#body(req);
        const c = candidate ?? { candidate: '' };
        s.candidates[from].push(c);
        if (!c.candidate) s.complete[from] = true;
        if (from === 'vm') this.#push(s, { type: 'candidate', candidate: c });
        return this.#json(res, 204);
      }
      if (req.method === 'GET' && (g = /^\/candidates\/(vm|browser)$/.exec(rest))) {
        const side = g[1];
        const list = s.candidates[side].slice(s.cursor[side]);
        s.cursor[side] = s.candidates[side].length;
        return this.#json(res, 200, { candidates: list, complete: s.complete[side] });
      }
    }
    return this.#error(res, 404, 'not_found', `no route ${req.method} ${p}`);
  }
}
