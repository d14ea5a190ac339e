// unit.test.mjs: the viewer's unit tests, no browser: vdesk.js's pure helpers against the JSON
// examples that crates/protocol/tests/fixtures.rs checks against the Rust types, and the
// VdeskViewer flow driven through fake fetch / EventSource / RTCPeerConnection.
// Run: node --test web/test/

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

import {
  ERROR_TEXTS,
  STAGES,
  STAGE_LABELS,
  VIEWER_MESSAGE_TYPES,
  VdeskError,
  VdeskViewer,
  candidateKey,
  candidatePostBody,
  createSessionBody,
  describeError,
  errorFromResponse,
  isRetryable,
  isValidVmId,
  joinUrl,
  nextStage,
  parseAnswerPoll,
  parseCandidateList,
  parseRtcConfig,
  parseSessionCreated,
  parseViewerMessage,
  parseVmInfo,
  retryDelay,
  stageForConnectionState,
  stageForIceConnectionState,
  addressWithoutToken,
  takePageToken,
  tokenFromSearch,
  tokenStorageKey,
  vmIdFromPath,
  withToken,
} from '../vdesk.js';

const fixtures = JSON.parse(readFileSync(new URL('./fixtures/messages.json', import.meta.url), 'utf8'));
const fx = (name) => {
  const m = fixtures.messages.find((m) => m.name === name);
  assert.ok(m, `fixture ${name}`);
  return structuredClone(m.json);
};
const byRust = (rust) => fixtures.messages.filter((m) => m.rust === rust);

