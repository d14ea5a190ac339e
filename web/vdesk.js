// vdesk.js: the embeddable vdesk viewer. It opens a real WebRTC session (ICE + DTLS + SRTP) to a
// VM's agent through the vdesk controller's HTTP API (docs/protocol.md), shows the VM's desktop in
// a <video>, and reports progress as forward-only stages, errors with a hint, and a first-frame
// event. It must not touch browser globals at import time: the pure helpers at the top are
// imported by the node unit tests (web/test/unit.test.mjs) and checked against the Rust types'
// JSON fixtures (web/test/fixtures/messages.json).

// ---------------------------------------------------------------------------------------------
// Stages: one total order, and a stage only ever moves forward within one attempt
// (like gstwebrtc-api's session state). 'failed' and 'closed' are terminal; connect()/retry()
// start a new attempt at 'idle'.
// ---------------------------------------------------------------------------------------------

/** The stages of one attempt, in order. */
import { VdeskInput } from './input.js';
// The grant rules the viewer follows (input.js), for pages that show them.
export { ClipboardAssembler, clipboardFromVm, clipboardToVm, mayControl } from './input.js';
export {
  FALLBACK_NOTICE, WsPlayer, chooseTransport, parseFrame, shouldFallBack, startTransport, streamUrl,
} from './wsplayer.js';

export const STAGES = Object.freeze([
  'idle',
  'signalling',
  'ice-checking',
  'dtls',
  'connected',
  'streaming',
  'failed',
  'closed',
]);

/** Stages after which nothing else happens in this attempt. */
export const TERMINAL_STAGES = Object.freeze(['failed', 'closed']);

/** What a person is shown for each stage. */
export const STAGE_LABELS = Object.freeze({
  idle: 'Starting…',
  signalling: 'Contacting controller…',
  'ice-checking': 'Checking network paths (ICE)…',
  dtls: 'Securing connection (DTLS)…',
  connected: 'Connected, waiting for first frame…',
  streaming: 'Streaming',
  failed: 'Connection failed',
  closed: 'Disconnected',
});

/** Position of `stage` in {@link STAGES}; -1 for anything else. */
export function stageRank(stage) {
  return STAGES.indexOf(stage);
}

/**
 * The stage after `proposed` is reported in `current`: `proposed` if it is further on, else
 * `current`. Stages never move backwards; 'closed' is final, 'failed' only gives way to 'closed'.
 */
export function nextStage(current, proposed) {
  const to = stageRank(proposed);
  if (to < 0) return current;
  return to > stageRank(current) ? proposed : current;
}

/** The stage an `RTCPeerConnection.iceConnectionState` implies, or null. ICE 'connected' means
 *  the DTLS handshake is next. */
export function stageForIceConnectionState(state) {
  switch (state) {
    case 'checking':
      return 'ice-checking';
    case 'connected':
    case 'completed':
      return 'dtls';
    default:
      return null;
  }
}

