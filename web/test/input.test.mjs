// input.test.mjs: unit tests of input.js's pure helpers (coordinate mapping with letterboxing
// and 1:1, buttons, wheel accumulation, keys, clipboard pieces, agent messages against the shared
// fixtures) and of VdeskInput's release-everything behaviour with fake channels and a fake video.
// No browser here; the end-to-end checks are in e2e/input.e2e.mjs.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

import {
  CLIPBOARD_CHUNK_BYTES,
  ClipboardAssembler,
  MAX_CLIPBOARD_BYTES,
  VdeskInput,
  clipboardFromVm,
  clipboardMessages,
  clipboardToVm,
  mayControl,
  cursorCss,
  clientPointFromFrame,
  framePointFromClient,
  keyMessage,
  parseAgentMessage,
  wheelSteps,
  xButton,
} from '../input.js';

const fixtures = JSON.parse(readFileSync(new URL('./fixtures/messages.json', import.meta.url), 'utf8'));

describe('pointer positions', () => {
  const rect = { left: 0, top: 0, width: 1000, height: 800 };
  it('map through object-fit: contain letterboxing and scaling', () => {
    // 1280x720 in 1000x800: scale 0.78125, shown 1000x562.5, 118.75 px bars top and bottom.
    assert.deepEqual(framePointFromClient(500, 400, rect, 1280, 720), { x: 640, y: 360, inside: true });
    assert.deepEqual(framePointFromClient(0, 118.75, rect, 1280, 720), { x: 0, y: 0, inside: true });
    assert.deepEqual(framePointFromClient(999.9, 681.2, rect, 1280, 720), { x: 1279, y: 719, inside: true });
    // In the bar: clamped, and marked outside.
    assert.deepEqual(framePointFromClient(500, 50, rect, 1280, 720), { x: 640, y: 0, inside: false });
    // An element that is not at the page's origin.
    assert.deepEqual(framePointFromClient(600, 450, { ...rect, left: 100, top: 50 }, 1280, 720), { x: 640, y: 360, inside: true });
  });
  it('map 1:1, centred and cropped', () => {
    // 1280x720 in 1000x800 at 1:1: 140 px cut on each side, 40 px bars top and bottom.
    assert.deepEqual(framePointFromClient(0, 40, rect, 1280, 720, '1:1'), { x: 140, y: 0, inside: true });
    assert.deepEqual(framePointFromClient(500, 400, rect, 1280, 720, '1:1'), { x: 640, y: 360, inside: true });
    assert.equal(framePointFromClient(500, 20, rect, 1280, 720, '1:1').inside, false);
  });
  it('map back from the frame to the page (where a view-only viewer draws the cursor)', () => {
    assert.deepEqual(clientPointFromFrame(640, 360, rect, 1280, 720), { x: 500, y: 400, scale: 1000 / 1280 });
    assert.deepEqual(clientPointFromFrame(0, 0, rect, 1280, 720), { x: 0, y: 118.75, scale: 1000 / 1280 });
    assert.deepEqual(clientPointFromFrame(140, 0, rect, 1280, 720, '1:1'), { x: 0, y: 40, scale: 1 });
    for (const [x, y] of [[3, 7], [1279, 719], [640, 360]]) {
      const c = clientPointFromFrame(x, y, rect, 1280, 720);
      const back = framePointFromClient(c.x + 0.1, c.y + 0.1, rect, 1280, 720);
      assert.deepEqual([back.x, back.y], [x, y]);
    }
    assert.equal(clientPointFromFrame(1, 1, rect, 0, 0), null);
  });
  it('need a frame', () => {
    assert.equal(framePointFromClient(1, 1, rect, 0, 0), null);
  });
});

describe('buttons, wheel and keys', () => {
  it('number buttons as X does', () => {
    assert.deepEqual([0, 1, 2, 3, 4, 5].map(xButton), [1, 2, 3, 8, 9, null]);
  });
  it('turn wheel deltas into notches, keeping the remainder', () => {
    const acc = { x: 0, y: 0 };
    assert.deepEqual(wheelSteps(acc, { deltaY: 100 }), { dx: 0, dy: 1 });
    assert.deepEqual(wheelSteps(acc, { deltaY: -40 }), { dx: 0, dy: 0 });
    assert.deepEqual(wheelSteps(acc, { deltaY: -60 }), { dx: 0, dy: -1 });
    assert.deepEqual(wheelSteps(acc, { deltaX: 3, deltaMode: 1 }), { dx: 1, dy: 0 });
    assert.deepEqual(wheelSteps(acc, { deltaY: 1e6 }), { dx: 0, dy: 50 });
    assert.deepEqual(wheelSteps(acc, { deltaY: 0 }), { dx: 0, dy: 0 }); // the excess is dropped
  });
  it('send key and code, not compositions', () => {
    assert.deepEqual(keyMessage({ key: 'ß', code: 'Minus' }, true), { type: 'key', key: 'ß', code: 'Minus', down: true });
    assert.equal(keyMessage({ key: 'a', code: 'KeyA', isComposing: true }, true), null);
    assert.equal(keyMessage({ key: '', code: 'KeyA' }, true), null);
  });
});

