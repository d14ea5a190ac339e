// latency.mjs: the glass-to-glass benchmark. For each configuration it starts Xvfb, a stimulus
// (vdesk-xpaint: a block whose colour changes at random intervals, plus an optional 60 fps busy
// region), the system under test (vdesk controller + agent, or x11vnc + websockify + noVNC), and
// Debian's headless Chromium; a probe in the page finds the first displayed frame that shows each
// new colour. Reports p50/p95/max latency, frames/s, CPU, kbit/s and page load to first frame.
// Run it through bench/run.sh (own network namespace, release build); see bench/README.md.

import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const require = (await import('node:module')).createRequire(path.join(root, 'web', 'package.json'));
const { chromium } = require('playwright-core');

const { values: opt } = parseArgs({
  options: {
    samples: { type: 'string', default: '40' },
    only: { type: 'string', default: '' },
    'bin-dir': { type: 'string', default: path.join(root, 'target', 'release') },
    out: { type: 'string', default: path.join(here, 'results') },
    fps: { type: 'string', default: '90' }, // the agent's --framerate (its default)
    quick: { type: 'boolean', default: false },
  },
});
const SAMPLES = opt.quick ? 8 : Number(opt.samples);
const FPS = Number(opt.fps);
const BIN = opt['bin-dir'];
const CHROMIUM_ARGS = [
  '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];
const BLOCK = { x: 100, y: 100, w: 160, h: 160 };
const COLOURS = ['ff0000', '00ff00', '0000ff', 'ffff00', 'ff00ff', '00ffff'];
const CLICK_COLOURS = ['ff8000', '0080ff', '80ff00', 'ff0080'];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// processes

class Procs {
  constructor() { this.list = []; }
  spawn(name, cmd, args, env = {}) {
    const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    p.name = name;
    p.log = [];
    const keep = (d) => { p.log.push(d.toString()); if (p.log.length > 200) p.log.shift(); };
    p.stdout.on('data', keep);
    p.stderr.on('data', keep);
    p.on('error', (e) => p.log.push(`spawn error: ${e.message}`));
    this.list.push(p);
    return p;
  }
  async stopAll() {
    for (const p of this.list.reverse()) {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
    }
    await sleep(300);
    for (const p of this.list) {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    }
    this.list = [];
  }
}

async function waitFor(what, fn, timeoutMs = 15000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try { const v = await fn(); if (v) return v; } catch (e) { last = e; }
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

function freeDisplay() {
  for (let n = 120; n < 200; n++) {
    if (!existsSync(`/tmp/.X11-unix/X${n}`) && !existsSync(`/tmp/.X${n}-lock`)) return n;
  }
  throw new Error('no free X display');
}

let nextPort = 18000 + (process.pid % 1000) * 10;
const port = () => nextPort++;

/** CPU seconds (user+system) used so far by `pids`. */
function cpuSeconds(pids) {
  const tick = 100; // USER_HZ on Linux
  let total = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total += (Number(fields[11]) + Number(fields[12])) / tick;
    } catch { /* exited */ }
  }
  return total;
}

/** Pids of the processes whose command line mentions `marker` (e.g. a user-data-dir). */
function pidsWith(marker) {
  const out = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(marker)) out.push(Number(d));
    } catch { /* gone */ }
  }
  return out;
}

function loopbackBytes() {
  const line = readFileSync('/proc/net/dev', 'utf8').split('\n').find((l) => l.trim().startsWith('lo:'));
  return line ? Number(line.split(':')[1].trim().split(/\s+/)[0]) : 0;
}

// ---------------------------------------------------------------------------------------------
// the stimulus

