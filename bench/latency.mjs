// latency.mjs: the glass-to-glass benchmark. For each row it starts Xvfb, a stimulus
// (vdesk-xpaint: a block whose colour changes at random intervals, plus an optional animation:
// "busy", bars in a quarter of the screen, or "heavy", stripes the full width and half the
// height, both at 60 fps with a frame counter), the system under test (vdesk controller + agent,
// or x11vnc + websockify + noVNC) and Debian's headless Chromium, optionally behind an emulated
// link; a probe in the page finds the first displayed frame that shows each new colour.
// `--set publish` runs the whole published set: the x11vnc sweep, vdesk against the best x11vnc
// interleaved (A/B/A/B), the 10 Mbit/s link, and the agent variants. Every raw sample goes to
// bench/results/latest.json; bench/report.mjs computes every table from it (latest.md).
// Run it through bench/run.sh (own network namespace, release build); see bench/README.md.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile, mkdir, chmod, symlink, readFile } from 'node:fs/promises';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { report, bestVnc } from './report.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const require = (await import('node:module')).createRequire(path.join(root, 'web', 'package.json'));
const { chromium } = require('playwright-core');

const { values: opt } = parseArgs({
  options: {
    set: { type: 'string', default: 'main' },
    samples: { type: 'string', default: '40' },
    reps: { type: 'string', default: '2' },
    codecs: { type: 'string', default: 'h264' },
    vnc: { type: 'string', default: 'fast' },
    only: { type: 'string', default: '' },
    'bin-dir': { type: 'string', default: path.join(root, 'target', 'release') },
    out: { type: 'string', default: path.join(here, 'results') },
    name: { type: 'string', default: 'latest' },
    fps: { type: 'string', default: '90' }, // the agent's --framerate (its default)
    quick: { type: 'boolean', default: false },
  },
});
const SAMPLES = opt.quick ? 8 : Number(opt.samples);
const SHORT_SAMPLES = Math.max(8, Math.ceil(SAMPLES / 2)); // sweep and agent variants
const REPS = Number(opt.reps);
const FPS = Number(opt.fps);
const BIN = opt['bin-dir'];
const MISS_AFTER_MS = 2000;
const CHROMIUM_ARGS = [
  '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];
const BLOCK = { x: 100, y: 100, w: 160, h: 160 };
const COLOURS = ['ff0000', '00ff00', '0000ff', 'ffff00', 'ff00ff', '00ffff'];
const CLICK_COLOURS = ['ff8000', '0080ff', '80ff00', 'ff0080'];
// vdesk-xpaint's frame counter (crates/xpaint/src/lib.rs `counter_cells`): 8 cells, 16 px, 24 px
// apart, from (16, 24) inside the animated region; the page reads the cells' centres.
const COUNTER = { bits: 8, pitch: 24, x: 16 + 8, y: 24 + 8 };
// The link of the link table: 10 Mbit/s each way, 10 ms each way (20 ms RTT), 150 ms queue.
const LINK = { rate_kbps: 10000, delay_ms: 10, loss: 0, queue_ms: 150 };

// x11vnc at its fastest settings (issue 16): the sweep. Every variant also gets the common flags
// of startVnc. "fast" is -defer 0 -wait 1 -nowait_bog (no update deferral, 1 ms between polls,
// no back-off when polling bogs down).
const FAST = ['-defer', '0', '-wait', '1', '-nowait_bog'];
const VNC_VARIANTS = {
  default: { vncArgs: [] },
  fast: { vncArgs: FAST },
  'fast-threads': { vncArgs: [...FAST, '-threads'] },
  'fast-noxdamage': { vncArgs: [...FAST, '-noxdamage'] },
  'fast-pointer_mode1': { vncArgs: [...FAST, '-pointer_mode', '1'] },
  'fast-ncache0': { vncArgs: [...FAST, '-ncache', '0'] },
  'fast-q9c0': { vncArgs: FAST, quality: 9, compression: 0 },
  'fast-q3c1': { vncArgs: FAST, quality: 3, compression: 1 },
  'fast-threads-q3c1': { vncArgs: [...FAST, '-threads'], quality: 3, compression: 1 },
};
// The agent variants measured on heavy content (the suspects of issue 16), each interleaved with
// the defaults.
const AGENT_VARIANTS = {
  default: {},
  'full-screen capture (ximagesrc, XShm)': { agentArgs: ['--capture', 'ximagesrc'] },
  'x264 sliced-threads': { agentEnv: { VDESK_ENCODER_EXTRA: 'sliced-threads=true' } },
  'x264 threads=1': { agentEnv: { VDESK_ENCODER_EXTRA: 'threads=1' } },
  'x264 intra-refresh': { agentEnv: { VDESK_ENCODER_EXTRA: 'intra-refresh=true' } },
  'capture pacing 60 fps': { agentArgs: ['--framerate', '60'] },
};

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

/** Bytes seen on interface `iface` (received; on loopback every packet is received once), or
 *  received + sent (a TAP device: the two directions of the emulated link). */
function ifaceBytes(iface, both = false) {
  const line = readFileSync('/proc/net/dev', 'utf8').split('\n').find((l) => l.trim().startsWith(`${iface}:`));
  if (!line) return 0;
  const v = line.split(':')[1].trim().split(/\s+/).map(Number);
  return both ? v[0] + v[8] : v[0];
}

// ---------------------------------------------------------------------------------------------
// the stimulus

/** The animated region of `content` on a width x height screen, or null. */
function animation(content, width, height) {
  if (content === 'busy') return [Math.round(width / 3), Math.round(height / 3), Math.round(width / 2), Math.round(height / 2)];
  if (content === 'heavy') return [0, Math.round(height / 2), width, height - Math.round(height / 2)];
  return null;
}

async function startStimulus(procs, display, cfg) {
  const args = ['--display', `:${display}`, '--rect', `${BLOCK.x},${BLOCK.y},${BLOCK.w},${BLOCK.h}`,
    '--color', COLOURS[0], '--background', '202020', '--click-colors', CLICK_COLOURS.join(',')];
  const anim = animation(cfg.content, cfg.width, cfg.height);
  if (anim) args.push('--busy', anim.join(','), '--busy-fps', '60');
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
    /** Repaints the block: the wall clock (ms) read before the paint request and after the X
     *  server confirmed it. */
    async paint(colour) {
      const reply = next();
      p.stdin.write(`${colour}\n`);
      const l = await reply;
      const m = /^painted (\w+) (\d+) (\d+)/.exec(l);
      if (!m) throw new Error(`xpaint: ${l}`);
      return { after: Number(m[2]) / 1000, before: Number(m[3]) / 1000 };
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

/** Content frames shown, the same way for both systems: on every animation frame of the page
 *  (requestAnimationFrame) read the animation's frame counter from what the page shows (the
 *  <video>'s current frame or noVNC's canvas) and count the changes of its value; `steps` counts
 *  how far it moved each time (2 = one animation frame never shown). */
const COUNTER_PROBE = ({ kind, x0, y0, bits, pitch }) => {
  const el = document.querySelector(kind === 'video' ? 'video' : 'canvas');
  const w = (bits - 1) * pitch + 1;
  let read;
  if (kind === 'video') {
    const ctx = new OffscreenCanvas(w, 1).getContext('2d', { willReadFrequently: true });
    read = () => { ctx.drawImage(el, x0, y0, w, 1, 0, 0, w, 1); return ctx.getImageData(0, 0, w, 1).data; };
  } else {
    const ctx = el.getContext('2d', { willReadFrequently: true });
    read = () => ctx.getImageData(x0, y0, w, 1).data;
  }
  const s = { changes: 0, reads: 0, last: -1, steps: {} };
  window.__counter = s;
  const tick = () => {
    const d = read();
    let v = 0;
    for (let b = 0; b < bits; b++) {
      const i = b * pitch * 4;
      if (d[i] + d[i + 1] + d[i + 2] > 3 * 128) v |= 1 << b;
    }
    s.reads++;
    if (v !== s.last) {
      if (s.last >= 0) { const step = (v - s.last + 256) % 256; s.steps[step] = (s.steps[step] ?? 0) + 1; }
      s.changes++;
      s.last = v;
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
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

/** Paints `samples` new colours at random intervals and matches each to the first frame showing
 *  it: the raw samples, times in ms on Node's (= the X client's) clock. */
async function measure(page, stim, offsetMs, samples) {
  const out = [];
  for (let i = 1; i <= samples; i++) {
    const colour = COLOURS[i % COLOURS.length];
    await sleep(150 + Math.random() * 250);
    await page.evaluate(() => { window.__frames.length = 0; });
    const { before, after } = await stim.paint(colour);
    const want = rgbOf(colour);
    let seen = null;
    const end = Date.now() + MISS_AFTER_MS;
    while (!seen && Date.now() < end) {
      await sleep(30);
      const frames = await page.evaluate(() => window.__frames.slice());
      seen = frames.find((f) => f[0] - offsetMs >= before - 1 && close(f.slice(1, 4), want));
    }
    if (!seen) { out.push({ colour, before, after, missed: true }); continue; }
    const [shown, , , , received, presented] = seen;
    const node = (t) => (t == null ? undefined : t - offsetMs);
    out.push({ colour, before, after, shown: node(shown), received: node(received), presented: node(presented) });
  }
  return out;
}

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
 *  browser's pointerdown to the first frame showing the new colour is input-to-photon. Raw
 *  samples, ms on Node's clock. */
async function measureClicks(page, stim, kind, offsetMs, samples) {
  await page.evaluate(() => {
    window.__downs = [];
    window.addEventListener('pointerdown', (e) => window.__downs.push(performance.timeOrigin + e.timeStamp), true);
  });
  const at = await pagePoint(page, kind, BLOCK.x + BLOCK.w / 2, BLOCK.y + BLOCK.h / 2);
  const out = [];
  for (let i = 0; i < samples; i++) {
    await sleep(200 + Math.random() * 250);
    await page.evaluate(() => { window.__frames.length = 0; window.__downs.length = 0; });
    await page.mouse.click(at.x, at.y);
    const c = await stim.click();
    const down = (await page.evaluate(() => window.__downs[0])) ?? null;
    if (!c || down == null) { out.push({ missed: true, reason: c ? 'no pointerdown' : 'no click reached X' }); continue; }
    const want = rgbOf(c.colour);
    let seen = null;
    const end = Date.now() + MISS_AFTER_MS;
    while (!seen && Date.now() < end) {
      await sleep(30);
      const frames = await page.evaluate(() => window.__frames.slice());
      seen = frames.find((f) => f[0] >= down && close(f.slice(1, 4), want));
    }
    if (!seen) { out.push({ missed: true, down: down - offsetMs, received: c.received }); continue; }
    out.push({ down: down - offsetMs, received: c.received, painted: c.painted, shown: seen[0] - offsetMs });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// the emulated link: Chromium in a network namespace of its own behind two TAP devices joined by
// web/test/e2e/linkemu.py (as badnet.e2e.mjs does; this kernel has no netem)

const run = (cmd, args) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

async function startLink(procs, settings) {
  const tag = `${process.pid % 10000}${Math.floor(Math.random() * 90 + 10)}`;
  const ns = `vdesk-bench-${tag}`;
  const host = `vbh${tag}`;
  const peer = `vbn${tag}`;
  const octet = (process.pid % 250) + 1;
  const hostIp = `10.232.${octet}.1`;
  const nsIp = `10.232.${octet}.2`;
  run('ip', ['netns', 'add', ns]);
  const link = procs.spawn('linkemu', 'python3', [path.join(root, 'web', 'test', 'e2e', 'linkemu.py'), host, peer]);
  await waitFor('linkemu.py ready', () => link.log.join('').includes('ready'), 10000);
  run('ip', ['link', 'set', peer, 'netns', ns]);
  run('ip', ['addr', 'add', `${hostIp}/30`, 'dev', host]);
  run('ip', ['link', 'set', host, 'up']);
  run('ip', ['netns', 'exec', ns, 'ip', 'addr', 'add', `${nsIp}/30`, 'dev', peer]);
  run('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', peer, 'up']);
  run('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  link.stdin.write(`${JSON.stringify(settings)}\n`);
  const wrapper = path.join(os.tmpdir(), `vdesk-bench-chromium-${ns}.sh`);
  await writeFile(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} /usr/bin/chromium "$@"\n`);
  await chmod(wrapper, 0o755);
  return {
    hostIp, iface: host, wrapper,
    async stop() {
      try { run('ip', ['netns', 'del', ns]); } catch { /* gone */ }
      await rm(wrapper, { force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// systems under test

async function startVdesk(procs, display, cfg, listenIp) {
  const p = port();
  const secret = 'bench-secret-0123456789abcdef0123456789';
  const agentToken = 'bench-agent-token-0123456789abcdef';
  const env = { VDESK_SECRET: secret, VDESK_AGENT_TOKEN: agentToken };
  const base = `http://${listenIp}:${p}`;
  procs.spawn('controller', path.join(BIN, 'vdesk-controller'),
    ['--listen', `${listenIp}:${p}`, '--vm', 'bench'], { ...env, RUST_LOG: 'warn' });
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
    ['--controller', base, '--vm-id', 'bench', '--display', `:${display}`, '--codecs', cfg.codec,
      ...(cfg.settings.agentArgs.includes('--framerate') ? [] : ['--framerate', String(FPS)]),
      '--metrics-listen', `127.0.0.1:${metrics}`, ...cfg.settings.agentArgs],
    { ...env, VDESK_LOG: 'warn', ...cfg.settings.agentEnv });
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

/** noVNC's vnc_lite.html with two additions: the JPEG quality and zlib compression levels from
 *  the query (`quality`, `compression`; noVNC's defaults 6 and 2), served with noVNC's modules. */
async function novncRoot(dir) {
  for (const d of ['core', 'vendor']) await symlink(`/usr/share/novnc/${d}`, path.join(dir, d));
  const lite = await readFile('/usr/share/novnc/vnc_lite.html', 'utf8');
  const marker = "rfb.scaleViewport = readQueryVariable('scale', false);";
  if (!lite.includes(marker)) throw new Error('/usr/share/novnc/vnc_lite.html changed: cannot add the quality settings');
  await writeFile(path.join(dir, 'bench.html'), lite.replace(marker, `${marker}
        rfb.qualityLevel = Number(readQueryVariable('quality', 6));
        rfb.compressionLevel = Number(readQueryVariable('compression', 2));
        window.benchRfb = rfb;`));
}

async function startVnc(procs, display, cfg, listenIp, tmp) {
  const vnc = port();
  const web = port();
  const x11vnc = procs.spawn('x11vnc', 'x11vnc', ['-display', `:${display}`, '-rfbport', String(vnc),
    '-localhost', '-shared', '-forever', '-nopw', '-quiet', '-noxrecord', '-noxfixes', '-nowf', ...cfg.settings.vncArgs]);
  await waitFor('x11vnc', async () => x11vnc.log.join('').includes('PORT=') || (await sleep(200), false), 15000)
    .catch(() => sleep(1500));
  const webRoot = path.join(tmp, 'novnc');
  await mkdir(webRoot);
  await novncRoot(webRoot);
  const ws = procs.spawn('websockify', 'websockify', ['--web', webRoot, `${listenIp}:${web}`, `127.0.0.1:${vnc}`]);
  await waitFor('websockify', async () => (await fetch(`http://${listenIp}:${web}/bench.html`)).ok);
  const q = cfg.settings.quality ?? 6;
  const c = cfg.settings.compression ?? 2;
  return {
    url: `http://${listenIp}:${web}/bench.html?host=${listenIp}&port=${web}&scale=false&quality=${q}&compression=${c}`,
    serverPids: () => [x11vnc.pid, ws.pid],
    probe: CANVAS_PROBE,
    kind: 'canvas',
  };
}

// ---------------------------------------------------------------------------------------------

async function runOne(cfg) {
  const procs = new Procs();
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'vdesk-bench-'));
  const userDir = path.join(tmp, 'chromium');
  let browser;
  let link;
  const load0 = os.loadavg();
  try {
    const display = freeDisplay();
    procs.spawn('Xvfb', 'Xvfb', [`:${display}`, '-screen', '0', `${cfg.width}x${cfg.height}x24`, '-nolisten', 'tcp', '-noreset']);
    await waitFor('Xvfb', () => existsSync(`/tmp/.X11-unix/X${display}`));
    const stim = await startStimulus(procs, display, cfg);
    if (cfg.link) link = await startLink(procs, cfg.link);
    const listenIp = link ? link.hostIp : '127.0.0.1';
    const sut = cfg.system === 'vnc' ? await startVnc(procs, display, cfg, listenIp, tmp) : await startVdesk(procs, display, cfg, listenIp);

    browser = await chromium.launchPersistentContext(userDir, {
      executablePath: link ? link.wrapper : '/usr/bin/chromium', args: CHROMIUM_ARGS, headless: true,
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
    const anim = animation(cfg.content, cfg.width, cfg.height);
    if (anim) {
      await page.evaluate(COUNTER_PROBE, { kind: sut.kind, x0: anim[0] + COUNTER.x, y0: anim[1] + COUNTER.y, bits: COUNTER.bits, pitch: COUNTER.pitch });
    }
    await sleep(1000); // settle

    // Rates over a quiet window, then the latency samples.
    const chromePids = pidsWith(userDir);
    const iface = link ? link.iface : 'lo';
    const snap = async () => ({
      t: Date.now(),
      server: cpuSeconds(sut.serverPids()),
      browser: cpuSeconds(chromePids),
      bytes: ifaceBytes(iface, !!link),
      video: sut.kind === 'video' ? await page.evaluate(() => window.vdeskViewer?.videoStats?.()) : null,
      counter: anim ? await page.evaluate(() => ({ ...window.__counter, steps: { ...window.__counter.steps } })) : null,
    });
    const w0 = await snap();
    await sleep(3000);
    const w1 = await snap();
    const steps = {};
    if (anim) for (const [k, v] of Object.entries(w1.counter.steps)) steps[k] = v - (w0.counter.steps[k] ?? 0);
    const rates = {
      secs: (w1.t - w0.t) / 1000,
      contentFrames: anim ? w1.counter.changes - w0.counter.changes : null,
      pageFrames: anim ? w1.counter.reads - w0.counter.reads : null,
      counterSteps: anim ? steps : null,
      framesDecoded: w0.video?.framesDecoded != null ? w1.video.framesDecoded - w0.video.framesDecoded : null,
      serverCpuS: w1.server - w0.server,
      browserCpuS: w1.browser - w0.browser,
      bytes: w1.bytes - w0.bytes,
    };

    const off = await clockOffset(page);
    const stages0 = await sut.stages?.().catch(() => null);
    const samples = await measure(page, stim, off.offset, cfg.count);
    const stages1 = await sut.stages?.().catch(() => null);
    // Mean milliseconds per frame of an agent stage over the samples.
    const stageMs = (name) => {
      const a = stages0?.[name];
      const b = stages1?.[name];
      return a && b && b.count > a.count ? (1000 * (b.sum - a.sum)) / (b.count - a.count) : null;
    };
    const clicks = cfg.clicks ? await measureClicks(page, stim, sut.kind, off.offset, cfg.clicks) : [];
    const st = sut.kind === 'video' ? await page.evaluate(() => window.vdeskViewer?.videoStats?.()) : null;
    return {
      ...cfg, firstFrameMs, clockRttMs: off.rtt, samples, clicks, rates,
      stages: sut.stages ? { captureMs: stageMs('capture'), encodeMs: stageMs('encode') } : null,
      videoStats: st ?? null,
      load: { before: load0, after: os.loadavg() },
    };
  } catch (e) {
    return { ...cfg, samples: [], clicks: [], load: { before: load0, after: os.loadavg() }, error: `${e.message}\n${procs.list.map((p) => `[${p.name}] ${p.log.join('').slice(-1500)}`).join('\n')}` };
  } finally {
    await browser?.close().catch(() => {});
    await procs.stopAll();
    await link?.stop();
    await rm(tmp, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// the rows

const vdeskRow = (o) => ({ system: 'vdesk', codec: 'h264', variant: 'default', settings: { agentArgs: [], agentEnv: {} }, ...o });
const vncRow = (variant, o) => ({ system: 'vnc', variant, settings: { vncArgs: [], ...VNC_VARIANTS[variant] }, ...o });

/** The rows of one set; `vnc` is the x11vnc variant the comparison uses. */
function rowsOf(set, vnc) {
  const sizes = opt.quick ? [[1280, 720]] : [[1280, 720], [1920, 1080]];
  const codecs = opt.codecs.split(',').filter(Boolean);
  const out = [];
  const s720 = { width: 1280, height: 720 };
  if (set === 'sweep') {
    for (const v of Object.keys(VNC_VARIANTS)) out.push(vncRow(v, { group: 'sweep', ...s720, content: 'heavy', count: SHORT_SAMPLES }));
  } else if (set === 'main') {
    for (let rep = 1; rep <= REPS; rep++) {
      for (const [width, height] of sizes) {
        for (const content of ['static', 'busy', 'heavy']) {
          const o = { group: 'main', rep, width, height, content, count: SAMPLES, clicks: Math.max(5, Math.round(SAMPLES / 4)) };
          for (const codec of codecs) out.push(vdeskRow({ ...o, codec }));
          out.push(vncRow(vnc, o));
        }
      }
    }
  } else if (set === 'link') {
    for (let rep = 1; rep <= REPS; rep++) {
      const o = { group: 'link', rep, ...s720, content: 'heavy', link: LINK, count: SAMPLES };
      out.push(vdeskRow(o), vncRow(vnc, o));
    }
  } else if (set === 'suspects') {
    for (const [variant, s] of Object.entries(AGENT_VARIANTS)) {
      if (variant === 'default') continue;
      const o = { group: 'suspects', ...s720, content: 'heavy', count: SHORT_SAMPLES };
      out.push(vdeskRow(o), vdeskRow({ ...o, variant, settings: { agentArgs: [], agentEnv: {}, ...s } }));
    }
  } else throw new Error(`unknown set ${set} (sweep, main, link, suspects, publish)`);
  const only = opt.only.split(',').filter(Boolean);
  return only.length ? out.filter((c) => only.some((o) => name(c).includes(o))) : out;
}

const name = (c) => `${c.group}-${c.system}-${c.system === 'vdesk' ? c.codec : ''}-${c.variant}-${c.height}p-${c.content}${c.link ? '-link' : ''}`;
const f = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '–');

const sets = opt.set === 'publish' ? ['sweep', 'main', 'link', 'suspects'] : opt.set.split(',');
const results = [];
let seq = 0;
const started = new Date();
const commit = (() => {
  try {
    const head = run('git', ['-C', root, 'rev-parse', '--short', 'HEAD']).trim();
    const dirty = run('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no']).trim();
    return dirty ? `${head} + uncommitted changes` : head;
  } catch { return 'unknown'; }
})();
for (const set of sets) {
  let vnc = opt.vnc;
  if (set !== 'sweep' && results.some((r) => r.group === 'sweep')) vnc = bestVnc(results)?.variant ?? vnc;
  if (!VNC_VARIANTS[vnc]) throw new Error(`unknown --vnc ${vnc} (${Object.keys(VNC_VARIANTS).join(', ')})`);
  for (const cfg of rowsOf(set, vnc)) {
    cfg.seq = ++seq;
    process.stderr.write(`bench: #${cfg.seq} ${name(cfg)} (load ${os.loadavg()[0].toFixed(1)}) ... `);
    const r = await runOne(cfg);
    results.push(r);
    // Every row's raw samples on disk as soon as it ends: a later failure loses nothing.
    await mkdir(opt.out, { recursive: true });
    await writeFile(path.join(opt.out, `${opt.name}.partial.json`), `${JSON.stringify({ started: started.toISOString(), results }, null, 1)}\n`);
    const lat = r.samples.filter((s) => !s.missed).map((s) => s.shown - s.before).sort((a, b) => a - b);
    process.stderr.write(r.error ? `error: ${r.error.split('\n')[0]}\n`
      : `p50 ${f(lat[Math.floor(lat.length / 2)])} ms, ${r.samples.filter((s) => s.missed).length} missed, content ${f(r.rates.contentFrames / r.rates.secs)} frames/s\n`);
  }
}
const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
const header = `Run ${started.toISOString()} – ${new Date().toISOString()} on ${os.cpus().length} × ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ` +
  `commit ${commit}; agent at ${FPS} fps (its default); ${SAMPLES} samples per row (${SHORT_SAMPLES} in the sweep and the agent variants), ` +
  `a sample missed if not shown within ${MISS_AFTER_MS} ms; load average (1, 5, 15 min) at the start ${results[0]?.load.before.map((x) => x.toFixed(2)).join(' ')}, ` +
  `at the end ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} (each row's in the last table); command: bench/run.sh ${process.argv.slice(2).join(' ')}`;
const data = { header, command: `bench/run.sh ${process.argv.slice(2).join(' ')}`, started: started.toISOString(), results };
const md = report(data);
await mkdir(opt.out, { recursive: true });
await writeFile(path.join(opt.out, `${opt.name}.json`), `${JSON.stringify(data, null, 1)}\n`);
await writeFile(path.join(opt.out, `${opt.name}.md`), `${md}\n`);
await rm(path.join(opt.out, `${opt.name}.partial.json`), { force: true });
console.log(md);
if (results.some((r) => r.error)) process.exitCode = 1;