/** The stage an `RTCPeerConnection.connectionState` implies, or null. */
export function stageForConnectionState(state) {
  switch (state) {
    case 'connecting':
      return 'ice-checking';
    case 'connected':
      return 'connected';
    default:
      return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Errors: stable codes (the controller's, plus the viewer's own), each with words for a person.
// ---------------------------------------------------------------------------------------------

const ICE_HINT =
  'a firewall may block UDP between your browser and the VM, or a TURN server is missing';

const TIMEOUT_WHERE = {
  idle: 'before starting',
  signalling: 'waiting for the VM to answer',
  'ice-checking': 'while checking network paths',
  dtls: 'during the DTLS handshake',
  connected: 'waiting for the first frame',
};

const TIMEOUT_HINTS = {
  idle: 'The viewer did not start; reload the page.',
  signalling:
    'The controller or the VM agent did not answer in time. Check that the controller is reachable and that vdesk-agent runs in the VM.',
  'ice-checking': `No network path to the VM was found: ${ICE_HINT}.`,
  dtls: 'A network path was found but the encrypted (DTLS) handshake did not finish; a middlebox may drop large UDP packets.',
  connected:
    'The connection is up but no video frame arrived: the VM agent may not be capturing its display or its encoder may be stalled.',
};

/**
 * Messages and hints per error code. `message` may use {vmId}; `retry: false` means retrying
 * cannot help, so the viewer does not retry on its own.
 */
export const ERROR_TEXTS = Object.freeze({
  // The viewer's own codes.
  timeout: { message: 'Connection timed out', hint: TIMEOUT_HINTS.signalling },
  ws_unsupported: {
    message: 'This page cannot decode the WebSocket stream',
    hint: 'The WebSocket fallback decodes with WebCodecs, which browsers offer only on https:// pages (or localhost): open the viewer over https://, or allow UDP for WebRTC.',
  },
  ice_failed: {
    message: 'No network path to the VM',
    hint: `ICE failed: ${ICE_HINT}.`,
  },
  network: {
    message: 'Cannot reach the vdesk controller',
    hint: 'Check your network connection and that the controller is running; this page keeps retrying.',
  },
  bad_response: {
    message: 'The controller sent something unexpected',
    hint: 'The controller and this viewer may be of different versions; reload the page.',
  },
  bad_answer: {
    message: 'The VM sent an answer the browser could not use',
    hint: 'The VM agent and the browser could not agree on a video format or transport.',
  },
  webrtc_unsupported: {
    message: 'This browser does not support WebRTC',
    hint: 'Use a current version of Chrome, Edge, Firefox or Safari.',
    retry: false,
  },
  bad_vm_id: {
    message: 'Invalid VM name “{vmId}”',
    hint: 'A VM name is 1 to 64 characters of A-Z a-z 0-9 . _ - and does not start with a dot.',
    retry: false,
  },
  // The controller's codes (crates/protocol ErrorCode).
  bad_request: {
    message: 'The controller refused the request',
    hint: 'The controller and this viewer may be of different versions; reload the page.',
  },
  not_found: {
    message: 'Not found on the controller',
    hint: 'The controller does not serve the vdesk API at this address.',
    retry: false,
  },
  vm_not_found: {
    message: 'VM “{vmId}” not found',
    hint: 'The controller does not know this VM. Check the VM name in the address.',
    retry: false,
  },
  session_not_found: {
    message: 'The session has expired',
    hint: 'The controller no longer knows this session; a new one is started.',
  },
  agent_offline: {
    message: 'VM agent is offline',
    hint: 'The VM is known but its vdesk-agent is not connected to the controller. Start (or restart) the agent in the VM; this page keeps retrying.',
  },
  agent_disconnected: {
    message: 'VM disconnected, reconnecting',
    messageNoRetry: 'VM disconnected',
    hint: 'The VM agent lost its connection to the controller (it stopped, crashed or the VM restarted).',
  },
  unauthorized: {
    message: 'Not authorized',
    hint: 'This page needs a viewer link with a token (it ends in ?token=...). Ask the operator for one.',
    retry: false,
  },
  forbidden: {
    message: 'Access denied',
    hint: 'This link is not valid for this VM, or it has expired. Ask the operator for a new link.',
    retry: false,
  },
  payload_too_large: {
    message: 'The request was too large for the controller',
    hint: 'The browser’s offer exceeded the controller’s --max-body-bytes.',
    retry: false,
  },
  conflict: {
    message: 'The session is in a conflicting state',
    hint: 'Another request changed the session at the same time; a new one is started.',
  },
  too_many_requests: {
    message: 'Too many connections',
    hint: 'The controller or the VM limits concurrent viewers; this page retries shortly.',
  },
  agent_error: {
    message: 'The VM agent could not start the stream',
    hint: 'The agent in the VM failed (capture, encoder or WebRTC); see its log.',
  },
  idle_timeout: {
    message: 'The session timed out',
    hint: 'The controller ended the session after it had been idle; a new one is started.',
  },
  viewer_left: {
    message: 'The session was closed',
    hint: 'This viewer (or another tab with the same session) ended it.',
  },
  shutting_down: {
    message: 'Shutting down, reconnecting',
    messageNoRetry: 'Shut down',
    hint: 'The controller or the VM agent is being stopped, probably restarted; this page reconnects when it is back.',
  },
  link_expired: {
    message: 'This link has expired',
    hint: 'The viewer link reached the end of its life and the session was ended. Ask the operator for a new link.',
    retry: false,
  },
  connect_timeout: {
    message: 'The connection to the VM could not be set up in time',
    hint: 'The browser and the VM exchanged offers but no network path between them worked before the controller’s deadline. A TURN server may be needed on this network.',
  },
  internal: {
    message: 'The controller hit an internal error',
    hint: 'See the controller’s log.',
  },
  link_revoked: {
    message: 'This link was revoked',
    hint: 'The operator revoked this viewer link: it no longer opens this VM. Ask the operator for a new link.',
    retry: false,
  },
  ended_by_admin: {
    message: 'The operator ended this session',
    hint: 'An administrator closed this viewer’s session. Reload the page to join again if your link is still valid.',
    retry: false,
  },
});

/**
 * The `{code, message, hint, detail}` to show for error `code`. `detail` is what the server said
 * (its `message` or `reason`), kept apart from our own words. `stage` (for 'timeout') is where the
 * attempt got stuck and picks the hint.
 */
export function describeError(code, { vmId = '', stage, detail = '', willRetry = true } = {}) {
  const known = Object.hasOwn(ERROR_TEXTS, code) ? ERROR_TEXTS[code] : null;
  let message = known ? known.message.replaceAll('{vmId}', vmId) : detail || 'Connection error';
  if (known?.messageNoRetry && !willRetry) message = known.messageNoRetry;
  let hint = known ? known.hint : 'See the browser console for details.';
  if (code === 'timeout') {
    hint = TIMEOUT_HINTS[stage] ?? hint;
    if (TIMEOUT_WHERE[stage]) message = `Connection timed out ${TIMEOUT_WHERE[stage]}`;
  }
  return { code, message, hint, detail: detail && detail !== message ? detail : '' };
}

/** Whether retrying can help after error `code`. */
export function isRetryable(code) {
  return !(Object.hasOwn(ERROR_TEXTS, code) && ERROR_TEXTS[code].retry === false);
}

/** Delay before retry number `failures` (1 = first): doubles from `baseMs`, at most `maxMs`. */
export function retryDelay(failures, baseMs = 2000, maxMs = 10000) {
  const n = Math.max(1, Math.floor(failures));
  return Math.min(maxMs, baseMs * 2 ** Math.min(n - 1, 30));
}

/** An error with a stable code, as the viewer reports it. */
export class VdeskError extends Error {
  constructor(code, detail = '', { status } = {}) {
    super(detail ? `${code}: ${detail}` : code);
    this.name = 'VdeskError';
    this.code = code;
    this.detail = detail;
    this.status = status;
  }
}

/**
 * The error an HTTP reply stands for: the body's `{"error": {"code", "message"}}` when it has one
 * (docs/protocol.md, "Errors"), else a code from the status alone.
 */
export function errorFromResponse(status, body) {
  const e = body && typeof body === 'object' ? body.error : null;
  if (e && typeof e.code === 'string') {
    return new VdeskError(e.code, typeof e.message === 'string' ? e.message : '', { status });
  }
  const code =
    { 400: 'bad_request', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 413: 'payload_too_large', 429: 'too_many_requests', 503: 'agent_offline' }[status] ??
    (status >= 500 ? 'internal' : 'bad_response');
  return new VdeskError(code, `HTTP ${status}`, { status });
}

// ---------------------------------------------------------------------------------------------
// Wire messages (crates/protocol/src/messages.rs)
// ---------------------------------------------------------------------------------------------

/** The `type`s of `ControllerToViewer`: also the SSE event names. */
export const VIEWER_MESSAGE_TYPES = Object.freeze(['answer', 'candidate', 'peerState', 'ended']);

const VM_ID_RE = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/;

/** Whether `s` is a valid VM id (1..=64 of [A-Za-z0-9._-], not starting with '.'). */
export function isValidVmId(s) {
  return typeof s === 'string' && VM_ID_RE.test(s);
}

/** The viewer token of a page address's query (`?token=...`), or null. */
export function tokenFromSearch(search) {
  try {
    const t = new URLSearchParams(search ?? '').get('token');
    return t ? t : null;
  } catch {
    return null;
  }
}

/** `url` with `token` added as its `token` query parameter (for EventSource, which cannot set
 *  headers); `url` unchanged without a token. */
export function withToken(url, token) {
  if (!token) return url;
  return `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`;
}

/**
 * A page address (`location.href`) without its `token` query parameter, as a path + query +
 * fragment for `history.replaceState`: what the address bar shows once the page has taken the
 * token, so that it is not in the history, a screenshot, a shared address or a bookmark.
 */
export function addressWithoutToken(href) {
  const u = new URL(href);
  u.searchParams.delete('token');
  return `${u.pathname}${u.search}${u.hash}`;
}

/** The key under which a tab keeps a page's viewer token (sessionStorage: this tab only, gone
 *  when the tab closes). */
export function tokenStorageKey(vmId) {
  return `vdesk.token.${vmId}`;
}

/**
 * The viewer token of a page: the address's (`?token=`) when it has one, kept in `storage` under
 * `key` so that a reload of this tab (whose address no longer has it) still works; else the one
 * this tab kept; else null. A storage that throws (disabled, full) is ignored.
 */
export function takePageToken(search, storage, key) {
  const fromAddress = tokenFromSearch(search);
  try {
    if (fromAddress) storage?.setItem(key, fromAddress);
    else return storage?.getItem(key) || null;
  } catch {
    // No storage: the token lives in memory only (a reload then needs the link again).
  }
  return fromAddress;
}

/** The VM id in a viewer page path `/vm/{vmId}` (trailing slash allowed), or null. */
export function vmIdFromPath(pathname) {
  const m = /^\/vm\/([^/]+)\/?$/.exec(pathname ?? '');
  if (!m) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return null;
  }
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * A wire `IceCandidate` (= `RTCIceCandidateInit`) as a clean `RTCIceCandidateInit`, or null if it
 * is not one. An empty `candidate` string is end-of-candidates.
 */
export function candidateInit(c) {
  if (!isObject(c)) return null;
  const candidate = c.candidate ?? '';
  if (typeof candidate !== 'string') return null;
  const init = { candidate };
  if (typeof c.sdpMid === 'string') init.sdpMid = c.sdpMid;
  if (Number.isInteger(c.sdpMLineIndex)) init.sdpMLineIndex = c.sdpMLineIndex;
  if (typeof c.usernameFragment === 'string') init.usernameFragment = c.usernameFragment;
  return init;
}

/** Whether a candidate (wire or `RTCIceCandidate`, or null) marks end-of-candidates. */
export function isEndOfCandidates(c) {
  return c == null || !c.candidate;
}

/** A key that is equal for the same remote candidate delivered twice (SSE replay + poll). */
export function candidateKey(init) {
  return `${init.sdpMid ?? ''}|${init.sdpMLineIndex ?? ''}|${init.candidate}`;
}

/**
 * Parses one `ControllerToViewer` message: `data` is the SSE `data:` string or an already parsed
 * object; `eventName`, when given, must equal its `type`. Throws a VdeskError('bad_response').
 */
export function parseViewerMessage(data, eventName) {
  let msg = data;
  if (typeof data === 'string') {
    try {
      msg = JSON.parse(data);
    } catch {
      throw new VdeskError('bad_response', `event ${eventName ?? '?'} is not JSON`);
    }
  }
  if (!isObject(msg) || typeof msg.type !== 'string') {
    throw new VdeskError('bad_response', 'message without a type');
  }
  if (eventName !== undefined && msg.type !== eventName) {
    throw new VdeskError('bad_response', `event ${eventName} carries a ${msg.type} message`);
  }
  const bad = (field) => new VdeskError('bad_response', `${msg.type} message: bad ${field}`);
  switch (msg.type) {
    case 'answer':
      if (typeof msg.sdp !== 'string' || !msg.sdp) throw bad('sdp');
      return { type: 'answer', sdp: msg.sdp };
    case 'candidate': {
      const candidate = candidateInit(msg.candidate);
      if (!candidate) throw bad('candidate');
      return { type: 'candidate', candidate, endOfCandidates: isEndOfCandidates(candidate) };
    }
    case 'peerState':
      if (typeof msg.state !== 'string') throw bad('state');
      return { type: 'peerState', state: msg.state };
    case 'ended':
      if (typeof msg.code !== 'string') throw bad('code');
      return { type: 'ended', code: msg.code, reason: typeof msg.reason === 'string' ? msg.reason : '' };
    default:
      throw new VdeskError('bad_response', `unknown message type ${msg.type}`);
  }
}

/**
 * Parses a `GET .../answer` reply: `{type: 'answer', sdp}` (200) or `{status: 'pending'}` (202).
 * Returns the SDP string, or null while pending.
 */
export function parseAnswerPoll(status, body) {
  if (status === 202 || (isObject(body) && body.status === 'pending')) return null;
  if (isObject(body) && body.type === 'answer' && typeof body.sdp === 'string' && body.sdp) {
    return body.sdp;
  }
  throw new VdeskError('bad_response', 'answer poll: neither an answer nor pending');
}

/** Parses a `CandidateList` reply into `{candidates: RTCIceCandidateInit[], complete}`. */
export function parseCandidateList(body) {
  if (!isObject(body) || !Array.isArray(body.candidates)) {
    throw new VdeskError('bad_response', 'candidate list without candidates');
  }
  const candidates = body.candidates.map(candidateInit);
  if (candidates.includes(null)) throw new VdeskError('bad_response', 'bad candidate in list');
  return { candidates, complete: body.complete === true };
}

/** Parses a `VmInfo` reply. */
export function parseVmInfo(body) {
  if (!isObject(body) || typeof body.vmId !== 'string' || typeof body.online !== 'boolean') {
    throw new VdeskError('bad_response', 'VM info without vmId/online');
  }
  return { vmId: body.vmId, online: body.online };
}

/** Parses an `RtcConfig` reply into the `RTCConfiguration` fields we use. */
export function parseRtcConfig(body) {
  if (!isObject(body) || !Array.isArray(body.iceServers)) {
    throw new VdeskError('bad_response', 'WebRTC config without iceServers');
  }
  return { iceServers: body.iceServers };
}

/** Parses a `SessionCreated` reply. */
export function parseSessionCreated(body) {
  if (!isObject(body) || typeof body.sessionId !== 'string' || !/^[0-9a-f]{32}$/.test(body.sessionId)) {
    throw new VdeskError('bad_response', 'session reply without a valid sessionId');
  }
  const eventsUrl =
    typeof body.eventsUrl === 'string' && body.eventsUrl
      ? body.eventsUrl
      : `/api/webrtc/session/${body.sessionId}/events`;
  return { sessionId: body.sessionId, vmId: body.vmId, eventsUrl, grant: parseGrant(body.grant) };
}

const PERMISSIONS = ['view', 'control', 'admin'];
const CLIPBOARD_POLICIES = ['both', 'to-vm', 'from-vm', 'off'];

/**
 * The session's grant as the controller reports it; anything missing or unknown reads as the
 * safe side (view only). An older controller sends none: view, clipboard both ways.
 */
export function parseGrant(g) {
  const grant = {
    permission: isObject(g) && PERMISSIONS.includes(g.permission) ? g.permission : 'view',
    clipboard: isObject(g) && CLIPBOARD_POLICIES.includes(g.clipboard) ? g.clipboard : 'both',
  };
  if (isObject(g) && Number.isFinite(g.expiresAt)) grant.expiresAt = g.expiresAt;
  if (isObject(g) && typeof g.name === 'string') grant.name = g.name;
  return grant;
}

/** The `CreateSession` body for an offer. */
export function createSessionBody(vmId, offer) {
  return { vmId, offer: { type: 'offer', sdp: offer.sdp } };
}

/**
 * The `PostCandidate` body for a local candidate from `onicecandidate` (an `RTCIceCandidate`, its
 * JSON, or null). End of candidates (null, or an empty candidate string) is `{candidate: null}`.
 */
export function candidatePostBody(c) {
  const init = c && typeof c.toJSON === 'function' ? c.toJSON() : c;
  if (isEndOfCandidates(init)) return { candidate: null, from: 'browser' };
  return { candidate: candidateInit(init), from: 'browser' };
}

/** `baseUrl` + `path`; an absolute `path` (http: or https:) is kept as it is. */
export function joinUrl(baseUrl, path) {
  if (/^https?:\/\//i.test(path)) return path;
  return `${(baseUrl ?? '').replace(/\/+$/, '')}${path}`;
}

/** The API paths the viewer uses (docs/protocol.md, "Viewer routes"). */
export const api = Object.freeze({
  vm: (vmId) => `/api/vms/${encodeURIComponent(vmId)}`,
  config: () => '/api/webrtc/config',
  sessions: () => '/api/webrtc/session',
  session: (id) => `/api/webrtc/session/${id}`,
  answer: (id) => `/api/webrtc/session/${id}/answer`,
  offer: (id) => `/api/webrtc/session/${id}/offer`,
  candidate: (id) => `/api/webrtc/session/${id}/candidate`,
  vmCandidates: (id) => `/api/webrtc/session/${id}/candidates/vm`,
  events: (id) => `/api/webrtc/session/${id}/events`,
});

// ---------------------------------------------------------------------------------------------
// The viewer
// ---------------------------------------------------------------------------------------------

const POLL_FAST_MS = 250; // while waiting for the answer and the VM's candidates
const POLL_KEEPALIVE_MS = 2000; // afterwards: notices the session's end, keeps it from idling out
const POLL_MAX_NETWORK_ERRORS = 4;
const MAX_RETRY_DELAY_MS = 10000;
// Once media has flowed, a broken path is repaired in place (ICE restart) rather than by a new
// session: after ICE has been 'disconnected' this long (a short drop heals by itself), or at once
// when it is 'failed'. An agent that cannot restart ICE (webrtcbin 1.22) ends the session
// instead, and the viewer starts a fresh one at once, without showing an error.
const ICE_DISCONNECTED_GRACE_MS = 5000;
// An ICE restart that has not reconnected after this long is tried again, up to MAX_ICE_RESTARTS
// times; then the attempt fails and a fresh session is started (the usual retry).
const ICE_RESTART_TIMEOUT_MS = 10000;
const MAX_ICE_RESTARTS = 3;

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

function logTo(logger, level, ...args) {
  if (!logger) return;
  const f = typeof logger[level] === 'function' ? logger[level] : logger.log;
  if (typeof f === 'function') f.apply(logger, args);
}

/**
 * Shows VM `vmId`'s desktop in `videoElement`. Events: 'stage' {stage}, 'error' {code, message,
 * hint, detail, willRetry, retryInMs}, 'retrying' {attempt, delayMs}, 'firstframe'
 * {msSinceConnect}, 'peerstate' {state}, 'icerestart' {attempt, iceConnectionState},
 * 'signalling' {connected} (the event stream to the controller was lost / is back while the
 * media kept flowing).
 *
 * Once media flows, the peer connection is kept as long as it lives: a broken event stream (the
 * controller restarting) is reopened in the background, a broken network path is repaired with
 * an ICE restart over the same session; only `ended` or a peer that cannot be repaired start a
 * new session.
 */
export class VdeskViewer extends EventTarget {
  #video;
  #opts;
  #stage = 'idle';
  #attempt = null; // the current attempt's state; see #newAttempt
  #attempts = 0;
  #failures = 0; // consecutive failed attempts, for the back-off
  #retryTimer = null;
  #lastError = null;
  #pageHandlers = null;
  #input = null;
  #grant = null;

  constructor(videoElement, options = {}) {
    super();
    if (!videoElement) throw new TypeError('VdeskViewer: a <video> element is required');
    const {
      vmId,
      baseUrl = '',
      connectTimeoutMs = 15000,
      autoRetry = true,
      retryDelayMs = 2000,
      logger = globalThis.console,
      iceTransportPolicy = 'all',
      token = null,
      audio = true,
    } = options;
    if (typeof vmId !== 'string' || !vmId) throw new TypeError('VdeskViewer: options.vmId is required');
    if (iceTransportPolicy !== 'all' && iceTransportPolicy !== 'relay') {
      throw new TypeError("VdeskViewer: options.iceTransportPolicy must be 'all' or 'relay'");
    }
    this.#video = videoElement;
    this.#opts = { vmId, baseUrl, connectTimeoutMs, autoRetry, retryDelayMs, logger, iceTransportPolicy, token, audio };
    // Remote control (input.js); `input: false` makes a watch-only viewer.
    if (options.input !== false) this.#input = new VdeskInput(videoElement, { logger, ...(options.input ?? {}) });
  }

  /** The current session's grant (`parseGrant`: permission, clipboard direction, expiresAt,
   *  name), or null before the first session is created. A 'grant' event says when it arrives. */
  get grant() {
    return this.#grant;
  }

  /** Remote control of this viewer (keys, pointer, cursor, clipboard, resize), or null. */
  get input() {
    return this.#input;
  }

  /** The current stage (see STAGES). */
  get stage() {
    return this.#stage;
  }

  /** The current attempt's RTCPeerConnection, or null. */
  get pc() {
    return this.#attempt?.pc ?? null;
  }

  /** The current attempt's session id once the controller gave one, else null. */
  get sessionId() {
    return this.#attempt?.sessionId ?? null;
  }

  /** The VM this viewer shows. */
  get vmId() {
    return this.#opts.vmId;
  }

  /** The 'input' data channel of the current attempt (for remote control), or null. */
  get inputChannel() {
    return this.#attempt?.dc ?? null;
  }

  /** The last error reported ({code, message, hint, detail}), or null. */
  get lastError() {
    return this.#lastError;
  }

  /** Number of attempts started so far. */
  get attempts() {
    return this.#attempts;
  }

  /** The inbound video RTP stats of the current connection (framesDecoded, ...), or null. */
  async videoStats() {
    const pc = this.pc;
    if (!pc) return null;
    const stats = await pc.getStats();
    for (const r of stats.values()) {
      if (r.type === 'inbound-rtp' && (r.kind ?? r.mediaType) === 'video') return r;
    }
    return null;
  }

  /**
   * Starts a new attempt (ending any current one). Resolves to true once the first frame has been
   * decoded, false if this attempt failed or was closed. Never rejects: failures are 'error'
   * events (and, with autoRetry, lead to another attempt).
   */
  connect() {
    this.#cancelRetry();
    this.#end(this.#attempt, { deleteSession: true });
    this.#watchPage();
    const a = this.#newAttempt();
    this.#run(a).catch((e) => this.#fail(a, e));
    return a.done;
  }

  /** Ends the session (the controller is told at once) and stays closed until connect()/retry(). */
  close() {
    this.#cancelRetry();
    const a = this.#attempt;
    this.#end(a, { deleteSession: true });
    this.#unwatchPage();
    if (a) this.#setStage(a, 'closed');
    else if (this.#stage !== 'closed') {
      this.#stage = 'closed';
      this.#emit('stage', { stage: 'closed' });
    }
  }

  /** Retries now, without waiting for the back-off; same as connect(). */
  retry() {
    return this.connect();
  }

  // --- one attempt ---------------------------------------------------------------------------

  #newAttempt() {
    let resolveDone;
    const done = new Promise((r) => (resolveDone = r));
    const a = {
      id: ++this.#attempts,
      startedAt: performance.now(),
      abort: new AbortController(),
      dead: false,
      done,
      resolveDone,
      pc: null,
      dc: null,
      es: null,
      sessionId: null,
      timeout: null,
      polling: false,
      gotAnswer: false,
      remoteDescriptionSet: false,
      inbox: [], // remote candidates waiting for the remote description
      seen: new Set(), // remote candidates already added
      outbox: [], // local candidate bodies waiting for the session id / the previous POST
      sending: false,
      frameWatch: null,
      answers: new Set(), // answer SDPs applied (a replayed event stream repeats them)
      mediaUp: false, // ICE reached connected once: from now on the peer is repaired, not replaced
      restarting: false, // an ICE restart offer is out, its answer not applied yet
      restartSent: false, // ... and the controller has it
      restartedAt: -Infinity, // when the last ICE restart began
      restartAbort: null,
      iceRestarts: 0, // ICE restarts since the path was last up
      restartTimer: null,
      eventsTimer: null,
      eventsFailures: 0,
      signallingLost: false,
    };
    this.#attempt = a;
    this.#stage = 'idle';
    this.#emit('stage', { stage: 'idle' });
    return a;
  }

  async #run(a) {
    const { vmId, connectTimeoutMs } = this.#opts;
    this.#setStage(a, 'signalling');
    a.timeout = setTimeout(() => this.#fail(a, new VdeskError('timeout')), connectTimeoutMs);
    if (!isValidVmId(vmId)) throw new VdeskError('bad_vm_id');
    if (typeof globalThis.RTCPeerConnection !== 'function') throw new VdeskError('webrtc_unsupported');

    const vm = parseVmInfo((await this.#request(a, api.vm(vmId))).body);
    if (!vm.online) throw new VdeskError('agent_offline');
    const { iceServers } = parseRtcConfig((await this.#request(a, api.config())).body);
    if (a.dead) return;

    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: this.#opts.iceTransportPolicy });
    a.pc = pc;
    this.#wirePeer(a, pc);
    pc.addTransceiver('video', { direction: 'recvonly' });
    // The VM's sound (the agent answers it when it has a sound server); after video, so video
    // stays the first m-line. Played through the video element, muted until the user unmutes.
    if (this.#opts.audio !== false) pc.addTransceiver('audio', { direction: 'recvonly' });
    if (this.#input) a.pointerDc = pc.createDataChannel('pointer', { ordered: false, maxRetransmits: 0 });
    a.dc = pc.createDataChannel('input');
    this.#input?.attach(a.dc, a.pointerDc);
    await pc.setLocalDescription(await pc.createOffer());
    if (a.dead) return;
    this.#log('log', '[WebRTC] Sending offer to controller');

    const { body } = await this.#request(a, api.sessions(), {
      method: 'POST',
      body: createSessionBody(vmId, pc.localDescription),
    });
    const created = parseSessionCreated(body);
    if (a.dead) {
      this.#deleteSession(created.sessionId);
      return;
    }
    a.sessionId = created.sessionId;
    // What this viewer may do: input (keys, pointer, clipboard) only with control.
    this.#grant = created.grant;
    this.#input?.setGrant(created.grant);
    this.#emit('grant', { grant: created.grant });
    this.#log('log', `[WebRTC] Session ${a.sessionId} created, waiting for answer from VM`);
    this.#sendCandidates(a);
    this.#openEvents(a, created.eventsUrl);
  }

  #wirePeer(a, pc) {
    pc.oniceconnectionstatechange = () => {
      if (a.dead) return;
      const s = pc.iceConnectionState;
      this.#log('log', `[WebRTC] ICE connection state: ${s}`);
      if (s === 'connected' || s === 'completed') this.#pathUp(a);
      if ((s === 'disconnected' || s === 'failed') && a.mediaUp) return this.#pathDown(a, s);
      if (s === 'failed') return this.#fail(a, new VdeskError('ice_failed'));
      const stage = stageForIceConnectionState(s);
      if (stage) this.#setStage(a, stage);
    };
    pc.onconnectionstatechange = () => {
      if (a.dead) return;
      const s = pc.connectionState;
      this.#log('log', `[WebRTC] Connection state: ${s}`);
      if (s === 'failed' && a.mediaUp) return this.#pathDown(a, 'failed');
      if (s === 'failed') return this.#fail(a, new VdeskError('ice_failed', 'peer connection failed'));
      const stage = stageForConnectionState(s);
      if (stage) this.#setStage(a, stage);
    };
    pc.onicegatheringstatechange = () => {
      if (!a.dead) this.#log('debug', `[WebRTC] ICE gathering state: ${pc.iceGatheringState}`);
    };
    pc.onicecandidate = (ev) => {
      if (a.dead) return;
      const body = candidatePostBody(ev.candidate);
      // Chrome ends with an empty candidate and then null: send end-of-candidates once.
      if (body.candidate === null) {
        if (a.sentEnd) return;
        a.sentEnd = true;
      }
      a.outbox.push(body);
      this.#sendCandidates(a);
    };
    pc.ontrack = (ev) => {
      if (a.dead) return;
      this.#log('log', `[WebRTC] Received remote track: ${ev.track.kind}`);
      if (ev.track.kind === 'audio') {
        // Same element as the picture: one clock plays both (the element stays muted until the
        // page unmutes it; browsers refuse sound before a click).
        a.audioTrack = ev.track;
        const s = this.#video.srcObject;
        if (s && typeof s.addTrack === 'function' && !s.getAudioTracks().includes(ev.track)) s.addTrack(ev.track);
        this.#emit('audio', { track: ev.track });
        return;
      }
      if (ev.track.kind !== 'video') return;
      const r = ev.receiver;
      // Low latency: no extra jitter buffering or playout delay (where the browser has these).
      try {
        if ('jitterBufferTarget' in r) r.jitterBufferTarget = 0;
      } catch (e) {
        this.#log('debug', '[WebRTC] jitterBufferTarget not settable', e);
      }
      try {
        r.playoutDelayHint = 0;
      } catch (e) {
        this.#log('debug', '[WebRTC] playoutDelayHint not settable', e);
      }
      const v = this.#video;
      v.muted = true;
      v.autoplay = true;
      v.playsInline = true;
      const stream = ev.streams?.[0] ?? new MediaStream([ev.track]);
      if (a.audioTrack && typeof stream.addTrack === 'function' && !stream.getAudioTracks().includes(a.audioTrack)) {
        stream.addTrack(a.audioTrack);
      }
      v.srcObject = stream;
      this.#log('log', '[WebRTC] Video stream attached to element');
      this.#watchFirstFrame(a);
      v.play?.()?.catch?.((e) => this.#log('warn', '[WebRTC] video.play() refused:', e?.message ?? e));
    };
  }

  #watchFirstFrame(a) {
    const v = this.#video;
    if (a.frameWatch) return;
    const onFrame = () => this.#onFirstFrame(a);
    const events = ['loadeddata', 'playing'];
    // 'loadeddata'/'playing' also cover tabs in the background, where frame callbacks pause.
    const check = () => {
      if (v.readyState >= 2 && v.videoWidth > 0) onFrame();
    };
    for (const e of events) v.addEventListener(e, check);
    let handle = null;
    if (typeof v.requestVideoFrameCallback === 'function') handle = v.requestVideoFrameCallback(onFrame);
    a.frameWatch = () => {
      for (const e of events) v.removeEventListener(e, check);
      if (handle !== null) v.cancelVideoFrameCallback?.(handle);
    };
  }

  #onFirstFrame(a) {
    if (a.dead || stageRank(this.#stage) >= stageRank('streaming')) return;
    const msSinceConnect = Math.round(performance.now() - a.startedAt);
    clearTimeout(a.timeout);
    this.#failures = 0;
    this.#lastError = null;
    a.frameWatch?.();
    this.#log(
      'log',
      `[WebRTC] First video frame decoded after ${msSinceConnect} ms (${this.#video.videoWidth}x${this.#video.videoHeight})`,
    );
    this.#setStage(a, 'streaming');
    this.#emit('firstframe', { msSinceConnect });
    a.resolveDone(true);
  }

  // --- repairing the path: ICE restart -------------------------------------------------------

  #pathUp(a) {
    clearTimeout(a.restartTimer);
    a.restartTimer = null;
    if (a.restarting && !a.restartSent) {
      // The old path healed before the restart offer left: take the offer back.
      a.restartAbort?.abort();
      a.restarting = false;
      a.remoteDescriptionSet = true;
      if (a.pc.signalingState === 'have-local-offer') {
        a.pc.setLocalDescription({ type: 'rollback' }).catch((e) => this.#log('debug', '[WebRTC] rollback refused:', e?.message ?? e));
      }
    }
    if (a.mediaUp && a.iceRestarts > 0) {
      this.#log('log', `[WebRTC] Network path is back (after ${a.iceRestarts} ICE restart(s))`);
    }
    a.mediaUp = true;
    a.iceRestarts = 0;
  }

  /** ICE went 'disconnected' or 'failed' after media flowed: restart ICE unless it comes back. */
  #pathDown(a, state) {
    if (a.restartTimer !== null || a.restarting) return;
    const delay = state === 'failed' ? 0 : ICE_DISCONNECTED_GRACE_MS;
    this.#log('warn', `[WebRTC] Network path ${state}; ICE restart in ${delay} ms unless it recovers`);
    a.restartTimer = setTimeout(() => {
      a.restartTimer = null;
      if (a.dead) return;
      const s = a.pc.iceConnectionState;
      if (s === 'connected' || s === 'completed') return;
      this.#iceRestart(a).catch((e) => this.#fail(a, e));
    }, delay);
  }

  /** A new offer with fresh ICE credentials over the same session; the VM answers it. */
  async #iceRestart(a) {
    if (a.dead) return;
    if (a.iceRestarts >= MAX_ICE_RESTARTS) {
      throw new VdeskError('ice_failed', `${MAX_ICE_RESTARTS} ICE restarts did not bring the network path back`);
    }
    a.iceRestarts += 1;
    a.restarting = true;
    a.restartSent = false;
    a.restartedAt = performance.now();
    a.restartAbort = new AbortController();
    const state = a.pc.iceConnectionState;
    this.#log('log', `[WebRTC] Restarting ICE (attempt ${a.iceRestarts} of ${MAX_ICE_RESTARTS}, state ${state})`);
    this.#emit('icerestart', { attempt: a.iceRestarts, iceConnectionState: state });
    // If this restart does not reconnect in time, the next one (or the failure) follows.
    a.restartTimer = setTimeout(() => {
      a.restartTimer = null;
      if (a.dead) return;
      const s = a.pc.iceConnectionState;
      if (s === 'connected' || s === 'completed') return;
      a.restarting = false;
      this.#iceRestart(a).catch((e) => this.#fail(a, e));
    }, ICE_RESTART_TIMEOUT_MS);
    const offer = await a.pc.createOffer({ iceRestart: true });
    if (a.dead) return;
    await a.pc.setLocalDescription(offer);
    if (a.dead) return;
    // Candidates of the VM's new ICE generation wait for its new answer.
    a.remoteDescriptionSet = false;
    a.sentEnd = false;
    try {
      await this.#request(a, api.offer(a.sessionId), {
        method: 'POST',
        body: { type: 'offer', sdp: a.pc.localDescription.sdp },
        signal: a.restartAbort.signal,
      });
      a.restartSent = true;
    } catch (e) {
      if (a.dead || a.restartAbort.signal.aborted) return;
      // The session is gone: a fresh one is the only way. Anything else (the controller or the
      // agent briefly away): the next restart, on the timer above, tries again.
      if (e instanceof VdeskError && (e.status === 404 || e.status === 410)) throw e;
      this.#log('warn', '[WebRTC] Could not send the ICE restart offer:', e.message);
      return;
    }
    this.#sendCandidates(a);
  }

  // --- signalling ----------------------------------------------------------------------------

  /** Posts queued local candidates, in order, once the session id is known. */
  async #sendCandidates(a) {
    if (!a.sessionId || a.sending) return;
    a.sending = true;
    try {
      while (a.outbox.length && !a.dead) {
        const body = a.outbox.shift();
        if (body.candidate) this.#log('debug', '[WebRTC] Sending ICE candidate to server');
        else this.#log('debug', '[WebRTC] Sending end-of-candidates to server');
        try {
          await this.#request(a, api.candidate(a.sessionId), { method: 'POST', body });
        } catch (e) {
          if (a.dead) return;
          // A gone session is fatal; a lost candidate is not (others may still connect).
          if (e instanceof VdeskError && (e.status === 404 || e.status === 410)) return this.#fail(a, e);
          this.#log('warn', '[WebRTC] Could not send an ICE candidate:', e.message);
        }
      }
    } finally {
      a.sending = false;
    }
  }

  #openEvents(a, eventsUrl) {
    if (typeof globalThis.EventSource !== 'function') {
      this.#log('log', '[WebRTC] No EventSource here: polling for the answer and candidates');
      return this.#poll(a);
    }
    const es = new EventSource(withToken(joinUrl(this.#opts.baseUrl, eventsUrl), this.#opts.token));
    a.es = es;
    for (const type of VIEWER_MESSAGE_TYPES) {
      es.addEventListener(type, (ev) => {
        if (!a.dead) this.#onMessage(a, ev.data, type);
      });
    }
    es.onopen = () => {
      if (a.dead || !a.signallingLost) return;
      a.signallingLost = false;
      a.eventsFailures = 0;
      this.#log('log', '[WebRTC] Event stream to the controller is back');
      this.#emit('signalling', { connected: true });
    };
    es.onerror = () => {
      if (a.dead || a.polling) return;
      if (a.mediaUp) {
        // The media does not need the controller: keep the peer, get the events back. The
        // browser reconnects by itself while the stream is CONNECTING; a CLOSED one (the
        // controller answered with an error, e.g. while restarting) is reopened here.
        if (!a.signallingLost) {
          a.signallingLost = true;
          this.#log('warn', '[WebRTC] Event stream to the controller lost; the video keeps playing');
          this.#emit('signalling', { connected: false });
        }
        if (es.readyState === EventSource.CLOSED) this.#reopenEvents(a);
        return;
      }
      // Before the answer, or once the browser gives up on the stream: poll instead. (After the
      // answer the browser reconnects by itself with Last-Event-ID; nothing is lost.)
      if (!a.gotAnswer || es.readyState === EventSource.CLOSED) {
        this.#log('warn', '[WebRTC] Event stream failed: falling back to polling');
        es.close();
        a.es = null;
        this.#poll(a);
      }
    };
  }

  /** Reopens the event stream once the controller knows the session again (with back-off). */
  #reopenEvents(a) {
    if (a.es) a.es.close();
    a.es = null;
    clearTimeout(a.eventsTimer);
    const delay = retryDelay(++a.eventsFailures, 1000, 5000);
    a.eventsTimer = setTimeout(async () => {
      if (a.dead) return;
      try {
        await this.#request(a, api.answer(a.sessionId));
      } catch (e) {
        if (a.dead) return;
        // 410: the session ended meanwhile, with a reason. 404 (a restarted controller whose
        // agent has not resumed the session yet), network errors, 5xx: try again.
        if (e instanceof VdeskError && e.status === 410) return this.#fail(a, e);
        return this.#reopenEvents(a);
      }
      this.#openEvents(a, api.events(a.sessionId));
    }, delay);
  }

  async #poll(a) {
    if (a.polling) return;
    a.polling = true;
    let networkErrors = 0;
    while (!a.dead) {
      try {
        if (!a.gotAnswer || a.restarting) {
          const r = await this.#request(a, api.answer(a.sessionId));
          const sdp = parseAnswerPoll(r.status, r.body);
          if (sdp !== null) this.#onMessage(a, { type: 'answer', sdp });
        }
        const r = await this.#request(a, api.vmCandidates(a.sessionId));
        const list = parseCandidateList(r.body);
        for (const candidate of list.candidates) this.#onMessage(a, { type: 'candidate', candidate });
        a.candidatesComplete ||= list.complete;
        networkErrors = 0;
      } catch (e) {
        if (a.dead) return;
        if (e instanceof VdeskError && e.code === 'network' && ++networkErrors < POLL_MAX_NETWORK_ERRORS) {
          this.#log('warn', '[WebRTC] Poll failed, trying again:', e.detail);
        } else if (a.mediaUp && !(e instanceof VdeskError && e.status === 410)) {
          // As with the event stream: the media does not need the controller; keep polling.
          this.#log('warn', '[WebRTC] Poll failed while the video plays, trying again:', e.message);
        } else {
          return this.#fail(a, e);
        }
      }
      await sleep(a.gotAnswer && a.candidatesComplete ? POLL_KEEPALIVE_MS : POLL_FAST_MS, a.abort.signal);
    }
  }

  #onMessage(a, data, eventName) {
    let msg;
    try {
      msg = parseViewerMessage(data, eventName);
    } catch (e) {
      this.#log('warn', '[WebRTC] Ignoring a bad message from the controller:', e.message);
      return;
    }
    switch (msg.type) {
      case 'answer':
        this.#onAnswer(a, msg.sdp).catch((e) => this.#fail(a, e));
        break;
      case 'candidate':
        this.#onRemoteCandidate(a, msg.candidate).catch((e) => this.#fail(a, e));
        break;
      case 'peerState':
        this.#log('log', `[WebRTC] VM peer state: ${msg.state}`);
        this.#emit('peerstate', { state: msg.state });
        break;
      case 'ended':
        this.#log('log', `[WebRTC] Session ended by controller: ${msg.code} (${msg.reason})`);
        this.#fail(a, new VdeskError(msg.code, msg.reason));
        break;
    }
  }

  async #onAnswer(a, sdp) {
    if (a.dead || a.answers.has(sdp)) return; // a replayed event stream repeats answers
    const restart = a.gotAnswer;
    if (restart && !(a.restarting && a.pc.signalingState === 'have-local-offer')) return;
    a.answers.add(sdp);
    a.gotAnswer = true;
    this.#log('log', restart ? '[WebRTC] Received answer to the ICE restart from VM' : '[WebRTC] Received answer from VM');
    try {
      await a.pc.setRemoteDescription({ type: 'answer', sdp });
    } catch (e) {
      throw new VdeskError('bad_answer', e?.message ?? String(e));
    }
    if (a.dead) return;
    if (restart) {
      a.restarting = false;
      a.seen.clear(); // the VM's new candidates may repeat old ones: they are new now
    }
    a.remoteDescriptionSet = true;
    for (const c of a.inbox.splice(0)) await this.#onRemoteCandidate(a, c);
  }

  async #onRemoteCandidate(a, init) {
    if (a.dead) return;
    if (!a.remoteDescriptionSet) {
      a.inbox.push(init);
      return;
    }
    const key = candidateKey(init);
    if (a.seen.has(key)) return;
    a.seen.add(key);
    if (isEndOfCandidates(init)) {
      this.#log('debug', '[WebRTC] VM finished gathering ICE candidates');
      if (init.sdpMid === undefined && init.sdpMLineIndex === undefined) return;
      try {
        await a.pc.addIceCandidate(init);
      } catch (e) {
        this.#log('debug', '[WebRTC] end-of-candidates not accepted, skipped:', e?.message ?? e);
      }
      return;
    }
    this.#log('debug', '[WebRTC] Adding ICE candidate from VM');
    try {
      await a.pc.addIceCandidate(init);
    } catch (e) {
      if (!a.dead) this.#log('warn', '[WebRTC] Could not add an ICE candidate from VM:', e?.message ?? e);
    }
  }

  // --- HTTP ----------------------------------------------------------------------------------

  /** fetch + JSON, with errors as VdeskErrors ('network', or the server's code). */
  async #request(a, path, { method = 'GET', body, signal } = {}) {
    const both = signal ? AbortSignal.any([a.abort.signal, signal]) : a.abort.signal;
    const init = { method, signal: both, cache: 'no-store', headers: this.#headers() };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(joinUrl(this.#opts.baseUrl, path), init);
    } catch (e) {
      throw new VdeskError('network', `${method} ${path}: ${e?.message ?? e}`);
    }
    let json = null;
    if (res.status !== 204 && (res.headers.get('content-type') ?? '').includes('json')) {
      try {
        json = await res.json();
      } catch (e) {
        if (a.dead) throw e;
        throw new VdeskError('bad_response', `${method} ${path}: invalid JSON`, { status: res.status });
      }
    }
    if (!res.ok) throw errorFromResponse(res.status, json);
    return { status: res.status, body: json };
  }

  /** Request headers: JSON, and the viewer token when there is one. */
  #headers() {
    const headers = { Accept: 'application/json' };
    if (this.#opts.token) headers.Authorization = `Bearer ${this.#opts.token}`;
    return headers;
  }

  #deleteSession(sessionId) {
    if (!sessionId) return;
    try {
      const init = { method: 'DELETE', keepalive: true, headers: this.#headers() };
      fetch(joinUrl(this.#opts.baseUrl, api.session(sessionId)), init).catch(
        () => {},
      );
    } catch {
      // fetch itself missing or refusing during unload: the controller's idle timeout cleans up.
    }
  }

  // --- failure, retry, teardown --------------------------------------------------------------

  #fail(a, err) {
    if (!a || a.dead || a !== this.#attempt) return;
    const restartFailed = ['agent_error', 'ice_failed', 'session_not_found'].includes(err?.code);
    if (restartFailed && (a.restarting || performance.now() - a.restartedAt < ICE_RESTART_TIMEOUT_MS * 2)) {
      // The path was broken and repairing it in place did not work (an agent on webrtcbin 1.22
      // ends the session with agent_error when asked to restart ICE): a fresh session is the
      // repair, at once and without an error. If that one fails too, its failure is shown as
      // usual; so is anything else (the VM disconnected, the controller shutting down...).
      this.#log('log', `[WebRTC] ICE restart did not work (${err?.message ?? err}); starting a new session`);
      this.connect();
      return;
    }
    const code = err instanceof VdeskError ? err.code : 'internal';
    const detail = err instanceof VdeskError ? err.detail : String(err?.stack ?? err);
    const stage = this.#stage;
    const willRetry = this.#opts.autoRetry && isRetryable(code);
    const info = describeError(code, { vmId: this.#opts.vmId, stage, detail, willRetry });
    this.#end(a, { deleteSession: true });
    this.#setStage(a, 'failed');
    this.#failures += 1;
    this.#lastError = info;
    const retryInMs = willRetry ? retryDelay(this.#failures, this.#opts.retryDelayMs, MAX_RETRY_DELAY_MS) : null;
    this.#log(
      'error',
      `[WebRTC] ${info.message} (${code}, at stage ${stage})${detail ? `: ${detail}` : ''}. ${info.hint}`,
    );
    this.#emit('error', { ...info, stage, willRetry, retryInMs });
    if (willRetry && this.#attempt === a) {
      this.#log('log', `[WebRTC] Retrying in ${retryInMs} ms`);
      this.#emit('retrying', { attempt: this.#attempts + 1, delayMs: retryInMs });
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = null;
        this.connect();
      }, retryInMs);
    }
  }

  #cancelRetry() {
    if (this.#retryTimer !== null) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
  }

  /** Frees everything attempt `a` holds; tells the controller when `deleteSession`. */
  #end(a, { deleteSession }) {
    if (!a || a.dead) return;
    a.dead = true;
    clearTimeout(a.timeout);
    clearTimeout(a.restartTimer);
    clearTimeout(a.eventsTimer);
    a.abort.abort();
    a.frameWatch?.();
    if (a.es) a.es.close();
    if (a.pc) {
      const pc = a.pc;
      pc.oniceconnectionstatechange = pc.onconnectionstatechange = pc.onicecandidate = null;
      pc.ontrack = pc.onicegatheringstatechange = null;
      if (this.#input && a.dc) this.#input.detach();
      try {
        a.dc?.close();
        a.pointerDc?.close();
        pc.close();
      } catch {
        // already closed
      }
      if (this.#video.srcObject) this.#video.srcObject = null;
    }
    if (deleteSession) this.#deleteSession(a.sessionId);
    a.resolveDone(false);
  }

  #watchPage() {
    if (this.#pageHandlers || typeof globalThis.addEventListener !== 'function') return;
    const onHide = () => {
      const a = this.#attempt;
      this.#cancelRetry();
      this.#end(a, { deleteSession: true });
      if (a) this.#setStage(a, 'closed');
      this.#hiddenByPage = true;
    };
    const onShow = (ev) => {
      // Back from the back/forward cache: start again.
      if (ev.persisted && this.#hiddenByPage) {
        this.#hiddenByPage = false;
        this.connect();
      }
    };
    globalThis.addEventListener('pagehide', onHide);
    globalThis.addEventListener('pageshow', onShow);
    this.#pageHandlers = { onHide, onShow };
  }

  #hiddenByPage = false;

  #unwatchPage() {
    if (!this.#pageHandlers) return;
    globalThis.removeEventListener('pagehide', this.#pageHandlers.onHide);
    globalThis.removeEventListener('pageshow', this.#pageHandlers.onShow);
    this.#pageHandlers = null;
  }

  // --- small things --------------------------------------------------------------------------

  #setStage(a, proposed) {
    if (a !== this.#attempt) return;
    const next = nextStage(this.#stage, proposed);
    if (next === this.#stage) return;
    this.#stage = next;
    this.#log('debug', `[vdesk] stage: ${next}`);
    this.#emit('stage', { stage: next });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #log(level, ...args) {
    logTo(this.#opts.logger, level, ...args);
  }
}
