// tls.e2e.mjs: the whole stack over TLS: vdesk-controller serving --tls-cert/--tls-key (a
// self-signed certificate made here with openssl), vdesk-agent on wss:// pinning that certificate
// with --cert-sha256 (its hello answers the controller's challenge), and Chromium loading the
// viewer over https:// (--ignore-certificate-errors: the certificate is self-signed). The page
// must reach "connected" and show the colour drawn on the X display.
//
// Run: node --test web/test/e2e/tls.e2e.mjs (binaries from $VDESK_BIN_DIR, default target/debug;
// needs openssl, Xvfb, Chromium). VDESK_E2E=0 skips it; a missing prerequisite fails it.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';

import {
  AGENT_BIN as AGENT,
  CONTROLLER_BIN as CONTROLLER,
  Processes,
  closeTo,
  hexRgb,
  launchChromium,
  makeCertificate,
  paintRoot,
  readRootPixel,
  recordConsole,
  reportingFailures,
  startController,
  startXvfb,
  videoPixel,
  viewerState,
  waitFor,
} from './harness.mjs';
import { PICTURE, PROBE } from './scenarios.mjs';

const skip = process.env.VDESK_E2E === '0' ? 'VDESK_E2E=0' : false;

// The harness's own requests (health, VM info) go to the self-signed controller too.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

describe('the viewer and the agent over TLS (https:// and wss://)', { skip }, () => {
  const procs = new Processes();
  const consoles = [];
  let display;
  let ctl;
  let browser;
  let cert;

  before(async () => {
    for (const bin of [CONTROLLER, AGENT]) {
      if (!existsSync(bin)) throw new Error(`${bin} is missing: build it (cargo build) or set VDESK_BIN_DIR`);
    }
    try {
      cert = await makeCertificate();
      display = await startXvfb(procs);
      ctl = await startController(procs, { vms: ['demo'], tls: cert });
      assert.match(ctl.base, /^https:\/\//);
      // Resolves once the controller lists the VM online: the agent registered over wss://.
      await ctl.startAgent(procs, { vmId: 'demo', display });
      browser = await launchChromium({ args: ['--ignore-certificate-errors'] });
    } catch (e) {
      console.error(procs.report());
      throw e;
    }
  });

  after(async () => {
    await browser?.close();
    await procs.stopAll();
    if (cert) await rm(cert.dir, { recursive: true, force: true });
  });

  it('streams the desktop to an https:// page from an agent linked over wss://', { timeout: 60000 }, () =>
    reportingFailures(() => `${consoles.join('\n')}\n${procs.report()}`, async () => {
      await paintRoot(display, { bg: PICTURE.bg, fill: '#ff0000', rect: PICTURE.rect });
      await waitFor('red on the X display', async () => closeTo(await readRootPixel(display, PROBE.x, PROBE.y), hexRgb('#ff0000'), 0), {
        timeoutMs: 5000,
      });
      const page = await browser.newPage();
      recordConsole(page, 'demo', consoles);
      await page.goto(await ctl.pageUrl('demo'));
      assert.equal(await page.evaluate(() => location.protocol), 'https:');
      await waitFor('connectionState "connected"', async () => (await viewerState(page)).connectionState === 'connected', {
        timeoutMs: 20000,
      });
      await waitFor('30 decoded frames', async () => (await viewerState(page)).framesDecoded >= 30, { timeoutMs: 20000 });
      await waitFor(`red at (${PROBE.x}, ${PROBE.y}) of the video`, async () => {
        const px = await videoPixel(page, PROBE.x, PROBE.y);
        return px && closeTo(px, hexRgb('#ff0000'), 40) && px;
      }, { timeoutMs: 5000 });
      // The controller says it serves TLS (the agent's --controller is https://, so its link is wss://).
      assert.match(procs.report(), /tls=true/);
    }));
});
