// input.e2e.mjs: remote control end to end: Xvfb + vdesk-controller + vdesk-agent + Chromium,
// with vdesk-xprobe (crates/xpaint) as the X client that reports what it receives. Types a
// string and reads it back from the client, clicks and drags at known places (through the
// letterboxed video), scrolls both axes, copies text each way (xclip on the VM side), types on
// German and French layouts (setxkbmap), checks the cursor image arrives, that nothing stays
// pressed after the video loses focus or the channel closes, and that a view-only viewer sends
// no input at all (nothing on its data channels, nothing in X) and says it is view-only.
//
// Run: node --test --test-concurrency=1 web/test/e2e/input.e2e.mjs (binaries from $VDESK_BIN_DIR).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';

import {
  AGENT_BIN,
  BIN_DIR,
  CONTROLLER_BIN,
  launchChromium,
  Processes,
  recordConsole,
  reportingFailures,
  SCREEN,
  sleep,
  startController,
  startXvfb,
  viewerState,
  waitFor,
  XProbe,
} from './harness.mjs';

const run = promisify(execFile);
const CONTROLLER = CONTROLLER_BIN;
const AGENT = AGENT_BIN;
const XPROBE = path.join(BIN_DIR, 'vdesk-xprobe');
const XPAINT = path.join(BIN_DIR, 'vdesk-xpaint');
const skip = process.env.VDESK_E2E === '0' ? 'VDESK_E2E=0' : false;

// The browser window is taller than 16:9, so the 1280x720 picture is scaled to 1000x562.5 and
// letterboxed 118.75 px from the top: every position below goes through that mapping.
const VIEWPORT = { width: 1000, height: 800 };
const SCALE = VIEWPORT.width / SCREEN.width;
const TOP = (VIEWPORT.height - SCREEN.height * SCALE) / 2;
const toClient = (x, y) => ({ x: x * SCALE + SCALE / 2, y: TOP + y * SCALE + SCALE / 2 });

/** Pixels of the video in the 24x24 square around screen point (x, y) that differ from the
 *  probe window's background (#202020) by more than 60 in some channel: a drawn cursor. */
async function cursorPixels(page, x, y) {
  return page.evaluate(({ x, y, screen }) => {
    const v = document.getElementById('screen');
    const c = document.createElement('canvas');
    c.width = v.videoWidth;
    c.height = v.videoHeight;
    const ctx = c.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(v, 0, 0);
    const sx = Math.round((x * c.width) / screen.width);
    const sy = Math.round((y * c.height) / screen.height);
    const d = ctx.getImageData(sx - 12, sy - 12, 24, 24).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if ([0, 1, 2].some((k) => Math.abs(d[i + k] - 32) > 60)) n++;
    return n;
  }, { x, y, screen: SCREEN });
}

/** From one frame of the video: cursorPixels' count around screen point (x, y), and the
 *  [r, g, b] at screen point (mx, my). */
async function cursorAndMarker(page, x, y, mx, my) {
  return page.evaluate(({ x, y, mx, my, screen }) => {
    const v = document.getElementById('screen');
    const c = document.createElement('canvas');
    c.width = v.videoWidth;
    c.height = v.videoHeight;
    const ctx = c.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(v, 0, 0);
    const at = (px, py) => [Math.round((px * c.width) / screen.width), Math.round((py * c.height) / screen.height)];
    const [sx, sy] = at(x, y);
    const d = ctx.getImageData(sx - 12, sy - 12, 24, 24).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if ([0, 1, 2].some((k) => Math.abs(d[i + k] - 32) > 60)) n++;
    const [ux, uy] = at(mx, my);
    return { cursor: n, marker: Array.from(ctx.getImageData(ux, uy, 1, 1).data.slice(0, 3)) };
  }, { x, y, mx, my, screen: SCREEN });
}

