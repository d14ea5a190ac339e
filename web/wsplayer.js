// wsplayer.js: the WebSocket fallback of the vdesk viewer (docs/viewer.md "When UDP is blocked").
// When WebRTC cannot connect, the page streams over a WebSocket to the controller
// (`/api/vms/{vmId}/stream`): encoded frames (H.264 Annex B, VP8 or VP9) decoded by WebCodecs'
// VideoDecoder and painted on a canvas as soon as each is decoded; input, clipboard and control
// messages go over the same socket as the data channels' JSON. The pure parts (framing,
// transport choice, fallback rule, input messages) are exported for node tests.

/** The notice shown when the page falls back by itself. */
export const FALLBACK_NOTICE = 'UDP blocked: streaming over the controller connection';

/** How long WebRTC may look for a working path before the page falls back (ms). */
export const FALLBACK_AFTER_MS = 3000;

/** `?transport=` of the page: 'ws' forces the WebSocket, 'webrtc' forbids it, else 'auto'. */
export function chooseTransport(search) {
  const t = new URLSearchParams(search ?? '').get('transport');
  return t === 'ws' || t === 'webrtc' ? t : 'auto';
}

/**
 * Whether an 'auto' page should give up on WebRTC now: on an ICE failure (`ice_failed`,
 * `connect_timeout` errors), or when ICE has been checking for `FALLBACK_AFTER_MS` without a
 * candidate pair (never 'connected').
 */
export function shouldFallBack({ transport, errorCode = null, checkingSinceMs = null, nowMs = 0, connected = false, canDecode = true }) {
  // Without WebCodecs (a plain http:// page off localhost) the stream could not be shown:
  // staying on WebRTC keeps its own clear ICE-failure words instead of a blank canvas.
  if (transport !== 'auto' || connected || !canDecode) return false;
  if (errorCode === 'ice_failed' || errorCode === 'connect_timeout') return true;
  return checkingSinceMs !== null && nowMs - checkingSinceMs >= FALLBACK_AFTER_MS;
}

const CODECS = Object.freeze({ 1: 'avc1.42e034', 2: 'vp8', 3: 'vp09.00.10.08' });

/** The WebCodecs codec string of a frame's codec byte, or null. */
export function codecString(byte) {
  return CODECS[byte] ?? null;
}

/**
 * One binary frame (docs/protocol.md "WebSocket media"): kind 1, flags (bit 0 keyframe), codec,
 * session id length n, n bytes, pts µs and capture time µs (u64 big-endian), then the frame.
 * Returns null for anything malformed.
 */
export function parseFrame(buffer) {
  if (!(buffer instanceof ArrayBuffer) || buffer.byteLength < 4) return null;
  const v = new DataView(buffer);
  if (v.getUint8(0) !== 1) return null;
  const codec = codecString(v.getUint8(2));
  const n = v.getUint8(3);
  if (codec === null || buffer.byteLength < 4 + n + 16) return null;
  const at = 4 + n;
  return {
    keyframe: (v.getUint8(1) & 1) === 1,
    codec,
    ptsUs: Number(v.getBigUint64(at)),
    captureUs: Number(v.getBigUint64(at + 8)),
    data: new Uint8Array(buffer, at + 16),
  };
}

/** The stream's address for `vmId`: ws(s):// on the page's own host, with the viewer token. */
export function streamUrl(pageUrl, vmId, token) {
  const u = new URL(`/api/vms/${encodeURIComponent(vmId)}/stream`, pageUrl);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  if (token) u.searchParams.set('token', token);
  return u.toString();
}

/** A position on the canvas (CSS px) as frame pixels, clamped. */
export function framePoint(clientX, clientY, rect, w, h) {
  const x = Math.round(((clientX - rect.left) / Math.max(1, rect.width)) * w);
  const y = Math.round(((clientY - rect.top) / Math.max(1, rect.height)) * h);
  return { x: Math.min(w - 1, Math.max(0, x)), y: Math.min(h - 1, Math.max(0, y)) };
}

/** DOM mouse button -> X button number. */
export function xButton(domButton) {
  return [1, 2, 3, 8, 9][domButton] ?? null;
}