async function startStimulus(procs, display, busy, width, height) {
  const args = ['--display', `:${display}`, '--rect', `${BLOCK.x},${BLOCK.y},${BLOCK.w},${BLOCK.h}`,
    '--color', COLOURS[0], '--background', '202020', '--click-colors', CLICK_COLOURS.join(',')];
  if (busy) args.push('--busy', `${Math.round(width / 3)},${Math.round(height / 3)},${Math.round(width / 2)},${Math.round(height / 2)}`, '--busy-fps', '60');
  const p = procs.spawn('xpaint', path.join(BIN, 'vdesk-xpaint'), args);
  const lines = createInterface({ input: p.stdout });
  const waiting = [];
  const clicks = [];
  lines.on('line', (l) => {
    if (l.startsWith('clicked')) { clicks.push(l); return; }
    const w = waiting.shift(); if (w) w(l);
  });
  const next = () => new Promise((r) => waiting.push(r));
  const ready = await Promise.race([next(), sleep(5000).then(() => null)]);
  if (!ready?.startsWith('ready')) throw new Error(`xpaint did not start: ${p.log.join('')}`);
  return {
    /** The next `clicked RRGGBB received painted` line, as ms since epoch. */
    async click(timeoutMs = 3000) {
      const end = Date.now() + timeoutMs;
      while (!clicks.length && Date.now() < end) await sleep(5);
      const l = clicks.shift();
      const m = l && /^clicked (\w+) (\d+) (\d+)/.exec(l);
      return m ? { colour: m[1], received: Number(m[2]) / 1000, painted: Number(m[3]) / 1000 } : null;
    },
    async paint(colour) {
      const reply = next();
      p.stdin.write(`${colour}\n`);
      const l = await reply;
      const m = /^painted (\w+) (\d+)/.exec(l);
      if (!m) throw new Error(`xpaint: ${l}`);
      return Number(m[2]) / 1000; // ms since epoch
    },
  };
}

// ---------------------------------------------------------------------------------------------
// page probes: every displayed frame's time and the colour at the block's centre

const VIDEO_PROBE = ({ bx, by }) => {
  const v = document.querySelector('video');
  const c = new OffscreenCanvas(1, 1);
  const ctx = c.getContext('2d', { willReadFrequently: true });
  window.__frames = [];
  if (window.__bench_raf) { const tick = () => requestAnimationFrame(tick); tick(); }
  const onFrame = (now, md) => {
    ctx.drawImage(v, bx, by, 1, 1, 0, 0, 1, 1);
    const d = ctx.getImageData(0, 0, 1, 1).data;
    // The later of the callback's time and the frame's expected display time: never optimistic.
    const t = Math.max(now, md.expectedDisplayTime ?? now);
    const abs = (x) => (x == null ? null : performance.timeOrigin + x);
    window.__frames.push([abs(t), d[0], d[1], d[2], abs(md.receiveTime), abs(md.presentationTime)]);
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);
};

const CANVAS_PROBE = ({ bx, by }) => {
  const canvas = document.querySelector('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  window.__frames = [];
  let last = '';
  const onFrame = (now) => {
    const d = ctx.getImageData(bx, by, 1, 1).data;
    const key = `${d[0]},${d[1]},${d[2]}`;
    if (key !== last) {
      window.__frames.push([performance.timeOrigin + now, d[0], d[1], d[2]]);
      last = key;
    }
    requestAnimationFrame(onFrame);
  };
  requestAnimationFrame(onFrame);
};

function rgbOf(hex) {
  return [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16));
}
const close = (a, b, tol = 60) => a.every((v, i) => Math.abs(v - b[i]) <= tol);

async function clockOffset(page) {
  let best = null;
  for (let i = 0; i < 5; i++) {
    const t0 = Date.now();
    const p = await page.evaluate(() => performance.timeOrigin + performance.now());
    const t1 = Date.now();
    if (!best || t1 - t0 < best.rtt) best = { rtt: t1 - t0, offset: p - (t0 + t1) / 2 };
  }
  return best;
}

