// audio.e2e.mjs: the VM's sound end to end: a PulseAudio server started by the test (its own
// runtime dir and socket, a null sink as the VM's speakers; it never touches a user's server),
// Xvfb, vdesk-controller, vdesk-agent (--audio auto finds the server) and headless Chromium.
// The page gets the audio track (muted until the unmute button is clicked); silence is found as
// silence by an AnalyserNode; a 1 kHz tone played into the sink is found at 1 kHz, and /metrics
// counts the session's audio packets.
//
// Run: node --test --test-concurrency=1 web/test/e2e/audio.e2e.mjs (binaries from $VDESK_BIN_DIR).
// Needs pulseaudio (+ pulseaudio-utils, gstreamer1.0-pulseaudio): skipped without it, except
// under CI=true, where that is a failure.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  AGENT_BIN,
  CONTROLLER_BIN,
  freePort,
  launchChromium,
  Processes,
  recordConsole,
  reportingFailures,
  skipUnlessCi,
  startController,
  startXvfb,
  viewerState,
  waitFor,
} from './harness.mjs';

function has(cmd) {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const skip = process.env.VDESK_E2E === '0'
  ? 'VDESK_E2E=0'
  : skipUnlessCi('audio.e2e.mjs', ['pulseaudio', 'pactl', 'gst-launch-1.0'].filter((c) => !has(c)).map((c) => `${c} is missing`).join(', ') || false);

/** A private PulseAudio server with a null sink `vm_out` (the default sink): `{server, env}`. */
async function startPulse(procs) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vdesk-e2e-pulse-'));
  const socket = path.join(dir, 'native');
  const env = { HOME: dir, XDG_RUNTIME_DIR: dir, PULSE_RUNTIME_PATH: path.join(dir, 'run'), PULSE_STATE_PATH: path.join(dir, 'state') };
  const child = procs.spawn('pulseaudio', 'pulseaudio', [
    '-n', '--daemonize=no', '--exit-idle-time=-1', '--use-pid-file=no', '--disable-shm=yes',
    '-L', `module-native-protocol-unix socket=${socket} auth-anonymous=1`,
    '-L', 'module-null-sink sink_name=vm_out rate=48000',
  ], { env });
  const server = `unix:${socket}`;
  await waitFor('PulseAudio server up', () => {
    procs.assertRunning(child);
    try {
      return execFileSync('pactl', ['info'], { env: { ...process.env, PULSE_SERVER: server } }).toString().includes('Default Sink: vm_out');
    } catch {
      return false;
    }
  }, { timeoutMs: 10000, intervalMs: 200 });
  return { dir, server, child };
}

/** The page's audio as an AnalyserNode sees it for ~`ms`: the loudest bin's frequency and level. */
async function listen(page, ms = 1500) {
  return page.evaluate(async (ms) => {
    const v = document.getElementById('screen');
    const track = v.srcObject?.getAudioTracks?.()[0];
    if (!track) return { error: 'no audio track on the video element' };
    const ctx = (window.__vdeskAudioCtx ??= new AudioContext());
    await ctx.resume();
    const src = ctx.createMediaStreamSource(new MediaStream([track]));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 4096;
    analyser.smoothingTimeConstant = 0;
    src.connect(analyser);
    const bins = new Float32Array(analyser.frequencyBinCount);
    let best = { db: -Infinity, hz: 0 };
    const end = performance.now() + ms;
    while (performance.now() < end) {
      await new Promise((r) => setTimeout(r, 100));
      analyser.getFloatFrequencyData(bins);
      for (let i = 1; i < bins.length; i++) {
        if (bins[i] > best.db) best = { db: bins[i], hz: (i * ctx.sampleRate) / analyser.fftSize };
      }
    }
    src.disconnect();
    return { ...best, binHz: ctx.sampleRate / analyser.fftSize };
  }, ms);
}

