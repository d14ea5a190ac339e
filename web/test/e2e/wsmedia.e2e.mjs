// wsmedia.e2e.mjs: the WebSocket fallback end to end (Xvfb + controller + agent + Chromium +
// vdesk-xprobe): with ?transport=ws the page streams over the controller's WebSocket, decodes
// with WebCodecs onto a canvas that shows what X shows, the overlay names the transport, and
// typing and clicking land in the X client (checked on the X side, as input.e2e.mjs does); a
// view-only viewer's input is dropped by the agent; after the agent goes and comes back the same
// page reconnects by itself (error panel, countdown, frames again); and the same through TLS (https + wss, the
// agent's media link pinned to the certificate).
//
// Run: node --test --test-concurrency=1 web/test/e2e/wsmedia.e2e.mjs (binaries from $VDESK_BIN_DIR).

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  AGENT_BIN,
  BIN_DIR,
  CONTROLLER_BIN,
  closeTo,
  launchChromium,
  makeCertificate,
  Processes,
  readRootPixel,
  recordConsole,
  SCREEN,
  startController,
  startXvfb,
  waitFor,
} from './harness.mjs';

const XPROBE = path.join(BIN_DIR, 'vdesk-xprobe');
// The TLS test's certificate is self-signed: node's own checks of the controller accept it (as
// tls.e2e.mjs does); the agent pins it and Chromium runs with --ignore-certificate-errors.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
const skip = process.env.VDESK_E2E === '0' ? 'VDESK_E2E=0' : false;
const VIEWPORT = { width: 1280, height: 720 };

/** The X probe's JSON lines. */
class Probe {
  events = [];
  constructor(child) {
    let buf = '';
    child.stdout.on('data', (chunk) => {
      buf += chunk.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          this.events.push(JSON.parse(line));
        } catch {
          // not ours
        }
      }
    });
  }
  mark() {
    return this.events.length;
  }
  since(mark, ev) {
    return this.events.slice(mark).filter((e) => !ev || e.ev === ev);
  }
  typed(mark) {
    return this.since(mark, 'key').filter((e) => e.down && e.char !== null).map((e) => e.char).join('');
  }
}

/** [r, g, b] of the WebSocket canvas at screen point (x, y). */
async function canvasPixel(page, x, y) {
  return page.evaluate(({ x, y, screen }) => {
    const c = document.getElementById('ws-screen');
    const copy = document.createElement('canvas');
    copy.width = c.width;
    copy.height = c.height;
    const ctx = copy.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(c, 0, 0);
    const d = ctx.getImageData(Math.round((x * c.width) / screen.width), Math.round((y * c.height) / screen.height), 1, 1).data;
    return [d[0], d[1], d[2]];
  }, { x, y, screen: SCREEN });
}