describe('wire messages (fixtures shared with the Rust tests)', () => {
  it('dispatches every ControllerToViewer example by its type, from SSE text and from objects', () => {
    const examples = byRust('ControllerToViewer');
    assert.deepEqual(new Set(examples.map((m) => m.json.type)), new Set(VIEWER_MESSAGE_TYPES));
    for (const { name, json } of examples) {
      for (const data of [JSON.stringify(json), structuredClone(json)]) {
        const msg = parseViewerMessage(data, json.type);
        assert.equal(msg.type, json.type, name);
        if (msg.type === 'answer') assert.equal(msg.sdp, json.sdp);
        if (msg.type === 'candidate') assert.deepEqual(msg.candidate, json.candidate);
        if (msg.type === 'peerState') assert.equal(msg.state, json.state);
        if (msg.type === 'ended') assert.deepEqual([msg.code, msg.reason], [json.code, json.reason]);
      }
    }
  });

  it('refuses messages whose type is not their SSE event name, or unknown, or malformed', () => {
    assert.throws(() => parseViewerMessage(JSON.stringify(fx('eventAnswer')), 'candidate'), VdeskError);
    assert.throws(() => parseViewerMessage('{"type":"bogus"}'), /unknown message type/);
    assert.throws(() => parseViewerMessage('not json', 'answer'), VdeskError);
    assert.throws(() => parseViewerMessage({ type: 'answer' }), /sdp/);
    assert.throws(() => parseViewerMessage({ type: 'candidate', candidate: { candidate: 5 } }), /candidate/);
  });

  it('treats an empty candidate string as end-of-candidates, and keeps sdpMid/sdpMLineIndex', () => {
    const end = parseViewerMessage(fx('eventEndOfCandidates'), 'candidate');
    assert.equal(end.endOfCandidates, true);
    assert.deepEqual(end.candidate, { candidate: '', sdpMLineIndex: 0 });
    const real = parseViewerMessage(fx('eventCandidate'), 'candidate');
    assert.equal(real.endOfCandidates, false);
    // A missing candidate string (as Rust's #[serde(default)] allows) is end-of-candidates too.
    assert.equal(parseViewerMessage({ type: 'candidate', candidate: { sdpMLineIndex: 0 } }).endOfCandidates, true);
    const list = parseCandidateList(fx('candidateList'));
    assert.equal(list.complete, true);
    assert.equal(list.candidates.at(-1).candidate, '');
    assert.notEqual(candidateKey(list.candidates[0]), candidateKey(list.candidates[1]));
  });

  it('builds the bodies it sends exactly like the examples', () => {
    const create = fx('createSession');
    assert.deepEqual(createSessionBody('demo', { type: 'offer', sdp: create.offer.sdp }), create);

    const post = fx('postCandidate');
    const rtcCandidate = { toJSON: () => ({ ...post.candidate }), candidate: post.candidate.candidate };
    assert.deepEqual(candidatePostBody(rtcCandidate), post);
    assert.deepEqual(candidatePostBody(post.candidate), post);
    // End of candidates: onicecandidate's null, and Chrome's empty candidate, are both sent as null.
    assert.deepEqual(candidatePostBody(null), fx('postEndOfCandidates'));
    assert.deepEqual(candidatePostBody({ toJSON: () => ({ candidate: '', sdpMid: '0', sdpMLineIndex: 0 }) }), fx('postEndOfCandidates'));
    // Browsers may hand out null for absent fields: they are left out, not sent as null.
    assert.deepEqual(candidatePostBody({ candidate: 'candidate:1 1 udp 1 192.0.2.1 1 typ host', sdpMid: null, sdpMLineIndex: 0, usernameFragment: null }), {
      candidate: { candidate: 'candidate:1 1 udp 1 192.0.2.1 1 typ host', sdpMLineIndex: 0 },
      from: 'browser',
    });
  });

  it('reads the replies it gets', () => {
    assert.deepEqual(parseVmInfo(fx('vmInfo')), { vmId: 'demo', online: true });
    assert.equal(parseVmInfo(fx('vmInfoOffline')).online, false);
    assert.deepEqual(parseRtcConfig(fx('rtcConfig')).iceServers, fx('rtcConfig').iceServers);
    const created = parseSessionCreated(fx('sessionCreated'));
    assert.deepEqual(created, fx('sessionCreated'));
    const noEvents = fx('sessionCreated');
    delete noEvents.eventsUrl;
    assert.equal(parseSessionCreated(noEvents).eventsUrl, `/api/webrtc/session/${noEvents.sessionId}/events`);
    assert.throws(() => parseSessionCreated({ sessionId: 'nope' }), VdeskError);
    const old = fx('sessionCreated');
    delete old.grant;
    assert.deepEqual(parseSessionCreated(old).grant, { permission: 'view', clipboard: 'both' });
    const odd = fx('sessionCreated');
    odd.grant.permission = 'root';
    assert.equal(parseSessionCreated(odd).grant.permission, 'view');
    assert.equal(parseAnswerPoll(200, fx('answerPoll')), fx('answerPoll').sdp);
    assert.equal(parseAnswerPoll(202, fx('answerPending')), null);
    assert.deepEqual(parseCandidateList(fx('candidateListEmpty')), { candidates: [], complete: false });
    assert.throws(() => parseVmInfo({ vmId: 'demo' }), VdeskError);
  });

  it('turns error bodies into their codes, and a bare status into a sensible one', () => {
    const offline = errorFromResponse(503, fx('errorAgentOffline'));
    assert.equal(offline.code, 'agent_offline');
    assert.equal(offline.detail, 'VM agent is offline');
    assert.equal(errorFromResponse(404, fx('errorVmNotFound')).code, 'vm_not_found');
    assert.equal(errorFromResponse(404, null).code, 'not_found');
    assert.equal(errorFromResponse(502, null).code, 'internal');
    assert.equal(errorFromResponse(418, 'teapot').code, 'bad_response');
  });

  it('has the same VM id rules as the Rust VmId', () => {
    for (const ok of ['demo', 'ci-runner_7.eu', 'x'.repeat(64)]) assert.ok(isValidVmId(ok), ok);
    for (const bad of ['', '.hidden', 'a/b', 'a b', 'é', 'x'.repeat(65), null]) assert.ok(!isValidVmId(bad), String(bad));
    for (const m of fixtures.messages) if (m.json.vmId) assert.ok(isValidVmId(m.json.vmId), m.name);
  });
});

