// viewer.e2e.mjs: the end-to-end test of the viewer against the real thing: Xvfb, vdesk-controller,
// vdesk-agent (GStreamer webrtcbin) and Debian's Chromium. The page must reach "connected", decode
// frames and show the pixels drawn on the X display; a mock SDP answer can never pass it.
//
// Run: node --test --test-concurrency=1 web/test/e2e/*.e2e.mjs (binaries from $VDESK_BIN_DIR,
// default /work/main/target/debug; screenshot to $VDESK_E2E_SCREENSHOT, default
// /tmp/vdesk-e2e.png). VDESK_E2E=0 skips it; missing binaries fail it (they are not a reason to skip).

import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe } from 'node:test';

import {
  Processes,
  closeTo,
  freePort,
  hexRgb,
  launchChromium,
  paintRoot,
  readRootPixel,
  startXvfb,
  waitFor,
  waitForHttp,
} from './harness.mjs';
import { PICTURE, PROBE, viewerScenarios } from './scenarios.mjs';

const BIN_DIR = process.env.VDESK_BIN_DIR ?? '/work/main/target/debug';
const CONTROLLER = path.join(BIN_DIR, 'vdesk-controller');
const AGENT = path.join(BIN_DIR, 'vdesk-agent');
const TOKEN = `e2e-${process.pid}-${Date.now()}`;

const skip = process.env.VDESK_E2E === '0' ? 'VDESK_E2E=0' : false;

describe('viewer end to end (Xvfb + vdesk-controller + vdesk-agent + Chromium)', { skip }, () => {
  const procs = new Processes();
  let display;
  let port;
  let agent;
  let browser;

  before(async () => {
    for (const bin of [CONTROLLER, AGENT]) {
      if (!existsSync(bin)) throw new Error(`${bin} is missing: build it (cargo build) or set VDESK_BIN_DIR`);
    }
    try {
      display = await startXvfb(procs);
      port = await freePort();
      const base = `http://127.0.0.1:${port}`;
      const controller = procs.spawn('vdesk-controller', CONTROLLER, [
        '--listen', `127.0.0.1:${port}`, '--agent-token', TOKEN, '--vm', 'demo', '--vm', 'ghost',
      ], { env: { RUST_LOG: process.env.RUST_LOG ?? 'info' } });
      await waitForHttp(`${base}/healthz`, { check: () => procs.assertRunning(controller) });
      agent = procs.spawn('vdesk-agent', AGENT, [
        '--controller', base, '--vm-id', 'demo', '--token', TOKEN, '--display', `:${display}`,
      ], { env: { RUST_LOG: process.env.RUST_LOG ?? 'info', GST_DEBUG: process.env.GST_DEBUG ?? '2' } });
      await waitForHttp(`${base}/api/vms/demo`, {
        ok: (s, text) => s === 200 && JSON.parse(text).online === true,
        check: () => procs.assertRunning(agent),
      });
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
    baseUrl: () => `http://127.0.0.1:${port}`,
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