describe('clipboard pieces', () => {
  it('are at most 8 KiB of UTF-8, never cut a character, and add up to the text', () => {
    const text = `${'a'.repeat(CLIPBOARD_CHUNK_BYTES - 1)}é${'✓'.repeat(5000)}`;
    const msgs = clipboardMessages(text);
    const enc = new TextEncoder();
    assert.ok(msgs.every((m) => enc.encode(m.text).length <= CLIPBOARD_CHUNK_BYTES));
    assert.equal(msgs.map((m) => m.text).join(''), text);
    assert.deepEqual(msgs.map((m) => m.more ?? false), [...msgs.slice(1).map(() => true), false]);
    assert.equal(msgs[0].text.length, CLIPBOARD_CHUNK_BYTES - 1); // the é went to the next piece
    assert.deepEqual(clipboardMessages(''), [{ type: 'clipboard', text: '' }]);
    assert.equal(clipboardMessages('x'.repeat(MAX_CLIPBOARD_BYTES + 1)), null);
  });
});

describe('agent messages', () => {
  it('parse every AgentToViewer example of the fixtures, and refuse junk', () => {
    for (const m of fixtures.messages.filter((m) => m.rust === 'AgentToViewer')) {
      assert.deepEqual(parseAgentMessage(JSON.stringify(m.json)), m.json, m.name);
    }
    for (const bad of ['', 'null', '{}', '{"type":"cursor"}', '{"type":"screenSize","width":"1"}', '{"type":"cursorAt","x":-1,"y":2}', '{"type":"cursorAt","x":1.5,"y":2}', '{"type":"nope"}']) {
      assert.equal(parseAgentMessage(bad), null, bad);
    }
  });
  it('make a CSS cursor with its hotspot, or none for an empty image', () => {
    const msg = fixtures.messages.find((m) => m.name === 'agentCursor').json;
    assert.equal(cursorCss({ ...msg, xhot: 1 }, () => 'data:image/png;base64,xx'), 'url("data:image/png;base64,xx") 1 0, default');
    assert.equal(cursorCss({ ...msg, width: 0, height: 0 }, () => 'x'), 'none');
  });
});

