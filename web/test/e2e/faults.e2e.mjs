// faults.e2e.mjs: what the viewer does when the parts around it fail, end to end with the real
// Xvfb, vdesk-controller, vdesk-agent and Chromium: the controller process dies and comes back
// (the video keeps playing on the same peer connection, a new viewer can connect afterwards), the
// agent is killed and restarted (the viewer says so and shows the desktop again by itself), and
// SIGTERM (the agent ends its sessions with a message to the viewer and exits; nothing is left).
//
// Run: node --test --test-concurrency=1 web/test/e2e/faults.e2e.mjs (binaries from
// $VDESK_BIN_DIR, default target/debug of this checkout). VDESK_E2E=0 skips it.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  AGENT_BIN,
  closeTo,
  CONTROLLER_BIN,
  errorPanelText,
  freePort,
  hexRgb,
  launchChromium,
  mintToken,
  newSecret,
  paintRoot,
  Processes,
  readRootPixel,
  recordConsole,
  recordViewerErrors,
  reportingFailures,
  sleep,
  startXvfb,
  videoPixel,
  viewerErrors,
  viewerState,
  waitFor,
  waitForHttp,
} from './harness.mjs';
import { PICTURE, PROBE } from './scenarios.mjs';

const CONTROLLER = CONTROLLER_BIN;
const AGENT = AGENT_BIN;
const TOKEN = `e2e-faults-${process.pid}-${Date.now()}`;
// The controller's secret (viewer links are minted from it); agents use --agent-token.
const SECRET = newSecret();
let viewerToken = null;
const vmTok = async () => (viewerToken ??= await mintToken(SECRET, 'demo', { bin: CONTROLLER }));
const LOG = { RUST_LOG: process.env.RUST_LOG ?? 'info', GST_DEBUG: process.env.GST_DEBUG ?? '2', VDESK_SECRET: SECRET };

const skip = process.env.VDESK_E2E === '0' ? 'VDESK_E2E=0' : false;

