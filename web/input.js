// input.js: remote control for the vdesk viewer. Captures keys, buttons, wheel and pointer motion
// on the <video>, maps positions from the displayed picture to the VM's screen, and sends them on
// the data channels that vdesk.js opens ('input': ordered and reliable; 'pointer': unordered, no
// retransmits, motion only). Draws the VM's cursor (sent by the agent) as the video's CSS cursor,
// carries clipboard text both ways, and asks the VM to follow the window's size when allowed.
// Everything held is released when the page loses focus or visibility, or the channel closes.
// The wire messages are the Rust `ViewerToAgent` / `AgentToViewer` (crates/protocol/src/input.rs).
// Like vdesk.js it touches no browser global at import time; the pure helpers are unit tested.

/** Clipboard text goes in pieces of at most this many UTF-8 bytes (CLIPBOARD_CHUNK_BYTES). */
export const CLIPBOARD_CHUNK_BYTES = 8 * 1024;
/** Largest clipboard text carried either way (MAX_CLIPBOARD_BYTES). */
export const MAX_CLIPBOARD_BYTES = 1024 * 1024;
/** Wheel: pixels per notch (DOM_DELTA_PIXEL), lines per notch (DOM_DELTA_LINE). */
export const WHEEL_PIXELS_PER_STEP = 100;
export const WHEEL_LINES_PER_STEP = 3;
const MAX_WHEEL_STEPS = 50;

/**
 * Where a client (CSS pixel) position falls in the video's frame, given the element's box
 * `rect` ({left, top, width, height}), the frame size and the scaling: 'fit' (object-fit:
 * contain: scaled to fit, letterboxed, centred) or '1:1' (object-fit: none: one frame pixel per
 * CSS pixel, centred, cropped when larger). Returns {x, y, inside}, x/y integer frame pixels
 * clamped to the frame, or null when there is no frame yet.
 */
export function framePointFromClient(clientX, clientY, rect, frameW, frameH, scaling = 'fit') {
  if (!(frameW > 0 && frameH > 0 && rect.width > 0 && rect.height > 0)) return null;
  const scale = scaling === '1:1' ? 1 : Math.min(rect.width / frameW, rect.height / frameH);
  const shownW = frameW * scale;
  const shownH = frameH * scale;
  const left = rect.left + (rect.width - shownW) / 2;
  const top = rect.top + (rect.height - shownH) / 2;
  const fx = (clientX - left) / scale;
  const fy = (clientY - top) / scale;
  const inside = fx >= 0 && fy >= 0 && fx < frameW && fy < frameH;
  const clamp = (v, max) => Math.min(max - 1, Math.max(0, Math.floor(v)));
  return { x: clamp(fx, frameW), y: clamp(fy, frameH), inside };
}

/**
 * The inverse of `framePointFromClient`: where frame pixel (x, y) of a `frameW`×`frameH` frame
 * shows on the page (client CSS pixels), or null when there is no frame yet.
 */
export function clientPointFromFrame(x, y, rect, frameW, frameH, scaling = 'fit') {
  if (!(frameW > 0 && frameH > 0 && rect.width > 0 && rect.height > 0)) return null;
  const scale = scaling === '1:1' ? 1 : Math.min(rect.width / frameW, rect.height / frameH);
  const left = rect.left + (rect.width - frameW * scale) / 2;
  const top = rect.top + (rect.height - frameH * scale) / 2;
  return { x: left + x * scale, y: top + y * scale, scale };
}

/** DOM MouseEvent.button to X button numbers (1 left, 2 middle, 3 right, 8 back, 9 forward). */
export function xButton(domButton) {
  return { 0: 1, 1: 2, 2: 3, 3: 8, 4: 9 }[domButton] ?? null;
}

/**
 * Wheel notches from a WheelEvent, carrying the remainder in `acc` ({x, y}) so that smooth
 * (trackpad) scrolling adds up. Returns {dx, dy} in notches (dy > 0 scrolls down).
 */