/** Paints SAMPLES new colours at random intervals and matches each to the first frame showing it. */
async function measure(page, stim, offsetMs) {
  const lat = [];
  const parts = [];
  let misses = 0;
  for (let i = 1; i <= SAMPLES; i++) {
    const colour = COLOURS[i % COLOURS.length];
    await sleep(150 + Math.random() * 250);
    await page.evaluate(() => { window.__frames.length = 0; });
    const painted = await stim.paint(colour);
    const want = rgbOf(colour);
    let seen = null;
    const end = Date.now() + 2000;
    while (!seen && Date.now() < end) {
      await sleep(30);
      const frames = await page.evaluate(() => window.__frames.slice());
      seen = frames.find((f) => f[0] - offsetMs >= painted - 1 && close(f.slice(1, 4), want));
    }
    if (seen) {
      lat.push(seen[0] - offsetMs - painted);
      const [shown, , , , received, presented] = seen;
      if (received != null && presented != null) {
        parts.push({ toReceived: received - offsetMs - painted, toPresented: presented - received, toShown: shown - presented });
        if (process.env.BENCH_DEBUG) console.error(`sample ${(shown - offsetMs - painted).toFixed(1)} = ${parts.at(-1).toReceived.toFixed(1)} + ${parts.at(-1).toPresented.toFixed(1)} + ${parts.at(-1).toShown.toFixed(1)}`);
      }
    } else misses++;
  }
  const med = (k) => stats(parts.map((p) => p[k])).p50;
  const split = parts.length
    ? { toReceivedMs: med('toReceived'), toPresentedMs: med('toPresented'), toShownMs: med('toShown') }
    : null;
  return { lat, misses, split };
}

/** Where on the page (CSS px) screen pixel (x, y) is shown, for a <video> (object-fit: contain)
 *  or noVNC's canvas. */
async function pagePoint(page, kind, x, y) {
  return page.evaluate(({ kind, x, y }) => {
    const el = document.querySelector(kind === 'video' ? 'video' : 'canvas');
    const r = el.getBoundingClientRect();
    const w = kind === 'video' ? el.videoWidth : el.width;
    const h = kind === 'video' ? el.videoHeight : el.height;
    const scale = Math.min(r.width / w, r.height / h);
    return { x: r.left + (r.width - w * scale) / 2 + x * scale, y: r.top + (r.height - h * scale) / 2 + y * scale };
  }, { kind, x, y });
}

/** Clicks the block in the page; the stimulus repaints it on the click; the time from the
 *  browser's pointerdown to the first frame showing the new colour is input-to-photon. */
async function measureClicks(page, stim, kind, offsetMs, samples) {
  await page.evaluate(() => {
    window.__downs = [];
    window.addEventListener('pointerdown', (e) => window.__downs.push(performance.timeOrigin + e.timeStamp), true);
  });
  const at = await pagePoint(page, kind, BLOCK.x + BLOCK.w / 2, BLOCK.y + BLOCK.h / 2);
  const total = [];
  const inputLeg = [];
  let misses = 0;
  for (let i = 0; i < samples; i++) {
    await sleep(200 + Math.random() * 250);
    await page.evaluate(() => { window.__frames.length = 0; window.__downs.length = 0; });
    await page.mouse.click(at.x, at.y);
    const c = await stim.click();
    const down = (await page.evaluate(() => window.__downs[0])) ?? null;
    if (!c || down == null) { misses++; continue; }
    const want = rgbOf(c.colour);
    let seen = null;
    const end = Date.now() + 2000;
    while (!seen && Date.now() < end) {
      await sleep(30);
      const frames = await page.evaluate(() => window.__frames.slice());
      seen = frames.find((f) => f[0] >= down && close(f.slice(1, 4), want));
    }
    if (!seen) { misses++; continue; }
    total.push(seen[0] - down);
    inputLeg.push(c.received - (down - offsetMs));
  }
  return { total: stats(total), inputLeg: stats(inputLeg), misses };
}

function stats(xs) {
  if (!xs.length) return { p50: NaN, p95: NaN, max: NaN, n: 0 };
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * (s.length - 1) + 0.5))];
  return { p50: q(0.5), p95: q(0.95), max: s[s.length - 1], n: s.length };
}