describe('faults end to end (controller restart, agent restart, SIGTERM)', { skip }, () => {
  const procs = new Processes();
  const consoles = [];
  const reports = () => `${consoles.join('\n')}\n${procs.report()}`;
  let display;
  let port;
  let base;
  let controller;
  let agent;
  let browser;

  async function startController() {
    controller = procs.spawn('vdesk-controller', CONTROLLER, [
      '--listen', `127.0.0.1:${port}`, '--agent-token', TOKEN, '--vm', 'demo',
    ], { env: LOG });
    await waitForHttp(`${base}/healthz`, { check: () => procs.assertRunning(controller) });
  }

  async function startAgent() {
    agent = procs.spawn('vdesk-agent', AGENT, [
      '--controller', base, '--vm-id', 'demo', '--token', TOKEN, '--display', `:${display}`,
    ], { env: LOG });
    await waitForHttp(`${base}/api/vms/demo?token=${await vmTok()}`, {
      ok: (s, text) => s === 200 && JSON.parse(text).online === true,
      check: () => procs.assertRunning(agent),
    });
  }

  async function paint(fill) {
    await paintRoot(display, { bg: PICTURE.bg, fill, rect: PICTURE.rect });
    await waitFor(`${fill} on the X display`, async () => closeTo(await readRootPixel(display, PROBE.x, PROBE.y), hexRgb(fill), 0), {
      timeoutMs: 5000,
    });
  }

  async function seesColour(page, fill, timeoutMs = 10000) {
    await waitFor(`${fill} in the video`, async () => {
      const px = await videoPixel(page, PROBE.x, PROBE.y);
      return px && closeTo(px, hexRgb(fill), 40) && px;
    }, { timeoutMs });
  }

  async function openStreaming(name) {
    const page = await browser.newPage();
    consoles.push(`--- console of ${name} ---`);
    recordConsole(page, name, consoles);
    await page.goto(`${base}/vm/demo?token=${await vmTok()}`);
    await recordViewerErrors(page);
    await page.evaluate(() => {
      window.__signalling = [];
      window.vdeskViewer.addEventListener('signalling', (e) => window.__signalling.push(e.detail.connected));
    });
    await waitFor('streaming with 30 frames', async () => {
      const st = await viewerState(page);
      return st.stage === 'streaming' && st.framesDecoded >= 30 && st;
    }, { timeoutMs: 30000 });
    return page;
  }

  /** What must not change while the video is repaired in place: the session and peer objects. */
  async function peerIdentity(page) {
    return page.evaluate(() => {
      const v = window.vdeskViewer;
      window.__pc ??= v.pc;
      return { samePc: window.__pc === v.pc, attempts: v.attempts, sessionId: v.sessionId };
    });
  }

  before(async () => {
    for (const bin of [CONTROLLER, AGENT]) {
      if (!existsSync(bin)) throw new Error(`${bin} is missing: build it (cargo build) or set VDESK_BIN_DIR`);
    }
    try {
      display = await startXvfb(procs);
      port = await freePort();
      base = `http://127.0.0.1:${port}`;
      await paint('#ff0000');
      await startController();
      await startAgent();
      browser = await launchChromium();
    } catch (e) {
      console.error(procs.report());
      throw e;
    }
  });

  after(async () => {
    await browser?.close();
    await procs.stopAll();
  });

  it('controller restart: the video keeps playing on the same peer connection, then new viewers connect', { timeout: 120000 }, () =>
    reportingFailures(reports, async () => {
      const page = await openStreaming('viewer 1');
      const before = await peerIdentity(page);
      const framesBefore = (await viewerState(page)).framesDecoded;

      await procs.kill(controller, 'SIGKILL');
      // While no controller exists at all, frames keep arriving peer to peer.
      await sleep(3000);
      const whileDown = await viewerState(page);
      // A still screen sends 10 frames a second (damage-driven capture repeats the last one).
      assert.ok(whileDown.framesDecoded >= framesBefore + 15,
        `frames kept coming while the controller was down: ${framesBefore} -> ${whileDown.framesDecoded}`);
      assert.equal(whileDown.connectionState, 'connected');

      await startController();
      // The agent comes back and resumes the session; the viewer's event stream finds it again.
      await waitFor('the event stream back', async () => (await page.evaluate(() => window.__signalling)).at(-1) === true, {
        timeoutMs: 30000, intervalMs: 250,
      });
      const sid = before.sessionId;
      const answer = await fetch(`${base}/api/webrtc/session/${sid}/answer`, {
        headers: { Authorization: `Bearer ${await vmTok()}` },
      });
      assert.equal(answer.status, 200, 'the new controller knows the session (adopted from the agent)');

      const framesAfter = (await viewerState(page)).framesDecoded;
      await sleep(2000);
      const st = await viewerState(page);
      assert.ok(st.framesDecoded >= framesAfter + 10, `frames keep coming after the restart: ${framesAfter} -> ${st.framesDecoded}`);
      assert.equal(st.stage, 'streaming');
      assert.equal(st.connectionState, 'connected');
      const afterIds = await peerIdentity(page);
      assert.deepEqual(afterIds, { ...before, samePc: true }, 'same session, same RTCPeerConnection, no new attempt');
      assert.deepEqual(await viewerErrors(page), [], 'no error was shown');
      // The stream is live, not frozen: a change on the screen shows up.
      await paint('#00ff00');
      await seesColour(page, '#00ff00');

      const second = await openStreaming('viewer 2');
      await seesColour(second, '#00ff00');
      await second.close();
      await page.close();
    }));

  it('agent killed and restarted: "VM disconnected, reconnecting", then the desktop again by itself', { timeout: 120000 }, () =>
    reportingFailures(reports, async () => {
      const page = await openStreaming('viewer 3');
      await page.evaluate(() => {
        window.__panel = [];
        new MutationObserver(() => {
          const el = document.getElementById('error');
          if (!el.hidden) window.__panel.push(el.innerText);
        }).observe(document.getElementById('error'), { attributes: true, subtree: true, childList: true, characterData: true });
      });
      const attempts = (await peerIdentity(page)).attempts;
      await procs.kill(agent, 'SIGKILL');
      await sleep(1000);
      await startAgent();
      await waitFor('the disconnect error', async () => {
        const codes = (await viewerErrors(page)).map((e) => e.code);
        return codes.includes('agent_disconnected') && codes;
      }, { timeoutMs: 20000, intervalMs: 100 });
      const shown = await page.evaluate(() => window.__panel.join('\n'));
      assert.match(shown, /VM disconnected, reconnecting/);
      await waitFor('streaming again', async () => {
        const st = await viewerState(page);
        return st.stage === 'streaming' && st.framesDecoded > 10 && st;
      }, { timeoutMs: 30000 });
      await seesColour(page, '#00ff00');
      await waitFor('the error panel gone', async () => (await errorPanelText(page)) === '', { timeoutMs: 3000 });
      assert.ok((await peerIdentity(page)).attempts > attempts, 'a new attempt (new session) was made');
      await page.close();
    }));

  it('SIGTERM on the agent: the viewer is told, the agent exits cleanly', { timeout: 60000 }, () =>
    reportingFailures(reports, async () => {
      const page = await openStreaming('viewer 4');
      const exited = new Promise((r) => agent.once('exit', (code, signal) => r({ code, signal })));
      const t0 = Date.now();
      agent.kill('SIGTERM');
      const errors = await waitFor('the shutting_down error', async () => {
        const e = await viewerErrors(page);
        return e.some((x) => x.code === 'shutting_down') && e;
      }, { timeoutMs: 5000, intervalMs: 50 });
      const ended = errors.find((x) => x.code === 'shutting_down');
      assert.match(ended.detail, /VM agent is shutting down/);
      const exit = await Promise.race([exited, sleep(10000).then(() => null)]);
      assert.deepEqual(exit, { code: 0, signal: null }, 'the agent exits by itself with status 0');
      console.log(`# agent stopped ${Date.now() - t0} ms after SIGTERM`);
      assert.match(await errorPanelText(page), /Shutting down, reconnecting|VM agent is offline/);
      await page.close();
    }));
});
