// multi.e2e.mjs: many viewers, one encoder, one user in control, end to end: Xvfb +
// vdesk-controller + vdesk-agent (with --metrics-listen) + three Chromium pages on one VM, and
// vdesk-xprobe as the X client that reports the clicks it receives. All three show the same
// desktop; the agent runs one encoder and one capture for them (its /metrics says so); a viewer
// joining a still screen shows a picture at once; control moves by request + give and by request
// + release, and only the holder's clicks reach X (checked on the X side); a viewer leaving
// changes nothing for the others; a view-only viewer shares the same encoder (the cursor comes
// as messages and its page draws it where the VM's pointer is) and reaches nothing; an admin
// link takes control from the holder, and only the admin's clicks reach X after that.
//
// Run: node --test --test-concurrency=1 web/test/e2e/multi.e2e.mjs (binaries from $VDESK_BIN_DIR).

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  AGENT_BIN,
  BIN_DIR,
  CONTROLLER_BIN,
  closeTo,
  freePort,
  hexRgb,
  launchChromium,
  paintRoot,
  Processes,
  recordConsole,
  reportingFailures,
  SCREEN,
  sleep,
  startController,
  startXvfb,
  videoPixel,
  viewerState,
  waitFor,
  XProbe,
} from './harness.mjs';

const XPROBE = path.join(BIN_DIR, 'vdesk-xprobe');
const skip = process.env.VDESK_E2E === '0' ? 'VDESK_E2E=0' : false;
const VIEWPORT = { width: 1000, height: 800 };
const SCALE = VIEWPORT.width / SCREEN.width;
const TOP = (VIEWPORT.height - SCREEN.height * SCALE) / 2;
const toClient = (x, y) => ({ x: x * SCALE + SCALE / 2, y: TOP + y * SCALE + SCALE / 2 });