/** wsEnded codes after which a fresh attempt cannot help (the link is no longer valid). */
const FINAL_CODES = new Set(['link_expired', 'link_revoked', 'unauthorized', 'forbidden', 'not_found']);

/**
 * What to do when the stream ended with `code` (a wsEnded code, or null when the socket closed
 * without one) after `failures` attempts in a row without a frame (1 = the first): a fresh
 * attempt after `delayMs` (1 s, doubling, at most 10 s), or none.
 */
export function wsReconnectPlan(code, failures) {
  if (FINAL_CODES.has(code)) return { retry: false, delayMs: 0 };
  const n = Math.max(1, Math.floor(failures));
  return { retry: true, delayMs: Math.min(10000, 1000 * 2 ** Math.min(n - 1, 20)) };
}

/** The decoder stays at most this many frames behind; beyond, it skips to the next keyframe. */
export const MAX_DECODE_QUEUE = 4;

/**
 * Plays the WebSocket stream of `vmId` on `canvas` and sends input from it. Events: 'state'
 * ({state: 'connecting'|'streaming'|'ended'}), 'message' (every agent message, e.g. `control`),
 * 'welcome' ({grant}), 'ended' ({code, reason}).
 */
export class WsPlayer extends EventTarget {
  #ws = null;
  #decoder = null;
  #codec = null;
  #waitKey = true;
  #pending = new Map(); // pts -> arrival time, for the decode time
  #painted = false; // a frame of this connection was painted
  #ended = null; // this connection's wsEnded {code, reason}
  stats = { transport: 'websocket', frames: 0, decoded: 0, dropped: 0, decodeMs: 0, queue: 0, serverDropped: 0, bytes: 0, width: 0, height: 0, firstFrameMs: null };

  constructor(canvas, { vmId, token, pageUrl = globalThis.location?.href }) {
    super();
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.url = streamUrl(pageUrl, vmId, token);
  }