describe('every fixture fits vdesk.d.ts', () => {
  const dts = readFileSync(new URL('../vdesk.d.ts', import.meta.url), 'utf8');
  const block = (name) => {
    const m = new RegExp(`export interface ${name}\\b[^{]*\\{([\\s\\S]*?)\\n\\}`).exec(dts);
    return m?.[1] ?? null;
  };
  it('declares each Rust type with the fields of its examples', () => {
    for (const m of fixtures.messages) {
      if (m.rust === 'ControllerToViewer') {
        assert.match(dts, new RegExp(`type: '${m.json.type}';`), `${m.name}: a declaration with type '${m.json.type}'`);
        continue;
      }
      if (m.rust === 'ViewerToAgent' || m.rust === 'AgentToViewer') {
        // The interface in the union whose `type` is this one (FramePoint fields are inherited).
        const union = new RegExp(`export type ${m.rust} =([\\s\\S]*?);`).exec(dts)?.[1] ?? '';
        const names = [...union.matchAll(/(\w+Message)/g)].map((x) => x[1]);
        const name = names.find((n) => new RegExp(`type: '${m.json.type}';`).test(block(n) ?? ''));
        assert.ok(name, `${m.name}: no interface with type '${m.json.type}' in ${m.rust}`);
        const body = block(name) + (/extends FramePoint/.test(dts.split(`interface ${name}`)[1]?.split('{')[0] ?? '') ? block('FramePoint') : '');
        for (const key of Object.keys(m.json)) {
          assert.match(body, new RegExp(`\\b${key}\\??:`), `${m.name}: ${name} has no field ${key}`);
        }
        continue;
      }
      const name = m.rust ?? 'AnswerPending';
      const body = block(name);
      assert.ok(body, `${m.name}: no interface ${name} in vdesk.d.ts`);
      for (const key of Object.keys(m.json)) {
        assert.match(body, new RegExp(`\\b${key}\\??:`), `${m.name}: ${name} has no field ${key}`);
      }
    }
  });
  it('lists exactly the Rust error codes', () => {
    const union = /export type ErrorCode =([\s\S]*?);/.exec(dts)[1];
    const codes = [...union.matchAll(/'([a-z_]+)'/g)].map((m) => m[1]);
    assert.deepEqual(new Set(codes), new Set(fixtures.errorCodes));
  });
});

describe('stages', () => {
  it('never move backwards; failed and closed are terminal', () => {
    assert.equal(nextStage('dtls', 'ice-checking'), 'dtls');
    assert.equal(nextStage('ice-checking', 'connected'), 'connected');
    assert.equal(nextStage('streaming', 'connected'), 'streaming');
    assert.equal(nextStage('streaming', 'failed'), 'failed');
    assert.equal(nextStage('failed', 'streaming'), 'failed');
    assert.equal(nextStage('failed', 'closed'), 'closed');
    assert.equal(nextStage('closed', 'failed'), 'closed');
    assert.equal(nextStage('signalling', 'nonsense'), 'signalling');
    for (const a of STAGES) {
      for (const b of STAGES) {
        assert.ok(STAGES.indexOf(nextStage(a, b)) >= STAGES.indexOf(a), `${a} + ${b}`);
      }
    }
  });

  it('follow the browser\'s states, whatever order they come in', () => {
    // Chrome, typically: ICE checking, connection connecting, ICE connected, connection connected;
    // then ICE may flap to 'disconnected' and back, which must not move the stage back.
    const events = [
      ['ice', 'checking'],
      ['pc', 'connecting'],
      ['ice', 'connected'],
      ['pc', 'connected'],
      ['ice', 'disconnected'],
      ['ice', 'checking'],
      ['ice', 'connected'],
    ];
    let stage = 'signalling';
    const seen = [stage];
    for (const [kind, s] of events) {
      const proposed = kind === 'ice' ? stageForIceConnectionState(s) : stageForConnectionState(s);
      if (proposed) stage = nextStage(stage, proposed);
      if (seen.at(-1) !== stage) seen.push(stage);
    }
    assert.deepEqual(seen, ['signalling', 'ice-checking', 'dtls', 'connected']);
    assert.equal(stageForIceConnectionState('completed'), 'dtls');
    assert.equal(stageForIceConnectionState('failed'), null);
  });

  it('have words for a person', () => {
    assert.equal(STAGE_LABELS.signalling, 'Contacting controller…');
    assert.equal(STAGE_LABELS['ice-checking'], 'Checking network paths (ICE)…');
    assert.equal(STAGE_LABELS.dtls, 'Securing connection (DTLS)…');
    assert.equal(STAGE_LABELS.connected, 'Connected, waiting for first frame…');
    for (const s of STAGES) assert.ok(STAGE_LABELS[s], s);
  });
});