describe('many viewers, one encoder, one user in control (3 Chromium pages on one agent)', { skip }, () => {
  const procs = new Processes();
  const consoleLines = [];
  let display;
  let ctl;
  let metricsUrl;
  let browser;
  let probe;
  const pages = {};
  const reports = () => `${consoleLines.join('\n')}\n${procs.report()}`;

  async function open(label, permission) {
    const p = await browser.newPage();
    await p.setViewportSize(VIEWPORT);
    recordConsole(p, label, consoleLines);
    await p.goto(await ctl.pageUrl('demo', { permission }));
    await waitFor(`${label} streaming`, async () => (await viewerState(p)).stage === 'streaming', { timeoutMs: 30000 });
    await waitFor(`${label} told who holds control`, () => p.evaluate(() => window.vdeskViewer.input.control !== null), {
      timeoutMs: 10000,
    });
    pages[label] = p;
    return p;
  }

  const control = (p) => p.evaluate(() => window.vdeskViewer.input.control);
  const metric = async (name) => {
    const text = await (await fetch(metricsUrl, { signal: AbortSignal.timeout(2000) })).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return line ? Number(line.split(' ')[1]) : null;
  };
  // The probe's window covers the left half of the screen; the painted block is on the right.
  const BLOCK = [800, 150, 1100, 390];
  const shows = async (p, fill) => closeTo((await videoPixel(p, 950, 270)) ?? [0, 0, 0], hexRgb(fill));
  /** Clicks `p`'s video over the probe's window; resolves once X got the press and the release
   *  (fails after 5 s). */
  async function clickLands(p, label) {
    const m = probe.mark();
    const at = toClient(320, 360);
    await p.mouse.click(at.x, at.y);
    await waitFor(`${label}'s click reaches X`, () => probe.buttons(m).length >= 2, { timeoutMs: 5000 });
  }
  /** Clicks `p`'s video; resolves to the button events X received within a second. */
  async function clickRefused(p) {
    const m = probe.mark();
    const at = toClient(320, 360);
    await p.mouse.click(at.x, at.y);
    await sleep(1000);
    return probe.buttons(m);
  }

  before(async () => {
    for (const bin of [CONTROLLER_BIN, AGENT_BIN, XPROBE]) {
      if (!existsSync(bin)) throw new Error(`${bin} is missing: build it (cargo build) or set VDESK_BIN_DIR`);
    }
    try {
      display = await startXvfb(procs);
      probe = await XProbe.start(procs, display, `0,0,${SCREEN.width / 2},${SCREEN.height}`);
      ctl = await startController(procs, { vms: ['demo'] });
      const port = await freePort();
      metricsUrl = `http://127.0.0.1:${port}/metrics`;
      await ctl.startAgent(procs, { vmId: 'demo', display, args: ['--metrics-listen', `127.0.0.1:${port}`] });
      browser = await launchChromium();
    } catch (e) {
      console.error(reports());
      throw e;
    }
  });

  after(async () => {
    await browser?.close();
    await procs.stopAll();
  });

  it('three viewers see the same desktop from one encoder; a joiner gets a picture at once', () =>
    reportingFailures(reports, async () => {
      const alice = await open('alice', 'control');
      const bob = await open('bob', 'control');
      await paintRoot(display, { bg: '#102030', fill: '#20c040', rect: BLOCK });
      await waitFor('alice and bob show the green block', async () => (await shows(alice, '#20c040')) && (await shows(bob, '#20c040')), {
        timeoutMs: 10000,
      });
      // The screen is still now; a third viewer joins it.
      await sleep(1000);
      const carol = await open('carol', 'control');
      await waitFor('carol shows the green block', () => shows(carol, '#20c040'), { timeoutMs: 5000 });
      const first = consoleLines
        .filter((l) => l.startsWith('[carol ') && l.includes('First video frame decoded after'))
        .map((l) => Number(/after (\d+) ms/.exec(l)?.[1]))
        .find((n) => Number.isFinite(n));
      console.log(`joining viewer (still screen): first frame ${first} ms after its attempt started`);
      assert.ok(first !== undefined && first < 3000, `first frame after ${first} ms`);
      assert.equal(await metric('vdesk_agent_encoders'), 1, 'three viewers, one encoder');
      assert.equal(await metric('vdesk_agent_captures'), 1);
      assert.ok((await metric('vdesk_agent_keyframes_forced_total')) >= 1);
    }));

  it('moves control by request, give and release; only the holder reaches X', () =>
    reportingFailures(reports, async () => {
      const { alice, bob, carol } = pages;
      const c = await control(alice);
      const ids = Object.fromEntries(await Promise.all(Object.entries(pages).map(async ([k, p]) => [k, (await control(p)).you])));
      assert.equal(c.holder, ids.alice, 'the first to connect holds control');
      assert.equal(c.viewers.length, 3);
      await clickLands(alice, 'alice');
      assert.deepEqual(await clickRefused(bob), [], "bob's click does not reach X");

      await bob.evaluate(() => window.vdeskViewer.input.requestControl());
      await waitFor('alice sees the request', async () => (await control(alice)).viewers.some((v) => v.id === ids.bob && v.requested));
      await alice.evaluate((id) => window.vdeskViewer.input.giveControl(id), ids.bob);
      await waitFor('bob in control on every page', async () => {
        for (const p of Object.values(pages)) if ((await control(p)).holder !== ids.bob) return false;
        return true;
      });
      assert.equal(await bob.evaluate(() => window.vdeskViewer.input.inControl), true);
      await clickLands(bob, 'bob');
      assert.deepEqual(await clickRefused(alice), [], "alice's does not any more");

      // Carol asks; Bob releases: control passes to the viewer that asked.
      await carol.evaluate(() => window.vdeskViewer.input.requestControl());
      await waitFor('bob sees the request', async () => (await control(bob)).viewers.some((v) => v.id === ids.carol && v.requested));
      await bob.evaluate(() => window.vdeskViewer.input.releaseControl());
      await waitFor('carol in control', async () => (await control(bob)).holder === ids.carol);
      await clickLands(carol, 'carol');
      assert.deepEqual(await clickRefused(bob), []);
    }));

  it('a viewer leaving changes nothing for the others', () =>
    reportingFailures(reports, async () => {
      const { alice, bob, carol } = pages;
      await carol.close();
      await waitFor('two viewers left, nobody in control', async () => {
        const c = await control(alice);
        return c.viewers.length === 2 && c.holder === null;
      }, { timeoutMs: 15000 });
      const before = await Promise.all([alice, bob].map(async (p) => (await viewerState(p)).framesDecoded));
      await paintRoot(display, { bg: '#102030', fill: '#c02040', rect: BLOCK });
      await waitFor('alice and bob show the red block', async () => (await shows(alice, '#c02040')) && (await shows(bob, '#c02040')), {
        timeoutMs: 10000,
      });
      const now = await Promise.all([alice, bob].map(async (p) => (await viewerState(p)).framesDecoded));
      assert.ok(now[0] > before[0] && now[1] > before[1], `frames ${before} -> ${now}`);
      assert.equal(await metric('vdesk_agent_encoders'), 1);
    }));

  it('a view-only viewer shares the encoder, draws the cursor from messages and reaches nothing; a control viewer not in control also sees the holder\'s pointer', () =>
    reportingFailures(reports, async () => {
      const { alice } = pages;
      const dave = await open('dave', 'view');
      await waitFor('dave shows the red block', () => shows(dave, '#c02040'), { timeoutMs: 5000 });
      assert.equal(await metric('vdesk_agent_encoders'), 1, 'control and view-only viewers share one encoder');
      assert.equal(await metric('vdesk_agent_captures'), 1);
      await waitFor("dave's page has the VM's cursor image", () => dave.evaluate(() => document.querySelector('video').style.cursor.startsWith('url(')), {
        timeoutMs: 5000,
      });
      // Alice takes control (nobody holds it) and moves the VM's pointer: Dave's page draws the
      // cursor where it is.
      await alice.evaluate(() => window.vdeskViewer.input.requestControl());
      await waitFor('alice in control', () => alice.evaluate(() => window.vdeskViewer.input.inControl));
      const at = toClient(300, 200);
      await alice.mouse.move(at.x, at.y);
      await waitFor('dave is told where the pointer is', async () => {
        const c = await dave.evaluate(() => window.vdeskViewer.input.cursorAt);
        return c !== null && Math.abs(c.x - 300) <= 2 && Math.abs(c.y - 200) <= 2;
      }, { timeoutMs: 5000 });
      const drawn = await dave.evaluate(() => {
        const el = document.querySelector('.vdesk-remote-cursor');
        if (!el || el.style.display === 'none') return null;
        const r = el.getBoundingClientRect();
        return { left: r.left, top: r.top };
      });
      assert.ok(drawn, "dave's page draws the cursor over the video");
      // The element's corner is the pointer less the image's hotspot (a few pixels).
      assert.ok(Math.abs(drawn.left - at.x) < 40 && Math.abs(drawn.top - at.y) < 40, `cursor drawn at ${JSON.stringify(drawn)}, pointer at ${JSON.stringify(at)}`);
      // Bob may control but does not hold control: he too sees where Alice's pointer is; Alice,
      // the holder, draws no second cursor over her own.
      const { bob } = pages;
      await waitFor('bob (control, not holding it) is told where the pointer is', async () => {
        const c = await bob.evaluate(() => window.vdeskViewer.input.cursorAt);
        return c !== null && Math.abs(c.x - 300) <= 2 && Math.abs(c.y - 200) <= 2;
      }, { timeoutMs: 5000 });
      const remoteCursorShown = () => {
        const el = document.querySelector('.vdesk-remote-cursor');
        return !!el && el.style.display !== 'none';
      };
      assert.equal(await bob.evaluate(remoteCursorShown), true, "bob's page draws the holder's pointer");
      assert.equal(await alice.evaluate(remoteCursorShown), false, "the holder's page draws no remote cursor");
      assert.deepEqual(await clickRefused(dave), [], "dave's click does not reach X");
      assert.equal(await metric('vdesk_agent_encoders'), 1);
    }));

  it('an admin link takes control: its clicks land in X, the old holder\'s do not', () =>
    reportingFailures(reports, async () => {
      const { alice } = pages;
      assert.equal(await alice.evaluate(() => window.vdeskViewer.input.inControl), true, 'alice holds control (previous test)');
      const erin = await open('erin', 'admin');
      const ids = { alice: (await control(alice)).you, erin: (await control(erin)).you };
      assert.equal((await control(erin)).holder, ids.alice, 'joining as admin does not take control by itself');
      assert.deepEqual(await clickRefused(erin), [], "erin's click does not reach X before she takes control");
      await erin.evaluate(() => window.vdeskViewer.input.takeControl());
      await waitFor('erin in control on every page', async () => {
        for (const p of Object.values(pages)) if (!p.isClosed() && (await control(p)).holder !== ids.erin) return false;
        return true;
      });
      assert.equal(await alice.evaluate(() => window.vdeskViewer.input.inControl), false);
      await clickLands(erin, 'erin');
      assert.deepEqual(await clickRefused(alice), [], "alice's click does not reach X after the take");
      assert.equal(await metric('vdesk_agent_encoders'), 1);
    }));
});
