// wsfallback.e2e.mjs: the automatic WebSocket fallback where UDP is blocked, end to end. Chromium
// runs in a network namespace of its own, joined to the host (controller, agent, Xvfb, xprobe)
// by a veth pair; iptables inside the namespace lets nothing through but TCP to and from the
// controller's port, so neither UDP nor ICE-TCP to the VM can connect. The default viewer (no
// ?transport=) must fall back by itself and show the desktop within 5 s of page load, take keys
// and clicks (checked on the X side with vdesk-xprobe), and name the transport in its overlay; a
// viewer with ?transport=webrtc in the same namespace must show the ICE-failure hint, not spin.
//
// Needs root (ip netns, iptables). Run: node --test web/test/e2e/wsfallback.e2e.mjs; VDESK_E2E=0
// skips it, and so does a machine without namespaces or iptables (the reason is printed), except
// under CI=true, where that fails the file.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';

import {
  AGENT_BIN,
  BIN_DIR,
  CHROMIUM,
  closeTo,
  CONTROLLER_BIN,
  errorPanelText,
  freePort,
  hexRgb,
  launchChromium,
  makeCertificate,
  paintRoot,
  Processes,
  readRootPixel,
  recordConsole,
  reportingFailures,
  SCREEN,
  skipUnlessCi,
  startController,
  startXvfb,
  waitFor,
  XProbe,
} from './harness.mjs';
import { PICTURE, PROBE } from './scenarios.mjs';
import { FALLBACK_NOTICE } from '../../wsplayer.js';

const run = promisify(execFile);
const XPROBE = path.join(BIN_DIR, 'vdesk-xprobe');
/** The bound: the desktop on the canvas this long after the page started loading. */
const SHOWN_WITHIN_MS = 5000;

// Names and a /24 of our own, from the pid, so parallel runs (and network.e2e.mjs) do not collide.
const N = process.pid % 250;
const NS = `vdesk-wsfb-${process.pid}`;
const HOST_IF = `vwh${process.pid % 100000}`;
const NS_IF = `vwn${process.pid % 100000}`;
const HOST_IP = `10.214.${N}.1`;
const BROWSER_IP = `10.214.${N}.2`;

const ip = (...args) => run('ip', args);
const inNs = (cmd, ...args) => run('ip', ['netns', 'exec', NS, cmd, ...args]);

async function makeNetwork() {
  await ip('netns', 'add', NS);
  await ip('link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', NS_IF);
  await ip('link', 'set', NS_IF, 'netns', NS);
  await ip('addr', 'add', `${HOST_IP}/24`, 'dev', HOST_IF);
  await ip('link', 'set', HOST_IF, 'up');
  await inNs('ip', 'addr', 'add', `${BROWSER_IP}/24`, 'dev', NS_IF);
  await inNs('ip', 'link', 'set', NS_IF, 'up');
  await inNs('ip', 'link', 'set', 'lo', 'up');
}

/**
 * Inside the namespace: drop everything (IPv4 and IPv6, both directions) except loopback and TCP
 * between the browser and the controller's port. No conntrack needed: the two rules name both ends.
 */
async function firewall(port) {
  for (const tool of ['iptables', 'ip6tables']) {
    for (const chain of ['INPUT', 'OUTPUT', 'FORWARD']) await inNs(tool, '-P', chain, 'DROP');
    await inNs(tool, '-A', 'INPUT', '-i', 'lo', '-j', 'ACCEPT');
    await inNs(tool, '-A', 'OUTPUT', '-o', 'lo', '-j', 'ACCEPT');
  }
  await inNs('iptables', '-A', 'OUTPUT', '-p', 'tcp', '-d', HOST_IP, '--dport', String(port), '-j', 'ACCEPT');
  await inNs('iptables', '-A', 'INPUT', '-p', 'tcp', '-s', HOST_IP, '--sport', String(port), '-j', 'ACCEPT');
}

async function removeNetwork() {
  await ip('link', 'del', HOST_IF).catch(() => {});
  await ip('netns', 'del', NS).catch(() => {});
}

