// scenarios.mjs: what the viewer must do end to end, written once and run against any backend that
// can draw on the VM's screen and kill its agent: the real controller + agent (viewer.e2e.mjs) and
// a fake controller with a Chromium peer as the agent (fake-peer.e2e.mjs). It only defines tests.

import assert from 'node:assert/strict';
import { it } from 'node:test';

import {
  closeTo,
  errorPanelText,
  hexRgb,
  recordConsole,
  recordViewerErrors,
  reportingFailures,
  viewerErrors,
  viewerState,
  videoPixel,
  waitFor,
} from './harness.mjs';

/** The picture drawn on the VM's screen: a `fill` rectangle on a dark background. */
export const PICTURE = { bg: '#102030', rect: [200, 150, 520, 390] };
/** Where the test reads the rectangle's colour back (its middle, in screen pixels). */
export const PROBE = { x: 360, y: 270 };

/**
 * Registers the scenarios. `env` gives: `baseUrl()` of the controller, `newPage()` of the browser,
 * `paint(fill)` (draws PICTURE with that fill and resolves when the screen shows it),
 * `killAgent()` (the agent of VM 'demo' dies), `reports()` (process output, for failures),
 * and optionally `screenshotPath` and `pageUrl(vmId)` (the address of a VM's page, with its
 * viewer token; default `${baseUrl()}/vm/${vmId}`).
 */
export function viewerScenarios(env) {
  const consoles = [];
  const reports = () => `${consoles.join('\n')}\n${env.reports()}`;
  let demo = null; // the page showing VM 'demo', shared by the scenarios that follow each other

  async function open(vmId) {
    const page = await env.newPage();
    consoles.push(`--- console of /vm/${vmId} ---`);
    recordConsole(page, vmId, consoles);
    await page.goto(env.pageUrl ? await env.pageUrl(vmId) : `${env.baseUrl()}/vm/${vmId}`);
    return page;
  }

  it('streams the VM desktop: connected, 30+ frames, the drawn colour', { timeout: 60000 }, () =>
    reportingFailures(reports, async () => {
      await env.paint('#ff0000');
      demo = await open('demo');
      assert.equal(await demo.title(), 'vdesk — demo');
      await recordViewerErrors(demo);
      await waitFor('connectionState "connected"', async () => (await viewerState(demo)).connectionState === 'connected', {
        timeoutMs: 20000,
      });
      const s = await waitFor('30 decoded frames', async () => {
        const st = await viewerState(demo);
        return st.framesDecoded >= 30 && st.stage === 'streaming' && st;
      }, { timeoutMs: 20000 });
      assert.ok(s.videoWidth > 0 && s.videoHeight > 0, 'the video has a size');
      assert.equal(await demo.isHidden('#loading'), true, 'the loading overlay is gone');
      const red = hexRgb('#ff0000');
      await waitFor(`red at (${PROBE.x}, ${PROBE.y}) of the video`, async () => {
        const px = await videoPixel(demo, PROBE.x, PROBE.y);
        return px && closeTo(px, red, 40) && px;
      }, { timeoutMs: 5000 });
      const bg = await videoPixel(demo, 50, 50);
      assert.ok(closeTo(bg, hexRgb(PICTURE.bg), 40), `background at (50, 50) is ${bg}, not ${PICTURE.bg}`);
      assert.deepEqual(await viewerErrors(demo), [], 'no viewer errors');
      if (env.screenshotPath) await demo.screenshot({ path: env.screenshotPath });
    }));

  it('shows a change on the VM screen within 5 s', { timeout: 30000 }, () =>
    reportingFailures(reports, async () => {
      assert.ok(demo, 'the streaming scenario ran first');
      await env.paint('#00ff00');
      const t0 = Date.now();
      await waitFor('green in the video', async () => {
        const px = await videoPixel(demo, PROBE.x, PROBE.y);
        return px && closeTo(px, hexRgb('#00ff00'), 40);
      }, { timeoutMs: 5000, intervalMs: 50 });
      console.log(`# colour change seen in the browser ${Date.now() - t0} ms after the screen showed it`);
    }));

  it('says "VM agent is offline" within 3 s for a known VM without an agent', { timeout: 20000 }, () =>
    reportingFailures(reports, async () => {
      const t0 = Date.now();
      const page = await open('ghost');
      const text = await waitFor('the offline message', async () => {
        const t = await errorPanelText(page);
        return /VM agent is offline/.test(t) && t;
      }, { timeoutMs: 3000, intervalMs: 50 });
      assert.match(text, /Retry now/);
      console.log(`# offline message shown ${Date.now() - t0} ms after opening the page`);
      await page.close();
    }));

  it('says the VM is not found for an unknown VM, and does not retry', { timeout: 20000 }, () =>
    reportingFailures(reports, async () => {
      const page = await open('nosuchvm');
      await waitFor('the not-found message', async () => /not found/.test(await errorPanelText(page)), {
        timeoutMs: 3000,
      });
      const st = await viewerState(page);
      assert.equal(st.lastError.code, 'vm_not_found');
      await page.close();
    }));

  it('says the VM disconnected when its agent dies', { timeout: 45000 }, () =>
    reportingFailures(reports, async () => {
      assert.ok(demo, 'the streaming scenario ran first');
      await env.killAgent();
      await waitFor('a disconnect error', async () => {
        const codes = (await viewerErrors(demo)).map((e) => e.code);
        return codes.includes('agent_disconnected') && codes;
        // The controller waits 10 s (AGENT_GRACE) for an agent whose link dropped to come back.
      }, { timeoutMs: 20000, intervalMs: 50 });
      // The panel says so first; the retries that follow then find the agent offline.
      const text = await waitFor('the error panel', () => errorPanelText(demo), { timeoutMs: 2000 });
      assert.match(text, /VM disconnected|VM agent is offline/);
      const st = await viewerState(demo);
      assert.notEqual(st.stage, 'streaming');
    }));
}