describe('audio end to end (PulseAudio null sink + agent + Chromium)', { skip }, () => {
  const procs = new Processes();
  let pulse;
  let display;
  let ctl;
  let metricsPort;
  let browser;
  let page;
  let tone = null;

  before(async () => {
    for (const bin of [CONTROLLER_BIN, AGENT_BIN]) {
      if (!existsSync(bin)) throw new Error(`${bin} is missing: build it (cargo build) or set VDESK_BIN_DIR`);
    }
    try {
      pulse = await startPulse(procs);
      display = await startXvfb(procs);
      ctl = await startController(procs, { vms: ['sound'] });
      metricsPort = await freePort();
      await ctl.startAgent(procs, {
        vmId: 'sound',
        display,
        args: ['--metrics-listen', `127.0.0.1:${metricsPort}`],
        env: { PULSE_SERVER: pulse.server },
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
    if (pulse) await rm(pulse.dir, { recursive: true, force: true });
  });

  it('the agent found the sound server (one log line)', () => {
    const lines = procs.report();
    assert.match(lines, /audio: on, from @DEFAULT_MONITOR@/);
  });

  it('answers the audio m-line: the page gets a muted audio track, silence is silence, the unmute button unmutes', async () => {
    page = await browser.newPage();
    const logs = recordConsole(page);
    await reportingFailures(() => `${procs.report()}\n${logs.join('\n')}`, async () => {
      await page.goto(await ctl.pageUrl('sound'));
      await waitFor('viewer streaming', async () => (await viewerState(page)).stage === 'streaming', { timeoutMs: 20000 });
      await waitFor('audio track on the video element', () => page.evaluate(() => Boolean(document.getElementById('screen').srcObject?.getAudioTracks?.().length)), { timeoutMs: 10000 });
      assert.equal(await page.locator('#sound').isHidden(), false, 'the sound control is shown');
      assert.match(await page.locator('#sound-toggle').textContent(), /unmute/);
      assert.equal(await page.evaluate(() => document.getElementById('screen').muted), true, 'muted until a click');

      const quiet = await listen(page);
      assert.equal(quiet.error, undefined, quiet.error);
      assert.ok(quiet.db < -70, `silence: loudest bin ${quiet.db.toFixed(1)} dB at ${quiet.hz.toFixed(0)} Hz`);

      await page.locator('#sound-toggle').click();
      assert.equal(await page.evaluate(() => document.getElementById('screen').muted), false, 'unmuted by the click');
      assert.match(await page.locator('#sound-toggle').textContent(), /mute/);
    });
  });

  it('hears a 1 kHz tone played into the sink at 1 kHz; /metrics counts the packets', async () => {
    const logs = recordConsole(page);
    await reportingFailures(() => `${procs.report()}\n${logs.join('\n')}`, async () => {

      tone = procs.spawn('tone', 'gst-launch-1.0', ['-q', 'audiotestsrc', 'freq=1000', 'volume=0.5', 'is-live=true', '!', 'pulsesink', 'device=vm_out'], {
        env: { PULSE_SERVER: pulse.server },
      });
      const heard = await waitFor('the 1 kHz tone in the page', async () => {
        const l = await listen(page, 800);
        return l.db > -50 ? l : null;
      }, { timeoutMs: 10000, intervalMs: 100 });
      assert.ok(Math.abs(heard.hz - 1000) <= 2 * heard.binHz, `tone found at ${heard.hz.toFixed(1)} Hz (${heard.db.toFixed(1)} dB)`);

      const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      const m = metrics.match(/^vdesk_agent_audio_packets_total\{vm="sound",session="[^"]+"\} (\d+)/m);
      assert.ok(m && Number(m[1]) > 50, `audio packets in /metrics: ${m?.[0] ?? 'none'}`);
    });
  });

  it('stops the audio capture when the last viewer leaves', async () => {
    if (tone) await procs.kill(tone, 'SIGTERM');
    await page?.close();
    await waitFor('audio capture stopped', () => /audio capture stopped/.test(procs.report()), { timeoutMs: 10000 });
  });
});