export function wheelSteps(acc, { deltaX = 0, deltaY = 0, deltaMode = 0 }) {
  const per = deltaMode === 1 ? WHEEL_LINES_PER_STEP : deltaMode === 2 ? 1 : WHEEL_PIXELS_PER_STEP;
  acc.x += deltaX / per;
  acc.y += deltaY / per;
  const take = (v) => Math.max(-MAX_WHEEL_STEPS, Math.min(MAX_WHEEL_STEPS, Math.trunc(v))) || 0;
  const dx = take(acc.x);
  const dy = take(acc.y);
  // Keep only the fraction of a notch: what was over the cap is dropped, not scrolled later.
  acc.x = (acc.x - dx) % 1;
  acc.y = (acc.y - dy) % 1;
  return { dx, dy };
}

/** The `key` message for a KeyboardEvent, or null for keys that are not sent. */
export function keyMessage(ev, down) {
  const key = typeof ev.key === 'string' ? ev.key : '';
  const code = typeof ev.code === 'string' ? ev.code : '';
  if (!key || key.length > 32 || code.length > 32) return null;
  if (ev.isComposing) return null;
  return { type: 'key', key, code, down };
}

/** Splits text into clipboard messages of at most CLIPBOARD_CHUNK_BYTES of UTF-8 each. */
export function clipboardMessages(text) {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length > MAX_CLIPBOARD_BYTES) return null;
  const out = [];
  let start = 0;
  do {
    let end = Math.min(bytes.length, start + CLIPBOARD_CHUNK_BYTES);
    // Never cut a character: back off continuation bytes (10xxxxxx).
    while (end < bytes.length && end > start && (bytes[end] & 0xc0) === 0x80) end--;
    const piece = new TextDecoder().decode(bytes.subarray(start, end));
    start = end;
    out.push(start < bytes.length ? { type: 'clipboard', text: piece, more: true } : { type: 'clipboard', text: piece });
  } while (start < bytes.length);
  return out;
}

/** RGBA base64 of a `cursor` message to the CSS `cursor` value, with `toDataUrl(w, h, rgba)`. */
export function cursorCss(msg, toDataUrl) {
  if (!msg.width || !msg.height) return 'none';
  const url = toDataUrl(msg.width, msg.height, msg.rgba);
  return url ? `url("${url}") ${msg.xhot} ${msg.yhot}, default` : 'default';
}

/** Checks an agent message; returns it or null. */
export function parseAgentMessage(text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    return null;
  }
  if (!m || typeof m !== 'object' || typeof m.type !== 'string') return null;
  switch (m.type) {
    case 'cursor':
      return [m.width, m.height, m.xhot, m.yhot].every(Number.isInteger) && typeof m.rgba === 'string' ? m : null;
    case 'cursorAt':
      return Number.isInteger(m.x) && Number.isInteger(m.y) && m.x >= 0 && m.y >= 0 ? m : null;
    case 'clipboard':
      return typeof m.text === 'string' ? m : null;
    case 'screenSize':
      return Number.isInteger(m.width) && Number.isInteger(m.height) ? m : null;
    case 'notice':
      return typeof m.code === 'string' && typeof m.message === 'string' ? m : null;
    case 'control': {
      const viewer = (v) => v && typeof v === 'object' && typeof v.id === 'string' && typeof v.name === 'string' && typeof v.permission === 'string';
      const ok = (m.holder === null || typeof m.holder === 'string') && typeof m.you === 'string' && Array.isArray(m.viewers) && m.viewers.every(viewer);
      return ok ? m : null;
    }
    default:
      return null;
  }
}

/** Whether a session grant (vdesk.js `parseGrant`) lets the viewer send input: control or admin.
 *  No grant, or anything else, is view only. */
export function mayControl(grant) {
  return grant?.permission === 'control' || grant?.permission === 'admin';
}

/** Whether the browser's clipboard may go to the VM under `grant` (a controlling session whose
 *  link's clipboard direction is `both` or `to-vm`). */
export function clipboardToVm(grant) {
  return mayControl(grant) && (grant.clipboard === 'both' || grant.clipboard === 'to-vm');
}

/** Whether the VM's clipboard is taken in under `grant` (direction `both` or `from-vm`; an absent
 *  direction reads as `both`, as the agent reads it). */
export function clipboardFromVm(grant) {
  const c = grant?.clipboard ?? 'both';
  return c === 'both' || c === 'from-vm';
}

/**
 * Puts the VM's clipboard pieces back together, at most `max` bytes of UTF-8 in all: beyond it
 * the text is dropped (once complete, `push` returns {overflow: true}) and the next one starts
 * clean. `push(piece, more)` returns null while pieces are missing, else {text} or {overflow}.
 */