describe('VdeskInput', () => {
  function channel() {
    return { readyState: 'open', sent: [], send(t) { this.sent.push(JSON.parse(t)); } };
  }
  const tick = () => new Promise((r) => setTimeout(r, 0));
  it('releases what it holds (keys, then buttons, then releaseAll), and forgets it', async () => {
    const video = new EventTarget();
    Object.assign(video, { videoWidth: 1280, videoHeight: 720, getBoundingClientRect: () => ({ left: 0, top: 0, width: 1280, height: 720 }) });
    const input = new VdeskInput(video, { logger: null, clipboard: false });
    input.setGrant({ permission: 'control', clipboard: 'both' });
    const ch = channel();
    input.attach(ch, channel());
    const key = (type, key, code) => {
      const ev = new Event(type, { cancelable: true });
      Object.assign(ev, { key, code });
      video.dispatchEvent(ev);
      return ev;
    };
    const ev = key('keydown', 'a', 'KeyA');
    assert.equal(ev.defaultPrevented, true);
    const down = new Event('pointerdown', { cancelable: true });
    Object.assign(down, { button: 0, clientX: 10, clientY: 20, pointerId: 1 });
    video.dispatchEvent(down);
    await tick();
    assert.equal(input.held, 2);
    video.dispatchEvent(new Event('blur'));
    await tick();
    assert.equal(input.held, 0);
    assert.deepEqual(ch.sent.map((m) => [m.type, m.down]), [
      ['key', true],
      ['pointerButton', true],
      ['key', false],
      ['pointerButton', false],
      ['releaseAll', undefined],
    ]);
    assert.deepEqual(ch.sent[1], { type: 'pointerButton', button: 1, down: true, x: 10, y: 20, w: 1280, h: 720 });
    // A key-up for a key released already sends nothing.
    key('keyup', 'a', 'KeyA');
    await tick();
    assert.equal(ch.sent.length, 5);
    input.detach();
  });

  function fakeVideo() {
    const video = new EventTarget();
    Object.assign(video, {
      videoWidth: 1280,
      videoHeight: 720,
      clientWidth: 1280,
      clientHeight: 720,
      style: {},
      getBoundingClientRect: () => ({ left: 0, top: 0, width: 1280, height: 720 }),
    });
    return video;
  }
  function fire(target, type, props) {
    const ev = new Event(type, { cancelable: true });
    Object.assign(ev, props);
    target.dispatchEvent(ev);
    return ev;
  }
  /** Every kind of input a person can make on the video. */
  async function everything(video, input) {
    fire(video, 'keydown', { key: 'a', code: 'KeyA' });
    fire(video, 'keyup', { key: 'a', code: 'KeyA' });
    fire(video, 'pointermove', { clientX: 5, clientY: 5 });
    fire(video, 'pointerdown', { button: 0, clientX: 10, clientY: 20, pointerId: 1 });
    fire(video, 'pointerup', { button: 0, clientX: 10, clientY: 20, pointerId: 1 });
    fire(video, 'wheel', { deltaY: 300, deltaMode: 0, clientX: 10, clientY: 20 });
    fire(video, 'paste', { clipboardData: { getData: () => 'pasted text' } });
    input.sendClipboard('sent text');
    input.releaseAll();
    await tick();
  }

  it('sends nothing at all before a grant, or with a view-only grant', async () => {
    for (const grant of [undefined, { permission: 'view', clipboard: 'both' }, { permission: 'root' }]) {
      const video = fakeVideo();
      const input = new VdeskInput(video, { logger: null, resize: true });
      if (grant !== undefined) input.setGrant(grant);
      assert.equal(input.viewOnly, true);
      const ch = channel();
      const pointer = channel();
      input.attach(ch, pointer);
      const key = fire(video, 'keydown', { key: 'F5', code: 'F5' });
      assert.equal(key.defaultPrevented, false, 'page keys keep their meaning in view mode');
      await everything(video, input);
      assert.deepEqual([...ch.sent, ...pointer.sent], [], JSON.stringify(grant));
      assert.equal(input.held, 0);
      input.detach();
    }
  });

  it('sends input with a control grant, and the clipboard only towards a to-vm link', async () => {
    const sent = async (grant) => {
      const video = fakeVideo();
      const input = new VdeskInput(video, { logger: null });
      input.setGrant(grant);
      const ch = channel();
      const pointer = channel();
      input.attach(ch, pointer);
      await everything(video, input);
      input.detach();
      return [...ch.sent, ...pointer.sent].map((m) => m.type);
    };
    const both = await sent({ permission: 'control', clipboard: 'both' });
    for (const t of ['key', 'pointerMove', 'pointerButton', 'wheel', 'clipboard', 'releaseAll']) assert.ok(both.includes(t), t);
    const fromVm = await sent({ permission: 'control', clipboard: 'from-vm' });
    assert.ok(fromVm.includes('key') && !fromVm.includes('clipboard'), fromVm.join());
    const off = await sent({ permission: 'admin', clipboard: 'off' });
    assert.ok(off.includes('wheel') && !off.includes('clipboard'), off.join());
  });

  it('reads the browser clipboard on focus only when it may go to the VM, and sends it only when it changed', async () => {
    const nav = Object.getOwnPropertyDescriptor(globalThis, 'navigator');
    const secure = Object.getOwnPropertyDescriptor(globalThis, 'isSecureContext');
    let reads = 0;
    let text = 'one';
    Object.defineProperty(globalThis, 'navigator', {
      configurable: true,
      value: { clipboard: { readText: async () => (reads++, text), writeText: async () => {} } },
    });
    Object.defineProperty(globalThis, 'isSecureContext', { configurable: true, value: true });
    try {
      const focusTwice = async (grant) => {
        const video = fakeVideo();
        const input = new VdeskInput(video, { logger: null });
        input.setGrant(grant);
        const ch = channel();
        input.attach(ch, channel());
        fire(video, 'focus');
        await tick();
        await tick();
        fire(video, 'focus');
        await tick();
        await tick();
        input.detach();
        return ch.sent.filter((m) => m.type === 'clipboard').map((m) => m.text);
      };
      reads = 0;
      assert.deepEqual(await focusTwice({ permission: 'control', clipboard: 'from-vm' }), []);
      assert.deepEqual(await focusTwice({ permission: 'view', clipboard: 'both' }), []);
      assert.equal(reads, 0, 'the clipboard is not even read');
      assert.deepEqual(await focusTwice({ permission: 'control', clipboard: 'to-vm' }), ['one'], 'sent once, not on every focus');
      assert.equal(reads, 2);
    } finally {
      if (nav) Object.defineProperty(globalThis, 'navigator', nav);
      else delete globalThis.navigator;
      if (secure) Object.defineProperty(globalThis, 'isSecureContext', secure);
      else delete globalThis.isSecureContext;
    }
  });

  it('caps the clipboard coming from the VM, and takes none when the link says to-vm only', async () => {
    const warnings = [];
    const logger = { warn: (...a) => warnings.push(a.join(' ')), debug() {}, log() {} };
    const video = fakeVideo();
    const input = new VdeskInput(video, { logger });
    input.setGrant({ permission: 'view', clipboard: 'both' });
    const ch = channel();
    input.attach(ch, channel());
    const got = [];
    input.addEventListener('clipboard', ({ detail }) => got.push(detail.text));
    const piece = 'x'.repeat(CLIPBOARD_CHUNK_BYTES);
    for (let i = 0; i < MAX_CLIPBOARD_BYTES / CLIPBOARD_CHUNK_BYTES; i++) {
      ch.onmessage({ data: JSON.stringify({ type: 'clipboard', text: piece, more: true }) });
    }
    ch.onmessage({ data: JSON.stringify({ type: 'clipboard', text: 'one too many' }) });
    assert.deepEqual(got, []);
    assert.equal(input.remoteClipboard, null);
    assert.ok(warnings.some((w) => w.includes('clipboard')), warnings.join());
    // The next text starts clean.
    ch.onmessage({ data: JSON.stringify({ type: 'clipboard', text: 'small' }) });
    assert.deepEqual(got, ['small']);
    // A to-vm link takes nothing from the VM.
    input.setGrant({ permission: 'control', clipboard: 'to-vm' });
    ch.onmessage({ data: JSON.stringify({ type: 'clipboard', text: 'not wanted' }) });
    assert.deepEqual(got, ['small']);
    input.detach();
  });
  it('follows who holds control and asks for it', () => {
    const video = new EventTarget();
    const input = new VdeskInput(video, { logger: null, clipboard: false });
    input.setGrant({ permission: 'admin', clipboard: 'both' });
    const ch = channel();
    input.attach(ch, channel());
    const seen = [];
    input.addEventListener('control', (ev) => seen.push(ev.detail.holder));
    assert.equal(input.control, null);
    assert.equal(input.inControl, false);
    const msg = fixtures.messages.find((m) => m.name === 'agentControl').json;
    ch.onmessage({ data: JSON.stringify(msg) });
    assert.equal(input.inControl, false, 'alice holds it, this is bob');
    assert.deepEqual(seen, ['1']);
    ch.onmessage({ data: JSON.stringify({ ...msg, holder: '2' }) });
    assert.equal(input.inControl, true);
    assert.equal(input.requestControl(), true);
    assert.equal(input.giveControl(3), true);
    assert.equal(input.releaseControl(), true);
    assert.equal(input.takeControl(), true);
    assert.deepEqual(
      ch.sent.map((m) => m.type),
      ['requestControl', 'giveControl', 'releaseControl', 'takeControl'],
      'nothing held: no releaseAll before a handover',
    );
    assert.deepEqual(ch.sent[1], { type: 'giveControl', to: '3' });
    ch.onmessage({ data: JSON.stringify({ type: 'control', holder: 5, you: '2', viewers: [] }) });
    assert.equal(input.inControl, true, 'an unreadable control message changes nothing');
    input.detach();
  });
});