/** Whether a TCP connection from inside the namespace to HOST_IP:port opens (curl, 2 s). */
async function tcpOpens(port) {
  try {
    await inNs('curl', '-sk', '-o', '/dev/null', '-m', '2', `https://${HOST_IP}:${port}/healthz`);
    return true;
  } catch (e) {
    // 28: timed out (dropped); 7: refused. Anything else (no TLS there, an HTTP error) connected.
    return !(e.code === 28 || e.code === 7);
  }
}

/** Why this machine cannot run this file (needs root, iproute2, iptables, curl), or false. */
async function unavailable() {
  const probe = `vdesk-probe-${process.pid}`;
  try {
    await ip('netns', 'add', probe);
    try {
      await run('ip', ['netns', 'exec', probe, 'iptables', '-P', 'OUTPUT', 'DROP']);
      await run('ip', ['netns', 'exec', probe, 'ip6tables', '-P', 'OUTPUT', 'DROP']);
    } finally {
      await ip('netns', 'del', probe);
    }
    await run('curl', ['--version']);
    return false;
  } catch (e) {
    return `cannot make a firewalled network namespace here (needs root, iproute2, iptables, curl): ${e.message.split('\n')[0]}`;
  }
}

// The page is served over HTTPS (self-signed; the agent pins it, Chromium ignores the error):
// WebCodecs exists only in a secure context, and http:// to an address other than loopback is
// not one, so a real deployment of the fallback is HTTPS anyway.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

const skip = process.env.VDESK_E2E === '0' ? 'VDESK_E2E=0' : skipUnlessCi('wsfallback.e2e.mjs', await unavailable());

/** [r, g, b] of the WebSocket canvas at screen point (x, y). */
async function canvasPixel(page, x, y) {
  return page.evaluate(({ x, y, screen }) => {
    const c = document.getElementById('ws-screen');
    if (!c || !c.width) return null;
    const copy = document.createElement('canvas');
    copy.width = c.width;
    copy.height = c.height;
    const ctx = copy.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(c, 0, 0);
    const d = ctx.getImageData(Math.round((x * c.width) / screen.width), Math.round((y * c.height) / screen.height), 1, 1).data;
    return [d[0], d[1], d[2]];
  }, { x, y, screen: SCREEN });
}