describe('WebSocket fallback end to end (?transport=ws)', { skip }, () => {
  const procs = new Processes();
  const lines = [];
  let display;
  let browser;
  let probe;
  let ctl;
  let agent;
  const reports = () => `${lines.join('\n')}\n${procs.report()}`;

  before(async () => {
    for (const bin of [CONTROLLER_BIN, AGENT_BIN, XPROBE]) {
      if (!existsSync(bin)) throw new Error(`${bin} is missing: build it (cargo build) or set VDESK_BIN_DIR`);
    }
    display = await startXvfb(procs);
    const child = procs.spawn('vdesk-xprobe', XPROBE, ['--display', `:${display}`, '--rect', `0,0,${SCREEN.width},${SCREEN.height}`]);
    probe = new Probe(child);
    await waitFor('xprobe ready', () => probe.events.some((e) => e.ev === 'ready'));
    ctl = await startController(procs, { vms: ['demo'] });
    agent = await ctl.startAgent(procs, { vmId: 'demo', display });
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await procs.stopAll();
  });

  it('streams over the WebSocket, shows the desktop, and takes keys and clicks', async () => {
    const page = await browser.newPage();
    await page.setViewportSize(VIEWPORT);
    recordConsole(page, 'ws', lines);
    const t0 = Date.now();
    await page.goto(`${await ctl.pageUrl('demo')}&transport=ws`);
    try {
      await waitFor('a decoded frame on the canvas', () => page.evaluate(() => (window.vdeskWsPlayer?.stats.decoded ?? 0) > 0), { timeoutMs: 15000 });
      console.log(`first WebSocket frame painted ${Date.now() - t0} ms after page load`);
      assert.equal(await page.evaluate(() => window.vdeskViewer.stage ?? null), 'idle', 'WebRTC was not tried');
      // The canvas shows what X shows.
      const want = await readRootPixel(display, 640, 360);
      await waitFor('the canvas shows the X screen', async () => closeTo(await canvasPixel(page, 640, 360), want), { timeoutMs: 10000 });
      const overlay = await page.textContent('#ws-stats');
      assert.match(overlay, /transport: websocket/);
      assert.match(overlay, /decode .* ms · queue \d+ · dropped \d+/);
      // Input over the same WebSocket reaches X.
      await waitFor('the input seat (a control message)', () => page.evaluate(() => window.vdeskWsPlayer.stats.frames > 3));
      const m = probe.mark();
      await page.mouse.click(320, 200);
      await waitFor('a click in X', () => probe.since(m, 'button').some((e) => !e.down), { timeoutMs: 10000 });
      const press = probe.since(m, 'button').find((e) => e.down);
      assert.equal(press.button, 1);
      assert.ok(Math.abs(press.x - 320) <= 3 && Math.abs(press.y - 200) <= 3, JSON.stringify(press));
      const k = probe.mark();
      await page.keyboard.type('ws1');
      await waitFor('"ws1" typed in X', () => probe.typed(k).length >= 3, { timeoutMs: 10000 });
      assert.equal(probe.typed(k), 'ws1');
    } catch (e) {
      console.error(reports());
      throw e;
    }
    await page.close();
  });

  it('drops a view-only viewer\'s input over the WebSocket in the agent, and says so', async () => {
    const page = await browser.newPage();
    await page.setViewportSize(VIEWPORT);
    recordConsole(page, 'ws-view', lines);
    await page.goto(`${await ctl.pageUrl('demo', { permission: 'view' })}&transport=ws`);
    try {
      await waitFor('a decoded frame', () => page.evaluate(() => (window.vdeskWsPlayer?.stats.decoded ?? 0) > 0), { timeoutMs: 15000 });
      await page.evaluate(() => {
        window.wsNotices = [];
        window.vdeskWsPlayer.addEventListener('message', ({ detail }) => {
          if (detail?.type === 'notice') window.wsNotices.push(detail.code);
        });
      });
      const m = probe.mark();
      // Sent as they are, whatever the page would do: the agent is the one that refuses.
      await page.evaluate(() => {
        const p = window.vdeskWsPlayer;
        p.send({ type: 'key', key: 'x', code: 'KeyX', down: true });
        p.send({ type: 'key', key: 'x', code: 'KeyX', down: false });
        p.send({ type: 'pointerButton', button: 1, down: true, x: 10, y: 10, w: 1280, h: 720 });
        p.send({ type: 'pointerButton', button: 1, down: false, x: 10, y: 10, w: 1280, h: 720 });
      });
      await waitFor('the view_only notice', () => page.evaluate(() => window.wsNotices.includes('view_only')), { timeoutMs: 10000 });
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(probe.since(m, 'key'), []);
      assert.deepEqual(probe.since(m, 'button'), []);
    } catch (e) {
      console.error(reports());
      throw e;
    }
    await page.close();
  });
  // Last in this block: it stops the agent.
  it('reconnects by itself after the stream ended (agent gone and back), on the same page', async () => {
    const page = await browser.newPage();
    await page.setViewportSize(VIEWPORT);
    recordConsole(page, 'ws-again', lines);
    await page.goto(`${await ctl.pageUrl('demo')}&transport=ws`);
    const errorShown = () => page.evaluate(() => !document.getElementById('error').hidden);
    try {
      await waitFor('a decoded frame', () => page.evaluate(() => (window.vdeskWsPlayer?.stats.decoded ?? 0) > 0), { timeoutMs: 15000 });
      await page.evaluate(() => { window.firstPlayer = window.vdeskWsPlayer; });
      await procs.kill(agent);
      await waitFor('the error panel with a countdown', async () => (await errorShown())
        && /retrying in \d+s|reconnecting/.test(await page.textContent('#retry-countdown')), { timeoutMs: 15000 });
      const before = await page.evaluate(() => window.vdeskWsPlayer.stats.decoded);
      agent = await ctl.startAgent(procs, { vmId: 'demo', display });
      await waitFor('frames again on the same page', () => page.evaluate((n) => window.vdeskWsPlayer.stats.decoded > n + 5, before), { timeoutMs: 30000 });
      assert.equal(await page.evaluate(() => window.vdeskWsPlayer === window.firstPlayer), true, 'the same page and player');
      await waitFor('the error panel gone', async () => !(await errorShown()), { timeoutMs: 5000 });
      const want = await readRootPixel(display, 640, 360);
      await waitFor('the canvas shows the X screen', async () => closeTo(await canvasPixel(page, 640, 360), want), { timeoutMs: 10000 });
    } catch (e) {
      console.error(reports());
      throw e;
    }
    await page.close();
  });
});

describe('WebSocket fallback through TLS (https page, wss media link)', { skip }, () => {
  const procs = new Processes();
  const lines = [];
  let browser;

  after(async () => {
    await browser?.close();
    await procs.stopAll();
  });

  it('streams over wss:// end to end', async () => {
    const display = await startXvfb(procs);
    const cert = await makeCertificate();
    const ctl = await startController(procs, { vms: ['demo'], tls: cert });
    assert.ok(ctl.base.startsWith('https://'));
    await ctl.startAgent(procs, { vmId: 'demo', display });
    browser = await launchChromium({ args: ['--ignore-certificate-errors'] });
    const page = await browser.newPage();
    recordConsole(page, 'wss', lines);
    await page.goto(`${await ctl.pageUrl('demo')}&transport=ws`);
    try {
      await waitFor('a decoded frame over wss', () => page.evaluate(() => (window.vdeskWsPlayer?.stats.decoded ?? 0) > 0), { timeoutMs: 20000 });
      assert.ok(await page.evaluate(() => window.vdeskWsPlayer.url.startsWith('wss://')));
      const want = await readRootPixel(display, 100, 100);
      await waitFor('the canvas shows the X screen', async () => closeTo(await canvasPixel(page, 100, 100), want), { timeoutMs: 10000 });
    } catch (e) {
      console.error(`${lines.join('\n')}\n${procs.report()}`);
      throw e;
    }
  });
});