  /** Opens the stream; called again after 'ended', a fresh connection (same canvas and input). */
  connect() {
    if (this.#ws) {
      this.#ws.onmessage = null;
      this.#ws.onclose = null;
      this.#ws.close();
    }
    this.#waitKey = true;
    this.#pending.clear();
    this.#painted = false;
    this.#ended = null;
    this.#emit('state', { state: 'connecting' });
    const ws = new WebSocket(this.url);
    ws.binaryType = 'arraybuffer';
    this.#ws = ws;
    ws.onmessage = (ev) => (typeof ev.data === 'string' ? this.#onText(ev.data) : this.#onFrame(ev.data));
    // 'ended' carries the wsEnded code and reason (none when the socket just closed).
    ws.onclose = () => {
      if (this.#ws === ws) this.#emit('state', { state: 'ended', ...(this.#ended ?? { code: null, reason: '' }) });
    };
    this.#wireInput();
  }

  /** Ends the stream for good (no 'ended' event, so no fresh attempt). */
  close() {
    if (this.#ws) {
      this.#ws.onclose = null;
      this.#ws.onmessage = null;
    }
    this.#ws?.close();
    try { this.#decoder?.close(); } catch { /* already closed */ }
  }

  /** Sends one ViewerToAgent message (JSON) if the socket is open. */
  send(msg) {
    if (this.#ws?.readyState === 1) this.#ws.send(JSON.stringify(msg));
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #onText(text) {
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    if (msg?.type === 'wsWelcome') this.#emit('welcome', { grant: msg.grant, sessionId: msg.sessionId });
    else if (msg?.type === 'wsStats') { this.stats.queue = msg.queue; this.stats.serverDropped = msg.dropped; }
    else if (msg?.type === 'wsEnded') {
      this.#ended = { code: msg.code, reason: msg.reason };
      this.#emit('ended', this.#ended);
    }
    else this.#emit('message', msg);
  }

  #decoderFor(codec) {
    if (this.#decoder && this.#codec === codec && this.#decoder.state !== 'closed') return this.#decoder;
    try { this.#decoder?.close(); } catch { /* closed */ }
    this.#codec = codec;
    this.#decoder = new VideoDecoder({
      output: (frame) => this.#paint(frame),
      error: () => { this.#waitKey = true; this.#decoder = null; this.send({ type: 'wsKeyframe' }); },
    });
    this.#decoder.configure({ codec, optimizeForLatency: true, hardwareAcceleration: 'no-preference' });
    return this.#decoder;
  }

  #onFrame(buffer) {
    const f = parseFrame(buffer);
    if (!f) return;
    this.stats.frames += 1;
    this.stats.bytes += buffer.byteLength;
    if (this.#waitKey && !f.keyframe) { this.stats.dropped += 1; return; }
    let decoder;
    try { decoder = this.#decoderFor(f.codec); } catch { return; }
    if (decoder.decodeQueueSize > MAX_DECODE_QUEUE && !f.keyframe) {
      // The decoder is behind: skip to the next keyframe rather than fall further behind.
      this.#waitKey = true;
      this.stats.dropped += 1;
      this.send({ type: 'wsKeyframe' });
      return;
    }
    this.#waitKey = false;
    this.#pending.set(f.ptsUs, performance.now());
    if (this.#pending.size > 64) this.#pending.clear();
    try {
      decoder.decode(new EncodedVideoChunk({ type: f.keyframe ? 'key' : 'delta', timestamp: f.ptsUs, data: f.data }));
    } catch {
      this.#waitKey = true;
    }
  }

  #paint(frame) {
    const t0 = this.#pending.get(frame.timestamp);
    if (t0 !== undefined) {
      this.#pending.delete(frame.timestamp);
      const ms = performance.now() - t0;
      this.stats.decodeMs = this.stats.decodeMs ? this.stats.decodeMs * 0.9 + ms * 0.1 : ms;
    }
    const w = frame.displayWidth;
    const h = frame.displayHeight;
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.ctx.drawImage(frame, 0, 0);
    frame.close();
    this.stats.decoded += 1;
    this.stats.width = w;
    this.stats.height = h;
    // performance.now() of the first painted frame: ms since the page started loading.
    if (this.stats.decoded === 1) this.stats.firstFrameMs = performance.now();
    if (!this.#painted) {
      this.#painted = true;
      this.#emit('state', { state: 'streaming' });
    }
  }

  #wireInput() {
    const c = this.canvas;
    if (c.dataset.wsInput) return;
    c.dataset.wsInput = '1';
    c.tabIndex = 0;
    const at = (ev) => {
      const w = c.width || 1;
      const h = c.height || 1;
      return { ...framePoint(ev.clientX, ev.clientY, c.getBoundingClientRect(), w, h), w, h };
    };
    c.addEventListener('pointermove', (ev) => this.send({ type: 'pointerMove', ...at(ev) }));
    for (const [name, down] of [['pointerdown', true], ['pointerup', false]]) {
      c.addEventListener(name, (ev) => {
        const button = xButton(ev.button);
        if (button === null) return;
        if (down) c.focus();
        ev.preventDefault();
        this.send({ type: 'pointerButton', button, down, ...at(ev) });
      });
    }
    c.addEventListener('contextmenu', (ev) => ev.preventDefault());
    c.addEventListener('wheel', (ev) => {
      ev.preventDefault();
      const dy = Math.sign(ev.deltaY);
      const dx = Math.sign(ev.deltaX);
      if (dx || dy) this.send({ type: 'wheel', dx, dy, ...at(ev) });
    }, { passive: false });
    for (const [name, down] of [['keydown', true], ['keyup', false]]) {
      c.addEventListener(name, (ev) => {
        ev.preventDefault();
        this.send({ type: 'key', key: ev.key.slice(0, 32), code: ev.code.slice(0, 32), down });
      });
    }
    c.addEventListener('blur', () => this.send({ type: 'releaseAll' }));
  }
}

/**
 * Runs the page's transport choice: 'ws' plays the WebSocket stream at once; 'webrtc' only
 * connects `viewer` (an ICE failure shows its error); 'auto' connects `viewer` and switches to
 * the WebSocket when `shouldFallBack` says so, showing `FALLBACK_NOTICE`. `onStreaming` runs
 * when the WebSocket stream shows its first frame (again after a reconnect); `onEnded({code,
 * reason, willRetry, retryInMs})` when it ends (see `wsReconnectPlan`). Returns a handle with
 * `player()`.
 */
export function startTransport({ viewer, video, vmId, token, transport, onStreaming = () => {}, onEnded = () => {} }) {
  let player = null;
  let checkingSince = null;
  let connected = false;
  let timer = null;
  const doc = video.ownerDocument;
  const canDecode = typeof globalThis.VideoDecoder === 'function';
  if (!canDecode) console.warn('vdesk: no WebCodecs VideoDecoder here (needs https:// or localhost): no WebSocket fallback');
  const switchToWs = (notice) => {
    if (player) return;
    clearInterval(timer);
    if (transport !== 'ws') viewer.close();
    const canvas = doc.createElement('canvas');
    canvas.id = 'ws-screen';
    canvas.className = video.className;
    canvas.setAttribute('aria-label', 'VM desktop');
    canvas.style.cssText = 'width:100%;height:100%;object-fit:contain;display:block;outline:none';
    video.hidden = true;
    video.parentNode.insertBefore(canvas, video);
    const bar = doc.createElement('div');
    bar.id = 'ws-stats';
    bar.setAttribute('role', 'status');
    bar.style.cssText = 'position:absolute;left:8px;bottom:8px;font:12px monospace;color:#ddd;background:#000a;padding:4px 6px;border-radius:4px;z-index:5;pointer-events:none';
    video.parentNode.appendChild(bar);
    player = new WsPlayer(canvas, { vmId, token });
    const paint = () => {
      const s = player.stats;
      bar.dataset.transport = s.transport;
      bar.textContent = `${notice ? `${notice} · ` : ''}transport: ${s.transport} · ${s.width}x${s.height} · decode ${s.decodeMs.toFixed(1)} ms · queue ${s.queue} · dropped ${s.dropped + s.serverDropped}`;
    };
    paint();
    setInterval(paint, 500);
    // When the stream ends (agent gone, controller restarted, network): a fresh attempt after a
    // backoff, as the WebRTC viewer does, unless the link is no longer valid.
    let failures = 0;
    let expiresAt = null;
    let retryTimer = null;
    player.addEventListener('welcome', ({ detail }) => {
      expiresAt = Number.isFinite(detail?.grant?.expiresAt) ? detail.grant.expiresAt : null;
    });
    player.addEventListener('state', ({ detail }) => {
      // A connection under way (the timer's, or "Retry now"): no other one pending.
      if (detail.state === 'connecting') clearTimeout(retryTimer);
      if (detail.state === 'streaming') {
        failures = 0;
        canvas.focus();
        onStreaming();
      } else if (detail.state === 'ended') {
        failures += 1;
        // The controller refuses an expired link before the upgrade, which a page cannot see:
        // past the grant's expiresAt, the end is the link's.
        const code = expiresAt !== null && Date.now() >= expiresAt ? 'link_expired' : detail.code;
        const plan = wsReconnectPlan(code, failures);
        onEnded({ code, reason: detail.reason, willRetry: plan.retry, retryInMs: plan.delayMs });
        if (plan.retry) retryTimer = setTimeout(() => player.connect(), plan.delayMs);
      }
    });
    player.connect();
    globalThis.vdeskWsPlayer = player;
  };
  if (transport === 'ws' && !canDecode) {
    onEnded({ code: 'ws_unsupported', reason: '', willRetry: false, retryInMs: 0 });
  } else if (transport === 'ws') {
    switchToWs('');
  } else {
    viewer.addEventListener('stage', ({ detail: { stage } }) => {
      if (stage === 'ice-checking' && checkingSince === null) checkingSince = performance.now();
      if (stage === 'dtls' || stage === 'connected' || stage === 'streaming') connected = true;
    });
    viewer.addEventListener('error', ({ detail }) => {
      if (shouldFallBack({ transport, errorCode: detail?.code, connected, canDecode })) switchToWs(FALLBACK_NOTICE);
    });
    timer = setInterval(() => {
      if (shouldFallBack({ transport, checkingSinceMs: checkingSince, nowMs: performance.now(), connected, canDecode })) {
        switchToWs(FALLBACK_NOTICE);
      }
    }, 250);
    viewer.connect();
  }
  return { player: () => player };
}