describe('grant rules', () => {
  it('control needs control or admin; the clipboard follows the direction', () => {
    assert.equal(mayControl(null), false);
    assert.equal(mayControl({ permission: 'view' }), false);
    assert.equal(mayControl({ permission: 'control' }), true);
    assert.equal(mayControl({ permission: 'admin' }), true);
    assert.equal(clipboardToVm({ permission: 'view', clipboard: 'both' }), false);
    assert.equal(clipboardToVm({ permission: 'control', clipboard: 'to-vm' }), true);
    assert.equal(clipboardToVm({ permission: 'control', clipboard: 'from-vm' }), false);
    assert.equal(clipboardFromVm({ permission: 'view', clipboard: 'both' }), true);
    assert.equal(clipboardFromVm({ permission: 'control', clipboard: 'to-vm' }), false);
    assert.equal(clipboardFromVm({ permission: 'control', clipboard: 'off' }), false);
    assert.equal(clipboardFromVm(null), true);
  });
  it('the clipboard assembler counts UTF-8 bytes, not characters', () => {
    const a = new ClipboardAssembler(4);
    assert.equal(a.push('é', true), null); // 2 bytes
    assert.deepEqual(a.push('é', false), { text: 'éé' });
    assert.equal(a.push('é', true), null);
    assert.deepEqual(a.push('éé', false), { overflow: true }); // 6 bytes
    assert.deepEqual(a.push('ok', false), { text: 'ok' });
  });
});