export class ClipboardAssembler {
  #parts = [];
  #bytes = 0;
  #overflow = false;
  #max;

  constructor(max = MAX_CLIPBOARD_BYTES) {
    this.#max = max;
  }

  push(piece, more) {
    const bytes = new TextEncoder().encode(piece).length;
    if (!this.#overflow && this.#bytes + bytes <= this.#max) {
      this.#parts.push(piece);
      this.#bytes += bytes;
    } else {
      this.#overflow = true;
      this.#parts = [];
    }
    if (more) return null;
    const out = this.#overflow ? { overflow: true } : { text: this.#parts.join('') };
    this.#parts = [];
    this.#bytes = 0;
    this.#overflow = false;
    return out;
  }
}

/**
 * What the viewer page's control bar shows for a `control` message: a status line, the viewers
 * (you first), the actions this viewer may take now (each {kind, label, to?}), and `quiet` when
 * there is nothing worth showing (alone, in control).
 */
export function controlView(msg) {
  if (!msg) return null;
  const me = msg.viewers.find((v) => v.id === msg.you);
  const holder = msg.viewers.find((v) => v.id === msg.holder);
  const mine = msg.holder !== null && msg.holder === msg.you;
  const status = mine ? 'You have control' : holder ? `${holder.name} has control` : 'Nobody has control';
  const actions = [];
  const permission = me?.permission ?? 'view';
  if (mine) {
    actions.push({ kind: 'release', label: 'Release control' });
    for (const v of msg.viewers) {
      if (v.id !== msg.you && v.requested) actions.push({ kind: 'give', label: `Give to ${v.name}`, to: v.id });
    }
  } else if (permission === 'control' || permission === 'admin') {
    if (me?.requested) actions.push({ kind: 'release', label: 'Cancel request' });
    else actions.push({ kind: 'request', label: 'Request control' });
    if (permission === 'admin' && msg.holder !== null) actions.push({ kind: 'take', label: 'Take control' });
  }
  const viewers = [...msg.viewers]
    .sort((a, b) => (a.id === msg.you ? -1 : b.id === msg.you ? 1 : 0))
    .map((v) => ({
      id: v.id,
      text: `${v.name}${v.id === msg.you ? ' (you)' : ''}${v.id === msg.holder ? ' · in control' : ''}${v.requested ? ' · asks for control' : ''}${v.permission === 'view' ? ' · view only' : ''}`,
    }));
  // Alone and in control: nothing to say.
  const quiet = mine && msg.viewers.length === 1;
  return { status, mine, quiet, actions, viewers };
}

const PASTE_KEYS = (ev) => ((ev.ctrlKey || ev.metaKey) && (ev.key === 'v' || ev.key === 'V')) || (ev.shiftKey && ev.key === 'Insert');
const COPY_KEYS = (ev) => (ev.ctrlKey || ev.metaKey) && ['c', 'C', 'x', 'X'].includes(ev.key);

/**
 * Remote control of one <video>. vdesk.js makes one per VdeskViewer (option `input`: false
 * turns it off, or an object with `scaling: 'fit' | '1:1'`, `resize: boolean`,
 * `clipboard: boolean`) and calls attach()/detach() with each attempt's channels, and
 * setGrant() with the session's grant. Until a grant that allows control arrives, nothing is
 * sent (view only): no keys, pointer, wheel, clipboard or resize, and page keys keep their
 * browser meaning. Events: 'cursor', 'clipboard' {text}, 'screensize' {width, height},
 * 'notice' {code, message}, 'control' (who holds control and who watches: the agent's
 * `control` message).
 */
export class VdeskInput extends EventTarget {
  #video;
  #opts;
  #input = null;
  #pointer = null;
  #keys = new Map(); // id -> last key message sent down
  #buttons = new Set();
  #wheel = { x: 0, y: 0 };
  #bound = null;
  #chain = Promise.resolve();
  #clipIn = new ClipboardAssembler();
  #lastClipSent = null;
  #grant = null;
  #resizeTimer = null;
  #observer = null;
  #cursorImg = null; // the last cursor image: {url, width, height, xhot, yhot}
  #cursorEl = null; // a view-only viewer's drawn cursor (an element over the video)
  remoteClipboard = null;
  screenSize = null;
  /** Where the VM's pointer is (`cursorAt`, sent to view-only viewers and to control viewers
   *  that do not hold control), or null. */
  cursorAt = null;
  /** The agent's last `control` message (who holds control, who watches), or null. */
  control = null;

