// viewer.e2e.mjs: the end-to-end test of the viewer against the real thing: Xvfb, vdesk-controller,
// vdesk-agent (GStreamer webrtcbin) and Debian's Chromium. The page must reach "connected", decode
// frames and show the pixels drawn on the X display; a mock SDP answer can never pass it.
//
// Run: node --test --test-concurrency=1 web/test/e2e/*.e2e.mjs (binaries from $VDESK_BIN_DIR,
// default target/debug of this checkout; screenshot to $VDESK_E2E_SCREENSHOT, default
// /tmp/vdesk-e2e.png). VDESK_E2E=0 skips it; missing binaries fail it (they are not a reason to skip).

import { existsSync } from 'node:fs';
import { after, before, describe } from 'node:test';

import {
  AGENT_BIN as AGENT,
  CONTROLLER_BIN as CONTROLLER,
  Processes,
  closeTo,
  hexRgb,
  launchChromium,
  paintRoot,
  readRootPixel,
  startController,
  startXvfb,
  waitFor,
} from './harness.mjs';
import { PICTURE, PROBE, viewerScenarios } from './scenarios.mjs';

const skip = process.env.VDESK_E2E === '0' ? 'VDESK_E2E=0' : false;

describe('viewer end to end (Xvfb + vdesk-controller + vdesk-agent + Chromium)', { skip }, () => {
  const procs = new Processes();
  let display;
  let ctl;
  let agent;
  let browser;

  before(async () => {
    for (const bin of [CONTROLLER, AGENT]) {
      if (!existsSync(bin)) throw new Error(`${bin} is missing: build it (cargo build) or set VDESK_BIN_DIR`);
    }
    try {
      display = await startXvfb(procs);
      // A controller secret, a per-VM agent secret and a viewer token per page (harness.mjs).
      ctl = await startController(procs, { vms: ['demo', 'ghost'] });
      agent = await ctl.startAgent(procs, { vmId: 'demo', display });
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

  viewerScenarios({
    baseUrl: () => ctl.base,
    pageUrl: (vmId) => ctl.pageUrl(vmId),
    newPage: () => browser.newPage(),
    screenshotPath: process.env.VDESK_E2E_SCREENSHOT ?? '/tmp/vdesk-e2e.png',
    async paint(fill) {
      await paintRoot(display, { bg: PICTURE.bg, fill, rect: PICTURE.rect });
      await waitFor(`${fill} on the X display`, async () => closeTo(await readRootPixel(display, PROBE.x, PROBE.y), hexRgb(fill), 0), {
        timeoutMs: 5000,
      });
    },
    async killAgent() {
      await procs.kill(agent, 'SIGKILL');
    },
    reports: () => procs.report(),
  });
});
