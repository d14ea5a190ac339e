// fake-peer.e2e.mjs: the viewer's end-to-end scenarios (scenarios.mjs) against fake-controller.mjs
// with a Chromium page as the VM's agent. Real WebRTC on both ends, so the viewer's own flow
// (signalling, trickle ICE, stages, first frame, errors, retries) is tested without the Rust side.
// Needs only Chromium. Run: node --test web/test/e2e/fake-peer.e2e.mjs (VDESK_E2E=0 skips it).

import { existsSync } from 'node:fs';
import { after, before, describe } from 'node:test';

import { CHROMIUM, launchChromium, waitFor } from './harness.mjs';
import { FakeController } from './fake-controller.mjs';
import { PICTURE, viewerScenarios } from './scenarios.mjs';

const skip = process.env.VDESK_E2E === '0' ? 'VDESK_E2E=0' : false;

describe('viewer end to end against a fake controller and a Chromium peer', { skip }, () => {
  const controller = new FakeController(['demo', 'ghost']);
  let base;
  let browser;
  let agentBrowser;
  let agentPage;
  const agentLog = [];

  before(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (apt-get install chromium, or set VDESK_CHROMIUM)`);
    base = await controller.listen();
    browser = await launchChromium();
    agentBrowser = await launchChromium(); // its own browser: killing it is like killing the agent
    agentPage = await agentBrowser.newPage();
    agentPage.on('console', (m) => agentLog.push(`[agent ${m.type()}] ${m.text()}`));
    await agentPage.goto(`${base}/fake-agent.html?vm=demo`);
    await waitFor('the fake agent online', async () => (await (await fetch(`${base}/api/vms/demo`)).json()).online);
  });

  after(async () => {
    await browser?.close();
    await agentBrowser?.close();
    await controller.close();
  });

  viewerScenarios({
    baseUrl: () => base,
    newPage: () => browser.newPage(),
    screenshotPath: process.env.VDESK_E2E_SCREENSHOT_FAKE ?? '/tmp/vdesk-e2e-fake.png',
    async paint(fill) {
      await agentPage.evaluate((p) => window.paint(p), { ...PICTURE, fill });
    },
    async killAgent() {
      await agentBrowser.close();
      agentBrowser = null;
    },
    reports: () => agentLog.join('\n'),
  });
});