describe('remote control end to end (Xvfb + controller + agent + Chromium + vdesk-xprobe)', { skip }, () => {
  const procs = new Processes();
  const consoleLines = [];
  let display;
  let base;
  let browser;
  let page;
  let probe;
  let firstPair;
  const env = () => ({ ...process.env, DISPLAY: `:${display}` });
  const reports = () => `${consoleLines.join('\n')}\n${procs.report()}`;

  /** A controller (fresh secret) and an agent for VM demo; resolves to `{base, pageUrl}`, the
   *  page address carrying a viewer token with `permission`. */
  async function startPair(name, permission) {
    const ctl = await startController(procs, { vms: ['demo'] });
    const args = name === 'resize' ? ['--allow-resize'] : [];
    await ctl.startAgent(procs, {
      vmId: 'demo',
      display,
      args,
      env: { VDESK_LOG: process.env.VDESK_LOG ?? 'info,vdesk_agent=debug', GST_DEBUG: process.env.GST_DEBUG ?? '1' },
    });
    return { base: ctl.base, pageUrl: await ctl.pageUrl('demo', { permission }) };
  }

  async function openViewer(pair, label) {
    return openViewerWith(pair, label, VIEWPORT);
  }

  async function openViewerWith(pair, label, viewport, initScript = null) {
    const p = await browser.newPage();
    if (initScript) await p.addInitScript(initScript);
    await p.setViewportSize(viewport);
    recordConsole(p, label, consoleLines);
    await p.goto(pair.pageUrl);
    await waitFor(`${label} streaming`, async () => (await viewerState(p)).stage === 'streaming', { timeoutMs: 30000 });
    await waitFor(`${label} input channel open`, () => p.evaluate(() => window.vdeskViewer.inputChannel?.readyState === 'open'), {
      timeoutMs: 10000,
    });
    return p;
  }

  before(async () => {
    for (const bin of [CONTROLLER, AGENT, XPROBE, XPAINT]) {
      if (!existsSync(bin)) throw new Error(`${bin} is missing: build it (cargo build) or set VDESK_BIN_DIR`);
    }
    try {
      display = await startXvfb(procs);
      await run('setxkbmap', ['-display', `:${display}`, 'us']);
      probe = await XProbe.start(procs, display, `0,0,${SCREEN.width},${SCREEN.height}`);
      const pair = await startPair('control', 'control');
      firstPair = pair;
      base = pair.base;
      browser = await launchChromium();
      await browser.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
      page = await openViewer(pair, 'control');
      // Focus the video (a click in a corner).
      const c = toClient(5, 5);
      await page.mouse.click(c.x, c.y);
      await waitFor('the video has the focus', () => page.evaluate(() => document.activeElement?.id === 'screen'), { timeoutMs: 3000 });
    } catch (e) {
      console.error(reports());
      throw e;
    }
  });

  after(async () => {
    await browser?.close();
    await procs.stopAll();
  });

  it('types a string into an X client, which reads it back', () =>
    reportingFailures(reports, async () => {
      const m = probe.mark();
      const text = 'Hello, vdesk! 1+2=3 [ok]';
      await page.keyboard.type(text, { delay: 10 });
      await waitFor(`"${text}" typed in the X client`, () => probe.typed(m) === text || (probe.typed(m).length >= text.length && probe.typed(m)), {
        timeoutMs: 10000,
      }).then((r) => assert.equal(r, true, `X client read ${JSON.stringify(probe.typed(m))}`));
      // Shift+letter and a named key.
      const m2 = probe.mark();
      await page.keyboard.down('Shift');
      await page.keyboard.press('KeyQ');
      await page.keyboard.up('Shift');
      await page.keyboard.press('Enter');
      await waitFor('Q then Return', () => probe.since(m2, 'key').filter((e) => e.down).some((e) => e.keysym === 0xff0d));
      assert.equal(probe.typed(m2), 'Q');
    }));

  it('clicks and drags where the picture shows them, through the letterbox scaling', () =>
    reportingFailures(reports, async () => {
      const m = probe.mark();
      const at = toClient(640, 360);
      await page.mouse.click(at.x, at.y);
      const r = toClient(1000, 100);
      await page.mouse.click(r.x, r.y, { button: 'right' });
      await waitFor('two clicks', () => probe.since(m, 'button').filter((e) => !e.down).length >= 2);
      const [press, release, rpress] = probe.since(m, 'button');
      assert.deepEqual([press.button, press.down, release.button, release.down], [1, true, 1, false]);
      assert.ok(Math.abs(press.rootX - 640) <= 1 && Math.abs(press.rootY - 360) <= 1, `left click at ${press.rootX},${press.rootY}`);
      assert.equal(rpress.button, 3);
      assert.ok(Math.abs(rpress.rootX - 1000) <= 1 && Math.abs(rpress.rootY - 100) <= 1, `right click at ${rpress.rootX},${rpress.rootY}`);

      const d = probe.mark();
      const a = toClient(200, 150);
      const b = toClient(900, 600);
      await page.mouse.move(a.x, a.y);
      await page.mouse.down();
      await page.mouse.move(b.x, b.y, { steps: 8 });
      await page.mouse.up();
      await waitFor('drag release', () => probe.since(d, 'button').some((e) => !e.down));
      const down = probe.since(d, 'button').find((e) => e.down);
      const up = probe.since(d, 'button').find((e) => !e.down);
      const dragged = probe.since(d, 'motion').filter((e) => e.state & 0x100); // Button1Mask
      assert.ok(Math.abs(down.rootX - 200) <= 1 && Math.abs(down.rootY - 150) <= 1, `drag from ${down.rootX},${down.rootY}`);
      assert.ok(Math.abs(up.rootX - 900) <= 1 && Math.abs(up.rootY - 600) <= 1, `drag to ${up.rootX},${up.rootY}`);
      assert.ok(dragged.length >= 1, 'motion with the button held');
    }));

  it('scrolls both axes (buttons 4-7)', () =>
    reportingFailures(reports, async () => {
      const m = probe.mark();
      const at = toClient(400, 300);
      await page.mouse.move(at.x, at.y);
      for (const [dx, dy] of [[0, 100], [0, -100], [100, 0], [-100, 0]]) {
        await page.mouse.wheel(dx, dy);
        await sleep(100);
      }
      await waitFor('four wheel notches', () => probe.since(m, 'button').filter((e) => e.down).length >= 4);
      assert.deepEqual(
        probe.since(m, 'button').filter((e) => e.down).map((e) => e.button),
        [5, 4, 7, 6],
      );
    }));

  it('copies text from the VM to the browser', () =>
    reportingFailures(reports, async () => {
      const text = `copied in the VM ${Date.now()} äöü ✓`;
      const file = path.join(os.tmpdir(), `vdesk-e2e-clip-${process.pid}.txt`);
      await writeFile(file, text);
      procs.spawn('xclip -i', 'xclip', ['-selection', 'clipboard', '-quiet', file], { env: { DISPLAY: `:${display}` } });
      await waitFor('the viewer has the VM clipboard', () => page.evaluate((t) => window.vdeskViewer.input.remoteClipboard === t, text), {
        timeoutMs: 10000,
      });
      const inBrowser = await page.evaluate(() => navigator.clipboard.readText());
      assert.equal(inBrowser, text, "the browser's clipboard");
      await rm(file, { force: true });
    }));

  it('pastes browser text into the VM clipboard (Ctrl+V)', () =>
    reportingFailures(reports, async () => {
      const text = `from the browser ${Date.now()} ✓ ß`;
      await page.evaluate((t) => navigator.clipboard.writeText(t), text);
      await page.keyboard.press('Control+KeyV');
      const out = await waitFor('xclip -o reads the text', async () => {
        const { stdout } = await run('xclip', ['-o', '-selection', 'clipboard'], { env: env(), timeout: 5000 });
        return stdout === text ? stdout : false;
      }, { timeoutMs: 10000 });
      assert.equal(out, text);
    }));

  it('types the right characters on German and French layouts', () =>
    reportingFailures(reports, async () => {
      // Characters the browser sends as `key` with no US key for them go through CDP directly.
      const cdp = await page.context().newCDPSession(page);
      const typeChar = async (ch) => {
        await cdp.send('Input.dispatchKeyEvent', { type: 'keyDown', key: ch, code: '', text: ch });
        await cdp.send('Input.dispatchKeyEvent', { type: 'keyUp', key: ch, code: '' });
      };
      for (const [layout, chars] of [['de', ['ß', '@', '<', 'é', 'z', 'y', 'ö']], ['fr', ['é', '@', '<', 'a', 'q', 'ç']]]) {
        await run('setxkbmap', ['-display', `:${display}`, layout]);
        await sleep(300);
        const m = probe.mark();
        for (const ch of chars) await typeChar(ch);
        const want = chars.join('');
        await waitFor(`"${want}" on ${layout}`, () => probe.typed(m).length >= want.length, { timeoutMs: 10000 });
        assert.equal(probe.typed(m), want, `${layout}: the X client read`);
      }
      // The US keys of the browser on a German VM: typed by Playwright (key + code).
      const m = probe.mark();
      await page.keyboard.type('<@yz', { delay: 10 });
      await waitFor('<@yz on de', () => probe.typed(m).length >= 4, { timeoutMs: 10000 });
      assert.equal(probe.typed(m), '<@yz');
      await run('setxkbmap', ['-display', `:${display}`, 'us']);
      await cdp.detach();
    }));

  it("draws the VM cursor in the page (a CSS cursor from the agent's image)", () =>
    reportingFailures(reports, async () => {
      const css = await waitFor('a cursor image from the agent', () =>
        page.evaluate(() => {
          const c = document.getElementById('screen').style.cursor;
          return c.startsWith('url("data:image/png') ? c : false;
        }),
      );
      assert.match(css, /\) \d+ \d+, default$/);
      // The stream leaves the pointer out: around it the video shows the probe's flat background,
      // in a frame captured after the pointer got there: one that also shows a green marker
      // mapped next to the pointer after the move (a frozen picture shows no pointer either).
      const at = toClient(640, 360);
      await page.mouse.move(at.x, at.y);
      await waitFor('the pointer at 640,360 in X', () => probe.events.findLast((e) => e.ev === 'motion')?.rootX === 640);
      const marker = procs.spawn('vdesk-xpaint (marker)', XPAINT, ['--display', `:${display}`, '--rect', '680,340,40,40', '--color', '00ff00'], { stdin: 'pipe' });
      try {
        const frame = await waitFor('a frame with the marker mapped after the pointer moved', async () => {
          const f = await cursorAndMarker(page, 640, 360, 700, 360);
          return f.marker[1] > 200 && f.marker[0] < 60 && f.marker[2] < 60 ? f : false;
        }, { timeoutMs: 10000 });
        assert.equal(frame.cursor, 0, 'pixels that differ from the background around the pointer');
      } finally {
        await procs.kill(marker);
      }
    }));

  it('releases every key and button when the video loses focus, and when the channel closes', () =>
    reportingFailures(reports, async () => {
      const at = toClient(300, 300);
      await page.mouse.move(at.x, at.y);
      await page.mouse.down();
      await page.keyboard.down('Shift');
      await page.keyboard.down('KeyA');
      await waitFor('shift, a and button 1 held in X', () => {
        const h = probe.held();
        return h.keys.length >= 2 && h.buttons.includes(1);
      });
      await page.evaluate(() => document.getElementById('screen').blur());
      await waitFor('nothing held after blur', () => {
        const h = probe.held();
        return h.keys.length === 0 && h.buttons.length === 0 ? true : false;
      }, { timeoutMs: 5000 });
      // Browser-side state is clean too: releasing now sends nothing stale.
      await page.keyboard.up('KeyA');
      await page.keyboard.up('Shift');
      await page.mouse.up();
      assert.equal(await page.evaluate(() => window.vdeskViewer.input.held), 0);

      // The agent releases on its own when the channel closes (no key-up from the page).
      const c = toClient(5, 5);
      await page.mouse.click(c.x, c.y);
      await page.keyboard.down('ControlLeft');
      await waitFor('Control held in X', () => probe.held().keys.length === 1);
      await page.evaluate(() => window.vdeskViewer.inputChannel.close());
      await waitFor('released by the agent after the channel closed', () => probe.held().keys.length === 0, { timeoutMs: 10000 });
      await page.keyboard.up('ControlLeft');
    }));

  it('a view-only viewer sends no input at all, and says it is view-only', () =>
    reportingFailures(reports, async () => {
      const url = await startPair('view-only', 'view');
      // Every message the page puts on any data channel, from the first.
      const viewer = await openViewerWith(url, 'view-only', VIEWPORT, () => {
        window.__dcSent = [];
        const send = RTCDataChannel.prototype.send;
        RTCDataChannel.prototype.send = function (data) {
          window.__dcSent.push(`${this.label}: ${data}`);
          return send.call(this, data);
        };
      });
      assert.equal(await viewer.evaluate(() => window.vdeskViewer.input.viewOnly), true);
      await waitFor('the view-only badge', () => viewer.evaluate(() => document.getElementById('view-only')?.hidden === false), {
        timeoutMs: 5000,
      });
      await viewer.evaluate(() => navigator.clipboard?.writeText?.('from a view-only page').catch(() => {}));
      const m = probe.mark();
      const at = toClient(640, 360);
      await viewer.mouse.move(at.x - 20, at.y - 20);
      await viewer.mouse.click(at.x, at.y);
      await viewer.mouse.wheel(0, 300);
      await viewer.keyboard.type('nope');
      await viewer.keyboard.press('Control+V');
      await sleep(1000);
      assert.deepEqual(await viewer.evaluate(() => window.__dcSent), [], 'nothing sent on the data channels');
      assert.deepEqual(probe.since(m).filter((e) => e.ev === 'key' || e.ev === 'button'), [], 'X saw no input from the view-only viewer');
      // A view-only viewer shares the stream without the cursor: the agent tells it where the
      // VM's pointer is and the page draws the cursor image there.
      const last = probe.events.findLast((e) => e.ev === 'motion' || e.ev === 'button');
      let seen = null;
      await waitFor('the view-only page draws the pointer where X has it', async () => {
        const c = (seen = await viewer.evaluate(() => {
          const el = document.querySelector('.vdesk-remote-cursor');
          return { at: window.vdeskViewer.input.cursorAt, shown: !!el && el.style.display !== 'none' };
        }));
        // (`last`: where an earlier test left the pointer over the probe; run alone, none did.)
        return c.shown && c.at !== null && (!last || (c.at.x === last.rootX && c.at.y === last.rootY));
      }, { timeoutMs: 5000 }).catch((e) => {
        throw new Error(`${e.message}: page ${JSON.stringify(seen)}, X's last ${JSON.stringify(last)}`);
      });
      await viewer.close();
    }));

  it('takes the token out of the address bar, and a reload of the tab still streams', () =>
    reportingFailures(reports, async () => {
      assert.match(firstPair.pageUrl, /[?&]token=/);
      const viewer = await openViewer(firstPair, 'token');
      const shown = new URL(viewer.url());
      assert.equal(shown.searchParams.has('token'), false, `address bar: ${viewer.url()}`);
      assert.equal(shown.pathname, '/vm/demo');
      assert.equal(await viewer.evaluate(() => history.length >= 1 && !location.href.includes('token')), true);
      const first = await viewer.evaluate(() => window.vdeskViewer.sessionId);
      await viewer.reload();
      await waitFor('streaming again after the reload', async () => (await viewerState(viewer)).stage === 'streaming', { timeoutMs: 30000 });
      const second = await viewer.evaluate(() => window.vdeskViewer.sessionId);
      assert.notEqual(second, first, 'a new session, made with the kept token');
      assert.equal(new URL(viewer.url()).searchParams.has('token'), false);
      await viewer.close();
    }));

  it('resizes the VM screen to the window, and the stream follows without a reconnect', () =>
    reportingFailures(reports, async () => {
      const url = await startPair('resize', 'control');
      // The agent of this pair allows resizing; it shares the X display with the others.
      const viewer = await openViewerWith(url, 'resize', { width: 1000, height: 600 });
      const before = await viewer.evaluate(() => ({ id: window.vdeskViewer.sessionId, attempts: window.vdeskViewer.attempts }));
      await viewer.evaluate(() => window.vdeskViewer.input.setResize(true));
      await waitFor('the video is 1000x600', async () => {
        const s = await viewerState(viewer);
        return s.videoWidth === 1000 && s.videoHeight === 600;
      }, { timeoutMs: 20000 });
      const { stdout } = await run('xdpyinfo', [], { env: env() });
      assert.match(stdout, /dimensions:\s+1000x600 pixels/);
      const after = await viewer.evaluate(() => ({ id: window.vdeskViewer.sessionId, attempts: window.vdeskViewer.attempts, stage: window.vdeskViewer.stage }));
      assert.deepEqual(after, { ...before, stage: 'streaming' }, 'same session, no new attempt');
      // Frames keep coming at the new size.
      const f0 = (await viewerState(viewer)).framesDecoded;
      await waitFor('more frames after the resize', async () => (await viewerState(viewer)).framesDecoded > f0 + 10, { timeoutMs: 10000 });
      // And a click lands 1:1 on the new screen.
      const m = probe.mark();
      await viewer.mouse.click(700, 500);
      await waitFor('the click', () => probe.since(m, 'button').some((e) => !e.down));
      const press = probe.since(m, 'button').find((e) => e.down);
      assert.ok(Math.abs(press.rootX - 700) <= 1 && Math.abs(press.rootY - 500) <= 1, `click at ${press.rootX},${press.rootY}`);
      await viewer.close();
      // The session's end stops its X threads (they join; nothing hangs).
      await waitFor('the agent stopped remote control', () => /remote control stopped/.test(procs.report()), { timeoutMs: 10000 });
    }));
});