  constructor(video, { scaling = 'fit', resize = false, clipboard = true, logger = globalThis.console } = {}) {
    super();
    this.#video = video;
    this.#opts = { scaling, resize, clipboard, logger };
  }

  get scaling() {
    return this.#opts.scaling;
  }

  /** 'fit' (scaled to the element, letterboxed) or '1:1' (one VM pixel per CSS pixel). */
  setScaling(mode) {
    this.#opts.scaling = mode === '1:1' ? '1:1' : 'fit';
    if (this.#video.style) this.#video.style.objectFit = this.#opts.scaling === '1:1' ? 'none' : 'contain';
    this.#requestResize();
  }

  /** Whether the VM follows the element's size (sent as `resize`; the agent may refuse). */
  setResize(on) {
    this.#opts.resize = !!on;
    this.#requestResize();
  }

  /** The session's grant (vdesk.js `parseGrant`): what this viewer may send. Leaving control
   *  releases everything held first. */
  setGrant(grant) {
    if (mayControl(this.#grant) && !mayControl(grant)) this.releaseAll();
    this.#grant = grant ?? null;
  }

  /** True unless the session's grant allows control (then input is sent). */
  get viewOnly() {
    return !mayControl(this.#grant);
  }

  /** Number of keys and buttons held now (for tests). */
  get held() {
    return this.#keys.size + this.#buttons.size;
  }

  attach(input, pointer) {
    this.detach();
    this.#input = input;
    this.#pointer = pointer;
    if (input) {
      input.onmessage = (ev) => this.#onMessage(ev.data);
      input.onclose = () => this.#forget();
      input.onopen = () => this.#requestResize();
    }
    this.#bind();
    this.setScaling(this.#opts.scaling);
  }

  detach() {
    if (!this.#input && !this.#bound) return;
    this.releaseAll();
    if (this.#input) this.#input.onmessage = this.#input.onclose = this.#input.onopen = null;
    this.#input = this.#pointer = null;
    this.#unbind();
    this.#forget();
    if (this.#video.style) this.#video.style.cursor = '';
    this.#cursorEl?.remove();
    this.#cursorEl = null;
  }

  /** Sends the browser's clipboard text to the VM (also done on paste). */
  sendClipboard(text) {
    if (!clipboardToVm(this.#grant)) return false;
    const msgs = clipboardMessages(String(text));
    if (!msgs) {
      this.#log('warn', `[vdesk] clipboard over ${MAX_CLIPBOARD_BYTES} bytes: not sent`);
      return false;
    }
    for (const m of msgs) this.#send(m);
    this.#lastClipSent = String(text);
    return true;
  }

  /** Releases every key and button held, here and (with `releaseAll`) in the agent. */
  releaseAll() {
    // In order: after any key still waiting for a clipboard sync, so nothing is left down.
    for (const msg of this.#keys.values()) this.#sendInOrder({ ...msg, down: false });
    for (const b of this.#buttons) this.#sendInOrder({ type: 'pointerButton', button: b, down: false, ...this.#lastPoint });
    this.#keys.clear();
    this.#buttons.clear();
    this.#sendInOrder({ type: 'releaseAll' });
  }

  // --- sending -------------------------------------------------------------------------------

  #lastPoint = { x: 0, y: 0, w: 1, h: 1 };

  #send(msg, channel = this.#input) {
    if (!channel || channel.readyState !== 'open') return false;
    // The one way out: a view-only viewer sends nothing at all (the agent would drop it).
    if (!mayControl(this.#grant)) return false;
    try {
      channel.send(JSON.stringify(msg));
      return true;
    } catch (e) {
      this.#log('debug', '[vdesk] input not sent:', e?.message ?? e);
      return false;
    }
  }

  /** Whether this viewer holds control (its input reaches the VM). */
  get inControl() {
    return !!this.control && this.control.holder !== null && this.control.holder === this.control.you;
  }

  /** Asks for control. */
  requestControl() {
    return this.#send({ type: 'requestControl' });
  }

  /** Gives up control (or withdraws a request). */
  releaseControl() {
    this.releaseAll();
    return this.#send({ type: 'releaseControl' });
  }

  /** Hands control to viewer `id` (the holder only). */
  giveControl(id) {
    this.releaseAll();
    return this.#send({ type: 'giveControl', to: String(id) });
  }

  /** Takes control (an admin link only). */
  takeControl() {
    return this.#send({ type: 'takeControl' });
  }

  /** Keys go out in order, after any clipboard sync started before them. */
  #sendInOrder(msg) {
    this.#chain = this.#chain.then(() => this.#send(msg));
  }

  #forget() {
    this.#keys.clear();
    this.#buttons.clear();
    this.#clipIn = new ClipboardAssembler();
  }

  #point(ev) {
    const v = this.#video;
    const rect = v.getBoundingClientRect();
    const p = framePointFromClient(ev.clientX, ev.clientY, rect, v.videoWidth, v.videoHeight, this.#opts.scaling);
    if (!p) return null;
    this.#lastPoint = { x: p.x, y: p.y, w: v.videoWidth, h: v.videoHeight };
    return { ...this.#lastPoint, inside: p.inside };
  }

  // --- browser events ------------------------------------------------------------------------

  #bind() {
    const v = this.#video;
    if (this.#bound || typeof v.addEventListener !== 'function') return;
    if (typeof v.setAttribute === 'function' && !v.hasAttribute('tabindex')) v.setAttribute('tabindex', '0');
    const on = (target, type, fn, opts) => {
      target?.addEventListener?.(type, fn, opts);
      return () => target?.removeEventListener?.(type, fn, opts);
    };
    const doc = globalThis.document;
    const offs = [
      on(v, 'pointermove', (ev) => this.#onMove(ev)),
      on(v, 'pointerdown', (ev) => this.#onButton(ev, true)),
      on(v, 'pointerup', (ev) => this.#onButton(ev, false)),
      on(v, 'pointercancel', () => this.releaseAll()),
      on(v, 'wheel', (ev) => this.#onWheel(ev), { passive: false }),
      on(v, 'contextmenu', (ev) => ev.preventDefault()),
      on(v, 'keydown', (ev) => this.#onKey(ev, true)),
      on(v, 'keyup', (ev) => this.#onKey(ev, false)),
      on(v, 'blur', () => this.releaseAll()),
      on(v, 'focus', () => this.#pullClipboard()),
      on(v, 'paste', (ev) => this.#onPaste(ev)),
      on(v, 'copy', (ev) => this.#onCopy(ev)),
      on(v, 'cut', (ev) => this.#onCopy(ev)),
      on(globalThis, 'blur', () => this.releaseAll()),
      on(doc, 'visibilitychange', () => {
        if (doc.visibilityState !== 'visible') this.releaseAll();
      }),
    ];
    if (typeof globalThis.ResizeObserver === 'function') {
      this.#observer = new ResizeObserver(() => this.#requestResize());
      this.#observer.observe(v);
    }
    this.#bound = () => offs.forEach((off) => off());
  }

  #unbind() {
    this.#bound?.();
    this.#bound = null;
    this.#observer?.disconnect();
    this.#observer = null;
    clearTimeout(this.#resizeTimer);
  }

  #onMove(ev) {
    if (this.viewOnly) return;
    const p = this.#point(ev);
    if (!p) return;
    if (!p.inside && this.#buttons.size === 0) return;
    const { inside, ...at } = p;
    // Motion goes on the unordered channel; before it opens, on the ordered one.
    const ch = this.#pointer?.readyState === 'open' ? this.#pointer : this.#input;
    this.#send({ type: 'pointerMove', ...at }, ch);
  }

  #onButton(ev, down) {
    if (this.viewOnly) return;
    const button = xButton(ev.button);
    const p = this.#point(ev);
    if (button === null || !p) return;
    if (down && !p.inside) return;
    if (!down && !this.#buttons.has(button)) return;
    ev.preventDefault();
    if (down) {
      this.#video.focus?.({ preventScroll: true });
      this.#video.setPointerCapture?.(ev.pointerId);
      this.#buttons.add(button);
    } else {
      this.#buttons.delete(button);
    }
    const { inside, ...at } = p;
    this.#sendInOrder({ type: 'pointerButton', button, down, ...at });
  }

  #onWheel(ev) {
    if (this.viewOnly) return;
    const p = this.#point(ev);
    if (!p || !p.inside) return;
    ev.preventDefault();
    const { dx, dy } = wheelSteps(this.#wheel, ev);
    if (!dx && !dy) return;
    const { inside, ...at } = p;
    this.#sendInOrder({ type: 'wheel', dx, dy, ...at });
  }

  #onKey(ev, down) {
    if (this.viewOnly) return; // the page's keys keep their browser meaning
    const msg = keyMessage(ev, down);
    if (!msg) return;
    const id = msg.code || `key:${msg.key}`;
    // Copy and paste shortcuts keep their browser default, so the page gets copy/paste events.
    const clip = this.#opts.clipboard && (PASTE_KEYS(ev) || COPY_KEYS(ev));
    const pasteIn = this.#opts.clipboard && clipboardToVm(this.#grant) && PASTE_KEYS(ev);
    if (!clip) ev.preventDefault();
    if (down) {
      this.#keys.set(id, msg);
      if (pasteIn) this.#pullClipboard({ waitForPaste: true });
    } else {
      if (!this.#keys.has(id)) return; // never sent down (e.g. pressed before focus)
      this.#keys.delete(id);
    }
    this.#sendInOrder(msg);
  }

  // --- clipboard -----------------------------------------------------------------------------

  #pasteWaiter = null;

  /** Reads the browser clipboard (Clipboard API) or waits for the paste event, then sends it if
   *  it changed since the last text sent or received; keys pressed meanwhile wait, so the VM has
   *  the text before it sees Ctrl+V. Only when the grant allows browser -> VM: otherwise the
   *  clipboard is not even read. */
  #pullClipboard({ waitForPaste = false } = {}) {
    if (!this.#opts.clipboard || !clipboardToVm(this.#grant)) return;
    const nav = globalThis.navigator;
    const api = globalThis.isSecureContext && typeof nav?.clipboard?.readText === 'function';
    const timeout = (ms) => new Promise((r) => setTimeout(r, ms));
    if (api) {
      const read = nav.clipboard
        .readText()
        .then((text) => {
          if (typeof text === 'string' && text !== this.#lastClipSent) this.sendClipboard(text);
        })
        .catch((e) => this.#log('debug', '[vdesk] clipboard not readable:', e?.message ?? e));
      this.#chain = this.#chain.then(() => Promise.race([read, timeout(500)]));
    } else if (waitForPaste) {
      const pasted = new Promise((r) => (this.#pasteWaiter = r));
      this.#chain = this.#chain.then(() => Promise.race([pasted, timeout(200)]));
    }
  }

  #onPaste(ev) {
    if (!clipboardToVm(this.#grant)) return;
    const text = ev.clipboardData?.getData('text/plain');
    ev.preventDefault();
    if (typeof text === 'string' && text !== this.#lastClipSent) this.sendClipboard(text);
    this.#pasteWaiter?.();
    this.#pasteWaiter = null;
  }

  #onCopy(ev) {
    if (this.remoteClipboard === null) return;
    ev.clipboardData?.setData('text/plain', this.remoteClipboard);
    ev.preventDefault();
  }

  // --- from the agent ------------------------------------------------------------------------

  #onMessage(data) {
    if (typeof data !== 'string') return;
    const m = parseAgentMessage(data);
    if (!m) {
      this.#log('debug', '[vdesk] unreadable message from the agent');
      return;
    }
    switch (m.type) {
      case 'cursor': {
        let url = null;
        const css = cursorCss(m, (w, h, rgba) => (url = rgbaDataUrl(w, h, rgba)));
        if (this.#video.style) this.#video.style.cursor = css;
        this.#cursorImg = url ? { url, width: m.width, height: m.height, xhot: m.xhot, yhot: m.yhot } : null;
        this.#drawCursor();
        this.#emit('cursor', { width: m.width, height: m.height, xhot: m.xhot, yhot: m.yhot, css });
        break;
      }
      case 'cursorAt':
        this.cursorAt = { x: m.x, y: m.y };
        this.#drawCursor();
        break;
      case 'clipboard': {
        if (!clipboardFromVm(this.#grant)) return;
        const whole = this.#clipIn.push(m.text, !!m.more);
        if (!whole) return;
        if (whole.overflow) {
          this.#log('warn', `[vdesk] the VM's clipboard is over ${MAX_CLIPBOARD_BYTES} bytes: dropped`);
          return;
        }
        const { text } = whole;
        this.remoteClipboard = text;
        this.#lastClipSent = text; // the browser gets it: do not send it back
        const nav = globalThis.navigator;
        if (globalThis.isSecureContext && typeof nav?.clipboard?.writeText === 'function') {
          nav.clipboard.writeText(text).catch((e) => this.#log('debug', '[vdesk] clipboard not writable:', e?.message ?? e));
        }
        this.#emit('clipboard', { text });
        break;
      }
      case 'screenSize':
        this.screenSize = { width: m.width, height: m.height };
        this.#emit('screensize', this.screenSize);
        break;
      case 'notice':
        this.#log('warn', `[vdesk] agent: ${m.message} (${m.code})`);
        this.#emit('notice', { code: m.code, message: m.message });
        break;
      case 'control':
        this.control = m;
        this.#drawCursor(); // the holder's pointer shows, or hides once this viewer holds control
        this.#emit('control', m);
        break;
    }
  }

  /** The video has no cursor in it: a viewer that does not hold control (view-only, or waiting
   *  for control) gets the VM's cursor image drawn where the VM's pointer is, as an element over
   *  the video that takes no pointer events. The holder's own pointer is the cursor. */
  #drawCursor() {
    const doc = globalThis.document;
    const v = this.#video;
    if (this.#cursorEl && this.inControl) this.#cursorEl.style.display = 'none';
    if (!doc || this.inControl || !this.cursorAt || typeof v.getBoundingClientRect !== 'function') return;
    const img = this.#cursorImg;
    const size = this.screenSize ?? { width: v.videoWidth, height: v.videoHeight };
    const at = clientPointFromFrame(this.cursorAt.x, this.cursorAt.y, v.getBoundingClientRect(), size.width, size.height, this.#opts.scaling);
    if (!this.#cursorEl) {
      this.#cursorEl = doc.createElement('div');
      this.#cursorEl.className = 'vdesk-remote-cursor';
      Object.assign(this.#cursorEl.style, { position: 'fixed', pointerEvents: 'none', zIndex: '10', backgroundRepeat: 'no-repeat' });
      doc.body.appendChild(this.#cursorEl);
    }
    const el = this.#cursorEl;
    if (!img || !at) {
      el.style.display = 'none';
      return;
    }
    Object.assign(el.style, {
      display: 'block',
      width: `${img.width}px`,
      height: `${img.height}px`,
      backgroundImage: `url("${img.url}")`,
      left: `${Math.round(at.x - img.xhot)}px`,
      top: `${Math.round(at.y - img.yhot)}px`,
    });
  }

  // --- resize --------------------------------------------------------------------------------

  #requestResize() {
    if (!this.#opts.resize || !this.#input || this.viewOnly) return;
    clearTimeout(this.#resizeTimer);
    this.#resizeTimer = setTimeout(() => {
      const v = this.#video;
      const dpr = this.#opts.scaling === '1:1' ? 1 : globalThis.devicePixelRatio || 1;
      const even = (n) => Math.max(64, Math.min(8192, 2 * Math.round((n * dpr) / 2)));
      const width = even(v.clientWidth);
      const height = even(v.clientHeight);
      if (this.screenSize && this.screenSize.width === width && this.screenSize.height === height) return;
      this.#send({ type: 'resize', width, height });
    }, 300);
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #log(level, ...args) {
    const l = this.#opts.logger;
    (l?.[level] ?? l?.log)?.call(l, ...args);
  }
}

/** A PNG data: URL of RGBA pixels (base64), drawn through a canvas. */
function rgbaDataUrl(w, h, rgbaBase64) {
  const doc = globalThis.document;
  if (!doc) return null;
  const bytes = Uint8ClampedArray.from(atob(rgbaBase64), (c) => c.charCodeAt(0));
  if (bytes.length !== w * h * 4) return null;
  const canvas = doc.createElement('canvas');
  canvas.width = w;
  canvas.height = h;
  canvas.getContext('2d').putImageData(new ImageData(bytes, w, h), 0, 0);
  return canvas.toDataURL('image/png');
}