describe('errors', () => {
  it('has a message and a hint for every controller error code', () => {
    for (const code of fixtures.errorCodes) {
      assert.ok(Object.hasOwn(ERROR_TEXTS, code), `no words for ${code}`);
      const e = describeError(code, { vmId: 'demo' });
      assert.ok(e.message && e.hint, code);
    }
  });

  it('says what the report and the operators expect', () => {
    assert.equal(describeError('agent_offline').message, 'VM agent is offline');
    assert.equal(describeError('agent_disconnected', { detail: 'VM agent disconnected' }).message, 'VM disconnected, reconnecting');
    assert.equal(describeError('agent_disconnected', { willRetry: false }).message, 'VM disconnected');
    assert.match(describeError('ice_failed').hint, /a firewall may block UDP between your browser and the VM, or a TURN server is missing/);
    assert.equal(describeError('vm_not_found', { vmId: 'nosuchvm' }).message, 'VM “nosuchvm” not found');
    assert.match(describeError('timeout', { stage: 'ice-checking' }).hint, /firewall/);
    assert.match(describeError('timeout', { stage: 'connected' }).hint, /no video frame/);
    assert.match(describeError('timeout', { stage: 'signalling' }).message, /waiting for the VM/);
    // Unknown codes show what the server said.
    assert.equal(describeError('brand_new_code', { detail: 'something new' }).message, 'something new');
    // The server's words are kept apart, and not repeated when they are ours.
    assert.equal(describeError('agent_offline', { detail: 'VM agent is offline' }).detail, '');
  });

  it('retries what can get better, with a back-off up to 10 s', () => {
    assert.equal(isRetryable('vm_not_found'), false);
    assert.equal(isRetryable('webrtc_unsupported'), false);
    for (const c of ['agent_offline', 'agent_disconnected', 'timeout', 'ice_failed', 'network', 'something_new']) {
      assert.equal(isRetryable(c), true, c);
    }
    assert.deepEqual([1, 2, 3, 4, 5, 50].map((n) => retryDelay(n, 2000)), [2000, 4000, 8000, 10000, 10000, 10000]);
  });

  it('finds the VM id in the page path and builds URLs', () => {
    assert.equal(vmIdFromPath('/vm/demo'), 'demo');
    assert.equal(vmIdFromPath('/vm/demo/'), 'demo');
    assert.equal(vmIdFromPath('/vm/a%2Eb'), 'a.b');
    assert.equal(vmIdFromPath('/vm/'), null);
    assert.equal(vmIdFromPath('/other/demo'), null);
    assert.equal(vmIdFromPath('/vm/%E0%A4%A'), null);
    assert.equal(joinUrl('', '/api/x'), '/api/x');
    assert.equal(joinUrl('http://h:1/', '/api/x'), 'http://h:1/api/x');
    assert.equal(joinUrl('http://h:1', 'https://other/y'), 'https://other/y');
  });

  it('reads the viewer token from the page address and adds it to URLs', () => {
    assert.equal(tokenFromSearch('?token=abc.DEF_-'), 'abc.DEF_-');
    assert.equal(tokenFromSearch('?x=1&token=t1'), 't1');
    assert.equal(tokenFromSearch(''), null);
    assert.equal(tokenFromSearch('?token='), null);
    assert.equal(withToken('/e', 'a.b'), '/e?token=a.b');
    assert.equal(withToken('/e?x=1', 'a b'), '/e?x=1&token=a%20b');
    assert.equal(withToken('/e', null), '/e');
  });

  it('takes the token out of the address, keeping the rest', () => {
    assert.equal(addressWithoutToken('http://h:8080/vm/demo?token=s.e.c'), '/vm/demo');
    assert.equal(addressWithoutToken('http://h/vm/demo?scale=1%3A1&token=abc&resize=1#x'), '/vm/demo?scale=1%3A1&resize=1#x');
    assert.equal(addressWithoutToken('http://h/vm/demo?relay=1'), '/vm/demo?relay=1');
  });

  it('keeps the token for reloads of this tab, and prefers a new one in the address', () => {
    const store = new Map();
    const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
    const key = tokenStorageKey('demo');
    assert.equal(takePageToken('', storage, key), null);
    assert.equal(takePageToken('?token=first', storage, key), 'first');
    // The reload: the address has no token any more.
    assert.equal(takePageToken('?scale=1:1', storage, key), 'first');
    assert.equal(takePageToken('?token=second', storage, key), 'second');
    assert.equal(takePageToken('', storage, key), 'second');
    assert.equal(takePageToken('', storage, tokenStorageKey('other-vm')), null);
    // Storage that throws (disabled): memory only.
    const broken = { getItem() { throw new Error('denied'); }, setItem() { throw new Error('denied'); } };
    assert.equal(takePageToken('?token=t', broken, key), 't');
    assert.equal(takePageToken('', broken, key), null);
    assert.equal(takePageToken('?token=t', null, key), 't');
  });
});