describe('UDP blocked: only TCP to the controller gets through (network namespace + iptables)', { skip }, () => {
  const procs = new Processes();
  const consoles = [];
  const reports = () => `${consoles.join('\n')}\n${procs.report()}`;
  const wrapper = path.join(os.tmpdir(), `vdesk-e2e-chromium-wsfb-${process.pid}.sh`);
  let display;
  let ctl;
  let probe;
  let browser;
  const blocked = { server: null, port: 0 };

  before(async () => {
    for (const bin of [CONTROLLER_BIN, AGENT_BIN, XPROBE]) {
      if (!existsSync(bin)) throw new Error(`${bin} is missing: build it (cargo build) or set VDESK_BIN_DIR`);
    }
    try {
      await removeNetwork();
      await makeNetwork();
      display = await startXvfb(procs);
      // The X client that witnesses input covers the left half; the picture is on the right.
      probe = await XProbe.start(procs, display, `0,0,${SCREEN.width / 2},${SCREEN.height}`);
      ctl = await startController(procs, { vms: ['demo'], host: HOST_IP, tls: await makeCertificate() });
      await ctl.startAgent(procs, { vmId: 'demo', display });
      await firewall(ctl.port);
      // The firewall does what it says: the controller's port opens, another host port does not.
      blocked.port = await freePort();
      blocked.server = net.createServer((s) => s.destroy()).listen(blocked.port, HOST_IP);
      assert.equal(await tcpOpens(ctl.port), true, 'TCP to the controller gets through');
      assert.equal(await tcpOpens(blocked.port), false, 'TCP to another port of the host is dropped');
      await writeFile(wrapper, `#!/bin/sh\nexec ip netns exec ${NS} ${CHROMIUM} "$@"\n`);
      await chmod(wrapper, 0o755);
      browser = await launchChromium({ executablePath: wrapper, args: ['--ignore-certificate-errors'] });
    } catch (e) {
      console.error(procs.report());
      throw e;
    }
  });

  after(async () => {
    await browser?.close();
    blocked.server?.close();
    await procs.stopAll();
    await removeNetwork();
    await rm(wrapper, { force: true });
  });

  it('the default viewer falls back by itself, shows the desktop within 5 s, takes keys and clicks, and names the transport', { timeout: 60000 }, () =>
    reportingFailures(reports, async () => {
      const fill = '#00c000';
      const at = { x: 900, y: PROBE.y };
      await paintRoot(display, { bg: PICTURE.bg, fill, rect: [700, 150, 1100, 390] });
      await waitFor(`${fill} on the X display`, async () => closeTo(await readRootPixel(display, at.x, at.y), hexRgb(fill), 0), { timeoutMs: 5000 });
      const page = await browser.newPage();
      recordConsole(page, 'auto', consoles);
      await page.goto(await ctl.pageUrl('demo'));
      // (a) On its own (no ?transport=): a first frame on the canvas within 5 s of page load.
      let stats = null;
      await waitFor('a decoded frame on the WebSocket canvas', async () => {
        stats = await page.evaluate(() => window.vdeskWsPlayer?.stats ?? null);
        return stats?.firstFrameMs ?? null;
      }, { timeoutMs: 30000 }).catch((e) => {
        throw new Error(`${e.message}; player stats: ${JSON.stringify(stats)}`);
      });
      const firstFrameMs = await page.evaluate(() => window.vdeskWsPlayer.stats.firstFrameMs);
      console.log(`# first WebSocket frame painted ${Math.round(firstFrameMs)} ms after the page started loading`);
      assert.ok(firstFrameMs <= SHOWN_WITHIN_MS, `first frame ${Math.round(firstFrameMs)} ms after page load, over ${SHOWN_WITHIN_MS} ms`);
      // It was a fallback: WebRTC was tried and never found a path.
      const log = consoles.join('\n');
      assert.match(log, /ICE connection state: checking/, 'WebRTC was tried first');
      assert.doesNotMatch(log, /ICE connection state: (connected|completed)/, 'no ICE path got through the firewall');
      // The canvas shows what X shows.
      await waitFor('the canvas shows the X screen', async () => {
        const px = await canvasPixel(page, at.x, at.y);
        return px && closeTo(px, hexRgb(fill)) && px;
      }, { timeoutMs: 10000 });
      // (c) The overlay names the transport and says why.
      const overlay = await page.textContent('#ws-stats');
      assert.ok(overlay.includes(FALLBACK_NOTICE), overlay);
      assert.match(overlay, /transport: websocket/);
      assert.equal(await page.evaluate(() => document.getElementById('loading').hidden || document.getElementById('loading').classList.contains('fading')), true, 'no spinner left');
      // (b) Clicking and typing land in the X client.
      await waitFor('the input seat (frames flowing)', () => page.evaluate(() => window.vdeskWsPlayer.stats.frames > 3));
      const m = probe.mark();
      await page.mouse.click(320, 200);
      await waitFor('a click in X', () => probe.buttons(m).some((e) => !e.down), { timeoutMs: 10000 });
      const press = probe.buttons(m).find((e) => e.down);
      assert.equal(press.button, 1);
      assert.ok(Math.abs(press.x - 320) <= 3 && Math.abs(press.y - 200) <= 3, JSON.stringify(press));
      const k = probe.mark();
      await page.keyboard.type('fb1');
      await waitFor('"fb1" typed in X', () => probe.typed(k).length >= 3, { timeoutMs: 10000 });
      assert.equal(probe.typed(k), 'fb1');
      await page.close();
    }));

  it('?transport=webrtc in the same namespace shows the ICE-failure hint, not a spinner', { timeout: 90000 }, () =>
    reportingFailures(reports, async () => {
      const page = await browser.newPage();
      recordConsole(page, 'webrtc', consoles);
      await page.goto(`${await ctl.pageUrl('demo')}&transport=webrtc`);
      // The browser's ICE gives up, or the controller's connect deadline (30 s) ends the session.
      const text = await waitFor('the error panel', () => errorPanelText(page), { timeoutMs: 60000, intervalMs: 250 });
      assert.match(text, /No network path to the VM|could not be set up in time/, text);
      assert.match(text, /firewall may block UDP|TURN server/, text);
      assert.equal(await page.evaluate(() => document.getElementById('loading').hidden), true, 'the spinner is gone');
      assert.equal(await page.evaluate(() => Boolean(window.vdeskWsPlayer || document.getElementById('ws-screen'))), false, 'no WebSocket fallback');
      await page.close();
    }));
});