// ---------------------------------------------------------------------------------------------
// systems under test

async function startVdesk(procs, display, codec) {
  const p = port();
  const secret = 'bench-secret-0123456789abcdef0123456789';
  const agentToken = 'bench-agent-token-0123456789abcdef';
  const env = { VDESK_SECRET: secret, VDESK_AGENT_TOKEN: agentToken };
  const base = `http://127.0.0.1:${p}`;
  procs.spawn('controller', path.join(BIN, 'vdesk-controller'),
    ['--listen', `127.0.0.1:${p}`, '--vm', 'bench'], { ...env, RUST_LOG: 'warn' });
  await waitFor('controller', async () => (await fetch(`${base}/healthz`)).ok);
  const token = await new Promise((resolve, reject) => {
    const m = spawn(path.join(BIN, 'vdesk-controller'),
      ['mint-link', '--vm', 'bench', '--permission', 'control', '--ttl', '1h', '--token-only'],
      { env: { ...process.env, ...env } });
    let out = '';
    m.stdout.on('data', (d) => { out += d; });
    m.on('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`mint-link exited ${code}`))));
  });
  const auth = { headers: { Authorization: `Bearer ${token}` } };
  const metrics = port();
  const agent = procs.spawn('agent', path.join(BIN, 'vdesk-agent'),
    ['--controller', base, '--vm-id', 'bench', '--display', `:${display}`, '--codecs', codec,
      '--framerate', String(FPS), '--metrics-listen', `127.0.0.1:${metrics}`], { ...env, VDESK_LOG: 'warn' });
  await waitFor('agent online', async () => (await (await fetch(`${base}/api/vms/bench`, auth)).json()).online);
  // The agent's own stage times (vdesk_agent_stage_seconds: capture, encode), as totals.
  const stages = async () => {
    const text = await (await fetch(`http://127.0.0.1:${metrics}/metrics`)).text();
    const out = {};
    for (const m of text.matchAll(/^vdesk_agent_stage_seconds_(sum|count)\{stage="(\w+)"\} (\S+)$/gm)) {
      out[m[2]] = { ...out[m[2]], [m[1]]: Number(m[3]) };
    }
    return out;
  };
  return { url: `${base}/vm/bench?token=${token}`, serverPids: () => [agent.pid], probe: VIDEO_PROBE, kind: 'video', stages };
}

async function startNovnc(procs, display) {
  const vnc = port();
  const web = port();
  const x11vnc = procs.spawn('x11vnc', 'x11vnc', ['-display', `:${display}`, '-rfbport', String(vnc),
    '-localhost', '-shared', '-forever', '-nopw', '-quiet', '-noxrecord', '-noxfixes', '-nowf']);
  await waitFor('x11vnc', async () => x11vnc.log.join('').includes('PORT=') || (await sleep(200), false), 15000)
    .catch(() => sleep(1500));
  const ws = procs.spawn('websockify', 'websockify', ['--web', '/usr/share/novnc', `127.0.0.1:${web}`, `127.0.0.1:${vnc}`]);
  await waitFor('websockify', async () => (await fetch(`http://127.0.0.1:${web}/vnc_lite.html`)).ok);
  return {
    url: `http://127.0.0.1:${web}/vnc_lite.html?host=127.0.0.1&port=${web}&scale=false`,
    serverPids: () => [x11vnc.pid, ws.pid],
    probe: CANVAS_PROBE,
    kind: 'canvas',
  };
}

// ---------------------------------------------------------------------------------------------

async function runOne(cfg) {
  const procs = new Procs();
  const userDir = await mkdtemp(path.join(os.tmpdir(), 'vdesk-bench-chromium-'));
  let browser;
  try {
    const display = freeDisplay();
    procs.spawn('Xvfb', 'Xvfb', [`:${display}`, '-screen', '0', `${cfg.width}x${cfg.height}x24`, '-nolisten', 'tcp', '-noreset']);
    await waitFor('Xvfb', () => existsSync(`/tmp/.X11-unix/X${display}`));
    const stim = await startStimulus(procs, display, cfg.busy, cfg.width, cfg.height);
    const sut = cfg.system === 'novnc' ? await startNovnc(procs, display) : await startVdesk(procs, display, cfg.codec);

    browser = await chromium.launchPersistentContext(userDir, {
      executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS, headless: true,
      viewport: { width: cfg.width, height: cfg.height },
    });
    const page = browser.pages()[0] ?? await browser.newPage();
    if (sut.kind === 'video') {
      await page.addInitScript(() => {
        const hook = () => {
          const v = document.querySelector('video');
          if (!v) return setTimeout(hook, 5);
          v.requestVideoFrameCallback((now) => { window.__firstFrame = now; });
        };
        document.addEventListener('DOMContentLoaded', hook);
      });
    }
    if (process.env.BENCH_RAF) await page.addInitScript(() => { window.__bench_raf = true; });
    await page.goto(sut.url);
    const want0 = rgbOf(COLOURS[0]);
    if (sut.kind === 'video') {
      await waitFor('first frame', () => page.evaluate(() => window.__firstFrame), 20000);
    } else {
      await waitFor('first canvas pixels', () => page.evaluate(({ bx, by, want }) => {
        const c = document.querySelector('canvas');
        if (!c || c.width < 10) return false;
        const d = c.getContext('2d').getImageData(bx, by, 1, 1).data;
        if (Math.abs(d[0] - want[0]) < 60 && Math.abs(d[1] - want[1]) < 60 && Math.abs(d[2] - want[2]) < 60) {
          window.__firstFrame = window.__firstFrame ?? performance.now();
        }
        return window.__firstFrame;
      }, { bx: BLOCK.x + BLOCK.w / 2, by: BLOCK.y + BLOCK.h / 2, want: want0 }), 20000);
    }
    const firstFrameMs = await page.evaluate(() => window.__firstFrame);
    await page.evaluate(sut.probe, { bx: BLOCK.x + BLOCK.w / 2, by: BLOCK.y + BLOCK.h / 2 });
    await sleep(1000); // settle

    // Rates over a quiet window, then the latency samples.
    const chromePids = pidsWith(userDir);
    const frames0 = sut.kind === 'video' ? await page.evaluate(() => window.vdeskViewer?.videoStats?.()) : null;
    const cpu0 = { server: cpuSeconds(sut.serverPids()), browser: cpuSeconds(chromePids) };
    const bytes0 = loopbackBytes();
    const t0 = Date.now();
    const busyUpdates0 = await countUpdates(page, sut, cfg);
    await sleep(3000);
    const busyUpdates = await countUpdates(page, sut, cfg, busyUpdates0);
    const secs = (Date.now() - t0) / 1000;
    const cpu1 = { server: cpuSeconds(sut.serverPids()), browser: cpuSeconds(chromePids) };
    const bytes1 = loopbackBytes();
    const frames1 = sut.kind === 'video' ? await page.evaluate(() => window.vdeskViewer?.videoStats?.()) : null;
    const fps = frames0 && frames1 && frames1.framesDecoded != null
      ? (frames1.framesDecoded - frames0.framesDecoded) / secs : busyUpdates / secs;

    const off = await clockOffset(page);
    const stages0 = await sut.stages?.().catch(() => null);
    const { lat, misses, split } = await measure(page, stim, off.offset);
    const stages1 = await sut.stages?.().catch(() => null);
    // Mean milliseconds per frame of an agent stage over the samples.
    const stageMs = (name) => {
      const a = stages0?.[name];
      const b = stages1?.[name];
      return a && b && b.count > a.count ? (1000 * (b.sum - a.sum)) / (b.count - a.count) : NaN;
    };
    const clicks = await measureClicks(page, stim, sut.kind, off.offset, Math.max(5, Math.round(SAMPLES / 2)));
    const st = sut.kind === 'video' ? await page.evaluate(() => window.vdeskViewer?.videoStats?.()) : null;
    const per = (total, count) => (st && st[count] ? (1000 * st[total]) / st[count] : NaN);
    const breakdown = st ? {
      jitterBufferMs: per('jitterBufferDelay', 'jitterBufferEmittedCount'),
      decodeMs: per('totalDecodeTime', 'framesDecoded'),
      processingMs: per('totalProcessingDelay', 'framesDecoded'),
      interFrameMs: per('totalInterFrameDelay', 'framesDecoded'),
      framesDropped: st.framesDropped,
      captureMs: stageMs('capture'),
      encodeMs: stageMs('encode'),
    } : null;
    return {
      ...cfg, codec: cfg.system === 'novnc' ? 'VNC' : cfg.codec, ...stats(lat), misses,
      fps, serverCpu: (100 * (cpu1.server - cpu0.server)) / secs,
      browserCpu: (100 * (cpu1.browser - cpu0.browser)) / secs,
      kbps: ((bytes1 - bytes0) * 8) / 1000 / secs, // all traffic between the peers crosses lo
      firstFrameMs, clockRttMs: off.rtt, clicks, breakdown: breakdown && { ...breakdown, ...split },
    };
  } catch (e) {
    return { ...cfg, error: `${e.message}\n${procs.list.map((p) => `[${p.name}] ${p.log.join('').slice(-1500)}`).join('\n')}` };
  } finally {
    await browser?.close().catch(() => {});
    await procs.stopAll();
    await rm(userDir, { recursive: true, force: true });
  }
}

/** For noVNC (no decoder stats): count changes of a pixel inside the busy region. */
async function countUpdates(page, sut, cfg, since) {
  if (sut.kind === 'video' || !cfg.busy) return 0;
  if (since === undefined) {
    await page.evaluate(({ x, y }) => {
      const ctx = document.querySelector('canvas').getContext('2d', { willReadFrequently: true });
      window.__busyChanges = 0;
      let last = '';
      const tick = () => {
        const d = ctx.getImageData(x, y, 1, 1).data;
        const k = d.join();
        if (k !== last) { window.__busyChanges++; last = k; }
        requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    }, { x: Math.round(cfg.width / 3) + 50, y: Math.round(cfg.height / 3) + 50 });
    return 0;
  }
  return page.evaluate(() => window.__busyChanges);
}

function configs() {
  const out = [];
  const sizes = opt.quick ? [[1280, 720]] : [[1280, 720], [1920, 1080]];
  for (const [width, height] of sizes) {
    for (const busy of [false, true]) {
      for (const codec of ['h264', 'vp8', 'vp9']) out.push({ system: 'vdesk', codec, width, height, busy });
      out.push({ system: 'novnc', width, height, busy });
    }
  }
  const only = opt.only.split(',').filter(Boolean);
  return only.length ? out.filter((c) => only.some((o) => name(c).includes(o))) : out;
}

const name = (c) => `${c.system}${c.codec ? `-${c.codec}` : ''}-${c.height}p-${c.busy ? 'busy' : 'static'}`;
const f = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '–');

function table(results) {
  const rows = ['| system | codec | screen | content | g2g p50 ms | p95 ms | max ms | n (miss) | frames/s | server CPU % | browser CPU % | kbit/s | load → first frame ms |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |'];
  for (const r of results) {
    if (r.error) { rows.push(`| ${r.system} | ${r.codec ?? ''} | ${r.width}x${r.height} | ${r.busy ? 'busy' : 'static'} | error: ${r.error.split('\n')[0]} |`); continue; }
    rows.push(`| ${r.system} | ${r.codec} | ${r.width}x${r.height} | ${r.busy ? 'busy' : 'static'} | ${f(r.p50)} | ${f(r.p95)} | ${f(r.max)} | ${r.n} (${r.misses}) | ${f(r.fps)} | ${f(r.serverCpu)} | ${f(r.browserCpu)} | ${f(r.kbps)} | ${f(r.firstFrameMs)} |`);
  }
  return rows.join('\n');
}

function ratios(results) {
  const lines = ['| screen | content | vdesk codec | p50 vdesk/noVNC | p95 vdesk/noVNC |', '| --- | --- | --- | --- | --- |'];
  for (const r of results.filter((x) => x.system === 'vdesk' && !x.error)) {
    const v = results.find((x) => x.system === 'novnc' && !x.error && x.width === r.width && x.busy === r.busy);
    if (!v) continue;
    lines.push(`| ${r.width}x${r.height} | ${r.busy ? 'busy' : 'static'} | ${r.codec} | ${f(r.p50 / v.p50, 2)} | ${f(r.p95 / v.p95, 2)} |`);
  }
  return lines.join('\n');
}

function breakdownTable(results) {
  const rows = ['| codec | screen | content | X paint → last packet received (capture wait, capture, encode, send) ms | of which agent capture (avg) ms | of which agent convert + encode (avg) ms | received → presented (jitter buffer, decode) ms | presented → shown (compositor) ms | avg jitter buffer ms | avg decode ms | frames dropped |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |'];
  for (const r of results.filter((x) => x.breakdown)) {
    const b = r.breakdown;
    rows.push(`| ${r.codec} | ${r.width}x${r.height} | ${r.busy ? 'busy' : 'static'} | ${f(b.toReceivedMs, 1)} | ${f(b.captureMs, 1)} | ${f(b.encodeMs, 1)} | ${f(b.toPresentedMs, 1)} | ${f(b.toShownMs, 1)} | ${f(b.jitterBufferMs, 1)} | ${f(b.decodeMs, 1)} | ${b.framesDropped ?? '–'} |`);
  }
  return rows.join('\n');
}

function clickTable(results) {
  const rows = ['| system | codec | screen | content | input-to-photon p50 ms | p95 ms | of which browser → X (p50) ms | n (miss) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |'];
  for (const r of results.filter((x) => x.clicks)) {
    const c = r.clicks;
    rows.push(`| ${r.system} | ${r.codec} | ${r.width}x${r.height} | ${r.busy ? 'busy' : 'static'} | ${f(c.total.p50)} | ${f(c.total.p95)} | ${f(c.inputLeg.p50, 1)} | ${c.total.n} (${c.misses}) |`);
  }
  return rows.join('\n');
}

const results = [];
for (const cfg of configs()) {
  process.stderr.write(`bench: ${name(cfg)} ... `);
  const r = await runOne(cfg);
  results.push(r);
  process.stderr.write(r.error ? `error: ${r.error.split('\n')[0]}\n` : `p50 ${f(r.p50)} ms p95 ${f(r.p95)} ms, ${f(r.fps)} fps\n`);
}
const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
const header = `Run ${new Date().toISOString()} on ${os.cpus().length} × ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ` +
  `agent at ${FPS} fps, ${SAMPLES} samples per row; command: bench/run.sh ${process.argv.slice(2).join(' ')}`;
const md = `${header}\n\n${table(results)}\n\nRatios (same run):\n\n${ratios(results)}\n\n` +
  `Input to photon (a click on the block in the page until the frame that shows the block repainted by the X client that received the click):\n\n${clickTable(results)}\n\n` +
  `Where vdesk's time goes (medians over the samples; averages from Chromium's getStats):\n\n${breakdownTable(results)}\n`;
await mkdir(opt.out, { recursive: true });
await writeFile(path.join(opt.out, 'latest.md'), md);
await writeFile(path.join(opt.out, 'latest.json'), JSON.stringify({ header, results }, null, 2));
console.log(md);
if (results.some((r) => r.error)) process.exitCode = 1;