// -------------------------------------------------------------------------------------------------
// The flow of VdeskViewer, with fake browser APIs installed on globalThis for one test at a time.
// -------------------------------------------------------------------------------------------------

class FakeEventSource {
  static CLOSED = 2;
  static last = null;
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.listeners = new Map();
    FakeEventSource.last = this;
  }
  addEventListener(type, fn) {
    this.listeners.set(type, fn);
  }
  emit(msg) {
    this.listeners.get(msg.type)?.({ data: JSON.stringify(msg) });
  }
  close() {
    this.readyState = 2;
  }
}

class FakePeerConnection {
  static last = null;
  constructor(config) {
    this.config = config;
    this.iceConnectionState = 'new';
    this.connectionState = 'new';
    this.added = [];
    this.remote = null;
    this.closed = false;
    FakePeerConnection.last = this;
  }
  addTransceiver(kind, init) {
    this.transceiver ??= { kind, init };
    (this.transceivers ??= []).push({ kind, init });
  }
  createDataChannel(label) {
    this.channel = { label, close() {} };
    return this.channel;
  }
  async createOffer() {
    return { type: 'offer', sdp: fx('createSession').offer.sdp };
  }
  async setLocalDescription(d) {
    this.localDescription = d;
  }
  async setRemoteDescription(d) {
    await new Promise((r) => setTimeout(r, 5));
    this.remote = d;
  }
  async addIceCandidate(c) {
    assert.ok(this.remote, 'candidates are added only after the remote description');
    this.added.push(c);
  }
  state(ice, pc) {
    if (ice) {
      this.iceConnectionState = ice;
      this.oniceconnectionstatechange?.();
    }
    if (pc) {
      this.connectionState = pc;
      this.onconnectionstatechange?.();
    }
  }
  close() {
    this.closed = true;
  }
}

/** Installs fakes, runs `fn(ctx)`, restores globals. `routes(method, path, body)` -> [status, body]. */
async function withFakeBrowser(routes, fn) {
  const saved = ['fetch', 'EventSource', 'RTCPeerConnection', 'MediaStream'].map((k) => [k, globalThis[k]]);
  const requests = [];
  globalThis.fetch = async (url, init = {}) => {
    const method = init.method ?? 'GET';
    const body = init.body ? JSON.parse(init.body) : undefined;
    requests.push({ method, url, body, keepalive: init.keepalive, headers: init.headers ?? {} });
    const [status, reply] = (await routes(method, url, body)) ?? [404, { error: { code: 'not_found', message: url } }];
    return new Response(reply === undefined ? null : JSON.stringify(reply), {
      status,
      headers: { 'content-type': 'application/json' },
    });
  };
  globalThis.EventSource = FakeEventSource;
  globalThis.RTCPeerConnection = FakePeerConnection;
  globalThis.MediaStream = class {
    constructor(tracks) {
      this.tracks = tracks;
    }
  };
  try {
    return await fn({ requests });
  } finally {
    for (const [k, v] of saved) globalThis[k] = v;
  }
}

const tick = (ms = 10) => new Promise((r) => setTimeout(r, ms));

function fakeVideo() {
  const v = new EventTarget();
  v.readyState = 0;
  v.videoWidth = 0;
  v.play = async () => {};
  return v;
}

const SID = fx('sessionCreated').sessionId;
const happyRoutes = (method, url) => {
  if (url === '/api/vms/demo') return [200, fx('vmInfo')];
  if (url === '/api/vms/ghost') return [200, fx('vmInfoOffline')];
  if (url === '/api/webrtc/config') return [200, fx('rtcConfig')];
  if (method === 'POST' && url === '/api/webrtc/session') return [201, fx('sessionCreated')];
  if (url.startsWith(`/api/webrtc/session/${SID}`)) return [204, undefined];
  return null;
};

function record(viewer) {
  const events = [];
  for (const type of ['stage', 'error', 'firstframe', 'retrying']) {
    viewer.addEventListener(type, (e) => events.push([type, type === 'stage' ? e.detail.stage : e.detail]));
  }
  return events;
}

const quiet = { log() {}, debug() {}, warn() {}, error() {} };

describe('VdeskViewer flow (fake browser APIs)', () => {
  it('sends its token on every request and on the event stream', async () => {
    await withFakeBrowser(happyRoutes, async ({ requests }) => {
      const viewer = new VdeskViewer(fakeVideo(), { vmId: 'demo', logger: quiet, autoRetry: false, token: 'tok.en' });
      viewer.connect();
      await tick();
      const pc = FakePeerConnection.last;
      pc.onicecandidate({ candidate: null });
      await tick();
      viewer.close();
      const methods = requests.map((r) => r.method);
      for (const m of ['GET', 'POST', 'DELETE']) assert.ok(methods.includes(m), `a ${m} request was made`);
      for (const r of requests) assert.equal(r.headers.Authorization, 'Bearer tok.en', `${r.method} ${r.url}`);
      assert.equal(FakeEventSource.last.url, `${fx('sessionCreated').eventsUrl}?token=tok.en`);
    });
  });

  it('says "Access denied" on 403 and "Not authorized" on 401, and does not retry', async () => {
    for (const [status, code, text] of [
      [403, 'forbidden', 'Access denied'],
      [401, 'unauthorized', 'Not authorized'],
    ]) {
      const routes = (method, url) =>
        url === '/api/vms/demo' ? [status, { error: { code, message: 'the viewer token expired; ask for a new link' } }] : null;
      await withFakeBrowser(routes, async ({ requests }) => {
        const viewer = new VdeskViewer(fakeVideo(), { vmId: 'demo', logger: quiet, retryDelayMs: 10 });
        const events = record(viewer);
        viewer.connect();
        await tick(80);
        const errors = events.filter(([t]) => t === 'error').map(([, e]) => e);
        assert.equal(errors.length, 1);
        assert.equal(errors[0].code, code);
        assert.equal(errors[0].message, text);
        assert.equal(errors[0].willRetry, false);
        assert.match(errors[0].detail, /expired/);
        assert.equal(requests.length, 1, 'no retry');
        assert.equal(events.filter(([t]) => t === 'retrying').length, 0);
        viewer.close();
      });
    }
  });

  it('does not touch browser globals until connect()', () => {
    const v = new VdeskViewer(fakeVideo(), { vmId: 'demo', logger: quiet });
    assert.equal(v.stage, 'idle');
    assert.equal(v.pc, null);
    assert.equal(v.sessionId, null);
    assert.throws(() => new VdeskViewer(null, { vmId: 'demo' }), TypeError);
    assert.throws(() => new VdeskViewer(fakeVideo(), {}), TypeError);
  });

  it('signals, trickles both ways in order, and streams on the first frame', async () => {
    await withFakeBrowser(happyRoutes, async ({ requests }) => {
      const video = fakeVideo();
      const viewer = new VdeskViewer(video, { vmId: 'demo', logger: quiet, autoRetry: false });
      const events = record(viewer);
      const done = viewer.connect();
      await tick();
      const pc = FakePeerConnection.last;
      assert.deepEqual(pc.config.iceServers, fx('rtcConfig').iceServers);
      assert.deepEqual(pc.transceiver, { kind: 'video', init: { direction: 'recvonly' } });
      // The VM's sound: a recvonly audio m-line after the video one.
      assert.deepEqual(pc.transceivers[1], { kind: 'audio', init: { direction: 'recvonly' } });
      assert.equal(pc.channel.label, 'input');
      assert.equal(viewer.sessionId, SID);
      const create = requests.find((r) => r.method === 'POST' && r.url === '/api/webrtc/session');
      assert.deepEqual(create.body, fx('createSession'));
      assert.equal(FakeEventSource.last.url, fx('sessionCreated').eventsUrl);

      // Local candidates: posted in order; the empty one and the final null become one {candidate: null}.
      const post = fx('postCandidate');
      pc.onicecandidate({ candidate: { ...post.candidate, toJSON: () => post.candidate } });
      pc.onicecandidate({ candidate: { candidate: '', toJSON: () => ({ candidate: '', sdpMLineIndex: 0 }) } });
      pc.onicecandidate({ candidate: null });
      await tick();
      const posted = requests.filter((r) => r.url.endsWith('/candidate')).map((r) => r.body);
      assert.deepEqual(posted, [post, fx('postEndOfCandidates')]);

      // Remote candidates before the answer wait for it; duplicates are added once.
      const es = FakeEventSource.last;
      es.emit(fx('eventCandidate'));
      es.emit(fx('eventAnswer'));
      es.emit(fx('eventCandidate'));
      es.emit(fx('eventEndOfCandidates'));
      es.emit(fx('eventPeerState'));
      await tick(30);
      assert.deepEqual(pc.added, [fx('eventCandidate').candidate, fx('eventEndOfCandidates').candidate]);

      pc.state('checking', 'connecting');
      pc.state('connected');
      pc.state(null, 'connected');
      pc.state('disconnected');
      pc.ontrack({ track: { kind: 'video' }, receiver: { jitterBufferTarget: 500 }, streams: [{ id: 's' }] });
      assert.deepEqual(video.srcObject, { id: 's' });
      assert.equal(video.muted, true);
      video.readyState = 2;
      video.videoWidth = 1280;
      video.dispatchEvent(new Event('loadeddata'));
      assert.equal(await done, true);
      assert.deepEqual(
        events.filter(([t]) => t === 'stage').map(([, s]) => s),
        ['idle', 'signalling', 'ice-checking', 'dtls', 'connected', 'streaming'],
      );
      assert.equal(events.filter(([t]) => t === 'firstframe').length, 1);
      assert.equal(events.filter(([t]) => t === 'error').length, 0);

      viewer.close();
      assert.equal(viewer.stage, 'closed');
      assert.equal(pc.closed, true);
      assert.equal(es.readyState, 2);
      const del = requests.find((r) => r.method === 'DELETE');
      assert.deepEqual([del.url, del.keepalive], [`/api/webrtc/session/${SID}`, true]);
    });
  });

  it('reports an ended session with its words, tears down, and retries with back-off', async () => {
    await withFakeBrowser(happyRoutes, async ({ requests }) => {
      const viewer = new VdeskViewer(fakeVideo(), { vmId: 'demo', logger: quiet, retryDelayMs: 40 });
      const events = record(viewer);
      viewer.connect();
      await tick();
      const first = FakePeerConnection.last;
      FakeEventSource.last.emit(fx('eventEnded'));
      const [, err] = events.find(([t]) => t === 'error');
      assert.equal(err.code, 'agent_disconnected');
      assert.equal(err.message, 'VM disconnected, reconnecting');
      assert.equal(err.detail, 'VM agent disconnected');
      assert.equal(err.willRetry, true);
      assert.equal(err.retryInMs, 40);
      assert.equal(viewer.stage, 'failed');
      assert.equal(first.closed, true);
      assert.ok(requests.some((r) => r.method === 'DELETE'));
      await tick(80);
      assert.notEqual(FakePeerConnection.last, first, 'a second attempt started');
      assert.equal(viewer.attempts, 2);
      viewer.close();
    });
  });

  it('says the agent is offline without making a peer connection, and keeps retrying', async () => {
    await withFakeBrowser(happyRoutes, async () => {
      FakePeerConnection.last = null;
      const viewer = new VdeskViewer(fakeVideo(), { vmId: 'ghost', logger: quiet, retryDelayMs: 1000 });
      const events = record(viewer);
      assert.equal(await viewer.connect(), false);
      const [, err] = events.find(([t]) => t === 'error');
      assert.deepEqual([err.code, err.message, err.willRetry], ['agent_offline', 'VM agent is offline', true]);
      assert.deepEqual(events.find(([t]) => t === 'retrying')[1], { attempt: 2, delayMs: 1000 });
      assert.equal(FakePeerConnection.last, null);
      viewer.close();
    });
  });

  it('does not retry an unknown VM', async () => {
    const routes = () => [404, fx('errorVmNotFound')];
    await withFakeBrowser(routes, async () => {
      const viewer = new VdeskViewer(fakeVideo(), { vmId: 'nosuchvm', logger: quiet });
      const events = record(viewer);
      await viewer.connect();
      const [, err] = events.find(([t]) => t === 'error');
      assert.deepEqual([err.code, err.message, err.willRetry], ['vm_not_found', 'VM “nosuchvm” not found', false]);
      assert.equal(events.some(([t]) => t === 'retrying'), false);
    });
  });

  it('fails with ice_failed and the firewall hint when ICE fails', async () => {
    await withFakeBrowser(happyRoutes, async () => {
      const viewer = new VdeskViewer(fakeVideo(), { vmId: 'demo', logger: quiet, autoRetry: false });
      const events = record(viewer);
      viewer.connect();
      await tick();
      FakeEventSource.last.emit(fx('eventAnswer'));
      await tick(20);
      FakePeerConnection.last.state('checking');
      FakePeerConnection.last.state('failed');
      const [, err] = events.find(([t]) => t === 'error');
      assert.equal(err.code, 'ice_failed');
      assert.equal(err.stage, 'ice-checking');
      assert.match(err.hint, /firewall may block UDP/);
    });
  });

  it('never spins forever: times out where it got stuck', async () => {
    await withFakeBrowser(happyRoutes, async () => {
      const viewer = new VdeskViewer(fakeVideo(), { vmId: 'demo', logger: quiet, autoRetry: false, connectTimeoutMs: 50 });
      const events = record(viewer);
      assert.equal(await viewer.connect(), false);
      const [, err] = events.find(([t]) => t === 'error');
      assert.deepEqual([err.code, err.stage], ['timeout', 'signalling']);
    });
  });

  it('falls back to polling when the event stream fails before the answer', async () => {
    let answerPolls = 0;
    const routes = (method, url) => {
      if (url.endsWith('/answer')) return ++answerPolls < 2 ? [202, fx('answerPending')] : [200, fx('answerPoll')];
      if (url.endsWith('/candidates/vm')) return [200, answerPolls < 2 ? fx('candidateListEmpty') : fx('candidateList')];
      return happyRoutes(method, url);
    };
    await withFakeBrowser(routes, async ({ requests }) => {
      const viewer = new VdeskViewer(fakeVideo(), { vmId: 'demo', logger: quiet, autoRetry: false });
      viewer.connect();
      await tick();
      FakeEventSource.last.readyState = 0;
      FakeEventSource.last.onerror();
      assert.equal(FakeEventSource.last.readyState, 2, 'the stream is closed');
      await tick(700);
      const pc = FakePeerConnection.last;
      assert.equal(pc.remote.sdp, fx('answerPoll').sdp);
      assert.deepEqual(pc.added, fx('candidateList').candidates);
      assert.ok(requests.filter((r) => r.url.endsWith('/answer')).length >= 2);
      viewer.close();
    });
  });
});
